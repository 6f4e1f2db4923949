/*
 * check_versions.c - unit tests for agent versions (versions.c, and the
 * version side of agent.c: deploy, rollback, retention), run against a real
 * Berkeley DB environment (a fresh mkdtemp directory per test) and a real
 * shared-memory registry ("/am-vtest-<pid>-<n>", unlinked at teardown).
 *
 * What is asserted:
 *  - the canonical text and hash ignore key order; the diff names changed
 *    fields by the paths validation errors use;
 *  - a version is made only by a deploy of a changed config, with the
 *    content hash of its config, its YAML ("N.0.0"), who and when;
 *  - retention keeps exactly agents.max_versions at the boundary;
 *  - rollback in each state: deployed switches the registry, paused and
 *    draft only restore the config; unknown version, bad body and a
 *    provider key gone change nothing;
 *  - with the store's write-fault hook armed at each write, a new-version
 *    deploy and a rollback leave the old state or the new one, and the
 *    registry agrees with the store (issue 12).
 *
 * Run under valgrind: CK_FORK=no valgrind --leak-check=full --error-exitcode=1
 */
#include <check.h>
#include <dirent.h>
#include <ftw.h>
#include <sys/mman.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <json-c/json.h>
#include "control/agent.h"
#include "control/versions.h"
#include "state/app.h"
#include "state/config.h"
#include "state/registry.h"
#include "state/store.h"
#include "lib/invariant.h"
#include "lib/util.h"

#define NCASES(a) ((int)(sizeof(a) / sizeof((a)[0])))
#define SECRET "sk-test-secret-123456"
#define BOT(model, prompt) \
    "{\"name\":\"bot\",\"display_name\":\"Bot\"," \
    "\"step1\":{\"model\":\"" model "\"}," \
    "\"step2\":{\"system_prompt\":\"" prompt "\",\"tone\":\"professional\"}}"

static char base[64];
static pid_t runner_pid;
static char home[96];
static char reg_name[64];
static int reg_seq;
static struct config cfg;
static struct app app;

/* ---- fixture ------------------------------------------------------------- */

static void setup(void)
{
    struct store_options o = { home, 8, 1, 64, 0, NULL };
    struct am_error err;
    const char *org = "{\"slug\":\"acme\",\"display_name\":\"Acme\",\"plan\":\"free\",\"created_at\":1}";

    snprintf(home, sizeof home, "%s/env-XXXXXX", base);
    ck_assert_ptr_nonnull(mkdtemp(home));
    config_defaults(&cfg);
    util_strlcpy(cfg.jwt_secret, "check-versions-jwt-secret-0123456789abcdef", sizeof cfg.jwt_secret);
    util_strlcpy(cfg.providers[PROVIDER_OPENAI].api_key, SECRET,
                 sizeof cfg.providers[PROVIDER_OPENAI].api_key);
    memset(&app, 0, sizeof app);
    app.cfg = &cfg;
    error_clear(&err);
    ck_assert_msg(store_open(&app.store, &o, STORE_OPEN_CREATE, &err) == 0, "%s", err.message);
    snprintf(reg_name, sizeof reg_name, "/am-vtest-%d-%d-%d", (int)runner_pid, (int)getpid(),
             ++reg_seq);
    ck_assert_int_eq(registry_create(&app.reg, reg_name, 64, 64 * 1024, &err), 0);
    ck_assert_int_eq(store_put(app.store, NULL, STORE_ORGS, "acme", 4, org, strlen(org)), 0);
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb; (void)flag; (void)ftw;
    return remove(path);
}

