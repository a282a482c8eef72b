"""Configuration for HTTP/2, gRPC and upgrades (issue 3): `--mode validate` on a bootstrap that
uses every new field, the range errors with their JSON paths, and /config_dump printing those
fields in a form that validates again."""

import json
import os
import string

import mp

# Every new field: the HCM's HTTP/2 options, upgrade_configs and max_stream_duration; gRPC and
# CONNECT route matches, route upgrade_configs and max_stream_duration; the upstream protocol
# chosen by the typed HttpProtocolOptions extension (explicit, use-downstream) and by the
# deprecated http2_protocol_options.
CONFIG = """\
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: $admin}}
static_resources:
  listeners:
  - name: l1
    address: {socket_address: {address: 127.0.0.1, port_value: $port}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          codec_type: HTTP2
          common_http_protocol_options: {max_stream_duration: 60s}
          http2_protocol_options:
            max_concurrent_streams: 128
            initial_stream_window_size: 65535
            initial_connection_window_size: 1048576
            hpack_table_size: 4096
            max_outbound_frames: 10000
            allow_connect: true
            override_stream_error_on_invalid_http_message: true
          upgrade_configs:
          - {upgrade_type: websocket}
          - {upgrade_type: CONNECT, enabled: false}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
          route_config:
            name: r1
            virtual_hosts:
            - name: vh
              domains: ["*"]
              routes:
              - match: {prefix: "/helloworld.Greeter/", grpc: {}}
                route:
                  cluster: grpc
                  max_stream_duration:
                    max_stream_duration: 30s
                    grpc_timeout_header_max: 10s
                    grpc_timeout_header_offset: 0.1s
              - match: {connect_matcher: {}}
                route:
                  cluster: web
                  upgrade_configs:
                  - {upgrade_type: CONNECT, connect_config: {}}
              - match: {prefix: "/"}
                route:
                  cluster: web
                  upgrade_configs: [{upgrade_type: websocket, enabled: true}]
  clusters:
  - name: grpc
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        common_http_protocol_options: {idle_timeout: 30s}
        explicit_http_config:
          http2_protocol_options: {max_concurrent_streams: 100, initial_stream_window_size: 131072}
    load_assignment:
      cluster_name: grpc
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: $up}}}}]}]
  - name: web
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        use_downstream_protocol_config: {http_protocol_options: {}, http2_protocol_options: {}}
    load_assignment:
      cluster_name: web
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: $up}}}}]}]
  - name: legacy
    connect_timeout: 1s
    http2_protocol_options: {initial_connection_window_size: 131072}
    load_assignment:
      cluster_name: legacy
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: $up}}}}]}]
"""

HCM_PATH = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config."
EXT_PATH = ('static_resources.clusters[0].typed_extension_protocol_options'
            '["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].')


def _write(text, name="c.yaml"):
    path = os.path.join(mp.tmpdir(), name)
    with open(path, "w") as f:
        f.write(text)
    return path


def _config(admin=None, **repl):
    """The config with free ports; admin=None keeps $admin for mp.Magpie to fill in."""
    subst = {"port": mp.free_port(), "up": mp.free_port()}
    if admin is not None:
        subst["admin"] = admin
    text = string.Template(CONFIG).safe_substitute(subst)
    for old, new in repl.items():
        mp.check(old in text, "test bug: %r not in the config" % old)
        text = text.replace(old, new)
    return text


def _validate(text):
    text = string.Template(text).substitute(admin=mp.free_port())
    return mp.run_magpie(["--mode", "validate", "-c", _write(text)])


def test_validate_accepts_every_new_field():
    rc, out = _validate(_config())
    mp.eq(rc, 0, "validate exit status on the HTTP/2 + gRPC + upgrade config; output:\n" + out)


