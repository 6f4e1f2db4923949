/*
 * check_quota.c - unit tests for the per-org daily request counters in
 * anonymous shared memory (quota.c).
 *
 * What a caller sees: taking up to the limit and no further, the count a
 * table starts from (the caller's load function, called once, never for an
 * org that has a counter), days moving on and being adopted, giving runs
 * back, orgs kept apart, the exact limit under contention from threads of
 * several forked processes, a full table whose slots come free again
 * when the day moves on, and forgetting every count (quota_invalidate: the
 * next take loads it again, takers racing it in several processes count on
 * the loaded count, runs held across it settle and are given back without
 * touching the reloaded count).
 *
 * The module's source is included (lighttpd-style) so the crash and race
 * tests can reach its static internals: a child takes the claimers' mutex,
 * makes a slot's seq odd and scribbles on it exactly as a claim would, then
 * dies holding the mutex; the parent must still take, within a bounded
 * time, and find the slot repaired. One race test holds a claimant at a
 * chosen point (through its load function and an odd seq) so that a take
 * lands between its reading a slot and its re-keying it; another leaves
 * that race to the scheduler. The tag test sets one slot's tag to the
 * value 65535 re-keys would leave. The other tests go through the public
 * interface and only look inside to pick org names with a given home slot
 * or to check that each org has exactly one slot.
 *
 * Child processes report through their exit status (never ck_assert, which
 * belongs to the test process) and die with the test process
 * (PR_SET_PDEATHSIG), so a failed assertion cannot leave one spinning.
 */
#include <check.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include "../../src/state/quota.c"

/* Days since the epoch. DAY is even: see a_new_tag_never_moves_the_day. */
#define DAY 20000

/* ---- helpers ---------------------------------------------------------------- */

/* A load function with a scripted answer that records how it was called. */
struct loader {
    int64_t value;              /* the durable count it reports */
    int rc;                     /* what it returns (0 or an AM_* code) */
    int calls;                  /* how many times it was called */
    int last_day;
    char last_org[QUOTA_ORG_MAX];
};

static int load_fake(const char *org, int day, int64_t *count, void *arg)
{
    struct loader *l = arg;

    l->calls++;
    l->last_day = day;
    util_strlcpy(l->last_org, org, sizeof l->last_org);
    *count = l->rc == 0 ? l->value : 0;
    return l->rc;
}

static struct quota *must_create(int orgs)
{
    struct quota *q = NULL;
    struct am_error err;

    error_clear(&err);
    ck_assert_msg(quota_create(&q, orgs, 64, &err) == 0, "quota_create(%d): %s", orgs, err.message);
    ck_assert_ptr_nonnull(q);
    return q;
}

/* quota_take on `day`; *day_out (if not NULL) gets the day it counted on. */
static int take(struct quota *q, const char *org, int day, int64_t limit, struct loader *l,
                int64_t *count, int *day_out)
{
    int d = day;
    int rc = quota_take(q, org, &d, limit, load_fake, l, count);

    if (day_out != NULL)
        *day_out = d;
    return rc;
}

/* quota_count, which must succeed. */
static int64_t count_of(struct quota *q, const char *org, int day, struct loader *l)
{
    int64_t c = -1;
    int rc = quota_count(q, org, day, load_fake, l, &c);

    ck_assert_msg(rc == 0, "quota_count(%s, %d) = %d", org, day, rc);
    return c;
}

/* ---- looking inside (names, slots) ------------------------------------------ */

static uint32_t home_of(const struct quota *q, const char *org)
{
    return org_hash(org) & q->mask;
}

/* Writes into buf the first name "<prefix><n>" whose home slot is `slot`. */
static void name_with_home(const struct quota *q, const char *prefix, uint32_t slot, char *buf,
                           size_t cap)
{
    for (int n = 0; n < 1000000; n++) {
        util_snprintf(buf, cap, "%s%d", prefix, n);
        if (home_of(q, buf) == slot)
            return;
    }
    ck_abort_msg("no name %s<n> with home slot %u", prefix, slot);
}

/* How many settled slots hold org; *at (if not NULL) gets the last one. */
static int slots_of(const struct quota *q, const char *org, uint32_t *at)
{
    int n = 0;

    for (uint32_t i = 0; i <= q->mask; i++) {
        const struct quota_entry *e = &q->tab[i];

        if (e->seq != 0 && (e->seq & 1) == 0 && strncmp(e->org, org, sizeof(e->org)) == 0) {
            n++;
            if (at != NULL)
                *at = i;
        }
    }
    return n;
}

static int odd_slots(const struct quota *q)
{
    int n = 0;

    for (uint32_t i = 0; i <= q->mask; i++)
        n += (int)(__atomic_load_n(&q->tab[i].seq, __ATOMIC_ACQUIRE) & 1u);
    return n;
}

static uint32_t used_slots(const struct quota *q)
{
    uint32_t n = 0;

    for (uint32_t i = 0; i <= q->mask; i++)
        n += q->tab[i].seq != 0;
    return n;
}

/* The mutex is free and consistent (not left owner-dead). */
static int mutex_usable(struct quota *q)
{
    if (pthread_mutex_trylock(&q->hdr->lock.mutex) != 0)
        return 0;
    pthread_mutex_unlock(&q->hdr->lock.mutex);
    return 1;
}

/* ---- processes ----------------------------------------------------------------- */

/* Wait for a child; 1 if it exited with status 0. */
static int child_ok(pid_t pid)
{
    int st = 0;

    if (waitpid(pid, &st, 0) != pid)
        return 0;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* In a child: die with the test process. */
static void child_dies_with_parent(pid_t parent)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(1);
}

static void *shared_page(size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

    ck_assert(p != MAP_FAILED);
    memset(p, 0, bytes);
    return p;
}

/* ---- counting ------------------------------------------------------------------ */

START_TEST(take_counts_up_to_the_limit)
{
    struct quota *q = must_create(4);
    struct loader l = { 0 };
    int64_t count;
    int day;

    for (int i = 1; i <= 5; i++) {
        ck_assert_int_eq(take(q, "acme", DAY, 5, &l, &count, &day), 0);
        ck_assert_int_eq(count, i);
        ck_assert_int_eq(day, DAY);
    }
    count = -1;
    ck_assert_int_eq(take(q, "acme", DAY, 5, &l, &count, &day), AM_ERATELIMIT);
    ck_assert_int_eq(count, 5);
    ck_assert_int_eq(day, DAY);
    ck_assert_int_eq(take(q, "acme", DAY, 5, &l, &count, NULL), AM_ERATELIMIT);
    ck_assert_int_eq(count_of(q, "acme", DAY, &l), 5);

    /* The limit is the caller's (a plan change takes effect at once). */
    ck_assert_int_eq(take(q, "acme", DAY, 6, &l, &count, NULL), 0);
    ck_assert_int_eq(count, 6);
    ck_assert_int_eq(take(q, "acme", DAY, 4, &l, &count, NULL), AM_ERATELIMIT);
    ck_assert_int_eq(count, 6);

    /* A limit of 0 accepts nothing. */
    ck_assert_int_eq(take(q, "zero", DAY, 0, &l, &count, NULL), AM_ERATELIMIT);
    ck_assert_int_eq(count, 0);
    ck_assert_int_eq(count_of(q, "zero", DAY, &l), 0);
    CHECK_INVARIANTS(quota_check_invariants(q));
    quota_close(q);
    quota_close(NULL);
}
END_TEST

