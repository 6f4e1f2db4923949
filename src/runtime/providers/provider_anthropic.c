/*
 * provider_anthropic.c - the Anthropic Messages API.
 *
 * Request: POST {base_url}/messages, "x-api-key: KEY",
 *   "anthropic-version: 2023-06-01",
 *   {"model", "max_tokens" (required: the request's, else 1024),
 *    "system"?: "...", "messages": [{"role":"user"|"assistant",
 *    "content": [blocks]}], "tools"?: [{"name","description","input_schema"}]}
 * Answer: content[] of {"type":"text","text"} and {"type":"tool_use","id",
 *   "name","input":{...}} blocks, usage.input_tokens / output_tokens, model.
 *
 * How our neutral messages map onto it:
 *  - system messages leave the list and are joined into "system";
 *  - an assistant turn becomes a text block (if any text) and one tool_use
 *    block per call, whose "input" is the call's arguments as an object;
 *  - a "tool" message becomes a tool_result block in a user message;
 *  - consecutive messages of the same role are merged into one message
 *    (the API wants user and assistant to alternate), so several tool
 *    results, and a user turn after them, travel together;
 *  - empty text is left out (the API refuses empty text blocks).
 *
 * Owns nothing but the body it builds. No I/O here, no logging and never
 * the key (providers.c adds the auth header); it calls only provider_wire.c
 * and providers.h, never another protocol file. See provider_wire.h.
 */
#include <stdlib.h>
#include <string.h>
#include <json-c/json.h>

#include "lib/buf.h"
#include "lib/error.h"
#include "runtime/providers/provider_wire.h"
#include "runtime/providers/providers.h"

/* Messages being assembled; last_* is the message blocks are merged into. */
struct anth_list {
    struct json_object *messages;    /* the array under construction */
    struct json_object *last_blocks; /* content array of the last message, borrowed */
    const char *last_role;           /* "user", "assistant" or NULL */
};

/* Add block (ownership taken) to a message of role, merging into the last
 * message when it has the same role. */
static void anth_push(struct anth_list *l, const char *role, struct json_object *block)
{
    struct json_object *msg;

    if (l->last_role == NULL || strcmp(l->last_role, role) != 0) {
        msg = json_object_new_object();
        json_object_object_add(msg, "role", json_object_new_string(role));
        l->last_blocks = json_object_new_array();
        json_object_object_add(msg, "content", l->last_blocks);
        json_object_array_add(l->messages, msg);
        l->last_role = role;
    }
    json_object_array_add(l->last_blocks, block);
}

static struct json_object *anth_text(const char *text)
{
    struct json_object *b = json_object_new_object();

    json_object_object_add(b, "type", json_object_new_string("text"));
    json_object_object_add(b, "text", json_object_new_string(text));
    return b;
}

static void anth_message(struct anth_list *l, const struct providers_message *m)
{
    struct json_object *b;
    size_t i;

    if (strcmp(m->role, "tool") == 0) {
        b = json_object_new_object();
        json_object_object_add(b, "type", json_object_new_string("tool_result"));
        json_object_object_add(b, "tool_use_id", provider_wire_string(m->tool_call_id));
        json_object_object_add(b, "content", provider_wire_string(m->content));
        anth_push(l, "user", b);
        return;
    }
    if (m->content && *m->content)
        anth_push(l, m->role, anth_text(m->content));
    if (strcmp(m->role, "assistant") != 0)
        return;
    for (i = 0; i < m->ncalls; i++) {
        b = json_object_new_object();
        json_object_object_add(b, "type", json_object_new_string("tool_use"));
        json_object_object_add(b, "id", json_object_new_string(m->calls[i].id));
        json_object_object_add(b, "name", json_object_new_string(m->calls[i].name));
        json_object_object_add(b, "input", provider_wire_args_object(m->calls[i].arguments));
        anth_push(l, "assistant", b);
    }
}

/* The system text: every system message, in order, blank-line separated.
 * NULL if there is none; caller frees. */