static void teardown(void)
{
    store_test_fail_write_after(0);
    registry_close(app.reg, 1);
    store_close(app.store);
    memset(&app, 0, sizeof app);
    if (home[0] != '\0')
        nftw(home, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    home[0] = '\0';
}

/* ---- helpers ---------------------------------------------------------------- */

static struct json_object *J(const char *text)
{
    struct json_object *o = json_tokener_parse(text);

    ck_assert_msg(o != NULL, "bad test JSON: %s", text);
    return o;
}

static int64_t int_of(struct json_object *o, const char *key)
{
    struct json_object *v;

    return json_object_object_get_ex(o, key, &v) ? json_object_get_int64(v) : -1;
}

static void create(const char *json)
{
    struct json_object *wc = J(json), *out = NULL;
    struct am_error err;

    error_clear(&err);
    ck_assert_msg(agent_create(&app, "acme", wc, &out, &err) == 0, "create: %s", err.message);
    json_object_put(out);
    json_object_put(wc);
}

/* Deploy; returns the version the answer names. */
static int64_t deploy(void)
{
    struct json_object *out = NULL;
    struct am_error err;
    int64_t n;

    error_clear(&err);
    ck_assert_msg(agent_deploy(&app, "acme", "bot", "ann@example.com", &out, &err) == 0,
                  "deploy: %s", err.message);
    n = int_of(out, "version");
    json_object_put(out);
    return n;
}

static void pause_bot(void)
{
    struct json_object *out = NULL;
    struct am_error err;

    error_clear(&err);
    ck_assert_int_eq(agent_pause(&app, "acme", "bot", &out, &err), 0);
    json_object_put(out);
}

static void update(const char *patch_json)
{
    struct json_object *patch = J(patch_json), *out = NULL;
    struct am_error err;

    error_clear(&err);
    ck_assert_msg(agent_update(&app, "acme", "bot", patch, &out, &err) == 0, "update: %s",
                  err.message);
    json_object_put(out);
    json_object_put(patch);
}

/* Pause, set the prompt, deploy: a new version. Returns its number. */
static int64_t redeploy_with(const char *prompt)
{
    char patch[256];

    pause_bot();
    snprintf(patch, sizeof patch, "{\"step2\":{\"system_prompt\":\"%s\"}}", prompt);
    update(patch);
    return deploy();
}

static int rollback(int64_t n, struct json_object **out, struct am_error *err)
{
    char text[64];
    struct json_object *body;
    int rc;

    snprintf(text, sizeof text, "{\"version\":%lld}", (long long)n);
    body = J(text);
    error_clear(err);
    rc = agent_rollback(&app, "acme", "bot", "bob@example.com", body, out, err);
    json_object_put(body);
    return rc;
}

/* The agent object (caller puts). */
static struct json_object *get_bot(void)
{
    struct json_object *out = NULL;
    struct am_error err;

    error_clear(&err);
    ck_assert_int_eq(agent_get(&app, "acme", "bot", &out, &err), 0);
    return out;
}

/* The version numbers listed, newest first, as "3,2,1", with "*" after the live one. */
static void list_text(char *buf, size_t cap)
{
    struct json_object *out = NULL, *arr, *v, *live;
    struct am_error err;
    size_t n = 0, i;

    error_clear(&err);
    ck_assert_int_eq(agent_versions(&app, "acme", "bot", 0, 0, &out, &err), 0);
    ck_assert(json_object_object_get_ex(out, "versions", &arr));
    buf[0] = '\0';
    for (i = 0; i < json_object_array_length(arr); i++) {
        v = json_object_array_get_idx(arr, i);
        json_object_object_get_ex(v, "live", &live);
        n += (size_t)snprintf(buf + n, cap - n, "%s%lld%s", i ? "," : "",
                              (long long)int_of(v, "version"),
                              json_object_get_boolean(live) ? "*" : "");
    }
    json_object_put(out);
}

/* The YAML the registry serves for bot, or "" (malloc'd). */
static char *served(void)
{
    struct registry_agent ra;
    char *y;

    memset(&ra, 0, sizeof ra);
    if (registry_get(app.reg, "acme__bot", &ra) != 0)
        return xstrdup("");
    y = xstrdup(ra.yaml);
    registry_agent_clear(&ra);
    return y;
}

static void check_invariants(void)
{
    CHECK_INVARIANTS(store_check_invariants(app.store));
    CHECK_INVARIANTS(registry_check_invariants(app.reg));
    CHECK_INVARIANTS(agent_check_invariants(&app));
}

/* Deployed exactly when served, at the record's edit count (agent.c 1). */
static void assert_registry_agrees(void)
{
    struct json_object *o = get_bot(), *st;
    uint64_t have = 0;
    int loaded = registry_contains(app.reg, "acme__bot", &have);

    json_object_object_get_ex(o, "status", &st);
    ck_assert_int_eq(loaded, strcmp(json_object_get_string(st), "deployed") == 0);
    json_object_put(o);
    check_invariants();
}

/* ---- pure functions ---------------------------------------------------------- */

START_TEST(canonical_text_and_hash_ignore_key_order)
{
    struct json_object *a = J("{\"b\":1,\"a\":{\"y\":[1,{\"q\":2,\"p\":1}],\"x\":\"s\"}}");
    struct json_object *b = J("{\"a\":{\"x\":\"s\",\"y\":[1,{\"p\":1,\"q\":2}]},\"b\":1}");
    struct json_object *c = J("{\"a\":{\"x\":\"s\",\"y\":[{\"p\":1,\"q\":2},1]},\"b\":1}");
    char *t = versions_canonical(a), ha[VERSIONS_HASH_HEX], hb[VERSIONS_HASH_HEX],
         hc[VERSIONS_HASH_HEX];

    ck_assert_str_eq(t, "{\"a\":{\"x\":\"s\",\"y\":[1,{\"p\":1,\"q\":2}]},\"b\":1}");
    versions_hash(a, ha);
    versions_hash(b, hb);
    versions_hash(c, hc);
    ck_assert_str_eq(ha, hb);
    ck_assert_str_ne(ha, hc);           /* array order matters */
    ck_assert_int_eq((int)strlen(ha), 64);
    free(t);
    json_object_put(a);
    json_object_put(b);
    json_object_put(c);
}
END_TEST

static const struct {
    const char *a, *b, *expect;         /* expect: "path:from>to;" in order */
} diffs[] = {
    { "{\"name\":\"x\"}", "{\"name\":\"x\"}", "" },
    { "{\"step1\":{\"model\":\"openai/a\"}}", "{\"step1\":{\"model\":\"openai/b\"}}",
      "step1.model:\"openai/a\">\"openai/b\";" },
    { "{\"step1\":{\"model\":\"m\"}}", "{\"step1\":{\"model\":\"m\",\"fallback_model\":\"f\"}}",
      "step1.fallback_model:null>\"f\";" },
    { "{\"display_name\":\"A\",\"step3\":{\"tools\":[\"calculator\"]}}", "{\"display_name\":\"A\"}",
      "step3.tools:[\"calculator\"]>null;" },
    { "{\"step5\":{\"max_tokens\":10},\"display_name\":\"A\"}",
      "{\"display_name\":\"B\",\"step5\":{\"max_tokens\":20}}",
      "display_name:\"A\">\"B\";step5.max_tokens:10>20;" },
    { "{\"step3\":{\"tool_configs\":{\"http_request\":{\"allowed_hosts\":[\"a\"]}}}}",
      "{\"step3\":{\"tool_configs\":{\"http_request\":{\"allowed_hosts\":[\"b\"]}}}}",
      "step3.tool_configs.http_request.allowed_hosts:[\"a\"]>[\"b\"];" },
};

START_TEST(diff_names_changed_fields_by_validation_paths)
{
    struct json_object *a = J(diffs[_i].a), *b = J(diffs[_i].b), *ch = versions_diff(a, b), *c, *v;
    char got[512];
    size_t n = 0, i;

    got[0] = '\0';
    for (i = 0; i < json_object_array_length(ch); i++) {
        c = json_object_array_get_idx(ch, i);
        json_object_object_get_ex(c, "path", &v);
        n += (size_t)snprintf(got + n, sizeof got - n, "%s:", json_object_get_string(v));
        json_object_object_get_ex(c, "from", &v);
        n += (size_t)snprintf(got + n, sizeof got - n, "%s>",
                              v ? json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE) : "null");
        json_object_object_get_ex(c, "to", &v);
        n += (size_t)snprintf(got + n, sizeof got - n, "%s;",
                              v ? json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE) : "null");
    }
    ck_assert_str_eq(got, diffs[_i].expect);
    json_object_put(ch);
    json_object_put(a);
    json_object_put(b);
}
END_TEST

