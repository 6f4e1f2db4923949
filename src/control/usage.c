/*
 * usage.c - daily counters, the daily limit, and the run log.
 *
 * Owns the record formats of the usage shards (STORE_USAGE + i, i <
 * STORE_USAGE_SHARDS):
 *   "org\0YYYY-MM-DD\0agent" -> {"r":requests,"t":tokens[,"v":{"<n>":[r,t],…}]}
 * the runs of one agent on one UTC day that threads using that shard
 * settled ("v": the same split by the agent version that answered, for
 * ?by=version; "r" and "t" always come first and hold the whole sum); an org's or an agent's figure for a day is the sum over the
 * shards. Each thread writes one shard, so concurrent runs do not queue on
 * one B-tree page. (Records "org\0YYYY-MM-DD" of earlier versions only
 * repeated the sum of the agents' and are ignored.) Also owns the format of
 * STORE_RUNLOG: trace id -> {"org","agent","version","mode","model","tokens",
 * "latency_ms","outcome","at"}.
 * A run between its first provider call and its settle has the outcome
 * "in_flight" (and "day") and a mark "!" + trace id -> "" (usage_in_flight;
 * the settle removes it in its transaction), which a recovery finishes.
 *
 * The limit is enforced in quota.c's shared counters: accepting a run is
 * one compare-and-swap there, exact under any concurrency across the
 * workers; a counter starts from the sum of the shards (quota_load). The
 * run is written here when it settles, in one transaction with its run
 * log line, on the day it was accepted; the commit is in the log file
 * before the client is answered and on disk within storage.run_flush_ms
 * (store_transact_deferred). Only `run` counts against the daily limit.
 * A `test` counts against the org's own daily test allowance
 * (limits.tests_per_day), kept the same way in a second quota table
 * (app->test_quota) and settled on the record "org\0YYYY-MM-DD\0*test"
 * of the shards ('*' is in no agent name): the report shows it apart
 * (total_tests, daily_test_limit, remaining_tests_today), never in the
 * requests, tokens, by_agent or by_day of runs.
 *
 * Invariant (usage_check_invariants):
 *  1. An org's quota counter for today is at least the runs the shards
 *     hold for it today: every counted run was taken from the counter
 *     before its settling commit, the counter started from the shards'
 *     sum, and a run is given back only if it never reached them (a
 *     refund, or a dead process's run not in the run log).
 *
 * Must never: log.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "state/quota.h"
#include "state/store.h"
#include "control/usage.h"
#include "state/cluster.h"
#include "lib/invariant.h"
#include "lib/util.h"

struct counter {
    int64_t r;   /* requests */
    int64_t t;   /* tokens */
};

static int today(void)
{
    return (int)(util_now() / 86400);
}

/* "YYYY-MM-DD" of day (days since the epoch). */
static void day_name(int day, char *buf, size_t cap)
{
    struct tm tm;
    time_t tt = (time_t)day * 86400;

    gmtime_r(&tt, &tm);
    strftime(buf, cap, "%Y-%m-%d", &tm);
}

/* "org\0day\0agent" (agent may be "") into buf; returns the length, 0 if
 * it does not fit. */
static size_t usage_key(char *buf, size_t cap, const char *org, int day, const char *agent)
{
    char d[16];
    int n;

    day_name(day, d, sizeof(d));
    n = snprintf(buf, cap, "%s%c%s%c%s", org, 0, d, 0, agent);
    return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}

static int counter_parse(const char *val, struct counter *c)
{
    long long r = 0, t = 0;

    c->r = c->t = 0;
    if (sscanf(val, "{\"r\":%lld,\"t\":%lld}", &r, &t) != 2)
        return -1;
    c->r = r;
    c->t = t;
    return 0;
}

/* This thread's usage shard: threads take them in turn, starting from a
 * point that differs between processes. */
static int my_shard(void)
{
    static unsigned next;
    static _Thread_local int shard = -1;

    if (shard < 0)
        shard = (int)((__atomic_fetch_add(&next, 1u, __ATOMIC_RELAXED) + (unsigned)getpid() * 7u)
                      % STORE_USAGE_SHARDS);
    return shard;
}

