/*
 * quota.c - the daily request quota of every org, in anonymous shared
 * memory mapped by the supervisor before it forks its workers.
 *
 * Owns: the table's layout, its writers' process-shared robust mutex (a
 * struct shm_lock: lib/shm_lock.c locks it and seqlocks each slot; what a
 * dead writer left is repaired here, quota_repair), and the protocol below.
 *
 * Must never: log; touch the database (the caller's load function does);
 * hold the mutex while it calls that function; block a reader behind a
 * live writer.
 *
 * DESIGN
 *
 * Layout. A header (geometry, the mutex, how many slots were ever used)
 * and then `nslots` entries of one cache line each: the org's slug, its
 * hash, a per-entry `seq`, and one 64-bit `word` packing
 *
 *     day (16 bits, days since 1970) | tag (16 bits) | count (32 bits)
 *
 * Counting is a compare-and-swap on `word`: +1 if count < limit on the
 * same day, or (new day, same tag, 1) when the day moved on. Giving back
 * is a CAS to count - 1 on the same day and tag.
 *
 * Slots. Open addressing with linear probing from FNV-1a(org) & mask. A
 * slot with `seq` == 0 was never used and ends every probe. A used slot is
 * never emptied again, so no probe chain is ever cut; instead a slot whose
 * day is before the claimant's day (its org has not run today, so nothing
 * in flight counts on it) may be given to another org. Claims take the
 * mutex, make the slot's `seq` odd, CAS `word` to (day, tag + 1, loaded
 * count) (backing off if the old owner moved it to today meanwhile),
 * write the hash and the slug, and make `seq` even again. The new tag is
 * what makes a CAS prepared against the old owner fail. Once three
 * quarters of the slots have been used, a never-used slot is still taken
 * while a stale slot exists anywhere (longer probes reach those); with
 * none, the claim fails with AM_EUNAVAILABLE.
 *
 * Readers never take the mutex while a writer lives: they read `seq`
 * (even), the hash and slug, `word`, and `seq` again; equal means the slug
 * and word belong together. A later re-key changes the tag, so the CAS on
 * the word they read fails and they probe again.
 *
 * Loading. An org's counter is created from the durable count, read by
 * the caller's function BEFORE the mutex is taken. That is safe: the
 * durable count for (org, day) only grows through runs counted by this
 * table's entry for (org, day), and the claim re-probes under the mutex;
 * if somebody created the entry meanwhile, theirs is used and the loaded
 * value dropped.
 *
 * Writer death. A process killed while it holds the mutex leaves at most
 * one slot with `seq` odd. The next locker gets EOWNERDEAD, turns every
 * odd slot into a reusable one (day 0, tag + 1, no slug) and marks the
 * mutex consistent. A reader that spins too long on an odd `seq` tries the
 * mutex (trylock), which does that repair when the writer is dead.
 *
 * Holds. A second array, one entry per run in flight: the holder's pid
 * (0: free, claimed by CAS), a `ready` flag, the org, the day and, once
 * the run is about to settle, its trace id. Only the holder writes an
 * entry; quota_reclaim reads the entries of dead holders only, so nothing
 * in them races. The order of events makes the reclaim exact: the hold is
 * made ready after the take, and the trace id set before the settling
 * transaction; a counted run is released after its commit, a refunded one
 * before it is given back. So a dead holder's ready hold is a run that is
 * counted here, and it reached the database exactly when its trace id is
 * set and the run log has it. A process killed between a take and its
 * hold, or with every hold in use, leaves its run counted until the
 * supervisor restarts (which reloads from the database): that error is on
 * the side of the limit.
 *
 * INVARIANTS (quota_check_invariants checks them where no other process
 * uses the table: the supervisor's recovery, the unit tests)
 *
 *  1. With the mutex free, every slot's `seq` is even: it is odd only
 *     inside a claim, under the mutex, or after its claimer died (and the
 *     next locker repairs it before anything else).
 *  2. `used` is the number of slots with `seq` != 0; a never-used slot
 *     (`seq` 0) has a zero `word` and no slug.
 *  3. A slot with a slug has that slug's hash and is the first slot
 *     holding it on the probe path from its home, which crosses no
 *     never-used slot: an org has one slot and every lookup finds it. A
 *     slot without a slug (repaired) counts nothing on day 0.
 *  4. A free hold (pid 0) is not ready. A ready hold's day is not later
 *     than today; if its org's slot counts that day, the count is at least
 *     the number of ready holds on (org, day) (each was taken there and is
 *     given back at most once); its org's slot never counts an earlier day
 *     (a slot's day only moves forward while its org keeps it).
 */
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "state/quota.h"
#include "lib/hash.h"
#include "lib/invariant.h"
#include "lib/shm_lock.h"
#include "lib/util.h"

