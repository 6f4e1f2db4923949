/*
 * registry.h - the shared runtime registry: a POSIX shared-memory table of
 * the deployed agents, keyed by "org__name".
 *
 * The supervisor creates the segment (registry_create) before forking and
 * unlinks it at exit; workers inherit the mapping (or attach by name). Each
 * entry holds the loaded agent: its compiled runtime YAML, the config
 * version it was compiled from, a generation number that changes on every
 * load, and stream counters. Readers never block on a writer: a global
 * seqlock lets them copy an entry and retry if a write overlapped. Writers
 * serialise on a process-shared robust mutex held only for a memcpy.
 */
#ifndef AM_REGISTRY_H
#define AM_REGISTRY_H

#include <stddef.h>
#include <stdint.h>
#include "lib/error.h"

#define REGISTRY_KEY_MAX 112   /* "org__name" incl. NUL: 40 + 2 + 63 + 1 fits */

struct registry;               /* a process's handle on the mapping */

/* What a reader gets: a private copy of one entry. */
struct registry_agent {
    char key[REGISTRY_KEY_MAX]; /* "org__name" */
    uint64_t generation;        /* changes on every load of this key */
    uint64_t version;           /* agent config version the YAML came from */
    int64_t deployed_at;        /* epoch seconds */
    char *yaml;                 /* owned: compiled YAML, NUL-terminated; free with registry_agent_clear */
    size_t yaml_len;
};

/* Create (or replace) the segment `name` (e.g. "/astromesh-<hash>") with room
 * for `capacity` agents of at most `slot_bytes` of YAML each, and map it.
 * Supervisor only. */
int registry_create(struct registry **out, const char *name, int capacity,
                    size_t slot_bytes, struct am_error *err);

/* Map an existing segment created by registry_create. */
int registry_attach(struct registry **out, const char *name, struct am_error *err);

/* Unmap; if `unlink_segment`, also shm_unlink the name (supervisor at exit). */
void registry_close(struct registry *r, int unlink_segment);

/* Load (insert or replace) an agent. Returns 0, AM_EREGISTRYFULL when the
 * table is full, AM_ETOOLARGE when yaml_len exceeds the slot size. */
int registry_load(struct registry *r, const char *key, uint64_t version,
                  int64_t deployed_at, const char *yaml, size_t yaml_len,
                  struct am_error *err);

/* Remove an agent. Returns 0, or AM_ENOENT if it was not loaded. */
int registry_unload(struct registry *r, const char *key);

/* Copy the entry for key into *out (caller frees with registry_agent_clear).
 * Returns 0 or AM_ENOENT. Never blocks on a live writer. */
int registry_get(struct registry *r, const char *key, struct registry_agent *out);

/* 1 if key is loaded, 0 if not (cheap: no YAML copy). */
int registry_contains(struct registry *r, const char *key, uint64_t *version_out);

/* Number of loaded agents. */
int registry_count(struct registry *r);

/* Call fn for the key of every loaded agent (a snapshot; fn may call
 * registry_unload). */
void registry_foreach(struct registry *r, void (*fn)(const char *key, void *arg), void *arg);

/* Runnable invariants (lib/invariant.h): check invariants 2 and 4-6 of
 * registry.c under the writers' mutex (live writers may run meanwhile);
 * on a violation, log it naming the invariant and the key, and abort().
 * Returns only if they all hold. */
void registry_check_invariants(struct registry *r);

/* Free what registry_get put in *a. */
void registry_agent_clear(struct registry_agent *a);

/* Largest YAML an entry can hold. */
size_t registry_slot_bytes(struct registry *r);

#endif
