/*
 * tool_common.h - what the tool files share, declared for them only (runtime
 * and the rest of the daemon use tools.h): UTF-8 checks, the reply shapes,
 * argument and tool_config getters, host-list matching, bounded JSON parsing.
 *
 * Owns no state. Must not log, and must not be included outside
 * src/runtime/tools/ (and its unit test).
 */
#ifndef AM_TOOL_COMMON_H
#define AM_TOOL_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <curl/curl.h>
#include <json-c/json.h>
#include "runtime/tools/tools.h"

#define TOOL_ARGS_MAX_BYTES (2u * 1024 * 1024)  /* whole arguments text */

/* Length of the well-formed UTF-8 sequence at s (n bytes available), or 0
 * when it is malformed, overlong, a surrogate or cut short. */
size_t tool_utf8_seq(const unsigned char *s, size_t n);

/* Whether s[0..n) is entirely well-formed UTF-8. */
bool tool_utf8_valid(const char *s, size_t n);

/* n without a multi-byte sequence cut short at the end (after truncation). */
size_t tool_utf8_trim_partial(const char *s, size_t n);

/* A new json-c string of s[0..n) with every malformed byte replaced by
 * U+FFFD (caller puts). Every string from outside goes through here. */
struct json_object *tool_json_str_clean(const char *s, size_t n);

/* A new {"error": message} (caller puts); the message may quote model
 * input, so it is cleaned. */
struct json_object *tool_reply_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A new {"result": value} (caller puts); takes value (NULL for JSON null). */
struct json_object *tool_reply_result(struct json_object *value);

/* Write a message into msg; always returns -1. */
int tool_fail_msg(char *msg, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The string argument key (borrowed from args). Returns NULL with *err set
 * (an error reply, caller puts) when it is required and absent, not a
 * string, longer than max bytes or holds a NUL; NULL with *err untouched
 * when optional and absent (or null). *len, if given, receives its length. */
const char *tool_arg_str(struct json_object *args, const char *key, bool required, size_t max,
                         size_t *len, struct json_object **err);

/* tool_config[key] when it has type t, else NULL (borrowed). */
struct json_object *tool_cfg_get(const struct tools_ctx *ctx, const char *key, json_type t);

/* tool_config[key] when it is a non-empty string, else NULL (borrowed). */
const char *tool_cfg_str(const struct tools_ctx *ctx, const char *key);

/* tool_config[key] as an integer clamped to [lo, hi], else dflt. */
int64_t tool_cfg_int(const struct tools_ctx *ctx, const char *key, int64_t lo, int64_t hi,
                     int64_t dflt);

/* "example.com" matches itself; "*.example.com" matches any strict
 * subdomain of it. Case-insensitive; a trailing dot and IPv6 brackets in the
 * pattern are ignored. host is already lowercased and bare. */
bool tool_host_matches(const char *host, const char *pattern);

/* Whether host (or domain) matches an entry of the JSON string list lst. */
bool tool_list_matches(struct json_object *lst, const char *host);

/* Parse text[0..len) (NUL-terminated at len) as exactly one strict JSON
 * value nested at most 64 deep, every number finite. 0 and *out (NULL for
 * null; caller puts), or -1 with a message in msg. */
int tool_json_parse_limited(const char *text, size_t len, struct json_object **out, char *msg,
                            size_t cap);

/* The server's http_timeout_ms for a network call, or 10 s when it sets
 * none. */
long tool_timeout_ms(const struct tools_ctx *ctx);

/* The big-endian 32-bit number at p. */
uint32_t tool_be32(const unsigned char *p);

/* Restrict handle h to the protocols names ("http,https"); mask is the same
 * set for a libcurl older than 7.85. */
void tool_curl_protocols(CURL *h, const char *names, long mask);

#endif
