/*
 * apikey.c - an organisation's API keys: their records, the check of an
 * X-API-Key header, and the per-thread memo that makes that check free for
 * a client reusing its key.
 *
 * Owns the record format of STORE_APIKEYS, where <hash> is the 64 hex
 * digits of the BLAKE2b hash of the secret keyed with the master key's
 * VAULT_APIKEY_HASH subkey:
 *   "h\0<hash>"       -> {"id","org","name","prefix","scopes":["run",…],
 *                         "created_at","created_by","last_used_at"}
 *                        (times in epoch seconds; last_used_at 0 = never;
 *                        "created_us", microseconds, orders the list)
 *   "o\0<org>\0<id>"  -> "<hash>" (an org's keys, without scanning others')
 *
 * Invariants:
 *  1. Each "h" record has exactly one "o" record naming its hash, and back:
 *     both are written, and deleted, in one transaction.
 *  2. No secret is stored anywhere; the records hold its keyed hash and its
 *     first APIKEY_SHOWN_PREFIX characters (4 of them "ask-": 48 bits of
 *     the 256 are shown, which leaves 208 to guess).
 *  3. An org never holds more than APIKEY_PER_ORG_MAX keys: creates within
 *     an org take the org record's write lock before they count.
 *  4. A memo entry is used only while the auth epoch is the one it was
 *     filled at; delete bumps the epoch after its commit.
 *
 * Must never: log; put a secret anywhere but the create answer (no record,
 * no error message); compare hashes with anything but sodium_memcmp; tell
 * a caller whether an id it cannot see exists in another org.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sodium.h>
#include "control/apikey.h"
#include "control/auth_state.h"
#include "state/cluster.h"
#include "state/store.h"
#include "state/vault.h"
#include "lib/key.h"
#include "lib/util.h"

#define HASH_BYTES 32
#define HASH_HEX (2 * HASH_BYTES)
#define RAND_BYTES 32
#define MEMO_SLOTS 4
#define ORG_MAX 48                    /* sizeof(struct account_principal.org) */

static unsigned long touch_writes;    /* committed last_used_at writes (test hook) */

static int refuse(struct am_error *err)
{
    return error_set(err, AM_EUNAUTH, "Invalid API key");
}

/* ---- secrets and hashes ----------------------------------------------------- */

/* 1 if the n characters of s are lower-case hex digits. */
static int lower_hex(const char *s, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

/* 1 if s has the shape of a secret: "ask-" and 43 base64url characters. */
static int secret_well_formed(const char *s)
{
    size_t i;

    if (s == NULL || strncmp(s, APIKEY_PREFIX, 4) != 0)
        return 0;
    for (i = 4; i < APIKEY_SECRET_LEN; i++) {
        char ch = s[i];

        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
              (ch >= '0' && ch <= '9') || ch == '-' || ch == '_'))
            return 0;
    }
    return s[APIKEY_SECRET_LEN] == '\0';
}

/* The keyed hash of a secret, raw into h and (if hex != NULL) as hex. */
static void secret_hash(const struct vault *v, const char *secret, unsigned char h[HASH_BYTES],
                        char hex[HASH_HEX + 1])
{
    unsigned char k[VAULT_KEY_BYTES];

    vault_subkey(v, VAULT_APIKEY_HASH, k);
    crypto_generichash(h, HASH_BYTES, (const unsigned char *)secret, strlen(secret), k,
                       sizeof(k));
    sodium_memzero(k, sizeof(k));
    if (hex != NULL)
        sodium_bin2hex(hex, HASH_HEX + 1, h, HASH_BYTES);
}