def test_validate_rejects_small_stream_window_with_path():
    text = _config().replace("initial_stream_window_size: 65535", "initial_stream_window_size: 1024")
    rc, out = _validate(text)
    mp.check(rc != 0, "validate accepted a 1024-byte initial_stream_window_size")
    # The whole message, path and range, as a NACK would carry it.
    want = (HCM_PATH + "http2_protocol_options.initial_stream_window_size: must be between "
            "65535 and 2147483647")
    mp.check(want in out, "want %r in %r" % (want, out[-600:]))


def test_validate_rejects_upstream_window_with_path():
    text = _config().replace("initial_stream_window_size: 131072",
                             "initial_stream_window_size: 2147483648")
    rc, out = _validate(text)
    mp.check(rc != 0, "validate accepted a 2^31 upstream initial_stream_window_size")
    want = (EXT_PATH + "explicit_http_config.http2_protocol_options.initial_stream_window_size: "
            "must be between 65535 and 2147483647")
    mp.check(want in out, "want %r in %r" % (want, out[-600:]))


def test_validate_rejects_upgrade_filters_and_http3():
    rc, out = _validate(_config(**{"- {upgrade_type: websocket}":
                                   "- {upgrade_type: websocket, filters: [{name: x}]}"}))
    mp.check(rc != 0 and HCM_PATH + "upgrade_configs[0].filters: " in out,
             "per-upgrade filters refused with the path: %r" % out[-600:])
    rc, out = _validate(_config(**{"codec_type: HTTP2": "codec_type: HTTP3"}))
    mp.check(rc != 0 and HCM_PATH + "codec_type: HTTP3 is not supported" in out,
             "HTTP3 refused with the path: %r" % out[-600:])


def _find(obj, key):
    """Every value stored under key anywhere in a JSON tree."""
    found = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == key:
                found.append(v)
            found.extend(_find(v, key))
    elif isinstance(obj, list):
        for v in obj:
            found.extend(_find(v, key))
    return found


def test_config_dump_prints_new_fields_and_validates_again():
    with mp.Magpie(_config()) as m:
        st, body = m.admin("/config_dump")
        mp.eq(st, 200, "/config_dump")
    boot = json.loads(body)["configs"][0]["bootstrap"]
    # Each new message made it into the dump with its values (lowerCamelCase, as protobuf's JSON
    # printer writes them); UInt32Value wrappers print as bare numbers.
    windows = sorted(o["initialStreamWindowSize"] for o in _find(boot, "http2ProtocolOptions")
                     if "initialStreamWindowSize" in o)
    mp.eq(windows, [65535, 131072], "initial_stream_window_size values in the dump")
    mp.check(any(o.get("allowConnect") is True for o in _find(boot, "http2ProtocolOptions")),
             "allow_connect in the dump")
    ups = [u["upgradeType"] for lst in _find(boot, "upgradeConfigs") for u in lst]
    mp.eq(sorted(ups), ["CONNECT", "CONNECT", "websocket", "websocket"], "upgrade types")
    mp.check(_find(boot, "connectMatcher") == [{}], "connect_matcher printed as {}")
    mp.check(_find(boot, "grpc") == [{}], "RouteMatch.grpc printed as {}")
    msd = _find(boot, "maxStreamDuration")
    mp.check({"maxStreamDuration": "30s", "grpcTimeoutHeaderMax": "10s",
              "grpcTimeoutHeaderOffset": "0.100s"} in msd, "route max_stream_duration: %r" % msd)
    ext = _find(boot, "typedExtensionProtocolOptions")
    mp.eq(len(ext), 2, "clusters with typed_extension_protocol_options")
    key = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    mp.eq(ext[0][key]["@type"], "type.googleapis.com/" + key, "the Any keeps its type")
    mp.check("useDownstreamProtocolConfig" in ext[1][key], "use_downstream in the dump")
    # Round trip: the dumped bootstrap is itself a valid config, with the same meaning.
    rc, out = mp.run_magpie(["--mode", "validate", "-c", _write(json.dumps(boot), "dump.json")])
    mp.eq(rc, 0, "validate on the dumped bootstrap; output:\n" + out)


if __name__ == "__main__":
    import run
    run.main([__file__])
