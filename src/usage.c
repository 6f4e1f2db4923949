/*
 * usage.c - daily counters, the daily limit, and the run log.
 *
 * Owns the record formats of STORE_USAGE:
 *   "org\0YYYY-MM-DD"           -> {"r":requests,"t":tokens}   the org's day
 *   "org\0YYYY-MM-DD\0agent"    -> {"r":requests,"t":tokens}   one agent's day
 * and of STORE_RUNLOG (trace id -> {"org","agent","mode","model","tokens",
 * "latency_ms","outcome","at"}).
 *
 * Invariant: the org's day record is read with its write lock before it
 * is compared with the limit, and the increment commits in the same
 * transaction, so accepted runs never exceed the limit under any
 * concurrency. Only `run` (and stream queries) come here; `test` never.
 *
 * Must never: log.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "store.h"
#include "usage.h"
#include "util.h"

struct counter {
    int64_t r;   /* requests */
    int64_t t;   /* tokens */
};

static void day_of(int64_t t, char *buf, size_t cap)
{
    struct tm tm;
    time_t tt = (time_t)t;

    gmtime_r(&tt, &tm);
    strftime(buf, cap, "%Y-%m-%d", &tm);
}

/* "org\0day" or "org\0day\0agent" into buf; returns the length. */
static size_t usage_key(char *buf, size_t cap, const char *org, const char *day,
                        const char *agent)
{
    int n = snprintf(buf, cap, "%s%c%s%c%s", org, 0, day, 0, agent ? agent : "");

    if (n < 0 || (size_t)n >= cap)
        return 0;
    return agent ? (size_t)n : strlen(org) + 1 + strlen(day);
}

static int counter_read(struct store *s, struct store_txn *t, const char *key, size_t klen,
                        int flags, struct counter *c)
{
    char *val = NULL;
    int rc = store_get(s, t, STORE_USAGE, key, klen, flags, &val, NULL);

    c->r = c->t = 0;
    if (rc == 0) {
        long long r = 0, tk = 0;
        if (sscanf(val, "{\"r\":%lld,\"t\":%lld}", &r, &tk) == 2) {
            c->r = r;
            c->t = tk;
        }
    }
    free(val);
    return rc == AM_ENOENT ? 0 : rc;
}

static int counter_write(struct store *s, struct store_txn *t, const char *key, size_t klen,
                         const struct counter *c)
{
    char val[64];
    int n = snprintf(val, sizeof(val), "{\"r\":%lld,\"t\":%lld}", (long long)c->r,
                     (long long)c->t);
    return store_put(s, t, STORE_USAGE, key, klen, val, (size_t)n);
}

struct bump_ctx {
    const char *org;
    const char *agent;
    char day[16];
    int limit;          /* 0 = no check */
    int64_t dr, dt;     /* deltas */
    int64_t after;      /* OUT: org's requests today after the change */
    int refused;        /* OUT: limit reached, nothing changed */
};

static int bump_txn(struct store *s, struct store_txn *t, void *arg)
{
    struct bump_ctx *c = arg;
    struct counter org, agent;
    char ko[160], ka[240];
    size_t lo = usage_key(ko, sizeof(ko), c->org, c->day, NULL);
    size_t la = usage_key(ka, sizeof(ka), c->org, c->day, c->agent);
    int rc;

    c->refused = 0;
    if (lo == 0 || la == 0)
        return AM_EINTERNAL;
    if ((rc = counter_read(s, t, ko, lo, STORE_RMW, &org)) != 0)
        return rc;
    if (c->limit > 0 && c->dr > 0 && org.r >= c->limit) {
        c->refused = 1;
        c->after = org.r;
        return 0;
    }
    if ((rc = counter_read(s, t, ka, la, STORE_RMW, &agent)) != 0)
        return rc;
    org.r += c->dr;
    org.t += c->dt;
    agent.r += c->dr;
    agent.t += c->dt;
    if (org.r < 0)
        org.r = 0;
    if (agent.r < 0)
        agent.r = 0;
    c->after = org.r;
    if ((rc = counter_write(s, t, ko, lo, &org)) != 0 ||
        (rc = counter_write(s, t, ka, la, &agent)) != 0)
        return rc;
    return 0;
}

int usage_acquire(struct app *app, const char *org, const char *agent, int limit,
                  int *remaining, struct am_error *err)
{
    struct bump_ctx c = { org, agent, "", limit, 1, 0, 0, 0 };
    int rc;

    day_of(util_now(), c.day, sizeof(c.day));
    rc = store_transact_nosync(app->store, bump_txn, &c);
    *remaining = 0;
    if (rc != 0)
        return error_set(err, AM_EUNAVAILABLE, "Usage accounting unavailable, retry");
    if (c.refused)
        return error_set(err, AM_ERATELIMIT,
                         "Daily limit of %d requests reached; it resets at 00:00 UTC", limit);
    *remaining = c.after >= limit ? 0 : (int)(limit - c.after);
    return 0;
}

struct settle_ctx {
    const struct usage_run *run;
    struct bump_ctx bump;       /* run: the counter change, if any */
    int counts;                 /* 1 if the counters change */
    char *line;                 /* the run log record (JSON) */
    size_t len;
};

