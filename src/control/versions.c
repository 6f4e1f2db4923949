/*
 * versions.c - the version records of agents (see versions.h).
 *
 * Owns the record format of STORE_VERSIONS, key "org\0name\0<n as 10
 * zero-padded digits>" so that a prefix scan lists an agent's versions in
 * order:
 *   {"version":n, "wizard":{…}, "yaml":"…", "key_refs":"…",
 *    "config_hash":"<sha256 of the canonical WizardConfig>",
 *    "yaml_hash":"<sha256 of the YAML>", "created_by":"…"|null, "created_at":t}
 * A record is written once and never changed: a rollback moves the agent's
 * "live_version" (agent.c), it never rewrites history. Records go only
 * when retention pushes them out or the agent is deleted.
 *
 * Must never: log; decide which version is live (agent.c does).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include "control/versions.h"
#include "lib/buf.h"
#include "lib/util.h"

#define VKEY_MAX 160

/* "org\0name\0" into buf; returns its length, 0 if it does not fit. */
static size_t prefix_of(char *buf, size_t cap, const char *org, const char *name)
{
    size_t ol = strlen(org), nl = strlen(name);

    if (ol + nl + 2 > cap)
        return 0;
    memcpy(buf, org, ol + 1);
    memcpy(buf + ol + 1, name, nl + 1);
    return ol + nl + 2;
}

/* The key of version n; returns its length, 0 if it does not fit. */
static size_t key_of(char *buf, size_t cap, const char *org, const char *name, int64_t n)
{
    size_t p = prefix_of(buf, cap, org, name);

    if (p == 0 || p + 11 > cap || n < 0 || n > VERSIONS_MAX)
        return 0;
    snprintf(buf + p, cap - p, "%010" PRId64, n);
    return p + 10;
}

/* The version number in a key, or -1. */
static int64_t number_of(const char *k, size_t kl)
{
    char digits[11];

    if (kl < 10)
        return -1;
    memcpy(digits, k + kl - 10, 10);
    digits[10] = '\0';
    return strtoll(digits, NULL, 10);
}

