/*
 * check_portable.c - unit tests for the portable agent YAML
 * (agent_yaml_emit_portable) and the import (agent_import_wizard), over the
 * whole WizardConfig corpus (tests/corpus/wizard/, ok_ and draft_ files).
 *
 * The upstream facts, from the open-source Astromesh project
 * (github.com/monaccode/astromesh, snapshot 23c1a4cc, Aug 2026):
 *  - vscode-extension/schemas/agent.schema.json (last changed in 46fd28f1):
 *    top level only apiVersion (const astromesh/v1), kind (const Agent),
 *    metadata, spec; metadata only name (^[a-z][a-z0-9-]*[a-z0-9]$),
 *    version (^[0-9]+\.[0-9]+\.[0-9]+$), namespace (^[a-z][a-z0-9-]*$),
 *    labels (string values); spec only identity, model, prompts,
 *    orchestration, tools, memory, guardrails, observability, permissions
 *    (+ later keys we never write); model block provider in ollama, openai,
 *    openai_compat, azure_openai, litellm, centinela; memory.conversational
 *    only backend (sqlite, redis, postgres, in_memory), strategy, max_messages,
 *    max_turns, ttl; orchestration.pattern in react, plan_and_execute,
 *    pipeline, parallel_fan_out, supervisor, swarm, glyph (no single_pass);
 *    tools: name and type (builtin, ...) required; guardrail action in
 *    redact, block, warn, log.
 *  - astromesh/runtime/engine.py (_CONSUMED_KEYS, build_candidate_provider):
 *    an openai/openai_compat block reads api_key or api_key_env (default
 *    OPENAI_API_KEY) and endpoint; ollama reads endpoint, no key; any other
 *    key is warned about and ignored. _build_pattern: no pattern = react.
 *  - astromesh-adk/astromesh_adk/providers.py: anthropic runs through the
 *    OpenAI-compatible adapter at https://api.anthropic.com/v1 with
 *    ANTHROPIC_API_KEY. (Groq, Mistral, Cohere are not named upstream: their
 *    own OpenAI-compatible endpoints and GROQ_API_KEY, MISTRAL_API_KEY,
 *    CO_API_KEY are our choice.)
 */
#include <check.h>
#include <dirent.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <json-c/json.h>
#include "control/agent_import.h"
#include "control/wizard.h"
#include "runtime/agent_yaml.h"
#include "lib/util.h"

static struct config cfg;
static const char *refs[PROVIDER_COUNT];

static void setup(void)
{
    memset(&cfg, 0, sizeof(cfg));
    util_strlcpy(cfg.providers[PROVIDER_OLLAMA].base_url, "http://127.0.0.1:11434",
                 sizeof(cfg.providers[PROVIDER_OLLAMA].base_url));
    memset(refs, 0, sizeof(refs));
    refs[PROVIDER_OPENAI] = "server:openai";
    refs[PROVIDER_ANTHROPIC] = "org:acme/anthropic";
    refs[PROVIDER_GROQ] = "org:acme/groq";
}

static struct json_object *at(struct json_object *o, const char *path)
{
    char tmp[128], *save = NULL, *k;

    util_strlcpy(tmp, path, sizeof(tmp));
    for (k = strtok_r(tmp, ".", &save); k != NULL && o != NULL; k = strtok_r(NULL, ".", &save))
        if (!json_object_object_get_ex(o, k, &o))
            return NULL;
    return o;
}

static const char *str_at(struct json_object *o, const char *path)
{
    struct json_object *v = at(o, path);
    return v != NULL ? json_object_get_string(v) : NULL;
}

static int matches(const char *s, const char *re)
{
    regex_t r;
    int ok;

    ck_assert_int_eq(regcomp(&r, re, REG_EXTENDED | REG_NOSUB), 0);
    ok = s != NULL && regexec(&r, s, 0, NULL, 0) == 0;
    regfree(&r);
    return ok;
}

static int one_of(const char *s, const char *const words[])
{
    int i;

    for (i = 0; s != NULL && words[i] != NULL; i++)
        if (strcmp(s, words[i]) == 0)
            return 1;
    return 0;
}