static char *anth_system(const struct providers_request *req)
{
    struct buf sys = {0};
    size_t i;

    for (i = 0; i < req->nmessages; i++) {
        const struct providers_message *m = &req->messages[i];

        if (strcmp(m->role, "system") != 0 || m->content == NULL || *m->content == '\0')
            continue;
        if (sys.n)
            buf_puts(&sys, "\n\n");
        buf_puts(&sys, m->content);
    }
    return sys.n ? buf_take(&sys) : NULL;
}

static int anth_build_body(const struct providers_request *req, struct json_object **out,
                           struct am_error *err)
{
    struct anth_list l = {0};
    struct json_object *body, *tools = NULL;
    char *sys;
    size_t i;
    int rc;

    *out = NULL;
    if ((rc = provider_wire_tools(req, PROVIDER_WIRE_TOOLS_ANTHROPIC, &tools, err)) != 0)
        return rc;
    body = json_object_new_object();
    json_object_object_add(body, "model", json_object_new_string(req->model));
    json_object_object_add(body, "max_tokens",
                           json_object_new_int(req->max_tokens > 0 ? req->max_tokens
                                               : PROVIDER_WIRE_DEFAULT_MAX_TOKENS));
    if ((sys = anth_system(req)) != NULL) {
        json_object_object_add(body, "system", json_object_new_string(sys));
        free(sys);
    }
    l.messages = json_object_new_array();
    for (i = 0; i < req->nmessages; i++)
        if (strcmp(req->messages[i].role, "system") != 0)
            anth_message(&l, &req->messages[i]);
    json_object_object_add(body, "messages", l.messages);
    if (tools)
        json_object_object_add(body, "tools", tools);
    if (req->sink != NULL)
        json_object_object_add(body, "stream", json_object_new_boolean(1));
    *out = body;
    return 0;
}

/* One content block of the answer. Unknown block types (thinking, ...)
 * are skipped: they carry nothing we use. */
static int anth_block(struct json_object *content, size_t i, const char *pname,
                      struct providers_response *resp, struct am_error *err)
{
    struct json_object *b, *type, *text, *id, *name, *input;
    const char *t;
    char at[48];
    int rc;

    if ((rc = provider_wire_item(content, i, "content", at, sizeof(at), &b, pname, err)) != 0)
        return rc;
    if ((rc = provider_wire_field(b, "type", json_type_string, 1, &type, at, pname, err)) < 0)
        return rc;
    t = json_object_get_string(type);
    if (strcmp(t, "text") == 0) {
        if ((rc = provider_wire_field(b, "text", json_type_string, 1, &text, at, pname,
                                      err)) < 0)
            return rc;
        provider_wire_append_content(resp, text);
        return 0;
    }
    if (strcmp(t, "tool_use") != 0)
        return 0;
    if ((rc = provider_wire_field(b, "id", json_type_string, 1, &id, at, pname, err)) < 0
        || (rc = provider_wire_field(b, "name", json_type_string, 1, &name, at, pname,
                                     err)) < 0
        || (rc = provider_wire_field(b, "input", json_type_object, 1, &input, at, pname,
                                     err)) < 0)
        return rc;
    return provider_wire_add_call(resp, json_object_get_string(id),
                                  json_object_get_string(name),
                                  provider_wire_json_text(input), at, pname, err);
}

static int anth_parse(struct json_object *root, const char *pname,
                      struct providers_response *resp, struct am_error *err)
{
    struct json_object *content;
    size_t i, n;
    int rc;

    if ((rc = provider_wire_field(root, "content", json_type_array, 1, &content, "", pname,
                                  err)) < 0)
        return rc;
    n = json_object_array_length(content);
    for (i = 0; i < n; i++)
        if ((rc = anth_block(content, i, pname, resp, err)) != 0)
            return rc;
    return provider_wire_usage_model(root, "usage", "input_tokens", "output_tokens", pname,
                                     resp, err);
}

/* content_block_start: a text block's first text, or a tool_use block's
 * id and name (its input follows in input_json_delta pieces; an input
 * given whole here is taken as is). */