#define QUOTA_MIN_SLOTS   64u
#define QUOTA_MAX_SLOTS   (1u << 22)
#define QUOTA_SPIN_BUSY   64        /* spins before yielding */
#define QUOTA_SPIN_LIMIT  4096      /* spins before trying the mutex */
#define QUOTA_NAP_NS      50000L    /* ns: reader nap per spin past the limit */

#define WORD(day, tag, n) (((uint64_t)(day) << 48) | ((uint64_t)((tag) & 0xffffu) << 32) | \
                           (uint64_t)(n))
#define WORD_DAY(w)       ((int)((w) >> 48))
#define WORD_TAG(w)       ((uint32_t)((w) >> 32) & 0xffffu)
#define WORD_COUNT(w)     ((int64_t)((w) & 0xffffffffu))

struct quota_entry {
    uint64_t word;              /* day | tag | count; CAS only */
    uint32_t seq;               /* 0: never used; odd: being re-keyed (shm_seq_*) */
    uint32_t hash;
    char org[QUOTA_ORG_MAX];
};

struct quota_hold {             /* two cache lines: no two threads' holds share one */
    _Alignas(128) int32_t pid;  /* holder; 0: free; CAS to claim */
    int32_t ready;              /* org and day are written */
    int32_t day;
    char org[QUOTA_ORG_MAX];
    char trace[QUOTA_TRACE_MAX];  /* "" until the run is about to settle */
};

struct quota_header {
    uint32_t nholds;
    uint32_t nslots;            /* power of two */
    uint32_t used;              /* slots with seq != 0; under the mutex */
    struct shm_lock lock;       /* robust, process-shared: claims only */
};

struct quota {
    struct quota_header *hdr;
    struct quota_entry *tab;
    struct quota_hold *holds;   /* hdr->nholds of them, after the slots */
    uint32_t mask;              /* this handle's copy of nslots - 1 */
    size_t bytes;
    struct shm_guard guard;     /* hdr->lock, quota_repair, reader patience */
};

static uint32_t org_hash(const char *org)
{
    return hash_fnv1a32(org, strlen(org));
}

/* ---- the mutex --------------------------------------------------------- */

/* Every slot a dead writer left half-written becomes reusable. The
 * repair shm_lock_take runs on EOWNERDEAD (arg: the struct quota). */
static void quota_repair(void *arg)
{
    struct quota *q = arg;
    uint32_t i, used = 0;

    for (i = 0; i <= q->mask; i++) {
        struct quota_entry *e = &q->tab[i];
        uint32_t s = __atomic_load_n(&e->seq, __ATOMIC_RELAXED);

        if (s & 1) {
            uint64_t w = __atomic_load_n(&e->word, __ATOMIC_RELAXED);
            memset(e->org, 0, sizeof(e->org));
            e->hash = 0;
            __atomic_store_n(&e->word, WORD(0, WORD_TAG(w) + 1u, 0), __ATOMIC_RELAXED);
            shm_seq_write_end(&e->seq);
            s++;
        }
        if (s != 0)
            used++;
    }
    q->hdr->used = used;
}

/* ---- readers ------------------------------------------------------------- */

/*
 * Find org's slot. Returns it with *word read consistently with the slug,
 * or NULL when org has no slot. *reusable (if not NULL) gets the first
 * slot on the probe path whose day is before `day`, else NULL.
 */
