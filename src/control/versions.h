/*
 * versions.h - the immutable, numbered versions of an agent: one per
 * effective deploy (a deploy whose WizardConfig differs from the version
 * the agent is at), each holding the WizardConfig, the compiled YAML, the
 * content hashes of both, who deployed it and when.
 *
 * agent.c decides when a version is made, which one is live, and calls
 * these functions inside its own transactions; this module only owns the
 * record format and the pure functions on configs (hash, diff).
 */
#ifndef AM_VERSIONS_H
#define AM_VERSIONS_H

#include <stddef.h>
#include <stdint.h>
#include <json-c/json.h>
#include "state/store.h"
#include "lib/error.h"

#define VERSIONS_HASH_HEX 65          /* SHA-256 in lower-case hex, with its NUL */
#define VERSIONS_MAX 9999999999LL     /* a number fits the key's 10 digits */

/* What a new version holds. Everything is borrowed. */
struct versions_new {
    int64_t n;                        /* 1, 2, ... never reused for one agent */
    struct json_object *wizard;       /* the WizardConfig */
    const char *yaml;                 /* the compiled YAML */
    size_t yaml_len;
    const char *key_refs;             /* the key references it was compiled with */
    const char *by;                   /* who deployed it (e-mail or "key:<id>"), NULL if unknown */
    int64_t at;                       /* epoch seconds */
};

/* The canonical text of a JSON value: objects with their keys sorted, no
 * spaces, so that equal configs give equal text whatever their key order.
 * Returns a malloc'd string (caller frees). */
char *versions_canonical(struct json_object *o);

/* SHA-256 of versions_canonical(o) in hex, into hex. */
void versions_hash(struct json_object *o, char hex[VERSIONS_HASH_HEX]);

/* SHA-256 of n bytes in hex, into hex. */
void versions_hash_bytes(const void *p, size_t n, char hex[VERSIONS_HASH_HEX]);

/* Store version v->n of org/name inside t. Returns 0, AM_EDEADLOCK or
 * AM_EIO. */
int versions_put(struct store *s, struct store_txn *t, const char *org, const char *name,
                 const struct versions_new *v);

/* Version n of org/name: on 0, *out is the stored record (caller puts):
 * {"version","wizard","yaml","key_refs","config_hash","yaml_hash",
 * "created_by","created_at"}. Returns AM_ENOENT when there is no such
 * version, AM_EDEADLOCK, AM_EIO. */
int versions_load(struct store *s, struct store_txn *t, const char *org, const char *name,
                  int64_t n, struct json_object **out);

/* Retention: keep the newest `keep` versions of org/name and version
 * `live` whatever its age; delete the others inside t. Returns the number
 * deleted, or AM_EDEADLOCK / AM_EIO. */
int versions_prune(struct store *s, struct store_txn *t, const char *org, const char *name,
                   int keep, int64_t live);

/* Delete every version of org/name inside t (the agent is deleted).
 * Returns 0, AM_EDEADLOCK or AM_EIO. */
int versions_forget(struct store *s, struct store_txn *t, const char *org, const char *name);

/* The version list of org/name, newest first: at most `limit` versions
 * numbered below `before` (0: no bound), each {"version","created_at",
 * "created_by","config_hash","live"} where live is n == live. On 0, *out
 * is a new array (caller puts). Returns 0, AM_EDEADLOCK or AM_EIO. */
int versions_list(struct store *s, struct store_txn *t, const char *org, const char *name,
                  int64_t live, int limit, int64_t before, struct json_object **out);

/* The public form of a stored version: the list entry, plus
 * "wizard_config" and "yaml" when full. A new object (caller puts). */
struct json_object *versions_view(struct json_object *rec, int64_t live, int full);

/* The changed fields from WizardConfig a to b: a new array (caller puts)
 * of {"path","from","to"} in path order, paths as validation errors name
 * them ("step1.model", "display_name"); a field absent on one side is
 * null there. Objects are compared field by field, anything else whole. */
struct json_object *versions_diff(struct json_object *a, struct json_object *b);

#endif
