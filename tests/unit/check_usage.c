/*
 * check_usage.c - unit tests for usage.c (daily counters, the daily limit
 * and the run log), against a real Berkeley DB environment in a fresh
 * mkdtemp directory per test and a real quota table (quota_create).
 *
 * What a user or an operator sees, through the public interface only:
 *  - the run log (STORE_RUNLOG, read back with store_get): one record per
 *    trace id holding exactly org, agent, mode, model, tokens, latency_ms,
 *    outcome and an "at" of now; tests and refunds get theirs too;
 *  - usage_acquire: exactly `limit` runs a day, then AM_ERATELIMIT with
 *    nothing remaining; `remaining` counts down;
 *  - a `test` counts nothing, a refunded run gives its quota back and
 *    counts nothing;
 *  - usage_report: the JSON of GET /orgs/{slug}/usage (SPEC.md section 7)
 *    with totals, by_agent, by_day and remaining_today; runs settled by
 *    several threads (so in several usage shards) are summed; a run counts
 *    on the day it was accepted (run.day); one org never sees another's;
 *    the legacy "org\0day" records are ignored;
 *  - the day's count survives closing and reopening the store with a new
 *    quota table (its loader sums the shards on disk);
 *  - a settle is one transaction: with a write fault injected at either of
 *    its writes (store_test_fail_write_after) neither the run log line nor
 *    the count is left.
 *
 * Threads report through their struct, never ck_assert (which belongs to
 * the test's own thread). The tests read today's date from the clock, so
 * the fixture waits out the last seconds of a UTC day rather than have a
 * test straddle midnight.
 *
 * Run under valgrind: CK_FORK=no valgrind --leak-check=full --error-exitcode=1
 */
#include <check.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>
#include <json-c/json.h>
#include "state/app.h"
#include "state/quota.h"
#include "state/store.h"
#include "control/usage.h"
#include "lib/invariant.h"
#include "lib/util.h"

#define NCASES(a) ((int)(sizeof(a) / sizeof((a)[0])))

static char base[64];              /* per-run parent of every home; main() removes it */
static char home[96];              /* this test's environment directory */
static struct store *st;           /* opened by the fixture */
static struct quota *qt;           /* created by the fixture */
static struct quota *tq;           /* the test allowance table, likewise */
static struct app app;             /* cfg and reg stay NULL: usage.c uses neither */

/* ---- fixture --------------------------------------------------------------- */

static void open_all(void)
{
    struct store_options o = { home, 8, 1, 64, 0, NULL };
    struct am_error err;

    error_clear(&err);
    ck_assert_msg(store_open(&st, &o, STORE_OPEN_CREATE, &err) == 0, "store_open: %s",
                  err.message);
    error_clear(&err);
    ck_assert_msg(quota_create(&qt, 16, 64, &err) == 0, "quota_create: %s", err.message);
    ck_assert_msg(quota_create(&tq, 16, 64, &err) == 0, "quota_create: %s", err.message);
    memset(&app, 0, sizeof app);
    app.store = st;
    app.quota = qt;
    app.test_quota = tq;
}

static void close_all(void)
{
    quota_close(qt);
    quota_close(tq);
    store_close(st);
    qt = NULL;
    tq = NULL;
    st = NULL;
    memset(&app, 0, sizeof app);
}

static void setup(void)
{
    /* Every test finishes in well under 15 s: do not start one that could
     * see two UTC dates (bounded: at most 15 s). */
    while (86400 - util_now() % 86400 < 15) {
        struct timespec ts = { 0, 200000000L };
        nanosleep(&ts, NULL);
    }
    snprintf(home, sizeof home, "%s/env-XXXXXX", base);
    ck_assert_ptr_nonnull(mkdtemp(home));
    open_all();
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb; (void)flag; (void)ftw;
    return remove(path);
}

