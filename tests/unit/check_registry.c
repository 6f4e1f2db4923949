/*
 * check_registry.c - unit tests for the shared runtime registry (registry.c).
 *
 * The module's source is included (lighttpd-style) so the crash tests can
 * reach its static helpers: a child takes the writers' mutex, makes the
 * seqlock odd and scribbles on an entry exactly as a writer would, then
 * dies; the parent must still read and write. Every other test goes through
 * the public interface only.
 *
 * Each test uses its own segment "/amreg-check-<runner pid>-<tag>"; main()
 * removes any left behind by a failed test. Child processes report through
 * their exit status (never ck_assert, which belongs to the test process).
 */
#include <check.h>
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include "../../src/state/registry.c"

#define SEG_PREFIX "amreg-check-"

static pid_t runner_pid;   /* the srunner's pid, part of every segment name */

static void seg_name(char *buf, size_t cap, const char *tag)
{
    util_snprintf(buf, cap, "/" SEG_PREFIX "%d-%s", (int)runner_pid, tag);
}

static struct registry *must_create(const char *tag, int capacity, size_t slot_bytes)
{
    char name[96];
    struct registry *r = NULL;
    struct am_error err;

    seg_name(name, sizeof name, tag);
    error_clear(&err);
    ck_assert_msg(registry_create(&r, name, capacity, slot_bytes, &err) == 0,
                  "create %s: %s", name, err.message);
    ck_assert_ptr_nonnull(r);
    return r;
}

static int load_str(struct registry *r, const char *key, uint64_t version, const char *yaml)
{
    return registry_load(r, key, version, 1700000000, yaml, strlen(yaml), NULL);
}

/* Deterministic PRNG (xorshift64*), so a failing sequence replays. */
static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * UINT64_C(2685821657736338717);
}

/*
 * A self-describing body of exactly `len` bytes (len >= 48): a header line
 * "len=<len> sum=<checksum of the rest> tag=<tag>\n" and a filler derived
 * from tag. body_valid() recomputes both, so any torn copy fails it.
 */
#define BODY_HDR 48
static uint32_t body_sum(const char *p, size_t n)
{
    uint32_t s = 2166136261u;

    for (size_t i = 0; i < n; i++)
        s = (s ^ (unsigned char)p[i]) * 16777619u;
    return s;
}

static void body_make(char *buf, size_t len, const char *tag)
{
    char hdr[BODY_HDR + 1];
    size_t tl = strlen(tag);

    for (size_t i = BODY_HDR; i < len; i++)
        buf[i] = (char)('a' + (tag[i % tl] + i * 7) % 26);
    memset(hdr, ' ', sizeof hdr);
    util_snprintf(hdr, sizeof hdr, "len=%06zu sum=%08x tag=%.20s", len,
                  body_sum(buf + BODY_HDR, len - BODY_HDR), tag);
    hdr[strlen(hdr)] = ' ';
    memcpy(buf, hdr, BODY_HDR - 1);
    buf[BODY_HDR - 1] = '\n';
}

/* 1 if p[0..len) is a body made by body_make for tag (tag may be NULL). */
static int body_valid(const char *p, size_t len, const char *tag)
{
    char want[BODY_HDR + 1];
    size_t n;
    unsigned sum;

    if (len < BODY_HDR || sscanf(p, "len=%zu sum=%x", &n, &sum) != 2 || n != len)
        return 0;
    if (body_sum(p + BODY_HDR, len - BODY_HDR) != sum)
        return 0;
    if (tag == NULL)
        return 1;
    util_snprintf(want, sizeof want, "tag=%.20s ", tag);
    return memmem(p, BODY_HDR, want, strlen(want)) != NULL;
}

/* Wait for a child; 1 if it exited with status 0. */
static int child_ok(pid_t pid)
{
    int st = 0;

    if (waitpid(pid, &st, 0) != pid)
        return 0;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* In a child that loops until told to stop: die with the test process, so
 * a failed assertion in the parent cannot leave it spinning. */
static void child_dies_with_parent(pid_t parent)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(1);
}

/* A page shared with forked children: stop flags and progress counters. */
struct shared_ctl {
    int stop;            /* set by the parent (atomic) */
    uint64_t progress;   /* operations done by the child (atomic) */
};

static struct shared_ctl *ctl_new(void)
{
    void *p = mmap(NULL, sizeof(struct shared_ctl), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);

    ck_assert(p != MAP_FAILED);
    memset(p, 0, sizeof(struct shared_ctl));
    return p;
}

/* Bounded polling: wait until the child's progress reaches n. */
static int ctl_wait_progress(struct shared_ctl *c, uint64_t n)
{
    for (int i = 0; i < 20000; i++) {
        struct timespec ts = { 0, 500000 };

        if (__atomic_load_n(&c->progress, __ATOMIC_ACQUIRE) >= n)
            return 1;
        nanosleep(&ts, NULL);
    }
    return 0;
}

/* Pages of the mapping in [p, p + len) that are resident (page cache of the
 * tmpfs object, whichever process touched them), or -1 if mincore failed. */
static long resident_pages(const struct registry *r, const unsigned char *p, size_t len)
{
    uintptr_t pg = r->page_bytes, a = (uintptr_t)p / pg * pg;
    size_t n = ((uintptr_t)p + len - a + pg - 1) / pg;
    unsigned char *vec;
    long count = 0;

    if (len == 0)
        return 0;
    vec = xmalloc(n);
    if (mincore((void *)a, n * pg, vec) != 0)
        count = -1;
    for (size_t i = 0; count >= 0 && i < n; i++)
        count += vec[i] & 1;
    free(vec);
    return count;
}

/* Invariant 9, checked where no reader races the writers: a USED slot has
 * no resident page past its yaml_len, any other slot none at all. */