/* ---- the org's count for a day, summed over the shards ---------------------- */

struct sum_ctx {
    size_t plen;        /* "org\0day\0" */
    int tests;          /* 1: sum the tests record; 0: every agent's */
    int64_t r;
};

/* The agent part of an org's tests record "org\0day\0*test": '*' is in
 * no agent name, so it never mixes with an agent's runs. */
#define USAGE_TESTS "*test"

/* 1 if the agent part of a usage key (al bytes) is the tests record. */
static int is_tests(const char *agent, size_t al)
{
    return al == sizeof(USAGE_TESTS) - 1 && memcmp(agent, USAGE_TESTS, al) == 0;
}

static int sum_one(const char *k, size_t kl, const char *v, size_t vl, void *arg)
{
    struct sum_ctx *c = arg;
    struct counter cnt;

    (void)vl;
    if (kl > c->plen && is_tests(k + c->plen, kl - c->plen) == c->tests &&
        counter_parse(v, &cnt) == 0)
        c->r += cnt.r;
    return 0;
}

/* The durable count of runs (tests: of tests) org had on day. */
static int load_count(struct app *app, const char *org, int day, int tests, int64_t *count)
{
    struct sum_ctx c = { 0, tests, 0 };
    char prefix[160];
    int i, rc;

    *count = 0;
    if ((c.plen = usage_key(prefix, sizeof(prefix), org, day, "")) == 0)
        return AM_EINTERNAL;
    for (i = 0; i < STORE_USAGE_SHARDS; i++)
        if ((rc = store_scan(app->store, NULL, STORE_USAGE + i, prefix, c.plen, sum_one, &c)) != 0)
            return AM_EUNAVAILABLE;
    *count = c.r;
    return 0;
}

static int quota_load(const char *org, int day, int64_t *count, void *arg)
{
    return load_count(arg, org, day, 0, count);
}

static int tests_load(const char *org, int day, int64_t *count, void *arg)
{
    return load_count(arg, org, day, 1, count);
}

/* ---- a replica: the master counts ----------------------------------------------- */

/* What a run log line says of a run (and what a replica tells the master). */
static void run_fields(struct json_object *o, const struct usage_run *run)
{
    json_object_object_add(o, "org", json_object_new_string(run->org));
    json_object_object_add(o, "agent", json_object_new_string(run->agent));
    json_object_object_add(o, "version", json_object_new_int64((int64_t)run->version));
    json_object_object_add(o, "mode", json_object_new_string(run->mode));
    json_object_object_add(o, "model", json_object_new_string(run->model ? run->model : ""));
    json_object_object_add(o, "tokens", json_object_new_int(run->tokens));
    json_object_object_add(o, "latency_ms", json_object_new_int64(run->latency_ms));
    json_object_object_add(o, "outcome", json_object_new_string(run->outcome));
}

/* The claim of a run as the master took it (its table's day and hold). */
static struct json_object *claim_json(const struct usage_claim *claim)
{
    struct json_object *o;

    if (claim == NULL)
        return NULL;
    o = json_object_new_object();
    json_object_object_add(o, "day", json_object_new_int(claim->day));
    json_object_object_add(o, "hold", json_object_new_int(claim->hold));
    return o;
}

static int remote_acquire(struct app *app, const char *org, int limit, int tests,
                          struct usage_claim *claim, int *remaining, struct am_error *err)
{
    struct json_object *a = json_object_new_object(), *r = NULL, *v;
    int rc;

    json_object_object_add(a, "org", json_object_new_string(org));
    json_object_object_add(a, "limit", json_object_new_int(limit));
    json_object_object_add(a, "tests", json_object_new_boolean(tests));
    rc = cluster_call(app, "acquire", a, &r, err);
    *remaining = r != NULL && json_object_object_get_ex(r, "remaining", &v)
               ? json_object_get_int(v) : 0;
    if (r != NULL && json_object_object_get_ex(r, "day", &v))
        claim->day = json_object_get_int(v);
    if (r != NULL && json_object_object_get_ex(r, "hold", &v))
        claim->hold = json_object_get_int(v);
    json_object_put(r);
    return rc;
}

