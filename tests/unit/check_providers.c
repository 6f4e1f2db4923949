/*
 * check_providers.c - unit tests for the providers module: the request body
 * and URL of every protocol (parsed back with json-c), the parse of real-
 * shaped answers and of a table of malformed ones, truncation and byte
 * mutation of valid answers, a replay of tests/corpus/providers/, the echo
 * provider, and providers_chat end to end against tests/fake_provider.py
 * (timeouts, HTTP errors, wrong keys, closed ports, size limit).
 *
 * main() starts one fake provider (python3, standard library) on a free
 * loopback port with --expect-key KEY and stops it at exit; each transport
 * test resets its behaviour through POST /_control first. The fake and the
 * corpus are found through $ASTROMESH_SRCDIR (set by `make check`),
 * falling back to "."; the interpreter is $PYTHON3, else python3 from PATH.
 *
 * Run one case: CK_RUN_CASE=transport ./tests/unit/check_providers
 * Under valgrind: CK_FORK=no valgrind --leak-check=full --error-exitcode=1 \
 *     ./tests/unit/check_providers
 */
#include <check.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <curl/curl.h>
#include <json-c/json.h>

#include "state/config.h"
#include "lib/error.h"
#include "runtime/providers/provider_wire.h"
#include "runtime/providers/providers.h"
#include "lib/util.h"

#define KEY "sk-test-0123456789abcdef-SECRET"     /* the fake's --expect-key */
#define WRONG_KEY "sk-wrong-key-9876543210-OTHER"

static pid_t fake_pid = -1;        /* the fake provider, started by main */
static char fake_root[64];         /* "http://127.0.0.1:PORT", "" if not running */

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */

static const char *srcdir(void)
{
    const char *s = getenv("ASTROMESH_SRCDIR");
    return s && *s ? s : ".";
}

/* Follow a dotted path ("choices.0.message") through objects and arrays.
 * Borrowed result; NULL when absent or null. */
static struct json_object *jpath(struct json_object *o, const char *path)
{
    char buf[256], *save = NULL, *tok;

    util_strlcpy(buf, path, sizeof(buf));
    for (tok = strtok_r(buf, ".", &save); tok && o; tok = strtok_r(NULL, ".", &save)) {
        if (isdigit((unsigned char)*tok) && json_object_is_type(o, json_type_array))
            o = json_object_array_get_idx(o, (size_t)atoi(tok));
        else if (!json_object_object_get_ex(o, tok, &o))
            return NULL;
    }
    return o;
}