/* A new secret into out (APIKEY_SECRET_LEN + 1 bytes). */
static void secret_new(char out[APIKEY_SECRET_LEN + 1])
{
    unsigned char r[RAND_BYTES];

    memcpy(out, APIKEY_PREFIX, 4);
    randombytes_buf(r, sizeof(r));
    sodium_bin2base64(out + 4, APIKEY_SECRET_LEN + 1 - 4, r, sizeof(r),
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(r, sizeof(r));
}

static size_t hash_key(char *buf, size_t cap, const char *hex)
{
    return key_pair(buf, cap, "h", hex);
}

/* "o\0org\0id", or "o\0org\0" when id is "". Returns the length or 0. */
static size_t org_key(char *buf, size_t cap, const char *org, const char *id)
{
    size_t n = key_pair(buf, cap, "o", org);

    if (n == 0 || n + 1 + strlen(id) > cap)
        return 0;
    buf[n] = '\0';
    memcpy(buf + n + 1, id, strlen(id));
    return n + 1 + strlen(id);
}

/* ---- scopes, names and records ---------------------------------------------------- */

int apikey_scopes_parse(struct json_object *v, const char **problem)
{
    int bits = 0, b;
    size_t i, n;

    if (v == NULL || json_object_is_type(v, json_type_null))
        return SCOPE_RUN;
    if (!json_object_is_type(v, json_type_array)) {
        *problem = "must be an array of \"run\" and \"manage\"";
        return -1;
    }
    if ((n = json_object_array_length(v)) == 0) {
        *problem = "must not be empty";
        return -1;
    }
    for (i = 0; i < n; i++) {
        struct json_object *e = json_object_array_get_idx(v, i);
        const char *s = json_object_get_string(e);
        size_t len = json_object_is_type(e, json_type_string) ? (size_t)json_object_get_string_len(e) : 0;

        b = len == 3 && memcmp(s, "run", 3) == 0 ? SCOPE_RUN :
            len == 6 && memcmp(s, "manage", 6) == 0 ? SCOPE_MANAGE : 0;
        if (b == 0) {
            *problem = "each scope must be \"run\" or \"manage\"";
            return -1;
        }
        if (bits & b) {
            *problem = "must not name a scope twice";
            return -1;
        }
        bits |= b;
    }
    return bits;
}

static struct json_object *scopes_json(int bits)
{
    struct json_object *a = json_object_new_array();

    if (bits & SCOPE_RUN)
        json_object_array_add(a, json_object_new_string("run"));
    if (bits & SCOPE_MANAGE)
        json_object_array_add(a, json_object_new_string("manage"));
    return a;
}

/* NULL if name (len bytes, valid UTF-8 from the JSON parser) is a good key
 * name, else the problem. */
static const char *name_problem(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i, chars = 0;

    if (strlen(s) != len)
        return "must not contain control characters";
    for (i = 0; i < len; i++) {
        if (p[i] < 0x20 || p[i] == 0x7f ||
            (p[i] == 0xc2 && i + 1 < len && p[i + 1] >= 0x80 && p[i + 1] <= 0x9f))
            return "must not contain control characters";
        if ((p[i] & 0xc0) != 0x80)
            chars++;
    }
    if (chars < 1 || chars > APIKEY_NAME_MAX)
        return "must be 1 to 64 characters";
    if (strspn(s, " ") == len)
        return "must not be blank";
    return NULL;
}

static const char *str_field(struct json_object *o, const char *key)
{
    struct json_object *v;

    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return "";
    return json_object_get_string(v);
}

static int64_t int_field(struct json_object *o, const char *key)
{
    struct json_object *v;

    return json_object_object_get_ex(o, key, &v) ? json_object_get_int64(v) : 0;
}

static struct json_object *load_json(struct store *s, struct store_txn *t, const char *key,
                                     size_t klen, int flags, int *rc)
{
    char *val = NULL;
    struct json_object *o = NULL;

    *rc = store_get(s, t, STORE_APIKEYS, key, klen, flags, &val, NULL);
    if (*rc == 0 && ((o = json_tokener_parse(val)) == NULL ||
                     !json_object_is_type(o, json_type_object))) {
        json_object_put(o);
        o = NULL;
        *rc = AM_EIO;
    }
    free(val);
    return o;
}

static int save_json(struct store *s, struct store_txn *t, const char *key, size_t klen,
                     struct json_object *o)
{
    size_t len;
    const char *v = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &len);

    return store_put(s, t, STORE_APIKEYS, key, klen, v, len);
}

