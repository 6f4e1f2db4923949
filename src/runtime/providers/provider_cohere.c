/*
 * provider_cohere.c - Cohere chat, API v2.
 *
 * Request: POST {base_url}/chat (base_url ends in /v2), "Authorization:
 *   Bearer KEY", {"model", "messages": [{"role":"system"|"user",
 *   "content"} | {"role":"assistant","content"} | {"role":"assistant",
 *   "tool_plan"?, "tool_calls":[OpenAI form]} | {"role":"tool",
 *   "tool_call_id","content"}], "max_tokens"?, "tools"?: [OpenAI function
 *   form]}
 * Answer: message.content[] ({"type":"text","text"}), message.tool_calls[]
 *   (OpenAI form, arguments as JSON text), usage.tokens.input_tokens /
 *   output_tokens, else usage.billed_units. No model field: providers_chat
 *   reports the requested one.
 *
 * An assistant turn's text beside tool calls goes out as "tool_plan", the
 * field Cohere itself uses for it. No I/O here and no key: see
 * provider_wire.h.
 */
#include <stdio.h>
#include <string.h>
#include <json-c/json.h>

#include "lib/error.h"
#include "runtime/providers/provider_wire.h"
#include "runtime/providers/providers.h"
#include "lib/util.h"

static struct json_object *cohere_calls(const struct providers_message *m)
{
    struct json_object *arr = json_object_new_array(), *call, *fn;
    size_t i;

    for (i = 0; i < m->ncalls; i++) {
        fn = json_object_new_object();
        json_object_object_add(fn, "name", json_object_new_string(m->calls[i].name));
        json_object_object_add(fn, "arguments", provider_wire_string(
                                   m->calls[i].arguments ? m->calls[i].arguments : "{}"));
        call = json_object_new_object();
        json_object_object_add(call, "id", json_object_new_string(m->calls[i].id));
        json_object_object_add(call, "type", json_object_new_string("function"));
        json_object_object_add(call, "function", fn);
        json_object_array_add(arr, call);
    }
    return arr;
}

static struct json_object *cohere_message(const struct providers_message *m)
{
    struct json_object *o = json_object_new_object();

    json_object_object_add(o, "role", json_object_new_string(m->role));
    if (strcmp(m->role, "assistant") == 0 && m->ncalls > 0) {
        if (m->content && *m->content)
            json_object_object_add(o, "tool_plan", json_object_new_string(m->content));
        json_object_object_add(o, "tool_calls", cohere_calls(m));
        return o;
    }
    if (strcmp(m->role, "tool") == 0)
        json_object_object_add(o, "tool_call_id", provider_wire_string(m->tool_call_id));
    json_object_object_add(o, "content", provider_wire_string(m->content));
    return o;
}

static int cohere_build_body(const struct providers_request *req, struct json_object **out,
                             struct am_error *err)
{
    int rc = provider_wire_chat_body(req, cohere_message, out, err);

    if (rc != 0)
        return rc;
    if (req->max_tokens > 0)
        json_object_object_add(*out, "max_tokens", json_object_new_int(req->max_tokens));
    return 0;
}

/* message.content: text blocks joined; other block types skipped. */
static int cohere_content(struct json_object *content, const char *pname,
                          struct providers_response *resp, struct am_error *err)
{
    struct json_object *b, *type, *text;
    size_t i, n = json_object_array_length(content);
    char at[48];
    int rc;

    for (i = 0; i < n; i++) {
        b = json_object_array_get_idx(content, i);
        snprintf(at, sizeof(at), "message.content[%zu]", i);
        if (!json_object_is_type(b, json_type_object))
            return provider_wire_malformed(err, pname, "%s is not an object", at);
        if ((rc = provider_wire_field(b, "type", json_type_string, 1, &type, at, pname,
                                      err)) < 0)
            return rc;
        if (strcmp(json_object_get_string(type), "text") != 0)
            continue;
        if ((rc = provider_wire_field(b, "text", json_type_string, 1, &text, at, pname,
                                      err)) < 0)
            return rc;
        provider_wire_append_content(resp, json_object_get_string(text),
                                     strlen(json_object_get_string(text)));
    }
    return 0;
}

static int cohere_usage(struct json_object *root, const char *pname,
                        struct providers_response *resp, struct am_error *err)
{
    struct json_object *usage, *counts;
    const char *where = "usage.tokens";
    int rc;

    if ((rc = provider_wire_field(root, "usage", json_type_object, 0, &usage, "", pname,
                                  err)) <= 0)
        return rc;
    if ((rc = provider_wire_field(usage, "tokens", json_type_object, 0, &counts, "usage",
                                  pname, err)) < 0)
        return rc;
    if (counts == NULL) {
        where = "usage.billed_units";
        if ((rc = provider_wire_field(usage, "billed_units", json_type_object, 0, &counts,
                                      "usage", pname, err)) <= 0)
            return rc;
    }
    if ((rc = provider_wire_tokens(counts, "input_tokens", &resp->prompt_tokens, where, pname,
                                   err)) < 0)
        return rc;
    return provider_wire_tokens(counts, "output_tokens", &resp->completion_tokens, where,
                                pname, err);
}

static int cohere_parse(struct json_object *root, const char *pname,
                        struct providers_response *resp, struct am_error *err)
{
    struct json_object *msg, *content, *calls;
    int rc;

    if ((rc = provider_wire_field(root, "message", json_type_object, 1, &msg, "", pname,
                                  err)) < 0
        || (rc = provider_wire_field(msg, "content", json_type_array, 0, &content, "message",
                                     pname, err)) < 0
        || (rc = provider_wire_field(msg, "tool_calls", json_type_array, 0, &calls, "message",
                                     pname, err)) < 0)
        return rc;
    if (content == NULL && calls == NULL)
        return provider_wire_malformed(err, pname, "message has neither content nor "
                                       "tool_calls");
    if (content && (rc = cohere_content(content, pname, resp, err)) != 0)
        return rc;
    if (calls && (rc = provider_openai_parse_calls(calls, "message.tool_calls", pname, resp,
                                                   err)) != 0)
        return rc;
    return cohere_usage(root, pname, resp, err);
}

const struct provider_wire provider_cohere_wire = {
    .path = "/chat",
    .auth_prefix = "Authorization: Bearer ",
    .headers = NULL,
    .build_body = cohere_build_body,
    .parse = cohere_parse,
};
