/*
 * check_breakers.c - the shared circuit breakers (state/breakers.c):
 * consecutive failures open a breaker for the cooldown, a success closes
 * it, one org's failures never open another org's breaker, a Retry-After
 * opens it at least that long, a failure seen in one process is seen in
 * another, a full probe window, and a process killed holding the mutex.
 */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "state/breakers.h"

static const struct breakers_outcome FAIL = { 0, 0, 3, 60000, 0 };
static const struct breakers_outcome OK = { 1, 40, 3, 60000, 0 };

START_TEST(failures_open_for_the_cooldown_and_a_success_closes)
{
    struct breakers *b;
    uint64_t ewma;

    ck_assert_int_eq(breakers_create(&b, 16, NULL), 0);
    breakers_record(b, "acme", 1, "gpt", 1000, &FAIL);
    breakers_record(b, "acme", 1, "gpt", 1001, &FAIL);
    ck_assert_int_eq(breakers_is_open(b, "acme", 1, "gpt", 1002, NULL), 0);
    breakers_record(b, "acme", 1, "gpt", 1002, &FAIL);
    ck_assert_int_eq(breakers_is_open(b, "acme", 1, "gpt", 1003, NULL), 1);
    ck_assert_int_eq(breakers_is_open(b, "acme", 1, "gpt", 61001, NULL), 1);
    ck_assert_int_eq(breakers_is_open(b, "acme", 1, "gpt", 61002, NULL), 0);
    /* another model, another provider: their own breakers */
    ck_assert_int_eq(breakers_is_open(b, "acme", 1, "gpt-mini", 1003, NULL), 0);
    ck_assert_int_eq(breakers_is_open(b, "acme", 2, "gpt", 1003, NULL), 0);
    breakers_record(b, "acme", 1, "gpt", 2000, &OK);
    ck_assert_int_eq(breakers_is_open(b, "acme", 1, "gpt", 2001, &ewma), 0);
    ck_assert_int_eq((int)ewma, 40);
    /* a success in between resets the count */
    breakers_record(b, "acme", 1, "gpt", 3000, &FAIL);
    breakers_record(b, "acme", 1, "gpt", 3001, &FAIL);
    breakers_record(b, "acme", 1, "gpt", 3002, &OK);
    breakers_record(b, "acme", 1, "gpt", 3003, &FAIL);
    ck_assert_int_eq(breakers_is_open(b, "acme", 1, "gpt", 3004, NULL), 0);
    breakers_close(b);
}
END_TEST

START_TEST(one_orgs_failures_never_open_another_orgs_breaker)
{
    struct breakers *b;
    int i;

    ck_assert_int_eq(breakers_create(&b, 16, NULL), 0);
    for (i = 0; i < 8; i++)
        breakers_record(b, "mallory", 1, "gpt", 1000 + (uint64_t)i, &FAIL);
    ck_assert_int_eq(breakers_is_open(b, "mallory", 1, "gpt", 1010, NULL), 1);
    ck_assert_int_eq(breakers_is_open(b, "alice", 1, "gpt", 1010, NULL), 0);
    breakers_close(b);
}
END_TEST

START_TEST(a_retry_after_opens_at_least_that_long)
{
    struct breakers *b;
    struct breakers_outcome o = FAIL;

    ck_assert_int_eq(breakers_create(&b, 16, NULL), 0);
    o.retry_after_ms = 5000;            /* one 429 with Retry-After: 5 */
    breakers_record(b, "acme", 1, "gpt", 1000, &o);
    ck_assert_int_eq(breakers_is_open(b, "acme", 1, "gpt", 5999, NULL), 1);
    ck_assert_int_eq(breakers_is_open(b, "acme", 1, "gpt", 6000, NULL), 0);
    /* longer than the cooldown when the count opens it too */
    o.retry_after_ms = 120000;
    breakers_record(b, "acme", 1, "gpt", 7000, &o);
    breakers_record(b, "acme", 1, "gpt", 7001, &o);
    ck_assert_int_eq(breakers_is_open(b, "acme", 1, "gpt", 126000, NULL), 1);
    ck_assert_int_eq(breakers_is_open(b, "acme", 1, "gpt", 127002, NULL), 0);
    breakers_close(b);
}
END_TEST