static void teardown(void)
{
    store_test_fail_write_after(0);
    if (st != NULL && qt != NULL) {
        CHECK_INVARIANTS(store_check_invariants(st));
        CHECK_INVARIANTS(quota_check_invariants(qt));
        CHECK_INVARIANTS(usage_check_invariants(&app));
    }
    close_all();
    if (home[0] != '\0')
        nftw(home, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    home[0] = '\0';
}

/* ---- helpers ----------------------------------------------------------------- */

static int today(void)
{
    return (int)(util_now() / 86400);
}

/* "YYYY-MM-DD" of day (days since the epoch), computed here independently. */
static void date_of(int day, char *buf, size_t cap)
{
    time_t tt = (time_t)day * 86400;
    struct tm tm;

    gmtime_r(&tt, &tm);
    ck_assert_uint_eq(strftime(buf, cap, "%Y-%m-%d", &tm), 10);
}

/* usage_acquire that must succeed; returns the day the run counts on. The
 * run's hold is dropped at once: only the hold tests keep theirs. */
static int acquire_ok(const char *org, int limit, int want_remaining)
{
    struct am_error err;
    struct usage_claim cl = { -1, -1 };
    int remaining = -1, rc;

    error_clear(&err);
    rc = usage_acquire(&app, org, limit, &cl, &remaining, &err);
    ck_assert_msg(rc == 0, "usage_acquire(%s, %d) = %d: %s", org, limit, rc, err.message);
    ck_assert_int_eq(cl.day, today());
    ck_assert_int_ge(cl.hold, 0);
    quota_release(qt, cl.hold);
    if (want_remaining >= 0)
        ck_assert_int_eq(remaining, want_remaining);
    return cl.day;
}

/* Settle one finished run (with its claim) or test (claim NULL), as
 * routes.c does. */
static int settle_claim(const char *trace, const char *org, const char *agent,
                        const char *mode, const struct usage_claim *cl, int tokens, int refund)
{
    struct usage_run r = {
        .trace_id = trace, .org = org, .agent = agent, .mode = mode,
        .model = "openai/gpt-4o-mini", .outcome = refund ? "guardrail_blocked" : "ok",
        .claim = cl, .refund = refund, .tokens = tokens, .latency_ms = 250,
    };

    return usage_settle(&app, &r);
}

/* The same with an unheld claim on day (a test ignores it). */
static int settle(const char *trace, const char *org, const char *agent, const char *mode,
                  int day, int tokens, int refund)
{
    struct usage_claim cl = { day, -1 };

    return settle_claim(trace, org, agent, mode, strcmp(mode, "run") == 0 ? &cl : NULL,
                        tokens, refund);
}

/* An accepted run that reached its provider and used `tokens`. */
static void run_ok(const char *trace, const char *org, const char *agent, int limit,
                   int tokens)
{
    settle(trace, org, agent, "run", acquire_ok(org, limit, -1), tokens, 0);
}

/* The run log record of trace parsed (caller puts), NULL if there is none. */
static struct json_object *runlog(const char *trace)
{
    struct json_object *o;
    char *val = NULL;
    size_t vlen = 0;
    int rc = store_get(st, NULL, STORE_RUNLOG, trace, strlen(trace), 0, &val, &vlen);

    if (rc == AM_ENOENT)
        return NULL;
    ck_assert_msg(rc == 0, "store_get(runlog, %s) = %d", trace, rc);
    o = json_tokener_parse(val);
    ck_assert_msg(o != NULL && json_object_is_type(o, json_type_object),
                  "run log of %s is not a JSON object: %s", trace, val);
    free(val);
    return o;
}

static const char *str_of(struct json_object *o, const char *key)
{
    struct json_object *v;

    ck_assert_msg(json_object_object_get_ex(o, key, &v), "no \"%s\"", key);
    ck_assert_msg(json_object_is_type(v, json_type_string), "\"%s\" is not a string", key);
    return json_object_get_string(v);
}

static int64_t int_of(struct json_object *o, const char *key)
{
    struct json_object *v;

    ck_assert_msg(json_object_object_get_ex(o, key, &v), "no \"%s\"", key);
    ck_assert_msg(json_object_is_type(v, json_type_int), "\"%s\" is not an integer", key);
    return json_object_get_int64(v);
}

/* o has exactly the n keys in keys[] (no more, no fewer). */
static void has_exactly(struct json_object *o, const char *const *keys, int n)
{
    ck_assert_int_eq(json_object_object_length(o), n);
    for (int i = 0; i < n; i++)
        ck_assert_msg(json_object_object_get_ex(o, keys[i], NULL), "no \"%s\" in %s", keys[i],
                      json_object_to_json_string(o));
}

/* usage_report that must succeed (caller puts). Checks the shape of SPEC.md
 * section 7: the top-level keys, one by_day row per day in date order
 * ending today, and the keys of every row. */
static struct json_object *report(const char *org, int days, int limit)
{
    static const char *const top[] = { "period_days", "total_requests", "total_tokens",
                                       "daily_limit", "remaining_today", "by_agent",
                                       "by_day", "total_tests", "daily_test_limit",
                                       "remaining_tests_today" };
    static const char *const day_keys[] = { "date", "requests", "tokens" };
    static const char *const agent_keys[] = { "agent", "requests", "tokens" };
    struct json_object *o = NULL, *a;
    struct am_error err;
    char want[16];
    int rc;

    error_clear(&err);
    rc = usage_report(&app, org, days, limit, 1000, 0, &o, &err);
    ck_assert_msg(rc == 0, "usage_report(%s) = %d: %s", org, rc, err.message);
    ck_assert_ptr_nonnull(o);
    has_exactly(o, top, NCASES(top));
    ck_assert_int_eq(int_of(o, "period_days"), days);
    ck_assert_int_eq(int_of(o, "daily_limit"), limit);
    ck_assert(json_object_object_get_ex(o, "by_day", &a));
    ck_assert(json_object_is_type(a, json_type_array));
    ck_assert_int_eq((int)json_object_array_length(a), days);
    for (int i = 0; i < days; i++) {
        struct json_object *row = json_object_array_get_idx(a, (size_t)i);

        has_exactly(row, day_keys, NCASES(day_keys));
        date_of(today() - (days - 1 - i), want, sizeof want);
        ck_assert_str_eq(str_of(row, "date"), want);
    }
    ck_assert(json_object_object_get_ex(o, "by_agent", &a));
    ck_assert(json_object_is_type(a, json_type_array));
    for (size_t i = 0; i < json_object_array_length(a); i++)
        has_exactly(json_object_array_get_idx(a, i), agent_keys, NCASES(agent_keys));
    return o;
}

/* The row of array `arr` whose `label_key` is `label`, NULL if none (and
 * never two). */
static struct json_object *row_of(struct json_object *rep, const char *arr,
                                  const char *label_key, const char *label)
{
    struct json_object *a, *found = NULL;

    ck_assert(json_object_object_get_ex(rep, arr, &a));
    for (size_t i = 0; i < json_object_array_length(a); i++) {
        struct json_object *row = json_object_array_get_idx(a, i);

        if (strcmp(str_of(row, label_key), label) == 0) {
            ck_assert_msg(found == NULL, "two %s rows for %s", arr, label);
            found = row;
        }
    }
    return found;
}

static size_t agents_in(struct json_object *rep)
{
    struct json_object *a;

    ck_assert(json_object_object_get_ex(rep, "by_agent", &a));
    return json_object_array_length(a);
}

/* The agent's requests and tokens in the report (both 0 when absent). */
static void agent_is(struct json_object *rep, const char *agent, int64_t r, int64_t t)
{
    struct json_object *row = row_of(rep, "by_agent", "agent", agent);

    ck_assert_msg(row != NULL, "no by_agent row for %s", agent);
    ck_assert_int_eq(int_of(row, "requests"), r);
    ck_assert_int_eq(int_of(row, "tokens"), t);
}

static void day_is(struct json_object *rep, int day, int64_t r, int64_t t)
{
    char date[16];
    struct json_object *row;

    date_of(day, date, sizeof date);
    row = row_of(rep, "by_day", "date", date);
    ck_assert_msg(row != NULL, "no by_day row for %s", date);
    ck_assert_int_eq(int_of(row, "requests"), r);
    ck_assert_int_eq(int_of(row, "tokens"), t);
}

/* An org with nothing counted: zero totals, no agents, every day zero. */
static void report_is_empty(const char *org, int limit, int remaining)
{
    struct json_object *rep = report(org, 7, limit);

    ck_assert_int_eq(int_of(rep, "total_requests"), 0);
    ck_assert_int_eq(int_of(rep, "total_tokens"), 0);
    ck_assert_int_eq(int_of(rep, "remaining_today"), remaining);
    ck_assert_uint_eq(agents_in(rep), 0);
    for (int d = today() - 6; d <= today(); d++)
        day_is(rep, d, 0, 0);
    json_object_put(rep);
}

/* How many usage shards hold a record of org. */
static int count_rec(const char *k, size_t kl, const char *v, size_t vl, void *arg)
{
    (void)k; (void)kl; (void)v; (void)vl;
    ++*(int *)arg;
    return 0;
}

static int shards_used(const char *org)
{
    int used = 0;

    for (int i = 0; i < STORE_USAGE_SHARDS; i++) {
        int n = 0;

        ck_assert_int_eq(store_scan(st, NULL, STORE_USAGE + i, org, strlen(org) + 1,
                                    count_rec, &n), 0);
        used += n > 0;
    }
    return used;
}

/* ---- run threads ------------------------------------------------------------ */

struct runner {
    pthread_t th;
    const char *org;
    int id;
    int runs;                   /* to acquire and settle */
    int limit;
    int failed;                 /* OUT: acquires that failed */
    int bad_day;                /* OUT: acquires that gave another day than today */
};

/* Thread i runs agent "a<i % 2>" and uses 10 * (i + 1) + j tokens on its
 * j-th run. */
static int runner_tokens(int i, int j)
{
    return 10 * (i + 1) + j;
}

static void *runner_main(void *arg)
{
    struct runner *r = arg;
    char trace[64], agent[8];

    snprintf(agent, sizeof agent, "a%d", r->id % 2);
    for (int j = 0; j < r->runs; j++) {
        struct am_error err;
        struct usage_claim cl;
        int remaining = -1;

        error_clear(&err);
        if (usage_acquire(&app, r->org, r->limit, &cl, &remaining, &err) != 0) {
            r->failed++;
            continue;
        }
        if (cl.day != today() || cl.hold < 0)
            r->bad_day++;
        snprintf(trace, sizeof trace, "t%d-%d", r->id, j);
        settle_claim(trace, r->org, agent, "run", &cl, runner_tokens(r->id, j), 0);
    }
    return NULL;
}

/* n threads, each settling `runs` runs of org; returns the token total. */
static int64_t run_threads(const char *org, int n, int runs, int limit)
{
    struct runner r[8];
    int64_t tokens = 0;

    ck_assert_int_le(n, NCASES(r));
    for (int i = 0; i < n; i++) {
        r[i] = (struct runner){ .org = org, .id = i, .runs = runs, .limit = limit };
        ck_assert_int_eq(pthread_create(&r[i].th, NULL, runner_main, &r[i]), 0);
    }
    for (int i = 0; i < n; i++) {
        ck_assert_int_eq(pthread_join(r[i].th, NULL), 0);
        ck_assert_msg(r[i].failed == 0, "thread %d: %d acquires failed", i, r[i].failed);
        ck_assert_int_eq(r[i].bad_day, 0);
        for (int j = 0; j < runs; j++)
            tokens += runner_tokens(i, j);
    }
    return tokens;
}

/* ---- the run log --------------------------------------------------------------- */

/* ?by=version (issue 12): today's runs split by the agent version that
 * answered, per agent; the totals are unchanged by the split. */
START_TEST(report_by_version_splits_each_day_by_agent_version)
{
    static const struct { const char *agent; uint64_t version; int tokens; } runs[] = {
        { "bot", 1, 10 }, { "bot", 1, 5 }, { "bot", 2, 7 }, { "other", 4, 1 }, { "bot", 0, 3 },
    };
    struct json_object *o = NULL, *a, *row;
    struct am_error err;
    char trace[32], day[16];

    for (int i = 0; i < NCASES(runs); i++) {
        struct usage_claim cl = { 0, -1 };
        struct usage_run r = { .trace_id = trace, .org = "acme", .agent = runs[i].agent,
                               .version = runs[i].version, .mode = "run", .model = "echo/echo",
                               .outcome = "ok", .claim = &cl, .tokens = runs[i].tokens };
        snprintf(trace, sizeof trace, "tr-v%d", i);
        cl.day = acquire_ok("acme", 100, 99 - i);
        ck_assert_int_eq(usage_settle(&app, &r), 0);
    }
    error_clear(&err);
    ck_assert_int_eq(usage_report(&app, "acme", 1, 100, 1000, 1, &o, &err), 0);
    ck_assert_int_eq(int_of(o, "total_requests"), 5);
    ck_assert(json_object_object_get_ex(o, "by_version", &a));
    ck_assert_int_eq((int)json_object_array_length(a), 3);
    date_of(today(), day, sizeof day);
    row = json_object_array_get_idx(a, 0);
    ck_assert_str_eq(str_of(row, "date"), day);
    ck_assert_str_eq(str_of(row, "agent"), "bot");
    ck_assert_int_eq(int_of(row, "version"), 1);
    ck_assert_int_eq(int_of(row, "requests"), 2);
    ck_assert_int_eq(int_of(row, "tokens"), 15);
    row = json_object_array_get_idx(a, 1);
    ck_assert_int_eq(int_of(row, "version"), 2);
    ck_assert_int_eq(int_of(row, "requests"), 1);
    row = json_object_array_get_idx(a, 2);
    ck_assert_str_eq(str_of(row, "agent"), "other");
    ck_assert_int_eq(int_of(row, "version"), 4);
    json_object_put(o);
    /* without the flag the answer keeps SPEC section 7's shape */
    json_object_put(report("acme", 1, 100));
}
END_TEST

START_TEST(settled_run_is_in_the_run_log_with_exactly_its_fields)
{
    static const char *const keys[] = { "org", "agent", "version", "mode", "model", "tokens",
                                        "latency_ms", "outcome", "at" };
    struct usage_run r = {
        .trace_id = "tr-0001", .org = "acme", .agent = "support-bot", .version = 3, .mode = "run",
        .model = "anthropic/claude-3-haiku", .outcome = "blocked_output",
        .refund = 0, .tokens = 321, .latency_ms = 4567,
    };
    struct usage_claim cl = { 0, -1 };
    struct json_object *o;
    int64_t before, after;

    ck_assert_ptr_null(runlog("tr-0001"));
    cl.day = acquire_ok("acme", 10, 9);
    r.claim = &cl;
    before = util_now();
    usage_settle(&app, &r);
    after = util_now();

    o = runlog("tr-0001");
    ck_assert_ptr_nonnull(o);
    has_exactly(o, keys, NCASES(keys));
    ck_assert_str_eq(str_of(o, "org"), "acme");
    ck_assert_str_eq(str_of(o, "agent"), "support-bot");
    ck_assert_int_eq(int_of(o, "version"), 3);
    ck_assert_str_eq(str_of(o, "mode"), "run");
    ck_assert_str_eq(str_of(o, "model"), "anthropic/claude-3-haiku");
    ck_assert_int_eq(int_of(o, "tokens"), 321);
    ck_assert_int_eq(int_of(o, "latency_ms"), 4567);
    ck_assert_str_eq(str_of(o, "outcome"), "blocked_output");
    ck_assert_int_ge(int_of(o, "at"), before);
    ck_assert_int_le(int_of(o, "at"), after);
    json_object_put(o);

    /* Another run has its own line; a run with no model logs "". */
    r.trace_id = "tr-0002";
    r.model = NULL;
    r.outcome = "provider_timeout";
    r.tokens = 0;
    r.latency_ms = 30000;
    cl.day = acquire_ok("acme", 10, 8);
    usage_settle(&app, &r);
    o = runlog("tr-0002");
    ck_assert_ptr_nonnull(o);
    has_exactly(o, keys, NCASES(keys));
    ck_assert_str_eq(str_of(o, "model"), "");
    ck_assert_str_eq(str_of(o, "outcome"), "provider_timeout");
    ck_assert_int_eq(int_of(o, "tokens"), 0);
    ck_assert_int_eq(int_of(o, "latency_ms"), 30000);
    json_object_put(o);
    o = runlog("tr-0001");
    ck_assert_ptr_nonnull(o);
    ck_assert_int_eq(int_of(o, "tokens"), 321);
    json_object_put(o);
    ck_assert_ptr_null(runlog("tr-0003"));
}
END_TEST

/* ---- the daily limit ------------------------------------------------------------- */

START_TEST(acquire_accepts_exactly_the_limit_then_ratelimits)
{
    enum { LIMIT = 5 };
    struct am_error err;
    struct usage_claim cl;
    int remaining = -1;

    ck_assert_int_eq(usage_remaining(&app, "acme", LIMIT), LIMIT);
    for (int i = 1; i <= LIMIT; i++) {
        acquire_ok("acme", LIMIT, LIMIT - i);
        ck_assert_int_eq(usage_remaining(&app, "acme", LIMIT), LIMIT - i);
    }
    for (int i = 0; i < 3; i++) {
        error_clear(&err);
        remaining = -1;
        ck_assert_int_eq(usage_acquire(&app, "acme", LIMIT, &cl, &remaining, &err),
                         AM_ERATELIMIT);
        ck_assert_int_eq(err.code, AM_ERATELIMIT);
        ck_assert_msg(strstr(err.message, "5") != NULL, "message names the limit: %s",
                      err.message);
        ck_assert_int_eq(remaining, 0);
        ck_assert_int_eq(usage_remaining(&app, "acme", LIMIT), 0);
    }
    /* A higher limit (the operator raised it) lets more through. */
    acquire_ok("acme", LIMIT + 2, 1);
}
END_TEST

START_TEST(next_reset_is_the_next_utc_midnight)
{
    int64_t before = util_now(), reset = usage_next_reset();

    ck_assert_int_eq(reset % 86400, 0);
    ck_assert_int_gt(reset, before);
    ck_assert_int_le(reset, util_now() + 86400);
}
END_TEST

/* ---- what counts ------------------------------------------------------------------ */

START_TEST(test_mode_is_logged_but_counts_nothing)
{
    struct json_object *o;

    run_ok("r-1", "acme", "bot", 10, 40);
    ck_assert_int_eq(usage_remaining(&app, "acme", 10), 9);
    settle("t-1", "acme", "bot", "test", 0, 77, 0);
    settle("t-2", "acme", "other", "test", today(), 5, 0);
    /* a test is never a refund, even if flagged as one */
    settle("t-3", "acme", "bot", "test", today(), 0, 1);

    o = runlog("t-1");
    ck_assert_ptr_nonnull(o);
    ck_assert_str_eq(str_of(o, "mode"), "test");
    ck_assert_str_eq(str_of(o, "agent"), "bot");
    ck_assert_int_eq(int_of(o, "tokens"), 77);
    json_object_put(o);
    o = runlog("t-3");
    ck_assert_ptr_nonnull(o);
    json_object_put(o);

    ck_assert_int_eq(usage_remaining(&app, "acme", 10), 9);
    o = report("acme", 7, 10);
    ck_assert_int_eq(int_of(o, "total_requests"), 1);
    ck_assert_int_eq(int_of(o, "total_tokens"), 40);
    ck_assert_int_eq(int_of(o, "remaining_today"), 9);
    ck_assert_uint_eq(agents_in(o), 1);
    agent_is(o, "bot", 1, 40);
    day_is(o, today(), 1, 40);
    json_object_put(o);

    /* An org that only ever tested has no usage at all. */
    settle("t-4", "tester", "bot", "test", today(), 12, 0);
    report_is_empty("tester", 10, 10);
    ck_assert_int_eq(shards_used("tester"), 0);
}
END_TEST

START_TEST(refund_gives_the_quota_back_and_counts_nothing)
{
    enum { LIMIT = 3 };
    struct json_object *o;
    int day;

    run_ok("r-1", "acme", "bot", LIMIT, 100);
    day = acquire_ok("acme", LIMIT, 1);
    ck_assert_int_eq(usage_remaining(&app, "acme", LIMIT), 1);
    settle("r-2", "acme", "bot", "run", day, 55, 1);
    ck_assert_int_eq(usage_remaining(&app, "acme", LIMIT), 2);

    /* the refunded run is in the run log, as it was */
    o = runlog("r-2");
    ck_assert_ptr_nonnull(o);
    ck_assert_str_eq(str_of(o, "mode"), "run");
    ck_assert_str_eq(str_of(o, "outcome"), "guardrail_blocked");
    json_object_put(o);

    o = report("acme", 7, LIMIT);
    ck_assert_int_eq(int_of(o, "total_requests"), 1);
    ck_assert_int_eq(int_of(o, "total_tokens"), 100);
    ck_assert_int_eq(int_of(o, "remaining_today"), 2);
    agent_is(o, "bot", 1, 100);
    day_is(o, today(), 1, 100);
    json_object_put(o);

    /* the given-back run can be taken again, and no more */
    acquire_ok("acme", LIMIT, 1);
    acquire_ok("acme", LIMIT, 0);
    ck_assert_int_eq(usage_remaining(&app, "acme", LIMIT), 0);
}
END_TEST

/* ---- the report ------------------------------------------------------------------- */

START_TEST(report_sums_runs_by_agent_and_day)
{
    enum { LIMIT = 10 };
    struct json_object *o;

    run_ok("s-1", "acme", "support", LIMIT, 10);
    run_ok("s-2", "acme", "support", LIMIT, 20);
    run_ok("s-3", "acme", "sales", LIMIT, 5);
    run_ok("s-4", "acme", "support", LIMIT, 30);
    run_ok("s-5", "acme", "sales", LIMIT, 7);
    /* a provider was called and failed: no tokens, still a request */
    run_ok("s-6", "acme", "sales", LIMIT, 0);

    o = report("acme", 7, LIMIT);
    ck_assert_int_eq(int_of(o, "total_requests"), 6);
    ck_assert_int_eq(int_of(o, "total_tokens"), 72);
    ck_assert_int_eq(int_of(o, "remaining_today"), LIMIT - 6);
    ck_assert_uint_eq(agents_in(o), 2);
    agent_is(o, "support", 3, 60);
    agent_is(o, "sales", 3, 12);
    day_is(o, today(), 6, 72);
    for (int d = today() - 6; d < today(); d++)
        day_is(o, d, 0, 0);
    json_object_put(o);

    /* days = 1 is today alone; days = 90 has the same totals */
    o = report("acme", 1, LIMIT);
    ck_assert_int_eq(int_of(o, "total_requests"), 6);
    ck_assert_int_eq(int_of(o, "total_tokens"), 72);
    json_object_put(o);
    o = report("acme", 90, LIMIT);
    ck_assert_int_eq(int_of(o, "total_requests"), 6);
    ck_assert_int_eq(int_of(o, "total_tokens"), 72);
    ck_assert_uint_eq(agents_in(o), 2);
    json_object_put(o);

    report_is_empty("nobody", LIMIT, LIMIT);
}
END_TEST

START_TEST(runs_from_many_threads_are_summed_over_the_shards)
{
    enum { THREADS = 4, RUNS = 50, LIMIT = 1000 };
    struct json_object *o;
    int64_t tokens, t0 = 0, t1 = 0;

    tokens = run_threads("acme", THREADS, RUNS, LIMIT);
    /* Each new thread takes the next shard: 4 threads, every shard. */
    ck_assert_int_eq(shards_used("acme"), STORE_USAGE_SHARDS < THREADS ? STORE_USAGE_SHARDS
                                                                        : THREADS);
    for (int i = 0; i < THREADS; i++)
        for (int j = 0; j < RUNS; j++)
            *(i % 2 ? &t1 : &t0) += runner_tokens(i, j);

    o = report("acme", 7, LIMIT);
    ck_assert_int_eq(int_of(o, "total_requests"), THREADS * RUNS);
    ck_assert_int_eq(int_of(o, "total_tokens"), tokens);
    ck_assert_int_eq(int_of(o, "remaining_today"), LIMIT - THREADS * RUNS);
    ck_assert_uint_eq(agents_in(o), 2);
    agent_is(o, "a0", THREADS * RUNS / 2, t0);
    agent_is(o, "a1", THREADS * RUNS / 2, t1);
    day_is(o, today(), THREADS * RUNS, tokens);
    json_object_put(o);

    /* every run is in the run log */
    for (int i = 0; i < THREADS; i++)
        for (int j = 0; j < RUNS; j += 7) {
            char trace[32];

            snprintf(trace, sizeof trace, "t%d-%d", i, j);
            o = runlog(trace);
            ck_assert_msg(o != NULL, "no run log line for %s", trace);
            ck_assert_int_eq(int_of(o, "tokens"), runner_tokens(i, j));
            json_object_put(o);
        }
}
END_TEST

START_TEST(run_counts_on_the_day_it_was_accepted)
{
    enum { LIMIT = 10 };
    struct json_object *o;
    int now = today();

    /* accepted two days ago and yesterday, settled today */
    settle("d-1", "acme", "bot", "run", now - 2, 11, 0);
    settle("d-2", "acme", "bot", "run", now - 2, 4, 0);
    settle("d-3", "acme", "bot", "run", now - 1, 6, 0);
    /* accepted today */
    run_ok("d-4", "acme", "bot", LIMIT, 100);
    /* long ago: outside a 7-day window, inside a 90-day one */
    settle("d-5", "acme", "old", "run", now - 40, 1000, 0);
    /* tomorrow (another process's clock already past midnight): in no
     * report before that day, not even by_agent */
    settle("d-6", "acme", "late", "run", now + 1, 7, 0);

    o = report("acme", 7, LIMIT);
    day_is(o, now - 2, 2, 15);
    day_is(o, now - 1, 1, 6);
    day_is(o, now, 1, 100);
    day_is(o, now - 3, 0, 0);
    ck_assert_int_eq(int_of(o, "total_requests"), 4);
    ck_assert_int_eq(int_of(o, "total_tokens"), 121);
    ck_assert_uint_eq(agents_in(o), 1);
    agent_is(o, "bot", 4, 121);
    /* earlier days do not use up today's limit */
    ck_assert_int_eq(int_of(o, "remaining_today"), LIMIT - 1);
    json_object_put(o);

    o = report("acme", 90, LIMIT);
    day_is(o, now - 40, 1, 1000);
    ck_assert_int_eq(int_of(o, "total_requests"), 5);
    ck_assert_int_eq(int_of(o, "total_tokens"), 1121);
    agent_is(o, "old", 1, 1000);
    json_object_put(o);
}
END_TEST

START_TEST(orgs_never_see_each_others_usage)
{
    enum { LIMIT = 5 };
    struct json_object *o;

    /* "acme" is a prefix of "acme-labs", "acm" of "acme" */
    run_ok("o-1", "acme", "bot", LIMIT, 10);
    run_ok("o-2", "acme", "bot", LIMIT, 20);
    run_ok("o-3", "acme", "bot", LIMIT, 30);
    settle("o-4", "acme", "bot", "run", today() - 1, 40, 0);

    report_is_empty("acme-labs", LIMIT, LIMIT);
    report_is_empty("acm", LIMIT, LIMIT);
    ck_assert_int_eq(usage_remaining(&app, "acme-labs", LIMIT), LIMIT);
    /* acme-labs has its own 5, whatever acme used */
    for (int i = 1; i <= LIMIT; i++) {
        char trace[16];

        snprintf(trace, sizeof trace, "p-%d", i);
        settle(trace, "acme-labs", "labs-bot", "run", acquire_ok("acme-labs", LIMIT, LIMIT - i),
               500, 0);
    }
    run_ok("o-5", "acm", "bot", LIMIT, 1000);

    o = report("acme", 7, LIMIT);
    ck_assert_int_eq(int_of(o, "total_requests"), 4);
    ck_assert_int_eq(int_of(o, "total_tokens"), 100);
    ck_assert_int_eq(int_of(o, "remaining_today"), LIMIT - 3);
    ck_assert_uint_eq(agents_in(o), 1);
    agent_is(o, "bot", 4, 100);
    day_is(o, today(), 3, 60);
    day_is(o, today() - 1, 1, 40);
    json_object_put(o);
    o = report("acm", 7, LIMIT);
    ck_assert_int_eq(int_of(o, "total_requests"), 1);
    ck_assert_int_eq(int_of(o, "total_tokens"), 1000);
    ck_assert_int_eq(int_of(o, "remaining_today"), LIMIT - 1);
    ck_assert_uint_eq(agents_in(o), 1);
    agent_is(o, "bot", 1, 1000);
    json_object_put(o);
    o = report("acme-labs", 7, LIMIT);
    ck_assert_int_eq(int_of(o, "total_requests"), LIMIT);
    ck_assert_int_eq(int_of(o, "total_tokens"), LIMIT * 500);
    ck_assert_int_eq(int_of(o, "remaining_today"), 0);
    ck_assert_uint_eq(agents_in(o), 1);
    agent_is(o, "labs-bot", LIMIT, LIMIT * 500);
    json_object_put(o);
    ck_assert_int_eq(usage_remaining(&app, "acme", LIMIT), LIMIT - 3);
}
END_TEST

START_TEST(legacy_org_day_records_are_ignored)
{
    enum { LIMIT = 10 };
    char key[64], date[16];
    struct json_object *o;
    int n;

    /* what earlier versions wrote next to the agents' records */
    date_of(today(), date, sizeof date);
    n = snprintf(key, sizeof key, "acme%c%s", 0, date);
    ck_assert_int_eq(store_put(st, NULL, STORE_USAGE, key, (size_t)n, "{\"r\":3,\"t\":9}", 13),
                     0);
    ck_assert_int_eq(usage_remaining(&app, "acme", LIMIT), LIMIT);
    run_ok("l-1", "acme", "bot", LIMIT, 9);

    o = report("acme", 7, LIMIT);
    ck_assert_int_eq(int_of(o, "total_requests"), 1);
    ck_assert_int_eq(int_of(o, "total_tokens"), 9);
    ck_assert_int_eq(int_of(o, "remaining_today"), LIMIT - 1);
    ck_assert_uint_eq(agents_in(o), 1);
    agent_is(o, "bot", 1, 9);
    json_object_put(o);
}
END_TEST

/* The settle's one transaction fails at its write number _i (1: the run
 * log line, 2: the count): neither half is left, and the next run settles. */
START_TEST(failed_settle_leaves_neither_log_line_nor_count)
{
    enum { LIMIT = 10 };
    struct json_object *o;
    int day = acquire_ok("acme", LIMIT, LIMIT - 1);

    store_test_fail_write_after(_i);
    ck_assert_int_ne(settle("f-1", "acme", "bot", "run", day, 33, 0), 0);   /* said, not swallowed */
    store_test_fail_write_after(0);
    ck_assert_ptr_null(runlog("f-1"));
    ck_assert_int_eq(shards_used("acme"), 0);

    run_ok("f-2", "acme", "bot", LIMIT, 8);
    o = runlog("f-2");
    ck_assert_ptr_nonnull(o);
    json_object_put(o);
    o = report("acme", 7, LIMIT);
    ck_assert_int_eq(int_of(o, "total_requests"), 1);
    ck_assert_int_eq(int_of(o, "total_tokens"), 8);
    json_object_put(o);
}
END_TEST

/* A worker dies with three runs accepted: one had not settled, one was in
 * its settling transaction (trace id named, nothing committed), one had
 * committed but not yet let go of its hold. After the reclaim the day's
 * count is what the database holds, and stays so across a reopen. */
START_TEST(a_dead_processes_unsettled_runs_are_given_back)
{
    enum { LIMIT = 10 };
    struct json_object *o;
    int status;
    pid_t pid;

    run_ok("before", "acme", "bot", LIMIT, 4);
    /* the counter is loaded: the child takes runs without the database,
     * which it must not touch (an environment handle is not fork-safe) */
    ck_assert_int_eq(usage_remaining(&app, "acme", LIMIT), LIMIT - 1);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        struct usage_claim cl[3];
        struct am_error err;
        int remaining, ok = 1;

        for (int i = 0; i < 3; i++)
            ok &= usage_acquire(&app, "acme", LIMIT, &cl[i], &remaining, &err) == 0 &&
                  cl[i].hold >= 0;
        quota_hold_trace(qt, cl[1].hold, "tr-in-flight");
        quota_hold_trace(qt, cl[2].hold, "tr-committed");
        _exit(ok ? 0 : 1);
    }
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child failed");
    /* what the third run's commit wrote */
    settle("tr-committed", "acme", "bot", "run", today(), 6, 0);
    ck_assert_int_eq(usage_remaining(&app, "acme", LIMIT), LIMIT - 4);

    ck_assert_int_eq(usage_reclaim(&app, (int)pid), 2);
    ck_assert_int_eq(usage_remaining(&app, "acme", LIMIT), LIMIT - 2);
    ck_assert_int_eq(usage_reclaim(&app, (int)pid), 0);
    o = report("acme", 1, LIMIT);
    ck_assert_int_eq(int_of(o, "total_requests"), 2);
    ck_assert_int_eq(int_of(o, "total_tokens"), 10);
    ck_assert_int_eq(int_of(o, "remaining_today"), LIMIT - 2);
    json_object_put(o);
    close_all();
    open_all();
    ck_assert_int_eq(usage_remaining(&app, "acme", LIMIT), LIMIT - 2);
}
END_TEST

