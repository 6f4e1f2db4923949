/*
 * check_wizard.c - unit tests for wizard.c: name rules, WizardConfig
 * validation (create, deploy, patch), the step-wise merge, and compilation
 * to the agent YAML, which is parsed back with libyaml and checked value by
 * value. The corpus in tests/corpus/wizard/ is replayed through every entry
 * point: each file must give a clean error or a success, never a crash.
 *
 * Corpus file prefixes: ok_ must validate for deploy and compile; draft_
 * must validate but not for deploy; bad_ must fail validation with details;
 * anything else (broken_, odd_) only has to be handled cleanly.
 *
 * Run under valgrind: CK_FORK=no valgrind --leak-check=full --error-exitcode=1
 */
#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <json-c/json.h>
#include <yaml.h>
#include "control/wizard.h"
#include "lib/util.h"

/* ---- fixtures and helpers ------------------------------------------------ */

#define GOOD_JSON \
    "{\"name\":\"support-bot\",\"display_name\":\"Support Bot\"," \
    "\"step1\":{\"model\":\"openai/gpt-4o-mini\",\"fallback_model\":\"ollama/llama3\"," \
    "\"routing_strategy\":\"cost_optimized\"}," \
    "\"step2\":{\"system_prompt\":\"You are a helpful support agent.\"," \
    "\"persona\":\"Support Agent\",\"tone\":\"professional\"}," \
    "\"step3\":{\"tools\":[\"calculator\",\"http_request\"]," \
    "\"tool_configs\":{\"http_request\":{\"allowed_hosts\":[\"api.example.com\"]," \
    "\"allow_private\":false,\"timeout_ms\":5000}}}," \
    "\"step4\":{\"memory_type\":\"conversational\",\"memory_strategy\":\"sliding_window\"," \
    "\"window_size\":20}," \
    "\"step5\":{\"input_guardrails\":[\"pii_filter\",\"max_length\"]," \
    "\"output_guardrails\":[\"content_safety\"],\"max_tokens\":1000," \
    "\"orchestration\":\"react\"}}"

#define SECRET "sk-live-SECRET-0123456789abcdef"

static struct config test_cfg;
static const char *test_refs[PROVIDER_COUNT];

static void setup_cfg(void)
{
    memset(&test_cfg, 0, sizeof(test_cfg));
    util_strlcpy(test_cfg.providers[PROVIDER_OLLAMA].base_url, "http://127.0.0.1:11434",
                 sizeof(test_cfg.providers[PROVIDER_OLLAMA].base_url));
    util_strlcpy(test_cfg.providers[PROVIDER_OPENAI].api_key, SECRET,
                 sizeof(test_cfg.providers[PROVIDER_OPENAI].api_key));
    util_strlcpy(test_cfg.providers[PROVIDER_OLLAMA].api_key, SECRET,
                 sizeof(test_cfg.providers[PROVIDER_OLLAMA].api_key));
    memset(test_refs, 0, sizeof(test_refs));
    test_refs[PROVIDER_OPENAI] = "org:acme/openai";
}

static struct json_object *J(const char *text)
{
    struct json_object *o = json_tokener_parse(text);

    ck_assert_msg(o != NULL, "test JSON does not parse: %s", text);
    return o;
}

static int has_detail(const struct am_error *err, const char *field, const char *problem)
{
    int i;

    for (i = 0; i < err->ndetails; i++)
        if (strcmp(err->details[i].field, field) == 0 &&
            strcmp(err->details[i].problem, problem) == 0)
            return 1;
    return 0;
}

static void dump_details(const struct am_error *err)
{
    int i;

    for (i = 0; i < err->ndetails; i++)
        fprintf(stderr, "  detail: %s: %s\n", err->details[i].field, err->details[i].problem);
}

#define ck_assert_detail(err, field, problem) \
    do { \
        if (!has_detail((err), (field), (problem))) \
            dump_details(err); \
        ck_assert_msg(has_detail((err), (field), (problem)), \
                      "missing detail {%s: %s}", (field), (problem)); \
    } while (0)

/* validate text with the create rules; returns the code, fills err */
static int validate_text(const char *text, struct am_error *err)
{
    struct json_object *o = J(text);
    int rc = wizard_validate(o, err);

    json_object_put(o);
    return rc;
}

/* ---- YAML read-back helpers ---------------------------------------------- */

static void yaml_load(const char *buf, size_t len, yaml_document_t *doc)
{
    yaml_parser_t parser;
    int ok;

    ck_assert(yaml_parser_initialize(&parser));
    yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
    ok = yaml_parser_load(&parser, doc);
    yaml_parser_delete(&parser);
    ck_assert_msg(ok, "emitted YAML does not parse:\n%s", buf);
    ck_assert_msg(yaml_document_get_root_node(doc) != NULL, "empty YAML document");
}

/* Walk "spec.tools[1].config.allowed_hosts[0]"; NULL if any step is missing. */
static yaml_node_t *yq(yaml_document_t *doc, const char *path)
{
    yaml_node_t *node = yaml_document_get_root_node(doc);
    const char *p = path;

    while (node != NULL && *p != '\0') {
        if (*p == '.')
            p++;
        if (*p == '[') {
            char *end;
            unsigned long i = strtoul(p + 1, &end, 10);
            p = end + 1;
            if (node->type != YAML_SEQUENCE_NODE ||
                i >= (unsigned long)(node->data.sequence.items.top -
                                     node->data.sequence.items.start))
                return NULL;
            node = yaml_document_get_node(doc, node->data.sequence.items.start[i]);
        } else {
            size_t n = strcspn(p, ".[");
            yaml_node_pair_t *pair;
            yaml_node_t *found = NULL;
            if (node->type != YAML_MAPPING_NODE)
                return NULL;
            for (pair = node->data.mapping.pairs.start;
                 pair < node->data.mapping.pairs.top; pair++) {
                yaml_node_t *k = yaml_document_get_node(doc, pair->key);
                if (k->type == YAML_SCALAR_NODE && k->data.scalar.length == n &&
                    memcmp(k->data.scalar.value, p, n) == 0)
                    found = yaml_document_get_node(doc, pair->value);
            }
            node = found;
            p += n;
        }
    }
    return node;
}

