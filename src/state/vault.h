/*
 * vault.h - the server's master key and what it protects: org secrets at
 * rest (provider keys, sealed with an AEAD under a key derived from the
 * master key) and the key of the keyed hash API keys are stored under.
 *
 * The master key is a file of exactly 32 random bytes, mode 0600 (no bit
 * for group or others), named by auth.master_key_file. The supervisor
 * opens it once at start, before it forks; workers inherit the mapping.
 * A SIGHUP does not re-read it (changing it would make every sealed secret
 * unreadable: that is a migration, not a reload).
 *
 * Must never: log; put a key or a plaintext anywhere but the caller's
 * buffer; hand out plaintext that failed authentication (a wrong master
 * key gives an error, never garbage).
 */
#ifndef AM_VAULT_H
#define AM_VAULT_H

#include <stddef.h>
#include <stdint.h>
#include "lib/error.h"

#define VAULT_KEY_BYTES 32

/* What a derived key is for; each gets its own subkey, so a key of one
 * purpose can never open or forge another's data. */
enum vault_purpose {
    VAULT_APIKEY_HASH = 1,      /* BLAKE2b key of the API key hashes (apikey.c) */
    VAULT_PROVIDER_KEYS = 2,    /* AEAD key of the org provider keys */
};

struct vault;

/* Read the master key file at path. Refuses (AM_ECONFIG, one line saying
 * what and how to fix it) a file that is missing, not a regular file, not
 * exactly VAULT_KEY_BYTES bytes, or readable or writable by group or
 * others. On 0, *out is the vault (vault_close frees it). */
int vault_open(struct vault **out, const char *path, struct am_error *err);

/* Wipe and free. v may be NULL. */
void vault_close(struct vault *v);

/* The VAULT_KEY_BYTES subkey for purpose into out. Deterministic: the same
 * master key gives the same subkey in every process and after a restart. */
void vault_subkey(const struct vault *v, enum vault_purpose purpose,
                  unsigned char out[VAULT_KEY_BYTES]);

/* Seal n bytes of plain under the VAULT_PROVIDER_KEYS subkey, bound to ad
 * (associated data, e.g. "org\0provider": a sealed value moved to another
 * record does not open). Returns a new NUL-terminated base64 string (caller
 * frees with free()). */
char *vault_seal(const struct vault *v, const void *ad, size_t adlen,
                 const void *plain, size_t n);

/* Open what vault_seal made, with the same ad. On 0 the plaintext is in
 * out (NUL-terminated; *outlen bytes). Returns AM_EUNAVAILABLE if sealed is
 * malformed or fails authentication (wrong master key, other ad, tampered
 * bytes), AM_ETOOLARGE if it does not fit in cap bytes with its NUL; out
 * is then wiped. */
int vault_unseal(const struct vault *v, const void *ad, size_t adlen, const char *sealed,
                 char *out, size_t cap, size_t *outlen);

#endif
