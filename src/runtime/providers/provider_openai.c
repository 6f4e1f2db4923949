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
 * No I/O here and no key: see provider_wire.h.
 */
#include <stdio.h>
#include <string.h>
#include <json-c/json.h>

#include "lib/error.h"
#include "runtime/providers/provider_wire.h"
#include "runtime/providers/providers.h"
#include "lib/util.h"

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

static struct json_object *openai_message(const struct providers_message *m)
{
    struct json_object *o = json_object_new_object();

    json_object_object_add(o, "role", json_object_new_string(m->role));
    if (strcmp(m->role, "assistant") == 0 && m->ncalls > 0) {
        /* content is null, not "", beside tool calls: what OpenAI sends. */
        json_object_object_add(o, "content", m->content && *m->content
                               ? json_object_new_string(m->content) : NULL);
        json_object_object_add(o, "tool_calls", openai_calls(m));
        return o;
    }
    if (strcmp(m->role, "tool") == 0)
        json_object_object_add(o, "tool_call_id", provider_wire_string(m->tool_call_id));
    json_object_object_add(o, "content", provider_wire_string(m->content));
    return o;
}

static int openai_build_body(const struct providers_request *req, struct json_object **out,
                             struct am_error *err)
{
    int rc = provider_wire_chat_body(req, openai_message, out, err);

    if (rc != 0)
        return rc;
    if (req->max_tokens > 0)
        json_object_object_add(*out, "max_tokens", json_object_new_int(req->max_tokens));
    return 0;
}

int provider_openai_parse_calls(struct json_object *arr, const char *where, const char *pname,
                                struct providers_response *resp, struct am_error *err)
{
    struct json_object *call, *id, *fn, *name, *args;
    char at[96];
    size_t i, n = json_object_array_length(arr);
    int rc;

    for (i = 0; i < n; i++) {
        call = json_object_array_get_idx(arr, i);
        snprintf(at, sizeof(at), "%s[%zu]", where, i);
        if (!json_object_is_type(call, json_type_object))
            return provider_wire_malformed(err, pname, "%s is not an object", at);
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

static int openai_parse(struct json_object *root, const char *pname,
                        struct providers_response *resp, struct am_error *err)
{
    struct json_object *choices, *choice, *msg, *content, *calls, *refusal, *usage, *model;
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
        provider_wire_append_content(resp, json_object_get_string(content),
                                     strlen(json_object_get_string(content)));
    if (calls && (rc = provider_openai_parse_calls(calls, "choices[0].message.tool_calls",
                                                   pname, resp, err)) != 0)
        return rc;
    if ((rc = provider_wire_field(root, "usage", json_type_object, 0, &usage, "", pname,
                                  err)) < 0
        || (usage && ((rc = provider_wire_tokens(usage, "prompt_tokens", &resp->prompt_tokens,
                                                 "usage", pname, err)) < 0
                      || (rc = provider_wire_tokens(usage, "completion_tokens",
                                                    &resp->completion_tokens, "usage", pname,
                                                    err)) < 0))
        || (rc = provider_wire_field(root, "model", json_type_string, 0, &model, "", pname,
                                     err)) < 0)
        return rc;
    provider_wire_set_model(resp, model);
    return 0;
}

const struct provider_wire provider_openai_wire = {
    .path = "/chat/completions",
    .auth_prefix = "Authorization: Bearer ",
    .headers = NULL,
    .build_body = openai_build_body,
    .parse = openai_parse,
};