/* ---- versions made by deploys -------------------------------------------------- */

START_TEST(first_deploy_makes_version_1_with_hash_author_and_yaml)
{
    struct json_object *out = NULL, *wc, *o;
    struct am_error err;
    char hex[VERSIONS_HASH_HEX], list[64], *y;
    const char *yaml;

    create(BOT("openai/gpt-4o-mini", "One"));
    o = get_bot();
    ck_assert(json_object_object_get_ex(o, "version", &wc) && wc == NULL);
    json_object_object_get_ex(o, "draft_changed", &wc);
    ck_assert(json_object_get_boolean(wc));
    json_object_put(o);
    ck_assert_int_eq(deploy(), 1);
    error_clear(&err);
    ck_assert_int_eq(agent_version_get(&app, "acme", "bot", "1", &out, &err), 0);
    ck_assert(json_object_object_get_ex(out, "wizard_config", &wc));
    versions_hash(wc, hex);
    ck_assert_str_eq(json_object_get_string(json_object_object_get(out, "config_hash")), hex);
    ck_assert_str_eq(json_object_get_string(json_object_object_get(out, "created_by")),
                     "ann@example.com");
    yaml = json_object_get_string(json_object_object_get(out, "yaml"));
    ck_assert_ptr_nonnull(strstr(yaml, "version: \"1.0.0\""));
    ck_assert_ptr_null(strstr(yaml, SECRET));
    y = served();
    ck_assert_str_eq(y, yaml);
    free(y);
    json_object_put(out);
    o = get_bot();
    ck_assert_int_eq(int_of(o, "version"), 1);
    ck_assert(!json_object_get_boolean(json_object_object_get(o, "draft_changed")));
    json_object_put(o);
    list_text(list, sizeof list);
    ck_assert_str_eq(list, "1*");
}
END_TEST