/* ---- last use ------------------------------------------------------------------ */

struct touch_ctx {
    const char *hex;            /* the key's hash */
    int64_t now;
    int64_t stored;             /* OUT: last_used_at as stored after the call */
    int wrote;                  /* OUT: this call wrote it */
};

/* Read-modify-write: write now only if the stored value is still old, so
 * threads that all saw an old memo make one write between them. */
static int touch_txn(struct store *s, struct store_txn *t, void *arg)
{
    struct touch_ctx *c = arg;
    struct json_object *rec;
    char key[80];
    size_t klen = hash_key(key, sizeof(key), c->hex);
    int rc;

    c->wrote = 0;
    if ((rec = load_json(s, t, key, klen, STORE_RMW, &rc)) == NULL)
        return rc;
    c->stored = int_field(rec, "last_used_at");
    if (c->now - c->stored >= APIKEY_TOUCH_SECONDS) {
        json_object_object_add(rec, "last_used_at", json_object_new_int64(c->now));
        if ((rc = save_json(s, t, key, klen, rec)) == 0) {
            c->stored = c->now;
            c->wrote = 1;
        }
    }
    json_object_put(rec);
    return rc;
}

/* Write the key's last use (now) if the stored one is APIKEY_TOUCH_SECONDS
 * old; *stored gets the stored value. hex: the key's hash. */
static int touch_stored(struct app *app, const char *hex, int64_t *stored)
{
    struct touch_ctx c = { hex, util_now(), 0, 0 };
    int rc;

    c.stored = c.now;
    if ((rc = store_transact_deferred(app->store, touch_txn, &c)) == 0 && c.wrote)
        __atomic_fetch_add(&touch_writes, 1, __ATOMIC_RELAXED);
    *stored = c.stored;
    return rc;
}

int apikey_touch_hash(struct app *app, const char *hex, int64_t *stored)
{
    if (strlen(hex) != HASH_HEX || !lower_hex(hex, HASH_HEX))
        return AM_EBADREQ;
    return touch_stored(app, hex, stored);
}

/* On a replica the write is the master's: one internal call. */
static int touch_at_master(struct app *app, const char *hex, int64_t *stored)
{
    struct json_object *a = json_object_new_object(), *r = NULL, *v;
    struct am_error err;
    int rc;

    json_object_object_add(a, "key", json_object_new_string(hex));
    rc = cluster_call(app, "key_touch", a, &r, &err);
    if (rc == 0 && json_object_object_get_ex(r, "last_used_at", &v))
        *stored = json_object_get_int64(v);
    json_object_put(r);
    return rc;
}

/* Update the key's last use if *last (what this thread knows of the stored
 * value) is APIKEY_TOUCH_SECONDS old; *last becomes the stored value. A
 * failure costs only the timestamp: the request goes on. */
static void touch_if_due(struct app *app, const unsigned char h[HASH_BYTES], int64_t *last)
{
    char hex[HASH_HEX + 1];
    int64_t now = util_now(), stored = now;
    int rc;

    if (now - *last < APIKEY_TOUCH_SECONDS)
        return;
    sodium_bin2hex(hex, sizeof(hex), h, HASH_BYTES);
    rc = cluster_is_replica(app) ? touch_at_master(app, hex, &stored)
                                 : touch_stored(app, hex, &stored);
    /* deleted or storage trouble: try again in a minute */
    *last = rc == 0 ? stored : now;
}

unsigned long apikey_test_touch_count(void)
{
    return __atomic_load_n(&touch_writes, __ATOMIC_RELAXED);
}

/* ---- authentication and its memo -------------------------------------------------- */

struct key_memo {
    unsigned char hash[HASH_BYTES];
    int used;                   /* 0 = empty slot */
    uint64_t epoch;             /* auth_state_epoch when filled */
    char org[ORG_MAX];
    char id[APIKEY_ID_LEN + 1];
    int scopes;                 /* enum account_scope bits */
    int64_t last_used;          /* the stored last_used_at, as last seen */
};

