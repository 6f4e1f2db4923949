/*
 * utf8.c - the one string policy (utf8.h): shortest-form UTF-8 without NUL
 * and without control characters, except TAB/LF/CR where a field allows them.
 *
 * Owns the one list of JSON fields that may hold TAB, LF and CR
 * (utf8_field_multiline). Must never: allocate, log, or echo what it
 * refuses (a problem is a fixed sentence; a bad key is named by its
 * object).
 */
#include <string.h>
#include <json-c/json.h>
#include "lib/utf8.h"
#include "lib/error.h"
#include "lib/util.h"

#define UTF8_JSON_DEPTH 64              /* the JSON parser's own depth limit */

/* The length of the sequence led by byte b, 0 for a byte that cannot lead. */
static int utf8_lead_len(unsigned char b)
{
    if (b < 0x80)
        return 1;
    if (b >= 0xC2 && b <= 0xDF)         /* 0xC0, 0xC1: always overlong */
        return 2;
    if (b >= 0xE0 && b <= 0xEF)
        return 3;
    if (b >= 0xF0 && b <= 0xF4)         /* 0xF5..0xFF: above U+10FFFF */
        return 4;
    return 0;                           /* a continuation byte, or never valid */
}

/* Is the multi-byte sequence p[0..len) well formed (continuations, and the
 * second byte's range that excludes overlong, surrogate and > U+10FFFF)? */
static int utf8_seq_ok(const unsigned char *p, int len)
{
    unsigned char lo = 0x80, hi = 0xBF;
    int i;

    if (p[0] == 0xE0)
        lo = 0xA0;                      /* overlong 3-byte */
    else if (p[0] == 0xED)
        hi = 0x9F;                      /* U+D800..U+DFFF */
    else if (p[0] == 0xF0)
        lo = 0x90;                      /* overlong 4-byte */
    else if (p[0] == 0xF4)
        hi = 0x8F;                      /* above U+10FFFF */
    if (p[1] < lo || p[1] > hi)
        return 0;
    for (i = 2; i < len; i++)
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
    return 1;
}

int utf8_check(const char *s, size_t n, int flags, const char **problem)
{
    const unsigned char *p = (const unsigned char *)s;
    const char *why = NULL;
    size_t i = 0;
    int len;

    while (i < n && why == NULL) {
        unsigned char b = p[i];

        if (b == 0) {
            why = "must not contain NUL characters";
        } else if (b < 0x20 || b == 0x7F) {
            if (!(flags & UTF8_MULTILINE) || (b != '\t' && b != '\n' && b != '\r'))
                why = "must not contain control characters";
            i++;
        } else if ((len = utf8_lead_len(b)) == 0 || (size_t)len > n - i ||
                   (len > 1 && !utf8_seq_ok(p + i, len))) {
            why = "is not valid UTF-8";
        } else {
            i += (size_t)len;
        }
    }
    if (why == NULL)
        return 0;
    if (problem != NULL)
        *problem = why;
    return AM_EBADREQ;
}

/* Which fields of a JSON body may hold TAB, LF and CR. */
static int utf8_field_multiline(const char *key)
{
    return strcmp(key, "system_prompt") == 0 || strcmp(key, "query") == 0 ||
           strcmp(key, "context") == 0;
}

/* Append ".key" or "[i]" to the path in field (bounded; truncation only
 * shortens the name the client sees). */
static void utf8_path_push(char *field, size_t cap, size_t at, const char *key, size_t idx)
{
    if (at >= cap)
        return;
    if (key != NULL)
        (void)util_snprintf(field + at, cap - at, "%s%s", at > 0 ? "." : "", key);
    else
        (void)util_snprintf(field + at, cap - at, "[%zu]", idx);
}

static int utf8_walk(struct json_object *v, int flags, int depth, char *field, size_t cap,
                     const char **problem)
{
    size_t at = strlen(field), i, n;
    int rc = 0;

    if (depth > UTF8_JSON_DEPTH)
        return 0;                       /* the parser refused deeper already */
    if (json_object_is_type(v, json_type_string))
        return utf8_check(json_object_get_string(v), (size_t)json_object_get_string_len(v),
                          flags, problem);
    if (json_object_is_type(v, json_type_array)) {
        n = json_object_array_length(v);
        for (i = 0; i < n && rc == 0; i++) {
            utf8_path_push(field, cap, at, NULL, i);
            rc = utf8_walk(json_object_array_get_idx(v, i), flags, depth + 1, field, cap,
                           problem);
        }
    } else if (json_object_is_type(v, json_type_object)) {
        json_object_object_foreach(v, key, val) {
            if ((rc = utf8_check(key, strlen(key), 0, problem)) != 0) {
                /* never echo the bad key: name the object that holds it
                 * (bounded like a push: a path already at cap stays as it is) */
                if (at < cap)
                    (void)util_snprintf(field + at, cap - at, "%s",
                                        at > 0 ? " (a key)" : "body (a key)");
                break;
            }
            utf8_path_push(field, cap, at, key, 0);
            if ((rc = utf8_walk(val, flags | (utf8_field_multiline(key) ? UTF8_MULTILINE : 0),
                                depth + 1, field, cap, problem)) != 0)
                break;
        }
    }
    if (rc == 0 && at < cap)
        field[at] = '\0';
    return rc;
}

int utf8_check_json(struct json_object *v, int flags, char *field, size_t cap,
                    const char **problem)
{
    if (cap == 0)
        return AM_EINTERNAL;
    field[0] = '\0';
    return utf8_walk(v, flags & UTF8_MULTILINE, 0, field, cap, problem);
}
