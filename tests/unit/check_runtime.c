/*
 * check_runtime.c - unit tests for runtime.c: loading a compiled agent and
 * the model router (fallback, timeouts, circuit breaker, round robin).
 *
 * The router runs its real provider clients: the primary model points at a
 * closed loopback port (connection refused) or at a socket that accepts
 * nothing (a hang), and the fallback is the built-in offline echo provider,
 * so no network and no stand-in of our own code is involved. The file
 * includes runtime.c to reach its static functions, as lighttpd's tests do.
 */
#include <check.h>
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

static void setup(void)
{
    config_defaults(&cfg);
    snprintf(cfg.jwt_secret, sizeof(cfg.jwt_secret), "%s", "0123456789abcdef0123456789abcdef");
    snprintf(cfg.providers[PROVIDER_OPENAI].api_key, sizeof(cfg.providers[0].api_key),
             "%s", "sk-unit-test-key");
    cfg.providers[PROVIDER_OPENAI].timeout_ms = 2000;
    memset(&app, 0, sizeof(app));
    app.cfg = &cfg;
    ck_assert_int_eq(runtime_init(), 0);
}

/* Compile a WizardConfig and parse it back the way a worker does. */
static struct agent_rt *agent_from(const char *wizard_json)
{
    const char *refs[PROVIDER_COUNT] = { [PROVIDER_OPENAI] = "server:openai" };
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
    r.agent = a;
    r.res = res;
    m[0].role = "system";
    m[0].content = "You help.";
    m[1].role = "user";
    m[1].content = "hello there";
    error_clear(err);
    rc = route_chat(&r, m, 2, 0, &resp, err);
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
        ck_assert(!breaker_is_open(&a->doc.primary, NULL));
        memset(&res, 0, sizeof(res));
        ck_assert_int_eq(ask(a, &res, &err), 0);
        ck_assert_str_eq(res.model, "echo/e1");
    }
    ck_assert(breaker_is_open(&a->doc.primary, NULL));
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

START_TEST(success_closes_the_breaker_count)
{
    struct agent_yaml_model m = { .present = 1, .provider = PROVIDER_OPENAI, .model = "gpt" };

    cfg.breaker_failures = 3;
    breaker_record(&cfg, &m, 0, 10);
    breaker_record(&cfg, &m, 0, 10);
    breaker_record(&cfg, &m, 1, 10);    /* the run of failures is broken */
    breaker_record(&cfg, &m, 0, 10);
    breaker_record(&cfg, &m, 0, 10);
    ck_assert(!breaker_is_open(&m, NULL));
    breaker_record(&cfg, &m, 0, 10);
    ck_assert(breaker_is_open(&m, NULL));
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
        breaker_record(&cfg, &m, 1, i == 0 ? 3 : 0);
    breaker_is_open(&m, &ewma);
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

    ck_assert_int_eq(route_order(a, order), 2);
    ck_assert_str_eq(order[0]->model, "e1");
    ck_assert_str_eq(order[1]->model, "e2");
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
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