static __thread struct key_memo memo[MEMO_SLOTS];
static __thread unsigned memo_next;

/* Read the key record of hash h into m (not yet marked used). Returns 0,
 * AM_ENOENT or a storage error. */
static int memo_fill(struct app *app, const unsigned char h[HASH_BYTES], struct key_memo *m)
{
    struct json_object *rec, *v = NULL;
    char hex[HASH_HEX + 1], key[80];
    const char *problem;
    int rc;

    sodium_bin2hex(hex, sizeof(hex), h, HASH_BYTES);
    if ((rec = load_json(app->store, NULL, key, hash_key(key, sizeof(key), hex), 0, &rc)) == NULL)
        return rc;
    json_object_object_get_ex(rec, "scopes", &v);
    memcpy(m->hash, h, HASH_BYTES);
    m->scopes = v != NULL ? apikey_scopes_parse(v, &problem) : -1;
    if (m->scopes < 0 || util_strlcpy(m->org, str_field(rec, "org"), sizeof(m->org)) >= sizeof(m->org) ||
        util_strlcpy(m->id, str_field(rec, "id"), sizeof(m->id)) >= sizeof(m->id))
        rc = AM_EIO;
    m->last_used = int_field(rec, "last_used_at");
    json_object_put(rec);
    return rc;
}

int apikey_authenticate(struct app *app, const char *secret,
                        struct account_principal *who, struct am_error *err)
{
    uint64_t epoch = auth_state_epoch(app->auth);   /* before any read: see invariant 4 */
    unsigned char h[HASH_BYTES];
    struct key_memo *m = NULL, fresh;
    int i, rc;

    if (app->vault == NULL || !secret_well_formed(secret))
        return refuse(err);
    secret_hash(app->vault, secret, h, NULL);
    for (i = 0; i < MEMO_SLOTS && m == NULL; i++)
        if (memo[i].used && memo[i].epoch == epoch &&
            sodium_memcmp(memo[i].hash, h, HASH_BYTES) == 0)
            m = &memo[i];
    if (m == NULL) {
        memset(&fresh, 0, sizeof(fresh));
        if ((rc = memo_fill(app, h, &fresh)) == AM_ENOENT)
            return refuse(err);
        if (rc != 0)
            return error_set(err, AM_EUNAVAILABLE, "Storage unavailable, retry");
        fresh.used = 1;
        fresh.epoch = epoch;
        m = &memo[memo_next++ % MEMO_SLOTS];
        *m = fresh;
    }
    memset(who, 0, sizeof(*who));
    who->kind = PRINCIPAL_KEY;
    who->memo = -1;
    util_strlcpy(who->org, m->org, sizeof(who->org));
    util_strlcpy(who->key_id, m->id, sizeof(who->key_id));
    who->scopes = m->scopes;
    touch_if_due(app, h, &m->last_used);
    return 0;
}

/* ---- list ---------------------------------------------------------------------- */

/* A record as the list shows it: never the hash, the secret or the org. */
static struct json_object *key_view(struct json_object *rec)
{
    struct json_object *o = json_object_new_object(), *v = NULL;
    const char *problem;
    char when[32];
    int64_t used = int_field(rec, "last_used_at");
    int bits;

    json_object_object_get_ex(rec, "scopes", &v);
    bits = apikey_scopes_parse(v, &problem);
    json_object_object_add(o, "id", json_object_new_string(str_field(rec, "id")));
    json_object_object_add(o, "name", json_object_new_string(str_field(rec, "name")));
    json_object_object_add(o, "prefix", json_object_new_string(str_field(rec, "prefix")));
    json_object_object_add(o, "scopes", scopes_json(bits < 0 ? 0 : bits));
    util_rfc3339(int_field(rec, "created_at"), when, sizeof(when));
    json_object_object_add(o, "created_at", json_object_new_string(when));
    util_rfc3339(used, when, sizeof(when));
    json_object_object_add(o, "last_used_at", used > 0 ? json_object_new_string(when) : NULL);
    return o;
}

