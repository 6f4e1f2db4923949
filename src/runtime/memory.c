/*
 * memory.c - conversational memory in STORE_SESSIONS.
 *
 * Owns the record format: key "org__agent\0r|t\0session" -> a JSON array
 * of {"role","content"}, oldest first. Appending is a read-modify-write
 * in one transaction, so two runs on one session never lose a turn.
 *
 * Also owns the session index (STORE_SESSION_IDX; "bounds" below): each
 * session's last use and size, and the counts and bytes the bounds are
 * kept by.
 *
 * Must never: log; hand one agent's (or org's) messages to another: the
 * agent id is the first part of every key; hand out a record it did not
 * write (a corrupt one is AM_EIO, never a half-read history).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "runtime/memory.h"
#include "state/cluster.h"
#include "state/config.h"
#include "state/store.h"
#include "lib/util.h"

int memory_session_valid(const char *s)
{
    size_t n = 0;

    for (; s[n] != '\0'; n++) {
        char c = s[n];
        if (n >= 128 || !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                          (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' ||
                          c == '-'))
            return 0;
    }
    return n > 0;
}

static size_t session_key(char *buf, size_t cap, const char *agent_id, int mode,
                          const char *session)
{
    size_t la = strlen(agent_id), ls = strlen(session);

    if (la + ls + 4 > cap)
        return 0;
    memcpy(buf, agent_id, la);
    buf[la] = '\0';
    buf[la + 1] = mode == MEMORY_TEST ? 't' : 'r';
    buf[la + 2] = '\0';
    memcpy(buf + la + 3, session, ls);
    return la + 3 + ls;
}

int memory_estimate_tokens(const char *text)
{
    size_t n = strlen(text);
    return (int)((n + 3) / 4);
}

/* 1 if a is what append_txn writes: an array of {"role","content"} with
 * both strings. Anything else was not written by this module. */
static int record_valid(struct json_object *a)
{
    size_t i, n;

    if (!json_object_is_type(a, json_type_array))
        return 0;
    n = json_object_array_length(a);
    for (i = 0; i < n; i++) {
        struct json_object *m = json_object_array_get_idx(a, i), *r, *c;
        if (!json_object_object_get_ex(m, "role", &r) || !json_object_is_type(r, json_type_string) ||
            !json_object_object_get_ex(m, "content", &c) || !json_object_is_type(c, json_type_string))
            return 0;
    }
    return 1;
}

/* The session's array (new reference, caller puts; empty if there is no
 * record), or NULL with *rc set: a store error, or AM_EIO when the record
 * is corrupt (not JSON, or not an array of role/content strings). */
static struct json_object *load_array(struct store *s, struct store_txn *t, const char *key,
                                      size_t klen, int flags, int *rc)
{
    struct json_object *a = NULL;
    char *val = NULL;

    *rc = store_get(s, t, STORE_SESSIONS, key, klen, flags, &val, NULL);
    if (*rc == 0)
        a = json_tokener_parse(val);
    free(val);
    if (*rc == AM_ENOENT) {
        *rc = 0;
        return json_object_new_array();
    }
    if (*rc == 0 && !record_valid(a))
        *rc = AM_EIO;
    if (*rc != 0) {
        json_object_put(a);
        return NULL;
    }
    return a;
}

int memory_load(struct app *app, const char *agent_id, int mode, const char *session,
                struct json_object **messages)
{
    char key[512];
    size_t klen = session_key(key, sizeof(key), agent_id, mode, session);
    int rc;

    *messages = NULL;
    if (klen == 0)
        return AM_EBADREQ;
    *messages = load_array(app->store, NULL, key, klen, 0, &rc);
    if (rc != 0)
        return rc == AM_EIO ? AM_EIO : AM_EUNAVAILABLE;
    return 0;
}

