/*
 * check_metrics.c - the shared counters (state/metrics.c): each update
 * shows in the exposition, histograms are cumulative, counts made in a
 * forked child are seen by the parent, a dead worker's gauges are cleared
 * and counted as a restart, nothing is written without a segment, and the
 * replication lines appear with a group only.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "state/config.h"
#include "state/breakers.h"
#include "state/metrics.h"
#include "state/store.h"
#include "lib/util.h"

static const char *const labels[] = {
    "method=\"GET\",route=\"/api/v1/health\"",
    "method=\"POST\",route=\"/api/v1/orgs/{slug}/agents/{name}/run\"",
};

/* The exposition, as a malloc'd string. */
static char *render(const struct metrics_extra *x)
{
    struct buf b = {0};

    metrics_render(&b, labels, 2, x);
    buf_puts(&b, "");
    return buf_take(&b);
}

static void assert_has(const char *text, const char *line)
{
    ck_assert_msg(strstr(text, line) != NULL, "missing %s in:\n%s", line, text);
}

START_TEST(a_request_counts_by_route_and_status_with_its_latency)
{
    char *t;

    ck_assert_int_eq(metrics_create(NULL), 0);
    metrics_request(0, 200, 700);         /* 0.7 ms */
    metrics_request(0, 200, 3000);       /* 3 ms */
    metrics_request(1, 502, 40000);
    metrics_request(1, 418, 1);           /* an unlisted status */
    t = render(NULL);
    assert_has(t, "astromesh_requests_total{method=\"GET\",route=\"/api/v1/health\","
                  "status=\"200\"} 2\n");
    assert_has(t, "route=\"/api/v1/orgs/{slug}/agents/{name}/run\",status=\"502\"} 1\n");
    assert_has(t, "route=\"/api/v1/orgs/{slug}/agents/{name}/run\",status=\"other\"} 1\n");
    /* cumulative buckets: one at <= 1 ms, both at <= 5 ms */
    assert_has(t, "astromesh_request_duration_seconds_bucket{method=\"GET\","
                  "route=\"/api/v1/health\",le=\"0.001\"} 1\n");
    assert_has(t, "route=\"/api/v1/health\",le=\"0.005\"} 2\n");
    assert_has(t, "route=\"/api/v1/health\",le=\"+Inf\"} 2\n");
    assert_has(t, "astromesh_request_duration_seconds_sum{method=\"GET\","
                  "route=\"/api/v1/health\"} 0.003700\n");
    free(t);
    metrics_close();
}
END_TEST

START_TEST(provider_calls_and_errors_show)
{
    char *t;

    ck_assert_int_eq(metrics_create(NULL), 0);
    ck_assert_int_ge(metrics_set_self(4), 0);
    metrics_provider_call(PROVIDER_OPENAI, 20000, 1);
    metrics_provider_call(PROVIDER_OPENAI, 20000, 0);
    t = render(NULL);
    assert_has(t, "astromesh_provider_call_duration_seconds_count{provider=\"openai\"} 2\n");
    assert_has(t, "astromesh_provider_errors_total{provider=\"openai\"} 1\n");
    assert_has(t, "astromesh_provider_errors_total{provider=\"anthropic\"} 0\n");
    free(t);
    metrics_close();
}
END_TEST

/* The breakers are the shared table's (state/breakers.c): one line per org
 * and provider/model, open or not, the label values escaped. */
START_TEST(each_orgs_breaker_shows_open_or_closed)
{
    struct breakers_outcome fail = { .ok = 0, .failures = 1, .cooldown_ms = 600000 };
    struct breakers_outcome ok = { .ok = 1, .latency_ms = 5, .failures = 1 };
    struct metrics_extra x = {0};
    uint64_t now = util_monotonic_ms();
    char *t;

    ck_assert_int_eq(breakers_create(&x.breakers, 16, NULL), 0);
    breakers_record(x.breakers, "acme", PROVIDER_OPENAI, "gpt-\"4\"", now, &fail);
    breakers_record(x.breakers, "beta", PROVIDER_OPENAI, "gpt-4o", now, &ok);
    t = render(&x);
    assert_has(t, "astromesh_breaker_open{org=\"acme\",provider=\"openai\","
                  "model=\"gpt-\\\"4\\\"\"} 1\n");
    assert_has(t, "astromesh_breaker_open{org=\"beta\",provider=\"openai\",model=\"gpt-4o\"} 0\n");
    free(t);
    breakers_close(x.breakers);
}
END_TEST

