/*
 * check_store.c - unit tests for store.c, the Berkeley DB layer, against a
 * real environment in a fresh mkdtemp directory per test.
 *
 * Besides the key/value contract (round trips, AM_ENOENT, prefix scans in
 * key order) the tests go after the promises in store.c's invariants:
 *  - store_transact commits on 0, aborts on an error, and re-runs the whole
 *    function after AM_EDEADLOCK without keeping anything a failed attempt
 *    wrote; two threads locking two keys in opposite order really deadlock
 *    (a rendezvous forces it once) and every increment still lands;
 *  - the write-fault hook fails the Nth write and the transaction leaves
 *    nothing behind;
 *  - committed data survives close/reopen and a SIGKILL plus recovery;
 *  - a process SIGKILLed while holding a write lock blocks writers until
 *    store_failchk releases it, and not after.
 *
 * Children report through their exit status and a pipe, never ck_assert.
 * Waits are bounded polls; the test cases that can hang on a bug have a
 * check timeout.
 *
 * Run under valgrind: CK_FORK=no valgrind --leak-check=full --error-exitcode=1
 */
#include <check.h>
#include <db.h>         /* only to act as db5.3_hotbackup does: set its flag */
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "state/store.h"
#include "lib/invariant.h"
#include "lib/util.h"

#define NCASES(a) ((int)(sizeof(a) / sizeof((a)[0])))

static char base[64];              /* per-run parent of every home; main() removes it */
static char home[96];              /* this test's environment directory */
static struct store *st;           /* opened by the fixture */

/* ---- fixture and helpers ------------------------------------------------- */

static struct store_options opts(void)
{
    struct store_options o = { home, 8, 1, 64, 0, NULL };
    return o;
}

static struct store *open_store(int flags)
{
    struct store_options o = opts();
    struct store *s = NULL;
    struct am_error err;

    error_clear(&err);
    ck_assert_msg(store_open(&s, &o, flags, &err) == 0, "store_open: %s", err.message);
    ck_assert_ptr_nonnull(s);
    return s;
}

static void setup(void)
{
    snprintf(home, sizeof home, "%s/env-XXXXXX", base);
    ck_assert_ptr_nonnull(mkdtemp(home));
    st = open_store(STORE_OPEN_CREATE);
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb; (void)flag; (void)ftw;
    return remove(path);
}