/* ---- bounds: the session index (STORE_SESSION_IDX) -------------------------
 *
 * Sessions are bounded three ways: one unused for memory.session_ttl_s is
 * swept by the supervisor's storage task (memory_sweep, in bounded
 * batches; no request ever scans); an agent keeps at most
 * memory.max_sessions_per_agent live sessions per mode, and an org at most
 * memory.max_kb_per_org of stored session bytes per mode: past either, the
 * turn being written pushes out the least recently used sessions of that
 * agent (org) in the same transaction. Run and test sessions are counted
 * apart, so hostile tests never push a production conversation out.
 *
 * Records (k: a session key "org__agent\0m\0session", m 'r' or 't'; at:
 * the last use, 16 hex digits of milliseconds since the epoch):
 *   'a' k                           -> "<at> <bytes>"  (bytes: key + value stored)
 *   'o' org \0 m \0 at \0 k         -> ""   the org's sessions of mode m, oldest first
 *   'p' agent_id \0 m \0 at \0 k    -> ""   the agent's, likewise
 *   'c' agent_id \0 m               -> "<n>"      the agent's live sessions of mode m
 *   'b' org \0 m                    -> "<bytes>"  the org's stored session bytes of mode m
 * Invariant: every session record written since the index exists has its
 * 'a', 'o' and 'p' records with the same at, and 'c' and 'b' are the
 * count and sum over them. Every change of one session changes them all in
 * the transaction that writes (or deletes) its record; 'b' of the org is
 * read for update first, so writers of one org and mode queue there
 * instead of deadlocking further on.
 */
#define IDX_AT_LEN 16
#define IDX_KEY_MAX 640
#define IDX_DROPS_MAX 64        /* sessions one turn may push out */
#define IDX_SWEEP_BATCH 128     /* sessions one sweep transaction expires */

struct sess_ref {
    const char *k;              /* the session key */
    size_t kl;
    size_t la;                  /* agent id "org__name" */
    size_t lo;                  /* org slug */
    char m;                     /* 'r' or 't' */
};

/* Split a session key. Returns 0, or AM_EINTERNAL if it is not one. */
static int sess_parse(const char *k, size_t kl, struct sess_ref *r)
{
    const char *sep;

    r->k = k;
    r->kl = kl;
    r->la = strnlen(k, kl);
    if (r->la + 3 > kl || k[r->la + 2] != '\0')
        return AM_EINTERNAL;
    /* an agent id is "org__name"; one without "__" is its own org */
    sep = strstr(k, "__");
    r->lo = sep != NULL && sep < k + r->la ? (size_t)(sep - k) : r->la;
    r->m = k[r->la + 1];
    return 0;
}

/* tag scope \0 m into buf, scope the org ('b', 'o') or the agent ('c',
 * 'p'); with ord, also "\0" (the order prefix). Returns the length, 0 if
 * it does not fit. */
static size_t scope_key(char *buf, size_t cap, char tag, const struct sess_ref *r, int ord)
{
    size_t sl = tag == 'b' || tag == 'o' ? r->lo : r->la, n = 1 + sl + 2 + (ord ? 1 : 0);

    if (n > cap)
        return 0;
    buf[0] = tag;
    memcpy(buf + 1, r->k, sl);
    buf[1 + sl] = '\0';
    buf[2 + sl] = r->m;
    if (ord)
        buf[3 + sl] = '\0';
    return n;
}

/* The 'o' or 'p' record of r used at `at`. Returns the length, 0 if too long. */
static size_t order_key(char *buf, size_t cap, char tag, const struct sess_ref *r, int64_t at)
{
    size_t n = scope_key(buf, cap, tag, r, 1);
    char hex[IDX_AT_LEN + 2];

    snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)at);
    if (n == 0 || n + IDX_AT_LEN + 1 + r->kl > cap)
        return 0;
    memcpy(buf + n, hex, IDX_AT_LEN);
    buf[n + IDX_AT_LEN] = '\0';
    memcpy(buf + n + IDX_AT_LEN + 1, r->k, r->kl);
    return n + IDX_AT_LEN + 1 + r->kl;
}

/* Add delta to the counter at key (its new value in *now, if not NULL);
 * a counter that reaches 0 is deleted. Returns 0 or the store's error. */
