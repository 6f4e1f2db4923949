/*
 * fuzz_ws - libFuzzer target: the WebSocket frame parser of am-stream. The
 * input is a byte stream of frames: each header is parsed
 * (ws_parse_header), its payload unmasked in place in pieces and checked
 * as UTF-8 when it is text, as the stream process reads them; a header
 * that re-encodes (ws_frame_header) must parse back to the same length.
 * The first two input bytes are also taken as the length of a
 * Sec-WebSocket-Key handed to ws_accept_key.
 */
#include "server/ws.h"
#include "fuzz.h"

static void payload(uint8_t *p, size_t n, const struct ws_frame *f)
{
    size_t half = n / 2;

    if (f->masked) {
        ws_unmask(p, half, f->mask, 0);
        ws_unmask(p + half, n - half, f->mask, half);
    }
    if (f->opcode == WS_TEXT)
        (void)ws_utf8_valid(p, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* exactly size bytes: ASan sees a read one byte past the input */
    uint8_t *buf = xmalloc(size > 0 ? size : 1), hdr[WS_HEADER_MAX];
    char accept[WS_ACCEPT_LEN + 1], *key = fuzz_cstr(data, size);
    struct ws_frame f, g;
    size_t at = 0, hl;

    (void)ws_accept_key(key, accept);
    if (size > 0)
        memcpy(buf, data, size);
    while (at < size && ws_parse_header(buf + at, size - at, &f) == 1) {
        if (f.header_len > size - at)
            __builtin_trap();
        at += f.header_len;
        hl = ws_frame_header(hdr, f.opcode, f.len);
        if (hl == 0 || ws_parse_header(hdr, hl, &g) != 1 || g.len != f.len)
            __builtin_trap();
        if (f.len > size - at)
            break;
        payload(buf + at, (size_t)f.len, &f);
        at += (size_t)f.len;
    }
    free(key);
    free(buf);
    return 0;
}
