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
    return provider_wire_chat_body(req, openai_message, "max_tokens", out, err);
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

const struct provider_wire provider_openai_wire = {
    .path = "/chat/completions",
    .auth_prefix = "Authorization: Bearer ",
    .headers = NULL,
    .build_body = openai_build_body,
    .parse = openai_parse,
};