static int counter_add(struct store *s, struct store_txn *t, const char *key, size_t klen,
                       int64_t delta, int64_t *now)
{
    char *val = NULL, buf[32];
    long long v = 0;
    int rc = store_get(s, t, STORE_SESSION_IDX, key, klen, STORE_RMW, &val, NULL);

    if (rc == 0)
        v = strtoll(val, NULL, 10);
    free(val);
    if (rc != 0 && rc != AM_ENOENT)
        return rc;
    v += delta;
    if (v < 0)
        v = 0;
    if (now != NULL)
        *now = v;
    if (delta == 0)
        return 0;
    if (v == 0)
        return rc == AM_ENOENT ? 0 : store_del(s, t, STORE_SESSION_IDX, key, klen);
    snprintf(buf, sizeof(buf), "%lld", v);
    return store_put(s, t, STORE_SESSION_IDX, key, klen, buf, strlen(buf));
}

/* r's 'a' record into *at and *bytes. Returns 0, AM_ENOENT or an error. */
static int meta_get(struct store *s, struct store_txn *t, const struct sess_ref *r,
                    int64_t *at, int64_t *bytes)
{
    char key[IDX_KEY_MAX], *val = NULL;
    long long a = 0, b = 0;
    int rc;

    *at = *bytes = 0;
    if (r->kl + 1 > sizeof(key))
        return AM_EINTERNAL;
    key[0] = 'a';
    memcpy(key + 1, r->k, r->kl);
    rc = store_get(s, t, STORE_SESSION_IDX, key, r->kl + 1, STORE_RMW, &val, NULL);
    if (rc == 0 && sscanf(val, "%lld %lld", &a, &b) != 2)
        rc = AM_ENOENT;     /* unreadable: as if never indexed */
    free(val);
    *at = a;
    *bytes = b;
    return rc;
}

/* Write r's 'a', 'o' and 'p' records for a use at `at` (bytes stored). */
static int index_put(struct store *s, struct store_txn *t, const struct sess_ref *r,
                     int64_t at, int64_t bytes)
{
    char key[IDX_KEY_MAX], val[48];
    size_t n;
    int rc;

    if (r->kl + 1 > sizeof(key))
        return AM_EINTERNAL;
    key[0] = 'a';
    memcpy(key + 1, r->k, r->kl);
    snprintf(val, sizeof(val), "%lld %lld", (long long)at, (long long)bytes);
    if ((rc = store_put(s, t, STORE_SESSION_IDX, key, r->kl + 1, val, strlen(val))) != 0)
        return rc;
    if ((n = order_key(key, sizeof(key), 'o', r, at)) == 0 ||
        (rc = store_put(s, t, STORE_SESSION_IDX, key, n, "", 0)) != 0)
        return n == 0 ? AM_EINTERNAL : rc;
    if ((n = order_key(key, sizeof(key), 'p', r, at)) == 0)
        return AM_EINTERNAL;
    return store_put(s, t, STORE_SESSION_IDX, key, n, "", 0);
}

/* Delete r's 'a' (with del_meta), 'o' and 'p' records of a use at `at`. */
static int index_unlink(struct store *s, struct store_txn *t, const struct sess_ref *r,
                        int64_t at, int del_meta)
{
    char key[IDX_KEY_MAX];
    size_t n;
    int rc = 0, i;

    for (i = 0; i < 3 && (rc == 0 || rc == AM_ENOENT); i++) {
        if (i == 0 && !del_meta)
            continue;
        if (i == 0) {
            key[0] = 'a';
            memcpy(key + 1, r->k, r->kl);
            n = r->kl + 1;
        } else if ((n = order_key(key, sizeof(key), i == 1 ? 'o' : 'p', r, at)) == 0) {
            return AM_EINTERNAL;
        }
        rc = store_del(s, t, STORE_SESSION_IDX, key, n);
    }
    return rc == AM_ENOENT ? 0 : rc;
}

/* Forget the session k (its record and index) if it was last used before
 * older_than; *freed gets its bytes (0 if kept). Returns 0 or an error. */