/* Issue 15 (finding 6): a worker killed while its provider answered left
 * the provider call uncounted. Its run and its test had committed their
 * in-flight line before the call: the reclaim counts both on their day and
 * their lines say worker_died; nothing is given back. */
START_TEST(a_dead_processes_runs_in_flight_are_counted_as_worker_died)
{
    enum { LIMIT = 10, TLIMIT = 10 };
    struct usage_claim cl = { 0, -1 };
    struct usage_run ur = { .org = "acme", .agent = "bot", .version = 3, .model = "",
                            .outcome = USAGE_IN_FLIGHT, .claim = &cl };
    struct json_object *o;
    int status;
    pid_t pid;

    run_ok("before", "acme", "bot", LIMIT, 4);
    ck_assert_int_eq(usage_remaining(&app, "acme", LIMIT), LIMIT - 1);
    ck_assert_int_eq(usage_remaining_test(&app, "acme", TLIMIT), TLIMIT);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        struct usage_claim c[2];
        struct am_error err;
        int remaining, ok;

        ok = usage_acquire(&app, "acme", LIMIT, &c[0], &remaining, &err) == 0 &&
             usage_acquire_test(&app, "acme", TLIMIT, &c[1], &remaining, &err) == 0 &&
             c[0].hold >= 0 && c[1].hold >= 0;
        quota_hold_trace(qt, c[0].hold, "tr-run-died");
        quota_hold_trace(tq, c[1].hold, "tr-test-died");
        _exit(ok ? 0 : 1);
    }
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child failed");
    /* what the child's in-flight commits wrote before its provider calls */
    cl.day = today();
    ur.trace_id = "tr-run-died";
    ur.mode = "run";
    ck_assert_int_eq(usage_in_flight(&app, &ur), 0);
    ur.trace_id = "tr-test-died";
    ur.mode = "test";
    ck_assert_int_eq(usage_in_flight(&app, &ur), 0);
    o = runlog("tr-run-died");
    ck_assert_str_eq(str_of(o, "outcome"), USAGE_IN_FLIGHT);
    json_object_put(o);

    ck_assert_int_eq(usage_reclaim(&app, (int)pid), 0);
    ck_assert_int_eq(usage_remaining(&app, "acme", LIMIT), LIMIT - 2);
    ck_assert_int_eq(usage_remaining_test(&app, "acme", TLIMIT), TLIMIT - 1);
    o = runlog("tr-run-died");
    ck_assert_str_eq(str_of(o, "outcome"), "worker_died");
    ck_assert_str_eq(str_of(o, "mode"), "run");
    json_object_put(o);
    o = runlog("tr-test-died");
    ck_assert_str_eq(str_of(o, "outcome"), "worker_died");
    json_object_put(o);
    close_all();            /* and it is durable: the counters reload from the shards */
    open_all();
    ck_assert_int_eq(usage_remaining(&app, "acme", LIMIT), LIMIT - 2);
    ck_assert_int_eq(usage_remaining_test(&app, "acme", TLIMIT), TLIMIT - 1);
    o = report("acme", 1, LIMIT);
    ck_assert_int_eq(int_of(o, "total_requests"), 2);
    ck_assert_int_eq(int_of(o, "total_tests"), 1);
    json_object_put(o);
}
END_TEST

