/*
 * usage.h - daily request and token counters per org and agent, the daily
 * limit, and the run log.
 *
 * Counters are per UTC day. The limit is held by quota.c's shared counters
 * (one compare-and-swap per accepted run, exact across every worker); the
 * database gets each run when it settles, so under any concurrency no
 * more than the limit are accepted and every acknowledged run is on disk.
 */
#ifndef AM_USAGE_H
#define AM_USAGE_H

#include <stdint.h>
#include <json-c/json.h>
#include "state/app.h"
#include "lib/error.h"

/* What an accepted run holds until it settles. */
struct usage_claim {
    int day;                    /* the day it counts on, days since the epoch */
    int hold;                   /* its quota hold (quota_hold), -1 for none */
};

/* Accept one run for org today if fewer than limit were accepted: counts
 * it, fills *claim (pass it to usage_settle in the usage_run) and sets
 * *remaining to what is left. AM_ERATELIMIT (with *remaining = 0) when the
 * limit is reached, AM_EUNAVAILABLE when the count cannot be had. */
int usage_acquire(struct app *app, const char *org, int limit, struct usage_claim *claim,
                  int *remaining, struct am_error *err);

/* Runs left today (limit - accepted, at least 0). */
int usage_remaining(struct app *app, const char *org, int limit);

/* usage_acquire for a `test`, against the org's daily test allowance
 * (app->test_quota; NULL: unmetered, always 0). AM_ETESTLIMIT (with
 * *remaining = 0) when limit tests were accepted today. Settle it with
 * usage_settle like a run (mode "test", this claim). */
int usage_acquire_test(struct app *app, const char *org, int limit, struct usage_claim *claim,
                       int *remaining, struct am_error *err);

/* Tests left today (limit - accepted, at least 0). */
int usage_remaining_test(struct app *app, const char *org, int limit);

/* Epoch seconds of the next UTC midnight (X-RateLimit-Reset). */
int64_t usage_next_reset(void);

/* GET /orgs/{slug}/usage?days=N body (also "total_tests" of the period,
 * "daily_test_limit" = test_limit and "remaining_tests_today"); with by_version, also "by_version":
 * [{"date","agent","version","requests","tokens"}], each day split by the
 * agent version that answered. */
int usage_report(struct app *app, const char *org, int days, int limit, int test_limit,
                 int by_version, struct json_object **out, struct am_error *err);

/* What a finished run or test leaves behind. */
struct usage_run {
    const char *trace_id;
    const char *org;
    const char *agent;
    uint64_t version;           /* the agent version that answered, 0 if none */
    const char *mode;           /* "run" or "test" */
    const char *model;          /* "provider/model" used, "" if none */
    const char *outcome;        /* "ok", "blocked_output", or the error code */
    const struct usage_claim *claim;  /* usage_acquire's (a test: usage_acquire_test's);
                                         NULL: nothing taken */
    int refund;                 /* accepted but never reached a provider */
    int tokens;                 /* run: tokens to count */
    int64_t latency_ms;
};

/* Settle a finished run in one transaction: count it (a run that
 * never reached a provider is given back instead) with its tokens, on the
 * day it was accepted, and append the run log line; a test only gets its
 * log line. The commit is in the log file before the client gets its
 * answer, so no process death loses it, and on disk within
 * storage.run_flush_ms (store_transact_deferred). Returns 0, or the
 * store's error when nothing was written (the quota keeps an accepted run
 * counted, on the limit's side). */
int usage_settle(struct app *app, const struct usage_run *run);

/* The outcome of a run's log line between its first provider call and
 * its settle (usage_in_flight). */
#define USAGE_IN_FLIGHT "in_flight"

/* Record, before its first provider call is sent, that the run (outcome
 * USAGE_IN_FLIGHT, claim: its usage_acquire or usage_acquire_test claim)
 * reaches a provider: its run log line is committed, and its hold names
 * it. If its process dies before usage_settle, usage_reclaim counts it on
 * its day and rewrites the line with outcome "worker_died", instead of
 * giving it back. Returns 0 or the store's error (then a death leaves the
 * run given back, as before). */
int usage_in_flight(struct app *app, const struct usage_run *run);

/* After process pid died (0: after every worker died) and its
 * transactions were aborted: give back the runs it had accepted that did
 * not settle (quota_reclaim; a run settled when its run log line is in the
 * database); a run in flight (usage_in_flight) is counted instead, its
 * line rewritten with outcome "worker_died"; with pid 0 also every run
 * still marked in flight that no hold named (a whole daemon killed).
 * Returns how many were given back. */
int usage_reclaim(struct app *app, int pid);

/* Runnable invariants (lib/invariant.h): usage.c's invariant 1, the quota
 * counters of today against the shards; on a violation, log it naming the
 * org, and abort(). Only where no run is taken or settled meanwhile (the
 * supervisor's recovery, the unit tests). */
void usage_check_invariants(struct app *app);

#endif