START_TEST(a_failure_in_one_process_is_seen_in_another)
{
    struct breakers *b;
    pid_t pid;
    int st, i;

    ck_assert_int_eq(breakers_create(&b, 16, NULL), 0);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        for (i = 0; i < 3; i++)
            breakers_record(b, "acme", 1, "gpt", 1000, &FAIL);
        _exit(0);
    }
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_int_eq(breakers_is_open(b, "acme", 1, "gpt", 1001, NULL), 1);
    breakers_check_invariants(b);
    breakers_close(b);
}
END_TEST

struct seen { int n, open; };

static void count_state(const struct breakers_state *st, void *arg)
{
    struct seen *s = arg;

    s->n++;
    s->open += st->open;
}

START_TEST(a_full_window_forgets_closed_breakers_never_open_ones)
{
    struct breakers *b;
    struct seen seen = { 0, 0 };
    char org[32];
    int i, open = 0;

    ck_assert_int_eq(breakers_create(&b, 1, NULL), 0);        /* 64 slots */
    for (i = 0; i < 1000; i++) {
        snprintf(org, sizeof(org), "org%d", i);
        breakers_record(b, org, 1, "gpt", 1000, &FAIL);
        breakers_record(b, org, 1, "gpt", 1000, &FAIL);
        breakers_record(b, org, 1, "gpt", 1000, &FAIL);
    }
    for (i = 0; i < 1000; i++) {
        snprintf(org, sizeof(org), "org%d", i);
        open += breakers_is_open(b, org, 1, "gpt", 1001, NULL);
    }
    breakers_foreach(b, 1001, count_state, &seen);
    ck_assert_int_le(seen.n, 64);
    ck_assert_int_eq(seen.open, open);
    ck_assert_int_ge(open, 32);         /* open breakers were kept */
    breakers_check_invariants(b);
    /* a name too long to store is never counted, never opens */
    char model[200];
    memset(model, 'm', sizeof(model) - 1);
    model[sizeof(model) - 1] = '\0';
    for (i = 0; i < 5; i++)
        breakers_record(b, "acme", 1, model, 1000, &FAIL);
    ck_assert_int_eq(breakers_is_open(b, "acme", 1, model, 1001, NULL), 0);
    breakers_close(b);
}
END_TEST

START_TEST(a_process_killed_holding_the_mutex_does_not_wedge_the_table)
{
    struct breakers *b;
    struct seen seen = { 0, 0 };
    pid_t pid;
    int st;

    ck_assert_int_eq(breakers_create(&b, 16, NULL), 0);
    breakers_record(b, "acme", 1, "gpt", 1000, &OK);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* dies inside foreach, the mutex held */
        breakers_foreach(b, 1000, (breakers_foreach_fn)(void (*)(void))abort, NULL);
        _exit(0);
    }
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert(WIFSIGNALED(st));
    breakers_record(b, "acme", 1, "gpt", 1001, &FAIL);
    breakers_foreach(b, 1002, count_state, &seen);
    ck_assert_int_eq(seen.n, 1);
    breakers_check_invariants(b);
    breakers_close(b);
}
END_TEST

static Suite *breakers_suite(void)
{
    Suite *s = suite_create("breakers");
    TCase *t = tcase_create("breakers");

    tcase_add_test(t, failures_open_for_the_cooldown_and_a_success_closes);
    tcase_add_test(t, one_orgs_failures_never_open_another_orgs_breaker);
    tcase_add_test(t, a_retry_after_opens_at_least_that_long);
    tcase_add_test(t, a_failure_in_one_process_is_seen_in_another);
    tcase_add_test(t, a_full_window_forgets_closed_breakers_never_open_ones);
    tcase_add_test(t, a_process_killed_holding_the_mutex_does_not_wedge_the_table);
    tcase_set_timeout(t, 30);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(breakers_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
