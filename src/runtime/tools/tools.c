/*
 * tools.c - the tool table: every built-in tool's name, description and
 * JSON-schema parameters for the model, and the dispatch of a call to the
 * file that implements it (calculator.c, datetime.c, json_path.c, web.c
 * over http_client.c, llm_tools.c, smtp.c, file_reader.c).
 *
 * The single owner of the tool names: nothing else spells them. Owns nothing
 * that outlives a call, and has no global mutable state, so any number of
 * threads may call tools_call() at once. Must not do any tool's work here,
 * must not log (a tool's failure is the model's business: it comes back as
 * {"error": "..."}), must not touch the process environment (TZ, locale),
 * and no tool may follow anything (redirects, symbolic links) that would
 * leave the boundary it checked.
 *
 * Every tool returns a JSON object, {"result": ...} or {"error": "..."};
 * tools_call() serialises it. An error reply is never a request error: only
 * a bad tool id or a NULL result pointer returns AM_EINTERNAL. Every string
 * that came from outside (HTTP bodies, search results, file contents, model
 * answers) goes through tool_json_str_clean(), so the reply is valid UTF-8
 * JSON whatever the peer sent.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include "runtime/tools/tools.h"
#include "runtime/tools/tool_common.h"
#include "runtime/tools/calculator.h"
#include "runtime/tools/datetime.h"
#include "runtime/tools/json_path.h"
#include "runtime/tools/web.h"
#include "runtime/tools/llm_tools.h"
#include "runtime/tools/smtp.h"
#include "runtime/tools/file_reader.h"
#include "lib/util.h"

/* ---- the tool table ------------------------------------------------------ */

/* A tool: the model's arguments object in, a new reply out (caller puts). */
typedef struct json_object *(*tool_fn)(struct json_object *args, const struct tools_ctx *ctx);

static const struct tool_def {
    const char *name;
    const char *description;
    const char *parameters;     /* JSON schema of the arguments object */
    tool_fn run;
} tool_defs[TOOL_COUNT] = {
    [TOOL_CALCULATOR] = { "calculator",
        "Evaluate an arithmetic expression exactly (use it instead of mental arithmetic).",
        "{\"type\":\"object\",\"properties\":{\"expression\":{\"type\":\"string\","
        "\"description\":\"Expression such as (2+3)*sqrt(16). Operators + - * / % ^ (power), "
        "parentheses; functions sqrt abs sin cos tan asin acos atan log (natural) log10 log2 "
        "exp floor ceil round trunc min max pow atan2 hypot; constants pi e. -2^2 is -4.\"}},"
        "\"required\":[\"expression\"],\"additionalProperties\":false}",
        calculator_tool },
    [TOOL_DATETIME] = { "datetime",
        "Get the current date and time in a time zone.",
        "{\"type\":\"object\",\"properties\":{\"timezone\":{\"type\":\"string\","
        "\"description\":\"IANA time zone such as Europe/Paris or Asia/Tokyo; default UTC\"},"
        "\"format\":{\"type\":\"string\",\"description\":\"Optional strftime format, e.g. "
        "%A %d %B %Y %H:%M\"}},\"additionalProperties\":false}",
        datetime_tool },
    [TOOL_JSON_PARSER] = { "json_parser",
        "Parse a JSON document and return it, or the value at a path in it.",
        "{\"type\":\"object\",\"properties\":{\"json\":{\"type\":\"string\","
        "\"description\":\"The JSON text\"},\"path\":{\"type\":\"string\",\"description\":"
        "\"Optional path such as a.b[0].c; ['odd key'] for keys with dots\"}},"
        "\"required\":[\"json\"],\"additionalProperties\":false}",
        json_path_tool },
    [TOOL_HTTP_REQUEST] = { "http_request",
        "Make an HTTP GET, POST or HEAD request to an allowed host and return status, a few "
        "headers and the body.",
        "{\"type\":\"object\",\"properties\":{\"url\":{\"type\":\"string\",\"description\":"
        "\"http:// or https:// URL\"},\"method\":{\"type\":\"string\",\"enum\":[\"GET\","
        "\"POST\",\"HEAD\"]},\"body\":{\"type\":\"string\",\"description\":\"Request body "
        "(POST only)\"},\"headers\":{\"type\":\"object\",\"additionalProperties\":"
        "{\"type\":\"string\"}}},\"required\":[\"url\"],\"additionalProperties\":false}",
        web_http_request },
    [TOOL_WEB_SEARCH] = { "web_search",
        "Search the web and return the top results (title, url, snippet).",
        "{\"type\":\"object\",\"properties\":{\"query\":{\"type\":\"string\","
        "\"description\":\"What to search for\"}},\"required\":[\"query\"],"
        "\"additionalProperties\":false}",
        web_search },
    [TOOL_TEXT_SUMMARIZER] = { "text_summarizer",
        "Summarize a text in a given number of words at most.",
        "{\"type\":\"object\",\"properties\":{\"text\":{\"type\":\"string\"},"
        "\"max_words\":{\"type\":\"integer\",\"minimum\":10,\"maximum\":2000}},"
        "\"required\":[\"text\"],\"additionalProperties\":false}",
        llm_tools_summarizer },
    [TOOL_TRANSLATOR] = { "translator",
        "Translate a text into another language.",
        "{\"type\":\"object\",\"properties\":{\"text\":{\"type\":\"string\"},"
        "\"target_language\":{\"type\":\"string\",\"description\":\"Language to translate "
        "into, e.g. French; default from the agent's configuration\"}},"
        "\"required\":[\"text\"],\"additionalProperties\":false}",
        llm_tools_translator },
    [TOOL_EMAIL_SENDER] = { "email_sender",
        "Send a plain-text e-mail.",
        "{\"type\":\"object\",\"properties\":{\"to\":{\"type\":\"string\",\"description\":"
        "\"Recipient address, or several separated by commas\"},\"subject\":{\"type\":"
        "\"string\"},\"body\":{\"type\":\"string\"}},\"required\":[\"to\",\"subject\","
        "\"body\"],\"additionalProperties\":false}",
        smtp_email_sender },
    [TOOL_FILE_READER] = { "file_reader",
        "Read a text file from the server's shared document directory.",
        "{\"type\":\"object\",\"properties\":{\"path\":{\"type\":\"string\",\"description\":"
        "\"Path relative to the document directory, e.g. reports/q1.txt\"}},"
        "\"required\":[\"path\"],\"additionalProperties\":false}",
        file_reader_tool },
};

