/*
 * provider_openai.c - the OpenAI-compatible chat completions protocol,
 * spoken by openai, groq and mistral (each at its own base_url), and the
 * body and answer shape of the offline echo provider.
 *
 * Request: POST {base_url}/chat/completions, "Authorization: Bearer KEY",
 *   {"model", "messages": [{"role","content"} |
 *     {"role":"assistant","content":null,"tool_calls":[{"id","type":"function",
 *       "function":{"name","arguments":"<json text>"}}]} |
 *     {"role":"tool","tool_call_id","content"}],
 *    "max_tokens"?, "tools"?: [{"type":"function","function":{...}}]}
 * Answer: choices[0].message.content (string or null) and .tool_calls[],
 *   usage.prompt_tokens / completion_tokens, model.
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

static struct json_object *openai_message(const struct providers_message *m)
{
    return provider_wire_openai_message(m, NULL);
}

static int openai_build_body(const struct providers_request *req, struct json_object **out,
                             struct am_error *err)
{
    struct json_object *opts;
    int rc = provider_wire_chat_body(req, openai_message, "max_tokens", out, err);

    if (rc != 0 || req->sink == NULL)
        return rc;
    json_object_object_add(*out, "stream", json_object_new_boolean(1));
    opts = json_object_new_object();
    json_object_object_add(opts, "include_usage", json_object_new_boolean(1));
    json_object_object_add(*out, "stream_options", opts);
    return 0;
}

static int openai_parse(struct json_object *root, const char *pname,
                        struct providers_response *resp, struct am_error *err)
{
    struct json_object *choices, *choice, *msg, *content, *calls, *refusal;
    int rc;

    if ((rc = provider_wire_field(root, "choices", json_type_array, 1, &choices, "", pname,
                                  err)) < 0)
        return rc;
    if (json_object_array_length(choices) == 0)
        return provider_wire_malformed(err, pname, "choices is empty");
    choice = json_object_array_get_idx(choices, 0);
    if ((rc = provider_wire_field(choice, "message", json_type_object, 1, &msg, "choices[0]",
                                  pname, err)) < 0
        || (rc = provider_wire_field(msg, "content", json_type_string, 0, &content,
                                     "choices[0].message", pname, err)) < 0
        || (rc = provider_wire_field(msg, "tool_calls", json_type_array, 0, &calls,
                                     "choices[0].message", pname, err)) < 0
        || (rc = provider_wire_field(msg, "refusal", json_type_string, 0, &refusal,
                                     "choices[0].message", pname, err)) < 0)
        return rc;
    if (content == NULL)
        content = refusal;   /* a refusal comes with content null */
    if (content == NULL && calls == NULL)
        return provider_wire_malformed(err, pname,
                                       "choices[0].message has neither content nor tool_calls");
    if (content)
        provider_wire_append_content(resp, content);
    if (calls && (rc = provider_wire_parse_calls(calls, "choices[0].message.tool_calls", pname,
                                                 resp, err)) != 0)
        return rc;
    return provider_wire_usage_model(root, "usage", "prompt_tokens", "completion_tokens", pname,
                                     resp, err);
}

/* The tool call deltas of one chunk: {index, id?, function: {name?,
 * arguments?}}, the id and name in the first, the arguments in pieces. */
static int openai_stream_calls(struct provider_stream *s, struct json_object *calls,
                               struct am_error *err)
{
    size_t i, n = json_object_array_length(calls);
    int rc;

    for (i = 0; i < n; i++) {
        struct json_object *c = json_object_array_get_idx(calls, i);
        struct provider_stream_slot *slot;

        if ((slot = provider_stream_slot(s, provider_stream_path(c, "index"), err)) == NULL)
            return AM_EPROVIDER;
        if ((rc = provider_stream_slot_fill(s, slot, provider_stream_path(c, "id"),
                                            provider_stream_path(c, "function.name"),
                                            provider_stream_path(c, "function.arguments"),
                                            err)) != 0)
            return rc;
    }
    return 0;
}

/* One chat.completion.chunk: choices[0].delta's content (or refusal) and
 * tool_calls, the model, and the usage of the last chunk (sent when
 * stream_options.include_usage is asked); "[DONE]" ends the stream
 * (provider_stream.c). An {"error": {...}} chunk is the provider's error. */
static int openai_stream_event(struct provider_stream *s, const char *event,
                               struct json_object *root, struct am_error *err)
{
    struct json_object *e, *usage, *delta, *calls, *choices;
    int rc;

    (void)event;
    if (json_object_object_get_ex(root, "error", &e) && e != NULL)
        return provider_stream_error(s, provider_stream_path(e, "message") ?
                                     provider_stream_path(e, "message") : e, err);
    provider_wire_set_model(&s->resp, provider_stream_path(root, "model"));
    if ((rc = provider_wire_field(root, "usage", json_type_object, 0, &usage, "", s->pname,
                                  err)) < 0
        || (usage && (rc = provider_wire_counts(usage, "usage", "prompt_tokens",
                                                "completion_tokens", s->pname, &s->resp,
                                                err)) != 0)
        || (rc = provider_wire_field(root, "choices", json_type_array, 0, &choices, "",
                                     s->pname, err)) < 0)
        return rc;
    if (choices == NULL || json_object_array_length(choices) == 0)
        return 0;
    delta = provider_stream_path(json_object_array_get_idx(choices, 0), "delta");
    if ((rc = provider_stream_text(s, provider_stream_path(delta, "content"), err)) != 0
        || (rc = provider_stream_text(s, provider_stream_path(delta, "refusal"), err)) != 0)
        return rc;
    calls = provider_stream_path(delta, "tool_calls");
    if (json_object_is_type(calls, json_type_array))
        return openai_stream_calls(s, calls, err);
    return 0;
}

const struct provider_wire provider_openai_wire = {
    .path = "/chat/completions",
    .auth_prefix = "Authorization: Bearer ",
    .headers = NULL,
    .build_body = openai_build_body,
    .parse = openai_parse,
    .stream_event = openai_stream_event,
};
