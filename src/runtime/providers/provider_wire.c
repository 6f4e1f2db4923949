/*
 * provider_wire.c - the pieces of the wire formats that more than one
 * protocol file shares (provider_wire.h): reading a provider's answer
 * (strict JSON with a depth limit, type-checked fields, token counts, the
 * usage/model tail, OpenAI-form tool calls, tool calls and text appended to
 * a response) and building a request body (the OpenAI-shaped chat body and
 * messages, the tools arrays, tool schemas, arguments as an object).
 *
 * It owns nothing but the memory of what it builds: it does no I/O and
 * never logs, and it never sees the API key (providers.c adds the auth
 * header after the body is built), so no key can reach a body or an error
 * message from here. Only the providers folder includes provider_wire.h,
 * and only providers.c speaks HTTP to a model provider.
 */
#include <ctype.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <json-c/json.h>

#include "lib/buf.h"
#include "lib/error.h"
#include "runtime/providers/provider_wire.h"
#include "runtime/providers/providers.h"
#include "lib/util.h"

/* ------------------------------------------------------------------------ */
/* Reading an answer                                                         */

int provider_wire_malformed(struct am_error *err, const char *pname, const char *fmt, ...)
{
    char what[192];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    return error_set(err, AM_EPROVIDER, "malformed answer from provider %s: %s", pname, what);
}

static const char *type_word(json_type t)
{
    switch (t) {
    case json_type_null: return "null";
    case json_type_boolean: return "a boolean";
    case json_type_double: return "a number";
    case json_type_int: return "an integer";
    case json_type_object: return "an object";
    case json_type_array: return "an array";
    case json_type_string: return "a string";
    }
    return "unknown";
}

int provider_wire_field(struct json_object *obj, const char *key, json_type t, int required,
                        struct json_object **out, const char *where, const char *pname,
                        struct am_error *err)
{
    struct json_object *v = NULL;
    const char *dot = *where ? "." : "";

    *out = NULL;
    if (!json_object_is_type(obj, json_type_object))
        return provider_wire_malformed(err, pname, "%s is not an object",
                                       *where ? where : "the answer");
    if (!json_object_object_get_ex(obj, key, &v) || v == NULL) {
        if (!required)
            return 0;
        return provider_wire_malformed(err, pname, "%s%s%s is missing", where, dot, key);
    }
    if (!json_object_is_type(v, t))
        return provider_wire_malformed(err, pname, "%s%s%s is %s, expected %s", where, dot,
                                       key, type_word(json_object_get_type(v)), type_word(t));
    *out = v;
    return 1;
}

int provider_wire_item(struct json_object *arr, size_t i, const char *where, char *at,
                       size_t atcap, struct json_object **out, const char *pname,
                       struct am_error *err)
{
    *out = json_object_array_get_idx(arr, i);
    snprintf(at, atcap, "%s[%zu]", where, i);
    if (!json_object_is_type(*out, json_type_object))
        return provider_wire_malformed(err, pname, "%s is not an object", at);
    return 0;
}

int provider_wire_tokens(struct json_object *obj, const char *key, int *out,
                         const char *where, const char *pname, struct am_error *err)
{
    struct json_object *v = NULL;
    const char *dot = *where ? "." : "";
    int64_t n;
    double d;

    if (!json_object_object_get_ex(obj, key, &v) || v == NULL)
        return 0;
    if (json_object_is_type(v, json_type_int)) {
        n = json_object_get_int64(v);
        if (n < 0 || n > INT_MAX)
            return provider_wire_malformed(err, pname, "%s%s%s out of range", where, dot, key);
        *out = (int)n;
        return 0;
    }
    if (json_object_is_type(v, json_type_double)) {
        /* Some providers send integral counts as 12.0. */
        d = json_object_get_double(v);
        if (!isfinite(d) || d < 0 || d > INT_MAX || d != (double)(int)d)
            return provider_wire_malformed(err, pname, "%s%s%s out of range", where, dot, key);
        *out = (int)d;
        return 0;
    }
    return provider_wire_malformed(err, pname, "%s%s%s is %s, expected an integer", where, dot,
                                   key, type_word(json_object_get_type(v)));
}

int provider_wire_counts(struct json_object *counts, const char *where,
                         const char *prompt_key, const char *completion_key,
                         const char *pname, struct providers_response *resp,
                         struct am_error *err)
{
    int rc;