struct list_ctx {
    struct app *app;
    struct json_object *recs;   /* the "h" records found */
    int rc;
};

static int list_one(const char *key, size_t klen, const char *val, size_t vlen, void *arg)
{
    struct list_ctx *c = arg;
    struct json_object *rec;
    char hk[80], hex[HASH_HEX + 1];
    int rc;

    (void)key; (void)klen;
    if (vlen != HASH_HEX)
        return AM_EIO;
    memcpy(hex, val, HASH_HEX);
    hex[HASH_HEX] = '\0';
    rec = load_json(c->app->store, NULL, hk, hash_key(hk, sizeof(hk), hex), 0, &rc);
    if (rec != NULL)
        json_object_array_add(c->recs, rec);
    return rc == AM_ENOENT ? 0 : rc;    /* deleted since the scan read it */
}

static int by_creation(const void *a, const void *b)
{
    struct json_object *x = *(struct json_object *const *)a, *y = *(struct json_object *const *)b;
    int64_t tx = int_field(x, "created_us"), ty = int_field(y, "created_us");

    if (tx != ty)
        return tx < ty ? -1 : 1;
    return strcmp(str_field(x, "id"), str_field(y, "id"));
}

int apikey_list(struct app *app, const char *org, struct json_object **out,
                struct am_error *err)
{
    struct list_ctx c = { app, json_object_new_array(), 0 };
    struct json_object *keys;
    char prefix[80];
    size_t plen = org_key(prefix, sizeof(prefix), org, ""), i;
    int rc;

    *out = NULL;
    rc = plen == 0 ? 0 : store_scan(app->store, NULL, STORE_APIKEYS, prefix, plen, list_one, &c);
    if (rc != 0) {
        json_object_put(c.recs);
        return error_set(err, AM_EIO, "Storage unavailable, retry");
    }
    json_object_array_sort(c.recs, by_creation);
    keys = json_object_new_array();
    for (i = 0; i < json_object_array_length(c.recs); i++)
        json_object_array_add(keys, key_view(json_object_array_get_idx(c.recs, i)));
    json_object_put(c.recs);
    *out = json_object_new_object();
    json_object_object_add(*out, "keys", keys);
    return 0;
}

/* ---- create -------------------------------------------------------------------- */

struct create_ctx {
    struct app *app;
    const char *org, *name, *created_by;
    int scopes;
    int64_t now;
    int64_t now_us;                      /* orders the list within a second */
    char secret[APIKEY_SECRET_LEN + 1];  /* OUT: the new secret (wiped by the caller) */
    char id[APIKEY_ID_LEN + 1];          /* OUT */
    struct am_error *err;
};

static int count_one(const char *key, size_t klen, const char *val, size_t vlen, void *arg)
{
    (void)key; (void)klen; (void)val; (void)vlen;
    ++*(int *)arg;
    return 0;
}

/* 1 if key exists in the transaction, 0 if not, or a negative error. */
static int exists(struct store *s, struct store_txn *t, const char *key, size_t klen)
{
    char *val = NULL;
    int rc = store_get(s, t, STORE_APIKEYS, key, klen, STORE_RMW, &val, NULL);

    free(val);
    return rc == 0 ? 1 : rc == AM_ENOENT ? 0 : rc;
}