START_TEST(load_is_called_once_and_its_count_is_respected)
{
    struct quota *q = must_create(4);
    struct loader l = { .value = 3 }, bad = { .rc = AM_EUNAVAILABLE }, good = { .value = 0 };
    int64_t count;

    ck_assert_int_eq(take(q, "acme", DAY, 5, &l, &count, NULL), 0);
    ck_assert_int_eq(count, 4);
    ck_assert_int_eq(l.calls, 1);
    ck_assert_int_eq(l.last_day, DAY);
    ck_assert_str_eq(l.last_org, "acme");
    ck_assert_int_eq(take(q, "acme", DAY, 5, &l, &count, NULL), 0);
    ck_assert_int_eq(count, 5);
    ck_assert_int_eq(take(q, "acme", DAY, 5, &l, &count, NULL), AM_ERATELIMIT);
    ck_assert_int_eq(count, 5);
    ck_assert_int_eq(count_of(q, "acme", DAY, &l), 5);
    ck_assert_int_eq(l.calls, 1);

    /* quota_count of an org without a counter loads it, once. */
    l.calls = 0;
    l.value = 2;
    ck_assert_int_eq(count_of(q, "counted", DAY, &l), 2);
    ck_assert_int_eq(take(q, "counted", DAY, 5, &l, &count, NULL), 0);
    ck_assert_int_eq(count, 3);
    ck_assert_int_eq(l.calls, 1);

    /* A durable count already past the limit refuses the first run. */
    l.value = 9;
    ck_assert_int_eq(take(q, "over", DAY, 5, &l, &count, NULL), AM_ERATELIMIT);
    ck_assert_int_eq(count, 9);
    /* A negative one counts as 0. */
    l.value = -4;
    ck_assert_int_eq(take(q, "negative", DAY, 5, &l, &count, NULL), 0);
    ck_assert_int_eq(count, 1);

    /* The load function's error is returned and creates no counter. */
    uint32_t used = q->hdr->used;
    count = -1;
    ck_assert_int_eq(take(q, "beta", DAY, 5, &bad, &count, NULL), AM_EUNAVAILABLE);
    ck_assert_int_eq(count, 0);
    ck_assert_int_eq(bad.calls, 1);
    bad.rc = AM_EIO;
    ck_assert_int_eq(quota_count(q, "beta", DAY, load_fake, &bad, &count), AM_EIO);
    ck_assert_int_eq(slots_of(q, "beta", NULL), 0);
    ck_assert_uint_eq(q->hdr->used, used);
    ck_assert_int_eq(take(q, "beta", DAY, 5, &good, &count, NULL), 0);
    ck_assert_int_eq(count, 1);
    ck_assert_int_eq(good.calls, 1);
    ck_assert_int_eq(slots_of(q, "beta", NULL), 1);
    CHECK_INVARIANTS(quota_check_invariants(q));
    quota_close(q);
}
END_TEST

START_TEST(a_new_day_starts_from_zero)
{
    struct quota *q = must_create(4);
    struct loader l = { 0 };
    int64_t count;
    int day;

    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(take(q, "acme", DAY, 3, &l, &count, NULL), 0);
    ck_assert_int_eq(take(q, "acme", DAY, 3, &l, &count, NULL), AM_ERATELIMIT);

    ck_assert_int_eq(take(q, "acme", DAY + 1, 3, &l, &count, &day), 0);
    ck_assert_int_eq(count, 1);
    ck_assert_int_eq(day, DAY + 1);
    ck_assert_int_eq(take(q, "acme", DAY + 1, 3, &l, &count, &day), 0);
    ck_assert_int_eq(count, 2);
    ck_assert_int_eq(day, DAY + 1);
    ck_assert_int_eq(count_of(q, "acme", DAY + 1, &l), 2);
    ck_assert_int_eq(l.calls, 1);   /* the counter moved on; nothing reloaded */

    /* Day DAY's runs are no longer in the table (and the loader, the
     * durable record, says 0): what quota_count reports for DAY must not
     * be DAY + 1's count. */
    count = count_of(q, "acme", DAY, &l);
    ck_assert_msg(count == 0,
                  "quota_count(acme, DAY) = %lld: day DAY+1's count reported for day DAY",
                  (long long)count);
    CHECK_INVARIANTS(quota_check_invariants(q));
    quota_close(q);
}
END_TEST

START_TEST(a_later_day_is_adopted)
{
    struct quota *q = must_create(4);
    struct loader l = { 0 };
    int64_t count;
    int day;

    ck_assert_int_eq(take(q, "acme", DAY + 1, 5, &l, &count, &day), 0);
    ck_assert_int_eq(count, 1);
    ck_assert_int_eq(day, DAY + 1);
    ck_assert_int_eq(l.last_day, DAY + 1);

    /* A process whose clock has not passed midnight yet. */
    ck_assert_int_eq(take(q, "acme", DAY, 5, &l, &count, &day), 0);
    ck_assert_int_eq(day, DAY + 1);
    ck_assert_int_eq(count, 2);
    ck_assert_int_eq(count_of(q, "acme", DAY + 1, &l), 2);
    ck_assert_int_eq(l.calls, 1);

    /* Refused on the adopted day too, and *day says which. */
    ck_assert_int_eq(take(q, "acme", DAY, 2, &l, &count, &day), AM_ERATELIMIT);
    ck_assert_int_eq(count, 2);
    ck_assert_int_eq(day, DAY + 1);
    CHECK_INVARIANTS(quota_check_invariants(q));
    quota_close(q);
}
END_TEST

START_TEST(give_back)
{
    struct quota *q = must_create(4);
    struct loader l = { 0 };
    int64_t count;

    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(take(q, "acme", DAY, 3, &l, &count, NULL), 0);
    ck_assert_int_eq(take(q, "acme", DAY, 3, &l, &count, NULL), AM_ERATELIMIT);
    quota_give_back(q, "acme", DAY);
    ck_assert_int_eq(count_of(q, "acme", DAY, &l), 2);
    /* The run given back can be taken again. */
    ck_assert_int_eq(take(q, "acme", DAY, 3, &l, &count, NULL), 0);
    ck_assert_int_eq(count, 3);

    /* Another day's give-back does nothing. */
    quota_give_back(q, "acme", DAY - 1);
    quota_give_back(q, "acme", DAY + 1);
    ck_assert_int_eq(count_of(q, "acme", DAY, &l), 3);

    /* Never below 0. */
    for (int i = 0; i < 5; i++)
        quota_give_back(q, "acme", DAY);
    ck_assert_int_eq(count_of(q, "acme", DAY, &l), 0);
    ck_assert_int_eq(take(q, "acme", DAY, 1, &l, &count, NULL), 0);
    ck_assert_int_eq(count, 1);
    ck_assert_int_eq(take(q, "acme", DAY, 1, &l, &count, NULL), AM_ERATELIMIT);

    /* Once the counter is on the next day, yesterday's run given back
     * leaves today's count alone. */
    ck_assert_int_eq(take(q, "acme", DAY + 1, 3, &l, &count, NULL), 0);
    quota_give_back(q, "acme", DAY);
    ck_assert_int_eq(count_of(q, "acme", DAY + 1, &l), 1);

    /* An org without a counter: nothing happens, no counter is made. */
    uint32_t used = q->hdr->used;
    quota_give_back(q, "ghost", DAY);
    ck_assert_uint_eq(q->hdr->used, used);
    ck_assert_int_eq(slots_of(q, "ghost", NULL), 0);
    l.calls = 0;
    l.value = 0;
    ck_assert_int_eq(count_of(q, "ghost", DAY, &l), 0);
    ck_assert_int_eq(l.calls, 1);
    CHECK_INVARIANTS(quota_check_invariants(q));
    quota_close(q);
}
END_TEST

START_TEST(orgs_are_separate)
{
    struct quota *q = must_create(4);
    struct loader l = { 0 };
    int64_t count;
    char org[32];

    ck_assert_int_eq(take(q, "alpha", DAY, 2, &l, &count, NULL), 0);
    ck_assert_int_eq(take(q, "beta", DAY, 3, &l, &count, NULL), 0);
    ck_assert_int_eq(take(q, "alpha", DAY, 2, &l, &count, NULL), 0);
    ck_assert_int_eq(take(q, "alpha", DAY, 2, &l, &count, NULL), AM_ERATELIMIT);
    ck_assert_int_eq(take(q, "beta", DAY, 3, &l, &count, NULL), 0);
    ck_assert_int_eq(count, 2);
    ck_assert_int_eq(take(q, "beta", DAY, 3, &l, &count, NULL), 0);
    ck_assert_int_eq(count, 3);
    ck_assert_int_eq(take(q, "beta", DAY, 3, &l, &count, NULL), AM_ERATELIMIT);
    quota_give_back(q, "alpha", DAY);
    ck_assert_int_eq(count_of(q, "alpha", DAY, &l), 1);
    ck_assert_int_eq(count_of(q, "beta", DAY, &l), 3);
    CHECK_INVARIANTS(quota_check_invariants(q));
    quota_close(q);

    /* 40 orgs in a table for 100: each counted on its own, loaded once. */
    q = must_create(100);
    l.calls = 0;
    for (int round = 0; round < 7; round++)
        for (int i = 0; i < 40; i++) {
            util_snprintf(org, sizeof org, "org-%02d", i);
            if (round < i % 7 + 1) {
                ck_assert_int_eq(take(q, org, DAY, 1000, &l, &count, NULL), 0);
                ck_assert_int_eq(count, round + 1);
            }
        }
    ck_assert_int_eq(l.calls, 40);
    for (int i = 0; i < 40; i++) {
        util_snprintf(org, sizeof org, "org-%02d", i);
        ck_assert_int_eq(count_of(q, org, DAY, &l), i % 7 + 1);
        ck_assert_int_eq(slots_of(q, org, NULL), 1);
    }
    ck_assert_int_eq(l.calls, 40);
    ck_assert_uint_eq(q->hdr->used, 40);
    CHECK_INVARIANTS(quota_check_invariants(q));
    quota_close(q);
}
END_TEST