    if ((rc = provider_wire_tokens(counts, prompt_key, &resp->prompt_tokens, where, pname,
                                   err)) < 0)
        return rc;
    return provider_wire_tokens(counts, completion_key, &resp->completion_tokens, where, pname,
                                err);
}

int provider_wire_usage_model(struct json_object *root, const char *usage,
                              const char *prompt_key, const char *completion_key,
                              const char *pname, struct providers_response *resp,
                              struct am_error *err)
{
    struct json_object *counts = root, *model;
    const char *where = "";
    int rc;

    if (usage != NULL) {
        where = usage;
        if ((rc = provider_wire_field(root, usage, json_type_object, 0, &counts, "", pname,
                                      err)) < 0)
            return rc;
    }
    if (counts != NULL && (rc = provider_wire_counts(counts, where, prompt_key, completion_key,
                                                     pname, resp, err)) < 0)
        return rc;
    if ((rc = provider_wire_field(root, "model", json_type_string, 0, &model, "", pname,
                                  err)) < 0)
        return rc;
    provider_wire_set_model(resp, model);
    return 0;
}

int provider_wire_reply_message(struct json_object *root, json_type content_type,
                                struct json_object **content, struct json_object **calls,
                                const char *pname, struct am_error *err)
{
    struct json_object *msg;
    int rc;

    *content = *calls = NULL;
    if ((rc = provider_wire_field(root, "message", json_type_object, 1, &msg, "", pname,
                                  err)) < 0
        || (rc = provider_wire_field(msg, "content", content_type, 0, content, "message",
                                     pname, err)) < 0
        || (rc = provider_wire_field(msg, "tool_calls", json_type_array, 0, calls, "message",
                                     pname, err)) < 0)
        return rc;
    if (*content == NULL && *calls == NULL)
        return provider_wire_malformed(err, pname, "message has neither content nor "
                                       "tool_calls");
    return 0;
}

int provider_wire_add_call(struct providers_response *resp, const char *id, const char *name,
                           const char *args, const char *where, const char *pname,
                           struct am_error *err)
{
    struct providers_tool_call *c;

    if (resp->ncalls >= PROVIDER_WIRE_MAX_CALLS)
        return provider_wire_malformed(err, pname, "more than %d tool calls",
                                       PROVIDER_WIRE_MAX_CALLS);
    if (*id == '\0' || strlen(id) >= sizeof(c->id))
        return provider_wire_malformed(err, pname, "%s: tool call id empty or longer than %zu "
                                       "bytes", where, sizeof(c->id) - 1);
    if (*name == '\0' || strlen(name) >= sizeof(c->name))
        return provider_wire_malformed(err, pname, "%s: tool name empty or longer than %zu "
                                       "bytes", where, sizeof(c->name) - 1);
    resp->calls = xrealloc(resp->calls, (resp->ncalls + 1) * sizeof(*resp->calls));
    c = &resp->calls[resp->ncalls++];
    memset(c, 0, sizeof(*c));
    util_strlcpy(c->id, id, sizeof(c->id));
    util_strlcpy(c->name, name, sizeof(c->name));
    c->arguments = xstrdup(args);
    return 0;
}

int provider_wire_parse_calls(struct json_object *arr, const char *where, const char *pname,
                              struct providers_response *resp, struct am_error *err)
{
    struct json_object *call, *id, *fn, *name, *args;
    char at[96];
    size_t i, n = json_object_array_length(arr);
    int rc;

    for (i = 0; i < n; i++) {
        if ((rc = provider_wire_item(arr, i, where, at, sizeof(at), &call, pname, err)) != 0)
            return rc;
        if ((rc = provider_wire_field(call, "id", json_type_string, 1, &id, at, pname, err)) < 0
            || (rc = provider_wire_field(call, "function", json_type_object, 1, &fn, at, pname,
                                         err)) < 0)
            return rc;
        snprintf(at, sizeof(at), "%s[%zu].function", where, i);
        if ((rc = provider_wire_field(fn, "name", json_type_string, 1, &name, at, pname,
                                      err)) < 0
            || (rc = provider_wire_field(fn, "arguments", json_type_string, 1, &args, at, pname,
                                         err)) < 0)
            return rc;
        if ((rc = provider_wire_add_call(resp, json_object_get_string(id),
                                         json_object_get_string(name),
                                         json_object_get_string(args), at, pname, err)) != 0)
            return rc;
    }
    return 0;
}

