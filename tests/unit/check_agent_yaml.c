/*
 * check_agent_yaml.c - unit tests for agent_yaml.c, the compiled agent YAML:
 * every deployable WizardConfig of tests/corpus/wizard/ compiles, loads back
 * into what the WizardConfig asked for, and re-emits to the same bytes; a
 * hand-written Astromesh YAML loads with the schema's defaults; what is not
 * an agent is refused.
 */
#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <json-c/json.h>
#include "control/wizard.h"
#include "runtime/agent_yaml.h"
#include "lib/util.h"

static struct config test_cfg;
static const char *test_refs[PROVIDER_COUNT];

static void setup_cfg(void)
{
    memset(&test_cfg, 0, sizeof(test_cfg));
    util_strlcpy(test_cfg.providers[PROVIDER_OLLAMA].base_url, "http://127.0.0.1:11434",
                 sizeof(test_cfg.providers[PROVIDER_OLLAMA].base_url));
    memset(test_refs, 0, sizeof(test_refs));
    test_refs[PROVIDER_OPENAI] = "server:openai";
    test_refs[PROVIDER_ANTHROPIC] = "org:acme/anthropic";
}

/* wc.step.key, or NULL */
static struct json_object *get(struct json_object *wc, const char *step, const char *key)
{
    struct json_object *s = NULL, *v = NULL;

    if (!json_object_object_get_ex(wc, step, &s) || s == NULL)
        return NULL;
    if (!json_object_object_get_ex(s, key, &v))
        return NULL;
    return v;
}

static const char *get_str(struct json_object *wc, const char *step, const char *key,
                           const char *dflt)
{
    struct json_object *v = get(wc, step, key);
    return v != NULL ? json_object_get_string(v) : dflt;
}

static int get_int(struct json_object *wc, const char *step, const char *key, int dflt)
{
    struct json_object *v = get(wc, step, key);
    return v != NULL ? json_object_get_int(v) : dflt;
}

/* The loaded model equals "provider/model" of the WizardConfig (or is absent). */
static void check_model(const char *file, const char *which, const struct agent_yaml_model *m,
                        const char *want, int max_tokens)
{
    char provider[32];
    const char *slash;
    int p;

    if (want == NULL) {
        ck_assert_msg(!m->present, "%s: %s present", file, which);
        return;
    }
    slash = strchr(want, '/');
    util_strlcpy(provider, want, (size_t)(slash - want) + 1);
    p = config_provider_from_name(provider);
    ck_assert_msg(m->present, "%s: %s missing", file, which);
    ck_assert_msg(m->provider == p, "%s: %s provider %d, want %s", file, which, m->provider,
                  provider);
    ck_assert_msg(strcmp(m->model, slash + 1) == 0, "%s: %s model %s", file, which, m->model);
    ck_assert_msg(strcmp(m->key_ref, test_refs[p] ? test_refs[p] : "") == 0,
                  "%s: %s key_ref %s", file, which, m->key_ref);
    ck_assert_msg(m->max_tokens == max_tokens, "%s: %s max_tokens %d", file, which,
                  m->max_tokens);
}

/* WizardConfig guardrail name -> the type the document must carry. */
static int guardrail_type(const char *name)
{
    if (strcmp(name, "pii_filter") == 0)
        return AGENT_YAML_PII_DETECTION;
    if (strcmp(name, "content_safety") == 0)
        return AGENT_YAML_CONTENT_FILTER;
    return AGENT_YAML_MAX_LENGTH;
}

static void check_guardrails(const char *file, const char *which,
                             const struct agent_yaml_guardrail *got, int ngot,
                             struct json_object *wc, const char *key, int cost_limit)
{
    struct json_object *list = get(wc, "step5", key);
    int i, n = list != NULL ? (int)json_object_array_length(list) : 0;