static int payload_pages_only_where_used(const struct registry *r)
{
    for (uint64_t i = 0; i < r->nslots; i++) {
        uint64_t keep = 0;

        if (slot_state(r, i) == SLOT_USED)
            keep = round_up(slot_at(r, i)->yaml_len, r->page_bytes);
        if (keep < r->payload_stride &&
            resident_pages(r, slot_payload(r, i) + keep, r->payload_stride - keep) != 0)
            return 0;
    }
    return 1;
}

static uint64_t slot_of(struct registry *r, const char *key)
{
    return table_find(r, key, strlen(key), key_hash(key, strlen(key)), NULL);
}

/* Resident set of this process, in KiB, or -1. */
static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;

    while (f != NULL && fgets(line, sizeof line, f) != NULL)
        if (sscanf(line, "VmRSS: %ld", &kib) == 1)
            break;
    if (f != NULL)
        fclose(f);
    return kib;
}

/* ---- basic behaviour ------------------------------------------------------ */

START_TEST(load_then_get_returns_copy)
{
    struct registry *r = must_create("copy", 4, 1024);
    struct registry_agent a, b;

    ck_assert_int_eq(load_str(r, "acme__support", 3, "name: support\n"), 0);
    ck_assert_int_eq(registry_get(r, "acme__support", &a), 0);
    ck_assert_str_eq(a.key, "acme__support");
    ck_assert_str_eq(a.yaml, "name: support\n");
    ck_assert_uint_eq(a.yaml_len, strlen("name: support\n"));
    ck_assert_uint_eq(a.version, 3);
    ck_assert_int_eq(a.deployed_at, 1700000000);
    ck_assert_uint_gt(a.generation, 0);

    /* The copy is private: scribbling on it or reloading leaves the other alone. */
    a.yaml[0] = 'X';
    ck_assert_int_eq(load_str(r, "acme__support", 4, "name: other\n"), 0);
    ck_assert_str_eq(a.yaml, "Xame: support\n");
    ck_assert_int_eq(registry_get(r, "acme__support", &b), 0);
    ck_assert_str_eq(b.yaml, "name: other\n");
    ck_assert_uint_eq(b.version, 4);

    registry_agent_clear(&a);
    registry_agent_clear(&b);
    ck_assert_ptr_null(a.yaml);
    ck_assert_int_eq(load_str(r, "acme__empty", 1, ""), 0);
    ck_assert_int_eq(registry_get(r, "acme__empty", &a), 0);
    ck_assert_str_eq(a.yaml, "");
    registry_agent_clear(&a);
    ck_assert_int_eq(table_check(r, NULL, 0), 0);
    registry_close(r, 1);
}
END_TEST

START_TEST(reload_changes_generation)
{
    struct registry *r = must_create("gen", 4, 256);
    struct registry_agent a, b, c;

    ck_assert_int_eq(load_str(r, "o__a", 1, "v: 1"), 0);
    ck_assert_int_eq(load_str(r, "o__other", 1, "v: 1"), 0);
    ck_assert_int_eq(registry_get(r, "o__a", &a), 0);
    ck_assert_int_eq(load_str(r, "o__a", 1, "v: 1"), 0);   /* same body, still new */
    ck_assert_int_eq(registry_get(r, "o__a", &b), 0);
    ck_assert_int_eq(load_str(r, "o__a", 2, "v: 2"), 0);
    ck_assert_int_eq(registry_get(r, "o__a", &c), 0);
    ck_assert_uint_gt(b.generation, a.generation);
    ck_assert_uint_gt(c.generation, b.generation);
    ck_assert_uint_eq(c.version, 2);
    ck_assert_int_eq(registry_count(r), 2);
    registry_agent_clear(&a);
    registry_agent_clear(&b);
    registry_agent_clear(&c);
    registry_close(r, 1);
}
END_TEST

START_TEST(unload_removes_and_count_drops)
{
    struct registry *r = must_create("unload", 4, 256);
    struct registry_agent a;
    uint64_t v = 0;

    ck_assert_int_eq(load_str(r, "o__a", 1, "a"), 0);
    ck_assert_int_eq(load_str(r, "o__b", 7, "b"), 0);
    ck_assert_int_eq(load_str(r, "o__c", 1, "c"), 0);
    ck_assert_int_eq(registry_count(r), 3);
    ck_assert_int_eq(registry_contains(r, "o__b", &v), 1);
    ck_assert_uint_eq(v, 7);

    ck_assert_int_eq(registry_unload(r, "o__b"), 0);
    ck_assert_int_eq(registry_count(r), 2);
    ck_assert_int_eq(registry_contains(r, "o__b", NULL), 0);
    ck_assert_int_eq(registry_get(r, "o__b", &a), AM_ENOENT);
    ck_assert_int_eq(registry_unload(r, "o__b"), AM_ENOENT);
    ck_assert_int_eq(registry_get(r, "o__a", &a), 0);
    registry_agent_clear(&a);
    ck_assert_int_eq(table_check(r, NULL, 0), 0);
    registry_close(r, 1);
}
END_TEST

START_TEST(get_missing_is_enoent)
{
    struct registry *r = must_create("missing", 4, 256);
    struct registry_agent a;
    char longkey[REGISTRY_KEY_MAX + 8];

    ck_assert_int_eq(registry_get(r, "o__nope", &a), AM_ENOENT);
    ck_assert_ptr_null(a.yaml);
    ck_assert_int_eq(registry_contains(r, "o__nope", NULL), 0);
    ck_assert_int_eq(registry_count(r), 0);
    memset(longkey, 'k', sizeof longkey - 1);
    longkey[sizeof longkey - 1] = '\0';
    ck_assert_int_eq(registry_get(r, longkey, &a), AM_ENOENT);
    ck_assert_int_eq(registry_get(r, "", &a), AM_ENOENT);
    registry_agent_clear(&a);   /* harmless on a zeroed result */
    registry_close(r, 1);
}
END_TEST

