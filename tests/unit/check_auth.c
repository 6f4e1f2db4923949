/*
 * check_auth.c - unit tests for auth.c: HS256 JSON Web Tokens and random ids.
 *
 * The verifier is attacked from every side a client controls: the header
 * (alg "none", another algorithm, another spelling of the right one), the
 * payload (flipped bytes, claims of the wrong shape), the signature (flipped,
 * truncated, extended, non-canonical base64) and the framing (missing or
 * extra segments, bad base64, over-long input). Tokens whose payload or
 * header is hand-made are signed here with libsodium directly, so a case
 * whose signature is *correct* still proves the check it is aimed at.
 *
 * Every rejection must be AM_EUNAUTH with a message, and never a crash.
 *
 * Run under valgrind: CK_FORK=no valgrind --leak-check=full --error-exitcode=1
 */
#include <check.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "control/auth.h"
#include "lib/util.h"

#define NCASES(a) ((int)(sizeof(a) / sizeof((a)[0])))

#define SECRET "test-secret-0123456789-abcdefghijklmnop"
#define OTHER_SECRET "test-secret-0123456789-abcdefghijklmnoq"
#define NOW ((int64_t)1700000000)
#define GOOD_HEADER "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"
#define GOOD_PAYLOAD \
    "{\"sub\":\"alice@example.com\",\"iat\":1700000000,\"exp\":1700000900," \
    "\"jti\":\"00112233445566778899aabbccddeeff\",\"fam\":\"ffeeddcc\",\"typ\":\"access\"}"

/* ---- helpers -------------------------------------------------------------- */

static void setup(void)
{
    ck_assert_int_eq(auth_init(), 0);
}

static void b64(char *out, size_t cap, const void *bin, size_t len)
{
    ck_assert_uint_ge(cap, sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_URLSAFE_NO_PADDING));
    sodium_bin2base64(out, cap, bin, len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

/* "b64(header).b64(payload).b64(HMAC-SHA256(secret, first two parts))",
 * built without auth.c, so hand-made headers and payloads carry a valid
 * signature. */
static void forge(char *out, size_t cap, const char *secret, const char *header,
                  const char *payload)
{
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_state st;
    size_t n;

    b64(out, cap, header, strlen(header));
    n = strlen(out);
    ck_assert_uint_lt(n + 1, cap);
    out[n++] = '.';
    b64(out + n, cap - n, payload, strlen(payload));
    n += strlen(out + n);
    crypto_auth_hmacsha256_init(&st, (const unsigned char *)secret, strlen(secret));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)out, n);
    crypto_auth_hmacsha256_final(&st, mac);
    ck_assert_uint_lt(n + 1, cap);
    out[n++] = '.';
    b64(out + n, cap - n, mac, sizeof(mac));
}

/* A fresh signed token for sub (access, ttl 900 at NOW). */
static void sign_one(char *out, size_t cap, const char *sub, int typ, struct auth_claims *c)
{
    auth_claims_new(c, sub, typ, NOW, 900, NULL);
    ck_assert_int_eq(auth_jwt_sign(SECRET, c, out, cap), 0);
}

/* Verify must fail with AM_EUNAUTH, a message, and a zeroed-or-partial out
 * that the caller never sees as success. */
static void assert_rejected(const char *secret, const char *token, int64_t now,
                            const char *why)
{
    struct auth_claims c;
    struct am_error err;

    error_clear(&err);
    ck_assert_msg(auth_jwt_verify(secret, token, now, &c, &err) == AM_EUNAUTH,
                  "%s: token accepted: %.80s", why, token);
    ck_assert_int_eq(err.code, AM_EUNAUTH);
    ck_assert_msg(err.message[0] != '\0', "%s: no message", why);
}

static int is_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

/* ---- round trip ------------------------------------------------------------ */

static const char *const round_trip_subs[] = {
    "alice@example.com",
    "",
    "quote\"back\\slash/slash@example.com",
    "\xc3\xbcn\xc3\xaf\x63od\xc3\xa9@example.com",
    "tab\tnewline\ncontrol\x01@example.com",
};

