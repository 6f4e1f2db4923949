/*
 * auth.c - HS256 JSON Web Tokens.
 *
 * Owns nothing but pure functions over strings. The signature is
 * HMAC-SHA256 (libsodium crypto_auth_hmacsha256) over "header.payload",
 * base64url without padding, and is compared in constant time. Only the
 * exact header {"alg":"HS256","typ":"JWT"} is accepted: "none" and every
 * other algorithm are refused before anything else is looked at.
 *
 * Must never: log, touch the database, or accept a token whose signature
 * has not been checked.
 */
#include <json-c/json.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include "control/auth.h"
#include "lib/util.h"

#define JWT_HEADER "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"

int auth_init(void)
{
    return sodium_init() < 0 ? -1 : 0;
}

void auth_claims_new(struct auth_claims *c, const char *sub, int typ,
                     int64_t now, int ttl, const char *fam)
{
    memset(c, 0, sizeof(*c));
    util_strlcpy(c->sub, sub, sizeof(c->sub));
    util_random_hex(c->jti, sizeof(c->jti), 16);
    if (fam != NULL)
        util_strlcpy(c->fam, fam, sizeof(c->fam));
    else
        util_random_hex(c->fam, sizeof(c->fam), 16);
    c->iat = now;
    c->exp = now + ttl;
    c->typ = typ;
}

static void hmac(const char *secret, const char *msg, size_t len,
                 unsigned char mac[crypto_auth_hmacsha256_BYTES])
{
    crypto_auth_hmacsha256_state st;

    crypto_auth_hmacsha256_init(&st, (const unsigned char *)secret, strlen(secret));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)msg, len);
    crypto_auth_hmacsha256_final(&st, mac);
}

static int b64url(char *out, size_t cap, const void *bin, size_t len)
{
    if (cap < sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_URLSAFE_NO_PADDING))
        return -1;
    sodium_bin2base64(out, cap, bin, len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return 0;
}

int auth_jwt_sign(const char *secret, const struct auth_claims *c, char *out,
                  size_t cap)
{
    struct json_object *p = json_object_new_object();
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    const char *payload;
    size_t n;
    int rc = AM_EINTERNAL;

    json_object_object_add(p, "sub", json_object_new_string(c->sub));
    json_object_object_add(p, "iat", json_object_new_int64(c->iat));
    json_object_object_add(p, "exp", json_object_new_int64(c->exp));
    json_object_object_add(p, "jti", json_object_new_string(c->jti));
    json_object_object_add(p, "fam", json_object_new_string(c->fam));
    json_object_object_add(p, "typ",
                           json_object_new_string(c->typ == AUTH_REFRESH ? "refresh" : "access"));
    payload = json_object_to_json_string_ext(p, JSON_C_TO_STRING_PLAIN);
    if (b64url(out, cap, JWT_HEADER, strlen(JWT_HEADER)) != 0)
        goto out;
    n = strlen(out);
    if (n + 2 >= cap)
        goto out;
    out[n++] = '.';
    if (b64url(out + n, cap - n, payload, strlen(payload)) != 0)
        goto out;
    n += strlen(out + n);
    hmac(secret, out, n, mac);
    if (n + 2 >= cap)
        goto out;
    out[n++] = '.';
    if (b64url(out + n, cap - n, mac, sizeof(mac)) != 0)
        goto out;
    rc = 0;
out:
    json_object_put(p);
    return rc;
}

/* Decode one base64url segment into a NUL-terminated buffer. */
static int b64url_decode(const char *in, size_t len, unsigned char *out, size_t cap,
                         size_t *outlen)
{
    const char *end;

    if (sodium_base642bin(out, cap - 1, in, len, NULL, outlen, &end,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        end != in + len)
        return -1;
    out[*outlen] = '\0';
    return 0;
}

static int claims_from_json(const char *json, size_t len, struct auth_claims *out)
{
    struct json_object *p = json_tokener_parse(json), *v;
    const char *typ;
    int rc = -1;

    (void)len;
    if (p == NULL || !json_object_is_type(p, json_type_object))
        goto out;
    if (!json_object_object_get_ex(p, "sub", &v) || !json_object_is_type(v, json_type_string) ||
        util_strlcpy(out->sub, json_object_get_string(v), sizeof(out->sub)) >= sizeof(out->sub))
        goto out;
    if (!json_object_object_get_ex(p, "jti", &v) || !json_object_is_type(v, json_type_string) ||
        util_strlcpy(out->jti, json_object_get_string(v), sizeof(out->jti)) >= sizeof(out->jti))
        goto out;
    if (json_object_object_get_ex(p, "fam", &v) && json_object_is_type(v, json_type_string))
        util_strlcpy(out->fam, json_object_get_string(v), sizeof(out->fam));
    if (!json_object_object_get_ex(p, "exp", &v) || !json_object_is_type(v, json_type_int))
        goto out;
    out->exp = json_object_get_int64(v);
    if (!json_object_object_get_ex(p, "iat", &v) || !json_object_is_type(v, json_type_int))
        goto out;
    out->iat = json_object_get_int64(v);
    out->typ = AUTH_ACCESS;
    if (json_object_object_get_ex(p, "typ", &v)) {
        typ = json_object_get_string(v);
        if (typ != NULL && strcmp(typ, "refresh") == 0)
            out->typ = AUTH_REFRESH;
    }
    rc = 0;
out:
    json_object_put(p);
    return rc;
}

int auth_jwt_verify(const char *secret, const char *token, int64_t now,
                    struct auth_claims *out, struct am_error *err)
{
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    unsigned char given[crypto_auth_hmacsha256_BYTES + 1];
    unsigned char buf[AUTH_TOKEN_MAX];
    const char *dot1, *dot2;
    size_t len = strlen(token), n;

    memset(out, 0, sizeof(*out));
    if (len == 0 || len >= AUTH_TOKEN_MAX)
        return error_set(err, AM_EUNAUTH, "Malformed token");
    dot1 = strchr(token, '.');
    dot2 = dot1 != NULL ? strchr(dot1 + 1, '.') : NULL;
    if (dot1 == NULL || dot2 == NULL || strchr(dot2 + 1, '.') != NULL)
        return error_set(err, AM_EUNAUTH, "Malformed token");
    if (b64url_decode(token, (size_t)(dot1 - token), buf, sizeof(buf), &n) != 0 ||
        strcmp((const char *)buf, JWT_HEADER) != 0)
        return error_set(err, AM_EUNAUTH, "Unsupported token algorithm");
    if (b64url_decode(dot2 + 1, len - (size_t)(dot2 + 1 - token), given, sizeof(given), &n) != 0 ||
        n != sizeof(mac))
        return error_set(err, AM_EUNAUTH, "Malformed token signature");
    hmac(secret, token, (size_t)(dot2 - token), mac);
    if (sodium_memcmp(mac, given, sizeof(mac)) != 0)
        return error_set(err, AM_EUNAUTH, "Invalid token signature");
    if (b64url_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1), buf, sizeof(buf), &n) != 0 ||
        claims_from_json((const char *)buf, n, out) != 0)
        return error_set(err, AM_EUNAUTH, "Malformed token claims");
    if (out->exp <= now)
        return error_set(err, AM_EUNAUTH, "Token expired");
    return 0;
}
