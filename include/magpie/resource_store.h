/* The latest accepted xDS resources that are looked up by name rather than listed in the
 * snapshot: ClusterLoadAssignment (EDS) and RouteConfiguration (RDS).  A source (a file today,
 * an xDS stream later) puts resources here; the translators read them when they build an EDS
 * cluster or an HCM with rds, and the source then pushes the change into the live snapshot
 * (docs/dynamic-config.md).  Main thread only. */
#ifndef MAGPIE_RESOURCE_STORE_H
#define MAGPIE_RESOURCE_STORE_H

#include <protobuf-c/protobuf-c.h>

/* Stores m (owned; replaces and frees the previous resource of that type and name), or removes
 * the entry when m is NULL. */
void mp_rstore_set(const ProtobufCMessageDescriptor *type, const char *name, ProtobufCMessage *m);
/* The resource of that type and name, or NULL; valid until the next set of the same entry. */
const ProtobufCMessage *mp_rstore_get(const ProtobufCMessageDescriptor *type, const char *name);
/* Forgets everything (shutdown, tests). */
void mp_rstore_clear(void);

#endif