START_TEST(sign_then_verify_returns_same_claims)
{
    const char *sub = round_trip_subs[_i];
    char tok[AUTH_TOKEN_MAX];
    struct auth_claims in, out;
    struct am_error err;

    sign_one(tok, sizeof tok, sub, AUTH_ACCESS, &in);
    ck_assert_uint_eq(strlen(tok) - strlen(strchr(tok, '.')), 36); /* the fixed header */
    error_clear(&err);
    ck_assert_msg(auth_jwt_verify(SECRET, tok, NOW, &out, &err) == 0, "%s", err.message);
    ck_assert_str_eq(out.sub, sub);
    ck_assert_str_eq(out.jti, in.jti);
    ck_assert_str_eq(out.fam, in.fam);
    ck_assert_int_eq(out.iat, NOW);
    ck_assert_int_eq(out.exp, NOW + 900);
    ck_assert_int_eq(out.typ, AUTH_ACCESS);
}
END_TEST

START_TEST(longest_sub_round_trips)
{
    char sub[sizeof(((struct auth_claims *)0)->sub)];
    char tok[AUTH_TOKEN_MAX];
    struct auth_claims in, out;

    memset(sub, 'x', sizeof sub - 1);
    sub[sizeof sub - 1] = '\0';
    sign_one(tok, sizeof tok, sub, AUTH_ACCESS, &in);
    ck_assert_int_eq(auth_jwt_verify(SECRET, tok, NOW, &out, NULL), 0);
    ck_assert_str_eq(out.sub, sub);
}
END_TEST

START_TEST(refresh_token_keeps_refresh_type_and_family)
{
    char tok[AUTH_TOKEN_MAX];
    struct auth_claims in, out;

    auth_claims_new(&in, "bob@example.com", AUTH_REFRESH, NOW, 604800, "0123456789abcdef");
    ck_assert_str_eq(in.fam, "0123456789abcdef");
    ck_assert_int_eq(auth_jwt_sign(SECRET, &in, tok, sizeof tok), 0);
    ck_assert_int_eq(auth_jwt_verify(SECRET, tok, NOW + 604799, &out, NULL), 0);
    ck_assert_int_eq(out.typ, AUTH_REFRESH);
    ck_assert_str_eq(out.fam, "0123456789abcdef");

    /* And an access token never comes back as a refresh token. */
    sign_one(tok, sizeof tok, "bob@example.com", AUTH_ACCESS, &in);
    ck_assert_int_eq(auth_jwt_verify(SECRET, tok, NOW, &out, NULL), 0);
    ck_assert_int_eq(out.typ, AUTH_ACCESS);
}
END_TEST

START_TEST(payload_typ_other_than_refresh_is_access)
{
    static const char *const payloads[] = {
        "{\"sub\":\"a\",\"iat\":1,\"exp\":1800000000,\"jti\":\"j\"}",
        "{\"sub\":\"a\",\"iat\":1,\"exp\":1800000000,\"jti\":\"j\",\"typ\":\"REFRESH\"}",
        "{\"sub\":\"a\",\"iat\":1,\"exp\":1800000000,\"jti\":\"j\",\"typ\":7}",
        "{\"sub\":\"a\",\"iat\":1,\"exp\":1800000000,\"jti\":\"j\",\"typ\":null}",
    };
    char tok[AUTH_TOKEN_MAX];
    struct auth_claims out;

    for (int i = 0; i < NCASES(payloads); i++) {
        forge(tok, sizeof tok, SECRET, GOOD_HEADER, payloads[i]);
        ck_assert_msg(auth_jwt_verify(SECRET, tok, NOW, &out, NULL) == 0, "case %d", i);
        ck_assert_int_eq(out.typ, AUTH_ACCESS);
    }
}
END_TEST