/* op "in_flight" or "settle" of run at the master. */
static int remote_run(struct app *app, const char *op, const struct usage_run *run)
{
    struct json_object *a = json_object_new_object(), *r = NULL;
    struct am_error err;
    int rc;

    run_fields(a, run);
    json_object_object_add(a, "trace_id", json_object_new_string(run->trace_id));
    json_object_object_add(a, "claim", claim_json(run->claim));
    json_object_object_add(a, "refund", json_object_new_boolean(run->refund));
    error_clear(&err);
    rc = cluster_call(app, op, a, &r, &err);
    json_object_put(r);
    return rc;
}

int usage_acquire(struct app *app, const char *org, int limit, struct usage_claim *claim,
                  int *remaining, struct am_error *err)
{
    int64_t count;
    int rc;

    claim->day = today();
    claim->hold = -1;
    if (cluster_is_replica(app))
        return remote_acquire(app, org, limit, 0, claim, remaining, err);
    rc = quota_take(app->quota, org, &claim->day, limit, quota_load, app, &count);
    *remaining = count >= limit ? 0 : (int)(limit - count);
    if (rc == AM_ERATELIMIT)
        return error_set(err, AM_ERATELIMIT,
                         "Daily limit of %d requests reached; it resets at 00:00 UTC", limit);
    if (rc != 0)
        return error_set(err, AM_EUNAVAILABLE, "Usage accounting unavailable, retry");
    claim->hold = quota_hold(app->quota, org, claim->day);
    return 0;
}

int usage_remaining(struct app *app, const char *org, int limit)
{
    int64_t count;

    /* a replica's table is never filled (the master counts): the store */
    if (cluster_is_replica(app) ? load_count(app, org, today(), 0, &count) != 0
                                : quota_count(app->quota, org, today(), quota_load, app,
                                              &count) != 0)
        return 0;
    return count >= limit ? 0 : (int)(limit - count);
}

int usage_acquire_test(struct app *app, const char *org, int limit, struct usage_claim *claim,
                       int *remaining, struct am_error *err)
{
    int64_t count;
    int rc;

    claim->day = today();
    claim->hold = -1;
    if (app->test_quota == NULL) {          /* no table: tests are not metered */
        *remaining = limit;
        return 0;
    }
    if (cluster_is_replica(app))
        return remote_acquire(app, org, limit, 1, claim, remaining, err);
    rc = quota_take(app->test_quota, org, &claim->day, limit, tests_load, app, &count);
    *remaining = count >= limit ? 0 : (int)(limit - count);
    if (rc == AM_ERATELIMIT)
        return error_set(err, AM_ETESTLIMIT,
                         "Daily limit of %d test calls reached; it resets at 00:00 UTC", limit);
    if (rc != 0)
        return error_set(err, AM_EUNAVAILABLE, "Usage accounting unavailable, retry");
    claim->hold = quota_hold(app->test_quota, org, claim->day);
    return 0;
}

int usage_remaining_test(struct app *app, const char *org, int limit)
{
    int64_t count;

    if (app->test_quota == NULL)
        return limit;
    if (cluster_is_replica(app) ? load_count(app, org, today(), 1, &count) != 0
                                : quota_count(app->test_quota, org, today(), tests_load, app,
                                              &count) != 0)
        return 0;
    return count >= limit ? 0 : (int)(limit - count);
}

/* ---- settling a run ------------------------------------------------------------- */

/* Write the counter of key: cnt plus this run, and its split by version
 * (old: the stored record, NULL if none). */