START_TEST(full_table_rejected)
{
    struct registry *r = must_create("full", 4, 256);
    struct am_error err;
    char key[32];

    for (int i = 0; i < 4; i++) {
        util_snprintf(key, sizeof key, "o__k%d", i);
        ck_assert_int_eq(load_str(r, key, 1, "x"), 0);
    }
    error_clear(&err);
    ck_assert_int_eq(registry_load(r, "o__k4", 1, 0, "x", 1, &err), AM_EREGISTRYFULL);
    ck_assert_int_eq(err.code, AM_EREGISTRYFULL);
    ck_assert_int_eq(registry_contains(r, "o__k4", NULL), 0);
    /* Replacing a loaded agent needs no new slot. */
    ck_assert_int_eq(load_str(r, "o__k2", 2, "y"), 0);
    ck_assert_int_eq(registry_unload(r, "o__k0"), 0);
    ck_assert_int_eq(load_str(r, "o__k4", 1, "x"), 0);
    ck_assert_int_eq(registry_count(r), 4);
    ck_assert_int_eq(table_check(r, NULL, 0), 0);
    registry_close(r, 1);
}
END_TEST

START_TEST(oversize_yaml_rejected)
{
    struct registry *r = must_create("oversize", 2, 64);
    struct am_error err;
    struct registry_agent a;
    char yaml[65];

    ck_assert_uint_eq(registry_slot_bytes(r), 64);
    memset(yaml, 'y', sizeof yaml);
    error_clear(&err);
    ck_assert_int_eq(registry_load(r, "o__big", 1, 0, yaml, 65, &err), AM_ETOOLARGE);
    ck_assert_int_eq(err.code, AM_ETOOLARGE);
    ck_assert_int_eq(registry_count(r), 0);
    ck_assert_int_eq(registry_load(r, "o__big", 1, 0, yaml, 64, NULL), 0);
    ck_assert_int_eq(registry_get(r, "o__big", &a), 0);
    ck_assert_uint_eq(a.yaml_len, 64);
    ck_assert_int_eq(memcmp(a.yaml, yaml, 64), 0);
    ck_assert_int_eq(a.yaml[64], '\0');
    registry_agent_clear(&a);
    registry_close(r, 1);
}
END_TEST

START_TEST(bad_keys_and_geometry_rejected)
{
    struct registry *r = must_create("badkey", 2, 64);
    struct registry *bad = NULL;
    char key[REGISTRY_KEY_MAX + 1], name[96];

    memset(key, 'k', sizeof key);
    key[REGISTRY_KEY_MAX] = '\0';
    ck_assert_int_eq(load_str(r, key, 1, "x"), AM_EBADREQ);     /* 112 bytes */
    key[REGISTRY_KEY_MAX - 1] = '\0';
    ck_assert_int_eq(load_str(r, key, 1, "x"), 0);              /* 111 bytes */
    ck_assert_int_eq(registry_contains(r, key, NULL), 1);
    ck_assert_int_eq(load_str(r, "", 1, "x"), AM_EBADREQ);
    ck_assert_int_eq(registry_unload(r, ""), AM_ENOENT);
    registry_close(r, 1);

    seg_name(name, sizeof name, "badgeom");
    ck_assert_int_ne(registry_create(&bad, name, 0, 64, NULL), 0);
    ck_assert_int_ne(registry_create(&bad, name, -3, 64, NULL), 0);
    ck_assert_int_ne(registry_create(&bad, name, 4, 0, NULL), 0);
    ck_assert_int_ne(registry_create(&bad, "no-slash", 4, 64, NULL), 0);
    ck_assert_ptr_null(bad);
}
END_TEST

/* ---- probing ------------------------------------------------------------- */

/* Keys "o__c<i>" whose home slot in a table of nslots is `home`. */
static int colliding_keys(uint64_t nslots, uint64_t home, char keys[][32], int want)
{
    int n = 0;

    for (int i = 0; n < want && i < 100000; i++) {
        char k[32];

        util_snprintf(k, sizeof k, "o__c%d", i);
        if ((key_hash(k, strlen(k)) & (nslots - 1)) == home)
            util_strlcpy(keys[n++], k, sizeof keys[0]);
    }
    return n;
}