void provider_wire_append_content(struct providers_response *resp, struct json_object *text)
{
    const char *s = json_object_get_string(text);
    struct buf b = { resp->content, 0, 0 };

    /* resp->content is the string of a buffer handed over: adopt it,
     * append, hand it back. */
    if (b.z != NULL) {
        b.n = strlen(b.z);
        b.cap = b.n + 1;
    }
    buf_puts(&b, s);
    resp->content = b.z;
}

void provider_wire_set_model(struct providers_response *resp, struct json_object *model)
{
    if (json_object_is_type(model, json_type_string))
        util_strlcpy(resp->model, json_object_get_string(model), sizeof(resp->model));
}

void provider_wire_response_free(struct providers_response *resp)
{
    size_t i;

    if (resp == NULL)
        return;
    for (i = 0; i < resp->ncalls; i++)
        free(resp->calls[i].arguments);
    free(resp->calls);
    free(resp->content);
    memset(resp, 0, sizeof(*resp));
}

/* ------------------------------------------------------------------------ */
/* JSON text                                                                 */

int provider_wire_parse_ex(const char *text, size_t len, struct json_object **out,
                           const char **why)
{
    struct json_tokener *tok;
    struct json_object *obj;
    enum json_tokener_error jerr;
    size_t i, end;

    *out = NULL;
    for (i = 0; i < len && isspace((unsigned char)text[i]); i++)
        ;
    if (i == len) {
        *why = "empty";
        return -1;
    }
    if (len > INT_MAX) {
        *why = "too large";
        return -1;
    }
    tok = json_tokener_new_ex(PROVIDER_WIRE_MAX_DEPTH);
    if (tok == NULL)
        abort();
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    obj = json_tokener_parse_ex(tok, text, (int)len);
    jerr = json_tokener_get_error(tok);
    end = json_tokener_get_parse_end(tok);
    if (jerr == json_tokener_continue) {
        /* A number at the very end is only complete once the tokener sees
         * a terminator; anything else still open was cut short. */
        obj = json_tokener_parse_ex(tok, "", 1);
        jerr = json_tokener_get_error(tok);
        end = len;
        if (jerr != json_tokener_success) {
            json_tokener_free(tok);
            *why = "truncated";
            return -1;
        }
    }
    json_tokener_free(tok);
    if (jerr == json_tokener_error_depth) {
        *why = "too deeply nested";
        return -1;
    }
    if (jerr != json_tokener_success) {
        *why = "not JSON";
        return -1;
    }
    for (; end < len && isspace((unsigned char)text[end]); end++)
        ;
    if (end < len) {
        json_object_put(obj);
        *why = "trailing data after the JSON value";
        return -1;
    }
    *out = obj;
    return 0;
}

struct json_object *provider_wire_parse_text(const char *text, size_t len)
{
    struct json_object *obj = NULL;
    const char *why;

    if (provider_wire_parse_ex(text, len, &obj, &why) != 0)
        return NULL;
    return obj;
}

const char *provider_wire_json_text(struct json_object *obj)
{
    return json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN
                                          | JSON_C_TO_STRING_NOSLASHESCAPE);
}

/* ------------------------------------------------------------------------ */
/* Building a request body                                                   */

struct json_object *provider_wire_string(const char *s)
{
    return json_object_new_string(s ? s : "");
}

struct json_object *provider_wire_args_object(const char *args)
{
    struct json_object *obj = args ? provider_wire_parse_text(args, strlen(args)) : NULL;

    if (json_object_is_type(obj, json_type_object))
        return obj;
    json_object_put(obj);
    return json_object_new_object();
}

int provider_wire_tool_schema(const struct providers_tool *tool, struct json_object **out,
                              struct am_error *err)
{
    struct json_object *schema;

    *out = NULL;
    if (tool->parameters == NULL || *tool->parameters == '\0') {
        schema = json_object_new_object();
        json_object_object_add(schema, "type", json_object_new_string("object"));
        json_object_object_add(schema, "properties", json_object_new_object());
        *out = schema;
        return 0;
    }
    schema = provider_wire_parse_text(tool->parameters, strlen(tool->parameters));
    if (!json_object_is_type(schema, json_type_object)) {
        json_object_put(schema);
        return error_set(err, AM_EINTERNAL, "tool %s: parameters are not a JSON object",
                         tool->name ? tool->name : "(unnamed)");
    }
    *out = schema;
    return 0;
}

/* {name, description?, <schema_key>: schema} for tool i, or AM_EINTERNAL
 * (no name, a bad schema). */