/* Every key of o (if an object) is in keys. */
static void only_keys(const char *file, struct json_object *o, const char *path,
                      const char *const keys[])
{
    if (o == NULL)
        return;
    ck_assert_msg(json_object_is_type(o, json_type_object), "%s: %s not a mapping", file, path);
    json_object_object_foreach(o, k, v) {
        (void)v;
        ck_assert_msg(one_of(k, keys), "%s: %s.%s: the upstream schema rejects it", file,
                      path, k);
    }
}

static void check_model_block(const char *file, struct json_object *m, const char *path)
{
    static const char *const keys[] = { "provider", "model", "endpoint", "api_key_env",
                                        "parameters", NULL };
    static const char *const providers[] = { "ollama", "openai", "openai_compat",
                                             "azure_openai", "litellm", "centinela", NULL };
    static const char *const envs[] = { "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GROQ_API_KEY",
                                        "MISTRAL_API_KEY", "CO_API_KEY", NULL };
    const char *prov = str_at(m, "provider");

    if (m == NULL)
        return;
    only_keys(file, m, path, keys);
    ck_assert_msg(one_of(prov, providers), "%s: %s.provider %s", file, path, prov);
    if (strcmp(prov, "ollama") == 0)
        ck_assert_msg(at(m, "api_key_env") == NULL, "%s: ollama takes no key", file);
    else
        ck_assert_msg(one_of(str_at(m, "api_key_env"), envs), "%s: %s.api_key_env", file, path);
    if (strcmp(prov, "openai_compat") == 0)
        ck_assert_msg(matches(str_at(m, "endpoint"), "^https://"), "%s: endpoint", file);
}

/* The upstream facts for one portable document. */
static void check_upstream_facts(const char *file, struct json_object *d)
{
    static const char *const top[] = { "apiVersion", "kind", "metadata", "spec", NULL };
    static const char *const md[] = { "name", "version", "namespace", "labels", NULL };
    static const char *const spec[] = { "identity", "model", "prompts", "orchestration",
                                        "tools", "memory", "guardrails", NULL };
    static const char *const conv[] = { "backend", "strategy", "max_messages", "max_turns",
                                        "ttl", NULL };
    static const char *const backends[] = { "sqlite", "redis", "postgres", "in_memory", NULL };
    static const char *const patterns[] = { "react", "plan_and_execute", "pipeline",
                                            "parallel_fan_out", "supervisor", "swarm",
                                            "glyph", NULL };
    static const char *const actions[] = { "redact", "block", "warn", "log", NULL };
    static const char *const lists[] = { "spec.guardrails.input", "spec.guardrails.output" };
    struct json_object *tools = at(d, "spec.tools");
    size_t i, j;

    only_keys(file, d, "", top);
    ck_assert_str_eq(str_at(d, "apiVersion"), "astromesh/v1");
    ck_assert_str_eq(str_at(d, "kind"), "Agent");
    only_keys(file, at(d, "metadata"), "metadata", md);
    ck_assert_msg(matches(str_at(d, "metadata.name"), "^[a-z][a-z0-9-]*[a-z0-9]$"),
                  "%s: metadata.name %s", file, str_at(d, "metadata.name"));
    ck_assert_msg(matches(str_at(d, "metadata.version"), "^[0-9]+\\.[0-9]+\\.[0-9]+$"),
                  "%s: version", file);
    ck_assert_msg(matches(str_at(d, "metadata.namespace"), "^[a-z][a-z0-9-]*$"), "%s: ns", file);
    only_keys(file, at(d, "spec"), "spec", spec);
    check_model_block(file, at(d, "spec.model.primary"), "primary");
    check_model_block(file, at(d, "spec.model.fallback"), "fallback");
    only_keys(file, at(d, "spec.memory.conversational"), "conversational", conv);
    if (at(d, "spec.memory.conversational") != NULL)
        ck_assert_msg(one_of(str_at(d, "spec.memory.conversational.backend"), backends),
                      "%s: backend", file);
    ck_assert_msg(one_of(str_at(d, "spec.orchestration.pattern"), patterns), "%s: pattern",
                  file);
    for (i = 0; tools != NULL && i < json_object_array_length(tools); i++) {
        struct json_object *t = json_object_array_get_idx(tools, i);
        ck_assert_ptr_nonnull(str_at(t, "name"));
        ck_assert_str_eq(str_at(t, "type"), "builtin");
    }
    for (j = 0; j < 2; j++) {
        struct json_object *l = at(d, lists[j]);
        for (i = 0; l != NULL && i < json_object_array_length(l); i++) {
            struct json_object *g = json_object_array_get_idx(l, i);
            ck_assert_ptr_nonnull(str_at(g, "type"));
            if (at(g, "action") != NULL)
                ck_assert(one_of(str_at(g, "action"), actions));
        }
    }
}

