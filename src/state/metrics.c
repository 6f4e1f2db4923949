/*
 * metrics.c - the shared counters (metrics.h) and their exposition.
 *
 * Owns: the metrics segment (anonymous shared memory mapped by the
 * supervisor before it forks, so it dies with the last process that maps
 * it: nothing to unlink) and this process's pointer to it and slot number.
 *
 * Must never: log; take a lock (every update is one relaxed atomic add or
 * store, so the hot path costs a few uncontended-in-the-common-case cache
 * line writes); keep a pointer in shared memory.
 *
 * Invariants:
 *  1. Counters only grow; gauges (in flight, busy) go up and down by the
 *     same caller around one event, and a dead process's slot is freed
 *     by the supervisor (metrics_worker_gone).
 *  3. A per-process slot is claimed by one process (CAS of its pid from
 *     0) and written only by it, until the supervisor frees it after
 *     reaping that pid.
 *  2. A histogram's count is the sum of its buckets (the +Inf bucket is
 *     written as the count), up to updates in flight during a scrape.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "state/metrics.h"
#include "state/app.h"
#include "state/breakers.h"
#include "state/config.h"
#include "state/quota.h"
#include "state/registry.h"
#include "state/store.h"
#include "lib/util.h"

#define METRICS_MAGIC 0x4d455452u     /* "METR" */
#define METRICS_PROVIDERS 8
#define NBUCKETS 14

/* Upper bounds of the latency buckets, in microseconds. */
static const uint64_t bucket_us[NBUCKETS] = {
    1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,
    1000000, 2500000, 5000000, 10000000, 30000000
};

/* The statuses counted apart; anything else is "other" (the last index). */
static const int statuses[] = {
    200, 201, 204, 400, 401, 403, 404, 405, 409, 411, 413, 415, 422, 429,
    500, 501, 502, 503, 504, 0
};
#define NSTATUS ((int)(sizeof(statuses) / sizeof(statuses[0])))

struct metrics_hist {
    uint64_t bucket[NBUCKETS];    /* events with latency <= bucket_us[i] (not cumulative) */
    uint64_t count;               /* events */
    uint64_t sum_us;              /* their latencies, microseconds */
};

struct metrics_worker {
    int32_t pid;                  /* the process holding the slot; 0: free (CAS to claim) */
    int32_t threads;              /* accept threads of the process in this slot; 0: none */
    int32_t busy;                 /* of them, serving a request now */
};

struct metrics_shm {
    uint32_t magic;
    uint32_t version;             /* 1 */
    uint64_t requests[METRICS_ROUTES][NSTATUS];   /* answers by row and status */
    int64_t in_flight[METRICS_ROUTES];            /* handlers running now, by row */
    struct metrics_hist latency[METRICS_ROUTES];  /* request latency by row */
    struct metrics_hist provider[METRICS_PROVIDERS]; /* provider call latency */
    uint64_t provider_errors[METRICS_PROVIDERS];  /* failed provider calls */
    uint64_t worker_restarts;                     /* processes re-forked after dying */
    uint64_t rep_forwarded;                       /* writes forwarded to the master */
    struct metrics_worker worker[METRICS_WORKERS];
};

static struct metrics_shm *shm;   /* this process's mapping; NULL: none */
static int self = -1;             /* this process's worker slot; -1: supervisor */

#define ADD(p, v) __atomic_fetch_add((p), (v), __ATOMIC_RELAXED)
#define GET(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define SET(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)

int metrics_create(struct am_error *err)
{
    void *p = mmap(NULL, sizeof(struct metrics_shm), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);

    if (p == MAP_FAILED)
        return error_set(err, AM_EUNAVAILABLE, "metrics: mmap of %zu bytes failed",
                         sizeof(struct metrics_shm));
    metrics_close();
    shm = p;                      /* zero-filled by mmap */
    shm->magic = METRICS_MAGIC;
    shm->version = 1;
    return 0;
}

void metrics_close(void)
{
    if (shm != NULL)
        munmap(shm, sizeof(*shm));
    shm = NULL;
    self = -1;
}

int metrics_set_self(int threads)
{
    int32_t me = (int32_t)getpid(), zero;
    int i;

    self = -1;
    for (i = 0; shm != NULL && i < METRICS_WORKERS; i++) {
        zero = 0;
        if (!__atomic_compare_exchange_n(&shm->worker[i].pid, &zero, me, 0, __ATOMIC_ACQ_REL,
                                         __ATOMIC_RELAXED))
            continue;
        SET(&shm->worker[i].busy, 0);
        SET(&shm->worker[i].threads, threads);
        self = i;
        break;
    }
    return self;
}