static int drop_session(struct store *s, struct store_txn *t, const char *k, size_t kl,
                        int64_t older_than, int64_t *freed)
{
    struct sess_ref r;
    char key[IDX_KEY_MAX];
    int64_t at, bytes;
    size_t n;
    int rc;

    *freed = 0;
    if ((rc = sess_parse(k, kl, &r)) != 0)
        return rc;
    if ((rc = meta_get(s, t, &r, &at, &bytes)) != 0)
        return rc == AM_ENOENT ? 0 : rc;
    if (at >= older_than)
        return 0;
    if ((rc = store_del(s, t, STORE_SESSIONS, k, kl)) != 0 && rc != AM_ENOENT)
        return rc;
    if ((rc = index_unlink(s, t, &r, at, 1)) != 0)
        return rc;
    if ((n = scope_key(key, sizeof(key), 'c', &r, 0)) == 0 ||
        (rc = counter_add(s, t, key, n, -1, NULL)) != 0)
        return n == 0 ? AM_EINTERNAL : rc;
    if ((n = scope_key(key, sizeof(key), 'b', &r, 0)) == 0 ||
        (rc = counter_add(s, t, key, n, -bytes, NULL)) != 0)
        return n == 0 ? AM_EINTERNAL : rc;
    *freed = bytes;
    return 0;
}

/* Collects the session keys of an order prefix: up to cap of them, last
 * used before `before`, skipping `skip`. */
struct order_scan {
    size_t plen;                /* the order prefix */
    int64_t before;
    const char *skip;
    size_t skiplen;
    char keys[IDX_SWEEP_BATCH][IDX_KEY_MAX];
    size_t lens[IDX_SWEEP_BATCH];
    int n, cap;
};

static int order_one(const char *k, size_t kl, const char *v, size_t vl, void *arg)
{
    struct order_scan *o = arg;
    const char *sk = k + o->plen + IDX_AT_LEN + 1;
    size_t skl;

    (void)v;
    (void)vl;
    if (kl <= o->plen + IDX_AT_LEN + 1)
        return 0;
    if (strtoll(k + o->plen, NULL, 16) >= o->before)
        return 1;               /* in order of use: the rest are newer */
    skl = kl - (size_t)(sk - k);
    if (skl > IDX_KEY_MAX || (skl == o->skiplen && memcmp(sk, o->skip, skl) == 0))
        return 0;
    memcpy(o->keys[o->n], sk, skl);
    o->lens[o->n] = skl;
    return ++o->n >= o->cap;
}

/* Push out the least recently used session of the order prefix (not r's
 * own); *freed its bytes, 0 when there is none. */
static int drop_oldest(struct store *s, struct store_txn *t, char tag,
                       const struct sess_ref *r, int64_t *freed)
{
    struct order_scan *o = xcalloc(1, sizeof(*o));
    char prefix[IDX_KEY_MAX];
    int rc;

    *freed = 0;
    o->plen = scope_key(prefix, sizeof(prefix), tag, r, 1);
    o->before = INT64_MAX;
    o->skip = r->k;
    o->skiplen = r->kl;
    o->cap = 1;
    rc = store_scan(s, t, STORE_SESSION_IDX, prefix, o->plen, order_one, o);
    if (rc == 0 && o->n == 1)
        rc = drop_session(s, t, o->keys[0], o->lens[0], INT64_MAX, freed);
    if (rc == 0 && o->n == 1 && *freed == 0)
        *freed = 1;             /* gone without bytes: still one session fewer */
    free(o);
    return rc;
}

/* After r's turn (count: the agent's live sessions; bytes: the org's):
 * push out the least recently used sessions past the bounds. */
static int enforce_bounds(struct store *s, struct store_txn *t, const struct sess_ref *r,
                          const struct memory_bounds *b, int64_t count, int64_t bytes)
{
    int64_t freed;
    int rc = 0, drops = 0;

    while (b->max_sessions > 0 && count > b->max_sessions && drops++ < IDX_DROPS_MAX) {
        if ((rc = drop_oldest(s, t, 'p', r, &freed)) != 0 || freed == 0)
            return rc;
        count--;
        bytes -= freed;
    }
    while (b->max_bytes > 0 && bytes > b->max_bytes && drops++ < IDX_DROPS_MAX) {
        if ((rc = drop_oldest(s, t, 'o', r, &freed)) != 0 || freed == 0)
            return rc;
        bytes -= freed;
    }
    return rc;
}

