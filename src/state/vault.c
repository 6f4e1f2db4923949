/*
 * vault.c - the master key (vault.h). Owns one sodium_malloc'd, read-only,
 * locked page holding the master key; derives subkeys with crypto_kdf and
 * seals with XChaCha20-Poly1305 (IETF AEAD), nonce prepended, the whole in
 * URL-safe base64 without padding. Owns the record format of
 * STORE_PROVIDER_KEYS (vault.h); the plaintext of a provider key lives only
 * in the caller's buffer and, during a put, in the sealing call.
 *
 * Must never: log, or copy the master key anywhere but the locked page;
 * write a provider key into a record unsealed or into an error message.
 */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "state/store.h"
#include "state/vault.h"
#include "lib/key.h"
#include "lib/util.h"

#define VAULT_KDF_CONTEXT "amvault1"     /* crypto_kdf context: 8 bytes */
#define VAULT_B64 sodium_base64_VARIANT_URLSAFE_NO_PADDING
#define VAULT_NONCE crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#define VAULT_TAG crypto_aead_xchacha20poly1305_ietf_ABYTES

#define VAULT_PURPOSES 2                 /* the highest enum vault_purpose */

/* The master key, then the subkey of each purpose, derived once at open:
 * an API-key check or an unseal costs no key derivation. */
struct vault {
    unsigned char *key;     /* (1 + VAULT_PURPOSES) * VAULT_KEY_BYTES, from sodium_malloc,
                             * read-only: the master key at 0, purpose p's subkey at p */
};