START_TEST(a_childs_counts_reach_the_parent_and_its_death_clears_its_gauges)
{
    pid_t pid;
    int status;
    char *t, want[128];

    ck_assert_int_eq(metrics_create(NULL), 0);
    if ((pid = fork()) == 0) {
        if (metrics_set_self(8) < 0)
            _exit(1);
        metrics_thread_busy(1);
        metrics_thread_busy(1);
        metrics_in_flight(1, 1);
        metrics_request(0, 404, 10);
        _exit(0);
    }
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_int_eq(status, 0);
    t = render(NULL);
    util_snprintf(want, sizeof(want), "astromesh_worker_threads{pid=\"%d\",state=\"busy\"} 2\n",
                  (int)pid);
    assert_has(t, want);
    util_snprintf(want, sizeof(want), "astromesh_worker_threads{pid=\"%d\",state=\"idle\"} 6\n",
                  (int)pid);
    assert_has(t, want);
    assert_has(t, "astromesh_requests_in_flight{method=\"POST\",route=\"/api/v1/orgs/{slug}"
                  "/agents/{name}/run\"} 1\n");
    assert_has(t, "status=\"404\"} 1\n");
    assert_has(t, "astromesh_worker_restarts_total 0\n");
    free(t);
    metrics_worker_gone((int)pid, 1);
    t = render(NULL);
    ck_assert_ptr_null(strstr(t, "astromesh_worker_threads{"));
    assert_has(t, "astromesh_worker_restarts_total 1\n");
    free(t);
    metrics_close();
}
END_TEST

START_TEST(extra_figures_and_the_cache_ratio)
{
    struct metrics_extra x = { .registry_entries = 3, .registry_capacity = 16,
                               .quota_holds = 1, .quota_holds_capacity = 8, .db_ok = 1,
                               .db_cache_hit = 3, .db_cache_miss = 1, .db_deadlocks = 2 };
    char *t;

    /* without a segment: only the figures of other modules */
    t = render(&x);
    ck_assert_ptr_null(strstr(t, "astromesh_requests_total"));
    assert_has(t, "astromesh_registry_entries 3\n");
    assert_has(t, "astromesh_registry_capacity 16\n");
    assert_has(t, "astromesh_quota_holds 1\n");
    assert_has(t, "astromesh_db_cache_hit_ratio 0.750000\n");
    assert_has(t, "astromesh_db_deadlocks_total 2\n");
    free(t);
    metrics_request(0, 200, 1);   /* no segment: a no-op, no crash */
    metrics_thread_busy(1);
}
END_TEST

START_TEST(the_replication_lines_only_with_a_group)
{
    struct metrics_extra x = { .rep_group = 1, .rep_ok = 1, .rep_role = STORE_ROLE_REPLICA,
                               .rep_elections = 3, .rep_lag_bytes = 4096, .rep_not_acked = 1 };
    char *t;

    ck_assert_int_eq(metrics_create(NULL), 0);
    metrics_rep_forwarded();
    metrics_rep_forwarded();
    t = render(&x);
    assert_has(t, "astromesh_replication_role{role=\"replica\"} 1\n");
    assert_has(t, "astromesh_replication_role{role=\"master\"} 0\n");
    assert_has(t, "astromesh_replication_role{role=\"none\"} 0\n");
    assert_has(t, "astromesh_replication_is_master 0\n");
    assert_has(t, "astromesh_replication_elections_total 3\n");
    assert_has(t, "astromesh_replication_lag_bytes 4096\n");
    assert_has(t, "astromesh_replication_forwarded_total 2\n");
    assert_has(t, "astromesh_replication_not_acknowledged_total 1\n");
    free(t);
    x.rep_role = STORE_ROLE_MASTER;
    t = render(&x);
    assert_has(t, "astromesh_replication_role{role=\"master\"} 1\n");
    assert_has(t, "astromesh_replication_is_master 1\n");
    free(t);
    x.rep_ok = 0;                 /* the state could not be read: no role */
    t = render(&x);
    assert_has(t, "astromesh_replication_role{role=\"none\"} 1\n");
    assert_has(t, "astromesh_replication_is_master 0\n");
    free(t);
    x.rep_group = 0;              /* no group: not one line */
    t = render(&x);
    ck_assert_ptr_null(strstr(t, "astromesh_replication"));
    free(t);
    metrics_close();
    metrics_rep_forwarded();      /* no segment: a no-op */
}
END_TEST

START_TEST(status_table_maps_unknowns_to_other)
{
    ck_assert_int_eq(metrics_status_index(200), 0);
    ck_assert_int_ne(metrics_status_index(504), metrics_status_index(599));
    ck_assert_int_eq(metrics_status_index(599), metrics_status_index(100));
}
END_TEST

static Suite *metrics_suite(void)
{
    Suite *s = suite_create("metrics");
    TCase *t = tcase_create("metrics");

    tcase_add_test(t, a_request_counts_by_route_and_status_with_its_latency);
    tcase_add_test(t, provider_calls_and_errors_show);
    tcase_add_test(t, each_orgs_breaker_shows_open_or_closed);
    tcase_add_test(t, a_childs_counts_reach_the_parent_and_its_death_clears_its_gauges);
    tcase_add_test(t, extra_figures_and_the_cache_ratio);
    tcase_add_test(t, the_replication_lines_only_with_a_group);
    tcase_add_test(t, status_table_maps_unknowns_to_other);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(metrics_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