static int counter_put_versioned(struct store *s, struct store_txn *t, int db, const char *key,
                                 size_t klen, const char *old, const struct counter *cnt,
                                 const struct usage_run *run)
{
    struct json_object *prev = old ? json_tokener_parse(old) : NULL, *o, *v = NULL, *pair;
    char vkey[24];
    const char *text;
    size_t len;
    int rc;

    o = json_object_new_object();
    json_object_object_add(o, "r", json_object_new_int64(cnt->r + 1));
    json_object_object_add(o, "t", json_object_new_int64(cnt->t + run->tokens));
    if (prev == NULL || !json_object_object_get_ex(prev, "v", &v) ||
        !json_object_is_type(v, json_type_object))
        v = json_object_new_object();
    else
        json_object_get(v);
    if (run->version > 0) {
        snprintf(vkey, sizeof(vkey), "%llu", (unsigned long long)run->version);
        if (!json_object_object_get_ex(v, vkey, &pair) || json_object_array_length(pair) != 2) {
            pair = json_object_new_array();
            json_object_array_add(pair, json_object_new_int64(0));
            json_object_array_add(pair, json_object_new_int64(0));
            json_object_object_add(v, vkey, pair);
        }
        json_object_array_put_idx(pair, 0, json_object_new_int64(
            json_object_get_int64(json_object_array_get_idx(pair, 0)) + 1));
        json_object_array_put_idx(pair, 1, json_object_new_int64(
            json_object_get_int64(json_object_array_get_idx(pair, 1)) + run->tokens));
    }
    json_object_object_add(o, "v", v);
    text = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &len);
    rc = store_put(s, t, db, key, klen, text, len);
    json_object_put(o);
    json_object_put(prev);
    return rc;
}

struct settle_ctx {
    const struct usage_run *run;
    int counts;                 /* 1 if the run is counted */
    int tests;                  /* 1: a test, counted on the org's tests record */
    int shard;
    char *line;                 /* the run log record (JSON) */
    size_t len;
    int in_flight;              /* 1: mark the run in flight; 0: unmark it (settled) */
};

/* The in-flight mark of a run in STORE_RUNLOG: "!" + trace id (trace ids
 * are hex, so no run's line has such a key). Returns the length. */
static size_t mark_key(char *buf, size_t cap, const char *trace_id)
{
    return util_snprintf(buf, cap, "!%s", trace_id) == 0 ? strlen(buf) : 0;
}

static int settle_txn(struct store *s, struct store_txn *t, void *arg)
{
    struct settle_ctx *c = arg;
    const struct usage_run *run = c->run;
    struct counter cnt = { 0, 0 };
    char key[240], *val = NULL, buf[64];
    size_t klen;
    int rc, n;

    rc = store_put(s, t, STORE_RUNLOG, run->trace_id, strlen(run->trace_id), c->line, c->len);
    if (rc == 0 && (klen = mark_key(key, sizeof(key), run->trace_id)) == 0)
        rc = AM_EINTERNAL;
    if (rc == 0 && c->in_flight)
        rc = store_put(s, t, STORE_RUNLOG, key, klen, "", 0);
    else if (rc == 0 && (rc = store_del(s, t, STORE_RUNLOG, key, klen)) == AM_ENOENT)
        rc = 0;
    if (rc != 0 || !c->counts)
        return rc;
    if ((klen = usage_key(key, sizeof(key), run->org, run->claim->day,
                          c->tests ? USAGE_TESTS : run->agent)) == 0)
        return AM_EINTERNAL;
    rc = store_get(s, t, STORE_USAGE + c->shard, key, klen, STORE_RMW, &val, NULL);
    if (rc == 0)
        counter_parse(val, &cnt);
    if (rc != 0 && rc != AM_ENOENT) {
        free(val);
        return rc;
    }
    if ((c->tests || run->version == 0) && (val == NULL || strstr(val, "\"v\"") == NULL)) {
        n = snprintf(buf, sizeof(buf), "{\"r\":%lld,\"t\":%lld}", (long long)(cnt.r + 1),
                     (long long)(cnt.t + run->tokens));
        rc = store_put(s, t, STORE_USAGE + c->shard, key, klen, buf, (size_t)n);
    } else {
        rc = counter_put_versioned(s, t, STORE_USAGE + c->shard, key, klen, val, &cnt, run);
    }
    free(val);
    return rc;
}