static const char *yq_str(yaml_document_t *doc, const char *path)
{
    yaml_node_t *n = yq(doc, path);

    return n != NULL && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

/* items of a sequence / pairs of a mapping, -1 if not that kind */
static long yq_len(yaml_document_t *doc, const char *path)
{
    yaml_node_t *n = yq(doc, path);

    if (n != NULL && n->type == YAML_SEQUENCE_NODE)
        return n->data.sequence.items.top - n->data.sequence.items.start;
    if (n != NULL && n->type == YAML_MAPPING_NODE)
        return n->data.mapping.pairs.top - n->data.mapping.pairs.start;
    return -1;
}

/* Compile text for org "acme" version 3 and parse the result into doc;
 * returns the YAML (caller frees). */
static char *compile_text(const char *text, yaml_document_t *doc)
{
    struct json_object *o = J(text);
    struct am_error err;
    char *yaml = NULL;
    size_t len = 0;
    int rc;

    rc = wizard_compile(o, "acme", 3, test_refs, &test_cfg, &yaml, &len, &err);
    json_object_put(o);
    if (rc != 0)
        dump_details(&err);
    ck_assert_msg(rc == 0, "compile failed: %d %s", rc, err.message);
    ck_assert_ptr_nonnull(yaml);
    ck_assert_uint_eq(strlen(yaml), len);
    yaml_load(yaml, len, doc);
    return yaml;
}

/* ---- names --------------------------------------------------------------- */

#define A10 "aaaaaaaaaa"
static const struct {
    const char *s;
    int name_ok;
    int slug_ok;
} name_cases[] = {
    { "a", 1, 1 },
    { "0", 1, 1 },
    { "ab", 1, 1 },
    { "a-b", 1, 1 },
    { "a--b", 1, 1 },
    { "9-lives", 1, 1 },
    { "", 0, 0 },
    { "-", 0, 0 },
    { "-ab", 0, 0 },
    { "ab-", 0, 0 },
    { "a__b", 0, 0 },
    { "a_b", 0, 0 },
    { "_ab", 0, 0 },
    { "Ab", 0, 0 },
    { "aB", 0, 0 },
    { "a.b", 0, 0 },
    { "a b", 0, 0 },
    { "a/b", 0, 0 },
    { "\xc3\xa9t\xc3\xa9", 0, 0 },
    { A10 A10 A10 A10, 1, 1 },                              /* 40 */
    { A10 A10 A10 A10 "a", 1, 0 },                          /* 41 */
    { A10 A10 A10 A10 A10 A10 "aaa", 1, 0 },                /* 63 */
    { A10 A10 A10 A10 A10 A10 "aaaa", 0, 0 },               /* 64 */
    { "a" A10 A10 A10 A10 A10 A10 "-", 0, 0 },              /* 62, ends in '-' */
};

START_TEST(name_validation_edges)
{
    ck_assert_msg(wizard_name_valid(name_cases[_i].s) == name_cases[_i].name_ok,
                  "name \"%s\": expected %d", name_cases[_i].s, name_cases[_i].name_ok);
    ck_assert_msg(wizard_slug_valid(name_cases[_i].s) == name_cases[_i].slug_ok,
                  "slug \"%s\": expected %d", name_cases[_i].s, name_cases[_i].slug_ok);
}
END_TEST

START_TEST(name_validation_null_is_invalid)
{
    ck_assert_int_eq(wizard_name_valid(NULL), 0);
    ck_assert_int_eq(wizard_slug_valid(NULL), 0);
}
END_TEST

/* ---- validation: one case per row --------------------------------------- */

static const struct {
    const char *json;
    const char *field;
    const char *problem;
} problem_cases[] = {
    /* unknown fields, at every level */
    { "{\"name\":\"a\",\"bogus\":1}", "bogus", "unknown field" },
    { "{\"name\":\"a\",\"step2\":{\"foo\":\"x\"}}", "step2.foo", "unknown field" },
    { "{\"name\":\"a\",\"step3\":{\"tool_configs\":{\"http_request\":{\"bogus\":1}}}}",
      "step3.tool_configs.http_request.bogus", "unknown field" },
    { "{\"name\":\"a\",\"step3\":{\"tool_configs\":{\"calculator\":{\"precision\":2}}}}",
      "step3.tool_configs.calculator.precision", "unknown field" },
    { "{\"name\":\"a\",\"step3\":{\"tool_configs\":{\"hammer\":{}}}}",
      "step3.tool_configs.hammer", "unknown tool" },
    /* wrong types */
    { "{\"name\":5}", "name", "must be a string" },
    { "{\"name\":\"a\",\"display_name\":5}", "display_name", "must be a string" },
    { "{\"name\":\"a\",\"step1\":\"openai/x\"}", "step1", "must be an object" },
    { "{\"name\":\"a\",\"step5\":[]}", "step5", "must be an object" },
    { "{\"name\":\"a\",\"step4\":{\"window_size\":\"20\"}}", "step4.window_size", "must be an integer" },
    { "{\"name\":\"a\",\"step4\":{\"window_size\":20.0}}", "step4.window_size", "must be an integer" },
    { "{\"name\":\"a\",\"step4\":{\"window_size\":true}}", "step4.window_size", "must be an integer" },
    { "{\"name\":\"a\",\"step3\":{\"tools\":\"calculator\"}}", "step3.tools", "must be an array of strings" },
    { "{\"name\":\"a\",\"step3\":{\"tools\":[\"calculator\",7]}}", "step3.tools[1]", "must be a string" },
    { "{\"name\":\"a\",\"step3\":{\"tool_configs\":[]}}", "step3.tool_configs", "must be an object" },
    { "{\"name\":\"a\",\"step3\":{\"tool_configs\":{\"translator\":\"fr\"}}}",
      "step3.tool_configs.translator", "must be an object" },
    { "{\"name\":\"a\",\"step3\":{\"tool_configs\":{\"http_request\":{\"allow_private\":1}}}}",
      "step3.tool_configs.http_request.allow_private", "must be a boolean" },
    { "{\"name\":\"a\",\"step3\":{\"tool_configs\":{\"http_request\":{\"allowed_hosts\":[\"ok.example\",3]}}}}",
      "step3.tool_configs.http_request.allowed_hosts[1]", "must be a string" },
    /* enums */
    { "{\"name\":\"a\",\"step2\":{\"tone\":\"rude\"}}", "step2.tone",
      "must be one of: professional, casual, technical, empathetic" },
    { "{\"name\":\"a\",\"step2\":{\"tone\":\"casual\\u0000x\"}}", "step2.tone",
      "must be one of: professional, casual, technical, empathetic" },
    { "{\"name\":\"a\",\"step1\":{\"routing_strategy\":\"cheapest\"}}", "step1.routing_strategy",
      "must be one of: cost_optimized, latency_optimized, quality_first, round_robin" },
    { "{\"name\":\"a\",\"step3\":{\"tools\":[\"calculator\",\"hammer\"]}}", "step3.tools[1]",
      "must be one of: calculator, datetime, json_parser, http_request, web_search, "
      "text_summarizer, translator, email_sender, file_reader" },
    { "{\"name\":\"a\",\"step4\":{\"memory_type\":\"vector\"}}", "step4.memory_type",
      "must be one of: none, conversational" },
    { "{\"name\":\"a\",\"step5\":{\"output_guardrails\":[\"max_length\"]}}",
      "step5.output_guardrails[0]", "must be one of: pii_filter, content_safety" },
    { "{\"name\":\"a\",\"step5\":{\"orchestration\":\"loop\"}}", "step5.orchestration",
      "must be one of: single_pass, react, plan_and_execute" },
    /* ranges */
    { "{\"name\":\"a\",\"step4\":{\"window_size\":0}}", "step4.window_size", "must be between 1 and 100" },
    { "{\"name\":\"a\",\"step4\":{\"window_size\":101}}", "step4.window_size", "must be between 1 and 100" },
    { "{\"name\":\"a\",\"step4\":{\"window_size\":9223372036854775807}}", "step4.window_size",
      "must be between 1 and 100" },
    { "{\"name\":\"a\",\"step4\":{\"token_budget\":99}}", "step4.token_budget",
      "must be between 100 and 200000" },
    { "{\"name\":\"a\",\"step5\":{\"max_tokens\":32769}}", "step5.max_tokens", "must be between 1 and 32768" },
    { "{\"name\":\"a\",\"step5\":{\"max_input_chars\":-1}}", "step5.max_input_chars",
      "must be between 1 and 32768" },
    { "{\"name\":\"a\",\"step3\":{\"tool_configs\":{\"http_request\":{\"timeout_ms\":99}}}}",
      "step3.tool_configs.http_request.timeout_ms", "must be between 100 and 60000" },
    { "{\"name\":\"a\",\"step3\":{\"tool_configs\":{\"text_summarizer\":{\"max_words\":2001}}}}",
      "step3.tool_configs.text_summarizer.max_words", "must be between 10 and 2000" },
    { "{\"name\":\"a\",\"display_name\":\"\"}", "display_name", "must be between 1 and 128 bytes" },
    { "{\"name\":\"a\",\"step2\":{\"system_prompt\":\"\"}}", "step2.system_prompt",
      "must be between 1 and 32768 bytes" },
    { "{\"name\":\"a\",\"step3\":{\"tool_configs\":{\"http_request\":{\"allowed_hosts\":[\"\"]}}}}",
      "step3.tool_configs.http_request.allowed_hosts[0]", "must be between 1 and 253 bytes" },
    /* lists */
    { "{\"name\":\"a\",\"step3\":{\"tools\":[\"calculator\",\"datetime\",\"calculator\"]}}",
      "step3.tools[2]", "duplicate value" },
    { "{\"name\":\"a\",\"step5\":{\"input_guardrails\":[\"pii_filter\",\"pii_filter\"]}}",
      "step5.input_guardrails[1]", "duplicate value" },
    /* text */
    { "{\"name\":\"a\",\"step2\":{\"persona\":\"a\\u0000b\"}}", "step2.persona", "must be valid UTF-8 text" },
    { "{\"name\":\"a\",\"display_name\":\"\xff\xfe\"}", "display_name", "must be valid UTF-8 text" },
    { "{\"name\":\"a\",\"display_name\":\"\xc0\xaf\"}", "display_name", "must be valid UTF-8 text" },
    { "{\"name\":\"a\",\"display_name\":\"\xed\xa0\x80\"}", "display_name", "must be valid UTF-8 text" },
    /* the name */
    { "{}", "name", "required" },
    { "{\"name\":null}", "name", "required" },
    { "{\"name\":\"Support\"}", "name", "must be 1 to 63 characters of a-z, 0-9 and '-', "
      "starting and ending with a letter or digit" },
    { "{\"name\":\"a__b\"}", "name", "must be 1 to 63 characters of a-z, 0-9 and '-', "
      "starting and ending with a letter or digit" },
    { "{\"name\":\"ab\\u0000cd\"}", "name", "must be 1 to 63 characters of a-z, 0-9 and '-', "
      "starting and ending with a letter or digit" },
    /* models */
    { "{\"name\":\"a\",\"step1\":{\"model\":\"openai\"}}", "step1.model", "must be \"provider/model\"" },
    { "{\"name\":\"a\",\"step1\":{\"model\":\"/gpt-4o\"}}", "step1.model", "must be \"provider/model\"" },
    { "{\"name\":\"a\",\"step1\":{\"model\":7}}", "step1.model", "must be a string" },
    { "{\"name\":\"a\",\"step1\":{\"model\":\"acme/gpt\"}}", "step1.model",
      "provider must be one of: openai, anthropic, groq, mistral, cohere, ollama, echo" },
    { "{\"name\":\"a\",\"step1\":{\"fallback_model\":\"openai/\"}}", "step1.fallback_model",
      "model must be 1 to 128 characters of A-Z a-z 0-9 . _ : - /" },
    { "{\"name\":\"a\",\"step1\":{\"model\":\"openai/gpt 4\"}}", "step1.model",
      "model must be 1 to 128 characters of A-Z a-z 0-9 . _ : - /" },
    { "{\"name\":\"a\",\"step1\":{\"model\":\"openai/" A10 A10 A10 A10 A10 A10 A10 A10 A10 A10
      A10 A10 "aaaaaaaaa\"}}", "step1.model",
      "model must be 1 to 128 characters of A-Z a-z 0-9 . _ : - /" },
};

START_TEST(each_bad_field_reported_with_path_and_problem)
{
    struct am_error err;
    int rc = validate_text(problem_cases[_i].json, &err);

    ck_assert_msg(rc == AM_EVALIDATION, "case %d (%s): rc %d", _i, problem_cases[_i].json, rc);
    ck_assert_int_eq(err.code, AM_EVALIDATION);
    ck_assert_str_eq(err.message, "Invalid WizardConfig");
    ck_assert_detail(&err, problem_cases[_i].field, problem_cases[_i].problem);
}
END_TEST

static const char *const good_cases[] = {
    GOOD_JSON,
    "{\"name\":\"a\"}",
    "{\"name\":\"a\",\"step1\":null,\"step2\":{\"tone\":null},\"display_name\":null}",
    "{\"name\":\"a\",\"step1\":{\"model\":\"ollama/llama3:8b-instruct\"}}",
    "{\"name\":\"a\",\"step1\":{\"model\":\"openai/org/model.v1_2\"}}",
    "{\"name\":\"a\",\"step1\":{\"model\":\"openai/" A10 A10 A10 A10 A10 A10 A10 A10 A10 A10
    A10 A10 "aaaaaaaa\"}}",                                                 /* 128 */
    "{\"name\":\"a\",\"step2\":{\"persona\":\"\"}}",
    "{\"name\":\"a\",\"step4\":{\"window_size\":1,\"token_budget\":200000}}",
    "{\"name\":\"a\",\"step4\":{\"window_size\":100,\"token_budget\":100}}",
    "{\"name\":\"a\",\"display_name\":\"Caf\xc3\xa9 \xf0\x9f\x98\x80\"}",
    "{\"name\":\"a\",\"step3\":{\"tools\":[],\"tool_configs\":{}}}",
    "{\"name\":\"a\",\"step3\":{\"tool_configs\":{\"calculator\":{},\"http_request\":null}}}",
    "{\"name\":\"a\",\"step3\":{\"tool_configs\":{\"email_sender\":{\"from\":\"bot@example.com\","
    "\"allowed_domains\":[\"example.com\"]},\"translator\":{\"target_language\":\"fr\"},"
    "\"text_summarizer\":{\"max_words\":10},\"http_request\":{\"max_bytes\":10485760,"
    "\"timeout_ms\":60000,\"allow_private\":true}}}}",
    "{\"name\":\"a\",\"step5\":{\"input_guardrails\":[\"pii_filter\",\"content_safety\","
    "\"max_length\"],\"output_guardrails\":[],\"max_tokens\":32768,\"max_input_chars\":1}}",
};

START_TEST(valid_configs_pass)
{
    struct am_error err;
    int rc = validate_text(good_cases[_i], &err);

    if (rc != 0)
        dump_details(&err);
    ck_assert_msg(rc == 0, "case %d rejected: %s", _i, good_cases[_i]);
    ck_assert_int_eq(err.ndetails, 0);
}
END_TEST

START_TEST(top_level_must_be_object)
{
    static const char *const roots[] = { "[]", "\"x\"", "42", "true" };
    struct am_error err;
    size_t i;

    for (i = 0; i < sizeof(roots) / sizeof(roots[0]); i++) {
        ck_assert_int_eq(validate_text(roots[i], &err), AM_EVALIDATION);
        ck_assert_detail(&err, "", "must be an object");
    }
    ck_assert_int_eq(wizard_validate(NULL, &err), AM_EVALIDATION);
    ck_assert_detail(&err, "", "must be an object");
    ck_assert_int_eq(wizard_validate_deploy(NULL, &err), AM_EINVALIDCONFIG);
    ck_assert_int_eq(wizard_validate_patch(NULL, "a", &err), AM_EVALIDATION);
    ck_assert_int_eq(wizard_validate(NULL, NULL), AM_EVALIDATION);   /* err optional */
}
END_TEST

START_TEST(all_problems_reported_not_just_first)
{
    struct am_error err;
    int rc = validate_text("{\"name\":\"Bad\",\"bogus\":1,\"step1\":{\"model\":\"x\"},"
                           "\"step2\":{\"tone\":\"rude\",\"foo\":1},"
                           "\"step4\":{\"window_size\":0}}", &err);

    ck_assert_int_eq(rc, AM_EVALIDATION);
    ck_assert_int_eq(err.ndetails, 6);
    ck_assert_str_eq(err.details[0].field, "name");
    ck_assert_detail(&err, "bogus", "unknown field");
    ck_assert_detail(&err, "step1.model", "must be \"provider/model\"");
    ck_assert_detail(&err, "step2.tone", "must be one of: professional, casual, technical, empathetic");
    ck_assert_detail(&err, "step2.foo", "unknown field");
    ck_assert_detail(&err, "step4.window_size", "must be between 1 and 100");
}
END_TEST

START_TEST(details_stop_at_the_maximum_without_overflow)
{
    struct json_object *o = J("{\"name\":\"a\",\"step3\":{\"tools\":[]}}");
    struct json_object *tools = json_object_object_get(json_object_object_get(o, "step3"), "tools");
    struct am_error err;
    int i;

    for (i = 0; i < 1000; i++)
        json_object_array_add(tools, json_object_new_int(i));
    ck_assert_int_eq(wizard_validate(o, &err), AM_EVALIDATION);
    ck_assert_int_eq(err.ndetails, AM_ERROR_DETAILS_MAX);
    ck_assert_detail(&err, "step3.tools", "must have at most 16 items");
    ck_assert_detail(&err, "step3.tools[0]", "must be a string");
    json_object_put(o);
}
END_TEST

START_TEST(client_keys_in_paths_are_cut_and_made_printable)
{
    char text[600];
    struct am_error err;
    char key[301];

    memset(key, 'k', 300);
    key[300] = '\0';
    (void)util_snprintf(text, sizeof(text), "{\"name\":\"a\",\"step2\":{\"%s\":1}}", key);
    ck_assert_int_eq(validate_text(text, &err), AM_EVALIDATION);
    ck_assert_int_eq(err.ndetails, 1);
    ck_assert_uint_eq(strlen(err.details[0].field), strlen("step2.") + 48 + 3);
    ck_assert(strncmp(err.details[0].field, "step2.kkkk", 10) == 0);
    ck_assert(strcmp(err.details[0].field + strlen(err.details[0].field) - 3, "...") == 0);

    ck_assert_int_eq(validate_text("{\"name\":\"a\",\"step2\":{\"a\\nb\\u00e9\":1}}", &err),
                     AM_EVALIDATION);
    ck_assert_str_eq(err.details[0].field, "step2.a?b??");
}
END_TEST

/* ---- deploy -------------------------------------------------------------- */

START_TEST(deploy_requires_model_and_prompt)
{
    struct json_object *o = J("{\"name\":\"a\",\"step2\":{\"tone\":\"casual\"}}");
    struct json_object *good = J(GOOD_JSON);
    struct am_error err;

    ck_assert_int_eq(wizard_validate(o, &err), 0);
    ck_assert_int_eq(wizard_validate_deploy(o, &err), AM_EINVALIDCONFIG);
    ck_assert_int_eq(err.code, AM_EINVALIDCONFIG);
    ck_assert_str_eq(err.message, "Agent config is not deployable");
    ck_assert_int_eq(err.ndetails, 2);
    ck_assert_detail(&err, "step1.model", "required");
    ck_assert_detail(&err, "step2.system_prompt", "required");
    ck_assert_int_eq(wizard_validate_deploy(good, &err), 0);
    ck_assert_int_eq(err.code, AM_OK);
    json_object_put(o);
    json_object_put(good);
}
END_TEST

START_TEST(deploy_reports_bad_model_not_required)
{
    struct json_object *o = J("{\"name\":\"a\",\"step1\":{\"model\":\"nope\",\"model2\":1},"
                              "\"step2\":{\"system_prompt\":null}}");
    struct am_error err;

    ck_assert_int_eq(wizard_validate_deploy(o, &err), AM_EINVALIDCONFIG);
    ck_assert_int_eq(err.ndetails, 3);
    ck_assert_detail(&err, "step1.model", "must be \"provider/model\"");
    ck_assert_detail(&err, "step1.model2", "unknown field");
    ck_assert_detail(&err, "step2.system_prompt", "required");
    ck_assert(!has_detail(&err, "step1.model", "required"));
    json_object_put(o);
}
END_TEST

START_TEST(deploy_with_step_of_wrong_type_reports_type_once)
{
    struct json_object *o = J("{\"name\":\"a\",\"step1\":[],\"step2\":{\"system_prompt\":\"x\"}}");
    struct am_error err;

    ck_assert_int_eq(wizard_validate_deploy(o, &err), AM_EINVALIDCONFIG);
    ck_assert_int_eq(err.ndetails, 1);
    ck_assert_detail(&err, "step1", "must be an object");
    json_object_put(o);
}
END_TEST

/* ---- patch --------------------------------------------------------------- */

START_TEST(patch_cannot_rename)
{
    struct json_object *p = J("{\"name\":\"other-bot\",\"step2\":{\"tone\":\"casual\"}}");
    struct am_error err;

    ck_assert_int_eq(wizard_validate_patch(p, "support-bot", &err), AM_EVALIDATION);
    ck_assert_int_eq(err.ndetails, 1);
    ck_assert_detail(&err, "name", "cannot be changed");
    json_object_put(p);

    p = J("{\"name\":null}");
    ck_assert_int_eq(wizard_validate_patch(p, "support-bot", &err), AM_EVALIDATION);
    ck_assert_detail(&err, "name", "cannot be changed");
    json_object_put(p);

    p = J("{\"name\":\"support-bot\",\"display_name\":\"New\"}");
    ck_assert_int_eq(wizard_validate_patch(p, "support-bot", &err), 0);
    json_object_put(p);
}
END_TEST

START_TEST(patch_fields_are_all_optional_and_null_allowed)
{
    static const char *const patches[] = {
        "{}",
        "{\"step2\":{\"system_prompt\":\"New prompt\"}}",
        "{\"step2\":{\"tone\":null},\"step4\":null,\"display_name\":null}",
        "{\"step3\":{\"tool_configs\":{\"http_request\":null}}}",
    };
    struct am_error err;
    size_t i;

    for (i = 0; i < sizeof(patches) / sizeof(patches[0]); i++) {
        struct json_object *p = J(patches[i]);
        ck_assert_msg(wizard_validate_patch(p, "support-bot", &err) == 0, "%s", patches[i]);
        json_object_put(p);
    }
}
END_TEST

START_TEST(patch_checks_types_and_unknown_fields)
{
    struct json_object *p = J("{\"step2\":{\"tone\":\"rude\"},\"step9\":{},"
                              "\"step4\":{\"window_size\":1.5}}");
    struct am_error err;

    ck_assert_int_eq(wizard_validate_patch(p, "support-bot", &err), AM_EVALIDATION);
    ck_assert_str_eq(err.message, "Invalid WizardConfig");
    ck_assert_int_eq(err.ndetails, 3);
    ck_assert_detail(&err, "step9", "unknown field");
    ck_assert_detail(&err, "step4.window_size", "must be an integer");
    json_object_put(p);
}
END_TEST

/* ---- merge --------------------------------------------------------------- */

START_TEST(merge_changes_one_field_keeps_rest)
{
    struct json_object *base = J(GOOD_JSON);
    struct json_object *patch = J("{\"step2\":{\"system_prompt\":\"New prompt\"}}");
    char *base_before = xstrdup(json_object_to_json_string(base));
    char *patch_before = xstrdup(json_object_to_json_string(patch));
    struct json_object *m = wizard_merge(base, patch);
    struct json_object *step2 = json_object_object_get(m, "step2");
    struct am_error err;

    ck_assert_str_eq(json_object_get_string(json_object_object_get(step2, "system_prompt")),
                     "New prompt");
    ck_assert_str_eq(json_object_get_string(json_object_object_get(step2, "tone")), "professional");
    ck_assert_str_eq(json_object_get_string(json_object_object_get(step2, "persona")),
                     "Support Agent");
    ck_assert(json_object_equal(json_object_object_get(m, "step1"),
                                json_object_object_get(base, "step1")));
    ck_assert(json_object_equal(json_object_object_get(m, "step5"),
                                json_object_object_get(base, "step5")));
    ck_assert_int_eq(wizard_validate_deploy(m, &err), 0);
    /* inputs untouched, result independent of them */
    ck_assert_str_eq(json_object_to_json_string(base), base_before);
    ck_assert_str_eq(json_object_to_json_string(patch), patch_before);
    ck_assert_ptr_ne(json_object_object_get(m, "step1"), json_object_object_get(base, "step1"));
    free(base_before);
    free(patch_before);
    json_object_put(m);
    json_object_put(patch);
    json_object_put(base);
}
END_TEST

START_TEST(merge_null_removes_field)
{
    struct json_object *base = J(GOOD_JSON);
    struct json_object *patch = J("{\"step2\":{\"tone\":null},\"display_name\":null,"
                                  "\"step4\":null,\"step9\":null}");
    struct json_object *m = wizard_merge(base, patch);
    struct json_object *step2 = json_object_object_get(m, "step2"), *v;

    ck_assert(!json_object_object_get_ex(step2, "tone", &v));
    ck_assert(json_object_object_get_ex(step2, "persona", &v));
    ck_assert(json_object_object_get_ex(step2, "system_prompt", &v));
    ck_assert(!json_object_object_get_ex(m, "display_name", &v));
    ck_assert(!json_object_object_get_ex(m, "step4", &v));
    ck_assert(json_object_object_get_ex(m, "step5", &v));
    ck_assert_str_eq(json_object_get_string(json_object_object_get(m, "name")), "support-bot");
    json_object_put(m);
    json_object_put(patch);
    json_object_put(base);
}
END_TEST

START_TEST(merge_adds_new_step_and_strips_nulls)
{
    struct json_object *base = J("{\"name\":\"a\",\"step2\":{\"tone\":null,\"persona\":\"p\"}}");
    struct json_object *patch = J("{\"step4\":{\"memory_type\":\"conversational\","
                                  "\"window_size\":null},\"display_name\":\"A\","
                                  "\"step3\":{\"tool_configs\":{\"translator\":null,"
                                  "\"text_summarizer\":{\"max_words\":50}}}}");
    struct json_object *m = wizard_merge(base, patch);
    struct json_object *v;
    struct am_error err;

    ck_assert_str_eq(json_object_to_json_string_ext(m, JSON_C_TO_STRING_PLAIN),
                     "{\"name\":\"a\",\"step2\":{\"persona\":\"p\"},"
                     "\"step4\":{\"memory_type\":\"conversational\"},\"display_name\":\"A\","
                     "\"step3\":{\"tool_configs\":{\"text_summarizer\":{\"max_words\":50}}}}");
    ck_assert(json_object_object_get_ex(json_object_object_get(base, "step2"), "tone", &v));
    ck_assert_int_eq(wizard_validate(m, &err), 0);
    json_object_put(m);
    json_object_put(patch);
    json_object_put(base);
}
END_TEST

START_TEST(merge_step_value_replaces_whole_field)
{
    struct json_object *base = J(GOOD_JSON);
    struct json_object *patch = J("{\"step3\":{\"tools\":[\"datetime\"]},"
                                  "\"step5\":{\"output_guardrails\":[]}}");
    struct json_object *m = wizard_merge(base, patch);
    struct json_object *step3 = json_object_object_get(m, "step3");
    struct json_object *tools = json_object_object_get(step3, "tools");

    ck_assert_uint_eq(json_object_array_length(tools), 1);
    ck_assert_str_eq(json_object_get_string(json_object_array_get_idx(tools, 0)), "datetime");
    ck_assert(json_object_equal(json_object_object_get(step3, "tool_configs"),
                                json_object_object_get(json_object_object_get(base, "step3"),
                                                       "tool_configs")));
    ck_assert_uint_eq(json_object_array_length(json_object_object_get(
        json_object_object_get(m, "step5"), "output_guardrails")), 0);
    json_object_put(m);
    json_object_put(patch);
    json_object_put(base);
}
END_TEST

START_TEST(merge_of_non_objects_is_safe)
{
    struct json_object *arr = J("[1,2]");
    struct json_object *base = J("{\"name\":\"a\"}");
    struct json_object *m;

    m = wizard_merge(NULL, NULL);
    ck_assert(json_object_is_type(m, json_type_object));
    ck_assert_int_eq(json_object_object_length(m), 0);
    json_object_put(m);
    m = wizard_merge(base, arr);
    ck_assert(json_object_equal(m, base));
    json_object_put(m);
    m = wizard_merge(arr, base);
    ck_assert(json_object_equal(m, base));
    json_object_put(m);
    json_object_put(arr);
    json_object_put(base);
}
END_TEST

/* ---- providers ----------------------------------------------------------- */

START_TEST(providers_parsed_from_models)
{
    struct json_object *o = J(GOOD_JSON);
    int out[2];

    wizard_providers(o, out);
    ck_assert_int_eq(out[0], PROVIDER_OPENAI);
    ck_assert_int_eq(out[1], PROVIDER_OLLAMA);
    json_object_put(o);

    o = J("{\"name\":\"a\",\"step1\":{\"model\":\"echo/echo\"}}");
    wizard_providers(o, out);
    ck_assert_int_eq(out[0], PROVIDER_ECHO);
    ck_assert_int_eq(out[1], -1);
    json_object_put(o);

    o = J("{\"name\":\"a\",\"step1\":{\"model\":\"nobody/x\",\"fallback_model\":5}}");
    wizard_providers(o, out);
    ck_assert_int_eq(out[0], -1);
    ck_assert_int_eq(out[1], -1);
    json_object_put(o);

    wizard_providers(NULL, out);
    ck_assert_int_eq(out[0], -1);
    ck_assert_int_eq(out[1], -1);
}
END_TEST

/* ---- compile ------------------------------------------------------------- */

START_TEST(compile_contains_org_namespaced_name)
{
    yaml_document_t doc;
    char *yaml = compile_text(GOOD_JSON, &doc);

    ck_assert_pstr_eq(yq_str(&doc, "apiVersion"), "astromesh/v1");
    ck_assert_pstr_eq(yq_str(&doc, "kind"), "Agent");
    ck_assert_pstr_eq(yq_str(&doc, "metadata.name"), "acme__support-bot");
    ck_assert_pstr_eq(yq_str(&doc, "metadata.namespace"), "acme");
    ck_assert_pstr_eq(yq_str(&doc, "metadata.version"), "3.0.0");
    ck_assert_ptr_nonnull(strstr(yaml, "version: \"3.0.0\""));
    yaml_document_delete(&doc);
    free(yaml);
}
END_TEST

START_TEST(compile_full_shape)
{
    yaml_document_t doc;
    char *yaml = compile_text(GOOD_JSON, &doc);

    ck_assert_pstr_eq(yq_str(&doc, "spec.identity.display_name"), "Support Bot");
    ck_assert_pstr_eq(yq_str(&doc, "spec.identity.description"), "Support Agent");
    ck_assert_pstr_eq(yq_str(&doc, "spec.model.primary.provider"), "openai");
    ck_assert_pstr_eq(yq_str(&doc, "spec.model.primary.model"), "gpt-4o-mini");
    ck_assert_pstr_eq(yq_str(&doc, "spec.model.primary.api_key_ref"), "org:acme/openai");
    ck_assert_pstr_eq(yq_str(&doc, "spec.model.primary.parameters.max_tokens"), "1000");
    ck_assert_ptr_null(yq(&doc, "spec.model.primary.endpoint"));
    ck_assert_pstr_eq(yq_str(&doc, "spec.model.fallback.provider"), "ollama");
    ck_assert_pstr_eq(yq_str(&doc, "spec.model.fallback.model"), "llama3");
    ck_assert_pstr_eq(yq_str(&doc, "spec.model.fallback.endpoint"), "http://127.0.0.1:11434");
    ck_assert_ptr_null(yq(&doc, "spec.model.fallback.api_key_ref"));
    ck_assert_pstr_eq(yq_str(&doc, "spec.model.fallback.parameters.max_tokens"), "1000");
    ck_assert_pstr_eq(yq_str(&doc, "spec.model.routing.strategy"), "cost_optimized");
    ck_assert_pstr_eq(yq_str(&doc, "spec.orchestration.pattern"), "react");
    ck_assert_pstr_eq(yq_str(&doc, "spec.orchestration.max_iterations"), "10");
    ck_assert_int_eq(yq_len(&doc, "spec.tools"), 2);
    ck_assert_pstr_eq(yq_str(&doc, "spec.tools[0].name"), "calculator");
    ck_assert_pstr_eq(yq_str(&doc, "spec.tools[0].type"), "builtin");
    ck_assert_int_eq(yq_len(&doc, "spec.tools[0].config"), 0);
    ck_assert_pstr_eq(yq_str(&doc, "spec.tools[1].name"), "http_request");
    ck_assert_pstr_eq(yq_str(&doc, "spec.tools[1].config.allowed_hosts[0]"), "api.example.com");
    ck_assert_pstr_eq(yq_str(&doc, "spec.tools[1].config.allow_private"), "false");
    ck_assert_pstr_eq(yq_str(&doc, "spec.tools[1].config.timeout_ms"), "5000");
    ck_assert_pstr_eq(yq_str(&doc, "spec.memory.conversational.backend"), "berkeleydb");
    ck_assert_pstr_eq(yq_str(&doc, "spec.memory.conversational.strategy"), "sliding_window");
    ck_assert_pstr_eq(yq_str(&doc, "spec.memory.conversational.max_turns"), "40");
    ck_assert_int_eq(yq_len(&doc, "spec.guardrails.input"), 2);
    ck_assert_pstr_eq(yq_str(&doc, "spec.guardrails.input[0].type"), "pii_detection");
    ck_assert_pstr_eq(yq_str(&doc, "spec.guardrails.input[0].action"), "redact");
    ck_assert_pstr_eq(yq_str(&doc, "spec.guardrails.input[1].type"), "max_length");
    ck_assert_pstr_eq(yq_str(&doc, "spec.guardrails.input[1].max_chars"), "4000");
    ck_assert_int_eq(yq_len(&doc, "spec.guardrails.output"), 2);
    ck_assert_pstr_eq(yq_str(&doc, "spec.guardrails.output[0].type"), "content_filter");
    ck_assert_pstr_eq(yq_str(&doc, "spec.guardrails.output[0].action"), "block");
    ck_assert_pstr_eq(yq_str(&doc, "spec.guardrails.output[1].type"), "cost_limit");
    ck_assert_pstr_eq(yq_str(&doc, "spec.guardrails.output[1].max_tokens_per_turn"), "1000");
    yaml_document_delete(&doc);
    free(yaml);
}
END_TEST

START_TEST(compile_defaults_for_minimal_config)
{
    yaml_document_t doc;
    char *yaml = compile_text("{\"name\":\"mini\",\"step1\":{\"model\":\"echo/echo\"},"
                              "\"step2\":{\"system_prompt\":\"hi\",\"persona\":\"\"}}", &doc);

    ck_assert_pstr_eq(yq_str(&doc, "spec.identity.display_name"), "mini");
    ck_assert_ptr_null(yq(&doc, "spec.identity.description"));
    ck_assert_pstr_eq(yq_str(&doc, "spec.model.primary.provider"), "echo");
    ck_assert_ptr_null(yq(&doc, "spec.model.primary.parameters"));
    ck_assert_ptr_null(yq(&doc, "spec.model.primary.api_key_ref"));
    ck_assert_ptr_null(yq(&doc, "spec.model.fallback"));
    ck_assert_pstr_eq(yq_str(&doc, "spec.model.routing.strategy"), "cost_optimized");
    ck_assert_pstr_eq(yq_str(&doc, "spec.prompts.system"), "hi");
    ck_assert_pstr_eq(yq_str(&doc, "spec.orchestration.pattern"), "single_pass");
    ck_assert_int_eq(yq_len(&doc, "spec.tools"), 0);
    ck_assert_int_eq(yq_len(&doc, "spec.memory"), 0);
    ck_assert_int_eq(yq_len(&doc, "spec.guardrails.input"), 0);
    ck_assert_int_eq(yq_len(&doc, "spec.guardrails.output"), 0);
    yaml_document_delete(&doc);
    free(yaml);
}
END_TEST

START_TEST(compile_token_budget_memory_and_tool_configs)
{
    yaml_document_t doc;
    char *yaml = compile_text(
        "{\"name\":\"a\",\"step1\":{\"model\":\"anthropic/claude-3-5-haiku\"},"
        "\"step2\":{\"system_prompt\":\"p\"},"
        "\"step3\":{\"tools\":[\"email_sender\",\"translator\",\"text_summarizer\"],"
        "\"tool_configs\":{\"email_sender\":{\"allowed_domains\":[\"a.example\",\"b.example\"],"
        "\"from\":\"bot@a.example\"},\"translator\":{\"target_language\":\"no\"},"
        "\"web_search\":{}}},"
        "\"step4\":{\"memory_type\":\"conversational\",\"memory_strategy\":\"token_budget\"},"
        "\"step5\":{\"input_guardrails\":[\"max_length\",\"content_safety\"],"
        "\"max_input_chars\":512,\"output_guardrails\":[\"pii_filter\"]}}", &doc);

    ck_assert_pstr_eq(yq_str(&doc, "spec.memory.conversational.strategy"), "token_budget");
    ck_assert_pstr_eq(yq_str(&doc, "spec.memory.conversational.max_tokens"), "4000");
    ck_assert_ptr_null(yq(&doc, "spec.memory.conversational.max_turns"));
    ck_assert_pstr_eq(yq_str(&doc, "spec.tools[0].config.from"), "bot@a.example");
    ck_assert_pstr_eq(yq_str(&doc, "spec.tools[0].config.allowed_domains[1]"), "b.example");
    /* "no" must stay a string for YAML 1.1 readers: quoted */
    ck_assert_pstr_eq(yq_str(&doc, "spec.tools[1].config.target_language"), "no");
    ck_assert_ptr_nonnull(strstr(yaml, "target_language: \"no\""));
    ck_assert_int_eq(yq_len(&doc, "spec.tools[2].config"), 0);
    ck_assert_pstr_eq(yq_str(&doc, "spec.guardrails.input[0].max_chars"), "512");
    ck_assert_pstr_eq(yq_str(&doc, "spec.guardrails.input[1].type"), "content_filter");
    ck_assert_int_eq(yq_len(&doc, "spec.guardrails.output"), 1);
    ck_assert_pstr_eq(yq_str(&doc, "spec.guardrails.output[0].type"), "pii_detection");
    yaml_document_delete(&doc);
    free(yaml);
}
END_TEST

static const struct {
    const char *tone;
    const char *sentence;
} tone_cases[] = {
    { "professional", "Respond in a professional, clear tone." },
    { "casual", "Respond in a casual, friendly tone." },
    { "technical", "Respond in a precise, technical tone." },
    { "empathetic", "Respond in a warm, empathetic tone." },
};

START_TEST(compile_tone_sentence_before_prompt)
{
    char text[512], want[256];
    yaml_document_t doc;
    char *yaml;

    (void)util_snprintf(text, sizeof(text), "{\"name\":\"a\",\"step1\":{\"model\":\"echo/e\"},"
                        "\"step2\":{\"system_prompt\":\"You are X.\",\"tone\":\"%s\"}}",
                        tone_cases[_i].tone);
    (void)util_snprintf(want, sizeof(want), "%s\n\nYou are X.", tone_cases[_i].sentence);
    yaml = compile_text(text, &doc);
    ck_assert_pstr_eq(yq_str(&doc, "spec.prompts.system"), want);
    yaml_document_delete(&doc);
    free(yaml);
}
END_TEST

START_TEST(compile_without_tone_is_just_the_prompt)
{
    yaml_document_t doc;
    char *yaml = compile_text("{\"name\":\"a\",\"step2\":{\"system_prompt\":\"Only this.\","
                              "\"tone\":null}}", &doc);

    ck_assert_pstr_eq(yq_str(&doc, "spec.prompts.system"), "Only this.");
    yaml_document_delete(&doc);
    free(yaml);
}
END_TEST

START_TEST(compile_no_secret_only_ref)
{
    yaml_document_t doc;
    char *yaml;

    test_refs[PROVIDER_OLLAMA] = "server:ollama";
    yaml = compile_text(GOOD_JSON, &doc);
    ck_assert_ptr_null(strstr(yaml, SECRET));
    ck_assert_ptr_null(strstr(yaml, "sk-live"));
    ck_assert_pstr_eq(yq_str(&doc, "spec.model.primary.api_key_ref"), "org:acme/openai");
    ck_assert_pstr_eq(yq_str(&doc, "spec.model.fallback.api_key_ref"), "server:ollama");
    yaml_document_delete(&doc);
    free(yaml);
}
END_TEST

START_TEST(compile_without_refs_or_cfg_writes_neither)
{
    struct json_object *o = J(GOOD_JSON);
    yaml_document_t doc;
    struct am_error err;
    char *yaml = NULL;
    size_t len = 0;

    ck_assert_int_eq(wizard_compile(o, "acme", 1, NULL, NULL, &yaml, &len, &err), 0);
    yaml_load(yaml, len, &doc);
    ck_assert_ptr_null(yq(&doc, "spec.model.primary.api_key_ref"));
    ck_assert_ptr_null(yq(&doc, "spec.model.fallback.endpoint"));
    ck_assert_ptr_null(strstr(yaml, "api_key"));
    yaml_document_delete(&doc);
    free(yaml);
    json_object_put(o);
}
END_TEST

#define NASTY_PROMPT \
    "- not a list item\n# not a comment\nkey: value\n  indented: yes\n" \
    "'single' \"double\" back\\slash\ttab & *alias !tag |pipe >fold %pct @at `tick` " \
    "{brace} [bracket], ? ~ null true 0x1F 1e3 ...\n---\n" \
    "Unicode: caf\xc3\xa9 \xe2\x80\x94 \xf0\x9f\x98\x80 \xe2\x80\xa8 \xc2\x85 \xef\xbb\xbf " \
    "ctrl:\x01\x1f\x7f trailing spaces   "

START_TEST(compile_roundtrips_special_characters)
{
    struct json_object *o = J("{\"name\":\"a\",\"step1\":{\"model\":\"echo/e\"}}");
    struct json_object *step2 = json_object_new_object();
    yaml_document_t doc;
    struct am_error err;
    char *yaml = NULL;
    size_t len = 0;

    json_object_object_add(step2, "system_prompt", json_object_new_string(NASTY_PROMPT));
    json_object_object_add(step2, "persona", json_object_new_string("true"));
    json_object_object_add(o, "step2", step2);
    json_object_object_add(o, "display_name", json_object_new_string("- yes: #no \"q\" "));
    ck_assert_int_eq(wizard_validate_deploy(o, &err), 0);
    ck_assert_int_eq(wizard_compile(o, "acme", 7, test_refs, &test_cfg, &yaml, &len, &err), 0);
    yaml_load(yaml, len, &doc);
    ck_assert_pstr_eq(yq_str(&doc, "spec.prompts.system"), NASTY_PROMPT);
    ck_assert_pstr_eq(yq_str(&doc, "spec.identity.display_name"), "- yes: #no \"q\" ");
    ck_assert_pstr_eq(yq_str(&doc, "spec.identity.description"), "true");
    /* a YAML 1.1 reader must not see a bool: the emitter quoted it */
    ck_assert_ptr_nonnull(strstr(yaml, "description: \"true\""));
    ck_assert_pstr_eq(yq_str(&doc, "metadata.version"), "7.0.0");
    yaml_document_delete(&doc);
    free(yaml);
    json_object_put(o);
}
END_TEST

START_TEST(compile_roundtrips_a_maximum_size_prompt)
{
    struct json_object *o = J("{\"name\":\"a\",\"step1\":{\"model\":\"echo/e\"},\"step2\":{}}");
    char *prompt = xmalloc(32769);
    yaml_document_t doc;
    struct am_error err;
    char *yaml = NULL;
    size_t len = 0, i;

    for (i = 0; i < 32768; i++)
        prompt[i] = "ab :#\n\"'-\\"[i % 10];
    prompt[32768] = '\0';
    json_object_object_add(json_object_object_get(o, "step2"), "system_prompt",
                           json_object_new_string(prompt));
    ck_assert_int_eq(wizard_validate_deploy(o, &err), 0);
    ck_assert_int_eq(wizard_compile(o, "acme", 1, test_refs, &test_cfg, &yaml, &len, &err), 0);
    yaml_load(yaml, len, &doc);
    ck_assert_pstr_eq(yq_str(&doc, "spec.prompts.system"), prompt);
    yaml_document_delete(&doc);
    free(yaml);
    free(prompt);
    json_object_put(o);
}
END_TEST

/* Create and PUT measure what deploy will load: the escaped YAML, not the
 * JSON string. A prompt of quotes and newlines takes about twice its bytes. */
static struct json_object *prompt_config(char ch, size_t n, int with_model)
{
    struct json_object *o = J(with_model ? "{\"name\":\"a\",\"step1\":{\"model\":\"openai/m\"},"
                                           "\"step2\":{}}" : "{\"name\":\"a\",\"step2\":{}}");
    char *prompt = xmalloc(n + 1);

    memset(prompt, ch, n);
    prompt[n] = '\0';
    json_object_object_add(json_object_object_get(o, "step2"), "system_prompt",
                           json_object_new_string(prompt));
    free(prompt);
    return o;
}

START_TEST(compiled_size_is_checked_in_the_unit_of_the_slot)
{
    struct json_object *plain = prompt_config('a', 3000, 1), *quoted = prompt_config('"', 3000, 1);
    struct json_object *lines = prompt_config('\n', 3000, 0);
    struct am_error err;

    error_clear(&err);
    ck_assert_int_eq(wizard_check_compiled_size(plain, "acme", &test_cfg, 4096, &err), 0);
    /* the same number of JSON bytes, escaped past the slot: refused, named */
    ck_assert_int_eq(wizard_check_compiled_size(quoted, "acme", &test_cfg, 4096, &err),
                     AM_EVALIDATION);
    ck_assert_int_eq(err.ndetails, 1);
    ck_assert_str_eq(err.details[0].field, "step2.system_prompt");
    ck_assert_ptr_nonnull(strstr(err.details[0].problem, "4096"));
    /* a draft without a model is measured too */
    error_clear(&err);
    ck_assert_int_eq(wizard_check_compiled_size(lines, "acme", &test_cfg, 4096, &err),
                     AM_EVALIDATION);
    /* and what the check accepts, a deploy compiles within the slot */
    error_clear(&err);
    ck_assert_int_eq(wizard_check_compiled_size(quoted, "acme", &test_cfg, 64 * 1024, &err), 0);
    json_object_put(plain);
    json_object_put(quoted);
    json_object_put(lines);
}
END_TEST

START_TEST(compile_is_deterministic)
{
    struct json_object *a = J(GOOD_JSON), *b = J(GOOD_JSON);
    struct am_error err;
    char *y1 = NULL, *y2 = NULL, *y3 = NULL;
    size_t l1 = 0, l2 = 0, l3 = 0;

    ck_assert_int_eq(wizard_compile(a, "acme", 3, test_refs, &test_cfg, &y1, &l1, &err), 0);
    ck_assert_int_eq(wizard_compile(a, "acme", 3, test_refs, &test_cfg, &y2, &l2, &err), 0);
    ck_assert_int_eq(wizard_compile(b, "acme", 3, test_refs, &test_cfg, &y3, &l3, &err), 0);
    ck_assert_uint_eq(l1, l2);
    ck_assert_uint_eq(l1, l3);
    ck_assert(memcmp(y1, y2, l1) == 0);
    ck_assert(memcmp(y1, y3, l1) == 0);
    free(y1);
    free(y2);
    free(y3);
    json_object_put(a);
    json_object_put(b);
}
END_TEST

START_TEST(compile_draft_without_model_or_prompt)
{
    yaml_document_t doc;
    char *yaml = compile_text("{\"name\":\"draft\",\"step2\":{\"tone\":\"casual\"}}", &doc);

    ck_assert_ptr_null(yq(&doc, "spec.model.primary"));
    ck_assert_pstr_eq(yq_str(&doc, "spec.model.routing.strategy"), "cost_optimized");
    ck_assert_pstr_eq(yq_str(&doc, "spec.prompts.system"), "Respond in a casual, friendly tone.");
    yaml_document_delete(&doc);
    free(yaml);
}
END_TEST

START_TEST(compile_rejects_invalid_config_and_bad_org)
{
    struct json_object *bad = J("{\"name\":\"a\",\"step2\":{\"tone\":\"rude\"}}");
    struct json_object *good = J(GOOD_JSON);
    struct am_error err;
    char *yaml = (char *)"sentinel";
    size_t len = 99;

    ck_assert_int_eq(wizard_compile(bad, "acme", 1, test_refs, &test_cfg, &yaml, &len, &err),
                     AM_EINVALIDCONFIG);
    ck_assert_ptr_null(yaml);
    ck_assert_uint_eq(len, 0);
    ck_assert_detail(&err, "step2.tone", "must be one of: professional, casual, technical, empathetic");
    ck_assert_int_eq(wizard_compile(good, "Acme__x", 1, test_refs, &test_cfg, &yaml, &len, &err),
                     AM_EINTERNAL);
    ck_assert_ptr_null(yaml);
    ck_assert_int_eq(wizard_compile(NULL, "acme", 1, NULL, NULL, &yaml, &len, NULL),
                     AM_EINVALIDCONFIG);
    json_object_put(bad);
    json_object_put(good);
}
END_TEST

/* ---- the corpus ---------------------------------------------------------- */

/* rc is 0 or code, and err agrees with it. */
static void check_clean(const char *file, const char *what, int rc, int code,
                        const struct am_error *err)
{
    int i;

    ck_assert_msg(rc == 0 || rc == code, "%s: %s returned %d", file, what, rc);
    ck_assert_msg(err->code == rc, "%s: %s err->code %d != rc %d", file, what, err->code, rc);
    if (rc == 0) {
        ck_assert_msg(err->ndetails == 0, "%s: %s: details on success", file, what);
        return;
    }
    ck_assert_msg(err->message[0] != '\0', "%s: %s: empty message", file, what);
    ck_assert_msg(err->ndetails > 0 && err->ndetails <= AM_ERROR_DETAILS_MAX,
                  "%s: %s: %d details", file, what, err->ndetails);
    for (i = 0; i < err->ndetails; i++)
        ck_assert_msg(err->details[i].problem[0] != '\0', "%s: %s: empty problem", file, what);
}

/* Compile must succeed exactly when the draft rules pass, and the output
 * must parse. Returns rc. */
static int check_compile(const char *file, struct json_object *doc)
{
    struct am_error err, verr;
    yaml_document_t ydoc;
    char *yaml = NULL;
    size_t len = 0;
    int rc = wizard_compile(doc, "acme", 1, test_refs, &test_cfg, &yaml, &len, &err);
    int vrc = wizard_validate(doc, &verr);

    check_clean(file, "compile", rc, AM_EINVALIDCONFIG, &err);
    ck_assert_msg((rc == 0) == (vrc == 0), "%s: compile %d but validate %d", file, rc, vrc);
    if (rc != 0) {
        ck_assert_ptr_null(yaml);
        return rc;
    }
    ck_assert_uint_eq(strlen(yaml), len);
    ck_assert_ptr_null(strstr(yaml, SECRET));
    yaml_load(yaml, len, &ydoc);
    yaml_document_delete(&ydoc);
    free(yaml);
    return 0;
}

static void replay_doc(const char *file, struct json_object *doc, struct json_object *good)
{
    struct json_object *m;
    struct am_error err;
    int rc, drc, prc, out[2];

    rc = wizard_validate(doc, &err);
    check_clean(file, "validate", rc, AM_EVALIDATION, &err);
    drc = wizard_validate_deploy(doc, &err);
    check_clean(file, "validate_deploy", drc, AM_EINVALIDCONFIG, &err);
    ck_assert_msg(drc != 0 || rc == 0, "%s: deployable but not valid", file);
    prc = wizard_validate_patch(doc, "support-bot", &err);
    check_clean(file, "validate_patch", prc, AM_EVALIDATION, &err);
    check_clean(file, "validate_patch(NULL)", wizard_validate_patch(doc, NULL, &err),
                AM_EVALIDATION, &err);
    check_compile(file, doc);
    wizard_providers(doc, out);
    ck_assert(out[0] >= -1 && out[0] < PROVIDER_COUNT && out[1] >= -1 && out[1] < PROVIDER_COUNT);

    /* a valid patch on a valid config gives a valid config */
    m = wizard_merge(good, doc);
    ck_assert(json_object_is_type(m, json_type_object));
    rc = wizard_validate(m, &err);
    check_clean(file, "validate(merge(good, doc))", rc, AM_EVALIDATION, &err);
    ck_assert_msg(prc != 0 || rc == 0, "%s: valid patch gave an invalid merge", file);
    check_compile(file, m);
    json_object_put(m);

    m = wizard_merge(doc, good);
    ck_assert(json_object_is_type(m, json_type_object));
    check_compile(file, m);
    json_object_put(m);
}

/* Read a whole corpus file (they are small; 4 MiB cap). */
static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t n = 0, cap = 0, got;

    ck_assert_msg(f != NULL, "cannot open %s", path);
    do {
        if (n + 65536 > cap) {
            cap = cap ? cap * 2 : 65536;
            buf = xrealloc(buf, cap + 1);
        }
        got = fread(buf + n, 1, cap - n, f);
        n += got;
    } while (got > 0 && n < (4u << 20));
    fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;
}