int tools_from_name(const char *name)
{
    int i;

    if (name == NULL)
        return -1;
    for (i = 0; i < TOOL_COUNT; i++)
        if (strcmp(tool_defs[i].name, name) == 0)
            return i;
    return -1;
}

const char *tools_name(int tool)
{
    return tool >= 0 && tool < TOOL_COUNT ? tool_defs[tool].name : NULL;
}

const char *tools_description(int tool)
{
    return tool >= 0 && tool < TOOL_COUNT ? tool_defs[tool].description : NULL;
}

const char *tools_parameters(int tool)
{
    return tool >= 0 && tool < TOOL_COUNT ? tool_defs[tool].parameters : NULL;
}

/* Parse the model's arguments text into an object (caller puts) or an
 * error reply. Empty or missing arguments mean {}. */
static struct json_object *tools_args(const char *arguments, struct json_object **args)
{
    char msg[200];
    size_t n = arguments ? strlen(arguments) : 0, i;

    for (i = 0; i < n && isspace((unsigned char)arguments[i]); i++)
        ;
    if (i == n) {
        *args = json_object_new_object();
        return NULL;
    }
    if (n > TOOL_ARGS_MAX_BYTES)
        return tool_reply_error("arguments are too large (limit %u bytes)", TOOL_ARGS_MAX_BYTES);
    if (!tool_utf8_valid(arguments, n))
        return tool_reply_error("arguments are not valid UTF-8");
    if (tool_json_parse_limited(arguments, n, args, msg, sizeof(msg)) < 0)
        return tool_reply_error("arguments are not valid JSON: %s", msg);
    if (!json_object_is_type(*args, json_type_object)) {
        json_object_put(*args);
        *args = NULL;
        return tool_reply_error("arguments must be a JSON object");
    }
    return NULL;
}

int tools_call(int tool, const char *arguments, const struct tools_ctx *ctx, char **result)
{
    static const struct tools_settings no_settings = { "", "", "", "", 0, 0 };
    struct tools_ctx c = { &no_settings, NULL, NULL, NULL };
    struct json_object *args = NULL, *reply;

    if (result == NULL)
        return AM_EINTERNAL;
    *result = NULL;
    if (tool < 0 || tool >= TOOL_COUNT)
        return AM_EINTERNAL;
    if (ctx) {
        c = *ctx;
        if (c.settings == NULL)
            c.settings = &no_settings;
    }
    reply = tools_args(arguments, &args);
    if (reply == NULL)
        reply = tool_defs[tool].run(args, &c);
    *result = xstrdup(json_object_to_json_string_ext(reply, JSON_C_TO_STRING_PLAIN |
                                                                JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(reply);
    json_object_put(args);
    return 0;
}

