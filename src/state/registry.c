/*
 * registry.c - the shared runtime registry: a fixed-capacity hash table of
 * the deployed agents, kept in one POSIX shared-memory segment.
 *
 * Owns: the segment (created and unlinked by the supervisor, mapped by every
 * worker, inherited across fork or attached by name), its layout (a compact
 * index and a separate payload area), the writers' process-shared robust
 * mutex inside it, the seqlock that lets readers copy entries without taking
 * that mutex (both locked and bumped through lib/shm_lock.c; the repair after
 * a dead writer, registry_recover, is this file's).
 *
 * Must never: log (callers get a code, and an am_error where the signature
 * has one); touch the database (store.c is the source of truth and the
 * supervisor reconciles the two); hand out a pointer into the segment
 * (readers get private malloc'd copies); run a caller's callback or do I/O
 * while holding the mutex.
 *
 * DESIGN
 *
 * Layout. A header (struct registry_shm_header) at offset 0; then the index,
 * `nslots` entries of struct registry_shm_entry (state, key, hash,
 * generation, version, deployed_at, yaml_len: everything a probe, contains,
 * count or foreach reads); then, page aligned, the payload area: `nslots`
 * payload slots of `payload_stride` bytes (slot_bytes rounded up to
 * REGISTRY_PAGE), payload slot i holding the YAML of index entry i.
 * nslots is a power of two at least twice the capacity, so the table is at
 * most half full of live entries and linear probes stay short. The segment is
 * sized with ftruncate, so tmpfs only backs the pages that are touched: the
 * index (160 bytes a slot, 1.25 MiB at the default 8192 slots) and each
 * loaded agent's YAML. Scans never touch the payload area, so an empty or
 * sparse registry costs its index, not slots * slot_bytes.
 *
 * Payload pages go back to the kernel. Whenever a slot stops being USED
 * (unload, a compaction move, a recovery drop) its whole payload slot, and
 * after every load the payload pages past the new yaml_len, are released
 * with madvise(MADV_REMOVE), which punches a hole in the tmpfs object for
 * every process at once; a later read sees zeros. The release is a change
 * to the entry like any other: it happens under the mutex with `seq` odd,
 * so a reader that copied zeros mid-release fails its `seq` re-check and
 * retries. (tmpfs allocates a page on a read fault, so such a reader can
 * fault a released page back in; that costs memory, never correctness, and
 * the slot's next release or load trims it again.)
 *
 * Lookup is open addressing with linear probing from the home slot
 * (FNV-1a(key) & mask). Unload leaves a tombstone unless the next slot is
 * empty, in which case the slot and any tombstones just before it become
 * empty. When live entries plus tombstones pass 3/4 of the slots, the writer
 * compacts in place: tombstones become empty and entries are moved back
 * towards their home slot until every one is reachable again.
 *
 * Writers (load, unload) take the mutex, make `seq` odd, mutate, make `seq`
 * even, unlock. The mutex is held only for that memcpy-sized mutation (and
 * the madvise that releases payload pages).
 *
 * Readers (get, contains, count, foreach) never take the mutex on the fast
 * path: they load `seq` (acquire); if it is odd they retry; otherwise they
 * probe and copy what they need into private memory, issue an acquire fence
 * and re-load `seq`. A changed `seq` means a write overlapped: the copy is
 * discarded and the read retried. Every length read from the segment is
 * checked against the handle's own copy of the geometry before it is used,
 * and every probe is bounded by nslots, so a torn read can produce a wrong
 * answer (which the re-check rejects) but never an overrun or a hang.
 *
 * A reader must not wait forever on a writer that died with `seq` odd. After
 * REGISTRY_SPIN_LIMIT retries it starts trying the mutex (trylock, so it
 * still never blocks behind a live writer): a live writer makes trylock fail
 * and the reader backs off and retries; a dead one makes it succeed with
 * EOWNERDEAD, the reader repairs the table (below) and reads under the lock.
 *
 * Writer death. A process that dies holding the mutex may leave `seq` odd,
 * the entry it was writing half-written, and (mid-compaction) an entry
 * duplicated or unreachable. The next process to lock gets EOWNERDEAD and
 * runs registry_recover(): if `seq` is odd it drops the entry named by
 * `write_slot` (the one being changed); it drops any entry whose fields are
 * out of range, turns tombstones into empty slots, moves entries until all
 * are reachable, removes duplicate keys, recounts, releases the payload
 * pages no entry uses, makes `seq` even, and the locker then marks the mutex
 * consistent.
 * Dropping is deliberate: the registry never serves a half-written agent.
 * After a worker dies the supervisor reconciles the registry against the
 * database, which re-loads whatever was dropped.
 *
 * INVARIANTS (2 and 4-6 checked by table_check after every recovery and by
 * the unit tests after every operation, and by registry_check_invariants,
 * which aborts naming the invariant and the key, in invariant builds)
 *
 *  1. The segment holds no pointers. Its geometry (capacity, nslots,
 *     slot_bytes, entry_bytes, payload_off, payload_stride, total_bytes) is
 *     fixed at create; each handle keeps its own validated copy and never
 *     re-reads it from the segment.
 *  2. `seq` is even exactly when no write is in progress. It changes only
 *     while the mutex is held, and every change to an entry or to the
 *     header's counters happens between its odd and even increments.
 *  3. Readers trust nothing they copied until `seq` was even before the copy
 *     and unchanged after it (or they held the mutex). Lengths from the
 *     segment are bounded before use; probes visit at most nslots slots.
 *  4. Every USED entry is reachable from its home slot by linear probing
 *     without crossing an EMPTY slot, and no key is USED twice.
 *  5. count == number of USED slots <= capacity; tombstones == number of
 *     TOMB slots; after every write (count + tombstones) * 4 <= nslots * 3,
 *     so an EMPTY slot always exists and every probe ends.
 *  6. last_generation only grows; each load stamps the entry with a new one,
 *     so (key, generation) names one loaded body for the segment's lifetime.
 *  7. While a writer mutates an entry, `seq` is odd and `write_slot` names
 *     the entry; a writer that dies mid-change therefore loses exactly that
 *     agent (and nothing else), which the supervisor's reconcile restores
 *     from the database. With `seq` even nothing is dropped.
 *  8. The mutex is robust and process-shared; whoever gets EOWNERDEAD repairs
 *     invariants 2-7 before calling pthread_mutex_consistent, so it never
 *     becomes ENOTRECOVERABLE.
 *  9. A payload slot has no resident pages past what its entry uses: past
 *     yaml_len for a USED slot, none at all otherwise. Releases happen with
 *     the mutex held and `seq` odd (invariant 2). This one is best effort,
 *     not checked: a reader racing a release may fault pages back in (see
 *     above), and a writer that dies mid-compaction leaves pages behind
 *     until recovery trims every slot.
 *
 * Thread safety: a struct registry handle is read-only after create/attach
 * and may be shared by all threads of a process.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "state/registry.h"
#include "lib/hash.h"
#include "lib/invariant.h"
#include "lib/shm_lock.h"
#include "lib/util.h"

#define REGISTRY_MAGIC          UINT64_C(0x414d52454753484d) /* "AMREGSHM" */
#define REGISTRY_LAYOUT_VERSION 4u        /* 2: index and payload areas split; 3: 32-bit seq,
                                              shm_lock; 4: no auth_epoch (auth_state.c) */