/* Read exactly VAULT_KEY_BYTES from the open file fd into key. */
static int read_key(int fd, const char *path, unsigned char *key, struct am_error *err)
{
    struct stat st;
    size_t got = 0;

    if (fstat(fd, &st) != 0)
        return error_set(err, AM_ECONFIG, "master key %s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return error_set(err, AM_ECONFIG, "master key %s: not a regular file", path);
    if ((st.st_mode & 077) != 0)
        return error_set(err, AM_ECONFIG,
                         "master key %s: mode %04o lets group or others read or write it; "
                         "chmod 600 it", path, (unsigned)(st.st_mode & 07777));
    if (st.st_size != VAULT_KEY_BYTES)
        return error_set(err, AM_ECONFIG, "master key %s: %lld bytes, must be exactly %d "
                         "random bytes (umask 077; head -c %d /dev/urandom > %s)", path,
                         (long long)st.st_size, VAULT_KEY_BYTES, VAULT_KEY_BYTES, path);
    while (got < VAULT_KEY_BYTES) {
        ssize_t n = read(fd, key + got, VAULT_KEY_BYTES - got);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return error_set(err, AM_ECONFIG, "master key %s: short read", path);
        got += (size_t)n;
    }
    return 0;
}

int vault_open(struct vault **out, const char *path, struct am_error *err)
{
    struct vault *v = NULL;
    int fd = -1, rc;

    *out = NULL;
    if (sodium_init() < 0)
        return error_set(err, AM_ECONFIG, "master key: libsodium failed to initialise");
    if ((fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) < 0) {
        rc = error_set(err, AM_ECONFIG, "master key %s: %s (create it with: umask 077; "
                       "head -c %d /dev/urandom > %s)", path, strerror(errno),
                       VAULT_KEY_BYTES, path);
        goto out;
    }
    v = xcalloc(1, sizeof(*v));
    if ((v->key = sodium_malloc((1 + VAULT_PURPOSES) * VAULT_KEY_BYTES)) == NULL) {
        rc = error_set(err, AM_ECONFIG, "master key: cannot allocate locked memory");
        goto out;
    }
    if ((rc = read_key(fd, path, v->key, err)) != 0)
        goto out;
    for (uint64_t p = 1; p <= VAULT_PURPOSES; p++)
        crypto_kdf_derive_from_key(v->key + p * VAULT_KEY_BYTES, VAULT_KEY_BYTES, p,
                                   VAULT_KDF_CONTEXT, v->key);
    sodium_mprotect_readonly(v->key);
    *out = v;
    v = NULL;
out:
    if (fd >= 0)
        close(fd);
    vault_close(v);
    return rc;
}

void vault_close(struct vault *v)
{
    if (v == NULL)
        return;
    sodium_free(v->key);        /* wipes; NULL is fine */
    free(v);
}

void vault_subkey(const struct vault *v, enum vault_purpose purpose,
                  unsigned char out[VAULT_KEY_BYTES])
{
    memcpy(out, v->key + (size_t)purpose * VAULT_KEY_BYTES, VAULT_KEY_BYTES);
}

char *vault_seal(const struct vault *v, const void *ad, size_t adlen,
                 const void *plain, size_t n)
{
    unsigned char k[VAULT_KEY_BYTES];
    size_t blen = VAULT_NONCE + n + VAULT_TAG;
    unsigned char *box = xmalloc(blen);
    size_t b64len = sodium_base64_encoded_len(blen, VAULT_B64);
    char *b64 = xmalloc(b64len);

    vault_subkey(v, VAULT_PROVIDER_KEYS, k);
    randombytes_buf(box, VAULT_NONCE);
    crypto_aead_xchacha20poly1305_ietf_encrypt(box + VAULT_NONCE, NULL, plain, n, ad, adlen,
                                               NULL, box, k);
    sodium_bin2base64(b64, b64len, box, blen, VAULT_B64);
    sodium_memzero(k, sizeof(k));
    free(box);
    return b64;
}

int vault_unseal(const struct vault *v, const void *ad, size_t adlen, const char *sealed,
                 char *out, size_t cap, size_t *outlen)
{
    unsigned char k[VAULT_KEY_BYTES], *box = NULL;
    size_t slen = strlen(sealed), blen = 0;
    unsigned long long plen = 0;
    int rc = AM_EUNAVAILABLE;

    box = xmalloc(slen + 1);
    if (sodium_base642bin(box, slen + 1, sealed, slen, NULL, &blen, NULL, VAULT_B64) != 0 ||
        blen < VAULT_NONCE + VAULT_TAG)
        goto out;
    if (blen - VAULT_NONCE - VAULT_TAG + 1 > cap) {
        rc = AM_ETOOLARGE;
        goto out;
    }
    vault_subkey(v, VAULT_PROVIDER_KEYS, k);
    if (crypto_aead_xchacha20poly1305_ietf_decrypt((unsigned char *)out, &plen, NULL,
                                                   box + VAULT_NONCE, blen - VAULT_NONCE,
                                                   ad, adlen, box, k) != 0)
        goto out;
    out[plen] = '\0';
    *outlen = (size_t)plen;
    rc = 0;
out:
    sodium_memzero(k, sizeof(k));
    if (rc != 0 && cap > 0)
        sodium_memzero(out, cap);
    free(box);
    return rc;
}

/* ---- org provider keys (STORE_PROVIDER_KEYS) ------------------------------ */

#define VAULT_RECORD_KEY_MAX 96      /* "org\0provider" */

void vault_mask(const char *key, char *out, size_t cap)
{
    size_t n = strlen(key);

    if (n >= 12)
        snprintf(out, cap, "%.3s...%s", key, key + n - 4);
    else
        snprintf(out, cap, "...%s", n >= 2 ? key + n - 2 : key);
}

struct put_ctx {
    const char *org, *provider;
    char rkey[VAULT_RECORD_KEY_MAX];
    size_t rklen;
    const char *value;           /* the record's JSON text */
};

static int put_txn(struct store *s, struct store_txn *t, void *arg)
{
    struct put_ctx *c = arg;

    return store_put(s, t, STORE_PROVIDER_KEYS, c->rkey, c->rklen, c->value, strlen(c->value));
}

/* The record of key for the ad rkey/rklen: a new JSON object. */
static struct json_object *record_new(const struct vault *v, const char *rkey, size_t rklen,
                                      const char *key)
{
    struct json_object *rec = json_object_new_object();
    char masked[24], *sealed = vault_seal(v, rkey, rklen, key, strlen(key));

    vault_mask(key, masked, sizeof(masked));
    json_object_object_add(rec, "sealed", json_object_new_string(sealed));
    json_object_object_add(rec, "masked", json_object_new_string(masked));
    json_object_object_add(rec, "added_at", json_object_new_int64(util_now()));
    free(sealed);
    return rec;
}

int vault_provider_put(struct store *s, const struct vault *v, const char *org,
                       const char *provider, const char *key, struct am_error *err)
{
    struct put_ctx c = { org, provider, "", 0, NULL };
    struct json_object *rec;
    int rc;

    if (strlen(key) > VAULT_PROVIDER_KEY_MAX)
        return error_set(err, AM_EINTERNAL, "provider key longer than %d bytes",
                         VAULT_PROVIDER_KEY_MAX);
    if ((c.rklen = key_pair(c.rkey, sizeof(c.rkey), org, provider)) == 0)
        return error_set(err, AM_EINTERNAL, "organization or provider name too long");
    rec = record_new(v, c.rkey, c.rklen, key);
    c.value = json_object_to_json_string_ext(rec, JSON_C_TO_STRING_PLAIN);
    rc = store_transact(s, put_txn, &c);
    json_object_put(rec);
    if (rc != 0)
        return error_set(err, rc == AM_EIO ? AM_EIO : AM_EUNAVAILABLE,
                         "Storage unavailable, retry");
    return 0;
}

/* The string field name of rec, or NULL. */
static const char *rec_str(struct json_object *rec, const char *name)
{
    struct json_object *f;

    if (!json_object_object_get_ex(rec, name, &f) || !json_object_is_type(f, json_type_string))
        return NULL;
    return json_object_get_string(f);
}

int vault_provider_get(struct store *s, struct store_txn *t, const struct vault *v,
                       const char *org, const char *provider, char *out, size_t cap,
                       struct am_error *err)
{
    char rkey[VAULT_RECORD_KEY_MAX], *val = NULL;
    size_t rklen = key_pair(rkey, sizeof(rkey), org, provider), n = 0;
    struct json_object *rec = NULL;
    const char *sealed;
    int rc;

    if (cap > 0)
        out[0] = '\0';
    if (rklen == 0)
        return error_set(err, AM_ENOENT, "no %s key saved", provider);
    rc = store_get(s, t, STORE_PROVIDER_KEYS, rkey, rklen, 0, &val, NULL);
    if (rc == AM_ENOENT) {
        rc = error_set(err, AM_ENOENT, "no %s key saved", provider);
        goto out;
    }
    if (rc != 0) {
        rc = error_set(err, rc == AM_EIO ? AM_EIO : AM_EUNAVAILABLE, "Storage unavailable");
        goto out;
    }
    rec = json_tokener_parse(val);
    if ((sealed = rec_str(rec, "sealed")) == NULL ||
        vault_unseal(v, rkey, rklen, sealed, out, cap, &n) != 0) {
        rc = error_set(err, AM_EUNAVAILABLE, "the saved %s key cannot be decrypted with "
                       "this server's master key", provider);
        goto out;
    }
    rc = 0;
out:
    json_object_put(rec);
    free(val);
    return rc;
}

int vault_provider_exists(struct store *s, struct store_txn *t, const char *org,
                          const char *provider)
{
    char rkey[VAULT_RECORD_KEY_MAX], *val = NULL;
    size_t rklen = key_pair(rkey, sizeof(rkey), org, provider);
    int rc;

    if (rklen == 0)
        return 0;
    rc = store_get(s, t, STORE_PROVIDER_KEYS, rkey, rklen, 0, &val, NULL);
    free(val);
    return rc == 0 ? 1 : rc == AM_ENOENT ? 0 : rc;
}

struct del_ctx {
    char rkey[VAULT_RECORD_KEY_MAX];
    size_t rklen;
};

static int del_txn(struct store *s, struct store_txn *t, void *arg)
{
    struct del_ctx *c = arg;

    return store_del(s, t, STORE_PROVIDER_KEYS, c->rkey, c->rklen);
}

int vault_provider_del(struct store *s, const char *org, const char *provider,
                       struct am_error *err)
{
    struct del_ctx c;
    int rc;

    if ((c.rklen = key_pair(c.rkey, sizeof(c.rkey), org, provider)) == 0)
        rc = AM_ENOENT;
    else
        rc = store_transact(s, del_txn, &c);
    if (rc == AM_ENOENT)
        return error_set(err, AM_EKEYNOTFOUND, "No %s key is saved for this organization",
                         provider);
    if (rc != 0)
        return error_set(err, rc == AM_EIO ? AM_EIO : AM_EUNAVAILABLE,
                         "Storage unavailable, retry");
    return 0;
}

struct list_ctx {
    struct vault_provider_entry *e;
    size_t n, cap;
};

static int list_one(const char *key, size_t klen, const char *val, size_t vlen, void *arg)
{
    struct list_ctx *c = arg;
    const char *prov = memchr(key, '\0', klen), *masked;
    struct json_object *rec, *at;
    struct vault_provider_entry *e;

    (void)vlen;
    if (prov == NULL)
        return 0;
    prov++;
    if (c->n == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 8;
        c->e = xrealloc(c->e, c->cap * sizeof(*c->e));
    }
    e = &c->e[c->n];
    memset(e, 0, sizeof(*e));
    snprintf(e->provider, sizeof(e->provider), "%.*s", (int)(key + klen - prov), prov);
    rec = json_tokener_parse(val);
    masked = rec_str(rec, "masked");
    util_strlcpy(e->masked, masked ? masked : "...", sizeof(e->masked));
    if (json_object_object_get_ex(rec, "added_at", &at))
        e->added_at = json_object_get_int64(at);
    json_object_put(rec);
    c->n++;
    return 0;
}

int vault_provider_list(struct store *s, const char *org,
                        struct vault_provider_entry **out, size_t *n, struct am_error *err)
{
    struct list_ctx c = { NULL, 0, 0 };
    char prefix[VAULT_RECORD_KEY_MAX];
    size_t plen = strlen(org) + 1;
    int rc;

    *out = NULL;
    *n = 0;
    if (plen > sizeof(prefix))
        return 0;
    memcpy(prefix, org, plen);          /* "org\0" */
    if ((rc = store_scan(s, NULL, STORE_PROVIDER_KEYS, prefix, plen, list_one, &c)) != 0) {
        free(c.e);
        return error_set(err, rc == AM_EIO ? AM_EIO : AM_EUNAVAILABLE, "Storage unavailable");
    }
    *out = c.e;
    *n = c.n;
    return 0;
}