/* The whole daemon is killed with a run at its provider (no hold survives
 * the shared memory): the recovery's reclaim finds its in-flight mark and
 * counts it; a run that settled after its mark is left as it is. */
START_TEST(a_recovery_counts_the_runs_left_in_flight_by_a_killed_daemon)
{
    enum { LIMIT = 10 };
    struct usage_claim cl = { 0, -1 };
    struct usage_run ur = { .org = "acme", .agent = "bot", .version = 0, .model = "",
                            .outcome = USAGE_IN_FLIGHT, .claim = &cl, .mode = "run" };
    struct json_object *o;

    cl.day = acquire_ok("acme", LIMIT, LIMIT - 1);
    ur.trace_id = "tr-lost";
    ck_assert_int_eq(usage_in_flight(&app, &ur), 0);
    cl.day = acquire_ok("acme", LIMIT, LIMIT - 2);
    ur.trace_id = "tr-settled";
    ck_assert_int_eq(usage_in_flight(&app, &ur), 0);
    ck_assert_int_eq(settle_claim("tr-settled", "acme", "bot", "run", &cl, 5, 0), 0);

    close_all();            /* the daemon and its shared memory are gone */
    open_all();
    ck_assert_int_eq(usage_remaining(&app, "other", LIMIT), LIMIT);
    ck_assert_int_eq(usage_reclaim(&app, 0), 0);
    o = runlog("tr-lost");
    ck_assert_str_eq(str_of(o, "outcome"), "worker_died");
    json_object_put(o);
    o = runlog("tr-settled");
    ck_assert_str_eq(str_of(o, "outcome"), "ok");
    json_object_put(o);
    ck_assert_int_eq(usage_remaining(&app, "acme", LIMIT), LIMIT - 2);
    o = report("acme", 1, LIMIT);
    ck_assert_int_eq(int_of(o, "total_requests"), 2);
    ck_assert_int_eq(int_of(o, "total_tokens"), 5);
    json_object_put(o);
    /* a second recovery finds nothing left to count */
    ck_assert_int_eq(usage_reclaim(&app, 0), 0);
    close_all();
    open_all();
    ck_assert_int_eq(usage_remaining(&app, "acme", LIMIT), LIMIT - 2);
}
END_TEST

