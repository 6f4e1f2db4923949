/*
 * ws.h - RFC 6455 WebSocket framing for the stream process: the handshake
 * answer, frame headers in and out, close codes, UTF-8 checking. Pure
 * functions over buffers, no I/O, so the unit tests can drive them.
 */
#ifndef AM_WS_H
#define AM_WS_H

#include <stddef.h>
#include <stdint.h>

enum ws_opcode {
    WS_CONT = 0x0, WS_TEXT = 0x1, WS_BINARY = 0x2,
    WS_CLOSE = 0x8, WS_PING = 0x9, WS_PONG = 0xA
};

enum ws_close_code {
    WS_CLOSE_NORMAL = 1000, WS_CLOSE_GOING_AWAY = 1001, WS_CLOSE_PROTOCOL = 1002,
    WS_CLOSE_UNSUPPORTED = 1003, WS_CLOSE_BAD_DATA = 1007, WS_CLOSE_POLICY = 1008,
    WS_CLOSE_TOO_BIG = 1009, WS_CLOSE_INTERNAL = 1011
};

#define WS_ACCEPT_LEN 28          /* base64 of a SHA-1, without NUL */
#define WS_HEADER_MAX 14          /* the longest frame header */

/* A parsed frame header. */
struct ws_frame {
    int fin;                      /* 1: last fragment of its message */
    int opcode;                   /* enum ws_opcode */
    int masked;                   /* 1: the client masked it (it must) */
    uint8_t mask[4];
    uint64_t len;                 /* payload bytes */
    size_t header_len;            /* bytes of header before the payload */
};

/* SHA-1 of data (out: 20 bytes). */
void ws_sha1(const void *data, size_t len, uint8_t out[20]);

/* The Sec-WebSocket-Accept value for a client's Sec-WebSocket-Key: base64
 * of SHA-1(key + the RFC's GUID), NUL-terminated in out. Returns 0, or -1
 * if key is not 24 characters of base64 (a 16-byte nonce). */
int ws_accept_key(const char *key, char out[WS_ACCEPT_LEN + 1]);

/* Parse a frame header at buf (len bytes available). Returns 1 with *f
 * filled, 0 if more bytes are needed, or -1 (a protocol error: reserved
 * bits, an unknown opcode, a control frame that is fragmented or longer
 * than 125 bytes, a 64-bit length with its top bit set). */
int ws_parse_header(const uint8_t *buf, size_t len, struct ws_frame *f);

/* Unmask n payload bytes in place; off is the payload offset of data[0]. */
void ws_unmask(uint8_t *data, size_t n, const uint8_t mask[4], uint64_t off);

/* Write an unmasked server frame header (FIN set) for a payload of len
 * bytes into out (WS_HEADER_MAX bytes). Returns the header's length. */
size_t ws_frame_header(uint8_t *out, int opcode, uint64_t len);

/* 1 if s[0..n) is valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF). */
int ws_utf8_valid(const uint8_t *s, size_t n);

#endif