/* ---- concurrency ------------------------------------------------------------- */

#define RACE_CHILDREN 4
#define RACE_THREADS 8
#define RACE_ATTEMPTS 1000
#define RACE_ORGS_MAX 20

struct race {
    int ready;                            /* threads at the start (atomic) */
    int load_calls;                       /* atomic */
    int64_t taken[RACE_ORGS_MAX];         /* successes per org (atomic) */
    int64_t child_taken[RACE_CHILDREN];   /* successes per child */
};

struct race_thread_arg {
    struct quota *q;
    struct race *r;
    int child, thread, norgs;
    int64_t limit;
    int64_t mine;                         /* this thread's successes */
    int anomalies;
};

static int load_race(const char *org, int day, int64_t *count, void *arg)
{
    struct race *r = arg;
    struct timespec ts = { 0, 1000000 };

    (void)org;
    (void)day;
    __atomic_fetch_add(&r->load_calls, 1, __ATOMIC_RELAXED);
    nanosleep(&ts, NULL);       /* a database read: claimers overlap */
    *count = 0;
    return 0;
}

static void *race_thread(void *p)
{
    struct race_thread_arg *a = p;
    char org[16];

    __atomic_fetch_add(&a->r->ready, 1, __ATOMIC_ACQ_REL);
    while (__atomic_load_n(&a->r->ready, __ATOMIC_ACQUIRE) < RACE_CHILDREN * RACE_THREADS)
        sched_yield();
    for (int i = 0; i < RACE_ATTEMPTS; i++) {
        int o = (i + a->thread * 7 + a->child * 3) % a->norgs;
        int day = DAY;
        int64_t c = -1;
        int rc;

        util_snprintf(org, sizeof org, "org-%02d", o);
        rc = quota_take(a->q, org, &day, a->limit, load_race, a->r, &c);
        if (rc == 0) {
            if (c < 1 || c > a->limit || day != DAY)
                a->anomalies++;
            a->mine++;
            __atomic_fetch_add(&a->r->taken[o], 1, __ATOMIC_RELAXED);
        } else if (rc != AM_ERATELIMIT || c != a->limit) {
            a->anomalies++;     /* a refusal below the limit, or an error */
        }
    }
    return NULL;
}

static void race_child(struct quota *q, struct race *r, int child, int norgs, int64_t limit,
                       pid_t parent)
{
    pthread_t t[RACE_THREADS];
    struct race_thread_arg a[RACE_THREADS];
    int64_t sum = 0;
    int anomalies = 0;

    child_dies_with_parent(parent);
    for (int i = 0; i < RACE_THREADS; i++) {
        a[i] = (struct race_thread_arg){ q, r, child, i, norgs, limit, 0, 0 };
        if (pthread_create(&t[i], NULL, race_thread, &a[i]) != 0)
            _exit(3);
    }
    for (int i = 0; i < RACE_THREADS; i++) {
        pthread_join(t[i], NULL);
        sum += a[i].mine;
        anomalies += a[i].anomalies;
    }
    r->child_taken[child] = sum;
    _exit(anomalies == 0 ? 0 : 2);
}

/* RACE_CHILDREN processes of RACE_THREADS threads each take org-00..
 * org-<norgs-1> in turn; exactly `limit` runs of each are accepted. */
static void run_race(int norgs, int64_t limit)
{
    struct race *r = shared_page(sizeof(struct race));
    struct quota *q = must_create(norgs);
    struct loader l = { 0 };
    pid_t parent = getpid(), pid[RACE_CHILDREN];
    int64_t total = 0;
    char org[16];

    for (int c = 0; c < RACE_CHILDREN; c++) {
        pid[c] = fork();
        ck_assert_int_ge(pid[c], 0);
        if (pid[c] == 0)
            race_child(q, r, c, norgs, limit, parent);
    }
    for (int c = 0; c < RACE_CHILDREN; c++)
        ck_assert_msg(child_ok(pid[c]), "child %d saw a wrong count or an error", c);
    for (int c = 0; c < RACE_CHILDREN; c++)
        total += r->child_taken[c];
    ck_assert_int_eq(total, limit * norgs);
    for (int o = 0; o < norgs; o++) {
        util_snprintf(org, sizeof org, "org-%02d", o);
        ck_assert_msg(r->taken[o] == limit, "%s: %lld runs accepted, limit %lld", org,
                      (long long)r->taken[o], (long long)limit);
        ck_assert_int_eq(count_of(q, org, DAY, &l), limit);
        ck_assert_int_eq(slots_of(q, org, NULL), 1);
    }
    ck_assert_int_eq(l.calls, 0);
    ck_assert_int_ge(r->load_calls, norgs);
    ck_assert_uint_eq(q->hdr->used, (uint32_t)norgs);
    ck_assert_int_eq(odd_slots(q), 0);
    CHECK_INVARIANTS(quota_check_invariants(q));
    quota_close(q);
    munmap(r, sizeof(struct race));
}

START_TEST(exact_under_concurrency_across_processes)
{
    /* 32 threads in 4 processes, 32000 attempts on one org. */
    run_race(1, 1000);
}
END_TEST

START_TEST(exact_under_concurrency_with_racing_claims)
{
    /* The same on 20 orgs in turn: their first takes race to claim. */
    run_race(RACE_ORGS_MAX, 100);
}
END_TEST

/* ---- a full table, and a new day --------------------------------------------- */

/* Claims org-0, org-1, ... on DAY until one is refused; returns how many
 * were accepted. */
static int fill_table(struct quota *q, struct loader *l)
{
    char org[32];
    int64_t count;
    int n, rc;

    for (n = 0; n <= (int)q->mask + 1; n++) {
        util_snprintf(org, sizeof org, "org-%d", n);
        if ((rc = take(q, org, DAY, 10, l, &count, NULL)) != 0) {
            ck_assert_int_eq(rc, AM_EUNAVAILABLE);
            ck_assert_int_eq(count, 0);
            break;
        }
        ck_assert_int_eq(count, 1);
    }
    return n;
}