static void teardown(void)
{
    store_test_fail_write_after(0);
    if (st != NULL)
        CHECK_INVARIANTS(store_check_invariants(st));
    store_close(st);
    st = NULL;
    if (home[0] != '\0')
        nftw(home, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    home[0] = '\0';
}

static void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

/* Put/get with string keys and values (no NUL in either). */
static int put_s(struct store_txn *t, int db, const char *k, const char *v)
{
    return store_put(st, t, db, k, strlen(k), v, strlen(v));
}

/* 1 if db holds k with exactly value v (read outside any transaction). */
static int has(int db, const void *k, size_t klen, const char *v)
{
    char *val = NULL;
    size_t vlen = 0;
    int rc = store_get(st, NULL, db, k, klen, 0, &val, &vlen);
    int ok = rc == 0 && vlen == strlen(v) && memcmp(val, v, vlen) == 0;

    free(val);
    return ok;
}

static int absent(int db, const void *k, size_t klen)
{
    char *val = (char *)"sentinel";
    int rc = store_get(st, NULL, db, k, klen, 0, &val, NULL);

    free(rc == 0 ? val : NULL);
    return rc == AM_ENOENT && val == NULL;
}

/* ---- key/value ------------------------------------------------------------- */

START_TEST(put_get_del_round_trip)
{
    static const char key[] = "slug\0email@example.com";
    static const char val[] = "{\"role\":\"owner\"}";
    char *got = NULL;
    size_t glen = 0;

    ck_assert_int_eq(store_put(st, NULL, _i, key, sizeof key - 1, val, strlen(val)), 0);
    ck_assert_int_eq(store_get(st, NULL, _i, key, sizeof key - 1, 0, &got, &glen), 0);
    ck_assert_uint_eq(glen, strlen(val));
    ck_assert_str_eq(got, val);          /* NUL appended */
    free(got);
    /* vlen may be NULL */
    ck_assert_int_eq(store_get(st, NULL, _i, key, sizeof key - 1, 0, &got, NULL), 0);
    free(got);
    ck_assert_int_eq(store_del(st, NULL, _i, key, sizeof key - 1), 0);
    ck_assert(absent(_i, key, sizeof key - 1));
    ck_assert_int_eq(store_del(st, NULL, _i, key, sizeof key - 1), AM_ENOENT);
}
END_TEST

START_TEST(missing_key_is_enoent)
{
    static const char *const keys[] = { "nope", "", "a", "slug" };

    ck_assert_int_eq(put_s(NULL, STORE_ORGS, "slugx", "v"), 0);
    for (int db = 0; db < STORE_DB_COUNT; db++)
        for (int i = 0; i < NCASES(keys); i++) {
            ck_assert_msg(absent(db, keys[i], strlen(keys[i])), "db %d key '%s'", db, keys[i]);
            ck_assert_int_eq(store_del(st, NULL, db, keys[i], strlen(keys[i])), AM_ENOENT);
        }
}
END_TEST

START_TEST(databases_are_separate)
{
    ck_assert_int_eq(put_s(NULL, STORE_USERS, "k", "user"), 0);
    ck_assert_int_eq(put_s(NULL, STORE_TOKENS, "k", "token"), 0);
    ck_assert(has(STORE_USERS, "k", 1, "user"));
    ck_assert(has(STORE_TOKENS, "k", 1, "token"));
    ck_assert(absent(STORE_ORGS, "k", 1));
    ck_assert(absent(STORE_MEMBERS, "k", 1));
    ck_assert(absent(STORE_AGENTS, "k", 1));
}
END_TEST

START_TEST(put_overwrites_and_binary_values_round_trip)
{
    static const char bin[] = "a\0b\0\xff\x01";
    char *got = NULL;
    size_t glen = 99;

    ck_assert_int_eq(put_s(NULL, STORE_AGENTS, "k", "first, and long"), 0);
    ck_assert_int_eq(put_s(NULL, STORE_AGENTS, "k", "second"), 0);
    ck_assert(has(STORE_AGENTS, "k", 1, "second"));
    ck_assert_int_eq(store_put(st, NULL, STORE_AGENTS, "k", 1, bin, sizeof bin - 1), 0);
    ck_assert_int_eq(store_get(st, NULL, STORE_AGENTS, "k", 1, 0, &got, &glen), 0);
    ck_assert_uint_eq(glen, sizeof bin - 1);
    ck_assert_mem_eq(got, bin, sizeof bin - 1);
    ck_assert_int_eq(got[glen], '\0');
    free(got);
    /* An empty value is a value, not a missing key. */
    ck_assert_int_eq(store_put(st, NULL, STORE_AGENTS, "e", 1, "", 0), 0);
    ck_assert_int_eq(store_get(st, NULL, STORE_AGENTS, "e", 1, 0, &got, &glen), 0);
    ck_assert_uint_eq(glen, 0);
    ck_assert_str_eq(got, "");
    free(got);
}
END_TEST

START_TEST(ping_and_checkpoint_succeed_on_healthy_store)
{
    ck_assert_int_eq(store_ping(st), 0);
    ck_assert_int_eq(put_s(NULL, STORE_ORGS, "k", "v"), 0);
    ck_assert_int_eq(store_checkpoint(st), 0);
    ck_assert_int_eq(store_ping(st), 0);
}
END_TEST

/* The first and the number of log files in home. */
static int log_files(int *first)
{
    DIR *d = opendir(home);
    struct dirent *e;
    int n = 0;

    *first = -1;
    ck_assert_ptr_nonnull(d);
    while ((e = readdir(d)) != NULL)
        if (strncmp(e->d_name, "log.", 4) == 0) {
            int v = atoi(e->d_name + 4);
            if (*first < 0 || v < *first)
                *first = v;
            n++;
        }
    closedir(d);
    return n;
}

/* Enough writes to fill several 64 KiB log files. */
static void fill_logs(int from)
{
    char v[1024];
    int i;

    memset(v, 'x', sizeof(v));
    for (i = from; i < from + 400; i++)
        ck_assert_int_eq(store_put(st, NULL, STORE_ORGS, &i, sizeof(i), v, sizeof(v)), 0);
}

/* Issue 11: a checkpoint removes the log files it made unnecessary, but
 * none while db5.3_hotbackup (here: another handle setting its flag, as
 * the utility does) copies the environment. */
START_TEST(checkpoint_keeps_every_log_during_a_hot_backup)
{
    DB_ENV *other;
    int first, before, n;
    FILE *f;
    char path[160];

    store_close(st);                 /* a fresh environment with small log files */
    nftw(home, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    ck_assert_int_eq(mkdir(home, 0700), 0);
    snprintf(path, sizeof(path), "%s/DB_CONFIG", home);
    ck_assert_ptr_nonnull(f = fopen(path, "w"));
    fputs("set_lg_max 65536\n", f);
    fclose(f);
    st = open_store(STORE_OPEN_CREATE);
    fill_logs(0);
    ck_assert_int_eq(store_checkpoint(st), 0);
    n = log_files(&before);
    ck_assert_int_le(n, 2);                        /* the old ones are gone */
    ck_assert_int_eq(db_env_create(&other, 0), 0);
    ck_assert_int_eq(other->open(other, home, DB_INIT_LOCK | DB_INIT_LOG | DB_INIT_MPOOL |
                                 DB_INIT_TXN, 0600), 0);
    ck_assert_int_eq(other->set_flags(other, DB_HOTBACKUP_IN_PROGRESS, 1), 0);
    fill_logs(400);
    ck_assert_int_eq(store_checkpoint(st), 0);
    n = log_files(&first);
    ck_assert_int_eq(first, before);               /* nothing removed */
    ck_assert_int_gt(n, 3);
    ck_assert_int_eq(other->set_flags(other, DB_HOTBACKUP_IN_PROGRESS, 0), 0);
    ck_assert_int_eq(other->close(other, 0), 0);
    ck_assert_int_eq(store_checkpoint(st), 0);
    n = log_files(&first);
    ck_assert_int_gt(first, before);               /* removed again afterwards */
    ck_assert_int_le(n, 2);
}
END_TEST

START_TEST(open_of_missing_home_is_eio_with_message)
{
    struct store_options o = { "/nonexistent/am-check-store/none", 8, 1, 64, 0, NULL };
    struct store *s = (struct store *)&o;
    struct am_error err;

    error_clear(&err);
    ck_assert_int_eq(store_open(&s, &o, STORE_OPEN_CREATE, &err), AM_EIO);
    ck_assert_ptr_null(s);
    ck_assert_int_eq(err.code, AM_EIO);
    ck_assert_msg(strstr(err.message, o.home) != NULL, "%s", err.message);
    store_close(NULL);    /* NULL is fine */
}
END_TEST

/* ---- scan ------------------------------------------------------------------- */

struct seen {
    int n;
    int stop_after;          /* return 1 after this many (0 = never) */
    int fail_with;           /* return this after the first (0 = never) */
    char keys[8][16];
    size_t klens[8];
    char vals[8][16];
};

static int collect(const char *k, size_t kl, const char *v, size_t vl, void *arg)
{
    struct seen *s = arg;

    ck_assert_int_lt(s->n, 8);
    ck_assert_uint_lt(kl, sizeof s->keys[0]);
    ck_assert_int_eq(v[vl], '\0');
    memcpy(s->keys[s->n], k, kl);
    s->klens[s->n] = kl;
    util_strlcpy(s->vals[s->n], v, sizeof s->vals[0]);
    s->n++;
    if (s->fail_with != 0)
        return s->fail_with;
    return s->stop_after != 0 && s->n >= s->stop_after ? 1 : 0;
}

static void put_scan_keys(void)
{
    /* Inserted out of order; "a" and "`" bracket the prefix. */
    ck_assert_int_eq(store_put(st, NULL, STORE_MEMBERS, "ab\0z", 4, "3", 1), 0);
    ck_assert_int_eq(store_put(st, NULL, STORE_MEMBERS, "a\0y", 3, "2", 1), 0);
    ck_assert_int_eq(store_put(st, NULL, STORE_MEMBERS, "a\0x", 3, "1", 1), 0);
    ck_assert_int_eq(store_put(st, NULL, STORE_MEMBERS, "a", 1, "0", 1), 0);
    ck_assert_int_eq(store_put(st, NULL, STORE_MEMBERS, "`\0x", 3, "-", 1), 0);
}

START_TEST(scan_visits_exactly_the_prefix_in_key_order)
{
    struct seen s = { 0 };

    put_scan_keys();
    ck_assert_int_eq(store_scan(st, NULL, STORE_MEMBERS, "a\0", 2, collect, &s), 0);
    ck_assert_int_eq(s.n, 2);
    ck_assert_uint_eq(s.klens[0], 3);
    ck_assert_mem_eq(s.keys[0], "a\0x", 3);
    ck_assert_str_eq(s.vals[0], "1");
    ck_assert_uint_eq(s.klens[1], 3);
    ck_assert_mem_eq(s.keys[1], "a\0y", 3);
    ck_assert_str_eq(s.vals[1], "2");
}
END_TEST

START_TEST(scan_stops_when_fn_returns_one)
{
    struct seen s = { 0 };

    put_scan_keys();
    s.stop_after = 1;
    ck_assert_int_eq(store_scan(st, NULL, STORE_MEMBERS, "a\0", 2, collect, &s), 0);
    ck_assert_int_eq(s.n, 1);
    ck_assert_mem_eq(s.keys[0], "a\0x", 3);
}
END_TEST

START_TEST(scan_returns_fn_error_and_stops)
{
    struct seen s = { 0 };

    put_scan_keys();
    s.fail_with = AM_EINTERNAL;
    ck_assert_int_eq(store_scan(st, NULL, STORE_MEMBERS, "", 0, collect, &s), AM_EINTERNAL);
    ck_assert_int_eq(s.n, 1);
}
END_TEST

static const struct { const char *prefix; size_t plen; int n; } scan_cases[] = {
    { "", 0, 5 },            /* everything */
    { "a", 1, 4 },           /* "a", "a\0x", "a\0y", "ab\0z" */
    { "ab", 2, 1 },
    { "ab\0z", 4, 1 },       /* a whole key is its own prefix */
    { "ab\0z\0", 5, 0 },     /* longer than any key */
    { "b", 1, 0 },           /* after the last key */
    { "0", 1, 0 },           /* before the first key */
    { "a\0w", 3, 0 },        /* between keys */
};

START_TEST(scan_prefix_table)
{
    struct seen s = { 0 };

    put_scan_keys();
    ck_assert_int_eq(store_scan(st, NULL, STORE_MEMBERS, scan_cases[_i].prefix,
                                scan_cases[_i].plen, collect, &s), 0);
    ck_assert_int_eq(s.n, scan_cases[_i].n);
    for (int i = 0; i < s.n; i++) {
        ck_assert_uint_ge(s.klens[i], scan_cases[_i].plen);
        ck_assert_mem_eq(s.keys[i], scan_cases[_i].prefix, scan_cases[_i].plen);
        if (i > 0)
            ck_assert_str_lt(s.vals[i - 1], s.vals[i]);   /* "-" < "0" < "1" < "2" < "3" */
    }
}
END_TEST

START_TEST(scan_of_empty_database_visits_nothing)
{
    struct seen s = { 0 };

    ck_assert_int_eq(store_scan(st, NULL, STORE_TOKENS, "a", 1, collect, &s), 0);
    ck_assert_int_eq(store_scan(st, NULL, STORE_TOKENS, "", 0, collect, &s), 0);
    ck_assert_int_eq(s.n, 0);
}
END_TEST

static int scan_in_txn(struct store *s, struct store_txn *t, void *arg)
{
    int rc;

    (void)s;
    if ((rc = store_put(st, t, STORE_MEMBERS, "a\0w", 3, "new", 3)) != 0)
        return rc;
    return store_scan(st, t, STORE_MEMBERS, "a\0", 2, collect, arg);
}

START_TEST(scan_in_transaction_sees_its_own_writes)
{
    struct seen s = { 0 };

    put_scan_keys();
    ck_assert_int_eq(store_transact(st, scan_in_txn, &s), 0);
    ck_assert_int_eq(s.n, 3);
    ck_assert_mem_eq(s.keys[0], "a\0w", 3);
    ck_assert_str_eq(s.vals[0], "new");
}
END_TEST

/* ---- transactions -------------------------------------------------------------- */

struct txn_script {
    int calls;               /* OUT: how many times fn ran */
    int deadlocks_first;     /* return AM_EDEADLOCK on the first N calls */
    int result;              /* then return this */
};

/* Writes "attempt-<call>" and "common", then returns the scripted result. */
static int scripted_fn(struct store *s, struct store_txn *t, void *arg)
{
    struct txn_script *sc = arg;
    char key[32];
    int rc;

    (void)s;
    sc->calls++;
    snprintf(key, sizeof key, "attempt-%d", sc->calls);
    if ((rc = put_s(t, STORE_USERS, key, "x")) != 0 ||
        (rc = put_s(t, STORE_USERS, "common", key)) != 0)
        return rc;
    if (sc->calls <= sc->deadlocks_first)
        return AM_EDEADLOCK;
    return sc->result;
}

START_TEST(transact_commits_when_fn_returns_zero)
{
    struct txn_script sc = { 0, 0, 0 };

    ck_assert_int_eq(store_transact(st, scripted_fn, &sc), 0);
    ck_assert_int_eq(sc.calls, 1);
    ck_assert(has(STORE_USERS, "attempt-1", 9, "x"));
    ck_assert(has(STORE_USERS, "common", 6, "attempt-1"));
}
END_TEST

static const int abort_codes[] = { AM_EVALIDATION, AM_EIO, AM_EEXISTS, AM_EINTERNAL, -1 };

START_TEST(transact_aborts_when_fn_fails)
{
    struct txn_script sc = { 0, 0, abort_codes[_i] };

    ck_assert_int_eq(put_s(NULL, STORE_USERS, "common", "before"), 0);
    ck_assert_int_eq(store_transact(st, scripted_fn, &sc), abort_codes[_i]);
    ck_assert_int_eq(sc.calls, 1);     /* only deadlocks are retried */
    ck_assert(absent(STORE_USERS, "attempt-1", 9));
    ck_assert(has(STORE_USERS, "common", 6, "before"));
}
END_TEST

START_TEST(transact_reruns_after_deadlock_and_keeps_only_last_attempt)
{
    struct txn_script sc = { 0, 3, 0 };

    ck_assert_int_eq(store_transact(st, scripted_fn, &sc), 0);
    ck_assert_int_eq(sc.calls, 4);
    ck_assert(absent(STORE_USERS, "attempt-1", 9));
    ck_assert(absent(STORE_USERS, "attempt-2", 9));
    ck_assert(absent(STORE_USERS, "attempt-3", 9));
    ck_assert(has(STORE_USERS, "attempt-4", 9, "x"));
    ck_assert(has(STORE_USERS, "common", 6, "attempt-4"));
}
END_TEST

START_TEST(transact_gives_up_after_bounded_deadlock_retries)
{
    struct txn_script sc = { 0, 1000000, 0 };
    int rc = store_transact(st, scripted_fn, &sc);

    ck_assert_msg(rc == AM_EUNAVAILABLE, "rc %d", rc);
    ck_assert_int_gt(sc.calls, 1);
    ck_assert_int_le(sc.calls, 1000);
    ck_assert(absent(STORE_USERS, "common", 6));
    ck_assert(absent(STORE_USERS, "attempt-1", 9));
}
END_TEST

/* ---- deadlock between two threads ------------------------------------------- */

/* k1 lives in STORE_USERS and k2 in STORE_ORGS: Berkeley DB locks pages, so
 * two keys of one small database would share a page and serialise instead
 * of deadlocking. */
struct rmw_shared {
    int rendezvous;          /* threads that hold their first lock (atomic) */
    int deadlocks;           /* AM_EDEADLOCK seen inside fn (atomic) */
    int failures;            /* store_transact != 0 (atomic) */
};

struct rmw_arg {
    struct rmw_shared *sh;
    int reverse;             /* 0: k1 then k2; 1: k2 then k1 */
    int iterations;
    int first_attempt;       /* rendezvous once, on the very first attempt */
};

static int bump(struct store_txn *t, int db, const char *key)
{
    char *val = NULL, buf[32];
    long n = 0;
    int rc = store_get(st, t, db, key, strlen(key), STORE_RMW, &val, NULL);

    if (rc == 0)
        n = strtol(val, NULL, 10);
    free(val);
    if (rc != 0 && rc != AM_ENOENT)
        return rc;
    snprintf(buf, sizeof buf, "%ld", n + 1);
    return store_put(st, t, db, key, strlen(key), buf, strlen(buf));
}

static int rmw_fn(struct store *s, struct store_txn *t, void *arg)
{
    struct rmw_arg *a = arg;
    int db1 = a->reverse ? STORE_ORGS : STORE_USERS, db2 = a->reverse ? STORE_USERS : STORE_ORGS;
    const char *k1 = a->reverse ? "k2" : "k1", *k2 = a->reverse ? "k1" : "k2";
    int rc;

    (void)s;
    if ((rc = bump(t, db1, k1)) != 0)
        goto out;
    if (a->first_attempt) {
        /* Both threads hold their first lock before either asks for its
         * second: a guaranteed deadlock (bounded wait in case the other
         * thread never gets here). */
        a->first_attempt = 0;
        __atomic_add_fetch(&a->sh->rendezvous, 1, __ATOMIC_SEQ_CST);
        for (int i = 0; i < 5000 && __atomic_load_n(&a->sh->rendezvous, __ATOMIC_SEQ_CST) < 2; i++)
            sleep_ms(1);
    }
    rc = bump(t, db2, k2);
out:
    if (rc == AM_EDEADLOCK)
        __atomic_add_fetch(&a->sh->deadlocks, 1, __ATOMIC_SEQ_CST);
    return rc;
}

static void *rmw_thread(void *p)
{
    struct rmw_arg *a = p;

    for (int i = 0; i < a->iterations; i++)
        if (store_transact(st, rmw_fn, a) != 0)
            __atomic_add_fetch(&a->sh->failures, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

START_TEST(opposite_order_rmw_deadlocks_are_retried_and_lose_nothing)
{
    enum { ITER = 300 };
    struct rmw_shared sh = { 0, 0, 0 };
    struct rmw_arg a = { &sh, 0, ITER, 1 }, b = { &sh, 1, ITER, 1 };
    pthread_t ta, tb;
    char want[16];

    ck_assert_int_eq(pthread_create(&ta, NULL, rmw_thread, &a), 0);
    ck_assert_int_eq(pthread_create(&tb, NULL, rmw_thread, &b), 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    ck_assert_int_eq(sh.failures, 0);
    ck_assert_msg(sh.deadlocks >= 1, "no deadlock happened: the test proves nothing");
    snprintf(want, sizeof want, "%d", 2 * ITER);
    ck_assert(has(STORE_USERS, "k1", 2, want));
    ck_assert(has(STORE_ORGS, "k2", 2, want));
}
END_TEST

/* ---- write-fault hook --------------------------------------------------------- */

/* Three writes: put w1, put w2, del w0 (which exists). */
static int three_writes(struct store *s, struct store_txn *t, void *arg)
{
    int rc;

    (void)s; (void)arg;
    if ((rc = put_s(t, STORE_AGENTS, "w1", "1")) != 0 ||
        (rc = put_s(t, STORE_AGENTS, "w2", "2")) != 0 ||
        (rc = store_del(st, t, STORE_AGENTS, "w0", 2)) != 0)
        return rc;
    return 0;
}

START_TEST(nth_write_fault_fails_with_eio_and_leaves_nothing)
{
    int n = _i;    /* 1..4; 4 is past the last write */

    ck_assert_int_eq(put_s(NULL, STORE_AGENTS, "w0", "0"), 0);
    store_test_fail_write_after(n);
    int rc = store_transact(st, three_writes, NULL);
    store_test_fail_write_after(0);
    if (n <= 3) {
        ck_assert_msg(rc == AM_EIO, "fault at write %d: rc %d", n, rc);
        ck_assert(absent(STORE_AGENTS, "w1", 2));
        ck_assert(absent(STORE_AGENTS, "w2", 2));
        ck_assert(has(STORE_AGENTS, "w0", 2, "0"));
    } else {
        ck_assert_int_eq(rc, 0);
        ck_assert(has(STORE_AGENTS, "w1", 2, "1"));
        ck_assert(has(STORE_AGENTS, "w2", 2, "2"));
        ck_assert(absent(STORE_AGENTS, "w0", 2));
    }
}
END_TEST

START_TEST(write_fault_fires_once_then_disarms)
{
    store_test_fail_write_after(2);
    ck_assert_int_eq(put_s(NULL, STORE_ORGS, "a", "1"), 0);
    ck_assert_int_eq(put_s(NULL, STORE_ORGS, "b", "2"), AM_EIO);
    ck_assert_int_eq(put_s(NULL, STORE_ORGS, "c", "3"), 0);
    ck_assert_int_eq(store_del(st, NULL, STORE_ORGS, "a", 1), 0);
    ck_assert(absent(STORE_ORGS, "b", 1));
    ck_assert(has(STORE_ORGS, "c", 1, "3"));
    /* Deletes count as writes too; 0 turns the hook off. */
    store_test_fail_write_after(1);
    ck_assert_int_eq(store_del(st, NULL, STORE_ORGS, "c", 1), AM_EIO);
    ck_assert(has(STORE_ORGS, "c", 1, "3"));
    store_test_fail_write_after(5);
    store_test_fail_write_after(0);
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(put_s(NULL, STORE_ORGS, "d", "4"), 0);
    /* Reads never count. */
    store_test_fail_write_after(1);
    ck_assert(has(STORE_ORGS, "d", 1, "4"));
    ck_assert_int_eq(put_s(NULL, STORE_ORGS, "e", "5"), AM_EIO);
}
END_TEST

/* ---- durability ------------------------------------------------------------------ */

START_TEST(data_survives_close_and_reopen)
{
    static const int flags[] = { STORE_OPEN_CREATE, 0 };

    ck_assert_int_eq(store_put(st, NULL, STORE_AGENTS, "acme\0bot", 8, "{\"v\":1}", 7), 0);
    ck_assert_int_eq(put_s(NULL, STORE_TOKENS, "jti", "revoked"), 0);
    for (int i = 0; i < NCASES(flags); i++) {
        store_close(st);
        st = open_store(flags[i]);
        ck_assert(has(STORE_AGENTS, "acme\0bot", 8, "{\"v\":1}"));
        ck_assert(has(STORE_TOKENS, "jti", 3, "revoked"));
    }
}
END_TEST

START_TEST(committed_write_survives_sigkill_and_recovery)
{
    pid_t pid;
    int status = 0;

    /* The child is the only process with the environment open. */
    store_close(st);
    st = NULL;
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        struct store_options o = opts();
        struct store *s = NULL;

        if (store_open(&s, &o, 0, NULL) != 0 ||
            store_put(s, NULL, STORE_USERS, "durable", 7, "yes", 3) != 0)
            _exit(1);
        kill(getpid(), SIGKILL);
        _exit(2);
    }
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "child status %d", status);
    st = open_store(STORE_OPEN_CREATE);        /* runs recovery */
    ck_assert(has(STORE_USERS, "durable", 7, "yes"));
}
END_TEST

/* Group commit: threads of one process share log flushes, and still no
 * commit is acknowledged before it is on disk. The child's eight threads
 * report each acknowledged key on a pipe; the child is killed mid-stream
 * and every reported key must survive recovery (a broken group flush would
 * leave acknowledged commits only in the log buffer, which recovery
 * ignores). */
struct gc_arg {
    struct store *s;
    int fd;                  /* pipe to the parent */
    int thread;
};

struct gc_put {
    char key[32];
};

static int gc_put_fn(struct store *s, struct store_txn *t, void *arg)
{
    struct gc_put *p = arg;
    return store_put(s, t, STORE_USERS, p->key, strlen(p->key), "ack", 3);
}

static void *gc_writer(void *v)
{
    struct gc_arg *a = v;
    struct gc_put p;
    int i;

    for (i = 0;; i++) {
        snprintf(p.key, sizeof(p.key), "k-%d-%d", a->thread, i);
        if (store_transact(a->s, gc_put_fn, &p) != 0)
            _exit(5);
        if (write(a->fd, p.key, sizeof(p.key)) != (ssize_t)sizeof(p.key))
            _exit(6);
    }
    return NULL;
}

START_TEST(group_commit_acknowledges_only_what_is_on_disk)
{
    struct gc_put got;
    int fds[2], status = 0, n = 0, missing = 0;
    char (*keys)[32] = xcalloc(200000, 32);
    pid_t pid;

    store_close(st);
    st = NULL;
    ck_assert_int_eq(pipe(fds), 0);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        struct store_options o = opts();
        struct gc_arg args[8];
        pthread_t th[8];
        int i;

        close(fds[0]);
        if (store_open(&args[0].s, &o, 0, NULL) != 0)
            _exit(1);
        for (i = 0; i < 8; i++) {
            args[i].s = args[0].s;
            args[i].fd = fds[1];
            args[i].thread = i;
            pthread_create(&th[i], NULL, gc_writer, &args[i]);
        }
        for (;;)
            pause();
    }
    close(fds[1]);
    /* Let a few hundred commits through, then kill the writer. */
    while (n < 300 && read(fds[0], &got, sizeof(got)) == (ssize_t)sizeof(got))
        memcpy(keys[n++], got.key, 32);
    kill(pid, SIGKILL);
    while (n < 200000 && read(fds[0], &got, sizeof(got)) == (ssize_t)sizeof(got))
        memcpy(keys[n++], got.key, 32);
    close(fds[0]);
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    st = open_store(STORE_OPEN_CREATE);        /* runs recovery */
    for (int i = 0; i < n; i++)
        missing += !has(STORE_USERS, keys[i], strlen(keys[i]), "ack");
    free(keys);
    ck_assert_int_ge(n, 300);
    ck_assert_msg(missing == 0, "%d of %d acknowledged commits lost", missing, n);
}
END_TEST

/* ---- a writer killed mid-transaction, and failchk ----------------------------- */

struct hold_arg {
    int fd;                  /* pipe to the parent */
};

/* In the child: write-lock "locked" and tell the parent, then wait to die. */
static int hold_lock_fn(struct store *s, struct store_txn *t, void *arg)
{
    struct hold_arg *h = arg;
    char c = 'L';

    if (store_put(s, t, STORE_ORGS, "locked", 6, "child", 5) != 0)
        _exit(3);
    if (write(h->fd, &c, 1) != 1)
        _exit(4);
    for (;;)
        pause();
    return 0;
}

struct probe {
    int done;                /* atomic: the write returned */
    int rc;
};

static int probe_fn(struct store *s, struct store_txn *t, void *arg)
{
    (void)arg;
    return store_put(s, t, STORE_ORGS, "locked", 6, "probe", 5);
}

static void *probe_thread(void *p)
{
    struct probe *pr = p;

    pr->rc = store_transact(st, probe_fn, NULL);
    __atomic_store_n(&pr->done, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

START_TEST(failchk_releases_locks_of_killed_writer)
{
    struct probe pr = { 0, 1 };
    struct am_error err;
    pthread_t tid;
    int fds[2], status = 0, i, rc, done;
    pid_t pid;
    char c = 0;

    ck_assert_int_eq(put_s(NULL, STORE_ORGS, "locked", "before"), 0);
    ck_assert_int_eq(pipe(fds), 0);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        struct store_options o = opts();
        struct store *s = NULL;
        struct hold_arg h = { fds[1] };

        close(fds[0]);
        if (store_open(&s, &o, 0, NULL) != 0)
            _exit(2);
        store_transact(s, hold_lock_fn, &h);
        _exit(5);
    }
    close(fds[1]);
    ck_assert_msg(read(fds[0], &c, 1) == 1 && c == 'L', "child never took the lock");
    close(fds[0]);
    ck_assert_int_eq(kill(pid, SIGKILL), 0);
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);    /* reaped: failchk sees it dead */
    ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

    /* The dead child's lock still blocks a writer... */
    ck_assert_int_eq(pthread_create(&tid, NULL, probe_thread, &pr), 0);
    sleep_ms(300);
    ck_assert_msg(!__atomic_load_n(&pr.done, __ATOMIC_SEQ_CST),
                  "write went through a dead process's lock (rc %d)", pr.rc);

    /* ...until failchk aborts its transaction. */
    error_clear(&err);
    rc = store_failchk(st, &err);
    for (i = 0; i < 10000 && !__atomic_load_n(&pr.done, __ATOMIC_SEQ_CST); i++)
        sleep_ms(1);
    done = __atomic_load_n(&pr.done, __ATOMIC_SEQ_CST);
    if (done)
        pthread_join(tid, NULL);
    else
        pthread_detach(tid);    /* stuck on the dead lock; the test fails below */
    ck_assert_msg(rc == 0, "failchk returned %d (%s) although the dead writer's lock %s "
                  "released: the supervisor would recover the whole environment", rc,
                  err.message, done ? "was" : "was NOT");
    ck_assert_msg(done, "writer still blocked after failchk");
    ck_assert_int_eq(pr.rc, 0);
    ck_assert(has(STORE_ORGS, "locked", 6, "probe"));

    /* The parent itself can write the key, and the store is healthy. */
    ck_assert_int_eq(put_s(NULL, STORE_ORGS, "locked", "parent"), 0);
    ck_assert(has(STORE_ORGS, "locked", 6, "parent"));
    ck_assert_int_eq(store_ping(st), 0);
    ck_assert_int_eq(store_failchk(st, &err), 0);   /* idempotent */
}
END_TEST

START_TEST(failchk_after_idle_writer_killed_returns_zero)
{
    /* The same kill, but between transactions: the child's handles have
     * logged writes, it holds no transaction. */
    struct am_error err;
    int fds[2], status = 0;
    pid_t pid;
    char c = 0;

    ck_assert_int_eq(pipe(fds), 0);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        struct store_options o = opts();
        struct store *s = NULL;

        close(fds[0]);
        if (store_open(&s, &o, 0, NULL) != 0 ||
            store_put(s, NULL, STORE_ORGS, "idle", 4, "child", 5) != 0 ||
            write(fds[1], "I", 1) != 1)
            _exit(2);
        for (;;)
            pause();
    }
    close(fds[1]);
    ck_assert_msg(read(fds[0], &c, 1) == 1 && c == 'I', "child never wrote");
    close(fds[0]);
    ck_assert_int_eq(kill(pid, SIGKILL), 0);
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    error_clear(&err);
    ck_assert_msg(store_failchk(st, &err) == 0, "failchk: %s", err.message);
    ck_assert(has(STORE_ORGS, "idle", 4, "child"));
    ck_assert_int_eq(put_s(NULL, STORE_ORGS, "idle", "parent"), 0);
}
END_TEST

START_TEST(failchk_with_no_dead_process_is_harmless)
{
    struct am_error err;

    ck_assert_int_eq(put_s(NULL, STORE_ORGS, "k", "v"), 0);
    error_clear(&err);
    ck_assert_int_eq(store_failchk(st, &err), 0);
    ck_assert(has(STORE_ORGS, "k", 1, "v"));
    ck_assert_int_eq(put_s(NULL, STORE_ORGS, "k", "w"), 0);
}
END_TEST

/* ---- the store never logs ------------------------------------------------------ */

/* Send fds 1 and 2 to a temporary file until capture_end, which returns how
 * many bytes were written there and copies the start into buf. */
struct capture {
    int saved[2];
    FILE *f;
};

static void capture_begin(struct capture *c)
{
    fflush(stdout);
    fflush(stderr);
    c->f = tmpfile();
    ck_assert_ptr_nonnull(c->f);
    c->saved[0] = dup(1);
    c->saved[1] = dup(2);
    ck_assert(c->saved[0] >= 0 && c->saved[1] >= 0);
    ck_assert_int_ge(dup2(fileno(c->f), 1), 0);
    ck_assert_int_ge(dup2(fileno(c->f), 2), 0);
}

static long capture_end(struct capture *c, char *buf, size_t cap)
{
    long n;
    size_t got;

    fflush(stdout);
    fflush(stderr);
    dup2(c->saved[0], 1);
    dup2(c->saved[1], 2);
    close(c->saved[0]);
    close(c->saved[1]);
    n = ftell(c->f);
    rewind(c->f);
    got = fread(buf, 1, cap - 1, c->f);
    buf[got] = '\0';
    fclose(c->f);
    return n;
}

START_TEST(store_prints_nothing_on_failure_or_failchk)
{
    /* store.h: "It never logs: errors come back as AM_* codes with a
     * message in struct am_error". Berkeley DB writes to stderr/stdout
     * unless the environment is given an errcall/msgcall. */
    struct store_options o = { "/nonexistent/am-check-store/none", 8, 1, 64, 0, NULL };
    struct store *s = NULL;
    struct am_error err;
    struct capture cap;
    char out[512];
    long n;
    int fds[2], status;
    pid_t pid;
    char c;

    capture_begin(&cap);
    error_clear(&err);
    int rc = store_open(&s, &o, STORE_OPEN_CREATE, &err);
    n = capture_end(&cap, out, sizeof out);
    ck_assert_int_eq(rc, AM_EIO);
    ck_assert_msg(n == 0, "store_open printed %ld bytes: %s", n, out);

    /* failchk after a writer died mid-transaction */
    ck_assert_int_eq(pipe(fds), 0);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        struct store_options co = opts();
        struct store *cs = NULL;
        struct hold_arg h = { fds[1] };

        close(fds[0]);
        if (store_open(&cs, &co, 0, NULL) != 0)
            _exit(2);
        store_transact(cs, hold_lock_fn, &h);
        _exit(5);
    }
    close(fds[1]);
    ck_assert(read(fds[0], &c, 1) == 1);
    close(fds[0]);
    kill(pid, SIGKILL);
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    capture_begin(&cap);
    (void)store_failchk(st, &err);
    n = capture_end(&cap, out, sizeof out);
    ck_assert_msg(n == 0, "store_failchk printed %ld bytes: %s", n, out);
}
END_TEST