START_TEST(forged_good_token_is_accepted)
{
    /* The forge helper itself must agree with auth.c, or every case built
     * with it would pass for the wrong reason. */
    char tok[AUTH_TOKEN_MAX];
    struct auth_claims out;
    struct am_error err;

    forge(tok, sizeof tok, SECRET, GOOD_HEADER, GOOD_PAYLOAD);
    error_clear(&err);
    ck_assert_msg(auth_jwt_verify(SECRET, tok, NOW, &out, &err) == 0, "%s", err.message);
    ck_assert_str_eq(out.sub, "alice@example.com");
    ck_assert_str_eq(out.fam, "ffeeddcc");
}
END_TEST

/* ---- expiry ----------------------------------------------------------------- */

START_TEST(expired_token_is_rejected)
{
    static const struct { int64_t now; int ok; } cases[] = {
        { NOW, 1 },
        { NOW + 899, 1 },
        { NOW + 900, 0 },       /* exp itself is already expired */
        { NOW + 901, 0 },
        { INT64_MAX, 0 },
    };
    char tok[AUTH_TOKEN_MAX];
    struct auth_claims in, out;
    struct am_error err;

    sign_one(tok, sizeof tok, "alice@example.com", AUTH_ACCESS, &in);
    for (int i = 0; i < NCASES(cases); i++) {
        error_clear(&err);
        int rc = auth_jwt_verify(SECRET, tok, cases[i].now, &out, &err);
        if (cases[i].ok) {
            ck_assert_msg(rc == 0, "case %d: %s", i, err.message);
        } else {
            ck_assert_msg(rc == AM_EUNAUTH, "case %d: expired token accepted", i);
            ck_assert_msg(strstr(err.message, "xpired") != NULL, "case %d: %s", i, err.message);
        }
    }
}
END_TEST

/* ---- tampering --------------------------------------------------------------- */

START_TEST(tampered_payload_is_rejected)
{
    char tok[AUTH_TOKEN_MAX], forged[AUTH_TOKEN_MAX], payload[AUTH_TOKEN_MAX];
    char *dot1, *dot2;
    struct auth_claims in;
    size_t plen, n;

    sign_one(tok, sizeof tok, "alice@example.com", AUTH_ACCESS, &in);
    dot1 = strchr(tok, '.');
    dot2 = strchr(dot1 + 1, '.');
    ck_assert_int_eq(sodium_base642bin((unsigned char *)payload, sizeof payload, dot1 + 1,
                                       (size_t)(dot2 - dot1 - 1), NULL, &plen, NULL,
                                       sodium_base64_VARIANT_URLSAFE_NO_PADDING), 0);
    /* Flip every byte of the payload in turn (one at a time), re-encode
     * with the original header and signature. */
    for (size_t i = 0; i < plen; i++) {
        payload[i] ^= 0x01;
        n = (size_t)(dot1 - tok) + 1;
        memcpy(forged, tok, n);
        b64(forged + n, sizeof forged - n, payload, plen);
        n += strlen(forged + n);
        ck_assert_uint_lt(n + strlen(dot2) + 1, sizeof forged);
        memcpy(forged + n, dot2, strlen(dot2) + 1);
        assert_rejected(SECRET, forged, NOW, "flipped payload byte");
        payload[i] ^= 0x01;
    }
    /* A meaningful edit: another subject. */
    {
        char *at = strstr(payload, "alice");
        ck_assert_ptr_nonnull(at);
        memcpy(at, "admin", 5);
        n = (size_t)(dot1 - tok) + 1;
        memcpy(forged, tok, n);
        b64(forged + n, sizeof forged - n, payload, plen);
        n += strlen(forged + n);
        memcpy(forged + n, dot2, strlen(dot2) + 1);
        assert_rejected(SECRET, forged, NOW, "other subject");
    }
}
END_TEST

