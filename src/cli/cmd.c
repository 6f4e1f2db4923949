/*
 * cmd.c - the helpers every astromesh command shares: org paths, one
 * request with its error reporting, JSON output.
 *
 * Prints errors on stderr and --json output on stdout; owns nothing
 * beyond one call.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "cli/cmd.h"
#include "lib/util.h"

/* Append segment s percent-encoded (all but unreserved characters and '@'). */
static void put_segment(char *out, size_t cap, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(out);
    for (; *s && n + 4 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            strchr("-._~@", ch)) {
            out[n++] = (char)ch;
        } else {
            out[n++] = '%';
            out[n++] = hex[ch >> 4];
            out[n++] = hex[ch & 15];
        }
    }
    out[n] = '\0';
}

int cmd_path(struct cli *x, char *out, size_t cap, ...)
{
    va_list ap;
    const char *seg;
    if (!x->c.org[0])
        return cmd_usage("no organization: give --org SLUG (or log in)");
    util_strlcpy(out, "/api/v1/orgs/", cap);
    put_segment(out, cap, x->c.org);
    va_start(ap, cap);
    while ((seg = va_arg(ap, const char *)) != NULL) {
        size_t n = strlen(out);
        if (seg[0] == '?') {           /* a query string, already encoded */
            util_strlcpy(out + n, seg, cap - n);
            continue;
        }
        util_strlcpy(out + n, "/", cap - n);
        put_segment(out, cap, seg);
    }
    va_end(ap);
    return 0;
}

int cmd_request(struct cli *x, const char *method, const char *path, struct json_object *body,
                long ok_status, struct json_object **out)
{
    struct client_resp r = { 0 };
    int rc = 0;
    if (out)
        *out = NULL;
    if (client_call(&x->c, method, path, body, NULL, NULL, &r) != 0) {
        fprintf(stderr, "astromesh: %s\n", x->c.neterr);
        rc = ARGS_EXIT_NET;
    } else if (r.status != ok_status) {
        rc = client_report(&r);
    } else if (out) {
        *out = client_resp_json(&r);
        if (*out == NULL && r.body.n > 0)   /* not JSON (the YAML of an agent) */
            *out = json_object_new_string_len(r.body.z, (int)r.body.n);
    }
    client_resp_free(&r);
    return rc;
}

const char *cmd_word(const struct cli *x, int i)
{
    return i < x->a.npos ? x->a.pos[i] : NULL;
}

int cmd_usage(const char *fmt, ...)
{
    va_list ap;
    fputs("astromesh: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n(astromesh --help lists the commands)\n", stderr);
    return ARGS_EXIT_USAGE;
}

int cmd_json_out(const struct cli *x, struct json_object *o)
{
    if (!x->a.json)
        return 0;
    printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
                                                       JSON_C_TO_STRING_NOSLASHESCAPE));
    return 1;
}

const char *cmd_str(struct json_object *o, const char *k)
{
    struct json_object *v;
    if (o && json_object_object_get_ex(o, k, &v) && json_object_is_type(v, json_type_string))
        return json_object_get_string(v);
    return "";
}
