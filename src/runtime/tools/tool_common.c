/*
 * tool_common.c - the helpers every tool file uses (declared in
 * tool_common.h): UTF-8 checks and cleaning, the {"result"}/{"error"} reply
 * shapes, argument and tool_config getters, allowed-host matching, bounded
 * strict JSON parsing, and the curl protocol restriction.
 *
 * Owns nothing: pure functions over their arguments, safe from any thread.
 * Must not log, must not know any tool by name (that is tools.c's table),
 * and must not grow a helper only one tool file uses.
 */
#include <ctype.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "runtime/tools/tool_common.h"
#include "lib/util.h"

#define TOOL_JSON_MAX_DEPTH 64               /* arguments and json_parser input */
#define TOOL_DEFAULT_TIMEOUT_MS 10000        /* network tools, when the server sets none */

/* ---- replies ------------------------------------------------------------- */

/* Length of the well-formed UTF-8 sequence at s (n bytes available), or 0
 * when it is malformed, overlong, a surrogate or cut short. */
size_t tool_utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        return n >= 2 && (s[1] & 0xc0) == 0x80 ? 2 : 0;
    if (c >= 0xe0 && c <= 0xef) {
        if (n < 3 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80)
            return 0;
        if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] > 0x9f))
            return 0;
        return 3;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        if (n < 4 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80 ||
            (s[3] & 0xc0) != 0x80)
            return 0;
        if ((c == 0xf0 && s[1] < 0x90) || (c == 0xf4 && s[1] > 0x8f))
            return 0;
        return 4;
    }
    return 0;
}

bool tool_utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, k;

    while (i < n) {
        if ((k = tool_utf8_seq(p + i, n - i)) == 0)
            return false;
        i += k;
    }
    return true;
}

/* n without a multi-byte sequence cut short at the end (after truncation). */
size_t tool_utf8_trim_partial(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = n, back = 0, need;

    while (back < 3 && i > 0 && (p[i - 1] & 0xc0) == 0x80) {
        i--;
        back++;
    }
    if (i == 0 || p[i - 1] < 0xc0)
        return n;
    need = p[i - 1] >= 0xf0 ? 4 : p[i - 1] >= 0xe0 ? 3 : 2;
    return n - (i - 1) < need ? i - 1 : n;
}

/* A json-c string of s[0..n) with every malformed byte replaced by U+FFFD. */
struct json_object *tool_json_str_clean(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    struct json_object *o;
    char *buf;
    size_t i = 0, k, w = 0;

    if (tool_utf8_valid(s, n))
        return json_object_new_string_len(s, (int)n);
    buf = xmalloc(n * 3 + 1);
    while (i < n) {
        if ((k = tool_utf8_seq(p + i, n - i)) == 0) {
            memcpy(buf + w, "\xef\xbf\xbd", 3);
            w += 3;
            i++;
            continue;
        }
        memcpy(buf + w, p + i, k);
        w += k;
        i += k;
    }
    o = json_object_new_string_len(buf, (int)w);
    free(buf);
    return o;
}

/* {"error": message}; the message may quote model input, so it is cleaned. */
struct json_object *tool_reply_error(const char *fmt, ...)
{
    struct json_object *o = json_object_new_object();
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_object_object_add(o, "error", tool_json_str_clean(msg, tool_utf8_trim_partial(msg, strlen(msg))));
    return o;
}

/* {"result": value}; takes value (which may be NULL for JSON null). */
struct json_object *tool_reply_result(struct json_object *value)
{
    struct json_object *o = json_object_new_object();

    json_object_object_add(o, "result", value);
    return o;
}

/* Write a message into msg; always returns -1. */
int tool_fail_msg(char *msg, size_t cap, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, cap, fmt, ap);
    va_end(ap);
    return -1;
}

/* ---- arguments and tool_config ------------------------------------------- */

/* The string argument key. Returns NULL with *err set (an error reply) when
 * it is required and absent, not a string, longer than max bytes or holds a
 * NUL; NULL with *err untouched when optional and absent (or null). *len,
 * if given, receives its length. */
const char *tool_arg_str(struct json_object *args, const char *key, bool required,
                           size_t max, size_t *len, struct json_object **err)
{
    struct json_object *v = NULL;
    const char *s;
    size_t n;

    if (!json_object_object_get_ex(args, key, &v) || v == NULL) {
        if (required)
            *err = tool_reply_error("missing required argument '%s'", key);
        return NULL;
    }
    if (!json_object_is_type(v, json_type_string)) {
        *err = tool_reply_error("argument '%s' must be a string", key);
        return NULL;
    }
    s = json_object_get_string(v);
    n = (size_t)json_object_get_string_len(v);
    if (strlen(s) != n) {
        *err = tool_reply_error("argument '%s' contains a NUL byte", key);
        return NULL;
    }
    if (n > max) {
        *err = tool_reply_error("argument '%s' is too long (limit %zu bytes)", key, max);
        return NULL;
    }
    if (required && n == 0) {
        *err = tool_reply_error("argument '%s' must not be empty", key);
        return NULL;
    }
    if (len)
        *len = n;
    return s;
}

/* tool_config[key] when it has type t, else NULL (borrowed). */
struct json_object *tool_cfg_get(const struct tools_ctx *ctx, const char *key, json_type t)
{
    struct json_object *v = NULL;

