/*
 * provider_wire.h - the internal interface between providers.c (dispatch,
 * libcurl transport), the per-protocol files provider_openai.c,
 * provider_anthropic.c, provider_cohere.c, provider_ollama.c and
 * provider_echo.c, and provider_wire.c, the one home of what two or more
 * of them share.
 *
 * Only the providers folder includes this header. A protocol is a table
 * (struct provider_wire) of the request path, the headers it needs and two
 * functions: one that builds the JSON body from a request, one that reads a
 * provider's answer into a response. Neither does I/O, neither logs, and
 * neither ever sees the API key: providers.c adds the auth header itself.
 * A protocol file calls only the functions declared here (provider_wire.c)
 * and providers.h, never a sibling protocol file nor providers.c's own
 * business.
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

/* Tool calls accepted in one answer. */
#define PROVIDER_WIRE_MAX_CALLS 64

/* Bytes read from a provider in one answer, streamed or not. */
#define PROVIDER_WIRE_MAX_ANSWER (8u * 1024u * 1024u)

struct provider_stream;

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
    /* Read one event of a streamed answer (req->sink set): event is the
     * SSE event name ("" when none, and for NDJSON), root the parsed data
     * (borrowed, an object). Text goes through provider_stream_text, tool
     * calls into provider_stream_slot or resp, the end is marked with
     * s->done. Returns 0, AM_EPROVIDER (malformed, or an error event) or
     * AM_ECANCELLED (the sink said stop). */
    int (*stream_event)(struct provider_stream *s, const char *event,
                        struct json_object *root, struct am_error *err);
    int ndjson;                    /* the stream is NDJSON lines, else SSE */
    int args_object;               /* streamed arguments are re-serialised as an object */
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

/* ---- reading a streamed answer (provider_stream.c) ---- */

/* A tool call being streamed, by the index the protocol gives it. */
struct provider_stream_slot {
    int used;
    char id[96];
    char name[64];
    char *args;                    /* the argument text so far, malloc'd or NULL */
    size_t nargs;
};

/* What a protocol's stream_event reads and fills. */
struct provider_stream {
    const struct provider_wire *wire;
    const char *pname;
    const struct providers_sink *sink;    /* may be NULL (tests) */
    struct providers_response resp;       /* content, calls, usage, model so far */
    size_t ncontent, capcontent;          /* resp.content's length and capacity */
    struct provider_stream_slot slots[PROVIDER_WIRE_MAX_CALLS];
    int done;                             /* the protocol's last event arrived */
    /* framing: the line being read, the SSE event being gathered */
    char *line;
    size_t nline, capline;
    char event[64];
    char *data;
    size_t ndata, capdata;
    size_t total;                         /* bytes fed */
    int rc;                               /* the first error returned; sticky */
};

/* Append text (a JSON string, up to its first NUL; anything else is
 * ignored) to the answer and hand it to the sink. Returns 0, or
 * AM_ECANCELLED with err filled when the sink says stop. */
int provider_stream_text(struct provider_stream *s, struct json_object *text,
                         struct am_error *err);

/* The slot of tool call index idx (a JSON integer in [0, MAX_CALLS)),
 * marked used. Returns it, or NULL with AM_EPROVIDER in err. */
struct provider_stream_slot *provider_stream_slot(struct provider_stream *s,
                                                  struct json_object *idx,
                                                  struct am_error *err);

/* Copy id and name (JSON strings, either may be NULL) into the slot and
 * append args (a JSON string or NULL) to its arguments. Returns 0 or
 * AM_EPROVIDER (id or name too long). */
int provider_stream_slot_fill(struct provider_stream *s, struct provider_stream_slot *slot,
                              struct json_object *id, struct json_object *name,
                              struct json_object *args, struct am_error *err);

/* The value at a dotted path of objects ("delta.message.content"),
 * borrowed, or NULL when a step is missing or not an object. */
struct json_object *provider_stream_path(struct json_object *o, const char *path);

/* An error event's message, as AM_EPROVIDER "provider <pname>: <msg>". */
int provider_stream_error(struct provider_stream *s, struct json_object *msg,
                          struct am_error *err);

/* ---- reading an answer (provider_wire.c) ---- */

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

/* Element i of the array arr, which must be an object: writes its name
 * "<where>[i]" into at (atcap bytes) for later messages and sets *out
 * (borrowed). Returns 0 or AM_EPROVIDER ("<where>[i] is not an object"). */
int provider_wire_item(struct json_object *arr, size_t i, const char *where, char *at,
                       size_t atcap, struct json_object **out, const char *pname,
                       struct am_error *err);

/* A token count: an optional integer field in [0, INT_MAX]. *out is left
 * alone when the field is absent. Returns 0 or AM_EPROVIDER. */
int provider_wire_tokens(struct json_object *obj, const char *key, int *out,
                         const char *where, const char *pname, struct am_error *err);

/* The two token counts prompt_key and completion_key of the object counts
 * (named where in messages) into resp->prompt_tokens and
 * completion_tokens, each left alone when absent. Returns 0 or
 * AM_EPROVIDER. */
int provider_wire_counts(struct json_object *counts, const char *where,
                         const char *prompt_key, const char *completion_key,
                         const char *pname, struct providers_response *resp,
                         struct am_error *err);

/* The tail every answer but Cohere's ends with: the token counts
 * prompt_key and completion_key (into resp->prompt_tokens and
 * completion_tokens) inside the optional object root.<usage>, or at the
 * top level when usage is NULL; then the optional string root.model into
 * resp->model. Absent fields leave resp alone. Returns 0 or AM_EPROVIDER
 * (a field of the wrong type, a count out of range). */
