/*
 * json_path.c - the json_parser tool: parse a JSON document (or take the
 * value the model sent) and return it, or the value at a path such as
 * "a.b[0].c" or "$['odd.key']".
 *
 * Owns nothing beyond one call. Must not accept what tool_json_parse_limited
 * refuses (depth, trailing data, non-finite numbers), and must not hand back
 * a borrowed value without taking its own reference.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "runtime/tools/json_path.h"
#include "runtime/tools/tool_common.h"

static const char *json_type_word(struct json_object *o)
{
    switch (json_object_get_type(o)) {
    case json_type_null: return "null";
    case json_type_boolean: return "a boolean";
    case json_type_double:
    case json_type_int: return "a number";
    case json_type_string: return "a string";
    case json_type_array: return "an array";
    case json_type_object: return "an object";
    }
    return "a value";
}

/* Follow path ("a.b[0].c", optional leading "$", ['key'] for odd keys) from
 * root. 0 and *out (borrowed, NULL for JSON null) or -1 with msg naming the
 * segment that is missing. */
static int json_path_get(struct json_object *root, const char *path, struct json_object **out,
                         char *msg, size_t cap)
{
    struct json_object *cur = root, *next;
    const char *p = path, *seg;
    char key[256];
    size_t n, at;

    if (*p == '$')
        p++;
    while (*p) {
        at = (size_t)(p - path);               /* the prefix already walked */
        if (*p == '[' && (p[1] == '\'' || p[1] == '"')) {
            char q = p[1];

            seg = p + 2;
            for (n = 0; seg[n] && seg[n] != q; n++)
                ;
            if (seg[n] != q || seg[n + 1] != ']')
                return tool_fail_msg(msg, cap, "unterminated ['key'] at offset %zu", at);
            p = seg + n + 2;
        } else if (*p == '[') {
            char *end;
            long i;
            size_t len;

            errno = 0;
            i = strtol(p + 1, &end, 10);
            if (end == p + 1 || *end != ']' || errno)
                return tool_fail_msg(msg, cap, "bad index at offset %zu (want [number])", at);
            if (!json_object_is_type(cur, json_type_array))
                return tool_fail_msg(msg, cap, "'%.*s' is %s, not an array (cannot take [%ld])",
                                     (int)at, path, json_type_word(cur), i);
            len = json_object_array_length(cur);
            if (i < 0)
                i += (long)len;
            if (i < 0 || (size_t)i >= len)
                return tool_fail_msg(msg, cap, "index %.*s out of range at '%.*s' (length %zu)",
                                     (int)(end - p - 1), p + 1, (int)at, path, len);
            cur = json_object_array_get_idx(cur, (size_t)i);
            p = end + 1;
            continue;
        } else {
            if (*p == '.')
                p++;
            seg = p;
            n = strcspn(seg, ".[");
            if (n == 0)
                return tool_fail_msg(msg, cap, "empty key at offset %zu", (size_t)(seg - path));
            p = seg + n;
        }
        if (n >= sizeof(key))
            return tool_fail_msg(msg, cap, "key too long at offset %zu", at);
        memcpy(key, seg, n);
        key[n] = '\0';
        if (!json_object_is_type(cur, json_type_object))
            return tool_fail_msg(msg, cap, "'%.*s' is %s, not an object (cannot take key '%s')",
                                 (int)at, path, json_type_word(cur), key);
        if (!json_object_object_get_ex(cur, key, &next))
            return at == 0 || (at == 1 && path[0] == '$')
                       ? tool_fail_msg(msg, cap, "key '%s' not found at the top level", key)
                       : tool_fail_msg(msg, cap, "key '%s' not found at '%.*s'", key, (int)at, path);
        cur = next;
    }
    *out = cur;
    return 0;
}

struct json_object *json_path_tool(struct json_object *args, const struct tools_ctx *ctx)
{
    struct json_object *err = NULL, *root = NULL, *val = NULL, *jv = NULL;
    const char *text, *path;
    char msg[300];
    size_t len;

    (void)ctx;
    path = tool_arg_str(args, "path", false, 1024, NULL, &err);
    if (err)
        return err;
    if (json_object_object_get_ex(args, "json", &jv) && jv != NULL &&
        !json_object_is_type(jv, json_type_string)) {
        root = json_object_get(jv);            /* the model sent the value itself */
    } else {
        text = tool_arg_str(args, "json", true, TOOL_ARGS_MAX_BYTES, &len, &err);
        if (text == NULL)
            return err;
        if (tool_json_parse_limited(text, len, &root, msg, sizeof(msg)) < 0)
            return tool_reply_error("invalid JSON: %s", msg);
    }
    if (path && *path && json_path_get(root, path, &val, msg, sizeof(msg)) < 0) {
        json_object_put(root);
        return tool_reply_error("%s", msg);
    }
    if (path == NULL || *path == '\0')
        val = root;
    val = json_object_get(val);
    json_object_put(root);
    return tool_reply_result(val);
}

