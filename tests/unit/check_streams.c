/*
 * check_streams.c - the per-org stream slots in shared memory
 * (state/streams.c): the limit per org, release, reclaim of a dead
 * process's slots, a full table, and the limit held across processes
 * racing for the last slots.
 */
#include <check.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "state/streams.h"

START_TEST(an_org_gets_its_limit_and_no_more)
{
    struct streams *s;
    int i, slot[5];

    ck_assert_int_eq(streams_create(&s, 64, NULL), 0);
    for (i = 0; i < 5; i++)
        ck_assert_int_ge(slot[i] = streams_acquire(s, "acme", 5), 0);
    ck_assert_int_eq(streams_acquire(s, "acme", 5), AM_ESTREAMLIMIT);
    ck_assert_int_eq(streams_count(s, "acme"), 5);
    /* another org is not held to acme's count */
    ck_assert_int_ge(streams_acquire(s, "other", 5), 0);
    streams_release(s, slot[2]);
    ck_assert_int_eq(streams_count(s, "acme"), 4);
    ck_assert_int_ge(streams_acquire(s, "acme", 5), 0);
    ck_assert_int_eq(streams_acquire(s, "acme", 5), AM_ESTREAMLIMIT);
    streams_release(s, -1);                 /* harmless */
    streams_close(s);
}
END_TEST

START_TEST(a_full_table_is_unavailable)
{
    struct streams *s;

    ck_assert_int_eq(streams_create(&s, 2, NULL), 0);
    ck_assert_int_ge(streams_acquire(s, "a", 10), 0);
    ck_assert_int_ge(streams_acquire(s, "b", 10), 0);
    ck_assert_int_eq(streams_acquire(s, "c", 10), AM_EUNAVAILABLE);
    streams_close(s);
}
END_TEST

START_TEST(reclaim_frees_only_the_dead_process_slots)
{
    struct streams *s;
    pid_t pid;
    int status;

    ck_assert_int_eq(streams_create(&s, 64, NULL), 0);
    ck_assert_int_ge(streams_acquire(s, "acme", 5), 0);          /* ours */
    pid = fork();
    if (pid == 0) {
        int ok = streams_acquire(s, "acme", 5) >= 0 && streams_acquire(s, "acme", 5) >= 0;
        _exit(ok ? 0 : 1);                  /* dies holding two */
    }
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_int_eq(WEXITSTATUS(status), 0);
    ck_assert_int_eq(streams_count(s, "acme"), 3);
    ck_assert_int_eq(streams_reclaim(s, (int)pid), 2);
    ck_assert_int_eq(streams_count(s, "acme"), 1);
    ck_assert_int_eq(streams_reclaim(s, (int)pid), 0);
    ck_assert_int_eq(streams_reclaim(s, 0), 0);                  /* never "all" */
    streams_close(s);
}
END_TEST

START_TEST(processes_racing_never_exceed_the_limit)
{
    enum { PROCS = 8, TRIES = 50, LIMIT = 5 };
    struct streams *s;
    pid_t pids[PROCS];
    int i, status, total = 0;

    ck_assert_int_eq(streams_create(&s, 1024, NULL), 0);
    for (i = 0; i < PROCS; i++) {
        if ((pids[i] = fork()) == 0) {
            int got = 0, t;
            for (t = 0; t < TRIES; t++)
                got += streams_acquire(s, "race", LIMIT) >= 0;
            _exit(got);
        }
    }
    for (i = 0; i < PROCS; i++) {
        ck_assert_int_eq(waitpid(pids[i], &status, 0), pids[i]);
        total += WEXITSTATUS(status);
    }
    ck_assert_int_eq(total, LIMIT);
    ck_assert_int_eq(streams_count(s, "race"), LIMIT);
    streams_close(s);
}
END_TEST

START_TEST(a_process_killed_holding_the_mutex_does_not_wedge_the_table)
{
    struct streams *s;
    pid_t pid;

    ck_assert_int_eq(streams_create(&s, 64, NULL), 0);
    pid = fork();
    if (pid == 0) {
        for (;;)
            if (streams_acquire(s, "busy", 1000000) >= 0)
                streams_release(s, 0);
    }
    usleep(50000);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    streams_reclaim(s, (int)pid);
    ck_assert_int_ge(streams_acquire(s, "after", 1), 0);
    ck_assert_int_eq(streams_count(s, "busy"), 0);
    streams_close(s);
}
END_TEST

static Suite *streams_suite(void)
{
    Suite *s = suite_create("streams");
    TCase *t = tcase_create("streams");

    tcase_add_test(t, an_org_gets_its_limit_and_no_more);
    tcase_add_test(t, a_full_table_is_unavailable);
    tcase_add_test(t, reclaim_frees_only_the_dead_process_slots);
    tcase_add_test(t, processes_racing_never_exceed_the_limit);
    tcase_add_test(t, a_process_killed_holding_the_mutex_does_not_wedge_the_table);
    tcase_set_timeout(t, 30);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(streams_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