START_TEST(tombstones_do_not_break_lookup)
{
    struct registry *r = must_create("tomb", 8, 128);
    char keys[12][32];
    uint64_t seed = 0x9e3779b97f4a7c15u;
    int loaded[40] = { 0 }, nloaded = 0;
    static const int live[8] = { 1, 3, 5, 7, 8, 9, 10, 11 };

    /* One cluster: 8 keys sharing a home slot, then holes punched in it. */
    ck_assert_uint_eq(r->nslots, 16);
    ck_assert_int_eq(colliding_keys(r->nslots, 5, keys, 12), 12);
    for (int i = 0; i < 8; i++)
        ck_assert_int_eq(load_str(r, keys[i], (uint64_t)i, keys[i]), 0);
    for (int i = 0; i < 8; i += 2)
        ck_assert_int_eq(registry_unload(r, keys[i]), 0);
    ck_assert_uint_gt(r->hdr->tombstones, 0);
    ck_assert_int_eq(table_check(r, NULL, 0), 0);
    for (int i = 1; i < 8; i += 2) {
        struct registry_agent a;

        ck_assert_int_eq(registry_get(r, keys[i], &a), 0);
        ck_assert_str_eq(a.yaml, keys[i]);
        registry_agent_clear(&a);
        ck_assert_int_eq(registry_contains(r, keys[i - 1], NULL), 0);
    }
    for (int i = 8; i < 12; i++)   /* reuse the tombstones */
        ck_assert_int_eq(load_str(r, keys[i], (uint64_t)i, keys[i]), 0);
    for (int i = 0; i < 8; i++)
        ck_assert_int_eq(registry_contains(r, keys[live[i]], NULL), 1);
    ck_assert_int_eq(registry_count(r), 8);
    ck_assert_int_eq(table_check(r, NULL, 0), 0);
    for (int i = 0; i < 8; i++)
        ck_assert_int_eq(registry_unload(r, keys[live[i]]), 0);
    ck_assert_int_eq(table_check(r, NULL, 0), 0);
    ck_assert_int_eq(registry_count(r), 0);

    /* Random churn against a model; compaction must keep everything findable. */
    for (int op = 0; op < 6000; op++) {
        int k = (int)(rng_next(&seed) % 40);
        char key[32], body[160];
        int rc;

        util_snprintf(key, sizeof key, "o__r%d", k);
        if (rng_next(&seed) % 2) {
            util_snprintf(body, sizeof body, "%s@%d", key, op);
            rc = load_str(r, key, (uint64_t)op, body);
            if (!loaded[k] && nloaded == 8) {
                ck_assert_int_eq(rc, AM_EREGISTRYFULL);
            } else {
                ck_assert_int_eq(rc, 0);
                nloaded += !loaded[k];
                loaded[k] = op + 1;
            }
        } else {
            rc = registry_unload(r, key);
            ck_assert_int_eq(rc, loaded[k] ? 0 : AM_ENOENT);
            nloaded -= loaded[k] != 0;
            loaded[k] = 0;
        }
        ck_assert_int_eq(table_check(r, NULL, 0), 0);
        ck_assert(payload_pages_only_where_used(r));
        ck_assert_int_eq(registry_count(r), nloaded);
        for (int j = 0; j < 40; j++) {
            struct registry_agent a;

            util_snprintf(key, sizeof key, "o__r%d", j);
            rc = registry_get(r, key, &a);
            ck_assert_int_eq(rc, loaded[j] ? 0 : AM_ENOENT);
            if (loaded[j]) {
                util_snprintf(body, sizeof body, "%s@%d", key, loaded[j] - 1);
                ck_assert_str_eq(a.yaml, body);
            }
            registry_agent_clear(&a);
        }
    }
    registry_close(r, 1);
}
END_TEST

struct keyset {
    int n;           /* keys seen */
    int seen[8];     /* per "o__f<i>": times seen */
    struct registry *r;
    int unload;      /* unload each key from inside the callback */
};

static void keyset_add(const char *key, void *arg)
{
    struct keyset *ks = arg;
    int i;

    ks->n++;
    if (sscanf(key, "o__f%d", &i) == 1 && i >= 0 && i < 8)
        ks->seen[i]++;
    if (ks->unload)
        registry_unload(ks->r, key);
}

START_TEST(foreach_visits_each_key_once_and_allows_unload)
{
    struct registry *r = must_create("foreach", 8, 64);
    struct keyset ks;
    char key[32];

    for (int i = 0; i < 8; i++) {
        util_snprintf(key, sizeof key, "o__f%d", i);
        ck_assert_int_eq(load_str(r, key, 1, "x"), 0);
    }
    memset(&ks, 0, sizeof ks);
    registry_foreach(r, keyset_add, &ks);
    ck_assert_int_eq(ks.n, 8);
    for (int i = 0; i < 8; i++)
        ck_assert_int_eq(ks.seen[i], 1);
    memset(&ks, 0, sizeof ks);
    ks.r = r;
    ks.unload = 1;
    registry_foreach(r, keyset_add, &ks);
    ck_assert_int_eq(ks.n, 8);
    ck_assert_int_eq(registry_count(r), 0);
    registry_close(r, 1);
}
END_TEST

/* ---- memory ---------------------------------------------------------------- */

#define SCAN_CAPACITY 4096
#define SCAN_SLOT     (64 * 1024)

static void count_key(const char *key, void *arg)
{
    (void)key;
    ++*(int *)arg;
}

START_TEST(empty_registry_scan_touches_only_the_index)
{
    struct registry *r;
    struct registry_agent a;
    static char yaml[4096];
    long rss0, rss1;
    int n = 0;

    rss0 = rss_kib();
    r = must_create("scan", SCAN_CAPACITY, SCAN_SLOT);
    ck_assert_uint_eq(r->nslots, 8192);
    registry_foreach(r, count_key, &n);
    ck_assert_int_eq(n, 0);
    ck_assert_int_eq(registry_count(r), 0);
    ck_assert_int_eq(registry_contains(r, "acme__support", NULL), 0);
    ck_assert_int_eq(registry_contains(r, "o__missing", NULL), 0);
    ck_assert_int_eq(registry_get(r, "o__missing", &a), AM_ENOENT);
    rss1 = rss_kib();
    ck_assert_int_ge(rss0, 0);
    /* The whole index is 1.25 MiB; the payload area is 512 MiB. */
    ck_assert_msg(rss1 - rss0 < 4096, "an empty scan made %ld KiB resident", rss1 - rss0);
    ck_assert_int_eq(resident_pages(r, r->payload, r->nslots * r->payload_stride), 0);

    /* One 4 KiB agent makes exactly one payload page resident. */
    memset(yaml, 'y', sizeof yaml);
    ck_assert_int_eq(registry_load(r, "o__one", 1, 0, yaml, sizeof yaml, NULL), 0);
    registry_foreach(r, count_key, &n);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(resident_pages(r, r->payload, r->nslots * r->payload_stride), 1);
    registry_close(r, 1);
}
END_TEST

#define BIG_BODY   (60 * 1024)
#define SMALL_BODY 5000