/* ---- durability ---------------------------------------------------------------------- */

/* Issue 15: `test` was free. It has its own allowance, exact, kept over a
 * restart, never mixed with the runs' limit or their usage rows. */
START_TEST(tests_have_their_own_exact_durable_allowance)
{
    enum { TLIMIT = 5, LIMIT = 50 };
    struct am_error err;
    struct usage_claim cl;
    struct json_object *o;
    char trace[32];
    int i, remaining = -1;

    for (i = 0; i < TLIMIT; i++) {
        error_clear(&err);
        ck_assert_int_eq(usage_acquire_test(&app, "acme", TLIMIT, &cl, &remaining, &err), 0);
        ck_assert_int_eq(remaining, TLIMIT - i - 1);
        snprintf(trace, sizeof trace, "t-%d", i);
        ck_assert_int_eq(settle_claim(trace, "acme", "bot", "test", &cl, 7, 0), 0);
    }
    error_clear(&err);
    ck_assert_int_eq(usage_acquire_test(&app, "acme", TLIMIT, &cl, &remaining, &err),
                     AM_ETESTLIMIT);
    ck_assert_int_eq(remaining, 0);
    ck_assert_str_eq(error_name(err.code), "daily_test_limit_reached");
    /* the runs' limit and another org's tests are untouched */
    ck_assert_int_eq(usage_remaining(&app, "acme", LIMIT), LIMIT);
    ck_assert_int_eq(usage_remaining_test(&app, "other", TLIMIT), TLIMIT);
    run_ok("r-1", "acme", "bot", LIMIT, 1);

    close_all();            /* a restart: the counters come back from the shards */
    open_all();
    ck_assert_int_eq(usage_remaining_test(&app, "acme", TLIMIT), 0);
    ck_assert_int_eq(usage_remaining(&app, "acme", LIMIT), LIMIT - 1);
    error_clear(&err);
    ck_assert_int_eq(usage_acquire_test(&app, "acme", TLIMIT, &cl, &remaining, &err),
                     AM_ETESTLIMIT);
    o = report("acme", 1, LIMIT);
    ck_assert_int_eq(int_of(o, "total_tests"), TLIMIT);
    ck_assert_int_eq(int_of(o, "daily_test_limit"), 1000);
    ck_assert_int_eq(int_of(o, "total_requests"), 1);
    ck_assert_int_eq(int_of(o, "total_tokens"), 1);
    json_object_put(o);
}
END_TEST