START_TEST(redeploy_of_unchanged_config_makes_no_version_and_no_compile)
{
    char list[64];
    uint64_t before;

    create(BOT("openai/gpt-4o-mini", "One"));
    ck_assert_int_eq(deploy(), 1);
    pause_bot();
    before = agent_compile_count();
    ck_assert_int_eq(deploy(), 1);
    ck_assert_uint_eq(agent_compile_count(), before);
    /* An edit that comes back to the same config is no change either. */
    pause_bot();
    update("{\"step2\":{\"system_prompt\":\"Two\"}}");
    update("{\"step2\":{\"system_prompt\":\"One\"}}");
    ck_assert_int_eq(deploy(), 1);
    list_text(list, sizeof list);
    ck_assert_str_eq(list, "1*");
}
END_TEST

START_TEST(changed_config_makes_next_version_and_draft_changed_says_so)
{
    struct json_object *o;
    char list[64], *y;

    create(BOT("openai/gpt-4o-mini", "One"));
    deploy();
    pause_bot();
    update("{\"step2\":{\"system_prompt\":\"Two\"}}");
    o = get_bot();
    ck_assert(json_object_get_boolean(json_object_object_get(o, "draft_changed")));
    ck_assert_int_eq(int_of(o, "version"), 1);
    json_object_put(o);
    ck_assert_int_eq(deploy(), 2);
    y = served();
    ck_assert_ptr_nonnull(strstr(y, "version: \"2.0.0\""));
    ck_assert_ptr_nonnull(strstr(y, "Two"));
    free(y);
    list_text(list, sizeof list);
    ck_assert_str_eq(list, "2*,1");
}
END_TEST