static int corpus_filter(const struct dirent *d)
{
    size_t n = strlen(d->d_name);

    return n > 5 && strcmp(d->d_name + n - 5, ".json") == 0;
}

static void replay_file(const char *dir, const char *name, struct json_object *good,
                        int *nparsed)
{
    char path[1024];
    struct json_tokener *tok = json_tokener_new();
    struct json_object *doc;
    struct am_error err;
    size_t len;
    char *buf;
    int parsed;

    (void)util_snprintf(path, sizeof(path), "%s/%s", dir, name);
    buf = read_file(path, &len);
    doc = json_tokener_parse_ex(tok, buf, (int)len);
    parsed = json_tokener_get_error(tok) == json_tokener_success;
    if (!parsed) {
        /* incomplete input: tell the tokener it has ended */
        doc = json_tokener_parse_ex(tok, "", 1);
        parsed = json_tokener_get_error(tok) == json_tokener_success;
    }
    json_tokener_free(tok);
    free(buf);
    if (!parsed) {
        json_object_put(doc);
        ck_assert_msg(strncmp(name, "ok_", 3) && strncmp(name, "bad_", 4) &&
                      strncmp(name, "draft_", 6), "%s: does not parse as JSON", name);
        return;
    }
    (*nparsed)++;
    replay_doc(name, doc, good);
    if (strncmp(name, "ok_", 3) == 0)
        ck_assert_msg(wizard_validate_deploy(doc, &err) == 0, "%s: not deployable", name);
    if (strncmp(name, "draft_", 6) == 0) {
        ck_assert_msg(wizard_validate(doc, &err) == 0, "%s: not a valid draft", name);
        ck_assert_msg(wizard_validate_deploy(doc, &err) != 0, "%s: deployable", name);
    }
    if (strncmp(name, "bad_", 4) == 0)
        ck_assert_msg(wizard_validate(doc, &err) == AM_EVALIDATION && err.ndetails > 0,
                      "%s: accepted", name);
    json_object_put(doc);
}