void metrics_worker_gone(int pid, int restarted)
{
    int i;

    if (shm == NULL || pid <= 0)
        return;
    if (restarted)
        ADD(&shm->worker_restarts, 1);
    for (i = 0; i < METRICS_WORKERS; i++) {
        if (GET(&shm->worker[i].pid) != (int32_t)pid)
            continue;
        SET(&shm->worker[i].threads, 0);
        SET(&shm->worker[i].busy, 0);
        __atomic_store_n(&shm->worker[i].pid, 0, __ATOMIC_RELEASE);
    }
}

void metrics_thread_busy(int delta)
{
    if (shm != NULL && self >= 0)
        ADD(&shm->worker[self].busy, delta);
}

void metrics_in_flight(int route, int delta)
{
    if (shm != NULL && route >= 0 && route < METRICS_ROUTES)
        ADD(&shm->in_flight[route], delta);
}

int metrics_status_index(int status)
{
    int i;

    for (i = 0; i < NSTATUS - 1; i++)
        if (statuses[i] == status)
            return i;
    return NSTATUS - 1;
}

static void hist_add(struct metrics_hist *h, uint64_t us)
{
    int i;

    for (i = 0; i < NBUCKETS && us > bucket_us[i]; i++)
        ;
    if (i < NBUCKETS)
        ADD(&h->bucket[i], 1);
    ADD(&h->sum_us, us);
    ADD(&h->count, 1);
}

void metrics_request(int route, int status, uint64_t us)
{
    if (shm == NULL || route < 0 || route >= METRICS_ROUTES)
        return;
    ADD(&shm->requests[route][metrics_status_index(status)], 1);
    hist_add(&shm->latency[route], us);
}

void metrics_provider_call(int provider, uint64_t us, int ok)
{
    if (shm == NULL || provider < 0 || provider >= METRICS_PROVIDERS)
        return;
    hist_add(&shm->provider[provider], us);
    if (!ok)
        ADD(&shm->provider_errors[provider], 1);
}

void metrics_rep_forwarded(void)
{
    if (shm != NULL)
        ADD(&shm->rep_forwarded, 1);
}

void metrics_collect(const struct app *app, struct metrics_extra *out)
{
    struct store_stats st;
    struct store_rep_status rs;

    memset(out, 0, sizeof(*out));
    if (app->reg != NULL)
        out->registry_entries = registry_count(app->reg);
    if (app->cfg != NULL)
        out->registry_capacity = app->cfg->registry_capacity;
    out->breakers = app->breakers;
    out->quota_holds = quota_holds_used(app->quota, &out->quota_holds_capacity);
    if (app->store != NULL && store_stats(app->store, &st) == 0) {
        out->db_ok = 1;
        out->db_cache_hit = st.cache_hit;
        out->db_cache_miss = st.cache_miss;
        out->db_deadlocks = st.deadlocks;
        out->db_lock_timeouts = st.lock_timeouts;
    }
    out->rep_group = app->cfg != NULL && app->cfg->rep_nsites > 0;
    if (out->rep_group && app->store != NULL && store_rep_status(app->store, &rs) == 0) {
        out->rep_ok = 1;
        out->rep_role = rs.role;
        out->rep_elections = rs.elections;
        out->rep_lag_bytes = rs.lag_bytes;
        out->rep_not_acked = rs.not_acked;
    }
}

/* ---- exposition ------------------------------------------------------------ */