/* ---- runner ---------------------------------------------------------------------- */

/* ---- replication: two sites of a group in this process -------------------------- */

/* A free TCP port on 127.0.0.1 (bound then closed). */
static int free_port(void)
{
    struct sockaddr_in a;
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;

    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
              getsockname(fd, (struct sockaddr *)&a, &len) == 0);
    port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* Site i (0 or 1) of a two-site group, its environment under base. */
static struct store *rep_site(int i, struct store_rep_options *ro, const int ports[2],
                              char *dir, size_t cap)
{
    struct store_options o = opts();
    struct store *s = NULL;
    struct am_error err;

    snprintf(dir, cap, "%s/rep%d-XXXXXX", base, i);
    ck_assert_ptr_nonnull(mkdtemp(dir));
    memset(ro, 0, sizeof(*ro));
    ro->nsites = 2;
    ro->sites[0].host = "127.0.0.1";
    ro->sites[0].port = ports[i];
    ro->sites[1].host = "127.0.0.1";
    ro->sites[1].port = ports[1 - i];
    ro->priority = i == 0 ? 100 : 10;
    ro->ack_policy = STORE_ACK_ALL;
    ro->ack_timeout_ms = 2000;
    ro->election_timeout_ms = 2000;
    o.home = dir;
    o.rep = ro;
    error_clear(&err);
    ck_assert_msg(store_open(&s, &o, STORE_OPEN_CREATE | STORE_OPEN_ENV_ONLY, &err) == 0,
                  "%s", err.message);
    ck_assert_msg(store_rep_start(s, &err) == 0, "%s", err.message);
    return s;
}

