/*
 * vault.c - the master key (vault.h). Owns one sodium_malloc'd, read-only,
 * locked page holding the master key; derives subkeys with crypto_kdf and
 * seals with XChaCha20-Poly1305 (IETF AEAD), nonce prepended, the whole in
 * URL-safe base64 without padding.
 *
 * Must never: log, or copy the master key anywhere but the locked page.
 */
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "state/vault.h"
#include "lib/util.h"

#define VAULT_KDF_CONTEXT "amvault1"     /* crypto_kdf context: 8 bytes */
#define VAULT_B64 sodium_base64_VARIANT_URLSAFE_NO_PADDING
#define VAULT_NONCE crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#define VAULT_TAG crypto_aead_xchacha20poly1305_ietf_ABYTES

struct vault {
    unsigned char *key;     /* VAULT_KEY_BYTES, from sodium_malloc, read-only */
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
    if ((v->key = sodium_malloc(VAULT_KEY_BYTES)) == NULL) {
        rc = error_set(err, AM_ECONFIG, "master key: cannot allocate locked memory");
        goto out;
    }
    if ((rc = read_key(fd, path, v->key, err)) != 0)
        goto out;
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
    crypto_kdf_derive_from_key(out, VAULT_KEY_BYTES, (uint64_t)purpose, VAULT_KDF_CONTEXT,
                               v->key);
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