START_TEST(unload_returns_payload_pages)
{
    struct registry *r = must_create("release", 4, SCAN_SLOT);
    static char body[BIG_BODY];
    uint64_t slot;
    unsigned char *p;

    body_make(body, sizeof body, "release");
    ck_assert_int_eq(registry_load(r, "o__big", 1, 0, body, sizeof body, NULL), 0);
    slot = slot_of(r, "o__big");
    p = slot_payload(r, slot);
    ck_assert_int_eq(resident_pages(r, p, r->payload_stride), BIG_BODY / 4096);

    ck_assert_int_eq(registry_unload(r, "o__big"), 0);
    ck_assert_int_eq(resident_pages(r, p, r->payload_stride), 0);
    ck_assert(payload_pages_only_where_used(r));
    /* The hole reads as zeros (and reading faults it back in: tmpfs). */
    for (size_t i = 0; i < BIG_BODY; i += 512)
        ck_assert_int_eq(p[i], 0);
    registry_close(r, 1);
}
END_TEST

START_TEST(smaller_reload_returns_tail_pages)
{
    struct registry *r = must_create("shrink", 4, SCAN_SLOT);
    static char big[BIG_BODY], small[SMALL_BODY];
    struct registry_agent a;
    unsigned char *p;

    body_make(big, sizeof big, "big");
    body_make(small, sizeof small, "small");
    ck_assert_int_eq(registry_load(r, "o__x", 1, 0, big, sizeof big, NULL), 0);
    p = slot_payload(r, slot_of(r, "o__x"));
    ck_assert_int_eq(resident_pages(r, p, r->payload_stride), BIG_BODY / 4096);
    ck_assert_int_eq(registry_load(r, "o__x", 2, 0, small, sizeof small, NULL), 0);
    ck_assert_int_eq(resident_pages(r, p, r->payload_stride), 2);   /* 5000 bytes */
    ck_assert(payload_pages_only_where_used(r));
    ck_assert_int_eq(registry_get(r, "o__x", &a), 0);
    ck_assert(body_valid(a.yaml, a.yaml_len, "small"));
    registry_agent_clear(&a);
    registry_close(r, 1);
}
END_TEST

/* ---- sharing between handles and processes -------------------------------- */

START_TEST(attach_sees_writes_from_creator)
{
    struct registry *r = must_create("attach", 4, 256);
    struct registry *w = NULL, *junk = NULL;
    struct registry_agent a;
    struct am_error err;
    char name[96];
    int fd;

    seg_name(name, sizeof name, "attach");
    ck_assert_int_eq(load_str(r, "o__one", 1, "one"), 0);
    ck_assert_int_eq(registry_attach(&w, name, NULL), 0);
    ck_assert_uint_eq(registry_slot_bytes(w), 256);
    ck_assert_int_eq(registry_get(w, "o__one", &a), 0);
    ck_assert_str_eq(a.yaml, "one");
    registry_agent_clear(&a);
    ck_assert_int_eq(load_str(w, "o__two", 1, "two"), 0);
    ck_assert_int_eq(registry_get(r, "o__two", &a), 0);
    ck_assert_str_eq(a.yaml, "two");
    registry_agent_clear(&a);
    registry_close(w, 0);
    ck_assert_int_eq(registry_count(r), 2);   /* closing a handle unmaps only */
    registry_close(r, 1);

    error_clear(&err);
    ck_assert_int_eq(registry_attach(&w, name, &err), AM_ENOENT);
    ck_assert_ptr_null(w);

    /* A segment that is not a registry is refused, not trusted. */
    seg_name(name, sizeof name, "attach-junk");
    fd = shm_open(name, O_CREAT | O_RDWR, 0600);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(ftruncate(fd, 65536), 0);
    ck_assert_int_eq((int)write(fd, "not a registry", 14), 14);
    close(fd);
    ck_assert_int_eq(registry_attach(&junk, name, &err), AM_EUNAVAILABLE);
    ck_assert_ptr_null(junk);
    shm_unlink(name);
}
END_TEST

START_TEST(forked_child_writes_visible_to_parent)
{
    struct registry *r = must_create("fork", 4, 256);
    struct registry_agent a;
    char name[96];
    pid_t pid;

    seg_name(name, sizeof name, "fork");
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        struct registry *w = NULL;
        int rc = load_str(r, "o__inherited", 5, "from the inherited mapping");

        if (rc == 0)
            rc = registry_attach(&w, name, NULL);
        if (rc == 0)
            rc = load_str(w, "o__attached", 6, "from an attached mapping");
        registry_close(w, 0);
        _exit(rc == 0 ? 0 : 1);
    }
    ck_assert(child_ok(pid));
    ck_assert_int_eq(registry_get(r, "o__inherited", &a), 0);
    ck_assert_str_eq(a.yaml, "from the inherited mapping");
    ck_assert_uint_eq(a.version, 5);
    registry_agent_clear(&a);
    ck_assert_int_eq(registry_get(r, "o__attached", &a), 0);
    ck_assert_str_eq(a.yaml, "from an attached mapping");
    registry_agent_clear(&a);
    registry_close(r, 1);
}
END_TEST

/* ---- concurrency ---------------------------------------------------------- */

#define TORN_BODY_A 3000
#define TORN_BODY_B 4096
#define TORN_GETS   40000

struct torn_reader {
    struct registry *r;
    const char *body_a, *body_b;
    long bad;           /* OUT: copies that were neither body, or mismatched */
    long seen_a, seen_b;/* OUT */
};