START_TEST(table_full_then_stale_slots_are_reused)
{
    struct quota *q = must_create(16);
    struct loader l = { 0 };
    char org[32], fresh[32], owner[QUOTA_ORG_MAX], other[32];
    int64_t count;
    uint32_t s, at;
    int calls;

    ck_assert_uint_eq(q->mask + 1, QUOTA_MIN_SLOTS);
    /* 3/4 of 64 slots may be used. */
    ck_assert_int_eq(fill_table(q, &l), 48);
    ck_assert_int_eq(take(q, "org-48", DAY, 10, &l, &count, NULL), AM_EUNAVAILABLE);
    ck_assert_int_eq(quota_count(q, "org-48", DAY, load_fake, &l, &count), AM_EUNAVAILABLE);
    ck_assert_int_eq(slots_of(q, "org-48", NULL), 0);
    /* The orgs already in still count. */
    calls = l.calls;
    for (int i = 0; i < 48; i++) {
        util_snprintf(org, sizeof org, "org-%d", i);
        ck_assert_int_eq(take(q, org, DAY, 10, &l, &count, NULL), 0);
        ck_assert_int_eq(count, 2);
    }
    ck_assert_int_eq(l.calls, calls);

    /* DAY + 1: a new org whose home slot holds an org of DAY takes that
     * slot. Pick one whose displaced owner finds another slot of DAY on its
     * own probe path (its home, if it is not the taken slot, or the next). */
    for (int n = 0;; n++) {
        ck_assert_int_lt(n, 100000);
        util_snprintf(fresh, sizeof fresh, "fresh-%d", n);
        s = home_of(q, fresh);
        if (q->tab[s].seq == 0)
            continue;
        util_strlcpy(owner, q->tab[s].org, sizeof owner);
        if (home_of(q, owner) != s || q->tab[(s + 1) & q->mask].seq != 0)
            break;
    }
    l.calls = 0;
    l.value = 4;
    ck_assert_int_eq(take(q, fresh, DAY + 1, 10, &l, &count, NULL), 0);
    ck_assert_int_eq(count, 5);
    ck_assert_int_eq(l.calls, 1);
    ck_assert_int_eq(l.last_day, DAY + 1);
    ck_assert_int_eq(slots_of(q, fresh, &at), 1);
    ck_assert_uint_eq(at, s);
    ck_assert_int_eq(slots_of(q, owner, NULL), 0);
    ck_assert_uint_eq(q->hdr->used, 48);

    /* The displaced org comes back on DAY + 1: loaded again, for that day. */
    l.value = 1;
    ck_assert_int_eq(take(q, owner, DAY + 1, 10, &l, &count, NULL), 0);
    ck_assert_int_eq(count, 2);
    ck_assert_int_eq(l.calls, 2);
    ck_assert_str_eq(l.last_org, owner);
    ck_assert_int_eq(l.last_day, DAY + 1);
    ck_assert_int_eq(slots_of(q, owner, NULL), 1);

    /* An org that kept its slot starts DAY + 1 at 1, without a load. */
    for (int i = 0;; i++) {
        util_snprintf(other, sizeof other, "org-%d", i);
        if (strcmp(other, owner) != 0 && slots_of(q, other, NULL) == 1)
            break;
    }
    ck_assert_int_eq(take(q, other, DAY + 1, 10, &l, &count, NULL), 0);
    ck_assert_int_eq(count, 1);
    ck_assert_int_eq(l.calls, 2);
    ck_assert_int_eq(count_of(q, fresh, DAY + 1, &l), 5);
    ck_assert_uint_eq(q->hdr->used, 48);
    CHECK_INVARIANTS(quota_check_invariants(q));
    quota_close(q);
}
END_TEST

/*
 * quota.h: AM_EUNAVAILABLE means "the table is full of orgs that ran
 * today". On DAY + 1 none of the 48 orgs in the table has run, so a new
 * org must get a slot, whatever its home slot is; here its home slot was
 * never used.
 */
START_TEST(a_new_day_is_not_refused_for_a_table_of_yesterdays_orgs)
{
    struct quota *q = must_create(16);
    struct loader l = { 0 };
    char late[32];
    int64_t count;
    int rc;

    ck_assert_int_eq(fill_table(q, &l), 48);
    for (int n = 0;; n++) {
        ck_assert_int_lt(n, 100000);
        util_snprintf(late, sizeof late, "late-%d", n);
        if (q->tab[home_of(q, late)].seq == 0)
            break;
    }
    rc = take(q, late, DAY + 1, 10, &l, &count, NULL);
    ck_assert_msg(rc == 0,
                  "%s refused (%d) on DAY+1 although all 48 orgs in the table are of DAY",
                  late, rc);
    ck_assert_int_eq(count, 1);
    CHECK_INVARIANTS(quota_check_invariants(q));
    quota_close(q);
}
END_TEST

/*
 * A claim re-keys a slot whose day is before the claimant's: its org "has
 * not run today". The slot's org may take its first run of the day between
 * the claimant's reading the slot and its re-keying; that run must not be
 * lost (else the org gets one run more than its limit).
 *
 * The interleaving is made deterministic: the claimant's load function
 * (called between its lock-free probe and its probe under the mutex) makes
 * the slot after the reusable one odd, so the claimant, holding the mutex,
 * waits there having read the reusable slot - as if it were preempted at
 * that point. Meanwhile the parent takes the slot's org's first run of the
 * day, then lets the claimant go on.
 */
struct hook {
    struct quota *q;
    uint32_t slot;      /* made odd by the load function */
    int loaded;         /* set when it was (atomic) */
};

static int load_hook(const char *org, int day, int64_t *count, void *arg)
{
    struct hook *h = arg;
    struct quota_entry *e = &h->q->tab[h->slot];

    (void)org;
    (void)day;
    __atomic_store_n(&e->seq, e->seq + 1u, __ATOMIC_RELEASE);
    __atomic_store_n(&h->loaded, 1, __ATOMIC_RELEASE);
    *count = 0;
    return 0;
}

START_TEST(a_claim_racing_the_first_take_of_a_day_loses_no_run)
{
    struct quota *q = must_create(4);
    struct hook *h = shared_page(sizeof(struct hook));
    struct loader l = { 0 };
    char y[32], z[32];
    const char *x = "x-org";
    pid_t parent = getpid(), pid;
    uint32_t p = home_of(q, x), at;
    int64_t count;
    int day, held = 0;

    name_with_home(q, "y-", p, y, sizeof y);                  /* the claimant */
    name_with_home(q, "z-", (p + 1) & q->mask, z, sizeof z);  /* its next slot */
    ck_assert_int_eq(take(q, x, DAY, 1, &l, &count, NULL), 0);
    ck_assert_int_eq(take(q, z, DAY, 1, &l, &count, NULL), 0);
    ck_assert_int_eq(slots_of(q, x, &at), 1);
    ck_assert_uint_eq(at, p);
    ck_assert_int_eq(slots_of(q, z, &at), 1);
    ck_assert_uint_eq(at, (p + 1) & q->mask);
    ck_assert_uint_eq(q->tab[(p + 2) & q->mask].seq, 0);

    h->q = q;
    h->slot = (p + 1) & q->mask;
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int64_t c = -1;
        int d = DAY + 1, rc;

        child_dies_with_parent(parent);
        rc = quota_take(q, y, &d, 5, load_hook, h, &c);
        _exit(rc == 0 && c == 1 && d == DAY + 1 ? 0 : 2);
    }
    /* The claimant has loaded, holds the mutex, and has had time to read
     * x's slot (day DAY: reusable) and reach the odd slot after it. */
    for (int i = 0; i < 4000 && !__atomic_load_n(&h->loaded, __ATOMIC_ACQUIRE); i++)
        usleep(500);
    ck_assert(__atomic_load_n(&h->loaded, __ATOMIC_ACQUIRE));
    for (int i = 0; i < 4000 && !held; i++) {
        if (pthread_mutex_trylock(&q->hdr->lock.mutex) == 0)
            pthread_mutex_unlock(&q->hdr->lock.mutex);
        else
            held = 1;
        if (!held)
            usleep(500);
    }
    ck_assert(held);
    usleep(50000);

    /* x's first run of DAY + 1. */
    ck_assert_int_eq(take(q, x, DAY + 1, 1, &l, &count, &day), 0);
    ck_assert_int_eq(count, 1);
    ck_assert_int_eq(day, DAY + 1);
    /* let the claimant go on */
    __atomic_store_n(&q->tab[h->slot].seq, q->tab[h->slot].seq + 1u, __ATOMIC_RELEASE);
    ck_assert_msg(child_ok(pid), "the claimant's take failed");
    ck_assert_int_eq(slots_of(q, y, NULL), 1);

    /* x has had its one run of DAY + 1 (not settled yet: the durable record
     * still says 0). */
    l.value = 0;
    count = -1;
    ck_assert_msg(take(q, x, DAY + 1, 1, &l, &count, NULL) == AM_ERATELIMIT,
                  "x's second run of DAY+1 accepted (count %lld) with a limit of 1: "
                  "its first was lost when its slot was re-keyed", (long long)count);
    ck_assert_int_eq(count_of(q, x, DAY + 1, &l), 1);
    CHECK_INVARIANTS(quota_check_invariants(q));
    quota_close(q);
    munmap(h, sizeof(struct hook));
}
END_TEST