/* Index r's turn (now stored in bytes) and apply the bounds. */
static int index_turn(struct store *s, struct store_txn *t, const struct sess_ref *r,
                      int64_t bytes, const struct memory_bounds *b)
{
    char key[IDX_KEY_MAX];
    int64_t at, old_bytes, count = 0, total = 0;
    size_t n;
    int rc, existed;

    if ((rc = meta_get(s, t, r, &at, &old_bytes)) != 0 && rc != AM_ENOENT)
        return rc;
    existed = rc == 0;
    if (existed && (rc = index_unlink(s, t, r, at, 0)) != 0)
        return rc;
    if ((rc = index_put(s, t, r, memory_now_ms(), bytes)) != 0)
        return rc;
    if ((n = scope_key(key, sizeof(key), 'c', r, 0)) == 0 ||
        (rc = counter_add(s, t, key, n, existed ? 0 : 1, &count)) != 0)
        return n == 0 ? AM_EINTERNAL : rc;
    if ((n = scope_key(key, sizeof(key), 'b', r, 0)) == 0 ||
        (rc = counter_add(s, t, key, n, bytes - old_bytes, &total)) != 0)
        return n == 0 ? AM_EINTERNAL : rc;
    return enforce_bounds(s, t, r, b, count, total);
}

int64_t memory_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the sweeper and an agent's delete -------------------------------------- */

struct sweep_ctx {
    char prefix[IDX_KEY_MAX];   /* 'o' org \0 m \0 */
    size_t plen;
    int64_t cutoff;             /* ms: sessions last used before it go */
    int dropped, seen;
};

/* One batch of one org and mode: take its 'b' first (as appends do), then
 * drop up to IDX_SWEEP_BATCH sessions last used before the cutoff (each
 * checked again here: a session used meanwhile stays). */
static int sweep_txn(struct store *s, struct store_txn *t, void *arg)
{
    struct sweep_ctx *c = arg;
    struct order_scan *o = xcalloc(1, sizeof(*o));
    char bkey[IDX_KEY_MAX];
    int64_t freed;
    int rc, i;

    c->dropped = c->seen = 0;
    memcpy(bkey, c->prefix, c->plen - 1);
    bkey[0] = 'b';
    rc = counter_add(s, t, bkey, c->plen - 1, 0, NULL);
    o->plen = c->plen;
    o->before = c->cutoff;
    o->cap = IDX_SWEEP_BATCH;
    if (rc == 0)
        rc = store_scan(s, t, STORE_SESSION_IDX, c->prefix, c->plen, order_one, o);
    for (i = 0; rc == 0 && i < o->n; i++)
        if ((rc = drop_session(s, t, o->keys[i], o->lens[i], c->cutoff, &freed)) == 0)
            c->dropped += freed > 0;
    c->seen = o->n;
    free(o);
    return rc;
}

struct scope_list {
    char (*keys)[IDX_KEY_MAX];  /* 'b' org \0 m */
    size_t *lens;
    size_t n, cap;
};

static int scope_one(const char *k, size_t kl, const char *v, size_t vl, void *arg)
{
    struct scope_list *l = arg;

    (void)v;
    (void)vl;
    if (kl >= IDX_KEY_MAX - 1)
        return 0;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 16;
        l->keys = xrealloc(l->keys, l->cap * sizeof(*l->keys));
        l->lens = xrealloc(l->lens, l->cap * sizeof(*l->lens));
    }
    memcpy(l->keys[l->n], k, kl);
    l->lens[l->n++] = kl;
    return 0;
}

int memory_sweep(struct store *s, int64_t now_ms, int ttl_s, int max, int *swept)
{
    struct scope_list l = { NULL, NULL, 0, 0 };
    struct sweep_ctx c;
    size_t i;
    int rc;

    *swept = 0;
    rc = store_scan(s, NULL, STORE_SESSION_IDX, "b", 1, scope_one, &l);
    c.cutoff = now_ms - (int64_t)ttl_s * 1000;
    for (i = 0; rc == 0 && i < l.n && *swept < max; i++) {
        memcpy(c.prefix, l.keys[i], l.lens[i]);
        c.prefix[0] = 'o';
        c.prefix[l.lens[i]] = '\0';
        c.plen = l.lens[i] + 1;
        do {
            if ((rc = store_transact(s, sweep_txn, &c)) != 0)
                break;
            *swept += c.dropped;
        } while (c.seen == IDX_SWEEP_BATCH && *swept < max);
    }
    free(l.keys);
    free(l.lens);
    return rc;
}