    if (ctx->tool_config == NULL || !json_object_is_type(ctx->tool_config, json_type_object))
        return NULL;
    if (!json_object_object_get_ex(ctx->tool_config, key, &v) || !json_object_is_type(v, t))
        return NULL;
    return v;
}

const char *tool_cfg_str(const struct tools_ctx *ctx, const char *key)
{
    struct json_object *v = tool_cfg_get(ctx, key, json_type_string);
    const char *s = v ? json_object_get_string(v) : NULL;

    return s && *s ? s : NULL;
}

/* tool_config[key] as an integer in [lo, hi], else dflt. */
int64_t tool_cfg_int(const struct tools_ctx *ctx, const char *key, int64_t lo, int64_t hi,
                       int64_t dflt)
{
    struct json_object *v = tool_cfg_get(ctx, key, json_type_int);
    int64_t x;

    if (v == NULL)
        return dflt;
    x = json_object_get_int64(v);
    return x < lo ? lo : x > hi ? hi : x;
}

/* "example.com" matches itself; "*.example.com" matches any strict
 * subdomain of it. Case-insensitive; a trailing dot and IPv6 brackets in the
 * pattern are ignored. host is already lowercased and bare. */
bool tool_host_matches(const char *host, const char *pattern)
{
    char pat[260];
    size_t pl, hl = strlen(host);

    if (*pattern == '[')
        pattern++;
    util_strlcpy(pat, pattern, sizeof(pat));
    pl = strlen(pat);
    while (pl > 0 && (pat[pl - 1] == '.' || pat[pl - 1] == ']'))
        pat[--pl] = '\0';
    if (pat[0] == '*' && pat[1] == '.') {
        pl--;          /* compare ".example.com" as a suffix */
        return hl > pl && strcasecmp(host + hl - pl, pat + 1) == 0;
    }
    return pl > 0 && strcasecmp(host, pat) == 0;
}

/* Whether host (or domain) matches an entry of the string list lst. */
bool tool_list_matches(struct json_object *lst, const char *host)
{
    size_t i, n = json_object_array_length(lst);

    for (i = 0; i < n; i++) {
        struct json_object *e = json_object_array_get_idx(lst, i);

        if (json_object_is_type(e, json_type_string) && tool_host_matches(host, json_object_get_string(e)))
            return true;
    }
    return false;
}

/* ---- JSON input ---------------------------------------------------------- */

/* Whether every number in o is finite (json-c accepts NaN, Infinity, 1e999). */
static bool json_all_finite(struct json_object *o, int depth)
{
    size_t i, n;

    if (depth > TOOL_JSON_MAX_DEPTH + 1)
        return false;
    switch (json_object_get_type(o)) {
    case json_type_double:
        return isfinite(json_object_get_double(o));
    case json_type_array:
        n = json_object_array_length(o);
        for (i = 0; i < n; i++)
            if (!json_all_finite(json_object_array_get_idx(o, i), depth + 1))
                return false;
        return true;
    case json_type_object: {
        json_object_object_foreach(o, k, v) {
            (void)k;
            if (!json_all_finite(v, depth + 1))
                return false;
        }
        return true;
    }
    default:
        return true;
    }
}

/* Parse text[0..len) (NUL-terminated at len) as exactly one strict JSON
 * value nested at most TOOL_JSON_MAX_DEPTH deep. 0 and *out (NULL for null;
 * caller puts), or -1 with a message in msg. */
int tool_json_parse_limited(const char *text, size_t len, struct json_object **out,
                              char *msg, size_t cap)
{
    struct json_tokener *tok;
    struct json_object *o;
    enum json_tokener_error jerr;
    size_t end;

    *out = NULL;
    if (len > INT_MAX - 1) {
        util_snprintf(msg, cap, "too large");
        return -1;
    }
    tok = json_tokener_new_ex(TOOL_JSON_MAX_DEPTH);
    if (tok == NULL)
        abort();
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    /* Passing the terminating NUL too tells json-c the input has ended, so a
     * bare top-level number ("123") completes instead of "continue". */
    o = json_tokener_parse_ex(tok, text, (int)len + 1);
    jerr = json_tokener_get_error(tok);
    end = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    if (jerr != json_tokener_success) {
        util_snprintf(msg, cap, "%s at offset %zu", json_tokener_error_desc(jerr), end);
        return -1;
    }
    while (end < len && isspace((unsigned char)text[end]))
        end++;
    if (end < len) {
        json_object_put(o);
        util_snprintf(msg, cap, "unexpected data after the value at offset %zu", end);
        return -1;
    }
    if (!json_all_finite(o, 0)) {
        json_object_put(o);
        util_snprintf(msg, cap, "number out of range");
        return -1;
    }
    *out = o;
    return 0;
}


/* ---- small shared pieces ------------------------------------------------- */

long tool_timeout_ms(const struct tools_ctx *ctx)
{
    return ctx->settings->http_timeout_ms > 0 ? ctx->settings->http_timeout_ms
                                              : TOOL_DEFAULT_TIMEOUT_MS;
}

uint32_t tool_be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

void tool_curl_protocols(CURL *h, const char *names, long mask)
{
#if LIBCURL_VERSION_NUM >= 0x075500
    (void)mask;
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, names);
#else
    (void)names;
    curl_easy_setopt(h, CURLOPT_PROTOCOLS, mask);
#endif
}