/* The extensions (README): each path of the internal document that may
 * differ from the portable one. Copy them over; what remains must be equal. */
static void drop_extensions(struct json_object *internal, struct json_object *portable)
{
    static const char *const paths[] = {
        "metadata.name", "metadata.namespace", "metadata.labels",
        "spec.model.primary.provider", "spec.model.primary.endpoint",
        "spec.model.primary.api_key_env", "spec.model.primary.api_key_ref",
        "spec.model.fallback.provider", "spec.model.fallback.endpoint",
        "spec.model.fallback.api_key_env", "spec.model.fallback.api_key_ref",
        "spec.memory.conversational.backend", "spec.memory.conversational.max_turns",
        "spec.memory.conversational.max_messages", "spec.memory.conversational.max_tokens",
        "spec.orchestration.pattern", "spec.orchestration.max_iterations", NULL };
    char parent[128], *dot;
    int i;

    for (i = 0; paths[i] != NULL; i++) {
        struct json_object *pi, *pp, *v;

        util_strlcpy(parent, paths[i], sizeof(parent));
        dot = strrchr(parent, '.');
        *dot = '\0';
        pi = at(internal, parent);
        pp = at(portable, parent);
        if (pi == NULL || pp == NULL)
            continue;
        json_object_object_del(pi, dot + 1);
        if ((v = at(pp, dot + 1)) != NULL)
            json_object_object_add(pi, dot + 1, json_object_get(v));
    }
}

static struct json_object *parse(const char *y, size_t n)
{
    struct json_object *o = NULL;
    struct am_error err;

    error_clear(&err);
    ck_assert_msg(agent_yaml_parse(y, n, &o, &err) == 0, "%s", err.message);
    return o;
}

static char *compile(struct json_object *wc, size_t *len)
{
    struct am_error err;
    char *y = NULL;

    error_clear(&err);
    ck_assert_msg(wizard_compile(wc, "acme", 3, refs, &cfg, &y, len, &err) == 0, "%s",
                  err.message);
    return y;
}

static struct json_object *import(const char *file, const char *y, size_t len)
{
    struct json_object *wc = NULL;
    struct am_error err;

    error_clear(&err);
    ck_assert_msg(agent_import_wizard(y, len, &wc, &err) == 0, "%s: import: %s (%s %s)", file,
                  err.message, err.ndetails ? err.details[0].field : "",
                  err.ndetails ? err.details[0].problem : "");
    return wc;
}