#define REGISTRY_ALIGN          64u        /* bytes: index offset multiple; the mutex's own line */
#define REGISTRY_PAGE           4096u      /* bytes: payload area offset and stride multiple */
#define REGISTRY_MIN_SLOTS      8u         /* slots: smallest probe table */
#define REGISTRY_CAPACITY_MAX   (1 << 20)  /* agents */
#define REGISTRY_SLOT_BYTES_MAX ((size_t)64 << 20) /* bytes of YAML per entry */
#define REGISTRY_NO_SLOT        UINT64_MAX
#define REGISTRY_SPIN_BUSY      16u        /* reader retries before sched_yield */
#define REGISTRY_SPIN_LIMIT     1000u      /* reader retries before trying the mutex */
#define REGISTRY_BACKOFF_NS     20000L     /* ns: reader nap while a live writer holds it */
#define REGISTRY_NAME_MAX       255        /* bytes: shm name, without the NUL */

enum registry_slot_state {
    SLOT_EMPTY = 0,  /* never used since the last compaction; ends a probe */
    SLOT_USED = 1,   /* holds a loaded agent */
    SLOT_TOMB = 2    /* was used; probes continue past it */
};

/* Segment header, at offset 0. Fields after `total_bytes` change only under
 * the mutex with `seq` odd (except `seq` itself). */
struct registry_shm_header {
    uint64_t magic;           /* REGISTRY_MAGIC, stored last by create (release) */
    uint32_t layout_version;  /* REGISTRY_LAYOUT_VERSION */
    uint32_t header_bytes;    /* bytes: sizeof(struct registry_shm_header); catches ABI drift */
    uint64_t capacity;        /* agents: most USED entries allowed */
    uint64_t nslots;          /* slots: probe table length, power of two >= 2 * capacity */
    uint64_t slot_bytes;      /* bytes: largest YAML one entry holds */
    uint64_t entry_bytes;     /* bytes: sizeof(struct registry_shm_entry), one index entry */
    uint64_t payload_off;     /* bytes: offset of the payload area, multiple of REGISTRY_PAGE */
    uint64_t payload_stride;  /* bytes: one payload slot, slot_bytes rounded up to REGISTRY_PAGE */
    uint64_t total_bytes;     /* bytes: size of the whole segment */
    uint32_t seq;             /* counter: seqlock, odd while a write is in progress (atomic; shm_seq_*) */
    uint32_t seq_pad;         /* unused, zero: keeps the fields below 64-bit aligned */
    uint64_t count;           /* agents: USED entries (atomic loads by readers) */
    uint64_t tombstones;      /* slots: TOMB entries */
    uint64_t last_generation; /* counter: generation handed to the latest load */
    uint64_t write_slot;      /* slot index: entry the in-flight write changes, or REGISTRY_NO_SLOT */
    uint64_t recoveries;      /* counter: repairs after a writer died holding the mutex */
    _Alignas(REGISTRY_ALIGN) struct shm_lock lock; /* opaque: process-shared robust mutex taken by writers */
};

/* One index entry: everything about a slot except its YAML, which lives in
 * payload slot i (slot_payload). Probe fields first, so a lookup of a short
 * key reads one cache line. */
struct registry_shm_entry {
    uint32_t state;             /* enum registry_slot_state (atomic) */
    uint32_t key_len;           /* bytes: strlen(key), 1 .. REGISTRY_KEY_MAX - 1 */
    uint64_t hash;              /* FNV-1a 64 of key (unitless); home slot is hash & (nslots - 1) */
    char key[REGISTRY_KEY_MAX]; /* "org__name", NUL-padded */
    uint64_t generation;        /* counter: last_generation at this load */
    uint64_t version;           /* counter: agent config version the YAML was compiled from */
    int64_t deployed_at;        /* epoch seconds */
    uint64_t yaml_len;          /* bytes of the payload slot in use, <= slot_bytes */
};

_Static_assert(sizeof(struct registry_shm_entry) % 8 == 0,
               "index entries must keep their 64-bit fields aligned");