START_TEST(list_pages_with_limit_and_before)
{
    struct json_object *out = NULL, *arr;
    struct am_error err;

    create(BOT("openai/gpt-4o-mini", "P0"));
    deploy();
    redeploy_with("P1");
    redeploy_with("P2");
    redeploy_with("P3");
    error_clear(&err);
    ck_assert_int_eq(agent_versions(&app, "acme", "bot", 2, 0, &out, &err), 0);
    arr = json_object_object_get(out, "versions");
    ck_assert_int_eq((int)json_object_array_length(arr), 2);
    ck_assert_int_eq(int_of(json_object_array_get_idx(arr, 0), "version"), 4);
    ck_assert_int_eq(int_of(json_object_array_get_idx(arr, 1), "version"), 3);
    json_object_put(out);
    ck_assert_int_eq(agent_versions(&app, "acme", "bot", 2, 3, &out, &err), 0);
    arr = json_object_object_get(out, "versions");
    ck_assert_int_eq((int)json_object_array_length(arr), 2);
    ck_assert_int_eq(int_of(json_object_array_get_idx(arr, 0), "version"), 2);
    ck_assert_int_eq(int_of(json_object_array_get_idx(arr, 1), "version"), 1);
    json_object_put(out);
}
END_TEST

/* max_versions 3: after 3 deploys all are kept, the 4th pushes out v1. */
START_TEST(retention_keeps_max_versions_at_the_boundary)
{
    struct json_object *out = NULL;
    struct am_error err;
    char list[64];

    cfg.max_versions = 3;
    create(BOT("openai/gpt-4o-mini", "P1"));
    deploy();
    redeploy_with("P2");
    redeploy_with("P3");
    list_text(list, sizeof list);
    ck_assert_str_eq(list, "3*,2,1");
    redeploy_with("P4");
    list_text(list, sizeof list);
    ck_assert_str_eq(list, "4*,3,2");
    error_clear(&err);
    ck_assert_int_eq(agent_version_get(&app, "acme", "bot", "1", &out, &err), AM_EVERSIONNOTFOUND);
    redeploy_with("P5");
    list_text(list, sizeof list);
    ck_assert_str_eq(list, "5*,4,3");
    check_invariants();
}
END_TEST

START_TEST(retention_keeps_the_live_version_whatever_its_age)
{
    struct json_object *out = NULL;
    struct am_error err;
    char list[64];

    create(BOT("openai/gpt-4o-mini", "P1"));
    deploy();
    redeploy_with("P2");
    redeploy_with("P3");
    ck_assert_int_eq(rollback(1, &out, &err), 0);   /* deployed at v1 */
    json_object_put(out);
    /* Straight through the store (the deploy path prunes with the new
     * version live): keep 1 plus the live one. */
    ck_assert_int_eq(versions_prune(app.store, NULL, "acme", "bot", 1, 1), 1);
    list_text(list, sizeof list);
    ck_assert_str_eq(list, "3,1*");
}
END_TEST

START_TEST(delete_removes_every_version)
{
    struct am_error err;
    char list[64];

    create(BOT("openai/gpt-4o-mini", "P1"));
    deploy();
    redeploy_with("P2");
    error_clear(&err);
    ck_assert_int_eq(agent_delete(&app, "acme", "bot", &err), 0);
    create(BOT("openai/gpt-4o-mini", "Again"));
    ck_assert_int_eq(deploy(), 1);
    list_text(list, sizeof list);
    ck_assert_str_eq(list, "1*");
}
END_TEST

/* ---- rollback ------------------------------------------------------------------------ */