/* Odd versions carry body A, even ones body B; generations never go back. */
static void *torn_reader_run(void *arg)
{
    struct torn_reader *t = arg;
    uint64_t last_gen = 0;

    for (int i = 0; i < TORN_GETS; i++) {
        struct registry_agent a;

        if (registry_get(t->r, "o__hot", &a) != 0) {
            t->bad++;
            continue;
        }
        if (a.version % 2 == 1 && a.yaml_len == TORN_BODY_A &&
            memcmp(a.yaml, t->body_a, TORN_BODY_A) == 0)
            t->seen_a++;
        else if (a.version % 2 == 0 && a.yaml_len == TORN_BODY_B &&
                 memcmp(a.yaml, t->body_b, TORN_BODY_B) == 0)
            t->seen_b++;
        else
            t->bad++;
        if (a.generation < last_gen || !body_valid(a.yaml, a.yaml_len, NULL))
            t->bad++;
        last_gen = a.generation;
        registry_agent_clear(&a);
    }
    return NULL;
}

START_TEST(concurrent_readers_never_see_torn_entry)
{
    struct registry *r = must_create("torn", 4, TORN_BODY_B);
    struct shared_ctl *ctl = ctl_new();
    static char body_a[TORN_BODY_A], body_b[TORN_BODY_B];
    struct torn_reader t[2];
    pthread_t th[2];
    pid_t writer, reader, parent = getpid();

    body_make(body_a, sizeof body_a, "alpha");
    body_make(body_b, sizeof body_b, "bravo");
    ck_assert(body_valid(body_a, sizeof body_a, "alpha"));
    ck_assert_int_eq(registry_load(r, "o__hot", 1, 0, body_a, sizeof body_a, NULL), 0);
    ck_assert_int_eq(load_str(r, "o__cold", 1, "cold"), 0);

    writer = fork();
    ck_assert_int_ge(writer, 0);
    if (writer == 0) {
        child_dies_with_parent(parent);
        for (uint64_t v = 2; !__atomic_load_n(&ctl->stop, __ATOMIC_ACQUIRE); v++) {
            int rc = v % 2 ? registry_load(r, "o__hot", v, 0, body_a, sizeof body_a, NULL)
                           : registry_load(r, "o__hot", v, 0, body_b, sizeof body_b, NULL);
            if (rc != 0)
                _exit(1);
            __atomic_store_n(&ctl->progress, v, __ATOMIC_RELEASE);
        }
        _exit(0);
    }
    ck_assert(ctl_wait_progress(ctl, 10));

    reader = fork();   /* a reader in another process, like a worker */
    ck_assert_int_ge(reader, 0);
    if (reader == 0) {
        struct torn_reader tr = { r, body_a, body_b, 0, 0, 0 };

        torn_reader_run(&tr);
        _exit(tr.bad == 0 ? 0 : 1);
    }
    for (int i = 0; i < 2; i++) {
        t[i] = (struct torn_reader){ r, body_a, body_b, 0, 0, 0 };
        ck_assert_int_eq(pthread_create(&th[i], NULL, torn_reader_run, &t[i]), 0);
    }
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    ck_assert(child_ok(reader));
    __atomic_store_n(&ctl->stop, 1, __ATOMIC_RELEASE);
    ck_assert(child_ok(writer));

    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(t[i].bad, 0);
        ck_assert_int_eq(t[i].seen_a + t[i].seen_b, TORN_GETS);
    }
    ck_assert_uint_gt(__atomic_load_n(&ctl->progress, __ATOMIC_ACQUIRE), 100);
    ck_assert_int_eq(table_check(r, NULL, 0), 0);
    ck_assert_int_eq(registry_count(r), 2);
    munmap(ctl, sizeof *ctl);
    registry_close(r, 1);
}
END_TEST

#define RACE_GETS 20000

struct release_reader {
    struct registry *r;
    long bad, found, missing;   /* OUT */
};

/* Every get is a whole body of one of the two sizes, or ENOENT: never the
 * zeros an overlapping release leaves behind. */
static void *release_reader_run(void *arg)
{
    struct release_reader *t = arg;

    for (int i = 0; i < RACE_GETS; i++) {
        struct registry_agent a;
        int rc = registry_get(t->r, "o__hot", &a);

        if (rc == AM_ENOENT) {
            t->missing++;
        } else if (rc == 0 && (a.yaml_len == BIG_BODY || a.yaml_len == SMALL_BODY) &&
                   body_valid(a.yaml, a.yaml_len, NULL)) {
            t->found++;
        } else {
            t->bad++;
        }
        registry_agent_clear(&a);
    }
    return NULL;
}

START_TEST(reader_racing_unload_never_sees_released_pages)
{
    struct registry *r = must_create("racerel", 4, SCAN_SLOT);
    struct shared_ctl *ctl = ctl_new();
    static char big[BIG_BODY], small[SMALL_BODY];
    struct release_reader t[2];
    pthread_t th[2];
    pid_t writer, parent = getpid();

    body_make(big, sizeof big, "big");
    body_make(small, sizeof small, "small");
    writer = fork();
    ck_assert_int_ge(writer, 0);
    if (writer == 0) {
        /* Load big, shrink to small, unload: both kinds of release. The
         * naps leave readers room to finish a 60 KiB copy now and then. */
        struct timespec nap = { 0, 20000 };

        child_dies_with_parent(parent);
        for (uint64_t v = 1; !__atomic_load_n(&ctl->stop, __ATOMIC_ACQUIRE); v++) {
            if (registry_load(r, "o__hot", v, 0, big, sizeof big, NULL) != 0)
                _exit(1);
            nanosleep(&nap, NULL);
            if (registry_load(r, "o__hot", v, 0, small, sizeof small, NULL) != 0)
                _exit(1);
            nanosleep(&nap, NULL);
            if (registry_unload(r, "o__hot") != 0)
                _exit(1);
            __atomic_store_n(&ctl->progress, v, __ATOMIC_RELEASE);
        }
        _exit(0);
    }
    ck_assert(ctl_wait_progress(ctl, 10));
    for (int i = 0; i < 2; i++) {
        t[i] = (struct release_reader){ r, 0, 0, 0 };
        ck_assert_int_eq(pthread_create(&th[i], NULL, release_reader_run, &t[i]), 0);
    }
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    __atomic_store_n(&ctl->stop, 1, __ATOMIC_RELEASE);
    ck_assert(child_ok(writer));

    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(t[i].bad, 0);
        ck_assert_int_eq(t[i].found + t[i].missing, RACE_GETS);
    }
    ck_assert_int_gt(t[0].found + t[1].found, 0);
    ck_assert_int_eq(table_check(r, NULL, 0), 0);
    ck_assert_int_eq(registry_count(r), 0);
    munmap(ctl, sizeof *ctl);
    registry_close(r, 1);
}
END_TEST