START_TEST(tampered_signature_is_rejected)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    char tok[AUTH_TOKEN_MAX], bad[AUTH_TOKEN_MAX];
    struct auth_claims in;
    char *sig;
    size_t slen;

    sign_one(tok, sizeof tok, "alice@example.com", AUTH_ACCESS, &in);
    sig = strrchr(tok, '.') + 1;
    slen = strlen(sig);
    ck_assert_uint_eq(slen, 43);
    /* Every position, replaced by every other base64url character: that
     * covers a changed MAC and, in the last position, a non-canonical
     * encoding that differs only in the unused low bits. */
    for (size_t i = 0; i < slen; i++) {
        for (const char *a = alphabet; *a != '\0'; a++) {
            if (*a == sig[i])
                continue;
            memcpy(bad, tok, strlen(tok) + 1);
            bad[sig - tok + (ptrdiff_t)i] = *a;
            assert_rejected(SECRET, bad, NOW, "changed signature char");
        }
    }
}
END_TEST

START_TEST(wrong_secret_is_rejected)
{
    char tok[AUTH_TOKEN_MAX];
    struct auth_claims in;

    sign_one(tok, sizeof tok, "alice@example.com", AUTH_ACCESS, &in);
    assert_rejected(OTHER_SECRET, tok, NOW, "other secret");
    assert_rejected("", tok, NOW, "empty secret");
    assert_rejected(SECRET "x", tok, NOW, "longer secret");
    /* And a token signed with the other secret does not verify with ours. */
    forge(tok, sizeof tok, OTHER_SECRET, GOOD_HEADER, GOOD_PAYLOAD);
    assert_rejected(SECRET, tok, NOW, "signed with another secret");
}
END_TEST

/* Headers other than the exact HS256 one, each correctly signed with the
 * right secret: only the algorithm check can reject them. */
static const char *const bad_headers[] = {
    "{\"alg\":\"none\",\"typ\":\"JWT\"}",
    "{\"alg\":\"None\",\"typ\":\"JWT\"}",
    "{\"alg\":\"HS512\",\"typ\":\"JWT\"}",
    "{\"alg\":\"HS384\",\"typ\":\"JWT\"}",
    "{\"alg\":\"RS256\",\"typ\":\"JWT\"}",
    "{\"alg\":\"hs256\",\"typ\":\"JWT\"}",
    "{\"typ\":\"JWT\",\"alg\":\"HS256\"}",
    "{\"alg\":\"HS256\"}",
    "{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"1\"}",
    "{\"alg\":\"HS256\",\"typ\":\"JWT\",\"alg\":\"none\"}",
    "{ \"alg\":\"HS256\",\"typ\":\"JWT\"}",
    "",
    "[]",
    "null",
};

START_TEST(header_other_than_hs256_is_rejected)
{
    char tok[AUTH_TOKEN_MAX];
    struct auth_claims c;
    struct am_error err;

    forge(tok, sizeof tok, SECRET, bad_headers[_i], GOOD_PAYLOAD);
    error_clear(&err);
    ck_assert_msg(auth_jwt_verify(SECRET, tok, NOW, &c, &err) == AM_EUNAUTH,
                  "header %s accepted", bad_headers[_i]);
    ck_assert_msg(strstr(err.message, "algorithm") != NULL, "header %s: %s",
                  bad_headers[_i], err.message);
}
END_TEST

START_TEST(alg_none_with_empty_signature_is_rejected)
{
    char tok[2 * AUTH_TOKEN_MAX], h[128], p[AUTH_TOKEN_MAX];
    static const char hdr[] = "{\"alg\":\"none\",\"typ\":\"JWT\"}";

    b64(h, sizeof h, hdr, strlen(hdr));
    b64(p, sizeof p, GOOD_PAYLOAD, strlen(GOOD_PAYLOAD));
    snprintf(tok, sizeof tok, "%s.%s.", h, p);
    assert_rejected(SECRET, tok, NOW, "alg none, empty signature");
    snprintf(tok, sizeof tok, "%s.%s", h, p);
    assert_rejected(SECRET, tok, NOW, "alg none, no signature segment");
}
END_TEST

/* Claims of the wrong shape, correctly signed: the claims parser must
 * refuse them all. */
