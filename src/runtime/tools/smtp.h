/*
 * smtp.h - the email_sender tool, for the tool table in tools.c, and its
 * header encoders, exposed for the unit test.
 */
#ifndef AM_SMTP_H
#define AM_SMTP_H

#include <stddef.h>
#include <json-c/json.h>
#include "runtime/tools/tools.h"

/* The Subject header value of s: as is when ASCII, else RFC 2047 encoded
 * words of at most 45 bytes each (split between characters), folded.
 * Caller frees. */
char *smtp_subject(const char *s);

/* The body s[0..n) with CRLF line ends, no line over 998 bytes, ending in
 * CRLF. Caller frees. */
char *smtp_body(const char *s, size_t n);

/* args "to" (a string, comma-separated, or a list), "subject", "body":
 * {sent, to, message_id} once the server accepted it, or an error reply
 * (caller puts). */
struct json_object *smtp_email_sender(struct json_object *args, const struct tools_ctx *ctx);

#endif
