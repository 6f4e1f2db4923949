/*
 * breakers.c - the circuit breakers (breakers.h): one open-addressed
 * table in anonymous shared memory, mapped by the supervisor before it
 * forks, like the quota table and the stream slots.
 *
 * Owns: the table's layout, its process-shared robust mutex and the
 * breaker rule (consecutive failures open it for a cooldown; a success
 * closes it; a Retry-After opens it at least that long).
 *
 * Must never: log; touch the database; keep a pointer in shared memory;
 * decide what a failure is (the caller's).
 *
 * Slots. The key is (org, provider, model); its home is FNV-1a of the
 * three, masked. A lookup probes at most BREAKERS_WINDOW slots from home
 * and stops at a never-used one. A used slot is never emptied, so no
 * probe is cut; when a key is new and its window has no never-used slot,
 * it takes the window's closed slot used least recently (its breaker was
 * closed: forgetting it loses at most a few counted failures). If all
 * are open, nothing is counted for the new key: it is treated as closed.
 *
 * Every operation takes the mutex (one uncontended futex: well under a
 * microsecond; twice per model call). A process killed while writing a
 * slot's key leaves it marked S_WRITING; the next locker's repair turns
 * it into a used slot with no org, which matches nothing and is reused
 * first.
 *
 * Invariants:
 *  1. A slot is S_FREE only if it was never used, and then all zero.
 *  2. With the mutex free, no slot is S_WRITING.
 *  3. A key is in at most one slot, within its probe window.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include "state/breakers.h"
#include "lib/hash.h"
#include "lib/invariant.h"
#include "lib/shm_lock.h"
#include "lib/util.h"

#define BREAKERS_MAGIC 0x42524b52u    /* "BRKR" */
#define BREAKERS_WINDOW 16

enum { S_FREE = 0, S_USED = 1, S_WRITING = 2 };

struct breakers_slot {
    uint32_t state;
    int32_t provider;
    uint64_t hash;
    char org[BREAKERS_ORG_MAX];
    char model[BREAKERS_MODEL_MAX];
    int32_t fails;               /* consecutive failures */
    uint64_t open_until_ms;      /* monotonic; 0 or past: closed */
    uint64_t ewma_ms;            /* smoothed latency of successes, 0 = none */
    uint64_t last_ms;            /* last use, for reuse */
};

struct breakers_header {
    uint32_t magic;
    uint32_t version;            /* 1 */
    uint32_t mask;               /* slots - 1 */
    struct shm_lock lock;
};

struct breakers {
    struct breakers_header *hdr;
    struct breakers_slot *slot;
    size_t bytes;
    struct shm_guard guard;
};

static void breakers_repair(void *arg)
{
    struct breakers *b = arg;
    uint32_t i;

    for (i = 0; i <= b->hdr->mask; i++)
        if (b->slot[i].state == S_WRITING) {
            b->slot[i].org[0] = '\0';
            b->slot[i].model[0] = '\0';
            b->slot[i].last_ms = 0;
            b->slot[i].open_until_ms = 0;
            b->slot[i].state = S_USED;
        }
}

int breakers_create(struct breakers **out, int capacity, struct am_error *err)
{
    struct breakers *b;
    uint32_t n = 64;
    size_t bytes;
    void *p;

    *out = NULL;
    while (n < (uint32_t)(capacity > 0 ? capacity : 1) && n < (1u << 24))
        n <<= 1;
    bytes = sizeof(struct breakers_header) + (size_t)n * sizeof(struct breakers_slot);
    p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return error_set(err, AM_EUNAVAILABLE, "breakers: mmap of %zu bytes: %s", bytes,
                         strerror(errno));
    b = xcalloc(1, sizeof(*b));
    b->hdr = p;
    b->slot = (struct breakers_slot *)(b->hdr + 1);
    b->bytes = bytes;
    b->hdr->magic = BREAKERS_MAGIC;
    b->hdr->version = 1;
    b->hdr->mask = n - 1;
    b->guard.lock = &b->hdr->lock;
    b->guard.repair = breakers_repair;
    b->guard.arg = b;
    if (shm_lock_init(&b->hdr->lock) != 0) {
        int e = errno;
        breakers_close(b);
        return error_set(err, AM_EUNAVAILABLE, "breakers: robust mutex: %s", strerror(e));
    }
    *out = b;
    return 0;
}

void breakers_close(struct breakers *b)
{
    if (b == NULL)
        return;
    munmap(b->hdr, b->bytes);
    free(b);
}

static uint64_t key_hash(const char *org, int provider, const char *model)
{
    uint64_t h = hash_fnv1a64(org, strlen(org) + 1);

    h ^= hash_fnv1a64(&provider, sizeof(provider)) * 31u;
    return h ^ hash_fnv1a64(model, strlen(model)) * 131u;
}

static int slot_is(const struct breakers_slot *s, uint64_t h, const char *org, int provider,
                   const char *model)
{
    return s->state == S_USED && s->hash == h && s->provider == provider &&
           strcmp(s->org, org) == 0 && strcmp(s->model, model) == 0;
}

/* The slot of the key, under the mutex; with create, a new or reused one
 * (NULL when the window is all open breakers). */
