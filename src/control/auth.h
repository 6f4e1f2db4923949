/*
 * auth.h - bearer tokens: HS256 JWTs signed and verified with libsodium's
 * HMAC-SHA256, compared in constant time.
 *
 * No I/O and no logging; the route layer decides what a failure means.
 */
#ifndef AM_AUTH_H
#define AM_AUTH_H

#include <stddef.h>
#include <stdint.h>
#include "lib/error.h"

#define AUTH_TOKEN_MAX 1024

enum auth_token_type { AUTH_ACCESS = 0, AUTH_REFRESH = 1 };

struct auth_claims {
    char sub[256];          /* the user's e-mail */
    char jti[48];           /* random id, hex */
    char fam[48];           /* refresh family id (refresh tokens), hex */
    int64_t iat;            /* issued at, epoch seconds */
    int64_t exp;            /* expires at, epoch seconds */
    int typ;                /* enum auth_token_type */
};

/* Library init (sodium_init). Returns 0 or -1. */
int auth_init(void);

/* Fill c with a new token's claims for sub: fresh jti, iat = now,
 * exp = now + ttl. fam is copied if given, else a fresh one is made. */
void auth_claims_new(struct auth_claims *c, const char *sub, int typ,
                     int64_t now, int ttl, const char *fam);

/* Encode and sign. Returns 0, or AM_EINTERNAL if out is too small. */
int auth_jwt_sign(const char *secret, const struct auth_claims *c,
                  char *out, size_t cap);

/* Verify signature, algorithm, expiry and shape. Returns 0 and fills *out,
 * or AM_EUNAUTH with a message saying what is wrong. */
int auth_jwt_verify(const char *secret, const char *token, int64_t now,
                    struct auth_claims *out, struct am_error *err);

#endif
