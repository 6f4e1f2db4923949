/*
 * tools.h - the built-in tools an agent may call: calculator, datetime,
 * json_parser, http_request, web_search, text_summarizer, translator,
 * email_sender, file_reader.
 *
 * A tool call takes the model's JSON arguments and always produces a JSON
 * result string: {"result": …} on success or {"error": "…"} when the tool
 * refuses or fails, which goes back to the model as the tool message. A
 * tool error is never a request error. Tools never log.
 */
#ifndef AM_TOOLS_H
#define AM_TOOLS_H

#include <stddef.h>
#include <json-c/json.h>
#include "lib/error.h"

enum tools_id {
    TOOL_CALCULATOR = 0,
    TOOL_DATETIME,
    TOOL_JSON_PARSER,
    TOOL_HTTP_REQUEST,
    TOOL_WEB_SEARCH,
    TOOL_TEXT_SUMMARIZER,
    TOOL_TRANSLATOR,
    TOOL_EMAIL_SENDER,
    TOOL_FILE_READER,
    TOOL_COUNT
};

/* A sub-call through the model router (text_summarizer, translator):
 * ask the agent's model `prompt` with `system`; on 0 *answer is malloc'd. */
typedef int (*tools_llm_fn)(void *llm_arg, const char *system, const char *prompt,
                            char **answer, struct am_error *err);

/* Server-side settings the tools need (from the config file). */
struct tools_settings {
    const char *web_search_url;    /* SearxNG-style JSON endpoint, "" = none */
    const char *smtp_url;          /* "smtp://host:port", "" = none */
    const char *smtp_from;         /* default sender */
    const char *file_root;         /* file_reader base directory, "" = disabled */
    int http_timeout_ms;           /* default cap for http_request/web_search */
    size_t http_max_bytes;         /* default response cap */
};

struct tools_ctx {
    const struct tools_settings *settings;
    struct json_object *tool_config;  /* the agent's config for this tool ({} if none), borrowed */
    tools_llm_fn llm;                 /* may be NULL: sub-call tools then fail cleanly */
    void *llm_arg;
};

/* Name <-> id; -1 / NULL when unknown. */
int tools_from_name(const char *name);
const char *tools_name(int tool);

/* One-line description and JSON-schema parameters for the model (static). */
const char *tools_description(int tool);
const char *tools_parameters(int tool);

/* Run tool with its JSON arguments. *result is a malloc'd JSON text
 * ({"result":…} or {"error":"…"}). Returns 0 (even when the tool reported
 * an error to the model) or AM_EINTERNAL on a bug. */
int tools_call(int tool, const char *arguments, const struct tools_ctx *ctx, char **result);

/* The calculator's evaluator, exposed for tests: 0 and *out, or -1 with a
 * message in errbuf ("division by zero", "unexpected ')' at 7", …). */
int tools_calc_eval(const char *expr, double *out, char *errbuf, size_t cap);

#endif
