/*
 * check_auth_state.c - unit tests for the authorisation epoch
 * (auth_state.c): one counter in anonymous shared memory that every
 * process forked after its creation sees, and that concurrent bumps from
 * any of them all move (account.c trusts its per-thread memo only while
 * the epoch stands still, so a lost bump would let a revoked token pass).
 *
 * Child processes report through their exit status (never ck_assert,
 * which belongs to the test process).
 */
#include <check.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
#include "control/auth_state.h"

#define EPOCH_BUMPS 1000

static struct auth_state *must_create(void)
{
    struct auth_state *a = NULL;
    struct am_error err;

    error_clear(&err);
    ck_assert_msg(auth_state_create(&a, &err) == 0, "auth_state_create: %s", err.message);
    ck_assert_ptr_nonnull(a);
    return a;
}

static int child_ok(pid_t pid)
{
    int st = 0;

    if (waitpid(pid, &st, 0) != pid)
        return 0;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* Fork a child that bumps a EPOCH_BUMPS times and exits. */
static pid_t fork_bumper(struct auth_state *a)
{
    pid_t pid = fork();

    if (pid == 0) {
        for (int i = 0; i < EPOCH_BUMPS; i++)
            auth_state_bump(a);
        _exit(0);
    }
    return pid;
}

START_TEST(a_new_epoch_starts_at_zero_and_each_bump_adds_one)
{
    struct auth_state *a = must_create();

    ck_assert_uint_eq(auth_state_epoch(a), 0);
    auth_state_bump(a);
    ck_assert_uint_eq(auth_state_epoch(a), 1);
    auth_state_bump(a);
    ck_assert_uint_eq(auth_state_epoch(a), 2);
    auth_state_close(a);
    auth_state_close(NULL);
}
END_TEST

START_TEST(bumps_are_seen_by_other_processes_and_none_is_lost)
{
    struct auth_state *a = must_create();
    pid_t p, q;

    p = fork_bumper(a);
    ck_assert_int_ge(p, 0);
    ck_assert(child_ok(p));
    ck_assert_uint_eq(auth_state_epoch(a), EPOCH_BUMPS);

    /* Concurrent bumps from two children and this process: none is lost. */
    p = fork_bumper(a);
    ck_assert_int_ge(p, 0);
    q = fork_bumper(a);
    ck_assert_int_ge(q, 0);
    for (int i = 0; i < EPOCH_BUMPS; i++)
        auth_state_bump(a);
    ck_assert(child_ok(p));
    ck_assert(child_ok(q));
    ck_assert_uint_eq(auth_state_epoch(a), 4 * EPOCH_BUMPS);
    auth_state_close(a);
}
END_TEST

START_TEST(separate_epochs_do_not_share_bumps)
{
    struct auth_state *a = must_create(), *b = must_create();

    auth_state_bump(a);
    ck_assert_uint_eq(auth_state_epoch(a), 1);
    ck_assert_uint_eq(auth_state_epoch(b), 0);
    auth_state_close(a);
    auth_state_close(b);
}
END_TEST

static Suite *auth_state_suite(void)
{
    Suite *s = suite_create("auth_state");
    TCase *tc = tcase_create("epoch");

    tcase_add_test(tc, a_new_epoch_starts_at_zero_and_each_bump_adds_one);
    tcase_add_test(tc, bumps_are_seen_by_other_processes_and_none_is_lost);
    tcase_add_test(tc, separate_epochs_do_not_share_bumps);
    tcase_set_timeout(tc, 30);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(auth_state_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