/* A test that never reached a provider is given back, like a run. */
START_TEST(a_refunded_test_is_given_back)
{
    struct am_error err;
    struct usage_claim cl;
    int remaining = -1;

    error_clear(&err);
    ck_assert_int_eq(usage_acquire_test(&app, "acme", 2, &cl, &remaining, &err), 0);
    ck_assert_int_eq(remaining, 1);
    ck_assert_int_eq(settle_claim("t-refund", "acme", "bot", "test", &cl, 0, 1), 0);
    ck_assert_int_eq(usage_remaining_test(&app, "acme", 2), 2);
}
END_TEST

START_TEST(daily_count_survives_close_and_reopen)
{
    enum { LIMIT = 50, THREADS = 4, RUNS = 5, K = THREADS * RUNS };
    struct am_error err;
    struct json_object *o;
    int64_t tokens;
    struct usage_claim cl;
    int day, remaining;

    tokens = run_threads("acme", THREADS, RUNS, LIMIT);
    /* neither a refund nor a test is on disk as a count */
    day = acquire_ok("acme", LIMIT, LIMIT - K - 1);
    settle("x-refund", "acme", "bot", "run", day, 3, 1);
    settle("x-test", "acme", "bot", "test", day, 3, 0);
    ck_assert_int_eq(usage_remaining(&app, "acme", LIMIT), LIMIT - K);
    run_ok("y-1", "other", "bot", LIMIT, 1);

    close_all();
    open_all();
    ck_assert_int_eq(usage_remaining(&app, "acme", LIMIT), LIMIT - K);
    ck_assert_int_eq(usage_remaining(&app, "other", LIMIT), LIMIT - 1);
    ck_assert_int_eq(usage_remaining(&app, "new", LIMIT), LIMIT);
    o = report("acme", 7, LIMIT);
    ck_assert_int_eq(int_of(o, "total_requests"), K);
    ck_assert_int_eq(int_of(o, "total_tokens"), tokens);
    ck_assert_int_eq(int_of(o, "remaining_today"), LIMIT - K);
    json_object_put(o);
    o = runlog("x-refund");
    ck_assert_ptr_nonnull(o);
    json_object_put(o);

    /* the reloaded count is the limit's starting point */
    for (int i = 1; i <= LIMIT - K; i++)
        acquire_ok("acme", LIMIT, LIMIT - K - i);
    error_clear(&err);
    ck_assert_int_eq(usage_acquire(&app, "acme", LIMIT, &cl, &remaining, &err),
                     AM_ERATELIMIT);
    ck_assert_int_eq(remaining, 0);
}
END_TEST