static const char *jstr(struct json_object *o, const char *path)
{
    struct json_object *v = jpath(o, path);
    return json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

static int jint(struct json_object *o, const char *path)
{
    struct json_object *v = jpath(o, path);
    ck_assert_msg(json_object_is_type(v, json_type_int), "%s is not an integer", path);
    return json_object_get_int(v);
}

static size_t jlen(struct json_object *o, const char *path)
{
    struct json_object *v = jpath(o, path);
    ck_assert_msg(json_object_is_type(v, json_type_array), "%s is not an array", path);
    return json_object_array_length(v);
}

/* 1 if the last key of path is present in its parent (whatever the value,
 * null included). */
static int jhas(struct json_object *o, const char *path)
{
    char parent[256];
    const char *dot = strrchr(path, '.');
    struct json_object *p = o, *v;

    if (dot) {
        util_strlcpy(parent, path, (size_t)(dot - path) + 1);
        p = jpath(o, parent);
    }
    return json_object_object_get_ex(p, dot ? dot + 1 : path, &v);
}

/* The fixed conversation most tests use: two system messages, a question,
 * an assistant turn with two calculator calls, both results, a follow-up. */
static struct providers_tool_call conv_calls[2] = {
    { .id = "call_1", .name = "calculator", .arguments = "{\"expression\":\"2+2\"}" },
    { .id = "call_2", .name = "calculator", .arguments = "{\"expression\":\"3*3\"}" },
};

static const struct providers_message conv[] = {
    { .role = "system", .content = "You are terse." },
    { .role = "system", .content = "Answer in English." },
    { .role = "user", .content = "what is 2+2 and 3*3" },
    { .role = "assistant", .content = NULL, .calls = conv_calls, .ncalls = 2 },
    { .role = "tool", .content = "4", .tool_call_id = "call_1", .tool_name = "calculator" },
    { .role = "tool", .content = "9", .tool_call_id = "call_2", .tool_name = "calculator" },
    { .role = "user", .content = "thanks" },
};
#define NCONV (sizeof(conv) / sizeof(conv[0]))

static const struct providers_tool calc_tool = {
    .name = "calculator",
    .description = "Evaluate an arithmetic expression",
    .parameters = "{\"type\":\"object\",\"properties\":{\"expression\":{\"type\":\"string\"}},"
                  "\"required\":[\"expression\"]}",
};

static struct providers_request conv_request(int provider, const char *base)
{
    struct providers_request r = {
        .provider = provider, .model = "model-x", .base_url = base, .api_key = KEY,
        .timeout_ms = 5000, .max_tokens = 256, .messages = conv, .nmessages = NCONV,
        .tools = &calc_tool, .ntools = 1,
    };
    return r;
}

/* Build req, check the URL and that the key is nowhere in URL or body, and
 * return the body parsed (caller puts). */
static struct json_object *build_json(const struct providers_request *req, const char *want_url)
{
    struct am_error err = {0};
    struct json_object *obj;
    char *url = NULL, *body = NULL;
    int rc;

    rc = providers_build(req, &url, &body, &err);
    ck_assert_msg(rc == 0, "build failed: %d %s", rc, err.message);
    ck_assert_str_eq(url, want_url);
    ck_assert_ptr_null(strstr(body, KEY));
    ck_assert_ptr_null(strstr(url, KEY));
    obj = json_tokener_parse(body);
    ck_assert_msg(json_object_is_type(obj, json_type_object), "body not an object: %s", body);
    free(url);
    free(body);
    return obj;
}

/* Parse body as provider's answer, expecting success. */
static void parse_ok(int provider, const char *body, struct providers_response *resp)
{
    struct am_error err = {0};
    int rc = providers_parse(provider, body, strlen(body), resp, &err);

    ck_assert_msg(rc == 0, "parse failed: %d %s", rc, err.message);
    ck_assert_ptr_nonnull(resp->content);
}

/* ------------------------------------------------------------------------ */
/* The fake provider                                                         */

static int fake_start(void)
{
    const char *py = getenv("PYTHON3") && *getenv("PYTHON3") ? getenv("PYTHON3") : "python3";
    char script[PATH_MAX], line[32] = "";
    struct pollfd pfd;
    size_t n = 0;
    int fds[2];

    snprintf(script, sizeof(script), "%s/tests/fake_provider.py", srcdir());
    if (pipe(fds) != 0)
        return -1;
    fake_pid = fork();
    if (fake_pid < 0)
        return -1;
    if (fake_pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        execlp(py, py, script, "--port", "0", "--expect-key", KEY, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    pfd.fd = fds[0];
    pfd.events = POLLIN;
    while (n < sizeof(line) - 1 && strchr(line, '\n') == NULL) {
        ssize_t got;

        if (poll(&pfd, 1, 15000) <= 0)
            break;
        if ((got = read(fds[0], line + n, sizeof(line) - 1 - n)) <= 0)
            break;
        n += (size_t)got;
        line[n] = '\0';
    }
    close(fds[0]);
    if (atoi(line) <= 0)
        return -1;
    snprintf(fake_root, sizeof(fake_root), "http://127.0.0.1:%d", atoi(line));
    return 0;
}

static void fake_stop(void)
{
    if (fake_pid > 0) {
        kill(fake_pid, SIGTERM);
        waitpid(fake_pid, NULL, 0);
        fake_pid = -1;
    }
}

struct grow {
    char *p;
    size_t n;
};

static size_t grow_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct grow *g = userdata;

    g->p = xrealloc(g->p, g->n + size * nmemb + 1);
    memcpy(g->p + g->n, ptr, size * nmemb);
    g->n += size * nmemb;
    g->p[g->n] = '\0';
    return size * nmemb;
}

/* One request to the fake's control API; returns the answer (caller frees). */
static char *fake_http(const char *method, const char *path, const char *body)
{
    struct grow g = { xstrdup(""), 0 };
    char url[256];
    long status = 0;
    CURL *c = curl_easy_init();
    CURLcode cc;

    ck_assert_msg(fake_root[0] != '\0', "the fake provider is not running");
    snprintf(url, sizeof(url), "%s%s", fake_root, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
    if (body)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, grow_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &g);
    cc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    ck_assert_msg(cc == CURLE_OK && status == 200, "%s %s: curl %d, HTTP %ld: %s", method,
                  path, (int)cc, status, g.p);
    return g.p;
}

/* Set the fake's behaviour (replacing the previous one) and forget the
 * requests it has seen. */
static void fake_control(const char *json)
{
    free(fake_http("POST", "/_control", json));
    free(fake_http("DELETE", "/_requests", NULL));
}

/* Every request the fake received since fake_control (caller puts). */
static struct json_object *fake_requests(void)
{
    char *text = fake_http("GET", "/_requests", NULL);
    struct json_object *arr = json_tokener_parse(text);

    free(text);
    ck_assert(json_object_is_type(arr, json_type_array));
    return arr;
}

/* The base_url a client uses to reach the fake as provider p. */
static const char *fake_base(int p)
{
    static _Thread_local char buf[96];   /* the threads test calls this from 16 threads */

    switch (p) {
    case PROVIDER_COHERE:
        snprintf(buf, sizeof(buf), "%s/v2", fake_root);
        break;
    case PROVIDER_OLLAMA:
        snprintf(buf, sizeof(buf), "%s", fake_root);
        break;
    default:
        snprintf(buf, sizeof(buf), "%s/v1", fake_root);
        break;
    }
    return buf;
}

static const struct providers_message question[] = {
    { .role = "system", .content = "You are terse." },
    { .role = "user", .content = "what is two plus two" },
};

static struct providers_request simple_request(int provider, const char *key)
{
    struct providers_request r = {
        .provider = provider, .model = "fake-model", .base_url = fake_base(provider),
        .api_key = key, .timeout_ms = 5000, .messages = question, .nmessages = 2,
    };
    return r;
}

static const int remote_providers[] = {
    PROVIDER_OPENAI, PROVIDER_GROQ, PROVIDER_MISTRAL, PROVIDER_ANTHROPIC, PROVIDER_COHERE,
    PROVIDER_OLLAMA,
};
#define NREMOTE (sizeof(remote_providers) / sizeof(remote_providers[0]))

/* ------------------------------------------------------------------------ */
/* Building requests                                                         */

START_TEST(url_is_base_url_plus_protocol_path)
{
    static const struct { int p; const char *base, *url; } cases[] = {
        { PROVIDER_OPENAI, "https://api.openai.com/v1", "https://api.openai.com/v1/chat/completions" },
        { PROVIDER_GROQ, "https://api.groq.com/openai/v1/",
          "https://api.groq.com/openai/v1/chat/completions" },
        { PROVIDER_MISTRAL, "https://api.mistral.ai/v1", "https://api.mistral.ai/v1/chat/completions" },
        { PROVIDER_ANTHROPIC, "https://api.anthropic.com/v1", "https://api.anthropic.com/v1/messages" },
        { PROVIDER_COHERE, "https://api.cohere.com/v2", "https://api.cohere.com/v2/chat" },
        { PROVIDER_OLLAMA, "http://127.0.0.1:11434//", "http://127.0.0.1:11434/api/chat" },
        { PROVIDER_ECHO, NULL, "echo://local" },
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct providers_request r = conv_request(cases[i].p, cases[i].base);
        json_object_put(build_json(&r, cases[i].url));
    }
}
END_TEST

START_TEST(build_without_http_base_url_is_provider_error)
{
    static const char *bases[] = { NULL, "", "ftp://example.com/v1", "file:///etc/passwd",
                                   "api.openai.com/v1" };
    struct am_error err = {0};
    char *url, *body;
    size_t i;

    for (i = 0; i < sizeof(bases) / sizeof(bases[0]); i++) {
        struct providers_request r = conv_request(PROVIDER_OPENAI, bases[i]);

        ck_assert_int_eq(providers_build(&r, &url, &body, &err), AM_EPROVIDER);
        ck_assert_ptr_null(url);
        ck_assert_ptr_null(body);
        ck_assert_ptr_nonnull(strstr(err.message, "base_url"));
    }
}
END_TEST

START_TEST(openai_body_has_messages_tool_calls_and_function_tools)
{
    struct providers_request r = conv_request(PROVIDER_OPENAI, "http://h/v1");
    struct json_object *b = build_json(&r, "http://h/v1/chat/completions");

    ck_assert_pstr_eq(jstr(b, "model"), "model-x");
    ck_assert_int_eq(jint(b, "max_tokens"), 256);
    ck_assert_uint_eq(jlen(b, "messages"), NCONV);
    ck_assert_pstr_eq(jstr(b, "messages.0.role"), "system");
    ck_assert_pstr_eq(jstr(b, "messages.2.content"), "what is 2+2 and 3*3");
    /* assistant turn: content null, calls with arguments as JSON text */
    ck_assert(jhas(b, "messages.3.content"));
    ck_assert_ptr_null(jpath(b, "messages.3.content"));
    ck_assert_uint_eq(jlen(b, "messages.3.tool_calls"), 2);
    ck_assert_pstr_eq(jstr(b, "messages.3.tool_calls.0.id"), "call_1");
    ck_assert_pstr_eq(jstr(b, "messages.3.tool_calls.0.type"), "function");
    ck_assert_pstr_eq(jstr(b, "messages.3.tool_calls.0.function.name"), "calculator");
    ck_assert_pstr_eq(jstr(b, "messages.3.tool_calls.1.function.arguments"),
                      "{\"expression\":\"3*3\"}");
    /* tool results */
    ck_assert_pstr_eq(jstr(b, "messages.4.role"), "tool");
    ck_assert_pstr_eq(jstr(b, "messages.4.tool_call_id"), "call_1");
    ck_assert_pstr_eq(jstr(b, "messages.4.content"), "4");
    /* tools in function form, parameters as an object */
    ck_assert_uint_eq(jlen(b, "tools"), 1);
    ck_assert_pstr_eq(jstr(b, "tools.0.type"), "function");
    ck_assert_pstr_eq(jstr(b, "tools.0.function.name"), "calculator");
    ck_assert_pstr_eq(jstr(b, "tools.0.function.description"),
                      "Evaluate an arithmetic expression");
    ck_assert_pstr_eq(jstr(b, "tools.0.function.parameters.type"), "object");
    ck_assert_pstr_eq(jstr(b, "tools.0.function.parameters.required.0"), "expression");
    json_object_put(b);
}
END_TEST

START_TEST(openai_body_leaves_out_max_tokens_and_tools_when_unset)
{
    struct providers_request r = conv_request(PROVIDER_MISTRAL, "http://h/v1");
    struct json_object *b;

    r.max_tokens = 0;
    r.ntools = 0;
    r.tools = NULL;
    b = build_json(&r, "http://h/v1/chat/completions");
    ck_assert(!jhas(b, "max_tokens"));
    ck_assert(!jhas(b, "tools"));
    json_object_put(b);
}
END_TEST

START_TEST(anthropic_body_lifts_system_and_merges_same_role_messages)
{
    struct providers_request r = conv_request(PROVIDER_ANTHROPIC, "http://h/v1");
    struct json_object *b = build_json(&r, "http://h/v1/messages");

    ck_assert_pstr_eq(jstr(b, "system"), "You are terse.\n\nAnswer in English.");
    ck_assert_int_eq(jint(b, "max_tokens"), 256);
    /* user, assistant (two tool_use), user (two tool_result + text) */
    ck_assert_uint_eq(jlen(b, "messages"), 3);
    ck_assert_pstr_eq(jstr(b, "messages.0.role"), "user");
    ck_assert_pstr_eq(jstr(b, "messages.0.content.0.type"), "text");
    ck_assert_pstr_eq(jstr(b, "messages.0.content.0.text"), "what is 2+2 and 3*3");
    ck_assert_pstr_eq(jstr(b, "messages.1.role"), "assistant");
    ck_assert_uint_eq(jlen(b, "messages.1.content"), 2);
    ck_assert_pstr_eq(jstr(b, "messages.1.content.0.type"), "tool_use");
    ck_assert_pstr_eq(jstr(b, "messages.1.content.0.id"), "call_1");
    ck_assert_pstr_eq(jstr(b, "messages.1.content.0.name"), "calculator");
    ck_assert_pstr_eq(jstr(b, "messages.1.content.1.input.expression"), "3*3");
    ck_assert_pstr_eq(jstr(b, "messages.2.role"), "user");
    ck_assert_uint_eq(jlen(b, "messages.2.content"), 3);
    ck_assert_pstr_eq(jstr(b, "messages.2.content.0.type"), "tool_result");
    ck_assert_pstr_eq(jstr(b, "messages.2.content.0.tool_use_id"), "call_1");
    ck_assert_pstr_eq(jstr(b, "messages.2.content.0.content"), "4");
    ck_assert_pstr_eq(jstr(b, "messages.2.content.1.tool_use_id"), "call_2");
    ck_assert_pstr_eq(jstr(b, "messages.2.content.2.text"), "thanks");
    /* tools: name, description, input_schema; no "function" wrapper */
    ck_assert_pstr_eq(jstr(b, "tools.0.name"), "calculator");
    ck_assert_pstr_eq(jstr(b, "tools.0.input_schema.type"), "object");
    ck_assert(!jhas(b, "tools.0.type"));
    json_object_put(b);
}
END_TEST

START_TEST(anthropic_body_defaults_max_tokens_to_1024_and_drops_empty_text)
{
    static const struct providers_message msgs[] = {
        { .role = "user", .content = "" },
        { .role = "user", .content = "hi" },
    };
    struct providers_request r = conv_request(PROVIDER_ANTHROPIC, "http://h/v1");
    struct json_object *b;

    r.max_tokens = 0;
    r.messages = msgs;
    r.nmessages = 2;
    r.ntools = 0;
    b = build_json(&r, "http://h/v1/messages");
    ck_assert_int_eq(jint(b, "max_tokens"), 1024);
    ck_assert(!jhas(b, "system"));
    ck_assert(!jhas(b, "tools"));
    ck_assert_uint_eq(jlen(b, "messages"), 1);
    ck_assert_uint_eq(jlen(b, "messages.0.content"), 1);
    ck_assert_pstr_eq(jstr(b, "messages.0.content.0.text"), "hi");
    json_object_put(b);
}
END_TEST

START_TEST(cohere_body_keeps_roles_and_uses_tool_plan_and_tool_call_id)
{
    static struct providers_tool_call one = { .id = "c1", .name = "calculator",
                                              .arguments = "{\"expression\":\"1\"}" };
    static const struct providers_message msgs[] = {
        { .role = "system", .content = "Be brief." },
        { .role = "user", .content = "hi" },
        { .role = "assistant", .content = "I will calculate.", .calls = &one, .ncalls = 1 },
        { .role = "tool", .content = "1", .tool_call_id = "c1" },
    };
    struct providers_request r = conv_request(PROVIDER_COHERE, "http://h/v2");
    struct json_object *b;

    r.messages = msgs;
    r.nmessages = 4;
    b = build_json(&r, "http://h/v2/chat");
    ck_assert_uint_eq(jlen(b, "messages"), 4);
    ck_assert_pstr_eq(jstr(b, "messages.0.role"), "system");
    ck_assert_pstr_eq(jstr(b, "messages.0.content"), "Be brief.");
    ck_assert_pstr_eq(jstr(b, "messages.2.tool_plan"), "I will calculate.");
    ck_assert(!jhas(b, "messages.2.content"));
    ck_assert_pstr_eq(jstr(b, "messages.2.tool_calls.0.function.arguments"),
                      "{\"expression\":\"1\"}");
    ck_assert_pstr_eq(jstr(b, "messages.3.role"), "tool");
    ck_assert_pstr_eq(jstr(b, "messages.3.tool_call_id"), "c1");
    ck_assert_pstr_eq(jstr(b, "tools.0.type"), "function");
    ck_assert_pstr_eq(jstr(b, "tools.0.function.parameters.type"), "object");
    ck_assert_int_eq(jint(b, "max_tokens"), 256);
    json_object_put(b);
}
END_TEST

START_TEST(ollama_body_is_non_streaming_with_object_arguments_and_num_predict)
{
    struct providers_request r = conv_request(PROVIDER_OLLAMA, "http://127.0.0.1:11434");
    struct json_object *b = build_json(&r, "http://127.0.0.1:11434/api/chat");
    struct json_object *s = jpath(b, "stream");

    ck_assert(json_object_is_type(s, json_type_boolean) && !json_object_get_boolean(s));
    ck_assert_int_eq(jint(b, "options.num_predict"), 256);
    ck_assert(!jhas(b, "max_tokens"));
    ck_assert_uint_eq(jlen(b, "messages"), NCONV);
    ck_assert_pstr_eq(jstr(b, "messages.3.content"), "");
    ck_assert_pstr_eq(jstr(b, "messages.3.tool_calls.0.function.name"), "calculator");
    ck_assert_pstr_eq(jstr(b, "messages.3.tool_calls.0.function.arguments.expression"), "2+2");
    ck_assert_pstr_eq(jstr(b, "messages.4.tool_name"), "calculator");
    ck_assert_pstr_eq(jstr(b, "tools.0.function.name"), "calculator");
    json_object_put(b);
}
END_TEST

START_TEST(build_rejects_tool_schema_that_is_not_an_object)
{
    static const char *bad[] = { "[1,2]", "{\"type\":", "\"object\"", "{} {}" };
    struct am_error err = {0};
    char *url, *body;
    size_t i, p;

    for (p = 0; p < NREMOTE; p++)
        for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            struct providers_tool t = { .name = "broken", .parameters = bad[i] };
            struct providers_request r = conv_request(remote_providers[p], "http://h");

            r.tools = &t;
            ck_assert_int_eq(providers_build(&r, &url, &body, &err), AM_EINTERNAL);
            ck_assert_ptr_nonnull(strstr(err.message, "tool broken"));
            ck_assert_ptr_null(url);
            ck_assert_ptr_null(body);
        }
}
END_TEST

START_TEST(build_rejects_unknown_role_and_missing_model)
{
    static const struct providers_message odd[] = { { .role = "developer", .content = "x" } };
    struct providers_request r = conv_request(PROVIDER_OPENAI, "http://h/v1");
    struct am_error err = {0};
    char *url, *body;

    r.messages = odd;
    r.nmessages = 1;
    ck_assert_int_eq(providers_build(&r, &url, &body, &err), AM_EINTERNAL);
    r = conv_request(PROVIDER_OPENAI, "http://h/v1");
    r.model = NULL;
    ck_assert_int_eq(providers_build(&r, &url, &body, &err), AM_EINTERNAL);
    r = conv_request(PROVIDER_COUNT, "http://h/v1");
    ck_assert_int_eq(providers_build(&r, &url, &body, &err), AM_EINTERNAL);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Parsing answers                                                           */

static const char openai_text[] =
    "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"created\":1,"
    "\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":0,\"message\":"
    "{\"role\":\"assistant\",\"content\":\"Hello there\",\"refusal\":null},"
    "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":2,"
    "\"total_tokens\":14}}";

static const char openai_tools[] =
    "{\"id\":\"x\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"message\":{\"role\":"
    "\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"call_abc\",\"type\":\"function\","
    "\"function\":{\"name\":\"calculator\",\"arguments\":\"{\\\"expression\\\":\\\"2+2\\\"}\"}},"
    "{\"id\":\"call_def\",\"type\":\"function\",\"function\":{\"name\":\"datetime\","
    "\"arguments\":\"{}\"}}]},\"finish_reason\":\"tool_calls\"}],"
    "\"usage\":{\"prompt_tokens\":50,\"completion_tokens\":20}}";

static const char anthropic_answer[] =
    "{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\","
    "\"model\":\"claude-3-5-haiku-20241022\",\"content\":[{\"type\":\"text\",\"text\":"
    "\"Let me compute.\"},{\"type\":\"tool_use\",\"id\":\"toolu_01\",\"name\":\"calculator\","
    "\"input\":{\"expression\":\"2+2\"}}],\"stop_reason\":\"tool_use\",\"stop_sequence\":null,"
    "\"usage\":{\"input_tokens\":30,\"output_tokens\":15}}";

static const char cohere_text[] =
    "{\"id\":\"c1\",\"finish_reason\":\"COMPLETE\",\"message\":{\"role\":\"assistant\","
    "\"content\":[{\"type\":\"text\",\"text\":\"Hi\"},{\"type\":\"text\",\"text\":\" there\"}]},"
    "\"usage\":{\"billed_units\":{\"input_tokens\":5,\"output_tokens\":2},"
    "\"tokens\":{\"input_tokens\":70,\"output_tokens\":2}}}";

static const char cohere_tools[] =
    "{\"id\":\"c2\",\"finish_reason\":\"TOOL_CALL\",\"message\":{\"role\":\"assistant\","
    "\"tool_plan\":\"I will use the calculator.\",\"tool_calls\":[{\"id\":\"calc_1\","
    "\"type\":\"function\",\"function\":{\"name\":\"calculator\",\"arguments\":"
    "\"{\\\"expression\\\":\\\"2+2\\\"}\"}}]},\"usage\":{\"billed_units\":"
    "{\"input_tokens\":9,\"output_tokens\":4}}}";

static const char ollama_answer[] =
    "{\"model\":\"llama3.1\",\"created_at\":\"2024-07-22T20:33:28.123648Z\",\"message\":"
    "{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"function\":{\"name\":"
    "\"calculator\",\"arguments\":{\"expression\":\"2+2\"}}},{\"function\":{\"name\":"
    "\"datetime\",\"arguments\":{}}}]},\"done_reason\":\"stop\",\"done\":true,"
    "\"prompt_eval_count\":26,\"eval_count\":19}";

START_TEST(openai_answer_gives_text_usage_and_model)
{
    struct providers_response r;

    parse_ok(PROVIDER_OPENAI, openai_text, &r);
    ck_assert_str_eq(r.content, "Hello there");
    ck_assert_uint_eq(r.ncalls, 0);
    ck_assert_int_eq(r.prompt_tokens, 12);
    ck_assert_int_eq(r.completion_tokens, 2);
    ck_assert_str_eq(r.model, "gpt-4o-mini-2024-07-18");
    providers_response_free(&r);
}
END_TEST

START_TEST(openai_answer_gives_tool_calls_with_json_text_arguments)
{
    struct providers_response r;

    parse_ok(PROVIDER_GROQ, openai_tools, &r);
    ck_assert_str_eq(r.content, "");
    ck_assert_uint_eq(r.ncalls, 2);
    ck_assert_str_eq(r.calls[0].id, "call_abc");
    ck_assert_str_eq(r.calls[0].name, "calculator");
    ck_assert_str_eq(r.calls[0].arguments, "{\"expression\":\"2+2\"}");
    ck_assert_str_eq(r.calls[1].name, "datetime");
    ck_assert_str_eq(r.calls[1].arguments, "{}");
    ck_assert_int_eq(r.prompt_tokens, 50);
    ck_assert_int_eq(r.completion_tokens, 20);
    providers_response_free(&r);
}
END_TEST

START_TEST(openai_refusal_is_the_answer_text)
{
    struct providers_response r;

    parse_ok(PROVIDER_OPENAI, "{\"choices\":[{\"message\":{\"role\":\"assistant\","
             "\"content\":null,\"refusal\":\"I can't help with that.\"}}]}", &r);
    ck_assert_str_eq(r.content, "I can't help with that.");
    ck_assert_int_eq(r.prompt_tokens, 0);
    providers_response_free(&r);
}
END_TEST

START_TEST(anthropic_answer_gives_text_tool_use_and_usage)
{
    struct providers_response r;

    parse_ok(PROVIDER_ANTHROPIC, anthropic_answer, &r);
    ck_assert_str_eq(r.content, "Let me compute.");
    ck_assert_uint_eq(r.ncalls, 1);
    ck_assert_str_eq(r.calls[0].id, "toolu_01");
    ck_assert_str_eq(r.calls[0].name, "calculator");
    ck_assert_str_eq(r.calls[0].arguments, "{\"expression\":\"2+2\"}");
    ck_assert_int_eq(r.prompt_tokens, 30);
    ck_assert_int_eq(r.completion_tokens, 15);
    ck_assert_str_eq(r.model, "claude-3-5-haiku-20241022");
    providers_response_free(&r);
}
END_TEST

START_TEST(cohere_answer_joins_text_and_prefers_tokens_over_billed_units)
{
    struct providers_response r;

    parse_ok(PROVIDER_COHERE, cohere_text, &r);
    ck_assert_str_eq(r.content, "Hi there");
    ck_assert_int_eq(r.prompt_tokens, 70);
    ck_assert_int_eq(r.completion_tokens, 2);
    ck_assert_str_eq(r.model, "");
    providers_response_free(&r);
    parse_ok(PROVIDER_COHERE, cohere_tools, &r);
    ck_assert_str_eq(r.content, "");
    ck_assert_uint_eq(r.ncalls, 1);
    ck_assert_str_eq(r.calls[0].id, "calc_1");
    ck_assert_str_eq(r.calls[0].arguments, "{\"expression\":\"2+2\"}");
    ck_assert_int_eq(r.prompt_tokens, 9);
    ck_assert_int_eq(r.completion_tokens, 4);
    providers_response_free(&r);
}
END_TEST

START_TEST(ollama_answer_gets_synthesised_call_ids_and_eval_counts)
{
    struct providers_response r;

    parse_ok(PROVIDER_OLLAMA, ollama_answer, &r);
    ck_assert_str_eq(r.content, "");
    ck_assert_uint_eq(r.ncalls, 2);
    ck_assert_str_eq(r.calls[0].id, "call_1");
    ck_assert_str_eq(r.calls[1].id, "call_2");
    ck_assert_str_eq(r.calls[0].arguments, "{\"expression\":\"2+2\"}");
    ck_assert_str_eq(r.calls[1].arguments, "{}");
    ck_assert_int_eq(r.prompt_tokens, 26);
    ck_assert_int_eq(r.completion_tokens, 19);
    ck_assert_str_eq(r.model, "llama3.1");
    providers_response_free(&r);
}
END_TEST

/* Malformed answers: each must give AM_EPROVIDER with want in the
 * message, and leave resp empty. */
static const struct { int p; const char *body, *want; } malformed[] = {
    { PROVIDER_OPENAI, "", "malformed answer from provider openai: empty" },
    { PROVIDER_OPENAI, "  \n ", "empty" },
    { PROVIDER_OPENAI, "not json", "not JSON" },
    { PROVIDER_OPENAI, "<html>502 Bad Gateway</html>", "not JSON" },
    { PROVIDER_OPENAI, "[]", "not a JSON object" },
    { PROVIDER_OPENAI, "42", "not a JSON object" },
    { PROVIDER_OPENAI, "null", "not a JSON object" },
    { PROVIDER_OPENAI, "{}", "choices is missing" },
    { PROVIDER_OPENAI, "{\"choices\":null}", "choices is missing" },
    { PROVIDER_OPENAI, "{\"choices\":[]}", "choices is empty" },
    { PROVIDER_OPENAI, "{\"choices\":{}}", "choices is an object, expected an array" },
    { PROVIDER_OPENAI, "{\"choices\":[1]}", "choices[0] is not an object" },
    { PROVIDER_OPENAI, "{\"choices\":[{}]}", "choices[0].message is missing" },
    { PROVIDER_OPENAI, "{\"choices\":[{\"message\":\"hi\"}]}", "choices[0].message is a string" },
    { PROVIDER_OPENAI, "{\"choices\":[{\"message\":{\"content\":5}}]}",
      "choices[0].message.content is an integer, expected a string" },
    { PROVIDER_OPENAI, "{\"choices\":[{\"message\":{\"content\":[\"a\"]}}]}",
      "content is an array" },
    { PROVIDER_OPENAI, "{\"choices\":[{\"message\":{\"content\":null}}]}",
      "neither content nor tool_calls" },
    { PROVIDER_OPENAI, "{\"choices\":[{\"message\":{\"content\":\"x\"", "truncated" },
    { PROVIDER_OPENAI, "{\"choices\":[{\"message\":{\"content\":\"x", "truncated" },
    { PROVIDER_OPENAI, "{\"choices\":[]} x", "not JSON" },
    { PROVIDER_OPENAI, "{\"choices\":[]}{}", "not JSON" },
    { PROVIDER_OPENAI, "{\"choices\":[{\"message\":{\"content\":null,\"tool_calls\":[{\"id\":"
      "\"a\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":{\"a\":1}}}]}}]}",
      "tool_calls[0].function.arguments is an object, expected a string" },
    { PROVIDER_OPENAI, "{\"choices\":[{\"message\":{\"tool_calls\":[{\"type\":\"function\","
      "\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}}]}", "tool_calls[0].id is missing" },
    { PROVIDER_OPENAI, "{\"choices\":[{\"message\":{\"tool_calls\":[{\"id\":\"\","
      "\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}}]}", "tool call id empty" },
    { PROVIDER_OPENAI, "{\"choices\":[{\"message\":{\"tool_calls\":[{\"id\":\"a\",\"function\":"
      "{\"name\":\"a234567890123456789012345678901234567890123456789012345678901234\","
      "\"arguments\":\"{}\"}}]}}]}", "tool name empty or longer than 63 bytes" },
    { PROVIDER_OPENAI, "{\"choices\":[{\"message\":{\"tool_calls\":{}}}]}",
      "tool_calls is an object, expected an array" },
    { PROVIDER_OPENAI, "{\"choices\":[{\"message\":{\"tool_calls\":[\"x\"]}}]}",
      "tool_calls[0] is not an object" },
    { PROVIDER_OPENAI, "{\"choices\":[{\"message\":{\"content\":\"x\"}}],\"usage\":[]}",
      "usage is an array, expected an object" },
    { PROVIDER_OPENAI, "{\"choices\":[{\"message\":{\"content\":\"x\"}}],\"usage\":"
      "{\"prompt_tokens\":\"12\"}}", "usage.prompt_tokens is a string, expected an integer" },
    { PROVIDER_OPENAI, "{\"choices\":[{\"message\":{\"content\":\"x\"}}],\"usage\":"
      "{\"prompt_tokens\":99999999999999999999999}}", "usage.prompt_tokens out of range" },
    { PROVIDER_OPENAI, "{\"choices\":[{\"message\":{\"content\":\"x\"}}],\"usage\":"
      "{\"prompt_tokens\":2147483648}}", "usage.prompt_tokens out of range" },
    { PROVIDER_OPENAI, "{\"choices\":[{\"message\":{\"content\":\"x\"}}],\"usage\":"
      "{\"completion_tokens\":-1}}", "usage.completion_tokens out of range" },
    { PROVIDER_OPENAI, "{\"choices\":[{\"message\":{\"content\":\"x\"}}],\"usage\":"
      "{\"completion_tokens\":1e400}}", "usage.completion_tokens" },
    { PROVIDER_OPENAI, "{\"choices\":[{\"message\":{\"content\":\"x\"}}],\"usage\":"
      "{\"completion_tokens\":1.5}}", "usage.completion_tokens out of range" },
    { PROVIDER_OPENAI, "{\"choices\":[{\"message\":{\"content\":\"x\"}}],\"model\":5}",
      "model is an integer, expected a string" },
    { PROVIDER_ECHO, "[]", "malformed answer from provider echo: not a JSON object" },
    { PROVIDER_ANTHROPIC, "{}", "malformed answer from provider anthropic: content is missing" },
    { PROVIDER_ANTHROPIC, "{\"type\":\"error\",\"error\":{\"type\":\"api_error\"}}",
      "content is missing" },
    { PROVIDER_ANTHROPIC, "{\"content\":\"hi\"}", "content is a string, expected an array" },
    { PROVIDER_ANTHROPIC, "{\"content\":[5]}", "content[0] is not an object" },
    { PROVIDER_ANTHROPIC, "{\"content\":[{\"text\":\"x\"}]}", "content[0].type is missing" },
    { PROVIDER_ANTHROPIC, "{\"content\":[{\"type\":\"text\"}]}", "content[0].text is missing" },
    { PROVIDER_ANTHROPIC, "{\"content\":[{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"f\","
      "\"input\":\"x\"}]}", "content[0].input is a string, expected an object" },
    { PROVIDER_ANTHROPIC, "{\"content\":[{\"type\":\"tool_use\",\"name\":\"f\",\"input\":{}}]}",
      "content[0].id is missing" },
    { PROVIDER_ANTHROPIC, "{\"content\":[],\"usage\":{\"input_tokens\":true}}",
      "usage.input_tokens is a boolean" },
    { PROVIDER_COHERE, "{}", "malformed answer from provider cohere: message is missing" },
    { PROVIDER_COHERE, "{\"message\":[]}", "message is an array, expected an object" },
    { PROVIDER_COHERE, "{\"message\":{}}", "neither content nor tool_calls" },
    { PROVIDER_COHERE, "{\"message\":{\"content\":[{\"type\":\"text\",\"text\":7}]}}",
      "message.content[0].text is an integer" },
    { PROVIDER_COHERE, "{\"message\":{\"tool_calls\":[{\"id\":\"x\",\"function\":{\"name\":"
      "\"f\",\"arguments\":5}}]}}", "message.tool_calls[0].function.arguments is an integer" },
    { PROVIDER_COHERE, "{\"message\":{\"content\":[]},\"usage\":{\"tokens\":[]}}",
      "usage.tokens is an array" },
    { PROVIDER_OLLAMA, "{}", "malformed answer from provider ollama: message is missing" },
    { PROVIDER_OLLAMA, "{\"message\":{\"content\":1}}", "message.content is an integer" },
    { PROVIDER_OLLAMA, "{\"message\":{\"tool_calls\":[{\"function\":{\"name\":\"f\","
      "\"arguments\":7}}]}}", "message.tool_calls[0].function.arguments is not an object" },
    { PROVIDER_OLLAMA, "{\"message\":{\"tool_calls\":[{}]}}",
      "message.tool_calls[0].function is missing" },
    { PROVIDER_OLLAMA, "{\"message\":{\"content\":\"x\"},\"eval_count\":\"3\"}",
      "eval_count is a string" },
    { PROVIDER_OLLAMA, "{\"error\":\"model 'x' not found\"}",
      "provider ollama: model 'x' not found" },
};

START_TEST(malformed_answers_are_clean_provider_errors)
{
    struct providers_response r;
    struct am_error err;
    int rc = providers_parse(malformed[_i].p, malformed[_i].body, strlen(malformed[_i].body),
                             &r, (error_clear(&err), &err));

    ck_assert_msg(rc == AM_EPROVIDER, "case %d (%s): rc %d", _i, malformed[_i].body, rc);
    ck_assert_msg(strstr(err.message, malformed[_i].want) != NULL,
                  "case %d: want \"%s\" in \"%s\"", _i, malformed[_i].want, err.message);
    ck_assert_ptr_null(r.content);
    ck_assert_ptr_null(r.calls);
    ck_assert_uint_eq(r.ncalls, 0);
}
END_TEST

/* The usage/model tail every answer but Cohere's ends with
 * (provider_wire_usage_model): counts inside "usage" (OpenAI, Anthropic)
 * or at the top level (Ollama: usage NULL); absent or null fields leave
 * what the response already holds (7, 8, "before"). */
static const struct {
    const char *body, *usage, *prompt, *completion;
    int rc, pt, ct;
    const char *model;     /* rc 0: the model expected; else text in the error */
} tails[] = {
    { "{\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4},\"model\":\"m\"}", "usage",
      "prompt_tokens", "completion_tokens", 0, 3, 4, "m" },
    { "{}", "usage", "prompt_tokens", "completion_tokens", 0, 7, 8, "before" },
    { "{\"usage\":null,\"model\":null}", "usage", "prompt_tokens", "completion_tokens",
      0, 7, 8, "before" },
    { "{\"usage\":{\"input_tokens\":1},\"model\":\"c\"}", "usage", "input_tokens",
      "output_tokens", 0, 1, 8, "c" },
    { "{\"prompt_eval_count\":5,\"eval_count\":6.0,\"model\":\"l\"}", NULL, "prompt_eval_count",
      "eval_count", 0, 5, 6, "l" },
    { "{\"usage\":{\"prompt_eval_count\":5,\"eval_count\":6}}", NULL, "prompt_eval_count",
      "eval_count", 0, 7, 8, "before" },
    { "{\"usage\":[]}", "usage", "prompt_tokens", "completion_tokens", AM_EPROVIDER, 0, 0,
      "malformed answer from provider p: usage is an array, expected an object" },
    { "{\"usage\":{\"completion_tokens\":-1}}", "usage", "prompt_tokens", "completion_tokens",
      AM_EPROVIDER, 0, 0, "malformed answer from provider p: usage.completion_tokens out of range" },
    { "{\"eval_count\":\"3\"}", NULL, "prompt_eval_count", "eval_count", AM_EPROVIDER, 0, 0,
      "malformed answer from provider p: eval_count is a string, expected an integer" },
    { "{\"usage\":{},\"model\":5}", "usage", "prompt_tokens", "completion_tokens", AM_EPROVIDER,
      0, 0, "malformed answer from provider p: model is an integer, expected a string" },
};

START_TEST(usage_and_model_tail_reads_counts_where_the_protocol_puts_them)
{
    struct json_object *root = json_tokener_parse(tails[_i].body);
    struct providers_response r = { .prompt_tokens = 7, .completion_tokens = 8 };
    struct am_error err = {0};
    int rc;

    ck_assert_ptr_nonnull(root);
    util_strlcpy(r.model, "before", sizeof(r.model));
    rc = provider_wire_usage_model(root, tails[_i].usage, tails[_i].prompt,
                                   tails[_i].completion, "p", &r, &err);
    ck_assert_msg(rc == tails[_i].rc, "case %d: rc %d (%s)", _i, rc, err.message);
    if (rc == 0) {
        ck_assert_int_eq(r.prompt_tokens, tails[_i].pt);
        ck_assert_int_eq(r.completion_tokens, tails[_i].ct);
        ck_assert_str_eq(r.model, tails[_i].model);
    } else {
        ck_assert_str_eq(err.message, tails[_i].model);
    }
    json_object_put(root);
}
END_TEST

START_TEST(token_count_at_int_max_is_accepted)
{
    struct providers_response r;

    parse_ok(PROVIDER_OPENAI, "{\"choices\":[{\"message\":{\"content\":\"x\"}}],\"usage\":"
             "{\"prompt_tokens\":2147483647,\"completion_tokens\":3.0}}", &r);
    ck_assert_int_eq(r.prompt_tokens, INT_MAX);
    ck_assert_int_eq(r.completion_tokens, 3);
    providers_response_free(&r);
}
END_TEST

START_TEST(deep_nesting_is_refused_without_recursion)
{
    const size_t depth = 200000;
    char *body = xmalloc(depth * 2 + 64);
    struct providers_response r;
    struct am_error err = {0};
    size_t n;

    n = (size_t)sprintf(body, "{\"choices\":");
    memset(body + n, '[', depth);
    memset(body + n + depth, ']', depth);
    strcpy(body + n + 2 * depth, "}");
    ck_assert_int_eq(providers_parse(PROVIDER_OPENAI, body, strlen(body), &r, &err),
                     AM_EPROVIDER);
    ck_assert_ptr_nonnull(strstr(err.message, "too deeply nested"));
    free(body);
}
END_TEST

START_TEST(embedded_nul_and_null_body_are_refused)
{
    static const char withnul[] = "{\"choices\":[]}\0{\"x\":1}";
    struct providers_response r;
    struct am_error err = {0};

    ck_assert_int_eq(providers_parse(PROVIDER_OPENAI, withnul, sizeof(withnul) - 1, &r, &err),
                     AM_EPROVIDER);
    ck_assert_int_eq(providers_parse(PROVIDER_OPENAI, NULL, 10, &r, &err), AM_EPROVIDER);
    ck_assert_ptr_nonnull(strstr(err.message, "empty"));
    ck_assert_int_eq(providers_parse(-1, "{}", 2, &r, &err), AM_EINTERNAL);
}
END_TEST

static const struct { int p; const char *body; } valid[] = {
    { PROVIDER_OPENAI, openai_text }, { PROVIDER_OPENAI, openai_tools },
    { PROVIDER_ANTHROPIC, anthropic_answer }, { PROVIDER_COHERE, cohere_text },
    { PROVIDER_COHERE, cohere_tools }, { PROVIDER_OLLAMA, ollama_answer },
};

START_TEST(every_truncation_of_a_valid_answer_is_refused)
{
    const char *body = valid[_i].body;
    size_t len = strlen(body), n;

    for (n = 0; n < len; n++) {
        struct providers_response r;
        struct am_error err = {0};
        int rc = providers_parse(valid[_i].p, body, n, &r, &err);

        ck_assert_msg(rc == AM_EPROVIDER, "prefix of %zu bytes: rc %d", n, rc);
        ck_assert_ptr_nonnull(strstr(err.message, "malformed answer"));
    }
}
END_TEST

/* Replace each byte with each of a few troublesome ones: the parse must
 * succeed or fail cleanly (valgrind and ASan builds catch the rest). */
START_TEST(byte_mutations_of_a_valid_answer_never_crash)
{
    static const char subst[] = { '"', '{', '}', '[', ']', ':', ',', '\\', '0', 'x', '\0', ' ' };
    size_t len = strlen(valid[_i].body), i, k;
    char *copy = xmalloc(len + 1);

    for (i = 0; i < len; i++)
        for (k = 0; k < sizeof(subst); k++) {
            struct providers_response r;
            struct am_error err = {0};
            int rc;

            memcpy(copy, valid[_i].body, len + 1);
            copy[i] = subst[k];
            rc = providers_parse(valid[_i].p, copy, len, &r, &err);
            ck_assert_msg(rc == 0 || rc == AM_EPROVIDER, "byte %zu -> %d: rc %d", i, subst[k],
                          rc);
            if (rc == 0) {
                ck_assert_ptr_nonnull(r.content);
                providers_response_free(&r);
            } else {
                ck_assert_ptr_null(r.content);
            }
        }
    free(copy);
}
END_TEST

/* tests/corpus/providers/<ok|bad>-<provider>-<what>.json: "ok" files must
 * parse, "bad" ones must be refused with AM_EPROVIDER. */
START_TEST(corpus_replays_cleanly)
{
    char dir[PATH_MAX], path[PATH_MAX * 2], pname[32];
    struct dirent *de;
    DIR *d;
    int seen = 0;

    snprintf(dir, sizeof(dir), "%s/tests/corpus/providers", srcdir());
    d = opendir(dir);
    ck_assert_msg(d != NULL, "opendir %s: %s", dir, strerror(errno));
    while ((de = readdir(d)) != NULL) {
        const char *name = de->d_name, *dash;
        struct providers_response r;
        struct am_error err = {0};
        char *buf;
        long n;
        FILE *fp;
        int ok, p, rc;

        if (name[0] == '.' || strstr(name, ".json") == NULL)
            continue;
        ok = strncmp(name, "ok-", 3) == 0;
        ck_assert_msg(ok || strncmp(name, "bad-", 4) == 0, "%s: name ok-* or bad-*", name);
        dash = strchr(name + (ok ? 3 : 4), '-');
        ck_assert_msg(dash != NULL, "%s: no provider in the name", name);
        util_strlcpy(pname, name + (ok ? 3 : 4), (size_t)(dash - name) - (ok ? 3 : 4) + 1);
        p = config_provider_from_name(pname);
        ck_assert_msg(p >= 0, "%s: unknown provider %s", name, pname);
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        fp = fopen(path, "rb");
        ck_assert_msg(fp != NULL, "%s: %s", path, strerror(errno));
        fseek(fp, 0, SEEK_END);
        n = ftell(fp);
        rewind(fp);
        buf = xmalloc((size_t)n + 1);
        ck_assert(fread(buf, 1, (size_t)n, fp) == (size_t)n);
        fclose(fp);
        rc = providers_parse(p, buf, (size_t)n, &r, &err);
        free(buf);
        ck_assert_msg(rc == (ok ? 0 : AM_EPROVIDER), "%s: rc %d (%s)", name, rc, err.message);
        providers_response_free(&r);
        seen++;
    }
    closedir(d);
    ck_assert_int_gt(seen, 0);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* The echo provider                                                         */

static int echo_chat(const struct providers_message *msgs, size_t n,
                     const struct providers_tool *tools, size_t ntools,
                     struct providers_response *r)
{
    struct providers_request req = {
        .provider = PROVIDER_ECHO, .model = "echo-1", .messages = msgs, .nmessages = n,
        .tools = tools, .ntools = ntools,
    };
    struct am_error err = {0};

    return providers_chat(&req, r, &err);
}

START_TEST(echo_answers_the_last_user_message_with_word_counts)
{
    static const struct providers_message msgs[] = {
        { .role = "system", .content = "be kind" },
        { .role = "user", .content = "first question" },
        { .role = "assistant", .content = "an answer" },
        { .role = "user", .content = "hello  there\tworld" },
    };
    struct providers_response r;

    ck_assert_int_eq(echo_chat(msgs, 4, NULL, 0, &r), 0);
    ck_assert_str_eq(r.content, "echo: hello  there\tworld");
    ck_assert_int_eq(r.prompt_tokens, 2 + 2 + 2 + 3);
    ck_assert_int_eq(r.completion_tokens, 4);
    ck_assert_str_eq(r.model, "echo-1");
    ck_assert_uint_eq(r.ncalls, 0);
    providers_response_free(&r);
}
END_TEST

START_TEST(echo_calls_the_calculator_when_told_to_use_it)
{
    static const struct providers_message msgs[] = {
        { .role = "user", .content = "please use calculator: 2+2 * 3 " },
    };
    static const struct providers_tool tools[] = {
        { .name = "datetime" }, { .name = "calculator" },
    };
    struct providers_response r;

    ck_assert_int_eq(echo_chat(msgs, 1, tools, 2, &r), 0);
    ck_assert_str_eq(r.content, "");
    ck_assert_uint_eq(r.ncalls, 1);
    ck_assert_str_eq(r.calls[0].name, "calculator");
    ck_assert_str_eq(r.calls[0].id, "call_echo_1");
    ck_assert_str_eq(r.calls[0].arguments, "{\"expression\":\"2+2 * 3\"}");
    providers_response_free(&r);
}
END_TEST

START_TEST(echo_calls_other_tools_with_input)
{
    static const struct providers_message msgs[] = {
        { .role = "user", .content = "use web_search: \"astromesh\" news" },
    };
    static const struct providers_tool tools[] = { { .name = "web_search" } };
    struct providers_response r;

    ck_assert_int_eq(echo_chat(msgs, 1, tools, 1, &r), 0);
    ck_assert_uint_eq(r.ncalls, 1);
    ck_assert_str_eq(r.calls[0].arguments, "{\"input\":\"\\\"astromesh\\\" news\"}");
    providers_response_free(&r);
}
END_TEST

START_TEST(echo_reports_the_tool_result)
{
    static struct providers_tool_call c = { .id = "call_echo_1", .name = "calculator",
                                            .arguments = "{\"expression\":\"2+2\"}" };
    static const struct providers_message msgs[] = {
        { .role = "user", .content = "use calculator: 2+2" },
        { .role = "assistant", .calls = &c, .ncalls = 1 },
        { .role = "tool", .content = "4", .tool_call_id = "call_echo_1" },
    };
    static const struct providers_tool tools[] = { { .name = "calculator" } };
    struct providers_response r;

    ck_assert_int_eq(echo_chat(msgs, 3, tools, 1, &r), 0);
    ck_assert_uint_eq(r.ncalls, 0);
    ck_assert_str_eq(r.content, "echo: tool said 4");
    ck_assert_int_eq(r.completion_tokens, 4);
    providers_response_free(&r);
}
END_TEST

START_TEST(echo_calls_only_offered_tools_named_in_full)
{
    static const struct providers_message m1[] = {
        { .role = "user", .content = "use calculators: 1" } };
    static const struct providers_message m2[] = {
        { .role = "user", .content = "reuse calculator: 1" } };
    static const struct providers_message m3[] = {
        { .role = "user", .content = "use datetime now" } };
    static const struct providers_tool tools[] = { { .name = "calculator" } };
    struct providers_response r;

    ck_assert_int_eq(echo_chat(m1, 1, tools, 1, &r), 0);
    ck_assert_uint_eq(r.ncalls, 0);
    providers_response_free(&r);
    ck_assert_int_eq(echo_chat(m2, 1, tools, 1, &r), 0);
    ck_assert_uint_eq(r.ncalls, 0);
    providers_response_free(&r);
    ck_assert_int_eq(echo_chat(m3, 1, tools, 1, &r), 0);
    ck_assert_str_eq(r.content, "echo: use datetime now");
    providers_response_free(&r);
    ck_assert_int_eq(echo_chat(m1, 1, NULL, 0, &r), 0);
    ck_assert_uint_eq(r.ncalls, 0);
    providers_response_free(&r);
}
END_TEST

START_TEST(echo_without_messages_answers_empty_echo)
{
    struct providers_response r;

    ck_assert_int_eq(echo_chat(NULL, 0, NULL, 0, &r), 0);
    ck_assert_str_eq(r.content, "echo: ");
    ck_assert_int_eq(r.prompt_tokens, 0);
    providers_response_free(&r);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* providers_chat against the fake provider                                  */

static int chat(const struct providers_request *req, struct providers_response *r,
                struct am_error *err)
{
    error_clear(err);
    return providers_chat(req, r, err);
}

START_TEST(each_protocol_answers_with_usage_from_the_fake)
{
    int p = remote_providers[_i];
    struct providers_request req = simple_request(p, p == PROVIDER_OLLAMA ? NULL : KEY);
    struct providers_response r;
    struct am_error err;
    struct json_object *reqs, *h;

    fake_control("{}");
    ck_assert_msg(chat(&req, &r, &err) == 0, "%s: %s", config_provider_name(p), err.message);
    ck_assert_str_eq(r.content, "fake answer to: what is two plus two");
    ck_assert_int_eq(r.prompt_tokens, 3 + 5);
    ck_assert_int_eq(r.completion_tokens, 8);
    ck_assert_str_eq(r.model, "fake-model");
    providers_response_free(&r);

    reqs = fake_requests();
    ck_assert_uint_eq(json_object_array_length(reqs), 1);
    ck_assert_pstr_eq(jstr(reqs, "0.body.model"), "fake-model");
    ck_assert_pstr_eq(jstr(reqs, "0.headers.Content-Type"), "application/json");
    h = jpath(reqs, "0.headers");
    switch (p) {
    case PROVIDER_ANTHROPIC:
        ck_assert_pstr_eq(jstr(reqs, "0.path"), "/v1/messages");
        ck_assert_pstr_eq(jstr(h, "x-api-key"), "<present>");
        ck_assert_pstr_eq(jstr(h, "anthropic-version"), "2023-06-01");
        ck_assert_pstr_eq(jstr(reqs, "0.body.system"), "You are terse.");
        break;
    case PROVIDER_COHERE:
        ck_assert_pstr_eq(jstr(reqs, "0.path"), "/v2/chat");
        ck_assert_pstr_eq(jstr(h, "Authorization"), "<present>");
        break;
    case PROVIDER_OLLAMA:
        ck_assert_pstr_eq(jstr(reqs, "0.path"), "/api/chat");
        ck_assert(!jhas(h, "Authorization"));
        break;
    default:
        ck_assert_pstr_eq(jstr(reqs, "0.path"), "/v1/chat/completions");
        ck_assert_pstr_eq(jstr(h, "Authorization"), "<present>");
        break;
    }
    json_object_put(reqs);
}
END_TEST

START_TEST(tool_call_round_trip_in_each_protocol)
{
    int p = remote_providers[_i];
    struct providers_request req = simple_request(p, KEY);
    struct providers_message msgs[4];
    struct providers_response r, r2;
    struct am_error err;
    struct json_object *args;

    fake_control("{\"tool_call\":{\"name\":\"calculator\",\"arguments\":{\"expression\":"
                 "\"2+2\"}}}");
    req.tools = &calc_tool;
    req.ntools = 1;
    ck_assert_msg(chat(&req, &r, &err) == 0, "%s: %s", config_provider_name(p), err.message);
    ck_assert_uint_eq(r.ncalls, 1);
    ck_assert_str_eq(r.calls[0].name, "calculator");
    ck_assert_str_ne(r.calls[0].id, "");
    args = json_tokener_parse(r.calls[0].arguments);
    ck_assert_pstr_eq(jstr(args, "expression"), "2+2");
    json_object_put(args);

    /* Send the result back: the fake answers normally and quotes it. */
    memcpy(msgs, question, sizeof(question));
    msgs[2] = (struct providers_message){ .role = "assistant", .calls = r.calls, .ncalls = 1 };
    msgs[3] = (struct providers_message){ .role = "tool", .content = "4",
                                          .tool_call_id = r.calls[0].id,
                                          .tool_name = "calculator" };
    req.messages = msgs;
    req.nmessages = 4;
    ck_assert_msg(chat(&req, &r2, &err) == 0, "%s: %s", config_provider_name(p), err.message);
    ck_assert_uint_eq(r2.ncalls, 0);
    ck_assert_str_eq(r2.content, "fake answer to: what is two plus two; tool said: 4");
    providers_response_free(&r2);
    providers_response_free(&r);
}
END_TEST

static const int keyed_providers[] = { PROVIDER_OPENAI, PROVIDER_ANTHROPIC, PROVIDER_COHERE };

START_TEST(wrong_key_is_rejected_without_leaking_it)
{
    int p = keyed_providers[_i];
    struct providers_request req = simple_request(p, WRONG_KEY);
    struct providers_response r;
    struct am_error err;
    char want[128];

    fake_control("{}");
    ck_assert_int_eq(chat(&req, &r, &err), AM_EPROVIDER);
    snprintf(want, sizeof(want), "provider %s rejected the API key (HTTP 401)",
             config_provider_name(p));
    ck_assert_str_eq(err.message, want);
    ck_assert_ptr_null(strstr(err.message, WRONG_KEY));
    ck_assert_ptr_null(r.content);
    /* and with no key at all */
    req.api_key = NULL;
    ck_assert_int_eq(chat(&req, &r, &err), AM_EPROVIDER);
    ck_assert_str_eq(err.message, want);
}
END_TEST

START_TEST(unauthorized_answer_maps_to_provider_error)
{
    struct providers_request req = simple_request(PROVIDER_GROQ, KEY);
    struct providers_response r;
    struct am_error err;

    fake_control("{\"mode\":\"unauthorized\"}");
    ck_assert_int_eq(chat(&req, &r, &err), AM_EPROVIDER);
    ck_assert_str_eq(err.message, "provider groq rejected the API key (HTTP 401)");
}
END_TEST

START_TEST(provider_error_text_is_quoted_but_scrubbed_of_the_key)
{
    struct providers_request req = simple_request(PROVIDER_OPENAI, KEY);
    struct providers_response r;
    struct am_error err;

    fake_control("{\"mode\":\"fail\",\"status\":500,\"error_message\":\"backend exploded "
                 "while using " KEY "\"}");
    ck_assert_int_eq(chat(&req, &r, &err), AM_EPROVIDER);
    ck_assert_ptr_nonnull(strstr(err.message, "provider openai answered HTTP 500"));
    ck_assert_ptr_nonnull(strstr(err.message, "backend exploded"));
    ck_assert_ptr_nonnull(strstr(err.message, "[redacted]"));
    ck_assert_ptr_null(strstr(err.message, KEY));
}
END_TEST

/* providers_scrub_key: the whole key and any run of 8+ of its characters. */
static const struct {
    const char *key, *message, *want;
} scrubs[] = {
    { "sk-live-0123456789abcdef", "Incorrect API key provided: sk-live-0123456789abcdef.",
      "Incorrect API key provided: [redacted]." },
    { "sk-live-0123456789abcdef", "key sk-live-0123456789abcdef twice sk-live-0123456789abcdef",
      "key [redacted] twice [redacted]" },
    /* a prefix, a suffix and a middle of 8+ characters */
    { "sk-live-0123456789abcdef", "provided: sk-live-01****", "provided: [redacted]****" },
    { "sk-live-0123456789abcdef", "ends in ...456789abcdef!", "ends in ...[redacted]!" },
    { "sk-live-0123456789abcdef", "middle e-012345 here", "middle [redacted] here" },
    /* 7 characters of it are not enough to say anything */
    { "sk-live-0123456789abcdef", "prefix sk-live is fine", "prefix sk-live is fine" },
    { "sk-live-0123456789abcdef", "no key at all", "no key at all" },
    /* a short key goes only whole */
    { "abc12", "bad key abc12!", "bad key [redacted]!" },
    { "", "empty key: nothing to do", "empty key: nothing to do" },
};

START_TEST(scrub_removes_the_key_and_its_long_runs)
{
    struct am_error err;

    error_clear(&err);
    error_set(&err, AM_EPROVIDER, "%s", scrubs[_i].message);
    providers_scrub_key(&err, scrubs[_i].key);
    ck_assert_str_eq(err.message, scrubs[_i].want);
}
END_TEST

START_TEST(partly_quoted_key_in_an_answer_is_scrubbed)
{
    struct providers_request req = simple_request(PROVIDER_OPENAI, KEY);
    struct providers_response r;
    struct am_error err;
    char quoted[64];

    /* the provider quotes all but the last character of the key */
    snprintf(quoted, sizeof(quoted), "%.*s", (int)strlen(KEY) - 1, KEY);
    {
        char ctl[256];
        snprintf(ctl, sizeof(ctl), "{\"mode\":\"fail\",\"status\":400,\"error_message\":"
                 "\"Incorrect API key provided: %s*\"}", quoted);
        fake_control(ctl);
    }
    /* a 400 is the request's error: its message reaches the client, scrubbed */
    ck_assert_int_eq(chat(&req, &r, &err), AM_EPROVIDERREJECT);
    ck_assert_ptr_nonnull(strstr(err.message, "Incorrect API key provided: [redacted]*"));
    ck_assert_ptr_null(strstr(err.message, quoted + strlen(quoted) - 8));
}
END_TEST

START_TEST(rate_limit_and_server_errors_carry_the_status)
{
    struct providers_request req = simple_request(PROVIDER_ANTHROPIC, KEY);
    struct providers_response r;
    struct am_error err;

    fake_control("{\"mode\":\"fail\",\"status\":429}");
    ck_assert_int_eq(chat(&req, &r, &err), AM_EPROVIDER);
    ck_assert_ptr_nonnull(strstr(err.message, "provider anthropic answered HTTP 429 "
                                 "(rate limited)"));
    fake_control("{\"mode\":\"fail\",\"status\":503}");
    req = simple_request(PROVIDER_OLLAMA, NULL);
    ck_assert_int_eq(chat(&req, &r, &err), AM_EPROVIDER);
    ck_assert_ptr_nonnull(strstr(err.message, "provider ollama answered HTTP 503"));
}
END_TEST

/* The outcome's class: 400, 404, 413 and 422 are the request's own error
 * (AM_EPROVIDERREJECT: no breaker, no fallback), 401, 403, 429 and 5xx the
 * provider's; the status and a 429's Retry-After come back with either. */
START_TEST(request_errors_are_told_from_provider_errors)
{
    static const struct { int status, want; } cases[] = {
        { 400, AM_EPROVIDERREJECT }, { 404, AM_EPROVIDERREJECT },
        { 413, AM_EPROVIDERREJECT }, { 422, AM_EPROVIDERREJECT },
        { 401, AM_EPROVIDER }, { 403, AM_EPROVIDER }, { 429, AM_EPROVIDER },
        { 500, AM_EPROVIDER }, { 503, AM_EPROVIDER },
    };
    static const struct providers_message retry[2] = {
        { .role = "system", .content = "You help." },
        { .role = "user", .content = "FAKE_STATUS=429 FAKE_RETRY_AFTER=7" },
    };
    struct providers_request req;
    struct providers_response r;
    struct am_error err;
    char ctl[96];
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        req = simple_request(PROVIDER_OPENAI, KEY);
        snprintf(ctl, sizeof(ctl), "{\"mode\":\"fail\",\"status\":%d}", cases[i].status);
        fake_control(ctl);
        ck_assert_int_eq(chat(&req, &r, &err), cases[i].want);
        ck_assert_int_eq(r.http_status, cases[i].status);
        ck_assert_int_eq(r.retry_after_s, 0);
    }
    fake_control("{}");
    req = simple_request(PROVIDER_OPENAI, KEY);
    req.messages = retry;
    ck_assert_int_eq(chat(&req, &r, &err), AM_EPROVIDER);
    ck_assert_int_eq(r.http_status, 429);
    ck_assert_int_eq(r.retry_after_s, 7);
}
END_TEST

START_TEST(hang_times_out_within_the_timeout)
{
    struct providers_request req = simple_request(PROVIDER_OPENAI, KEY);
    struct providers_response r;
    struct am_error err;
    uint64_t t0;

    fake_control("{\"mode\":\"hang\"}");
    req.timeout_ms = 300;
    t0 = util_monotonic_ms();
    ck_assert_int_eq(chat(&req, &r, &err), AM_ETIMEOUT);
    ck_assert_uint_lt(util_monotonic_ms() - t0, 300 + 2000);
    ck_assert_uint_ge(util_monotonic_ms() - t0, 250);
    ck_assert_str_eq(err.message, "provider openai timed out after 300 ms");
    ck_assert_ptr_null(r.content);
}
END_TEST

/* The alive hook: gone after a set time (monotonic ms). */
static int alive_until(void *arg)
{
    return util_monotonic_ms() < *(const uint64_t *)arg;
}

START_TEST(a_client_gone_abandons_a_silent_provider_within_a_second)
{
    struct providers_request req = simple_request(PROVIDER_OPENAI, KEY);
    struct providers_response r;
    struct am_error err;
    struct json_object *reqs, *last, *v;
    uint64_t t0, gone;

    fake_control("{\"mode\":\"hang\"}");
    req.timeout_ms = 20000;
    t0 = util_monotonic_ms();
    gone = t0 + 300;
    req.alive = alive_until;
    req.alive_arg = &gone;
    ck_assert_int_eq(chat(&req, &r, &err), AM_ECANCELLED);
    /* libcurl asks at least once a second while it waits */
    ck_assert_uint_lt(util_monotonic_ms() - gone, 1500);
    ck_assert_ptr_null(r.content);
    /* and the provider saw the connection close */
    for (int i = 0; i < 40; i++) {
        reqs = fake_requests();
        last = json_object_array_get_idx(reqs, json_object_array_length(reqs) - 1);
        if (last != NULL && json_object_object_get_ex(last, "hang_end", &v)) {
            ck_assert_str_eq(json_object_get_string(v), "client_gone");
            json_object_put(reqs);
            return;
        }
        json_object_put(reqs);
        nanosleep(&(struct timespec){ 0, 50 * 1000 * 1000 }, NULL);
    }
    ck_abort_msg("the fake never saw the call abandoned");
}
END_TEST

START_TEST(slow_answer_within_the_timeout_succeeds)
{
    struct providers_request req = simple_request(PROVIDER_COHERE, KEY);
    struct providers_response r;
    struct am_error err;

    fake_control("{\"mode\":\"slow\",\"delay_ms\":200}");
    ck_assert_int_eq(chat(&req, &r, &err), 0);
    ck_assert_str_eq(r.content, "fake answer to: what is two plus two");
    providers_response_free(&r);
    req.timeout_ms = 100;
    ck_assert_int_eq(chat(&req, &r, &err), AM_ETIMEOUT);
    ck_assert_str_eq(err.message, "provider cohere timed out after 100 ms");
}
END_TEST

START_TEST(malformed_and_truncated_answers_over_http_are_provider_errors)
{
    struct providers_response r;
    struct am_error err;
    size_t i;

    for (i = 0; i < NREMOTE; i++) {
        struct providers_request req = simple_request(remote_providers[i], KEY);
        char want[96];

        snprintf(want, sizeof(want), "malformed answer from provider %s",
                 config_provider_name(remote_providers[i]));
        fake_control("{\"mode\":\"malformed\"}");
        ck_assert_int_eq(chat(&req, &r, &err), AM_EPROVIDER);
        ck_assert_ptr_nonnull(strstr(err.message, want));
        fake_control("{\"mode\":\"truncated\"}");
        ck_assert_int_eq(chat(&req, &r, &err), AM_EPROVIDER);
        ck_assert_ptr_nonnull(strstr(err.message, want));
        ck_assert_ptr_nonnull(strstr(err.message, "truncated"));
    }
}
END_TEST

START_TEST(closed_port_is_unreachable)
{
    struct sockaddr_in sa = { .sin_family = AF_INET };
    socklen_t len = sizeof(sa);
    struct providers_request req = simple_request(PROVIDER_OPENAI, KEY);
    struct providers_response r;
    struct am_error err;
    char base[64];
    int s = socket(AF_INET, SOCK_STREAM, 0);

    /* A port the kernel just gave us and nobody listens on. */
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ck_assert_int_eq(getsockname(s, (struct sockaddr *)&sa, &len), 0);
    close(s);
    snprintf(base, sizeof(base), "http://127.0.0.1:%d/v1", ntohs(sa.sin_port));
    req.base_url = base;
    ck_assert_int_eq(chat(&req, &r, &err), AM_EPROVIDER);
    ck_assert_ptr_nonnull(strstr(err.message, "provider openai unreachable"));
    ck_assert_ptr_null(strstr(err.message, KEY));
}
END_TEST

START_TEST(unresolvable_host_is_unreachable)
{
    struct providers_request req = simple_request(PROVIDER_MISTRAL, KEY);
    struct providers_response r;
    struct am_error err;

    req.base_url = "http://no-such-host.invalid/v1";
    ck_assert_int_eq(chat(&req, &r, &err), AM_EPROVIDER);
    ck_assert_ptr_nonnull(strstr(err.message, "provider mistral unreachable"));
}
END_TEST

START_TEST(answer_over_8_mib_is_refused)
{
    struct providers_request req = simple_request(PROVIDER_OPENAI, KEY);
    struct providers_response r;
    struct am_error err;

    fake_control("{\"pad_bytes\":9437184}");
    ck_assert_int_eq(chat(&req, &r, &err), AM_EPROVIDER);
    ck_assert_ptr_nonnull(strstr(err.message, "answer too large"));
    fake_control("{\"pad_bytes\":1048576}");
    ck_assert_int_eq(chat(&req, &r, &err), 0);
    providers_response_free(&r);
}
END_TEST

START_TEST(per_model_behaviour_applies_to_that_model_only)
{
    struct providers_request req = simple_request(PROVIDER_OPENAI, KEY);
    struct providers_response r;
    struct am_error err;

    fake_control("{\"reply\":\"default reply\",\"per_model\":{\"broken-model\":"
                 "{\"mode\":\"fail\",\"status\":502}}}");
    req.model = "broken-model";
    ck_assert_int_eq(chat(&req, &r, &err), AM_EPROVIDER);
    ck_assert_ptr_nonnull(strstr(err.message, "HTTP 502"));
    req.model = "good-model";
    ck_assert_int_eq(chat(&req, &r, &err), 0);
    ck_assert_str_eq(r.content, "default reply");
    ck_assert_str_eq(r.model, "good-model");
    providers_response_free(&r);
}
END_TEST

START_TEST(key_with_control_characters_is_never_sent)
{
    struct providers_request req = simple_request(PROVIDER_OPENAI, "sk-abc\r\nX-Evil: 1");
    struct providers_response r;
    struct am_error err;
    struct json_object *reqs;

    fake_control("{}");
    ck_assert_int_eq(chat(&req, &r, &err), AM_EPROVIDER);
    ck_assert_ptr_null(strstr(err.message, "sk-abc"));
    reqs = fake_requests();
    ck_assert_uint_eq(json_object_array_length(reqs), 0);
    json_object_put(reqs);
}
END_TEST

/* Many threads, one easy handle each: every answer must be right. */
static void *chat_thread(void *arg)
{
    int *ok = arg, i;

    for (i = 0; i < 4; i++) {
        struct providers_request req = simple_request(remote_providers[i % NREMOTE], KEY);
        struct providers_response r;
        struct am_error err = {0};

        if (providers_chat(&req, &r, &err) == 0
            && strcmp(r.content, "fake answer to: what is two plus two") == 0)
            (*ok)++;
        else
            fprintf(stderr, "chat_thread: call %d failed: %s\n", i, err.message);
        providers_response_free(&r);
    }
    return NULL;
}

START_TEST(concurrent_calls_from_many_threads_all_succeed)
{
    pthread_t th[16];
    int ok[16] = {0}, i, total = 0;

    fake_control("{\"delay_ms\":50}");
    for (i = 0; i < 16; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, chat_thread, &ok[i]), 0);
    for (i = 0; i < 16; i++) {
        pthread_join(th[i], NULL);
        total += ok[i];
    }
    ck_assert_int_eq(total, 16 * 4);
}
END_TEST

/* ------------------------------------------------------------------------ */

/* ------------------------------------------------------------------------ */
/* Streaming                                                                 */

/* A sink that records every piece, and stops after stop_after pieces
 * (0 = never). */
struct tape {
    char text[4096];
    size_t n;
    int calls, stop_after;
};

static int tape_text(void *arg, const char *text, size_t n)
{
    struct tape *t = arg;

    ck_assert_uint_lt(t->n + n, sizeof(t->text));
    memcpy(t->text + t->n, text, n);
    t->n += n;
    t->text[t->n] = '\0';
    t->calls++;
    return t->stop_after > 0 && t->calls >= t->stop_after;
}

/* The raw 2xx body of a streamed call to the fake: the request body is
 * what providers_build makes with a sink set. Caller frees. */
static char *fake_stream_bytes(int p, size_t *len)
{
    struct tape t = {0};
    struct providers_sink sink = { tape_text, &t };
    struct providers_request req = simple_request(p, KEY);
    struct curl_slist *h = NULL;
    struct grow g = { xstrdup(""), 0 };
    struct am_error err;
    char *url, *body;
    long status = 0;
    CURL *c = curl_easy_init();

    req.tools = &calc_tool;
    req.ntools = 1;
    req.sink = &sink;
    ck_assert_int_eq(providers_build(&req, &url, &body, &err), 0);
    h = curl_slist_append(h, "Content-Type: application/json");
    h = curl_slist_append(h, "Authorization: Bearer " KEY);
    h = curl_slist_append(h, "x-api-key: " KEY);
    h = curl_slist_append(h, "anthropic-version: 2023-06-01");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, grow_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &g);
    ck_assert_int_eq(curl_easy_perform(c), CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    ck_assert_int_eq(status, 200);
    curl_easy_cleanup(c);
    curl_slist_free_all(h);
    free(url);
    free(body);
    *len = g.n;
    return g.p;
}

/* Ids carry the fake's per-answer serial: compare them without it. */
static void assert_same_id(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);

    while (na > 0 && isdigit((unsigned char)a[na - 1]))
        na--;
    while (nb > 0 && isdigit((unsigned char)b[nb - 1]))
        nb--;
    ck_assert_msg(na == nb && memcmp(a, b, na) == 0, "ids %s and %s differ", a, b);
}

static void assert_same_response(const struct providers_response *a,
                                 const struct providers_response *b)
{
    size_t i;

    ck_assert_str_eq(a->content, b->content);
    ck_assert_int_eq(a->prompt_tokens, b->prompt_tokens);
    ck_assert_int_eq(a->completion_tokens, b->completion_tokens);
    ck_assert_str_eq(a->model, b->model);
    ck_assert_uint_eq(a->ncalls, b->ncalls);
    for (i = 0; i < a->ncalls; i++) {
        assert_same_id(a->calls[i].id, b->calls[i].id);
        ck_assert_str_eq(a->calls[i].name, b->calls[i].name);
        ck_assert_str_eq(a->calls[i].arguments, b->calls[i].arguments);
    }
}

/* Feed raw to a stream reader in the pieces cut at cuts[0..ncuts). */
static int stream_read(int p, const char *raw, size_t len, const size_t *cuts, size_t ncuts,
                       struct tape *t, struct providers_response *r, struct am_error *err)
{
    struct providers_sink sink = { tape_text, t };
    struct providers_stream *s = providers_stream_new(p, &sink);
    size_t at = 0, k;
    int rc = 0;

    error_clear(err);
    for (k = 0; k <= ncuts && rc == 0; k++) {
        size_t end = k < ncuts ? cuts[k] : len;

        rc = providers_stream_feed(s, raw + at, end - at, err);
        at = end;
    }
    if (rc == 0)
        rc = providers_stream_finish(s, r, err);
    providers_stream_free(s);
    return rc;
}

static const char *const stream_settings[] = {
    "{\"reply\":\"streamed words, one by one: 42\"}",
    "{\"tool_call\":{\"name\":\"calculator\",\"arguments\":{\"expression\":\"6*7\"}}}",
};

START_TEST(every_split_of_a_recorded_stream_gives_the_buffered_response)
{
    int p = remote_providers[_i / 2];
    const char *setting = stream_settings[_i % 2];
    struct providers_request req = simple_request(p, KEY);
    struct providers_response want, got;
    struct am_error err;
    size_t len, k, *each;
    char *raw;
    struct tape t;

    req.tools = &calc_tool;
    req.ntools = 1;
    fake_control(setting);
    raw = fake_stream_bytes(p, &len);
    fake_control(setting);
    ck_assert_msg(chat(&req, &want, &err) == 0, "%s", err.message);
    each = malloc((len + 1) * sizeof(*each));
    for (k = 0; k <= len; k++) {
        memset(&t, 0, sizeof(t));
        ck_assert_msg(stream_read(p, raw, len, &k, 1, &t, &got, &err) == 0,
                      "%s cut at %zu: %s", config_provider_name(p), k, err.message);
        if (got.model[0] == '\0')
            util_strlcpy(got.model, req.model, sizeof(got.model));
        assert_same_response(&want, &got);
        ck_assert_str_eq(t.text, got.content);
        providers_response_free(&got);
        each[k] = k;
    }
    memset(&t, 0, sizeof(t));
    ck_assert_int_eq(stream_read(p, raw, len, each, len, &t, &got, &err), 0);
    ck_assert_str_eq(t.text, got.content);
    if (got.content[0] != '\0')
        ck_assert_int_gt(t.calls, 3);      /* word by word, not one piece */
    else
        ck_assert_int_eq(t.calls, 0);      /* a tool call sends no text */
    providers_response_free(&got);
    providers_response_free(&want);
    free(each);
    free(raw);
}
END_TEST

START_TEST(streamed_chat_asks_for_a_stream_and_hands_over_words_in_order)
{
    int p = remote_providers[_i];
    struct providers_request req = simple_request(p, p == PROVIDER_OLLAMA ? NULL : KEY);
    struct tape t = {0};
    struct providers_sink sink = { tape_text, &t };
    struct providers_response r;
    struct am_error err;
    struct json_object *reqs;

    req.sink = &sink;
    fake_control("{\"reply\":\"one two three four five\"}");
    ck_assert_msg(chat(&req, &r, &err) == 0, "%s: %s", config_provider_name(p), err.message);
    ck_assert_str_eq(r.content, "one two three four five");
    ck_assert_str_eq(t.text, r.content);
    ck_assert_int_eq(t.calls, 5);
    ck_assert_int_eq(r.prompt_tokens, 3 + 5);
    ck_assert_int_eq(r.completion_tokens, 5);
    ck_assert_str_eq(r.model, "fake-model");
    providers_response_free(&r);
    reqs = fake_requests();
    ck_assert(json_object_get_boolean(jpath(reqs, "0.body.stream")));
    if (p == PROVIDER_OPENAI || p == PROVIDER_GROQ || p == PROVIDER_MISTRAL)
        ck_assert(json_object_get_boolean(jpath(reqs, "0.body.stream_options.include_usage")));
    json_object_put(reqs);
}
END_TEST

START_TEST(buffered_chat_sends_the_same_bytes_as_before)
{
    int p = remote_providers[_i];
    struct providers_request req = simple_request(p, KEY);
    struct am_error err;
    char *url, *body;

    ck_assert_int_eq(providers_build(&req, &url, &body, &err), 0);
    ck_assert_ptr_null(strstr(body, "\"stream\":true"));
    ck_assert_ptr_null(strstr(body, "stream_options"));
    free(url);
    free(body);
}
END_TEST

START_TEST(a_sink_that_says_stop_abandons_the_transfer_at_once)
{
    int p = remote_providers[_i];
    struct providers_request req = simple_request(p, p == PROVIDER_OLLAMA ? NULL : KEY);
    struct tape t = {0};
    struct providers_sink sink = { tape_text, &t };
    struct providers_response r;
    struct am_error err;
    uint64_t t0 = util_monotonic_ms();

    t.stop_after = 2;
    req.sink = &sink;
    fake_control("{\"reply\":\"a b c d e f g h i j k l m n o p\",\"chunk_delay_ms\":150}");
    ck_assert_int_eq(chat(&req, &r, &err), AM_ECANCELLED);
    ck_assert_int_eq(t.calls, 2);
    ck_assert_uint_lt(util_monotonic_ms() - t0, 1500);   /* 18 chunks would take 2.7 s */
    ck_assert_ptr_null(r.content);
}
END_TEST

static const struct { int p; const char *raw, *want; } bad_streams[] = {
    { PROVIDER_OPENAI, "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n"
                       "data: {\"choices\":[{\"delta\":{\"cont\n\n", "stream event: " },
    { PROVIDER_OPENAI, "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n",
      "truncated stream" },
    { PROVIDER_OPENAI, "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n"
                       "data: {\"error\":{\"message\":\"overloaded, try later\"}}\n\n",
      "provider openai: overloaded, try later" },
    { PROVIDER_OPENAI, "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":99,"
                       "\"id\":\"c\"}]}}]}\n\n", "index missing or out of range" },
    { PROVIDER_OPENAI, "data: [1,2]\n\n", "not a JSON object" },
    { PROVIDER_ANTHROPIC, "event: message_start\ndata: {\"type\":\"message_start\","
                          "\"message\":{\"model\":\"m\"}}\n\nevent: error\ndata: {\"type\":"
                          "\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":"
                          "\"Overloaded\"}}\n\n", "provider anthropic: Overloaded" },
    { PROVIDER_ANTHROPIC, "event: content_block_start\ndata: {\"type\":\"content_block_start\","
                          "\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t\","
                          "\"name\":\"calculator\"}}\n\nevent: content_block_delta\ndata: "
                          "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
                          "\"input_json_delta\",\"partial_json\":\"{\\\"a\\\":\"}}\n\n"
                          "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
      "input is not an object" },
    { PROVIDER_COHERE, "event: content-delta\ndata: {\"type\":\"content-delta\",\"delta\":"
                       "{\"message\":{\"content\":{\"text\":\"hi\"}}}}\n\n", "truncated stream" },
    { PROVIDER_OLLAMA, "{\"message\":{\"content\":\"hi\"},\"done\":false}\n{\"message\":{\"con",
      "stream event: " },
    { PROVIDER_OLLAMA, "{\"message\":{\"content\":\"hi\"},\"done\":false}\n",
      "truncated stream" },
    { PROVIDER_OLLAMA, "{\"message\":{\"content\":\"hi\"},\"done\":false}\n"
                       "{\"error\":\"model runner crashed\"}\n",
      "provider ollama: model runner crashed" },
};

START_TEST(malformed_streams_are_clean_provider_errors)
{
    struct tape t = {0};
    struct providers_response r;
    struct am_error err;
    const char *raw = bad_streams[_i].raw;

    ck_assert_int_eq(stream_read(bad_streams[_i].p, raw, strlen(raw), NULL, 0, &t, &r, &err),
                     AM_EPROVIDER);
    ck_assert_msg(strstr(err.message, bad_streams[_i].want) != NULL, "got \"%s\", want \"%s\"",
                  err.message, bad_streams[_i].want);
}
END_TEST

START_TEST(truncated_stream_over_http_is_a_provider_error)
{
    int p = remote_providers[_i];
    struct providers_request req = simple_request(p, p == PROVIDER_OLLAMA ? NULL : KEY);
    struct tape t = {0};
    struct providers_sink sink = { tape_text, &t };
    struct providers_response r;
    struct am_error err;

    req.sink = &sink;
    fake_control("{\"mode\":\"truncated\",\"reply\":\"one two three four five six\"}");
    ck_assert_int_eq(chat(&req, &r, &err), AM_EPROVIDER);
    ck_assert_msg(strstr(err.message, "truncated") != NULL, "%s", err.message);
    ck_assert_int_gt(t.calls, 0);           /* the words before the cut went out */
    memset(&t, 0, sizeof(t));
    fake_control("{\"mode\":\"fail\",\"status\":503}");
    ck_assert_int_eq(chat(&req, &r, &err), AM_EPROVIDER);
    ck_assert_msg(strstr(err.message, "HTTP 503") != NULL, "%s", err.message);
    ck_assert_int_eq(t.calls, 0);
}
END_TEST

START_TEST(echo_streams_word_by_word)
{
    static const struct providers_message m[] = { { .role = "user", .content = "a  bc d" } };
    struct tape t = {0};
    struct providers_sink sink = { tape_text, &t };
    struct providers_request req = { .provider = PROVIDER_ECHO, .model = "e", .messages = m,
                                     .nmessages = 1, .sink = &sink };
    struct providers_response r;
    struct am_error err;

    ck_assert_int_eq(chat(&req, &r, &err), 0);
    ck_assert_str_eq(r.content, "echo: a  bc d");
    ck_assert_str_eq(t.text, r.content);
    ck_assert_int_eq(t.calls, 4);           /* "echo: " "a  " "bc " "d" */
    providers_response_free(&r);
    memset(&t, 0, sizeof(t));
    t.stop_after = 1;
    ck_assert_int_eq(chat(&req, &r, &err), AM_ECANCELLED);
}
END_TEST

static Suite *providers_suite(void)
{
    Suite *s = suite_create("providers");
    TCase *tc;

    tc = tcase_create("build");
    tcase_add_test(tc, url_is_base_url_plus_protocol_path);
    tcase_add_test(tc, build_without_http_base_url_is_provider_error);
    tcase_add_test(tc, openai_body_has_messages_tool_calls_and_function_tools);
    tcase_add_test(tc, openai_body_leaves_out_max_tokens_and_tools_when_unset);
    tcase_add_test(tc, anthropic_body_lifts_system_and_merges_same_role_messages);
    tcase_add_test(tc, anthropic_body_defaults_max_tokens_to_1024_and_drops_empty_text);
    tcase_add_test(tc, cohere_body_keeps_roles_and_uses_tool_plan_and_tool_call_id);
    tcase_add_test(tc, ollama_body_is_non_streaming_with_object_arguments_and_num_predict);
    tcase_add_test(tc, build_rejects_tool_schema_that_is_not_an_object);
    tcase_add_test(tc, build_rejects_unknown_role_and_missing_model);
    suite_add_tcase(s, tc);

    tc = tcase_create("parse");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, openai_answer_gives_text_usage_and_model);
    tcase_add_test(tc, openai_answer_gives_tool_calls_with_json_text_arguments);
    tcase_add_test(tc, openai_refusal_is_the_answer_text);
    tcase_add_test(tc, anthropic_answer_gives_text_tool_use_and_usage);
    tcase_add_test(tc, cohere_answer_joins_text_and_prefers_tokens_over_billed_units);
    tcase_add_test(tc, ollama_answer_gets_synthesised_call_ids_and_eval_counts);
    tcase_add_loop_test(tc, malformed_answers_are_clean_provider_errors, 0,
                        (int)(sizeof(malformed) / sizeof(malformed[0])));
    tcase_add_test(tc, token_count_at_int_max_is_accepted);
    tcase_add_loop_test(tc, usage_and_model_tail_reads_counts_where_the_protocol_puts_them, 0,
                        (int)(sizeof(tails) / sizeof(tails[0])));
    tcase_add_test(tc, deep_nesting_is_refused_without_recursion);
    tcase_add_test(tc, embedded_nul_and_null_body_are_refused);
    tcase_add_loop_test(tc, every_truncation_of_a_valid_answer_is_refused, 0,
                        (int)(sizeof(valid) / sizeof(valid[0])));
    tcase_add_loop_test(tc, byte_mutations_of_a_valid_answer_never_crash, 0,
                        (int)(sizeof(valid) / sizeof(valid[0])));
    tcase_add_test(tc, corpus_replays_cleanly);
    suite_add_tcase(s, tc);

    tc = tcase_create("echo");
    tcase_add_test(tc, echo_answers_the_last_user_message_with_word_counts);
    tcase_add_test(tc, echo_calls_the_calculator_when_told_to_use_it);
    tcase_add_test(tc, echo_calls_other_tools_with_input);
    tcase_add_test(tc, echo_reports_the_tool_result);
    tcase_add_test(tc, echo_calls_only_offered_tools_named_in_full);
    tcase_add_test(tc, echo_without_messages_answers_empty_echo);
    suite_add_tcase(s, tc);

    tc = tcase_create("transport");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, each_protocol_answers_with_usage_from_the_fake, 0, (int)NREMOTE);
    tcase_add_loop_test(tc, tool_call_round_trip_in_each_protocol, 0, (int)NREMOTE);
    tcase_add_loop_test(tc, wrong_key_is_rejected_without_leaking_it, 0,
                        (int)(sizeof(keyed_providers) / sizeof(keyed_providers[0])));
    tcase_add_test(tc, unauthorized_answer_maps_to_provider_error);
    tcase_add_test(tc, provider_error_text_is_quoted_but_scrubbed_of_the_key);
    tcase_add_test(tc, partly_quoted_key_in_an_answer_is_scrubbed);
    tcase_add_loop_test(tc, scrub_removes_the_key_and_its_long_runs, 0,
                        (int)(sizeof(scrubs) / sizeof(scrubs[0])));
    tcase_add_test(tc, rate_limit_and_server_errors_carry_the_status);
    tcase_add_test(tc, request_errors_are_told_from_provider_errors);
    tcase_add_test(tc, hang_times_out_within_the_timeout);
    tcase_add_test(tc, a_client_gone_abandons_a_silent_provider_within_a_second);
    tcase_add_test(tc, slow_answer_within_the_timeout_succeeds);
    tcase_add_test(tc, malformed_and_truncated_answers_over_http_are_provider_errors);
    tcase_add_test(tc, closed_port_is_unreachable);
    tcase_add_test(tc, unresolvable_host_is_unreachable);
    tcase_add_test(tc, answer_over_8_mib_is_refused);
    tcase_add_test(tc, per_model_behaviour_applies_to_that_model_only);
    tcase_add_test(tc, key_with_control_characters_is_never_sent);
    tcase_add_test(tc, concurrent_calls_from_many_threads_all_succeed);
    suite_add_tcase(s, tc);

    tc = tcase_create("stream");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, every_split_of_a_recorded_stream_gives_the_buffered_response, 0,
                        (int)NREMOTE * 2);
    tcase_add_loop_test(tc, streamed_chat_asks_for_a_stream_and_hands_over_words_in_order, 0,
                        (int)NREMOTE);
    tcase_add_loop_test(tc, buffered_chat_sends_the_same_bytes_as_before, 0, (int)NREMOTE);
    tcase_add_loop_test(tc, a_sink_that_says_stop_abandons_the_transfer_at_once, 0,
                        (int)NREMOTE);
    tcase_add_loop_test(tc, malformed_streams_are_clean_provider_errors, 0,
                        (int)(sizeof(bad_streams) / sizeof(bad_streams[0])));
    tcase_add_loop_test(tc, truncated_stream_over_http_is_a_provider_error, 0, (int)NREMOTE);
    tcase_add_test(tc, echo_streams_word_by_word);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr;
    int failed;

    if (providers_init() != 0) {
        fprintf(stderr, "check_providers: providers_init failed\n");
        return EXIT_FAILURE;
    }
    if (fake_start() != 0)
        fprintf(stderr, "check_providers: could not start tests/fake_provider.py under %s; "
                "the transport tests will fail\n", srcdir());
    sr = srunner_create(providers_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    fake_stop();
    curl_global_cleanup();
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
