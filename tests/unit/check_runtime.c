/*
 * check_runtime.c - unit tests for runtime.c: loading a compiled agent and
 * the model router (fallback, timeouts, circuit breaker, round robin).
 *
 * The router runs its real provider clients: the primary model points at a
 * closed loopback port (connection refused) or at a socket that accepts
 * nothing (a hang), and the fallback is the built-in offline echo provider,
 * so no network and no stand-in of our own code is involved. The file
 * includes runtime.c to reach its static functions, as lighttpd's tests do.
 *
 * The streaming tests run the pipeline (run_pipeline: everything but the
 * registry lookup) against tests/fake_provider.py on 127.0.0.1, started
 * by main(), in each wire protocol.
 */
#include <check.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include "../../src/runtime/runtime.c"
#include "control/wizard.h"

static struct config cfg;
static struct app app;

/* A loopback TCP port: listening (and never accepting) or closed. */
static int loopback_port(int keep_listening, int *fd_out)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    if (keep_listening) {
        ck_assert_int_eq(listen(fd, 16), 0);
        *fd_out = fd;
    } else {
        close(fd);
    }
    return ntohs(sa.sin_port);
}

/* ---- the fake provider ---------------------------------------------------- */

static pid_t fake_pid = -1;
static char fake_root[64];