/* Collects up to IDX_SWEEP_BATCH session keys from 'a' records. */
static int meta_one(const char *k, size_t kl, const char *v, size_t vl, void *arg)
{
    struct order_scan *o = arg;

    (void)v;
    (void)vl;
    if (kl < 2 || kl - 1 > IDX_KEY_MAX)
        return 0;
    memcpy(o->keys[o->n], k + 1, kl - 1);
    o->lens[o->n] = kl - 1;
    return ++o->n >= o->cap;
}

/* Drop every indexed session of agent_id (in t), batch by batch. */
static int forget_indexed(struct store *s, struct store_txn *t, const char *agent_id)
{
    struct order_scan *o = xcalloc(1, sizeof(*o));
    char prefix[IDX_KEY_MAX];
    size_t la = strlen(agent_id);
    int64_t freed;
    int rc = 0, i;

    if (la + 2 > sizeof(prefix)) {
        free(o);
        return AM_EINTERNAL;
    }
    prefix[0] = 'a';
    memcpy(prefix + 1, agent_id, la + 1);     /* with its NUL */
    o->cap = IDX_SWEEP_BATCH;
    do {
        o->n = 0;
        rc = store_scan(s, t, STORE_SESSION_IDX, prefix, la + 2, meta_one, o);
        for (i = 0; rc == 0 && i < o->n; i++)
            rc = drop_session(s, t, o->keys[i], o->lens[i], INT64_MAX, &freed);
    } while (rc == 0 && o->n == o->cap);
    free(o);
    return rc;
}

struct append_ctx {
    const char *key;
    size_t klen;
    const char *user, *assistant;
    int strategy, limit;
    struct memory_bounds bounds;
};

static struct json_object *message(const char *role, const char *content)
{
    struct json_object *m = json_object_new_object();

    json_object_object_add(m, "role", json_object_new_string(role));
    json_object_object_add(m, "content", json_object_new_string(content));
    return m;
}

/* Index of the first message to keep under the strategy. */
static size_t trim_start(struct json_object *a, int strategy, int limit)
{
    size_t n = json_object_array_length(a), i;
    int budget = limit;

    if (strategy == MEMORY_SLIDING_WINDOW)
        return n > (size_t)limit ? n - (size_t)limit : 0;
    for (i = n; i > 0; i--) {
        struct json_object *m = json_object_array_get_idx(a, i - 1), *c;
        json_object_object_get_ex(m, "content", &c);
        budget -= memory_estimate_tokens(json_object_get_string(c));
        if (budget < 0)
            return i;
    }
    return 0;
}

static int append_txn(struct store *s, struct store_txn *t, void *arg)
{
    struct append_ctx *c = arg;
    struct json_object *a, *kept;
    struct sess_ref r;
    char bkey[IDX_KEY_MAX];
    size_t i, start, n, len;
    const char *v;
    int rc;

    /* the org's byte counter first: writers of one org queue here */
    if ((rc = sess_parse(c->key, c->klen, &r)) != 0 ||
        (n = scope_key(bkey, sizeof(bkey), 'b', &r, 0)) == 0)
        return rc != 0 ? rc : AM_EINTERNAL;
    if ((rc = counter_add(s, t, bkey, n, 0, NULL)) != 0)
        return rc;
    if ((a = load_array(s, t, c->key, c->klen, STORE_RMW, &rc)) == NULL)
        return rc;
    json_object_array_add(a, message("user", c->user));
    json_object_array_add(a, message("assistant", c->assistant));
    start = trim_start(a, c->strategy, c->limit);
    n = json_object_array_length(a);
    kept = json_object_new_array();
    for (i = start; i < n; i++)
        json_object_array_add(kept, json_object_get(json_object_array_get_idx(a, i)));
    v = json_object_to_json_string_length(kept, JSON_C_TO_STRING_PLAIN, &len);
    rc = store_put(s, t, STORE_SESSIONS, c->key, c->klen, v, len);
    if (rc == 0)
        rc = index_turn(s, t, &r, (int64_t)(c->klen + len), &c->bounds);
    json_object_put(kept);
    json_object_put(a);
    return rc;
}

