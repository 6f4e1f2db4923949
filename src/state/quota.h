/*
 * quota.h - the daily request quota of every org, in memory shared by the
 * supervisor and all its workers.
 *
 * One counter per org: the UTC day it counts and how many runs were
 * accepted that day. Taking a run is one compare-and-swap on that counter,
 * so under any concurrency, across every worker process, no more than the
 * limit are accepted, and accepting a run costs no system call and no
 * database lock. The database stays the durable record (usage.c writes each
 * run's count when it settles); a counter is loaded from it the first time
 * an org runs after the supervisor started (or after quota_invalidate),
 * through a caller's function, so this module never touches the database
 * itself.
 */
#ifndef AM_QUOTA_H
#define AM_QUOTA_H

#include <stdint.h>
#include "lib/error.h"

#define QUOTA_ORG_MAX 48        /* org slug incl. NUL (slugs are at most 40;
                                 * the table takes up to QUOTA_ORG_MAX - 5 bytes) */

struct quota;

/* Load the durable count of runs org had accepted on day (days since the
 * epoch). Returns 0 or a negative AM_* code. */
typedef int (*quota_load_fn)(const char *org, int day, int64_t *count, void *arg);

/* Map a new table for about `orgs` orgs at once and `holds` runs in flight
 * (anonymous shared memory: processes forked afterwards share it). Returns
 * 0 or AM_EUNAVAILABLE. */
int quota_create(struct quota **out, int orgs, int holds, struct am_error *err);

/* Unmap. NULL is fine. */
void quota_close(struct quota *q);

/* Accept one run of org on *day if fewer than limit were accepted that
 * day; *count gets the count after it. If another process already counts a
 * later day for org (the clock passed midnight between the two), the run
 * is counted on that day and *day says so. Returns 0, AM_ERATELIMIT (the
 * limit is reached; *count is the count), AM_EUNAVAILABLE (the table is
 * full of orgs that ran today) or load's error. */
int quota_take(struct quota *q, const char *org, int *day, int64_t limit, quota_load_fn load,
               void *arg, int64_t *count);

/* Give back a run taken on day (it never reached a provider). Nothing
 * happens if org's counter has moved on to another day, nor, when this
 * thread's last quota_take or quota_release was of this run's org and day,
 * if the counter was loaded again since that run was counted (after a
 * quota_invalidate: the reloaded count never had it). */
void quota_give_back(struct quota *q, const char *org, int day);

/* Forget every count: from now on the next quota_take or quota_count of
 * each org loads its count again through its load function, exactly as on
 * the first run of a day; no take lands on a forgotten count once this has
 * returned. For a host that becomes the one that counts (a replication
 * group's new master): another may have counted meanwhile. Runs held
 * across it settle normally (quota_release); given back (or reclaimed)
 * after their org's reload, they leave the reloaded count alone. Takes no
 * lock, never fails; NULL is fine. */
void quota_invalidate(struct quota *q);

/*
 * Holds: what a process that dies owes back. A run taken by quota_take is
 * held by the taking process until it settles; if that process is killed
 * first, quota_reclaim (run after the dead process's transactions were
 * aborted) gives back every run of it that did not reach the database.
 */
#define QUOTA_TRACE_MAX 40      /* a trace id incl. NUL */

/* How many holds are in use now (a snapshot, for the metrics), and in
 * *capacity (if not NULL) how many the table has. NULL q: 0 and 0. */
int quota_holds_used(struct quota *q, int *capacity);

/* Hold the run this thread just took for org on day (the hold keeps the
 * generation it was counted in). Returns the hold (>= 0), or -1
 * when every hold is in use (the run is then simply not held: if its
 * process dies, it stays counted until the daemon restarts). */
int quota_hold(struct quota *q, const char *org, int day);

/* Name the run's trace id: from now on it counts as settled once the
 * database has its run log line. Call before the settling transaction. */
void quota_hold_trace(struct quota *q, int hold, const char *trace_id);

/* The run has settled or is about to be given back (quota_give_back,
 * next, by this thread): forget it. -1 is fine. */
void quota_release(struct quota *q, int hold);

/* Whether the run with this trace id reached the database. */
typedef int (*quota_settled_fn)(const char *trace_id, void *arg);

/* Give back the runs still held by process pid (0: by any process; only
 * when none of the holders can be alive) that settled() says did not
 * reach the database, and free their holds. Returns how many were owed
 * (a run whose counter moved to another day or was loaded again since
 * it was counted changes nothing). */
int quota_reclaim(struct quota *q, int pid, quota_settled_fn settled, void *arg);

/* How many runs org has accepted on day. Returns 0, AM_EUNAVAILABLE or
 * load's error. */
int quota_count(struct quota *q, const char *org, int day, quota_load_fn load, void *arg,
                int64_t *count);

/* Call fn for every org the table has a known counter for: the org, the
 * day it counts and its count then (a snapshot per slot; creates nothing,
 * loads nothing; counters forgotten by quota_invalidate are left out). */
typedef void (*quota_foreach_fn)(const char *org, int day, int64_t count, void *arg);
void quota_foreach(struct quota *q, quota_foreach_fn fn, void *arg);

/* Runnable invariants (lib/invariant.h): check quota.c's invariants 1-5,
 * holds against counters, taking the mutex; on a violation, log it naming
 * the invariant and the org, and abort(). Only where no other process or
 * thread takes, holds or gives back runs meanwhile (the supervisor's
 * recovery, the unit tests): the holds and counters move separately. */
void quota_check_invariants(struct quota *q);

#endif
