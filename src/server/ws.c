/*
 * ws.c - RFC 6455 framing (ws.h) and the SHA-1 the handshake needs
 * (libsodium has none, and -lcrypto would be a new dependency for 20
 * bytes of hash).
 *
 * Owns nothing: pure functions over the caller's buffers.
 *
 * Must never: do I/O, allocate, log.
 */
#include <string.h>
#include <sodium.h>
#include "server/ws.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/* ---- SHA-1 (FIPS 180-4), only for the handshake ------------------------- */

struct sha1 {
    uint32_t h[5];
    uint64_t bytes;
    uint8_t block[64];
    size_t used;
};

#define ROL(x, n) (((x) << (n)) | ((x) >> (32 - (n))))

static void sha1_block(struct sha1 *s, const uint8_t *p)
{
    uint32_t w[80], a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3], e = s->h[4], t;
    int i;

    for (i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (; i < 80; i++)
        w[i] = ROL(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    for (i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) {
            f = (b & c) | (~b & d); k = 0x5A827999u;
        } else if (i < 40) {
            f = b ^ c ^ d; k = 0x6ED9EBA1u;
        } else if (i < 60) {
            f = (b & c) | (b & d) | (c & d); k = 0x8F1BBCDCu;
        } else {
            f = b ^ c ^ d; k = 0xCA62C1D6u;
        }
        t = ROL(a, 5) + f + e + k + w[i];
        e = d; d = c; c = ROL(b, 30); b = a; a = t;
    }
    s->h[0] += a; s->h[1] += b; s->h[2] += c; s->h[3] += d; s->h[4] += e;
}

static void sha1_update(struct sha1 *s, const uint8_t *p, size_t n)
{
    s->bytes += n;
    while (n > 0) {
        size_t take = 64 - s->used < n ? 64 - s->used : n;
        memcpy(s->block + s->used, p, take);
        s->used += take;
        p += take;
        n -= take;
        if (s->used == 64) {
            sha1_block(s, s->block);
            s->used = 0;
        }
    }
}

void ws_sha1(const void *data, size_t len, uint8_t out[20])
{
    struct sha1 s = { { 0x67452301u, 0xEFCDAB89u, 0x98BADCFEu, 0x10325476u, 0xC3D2E1F0u },
                      0, { 0 }, 0 };
    uint64_t bits;
    uint8_t pad = 0x80, zero = 0, lenbuf[8];
    int i;

    sha1_update(&s, data, len);
    bits = s.bytes * 8;
    sha1_update(&s, &pad, 1);
    while (s.used != 56)
        sha1_update(&s, &zero, 1);
    for (i = 0; i < 8; i++)
        lenbuf[i] = (uint8_t)(bits >> (56 - 8 * i));
    sha1_update(&s, lenbuf, 8);
    for (i = 0; i < 20; i++)
        out[i] = (uint8_t)(s.h[i / 4] >> (24 - 8 * (i % 4)));
}

/* ---- handshake -------------------------------------------------------------- */

int ws_accept_key(const char *key, char out[WS_ACCEPT_LEN + 1])
{
    char buf[24 + sizeof(WS_GUID)];
    unsigned char nonce[18];
    size_t nlen = 0;
    uint8_t digest[20];

    if (key == NULL || strlen(key) != 24 ||
        sodium_base642bin(nonce, sizeof(nonce), key, 24, NULL, &nlen, NULL,
                          sodium_base64_VARIANT_ORIGINAL) != 0 || nlen != 16)
        return -1;
    memcpy(buf, key, 24);
    memcpy(buf + 24, WS_GUID, sizeof(WS_GUID));
    ws_sha1(buf, 24 + sizeof(WS_GUID) - 1, digest);
    sodium_bin2base64(out, WS_ACCEPT_LEN + 1, digest, sizeof(digest),
                      sodium_base64_VARIANT_ORIGINAL);
    return 0;
}

/* ---- frames ----------------------------------------------------------------- */

int ws_parse_header(const uint8_t *buf, size_t len, struct ws_frame *f)
{
    size_t need = 2;
    uint64_t n;
    int i;

    if (len < 2)
        return 0;
    memset(f, 0, sizeof(*f));
    f->fin = (buf[0] & 0x80) != 0;
    f->opcode = buf[0] & 0x0f;
    f->masked = (buf[1] & 0x80) != 0;
    n = buf[1] & 0x7f;
    if (buf[0] & 0x70)
        return -1;                          /* no extension was negotiated */
    if (f->opcode != WS_CONT && f->opcode != WS_TEXT && f->opcode != WS_BINARY &&
        f->opcode != WS_CLOSE && f->opcode != WS_PING && f->opcode != WS_PONG)
        return -1;
    if ((f->opcode & 0x8) && (!f->fin || n > 125))
        return -1;
    need += n == 126 ? 2 : n == 127 ? 8 : 0;
    need += f->masked ? 4 : 0;
    if (len < need)
        return 0;
    if (n == 126) {
        n = (uint64_t)buf[2] << 8 | buf[3];
    } else if (n == 127) {
        for (n = 0, i = 0; i < 8; i++)
            n = n << 8 | buf[2 + i];
        if (n >> 63)
            return -1;
    }
    if (f->masked)
        memcpy(f->mask, buf + need - 4, 4);
    f->len = n;
    f->header_len = need;
    return 1;
}

void ws_unmask(uint8_t *data, size_t n, const uint8_t mask[4], uint64_t off)
{
    size_t i;

    for (i = 0; i < n; i++)
        data[i] ^= mask[(off + i) & 3];
}

size_t ws_frame_header(uint8_t *out, int opcode, uint64_t len)
{
    int i;

    out[0] = (uint8_t)(0x80 | (opcode & 0x0f));
    if (len < 126) {
        out[1] = (uint8_t)len;
        return 2;
    }
    if (len < 65536) {
        out[1] = 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        return 4;
    }
    out[1] = 127;
    for (i = 0; i < 8; i++)
        out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
    return 10;
}

int ws_utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        uint8_t c = s[i];
        uint32_t cp;
        size_t k, more;

        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) {
            more = 1; cp = c & 0x1f;
        } else if (c >= 0xE0 && c <= 0xEF) {
            more = 2; cp = c & 0x0f;
        } else if (c >= 0xF0 && c <= 0xF4) {
            more = 3; cp = c & 0x07;
        } else {
            return 0;
        }
        if (i + more >= n)
            return 0;
        for (k = 1; k <= more; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if ((more == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
            (more == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
            return 0;
        i += more + 1;
    }
    return 1;
}