static char *run_line(const struct usage_run *run, size_t *len)
{
    struct json_object *o = json_object_new_object();
    char *line;
    size_t n;
    const char *v;

    run_fields(o, run);
    json_object_object_add(o, "at", json_object_new_int64(util_now()));
    v = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &n);
    line = xstrndup(v, n);
    *len = n;
    json_object_put(o);
    return line;
}

int usage_settle(struct app *app, const struct usage_run *run)
{
    struct settle_ctx c;
    struct quota *q;
    int rc;

    if (cluster_is_replica(app))
        return remote_run(app, "settle", run);
    memset(&c, 0, sizeof(c));
    c.run = run;
    /* The hold goes before a give-back and after a count's commit, so a
     * death in between leaves the run counted, never given back twice
     * (quota.c, Holds). */
    c.tests = strcmp(run->mode, "run") != 0;
    q = c.tests ? app->test_quota : app->quota;
    if (q != NULL && run->claim != NULL) {
        if (run->refund) {
            quota_release(q, run->claim->hold);
            quota_give_back(q, run->org, run->claim->day);
        } else {
            c.counts = 1;
            quota_hold_trace(q, run->claim->hold, run->trace_id);
        }
    }
    c.shard = my_shard();
    c.line = run_line(run, &c.len);
    /* Written before the answer (it outlives any process); on disk within
     * storage.run_flush_ms. */
    rc = store_transact_deferred(app->store, settle_txn, &c);
    free(c.line);
    if (c.counts)
        quota_release(q, run->claim->hold);
    return rc;
}

int usage_in_flight(struct app *app, const struct usage_run *run)
{
    struct settle_ctx c;
    struct quota *q = strcmp(run->mode, "run") != 0 ? app->test_quota : app->quota;
    struct json_object *o;
    const char *v;
    int rc;

    if (q == NULL || run->claim == NULL)
        return 0;
    if (cluster_is_replica(app))
        return remote_run(app, "in_flight", run);
    memset(&c, 0, sizeof(c));
    c.run = run;
    c.in_flight = 1;
    c.line = run_line(run, &c.len);
    /* the day it counts on, for a reclaim that finishes it */
    o = json_tokener_parse(c.line);
    json_object_object_add(o, "day", json_object_new_int(run->claim->day));
    free(c.line);
    v = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &c.len);
    c.line = xstrndup(v, c.len);
    json_object_put(o);
    /* the trace first: a death before the commit finds no line and gives
     * the run back (no provider saw it yet) */
    quota_hold_trace(q, run->claim->hold, run->trace_id);
    rc = store_transact_deferred(app->store, settle_txn, &c);
    free(c.line);
    return rc;
}

/* The dead process's run `line` (parsed) reached a provider and never
 * settled: count it, on its day, and rewrite its line with the outcome
 * worker_died. */
static int finish_in_flight(struct app *app, const char *trace_id, struct json_object *line)
{
    struct json_object *f;
    struct usage_claim cl = { 0, -1 };
    struct usage_run run;
    struct settle_ctx c;
    int rc;

    memset(&run, 0, sizeof(run));
    run.trace_id = trace_id;
    run.org = json_object_object_get_ex(line, "org", &f) ? json_object_get_string(f) : "";
    run.agent = json_object_object_get_ex(line, "agent", &f) ? json_object_get_string(f) : "";
    run.mode = json_object_object_get_ex(line, "mode", &f) ? json_object_get_string(f) : "run";
    run.version = json_object_object_get_ex(line, "version", &f)
                  ? (uint64_t)json_object_get_int64(f) : 0;
    cl.day = json_object_object_get_ex(line, "day", &f) ? json_object_get_int(f) : today();
    run.model = "";
    run.outcome = "worker_died";
    run.claim = &cl;
    memset(&c, 0, sizeof(c));
    c.run = &run;
    c.counts = 1;
    c.tests = strcmp(run.mode, "run") != 0;
    c.shard = my_shard();
    c.line = run_line(&run, &c.len);
    rc = store_transact(app->store, settle_txn, &c);
    free(c.line);
    return rc;
}