int provider_wire_usage_model(struct json_object *root, const char *usage,
                              const char *prompt_key, const char *completion_key,
                              const char *pname, struct providers_response *resp,
                              struct am_error *err);

/* The reply message of the Cohere and Ollama answers: root.message (a
 * required object), its optional content (of type content_type) and
 * tool_calls (an array), borrowed into *content and *calls (NULL when
 * absent). Returns 0, or AM_EPROVIDER when a field has the wrong type or
 * the message has neither. */
int provider_wire_reply_message(struct json_object *root, json_type content_type,
                                struct json_object **content, struct json_object **calls,
                                const char *pname, struct am_error *err);

/* Append a tool call to resp. args is JSON text (copied). id and name
 * must be non-empty and fit their fields, and resp may hold at most
 * PROVIDER_WIRE_MAX_CALLS calls. Returns 0 or AM_EPROVIDER. */
int provider_wire_add_call(struct providers_response *resp, const char *id, const char *name,
                           const char *args, const char *where, const char *pname,
                           struct am_error *err);

/* OpenAI-form tool_calls array ([{id, type, function: {name, arguments:
 * "<json text>"}}]), shared by the OpenAI and Cohere parsers: each call is
 * appended to resp. where names the array in messages
 * ("choices[0].message.tool_calls"). Returns 0 or AM_EPROVIDER. */
int provider_wire_parse_calls(struct json_object *arr, const char *where, const char *pname,
                              struct providers_response *resp, struct am_error *err);

/* Append the JSON string text (up to its first NUL) to resp->content,
 * which is NULL or malloc'd. */
void provider_wire_append_content(struct providers_response *resp, struct json_object *text);

/* Copy a reported model name into resp->model (truncated to fit); model
 * may be NULL or not a string, which leaves resp->model alone. */
void provider_wire_set_model(struct providers_response *resp, struct json_object *model);

/* Free what resp holds and zero it; resp may be NULL. What
 * providers_response_free does, for the protocol files. */
void provider_wire_response_free(struct providers_response *resp);

/* ---- JSON text (provider_wire.c) ---- */

/* Parse JSON text with the depth limit. Returns a new object (caller puts)
 * or NULL when text is not exactly one JSON value. A JSON null also gives
 * NULL; use provider_wire_parse_ex when that matters. */
struct json_object *provider_wire_parse_text(const char *text, size_t len);

/* Same, telling null apart from failure: returns 0 and *out (may be NULL
 * for a JSON null), or -1 with a short reason in why (static text:
 * "empty", "truncated", "not JSON", "too deeply nested", "trailing data"). */
int provider_wire_parse_ex(const char *text, size_t len, struct json_object **out,
                           const char **why);

/* obj as compact JSON text with "/" left unescaped, the form every body
 * and every tool call's arguments take. Borrowed: valid until obj is put
 * or serialised again. */
const char *provider_wire_json_text(struct json_object *obj);

/* ---- building a request body (provider_wire.c) ---- */

/* New JSON string from a C string that may be NULL (gives ""). */
struct json_object *provider_wire_string(const char *s);

/* Tool call arguments (JSON text) as an object, for the protocols that
 * send arguments as an object (Anthropic input, Ollama arguments). Text
 * that is not a JSON object becomes {}. Never NULL; caller puts. */
struct json_object *provider_wire_args_object(const char *args);

/* One tool's parameters schema as a new object ({"type":"object",
 * "properties":{}} when the tool has none). Returns 0 or AM_EINTERNAL. */
int provider_wire_tool_schema(const struct providers_tool *tool, struct json_object **out,
                              struct am_error *err);

/* The tools array of a request, in one of two shapes:
 *   FUNCTION  [{type: "function", function: {name, description?,
 *             parameters}}] (OpenAI, Cohere, Ollama);
 *   ANTHROPIC [{name, description?, input_schema}].
 * Sets *out = NULL when the request offers no tools. Returns 0 and a new
 * array (caller puts), or AM_EINTERNAL (a tool without a name, or whose
 * parameters are not a JSON object). */
enum provider_wire_tool_form { PROVIDER_WIRE_TOOLS_FUNCTION, PROVIDER_WIRE_TOOLS_ANTHROPIC };
int provider_wire_tools(const struct providers_request *req, enum provider_wire_tool_form form,
                        struct json_object **out, struct am_error *err);

/* The chat body the OpenAI-shaped protocols share (OpenAI, Cohere,
 * Ollama): {"model", "messages": [message(m) for each message], "tools"?,
 * <max_tokens_key>?}; max_tokens_key (NULL for none) is added when the
 * request sets max_tokens. Each protocol adds its own fields after.
 * Returns 0 and a new object in *out, or AM_EINTERNAL (a bad tool schema). */
typedef struct json_object *(*provider_wire_message_fn)(const struct providers_message *m);
int provider_wire_chat_body(const struct providers_request *req,
                            provider_wire_message_fn message, const char *max_tokens_key,
                            struct json_object **out, struct am_error *err);

/* One message in the OpenAI form: {"role", "content"} | {"role":"tool",
 * "tool_call_id", "content"} | an assistant turn with calls: {"role",
 * <text>, "tool_calls": [{id, type: "function", function: {name,
 * arguments: "<json text>"}}]}. With plan_key NULL (OpenAI) the turn's text
 * goes in "content", null when empty; otherwise (Cohere: "tool_plan") in
 * plan_key, left out when empty. Returns a new object (caller puts). */
struct json_object *provider_wire_openai_message(const struct providers_message *m,
                                                 const char *plan_key);

#endif
