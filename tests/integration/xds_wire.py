"""A tiny protobuf encoder/decoder for the xDS discovery messages (field numbers from
/work/shared/reference/xds-envoy.md §1.4), for tests that drive a control plane with grpcio's
raw-bytes calls.  Only what the tests need: strings, nested messages, varints."""

TYPE = "type.googleapis.com/"
CDS = TYPE + "envoy.config.cluster.v3.Cluster"
EDS = TYPE + "envoy.config.endpoint.v3.ClusterLoadAssignment"
LDS = TYPE + "envoy.config.listener.v3.Listener"
RDS = TYPE + "envoy.config.route.v3.RouteConfiguration"
SDS = TYPE + "envoy.extensions.transport_sockets.tls.v3.Secret"


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(num, wire, payload):
    return _varint(num << 3 | wire) + payload


def _bytes(num, b):
    if isinstance(b, str):
        b = b.encode()
    return _field(num, 2, _varint(len(b)) + b)


def _node(node_id):
    return _bytes(1, node_id)


def _status(code, message):
    return _field(1, 0, _varint(code)) + _bytes(2, message)


def discovery_request(type_url, version="", names=(), nonce="", node_id=None, error=None):
    """DiscoveryRequest: 1 version_info, 2 node, 3 resource_names, 4 type_url, 5 response_nonce,
    6 error_detail (google.rpc.Status: 1 code, 2 message)."""
    out = _bytes(1, version) if version else b""
    if node_id is not None:
        out += _bytes(2, _node(node_id))
    for n in names:
        out += _bytes(3, n)
    if type_url:
        out += _bytes(4, type_url)
    if nonce:
        out += _bytes(5, nonce)
    if error is not None:
        out += _bytes(6, _status(error[0], error[1]))
    return out


def delta_request(type_url, subscribe=(), unsubscribe=(), initial=None, nonce="", node_id=None,
                  error=None):
    """DeltaDiscoveryRequest: 1 node, 2 type_url, 3 subscribe, 4 unsubscribe,
    5 initial_resource_versions (map entries: 1 key, 2 value), 6 response_nonce, 7 error_detail."""
    out = _bytes(1, _node(node_id)) if node_id is not None else b""
    out += _bytes(2, type_url)
    for n in subscribe:
        out += _bytes(3, n)
    for n in unsubscribe:
        out += _bytes(4, n)
    for k, v in (initial or {}).items():
        out += _bytes(5, _bytes(1, k) + _bytes(2, v))
    if nonce:
        out += _bytes(6, nonce)
    if error is not None:
        out += _bytes(7, _status(error[0], error[1]))
    return out


def _read_varint(b, i):
    n = shift = 0
    while True:
        c = b[i]
        i += 1
        n |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return n, i


def fields(b):
    """[(field number, value)]: bytes for length-delimited fields, ints for varints."""
    out, i = [], 0
    while i < len(b):
        key, i = _read_varint(b, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            v, i = _read_varint(b, i)
        elif wire == 2:
            n, i = _read_varint(b, i)
            v, i = bytes(b[i:i + n]), i + n
        elif wire == 1:
            v, i = bytes(b[i:i + 8]), i + 8
        elif wire == 5:
            v, i = bytes(b[i:i + 4]), i + 4
        else:
            raise ValueError("wire type %d" % wire)
        out.append((num, v))
    return out


def _first(fs, num, default=b""):
    for n, v in fs:
        if n == num:
            return v
    return default


def resource_name(value):
    """Listener, Cluster, RouteConfiguration, Secret: name = 1; ClusterLoadAssignment:
    cluster_name = 1."""
    return _first(fields(value), 1).decode()


def _any(b):
    fs = fields(b)
    return _first(fs, 1).decode(), _first(fs, 2)


def discovery_response(b):
    """DiscoveryResponse: 1 version_info, 2 resources (Any: 1 type_url, 2 value), 4 type_url,
    5 nonce.  Returns a dict with the resources as {name: value bytes}."""
    fs = fields(b)
    res = {}
    for n, v in fs:
        if n == 2:
            url, value = _any(v)
            res[resource_name(value)] = value
    return {"version": _first(fs, 1).decode(), "type_url": _first(fs, 4).decode(),
            "nonce": _first(fs, 5).decode(), "resources": res}


def delta_response(b):
    """DeltaDiscoveryResponse: 1 system_version_info, 2 resources (Resource: 1 version,
    2 resource Any, 3 name), 4 type_url, 5 nonce, 6 removed_resources."""
    fs = fields(b)
    res = {}
    for n, v in fs:
        if n == 2:
            rf = fields(v)
            res[_first(rf, 3).decode()] = {"version": _first(rf, 1).decode(),
                                           "value": _any(_first(rf, 2))[1]}
    return {"system_version": _first(fs, 1).decode(), "type_url": _first(fs, 4).decode(),
            "nonce": _first(fs, 5).decode(), "resources": res,
            "removed": [v.decode() for n, v in fs if n == 6]}