/* quota_reclaim's question for a dead process's run: did it reach the
 * database? A line still in flight (its provider was called, its worker
 * died before the answer settled) is finished here first. */
static int runlog_has(const char *trace_id, void *arg)
{
    struct app *app = arg;
    struct json_object *line, *f;
    char *val = NULL;
    int rc = store_get(app->store, NULL, STORE_RUNLOG, trace_id, strlen(trace_id), 0, &val,
                       NULL);

    if (rc == 0 && (line = json_tokener_parse(val)) != NULL) {
        if (json_object_object_get_ex(line, "outcome", &f) &&
            strcmp(json_object_get_string(f), USAGE_IN_FLIGHT) == 0)
            finish_in_flight(app, trace_id, line);
        json_object_put(line);
    }
    free(val);
    /* unreadable, or not finished: counted (the error is on the side of the limit) */
    return rc != AM_ENOENT;
}

/* Collects the trace ids of in-flight marks (at most cap a pass). */
struct marks {
    char (*trace)[QUOTA_TRACE_MAX];
    int n, cap;
};

static int mark_one(const char *k, size_t kl, const char *v, size_t vl, void *arg)
{
    struct marks *m = arg;

    (void)v;
    (void)vl;
    if (kl < 2 || kl - 1 >= QUOTA_TRACE_MAX)
        return 0;
    memcpy(m->trace[m->n], k + 1, kl - 1);
    m->trace[m->n][kl - 1] = '\0';
    return ++m->n >= m->cap;
}

/* With every process dead (a recovery), the runs still marked in flight
 * (those no hold named: a whole daemon killed, or every hold in use) are
 * finished like a dead holder's. */
static void finish_marked(struct app *app)
{
    struct marks m = { xcalloc(128, QUOTA_TRACE_MAX), 0, 128 };
    int i, rounds = 0;

    do {
        m.n = 0;
        if (store_scan(app->store, NULL, STORE_RUNLOG, "!", 1, mark_one, &m) != 0)
            break;
        for (i = 0; i < m.n; i++) {
            char key[QUOTA_TRACE_MAX + 2];
            size_t kl = mark_key(key, sizeof(key), m.trace[i]);

            (void)runlog_has(m.trace[i], app);
            /* finished (its transaction took the mark), or never to be:
             * either way the next pass must not see it again */
            if (kl > 0)
                (void)store_del(app->store, NULL, STORE_RUNLOG, key, kl);
        }
    } while (m.n == m.cap && ++rounds < 1000);
    free(m.trace);
}

int usage_reclaim(struct app *app, int pid)
{
    int n = quota_reclaim(app->quota, pid, runlog_has, app);

    if (app->test_quota != NULL)
        n += quota_reclaim(app->test_quota, pid, runlog_has, app);
    if (pid == 0)
        finish_marked(app);
    return n;
}

int64_t usage_next_reset(void)
{
    int64_t now = util_now();
    return now - (now % 86400) + 86400;
}

static void accumulate(struct json_object *map, const char *k, const struct counter *c);

struct report_ctx {
    size_t olen;                 /* strlen(org) */
    char first[16];              /* first day of the period, inclusive */
    char last[16];               /* today: a record of a later day (a run that another
                                    process's clock put past midnight) waits for it */
    struct json_object *days;    /* day -> [requests, tokens] */
    struct json_object *agents;  /* agent -> [requests, tokens] */
    struct json_object *versions;/* NULL, or "day\nagent\nversion" -> [requests, tokens] */
    int64_t tests;               /* test calls of the period */
};

/* Add the "v" split of one record to c->versions. */
static void accumulate_versions(struct report_ctx *c, const char *day, const char *agent,
                                const char *val)
{
    struct json_object *rec = json_tokener_parse(val), *v;
    struct counter cnt;
    char k[200];

    if (rec != NULL && json_object_object_get_ex(rec, "v", &v) &&
        json_object_is_type(v, json_type_object)) {
        json_object_object_foreach(v, n, pair) {
            cnt.r = json_object_get_int64(json_object_array_get_idx(pair, 0));
            cnt.t = json_object_get_int64(json_object_array_get_idx(pair, 1));
            if (util_snprintf(k, sizeof(k), "%s\n%s\n%s", day, agent, n) == 0)
                accumulate(c->versions, k, &cnt);
        }
    }
    json_object_put(rec);
}