static struct breakers_slot *find(struct breakers *b, const char *org, int provider,
                                  const char *model, uint64_t now_ms, int create)
{
    uint64_t h = key_hash(org, provider, model);
    struct breakers_slot *s, *reuse = NULL;
    uint32_t i;

    if (strlen(org) >= BREAKERS_ORG_MAX || strlen(model) >= BREAKERS_MODEL_MAX || org[0] == '\0')
        return NULL;    /* a key that cannot be stored whole is never counted */
    for (i = 0; i < BREAKERS_WINDOW; i++) {
        s = &b->slot[(h + i) & b->hdr->mask];
        if (slot_is(s, h, org, provider, model))
            return s;
        if (s->state == S_FREE) {
            reuse = s;      /* a never-used slot ends the probe and is preferred */
            break;
        }
        if (s->open_until_ms <= now_ms && (reuse == NULL || s->last_ms < reuse->last_ms))
            reuse = s;
    }
    if (!create || reuse == NULL)
        return NULL;
    s = reuse;
    s->state = S_WRITING;
    s->hash = h;
    s->provider = provider;
    util_strlcpy(s->org, org, sizeof(s->org));
    util_strlcpy(s->model, model, sizeof(s->model));
    s->fails = 0;
    s->open_until_ms = 0;
    s->ewma_ms = 0;
    s->last_ms = now_ms;
    s->state = S_USED;
    return s;
}

int breakers_is_open(struct breakers *b, const char *org, int provider, const char *model,
                     uint64_t now_ms, uint64_t *ewma_ms)
{
    struct breakers_slot *s;
    int open = 0;

    if (ewma_ms != NULL)
        *ewma_ms = 0;
    if (b == NULL || shm_lock_take(&b->guard, 0) != 0)
        return 0;
    if ((s = find(b, org, provider, model, now_ms, 0)) != NULL) {
        open = s->open_until_ms > now_ms;
        if (ewma_ms != NULL)
            *ewma_ms = s->ewma_ms;
    }
    shm_lock_release(&b->guard);
    return open;
}

static void apply(struct breakers_slot *s, uint64_t now_ms, const struct breakers_outcome *o)
{
    uint64_t until;

    s->last_ms = now_ms;
    if (o->ok) {
        s->fails = 0;
        s->open_until_ms = 0;
        /* never 0: 0 means "no sample yet" */
        s->ewma_ms = s->ewma_ms ? (s->ewma_ms * 7 + o->latency_ms) / 8 : o->latency_ms;
        if (s->ewma_ms == 0)
            s->ewma_ms = 1;
        return;
    }
    until = o->retry_after_ms > 0 ? now_ms + o->retry_after_ms : 0;
    if (++s->fails >= (o->failures > 0 ? o->failures : 1)) {
        s->fails = 0;
        if (now_ms + o->cooldown_ms > until)
            until = now_ms + o->cooldown_ms;
    }
    if (until > s->open_until_ms)
        s->open_until_ms = until;
}

void breakers_record(struct breakers *b, const char *org, int provider, const char *model,
                     uint64_t now_ms, const struct breakers_outcome *o)
{
    struct breakers_slot *s;

    if (b == NULL || shm_lock_take(&b->guard, 0) != 0)
        return;
    if ((s = find(b, org, provider, model, now_ms, 1)) != NULL)
        apply(s, now_ms, o);
    shm_lock_release(&b->guard);
}

void breakers_foreach(struct breakers *b, uint64_t now_ms, breakers_foreach_fn fn, void *arg)
{
    struct breakers_state st;
    uint32_t i;

    if (b == NULL || shm_lock_take(&b->guard, 0) != 0)
        return;
    for (i = 0; i <= b->hdr->mask; i++) {
        const struct breakers_slot *s = &b->slot[i];
        if (s->state != S_USED || s->org[0] == '\0')
            continue;
        st.org = s->org;
        st.provider = s->provider;
        st.model = s->model;
        st.open = s->open_until_ms > now_ms;
        st.fails = s->fails;
        st.open_for_ms = st.open ? s->open_until_ms - now_ms : 0;
        st.ewma_ms = s->ewma_ms;
        fn(&st, arg);
    }
    shm_lock_release(&b->guard);
}

/* Invariant 1: a never-used slot is all zero. */
static int slot_is_zero(const struct breakers_slot *s)
{
    static const struct breakers_slot zero;

    return memcmp(s, &zero, sizeof(zero)) == 0;
}

void breakers_check_invariants(struct breakers *b)
{
    uint32_t i, j, home;

    if (b == NULL)
        return;
    if (b->hdr->magic != BREAKERS_MAGIC || b->hdr->version != 1)
        invariant_fail("breakers: bad magic or version");
    if (shm_lock_take(&b->guard, 0) != 0)
        invariant_fail("breakers: the mutex is unrecoverable");
    for (i = 0; i <= b->hdr->mask; i++) {
        const struct breakers_slot *s = &b->slot[i];
        if (s->state == S_FREE && !slot_is_zero(s))
            invariant_fail("breakers 1: slot %u is free but written", i);
        if (s->state == S_WRITING)
            invariant_fail("breakers 2: slot %u is half-written, the mutex free", i);
        if (s->state != S_USED || s->org[0] == '\0')
            continue;
        if (s->hash != key_hash(s->org, s->provider, s->model))
            invariant_fail("breakers 3: slot %u: org \"%s\" has another key's hash", i, s->org);
        home = (uint32_t)(s->hash & b->hdr->mask);
        if (((i - home) & b->hdr->mask) >= BREAKERS_WINDOW)
            invariant_fail("breakers 3: org \"%s\" outside its probe window", s->org);
        for (j = home; j != i; j = (j + 1) & b->hdr->mask)
            if (b->slot[j].state == S_FREE || slot_is(&b->slot[j], s->hash, s->org,
                                                      s->provider, s->model))
                invariant_fail("breakers 3: org \"%s\" unreachable or twice", s->org);
    }
    shm_lock_release(&b->guard);
}