static int tool_object(const struct providers_tool *t, size_t i, const char *schema_key,
                       struct json_object **out, struct am_error *err)
{
    struct json_object *schema;
    int rc;

    *out = NULL;
    if (t->name == NULL || *t->name == '\0')
        return error_set(err, AM_EINTERNAL, "tool %zu has no name", i);
    if ((rc = provider_wire_tool_schema(t, &schema, err)) != 0)
        return rc;
    *out = json_object_new_object();
    json_object_object_add(*out, "name", json_object_new_string(t->name));
    if (t->description)
        json_object_object_add(*out, "description", json_object_new_string(t->description));
    json_object_object_add(*out, schema_key, schema);
    return 0;
}

int provider_wire_tools(const struct providers_request *req, enum provider_wire_tool_form form,
                        struct json_object **out, struct am_error *err)
{
    struct json_object *arr, *tool, *entry;
    size_t i;
    int rc;

    *out = NULL;
    if (req->ntools == 0)
        return 0;
    arr = json_object_new_array();
    for (i = 0; i < req->ntools; i++) {
        if ((rc = tool_object(&req->tools[i], i, form == PROVIDER_WIRE_TOOLS_ANTHROPIC
                              ? "input_schema" : "parameters", &tool, err)) != 0) {
            json_object_put(arr);
            return rc;
        }
        if (form == PROVIDER_WIRE_TOOLS_FUNCTION) {
            entry = json_object_new_object();
            json_object_object_add(entry, "type", json_object_new_string("function"));
            json_object_object_add(entry, "function", tool);
            tool = entry;
        }
        json_object_array_add(arr, tool);
    }
    *out = arr;
    return 0;
}

int provider_wire_chat_body(const struct providers_request *req,
                            provider_wire_message_fn message, const char *max_tokens_key,
                            struct json_object **out, struct am_error *err)
{
    struct json_object *body, *msgs, *tools = NULL;
    size_t i;
    int rc;

    *out = NULL;
    if ((rc = provider_wire_tools(req, PROVIDER_WIRE_TOOLS_FUNCTION, &tools, err)) != 0)
        return rc;
    body = json_object_new_object();
    json_object_object_add(body, "model", json_object_new_string(req->model));
    msgs = json_object_new_array();
    for (i = 0; i < req->nmessages; i++)
        json_object_array_add(msgs, message(&req->messages[i]));
    json_object_object_add(body, "messages", msgs);
    if (tools != NULL)
        json_object_object_add(body, "tools", tools);
    if (max_tokens_key != NULL && req->max_tokens > 0)
        json_object_object_add(body, max_tokens_key, json_object_new_int(req->max_tokens));
    *out = body;
    return 0;
}

/* [{id, type: "function", function: {name, arguments: "<json text>"}}]
 * for the calls of an assistant message. */
static struct json_object *openai_calls(const struct providers_message *m)
{
    struct json_object *arr = json_object_new_array(), *call, *fn;
    size_t i;

    for (i = 0; i < m->ncalls; i++) {
        const struct providers_tool_call *c = &m->calls[i];

        fn = json_object_new_object();
        json_object_object_add(fn, "name", json_object_new_string(c->name));
        json_object_object_add(fn, "arguments",
                               provider_wire_string(c->arguments ? c->arguments : "{}"));
        call = json_object_new_object();
        json_object_object_add(call, "id", json_object_new_string(c->id));
        json_object_object_add(call, "type", json_object_new_string("function"));
        json_object_object_add(call, "function", fn);
        json_object_array_add(arr, call);
    }
    return arr;
}

struct json_object *provider_wire_openai_message(const struct providers_message *m,
                                                 const char *plan_key)
{
    struct json_object *o = json_object_new_object();
    int has_text = m->content && *m->content;

    json_object_object_add(o, "role", json_object_new_string(m->role));
    if (strcmp(m->role, "assistant") == 0 && m->ncalls > 0) {
        if (plan_key == NULL)   /* content is null, not "", beside tool calls */
            json_object_object_add(o, "content",
                                   has_text ? json_object_new_string(m->content) : NULL);
        else if (has_text)
            json_object_object_add(o, plan_key, json_object_new_string(m->content));
        json_object_object_add(o, "tool_calls", openai_calls(m));
        return o;
    }
    if (strcmp(m->role, "tool") == 0)
        json_object_object_add(o, "tool_call_id", provider_wire_string(m->tool_call_id));
    json_object_object_add(o, "content", provider_wire_string(m->content));
    return o;
}