static struct quota_entry *lookup(struct quota *q, const char *org, uint32_t h, int day,
                                  uint64_t *word, struct quota_entry **reusable)
{
    uint32_t i;

    if (reusable != NULL)
        *reusable = NULL;
    for (i = 0; i <= q->mask; i++) {
        struct quota_entry *e = &q->tab[(h + i) & q->mask];
        struct shm_reader rd = { 0, 0, 0 };
        char slug[QUOTA_ORG_MAX];
        uint32_t eh = 0;
        uint64_t w = 0;

        do {
            /* past the spin limit this tries the mutex, which repairs
             * the slot if its writer died */
            if (shm_seq_read_begin(&q->guard, &e->seq, &rd) != 0)
                return NULL;
            if (rd.seq == 0)
                continue;
            eh = e->hash;
            memcpy(slug, e->org, sizeof(slug));
            w = __atomic_load_n(&e->word, __ATOMIC_ACQUIRE);
        } while (!shm_seq_read_end(&q->guard, &e->seq, &rd));
        if (rd.seq == 0)
            return NULL;
        slug[sizeof(slug) - 1] = '\0';
        if (eh == h && strcmp(slug, org) == 0) {
            *word = w;
            return e;
        }
        if (reusable != NULL && *reusable == NULL && WORD_DAY(w) < day)
            *reusable = e;
    }
    return NULL;
}

/* 1 if some used slot counts a day before `day` (mutex held). */
static int any_stale(struct quota *q, int day)
{
    uint32_t i;

    for (i = 0; i <= q->mask; i++)
        if (q->tab[i].seq != 0 &&
            WORD_DAY(__atomic_load_n(&q->tab[i].word, __ATOMIC_RELAXED)) < day)
            return 1;
    return 0;
}

/*
 * Find org's slot, creating it (count from load) if it has none. Returns
 * 0 with *e and *word set, AM_EUNAVAILABLE when no slot is free, or
 * load's error.
 */
static int find_or_claim(struct quota *q, const char *org, int day, quota_load_fn load,
                         void *arg, struct quota_entry **out, uint64_t *word)
{
    uint32_t h = org_hash(org);
    struct quota_entry *e, *reuse;
    int64_t loaded = 0;
    uint64_t w, old;
    int rc;

    if (strlen(org) >= QUOTA_ORG_MAX)
        return AM_EINTERNAL;
    if ((*out = lookup(q, org, h, day, word, NULL)) != NULL)
        return 0;
    if ((rc = load(org, day, &loaded, arg)) != 0)
        return rc;
    if (loaded < 0)
        loaded = 0;
    if (loaded > 0x7fffffff)
        loaded = 0x7fffffff;
    if ((rc = shm_lock_take(&q->guard, 0)) != 0)
        return rc;
again:
    if ((e = lookup(q, org, h, day, word, &reuse)) != NULL)
        goto done;
    if (reuse != NULL) {
        e = reuse;
    } else {
        /* the first never-used slot on the path ends it */
        uint32_t i;
        for (i = 0, e = NULL; i <= q->mask && e == NULL; i++)
            if (__atomic_load_n(&q->tab[(h + i) & q->mask].seq, __ATOMIC_RELAXED) == 0)
                e = &q->tab[(h + i) & q->mask];
        /* Keep never-used slots so probes stay short, unless slots of
         * earlier days wait elsewhere: a new day is never refused for a
         * table of yesterday's orgs (longer probes pass more of them). */
        if (e == NULL || ((uint64_t)(q->hdr->used + 1) * 4 > (uint64_t)(q->mask + 1) * 3 &&
                          !any_stale(q, day))) {
            shm_lock_release(&q->guard);
            return AM_EUNAVAILABLE;
        }
        q->hdr->used++;
    }
    shm_seq_write_begin(&e->seq);
    /* A CAS, not a store: the old owner may count its first run of today
     * on this slot until the new tag lands; then the slot is not stale
     * any more and stays its. */
    old = __atomic_load_n(&e->word, __ATOMIC_RELAXED);
    do {
        if (reuse != NULL && WORD_DAY(old) >= day) {
            shm_seq_write_end(&e->seq);
            goto again;
        }
        w = WORD(day, WORD_TAG(old) + 1u, (uint64_t)loaded);
    } while (!__atomic_compare_exchange_n(&e->word, &old, w, 0, __ATOMIC_ACQ_REL,
                                          __ATOMIC_RELAXED));
    e->hash = h;
    memset(e->org, 0, sizeof(e->org));
    memcpy(e->org, org, strnlen(org, QUOTA_ORG_MAX - 1));
    shm_seq_write_end(&e->seq);
    *word = w;
done:
    shm_lock_release(&q->guard);
    *out = e;
    return 0;
}