/* ---- suite ------------------------------------------------------------------------------ */

static Suite *usage_suite(void)
{
    Suite *s = suite_create("usage");
    TCase *runlog_tc = tcase_create("runlog");
    TCase *limit = tcase_create("limit");
    TCase *counts = tcase_create("counts");
    TCase *rep = tcase_create("report");
    TCase *durable = tcase_create("durable");

    tcase_add_checked_fixture(runlog_tc, setup, teardown);
    tcase_add_test(runlog_tc, settled_run_is_in_the_run_log_with_exactly_its_fields);
    tcase_add_test(runlog_tc, report_by_version_splits_each_day_by_agent_version);
    tcase_set_timeout(runlog_tc, 60);
    suite_add_tcase(s, runlog_tc);

    tcase_add_checked_fixture(limit, setup, teardown);
    tcase_add_test(limit, acquire_accepts_exactly_the_limit_then_ratelimits);
    tcase_add_test(limit, next_reset_is_the_next_utc_midnight);
    tcase_set_timeout(limit, 60);
    suite_add_tcase(s, limit);

    tcase_add_checked_fixture(counts, setup, teardown);
    tcase_add_test(counts, test_mode_is_logged_but_counts_nothing);
    tcase_add_test(counts, refund_gives_the_quota_back_and_counts_nothing);
    tcase_add_test(counts, run_counts_on_the_day_it_was_accepted);
    tcase_set_timeout(counts, 60);
    suite_add_tcase(s, counts);

    tcase_add_checked_fixture(rep, setup, teardown);
    tcase_add_test(rep, report_sums_runs_by_agent_and_day);
    tcase_add_test(rep, runs_from_many_threads_are_summed_over_the_shards);
    tcase_add_test(rep, orgs_never_see_each_others_usage);
    tcase_add_test(rep, legacy_org_day_records_are_ignored);
    tcase_set_timeout(rep, 60);
    suite_add_tcase(s, rep);

    tcase_add_checked_fixture(durable, setup, teardown);
    tcase_add_loop_test(durable, failed_settle_leaves_neither_log_line_nor_count, 1, 3);
    tcase_add_test(durable, daily_count_survives_close_and_reopen);
    tcase_add_test(durable, tests_have_their_own_exact_durable_allowance);
    tcase_add_test(durable, a_refunded_test_is_given_back);
    tcase_add_test(durable, a_dead_processes_unsettled_runs_are_given_back);
    tcase_add_test(durable, a_dead_processes_runs_in_flight_are_counted_as_worker_died);
    tcase_add_test(durable, a_recovery_counts_the_runs_left_in_flight_by_a_killed_daemon);
    tcase_set_timeout(durable, 60);
    suite_add_tcase(s, durable);
    return s;
}

int main(void)
{
    SRunner *sr;
    int failed;

    /* A failed check in a forked test skips its teardown: every home lives
     * under one directory that is removed here. */
    util_strlcpy(base, "/tmp/am-check-usage-XXXXXX", sizeof base);
    if (mkdtemp(base) == NULL) {
        perror("mkdtemp");
        return EXIT_FAILURE;
    }
    sr = srunner_create(usage_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
