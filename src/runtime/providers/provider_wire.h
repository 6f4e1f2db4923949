/*
 * provider_wire.h - the internal interface between providers.c (dispatch,
 * libcurl transport, shared JSON helpers) and the per-protocol files
 * provider_openai.c, provider_anthropic.c, provider_cohere.c,
 * provider_ollama.c and provider_echo.c.
 *
 * Only the providers module includes this header. A protocol is a table
 * (struct provider_wire) of the request path, the headers it needs and two
 * functions: one that builds the JSON body from a request, one that reads a
 * provider's answer into a response. Neither does I/O, neither logs, and
 * neither ever sees the API key: providers.c adds the auth header itself.
 *
 * Ownership: build_body returns a new json_object the caller puts; parse
 * borrows the parsed answer and fills resp (content, calls malloc'd; the
 * caller frees resp with providers_response_free on success and failure).
 */
#ifndef AM_PROVIDER_WIRE_H
#define AM_PROVIDER_WIRE_H

#include <stdarg.h>
#include <stddef.h>
#include <json-c/json.h>
#include "lib/error.h"
#include "runtime/providers/providers.h"

/* JSON nesting accepted in a provider's answer or in tool arguments. */
#define PROVIDER_WIRE_MAX_DEPTH 64

/* Default max_tokens where a protocol requires one (Anthropic). */
#define PROVIDER_WIRE_DEFAULT_MAX_TOKENS 1024

struct provider_wire {
    const char *path;              /* appended to base_url, e.g. "/chat/completions" */
    const char *auth_prefix;       /* header line before the key, NULL = no auth */
    const char *const *headers;    /* extra header lines, NULL-terminated, or NULL */
    /* Build the request body. Returns 0 and *out (caller puts), or an
     * AM_E* code with err filled (a bad tool schema, an unknown role). */
    int (*build_body)(const struct providers_request *req, struct json_object **out,
                      struct am_error *err);
    /* Read a 2xx answer. root is borrowed. pname names the provider in
     * messages. Returns 0 or AM_EPROVIDER ("malformed answer from ..."). */
    int (*parse)(struct json_object *root, const char *pname,
                 struct providers_response *resp, struct am_error *err);
};

extern const struct provider_wire provider_openai_wire;     /* openai, groq, mistral */
extern const struct provider_wire provider_anthropic_wire;
extern const struct provider_wire provider_cohere_wire;
extern const struct provider_wire provider_ollama_wire;
/* echo has no wire of its own: its body and answer use the OpenAI shape. */

/* The echo provider's whole call: answers from the request alone, no I/O.
 * Same contract as providers_chat. Documented in provider_echo.c. */
int provider_echo_chat(const struct providers_request *req, struct providers_response *resp,
                       struct am_error *err);

/* OpenAI-form tool_calls array ([{id, type, function: {name, arguments:
 * "<json text>"}}]), shared by the OpenAI and Cohere parsers. where names
 * the array in messages ("choices[0].message.tool_calls"). */
int provider_openai_parse_calls(struct json_object *arr, const char *where, const char *pname,
                                struct providers_response *resp, struct am_error *err);

/* ---- shared helpers, defined in providers.c ---- */

/* Fill err with AM_EPROVIDER "malformed answer from provider <pname>: <fmt>"
 * and return AM_EPROVIDER. */
int provider_wire_malformed(struct am_error *err, const char *pname, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Look up key in obj (an object) and check its type.
 * Returns 1 and *out (borrowed) when present with type t; 0 when absent or
 * null and !required (*out = NULL); AM_EPROVIDER otherwise. where names obj
 * in messages ("choices[0].message"); "" for the top level. */
int provider_wire_field(struct json_object *obj, const char *key, json_type t, int required,
                        struct json_object **out, const char *where, const char *pname,
                        struct am_error *err);

/* A token count: an optional integer field in [0, INT_MAX]. *out is left
 * alone when the field is absent. Returns 0 or AM_EPROVIDER. */
int provider_wire_tokens(struct json_object *obj, const char *key, int *out,
                         const char *where, const char *pname, struct am_error *err);

/* Append a tool call to resp. args is JSON text (copied). id and name
 * must be non-empty and fit their fields. Returns 0 or
 * AM_EPROVIDER. */
int provider_wire_add_call(struct providers_response *resp, const char *id, const char *name,
                           const char *args, const char *where, const char *pname,
                           struct am_error *err);

/* Append text (len bytes) to resp->content. */
void provider_wire_append_content(struct providers_response *resp, const char *text,
                                  size_t len);

/* Copy a reported model name into resp->model (truncated to fit). */
void provider_wire_set_model(struct providers_response *resp, struct json_object *model);

/* Parse JSON text with the depth limit. Returns a new object (caller puts)
 * or NULL when text is not exactly one JSON value. A JSON null also gives
 * NULL; use provider_wire_parse_ex when that matters. */
struct json_object *provider_wire_parse_text(const char *text, size_t len);

/* Same, telling null apart from failure: returns 0 and *out (may be NULL
 * for a JSON null), or -1 with a short reason in why (static text:
 * "empty", "truncated", "not JSON", "too deeply nested", "trailing data"). */
int provider_wire_parse_ex(const char *text, size_t len, struct json_object **out,
                           const char **why);

/* Tool call arguments (JSON text) as an object, for the protocols that
 * send arguments as an object (Anthropic input, Ollama arguments). Text
 * that is not a JSON object becomes {}. Never NULL; caller puts. */
struct json_object *provider_wire_args_object(const char *args);

/* The OpenAI function-form tools array [{type: "function", function:
 * {name, description, parameters}}] shared by OpenAI, Cohere and Ollama.
 * Sets *out = NULL when the request offers no tools. Returns 0 or
 * AM_EINTERNAL (a tool whose parameters are not a JSON object). */
int provider_wire_function_tools(const struct providers_request *req, struct json_object **out,
                                 struct am_error *err);

/* The chat body the OpenAI-shaped protocols share (OpenAI, Cohere,
 * Ollama): {"model", "messages": [message(m) for each message], "tools"?}.
 * Each protocol adds its own fields (max_tokens, stream, options) after.
 * Returns 0 and a new object in *out, or AM_EINTERNAL (a bad tool schema). */
typedef struct json_object *(*provider_wire_message_fn)(const struct providers_message *m);
int provider_wire_chat_body(const struct providers_request *req,
                            provider_wire_message_fn message, struct json_object **out,
                            struct am_error *err);

/* One tool's parameters schema as a new object ({"type":"object",
 * "properties":{}} when the tool has none). Returns 0 or AM_EINTERNAL. */
int provider_wire_tool_schema(const struct providers_tool *tool, struct json_object **out,
                              struct am_error *err);

/* New JSON string from a C string that may be NULL (gives ""). */
struct json_object *provider_wire_string(const char *s);

#endif