/* Which of the two sites was elected master (within 10 s). */
static int elected(struct store *site[2])
{
    int tries, i;

    for (tries = 0; tries < 200; tries++) {
        for (i = 0; i < 2; i++)
            if (store_rep_is_master(site[i]))
                return i;
        sleep_ms(50);
    }
    ck_abort_msg("no master elected in 10 s");
    return -1;
}

/* The databases of a new master: locked out (AM_ENOENT) while it takes
 * over, then open. */
static void open_when_ready(struct store *s)
{
    struct am_error err;
    int tries, rc = AM_ENOENT;

    for (tries = 0; tries < 200 && rc == AM_ENOENT; tries++) {
        error_clear(&err);
        if ((rc = store_open_databases(s, &err)) == AM_ENOENT)
            sleep_ms(50);
    }
    ck_assert_msg(rc == 0, "%s", err.message);
}

struct put_arg {
    int db;
    const char *k, *v;
};

static int put_txn(struct store *s, struct store_txn *t, void *arg)
{
    struct put_arg *a = arg;

    return store_put(s, t, a->db, a->k, strlen(a->k), a->v, strlen(a->v));
}

/* A write at the master carries a token; the replica, waiting on it,
 * reads it; a registry write advances the sequence the replica follows; a
 * write at the replica is refused as "no master"; garbage is not a token
 * (issue 16). */
