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
 * No I/O here and no key: see provider_wire.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <json-c/json.h>

#include "lib/error.h"
#include "runtime/providers/provider_wire.h"
#include "runtime/providers/providers.h"
#include "lib/util.h"

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
    char *sys = NULL;
    size_t len = 0, i, n;

    for (i = 0; i < req->nmessages; i++) {
        const struct providers_message *m = &req->messages[i];

        if (strcmp(m->role, "system") != 0 || m->content == NULL || *m->content == '\0')
            continue;
        n = strlen(m->content);
        sys = xrealloc(sys, len + n + 3);
        if (len) {
            memcpy(sys + len, "\n\n", 2);
            len += 2;
        }
        memcpy(sys + len, m->content, n + 1);
        len += n;
    }
    return sys;
}

static int anth_tools(const struct providers_request *req, struct json_object **out,
                      struct am_error *err)
{
    struct json_object *arr, *t, *schema;
    size_t i;
    int rc;

    *out = NULL;
    if (req->ntools == 0)
        return 0;
    arr = json_object_new_array();
    for (i = 0; i < req->ntools; i++) {
        rc = req->tools[i].name && *req->tools[i].name
             ? provider_wire_tool_schema(&req->tools[i], &schema, err)
             : error_set(err, AM_EINTERNAL, "tool %zu has no name", i);
        if (rc != 0) {
            json_object_put(arr);
            return rc;
        }
        t = json_object_new_object();
        json_object_object_add(t, "name", json_object_new_string(req->tools[i].name));
        if (req->tools[i].description)
            json_object_object_add(t, "description",
                                   json_object_new_string(req->tools[i].description));
        json_object_object_add(t, "input_schema", schema);
        json_object_array_add(arr, t);
    }
    *out = arr;
    return 0;
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
    if ((rc = anth_tools(req, &tools, err)) != 0)
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
    *out = body;
    return 0;
}

/* One content block of the answer. Unknown block types (thinking, ...)
 * are skipped: they carry nothing we use. */
static int anth_block(struct json_object *b, size_t i, const char *pname,
                      struct providers_response *resp, struct am_error *err)
{
    struct json_object *type, *text, *id, *name, *input;
    const char *t;
    char at[48];
    int rc;

    snprintf(at, sizeof(at), "content[%zu]", i);
    if (!json_object_is_type(b, json_type_object))
        return provider_wire_malformed(err, pname, "%s is not an object", at);
    if ((rc = provider_wire_field(b, "type", json_type_string, 1, &type, at, pname, err)) < 0)
        return rc;
    t = json_object_get_string(type);
    if (strcmp(t, "text") == 0) {
        if ((rc = provider_wire_field(b, "text", json_type_string, 1, &text, at, pname,
                                      err)) < 0)
            return rc;
        provider_wire_append_content(resp, json_object_get_string(text),
                                     strlen(json_object_get_string(text)));
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
                                  json_object_to_json_string_ext(input, JSON_C_TO_STRING_PLAIN
                                                  | JSON_C_TO_STRING_NOSLASHESCAPE),
                                  at, pname, err);
}

static int anth_parse(struct json_object *root, const char *pname,
                      struct providers_response *resp, struct am_error *err)
{
    struct json_object *content, *usage, *model;
    size_t i, n;
    int rc;

    if ((rc = provider_wire_field(root, "content", json_type_array, 1, &content, "", pname,
                                  err)) < 0)
        return rc;
    n = json_object_array_length(content);
    for (i = 0; i < n; i++)
        if ((rc = anth_block(json_object_array_get_idx(content, i), i, pname, resp, err)) != 0)
            return rc;
    if ((rc = provider_wire_field(root, "usage", json_type_object, 0, &usage, "", pname,
                                  err)) < 0
        || (usage && ((rc = provider_wire_tokens(usage, "input_tokens", &resp->prompt_tokens,
                                                 "usage", pname, err)) < 0
                      || (rc = provider_wire_tokens(usage, "output_tokens",
                                                    &resp->completion_tokens, "usage", pname,
                                                    err)) < 0))
        || (rc = provider_wire_field(root, "model", json_type_string, 0, &model, "", pname,
                                     err)) < 0)
        return rc;
    provider_wire_set_model(resp, model);
    return 0;
}

static const char *const anth_headers[] = { "anthropic-version: 2023-06-01", NULL };

const struct provider_wire provider_anthropic_wire = {
    .path = "/messages",
    .auth_prefix = "x-api-key: ",
    .headers = anth_headers,
    .build_body = anth_build_body,
    .parse = anth_parse,
};