static void accumulate(struct json_object *map, const char *k, const struct counter *c)
{
    struct json_object *pair;

    if (!json_object_object_get_ex(map, k, &pair)) {
        pair = json_object_new_array();
        json_object_array_add(pair, json_object_new_int64(0));
        json_object_array_add(pair, json_object_new_int64(0));
        json_object_object_add(map, k, pair);
    }
    json_object_array_put_idx(pair, 0, json_object_new_int64(
        json_object_get_int64(json_object_array_get_idx(pair, 0)) + c->r));
    json_object_array_put_idx(pair, 1, json_object_new_int64(
        json_object_get_int64(json_object_array_get_idx(pair, 1)) + c->t));
}

/* One agent's day in one shard; legacy org-day records are skipped. */
static int report_one(const char *k, size_t kl, const char *v, size_t vl, void *arg)
{
    struct report_ctx *c = arg;
    const char *day = k + c->olen + 1, *agent;
    char dbuf[16], abuf[128];
    struct counter cnt;
    size_t dl, al;

    (void)vl;
    dl = strnlen(day, kl - c->olen - 1);
    if (dl >= sizeof(dbuf) || c->olen + 1 + dl >= kl)
        return 0;
    memcpy(dbuf, day, dl);
    dbuf[dl] = '\0';
    agent = day + dl + 1;
    al = (size_t)(k + kl - agent);
    if (strcmp(dbuf, c->first) < 0 || strcmp(dbuf, c->last) > 0 || al >= sizeof(abuf) ||
        counter_parse(v, &cnt) != 0)
        return 0;
    if (is_tests(agent, al)) {          /* tests count apart from runs */
        c->tests += cnt.r;
        return 0;
    }
    memcpy(abuf, agent, al);
    abuf[al] = '\0';
    accumulate(c->days, dbuf, &cnt);
    accumulate(c->agents, abuf, &cnt);
    if (c->versions != NULL)
        accumulate_versions(c, dbuf, abuf, v);
    return 0;
}

static int version_row_cmp(const void *a, const void *b)
{
    struct json_object *x = *(struct json_object *const *)a, *y = *(struct json_object *const *)b;
    static const char *const keys[] = { "date", "agent" };
    struct json_object *u, *w;
    int i, d;

    for (i = 0; i < 2; i++) {
        json_object_object_get_ex(x, keys[i], &u);
        json_object_object_get_ex(y, keys[i], &w);
        if ((d = strcmp(json_object_get_string(u), json_object_get_string(w))) != 0)
            return d;
    }
    json_object_object_get_ex(x, "version", &u);
    json_object_object_get_ex(y, "version", &w);
    return json_object_get_int64(u) < json_object_get_int64(w) ? -1
           : json_object_get_int64(u) > json_object_get_int64(w);
}

static struct json_object *report_row(const char *label_key, const char *label,
                                      struct json_object *pair)
{
    struct json_object *o = json_object_new_object();

    json_object_object_add(o, label_key, json_object_new_string(label));
    json_object_object_add(o, "requests", json_object_new_int64(
        pair ? json_object_get_int64(json_object_array_get_idx(pair, 0)) : 0));
    json_object_object_add(o, "tokens", json_object_new_int64(
        pair ? json_object_get_int64(json_object_array_get_idx(pair, 1)) : 0));
    return o;
}

/* by_version: [{"date","agent","version","requests","tokens"}] by date,
 * agent, version. */
static struct json_object *report_versions(struct json_object *versions)
{
    struct json_object *arr = json_object_new_array();
    char label[200], *agent, *n;