/* ---- the API ---------------------------------------------------------------- */

int quota_create(struct quota **out, int orgs, int holds, struct am_error *err)
{
    struct quota *q;
    uint32_t n = QUOTA_MIN_SLOTS, nh = holds > 0 ? (uint32_t)holds : 1u;
    size_t bytes;
    void *p;
    int e;

    *out = NULL;
    while (n < QUOTA_MAX_SLOTS && (uint64_t)n < (uint64_t)(orgs > 0 ? orgs : 1) * 2)
        n <<= 1;
    bytes = sizeof(struct quota_header) + 63 + (size_t)n * sizeof(struct quota_entry) + 127 +
            (size_t)nh * sizeof(struct quota_hold);
    p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return error_set(err, AM_EUNAVAILABLE, "quota table: mmap of %zu bytes: %s", bytes,
                         strerror(errno));
    q = xcalloc(1, sizeof(*q));
    q->hdr = p;
    q->tab = (struct quota_entry *)(((uintptr_t)p + sizeof(struct quota_header) + 63) &
                                    ~(uintptr_t)63);
    q->holds = (struct quota_hold *)(((uintptr_t)(q->tab + n) + 127) & ~(uintptr_t)127);
    q->mask = n - 1;
    q->bytes = bytes;
    q->hdr->nslots = n;
    q->hdr->nholds = nh;
    q->guard.lock = &q->hdr->lock;
    q->guard.repair = quota_repair;
    q->guard.arg = q;
    q->guard.spin_busy = QUOTA_SPIN_BUSY;
    q->guard.spin_limit = QUOTA_SPIN_LIMIT;
    q->guard.nap_ns = QUOTA_NAP_NS;
    if (shm_lock_init(&q->hdr->lock) != 0) {
        e = errno;
        quota_close(q);
        return error_set(err, AM_EUNAVAILABLE, "quota table: robust mutex: %s", strerror(e));
    }
    *out = q;
    return 0;
}

void quota_close(struct quota *q)
{
    if (q == NULL)
        return;
    munmap(q->hdr, q->bytes);
    free(q);
}

int quota_take(struct quota *q, const char *org, int *day, int64_t limit, quota_load_fn load,
               void *arg, int64_t *count)
{
    struct quota_entry *e;
    uint64_t w, tag, next;
    int rc;

again:
    *count = 0;
    if ((rc = find_or_claim(q, org, *day, load, arg, &e, &w)) != 0)
        return rc;
    tag = WORD_TAG(w);
    do {
        if (WORD_TAG(w) != tag)               /* re-keyed under us: find again */
            goto again;
        if (WORD_DAY(w) > *day)
            *day = WORD_DAY(w);
        *count = WORD_DAY(w) < *day ? 0 : WORD_COUNT(w);
        if (*count >= limit || *count >= 0x7fffffff)
            return AM_ERATELIMIT;
        next = WORD_DAY(w) < *day ? WORD(*day, tag, 1) : w + 1;
    } while (!__atomic_compare_exchange_n(&e->word, &w, next, 0, __ATOMIC_ACQ_REL,
                                          __ATOMIC_ACQUIRE));
    *count = WORD_COUNT(next);
    return 0;
}

void quota_give_back(struct quota *q, const char *org, int day)
{
    struct quota_entry *e;
    uint64_t w, tag;

    if ((e = lookup(q, org, org_hash(org), day, &w, NULL)) == NULL)
        return;
    tag = WORD_TAG(w);
    while (WORD_TAG(w) == tag && WORD_DAY(w) == day && WORD_COUNT(w) > 0)
        if (__atomic_compare_exchange_n(&e->word, &w, w - 1, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE))
            return;
}