struct registry {
    struct registry_shm_header *hdr; /* start of the MAP_SHARED mapping */
    struct registry_shm_entry *index;/* first index entry, inside the mapping */
    unsigned char *payload;          /* first payload slot, inside the mapping */
    size_t map_bytes;                /* bytes mapped */
    size_t page_bytes;               /* bytes: this system's page size, for madvise */
    uint64_t capacity;               /* agents (validated copy of the header's) */
    uint64_t nslots;                 /* slots (validated copy) */
    uint64_t mask;                   /* nslots - 1 */
    uint64_t slot_bytes;             /* bytes (validated copy) */
    uint64_t payload_off;            /* bytes (validated copy) */
    uint64_t payload_stride;         /* bytes (validated copy) */
    struct shm_guard guard;          /* the mutex in hdr, registry_recover, reader patience */
    char name[REGISTRY_NAME_MAX + 1];/* shm name, for unlink at close */
};

struct registry_geometry {
    uint64_t nslots;         /* slots */
    uint64_t index_off;      /* bytes: offset of the first index entry */
    uint64_t payload_off;    /* bytes: offset of the first payload slot */
    uint64_t payload_stride; /* bytes: one payload slot */
    uint64_t total_bytes;    /* bytes */
};

/* ---- small helpers ------------------------------------------------------- */

static uint64_t round_up(uint64_t n, uint64_t a)
{
    return (n + a - 1) / a * a;
}

static uint64_t key_hash(const char *key, size_t len)
{
    return hash_fnv1a64(key, len);
}

/* 1 and *len_out if key is a usable registry key, else 0. */
static int key_ok(const char *key, size_t *len_out)
{
    size_t n;

    if (key == NULL)
        return 0;
    n = strnlen(key, REGISTRY_KEY_MAX);
    if (n == 0 || n >= REGISTRY_KEY_MAX)
        return 0;
    *len_out = n;
    return 1;
}

/* Compute the layout for (capacity, slot_bytes); 0, or -1 if out of range. */
static int geometry_for(uint64_t capacity, uint64_t slot_bytes,
                        struct registry_geometry *g /* OUT */)
{
    uint64_t n = REGISTRY_MIN_SLOTS;

    if (capacity < 1 || capacity > REGISTRY_CAPACITY_MAX ||
        slot_bytes < 1 || slot_bytes > REGISTRY_SLOT_BYTES_MAX)
        return -1;
    while (n < 2 * capacity)
        n <<= 1;
    g->nslots = n;
    g->index_off = round_up(sizeof(struct registry_shm_header), REGISTRY_ALIGN);
    g->payload_off = round_up(g->index_off + n * sizeof(struct registry_shm_entry),
                              REGISTRY_PAGE);
    g->payload_stride = round_up(slot_bytes, REGISTRY_PAGE);
    g->total_bytes = g->payload_off + n * g->payload_stride; /* < 2^48 by the bounds */
    if ((uint64_t)(size_t)g->total_bytes != g->total_bytes ||
        (uint64_t)(off_t)g->total_bytes != g->total_bytes)
        return -1;
    return 0;
}

static struct registry_shm_entry *slot_at(const struct registry *r, uint64_t i)
{
    return &r->index[i];
}

/* Payload slot i: the YAML of index entry i, payload_stride bytes. */
static unsigned char *slot_payload(const struct registry *r, uint64_t i)
{
    return r->payload + i * r->payload_stride;
}

static uint32_t slot_state(const struct registry *r, uint64_t i)
{
    return __atomic_load_n(&slot_at(r, i)->state, __ATOMIC_RELAXED);
}

/* Writers publish a state only after the entry's body is in place. */
static void slot_set_state(const struct registry *r, uint64_t i, uint32_t st)
{
    __atomic_store_n(&slot_at(r, i)->state, st, __ATOMIC_RELEASE);
}

/*
 * Probe for key. Returns the slot of its USED entry, or REGISTRY_NO_SLOT.
 * If free_out is not NULL it gets the first TOMB or EMPTY slot on the probe
 * path (where an insert of key belongs), or REGISTRY_NO_SLOT. Safe on a torn
 * view: visits at most nslots slots and compares at most key_len bytes.
 */
static uint64_t table_find(const struct registry *r, const char *key, size_t klen,
                           uint64_t h, uint64_t *free_out /* OUT */)
{
    uint64_t i = h & r->mask, free_slot = REGISTRY_NO_SLOT, found = REGISTRY_NO_SLOT;

    for (uint64_t n = 0; n < r->nslots; n++, i = (i + 1) & r->mask) {
        struct registry_shm_entry *e = slot_at(r, i);
        uint32_t st = __atomic_load_n(&e->state, __ATOMIC_RELAXED);

        if (st != SLOT_USED) {
            if (free_slot == REGISTRY_NO_SLOT)
                free_slot = i;
            if (st == SLOT_EMPTY)
                break;
            continue;
        }
        if (__atomic_load_n(&e->hash, __ATOMIC_RELAXED) == h &&
            __atomic_load_n(&e->key_len, __ATOMIC_RELAXED) == klen &&
            memcmp(e->key, key, klen) == 0) {
            found = i;
            break;
        }
    }
    if (free_out != NULL)
        *free_out = free_slot;
    return found;
}

/* ---- writer side ---------------------------------------------------------- */

static void write_begin(struct registry *r, uint64_t slot)
{
    struct registry_shm_header *h = r->hdr;

    assert((__atomic_load_n(&h->seq, __ATOMIC_RELAXED) & 1) == 0);
    /* seq goes odd before write_slot is named (the fence keeps that
     * order), so recovery that finds seq even knows nothing was being
     * changed. */
    shm_seq_write_begin(&h->seq);
    __atomic_store_n(&h->write_slot, slot, __ATOMIC_RELEASE);
    /* Both become visible before any change below. */
    __atomic_thread_fence(__ATOMIC_RELEASE);
}

