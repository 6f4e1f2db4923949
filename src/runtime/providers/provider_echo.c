/*
 * provider_echo.c - the built-in offline provider "echo".
 *
 * It answers from the request alone, with no network and no key, so an
 * agent can be deployed and run (and the tool loop exercised) on a machine
 * with no model at all. Its answers are deterministic:
 *
 *  - If the last message is a tool result (role "tool"), the answer is
 *    "echo: tool said <that result>".
 *  - Otherwise, with U the text of the last user message: if tools are
 *    offered and U contains "use <toolname>" literally (the name followed
 *    by a non-name character or the end), the answer is one tool call to
 *    the first such tool, id "call_echo_1", content "". Its arguments are
 *    built from A, the text after "use <toolname>" with a leading ':' and
 *    surrounding blanks removed: {"expression": A} for the calculator,
 *    {"input": A} for any other tool. "use calculator: 2+2" calls
 *    calculator with {"expression":"2+2"}.
 *  - Otherwise the answer is "echo: " + U ("echo: " if there is no user
 *    message).
 *  - With a sink (req->sink), the text answer goes to it word by word,
 *    each word with the blanks after it one piece; a tool call sends none.
 *  - prompt_tokens is the number of words (runs of non-blanks) in the
 *    content of all messages; completion_tokens the words of the answer
 *    (of the arguments text for a tool call). model is the requested one.
 *
 * providers_build/providers_parse treat echo as the OpenAI body shape, so
 * the wire code stays testable for it too.
 *
 * Owns nothing but the response it fills. No I/O, no logging, no key; it
 * is called by providers.c's dispatch and calls only provider_wire.c and
 * providers.h, never back into providers.c nor another protocol file.
 */
#include <ctype.h>
#include <string.h>
#include <json-c/json.h>

#include "lib/buf.h"
#include "lib/error.h"
#include "runtime/providers/provider_wire.h"
#include "runtime/providers/providers.h"
#include "lib/util.h"

#define ECHO_PREFIX "echo: "
#define ECHO_TOOL_PREFIX "echo: tool said "

static int echo_words(const char *s)
{
    int n = 0, in = 0;

    for (; s && *s; s++) {
        if (isspace((unsigned char)*s))
            in = 0;
        else if (!in) {
            in = 1;
            n++;
        }
    }
    return n;
}

static int is_name_char(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == '-';
}

/* Where "use <name>" ends in text, or NULL if it is not there as a whole
 * word. */
static const char *echo_find_use(const char *text, const char *name)
{
    size_t n = strlen(name);
    const char *p;

    for (p = strstr(text, "use "); p; p = strstr(p + 1, "use ")) {
        if (p > text && is_name_char(p[-1]))
            continue;
        if (strncmp(p + 4, name, n) == 0 && !is_name_char(p[4 + n]))
            return p + 4 + n;
    }
    return NULL;
}

/* a followed by b (b may be NULL); caller frees. */
static char *echo_concat(const char *a, const char *b)
{
    struct buf s = {0};

    buf_puts(&s, a);
    if (b)
        buf_puts(&s, b);
    return buf_take(&s);
}

/* Build the one tool call for tool t; rest is the text after "use name". */
static int echo_call(struct providers_response *resp, const struct providers_tool *t,
                     const char *rest, struct am_error *err)
{
    struct json_object *args = json_object_new_object();
    const char *end;
    int rc;

    while (isspace((unsigned char)*rest))
        rest++;
    if (*rest == ':')
        rest++;
    while (isspace((unsigned char)*rest))
        rest++;
    end = rest + strlen(rest);
    while (end > rest && isspace((unsigned char)end[-1]))
        end--;
    json_object_object_add(args, strcmp(t->name, "calculator") == 0 ? "expression" : "input",
                           json_object_new_string_len(rest, (int)(end - rest)));
    rc = provider_wire_add_call(resp, "call_echo_1", t->name,
                                provider_wire_json_text(args), "tool call", "echo", err);
    json_object_put(args);
    if (rc == 0) {
        resp->content = xstrdup("");
        resp->completion_tokens = echo_words(resp->calls[0].arguments);
    }
    return rc;
}

/* With a sink, the answer's text goes to it word by word: each word with
 * the blanks after it is one piece (leading blanks go with the first). */
static int echo_stream(const struct providers_request *req, struct providers_response *resp,
                       struct am_error *err)
{
    const char *p = resp->content, *q;

    while (req->sink != NULL && p != NULL && *p) {
        for (q = p; isspace((unsigned char)*q); q++)
            ;
        while (*q && !isspace((unsigned char)*q))
            q++;
        while (isspace((unsigned char)*q))
            q++;
        if (req->sink->text(req->sink->arg, p, (size_t)(q - p)) != 0) {
            provider_wire_response_free(resp);
            return error_set(err, AM_ECANCELLED, "provider echo: the answer was abandoned");
        }
        p = q;
    }
    return 0;
}

int provider_echo_chat(const struct providers_request *req, struct providers_response *resp,
                       struct am_error *err)
{
    const struct providers_message *last = NULL;
    const char *user = "", *rest;
    size_t i;
    int rc;

    memset(resp, 0, sizeof(*resp));
    for (i = 0; i < req->nmessages; i++) {
        resp->prompt_tokens += echo_words(req->messages[i].content);
        if (strcmp(req->messages[i].role, "user") == 0 && req->messages[i].content)
            user = req->messages[i].content;
    }
    if (req->nmessages)
        last = &req->messages[req->nmessages - 1];
    util_strlcpy(resp->model, req->model ? req->model : "echo", sizeof(resp->model));
    if (last && strcmp(last->role, "tool") == 0) {
        resp->content = echo_concat(ECHO_TOOL_PREFIX, last->content);
        resp->completion_tokens = echo_words(resp->content);
        return echo_stream(req, resp, err);
    }
    for (i = 0; i < req->ntools; i++) {
        if (req->tools[i].name == NULL || *req->tools[i].name == '\0')
            continue;
        if ((rest = echo_find_use(user, req->tools[i].name)) != NULL) {
            if ((rc = echo_call(resp, &req->tools[i], rest, err)) != 0)
                provider_wire_response_free(resp);
            return rc;
        }
    }
    resp->content = echo_concat(ECHO_PREFIX, user);
    resp->completion_tokens = echo_words(resp->content);
    return echo_stream(req, resp, err);
}
