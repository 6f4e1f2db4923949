/*
 * provider_ollama.c - Ollama's /api/chat, non-streaming.
 *
 * Request: POST {base_url}/api/chat (base_url is the server root, e.g.
 *   http://127.0.0.1:11434), no auth header,
 *   {"model", "messages": [{"role","content"} | {"role":"assistant",
 *    "content","tool_calls":[{"function":{"name","arguments":{...}}}]} |
 *    {"role":"tool","content","tool_name"}], "stream": false,
 *    "tools"?: [OpenAI function form], "options"?: {"num_predict"}}
 * Answer: message.content, message.tool_calls[] with arguments as an
 *   object and no ids (we make "call_<n>", n from 1 within the answer),
 *   prompt_eval_count / eval_count, model. An {"error": "..."} body is
 *   reported as the provider's error.
 *
 * Owns nothing but the body it builds. No I/O here, no logging, and no
 * key (Ollama takes none); it calls only provider_wire.c and providers.h,
 * never another protocol file. See provider_wire.h.
 */
#include <stdio.h>
#include <string.h>
#include <json-c/json.h>

#include "lib/error.h"
#include "runtime/providers/provider_wire.h"
#include "runtime/providers/providers.h"

static struct json_object *ollama_message(const struct providers_message *m)
{
    struct json_object *o = json_object_new_object(), *arr, *call, *fn;
    size_t i;

    json_object_object_add(o, "role", json_object_new_string(m->role));
    json_object_object_add(o, "content", provider_wire_string(m->content));
    if (strcmp(m->role, "tool") == 0 && m->tool_name)
        json_object_object_add(o, "tool_name", json_object_new_string(m->tool_name));
    if (strcmp(m->role, "assistant") != 0 || m->ncalls == 0)
        return o;
    arr = json_object_new_array();
    for (i = 0; i < m->ncalls; i++) {
        fn = json_object_new_object();
        json_object_object_add(fn, "name", json_object_new_string(m->calls[i].name));
        json_object_object_add(fn, "arguments",
                               provider_wire_args_object(m->calls[i].arguments));
        call = json_object_new_object();
        json_object_object_add(call, "function", fn);
        json_object_array_add(arr, call);
    }
    json_object_object_add(o, "tool_calls", arr);
    return o;
}

static int ollama_build_body(const struct providers_request *req, struct json_object **out,
                             struct am_error *err)
{
    int rc = provider_wire_chat_body(req, ollama_message, NULL, out, err);

    if (rc != 0)
        return rc;
    json_object_object_add(*out, "stream", json_object_new_boolean(req->sink != NULL));
    if (req->max_tokens > 0) {
        struct json_object *opts = json_object_new_object();
        json_object_object_add(opts, "num_predict", json_object_new_int(req->max_tokens));
        json_object_object_add(*out, "options", opts);
    }
    return 0;
}

static int ollama_calls(struct json_object *arr, const char *pname,
                        struct providers_response *resp, struct am_error *err)
{
    struct json_object *call, *fn, *name, *args, *id;
    size_t i, n = json_object_array_length(arr);
    char at[64], synth[32];
    const char *text;
    int rc;

    for (i = 0; i < n; i++) {
        if ((rc = provider_wire_item(arr, i, "message.tool_calls", at, sizeof(at), &call, pname,
                                     err)) != 0)
            return rc;
        if ((rc = provider_wire_field(call, "function", json_type_object, 1, &fn, at, pname,
                                      err)) < 0
            || (rc = provider_wire_field(call, "id", json_type_string, 0, &id, at, pname,
                                         err)) < 0)
            return rc;
        snprintf(at, sizeof(at), "message.tool_calls[%zu].function", i);
        if ((rc = provider_wire_field(fn, "name", json_type_string, 1, &name, at, pname,
                                      err)) < 0)
            return rc;
        if (!json_object_object_get_ex(fn, "arguments", &args) || args == NULL)
            text = "{}";
        else if (json_object_is_type(args, json_type_object))
            text = provider_wire_json_text(args);
        else if (json_object_is_type(args, json_type_string))
            text = json_object_get_string(args);   /* some builds send JSON text */
        else
            return provider_wire_malformed(err, pname, "%s.arguments is not an object", at);
        snprintf(synth, sizeof(synth), "call_%zu", resp->ncalls + 1);
        if ((rc = provider_wire_add_call(resp, id ? json_object_get_string(id) : synth,
                                         json_object_get_string(name), text, at, pname,
                                         err)) != 0)
            return rc;
    }
    return 0;
}

static int ollama_parse(struct json_object *root, const char *pname,
                        struct providers_response *resp, struct am_error *err)
{
    struct json_object *content, *calls, *e;
    int rc;

    if (json_object_object_get_ex(root, "error", &e) && json_object_is_type(e, json_type_string))
        return error_set(err, AM_EPROVIDER, "provider %s: %.160s", pname,
                         json_object_get_string(e));
    if ((rc = provider_wire_reply_message(root, json_type_string, &content, &calls, pname,
                                          err)) != 0)
        return rc;
    if (content)
        provider_wire_append_content(resp, content);
    if (calls && (rc = ollama_calls(calls, pname, resp, err)) != 0)
        return rc;
    return provider_wire_usage_model(root, NULL, "prompt_eval_count", "eval_count", pname, resp,
                                     err);
}

/* One NDJSON line: {"error"} is the provider's error; else the model,
 * message.content (a piece of the text), message.tool_calls (whole calls,
 * numbered on from the ones before), and with "done": true the counts and
 * the end. */
static int ollama_stream_event(struct provider_stream *s, const char *event,
                               struct json_object *root, struct am_error *err)
{
    struct json_object *e, *msg, *calls, *done;
    int rc;

    (void)event;
    if (json_object_object_get_ex(root, "error", &e) && e != NULL)
        return provider_stream_error(s, e, err);
    provider_wire_set_model(&s->resp, provider_stream_path(root, "model"));
    if ((msg = provider_stream_path(root, "message")) != NULL) {
        if ((rc = provider_stream_text(s, provider_stream_path(msg, "content"), err)) != 0)
            return rc;
        calls = provider_stream_path(msg, "tool_calls");
        if (json_object_is_type(calls, json_type_array) &&
            (rc = ollama_calls(calls, s->pname, &s->resp, err)) != 0)
            return rc;
    }
    done = provider_stream_path(root, "done");
    if (!json_object_is_type(done, json_type_boolean) || !json_object_get_boolean(done))
        return 0;
    s->done = 1;
    return provider_wire_usage_model(root, NULL, "prompt_eval_count", "eval_count", s->pname,
                                     &s->resp, err);
}

const struct provider_wire provider_ollama_wire = {
    .path = "/api/chat",
    .auth_prefix = NULL,
    .headers = NULL,
    .build_body = ollama_build_body,
    .parse = ollama_parse,
    .stream_event = ollama_stream_event,
    .ndjson = 1,
};