static const char *const bad_payloads[] = {
    "",
    "not json",
    "[]",
    "\"a string\"",
    "{}",
    "{\"iat\":1,\"exp\":1800000000,\"jti\":\"j\"}",                          /* no sub */
    "{\"sub\":\"a\",\"iat\":1,\"exp\":1800000000}",                          /* no jti */
    "{\"sub\":\"a\",\"iat\":1,\"jti\":\"j\"}",                               /* no exp */
    "{\"sub\":\"a\",\"exp\":1800000000,\"jti\":\"j\"}",                      /* no iat */
    "{\"sub\":7,\"iat\":1,\"exp\":1800000000,\"jti\":\"j\"}",
    "{\"sub\":\"a\",\"iat\":1,\"exp\":\"1800000000\",\"jti\":\"j\"}",
    "{\"sub\":\"a\",\"iat\":1,\"exp\":1800000000.5,\"jti\":\"j\"}",
    "{\"sub\":\"a\",\"iat\":1,\"exp\":true,\"jti\":\"j\"}",
    "{\"sub\":\"a\",\"iat\":\"1\",\"exp\":1800000000,\"jti\":\"j\"}",
    "{\"sub\":\"a\",\"iat\":1,\"exp\":1800000000,\"jti\":null}",
    "{\"sub\":null,\"iat\":1,\"exp\":1800000000,\"jti\":\"j\"}",
    "{\"sub\":\"a\",\"iat\":1,\"exp\":1,\"jti\":\"j\"}",                     /* long expired */
    "{\"sub\":\"a\",\"iat\":1,\"exp\":-5,\"jti\":\"j\"}",
};

START_TEST(claims_of_wrong_shape_are_rejected)
{
    char tok[AUTH_TOKEN_MAX];

    forge(tok, sizeof tok, SECRET, GOOD_HEADER, bad_payloads[_i]);
    assert_rejected(SECRET, tok, NOW, bad_payloads[_i]);
}
END_TEST

START_TEST(over_long_claims_are_rejected)
{
    char payload[600], tok[AUTH_TOKEN_MAX], big[300];
    struct auth_claims out;

    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    /* sub of 299 bytes does not fit sub[256]: refused, not truncated. */
    snprintf(payload, sizeof payload,
             "{\"sub\":\"%s\",\"iat\":1,\"exp\":1800000000,\"jti\":\"j\"}", big);
    forge(tok, sizeof tok, SECRET, GOOD_HEADER, payload);
    assert_rejected(SECRET, tok, NOW, "long sub");
    /* jti of 60 bytes does not fit jti[48]. */
    snprintf(payload, sizeof payload,
             "{\"sub\":\"a\",\"iat\":1,\"exp\":1800000000,\"jti\":\"%.60s\"}", big);
    forge(tok, sizeof tok, SECRET, GOOD_HEADER, payload);
    assert_rejected(SECRET, tok, NOW, "long jti");
    /* 255 bytes of sub is the most that fits, and is accepted. */
    snprintf(payload, sizeof payload,
             "{\"sub\":\"%.255s\",\"iat\":1,\"exp\":1800000000,\"jti\":\"j\"}", big);
    forge(tok, sizeof tok, SECRET, GOOD_HEADER, payload);
    ck_assert_int_eq(auth_jwt_verify(SECRET, tok, NOW, &out, NULL), 0);
    ck_assert_uint_eq(strlen(out.sub), 255);
}
END_TEST

/* ---- framing ----------------------------------------------------------------- */

/* Cases built around a good token "H.P.S"; %s placeholders are filled with
 * the three good segments (see malformed_token_is_rejected). */