static void write_end(struct registry *r)
{
    struct registry_shm_header *h = r->hdr;

    assert((__atomic_load_n(&h->seq, __ATOMIC_RELAXED) & 1) == 1);
    /* Release: every change made since write_begin lands before these. */
    __atomic_store_n(&h->write_slot, REGISTRY_NO_SLOT, __ATOMIC_RELEASE);
    shm_seq_write_end(&h->seq);
}

/*
 * Give back the whole pages of the segment between byte offsets `from` and
 * `to`: tmpfs frees them for every process and later reads see zeros. Best
 * effort: where hole punching is unsupported this only costs memory.
 * Mutex held, seq odd (invariant 9).
 */
static void payload_release(const struct registry *r, uint64_t from, uint64_t to)
{
    uint64_t a = round_up(from, r->page_bytes), b = to / r->page_bytes * r->page_bytes;

    if (a < b)
        (void)madvise((unsigned char *)r->hdr + a, (size_t)(b - a), MADV_REMOVE);
}

/* Release slot i's payload pages past its first `keep` bytes (all of them
 * when keep is 0). Mutex held, seq odd. */
static void payload_trim(const struct registry *r, uint64_t i, uint64_t keep)
{
    uint64_t base = r->payload_off + i * r->payload_stride;

    payload_release(r, base + keep, base + r->payload_stride);
}

/* Trim every payload slot to what its entry uses, in as few madvise calls
 * as there are USED slots (runs of unused space are released together).
 * Only recovery needs this; entries must already be valid. */
static void payload_trim_all(const struct registry *r)
{
    uint64_t run = r->payload_off;   /* start of the unused run being built */

    for (uint64_t i = 0; i < r->nslots; i++) {
        uint64_t base = r->payload_off + i * r->payload_stride;

        if (slot_state(r, i) != SLOT_USED || slot_at(r, i)->yaml_len == 0)
            continue;
        payload_release(r, run, base);
        run = base + slot_at(r, i)->yaml_len;
    }
    payload_release(r, run, r->payload_off + r->nslots * r->payload_stride);
}

/* Copy entry `from` into the EMPTY slot `to`, publish it, then empty `from`
 * and release its payload. A death in between leaves a duplicate, never a
 * loss; recovery dedupes. */
static void slot_move(struct registry *r, uint64_t from, uint64_t to)
{
    struct registry_shm_entry *src = slot_at(r, from), *dst = slot_at(r, to);
    size_t off = offsetof(struct registry_shm_entry, key_len);

    memcpy((unsigned char *)dst + off, (const unsigned char *)src + off,
           sizeof *dst - off);
    memcpy(slot_payload(r, to), slot_payload(r, from), (size_t)src->yaml_len);
    slot_set_state(r, to, SLOT_USED);
    slot_set_state(r, from, SLOT_EMPTY);
    payload_trim(r, from, 0);
}

/* Move entries back towards their home slot until none has an EMPTY slot
 * on its probe path (invariant 4). Each move shortens one entry's distance
 * from home, so this terminates; usually in one pass. Mutex held, seq odd. */
static void table_settle(struct registry *r)
{
    int moved;

    do {
        moved = 0;
        for (uint64_t i = 0; i < r->nslots; i++) {
            if (slot_state(r, i) != SLOT_USED)
                continue;
            for (uint64_t j = slot_at(r, i)->hash & r->mask; j != i; j = (j + 1) & r->mask) {
                if (slot_state(r, j) == SLOT_EMPTY) {
                    slot_move(r, i, j);
                    moved = 1;
                    break;
                }
            }
        }
    } while (moved);
}

/* Drop all tombstones and re-settle. Mutex held, seq odd. */
static void table_compact(struct registry *r)
{
    for (uint64_t i = 0; i < r->nslots; i++)
        if (slot_state(r, i) == SLOT_TOMB)
            slot_set_state(r, i, SLOT_EMPTY);
    table_settle(r);
    __atomic_store_n(&r->hdr->tombstones, 0, __ATOMIC_RELAXED);
}

static void table_maybe_compact(struct registry *r)
{
    struct registry_shm_header *h = r->hdr;

    if ((h->count + h->tombstones) * 4 > r->nslots * 3)
        table_compact(r);
}

/* 1 if a USED entry's fields are in range and agree with each other. */
static int entry_valid(const struct registry *r, const struct registry_shm_entry *e)
{
    if (e->key_len < 1 || e->key_len >= REGISTRY_KEY_MAX)
        return 0;
    if (e->key[e->key_len] != '\0' || memchr(e->key, '\0', e->key_len) != NULL)
        return 0;
    if (e->hash != key_hash(e->key, e->key_len))
        return 0;
    return e->yaml_len <= r->slot_bytes;
}

/* Copy key into buf (cap bytes) for a report; buf may be NULL. */
static void key_note(char *buf, size_t cap, const struct registry_shm_entry *e)
{
    if (buf == NULL || cap == 0)
        return;
    buf[0] = '\0';
    if (e->key_len < REGISTRY_KEY_MAX && e->key[e->key_len] == '\0')
        util_strlcpy(buf, e->key, cap);
}

/*
 * Check invariants 4-6 (2, seq parity, is the caller's: it knows whether it
 * is inside a write). Caller holds the mutex or is the only process
 * touching the segment. Returns 0, or the number of the first invariant
 * found broken, with the key it broke on in key (cap bytes; "" when it is
 * a count; key may be NULL).
 */