START_TEST(corpus_replays_cleanly)
{
    const char *top = getenv("ASTROMESH_SRCDIR");
    struct json_object *good = J(GOOD_JSON);
    struct dirent **names = NULL;
    char dir[1024];
    int i, n, nparsed = 0;

    if (top == NULL)
        top = getenv("srcdir");
    (void)util_snprintf(dir, sizeof(dir), "%s/tests/corpus/wizard", top ? top : ".");
    n = scandir(dir, &names, corpus_filter, alphasort);
    ck_assert_msg(n > 0, "no corpus in %s", dir);
    for (i = 0; i < n; i++) {
        replay_file(dir, names[i]->d_name, good, &nparsed);
        free(names[i]);
    }
    free(names);
    ck_assert_int_gt(nparsed, 0);
    json_object_put(good);
}
END_TEST

/* ---- runner -------------------------------------------------------------- */

#define NCASES(a) ((int)(sizeof(a) / sizeof((a)[0])))

static Suite *wizard_suite(void)
{
    Suite *s = suite_create("wizard");
    TCase *names = tcase_create("names");
    TCase *validate = tcase_create("validate");
    TCase *merge = tcase_create("merge");
    TCase *compile = tcase_create("compile");
    TCase *corpus = tcase_create("corpus");

    tcase_add_loop_test(names, name_validation_edges, 0, NCASES(name_cases));
    tcase_add_test(names, name_validation_null_is_invalid);
    suite_add_tcase(s, names);

    tcase_add_loop_test(validate, each_bad_field_reported_with_path_and_problem, 0,
                        NCASES(problem_cases));
    tcase_add_loop_test(validate, valid_configs_pass, 0, NCASES(good_cases));
    tcase_add_test(validate, top_level_must_be_object);
    tcase_add_test(validate, all_problems_reported_not_just_first);
    tcase_add_test(validate, details_stop_at_the_maximum_without_overflow);
    tcase_add_test(validate, client_keys_in_paths_are_cut_and_made_printable);
    tcase_add_test(validate, deploy_requires_model_and_prompt);
    tcase_add_test(validate, deploy_reports_bad_model_not_required);
    tcase_add_test(validate, deploy_with_step_of_wrong_type_reports_type_once);
    tcase_add_test(validate, patch_cannot_rename);
    tcase_add_test(validate, patch_fields_are_all_optional_and_null_allowed);
    tcase_add_test(validate, patch_checks_types_and_unknown_fields);
    tcase_add_test(validate, providers_parsed_from_models);
    suite_add_tcase(s, validate);

    tcase_add_test(merge, merge_changes_one_field_keeps_rest);
    tcase_add_test(merge, merge_null_removes_field);
    tcase_add_test(merge, merge_adds_new_step_and_strips_nulls);
    tcase_add_test(merge, merge_step_value_replaces_whole_field);
    tcase_add_test(merge, merge_of_non_objects_is_safe);
    suite_add_tcase(s, merge);

    tcase_add_checked_fixture(compile, setup_cfg, NULL);
    tcase_add_test(compile, compile_contains_org_namespaced_name);
    tcase_add_test(compile, compile_full_shape);
    tcase_add_test(compile, compile_defaults_for_minimal_config);
    tcase_add_test(compile, compile_token_budget_memory_and_tool_configs);
    tcase_add_loop_test(compile, compile_tone_sentence_before_prompt, 0, NCASES(tone_cases));
    tcase_add_test(compile, compile_without_tone_is_just_the_prompt);
    tcase_add_test(compile, compile_no_secret_only_ref);
    tcase_add_test(compile, compile_without_refs_or_cfg_writes_neither);
    tcase_add_test(compile, compile_roundtrips_special_characters);
    tcase_add_test(compile, compile_roundtrips_a_maximum_size_prompt);
    tcase_add_test(compile, compile_is_deterministic);
    tcase_add_test(compile, compiled_size_is_checked_in_the_unit_of_the_slot);
    tcase_add_test(compile, compile_draft_without_model_or_prompt);
    tcase_add_test(compile, compile_rejects_invalid_config_and_bad_org);
    suite_add_tcase(s, compile);

    tcase_add_checked_fixture(corpus, setup_cfg, NULL);
    tcase_set_timeout(corpus, 120);
    tcase_add_test(corpus, corpus_replays_cleanly);
    suite_add_tcase(s, corpus);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(wizard_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