int quota_count(struct quota *q, const char *org, int day, quota_load_fn load, void *arg,
                int64_t *count)
{
    struct quota_entry *e;
    uint64_t w;
    int rc;

    *count = 0;
    if ((rc = find_or_claim(q, org, day, load, arg, &e, &w)) != 0)
        return rc;
    *count = WORD_DAY(w) == day ? WORD_COUNT(w) : 0;
    return 0;
}

/* ---- holds ------------------------------------------------------------------- */

int quota_hold(struct quota *q, const char *org, int day)
{
    static _Thread_local uint32_t hint;   /* where this thread found one last */
    int32_t me = (int32_t)getpid();
    uint32_t i, n = q->hdr->nholds;

    for (i = 0; i < n; i++) {
        uint32_t k = (hint + i) % n;
        struct quota_hold *h = &q->holds[k];
        int32_t free_pid = 0;

        if (__atomic_load_n(&h->pid, __ATOMIC_RELAXED) != 0 ||
            !__atomic_compare_exchange_n(&h->pid, &free_pid, me, 0, __ATOMIC_ACQ_REL,
                                         __ATOMIC_RELAXED))
            continue;
        util_strlcpy(h->org, org, sizeof(h->org));
        h->day = day;
        h->trace[0] = '\0';
        __atomic_store_n(&h->ready, 1, __ATOMIC_RELEASE);
        hint = k;
        return (int)k;
    }
    return -1;
}

void quota_hold_trace(struct quota *q, int hold, const char *trace_id)
{
    if (hold < 0 || (uint32_t)hold >= q->hdr->nholds)
        return;
    util_strlcpy(q->holds[hold].trace, trace_id, sizeof(q->holds[hold].trace));
    __atomic_thread_fence(__ATOMIC_RELEASE);
}

static void hold_free(struct quota_hold *h)
{
    __atomic_store_n(&h->ready, 0, __ATOMIC_RELAXED);
    h->trace[0] = '\0';
    __atomic_store_n(&h->pid, 0, __ATOMIC_RELEASE);
}

void quota_release(struct quota *q, int hold)
{
    if (hold >= 0 && (uint32_t)hold < q->hdr->nholds)
        hold_free(&q->holds[hold]);
}

int quota_holds_used(struct quota *q, int *capacity)
{
    uint32_t i;
    int n = 0;

    if (capacity != NULL)
        *capacity = q != NULL ? (int)q->hdr->nholds : 0;
    for (i = 0; q != NULL && i < q->hdr->nholds; i++)
        n += __atomic_load_n(&q->holds[i].pid, __ATOMIC_RELAXED) != 0;
    return n;
}

int quota_reclaim(struct quota *q, int pid, quota_settled_fn settled, void *arg)
{
    uint32_t i;
    int n = 0;

    for (i = 0; i < q->hdr->nholds; i++) {
        struct quota_hold *h = &q->holds[i];
        int32_t p = __atomic_load_n(&h->pid, __ATOMIC_ACQUIRE);

        char org[QUOTA_ORG_MAX];
        int day, owed;

        if (p == 0 || (pid != 0 && p != pid))
            continue;
        owed = __atomic_load_n(&h->ready, __ATOMIC_ACQUIRE) &&
               (h->trace[0] == '\0' || !settled(h->trace, arg));
        memcpy(org, h->org, sizeof(org));
        org[sizeof(org) - 1] = '\0';
        day = h->day;
        /* freed first: a reclaimer killed in between leaves the run
         * counted, never given back twice */
        hold_free(h);
        if (owed) {
            quota_give_back(q, org, day);
            n++;
        }
    }
    return n;
}

/* ---- invariants ----------------------------------------------------------------- */

/* Copy a NUL-padded shared name into buf (cap bytes). */
static void name_note(char *buf, size_t cap, const char *name, size_t len)
{
    size_t n = strnlen(name, len);

    if (n >= cap)
        n = cap - 1;
    memcpy(buf, name, n);
    buf[n] = '\0';
}

