/*
 * fuzz_jwt - libFuzzer target: auth_jwt_verify. An input that starts with
 * 'S' is "header JSON \n payload JSON": the target encodes and signs it
 * with the test secret, so the claim parser behind the signature check is
 * reached; any other input is verified as a raw token. A token the target
 * signed itself is verified, re-signed from its claims and verified again.
 */
#include <sodium.h>
#include "control/auth.h"
#include "fuzz.h"

static const char SECRET[] = "fuzz-secret-fuzz-secret-fuzz-secret!";

/* base64url without padding of n bytes at p, appended at out[*at]. */
static int b64(char *out, size_t cap, size_t *at, const void *p, size_t n)
{
    size_t need = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);

    if (*at + need > cap)
        return -1;
    sodium_bin2base64(out + *at, need, p, n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    *at += strlen(out + *at);
    return 0;
}

/* "b64(header).b64(payload).b64(hmac)" of "header\npayload" in in. */
static int sign(const char *in, size_t n, char *tok, size_t cap)
{
    const char *nl = memchr(in, '\n', n);
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_state st;
    size_t at = 0;

    if (nl == NULL)
        return -1;
    if (b64(tok, cap, &at, in, (size_t)(nl - in)) != 0 || at + 2 > cap)
        return -1;
    tok[at++] = '.';
    if (b64(tok, cap, &at, nl + 1, n - (size_t)(nl - in) - 1) != 0 || at + 2 > cap)
        return -1;
    crypto_auth_hmacsha256_init(&st, (const unsigned char *)SECRET, strlen(SECRET));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)tok, at);
    crypto_auth_hmacsha256_final(&st, mac);
    tok[at++] = '.';
    return b64(tok, cap, &at, mac, sizeof(mac));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    struct auth_claims c, again;
    struct am_error err;
    char *text = fuzz_cstr(data, size), tok[4 * AUTH_TOKEN_MAX], resigned[AUTH_TOKEN_MAX];
    const char *verify = text;

    if (!ready)
        ready = auth_init() == 0 ? 1 : (__builtin_trap(), 0);
    if (size > 0 && text[0] == 'S') {
        if (sign(text + 1, size - 1, tok, sizeof(tok)) != 0)
            goto out;
        verify = tok;
    }
    error_clear(&err);
    if (auth_jwt_verify(SECRET, verify, 1700000000, &c, &err) == 0 &&
        auth_jwt_sign(SECRET, &c, resigned, sizeof(resigned)) == 0) {
        error_clear(&err);
        if (auth_jwt_verify(SECRET, resigned, 1700000000, &again, &err) != 0)
            __builtin_trap();         /* what verify accepted, sign must reproduce */
    }
out:
    free(text);
    return 0;
}