START_TEST(rollback_of_deployed_agent_switches_registry_without_compiling)
{
    struct json_object *out = NULL, *o;
    struct am_error err;
    char list[64], *y;
    uint64_t compiles;

    create(BOT("openai/gpt-4o-mini", "One"));
    deploy();
    redeploy_with("Two");
    compiles = agent_compile_count();
    ck_assert_int_eq(rollback(1, &out, &err), 0);
    ck_assert_int_eq(int_of(out, "version"), 1);
    ck_assert_str_eq(json_object_get_string(json_object_object_get(out, "status")), "deployed");
    ck_assert(!json_object_get_boolean(json_object_object_get(out, "draft_changed")));
    json_object_put(out);
    ck_assert_uint_eq(agent_compile_count(), compiles);
    y = served();
    ck_assert_ptr_nonnull(strstr(y, "version: \"1.0.0\""));
    ck_assert_ptr_nonnull(strstr(y, "One"));
    ck_assert_ptr_null(strstr(y, "Two"));
    free(y);
    o = get_bot();
    ck_assert_ptr_nonnull(strstr(json_object_to_json_string(json_object_object_get(o, "wizard_config")),
                                 "One"));
    json_object_put(o);
    list_text(list, sizeof list);
    ck_assert_str_eq(list, "2,1*");                   /* no history rewritten */
    assert_registry_agrees();
    /* and forward again */
    ck_assert_int_eq(rollback(2, &out, &err), 0);
    json_object_put(out);
    y = served();
    ck_assert_ptr_nonnull(strstr(y, "Two"));
    free(y);
    assert_registry_agrees();
}
END_TEST

START_TEST(rollback_of_paused_agent_restores_config_only_and_next_deploy_makes_it_live)
{
    struct json_object *out = NULL;
    struct am_error err;
    char list[64], *y;

    create(BOT("openai/gpt-4o-mini", "One"));
    deploy();
    redeploy_with("Two");
    pause_bot();
    ck_assert_int_eq(rollback(1, &out, &err), 0);
    ck_assert_str_eq(json_object_get_string(json_object_object_get(out, "status")), "paused");
    json_object_put(out);
    y = served();
    ck_assert_str_eq(y, "");
    free(y);
    ck_assert_int_eq(deploy(), 1);                    /* no version 3 */
    y = served();
    ck_assert_ptr_nonnull(strstr(y, "One"));
    free(y);
    list_text(list, sizeof list);
    ck_assert_str_eq(list, "2,1*");
    assert_registry_agrees();
}
END_TEST

START_TEST(rollback_of_draft_or_unknown_version_is_version_not_found)
{
    struct json_object *out = NULL;
    struct am_error err;

    create(BOT("openai/gpt-4o-mini", "One"));
    ck_assert_int_eq(rollback(1, &out, &err), AM_EVERSIONNOTFOUND);   /* a draft has none */
    ck_assert_ptr_null(out);
    deploy();
    ck_assert_int_eq(rollback(7, &out, &err), AM_EVERSIONNOTFOUND);
    ck_assert_int_eq(agent_version_get(&app, "acme", "bot", "x1", &out, &err), AM_EVERSIONNOTFOUND);
    ck_assert_int_eq(agent_version_diff(&app, "acme", "bot", "1", "2", &out, &err),
                     AM_EVERSIONNOTFOUND);
    error_clear(&err);
    {
        struct json_object *body = J("{\"version\":1}");
        ck_assert_int_eq(agent_rollback(&app, "acme", "nobody", NULL, body, &out, &err),
                         AM_EAGENTNOTFOUND);
        json_object_put(body);
    }
    assert_registry_agrees();
}
END_TEST

static const char *const bad_bodies[] = {
    "{}", "{\"version\":\"1\"}", "{\"version\":0}", "{\"version\":-3}", "{\"version\":1.5}",
    "{\"version\":null}", "{\"version\":1,\"extra\":true}", "{\"version\":99999999999}",
};

START_TEST(rollback_with_bad_body_is_validation_error)
{
    struct json_object *body = J(bad_bodies[_i]), *out = NULL;
    struct am_error err;

    create(BOT("openai/gpt-4o-mini", "One"));
    deploy();
    error_clear(&err);
    ck_assert_int_eq(agent_rollback(&app, "acme", "bot", NULL, body, &out, &err), AM_EVALIDATION);
    ck_assert_int_gt(err.ndetails, 0);
    ck_assert_ptr_null(out);
    json_object_put(body);
}
END_TEST