static int table_check(const struct registry *r, char *key, size_t cap)
{
    struct registry_shm_header *h = r->hdr;
    uint64_t used = 0, tombs = 0;

    if (key != NULL && cap > 0)
        key[0] = '\0';
    for (uint64_t i = 0; i < r->nslots; i++) {
        struct registry_shm_entry *e = slot_at(r, i);

        if (e->state == SLOT_TOMB)
            tombs++;
        if (e->state == SLOT_EMPTY || e->state == SLOT_TOMB)
            continue;
        key_note(key, cap, e);
        if (e->state != SLOT_USED || !entry_valid(r, e))
            return 4;
        if (table_find(r, e->key, e->key_len, e->hash, NULL) != i)
            return 4;   /* unreachable, or a duplicate key */
        if (e->generation > h->last_generation)
            return 6;
        used++;
    }
    if (key != NULL && cap > 0)
        key[0] = '\0';
    if (used != h->count || tombs != h->tombstones || used > r->capacity)
        return 5;
    if ((used + tombs) * 4 > r->nslots * 3)
        return 5;
    return 0;
}

/*
 * A writer died holding the mutex (we got EOWNERDEAD). Make the table obey
 * its invariants again, dropping whatever the dead writer may have left
 * half-done; see "Writer death" at the top. Ends with seq even.
 */
static void registry_recover(struct registry *r)
{
    struct registry_shm_header *h = r->hdr;
    uint64_t ws, used = 0;
    int rc;

    if ((__atomic_load_n(&h->seq, __ATOMIC_RELAXED) & 1) == 1) {
        /* It died inside its odd section: drop what it was changing. */
        ws = h->write_slot;
        if (ws < r->nslots && slot_state(r, ws) == SLOT_USED)
            slot_set_state(r, ws, SLOT_EMPTY);
    } else {
        /* It died outside it (nothing half-done); readers must still retry
         * while we check. */
        shm_seq_write_begin(&h->seq);
    }
    for (uint64_t i = 0; i < r->nslots; i++) {
        uint32_t st = slot_state(r, i);

        if (st != SLOT_EMPTY && (st != SLOT_USED || !entry_valid(r, slot_at(r, i))))
            slot_set_state(r, i, SLOT_EMPTY);   /* tombstones, garbage */
    }
    table_settle(r);
    for (uint64_t i = 0; i < r->nslots; i++) {
        struct registry_shm_entry *e = slot_at(r, i);

        if (slot_state(r, i) != SLOT_USED)
            continue;
        if (table_find(r, e->key, e->key_len, e->hash, NULL) != i || used >= r->capacity)
            slot_set_state(r, i, SLOT_TOMB);    /* later duplicate, or excess */
        else
            used++;
        if (e->generation > h->last_generation)
            h->last_generation = e->generation;
    }
    h->count = used;
    h->tombstones = 0;
    for (uint64_t i = 0; i < r->nslots; i++)
        if (slot_state(r, i) == SLOT_TOMB)
            h->tombstones++;
    table_maybe_compact(r);
    payload_trim_all(r);   /* the dropped entries' pages, and any a dead mover left */
    h->recoveries++;
    rc = table_check(r, NULL, 0);
    assert(rc == 0);
    (void)rc;
    write_end(r);
}

/* The repair shm_lock_take runs on EOWNERDEAD. */
static void recover_cb(void *arg)
{
    registry_recover(arg);
}

/* Take the writers' mutex; see shm_lock_take. Returns 0 (held), 1 (busy,
 * try_only) or AM_EUNAVAILABLE (unrecoverable). */
static int lock_acquire(struct registry *r, int try_only)
{
    return shm_lock_take(&r->guard, try_only);
}

static void lock_release(struct registry *r)
{
    shm_lock_release(&r->guard);
}

/* ---- reader side ---------------------------------------------------------- */

/* A seqlock read of the whole table; see shm_seq_read_begin/_end. */
static int reader_begin(struct registry *r, struct shm_reader *rd)
{
    return shm_seq_read_begin(&r->guard, &r->hdr->seq, rd);
}

static int reader_end(struct registry *r, struct shm_reader *rd)
{
    return shm_seq_read_end(&r->guard, &r->hdr->seq, rd);
}

/* ---- mapping -------------------------------------------------------------- */

static int map_segment(int fd, size_t bytes, struct registry_shm_header **out)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

    if (p == MAP_FAILED)
        return -1;
    *out = p;
    return 0;
}

/* A handle over the mapping h of `bytes` bytes. Takes h: registry_close()
 * unmaps it, so the caller must not. */
static struct registry *handle_new(struct registry_shm_header *h, size_t bytes,
                                   const struct registry_geometry *g, const char *name)
{
    struct registry *r = xcalloc(1, sizeof *r);

    long pg = sysconf(_SC_PAGESIZE);

    r->hdr = h;
    r->map_bytes = bytes;
    r->page_bytes = pg > 0 ? (size_t)pg : REGISTRY_PAGE;
    r->index = (struct registry_shm_entry *)(void *)((unsigned char *)h + g->index_off);
    r->payload = (unsigned char *)h + g->payload_off;
    r->capacity = h->capacity;
    r->nslots = g->nslots;
    r->mask = g->nslots - 1;
    r->slot_bytes = h->slot_bytes;
    r->payload_off = g->payload_off;
    r->payload_stride = g->payload_stride;
    r->guard.lock = &h->lock;
    r->guard.repair = recover_cb;
    r->guard.arg = r;
    r->guard.spin_busy = REGISTRY_SPIN_BUSY;
    r->guard.spin_limit = REGISTRY_SPIN_LIMIT;
    r->guard.nap_ns = REGISTRY_BACKOFF_NS;
    util_strlcpy(r->name, name, sizeof r->name);
    return r;
}

/*
 * Create the segment `name`, replacing a stale one, sized for `capacity`
 * agents of at most `slot_bytes` YAML each, and map it. On success *out is
 * a handle the caller frees with registry_close. Returns 0 or
 * AM_EUNAVAILABLE (bad name or geometry, or a system call failed; the
 * message says which).
 */
