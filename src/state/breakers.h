/*
 * breakers.h - the circuit breakers of the model calls, one per org,
 * provider and model, in memory shared by the supervisor and all its
 * processes: a failure seen by one worker protects every worker, and one
 * org's failures never open another org's breaker.
 *
 * The caller decides what counts as a failure (runtime.c: not a request
 * the provider refused as the request's own error); this module only
 * counts, opens and closes, on the system-wide monotonic clock.
 */
#ifndef AM_BREAKERS_H
#define AM_BREAKERS_H

#include <stdint.h>
#include "lib/error.h"

#define BREAKERS_ORG_MAX 48      /* org slug incl. NUL */
#define BREAKERS_MODEL_MAX 129   /* model name incl. NUL */

struct breakers;

/* Map a table of about `capacity` breakers (rounded up to a power of two,
 * anonymous shared memory: processes forked afterwards share it). Returns
 * 0 or AM_EUNAVAILABLE. */
int breakers_create(struct breakers **out, int capacity, struct am_error *err);

/* Unmap. NULL is fine. */
void breakers_close(struct breakers *b);

/* 1 if org's breaker of provider/model is open at now_ms (monotonic),
 * else 0 (also when the table has no entry for it, or b is NULL). *ewma_ms
 * (may be NULL) gets the smoothed latency of its successes, 0 = none. */
int breakers_is_open(struct breakers *b, const char *org, int provider, const char *model,
                     uint64_t now_ms, uint64_t *ewma_ms);

/* What happened to one call. */
struct breakers_outcome {
    int ok;                 /* 1: a success (closes, feeds the latency) */
    uint64_t latency_ms;    /* of a success */
    int failures;           /* consecutive failures that open the breaker */
    uint64_t cooldown_ms;   /* how long it then stays open */
    uint64_t retry_after_ms;/* > 0: open at least this long now (a 429's Retry-After) */
};

/* Count one outcome for org's provider/model at now_ms. A full table
 * (every slot in the key's probe window open) counts nothing. */
void breakers_record(struct breakers *b, const char *org, int provider, const char *model,
                     uint64_t now_ms, const struct breakers_outcome *o);

/* One breaker as breakers_foreach shows it (a snapshot). */
struct breakers_state {
    const char *org;
    int provider;
    const char *model;
    int open;               /* at the now_ms given to foreach */
    int fails;              /* consecutive failures counted so far */
    uint64_t open_for_ms;   /* how much longer it stays open, 0 when closed */
    uint64_t ewma_ms;
};

/* Call fn for every breaker in use (for the metrics endpoint), under the
 * table's mutex: fn must not call back into this module. */
typedef void (*breakers_foreach_fn)(const struct breakers_state *st, void *arg);
void breakers_foreach(struct breakers *b, uint64_t now_ms, breakers_foreach_fn fn, void *arg);

/* Runnable invariants (lib/invariant.h): check breakers.c's invariants
 * 1-3 under the mutex; on a violation, log it naming the invariant and the
 * slot or org, and abort(). Anywhere: every change is under the mutex. */
void breakers_check_invariants(struct breakers *b);

#endif