/*
 * The same race left to the scheduler: one process takes 8 orgs, limit 1,
 * day after day (each twice: the second must be refused), while another
 * claims 8 new orgs each day, re-keying yesterday's slots, some of them the
 * taker's. The two meet at a barrier at the start of every day. No org may
 * get two runs on one day. A probabilistic test: it cannot catch every
 * broken interleaving on every run.
 */
#define STRESS_DAYS 20000
#define STRESS_ORGS 8

struct stress {
    int arrived[2];     /* days each process has started (atomic) */
    int violations;     /* orgs given two runs on one day */
    int refused;        /* AM_EUNAVAILABLE seen (table full) */
    int errors;         /* anything else unexpected */
};

/* Both processes start day index i together. */
static void stress_barrier(struct stress *st, int me, int i)
{
    __atomic_store_n(&st->arrived[me], i + 1, __ATOMIC_RELEASE);
    while (__atomic_load_n(&st->arrived[!me], __ATOMIC_ACQUIRE) < i + 1)
        ;
}

static int load_zero(const char *org, int day, int64_t *count, void *arg)
{
    (void)org;
    (void)day;
    (void)arg;
    *count = 0;
    return 0;
}

static void stress_child(struct quota *q, struct stress *st, int me, pid_t parent)
{
    char org[48];
    int64_t c;

    child_dies_with_parent(parent);
    for (int i = 0; i < STRESS_DAYS; i++) {
        int day = DAY + 1 + i;

        stress_barrier(st, me, i);
        for (int round = 0; round < (me == 0 ? 2 : 1); round++)
            for (int k = 0; k < STRESS_ORGS; k++) {
                int d = day, rc;

                if (me == 0)
                    util_snprintf(org, sizeof org, "taker-%d", k);
                else
                    util_snprintf(org, sizeof org, "claim-%d-%d", i, k);
                rc = quota_take(q, org, &d, 1, load_zero, NULL, &c);
                if (rc == AM_EUNAVAILABLE)
                    __atomic_fetch_add(&st->refused, 1, __ATOMIC_RELAXED);
                else if (rc == 0 && round == 1)
                    __atomic_fetch_add(&st->violations, 1, __ATOMIC_RELAXED);
                else if (d != day || (rc == 0 && c != 1) || (rc != 0 && rc != AM_ERATELIMIT))
                    __atomic_fetch_add(&st->errors, 1, __ATOMIC_RELAXED);
            }
    }
    _exit(0);
}

START_TEST(claims_racing_takes_never_exceed_the_limit)
{
    struct quota *q = must_create(32);
    struct stress *st = shared_page(sizeof(struct stress));
    pid_t parent = getpid(), pid[2];

    for (int me = 0; me < 2; me++) {
        pid[me] = fork();
        ck_assert_int_ge(pid[me], 0);
        if (pid[me] == 0)
            stress_child(q, st, me, parent);
    }
    for (int me = 0; me < 2; me++)
        ck_assert(child_ok(pid[me]));
    ck_assert_msg(st->violations == 0,
                  "%d times an org of limit 1 had a second run accepted on one day",
                  st->violations);
    ck_assert_int_eq(st->errors, 0);
    ck_assert_int_eq(odd_slots(q), 0);
    CHECK_INVARIANTS(quota_check_invariants(q));
    quota_close(q);
    munmap(st, sizeof(struct stress));
}
END_TEST

/*
 * The tag is 16 bits. A slot re-keyed (or repaired) 65535 times has tag
 * 0xffff; the next re-key must wrap the tag to 0 without touching the day
 * packed above it. (The state is set directly: reaching it through the API
 * takes 65535 days or crashes.)
 */
START_TEST(a_new_tag_never_moves_the_day)
{
    struct quota *q = must_create(4);
    struct loader l = { 0 };
    char b[32];
    uint32_t p = home_of(q, "old-org"), at;
    int64_t count;
    int day;

    _Static_assert(DAY % 2 == 0, "DAY | 1 must differ from DAY");
    ck_assert_int_eq(take(q, "old-org", DAY - 1, 5, &l, &count, NULL), 0);
    ck_assert_int_eq(slots_of(q, "old-org", &at), 1);
    ck_assert_uint_eq(at, p);
    __atomic_store_n(&q->tab[p].word, WORD(DAY - 1, 0xffffu, 1), __ATOMIC_RELEASE);

    name_with_home(q, "wrap-", p, b, sizeof b);
    ck_assert_int_eq(take(q, b, DAY, 5, &l, &count, &day), 0);
    ck_assert_int_eq(slots_of(q, b, &at), 1);
    ck_assert_uint_eq(at, p);
    ck_assert_int_eq(count, 1);
    ck_assert_msg(day == DAY, "the run was counted on day %d, not on DAY (%d)", day, DAY);
    ck_assert_int_eq(count_of(q, b, DAY, &l), 1);
    CHECK_INVARIANTS(quota_check_invariants(q));
    quota_close(q);
}
END_TEST

/* ---- a claimer that dies holding the mutex ----------------------------------- */

/*
 * The child re-keys slot s for org `intruder` on `day` as find_or_claim
 * does, but dies (holding the mutex) half-way through the slug.
 */
