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
 * It also owns the record format of STORE_PROVIDER_KEYS (the org's own
 * provider keys, "BYOK"): key "org\0provider" -> JSON
 *   {"sealed": vault_seal(key, ad "org\0provider"), "masked": "sk-...abcd",
 *    "added_at": epoch seconds}
 * so the runtime (one layer up) can read a key without calling control/.
 * Which providers and keys are acceptable is control's business
 * (provider_keys.c), not this file's.
 *
 * Must never: log; put a key or a plaintext anywhere but the caller's
 * buffer (not in a record but sealed, not in an error message); hand out
 * plaintext that failed authentication (a wrong master key gives an
 * error, never garbage).
 */
#ifndef AM_VAULT_H
#define AM_VAULT_H

#include <stddef.h>
#include <stdint.h>
#include "lib/error.h"

#define VAULT_KEY_BYTES 32
#define VAULT_PROVIDER_KEY_MAX 255   /* longest provider key, bytes, without NUL */

struct store;
struct store_txn;

/* One saved provider key as a listing shows it: never the key itself. */
struct vault_provider_entry {
    char provider[16];          /* "openai", ... (as stored) */
    char masked[24];            /* vault_mask() of the key */
    int64_t added_at;           /* epoch seconds of the last put */
};

/* What a derived key is for; each gets its own subkey, so a key of one
 * purpose can never open or forge another's data. */
enum vault_purpose {
    VAULT_APIKEY_HASH = 1,      /* BLAKE2b key of the API key hashes (apikey.c) */
    VAULT_PROVIDER_KEYS = 2,    /* AEAD key of the org provider keys (the highest: vault.c
                                 * keeps one subkey per purpose) */
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

/* The masked form of key into out (cap >= 16): the first 3 characters,
 * "...", the last 4 ("sk-...abcd"); a key shorter than 12 characters shows
 * only "..." and its last 2, so little of a short key is revealed. */
void vault_mask(const char *key, char *out, size_t cap);

/* Save (or replace) org's key for provider, sealed, in one transaction of
 * s. Returns 0, AM_EINTERNAL (key longer than VAULT_PROVIDER_KEY_MAX or a
 * name that does not fit a record key), AM_EUNAVAILABLE (busy) or AM_EIO,
 * with a message in err that never contains the key. */
int vault_provider_put(struct store *s, const struct vault *v, const char *org,
                       const char *provider, const char *key, struct am_error *err);

/* Org's key for provider, unsealed into out (cap bytes, NUL-terminated;
 * VAULT_PROVIDER_KEY_MAX + 1 always fits). t may be NULL (read outside a
 * transaction). Returns 0; AM_ENOENT if none is saved; AM_EUNAVAILABLE if
 * the record cannot be unsealed (another master key, a record moved from
 * another org or provider, damage) or the store is busy; AM_EIO. On any
 * error out holds no plaintext. err may be NULL. */
int vault_provider_get(struct store *s, struct store_txn *t, const struct vault *v,
                       const char *org, const char *provider, char *out, size_t cap,
                       struct am_error *err);

/* Is a key saved for org/provider? Reads inside t when t is not NULL (a
 * deploy's transaction, so the answer holds until it commits). Returns 1,
 * 0, or a negative AM_* code (AM_EDEADLOCK inside a transaction). */
int vault_provider_exists(struct store *s, struct store_txn *t, const char *org,
                          const char *provider);

/* Remove org's key for provider in one transaction. Returns 0,
 * AM_EKEYNOTFOUND (none saved), AM_EUNAVAILABLE or AM_EIO. */
int vault_provider_del(struct store *s, const char *org, const char *provider,
                       struct am_error *err);

/* Org's saved keys, by provider name, masked: *out is a malloc'd array of
 * *n entries (caller frees with free(); NULL when *n is 0). Returns 0,
 * AM_EUNAVAILABLE or AM_EIO. */
int vault_provider_list(struct store *s, const char *org,
                        struct vault_provider_entry **out, size_t *n, struct am_error *err);

#endif