static int key_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void canonical_put(struct buf *b, struct json_object *o)
{
    if (json_object_is_type(o, json_type_object)) {
        size_t n = (size_t)json_object_object_length(o), i = 0;
        const char **keys = xcalloc(n ? n : 1, sizeof(*keys));
        json_object_object_foreach(o, k, v) {
            (void)v;
            keys[i++] = k;
        }
        qsort(keys, n, sizeof(*keys), key_cmp);
        buf_puts(b, "{");
        for (i = 0; i < n; i++) {
            struct json_object *ks = json_object_new_string(keys[i]);
            buf_puts(b, i ? "," : "");
            buf_puts(b, json_object_to_json_string_ext(ks, JSON_C_TO_STRING_PLAIN));
            buf_puts(b, ":");
            canonical_put(b, json_object_object_get(o, keys[i]));
            json_object_put(ks);
        }
        buf_puts(b, "}");
        free(keys);
    } else if (json_object_is_type(o, json_type_array)) {
        size_t n = json_object_array_length(o), i;
        buf_puts(b, "[");
        for (i = 0; i < n; i++) {
            buf_puts(b, i ? "," : "");
            canonical_put(b, json_object_array_get_idx(o, i));
        }
        buf_puts(b, "]");
    } else {
        buf_puts(b, o == NULL ? "null"
                              : json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
    }
}

char *versions_canonical(struct json_object *o)
{
    struct buf b;

    buf_init(&b, 512);
    canonical_put(&b, o);
    return buf_take(&b);
}

void versions_hash_bytes(const void *p, size_t n, char hex[VERSIONS_HASH_HEX])
{
    unsigned char h[crypto_hash_sha256_BYTES];

    crypto_hash_sha256(h, p, n);
    sodium_bin2hex(hex, VERSIONS_HASH_HEX, h, sizeof(h));
}

void versions_hash(struct json_object *o, char hex[VERSIONS_HASH_HEX])
{
    char *text = versions_canonical(o);

    versions_hash_bytes(text, strlen(text), hex);
    free(text);
}

int versions_put(struct store *s, struct store_txn *t, const char *org, const char *name,
                 const struct versions_new *v)
{
    struct json_object *rec = json_object_new_object();
    char key[VKEY_MAX], hex[VERSIONS_HASH_HEX];
    size_t klen = key_of(key, sizeof(key), org, name, v->n), len;
    const char *text;
    int rc;

    json_object_object_add(rec, "version", json_object_new_int64(v->n));
    json_object_object_add(rec, "wizard", json_object_get(v->wizard));
    json_object_object_add(rec, "yaml", json_object_new_string_len(v->yaml, (int)v->yaml_len));
    json_object_object_add(rec, "key_refs", json_object_new_string(v->key_refs ? v->key_refs : ""));
    versions_hash(v->wizard, hex);
    json_object_object_add(rec, "config_hash", json_object_new_string(hex));
    versions_hash_bytes(v->yaml, v->yaml_len, hex);
    json_object_object_add(rec, "yaml_hash", json_object_new_string(hex));
    json_object_object_add(rec, "created_by", v->by ? json_object_new_string(v->by) : NULL);
    json_object_object_add(rec, "created_at", json_object_new_int64(v->at));
    text = json_object_to_json_string_length(rec, JSON_C_TO_STRING_PLAIN, &len);
    rc = klen == 0 ? AM_EIO : store_put(s, t, STORE_VERSIONS, key, klen, text, len);
    json_object_put(rec);
    return rc;
}

int versions_load(struct store *s, struct store_txn *t, const char *org, const char *name,
                  int64_t n, struct json_object **out)
{
    char key[VKEY_MAX], *val = NULL;
    size_t klen = key_of(key, sizeof(key), org, name, n);
    int rc;

    *out = NULL;
    if (klen == 0)
        return AM_ENOENT;
    if ((rc = store_get(s, t, STORE_VERSIONS, key, klen, 0, &val, NULL)) != 0)
        return rc;
    *out = json_tokener_parse(val);
    free(val);
    return *out == NULL ? AM_EIO : 0;
}

/* The version numbers of one agent, ascending. */
struct numbers {
    int64_t *n;
    size_t len, cap;
};

static int collect_number(const char *k, size_t kl, const char *v, size_t vl, void *arg)
{
    struct numbers *l = arg;
    int64_t n = number_of(k, kl);

    (void)v; (void)vl;
    if (n < 0)
        return 0;
    if (l->len == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->n = xrealloc(l->n, l->cap * sizeof(*l->n));
    }
    l->n[l->len++] = n;
    return 0;
}

int versions_prune(struct store *s, struct store_txn *t, const char *org, const char *name,
                   int keep, int64_t live)
{
    struct numbers l = { NULL, 0, 0 };
    char key[VKEY_MAX];
    size_t plen = prefix_of(key, sizeof(key), org, name), i;
    int rc, deleted = 0;

    if (plen == 0)
        return 0;
    rc = store_scan(s, t, STORE_VERSIONS, key, plen, collect_number, &l);
    for (i = 0; rc == 0 && keep >= 0 && i + (size_t)keep < l.len; i++) {
        if (l.n[i] == live)
            continue;
        rc = store_del(s, t, STORE_VERSIONS, key, key_of(key, sizeof(key), org, name, l.n[i]));
        deleted++;
    }
    free(l.n);
    return rc != 0 ? rc : deleted;
}

int versions_forget(struct store *s, struct store_txn *t, const char *org, const char *name)
{
    char key[VKEY_MAX];
    size_t plen = prefix_of(key, sizeof(key), org, name);

    return plen == 0 ? 0 : store_del_prefix(s, t, STORE_VERSIONS, key, plen);
}

struct json_object *versions_view(struct json_object *rec, int64_t live, int full)
{
    struct json_object *o = json_object_new_object(), *v;
    int64_t n = json_object_object_get_ex(rec, "version", &v) ? json_object_get_int64(v) : 0;
    char when[32];

    json_object_object_add(o, "version", json_object_new_int64(n));
    if (full) {
        json_object_object_add(o, "wizard_config", json_object_object_get_ex(rec, "wizard", &v)
                                                       ? json_object_get(v) : NULL);
        json_object_object_add(o, "yaml", json_object_object_get_ex(rec, "yaml", &v)
                                              ? json_object_get(v) : NULL);
    }
    util_rfc3339(json_object_object_get_ex(rec, "created_at", &v) ? json_object_get_int64(v) : 0,
                 when, sizeof(when));
    json_object_object_add(o, "created_at", json_object_new_string(when));
    json_object_object_add(o, "created_by", json_object_object_get_ex(rec, "created_by", &v)
                                                ? json_object_get(v) : NULL);
    json_object_object_add(o, "config_hash", json_object_object_get_ex(rec, "config_hash", &v)
                                                 ? json_object_get(v) : NULL);
    json_object_object_add(o, "live", json_object_new_boolean(n == live));
    return o;
}

struct list_ctx {
    int64_t live, before;
    struct json_object *all;    /* ascending */
};

static int list_one(const char *k, size_t kl, const char *v, size_t vl, void *arg)
{
    struct list_ctx *c = arg;
    struct json_object *rec;
    int64_t n = number_of(k, kl);

    (void)vl;
    if (n < 0 || (c->before > 0 && n >= c->before))
        return n < 0 ? 0 : 1;   /* in key order: nothing after this one is wanted */
    if ((rec = json_tokener_parse(v)) != NULL)
        json_object_array_add(c->all, versions_view(rec, c->live, 0));
    json_object_put(rec);
    return 0;
}

int versions_list(struct store *s, struct store_txn *t, const char *org, const char *name,
                  int64_t live, int limit, int64_t before, struct json_object **out)
{
    struct list_ctx c = { live, before, json_object_new_array() };
    char key[VKEY_MAX];
    size_t plen = prefix_of(key, sizeof(key), org, name), n, i;
    int rc = plen == 0 ? 0 : store_scan(s, t, STORE_VERSIONS, key, plen, list_one, &c);

    *out = NULL;
    if (rc != 0) {
        json_object_put(c.all);
        return rc;
    }
    *out = json_object_new_array();
    n = json_object_array_length(c.all);
    for (i = 0; i < n && (limit <= 0 || i < (size_t)limit); i++)
        json_object_array_add(*out, json_object_get(json_object_array_get_idx(c.all, n - 1 - i)));
    json_object_put(c.all);
    return 0;
}

/* ---- diff ------------------------------------------------------------------ */

static int is_object(struct json_object *o)
{
    return json_object_is_type(o, json_type_object);
}

static void diff_add(struct json_object *changes, const char *path, struct json_object *from,
                     struct json_object *to)
{
    struct json_object *c = json_object_new_object();

    json_object_object_add(c, "path", json_object_new_string(path));
    json_object_object_add(c, "from", json_object_get(from));
    json_object_object_add(c, "to", json_object_get(to));
    json_object_array_add(changes, c);
}

/* Add the sorted union of the keys of a and b (either may be NULL) to keys. */
static size_t union_keys(struct json_object *a, struct json_object *b, const char ***keys)
{
    size_t n = 0, cap = (size_t)(a ? json_object_object_length(a) : 0) +
                        (size_t)(b ? json_object_object_length(b) : 0) + 1, i, j;
    struct json_object *sides[2] = { a, b };

    *keys = xcalloc(cap, sizeof(**keys));
    for (i = 0; i < 2; i++) {
        if (sides[i] == NULL)
            continue;
        json_object_object_foreach(sides[i], k, v) {
            (void)v;
            for (j = 0; j < n && strcmp((*keys)[j], k) != 0; j++)
                ;
            if (j == n)
                (*keys)[n++] = k;
        }
    }
    qsort(*keys, n, sizeof(**keys), key_cmp);
    return n;
}

static void diff_walk(struct json_object *changes, const char *prefix, struct json_object *a,
                      struct json_object *b)
{
    const char **keys;
    size_t n = union_keys(a, b, &keys), i;
    char path[256];

    for (i = 0; i < n; i++) {
        struct json_object *x = a ? json_object_object_get(a, keys[i]) : NULL;
        struct json_object *y = b ? json_object_object_get(b, keys[i]) : NULL;

        snprintf(path, sizeof(path), "%s%s%s", prefix, prefix[0] ? "." : "", keys[i]);
        if ((is_object(x) || is_object(y)) && (x == NULL || is_object(x)) &&
            (y == NULL || is_object(y)))
            diff_walk(changes, path, x, y);
        else if (!json_object_equal(x, y))
            diff_add(changes, path, x, y);
    }
    free(keys);
}

struct json_object *versions_diff(struct json_object *a, struct json_object *b)
{
    struct json_object *changes = json_object_new_array();

    diff_walk(changes, "", is_object(a) ? a : NULL, is_object(b) ? b : NULL);
    return changes;
}