/* A replica: the master writes the turn (cluster.h). */
static int remote_append(struct app *app, const char *agent_id, int mode, const char *session,
                         const char *user, const char *assistant, int strategy, int limit)
{
    struct json_object *a = json_object_new_object(), *r = NULL;
    struct am_error err;
    int rc;

    json_object_object_add(a, "agent_id", json_object_new_string(agent_id));
    json_object_object_add(a, "mode", json_object_new_int(mode));
    json_object_object_add(a, "session", json_object_new_string(session));
    json_object_object_add(a, "user", json_object_new_string(user));
    json_object_object_add(a, "assistant", json_object_new_string(assistant));
    json_object_object_add(a, "strategy", json_object_new_int(strategy));
    json_object_object_add(a, "limit", json_object_new_int(limit));
    error_clear(&err);
    rc = cluster_call(app, "memory_append", a, &r, &err);
    json_object_put(r);
    return rc == 0 ? 0 : AM_EUNAVAILABLE;
}

static void remote_delete(struct app *app, const char *agent_id, int mode, const char *session)
{
    struct json_object *a = json_object_new_object(), *r = NULL;
    struct am_error err;

    json_object_object_add(a, "agent_id", json_object_new_string(agent_id));
    json_object_object_add(a, "mode", json_object_new_int(mode));
    json_object_object_add(a, "session", json_object_new_string(session));
    error_clear(&err);
    cluster_call(app, "memory_delete", a, &r, &err);
    json_object_put(r);
}

int memory_append(struct app *app, const char *agent_id, int mode, const char *session,
                  const char *user, const char *assistant, int strategy, int limit)
{
    char key[512];
    struct append_ctx c = { key, session_key(key, sizeof(key), agent_id, mode, session),
                            user, assistant, strategy, limit > 0 ? limit : 1, { 0, 0 } };

    if (c.klen == 0)
        return AM_EBADREQ;
    if (cluster_is_replica(app))
        return remote_append(app, agent_id, mode, session, user, assistant, strategy, limit);
    if (app->cfg != NULL) {
        c.bounds.max_sessions = app->cfg->max_sessions_per_agent;
        c.bounds.max_bytes = (int64_t)app->cfg->max_kb_per_org * 1024;
    }
    return store_transact_deferred(app->store, append_txn, &c) == 0 ? 0 : AM_EUNAVAILABLE;
}

struct forget_ctx {
    const char *key;
    size_t klen;
};

static int forget_txn(struct store *s, struct store_txn *t, void *arg)
{
    struct forget_ctx *c = arg;
    int64_t freed;
    int rc = drop_session(s, t, c->key, c->klen, INT64_MAX, &freed);

    if (rc == 0 && (rc = store_del(s, t, STORE_SESSIONS, c->key, c->klen)) == AM_ENOENT)
        rc = 0;
    return rc;
}

void memory_delete(struct app *app, const char *agent_id, int mode, const char *session)
{
    char key[512];
    struct forget_ctx c = { key, session_key(key, sizeof(key), agent_id, mode, session) };

    if (c.klen != 0 && cluster_is_replica(app))
        remote_delete(app, agent_id, mode, session);
    else if (c.klen != 0)
        store_transact(app->store, forget_txn, &c);
}

int memory_forget_agent(struct store *s, struct store_txn *t, const char *agent_id)
{
    int rc = forget_indexed(s, t, agent_id);

    /* every key of the agent starts "org__name\0" (see the top): this
     * also takes sessions written before the index existed */
    return rc != 0 ? rc : store_del_prefix(s, t, STORE_SESSIONS, agent_id,
                                           strlen(agent_id) + 1);
}