static void die_mid_claim(struct quota *q, uint32_t s, const char *intruder, int day,
                          int never_used, pid_t parent)
{
    struct quota_entry *e = &q->tab[s];
    uint64_t w;

    child_dies_with_parent(parent);
    if (pthread_mutex_lock(&q->hdr->lock.mutex) != 0)
        _exit(2);
    if (never_used)
        q->hdr->used++;
    w = __atomic_load_n(&e->word, __ATOMIC_RELAXED);
    __atomic_store_n(&e->seq, e->seq | 1u, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    __atomic_store_n(&e->word, WORD(day, WORD_TAG(w) + 1u, 0), __ATOMIC_RELAXED);
    e->hash = org_hash(intruder);
    memcpy(e->org, intruder, 4);
    _exit(0);
}

START_TEST(dead_claimer_is_repaired_by_a_reader)
{
    struct quota *q = must_create(4);
    struct loader l = { 0 };
    pid_t parent = getpid(), pid;
    uint64_t t0, elapsed;
    uint32_t s, at;
    int64_t count;
    int day;

    for (int i = 1; i <= 3; i++) {
        ck_assert_int_eq(take(q, "victim", DAY, 10, &l, &count, NULL), 0);
        ck_assert_int_eq(count, i);
    }
    ck_assert_int_eq(slots_of(q, "victim", &s), 1);

    /* On DAY + 1 victim's slot is reusable; the claim for intruder dies
     * after writing "intr" over "victim". */
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        die_mid_claim(q, s, "intruder", DAY + 1, 0, parent);
    ck_assert(child_ok(pid));
    ck_assert_uint_eq(q->tab[s].seq & 1u, 1);
    ck_assert_int_eq(odd_slots(q), 1);

    /* victim's probe meets the odd slot: it spins, tries the mutex, finds
     * its owner dead and repairs the slot; the half-written key is never
     * seen. */
    l.calls = 0;
    l.value = 2;
    t0 = util_monotonic_ms();
    ck_assert_int_eq(take(q, "victim", DAY + 1, 10, &l, &count, &day), 0);
    elapsed = util_monotonic_ms() - t0;
    ck_assert_msg(elapsed < 2000, "take blocked %llu ms by a dead claimer",
                  (unsigned long long)elapsed);
    ck_assert_int_eq(count, 3);   /* loaded 2 for DAY + 1, and this run */
    ck_assert_int_eq(day, DAY + 1);
    ck_assert_int_eq(l.calls, 1);
    ck_assert_int_eq(l.last_day, DAY + 1);
    ck_assert_int_eq(odd_slots(q), 0);
    ck_assert_int_eq(slots_of(q, "victim", &at), 1);
    ck_assert_uint_eq(at, s);     /* the repaired slot was reused */
    ck_assert_int_eq(slots_of(q, "intrim", NULL), 0);
    ck_assert(mutex_usable(q));
    ck_assert_uint_eq(q->hdr->used, used_slots(q));

    ck_assert_int_eq(take(q, "intruder", DAY + 1, 10, &l, &count, NULL), 0);
    ck_assert_int_eq(count, 3);   /* loaded 2 again */
    ck_assert_int_eq(slots_of(q, "intruder", NULL), 1);
    ck_assert_int_eq(take(q, "victim", DAY + 1, 10, &l, &count, NULL), 0);
    ck_assert_int_eq(count, 4);
    CHECK_INVARIANTS(quota_check_invariants(q));
    quota_close(q);
}
END_TEST

START_TEST(dead_claimer_is_repaired_by_the_next_claim)
{
    struct quota *q = must_create(4);
    struct loader l = { 0 };
    pid_t parent = getpid(), pid;
    uint32_t s = home_of(q, "ghost"), at;
    uint64_t t0, elapsed;
    char other[32];
    int64_t count;

    /* An org whose probe (in this empty table) stops before s. */
    for (int n = 0;; n++) {
        util_snprintf(other, sizeof other, "other-%d", n);
        if (home_of(q, other) != s)
            break;
    }
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        die_mid_claim(q, s, "ghost", DAY, 1, parent);
    ck_assert(child_ok(pid));
    ck_assert_uint_eq(q->tab[s].seq, 1);

    /* The next claim takes the mutex: owner dead, repaired. */
    t0 = util_monotonic_ms();
    ck_assert_int_eq(take(q, other, DAY, 10, &l, &count, NULL), 0);
    elapsed = util_monotonic_ms() - t0;
    ck_assert_msg(elapsed < 2000, "claim blocked %llu ms by a dead claimer",
                  (unsigned long long)elapsed);
    ck_assert_int_eq(count, 1);
    ck_assert_int_eq(odd_slots(q), 0);
    ck_assert_uint_eq(q->tab[s].seq, 2);
    ck_assert_int_eq(WORD_DAY(q->tab[s].word), 0);   /* reusable by anyone */
    ck_assert_int_eq(q->tab[s].org[0], '\0');
    ck_assert(mutex_usable(q));
    ck_assert_uint_eq(q->hdr->used, 2);
    ck_assert_uint_eq(q->hdr->used, used_slots(q));

    /* ghost gets a counter of its own: the repaired slot. */
    l.value = 6;
    ck_assert_int_eq(take(q, "ghost", DAY, 10, &l, &count, NULL), 0);
    ck_assert_int_eq(count, 7);
    ck_assert_int_eq(slots_of(q, "ghost", &at), 1);
    ck_assert_uint_eq(at, s);
    ck_assert_uint_eq(q->hdr->used, 2);
    CHECK_INVARIANTS(quota_check_invariants(q));
    quota_close(q);
}
END_TEST

/* ---- holds ------------------------------------------------------------------- */

/* settled() for the tests: a trace id starting with "done" reached the database. */
static int settled_fake(const char *trace, void *arg)
{
    int *calls = arg;

    (*calls)++;
    return strncmp(trace, "done", 4) == 0;
}

START_TEST(holds_are_bounded_and_reused)
{
    struct quota *q = NULL;
    struct am_error err;
    int h[3];

    error_clear(&err);
    ck_assert_int_eq(quota_create(&q, 4, 3, &err), 0);
    for (int i = 0; i < 3; i++) {
        h[i] = quota_hold(q, "acme", DAY);
        ck_assert_int_ge(h[i], 0);
        for (int j = 0; j < i; j++)
            ck_assert_int_ne(h[i], h[j]);
    }
    ck_assert_int_eq(quota_hold(q, "acme", DAY), -1);     /* all in use */
    quota_release(q, h[1]);
    ck_assert_int_eq(quota_hold(q, "beta", DAY), h[1]);
    ck_assert_int_eq(quota_hold(q, "acme", DAY), -1);
    quota_release(q, -1);                                  /* none: nothing */
    quota_hold_trace(q, -1, "x");
    CHECK_INVARIANTS(quota_check_invariants(q));
    quota_close(q);
}
END_TEST

#if AM_INVARIANTS
/* The check is not vacuous: a hold on a run its counter no longer counts
 * (given back, but still held: invariant 4) makes it abort. */
START_TEST(quota_invariants_abort_on_a_hold_with_no_count)
{
    struct quota *q = must_create(4);
    struct loader l = { 0 };
    int64_t count;

    ck_assert_int_eq(take(q, "acme", DAY, 5, &l, &count, NULL), 0);
    ck_assert_int_ge(quota_hold(q, "acme", DAY), 0);
    quota_check_invariants(q);
    quota_give_back(q, "acme", DAY);
    quota_check_invariants(q);
    ck_abort_msg("quota_check_invariants returned on a hold with no count");
}
END_TEST
#endif

/* A child takes five runs of acme and dies holding some of them:
 *   A held, no trace id (died before it settled)       -> given back
 *   B held, trace id settled (died after its commit)   -> stays counted
 *   C held, trace id not in the database               -> given back
 *   D held and released (settled normally)             -> stays counted
 *   E taken, never held (died between take and hold)   -> stays counted
 *   F held but never made ready (died in quota_hold)   -> stays counted
 * The parent's own held run is never touched by the child's reclaim. */
START_TEST(reclaim_gives_back_what_a_dead_holder_had_not_settled)
{
    struct quota *q = must_create(4);
    struct loader l = { 0 };
    int64_t count;
    int calls = 0, mine, status;
    pid_t pid;

    ck_assert_int_eq(take(q, "acme", DAY, 100, &l, &count, NULL), 0);
    mine = quota_hold(q, "acme", DAY);
    ck_assert_int_ge(mine, 0);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int h, ok = 1;

        for (int i = 0; i < 5; i++)
            ok &= take(q, "acme", DAY, 100, &l, &count, NULL) == 0;
        ok &= quota_hold(q, "acme", DAY) >= 0;                    /* A */
        ok &= (h = quota_hold(q, "acme", DAY)) >= 0;              /* B */
        quota_hold_trace(q, h, "done-b");
        ok &= (h = quota_hold(q, "acme", DAY)) >= 0;              /* C */
        quota_hold_trace(q, h, "lost-c");
        ok &= (h = quota_hold(q, "acme", DAY)) >= 0;              /* D */
        quota_release(q, h);
        for (uint32_t k = 0; k < q->hdr->nholds; k++) {           /* F */
            int32_t free_pid = 0;
            if (__atomic_compare_exchange_n(&q->holds[k].pid, &free_pid, (int32_t)getpid(), 0,
                                            __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
                break;
        }
        _exit(ok ? 0 : 1);
    }
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child failed");
    ck_assert_int_eq(count_of(q, "acme", DAY, &l), 6);

    ck_assert_int_eq(quota_reclaim(q, (int)pid, settled_fake, &calls), 2);
    ck_assert_int_eq(calls, 2);                  /* B and C were asked; A had no trace id */
    ck_assert_int_eq(count_of(q, "acme", DAY, &l), 4);
    /* the child's holds are free again, the parent's is not */
    for (uint32_t k = 0; k < q->hdr->nholds; k++)
        ck_assert_int_ne(q->holds[k].pid, (int32_t)pid);
    ck_assert_int_eq(q->holds[mine].pid, (int32_t)getpid());
    ck_assert_int_eq(quota_reclaim(q, (int)pid, settled_fake, &calls), 0);

    /* after every worker died: all that is left (here the parent's) */
    ck_assert_int_eq(quota_reclaim(q, 0, settled_fake, &calls), 1);
    ck_assert_int_eq(count_of(q, "acme", DAY, &l), 3);
    ck_assert_int_eq(q->holds[mine].pid, 0);
    CHECK_INVARIANTS(quota_check_invariants(q));
    quota_close(q);
}
END_TEST

/* A hold of a day the counter has left gives back nothing of the new day. */
START_TEST(reclaim_of_an_old_day_leaves_the_new_day_alone)
{
    struct quota *q = must_create(4);
    struct loader l = { 0 };
    int64_t count;
    int calls = 0;

    ck_assert_int_eq(take(q, "acme", DAY, 100, &l, &count, NULL), 0);
    ck_assert_int_ge(quota_hold(q, "acme", DAY), 0);
    ck_assert_int_eq(take(q, "acme", DAY + 1, 100, &l, &count, NULL), 0);
    ck_assert_int_eq(quota_reclaim(q, 0, settled_fake, &calls), 1);
    ck_assert_int_eq(count_of(q, "acme", DAY + 1, &l), 1);
    CHECK_INVARIANTS(quota_check_invariants(q));
    quota_close(q);
}
END_TEST

/* ---- forgetting the counts (quota_invalidate) ------------------------------------ */

/* After an invalidation the next take or count loads the count again, a
 * higher one and a lower one alike, and counts on from it (never from 1
 * or 0); an org not used since stays forgotten until it is. */
START_TEST(invalidate_makes_the_next_take_load_the_count_again)
{
    struct quota *q = must_create(4);
    struct loader l = { 0 };
    int64_t count;

    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(take(q, "acme", DAY, 10, &l, &count, NULL), 0);
    ck_assert_int_eq(take(q, "beta", DAY, 10, &l, &count, NULL), 0);
    ck_assert_int_eq(l.calls, 2);
    quota_invalidate(q);
    CHECK_INVARIANTS(quota_check_invariants(q));

    l.value = 7;                          /* another master counted more */
    ck_assert_int_eq(take(q, "acme", DAY, 10, &l, &count, NULL), 0);
    ck_assert_int_eq(count, 8);
    ck_assert_int_eq(l.calls, 3);
    ck_assert_str_eq(l.last_org, "acme");
    ck_assert_int_eq(l.last_day, DAY);
    ck_assert_int_eq(count_of(q, "acme", DAY, &l), 8);
    ck_assert_int_eq(l.calls, 3);         /* known again: not loaded twice */
    ck_assert_int_eq(slots_of(q, "acme", NULL), 1);

    l.value = 2;                          /* the database says less */
    quota_invalidate(q);
    ck_assert_int_eq(count_of(q, "acme", DAY, &l), 2);
    ck_assert_int_eq(take(q, "acme", DAY, 10, &l, &count, NULL), 0);
    ck_assert_int_eq(count, 3);
    ck_assert_int_eq(l.calls, 4);
    ck_assert_int_eq(count_of(q, "beta", DAY, &l), 2);     /* beta: loaded now */
    ck_assert_int_eq(l.calls, 5);

    l.value = 10;                         /* the limit was reached elsewhere */
    quota_invalidate(q);
    ck_assert_int_eq(take(q, "acme", DAY, 10, &l, &count, NULL), AM_ERATELIMIT);
    ck_assert_int_eq(count, 10);
    ck_assert_int_eq(used_slots(q), 2);
    CHECK_INVARIANTS(quota_check_invariants(q));
    quota_close(q);
}
END_TEST

/* quota_foreach reports only counts it knows. */
static void foreach_note(const char *org, int day, int64_t count, void *arg)
{
    int *n = arg;

    (void)org;
    (void)day;
    (void)count;
    (*n)++;
}

START_TEST(a_forgotten_count_is_not_reported)
{
    struct quota *q = must_create(4);
    struct loader l = { 0 };
    int64_t count;
    int n = 0;

    ck_assert_int_eq(take(q, "acme", DAY, 10, &l, &count, NULL), 0);
    ck_assert_int_eq(take(q, "beta", DAY, 10, &l, &count, NULL), 0);
    quota_foreach(q, foreach_note, &n);
    ck_assert_int_eq(n, 2);
    quota_invalidate(q);
    n = 0;
    quota_foreach(q, foreach_note, &n);
    ck_assert_int_eq(n, 0);
    ck_assert_int_eq(take(q, "acme", DAY, 10, &l, &count, NULL), 0);
    quota_foreach(q, foreach_note, &n);
    ck_assert_int_eq(n, 1);
    quota_close(q);
}
END_TEST

/* A take that read its slot before the invalidation cannot land on the
 * forgotten count after it: the slot's word was re-tagged. */
START_TEST(a_take_read_before_an_invalidation_does_not_land_after_it)
{
    struct quota *q = must_create(4);
    struct loader l = { 0 };
    struct quota_entry *e = NULL;
    uint64_t w = 0, before;
    uint32_t gen = 0;
    int64_t count;

    ck_assert_int_eq(take(q, "acme", DAY, 10, &l, &count, NULL), 0);
    ck_assert_int_eq(find_or_claim(q, "acme", DAY, load_fake, &l, &e, &w, &gen), 0);
    before = w;
    quota_invalidate(q);
    ck_assert(!__atomic_compare_exchange_n(&e->word, &w, before + 1, 0, __ATOMIC_ACQ_REL,
                                           __ATOMIC_ACQUIRE));
    ck_assert_int_eq(WORD_DAY(w), DAY);   /* same day and count, new tag */
    ck_assert_int_eq(WORD_COUNT(w), 1);
    quota_close(q);
}
END_TEST

/* Runs in flight across an invalidation: one settles (released), one is
 * refunded (released, given back), one belongs to a process that dies
 * (reclaimed), one was taken before it and held only after it. None of
 * them is in the reloaded count, so none changes it; a run taken after the
 * reload is given back to it as before. The invariants hold throughout,
 * though the reloaded count (1) is below the runs still held from before. */
START_TEST(holds_survive_an_invalidation)
{
    struct quota *q = must_create(4);
    struct loader l = { 0 };
    int64_t count;
    int calls = 0, settles, refund, late, status, after;
    pid_t pid;

    ck_assert_int_eq(take(q, "acme", DAY, 10, &l, &count, NULL), 0);
    settles = quota_hold(q, "acme", DAY);
    ck_assert_int_eq(take(q, "acme", DAY, 10, &l, &count, NULL), 0);
    refund = quota_hold(q, "acme", DAY);
    ck_assert_int_ge(settles, 0);
    ck_assert_int_ge(refund, 0);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int ok = take(q, "acme", DAY, 10, &l, &count, NULL) == 0;
        ok &= quota_hold(q, "acme", DAY) >= 0;
        _exit(ok ? 0 : 1);
    }
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child failed");
    ck_assert_int_eq(take(q, "acme", DAY, 10, &l, &count, NULL), 0);
    ck_assert_int_eq(count, 4);

    quota_invalidate(q);
    late = quota_hold(q, "acme", DAY);    /* taken before, held after */
    ck_assert_int_ge(late, 0);
    l.value = 1;                          /* none of the four reached the database */
    ck_assert_int_eq(count_of(q, "acme", DAY, &l), 1);
    CHECK_INVARIANTS(quota_check_invariants(q));

    quota_release(q, refund);
    quota_give_back(q, "acme", DAY);
    ck_assert_int_eq(count_of(q, "acme", DAY, &l), 1);
    ck_assert_int_eq(quota_reclaim(q, (int)pid, settled_fake, &calls), 1);
    ck_assert_int_eq(count_of(q, "acme", DAY, &l), 1);
    quota_release(q, late);
    quota_give_back(q, "acme", DAY);
    ck_assert_int_eq(count_of(q, "acme", DAY, &l), 1);
    quota_release(q, settles);
    ck_assert_int_eq(count_of(q, "acme", DAY, &l), 1);
    CHECK_INVARIANTS(quota_check_invariants(q));

    ck_assert_int_eq(take(q, "acme", DAY, 10, &l, &count, NULL), 0);
    after = quota_hold(q, "acme", DAY);
    ck_assert_int_eq(count, 2);
    CHECK_INVARIANTS(quota_check_invariants(q));
    quota_release(q, after);
    quota_give_back(q, "acme", DAY);
    ck_assert_int_eq(count_of(q, "acme", DAY, &l), 1);
    ck_assert_int_eq(quota_holds_used(q, NULL), 0);
    CHECK_INVARIANTS(quota_check_invariants(q));
    quota_close(q);
}
END_TEST

/*
 * Takers in INV_CHILDREN processes of INV_THREADS threads each take one
 * org while the parent invalidates the table once the runs accepted reach
 * `trigger` (takers pause a little past it until then), with the
 * database's count set to `loaded` just before. Every take that began
 * after the invalidation returned counts on the loaded count: its count is
 * above `loaded`, at most the limit, and no two share one; all but the
 * takes in flight at the invalidation (one per thread) of the runs from
 * `loaded` to the limit are theirs, and at the end the count is exactly
 * the limit.
 */
#define INV_CHILDREN 3
#define INV_THREADS 4
#define INV_LIMIT 400

struct inval {
    int64_t loaded;                       /* what the load function says */
    int64_t pause;                        /* takers wait here for `after` */
    int after;                            /* 1 once quota_invalidate returned */
    int64_t taken;                        /* successes so far (atomic) */
    int load_calls;                       /* atomic */
    int seen[INV_LIMIT + 2];              /* counts returned to takes begun after */
    int anomalies;                        /* atomic */
};

static int load_inval(const char *org, int day, int64_t *count, void *arg)
{
    struct inval *v = arg;

    (void)org;
    (void)day;
    __atomic_fetch_add(&v->load_calls, 1, __ATOMIC_RELAXED);
    *count = __atomic_load_n(&v->loaded, __ATOMIC_ACQUIRE);
    return 0;
}

struct inval_arg {
    struct quota *q;
    struct inval *v;
};

static void *inval_thread(void *p)
{
    struct inval_arg *a = p;
    int refused = 0;

    while (refused < 50) {
        int after, day = DAY, rc;
        int64_t c = -1;

        while (!(after = __atomic_load_n(&a->v->after, __ATOMIC_ACQUIRE)) &&
               __atomic_load_n(&a->v->taken, __ATOMIC_ACQUIRE) >= a->v->pause)
            sched_yield();
        rc = quota_take(a->q, "acme", &day, INV_LIMIT, load_inval, a->v, &c);

        if (rc == AM_ERATELIMIT) {
            refused += after;
            continue;
        }
        if (rc != 0 || c < 1 || c > INV_LIMIT) {
            __atomic_fetch_add(&a->v->anomalies, 1, __ATOMIC_RELAXED);
            break;
        }
        __atomic_fetch_add(&a->v->taken, 1, __ATOMIC_RELAXED);
        if (after)
            __atomic_fetch_add(&a->v->seen[c], 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

static void inval_child(struct quota *q, struct inval *v, pid_t parent)
{
    pthread_t t[INV_THREADS];
    struct inval_arg a = { q, v };

    child_dies_with_parent(parent);
    for (int i = 0; i < INV_THREADS; i++)
        if (pthread_create(&t[i], NULL, inval_thread, &a) != 0)
            _exit(3);
    for (int i = 0; i < INV_THREADS; i++)
        pthread_join(t[i], NULL);
    _exit(0);
}

static void run_invalidation_race(int64_t trigger, int64_t loaded)
{
    struct inval *v = shared_page(sizeof(struct inval));
    struct quota *q = must_create(4);
    pid_t parent = getpid(), pid[INV_CHILDREN];
    int64_t c = -1, theirs = 0;
    int calls;

    v->pause = trigger + 20;

    for (int k = 0; k < INV_CHILDREN; k++) {
        pid[k] = fork();
        ck_assert_int_ge(pid[k], 0);
        if (pid[k] == 0)
            inval_child(q, v, parent);
    }
    while (__atomic_load_n(&v->taken, __ATOMIC_ACQUIRE) < trigger)
        sched_yield();
    __atomic_store_n(&v->loaded, loaded, __ATOMIC_RELEASE);
    calls = __atomic_load_n(&v->load_calls, __ATOMIC_ACQUIRE);
    quota_invalidate(q);
    __atomic_store_n(&v->after, 1, __ATOMIC_RELEASE);
    for (int k = 0; k < INV_CHILDREN; k++)
        ck_assert_msg(child_ok(pid[k]), "child %d failed", k);
    ck_assert_int_eq(v->anomalies, 0);
    ck_assert_int_gt(v->load_calls, calls);
    for (int64_t n = 0; n <= INV_LIMIT; n++) {
        ck_assert_msg(n <= loaded ? v->seen[n] == 0 : v->seen[n] <= 1,
                      "count %lld returned %d times after the invalidation (loaded %lld)",
                      (long long)n, v->seen[n], (long long)loaded);
        theirs += v->seen[n];
    }
    ck_assert_int_ge(theirs, INV_LIMIT - loaded - INV_CHILDREN * INV_THREADS);
    ck_assert_int_eq(quota_count(q, "acme", DAY, load_inval, v, &c), 0);
    ck_assert_int_eq(c, INV_LIMIT);
    CHECK_INVARIANTS(quota_check_invariants(q));
    quota_close(q);
    munmap(v, sizeof(struct inval));
}

START_TEST(takers_across_an_invalidation_count_on_a_higher_loaded_count)
{
    run_invalidation_race(100, 300);
}
END_TEST

START_TEST(takers_across_an_invalidation_count_on_a_lower_loaded_count)
{
    run_invalidation_race(250, 50);
}
END_TEST

#if AM_INVARIANTS
/* Invariant 5 is checked: a slot stamped with a generation the header
 * has not reached makes it abort. */
START_TEST(quota_invariants_abort_on_a_generation_from_the_future)
{
    struct quota *q = must_create(4);
    struct loader l = { 0 };
    int64_t count;
    uint32_t s = 0;

    ck_assert_int_eq(take(q, "acme", DAY, 5, &l, &count, NULL), 0);
    quota_check_invariants(q);
    ck_assert_int_eq(slots_of(q, "acme", &s), 1);
    q->tab[s].gen = q->hdr->gen + 1;
    quota_check_invariants(q);
    ck_abort_msg("quota_check_invariants returned on a generation from the future");
}
END_TEST
#endif

static Suite *quota_suite(void)
{
    Suite *s = suite_create("quota");
    TCase *basic = tcase_create("basic");
    TCase *shared = tcase_create("shared");
    TCase *crash = tcase_create("crash");

    tcase_add_test(basic, take_counts_up_to_the_limit);
    tcase_add_test(basic, load_is_called_once_and_its_count_is_respected);
    tcase_add_test(basic, a_new_day_starts_from_zero);
    tcase_add_test(basic, a_later_day_is_adopted);
    tcase_add_test(basic, give_back);
    tcase_add_test(basic, orgs_are_separate);
    tcase_add_test(basic, table_full_then_stale_slots_are_reused);
    tcase_add_test(basic, a_new_day_is_not_refused_for_a_table_of_yesterdays_orgs);
    tcase_add_test(basic, a_new_tag_never_moves_the_day);
    tcase_add_test(basic, invalidate_makes_the_next_take_load_the_count_again);
    tcase_add_test(basic, a_forgotten_count_is_not_reported);
    tcase_add_test(basic, a_take_read_before_an_invalidation_does_not_land_after_it);
    tcase_set_timeout(basic, 30);
    suite_add_tcase(s, basic);

    tcase_add_test(shared, exact_under_concurrency_across_processes);
    tcase_add_test(shared, exact_under_concurrency_with_racing_claims);
    tcase_add_test(shared, a_claim_racing_the_first_take_of_a_day_loses_no_run);
    tcase_add_test(shared, claims_racing_takes_never_exceed_the_limit);
    tcase_add_test(shared, takers_across_an_invalidation_count_on_a_higher_loaded_count);
    tcase_add_test(shared, takers_across_an_invalidation_count_on_a_lower_loaded_count);
    tcase_set_timeout(shared, 60);
    suite_add_tcase(s, shared);

    tcase_add_test(crash, dead_claimer_is_repaired_by_a_reader);
    tcase_add_test(crash, dead_claimer_is_repaired_by_the_next_claim);
    tcase_add_test(crash, holds_are_bounded_and_reused);
    tcase_add_test(crash, reclaim_gives_back_what_a_dead_holder_had_not_settled);
    tcase_add_test(crash, reclaim_of_an_old_day_leaves_the_new_day_alone);
    tcase_add_test(crash, holds_survive_an_invalidation);
#if AM_INVARIANTS
    tcase_add_test_raise_signal(crash, quota_invariants_abort_on_a_hold_with_no_count, SIGABRT);
    tcase_add_test_raise_signal(crash, quota_invariants_abort_on_a_generation_from_the_future,
                                SIGABRT);
#endif
    tcase_set_timeout(crash, 30);
    suite_add_tcase(s, crash);
    return s;
}

int main(void)
{
    SRunner *sr;
    int failed;

    sr = srunner_create(quota_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