static int settle_txn(struct store *s, struct store_txn *t, void *arg)
{
    struct settle_ctx *c = arg;
    int rc;

    if (c->counts && (rc = bump_txn(s, t, &c->bump)) != 0)
        return rc;
    return store_put(s, t, STORE_RUNLOG, c->run->trace_id, strlen(c->run->trace_id),
                     c->line, c->len);
}

static char *run_line(const struct usage_run *run, size_t *len)
{
    struct json_object *o = json_object_new_object();
    char *line;
    size_t n;
    const char *v;

    json_object_object_add(o, "org", json_object_new_string(run->org));
    json_object_object_add(o, "agent", json_object_new_string(run->agent));
    json_object_object_add(o, "mode", json_object_new_string(run->mode));
    json_object_object_add(o, "model", json_object_new_string(run->model ? run->model : ""));
    json_object_object_add(o, "tokens", json_object_new_int(run->tokens));
    json_object_object_add(o, "latency_ms", json_object_new_int64(run->latency_ms));
    json_object_object_add(o, "outcome", json_object_new_string(run->outcome));
    json_object_object_add(o, "at", json_object_new_int64(util_now()));
    v = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &n);
    line = xstrndup(v, n);
    *len = n;
    json_object_put(o);
    return line;
}

void usage_settle(struct app *app, const struct usage_run *run)
{
    struct settle_ctx c;

    memset(&c, 0, sizeof(c));
    c.run = run;
    if (strcmp(run->mode, "run") == 0 && (run->refund || run->tokens > 0)) {
        c.counts = 1;
        c.bump.org = run->org;
        c.bump.agent = run->agent;
        c.bump.dr = run->refund ? -1 : 0;
        c.bump.dt = run->tokens;
        day_of(util_now(), c.bump.day, sizeof(c.bump.day));
    }
    c.line = run_line(run, &c.len);
    /* Best effort for the log line, but this commit is also what makes the
     * acquired count durable: it is synced. */
    store_transact(app->store, settle_txn, &c);
    free(c.line);
}

int usage_remaining(struct app *app, const char *org, int limit)
{
    struct counter c;
    char day[16], key[160];
    size_t klen;

    day_of(util_now(), day, sizeof(day));
    klen = usage_key(key, sizeof(key), org, day, NULL);
    if (klen == 0 || counter_read(app->store, NULL, key, klen, 0, &c) != 0)
        return 0;
    return c.r >= limit ? 0 : (int)(limit - c.r);
}

int64_t usage_next_reset(void)
{
    int64_t now = util_now();
    return now - (now % 86400) + 86400;
}

struct report_ctx {
    size_t olen;                 /* strlen(org) */
    char first[16];              /* first day of the period, inclusive */
    struct json_object *days;    /* day -> [requests, tokens] */
    struct json_object *agents;  /* agent -> [requests, tokens] */
};

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

static int report_one(const char *k, size_t kl, const char *v, size_t vl, void *arg)
{
    struct report_ctx *c = arg;
    const char *day = k + c->olen + 1, *agent;
    char dbuf[16], abuf[128];
    struct counter cnt = { 0, 0 };
    long long r, t;
    size_t dl;

    (void)vl;
    dl = strnlen(day, kl - c->olen - 1);
    if (dl >= sizeof(dbuf))
        return 0;
    memcpy(dbuf, day, dl);
    dbuf[dl] = '\0';
    if (strcmp(dbuf, c->first) < 0)
        return 0;
    if (sscanf(v, "{\"r\":%lld,\"t\":%lld}", &r, &t) == 2) {
        cnt.r = r;
        cnt.t = t;
    }
    if (c->olen + 1 + dl == kl) {
        accumulate(c->days, dbuf, &cnt);
    } else {
        agent = day + dl + 1;
        if ((size_t)(k + kl - agent) >= sizeof(abuf))
            return 0;
        memcpy(abuf, agent, (size_t)(k + kl - agent));
        abuf[k + kl - agent] = '\0';
        accumulate(c->agents, abuf, &cnt);
    }
    return 0;
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

int usage_report(struct app *app, const char *org, int days, int limit,
                 struct json_object **out, struct am_error *err)
{
    struct report_ctx c;
    struct json_object *by_day, *by_agent, *pair;
    int64_t now = util_now(), total_r = 0, total_t = 0;
    char day[16];
    int i, rc;

    *out = NULL;
    c.olen = strlen(org);
    day_of(now - (int64_t)(days - 1) * 86400, c.first, sizeof(c.first));
    c.days = json_object_new_object();
    c.agents = json_object_new_object();
    rc = store_scan(app->store, NULL, STORE_USAGE, org, c.olen + 1, report_one, &c);
    if (rc != 0) {
        json_object_put(c.days);
        json_object_put(c.agents);
        return error_set(err, AM_EUNAVAILABLE, "Usage unavailable, retry");
    }
    by_day = json_object_new_array();
    for (i = days - 1; i >= 0; i--) {
        day_of(now - (int64_t)i * 86400, day, sizeof(day));
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
    json_object_object_add(*out, "by_agent", by_agent);
    json_object_object_add(*out, "by_day", by_day);
    json_object_put(c.days);
    json_object_put(c.agents);
    return 0;
}