START_TEST(rollback_to_version_whose_provider_key_is_gone_changes_nothing)
{
    struct json_object *out = NULL, *before, *after;
    struct am_error err;
    char *y0, *y1;

    create(BOT("openai/gpt-4o-mini", "One"));
    deploy();
    pause_bot();
    update("{\"step1\":{\"model\":\"echo/echo\"},\"step2\":{\"system_prompt\":\"Two\"}}");
    ck_assert_int_eq(deploy(), 2);
    cfg.providers[PROVIDER_OPENAI].api_key[0] = '\0';
    before = get_bot();
    y0 = served();
    ck_assert_int_eq(rollback(1, &out, &err), AM_EKEYMISSING);
    after = get_bot();
    y1 = served();
    ck_assert_str_eq(json_object_to_json_string(before), json_object_to_json_string(after));
    ck_assert_str_eq(y0, y1);
    pause_bot();
    ck_assert_int_eq(rollback(1, &out, &err), AM_EKEYMISSING);
    free(y0);
    free(y1);
    json_object_put(before);
    json_object_put(after);
    assert_registry_agrees();
}
END_TEST

START_TEST(diff_between_versions_lists_the_changed_fields)
{
    struct json_object *out = NULL, *ch, *c;
    struct am_error err;

    create(BOT("openai/gpt-4o-mini", "One"));
    deploy();
    redeploy_with("Two");
    error_clear(&err);
    ck_assert_int_eq(agent_version_diff(&app, "acme", "bot", "1", "2", &out, &err), 0);
    ch = json_object_object_get(out, "changes");
    ck_assert_int_eq((int)json_object_array_length(ch), 1);
    c = json_object_array_get_idx(ch, 0);
    ck_assert_str_eq(json_object_get_string(json_object_object_get(c, "path")), "step2.system_prompt");
    ck_assert_str_eq(json_object_get_string(json_object_object_get(c, "from")), "One");
    ck_assert_str_eq(json_object_get_string(json_object_object_get(c, "to")), "Two");
    json_object_put(out);
}
END_TEST

/* ---- faults --------------------------------------------------------------------------- */

/* Everything observable: the agent object, the version list, what is served. */
static char *observe(void)
{
    struct json_object *o = get_bot();
    char list[128], *y = served(), *all;
    size_t n;

    list_text(list, sizeof list);
    n = strlen(json_object_to_json_string(o)) + strlen(list) + strlen(y) + 8;
    all = xmalloc(n);
    snprintf(all, n, "%s|%s|%s", json_object_to_json_string(o), list, y);
    free(y);
    json_object_put(o);
    return all;
}

enum vop { VOP_DEPLOY_NEW, VOP_ROLLBACK_DEPLOYED, VOP_ROLLBACK_PAUSED, VOP_DEPLOY_PRUNING };

/* sqlite-style sweep: each operation with the write fault armed at write
 * 1..6. Each ends with AM_EIO and nothing changed, or 0 and the new state;
 * either way the registry agrees with the store. */