/* One corpus file: 1 when checked (ok_ and draft_), 0 when skipped. */
static int one_file(const char *dir, const char *file)
{
    char path[1200], *y0, *y1, *p0 = NULL, *y2;
    size_t n0, n1, np = 0, n2;
    struct json_object *wc, *wc1, *wc2, *wc3, *ji, *jp;
    struct agent_yaml_doc doc;
    struct am_error err;
    int rc;

    if (strncmp(file, "ok_", 3) != 0 && strncmp(file, "draft_", 6) != 0)
        return 0;
    (void)util_snprintf(path, sizeof(path), "%s/%s", dir, file);
    wc = json_object_from_file(path);
    ck_assert_ptr_nonnull(wc);
    y0 = compile(wc, &n0);
    /* internal: imported, compiled again: the same bytes; a fixed point */
    wc1 = import(file, y0, n0);
    y1 = compile(wc1, &n1);
    ck_assert_msg(n0 == n1 && memcmp(y0, y1, n0) == 0, "%s: internal round trip:\n%s\n--\n%s",
                  file, y0, y1);
    wc3 = import(file, y1, n1);
    ck_assert_msg(json_object_equal(wc1, wc3), "%s: not a fixed point", file);
    /* portable */
    error_clear(&err);
    ck_assert_int_eq(agent_yaml_load_draft(y0, n0, &doc, &err), 0);
    rc = agent_yaml_emit_portable(&doc, &p0, &np, &err);
    agent_yaml_doc_clear(&doc);
    if (strstr(y0, "provider: echo") != NULL) {
        ck_assert_msg(rc == AM_EINVALIDCONFIG, "%s: echo exported", file);
    } else {
        ck_assert_msg(rc == 0, "%s: portable: %s", file, err.message);
        ck_assert_msg(strstr(p0, "api_key_ref") == NULL && strstr(p0, "server:") == NULL &&
                      strstr(p0, "org:") == NULL, "%s: a key ref in the portable one", file);
        jp = parse(p0, np);
        check_upstream_facts(file, jp);
        ji = parse(y0, n0);
        drop_extensions(ji, jp);
        ck_assert_msg(json_object_equal(ji, jp), "%s: differs beyond the extensions:\n%s\n--\n%s",
                      file, json_object_to_json_string(ji), json_object_to_json_string(jp));
        json_object_put(ji);
        json_object_put(jp);
        wc2 = import(file, p0, np);
        ck_assert_msg(json_object_equal(wc1, wc2), "%s: portable import %s != %s", file,
                      json_object_to_json_string(wc2), json_object_to_json_string(wc1));
        y2 = compile(wc2, &n2);
        ck_assert_msg(n0 == n2 && memcmp(y0, y2, n0) == 0, "%s: portable round trip", file);
        free(y2);
        json_object_put(wc2);
    }
    free(p0);
    free(y0);
    free(y1);
    json_object_put(wc);
    json_object_put(wc1);
    json_object_put(wc3);
    return 1;
}

static int corpus_filter(const struct dirent *d)
{
    size_t n = strlen(d->d_name);

    return n > 5 && strcmp(d->d_name + n - 5, ".json") == 0;
}

START_TEST(every_corpus_export_is_upstream_and_round_trips)
{
    const char *top = getenv("ASTROMESH_SRCDIR");
    struct dirent **names = NULL;
    char dir[1024];
    int i, n, checked = 0;

    if (top == NULL)
        top = getenv("srcdir");
    (void)util_snprintf(dir, sizeof(dir), "%s/tests/corpus/wizard", top ? top : ".");
    n = scandir(dir, &names, corpus_filter, alphasort);
    ck_assert_msg(n > 0, "no corpus in %s", dir);
    for (i = 0; i < n; i++) {
        checked += one_file(dir, names[i]->d_name);
        free(names[i]);
    }
    free(names);
    ck_assert_int_ge(checked, 10);
}
END_TEST

/* A hand-written upstream agent refused at pattern, api_key and a memory
 * it cannot say, one detail each, by YAML path. */
START_TEST(what_a_wizard_cannot_say_is_refused_by_path)
{
    static const char y[] =
        "apiVersion: astromesh/v1\nkind: Agent\nmetadata: {name: bot}\nspec:\n"
        "  model: {primary: {provider: openai, model: gpt-4o, api_key: sk-secret}}\n"
        "  orchestration: {pattern: supervisor}\n"
        "  memory: {semantic: {backend: qdrant}}\n";
    struct json_object *wc = NULL;
    struct am_error err;
    int i, seen = 0;

    error_clear(&err);
    ck_assert_int_eq(agent_import_wizard(y, sizeof(y) - 1, &wc, &err), AM_EVALIDATION);
    ck_assert_ptr_null(wc);
    for (i = 0; i < err.ndetails; i++)
        seen |= (strcmp(err.details[i].field, "spec.orchestration.pattern") == 0) |
                (strcmp(err.details[i].field, "spec.model.primary.api_key") == 0) << 1 |
                (strcmp(err.details[i].field, "spec.memory.semantic") == 0) << 2;
    ck_assert_int_eq(seen, 7);
    ck_assert_ptr_null(strstr(err.message, "sk-secret"));
}
END_TEST