    ck_assert_msg(ngot == n + (cost_limit > 0), "%s: %s has %d entries, want %d", file, which,
                  ngot, n + (cost_limit > 0));
    for (i = 0; i < n; i++) {
        int type = guardrail_type(json_object_get_string(json_object_array_get_idx(list, i)));
        ck_assert_msg(got[i].type == type, "%s: %s[%d] type %d, want %d", file, which, i,
                      got[i].type, type);
        if (type == AGENT_YAML_MAX_LENGTH)
            ck_assert_int_eq(got[i].limit, get_int(wc, "step5", "max_input_chars", 4000));
    }
    if (cost_limit > 0) {
        ck_assert_msg(got[n].type == AGENT_YAML_COST_LIMIT, "%s: %s no cost_limit", file, which);
        ck_assert_int_eq(got[n].limit, cost_limit);
    }
}

/* The loaded document is what the WizardConfig asked for. */
static void check_doc(const char *file, const struct agent_yaml_doc *d, struct json_object *wc)
{
    struct json_object *name = NULL, *tools = get(wc, "step3", "tools");
    const char *mem = get_str(wc, "step4", "memory_type", "none");
    const char *strategy = get_str(wc, "step4", "memory_strategy", "sliding_window");
    int max_tokens = get_int(wc, "step5", "max_tokens", 0);
    char id[128];
    int i, n = tools != NULL ? (int)json_object_array_length(tools) : 0;

    json_object_object_get_ex(wc, "name", &name);
    (void)util_snprintf(id, sizeof(id), "acme__%s", json_object_get_string(name));
    ck_assert_str_eq(d->name, id);
    ck_assert_str_eq(d->namespace_, "acme");
    ck_assert_uint_eq(d->version, 3);
    check_model(file, "primary", &d->primary, get_str(wc, "step1", "model", NULL), max_tokens);
    check_model(file, "fallback", &d->fallback, get_str(wc, "step1", "fallback_model", NULL),
                max_tokens);
    ck_assert_str_eq(agent_yaml_routings[d->routing],
                     get_str(wc, "step1", "routing_strategy", "cost_optimized"));
    ck_assert_str_eq(agent_yaml_patterns[d->pattern],
                     get_str(wc, "step5", "orchestration", "single_pass"));
    ck_assert_int_eq(d->max_iterations, 10);
    ck_assert_ptr_nonnull(d->system);
    ck_assert_ptr_nonnull(strstr(d->system, get_str(wc, "step2", "system_prompt", "")));
    ck_assert_msg(d->ntools == n, "%s: %d tools, want %d", file, d->ntools, n);
    for (i = 0; i < n; i++) {
        ck_assert_str_eq(tools_name(d->tools[i]),
                         json_object_get_string(json_object_array_get_idx(tools, i)));
        ck_assert_ptr_nonnull(d->tool_config[d->tools[i]]);
    }
    ck_assert_msg(d->memory_on == (strcmp(mem, "conversational") == 0), "%s: memory", file);
    if (d->memory_on) {
        ck_assert_str_eq(agent_yaml_memory_strategies[d->memory_strategy], strategy);
        ck_assert_int_eq(d->memory_limit, strcmp(strategy, "token_budget") == 0
                                              ? get_int(wc, "step4", "token_budget", 4000)
                                              : 2 * get_int(wc, "step4", "window_size", 20));
    }
    check_guardrails(file, "input", d->input, d->ninput, wc, "input_guardrails", 0);
    check_guardrails(file, "output", d->output, d->noutput, wc, "output_guardrails",
                     max_tokens);
}

/* compile -> load -> check -> emit == compile. Returns 1 if the file was
 * a deployable WizardConfig (and so was checked). */
static int round_trip(const char *dir, const char *file)
{
    char path[1024];
    struct json_object *wc;
    struct agent_yaml_doc d;
    struct am_error err;
    char *yaml = NULL, *again = NULL;
    size_t len = 0, alen = 0;

    (void)util_snprintf(path, sizeof(path), "%s/%s", dir, file);
    wc = json_object_from_file(path);
    if (wc == NULL || wizard_validate_deploy(wc, &err) != 0) {
        json_object_put(wc);
        return 0;
    }
    ck_assert_msg(wizard_compile(wc, "acme", 3, test_refs, &test_cfg, &yaml, &len, &err) == 0,
                  "%s: compile: %s", file, err.message);
    ck_assert_msg(agent_yaml_load(yaml, len, &d, &err) == 0, "%s: load: %s", file, err.message);
    check_doc(file, &d, wc);
    ck_assert_msg(agent_yaml_emit(&d, &again, &alen, &err) == 0, "%s: emit", file);
    ck_assert_msg(alen == len && strcmp(again, yaml) == 0,
                  "%s: emit(load(yaml)) differs:\n%s\n---\n%s", file, yaml, again);
    agent_yaml_doc_clear(&d);
    free(again);
    free(yaml);
    json_object_put(wc);
    return 1;
}