int registry_create(struct registry **out, const char *name, int capacity,
                    size_t slot_bytes, struct am_error *err)
{
    struct registry_geometry g;
    struct registry_shm_header *h = NULL;
    int fd = -1, rc = 0, created = 0;

    *out = NULL;
    if (name == NULL || name[0] != '/' || strnlen(name, REGISTRY_NAME_MAX + 1) > REGISTRY_NAME_MAX)
        return error_set(err, AM_EUNAVAILABLE, "registry: bad segment name");
    if (capacity < 1 || geometry_for((uint64_t)capacity, slot_bytes, &g) != 0)
        return error_set(err, AM_EUNAVAILABLE,
                         "registry: capacity %d or slot size %zu out of range",
                         capacity, slot_bytes);
    if (shm_unlink(name) != 0 && errno != ENOENT) {
        rc = error_set(err, AM_EUNAVAILABLE, "registry: shm_unlink %s: %s",
                       name, strerror(errno));
        goto out;
    }
    fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0) {
        rc = error_set(err, AM_EUNAVAILABLE, "registry: shm_open %s: %s",
                       name, strerror(errno));
        goto out;
    }
    created = 1;
    if (ftruncate(fd, (off_t)g.total_bytes) != 0 ||
        map_segment(fd, (size_t)g.total_bytes, &h) != 0) {
        rc = error_set(err, AM_EUNAVAILABLE, "registry: sizing %s to %llu bytes: %s",
                       name, (unsigned long long)g.total_bytes, strerror(errno));
        goto out;
    }
    /* ftruncate zero-filled it: every slot is SLOT_EMPTY, counters are 0. */
    h->layout_version = REGISTRY_LAYOUT_VERSION;
    h->header_bytes = (uint32_t)sizeof *h;
    h->capacity = (uint64_t)capacity;
    h->nslots = g.nslots;
    h->slot_bytes = slot_bytes;
    h->entry_bytes = sizeof(struct registry_shm_entry);
    h->payload_off = g.payload_off;
    h->payload_stride = g.payload_stride;
    h->total_bytes = g.total_bytes;
    h->write_slot = REGISTRY_NO_SLOT;
    if (shm_lock_init(&h->lock) != 0) {
        rc = error_set(err, AM_EUNAVAILABLE, "registry: cannot init robust shared mutex");
        goto out;
    }
    __atomic_store_n(&h->magic, REGISTRY_MAGIC, __ATOMIC_RELEASE);
    *out = handle_new(h, (size_t)g.total_bytes, &g, name);
out:
    if (fd >= 0)
        close(fd);
    if (rc != 0) {
        if (h != NULL)
            munmap(h, (size_t)g.total_bytes);
        if (created)
            shm_unlink(name);
    }
    return rc;
}

/* 0 if the mapped header describes a segment this build can use. */
static int header_valid(const struct registry_shm_header *h, size_t bytes,
                        struct registry_geometry *g /* OUT */)
{
    if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != REGISTRY_MAGIC ||
        h->layout_version != REGISTRY_LAYOUT_VERSION ||
        h->header_bytes != sizeof *h)
        return -1;
    if (geometry_for(h->capacity, h->slot_bytes, g) != 0)
        return -1;
    if (g->nslots != h->nslots || h->entry_bytes != sizeof(struct registry_shm_entry) ||
        g->payload_off != h->payload_off || g->payload_stride != h->payload_stride ||
        g->total_bytes != h->total_bytes || g->total_bytes != bytes)
        return -1;
    return 0;
}

/*
 * Map the existing segment `name`. Returns 0 with *out set (free with
 * registry_close), AM_ENOENT if there is no such segment, or
 * AM_EUNAVAILABLE if it is not a registry of this layout version.
 */
int registry_attach(struct registry **out, const char *name, struct am_error *err)
{
    struct registry_geometry g;
    struct registry_shm_header *h = NULL;
    struct stat st;
    size_t bytes = 0;
    int fd = -1, rc = 0;

    *out = NULL;
    if (name == NULL || strnlen(name, REGISTRY_NAME_MAX + 1) > REGISTRY_NAME_MAX)
        return error_set(err, AM_EUNAVAILABLE, "registry: bad segment name");
    fd = shm_open(name, O_RDWR, 0);
    if (fd < 0) {
        rc = error_set(err, errno == ENOENT ? AM_ENOENT : AM_EUNAVAILABLE,
                       "registry: shm_open %s: %s", name, strerror(errno));
        goto out;
    }
    if (fstat(fd, &st) != 0 || st.st_size < (off_t)sizeof *h) {
        rc = error_set(err, AM_EUNAVAILABLE, "registry: %s is too small", name);
        goto out;
    }
    bytes = (size_t)st.st_size;
    if (map_segment(fd, bytes, &h) != 0) {
        rc = error_set(err, AM_EUNAVAILABLE, "registry: mmap %s: %s", name, strerror(errno));
        goto out;
    }
    if (header_valid(h, bytes, &g) != 0) {
        rc = error_set(err, AM_EUNAVAILABLE,
                       "registry: %s is not a layout-%u registry segment",
                       name, REGISTRY_LAYOUT_VERSION);
        goto out;
    }
    *out = handle_new(h, bytes, &g, name);
out:
    if (fd >= 0)
        close(fd);
    if (rc != 0 && h != NULL)
        munmap(h, bytes);
    return rc;
}

/* Unmap and free the handle (r may be NULL); shm_unlink the name too when
 * unlink_segment is set. Other processes' mappings stay valid. No thread of
 * this process may be inside another registry_* call on r: the kernel marks
 * a dead owner's robust mutex only while it is still mapped. */
