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
 * Generations. The table's counts are exact only while this host is the
 * one that counts (in a replication group, the master). When it becomes
 * master again, another master may have counted meanwhile, so
 * quota_invalidate makes every count unknown: it bumps the header's `gen`
 * and then re-tags every used slot's word (same day and count, tag + 1).
 * Each slot records the generation it was loaded in (its `gen`, written
 * under its seq with the slug); find_or_claim uses a slot only if that is
 * the header's generation, read AFTER the slot's word, and otherwise loads
 * the count again and re-keys the slot in place under the mutex (tag + 1,
 * the loaded count, the day not moved back), exactly as a first claim of
 * the day. A take that read the slot before the invalidation cannot land
 * after it: the re-tag makes its CAS fail and it finds the slot again; one
 * that reads the re-tagged word sees the new header generation (it was
 * stored before the re-tag). Invalidating takes no lock: a claim that
 * stamps a generation the header has left meanwhile leaves a slot the
 * next taker loads again.
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
 * the side of the limit. A hold also records the generation its run was
 * counted in (the taking thread's last take, see `last`): a run is given
 * back only to the slot loaded in that generation, never to a count
 * loaded again from the database since, which does not hold it. So a run
 * in flight across an invalidation settles normally, and giving it back
 * after the reload leaves the reloaded count alone (on the side of the
 * limit: the database never had it, nor has the new count).
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
 *     than today; if its org's slot counts that day and was loaded in the
 *     hold's generation, the count is at least the number of ready holds
 *     on (org, day) of that generation (each was taken there and is given
 *     back at most once); its org's slot never counts an earlier day (a
 *     slot's day only moves forward while its org keeps it, reloads too).
 *  5. No slot and no ready hold has a generation after the header's (the
 *     header's only grows; a slot is stamped with one read from it).
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

#define QUOTA_SLOT_ORG    (QUOTA_ORG_MAX - 4)   /* a slot's slug: room for its gen */

struct quota_entry {
    uint64_t word;              /* day | tag | count; CAS only */
    uint32_t seq;               /* 0: never used; odd: being re-keyed (shm_seq_*) */
    uint32_t hash;
    uint32_t gen;               /* the generation its count was loaded in */
    char org[QUOTA_SLOT_ORG];
};

_Static_assert(sizeof(struct quota_entry) == 64, "a slot is one cache line");

struct quota_hold {             /* two cache lines: no two threads' holds share one */
    _Alignas(128) int32_t pid;  /* holder; 0: free; CAS to claim */
    int32_t ready;              /* org and day are written */
    int32_t day;
    uint32_t gen;               /* the generation the run was counted in */
    char org[QUOTA_ORG_MAX];
    char trace[QUOTA_TRACE_MAX];  /* "" until the run is about to settle */
};

struct quota_header {
    uint32_t nholds;
    uint32_t nslots;            /* power of two */
    uint32_t used;              /* slots with seq != 0; under the mutex */
    uint32_t gen;               /* bumped by quota_invalidate; atomic */
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

/* This thread's last run: what quota_take counted (or quota_release
 * freed) last, so that quota_hold and quota_give_back, which name only the
 * org and the day, learn the generation that run was counted in. */
static _Thread_local struct {
    const struct quota *q;
    uint32_t hash;
    int day;
    uint32_t gen;
} last;

static uint32_t org_hash(const char *org)
{
    return hash_fnv1a32(org, strlen(org));
}

static uint32_t header_gen(const struct quota *q)
{
    return __atomic_load_n(&q->hdr->gen, __ATOMIC_ACQUIRE);
}

static void last_set(const struct quota *q, uint32_t h, int day, uint32_t gen)
{
    last.q = q;
    last.hash = h;
    last.day = day;
    last.gen = gen;
}

/* 1 and *gen if this thread's last run was org's on day in q. */
static int last_get(const struct quota *q, uint32_t h, int day, uint32_t *gen)
{
    if (last.q != q || last.hash != h || last.day != day)
        return 0;
    *gen = last.gen;
    return 1;
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
 * Find org's slot. Returns it with *word and *gen (if not NULL) read
 * consistently with the slug, or NULL when org has no slot. *reusable (if
 * not NULL) gets the first slot on the probe path whose day is before
 * `day`, else NULL.
 */
static struct quota_entry *lookup(struct quota *q, const char *org, uint32_t h, int day,
                                  uint64_t *word, uint32_t *gen, struct quota_entry **reusable)
{
    uint32_t i;

    if (reusable != NULL)
        *reusable = NULL;
    for (i = 0; i <= q->mask; i++) {
        struct quota_entry *e = &q->tab[(h + i) & q->mask];
        struct shm_reader rd = { 0, 0, 0 };
        char slug[QUOTA_SLOT_ORG];
        uint32_t eh = 0, eg = 0;
        uint64_t w = 0;

        do {
            /* past the spin limit this tries the mutex, which repairs
             * the slot if its writer died */
            if (shm_seq_read_begin(&q->guard, &e->seq, &rd) != 0)
                return NULL;
            if (rd.seq == 0)
                continue;
            eh = e->hash;
            eg = e->gen;
            memcpy(slug, e->org, sizeof(slug));
            w = __atomic_load_n(&e->word, __ATOMIC_ACQUIRE);
        } while (!shm_seq_read_end(&q->guard, &e->seq, &rd));
        if (rd.seq == 0)
            return NULL;
        slug[sizeof(slug) - 1] = '\0';
        if (eh == h && strcmp(slug, org) == 0) {
            *word = w;
            if (gen != NULL)
                *gen = eg;
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

/* The first never-used slot on org's probe path, or NULL (mutex held). */
static struct quota_entry *first_unused(struct quota *q, uint32_t h)
{
    for (uint32_t i = 0; i <= q->mask; i++)
        if (__atomic_load_n(&q->tab[(h + i) & q->mask].seq, __ATOMIC_RELAXED) == 0)
            return &q->tab[(h + i) & q->mask];
    return NULL;
}

/*
 * With the mutex: give org (hash h) a slot counting `loaded` runs on day,
 * loaded in generation g: its own slot if it has one of an earlier
 * generation (re-keyed in place), else a stale or never-used one. Returns
 * 0 with *out, *word and *gen set (somebody else's slot of generation g
 * wins over `loaded`), 1 when org must load again (the header left g, or
 * its slot moved to a later day), AM_EUNAVAILABLE or the mutex's error.
 */
static int claim(struct quota *q, const char *org, uint32_t h, int day, uint32_t g,
                 int64_t loaded, struct quota_entry **out, uint64_t *word, uint32_t *gen)
{
    struct quota_entry *e, *reuse;
    uint64_t w, old;
    int rc, own;

    if ((rc = shm_lock_take(&q->guard, 0)) != 0)
        return rc;
again:
    rc = 1;
    if (header_gen(q) != g)
        goto out;                       /* invalidated since the load */
    e = lookup(q, org, h, day, word, gen, &reuse);
    if ((own = e != NULL) && *gen == g) {
        *out = e;
        rc = 0;
        goto out;
    }
    if (!own && reuse != NULL) {
        e = reuse;
    } else if (!own) {
        /* Keep never-used slots so probes stay short, unless slots of
         * earlier days wait elsewhere: a new day is never refused for a
         * table of yesterday's orgs (longer probes pass more of them). */
        e = first_unused(q, h);
        rc = AM_EUNAVAILABLE;
        if (e == NULL || ((uint64_t)(q->hdr->used + 1) * 4 > (uint64_t)(q->mask + 1) * 3 &&
                          !any_stale(q, day)))
            goto out;
        q->hdr->used++;
    }
    shm_seq_write_begin(&e->seq);
    /* A CAS, not a store: the old owner may count its first run of today
     * on a reused slot until the new tag lands; then the slot is not
     * stale any more and stays its. Org's own slot keeps its day if a
     * later one came (then the count loaded is of the wrong day). */
    old = __atomic_load_n(&e->word, __ATOMIC_RELAXED);
    do {
        if ((!own && WORD_DAY(old) >= day && e == reuse) || (own && WORD_DAY(old) > day)) {
            shm_seq_write_end(&e->seq);
            if (own)
                goto out;
            goto again;
        }
        w = WORD(day, WORD_TAG(old) + 1u, (uint64_t)loaded);
    } while (!__atomic_compare_exchange_n(&e->word, &old, w, 0, __ATOMIC_ACQ_REL,
                                          __ATOMIC_RELAXED));
    e->hash = h;
    e->gen = g;
    memset(e->org, 0, sizeof(e->org));
    memcpy(e->org, org, strnlen(org, sizeof(e->org) - 1));
    shm_seq_write_end(&e->seq);
    *word = w;
    *gen = g;
    *out = e;
    rc = 0;
out:
    shm_lock_release(&q->guard);
    return rc;
}

/*
 * Find org's slot of the header's generation, creating it or loading it
 * again (count from load) if it has none. Returns 0 with *out, *word and
 * *gen set, AM_EUNAVAILABLE when no slot is free, or load's error.
 */
static int find_or_claim(struct quota *q, const char *org, int day, quota_load_fn load,
                         void *arg, struct quota_entry **out, uint64_t *word, uint32_t *gen)
{
    uint32_t h = org_hash(org), g;
    int64_t loaded;
    int rc, lday;

    if (strlen(org) >= QUOTA_SLOT_ORG)
        return AM_EINTERNAL;
    do {
        /* the header's generation after the slot's word (DESIGN) */
        *out = lookup(q, org, h, day, word, gen, NULL);
        g = header_gen(q);
        if (*out != NULL && *gen == g)
            return 0;
        /* an earlier generation's slot of a later day: load that day */
        lday = *out != NULL && WORD_DAY(*word) > day ? WORD_DAY(*word) : day;
        loaded = 0;
        if ((rc = load(org, lday, &loaded, arg)) != 0)
            return rc;
        if (loaded < 0)
            loaded = 0;
        if (loaded > 0x7fffffff)
            loaded = 0x7fffffff;
    } while ((rc = claim(q, org, h, lday, g, loaded, out, word, gen)) == 1);
    return rc;
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
    uint32_t gen;
    int rc;

again:
    *count = 0;
    if ((rc = find_or_claim(q, org, *day, load, arg, &e, &w, &gen)) != 0)
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
    last_set(q, e->hash, *day, gen);
    return 0;
}

/* Give back a run of org on day counted in generation gen (any: in
 * whatever the slot counts). A reload or an invalidation re-tags the
 * slot, so a give-back racing one does nothing. Returns 1 if given. */
static int give_back_gen(struct quota *q, const char *org, int day, uint32_t gen, int any)
{
    struct quota_entry *e;
    uint64_t w, tag;
    uint32_t eg;

    if ((e = lookup(q, org, org_hash(org), day, &w, &eg, NULL)) == NULL || (!any && eg != gen))
        return 0;
    tag = WORD_TAG(w);
    while (WORD_TAG(w) == tag && WORD_DAY(w) == day && WORD_COUNT(w) > 0)
        if (__atomic_compare_exchange_n(&e->word, &w, w - 1, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE))
            return 1;
    return 0;
}

void quota_give_back(struct quota *q, const char *org, int day)
{
    uint32_t gen = 0;
    int known = last_get(q, org_hash(org), day, &gen);

    give_back_gen(q, org, day, gen, !known);
}

void quota_invalidate(struct quota *q)
{
    if (q == NULL)
        return;
    /* the generation first: a take that reads a re-tagged word sees it */
    __atomic_add_fetch(&q->hdr->gen, 1u, __ATOMIC_SEQ_CST);
    for (uint32_t i = 0; i <= q->mask; i++) {
        struct quota_entry *e = &q->tab[i];
        uint64_t w;

        if (__atomic_load_n(&e->seq, __ATOMIC_ACQUIRE) == 0)
            continue;   /* a claim in progress stamps an older generation at worst */
        w = __atomic_load_n(&e->word, __ATOMIC_RELAXED);
        while (!__atomic_compare_exchange_n(&e->word, &w,
                                            WORD(WORD_DAY(w), WORD_TAG(w) + 1u, WORD_COUNT(w)),
                                            0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
            ;
    }
}

int quota_count(struct quota *q, const char *org, int day, quota_load_fn load, void *arg,
                int64_t *count)
{
    struct quota_entry *e;
    uint64_t w;
    int rc;

    uint32_t gen;

    *count = 0;
    if ((rc = find_or_claim(q, org, day, load, arg, &e, &w, &gen)) != 0)
        return rc;
    *count = WORD_DAY(w) == day ? WORD_COUNT(w) : 0;
    return 0;
}

/* ---- holds ------------------------------------------------------------------- */

int quota_hold(struct quota *q, const char *org, int day)
{
    static _Thread_local uint32_t hint;   /* where this thread found one last */
    int32_t me = (int32_t)getpid();
    uint32_t i, n = q->hdr->nholds, gen;

    if (!last_get(q, org_hash(org), day, &gen))
        gen = header_gen(q);

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
        h->gen = gen;
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
    struct quota_hold *h;

    if (hold < 0 || (uint32_t)hold >= q->hdr->nholds)
        return;
    h = &q->holds[hold];
    if (__atomic_load_n(&h->ready, __ATOMIC_ACQUIRE))
        last_set(q, org_hash(h->org), h->day, h->gen);   /* for a give-back next */
    hold_free(h);
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
        uint32_t gen;
        int day, owed;

        if (p == 0 || (pid != 0 && p != pid))
            continue;
        owed = __atomic_load_n(&h->ready, __ATOMIC_ACQUIRE) &&
               (h->trace[0] == '\0' || !settled(h->trace, arg));
        memcpy(org, h->org, sizeof(org));
        org[sizeof(org) - 1] = '\0';
        day = h->day;
        gen = h->gen;
        /* freed first: a reclaimer killed in between leaves the run
         * counted, never given back twice */
        hold_free(h);
        /* owed to the count it was taken from: nothing is given back
         * if the slot counts another day or was loaded again since */
        if (owed) {
            give_back_gen(q, org, day, gen, 0);
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

        if (p->seq == 0 || (p->hash == h && strncmp(p->org, org, sizeof(p->org)) == 0))
            return 3;   /* unreachable, or a second slot for org */
    }
    return 0;
}

/* 1 if generation a is after b (both from the header's, which wraps). */
static int gen_after(uint32_t a, uint32_t b)
{
    return (int32_t)(a - b) > 0;
}

/* Invariants 4 and 5 for hold k. */
static int hold_check(struct quota *q, uint32_t k, int today)
{
    const struct quota_hold *h = &q->holds[k];
    struct quota_entry *e;
    uint64_t w;
    uint32_t eg;
    int64_t held = 0;

    if (h->pid == 0)
        return h->ready ? 4 : 0;
    if (!h->ready)
        return 0;
    if (memchr(h->org, '\0', sizeof(h->org)) == NULL || h->day > today)
        return 4;
    if (gen_after(h->gen, q->hdr->gen))
        return 5;
    if ((e = lookup(q, h->org, org_hash(h->org), 0, &w, &eg, NULL)) == NULL ||
        WORD_DAY(w) > h->day)
        return 0;       /* the org moved on; its slot may have gone to another */
    if (WORD_DAY(w) < h->day)
        return 4;
    if (eg != h->gen)
        return 0;       /* loaded again since: the database's count stands */
    for (uint32_t j = 0; j < q->hdr->nholds; j++)
        held += q->holds[j].pid != 0 && q->holds[j].ready && q->holds[j].day == h->day &&
                q->holds[j].gen == eg && strncmp(q->holds[j].org, h->org, QUOTA_ORG_MAX) == 0;
    return WORD_COUNT(w) >= held ? 0 : 4;
}

/* Check invariants 1-5 with the mutex held; 0 or the first one broken,
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
        if (gen_after(e->gen, q->hdr->gen))
            return 5;
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
        char org[QUOTA_SLOT_ORG];
        uint64_t w = 0;
        uint32_t gen = 0;

        do {
            if (shm_seq_read_begin(&q->guard, &e->seq, &rd) != 0)
                return;
            memcpy(org, e->org, sizeof(org));
            gen = e->gen;
            w = __atomic_load_n(&e->word, __ATOMIC_ACQUIRE);
        } while (!shm_seq_read_end(&q->guard, &e->seq, &rd));
        org[sizeof(org) - 1] = '\0';
        /* a count of an earlier generation is unknown: left out */
        if (rd.seq != 0 && org[0] != '\0' && gen == header_gen(q))
            fn(org, WORD_DAY(w), WORD_COUNT(w), arg);
    }
}