/* Invariant 3 for slot i (its slug in org). */
static int slot_check(struct quota *q, uint32_t i, const char *org)
{
    const struct quota_entry *e = &q->tab[i];
    uint32_t h = org_hash(org), k;

    if (e->hash != h)
        return 3;
    for (k = h & q->mask; k != i; k = (k + 1) & q->mask) {
        const struct quota_entry *p = &q->tab[k];

        if (p->seq == 0 || (p->hash == h && strncmp(p->org, org, QUOTA_ORG_MAX) == 0))
            return 3;   /* unreachable, or a second slot for org */
    }
    return 0;
}

/* Invariant 4 for hold k. */
static int hold_check(struct quota *q, uint32_t k, int today)
{
    const struct quota_hold *h = &q->holds[k];
    struct quota_entry *e;
    uint64_t w;
    int64_t held = 0;

    if (h->pid == 0)
        return h->ready ? 4 : 0;
    if (!h->ready)
        return 0;
    if (memchr(h->org, '\0', sizeof(h->org)) == NULL || h->day > today)
        return 4;
    if ((e = lookup(q, h->org, org_hash(h->org), 0, &w, NULL)) == NULL ||
        WORD_DAY(w) > h->day)
        return 0;       /* the org moved on; its slot may have gone to another */
    if (WORD_DAY(w) < h->day)
        return 4;
    for (uint32_t j = 0; j < q->hdr->nholds; j++)
        held += q->holds[j].pid != 0 && q->holds[j].ready && q->holds[j].day == h->day &&
                strncmp(q->holds[j].org, h->org, QUOTA_ORG_MAX) == 0;
    return WORD_COUNT(w) >= held ? 0 : 4;
}

/* Check invariants 1-4 with the mutex held; 0 or the first one broken,
 * its org in org (QUOTA_ORG_MAX bytes). */
static int quota_check(struct quota *q, int today, char *org)
{
    uint32_t i, used = 0;
    int which;

    org[0] = '\0';
    for (i = 0; i <= q->mask; i++) {
        const struct quota_entry *e = &q->tab[i];

        name_note(org, QUOTA_ORG_MAX, e->org, sizeof(e->org));
        if (e->seq & 1)
            return 1;
        if (e->seq == 0 && (e->word != 0 || org[0] != '\0'))
            return 2;
        used += e->seq != 0;
        if (e->seq != 0 && org[0] == '\0' && WORD_COUNT(e->word) != 0)
            return 3;
        if (e->seq != 0 && org[0] != '\0' && (which = slot_check(q, i, org)) != 0)
            return which;
    }
    org[0] = '\0';
    if (used != q->hdr->used)
        return 2;
    for (i = 0; i < q->hdr->nholds; i++) {
        name_note(org, QUOTA_ORG_MAX, q->holds[i].org, sizeof(q->holds[i].org));
        if ((which = hold_check(q, i, today)) != 0)
            return which;
    }
    return 0;
}

void quota_check_invariants(struct quota *q)
{
    char org[QUOTA_ORG_MAX];
    int which;

    if (shm_lock_take(&q->guard, 0) != 0)
        invariant_fail("quota: the mutex is unrecoverable");
    which = quota_check(q, (int)(util_now() / 86400), org);
    shm_lock_release(&q->guard);
    if (which != 0)
        invariant_fail("quota %d: org \"%s\"", which, org);
}

void quota_foreach(struct quota *q, quota_foreach_fn fn, void *arg)
{
    uint32_t i;

    for (i = 0; i <= q->mask; i++) {
        struct quota_entry *e = &q->tab[i];
        struct shm_reader rd = { 0, 0, 0 };
        char org[QUOTA_ORG_MAX];
        uint64_t w = 0;

        do {
            if (shm_seq_read_begin(&q->guard, &e->seq, &rd) != 0)
                return;
            memcpy(org, e->org, sizeof(org));
            w = __atomic_load_n(&e->word, __ATOMIC_ACQUIRE);
        } while (!shm_seq_read_end(&q->guard, &e->seq, &rd));
        org[sizeof(org) - 1] = '\0';
        if (rd.seq != 0 && org[0] != '\0')
            fn(org, WORD_DAY(w), WORD_COUNT(w), arg);
    }
}