void registry_close(struct registry *r, int unlink_segment)
{
    if (r == NULL)
        return;
    munmap(r->hdr, r->map_bytes);
    if (unlink_segment)
        shm_unlink(r->name);
    free(r);
}

/* ---- operations ----------------------------------------------------------- */

/*
 * Insert or replace key. Returns 0; AM_EBADREQ for a bad key;
 * AM_ETOOLARGE if yaml_len > slot_bytes; AM_EREGISTRYFULL if key is new and
 * capacity agents are loaded; AM_EUNAVAILABLE if the mutex is unusable.
 */
int registry_load(struct registry *r, const char *key, uint64_t version,
                  int64_t deployed_at, const char *yaml, size_t yaml_len,
                  struct am_error *err)
{
    struct registry_shm_header *h = r->hdr;
    struct registry_shm_entry *e;
    uint64_t hash, slot, free_slot;
    size_t klen;
    int rc;

    if (!key_ok(key, &klen))
        return error_set(err, AM_EBADREQ, "registry: key must be 1..%d bytes",
                         REGISTRY_KEY_MAX - 1);
    if (yaml_len > r->slot_bytes)
        return error_set(err, AM_ETOOLARGE,
                         "registry: compiled agent is %zu bytes, the limit is %llu",
                         yaml_len, (unsigned long long)r->slot_bytes);
    if (yaml == NULL && yaml_len > 0)
        return error_set(err, AM_EBADREQ, "registry: no YAML");
    hash = key_hash(key, klen);
    rc = lock_acquire(r, 0);
    if (rc != 0)
        return error_set(err, AM_EUNAVAILABLE, "registry: writer mutex unrecoverable");

    slot = table_find(r, key, klen, hash, &free_slot);
    if (slot == REGISTRY_NO_SLOT) {
        if (h->count >= r->capacity) {
            rc = error_set(err, AM_EREGISTRYFULL, "registry: all %llu slots are in use (registry.capacity is "
                           "below the sum of the orgs' limits.max_agents)",
                           (unsigned long long)r->capacity);
            goto out;
        }
        slot = free_slot;   /* exists by invariant 5 */
        assert(slot != REGISTRY_NO_SLOT);
    }
    e = slot_at(r, slot);
    write_begin(r, slot);
    if (e->state != SLOT_USED) {
        if (e->state == SLOT_TOMB)
            h->tombstones--;
        __atomic_store_n(&h->count, h->count + 1, __ATOMIC_RELAXED);
    }
    h->last_generation++;
    memset(e->key, 0, sizeof e->key);
    memcpy(e->key, key, klen);
    e->key_len = (uint32_t)klen;
    e->hash = hash;
    e->generation = h->last_generation;
    e->version = version;
    e->deployed_at = deployed_at;
    e->yaml_len = yaml_len;
    if (yaml_len > 0)
        memcpy(slot_payload(r, slot), yaml, yaml_len);
    payload_trim(r, slot, yaml_len);   /* a smaller body than the last one */
    slot_set_state(r, slot, SLOT_USED);
    table_maybe_compact(r);
    write_end(r);
out:
    lock_release(r);
    return rc;
}

/* Remove key. Returns 0, AM_ENOENT if it is not loaded, or AM_EUNAVAILABLE
 * if the mutex is unusable. */
int registry_unload(struct registry *r, const char *key)
{
    struct registry_shm_header *h = r->hdr;
    uint64_t slot;
    size_t klen;
    int rc = 0;

    if (!key_ok(key, &klen))
        return AM_ENOENT;
    if (lock_acquire(r, 0) != 0)
        return AM_EUNAVAILABLE;
    slot = table_find(r, key, klen, key_hash(key, klen), NULL);
    if (slot == REGISTRY_NO_SLOT) {
        rc = AM_ENOENT;
        goto out;
    }
    write_begin(r, slot);
    if (slot_state(r, (slot + 1) & r->mask) == SLOT_EMPTY) {
        /* Nothing probes past an EMPTY slot, so this one and the
         * tombstones right before it are dead ends: empty them. */
        slot_set_state(r, slot, SLOT_EMPTY);
        for (uint64_t i = (slot - 1) & r->mask; slot_state(r, i) == SLOT_TOMB;
             i = (i - 1) & r->mask) {
            slot_set_state(r, i, SLOT_EMPTY);
            h->tombstones--;
        }
    } else {
        slot_set_state(r, slot, SLOT_TOMB);
        h->tombstones++;
    }
    /* Still inside the odd section: a reader copying this payload while
     * it turns to zeros fails its seq re-check. */
    payload_trim(r, slot, 0);
    __atomic_store_n(&h->count, h->count - 1, __ATOMIC_RELAXED);
    table_maybe_compact(r);
    write_end(r);
out:
    lock_release(r);
    return rc;
}

/*
 * Copy key's entry into *out (caller frees with registry_agent_clear; *out
 * is zeroed on failure). Returns 0, AM_ENOENT, or AM_EUNAVAILABLE if the
 * mutex is unusable. Never blocks behind a live writer.
 */
