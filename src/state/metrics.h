/*
 * metrics.h - the daemon's counters, in memory shared by the supervisor and
 * every process it forks, and their Prometheus text exposition.
 *
 * Every process updates the same fixed-size arrays with atomic adds: the
 * requests by route-table row and status, latency histograms of requests
 * (by row) and of provider calls (by provider), provider errors, busy and
 * idle accept threads per process, worker restarts, the writes a replica
 * forwarded and those not acknowledged by the group (the breakers are
 * rendered from state/breakers.c's shared table). No lock: a scrape reads each counter once, so
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
#define METRICS_WORKERS 136       /* processes at once: 64 workers, as many retiring, the
                                   * stream process, spares */

/* Figures owned by other modules, read at scrape time by the caller. */
struct breakers;

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
    struct breakers *breakers;    /* app->breakers: every org's breakers (may be NULL) */
    int rep_group;                /* a replication group is configured: the next four */
    int rep_ok;                   /* store_rep_status succeeded: role..lag are valid */
    int rep_role;                 /* enum store_role */
    uint64_t rep_elections;       /* elections this site took part in */
    uint64_t rep_not_acked;       /* commits too few sites acknowledged */
    uint64_t rep_lag_bytes;       /* replica: log bytes not applied yet */
};

/* Map the segment (anonymous shared memory: processes forked afterwards
 * share it) and make it this process's. Returns 0 or AM_EUNAVAILABLE. */
int metrics_create(struct am_error *err);

/* Unmap this process's segment (the update calls become no-ops). */
void metrics_close(void);

/* Claim a per-process slot for this process (by its pid), with `threads`
 * accept threads (0 for a process without, such as the stream process). Call in the child after the fork. Returns the
 * slot, or -1 if none is free or there is no segment (then the per-process
 * figures of this process are not kept). */
int metrics_set_self(int threads);

/* The supervisor: process pid is gone; its slot (threads, busy) is freed. restarted: it died while it should have been running,
 * and is counted as a restart (not a retirement or a stop). */
void metrics_worker_gone(int pid, int restarted);

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

/* A write that reached this host (a replica) was forwarded to the master
 * and its answer came back. */
void metrics_rep_forwarded(void);

struct app;

/* Fill *out from the modules of app: the registry's entries and capacity,
 * the quota holds, the Berkeley DB figures (store_stats; db_ok 0 if they
 * could not be read), with a group the replication state (store_rep_status;
 * rep_ok 0 if it could not be read). Any of app's handles may be NULL. */
void metrics_collect(const struct app *app, struct metrics_extra *out);

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