START_TEST(replica_applies_a_commit_it_waits_for)
{
    struct store_rep_options ro[2];
    struct store *site[2];
    struct store_rep_status stat;
    struct put_arg w = { STORE_AGENTS, "acme\0bot" + 0, "{\"status\":\"deployed\"}" };
    struct am_error err;
    char dir[2][128], token[STORE_TOKEN_HEX], *val = NULL;
    int ports[2] = { free_port(), free_port() }, m, r, i, tries;
    uint64_t seq0 = 0, seq1 = 0;

    for (i = 0; i < 2; i++)
        site[i] = rep_site(i, &ro[i], ports, dir[i], sizeof(dir[i]));
    m = elected(site);
    r = 1 - m;
    open_when_ready(site[m]);
    error_clear(&err);
    for (tries = 0; tries < 200 && store_open_databases(site[r], &err) != 0; tries++)
        sleep_ms(50);
    ck_assert_msg(tries < 200, "replica never got the databases: %s", err.message);
    ck_assert_int_eq(store_rep_status(site[r], &stat), 0);
    ck_assert_int_eq(stat.role, STORE_ROLE_REPLICA);
    ck_assert_int_eq(store_change_seq(site[r], STORE_SEQ_REGISTRY, &seq0), 0);

    ck_assert_int_eq(store_transact(site[m], put_txn, &w), 0);
    ck_assert_int_eq(store_token_take(token), 1);
    ck_assert_int_eq(store_token_take(token), 0);         /* taken once */
    ck_assert_int_eq(store_wait_applied(site[r], token, 5000), 0);
    ck_assert_int_eq(store_get(site[r], NULL, STORE_AGENTS, w.k, strlen(w.k), 0, &val, NULL), 0);
    ck_assert_str_eq(val, w.v);
    free(val);
    ck_assert_int_eq(store_change_seq(site[r], STORE_SEQ_REGISTRY, &seq1), 0);
    ck_assert_uint_eq(seq1, seq0 + 1);

    w.k = "other";
    ck_assert_int_eq(store_transact(site[r], put_txn, &w), AM_ENOMASTER);
    ck_assert_int_eq(store_wait_applied(site[r], "zz", 10), AM_EBADREQ);
    for (i = 0; i < 2; i++)
        store_close(site[i]);
}
END_TEST

