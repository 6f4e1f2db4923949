/*
 * utf8.h - the one string policy: what a string that enters the service
 * (a JSON field, a path parameter, a header the service reads) may hold.
 *
 * Valid UTF-8 in its shortest form (no overlong forms, no surrogates
 * U+D800..U+DFFF, nothing above U+10FFFF, no truncated sequence, no lone
 * continuation byte), no NUL, no C0 control (U+0001..U+001F) and no DEL,
 * except TAB, LF and CR where the caller allows them (UTF8_MULTILINE).
 *
 * Must never: allocate, log, or look at anything but the bytes it is given.
 */
#ifndef AM_UTF8_H
#define AM_UTF8_H

#include <stddef.h>

enum utf8_flags {
    UTF8_MULTILINE = 1          /* TAB, LF and CR are allowed (a prompt, a query) */
};

/* Check s[0..n) against the policy. Returns 0 when it holds, else
 * AM_EBADREQ and, when problem is not NULL, a static sentence for a client
 * that follows the field's name: "is not valid UTF-8", "must not contain
 * NUL characters" or "must not contain control characters". Nothing is
 * kept; the caller owns s. */
int utf8_check(const char *s, size_t n, int flags, const char **problem);

struct json_object;

/* Check every string of a parsed JSON value, keys included, against the
 * policy: UTF8_MULTILINE for the fields named "system_prompt" and "query"
 * and for everything inside "context", and everywhere when flags has it
 * (a document whose own fields are checked later, an imported YAML). Keys
 * never allow it. Returns 0, or AM_EBADREQ with the first offending
 * field's path ("step2.persona", "scopes[1]", "context.note") in field
 * (cap bytes, may be truncated) and the problem as utf8_check gives it. */
int utf8_check_json(struct json_object *v, int flags, char *field, size_t cap,
                    const char **problem);

#endif