START_TEST(bad_yaml_names_line_and_column)
{
    static const char y[] = "apiVersion: astromesh/v1\nkind: [Agent\n";
    struct json_object *wc = NULL;
    struct am_error err;

    error_clear(&err);
    ck_assert_int_eq(agent_import_wizard(y, sizeof(y) - 1, &wc, &err), AM_EBADREQ);
    ck_assert_msg(strstr(err.message, "line 3") != NULL, "%s", err.message);
    ck_assert_ptr_nonnull(strstr(err.message, "column"));
}
END_TEST

START_TEST(an_upstream_agent_imports)
{
    static const char y[] =
        "apiVersion: astromesh/v1\nkind: Agent\n"
        "metadata: {name: support-agent, version: 1.2.0, namespace: demo}\n"
        "spec:\n"
        "  identity: {display_name: Support}\n"
        "  model:\n"
        "    primary: {provider: openai_compat, model: claude-x,"
        " endpoint: \"https://api.anthropic.com/v1\", api_key_env: ANTHROPIC_API_KEY}\n"
        "    fallback: {provider: ollama, model: llama3, endpoint: \"http://gpu:11434\"}\n"
        "  prompts: {system: You help.}\n"
        "  memory: {conversational: {backend: redis, strategy: sliding_window,"
        " max_messages: 9}}\n"
        "  guardrails: {input: [{type: pii_detection, action: redact}]}\n";
    struct json_object *wc = import("upstream", y, sizeof(y) - 1);

    ck_assert_str_eq(str_at(wc, "name"), "support-agent");
    ck_assert_str_eq(str_at(wc, "step1.model"), "anthropic/claude-x");
    ck_assert_str_eq(str_at(wc, "step1.fallback_model"), "ollama/llama3");
    ck_assert_str_eq(str_at(wc, "step5.orchestration"), "react");
    ck_assert_int_eq(json_object_get_int(at(wc, "step4.window_size")), 5);
    ck_assert_str_eq(json_object_to_json_string(at(wc, "step5.input_guardrails")),
                     "[ \"pii_filter\" ]");
    json_object_put(wc);
}
END_TEST

START_TEST(upstream_providers_map_to_ours_by_endpoint)
{
    ck_assert_int_eq(agent_yaml_portable_provider("openai_compat", NULL), PROVIDER_OPENAI);
    ck_assert_int_eq(agent_yaml_portable_provider("openai_compat", "https://api.openai.com/v1"),
                     PROVIDER_OPENAI);
    ck_assert_int_eq(agent_yaml_portable_provider("openai_compat",
                                                  "https://api.groq.com/openai/v1/"),
                     PROVIDER_GROQ);
    ck_assert_int_eq(agent_yaml_portable_provider("openai_compat", "https://example.com/v1"), -1);
    ck_assert_int_eq(agent_yaml_portable_provider("litellm", NULL), -1);
    ck_assert_int_eq(agent_yaml_portable_provider("ollama", "http://gpu:11434"), PROVIDER_OLLAMA);
    ck_assert_int_eq(agent_yaml_portable_provider("mistral", NULL), PROVIDER_MISTRAL);
}
END_TEST

START_TEST(names_upstream_refuses_are_mapped_and_come_back)
{
    char out[64];

    agent_yaml_portable_name("7up", "agent-", out, sizeof(out));
    ck_assert_str_eq(out, "agent-7up");
    agent_yaml_portable_name("a", "agent-", out, sizeof(out));
    ck_assert_str_eq(out, "agent-a");
    agent_yaml_portable_name("support-bot", "agent-", out, sizeof(out));
    ck_assert_str_eq(out, "support-bot");
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("portable");
    TCase *tc = tcase_create("core");

    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, every_corpus_export_is_upstream_and_round_trips);
    tcase_add_test(tc, what_a_wizard_cannot_say_is_refused_by_path);
    tcase_add_test(tc, bad_yaml_names_line_and_column);
    tcase_add_test(tc, an_upstream_agent_imports);
    tcase_add_test(tc, upstream_providers_map_to_ours_by_endpoint);
    tcase_add_test(tc, names_upstream_refuses_are_mapped_and_come_back);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
