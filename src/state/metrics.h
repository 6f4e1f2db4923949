/*
 * metrics.h - the daemon's counters, in memory shared by the supervisor and
 * every process it forks, and their Prometheus text exposition.
 *
 * Every process updates the same fixed-size arrays with atomic adds: the
 * requests by route-table row and status, latency histograms of requests
 * (by row) and of provider calls (by provider), provider errors, the
 * breaker state per process and provider, busy and idle accept threads per
 * process, worker restarts. No lock: a scrape reads each counter once, so
 * two counters can be one event apart, never torn.
 *
 * The segment is the process's one mapping, created by the supervisor
 * before it forks (metrics_create); the update calls below find it through
 * a process-wide pointer and are no-ops in a process without one (unit
 * tests of other modules, the config checker).
 */
#ifndef AM_METRICS_H
#define AM_METRICS_H

#include <stdint.h>
#include "lib/buf.h"
#include "lib/error.h"

#define METRICS_ROUTES 64         /* route-table rows, the unmatched row and the stream */
#define METRICS_WORKERS 66        /* worker slots (64), the stream process, one spare */
#define METRICS_STREAM_SLOT (METRICS_WORKERS - 2)

/* Figures owned by other modules, read at scrape time by the caller. */
struct metrics_extra {
    int registry_entries;         /* registry_count */
    int registry_capacity;        /* registry.capacity */
    int quota_holds;              /* quota_holds_used */
    int quota_holds_capacity;     /* holds in the table */
    int db_ok;                    /* store_stats succeeded: the next three are valid */
    uint64_t db_cache_hit;        /* pages found in the cache */
    uint64_t db_cache_miss;       /* pages read in */
    uint64_t db_deadlocks;        /* deadlocks detected */
    uint64_t db_lock_timeouts;    /* lock waits that timed out */
};

/* Map the segment (anonymous shared memory: processes forked afterwards
 * share it) and make it this process's. Returns 0 or AM_EUNAVAILABLE. */
int metrics_create(struct am_error *err);

/* Unmap this process's segment (the update calls become no-ops). */
void metrics_close(void);

/* This process is worker slot `slot` (0..METRICS_WORKERS-1; the stream
 * process is METRICS_STREAM_SLOT) with `threads` accept threads. Call in
 * the child after the fork; clears the slot's busy count. */
void metrics_set_self(int slot, int threads);

/* The supervisor: the process of slot `slot` is gone (its busy and
 * thread counts and breaker states are cleared); restarted says whether it
 * died while running (counted as a restart) rather than retiring. */
void metrics_worker_gone(int slot, int restarted);

/* An accept thread of this process starts (+1) or ends (-1) a request. */
void metrics_thread_busy(int delta);

/* A request of route row `route` starts (+1) or ends (-1) its handler:
 * the in-flight gauge. route out of range: ignored. */
void metrics_in_flight(int route, int delta);

/* A request of row `route` was answered with status after us microseconds. */
void metrics_request(int route, int status, uint64_t us);

/* A call to provider (enum config_provider) ended after us microseconds;
 * ok 0 counts a provider error. */
void metrics_provider_call(int provider, uint64_t us, int ok);

/* This process's breaker of provider opened until open_until_ms
 * (monotonic) or closed (0). */
void metrics_breaker(int provider, uint64_t open_until_ms);

/* Append the Prometheus text exposition (version 0.0.4) of every counter
 * to out. route_labels[i] is row i's label set without braces (e.g.
 * `method="GET",route="/api/v1/health"`), nroutes of them; extra adds the
 * figures of other modules. Without a segment, only extra is written. */
void metrics_render(struct buf *out, const char *const *route_labels, int nroutes,
                    const struct metrics_extra *extra);

/* The index of status in the status table (unknown statuses share the
 * last one); for tests. */
int metrics_status_index(int status);

#endif