static int anth_stream_block(struct provider_stream *s, struct json_object *root,
                             struct am_error *err)
{
    struct json_object *b = provider_stream_path(root, "content_block");
    struct json_object *type = provider_stream_path(b, "type"), *input;
    struct provider_stream_slot *slot;

    if (!json_object_is_type(type, json_type_string))
        return provider_wire_malformed(err, s->pname, "content_block without a type");
    if (strcmp(json_object_get_string(type), "text") == 0)
        return provider_stream_text(s, provider_stream_path(b, "text"), err);
    if (strcmp(json_object_get_string(type), "tool_use") != 0)
        return 0;
    if ((slot = provider_stream_slot(s, provider_stream_path(root, "index"), err)) == NULL)
        return AM_EPROVIDER;
    input = provider_stream_path(b, "input");
    if (json_object_is_type(input, json_type_object) && json_object_object_length(input) > 0) {
        struct json_object *text = json_object_new_string(provider_wire_json_text(input));
        int rc = provider_stream_slot_fill(s, slot, provider_stream_path(b, "id"),
                                           provider_stream_path(b, "name"), text, err);
        json_object_put(text);
        return rc;
    }
    return provider_stream_slot_fill(s, slot, provider_stream_path(b, "id"),
                                     provider_stream_path(b, "name"), NULL, err);
}

/* The events: message_start (model, input tokens), content_block_start,
 * content_block_delta (text_delta, input_json_delta), message_delta
 * (output tokens), message_stop (the end), error; ping and the rest
 * carry nothing we use. */
static int anth_stream_event(struct provider_stream *s, const char *event,
                             struct json_object *root, struct am_error *err)
{
    struct json_object *type = provider_stream_path(root, "type"), *usage, *d;
    struct provider_stream_slot *slot;
    const char *t;

    (void)event;
    if (!json_object_is_type(type, json_type_string))
        return provider_wire_malformed(err, s->pname, "stream event without a type");
    t = json_object_get_string(type);
    if (strcmp(t, "message_start") == 0) {
        provider_wire_set_model(&s->resp, provider_stream_path(root, "message.model"));
        usage = provider_stream_path(root, "message.usage");
        return usage ? provider_wire_counts(usage, "message.usage", "input_tokens",
                                            "output_tokens", s->pname, &s->resp, err) : 0;
    }
    if (strcmp(t, "content_block_start") == 0)
        return anth_stream_block(s, root, err);
    if (strcmp(t, "content_block_delta") == 0) {
        d = provider_stream_path(root, "delta");
        type = provider_stream_path(d, "type");
        if (!json_object_is_type(type, json_type_string))
            return provider_wire_malformed(err, s->pname, "delta without a type");
        if (strcmp(json_object_get_string(type), "text_delta") == 0)
            return provider_stream_text(s, provider_stream_path(d, "text"), err);
        if (strcmp(json_object_get_string(type), "input_json_delta") != 0)
            return 0;
        if ((slot = provider_stream_slot(s, provider_stream_path(root, "index"), err)) == NULL)
            return AM_EPROVIDER;
        return provider_stream_slot_fill(s, slot, NULL, NULL,
                                         provider_stream_path(d, "partial_json"), err);
    }
    if (strcmp(t, "message_delta") == 0) {
        usage = provider_stream_path(root, "usage");
        return usage ? provider_wire_counts(usage, "usage", "input_tokens", "output_tokens",
                                            s->pname, &s->resp, err) : 0;
    }
    if (strcmp(t, "message_stop") == 0)
        s->done = 1;
    else if (strcmp(t, "error") == 0)
        return provider_stream_error(s, provider_stream_path(root, "error.message"), err);
    return 0;
}

static const char *const anth_headers[] = { "anthropic-version: 2023-06-01", NULL };

const struct provider_wire provider_anthropic_wire = {
    .path = "/messages",
    .auth_prefix = "x-api-key: ",
    .headers = anth_headers,
    .build_body = anth_build_body,
    .parse = anth_parse,
    .stream_event = anth_stream_event,
    .args_object = 1,
};