static int fake_start(void)
{
    const char *dir = getenv("srcdir") && *getenv("srcdir") ? getenv("srcdir") : ".";
    char script[PATH_MAX], line[32] = "";
    struct pollfd pfd;
    size_t n = 0;
    int fds[2];

    snprintf(script, sizeof(script), "%s/tests/fake_provider.py", dir);
    if (pipe(fds) != 0 || (fake_pid = fork()) < 0)
        return -1;
    if (fake_pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        execlp("python3", "python3", script, "--port", "0", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    pfd.fd = fds[0];
    pfd.events = POLLIN;
    while (n < sizeof(line) - 1 && strchr(line, '\n') == NULL) {
        ssize_t got;

        if (poll(&pfd, 1, 15000) <= 0 || (got = read(fds[0], line + n, sizeof(line) - 1 - n)) <= 0)
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
    }
}

static size_t fake_grow(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct buf *b = userdata;

    buf_put(b, ptr, size * nmemb);
    return size * nmemb;
}

/* One request to the fake's control API; the answer as JSON (caller puts). */
static struct json_object *fake_http(const char *method, const char *path, const char *body)
{
    struct buf b = {0};
    struct json_object *o;
    char url[256];
    CURL *c = curl_easy_init();

    ck_assert_msg(fake_root[0] != '\0', "the fake provider is not running");
    snprintf(url, sizeof(url), "%s%s", fake_root, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
    if (body)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, fake_grow);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    ck_assert_int_eq(curl_easy_perform(c), CURLE_OK);
    curl_easy_cleanup(c);
    buf_put(&b, "", 1);
    o = json_tokener_parse(b.z);
    buf_free(&b);
    return o;
}

static void fake_control(const char *json)
{
    json_object_put(fake_http("POST", "/_control", json));
    json_object_put(fake_http("DELETE", "/_requests", NULL));
}

static void setup(void)
{
    config_defaults(&cfg);
    snprintf(cfg.jwt_secret, sizeof(cfg.jwt_secret), "%s", "0123456789abcdef0123456789abcdef");
    snprintf(cfg.providers[PROVIDER_OPENAI].api_key, sizeof(cfg.providers[0].api_key),
             "%s", "sk-unit-test-key");
    cfg.providers[PROVIDER_OPENAI].timeout_ms = 2000;
    if (fake_root[0] != '\0') {
        int p;

        for (p = 0; p < PROVIDER_COUNT; p++) {
            snprintf(cfg.providers[p].base_url, sizeof(cfg.providers[p].base_url), "%s%s",
                     fake_root, p == PROVIDER_COHERE ? "/v2" : p == PROVIDER_OLLAMA ? "" : "/v1");
            if (p != PROVIDER_OPENAI)
                snprintf(cfg.providers[p].api_key, sizeof(cfg.providers[p].api_key), "k-%d", p);
            cfg.providers[p].timeout_ms = 5000;
        }
    }
    memset(&app, 0, sizeof(app));
    app.cfg = &cfg;
    /* a fresh breaker table per test (the old one is simply left mapped) */
    ck_assert_int_eq(breakers_create(&app.breakers, 64, NULL), 0);
    ck_assert_int_eq(runtime_init(), 0);
}

/* Compile a WizardConfig and parse it back the way a worker does. */
static struct agent_rt *agent_from(const char *wizard_json)
{
    const char *refs[PROVIDER_COUNT] = {
        [PROVIDER_OPENAI] = "server:openai", [PROVIDER_ANTHROPIC] = "server:anthropic",
        [PROVIDER_GROQ] = "server:groq", [PROVIDER_MISTRAL] = "server:mistral",
        [PROVIDER_COHERE] = "server:cohere",
    };
    struct json_object *wc = json_tokener_parse(wizard_json);
    struct am_error err;
    struct agent_rt *a;
    char *yaml = NULL;
    size_t len = 0;

    ck_assert_ptr_nonnull(wc);
    error_clear(&err);
    ck_assert_int_eq(wizard_compile(wc, "acme", 3, refs, &cfg, &yaml, &len, &err), 0);
    a = agent_parse("acme__bot", 7, yaml, len);
    ck_assert_ptr_nonnull(a);
    free(yaml);
    json_object_put(wc);
    return a;
}

/* One router call with a one-message conversation. */
static int ask(struct agent_rt *a, struct runtime_result *res, struct am_error *err)
{
    struct run r;
    struct providers_message m[2];
    struct providers_response *resp;
    int rc;

    memset(&r, 0, sizeof(r));
    memset(m, 0, sizeof(m));
    r.app = &app;
    r.org = "acme";
    r.agent = a;
    r.res = res;
    m[0].role = "system";
    m[0].content = "You help.";
    m[1].role = "user";
    m[1].content = "hello there";
    error_clear(err);
    rc = route_chat(&r, m, 2, 0, 0, &resp, err);
    run_free(&r);
    return rc;
}

START_TEST(compiled_yaml_loads_every_setting)
{
    struct agent_rt *a = agent_from(
        "{\"name\":\"bot\",\"step1\":{\"model\":\"openai/gpt-4o-mini\","
        "\"fallback_model\":\"echo/e1\",\"routing_strategy\":\"round_robin\"},"
        "\"step2\":{\"system_prompt\":\"Be brief.\",\"persona\":\"Clerk\",\"tone\":\"casual\"},"
        "\"step3\":{\"tools\":[\"calculator\",\"datetime\"]},"
        "\"step4\":{\"memory_type\":\"conversational\",\"window_size\":6},"
        "\"step5\":{\"input_guardrails\":[\"pii_filter\",\"max_length\"],\"max_input_chars\":50,"
        "\"output_guardrails\":[\"content_safety\"],\"max_tokens\":99,\"orchestration\":\"react\"}}");

    ck_assert_int_eq(a->doc.primary.provider, PROVIDER_OPENAI);
    ck_assert_str_eq(a->doc.primary.model, "gpt-4o-mini");
    ck_assert_str_eq(a->doc.primary.key_ref, "server:openai");
    ck_assert_int_eq(a->doc.primary.max_tokens, 99);
    ck_assert(a->doc.fallback.present);
    ck_assert_int_eq(a->doc.fallback.provider, PROVIDER_ECHO);
    ck_assert_int_eq(a->doc.routing, AGENT_YAML_ROUTE_ROUND_ROBIN);
    ck_assert_str_eq(a->doc.system, "Respond in a casual, friendly tone.\n\nBe brief.");
    ck_assert_str_eq(a->doc.description, "Clerk");
    ck_assert_int_eq(a->doc.pattern, AGENT_YAML_PATTERN_REACT);
    ck_assert_int_eq(a->doc.max_iterations, 10);
    ck_assert_int_eq(a->doc.ntools, 2);
    ck_assert_int_eq(a->doc.tools[0], TOOL_CALCULATOR);
    ck_assert(a->doc.memory_on);
    ck_assert_int_eq(a->doc.memory_strategy, MEMORY_SLIDING_WINDOW);
    ck_assert_int_eq(a->doc.memory_limit, 12);   /* 6 turns are 12 messages */
    ck_assert(a->in_pii);
    ck_assert_int_eq(a->in_max_chars, 50);
    ck_assert(!a->in_content);
    ck_assert(a->out_content);
    ck_assert_int_eq(a->out_max_tokens, 99);
    agent_rt_free(a);
}
END_TEST

START_TEST(garbage_yaml_is_not_an_agent)
{
    static const char *const bad[] = {
        "", "just a string", "- a\n- list\n", "spec: [1, 2]\n", "{unclosed: [",
        "spec:\n  model:\n    primary: {provider: nosuch, model: m}\n",
        "spec:\n  model: {}\n",
    };
    size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(agent_parse("k", 1, bad[i], strlen(bad[i])) == NULL, "case %zu", i);
}
END_TEST

START_TEST(primary_refused_falls_back)
{
    char url[64];
    struct runtime_result res;
    struct am_error err;
    struct agent_rt *a;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1", loopback_port(0, NULL));
    snprintf(cfg.providers[PROVIDER_OPENAI].base_url, sizeof(cfg.providers[0].base_url), "%s", url);
    a = agent_from("{\"name\":\"bot\",\"step1\":{\"model\":\"openai/gpt-4o-mini\","
                   "\"fallback_model\":\"echo/e1\"},\"step2\":{\"system_prompt\":\"x\"}}");
    memset(&res, 0, sizeof(res));
    ck_assert_int_eq(ask(a, &res, &err), 0);
    ck_assert_str_eq(res.model, "echo/e1");
    ck_assert(res.provider_called);
    ck_assert_int_gt(res.tokens_used, 0);
    agent_rt_free(a);
}
END_TEST

START_TEST(both_models_down_is_provider_error_without_key)
{
    char url[64];
    struct runtime_result res;
    struct am_error err;
    struct agent_rt *a;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1", loopback_port(0, NULL));
    snprintf(cfg.providers[PROVIDER_OPENAI].base_url, sizeof(cfg.providers[0].base_url), "%s", url);
    snprintf(cfg.providers[PROVIDER_OLLAMA].base_url, sizeof(cfg.providers[0].base_url),
             "http://127.0.0.1:%d", loopback_port(0, NULL));
    a = agent_from("{\"name\":\"bot\",\"step1\":{\"model\":\"openai/gpt-4o-mini\","
                   "\"fallback_model\":\"ollama/llama3\"},\"step2\":{\"system_prompt\":\"x\"}}");
    memset(&res, 0, sizeof(res));
    ck_assert_int_eq(ask(a, &res, &err), AM_EPROVIDER);
    ck_assert_ptr_null(strstr(err.message, "sk-unit-test-key"));
    agent_rt_free(a);
}
END_TEST

START_TEST(hanging_primary_times_out)
{
    struct runtime_result res;
    struct am_error err;
    struct agent_rt *a;
    uint64_t t0;
    int fd = -1;

    snprintf(cfg.providers[PROVIDER_OPENAI].base_url, sizeof(cfg.providers[0].base_url),
             "http://127.0.0.1:%d/v1", loopback_port(1, &fd));
    cfg.providers[PROVIDER_OPENAI].timeout_ms = 300;
    a = agent_from("{\"name\":\"bot\",\"step1\":{\"model\":\"openai/gpt-4o-mini\"},"
                   "\"step2\":{\"system_prompt\":\"x\"}}");
    memset(&res, 0, sizeof(res));
    t0 = util_monotonic_ms();
    ck_assert_int_eq(ask(a, &res, &err), AM_ETIMEOUT);
    ck_assert_uint_lt(util_monotonic_ms() - t0, 5000);
    close(fd);
    agent_rt_free(a);
}
END_TEST

START_TEST(failing_model_is_skipped_after_breaker_opens)
{
    struct runtime_result res;
    struct am_error err;
    struct agent_rt *a, *alone;
    int i;

    cfg.breaker_failures = 3;
    cfg.breaker_cooldown_ms = 60000;
    snprintf(cfg.providers[PROVIDER_OPENAI].base_url, sizeof(cfg.providers[0].base_url),
             "http://127.0.0.1:%d/v1", loopback_port(0, NULL));
    a = agent_from("{\"name\":\"bot\",\"step1\":{\"model\":\"openai/gpt-4o-mini\","
                   "\"fallback_model\":\"echo/e1\"},\"step2\":{\"system_prompt\":\"x\"}}");
    for (i = 0; i < 3; i++) {
        ck_assert(!breaker_is_open(&app, "acme", &a->doc.primary, NULL));
        memset(&res, 0, sizeof(res));
        ck_assert_int_eq(ask(a, &res, &err), 0);
        ck_assert_str_eq(res.model, "echo/e1");
    }
    ck_assert(breaker_is_open(&app, "acme", &a->doc.primary, NULL));
    /* With no fallback, an open circuit answers at once instead of calling. */
    alone = agent_from("{\"name\":\"bot\",\"step1\":{\"model\":\"openai/gpt-4o-mini\"},"
                       "\"step2\":{\"system_prompt\":\"x\"}}");
    memset(&res, 0, sizeof(res));
    ck_assert_int_eq(ask(alone, &res, &err), AM_EPROVIDER);
    ck_assert(!res.provider_called);
    ck_assert_ptr_nonnull(strstr(err.message, "cooling down"));
    agent_rt_free(alone);
    agent_rt_free(a);
}
END_TEST

static const struct providers_response a_failure;

START_TEST(success_closes_the_breaker_count)
{
    struct agent_yaml_model m = { .present = 1, .provider = PROVIDER_OPENAI, .model = "gpt" };

    cfg.breaker_failures = 3;
    breaker_record(&app, "acme", &m, AM_EPROVIDER, &a_failure, 10);
    breaker_record(&app, "acme", &m, AM_EPROVIDER, &a_failure, 10);
    breaker_record(&app, "acme", &m, 0, &a_failure, 10);    /* the run of failures is broken */
    breaker_record(&app, "acme", &m, AM_EPROVIDER, &a_failure, 10);
    breaker_record(&app, "acme", &m, AM_EPROVIDER, &a_failure, 10);
    ck_assert(!breaker_is_open(&app, "acme", &m, NULL));
    breaker_record(&app, "acme", &m, AM_EPROVIDER, &a_failure, 10);
    ck_assert(breaker_is_open(&app, "acme", &m, NULL));
}
END_TEST

START_TEST(fast_answers_never_look_unmeasured)
{
    struct agent_yaml_model m = { .present = 1, .provider = PROVIDER_ECHO, .model = "quick" };
    uint64_t ewma = 0;
    int i;

    /* Sub-millisecond answers: the average must stay a sample (>= 1), or
     * latency_optimized would forget the model was ever measured. */
    for (i = 0; i < 50; i++)
        breaker_record(&app, "acme", &m, 0, &a_failure, i == 0 ? 3 : 0);
    breaker_is_open(&app, "acme", &m, &ewma);
    ck_assert_uint_ge(ewma, 1);
}
END_TEST

START_TEST(round_robin_alternates_models)
{
    struct runtime_result res;
    struct am_error err;
    struct agent_rt *a = agent_from(
        "{\"name\":\"bot\",\"step1\":{\"model\":\"echo/e1\",\"fallback_model\":\"echo/e2\","
        "\"routing_strategy\":\"round_robin\"},\"step2\":{\"system_prompt\":\"x\"}}");
    char first[200];

    memset(&res, 0, sizeof(res));
    ck_assert_int_eq(ask(a, &res, &err), 0);
    snprintf(first, sizeof(first), "%s", res.model);
    memset(&res, 0, sizeof(res));
    ck_assert_int_eq(ask(a, &res, &err), 0);
    ck_assert_str_ne(first, res.model);
    agent_rt_free(a);
}
END_TEST

START_TEST(cost_optimized_keeps_primary_first)
{
    const struct agent_yaml_model *order[2];
    struct agent_rt *a = agent_from(
        "{\"name\":\"bot\",\"step1\":{\"model\":\"echo/e1\",\"fallback_model\":\"echo/e2\"},"
        "\"step2\":{\"system_prompt\":\"x\"}}");

    struct run r = { .app = &app, .org = "acme", .agent = a };

    ck_assert_int_eq(route_order(&r, order), 2);
    ck_assert_str_eq(order[0]->model, "e1");
    ck_assert_str_eq(order[1]->model, "e2");
    agent_rt_free(a);
}
END_TEST

/* ---- streaming ------------------------------------------------------------ */

struct tape {
    char text[4096];
    size_t n;
    int calls, stop_after;
    char pieces[64][96];     /* the first pieces, one by one */
};

static int tape_token(void *arg, const char *text, size_t n)
{
    struct tape *t = arg;

    ck_assert_uint_lt(t->n + n, sizeof(t->text));
    memcpy(t->text + t->n, text, n);
    t->n += n;
    t->text[t->n] = '\0';
    if (t->calls < 64)
        snprintf(t->pieces[t->calls], sizeof(t->pieces[0]), "%.*s", (int)n, text);
    t->calls++;
    return t->stop_after > 0 && t->calls >= t->stop_after;
}

/* requests[i].body.stream */
static struct json_object *jpath_stream(struct json_object *reqs, size_t i)
{
    struct json_object *body = json_object_object_get(json_object_array_get_idx(reqs, i), "body");

    return json_object_object_get(body, "stream");
}

/* Run the pipeline of a on query, streamed into t (NULL: buffered). */
static int pipeline(struct agent_rt *a, const char *query, struct tape *t,
                    struct runtime_result *res, struct am_error *err)
{
    struct runtime_sink sink = { tape_token, t, NULL };
    struct runtime_request req = { .org = "acme", .name = "bot", .query = query,
                                   .mode = RUNTIME_TEST, .sink = t ? &sink : NULL };

    memset(res, 0, sizeof(*res));
    error_clear(err);
    return run_pipeline(&app, a, "acme__bot", 1, util_monotonic_ms(), &req, res, err);
}

static const char *const stream_models[] = {
    "openai/fake-model", "anthropic/fake-model", "cohere/fake-model", "ollama/fake-model",
    "echo/e1",
};

/* A WizardConfig for model (fallback may be NULL), tools and step5 text. */
static struct agent_rt *stream_agent(const char *model, const char *fallback,
                                     const char *tools, const char *step5)
{
    char w[1024];

    snprintf(w, sizeof(w), "{\"name\":\"bot\",\"step1\":{\"model\":\"%s\"%s%s%s},"
             "\"step2\":{\"system_prompt\":\"x\"},\"step3\":{\"tools\":[%s]},"
             "\"step5\":{%s}}", model, fallback ? ",\"fallback_model\":\"" : "",
             fallback ? fallback : "", fallback ? "\"" : "", tools ? tools : "",
             step5 ? step5 : "");
    return agent_from(w);
}

/* Issue 15: a provider 400 is the request's error: no fallback, nothing
 * counted (eight of them leave the breaker closed); a 500 counts, for
 * this org only. */
START_TEST(a_rejected_request_tries_no_fallback_and_opens_no_breaker)
{
    struct agent_rt *a = agent_from("{\"name\":\"bot\",\"step1\":{\"model\":"
                                    "\"openai/gpt-4o-mini\",\"fallback_model\":\"echo/e1\"},"
                                    "\"step2\":{\"system_prompt\":\"x\"}}");
    struct runtime_result res;
    struct am_error err;
    int i;

    cfg.breaker_failures = 3;
    fake_control("{\"mode\":\"fail\",\"status\":400}");
    for (i = 0; i < 8; i++) {
        memset(&res, 0, sizeof(res));
        ck_assert_int_eq(ask(a, &res, &err), AM_EPROVIDERREJECT);
        ck_assert_str_eq(res.model, "");            /* the fallback was not asked */
        ck_assert_ptr_nonnull(strstr(err.message, "HTTP 400"));
    }
    ck_assert(!breaker_is_open(&app, "acme", &a->doc.primary, NULL));
    fake_control("{\"mode\":\"fail\",\"status\":500}");
    for (i = 0; i < 3; i++) {
        memset(&res, 0, sizeof(res));
        ck_assert_int_eq(ask(a, &res, &err), 0);
        ck_assert_str_eq(res.model, "echo/e1");     /* a provider failure falls back */
    }
    ck_assert(breaker_is_open(&app, "acme", &a->doc.primary, NULL));
    ck_assert(!breaker_is_open(&app, "other", &a->doc.primary, NULL));
    fake_control("{}");
    agent_rt_free(a);
}
END_TEST

START_TEST(stream_sends_tokens_in_order_and_equals_the_buffered_answer)
{
    struct agent_rt *a = stream_agent(stream_models[_i], NULL, NULL, NULL);
    struct runtime_result res, buffered;
    struct am_error err;
    struct tape t = {0};

    fake_control("{\"reply\":\"the answer is forty two, as always\"}");
    ck_assert_msg(pipeline(a, "what is it", &t, &res, &err) == 0, "%s", err.message);
    ck_assert_msg(t.calls >= (_i < 4 ? 5 : 4), "%s: %d pieces", stream_models[_i], t.calls);
    ck_assert_str_eq(t.text, res.answer);
    ck_assert_msg(pipeline(a, "what is it", NULL, &buffered, &err) == 0, "%s", err.message);
    ck_assert_str_eq(res.answer, buffered.answer);
    if (_i < 4)
        ck_assert_str_eq(res.answer, "the answer is forty two, as always");
    ck_assert_int_eq(res.tokens_used, buffered.tokens_used);
    runtime_result_free(&res);
    runtime_result_free(&buffered);
    agent_rt_free(a);
}
END_TEST

START_TEST(pii_split_across_deltas_is_redacted_and_never_sent)
{
    struct agent_rt *a = stream_agent(stream_models[_i], NULL, NULL,
                                      "\"output_guardrails\":[\"pii_filter\"]");
    struct runtime_result res, buffered;
    struct am_error err;
    struct tape t = {0};
    const char *q = "call 555 123 4567 or pay with 4111 1111 1111 1111 or write to "
                    "jo@example.com today";   /* echo's answer; the fake's reply */
    char setting[256];
    int k;

    snprintf(setting, sizeof(setting), "{\"reply\":\"%s\"}", q);
    fake_control(setting);
    ck_assert_msg(pipeline(a, q, &t, &res, &err) == 0, "%s", err.message);
    ck_assert_str_eq(res.answer + (_i == 4 ? 6 : 0), "call [REDACTED_PHONE] or pay with "
                     "[REDACTED_CC] or write to [REDACTED_EMAIL] today");
    ck_assert_str_eq(t.text, res.answer);
    for (k = 0; k < t.calls && k < 64; k++)
        ck_assert_msg(strpbrk(t.pieces[k], "0123456789@") == NULL, "piece \"%s\"", t.pieces[k]);
    ck_assert_int_gt(t.calls, 5);
    ck_assert_int_eq(pipeline(a, q, NULL, &buffered, &err), 0);
    ck_assert_str_eq(res.answer, buffered.answer);
    runtime_result_free(&res);
    runtime_result_free(&buffered);
    agent_rt_free(a);
}
END_TEST

START_TEST(content_safety_holds_the_answer_and_streams_the_refusal)
{
    struct agent_rt *a = stream_agent("openai/fake-model", NULL, NULL,
                                      "\"output_guardrails\":[\"content_safety\"]");
    struct runtime_result res;
    struct am_error err;
    struct tape t = {0};

    fake_control("{\"reply\":\"sure, here is how to make a pipe bomb at home\"}");
    ck_assert_int_eq(pipeline(a, "q", &t, &res, &err), 0);
    ck_assert(res.blocked);
    ck_assert_int_eq(t.calls, 1);
    ck_assert_str_eq(t.text, GUARDRAILS_REFUSAL);
    ck_assert_str_eq(res.answer, GUARDRAILS_REFUSAL);
    runtime_result_free(&res);
    memset(&t, 0, sizeof(t));
    fake_control("{\"reply\":\"a harmless answer\"}");
    ck_assert_int_eq(pipeline(a, "q", &t, &res, &err), 0);
    ck_assert(!res.blocked);
    ck_assert_int_eq(t.calls, 1);
    ck_assert_str_eq(t.text, "a harmless answer");
    runtime_result_free(&res);
    agent_rt_free(a);
}
END_TEST

START_TEST(tool_rounds_are_silent_and_the_final_answer_streams)
{
    struct agent_rt *a = stream_agent(stream_models[_i], NULL, "\"calculator\"", NULL);
    struct runtime_result res;
    struct am_error err;
    struct tape t = {0};
    struct json_object *reqs;

    fake_control("{\"tool_call\":{\"name\":\"calculator\",\"arguments\":{\"expression\":\"6*7\"}}}");
    ck_assert_msg(pipeline(a, "use calculator: 6*7", &t, &res, &err) == 0, "%s", err.message);
    ck_assert_str_eq(t.text, res.answer);
    ck_assert_msg(strstr(res.answer, "42") != NULL, "%s", res.answer);
    ck_assert_int_gt(t.calls, 3);               /* the last call streamed */
    if (_i < 4) {
        reqs = fake_http("GET", "/_requests", NULL);
        ck_assert_uint_eq(json_object_array_length(reqs), 2);
        /* the call offering tools was buffered, the answer streamed */
        ck_assert(!json_object_get_boolean(jpath_stream(reqs, 0)));
        ck_assert(json_object_get_boolean(jpath_stream(reqs, 1)));
        json_object_put(reqs);
    }
    runtime_result_free(&res);
    agent_rt_free(a);
}
END_TEST

START_TEST(primary_failing_before_the_first_token_falls_back)
{
    struct agent_rt *a = stream_agent("openai/fake-model", "echo/e1", NULL, NULL);
    struct runtime_result res;
    struct am_error err;
    struct tape t = {0};

    fake_control("{\"mode\":\"fail\",\"status\":503}");
    ck_assert_msg(pipeline(a, "hello there", &t, &res, &err) == 0, "%s", err.message);
    ck_assert_str_eq(res.model, "echo/e1");
    ck_assert_str_eq(t.text, "echo: hello there");
    ck_assert_str_eq(res.answer, t.text);
    runtime_result_free(&res);
    agent_rt_free(a);
}
END_TEST

START_TEST(primary_failing_after_a_token_ends_the_run)
{
    struct agent_rt *a = stream_agent("openai/fake-model", "echo/e1", NULL, NULL);
    struct runtime_result res;
    struct am_error err;
    struct tape t = {0};

    fake_control("{\"mode\":\"truncated\",\"reply\":\"one two three four five six seven\"}");
    ck_assert_int_eq(pipeline(a, "hello there", &t, &res, &err), AM_EPROVIDER);
    ck_assert_int_gt(t.calls, 0);
    ck_assert_ptr_null(strstr(t.text, "echo"));  /* no silent restart mid-answer */
    ck_assert_ptr_null(res.answer);
    agent_rt_free(a);
}
END_TEST

START_TEST(a_vanished_client_cancels_the_provider_call_within_a_second)
{
    struct agent_rt *a = stream_agent(stream_models[_i], "echo/e1", NULL, NULL);
    struct runtime_result res;
    struct am_error err;
    struct tape t = {0};
    struct json_object *reqs = NULL;
    uint64_t t0;
    const char *end = NULL;
    int tries;

    t.stop_after = 2;
    fake_control("{\"reply\":\"a b c d e f g h i j k l m n o p q r s t\",\"chunk_delay_ms\":200}");
    t0 = util_monotonic_ms();
    ck_assert_int_eq(pipeline(a, "q", &t, &res, &err), AM_ECANCELLED);
    ck_assert_uint_lt(util_monotonic_ms() - t0, 1500);
    ck_assert_int_eq(t.calls, 2);
    ck_assert(res.provider_called);
    ck_assert_ptr_null(res.answer);
    for (tries = 0; tries < 20 && end == NULL; tries++) {   /* the fake sees the drop */
        json_object_put(reqs);
        reqs = fake_http("GET", "/_requests", NULL);
        end = json_object_get_string(json_object_object_get(
            json_object_array_get_idx(reqs, 0), "stream_end"));
        if (end == NULL)
            usleep(50000);
    }
    ck_assert_uint_eq(json_object_array_length(reqs), 1);   /* no fallback either */
    ck_assert_pstr_eq(end, "client_gone");
    json_object_put(reqs);
    agent_rt_free(a);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("runtime");
    TCase *tc = tcase_create("router");
    SRunner *sr;
    int failed;

    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, compiled_yaml_loads_every_setting);
    tcase_add_test(tc, garbage_yaml_is_not_an_agent);
    tcase_add_test(tc, primary_refused_falls_back);
    tcase_add_test(tc, both_models_down_is_provider_error_without_key);
    tcase_add_test(tc, hanging_primary_times_out);
    tcase_add_test(tc, failing_model_is_skipped_after_breaker_opens);
    tcase_add_test(tc, success_closes_the_breaker_count);
    tcase_add_test(tc, fast_answers_never_look_unmeasured);
    tcase_add_test(tc, round_robin_alternates_models);
    tcase_add_test(tc, cost_optimized_keeps_primary_first);
    suite_add_tcase(s, tc);

    tc = tcase_create("stream");
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, stream_sends_tokens_in_order_and_equals_the_buffered_answer, 0, 5);
    tcase_add_loop_test(tc, pii_split_across_deltas_is_redacted_and_never_sent, 0, 5);
    tcase_add_test(tc, content_safety_holds_the_answer_and_streams_the_refusal);
    tcase_add_loop_test(tc, tool_rounds_are_silent_and_the_final_answer_streams, 0, 5);
    tcase_add_test(tc, primary_failing_before_the_first_token_falls_back);
    tcase_add_test(tc, a_rejected_request_tries_no_fallback_and_opens_no_breaker);
    tcase_add_test(tc, primary_failing_after_a_token_ends_the_run);
    tcase_add_loop_test(tc, a_vanished_client_cancels_the_provider_call_within_a_second, 0, 4);
    suite_add_tcase(s, tc);
    if (fake_start() != 0)
        fprintf(stderr, "check_runtime: could not start tests/fake_provider.py; the stream "
                "tests will fail\n");
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    fake_stop();
    return failed == 0 ? 0 : 1;
}