static int corpus_filter(const struct dirent *d)
{
    size_t n = strlen(d->d_name);

    return n > 5 && strcmp(d->d_name + n - 5, ".json") == 0;
}

START_TEST(every_deployable_corpus_config_round_trips)
{
    const char *top = getenv("ASTROMESH_SRCDIR");
    struct dirent **names = NULL;
    char dir[1024];
    int i, n, checked = 0, ok_files = 0;

    if (top == NULL)
        top = getenv("srcdir");
    (void)util_snprintf(dir, sizeof(dir), "%s/tests/corpus/wizard", top ? top : ".");
    n = scandir(dir, &names, corpus_filter, alphasort);
    ck_assert_msg(n > 0, "no corpus in %s", dir);
    for (i = 0; i < n; i++) {
        int done = round_trip(dir, names[i]->d_name);

        checked += done;
        if (strncmp(names[i]->d_name, "ok_", 3) == 0) {
            ok_files++;
            ck_assert_msg(done, "%s: not round-tripped", names[i]->d_name);
        }
        free(names[i]);
    }
    free(names);
    ck_assert_int_gt(ok_files, 0);
    ck_assert_int_ge(checked, ok_files);
}
END_TEST

#define ASTROMESH_YAML \
    "apiVersion: astromesh/v1\n" \
    "kind: Agent\n" \
    "metadata: {name: acme__bot, version: \"12\", namespace: acme}\n" \
    "spec:\n" \
    "  identity: {display_name: Bot}\n" \
    "  model:\n" \
    "    primary: {provider: ollama, model: llama3, endpoint: \"http://h:1\"}\n" \
    "    fallback: {provider: echo, model: e}\n" \
    "  prompts: {system: hi}\n" \
    "  orchestration: {pattern: no_such_pattern}\n" \
    "  tools: [{name: calculator, type: builtin}, {name: nope}, {name: calculator}]\n" \
    "  memory: {conversational: {backend: redis}}\n" \
    "  guardrails:\n" \
    "    input: [{type: unknown}, {type: max_length, max_chars: 70}]\n" \
    "    output: [{type: pii_detection, action: redact}]\n"

/* Found by tests/fuzz/fuzz_agent_yaml: tools or a guardrail list that is
 * not a sequence (a scalar, a mapping) aborted the loader inside json-c
 * (json_object_array_length's assertion); it is skipped like an unknown
 * tool or guardrail type. */
START_TEST(load_skips_tools_and_guardrails_that_are_not_lists)
{
    static const char *const shapes[] = {
        "  tools: calculator\n",
        "  tools: {name: calculator}\n",
        "  guardrails: {input: 3, output: {type: pii_detection}}\n",
        "  guardrails: {input: [{type: max_length, max_chars: 9}], output: redact}\n",
    };
    struct agent_yaml_doc d;
    struct am_error err;
    char yaml[1024];
    size_t i;

    for (i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
        (void)util_snprintf(yaml, sizeof(yaml), "apiVersion: astromesh/v1\nkind: Agent\n"
                      "metadata: {name: acme__bot, version: \"1\", namespace: acme}\n"
                      "spec:\n  model:\n    primary: {provider: echo, model: e}\n%s",
                      shapes[i]);
        memset(&d, 0, sizeof(d));
        error_clear(&err);
        ck_assert_msg(agent_yaml_load(yaml, strlen(yaml), &d, &err) == 0, "%s", shapes[i]);
        ck_assert_int_eq(d.ntools, 0);
        ck_assert_int_eq(d.noutput, 0);
        ck_assert_int_le(d.ninput, 1);
        agent_yaml_doc_clear(&d);
    }
}
END_TEST