enum { SEG_H = 1, SEG_P = 2, SEG_S = 4 };
static const struct { const char *fmt; int segs; const char *why; } framing_cases[] = {
    { "", 0, "empty" },
    { ".", 0, "one dot" },
    { "..", 0, "two dots" },
    { "...", 0, "three dots" },
    { "%s", SEG_H, "header only" },
    { "%s.%s", SEG_H | SEG_P, "two segments" },
    { "%s.%s.", SEG_H | SEG_P, "empty signature" },
    { ".%s.%s", SEG_P | SEG_S, "empty header" },
    { "%s..%s", SEG_H | SEG_S, "empty payload" },
    { "%s.%s.%s.", SEG_H | SEG_P | SEG_S, "trailing dot (4 segments)" },
    { "%s.%s.%s.x", SEG_H | SEG_P | SEG_S, "4 segments" },
    { "x.%s.%s.%s", SEG_H | SEG_P | SEG_S, "leading segment" },
    { "%s.%s.%s=", SEG_H | SEG_P | SEG_S, "padded signature" },
    { "%s.%s.%s ", SEG_H | SEG_P | SEG_S, "trailing space" },
    { " %s.%s.%s", SEG_H | SEG_P | SEG_S, "leading space" },
    { "%s.%s.%sA", SEG_H | SEG_P | SEG_S, "signature one char longer" },
    { "%s.%s.%sAAAA", SEG_H | SEG_P | SEG_S, "signature 3 bytes longer" },
    { "%s.%s.AAAA", SEG_H | SEG_P, "short signature" },
    { "%s.!!!!.%s", SEG_H | SEG_S, "garbage payload base64" },
    { "!!!!.%s.%s", SEG_P | SEG_S, "garbage header base64" },
    { "%s.%s.!!!!", SEG_H | SEG_P, "garbage signature base64" },
    { "%s.%s+/.%s", SEG_H | SEG_P | SEG_S, "standard (not url) alphabet" },
    { "A.B.C", 0, "one-char segments" },
    { "Bearer %s.%s.%s", SEG_H | SEG_P | SEG_S, "scheme left in" },
    { "\xff\xfe.\x80.\x01", 0, "high bytes" },
};

START_TEST(malformed_token_is_rejected)
{
    char tok[AUTH_TOKEN_MAX], bad[3 * AUTH_TOKEN_MAX], h[AUTH_TOKEN_MAX], p[AUTH_TOKEN_MAX],
        s[AUTH_TOKEN_MAX];
    const char *args[3];
    struct auth_claims in;
    char *d1, *d2;
    int n = 0;

    sign_one(tok, sizeof tok, "alice@example.com", AUTH_ACCESS, &in);
    d1 = strchr(tok, '.');
    d2 = strchr(d1 + 1, '.');
    snprintf(h, sizeof h, "%.*s", (int)(d1 - tok), tok);
    snprintf(p, sizeof p, "%.*s", (int)(d2 - d1 - 1), d1 + 1);
    snprintf(s, sizeof s, "%s", d2 + 1);
    if (framing_cases[_i].segs & SEG_H)
        args[n++] = h;
    if (framing_cases[_i].segs & SEG_P)
        args[n++] = p;
    if (framing_cases[_i].segs & SEG_S)
        args[n++] = s;
    for (; n < 3; n++)
        args[n] = "";
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    snprintf(bad, sizeof bad, framing_cases[_i].fmt, args[0], args[1], args[2]);
#pragma GCC diagnostic pop
    assert_rejected(SECRET, bad, NOW, framing_cases[_i].why);
}
END_TEST

START_TEST(over_long_token_is_rejected_without_crash)
{
    static const size_t lens[] = { AUTH_TOKEN_MAX - 1, AUTH_TOKEN_MAX, AUTH_TOKEN_MAX + 1,
                                   4 * AUTH_TOKEN_MAX, 1 << 20 };
    char tok[AUTH_TOKEN_MAX];
    struct auth_claims in;

    sign_one(tok, sizeof tok, "alice@example.com", AUTH_ACCESS, &in);
    for (int i = 0; i < NCASES(lens); i++) {
        size_t len = lens[i];
        char *big = xmalloc(len + 1);

        /* A good token, then padding in the signature's alphabet, and a
         * bare run of letters with two dots: both must be refused. */
        memset(big, 'A', len);
        big[len] = '\0';
        memcpy(big, tok, strlen(tok));
        assert_rejected(SECRET, big, NOW, "good token plus padding");
        memset(big, 'A', len);
        big[len / 3] = '.';
        big[2 * len / 3] = '.';
        assert_rejected(SECRET, big, NOW, "long run of base64");
        /* The good header, then one long payload segment of valid base64
         * that is not JSON, then a signature segment. */
        big[len / 3] = 'A';
        memcpy(big, tok, (size_t)(strchr(tok, '.') - tok) + 1);
        assert_rejected(SECRET, big, NOW, "long payload");
        free(big);
    }
}
END_TEST