START_TEST(version_write_fault_at_each_step_leaves_old_or_new)
{
    enum vop op = (enum vop)(_i / 6);
    int n = _i % 6 + 1, rc;
    struct json_object *out = NULL;
    struct am_error err;
    char *before, *after;

    if (op == VOP_DEPLOY_PRUNING)
        cfg.max_versions = 2;
    create(BOT("openai/gpt-4o-mini", "One"));
    deploy();
    redeploy_with("Two");
    if (op == VOP_ROLLBACK_PAUSED || op == VOP_DEPLOY_NEW || op == VOP_DEPLOY_PRUNING)
        pause_bot();
    if (op == VOP_DEPLOY_NEW || op == VOP_DEPLOY_PRUNING)
        update("{\"step2\":{\"system_prompt\":\"Three\"}}");
    before = observe();
    store_test_fail_write_after(n);
    error_clear(&err);
    if (op == VOP_DEPLOY_NEW || op == VOP_DEPLOY_PRUNING) {
        rc = agent_deploy(&app, "acme", "bot", NULL, &out, &err);
    } else {
        rc = rollback(1, &out, &err);
    }
    store_test_fail_write_after(0);
    json_object_put(out);
    after = observe();
    ck_assert_msg(rc == 0 || rc == AM_EIO, "op %d fault %d: rc %d", op, n, rc);
    if (rc == AM_EIO) {
        ck_assert_msg(strcmp(before, after) == 0, "op %d fault %d: failed call changed state\n%s\n%s",
                      op, n, before, after);
    } else {
        ck_assert_msg(strcmp(before, after) != 0, "op %d fault %d: success changed nothing", op, n);
        ck_assert_ptr_nonnull(strstr(after, op == VOP_DEPLOY_NEW ? "3*,2,1"
                                            : op == VOP_DEPLOY_PRUNING ? "3*,2|" : "2,1*"));
    }
    free(before);
    free(after);
    assert_registry_agrees();
}
END_TEST

static Suite *versions_suite(void)
{
    Suite *s = suite_create("versions");
    TCase *pure = tcase_create("pure"), *made = tcase_create("made"),
          *back = tcase_create("rollback"), *fault = tcase_create("fault");
    TCase *all[] = { pure, made, back, fault };

    tcase_add_test(pure, canonical_text_and_hash_ignore_key_order);
    tcase_add_loop_test(pure, diff_names_changed_fields_by_validation_paths, 0, NCASES(diffs));

    tcase_add_test(made, first_deploy_makes_version_1_with_hash_author_and_yaml);
    tcase_add_test(made, redeploy_of_unchanged_config_makes_no_version_and_no_compile);
    tcase_add_test(made, changed_config_makes_next_version_and_draft_changed_says_so);
    tcase_add_test(made, list_pages_with_limit_and_before);
    tcase_add_test(made, retention_keeps_max_versions_at_the_boundary);
    tcase_add_test(made, retention_keeps_the_live_version_whatever_its_age);
    tcase_add_test(made, delete_removes_every_version);

    tcase_add_test(back, rollback_of_deployed_agent_switches_registry_without_compiling);
    tcase_add_test(back, rollback_of_paused_agent_restores_config_only_and_next_deploy_makes_it_live);
    tcase_add_test(back, rollback_of_draft_or_unknown_version_is_version_not_found);
    tcase_add_loop_test(back, rollback_with_bad_body_is_validation_error, 0, NCASES(bad_bodies));
    tcase_add_test(back, rollback_to_version_whose_provider_key_is_gone_changes_nothing);
    tcase_add_test(back, diff_between_versions_lists_the_changed_fields);

    tcase_add_loop_test(fault, version_write_fault_at_each_step_leaves_old_or_new, 0, 4 * 6);

    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        tcase_add_checked_fixture(all[i], setup, teardown);
        tcase_set_timeout(all[i], 60);
        suite_add_tcase(s, all[i]);
    }
    return s;
}

/* A failed check in a forked test skips its teardown: remove what such
 * tests left behind. */
static void remove_leftovers(void)
{
    char prefix[48], name[300];
    DIR *d = opendir("/dev/shm");
    struct dirent *de;

    snprintf(prefix, sizeof prefix, "am-vtest-%d-", (int)runner_pid);
    while (d != NULL && (de = readdir(d)) != NULL)
        if (strncmp(de->d_name, prefix, strlen(prefix)) == 0 &&
            util_snprintf(name, sizeof name, "/%s", de->d_name) == 0)
            shm_unlink(name);
    if (d != NULL)
        closedir(d);
    nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int main(void)
{
    SRunner *sr;
    int failed;

    runner_pid = getpid();
    util_strlcpy(base, "/tmp/am-check-versions-XXXXXX", sizeof base);
    if (mkdtemp(base) == NULL) {
        perror("mkdtemp");
        return EXIT_FAILURE;
    }
    sr = srunner_create(versions_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    remove_leftovers();
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