/* ---- writer death --------------------------------------------------------- */

START_TEST(dead_writer_does_not_block_readers)
{
    struct registry *r = must_create("dead", 8, 256);
    struct registry_agent a;
    uint64_t t0, slot_b;
    pid_t pid;

    ck_assert_int_eq(load_str(r, "o__a", 1, "alive"), 0);
    ck_assert_int_eq(load_str(r, "o__b", 1, "being rewritten"), 0);
    slot_b = slot_of(r, "o__b");
    ck_assert_uint_ne(slot_b, REGISTRY_NO_SLOT);

    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        struct registry_shm_entry *e = slot_at(r, slot_b);

        if (lock_acquire(r, 0) != 0)
            _exit(1);
        write_begin(r, slot_b);               /* seq odd, write_slot = o__b */
        memset(slot_payload(r, slot_b), '#', 4); /* half a new body ... */
        e->yaml_len = 1u << 30;               /* ... and a length past the slot */
        _exit(0);                             /* die holding the mutex */
    }
    ck_assert(child_ok(pid));
    ck_assert_uint_eq(r->hdr->seq & 1, 1);

    t0 = util_monotonic_ms();
    ck_assert_int_eq(registry_get(r, "o__a", &a), 0);
    ck_assert_uint_lt(util_monotonic_ms() - t0, 2000);
    ck_assert_str_eq(a.yaml, "alive");
    registry_agent_clear(&a);

    /* The half-written agent is dropped, never served. */
    ck_assert_int_eq(registry_get(r, "o__b", &a), AM_ENOENT);
    ck_assert_int_eq(registry_count(r), 1);
    ck_assert_uint_eq(r->hdr->seq & 1, 0);
    ck_assert_uint_eq(r->hdr->recoveries, 1);
    ck_assert_int_eq(table_check(r, NULL, 0), 0);

    /* Writers work again, and the supervisor's reconcile can reload it. */
    ck_assert_int_eq(load_str(r, "o__b", 2, "reconciled"), 0);
    ck_assert_int_eq(load_str(r, "o__c", 1, "new"), 0);
    ck_assert_int_eq(registry_get(r, "o__b", &a), 0);
    ck_assert_str_eq(a.yaml, "reconciled");
    registry_agent_clear(&a);
    ck_assert_int_eq(registry_count(r), 3);
    registry_close(r, 1);
}
END_TEST

START_TEST(dead_lock_holder_between_writes_loses_nothing)
{
    struct registry *r = must_create("deadidle", 8, 256);
    struct registry_agent a;
    pid_t pid;

    ck_assert_int_eq(load_str(r, "o__a", 1, "a"), 0);
    ck_assert_int_eq(load_str(r, "o__b", 1, "b"), 0);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        _exit(lock_acquire(r, 0) == 0 ? 0 : 1);   /* seq stays even */
    ck_assert(child_ok(pid));

    ck_assert_int_eq(load_str(r, "o__c", 1, "c"), 0);   /* EOWNERDEAD path */
    ck_assert_uint_eq(r->hdr->recoveries, 1);
    ck_assert_int_eq(registry_count(r), 3);
    ck_assert_int_eq(registry_get(r, "o__a", &a), 0);
    registry_agent_clear(&a);
    ck_assert_int_eq(registry_get(r, "o__b", &a), 0);
    registry_agent_clear(&a);
    ck_assert_int_eq(table_check(r, NULL, 0), 0);
    registry_close(r, 1);
}
END_TEST

START_TEST(dead_writer_mid_compaction_leaves_no_duplicates)
{
    struct registry *r = must_create("deadmove", 8, 128);
    struct keyset ks;
    char keys[6][32];
    pid_t pid;

    /* A cluster a0..a5 at home 3; unloading a0 leaves a tombstone at 3. */
    ck_assert_int_eq(colliding_keys(r->nslots, 3, keys, 6), 6);
    for (int i = 0; i < 6; i++)
        ck_assert_int_eq(load_str(r, keys[i], 1, keys[i]), 0);
    ck_assert_int_eq(registry_unload(r, keys[0]), 0);

    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* Compaction interrupted: tombstone emptied (keys[1..5] now
         * unreachable) and keys[5] copied towards home but its old slot not
         * yet emptied (a duplicate); plus one slot of garbage state. */
        uint64_t from = slot_of(r, keys[5]), to = 3, junk = 12;

        if (lock_acquire(r, 0) != 0 || slot_state(r, to) != SLOT_TOMB ||
            slot_state(r, junk) != SLOT_EMPTY)
            _exit(1);
        write_begin(r, REGISTRY_NO_SLOT);
        slot_set_state(r, to, SLOT_EMPTY);
        *slot_at(r, to) = *slot_at(r, from);
        memcpy(slot_payload(r, to), slot_payload(r, from), r->payload_stride);
        slot_at(r, junk)->state = 7;
        _exit(0);
    }
    ck_assert(child_ok(pid));

    ck_assert_int_eq(registry_count(r), 5);   /* reader recovers via trylock */
    ck_assert_int_eq(table_check(r, NULL, 0), 0);
    for (int i = 1; i < 6; i++)
        ck_assert_int_eq(registry_contains(r, keys[i], NULL), 1);
    ck_assert_int_eq(registry_contains(r, keys[0], NULL), 0);
    memset(&ks, 0, sizeof ks);
    registry_foreach(r, keyset_add, &ks);
    ck_assert_int_eq(ks.n, 5);
    registry_close(r, 1);
}
END_TEST