START_TEST(largest_token_that_fits_is_accepted)
{
    /* The verifier takes tokens up to AUTH_TOKEN_MAX - 1 bytes: find the
     * longest sub the signer can fit and check the two agree on the edge. */
    char tok[AUTH_TOKEN_MAX], sub[400];
    struct auth_claims c, out;
    size_t lo = 0;

    memset(sub, 0, sizeof sub);
    for (size_t n = 0; n < sizeof(c.sub); n++) {
        memset(sub, '\x01', n);     /* escaped as \u0001: six JSON bytes each */
        sub[n] = '\0';
        auth_claims_new(&c, sub, AUTH_ACCESS, NOW, 900, NULL);
        if (auth_jwt_sign(SECRET, &c, tok, sizeof tok) != 0)
            break;
        lo = strlen(tok);
        ck_assert_uint_lt(lo, AUTH_TOKEN_MAX);
        ck_assert_msg(auth_jwt_verify(SECRET, tok, NOW, &out, NULL) == 0,
                      "signer made a %zu-byte token the verifier refuses", lo);
        ck_assert_str_eq(out.sub, sub);
    }
    ck_assert_uint_gt(lo, 0);
}
END_TEST

START_TEST(sign_into_small_buffer_fails_without_overrun)
{
    char full[AUTH_TOKEN_MAX], buf[AUTH_TOKEN_MAX + 16];
    struct auth_claims c;
    size_t need;

    auth_claims_new(&c, "alice@example.com", AUTH_ACCESS, NOW, 900, NULL);
    ck_assert_int_eq(auth_jwt_sign(SECRET, &c, full, sizeof full), 0);
    need = strlen(full) + 1;
    for (size_t cap = 0; cap <= need; cap++) {
        memset(buf, 0x5a, sizeof buf);
        int rc = auth_jwt_sign(SECRET, &c, buf, cap);
        if (cap < need)
            ck_assert_msg(rc == AM_EINTERNAL, "cap %zu (need %zu): rc %d", cap, need, rc);
        else {
            ck_assert_int_eq(rc, 0);
            ck_assert_str_eq(buf, full);
        }
        for (size_t i = cap; i < sizeof buf; i++)
            ck_assert_msg((unsigned char)buf[i] == 0x5a, "cap %zu: byte %zu written", cap, i);
    }
}
END_TEST

/* ---- random ids -------------------------------------------------------------- */

static int cmp_jti(const void *a, const void *b)
{
    return strcmp(a, b);
}

START_TEST(jti_is_unique_across_1000_tokens)
{
    enum { N = 1000 };
    char (*jti)[48] = xcalloc(N, sizeof(*jti));
    char (*fam)[48] = xcalloc(N, sizeof(*fam));
    struct auth_claims c;

    for (int i = 0; i < N; i++) {
        auth_claims_new(&c, "alice@example.com", AUTH_ACCESS, NOW, 900, NULL);
        ck_assert_uint_eq(strlen(c.jti), 32);
        ck_assert(is_hex(c.jti, 32));
        ck_assert_uint_eq(strlen(c.fam), 32);
        memcpy(jti[i], c.jti, sizeof c.jti);
        memcpy(fam[i], c.fam, sizeof c.fam);
    }
    qsort(jti, N, sizeof(*jti), cmp_jti);
    qsort(fam, N, sizeof(*fam), cmp_jti);
    for (int i = 1; i < N; i++) {
        ck_assert_msg(strcmp(jti[i - 1], jti[i]) != 0, "duplicate jti %s", jti[i]);
        ck_assert_msg(strcmp(fam[i - 1], fam[i]) != 0, "duplicate fam %s", fam[i]);
    }
    free(jti);
    free(fam);
}
END_TEST