static void putf(struct buf *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void putf(struct buf *out, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n > 0)
        buf_put(out, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

static void head(struct buf *out, const char *name, const char *type, const char *help)
{
    putf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One histogram's series; labels without braces ("" for none). */
static void hist_render(struct buf *out, const char *name, const char *labels,
                        const struct metrics_hist *h)
{
    uint64_t cum = 0, count = GET(&h->count);
    const char *sep = labels[0] ? "," : "";
    int i;

    if (count == 0)
        return;
    for (i = 0; i < NBUCKETS; i++) {
        cum += GET(&h->bucket[i]);
        putf(out, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep,
             (double)bucket_us[i] / 1e6, (unsigned long long)cum);
    }
    putf(out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep, (unsigned long long)count);
    putf(out, "%s_sum{%s} %.6f\n", name, labels, (double)GET(&h->sum_us) / 1e6);
    putf(out, "%s_count{%s} %llu\n", name, labels, (unsigned long long)count);
}

static void render_requests(struct buf *out, const char *const *labels, int n)
{
    int r, s;
    int64_t v;

    head(out, "astromesh_requests_total", "counter", "Answered requests by route and status.");
    for (r = 0; r < n; r++)
        for (s = 0; s < NSTATUS; s++)
            if (GET(&shm->requests[r][s]) != 0) {
                if (statuses[s] != 0)
                    putf(out, "astromesh_requests_total{%s,status=\"%d\"} %llu\n", labels[r],
                         statuses[s], (unsigned long long)GET(&shm->requests[r][s]));
                else
                    putf(out, "astromesh_requests_total{%s,status=\"other\"} %llu\n",
                         labels[r], (unsigned long long)GET(&shm->requests[r][s]));
            }
    head(out, "astromesh_request_duration_seconds", "histogram",
         "Request latency from the first byte read to the last written, by route.");
    for (r = 0; r < n; r++)
        hist_render(out, "astromesh_request_duration_seconds", labels[r], &shm->latency[r]);
    head(out, "astromesh_requests_in_flight", "gauge",
         "Requests being handled now, by route (runs in flight: the run and test routes).");
    for (r = 0; r < n; r++)
        if ((v = GET(&shm->in_flight[r])) != 0)
            putf(out, "astromesh_requests_in_flight{%s} %lld\n", labels[r], (long long)v);
}

static void render_providers(struct buf *out)
{
    char label[64];
    int p;

    head(out, "astromesh_provider_call_duration_seconds", "histogram",
         "Model provider call latency, by provider.");
    for (p = 0; p < PROVIDER_COUNT && p < METRICS_PROVIDERS; p++) {
        util_snprintf(label, sizeof(label), "provider=\"%s\"", config_provider_name(p));
        hist_render(out, "astromesh_provider_call_duration_seconds", label, &shm->provider[p]);
    }
    head(out, "astromesh_provider_errors_total", "counter", "Failed model provider calls.");
    for (p = 0; p < PROVIDER_COUNT && p < METRICS_PROVIDERS; p++)
        putf(out, "astromesh_provider_errors_total{provider=\"%s\"} %llu\n",
             config_provider_name(p), (unsigned long long)GET(&shm->provider_errors[p]));
}

/* A label value as Prometheus wants it: \ " and newline escaped. */
static void label_value(char *dst, size_t cap, const char *src)
{
    size_t n = 0;

    for (; *src != '\0' && n + 3 < cap; src++) {
        if (*src == '\\' || *src == '"' || *src == '\n')
            dst[n++] = '\\';
        dst[n++] = *src == '\n' ? 'n' : *src;
    }
    dst[n] = '\0';
}

static void breaker_line(const struct breakers_state *st, void *arg)
{
    struct buf *out = arg;
    char org[128], model[192];

    label_value(org, sizeof(org), st->org);
    label_value(model, sizeof(model), st->model);
    putf(out, "astromesh_breaker_open{org=\"%s\",provider=\"%s\",model=\"%s\"} %d\n",
         org, config_provider_name(st->provider), model, st->open);
}

/* The breakers of state/breakers.c: shared by every process, one per org
 * and provider/model that has had a call. */
static void render_breakers(struct buf *out, const struct metrics_extra *extra)
{
    head(out, "astromesh_breaker_open", "gauge",
         "1 while an org's circuit breaker skips a provider/model (shared by every process).");
    if (extra->breakers != NULL)
        breakers_foreach(extra->breakers, util_monotonic_ms(), breaker_line, out);
}

static void render_workers(struct buf *out)
{
    int w, threads, busy, pid;

    head(out, "astromesh_worker_threads", "gauge",
         "Accept threads per worker process (by pid), busy or idle.");
    for (w = 0; w < METRICS_WORKERS; w++) {
        if ((pid = GET(&shm->worker[w].pid)) == 0 ||
            (threads = GET(&shm->worker[w].threads)) <= 0)
            continue;
        busy = GET(&shm->worker[w].busy);
        busy = busy < 0 ? 0 : busy > threads ? threads : busy;
        putf(out, "astromesh_worker_threads{pid=\"%d\",state=\"busy\"} %d\n", pid, busy);
        putf(out, "astromesh_worker_threads{pid=\"%d\",state=\"idle\"} %d\n", pid,
             threads - busy);
    }
    head(out, "astromesh_worker_restarts_total", "counter",
         "Worker and stream processes re-forked after dying.");
    putf(out, "astromesh_worker_restarts_total %llu\n",
         (unsigned long long)GET(&shm->worker_restarts));
}

static void render_extra(struct buf *out, const struct metrics_extra *x)
{
    head(out, "astromesh_registry_entries", "gauge", "Deployed agents in the registry.");
    putf(out, "astromesh_registry_entries %d\n", x->registry_entries);
    head(out, "astromesh_registry_capacity", "gauge", "Registry capacity (registry.capacity).");
    putf(out, "astromesh_registry_capacity %d\n", x->registry_capacity);
    head(out, "astromesh_quota_holds", "gauge", "Quota holds in use (runs counted, not settled).");
    putf(out, "astromesh_quota_holds %d\n", x->quota_holds);
    head(out, "astromesh_quota_holds_capacity", "gauge", "Quota holds in the table.");
    putf(out, "astromesh_quota_holds_capacity %d\n", x->quota_holds_capacity);
    if (!x->db_ok)
        return;
    head(out, "astromesh_db_cache_hits_total", "counter", "Berkeley DB pages found in the cache.");
    putf(out, "astromesh_db_cache_hits_total %llu\n", (unsigned long long)x->db_cache_hit);
    head(out, "astromesh_db_cache_misses_total", "counter", "Berkeley DB pages read in.");
    putf(out, "astromesh_db_cache_misses_total %llu\n", (unsigned long long)x->db_cache_miss);
    head(out, "astromesh_db_cache_hit_ratio", "gauge", "Hits over hits and misses since start.");
    putf(out, "astromesh_db_cache_hit_ratio %.6f\n",
         x->db_cache_hit + x->db_cache_miss == 0 ? 1.0
         : (double)x->db_cache_hit / (double)(x->db_cache_hit + x->db_cache_miss));
    head(out, "astromesh_db_deadlocks_total", "counter", "Berkeley DB deadlocks detected.");
    putf(out, "astromesh_db_deadlocks_total %llu\n", (unsigned long long)x->db_deadlocks);
    head(out, "astromesh_db_lock_timeouts_total", "counter", "Berkeley DB lock waits timed out.");
    putf(out, "astromesh_db_lock_timeouts_total %llu\n",
         (unsigned long long)x->db_lock_timeouts);
}

/* With a group: the role (one line per role, 1 for the current one), the
 * elections, the lag, and the writes forwarded or not acknowledged (from
 * the segment; 0 without one). */
static void render_replication(struct buf *out, const struct metrics_extra *x)
{
    static const char *const roles[] = { [STORE_ROLE_NONE] = "none",
                                         [STORE_ROLE_MASTER] = "master",
                                         [STORE_ROLE_REPLICA] = "replica" };
    int role = x->rep_ok ? x->rep_role : STORE_ROLE_NONE, i;

    head(out, "astromesh_replication_role", "gauge",
         "1 for this host's role in the replication group (none: not started or unknown).");
    for (i = 0; i < (int)(sizeof(roles) / sizeof(roles[0])); i++)
        putf(out, "astromesh_replication_role{role=\"%s\"} %d\n", roles[i], i == role);
    head(out, "astromesh_replication_is_master", "gauge", "1 while this host is the master.");
    putf(out, "astromesh_replication_is_master %d\n", role == STORE_ROLE_MASTER);
    head(out, "astromesh_replication_elections_total", "counter",
         "Elections this site took part in.");
    putf(out, "astromesh_replication_elections_total %llu\n",
         (unsigned long long)x->rep_elections);
    head(out, "astromesh_replication_lag_bytes", "gauge",
         "Replica: log bytes it knows the master wrote and it has not applied.");
    putf(out, "astromesh_replication_lag_bytes %llu\n", (unsigned long long)x->rep_lag_bytes);
    head(out, "astromesh_replication_forwarded_total", "counter",
         "Writes this host received as a replica and forwarded to the master.");
    putf(out, "astromesh_replication_forwarded_total %llu\n",
         (unsigned long long)(shm != NULL ? GET(&shm->rep_forwarded) : 0));
    head(out, "astromesh_replication_not_acknowledged_total", "counter",
         "Commits too few hosts confirmed (Berkeley DB's own count; each was answered 503 "
         "replication_unavailable or, a run's record, logged).");
    putf(out, "astromesh_replication_not_acknowledged_total %llu\n",
         (unsigned long long)x->rep_not_acked);
}

void metrics_render(struct buf *out, const char *const *route_labels, int nroutes,
                    const struct metrics_extra *extra)
{
    if (nroutes > METRICS_ROUTES)
        nroutes = METRICS_ROUTES;
    if (shm != NULL) {
        render_requests(out, route_labels, nroutes);
        render_providers(out);
        render_workers(out);
    }
    if (extra != NULL) {
        render_breakers(out, extra);
        render_extra(out, extra);
        if (extra->rep_group)
            render_replication(out, extra);
    }
}