#define KILL_KEYS 40

/* Child of killed_writer_leaves_table_consistent: churn until killed. */
static void churn_until_killed(struct registry *r, struct shared_ctl *ctl, uint64_t seed,
                               pid_t parent)
{
    char key[32], body[400];

    child_dies_with_parent(parent);
    for (uint64_t op = 1;; op++) {
        int k = (int)(rng_next(&seed) % KILL_KEYS);

        util_snprintf(key, sizeof key, "o__kill%d", k);
        if (rng_next(&seed) % 3) {
            size_t len = BODY_HDR + (size_t)(rng_next(&seed) % (sizeof body - BODY_HDR));

            body_make(body, len, key);
            registry_load(r, key, op, 0, body, len, NULL);
        } else {
            registry_unload(r, key);
        }
        __atomic_store_n(&ctl->progress, op, __ATOMIC_RELEASE);
    }
}

START_TEST(killed_writer_leaves_table_consistent)
{
    struct registry *r = must_create("kill9", 16, 400);
    struct shared_ctl *ctl = ctl_new();
    uint64_t seed = 12345;
    pid_t parent = getpid();

    for (int round = 0; round < 25; round++) {
        struct keyset ks;
        uint64_t target = 50 + rng_next(&seed) % 400;
        int found = 0, rc;
        pid_t pid;

        __atomic_store_n(&ctl->progress, 0, __ATOMIC_RELEASE);
        pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0)
            churn_until_killed(r, ctl, seed + (uint64_t)round, parent);
        ck_assert(ctl_wait_progress(ctl, target));
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);

        /* Every key is absent or a whole body; readers and writers work. */
        for (int k = 0; k < KILL_KEYS; k++) {
            struct registry_agent a;
            char key[32];

            util_snprintf(key, sizeof key, "o__kill%d", k);
            rc = registry_get(r, key, &a);
            ck_assert(rc == 0 || rc == AM_ENOENT);
            if (rc == 0) {
                ck_assert_msg(body_valid(a.yaml, a.yaml_len, key), "round %d: bad %s", round, key);
                found++;
            }
            registry_agent_clear(&a);
        }
        rc = load_str(r, "o__sentinel", 1, "s");   /* takes the mutex */
        ck_assert(rc == 0 || rc == AM_EREGISTRYFULL);
        ck_assert_int_eq(registry_unload(r, "o__sentinel"), rc == 0 ? 0 : AM_ENOENT);
        ck_assert_int_eq(table_check(r, NULL, 0), 0);
        ck_assert_msg(payload_pages_only_where_used(r), "round %d: stray payload pages", round);
        ck_assert_int_eq(registry_count(r), found);
        memset(&ks, 0, sizeof ks);
        registry_foreach(r, keyset_add, &ks);
        ck_assert_int_eq(ks.n, found);
    }
    munmap(ctl, sizeof *ctl);
    registry_close(r, 1);
}
END_TEST

/* ---- runner --------------------------------------------------------------- */

/* Remove segments a failed test left behind (Linux keeps them in /dev/shm). */
static void remove_stale_segments(void)
{
    char prefix[64], name[300];
    DIR *d = opendir("/dev/shm");
    struct dirent *de;

    if (d == NULL)
        return;
    util_snprintf(prefix, sizeof prefix, SEG_PREFIX "%d-", (int)runner_pid);
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, prefix, strlen(prefix)) == 0 &&
            util_snprintf(name, sizeof name, "/%s", de->d_name) == 0)
            shm_unlink(name);
    }
    closedir(d);
}

static Suite *registry_suite(void)
{
    Suite *s = suite_create("registry");
    TCase *basic = tcase_create("basic");
    TCase *shared = tcase_create("shared");
    TCase *crash = tcase_create("crash");

    tcase_add_test(basic, load_then_get_returns_copy);
    tcase_add_test(basic, reload_changes_generation);
    tcase_add_test(basic, unload_removes_and_count_drops);
    tcase_add_test(basic, get_missing_is_enoent);
    tcase_add_test(basic, full_table_rejected);
    tcase_add_test(basic, oversize_yaml_rejected);
    tcase_add_test(basic, bad_keys_and_geometry_rejected);
    tcase_add_test(basic, tombstones_do_not_break_lookup);
    tcase_add_test(basic, foreach_visits_each_key_once_and_allows_unload);
    tcase_add_test(basic, empty_registry_scan_touches_only_the_index);
    tcase_add_test(basic, unload_returns_payload_pages);
    tcase_add_test(basic, smaller_reload_returns_tail_pages);
    tcase_set_timeout(basic, 120);
    suite_add_tcase(s, basic);

    tcase_add_test(shared, attach_sees_writes_from_creator);
    tcase_add_test(shared, forked_child_writes_visible_to_parent);
    tcase_add_test(shared, concurrent_readers_never_see_torn_entry);
    tcase_add_test(shared, reader_racing_unload_never_sees_released_pages);
    tcase_set_timeout(shared, 300);
    suite_add_tcase(s, shared);

    tcase_add_test(crash, dead_writer_does_not_block_readers);
    tcase_add_test(crash, dead_lock_holder_between_writes_loses_nothing);
    tcase_add_test(crash, dead_writer_mid_compaction_leaves_no_duplicates);
    tcase_add_test(crash, killed_writer_leaves_table_consistent);
    tcase_set_timeout(crash, 300);
    suite_add_tcase(s, crash);
    return s;
}

int main(void)
{
    SRunner *sr;
    int failed;

    runner_pid = getpid();
    sr = srunner_create(registry_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    remove_stale_segments();
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