static const struct { size_t cap, nbytes, want; } hex_cases[] = {
    { 33, 16, 32 },
    { 200, 16, 32 },
    { 3, 1, 2 },
    { 1, 0, 0 },
    { 1, 16, 0 },          /* no room: empty string */
    { 9, 16, 8 },          /* truncated to what fits, whole bytes */
    { 10, 16, 8 },
    { 129, 64, 128 },
    { 300, 65, 128 },      /* at most 64 random bytes */
    { 300, 1000, 128 },
};

START_TEST(random_hex_has_requested_length)
{
    char out[300];

    memset(out, 0x5a, sizeof out);
    util_random_hex(out, hex_cases[_i].cap, hex_cases[_i].nbytes);
    ck_assert_uint_eq(strlen(out), hex_cases[_i].want);
    ck_assert(is_hex(out, hex_cases[_i].want));
    for (size_t i = hex_cases[_i].cap; i < sizeof out; i++)
        ck_assert_msg((unsigned char)out[i] == 0x5a, "byte %zu past cap written", i);
}
END_TEST

START_TEST(random_hex_differs_between_calls)
{
    char a[65], b[65];

    util_random_hex(a, sizeof a, 32);
    util_random_hex(b, sizeof b, 32);
    ck_assert_str_ne(a, b);
}
END_TEST

/* ---- runner ------------------------------------------------------------------ */

static Suite *auth_suite(void)
{
    Suite *s = suite_create("auth");
    TCase *rt = tcase_create("round_trip");
    TCase *reject = tcase_create("reject");
    TCase *ids = tcase_create("ids");

    tcase_add_checked_fixture(rt, setup, NULL);
    tcase_add_loop_test(rt, sign_then_verify_returns_same_claims, 0, NCASES(round_trip_subs));
    tcase_add_test(rt, longest_sub_round_trips);
    tcase_add_test(rt, refresh_token_keeps_refresh_type_and_family);
    tcase_add_test(rt, payload_typ_other_than_refresh_is_access);
    tcase_add_test(rt, forged_good_token_is_accepted);
    tcase_add_test(rt, largest_token_that_fits_is_accepted);
    tcase_add_test(rt, sign_into_small_buffer_fails_without_overrun);
    suite_add_tcase(s, rt);

    tcase_add_checked_fixture(reject, setup, NULL);
    tcase_add_test(reject, expired_token_is_rejected);
    tcase_add_test(reject, tampered_payload_is_rejected);
    tcase_add_test(reject, tampered_signature_is_rejected);
    tcase_add_test(reject, wrong_secret_is_rejected);
    tcase_add_loop_test(reject, header_other_than_hs256_is_rejected, 0, NCASES(bad_headers));
    tcase_add_test(reject, alg_none_with_empty_signature_is_rejected);
    tcase_add_loop_test(reject, claims_of_wrong_shape_are_rejected, 0, NCASES(bad_payloads));
    tcase_add_test(reject, over_long_claims_are_rejected);
    tcase_add_loop_test(reject, malformed_token_is_rejected, 0, NCASES(framing_cases));
    tcase_add_test(reject, over_long_token_is_rejected_without_crash);
    tcase_set_timeout(reject, 60);
    suite_add_tcase(s, reject);

    tcase_add_checked_fixture(ids, setup, NULL);
    tcase_add_test(ids, jti_is_unique_across_1000_tokens);
    tcase_add_loop_test(ids, random_hex_has_requested_length, 0, NCASES(hex_cases));
    tcase_add_test(ids, random_hex_differs_between_calls);
    suite_add_tcase(s, ids);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(auth_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