/* Draw a secret and id whose records are both free; write them. */
static int create_records(struct store *s, struct store_txn *t, struct create_ctx *c)
{
    unsigned char h[HASH_BYTES];
    char hex[HASH_HEX + 1], hk[80], ok[80];
    size_t hlen, olen;
    struct json_object *rec;
    int rc = 0, tries;

    for (tries = 0; tries < 4; tries++) {
        secret_new(c->secret);
        secret_hash(c->app->vault, c->secret, h, hex);
        memcpy(c->id, "key_", 4);
        util_random_hex(c->id + 4, sizeof(c->id) - 4, 6);
        hlen = hash_key(hk, sizeof(hk), hex);
        olen = org_key(ok, sizeof(ok), c->org, c->id);
        if (olen == 0)
            return error_set(c->err, AM_EFORBIDDEN, "No such organization");
        if ((rc = exists(s, t, hk, hlen)) < 0 || (rc == 0 && (rc = exists(s, t, ok, olen)) < 0))
            return rc;
        if (rc == 0)
            break;
    }
    if (rc != 0)
        return error_set(c->err, AM_EUNAVAILABLE, "Could not draw a new key, retry");
    rec = json_object_new_object();
    json_object_object_add(rec, "id", json_object_new_string(c->id));
    json_object_object_add(rec, "org", json_object_new_string(c->org));
    json_object_object_add(rec, "name", json_object_new_string(c->name));
    json_object_object_add(rec, "prefix", json_object_new_string_len(c->secret, APIKEY_SHOWN_PREFIX));
    json_object_object_add(rec, "scopes", scopes_json(c->scopes));
    json_object_object_add(rec, "created_at", json_object_new_int64(c->now));
    json_object_object_add(rec, "created_us", json_object_new_int64(c->now_us));
    json_object_object_add(rec, "created_by", json_object_new_string(c->created_by));
    json_object_object_add(rec, "last_used_at", json_object_new_int64(0));
    rc = save_json(s, t, hk, hlen, rec);
    json_object_put(rec);
    if (rc == 0)
        rc = store_put(s, t, STORE_APIKEYS, ok, olen, hex, HASH_HEX);
    return rc;
}

static int create_txn(struct store *s, struct store_txn *t, void *arg)
{
    struct create_ctx *c = arg;
    char prefix[80], *val = NULL;
    size_t plen = org_key(prefix, sizeof(prefix), c->org, "");
    int rc, n = 0;

    /* The org record's write lock serialises creates within one org, so
     * the count below cannot race past the cap (invariant 3). */
    rc = store_get(s, t, STORE_ORGS, c->org, strlen(c->org), STORE_RMW, &val, NULL);
    free(val);
    if (rc != 0)
        return rc == AM_ENOENT ? error_set(c->err, AM_EFORBIDDEN, "No such organization") : rc;
    if (plen == 0)
        return error_set(c->err, AM_EFORBIDDEN, "No such organization");
    if ((rc = store_scan(s, t, STORE_APIKEYS, prefix, plen, count_one, &n)) != 0)
        return rc;
    if (n >= APIKEY_PER_ORG_MAX)
        return error_set(c->err, AM_EPLANLIMIT,
                         "Organization has reached its limit of %d API keys; delete one first",
                         APIKEY_PER_ORG_MAX);
    return create_records(s, t, c);
}

/* Check the create body; fills c->name and c->scopes. Returns 0 or
 * AM_EVALIDATION with details in err. */
static int create_body(struct json_object *body, struct create_ctx *c, struct am_error *err)
{
    struct json_object *v = NULL;
    const char *problem = NULL;

    error_set(err, AM_EVALIDATION, "Invalid API key request");
    json_object_object_foreach(body, key, val) {
        (void)val;
        if (strcmp(key, "name") != 0 && strcmp(key, "scopes") != 0)
            error_add_detail(err, key, "unknown field");
    }
    if (!json_object_object_get_ex(body, "name", &v))
        error_add_detail(err, "name", "required");
    else if (!json_object_is_type(v, json_type_string))
        error_add_detail(err, "name", "must be a string");
    else if ((problem = name_problem(json_object_get_string(v),
                                     (size_t)json_object_get_string_len(v))) != NULL)
        error_add_detail(err, "name", problem);
    else
        c->name = json_object_get_string(v);
    v = NULL;
    json_object_object_get_ex(body, "scopes", &v);
    if ((c->scopes = apikey_scopes_parse(v, &problem)) < 0)
        error_add_detail(err, "scopes", problem);
    if (err->ndetails > 0)
        return AM_EVALIDATION;
    error_clear(err);
    return 0;
}