/* With acknowledgements from all and the replica gone, the master's
 * commit is not confirmed: AM_ENOTACKED, never a silent success. */
START_TEST(commit_without_acknowledgement_is_not_acknowledged)
{
    struct store_rep_options ro[2];
    struct store *site[2];
    struct put_arg w = { STORE_ORGS, "acme", "{}" };
    char dir[2][128];
    int ports[2] = { free_port(), free_port() }, m, i;

    for (i = 0; i < 2; i++)
        site[i] = rep_site(i, &ro[i], ports, dir[i], sizeof(dir[i]));
    m = elected(site);
    open_when_ready(site[m]);
    ck_assert_int_eq(store_transact(site[m], put_txn, &w), 0);
    store_close(site[1 - m]);
    sleep_ms(200);
    ck_assert_int_eq(store_transact(site[m], put_txn, &w), AM_ENOTACKED);
    store_close(site[m]);
}
END_TEST

static Suite *store_suite(void)
{
    Suite *s = suite_create("store");
    TCase *kv = tcase_create("kv");
    TCase *scan = tcase_create("scan");
    TCase *txn = tcase_create("txn");
    TCase *fault = tcase_create("fault");
    TCase *crash = tcase_create("crash");
    TCase *rep = tcase_create("replication");

    tcase_add_checked_fixture(kv, setup, teardown);
    tcase_add_loop_test(kv, put_get_del_round_trip, 0, STORE_DB_COUNT);
    tcase_add_test(kv, missing_key_is_enoent);
    tcase_add_test(kv, databases_are_separate);
    tcase_add_test(kv, put_overwrites_and_binary_values_round_trip);
    tcase_add_test(kv, ping_and_checkpoint_succeed_on_healthy_store);
    tcase_add_test(kv, checkpoint_keeps_every_log_during_a_hot_backup);
    tcase_add_test(kv, open_of_missing_home_is_eio_with_message);
    tcase_set_timeout(kv, 60);
    suite_add_tcase(s, kv);

    tcase_add_checked_fixture(scan, setup, teardown);
    tcase_add_test(scan, scan_visits_exactly_the_prefix_in_key_order);
    tcase_add_test(scan, scan_stops_when_fn_returns_one);
    tcase_add_test(scan, scan_returns_fn_error_and_stops);
    tcase_add_loop_test(scan, scan_prefix_table, 0, NCASES(scan_cases));
    tcase_add_test(scan, scan_of_empty_database_visits_nothing);
    tcase_add_test(scan, scan_in_transaction_sees_its_own_writes);
    tcase_set_timeout(scan, 60);
    suite_add_tcase(s, scan);

    tcase_add_checked_fixture(txn, setup, teardown);
    tcase_add_test(txn, transact_commits_when_fn_returns_zero);
    tcase_add_loop_test(txn, transact_aborts_when_fn_fails, 0, NCASES(abort_codes));
    tcase_add_test(txn, transact_reruns_after_deadlock_and_keeps_only_last_attempt);
    tcase_add_test(txn, transact_gives_up_after_bounded_deadlock_retries);
    tcase_add_test(txn, opposite_order_rmw_deadlocks_are_retried_and_lose_nothing);
    tcase_set_timeout(txn, 120);
    suite_add_tcase(s, txn);

    tcase_add_checked_fixture(fault, setup, teardown);
    tcase_add_loop_test(fault, nth_write_fault_fails_with_eio_and_leaves_nothing, 1, 5);
    tcase_add_test(fault, write_fault_fires_once_then_disarms);
    tcase_set_timeout(fault, 60);
    suite_add_tcase(s, fault);

    tcase_add_checked_fixture(crash, setup, teardown);
    tcase_add_test(crash, data_survives_close_and_reopen);
    tcase_add_test(crash, committed_write_survives_sigkill_and_recovery);
    tcase_add_test(crash, group_commit_acknowledges_only_what_is_on_disk);
    tcase_add_test(crash, failchk_releases_locks_of_killed_writer);
    tcase_add_test(crash, failchk_after_idle_writer_killed_returns_zero);
    tcase_add_test(crash, failchk_with_no_dead_process_is_harmless);
    tcase_add_test(crash, store_prints_nothing_on_failure_or_failchk);
    tcase_set_timeout(crash, 60);
    suite_add_tcase(s, crash);

    tcase_add_test(rep, replica_applies_a_commit_it_waits_for);
    tcase_add_test(rep, commit_without_acknowledgement_is_not_acknowledged);
    tcase_set_timeout(rep, 60);
    suite_add_tcase(s, rep);
    return s;
}

int main(void)
{
    SRunner *sr;
    int failed;

    /* A failed check in a forked test skips its teardown: every home lives
     * under one directory that is removed here. */
    util_strlcpy(base, "/tmp/am-check-store-XXXXXX", sizeof base);
    if (mkdtemp(base) == NULL) {
        perror("mkdtemp");
        return EXIT_FAILURE;
    }
    sr = srunner_create(store_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