START_TEST(astromesh_yaml_loads_with_schema_defaults)
{
    struct agent_yaml_doc d;
    struct am_error err;

    ck_assert_int_eq(agent_yaml_load(ASTROMESH_YAML, strlen(ASTROMESH_YAML), &d, &err), 0);
    ck_assert_str_eq(d.name, "acme__bot");
    ck_assert_uint_eq(d.version, 12);
    ck_assert_str_eq(d.display_name, "Bot");
    ck_assert_ptr_null(d.description);
    ck_assert_int_eq(d.primary.provider, PROVIDER_OLLAMA);
    ck_assert_str_eq(d.primary.endpoint, "http://h:1");
    ck_assert_int_eq(d.primary.max_tokens, 0);
    ck_assert_int_eq(d.fallback.provider, PROVIDER_ECHO);
    ck_assert_int_eq(d.routing, AGENT_YAML_ROUTE_COST);
    ck_assert_int_eq(d.pattern, AGENT_YAML_PATTERN_SINGLE);
    ck_assert_int_eq(d.max_iterations, 10);
    ck_assert_int_eq(d.ntools, 1);
    ck_assert_int_eq(d.tools[0], TOOL_CALCULATOR);
    ck_assert_int_eq(json_object_object_length(d.tool_config[TOOL_CALCULATOR]), 0);
    ck_assert(d.memory_on);
    ck_assert_int_eq(d.memory_strategy, MEMORY_SLIDING_WINDOW);
    ck_assert_int_eq(d.memory_limit, 40);
    ck_assert_int_eq(d.ninput, 1);
    ck_assert_int_eq(d.input[0].type, AGENT_YAML_MAX_LENGTH);
    ck_assert_int_eq(d.input[0].limit, 70);
    ck_assert_int_eq(d.noutput, 1);
    ck_assert_int_eq(d.output[0].type, AGENT_YAML_PII_DETECTION);
    agent_yaml_doc_clear(&d);
}
END_TEST

START_TEST(load_refuses_what_is_not_a_runnable_agent)
{
    static const char *const bad[] = {
        "",
        "just a string",
        "[1, 2]",
        "apiVersion: astromesh/v1\n",
        "spec: {model: {}}\n",
        "spec: {model: {primary: {provider: nosuch, model: m}}}\n",
        "spec: {model: {primary: {provider: echo}}}\n",
        "spec: {model: {primary: {provider: echo, model: m}, fallback: {model: x}}}\n",
        "spec: {model: {primary: {provider: echo, model: m}\n",
    };
    struct agent_yaml_doc d;
    struct am_error err;
    size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_msg(agent_yaml_load(bad[i], strlen(bad[i]), &d, &err) == AM_EINVALIDCONFIG,
                      "case %zu", i);
        agent_yaml_doc_clear(&d);
    }
}
END_TEST

START_TEST(emit_refuses_invalid_utf8)
{
    struct agent_yaml_doc d;
    struct am_error err;
    char *yaml = (char *)"x";
    size_t len = 1;

    memset(&d, 0, sizeof(d));
    util_strlcpy(d.name, "acme__bot", sizeof(d.name));
    d.system = xstrdup("bad \xff byte");
    ck_assert_int_eq(agent_yaml_emit(&d, &yaml, &len, &err), AM_EINTERNAL);
    ck_assert_ptr_null(yaml);
    ck_assert_uint_eq(len, 0);
    agent_yaml_doc_clear(&d);
}
END_TEST

static Suite *agent_yaml_suite(void)
{
    Suite *s = suite_create("agent_yaml");
    TCase *corpus = tcase_create("corpus");
    TCase *load = tcase_create("load");

    tcase_add_checked_fixture(corpus, setup_cfg, NULL);
    tcase_set_timeout(corpus, 120);
    tcase_add_test(corpus, every_deployable_corpus_config_round_trips);
    suite_add_tcase(s, corpus);
    tcase_add_test(load, astromesh_yaml_loads_with_schema_defaults);
    tcase_add_test(load, load_skips_tools_and_guardrails_that_are_not_lists);
    tcase_add_test(load, load_refuses_what_is_not_a_runnable_agent);
    tcase_add_test(load, emit_refuses_invalid_utf8);
    suite_add_tcase(s, load);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(agent_yaml_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