    json_object_object_foreach(versions, k, pair) {
        struct json_object *row;
        util_strlcpy(label, k, sizeof(label));
        if ((agent = strchr(label, '\n')) == NULL || (n = strchr(agent + 1, '\n')) == NULL)
            continue;
        *agent++ = '\0';
        *n++ = '\0';
        row = report_row("date", label, pair);
        json_object_object_add(row, "agent", json_object_new_string(agent));
        json_object_object_add(row, "version", json_object_new_int64(strtoll(n, NULL, 10)));
        json_object_array_add(arr, row);
    }
    json_object_array_sort(arr, version_row_cmp);
    return arr;
}

int usage_report(struct app *app, const char *org, int days, int limit, int test_limit,
                 int by_version, struct json_object **out, struct am_error *err)
{
    struct report_ctx c;
    struct json_object *by_day, *by_agent, *pair;
    int64_t total_r = 0, total_t = 0;
    int now = today(), i, rc = 0;
    char day[16];

    *out = NULL;
    c.olen = strlen(org);
    c.tests = 0;
    day_name(now - (days - 1), c.first, sizeof(c.first));
    day_name(now, c.last, sizeof(c.last));
    c.days = json_object_new_object();
    c.agents = json_object_new_object();
    c.versions = by_version ? json_object_new_object() : NULL;
    for (i = 0; i < STORE_USAGE_SHARDS && rc == 0; i++)
        rc = store_scan(app->store, NULL, STORE_USAGE + i, org, c.olen + 1, report_one, &c);
    if (rc != 0) {
        json_object_put(c.days);
        json_object_put(c.agents);
        json_object_put(c.versions);
        return error_set(err, AM_EUNAVAILABLE, "Usage unavailable, retry");
    }
    by_day = json_object_new_array();
    for (i = days - 1; i >= 0; i--) {
        day_name(now - i, day, sizeof(day));
        pair = NULL;
        json_object_object_get_ex(c.days, day, &pair);
        json_object_array_add(by_day, report_row("date", day, pair));
        if (pair != NULL) {
            total_r += json_object_get_int64(json_object_array_get_idx(pair, 0));
            total_t += json_object_get_int64(json_object_array_get_idx(pair, 1));
        }
    }
    by_agent = json_object_new_array();
    json_object_object_foreach(c.agents, name, p) {
        json_object_array_add(by_agent, report_row("agent", name, p));
    }
    *out = json_object_new_object();
    json_object_object_add(*out, "period_days", json_object_new_int(days));
    json_object_object_add(*out, "total_requests", json_object_new_int64(total_r));
    json_object_object_add(*out, "total_tokens", json_object_new_int64(total_t));
    json_object_object_add(*out, "daily_limit", json_object_new_int(limit));
    json_object_object_add(*out, "remaining_today",
                           json_object_new_int(usage_remaining(app, org, limit)));
    json_object_object_add(*out, "total_tests", json_object_new_int64(c.tests));
    json_object_object_add(*out, "daily_test_limit", json_object_new_int(test_limit));
    json_object_object_add(*out, "remaining_tests_today",
                           json_object_new_int(usage_remaining_test(app, org, test_limit)));
    json_object_object_add(*out, "by_agent", by_agent);
    json_object_object_add(*out, "by_day", by_day);
    if (c.versions != NULL)
        json_object_object_add(*out, "by_version", report_versions(c.versions));
    json_object_put(c.versions);
    json_object_put(c.days);
    json_object_put(c.agents);
    return 0;
}

/* ---- invariants ----------------------------------------------------------------- */

struct check_ctx {
    struct app *app;
    int today;
};

static void check_org(const char *org, int day, int64_t count, void *arg)
{
    struct check_ctx *c = arg;
    int64_t stored;

    if (day != c->today)
        return;
    if (quota_load(org, day, &stored, c->app) != 0)
        invariant_fail("usage: cannot read the shards of org \"%s\"", org);
    if (count < stored)
        invariant_fail("usage 1: org \"%s\" has %lld runs counted today, %lld stored", org,
                       (long long)count, (long long)stored);
}

void usage_check_invariants(struct app *app)
{
    struct check_ctx c = { app, today() };

    quota_foreach(app->quota, check_org, &c);
}