int registry_get(struct registry *r, const char *key, struct registry_agent *out)
{
    struct shm_reader rd = { 0, 0, 0 };
    struct registry_agent snap;
    char *buf = NULL;
    size_t klen, cap = 0;
    uint64_t hash, len = 0;
    int rc;

    memset(out, 0, sizeof *out);
    memset(&snap, 0, sizeof snap);
    if (!key_ok(key, &klen))
        return AM_ENOENT;
    hash = key_hash(key, klen);
    do {
        struct registry_shm_entry *e;
        uint64_t slot;

        rc = reader_begin(r, &rd);
        if (rc != 0)
            goto out;
        rc = AM_ENOENT;
        slot = table_find(r, key, klen, hash, NULL);
        if (slot == REGISTRY_NO_SLOT)
            continue;
        e = slot_at(r, slot);
        len = __atomic_load_n(&e->yaml_len, __ATOMIC_RELAXED);
        if (len > r->slot_bytes) {
            rc = AM_EINTERNAL;   /* torn; reader_end decides */
            continue;
        }
        if (len + 1 > cap) {
            cap = (size_t)len + 1;
            buf = xrealloc(buf, cap);
        }
        memcpy(buf, slot_payload(r, slot), (size_t)len);
        snap.generation = __atomic_load_n(&e->generation, __ATOMIC_RELAXED);
        snap.version = __atomic_load_n(&e->version, __ATOMIC_RELAXED);
        snap.deployed_at = __atomic_load_n(&e->deployed_at, __ATOMIC_RELAXED);
        rc = 0;
    } while (!reader_end(r, &rd));
    if (rc != 0)
        goto out;
    buf[len] = '\0';
    util_strlcpy(out->key, key, sizeof out->key);
    out->generation = snap.generation;
    out->version = snap.version;
    out->deployed_at = snap.deployed_at;
    out->yaml = buf;
    out->yaml_len = (size_t)len;
    buf = NULL;
out:
    free(buf);
    return rc;
}

/* 1 (and *version_out if not NULL) if key is loaded, else 0. */
int registry_contains(struct registry *r, const char *key, uint64_t *version_out)
{
    struct shm_reader rd = { 0, 0, 0 };
    uint64_t hash, version = 0;
    size_t klen;
    int found = 0;

    if (!key_ok(key, &klen))
        return 0;
    hash = key_hash(key, klen);
    do {
        uint64_t slot;

        if (reader_begin(r, &rd) != 0)
            return 0;
        slot = table_find(r, key, klen, hash, NULL);
        found = slot != REGISTRY_NO_SLOT;
        if (found)
            version = __atomic_load_n(&slot_at(r, slot)->version, __ATOMIC_RELAXED);
    } while (!reader_end(r, &rd));
    if (found && version_out != NULL)
        *version_out = version;
    return found;
}

/* Number of loaded agents, or AM_EUNAVAILABLE if the mutex is unusable. */
int registry_count(struct registry *r)
{
    struct shm_reader rd = { 0, 0, 0 };
    uint64_t n;

    do {
        if (reader_begin(r, &rd) != 0)
            return AM_EUNAVAILABLE;
        n = __atomic_load_n(&r->hdr->count, __ATOMIC_RELAXED);
    } while (!reader_end(r, &rd));
    return n > r->capacity ? AM_EINTERNAL : (int)n;
}

/*
 * Snapshot the loaded keys under the seqlock, then call fn(key, arg) for
 * each with no lock held, so fn may load or unload. Keys loaded after the
 * snapshot are not visited; keys unloaded after it still are.
 */
void registry_foreach(struct registry *r, void (*fn)(const char *key, void *arg), void *arg)
{
    struct shm_reader rd = { 0, 0, 0 };
    char (*keys)[REGISTRY_KEY_MAX] = NULL;
    size_t n = 0, cap = 0;
    int more;

    do {
        if (reader_begin(r, &rd) != 0) {
            n = 0;
            break;
        }
        if (cap == 0) {
            /* Room for the current count and some slack; grown on demand. */
            cap = (size_t)__atomic_load_n(&r->hdr->count, __ATOMIC_RELAXED) + 16;
            if (cap > r->capacity)
                cap = (size_t)r->capacity;
            keys = xrealloc(keys, cap * REGISTRY_KEY_MAX);
        }
        n = 0;
        more = 0;
        for (uint64_t i = 0; i < r->nslots; i++) {
            struct registry_shm_entry *e = slot_at(r, i);
            uint32_t klen;

            if (slot_state(r, i) != SLOT_USED)
                continue;
            klen = __atomic_load_n(&e->key_len, __ATOMIC_RELAXED);
            if (klen < 1 || klen >= REGISTRY_KEY_MAX)
                continue;   /* torn; reader_end decides */
            if (n == cap) {
                more = 1;
                break;
            }
            memcpy(keys[n], e->key, klen);
            keys[n][klen] = '\0';
            n++;
        }
        if (reader_end(r, &rd) && (!more || cap == r->capacity))
            break;   /* consistent, and complete (torn views may overflow) */
        if (more && cap < r->capacity) {
            cap = cap * 2 < r->capacity ? cap * 2 : (size_t)r->capacity;
            keys = xrealloc(keys, cap * REGISTRY_KEY_MAX);
        }
    } while (1);
    for (size_t i = 0; i < n; i++)
        fn(keys[i], arg);
    free(keys);
}

/* Check invariants 2 and 4-6 under the writers' mutex (so live writers
 * may run meanwhile); see registry.h. */
void registry_check_invariants(struct registry *r)
{
    char key[REGISTRY_KEY_MAX];
    int which;

    if (lock_acquire(r, 0) != 0)
        invariant_fail("registry 8: the writers' mutex is unrecoverable");
    which = (__atomic_load_n(&r->hdr->seq, __ATOMIC_RELAXED) & 1) != 0 ? 2
                                                                       : table_check(r, key, sizeof key);
    lock_release(r);
    if (which == 2)
        invariant_fail("registry 2: seq is odd with no write in progress");
    if (which != 0)
        invariant_fail("registry %d: key \"%s\"", which, key);
}

/* Free what registry_get put in *a and zero it; a may be NULL. */
void registry_agent_clear(struct registry_agent *a)
{
    if (a == NULL)
        return;
    free(a->yaml);
    memset(a, 0, sizeof *a);
}

/* Largest YAML one entry can hold, in bytes. */
size_t registry_slot_bytes(struct registry *r)
{
    return (size_t)r->slot_bytes;
}
