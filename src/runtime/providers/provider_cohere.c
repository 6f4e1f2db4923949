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
 * field Cohere itself uses for it.
 *
 * Owns nothing but the body it builds. No I/O here, no logging and never
 * the key (providers.c adds the auth header); it calls only provider_wire.c
 * and providers.h, never another protocol file. See provider_wire.h.
 */
#include <string.h>
#include <json-c/json.h>

#include "lib/error.h"
#include "runtime/providers/provider_wire.h"
#include "runtime/providers/providers.h"

/* An assistant turn's text beside tool calls travels as "tool_plan". */
static struct json_object *cohere_message(const struct providers_message *m)
{
    return provider_wire_openai_message(m, "tool_plan");
}

static int cohere_build_body(const struct providers_request *req, struct json_object **out,
                             struct am_error *err)
{
    int rc = provider_wire_chat_body(req, cohere_message, "max_tokens", out, err);

    if (rc == 0 && req->sink != NULL)
        json_object_object_add(*out, "stream", json_object_new_boolean(1));
    return rc;
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
        if ((rc = provider_wire_item(content, i, "message.content", at, sizeof(at), &b, pname,
                                     err)) != 0)
            return rc;
        if ((rc = provider_wire_field(b, "type", json_type_string, 1, &type, at, pname,
                                      err)) < 0)
            return rc;
        if (strcmp(json_object_get_string(type), "text") != 0)
            continue;
        if ((rc = provider_wire_field(b, "text", json_type_string, 1, &text, at, pname,
                                      err)) < 0)
            return rc;
        provider_wire_append_content(resp, text);
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
    return provider_wire_counts(counts, where, "input_tokens", "output_tokens", pname, resp,
                                err);
}

static int cohere_parse(struct json_object *root, const char *pname,
                        struct providers_response *resp, struct am_error *err)
{
    struct json_object *content, *calls;
    int rc;

    if ((rc = provider_wire_reply_message(root, json_type_array, &content, &calls, pname,
                                          err)) != 0)
        return rc;
    if (content && (rc = cohere_content(content, pname, resp, err)) != 0)
        return rc;
    if (calls && (rc = provider_wire_parse_calls(calls, "message.tool_calls", pname, resp,
                                                 err)) != 0)
        return rc;
    return cohere_usage(root, pname, resp, err);
}

/* The v2 events: content-start / content-delta (delta.message.content.
 * text), tool-call-start (the call's id, name and first arguments) and
 * tool-call-delta (more arguments), both by index, message-end (usage,
 * the end). tool-plan-delta, citations and the rest are skipped, as the
 * buffered parse skips tool_plan. */
static int cohere_stream_event(struct provider_stream *s, const char *event,
                               struct json_object *root, struct am_error *err)
{
    struct json_object *type = provider_stream_path(root, "type"), *c;
    struct provider_stream_slot *slot;
    const char *t;
    int rc;

    (void)event;
    if (!json_object_is_type(type, json_type_string))
        return provider_wire_malformed(err, s->pname, "stream event without a type");
    t = json_object_get_string(type);
    if (strcmp(t, "content-start") == 0 || strcmp(t, "content-delta") == 0)
        return provider_stream_text(s, provider_stream_path(root, "delta.message.content.text"),
                                    err);
    if (strcmp(t, "tool-call-start") == 0 || strcmp(t, "tool-call-delta") == 0) {
        if ((slot = provider_stream_slot(s, provider_stream_path(root, "index"), err)) == NULL)
            return AM_EPROVIDER;
        c = provider_stream_path(root, "delta.message.tool_calls");
        return provider_stream_slot_fill(s, slot, provider_stream_path(c, "id"),
                                         provider_stream_path(c, "function.name"),
                                         provider_stream_path(c, "function.arguments"), err);
    }
    if (strcmp(t, "message-end") == 0) {
        if ((c = provider_stream_path(root, "delta")) != NULL &&
            (rc = cohere_usage(c, s->pname, &s->resp, err)) != 0)
            return rc;
        s->done = 1;
    }
    return 0;
}

const struct provider_wire provider_cohere_wire = {
    .path = "/chat",
    .auth_prefix = "Authorization: Bearer ",
    .headers = NULL,
    .build_body = cohere_build_body,
    .parse = cohere_parse,
    .stream_event = cohere_stream_event,
};