int apikey_create(struct app *app, const char *org, const char *created_by,
                  struct json_object *body, struct json_object **out,
                  struct am_error *err)
{
    struct create_ctx c;
    struct timespec ts;
    char when[32];
    int rc;

    *out = NULL;
    memset(&c, 0, sizeof(c));
    c.app = app;
    c.org = org;
    c.created_by = created_by != NULL ? created_by : "";
    c.err = err;
    if ((rc = create_body(body, &c, err)) != 0)
        return rc;
    if (app->vault == NULL)
        return error_set(err, AM_EUNAVAILABLE, "API keys need the server's master key");
    clock_gettime(CLOCK_REALTIME, &ts);
    c.now = (int64_t)ts.tv_sec;
    c.now_us = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    if ((rc = store_transact(app->store, create_txn, &c)) != 0) {
        if (err->code == AM_OK)
            error_set(err, AM_EUNAVAILABLE, "Storage unavailable, retry");
        rc = err->code;
        goto out;
    }
    *out = json_object_new_object();
    json_object_object_add(*out, "id", json_object_new_string(c.id));
    json_object_object_add(*out, "name", json_object_new_string(c.name));
    json_object_object_add(*out, "prefix", json_object_new_string_len(c.secret, APIKEY_SHOWN_PREFIX));
    json_object_object_add(*out, "scopes", scopes_json(c.scopes));
    json_object_object_add(*out, "secret", json_object_new_string(c.secret));
    util_rfc3339(c.now, when, sizeof(when));
    json_object_object_add(*out, "created_at", json_object_new_string(when));
out:
    sodium_memzero(c.secret, sizeof(c.secret));
    return rc;
}

/* ---- delete -------------------------------------------------------------------- */

struct delete_ctx {
    const char *org, *id;
    struct am_error *err;
};

static int delete_txn(struct store *s, struct store_txn *t, void *arg)
{
    struct delete_ctx *c = arg;
    char ok[80], hk[80], *val = NULL;
    size_t olen = org_key(ok, sizeof(ok), c->org, c->id), vlen = 0;
    int rc;

    if (olen == 0)
        return error_set(c->err, AM_EKEYNOTFOUND, "API key '%s' not found", c->id);
    rc = store_get(s, t, STORE_APIKEYS, ok, olen, STORE_RMW, &val, &vlen);
    if (rc == AM_ENOENT)
        return error_set(c->err, AM_EKEYNOTFOUND, "API key '%s' not found", c->id);
    if (rc == 0 && vlen != HASH_HEX)
        rc = AM_EIO;
    if (rc == 0)
        rc = store_del(s, t, STORE_APIKEYS, ok, olen);
    if (rc == 0) {
        rc = store_del(s, t, STORE_APIKEYS, hk, hash_key(hk, sizeof(hk), val));
        if (rc == AM_ENOENT)
            rc = 0;
    }
    free(val);
    return rc;
}

/* 1 if id has the shape of a key id: "key_" and 12 lower-case hex digits. */
static int id_well_formed(const char *id)
{
    return id != NULL && strncmp(id, "key_", 4) == 0 && strlen(id) == APIKEY_ID_LEN &&
           lower_hex(id + 4, APIKEY_ID_LEN - 4);
}

int apikey_delete(struct app *app, const char *org, const char *id,
                  struct am_error *err)
{
    struct delete_ctx c = { org, id, err };

    if (!id_well_formed(id))
        return error_set(err, AM_EKEYNOTFOUND, "API key not found");
    if (store_transact(app->store, delete_txn, &c) != 0) {
        if (err->code == AM_OK)
            error_set(err, AM_EUNAVAILABLE, "Storage unavailable, retry");
        return err->code;
    }
    /* After the commit: a worker that sees the new epoch reads the store
     * and finds the key gone (invariant 4). */
    auth_state_bump(app->auth);
    return 0;
}
