/*
 * check_agent.c - unit tests for agent.c, the agent lifecycle, run against a
 * real Berkeley DB environment (fresh mkdtemp directory per test) and a real
 * shared-memory registry ("/am-test-<pid>-<n>", unlinked at teardown).
 *
 * What is asserted, besides each transition's answer and exact AM_* code:
 *  - the stored status and the registry agree after every call (invariant 1
 *    of agent.c), including after failed calls and under 8 racing threads;
 *  - pause and redeploy keep every byte of the WizardConfig (invariant 3),
 *    and redeploying an unchanged config does not recompile;
 *  - provider secrets never reach the compiled YAML, the registry or the
 *    stored record: only key references do;
 *  - with the store's write-fault hook armed at each write, create, update,
 *    deploy, pause and delete leave the old state or the new one, never a
 *    mix (STYLE.md habit 14);
 *  - agent_reconcile repairs a registry changed behind the module's back.
 *
 * Run under valgrind: CK_FORK=no valgrind --leak-check=full --error-exitcode=1
 */
#include <check.h>
#include <dirent.h>
#include <ftw.h>
#include <sys/mman.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <json-c/json.h>
#include "control/agent.h"
#include "state/app.h"
#include "state/config.h"
#include "state/registry.h"
#include "state/store.h"
#include "lib/invariant.h"
#include "lib/util.h"

#define NCASES(a) ((int)(sizeof(a) / sizeof((a)[0])))

#define SECRET "sk-test-secret-123456"
#define TONE_SENTENCE "Respond in a professional, clear tone."
#define PROMPT "You answer questions about Acme products."
#define BOT_JSON \
    "{\"name\":\"bot\",\"display_name\":\"Bot\"," \
    "\"step1\":{\"model\":\"openai/gpt-4o-mini\",\"routing_strategy\":\"cost_optimized\"}," \
    "\"step2\":{\"system_prompt\":\"" PROMPT "\",\"persona\":\"Helper\",\"tone\":\"professional\"}," \
    "\"step4\":{\"memory_type\":\"conversational\",\"window_size\":20}," \
    "\"step5\":{\"max_tokens\":1000}}"

static char base[64];          /* per-run parent of every test's home; main() removes it */
static pid_t runner_pid;       /* part of every registry name; main() unlinks leftovers */
static char home[96];
static char reg_name[64];
static int reg_seq;
static struct config cfg;
static struct app app;

/* ---- fixture ------------------------------------------------------------- */

static void put_org(const char *slug)
{
    char val[256];

    snprintf(val, sizeof val,
             "{\"slug\":\"%s\",\"display_name\":\"Acme\",\"plan\":\"free\",\"created_at\":1}", slug);
    ck_assert_int_eq(store_put(app.store, NULL, STORE_ORGS, slug, strlen(slug), val, strlen(val)), 0);
}

static struct registry *new_registry(int capacity, size_t slot_bytes)
{
    struct registry *r = NULL;
    struct am_error err;

    snprintf(reg_name, sizeof reg_name, "/am-test-%d-%d-%d", (int)runner_pid, (int)getpid(),
             ++reg_seq);
    error_clear(&err);
    ck_assert_msg(registry_create(&r, reg_name, capacity, slot_bytes, &err) == 0,
                  "registry_create: %s", err.message);
    return r;
}

static void setup(void)
{
    struct store_options o = { home, 8, 1, 64, 0, NULL };
    struct am_error err;

    snprintf(home, sizeof home, "%s/env-XXXXXX", base);
    ck_assert_ptr_nonnull(mkdtemp(home));
    config_defaults(&cfg);
    util_strlcpy(cfg.jwt_secret, "check-agent-jwt-secret-0123456789abcdef", sizeof cfg.jwt_secret);
    util_strlcpy(cfg.providers[PROVIDER_OPENAI].api_key, SECRET,
                 sizeof cfg.providers[PROVIDER_OPENAI].api_key);
    memset(&app, 0, sizeof app);
    app.cfg = &cfg;
    error_clear(&err);
    ck_assert_msg(store_open(&app.store, &o, STORE_OPEN_CREATE, &err) == 0, "%s", err.message);
    app.reg = new_registry(64, 64 * 1024);
    put_org("acme");
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

static const char *str_of(struct json_object *o, const char *key)
{
    struct json_object *v;

    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

static int has_detail(const struct am_error *err, const char *field)
{
    for (int i = 0; i < err->ndetails; i++)
        if (strcmp(err->details[i].field, field) == 0)
            return 1;
    return 0;
}

static const char *details_of(const struct am_error *err)
{
    static char buf[1024];
    size_t n = 0;

    buf[0] = '\0';
    for (int i = 0; i < err->ndetails && n < sizeof buf; i++)
        n += (size_t)snprintf(buf + n, sizeof buf - n, "[%s: %s] ", err->details[i].field,
                              err->details[i].problem);
    return buf;
}

static void create_json(const char *json)
{
    struct json_object *wc = J(json), *out = NULL;
    struct am_error err;

    error_clear(&err);
    ck_assert_msg(agent_create(&app, "acme", wc, &out, &err) == 0, "create: %s %s",
                  err.message, details_of(&err));
    json_object_put(out);
    json_object_put(wc);
}

static void create_bot(void)
{
    create_json(BOT_JSON);
}

static void deploy_ok(const char *name)
{
    struct json_object *out = NULL;
    struct am_error err;

    error_clear(&err);
    ck_assert_msg(agent_deploy(&app, "acme", name, NULL, &out, &err) == 0, "deploy: %s %s",
                  err.message, details_of(&err));
    json_object_put(out);
}

static void pause_ok(const char *name)
{
    struct json_object *out = NULL;
    struct am_error err;

    error_clear(&err);
    ck_assert_msg(agent_pause(&app, "acme", name, &out, &err) == 0, "pause: %s", err.message);
    json_object_put(out);
}

static int update_json(const char *name, const char *patch_json, struct am_error *err)
{
    struct json_object *patch = J(patch_json), *out = NULL;
    int rc;

    error_clear(err);
    rc = agent_update(&app, "acme", name, patch, &out, err);
    ck_assert(rc == 0 ? out != NULL : out == NULL);
    json_object_put(out);
    json_object_put(patch);
    return rc;
}

/* A copy of everything observable about one agent. */
struct snap {
    int exists;
    char status[16];
    char *wc;                  /* wizard_config, plain JSON; malloc'd */
    int64_t version;           /* the stored record's "version" */
    int in_reg;
    uint64_t reg_version;
};

static int64_t stored_version(const char *name)
{
    char key[128], *val = NULL;
    size_t klen = (size_t)snprintf(key, sizeof key, "acme%c%s", '\0', name);
    struct json_object *rec, *v;
    int64_t version = -1;

    if (store_get(app.store, NULL, STORE_AGENTS, key, klen, 0, &val, NULL) != 0)
        return -1;
    rec = J(val);
    if (json_object_object_get_ex(rec, "version", &v))
        version = json_object_get_int64(v);
    json_object_put(rec);
    free(val);
    return version;
}

static void snap_take(struct snap *s, const char *name)
{
    struct json_object *out = NULL, *wc;
    struct am_error err;
    char rkey[REGISTRY_KEY_MAX];
    int rc;

    memset(s, 0, sizeof *s);
    error_clear(&err);
    rc = agent_get(&app, "acme", name, &out, &err);
    ck_assert_msg(rc == 0 || rc == AM_EAGENTNOTFOUND, "get: %d %s", rc, err.message);
    if (rc == 0) {
        s->exists = 1;
        util_strlcpy(s->status, str_of(out, "status"), sizeof s->status);
        ck_assert(json_object_object_get_ex(out, "wizard_config", &wc));
        s->wc = xstrdup(json_object_to_json_string_ext(wc, JSON_C_TO_STRING_PLAIN));
        s->version = stored_version(name);
    }
    json_object_put(out);
    snprintf(rkey, sizeof rkey, "acme__%s", name);
    s->in_reg = registry_contains(app.reg, rkey, &s->reg_version);
}

static void snap_free(struct snap *s)
{
    free(s->wc);
    s->wc = NULL;
}

static int snap_equal(const struct snap *a, const struct snap *b)
{
    return a->exists == b->exists && strcmp(a->status, b->status) == 0 &&
           (a->wc == NULL) == (b->wc == NULL) && (a->wc == NULL || strcmp(a->wc, b->wc) == 0) &&
           a->version == b->version && a->in_reg == b->in_reg &&
           (!a->in_reg || a->reg_version == b->reg_version);
}

/* The runnable invariants of what these tests touch (lib/invariant.h):
 * each aborts the test, naming what broke, in invariant builds. */
static void check_invariants(void)
{
    CHECK_INVARIANTS(store_check_invariants(app.store));
    CHECK_INVARIANTS(registry_check_invariants(app.reg));
    CHECK_INVARIANTS(agent_check_invariants(&app));
}

/* Invariant 1: deployed exactly when loaded, with the record's version. */
static void assert_consistent(const char *name)
{
    struct snap s;

    snap_take(&s, name);
    if (s.exists && strcmp(s.status, "deployed") == 0) {
        ck_assert_msg(s.in_reg, "%s is deployed but not in the registry", name);
        ck_assert_msg(s.reg_version == (uint64_t)s.version,
                      "registry has version %llu, record %lld", (unsigned long long)s.reg_version,
                      (long long)s.version);
    } else {
        ck_assert_msg(!s.in_reg, "%s is %s but in the registry", name,
                      s.exists ? s.status : "absent");
    }
    snap_free(&s);
}

static const char *status_of(const char *name)
{
    static char buf[16];
    struct snap s;

    snap_take(&s, name);
    util_strlcpy(buf, s.exists ? s.status : "absent", sizeof buf);
    snap_free(&s);
    return buf;
}

static int in_registry(const char *name)
{
    char rkey[REGISTRY_KEY_MAX];

    snprintf(rkey, sizeof rkey, "acme__%s", name);
    return registry_contains(app.reg, rkey, NULL);
}

static char *wizard_config_of(const char *name)
{
    struct snap s;
    char *wc;

    snap_take(&s, name);
    ck_assert(s.exists);
    wc = s.wc;
    s.wc = NULL;
    snap_free(&s);
    return wc;
}

/* The raw stored record, as bytes (caller frees). */
static char *stored_record(const char *name)
{
    char key[128], *val = NULL;
    size_t klen = (size_t)snprintf(key, sizeof key, "acme%c%s", '\0', name);

    ck_assert_int_eq(store_get(app.store, NULL, STORE_AGENTS, key, klen, 0, &val, NULL), 0);
    return val;
}

/* ---- create ----------------------------------------------------------------- */

START_TEST(create_makes_draft_not_in_registry)
{
    struct json_object *wc = J(BOT_JSON), *out = NULL, *list = NULL, *arr, *cfgv;
    struct am_error err;

    error_clear(&err);
    ck_assert_int_eq(agent_create(&app, "acme", wc, &out, &err), 0);
    ck_assert_str_eq(str_of(out, "status"), "draft");
    ck_assert_str_eq(str_of(out, "name"), "bot");
    ck_assert_str_eq(str_of(out, "display_name"), "Bot");
    ck_assert_str_eq(str_of(out, "agent_id"), "acme__bot");
    ck_assert_str_eq(str_of(out, "model"), "openai/gpt-4o-mini");
    ck_assert_ptr_nonnull(str_of(out, "created_at"));
    ck_assert(json_object_object_get_ex(out, "wizard_config", &cfgv));
    ck_assert(json_object_equal(cfgv, wc));
    json_object_put(out);
    json_object_put(wc);

    ck_assert_str_eq(status_of("bot"), "draft");
    ck_assert(!in_registry("bot"));
    ck_assert_int_eq(registry_count(app.reg), 0);
    ck_assert_int_eq(stored_version("bot"), 1);

    ck_assert_int_eq(agent_list(&app, "acme", &list, &err), 0);
    ck_assert(json_object_object_get_ex(list, "agents", &arr));
    ck_assert_uint_eq(json_object_array_length(arr), 1);
    ck_assert_str_eq(str_of(json_object_array_get_idx(arr, 0), "status"), "draft");
    ck_assert_str_eq(str_of(json_object_array_get_idx(arr, 0), "name"), "bot");
    json_object_put(list);
}
END_TEST

START_TEST(create_twice_is_agent_exists)
{
    struct json_object *wc = J("{\"name\":\"bot\",\"display_name\":\"Other\"}"), *out = NULL;
    struct am_error err;
    char *before;

    create_bot();
    before = wizard_config_of("bot");
    error_clear(&err);
    ck_assert_int_eq(agent_create(&app, "acme", wc, &out, &err), AM_EEXISTS);
    ck_assert_int_eq(err.code, AM_EEXISTS);
    ck_assert_ptr_null(out);
    json_object_put(wc);
    /* The first agent is untouched. */
    char *after = wizard_config_of("bot");
    ck_assert_str_eq(after, before);
    free(before);
    free(after);
}
END_TEST

/* Registry fairness: after limits.max_agents was lowered, an org holding
 * more agents deploys no more than the new limit. */
START_TEST(deploy_past_max_agents_deployed_is_plan_limit)
{
    static const char *names[] = { "one", "two", "three" };
    struct json_object *out = NULL;
    struct am_error err;
    char body[128];
    int i;

    cfg.max_agents = 3;
    for (i = 0; i < 3; i++) {
        snprintf(body, sizeof(body), "{\"name\":\"%s\",\"step1\":{\"model\":\"echo/e1\"},"
                 "\"step2\":{\"system_prompt\":\"x\"}}", names[i]);
        create_json(body);
    }
    cfg.max_agents = 2;
    deploy_ok("one");
    deploy_ok("two");
    error_clear(&err);
    ck_assert_int_eq(agent_deploy(&app, "acme", "three", NULL, &out, &err), AM_EPLANLIMIT);
    ck_assert_ptr_null(out);
    ck_assert_str_eq(status_of("three"), "draft");
    pause_ok("two");
    deploy_ok("three");
}
END_TEST

START_TEST(create_past_max_agents_is_plan_limit)
{
    struct json_object *wc = J("{\"name\":\"third\"}"), *out = NULL;
    struct am_error err;

    cfg.max_agents = 2;
    create_json("{\"name\":\"one\"}");
    create_json("{\"name\":\"two\"}");
    error_clear(&err);
    ck_assert_int_eq(agent_create(&app, "acme", wc, &out, &err), AM_EPLANLIMIT);
    ck_assert_int_eq(err.code, AM_EPLANLIMIT);
    ck_assert_ptr_null(out);
    ck_assert_str_eq(status_of("third"), "absent");
    json_object_put(wc);

    /* The limit is per organization: "acme-two" shares a prefix, not the count. */
    put_org("acme-two");
    wc = J("{\"name\":\"third\"}");
    error_clear(&err);
    ck_assert_int_eq(agent_create(&app, "acme-two", wc, &out, &err), 0);
    json_object_put(out);
    json_object_put(wc);

    /* Deleting one frees a place. */
    ck_assert_int_eq(agent_delete(&app, "acme", "one", &err), 0);
    create_json("{\"name\":\"third\"}");
}
END_TEST

START_TEST(create_in_unknown_org_stores_nothing)
{
    struct json_object *wc = J(BOT_JSON), *out = NULL, *list = NULL, *arr;
    struct am_error err;

    error_clear(&err);
    ck_assert_int_eq(agent_create(&app, "nosuchorg", wc, &out, &err), AM_EFORBIDDEN);
    ck_assert_ptr_null(out);
    ck_assert_int_eq(agent_list(&app, "nosuchorg", &list, &err), 0);
    ck_assert(json_object_object_get_ex(list, "agents", &arr));
    ck_assert_uint_eq(json_object_array_length(arr), 0);
    json_object_put(list);
    json_object_put(wc);
}
END_TEST

static const struct { const char *json; const char *field; } invalid_creates[] = {
    { "{}", "name" },
    { "{\"display_name\":\"No name\"}", "name" },
    { "{\"name\":\"Bad Name\"}", "name" },
    { "{\"name\":\"a__b\"}", "name" },
    { "{\"name\":7}", "name" },
    { "{\"name\":\"bot\",\"step1\":{\"model\":\"nosuchprovider/x\"}}", "step1.model" },
    { "{\"name\":\"bot\",\"step1\":{\"model\":\"gpt-4o\"}}", "step1.model" },
    { "{\"name\":\"bot\",\"step2\":{\"tone\":\"angry\"}}", "step2.tone" },
    { "{\"name\":\"bot\",\"step4\":{\"window_size\":0}}", "step4.window_size" },
    { "{\"name\":\"bot\",\"step5\":{\"max_tokens\":40000}}", "step5.max_tokens" },
    { "{\"name\":\"bot\",\"step3\":{\"tools\":[\"rm_rf\"]}}", "step3.tools[0]" },
    { "{\"name\":\"bot\",\"step9\":{}}", "step9" },
    { "{\"name\":\"bot\",\"step1\":\"openai/gpt-4o\"}", "step1" },
    { "[]", "" },
};

START_TEST(create_invalid_is_validation_error_with_details)
{
    struct json_object *wc = J(invalid_creates[_i].json), *out = NULL, *list = NULL, *arr;
    struct am_error err;

    error_clear(&err);
    ck_assert_int_eq(agent_create(&app, "acme", wc, &out, &err), AM_EVALIDATION);
    ck_assert_int_eq(err.code, AM_EVALIDATION);
    ck_assert_ptr_null(out);
    ck_assert_int_gt(err.ndetails, 0);
    ck_assert_msg(has_detail(&err, invalid_creates[_i].field), "%s: want detail '%s', got %s",
                  invalid_creates[_i].json, invalid_creates[_i].field, details_of(&err));
    json_object_put(wc);
    ck_assert_int_eq(agent_list(&app, "acme", &list, &err), 0);
    ck_assert(json_object_object_get_ex(list, "agents", &arr));
    ck_assert_uint_eq(json_object_array_length(arr), 0);
    json_object_put(list);
}
END_TEST

/* ---- update ----------------------------------------------------------------- */

START_TEST(update_merges_one_field_keeps_rest)
{
    struct json_object *patch = J("{\"step2\":{\"system_prompt\":\"New prompt.\"}}");
    struct json_object *out = NULL, *wc, *step1, *step2, *want;
    struct am_error err;

    create_bot();
    error_clear(&err);
    ck_assert_int_eq(agent_update(&app, "acme", "bot", patch, &out, &err), 0);
    ck_assert_str_eq(str_of(out, "status"), "draft");
    ck_assert(json_object_object_get_ex(out, "wizard_config", &wc));
    ck_assert(json_object_object_get_ex(wc, "step2", &step2));
    ck_assert_str_eq(str_of(step2, "system_prompt"), "New prompt.");
    ck_assert_str_eq(str_of(step2, "tone"), "professional");
    ck_assert_str_eq(str_of(step2, "persona"), "Helper");
    ck_assert(json_object_object_get_ex(wc, "step1", &step1));
    ck_assert_str_eq(str_of(step1, "model"), "openai/gpt-4o-mini");
    ck_assert_str_eq(str_of(wc, "display_name"), "Bot");
    /* Exactly that one field differs from the original. */
    want = J(BOT_JSON);
    json_object_object_get_ex(want, "step2", &step2);
    json_object_object_add(step2, "system_prompt", json_object_new_string("New prompt."));
    ck_assert(json_object_equal(wc, want));
    json_object_put(want);
    json_object_put(out);
    json_object_put(patch);
    ck_assert_int_eq(stored_version("bot"), 2);
    /* And it was stored, not just answered. */
    char *stored = wizard_config_of("bot");
    ck_assert_ptr_nonnull(strstr(stored, "New prompt."));
    free(stored);
}
END_TEST

static const struct { const char *patch; const char *field; } invalid_patches[] = {
    { "{\"name\":\"other\"}", "name" },
    { "{\"name\":null}", "name" },
    { "{\"step1\":{\"model\":\"nope\"}}", "step1.model" },
    { "{\"step1\":{\"colour\":\"red\"}}", "step1.colour" },
    { "{\"step4\":{\"window_size\":101}}", "step4.window_size" },
};

START_TEST(update_invalid_is_validation_error_and_keeps_config)
{
    struct am_error err;
    char *before, *after;

    create_bot();
    before = wizard_config_of("bot");
    ck_assert_int_eq(update_json("bot", invalid_patches[_i].patch, &err), AM_EVALIDATION);
    ck_assert_msg(has_detail(&err, invalid_patches[_i].field), "%s: want '%s', got %s",
                  invalid_patches[_i].patch, invalid_patches[_i].field, details_of(&err));
    after = wizard_config_of("bot");
    ck_assert_str_eq(after, before);
    ck_assert_int_eq(stored_version("bot"), 1);
    free(before);
    free(after);
}
END_TEST

START_TEST(update_while_deployed_is_agent_deployed)
{
    struct am_error err;
    char *before, *after;

    create_bot();
    deploy_ok("bot");
    before = wizard_config_of("bot");
    ck_assert_int_eq(update_json("bot", "{\"step2\":{\"tone\":\"casual\"}}", &err), AM_EDEPLOYED);
    ck_assert_int_eq(err.code, AM_EDEPLOYED);
    after = wizard_config_of("bot");
    ck_assert_str_eq(after, before);
    ck_assert_str_eq(status_of("bot"), "deployed");
    assert_consistent("bot");
    free(before);
    free(after);
    /* Paused, the same edit is allowed. */
    pause_ok("bot");
    ck_assert_int_eq(update_json("bot", "{\"step2\":{\"tone\":\"casual\"}}", &err), 0);
    ck_assert_str_eq(status_of("bot"), "paused");
}
END_TEST

/* ---- deploy ----------------------------------------------------------------- */

START_TEST(deploy_loads_registry_with_yaml)
{
    struct json_object *out = NULL;
    struct registry_agent ra;
    struct am_error err;

    create_bot();
    error_clear(&err);
    ck_assert_int_eq(agent_deploy(&app, "acme", "bot", NULL, &out, &err), 0);
    ck_assert_str_eq(str_of(out, "status"), "deployed");
    ck_assert_str_eq(str_of(out, "agent_id"), "acme__bot");
    ck_assert_ptr_nonnull(str_of(out, "deployed_at"));
    json_object_put(out);

    memset(&ra, 0, sizeof ra);
    ck_assert_int_eq(registry_get(app.reg, "acme__bot", &ra), 0);
    ck_assert_ptr_nonnull(strstr(ra.yaml, "acme__bot"));
    ck_assert_ptr_nonnull(strstr(ra.yaml, TONE_SENTENCE));
    ck_assert_ptr_nonnull(strstr(ra.yaml, PROMPT));
    ck_assert_uint_eq(ra.yaml_len, strlen(ra.yaml));
    ck_assert_uint_eq(ra.version, 1);
    ck_assert_int_gt(ra.deployed_at, 0);
    registry_agent_clear(&ra);
    ck_assert_str_eq(status_of("bot"), "deployed");
    assert_consistent("bot");
}
END_TEST

static const struct { const char *json; const char *fields[2]; } undeployable[] = {
    { "{\"name\":\"bot\",\"step2\":{\"system_prompt\":\"Hi.\"}}", { "step1.model", NULL } },
    { "{\"name\":\"bot\",\"step1\":{\"model\":\"echo/echo\"}}", { "step2.system_prompt", NULL } },
    { "{\"name\":\"bot\"}", { "step1.model", "step2.system_prompt" } },
    { "{\"name\":\"bot\",\"step1\":{},\"step2\":{\"tone\":\"casual\"}}",
      { "step1.model", "step2.system_prompt" } },
};

START_TEST(deploy_without_model_is_invalid_config_with_details)
{
    struct json_object *out = NULL;
    struct am_error err;

    create_json(undeployable[_i].json);
    error_clear(&err);
    ck_assert_int_eq(agent_deploy(&app, "acme", "bot", NULL, &out, &err), AM_EINVALIDCONFIG);
    ck_assert_int_eq(err.code, AM_EINVALIDCONFIG);
    ck_assert_ptr_null(out);
    for (int i = 0; i < 2 && undeployable[_i].fields[i] != NULL; i++)
        ck_assert_msg(has_detail(&err, undeployable[_i].fields[i]), "want '%s', got %s",
                      undeployable[_i].fields[i], details_of(&err));
    ck_assert_str_eq(status_of("bot"), "draft");
    ck_assert(!in_registry("bot"));
}
END_TEST

START_TEST(deploy_twice_is_already_deployed)
{
    struct json_object *out = NULL;
    struct registry_agent ra;
    struct am_error err;
    uint64_t gen;

    create_bot();
    deploy_ok("bot");
    ck_assert_int_eq(registry_get(app.reg, "acme__bot", &ra), 0);
    gen = ra.generation;
    registry_agent_clear(&ra);
    error_clear(&err);
    ck_assert_int_eq(agent_deploy(&app, "acme", "bot", NULL, &out, &err), AM_EALREADYDEPLOYED);
    ck_assert_int_eq(err.code, AM_EALREADYDEPLOYED);
    ck_assert_ptr_null(out);
    /* The registry entry was not reloaded. */
    ck_assert_int_eq(registry_get(app.reg, "acme__bot", &ra), 0);
    ck_assert_uint_eq(ra.generation, gen);
    registry_agent_clear(&ra);
    assert_consistent("bot");
}
END_TEST

static const struct { const char *model, *fallback; int ok; } key_cases[] = {
    { "openai/gpt-4o-mini", NULL, 0 },
    { "echo/echo", "openai/gpt-4o-mini", 0 },        /* the fallback needs a key too */
    { "anthropic/claude-3-haiku", NULL, 0 },         /* never had one */
    { "echo/echo", NULL, 1 },                        /* built in: no key */
    { "ollama/llama3", NULL, 1 },                    /* local: no key */
    { "ollama/llama3", "echo/echo", 1 },
};

START_TEST(deploy_openai_without_key_is_provider_key_missing)
{
    char json[512];
    struct json_object *out = NULL;
    struct am_error err;
    int rc;

    cfg.providers[PROVIDER_OPENAI].api_key[0] = '\0';
    snprintf(json, sizeof json,
             "{\"name\":\"bot\",\"step1\":{\"model\":\"%s\"%s%s%s},"
             "\"step2\":{\"system_prompt\":\"Hi.\"}}",
             key_cases[_i].model, key_cases[_i].fallback ? ",\"fallback_model\":\"" : "",
             key_cases[_i].fallback ? key_cases[_i].fallback : "",
             key_cases[_i].fallback ? "\"" : "");
    create_json(json);
    error_clear(&err);
    rc = agent_deploy(&app, "acme", "bot", NULL, &out, &err);
    json_object_put(out);
    if (key_cases[_i].ok) {
        ck_assert_msg(rc == 0, "%s: %s", json, err.message);
        ck_assert_str_eq(status_of("bot"), "deployed");
    } else {
        ck_assert_msg(rc == AM_EKEYMISSING, "%s: rc %d %s", json, rc, err.message);
        ck_assert_int_eq(err.code, AM_EKEYMISSING);
        ck_assert_str_eq(status_of("bot"), "draft");
    }
    assert_consistent("bot");
}
END_TEST

START_TEST(deployed_yaml_has_key_ref_never_secret)
{
    struct registry_agent ra;
    struct json_object *got = NULL;
    struct am_error err;
    char *yaml = NULL, *rec;
    size_t len = 0;

    create_bot();
    deploy_ok("bot");
    ck_assert_int_eq(registry_get(app.reg, "acme__bot", &ra), 0);
    ck_assert_ptr_nonnull(strstr(ra.yaml, "server:openai"));
    ck_assert_ptr_null(strstr(ra.yaml, SECRET));
    ck_assert_ptr_null(strstr(ra.yaml, "sk-test"));
    error_clear(&err);
    ck_assert_int_eq(agent_yaml(&app, "acme", "bot", &yaml, &len, &err), 0);
    ck_assert_uint_eq(len, strlen(yaml));
    ck_assert_ptr_nonnull(strstr(yaml, "server:openai"));
    ck_assert_ptr_null(strstr(yaml, SECRET));
    rec = stored_record("bot");
    ck_assert_ptr_null(strstr(rec, SECRET));
    ck_assert_int_eq(agent_get(&app, "acme", "bot", &got, &err), 0);
    ck_assert_ptr_null(strstr(json_object_to_json_string(got), SECRET));
    json_object_put(got);
    free(rec);
    free(yaml);
    registry_agent_clear(&ra);
}
END_TEST

START_TEST(deploy_into_full_registry_is_registry_full_and_stays_draft)
{
    struct json_object *out = NULL;
    struct am_error err;

    registry_close(app.reg, 1);
    app.reg = new_registry(1, 64 * 1024);
    create_json("{\"name\":\"one\",\"step1\":{\"model\":\"echo/echo\"},"
                "\"step2\":{\"system_prompt\":\"Hi.\"}}");
    create_json("{\"name\":\"two\",\"step1\":{\"model\":\"echo/echo\"},"
                "\"step2\":{\"system_prompt\":\"Hi.\"}}");
    deploy_ok("one");
    error_clear(&err);
    ck_assert_int_eq(agent_deploy(&app, "acme", "two", NULL, &out, &err), AM_EREGISTRYFULL);
    ck_assert_ptr_null(out);
    ck_assert_str_eq(status_of("two"), "draft");
    assert_consistent("two");
    assert_consistent("one");
}
END_TEST

START_TEST(deploy_larger_than_slot_is_invalid_config_and_stays_draft)
{
    struct json_object *out = NULL;
    struct am_error err;

    /* created under a larger slot, then the operator shrank registry.slot_kb */
    create_bot();
    registry_close(app.reg, 1);
    app.reg = new_registry(4, 256);
    error_clear(&err);
    ck_assert_int_eq(agent_deploy(&app, "acme", "bot", NULL, &out, &err), AM_EINVALIDCONFIG);
    ck_assert_ptr_null(out);
    ck_assert_ptr_nonnull(strstr(err.message, "slot"));
    ck_assert_str_eq(status_of("bot"), "draft");
    assert_consistent("bot");
}
END_TEST

/* What create and PUT accept always deploys: they measure the compiled YAML
 * against this registry's slot, and refuse (422 naming the field) what
 * would not fit, storing nothing. */
START_TEST(create_and_put_refuse_what_would_not_fit_the_slot)
{
    struct json_object *wc, *out = NULL, *patch;
    struct am_error err;

    registry_close(app.reg, 1);
    app.reg = new_registry(4, 1024);
    wc = J("{\"name\":\"bot\",\"step1\":{\"model\":\"echo/echo-1\"},"
           "\"step2\":{\"system_prompt\":\"Hello.\"}}");
    error_clear(&err);
    ck_assert_int_eq(agent_create(&app, "acme", wc, &out, &err), 0);
    json_object_put(out);
    out = NULL;
    {
        char big[1200];
        memset(big, '"', sizeof(big) - 1);      /* 1199 JSON bytes, ~2400 escaped */
        big[sizeof(big) - 1] = '\0';
        patch = json_object_new_object();
        json_object_object_add(patch, "step2", json_object_new_object());
        json_object_object_add(json_object_object_get(patch, "step2"), "system_prompt",
                               json_object_new_string(big));
    }
    error_clear(&err);
    ck_assert_int_eq(agent_update(&app, "acme", "bot", patch, &out, &err), AM_EVALIDATION);
    ck_assert_msg(has_detail(&err, "step2.system_prompt"), "%s", details_of(&err));
    ck_assert_ptr_null(out);
    json_object_object_add(wc, "name", json_object_new_string("big"));
    json_object_object_add(wc, "step2", json_object_get(json_object_object_get(patch, "step2")));
    error_clear(&err);
    ck_assert_int_eq(agent_create(&app, "acme", wc, &out, &err), AM_EVALIDATION);
    ck_assert(has_detail(&err, "step2.system_prompt"));
    error_clear(&err);
    ck_assert_int_eq(agent_get(&app, "acme", "big", &out, &err), AM_EAGENTNOTFOUND);
    /* the unchanged agent still deploys */
    error_clear(&err);
    ck_assert_int_eq(agent_deploy(&app, "acme", "bot", NULL, &out, &err), 0);
    json_object_put(out);
    json_object_put(patch);
    json_object_put(wc);
}
END_TEST

/* ---- pause ------------------------------------------------------------------ */

START_TEST(pause_unloads_and_keeps_config_bytes)
{
    struct json_object *out = NULL;
    struct am_error err;
    char *before, *after;

    create_bot();
    before = wizard_config_of("bot");
    deploy_ok("bot");
    error_clear(&err);
    ck_assert_int_eq(agent_pause(&app, "acme", "bot", &out, &err), 0);
    ck_assert_str_eq(str_of(out, "status"), "paused");
    ck_assert_ptr_nonnull(str_of(out, "paused_at"));
    json_object_put(out);
    ck_assert(!in_registry("bot"));
    ck_assert_str_eq(status_of("bot"), "paused");
    after = wizard_config_of("bot");
    ck_assert_str_eq(after, before);
    free(after);
    /* And a redeploy keeps them too. */
    deploy_ok("bot");
    after = wizard_config_of("bot");
    ck_assert_str_eq(after, before);
    free(after);
    free(before);
    assert_consistent("bot");
}
END_TEST

START_TEST(pause_draft_is_invalid_transition)
{
    struct json_object *out = NULL;
    struct am_error err;

    create_bot();
    error_clear(&err);
    ck_assert_int_eq(agent_pause(&app, "acme", "bot", &out, &err), AM_ETRANSITION);
    ck_assert_int_eq(err.code, AM_ETRANSITION);
    ck_assert_ptr_null(out);
    ck_assert_str_eq(status_of("bot"), "draft");
    assert_consistent("bot");
}
END_TEST

START_TEST(pause_twice_is_already_paused)
{
    struct json_object *out = NULL;
    struct am_error err;

    create_bot();
    deploy_ok("bot");
    pause_ok("bot");
    error_clear(&err);
    ck_assert_int_eq(agent_pause(&app, "acme", "bot", &out, &err), AM_EALREADYPAUSED);
    ck_assert_int_eq(err.code, AM_EALREADYPAUSED);
    ck_assert_ptr_null(out);
    ck_assert_str_eq(status_of("bot"), "paused");
    assert_consistent("bot");
}
END_TEST

START_TEST(redeploy_of_paused_agent_skips_recompile)
{
    struct registry_agent ra;
    struct am_error err;
    uint64_t n0;

    create_bot();
    deploy_ok("bot");
    n0 = agent_compile_count();
    pause_ok("bot");
    deploy_ok("bot");
    ck_assert_uint_eq(agent_compile_count(), n0);
    assert_consistent("bot");

    /* A PUT while paused changes the config: the next deploy compiles once. */
    pause_ok("bot");
    ck_assert_int_eq(update_json("bot", "{\"step2\":{\"tone\":\"technical\"}}", &err), 0);
    ck_assert_uint_eq(agent_compile_count(), n0);
    deploy_ok("bot");
    ck_assert_uint_eq(agent_compile_count(), n0 + 1);
    ck_assert_int_eq(registry_get(app.reg, "acme__bot", &ra), 0);
    ck_assert_uint_eq(ra.version, 2);
    ck_assert_ptr_nonnull(strstr(ra.yaml, "technical"));
    ck_assert_ptr_null(strstr(ra.yaml, TONE_SENTENCE));
    registry_agent_clear(&ra);
    assert_consistent("bot");
}
END_TEST

/* ---- delete ----------------------------------------------------------------- */

START_TEST(delete_from_each_state)
{
    static const char *const states[] = { "draft", "deployed", "paused" };
    struct json_object *out = NULL;
    struct am_error err;

    create_bot();
    if (_i >= 1)
        deploy_ok("bot");
    if (_i >= 2)
        pause_ok("bot");
    ck_assert_str_eq(status_of("bot"), states[_i]);
    error_clear(&err);
    ck_assert_int_eq(agent_delete(&app, "acme", "bot", &err), 0);
    ck_assert_str_eq(status_of("bot"), "absent");
    ck_assert(!in_registry("bot"));
    ck_assert_int_eq(registry_count(app.reg), 0);
    ck_assert_int_eq(agent_get(&app, "acme", "bot", &out, &err), AM_EAGENTNOTFOUND);
    ck_assert_ptr_null(out);
    /* Gone means gone: a second delete is not found, the name is free. */
    ck_assert_int_eq(agent_delete(&app, "acme", "bot", &err), AM_EAGENTNOTFOUND);
    create_bot();
    ck_assert_str_eq(status_of("bot"), "draft");
}
END_TEST

/* Every operation on an agent that does not exist, or cannot exist. */
static const char *const missing_names[] = { "ghost", "Bad", "", "a__b", "../bot",
    "a234567890123456789012345678901234567890123456789012345678901234" };

START_TEST(operations_on_missing_agent_are_agent_not_found)
{
    const char *name = missing_names[_i];
    struct json_object *out = NULL, *patch = J("{\"step2\":{\"tone\":\"casual\"}}");
    struct am_error err;
    char *yaml = NULL;
    size_t len = 0;

    create_bot();
    error_clear(&err);
    ck_assert_int_eq(agent_get(&app, "acme", name, &out, &err), AM_EAGENTNOTFOUND);
    ck_assert_int_eq(agent_deploy(&app, "acme", name, NULL, &out, &err), AM_EAGENTNOTFOUND);
    ck_assert_int_eq(agent_pause(&app, "acme", name, &out, &err), AM_EAGENTNOTFOUND);
    ck_assert_int_eq(agent_delete(&app, "acme", name, &err), AM_EAGENTNOTFOUND);
    ck_assert_int_eq(agent_yaml(&app, "acme", name, &yaml, &len, &err), AM_EAGENTNOTFOUND);
    ck_assert_ptr_null(yaml);
    ck_assert_ptr_null(out);
    /* The wrong org does not find acme's agent either. */
    ck_assert_int_eq(agent_get(&app, "other", "bot", &out, &err), AM_EAGENTNOTFOUND);
    ck_assert_int_eq(agent_deploy(&app, "other", "bot", NULL, &out, &err), AM_EAGENTNOTFOUND);
    ck_assert_str_eq(status_of("bot"), "draft");
    ck_assert_int_eq(registry_count(app.reg), 0);
    /* update: a patch that is valid for any name reaches the lookup */
    error_clear(&err);
    int rc = agent_update(&app, "acme", name, patch, &out, &err);
    ck_assert_msg(rc == AM_EAGENTNOTFOUND || rc == AM_EVALIDATION, "update %s: %d", name, rc);
    ck_assert_ptr_null(out);
    json_object_put(patch);
}
END_TEST

/* ---- yaml ------------------------------------------------------------------- */

START_TEST(yaml_of_draft_compiles_on_the_fly_and_changes_nothing)
{
    struct am_error err;
    char *yaml = NULL;
    size_t len = 0;

    create_bot();
    error_clear(&err);
    ck_assert_int_eq(agent_yaml(&app, "acme", "bot", &yaml, &len, &err), 0);
    ck_assert_ptr_nonnull(strstr(yaml, "acme__bot"));
    ck_assert_ptr_nonnull(strstr(yaml, TONE_SENTENCE));
    ck_assert_ptr_nonnull(strstr(yaml, "server:openai"));
    free(yaml);
    ck_assert_str_eq(status_of("bot"), "draft");
    ck_assert_int_eq(stored_version("bot"), 1);
    ck_assert_int_eq(registry_count(app.reg), 0);
    /* Without any key a draft still shows its YAML, with no key reference. */
    cfg.providers[PROVIDER_OPENAI].api_key[0] = '\0';
    ck_assert_int_eq(agent_yaml(&app, "acme", "bot", &yaml, &len, &err), 0);
    ck_assert_ptr_nonnull(strstr(yaml, "acme__bot"));
    ck_assert_ptr_null(strstr(yaml, "api_key_ref"));
    free(yaml);
}
END_TEST

START_TEST(yaml_of_incomplete_draft_still_compiles)
{
    /* A draft is shown as far as it goes, even before it is deployable;
     * looking at it changes nothing. */
    struct am_error err;
    char *yaml = NULL;
    size_t len = 0;

    create_json("{\"name\":\"bot\"}");
    error_clear(&err);
    ck_assert_int_eq(agent_yaml(&app, "acme", "bot", &yaml, &len, &err), 0);
    ck_assert_uint_eq(len, strlen(yaml));
    ck_assert_ptr_nonnull(strstr(yaml, "acme__bot"));
    ck_assert_ptr_null(strstr(yaml, "primary"));
    free(yaml);
    ck_assert_str_eq(status_of("bot"), "draft");
    ck_assert_int_eq(registry_count(app.reg), 0);
}
END_TEST

START_TEST(yaml_of_deployed_agent_is_what_registry_serves)
{
    struct registry_agent ra;
    struct am_error err;
    char *yaml = NULL;
    size_t len = 0;

    create_bot();
    deploy_ok("bot");
    ck_assert_int_eq(registry_get(app.reg, "acme__bot", &ra), 0);
    error_clear(&err);
    ck_assert_int_eq(agent_yaml(&app, "acme", "bot", &yaml, &len, &err), 0);
    ck_assert_str_eq(yaml, ra.yaml);
    free(yaml);
    /* The server key is removed by a config reload: the deployed agent
     * keeps serving the stored YAML, and GET …/yaml must show that one. */
    cfg.providers[PROVIDER_OPENAI].api_key[0] = '\0';
    ck_assert_int_eq(agent_yaml(&app, "acme", "bot", &yaml, &len, &err), 0);
    ck_assert_msg(strcmp(yaml, ra.yaml) == 0,
                  "GET yaml of a deployed agent differs from what the registry serves:\n"
                  "--- registry\n%s\n--- agent_yaml\n%s", ra.yaml, yaml);
    free(yaml);
    registry_agent_clear(&ra);
}
END_TEST

START_TEST(yaml_of_edited_paused_agent_shows_the_new_config)
{
    struct am_error err;
    char *yaml = NULL;
    size_t len = 0;

    create_bot();
    deploy_ok("bot");
    pause_ok("bot");
    ck_assert_int_eq(agent_yaml(&app, "acme", "bot", &yaml, &len, &err), 0);
    ck_assert_ptr_nonnull(strstr(yaml, TONE_SENTENCE));
    free(yaml);
    ck_assert_int_eq(update_json("bot", "{\"step2\":{\"tone\":\"technical\"}}", &err), 0);
    ck_assert_int_eq(agent_yaml(&app, "acme", "bot", &yaml, &len, &err), 0);
    ck_assert_ptr_null(strstr(yaml, TONE_SENTENCE));
    ck_assert_ptr_nonnull(strstr(yaml, "technical"));
    ck_assert_ptr_nonnull(strstr(yaml, "version: \"2.0.0\""));
    free(yaml);
}
END_TEST

/* ---- reconcile -------------------------------------------------------------- */

START_TEST(reconcile_loads_missing_and_unloads_stale)
{
    struct registry_agent ra;
    struct am_error err;
    int rc;

    create_bot();
    deploy_ok("bot");
    ck_assert_int_eq(registry_unload(app.reg, "acme__bot"), 0);
    error_clear(&err);
    rc = agent_reconcile(&app, &err);
    ck_assert_msg(rc >= 1, "reconcile after unload: %d %s", rc, err.message);
    ck_assert_int_eq(registry_get(app.reg, "acme__bot", &ra), 0);
    ck_assert_uint_eq(ra.version, 1);
    ck_assert_ptr_nonnull(strstr(ra.yaml, TONE_SENTENCE));
    registry_agent_clear(&ra);

    ck_assert_int_eq(registry_load(app.reg, "acme__ghost", 1, 1, "ghost: true\n", 12, NULL), 0);
    error_clear(&err);
    rc = agent_reconcile(&app, &err);
    ck_assert(!registry_contains(app.reg, "acme__ghost", NULL));
    ck_assert_msg(rc >= 1, "reconcile of a stale entry returned %d (%s)", rc, err.message);
    ck_assert(in_registry("bot"));
    assert_consistent("bot");
}
END_TEST

START_TEST(reconcile_of_entry_without_record_counts_it_not_error)
{
    struct am_error err;
    int rc;

    ck_assert_int_eq(registry_load(app.reg, "acme__ghost", 1, 1, "ghost: true\n", 12, NULL), 0);
    error_clear(&err);
    rc = agent_reconcile(&app, &err);
    ck_assert(!registry_contains(app.reg, "acme__ghost", NULL));
    ck_assert_msg(rc == 1, "want 1 entry changed, got %d (%s)", rc, err.message);
}
END_TEST

START_TEST(reconcile_unloads_entry_of_paused_agent)
{
    struct am_error err;
    int rc;

    create_bot();
    deploy_ok("bot");
    pause_ok("bot");
    ck_assert_int_eq(registry_load(app.reg, "acme__bot", 1, 1, "stale: true\n", 12, NULL), 0);
    error_clear(&err);
    rc = agent_reconcile(&app, &err);
    ck_assert_msg(rc == 1, "reconcile: %d %s", rc, err.message);
    ck_assert(!in_registry("bot"));
    assert_consistent("bot");
}
END_TEST

START_TEST(reconcile_reloads_entry_with_stale_version)
{
    struct registry_agent ra;
    struct am_error err;
    int rc;

    create_bot();
    deploy_ok("bot");
    ck_assert_int_eq(registry_load(app.reg, "acme__bot", 99, 1, "stale: true\n", 12, NULL), 0);
    error_clear(&err);
    rc = agent_reconcile(&app, &err);
    ck_assert_msg(rc == 1, "reconcile: %d %s", rc, err.message);
    ck_assert_int_eq(registry_get(app.reg, "acme__bot", &ra), 0);
    ck_assert_uint_eq(ra.version, 1);
    ck_assert_ptr_nonnull(strstr(ra.yaml, "acme__bot"));
    registry_agent_clear(&ra);
}
END_TEST

START_TEST(reconcile_with_nothing_to_do_returns_zero)
{
    struct am_error err;

    ck_assert_int_eq(agent_reconcile(&app, &err), 0);
    create_bot();
    create_json("{\"name\":\"second\",\"step1\":{\"model\":\"echo/echo\"},"
                "\"step2\":{\"system_prompt\":\"Hi.\"}}");
    deploy_ok("second");
    error_clear(&err);
    ck_assert_int_eq(agent_reconcile(&app, &err), 0);
    ck_assert(in_registry("second"));
    ck_assert(!in_registry("bot"));
}
END_TEST

/* ---- fault injection ---------------------------------------------------------- */

START_TEST(deploy_with_write_failure_leaves_old_state)
{
    struct json_object *out = NULL;
    struct am_error err;

    create_bot();
    store_test_fail_write_after(1);
    error_clear(&err);
    ck_assert_int_eq(agent_deploy(&app, "acme", "bot", NULL, &out, &err), AM_EIO);
    store_test_fail_write_after(0);
    check_invariants();
    ck_assert_int_eq(err.code, AM_EIO);
    ck_assert_ptr_null(out);
    ck_assert_str_eq(status_of("bot"), "draft");
    ck_assert(!in_registry("bot"));
    ck_assert_int_eq(registry_count(app.reg), 0);
    /* and it deploys once the store is healthy */
    deploy_ok("bot");
    assert_consistent("bot");
}
END_TEST

START_TEST(pause_with_write_failure_leaves_old_state)
{
    struct json_object *out = NULL;
    struct am_error err;

    create_bot();
    deploy_ok("bot");
    store_test_fail_write_after(1);
    error_clear(&err);
    ck_assert_int_eq(agent_pause(&app, "acme", "bot", &out, &err), AM_EIO);
    store_test_fail_write_after(0);
    check_invariants();
    ck_assert_ptr_null(out);
    ck_assert_str_eq(status_of("bot"), "deployed");
    ck_assert(in_registry("bot"));
    assert_consistent("bot");
    pause_ok("bot");
}
END_TEST

START_TEST(delete_with_write_failure_leaves_old_state)
{
    static const char *const states[] = { "draft", "deployed", "paused" };
    struct am_error err;

    create_bot();
    if (_i >= 1)
        deploy_ok("bot");
    if (_i >= 2)
        pause_ok("bot");
    store_test_fail_write_after(1);
    error_clear(&err);
    ck_assert_int_eq(agent_delete(&app, "acme", "bot", &err), AM_EIO);
    store_test_fail_write_after(0);
    check_invariants();
    ck_assert_str_eq(status_of("bot"), states[_i]);
    ck_assert_int_eq(in_registry("bot"), _i == 1);
    assert_consistent("bot");
}
END_TEST

START_TEST(update_with_write_failure_keeps_config)
{
    struct am_error err;
    char *before, *after;

    create_bot();
    before = wizard_config_of("bot");
    store_test_fail_write_after(1);
    ck_assert_int_eq(update_json("bot", "{\"step2\":{\"tone\":\"casual\"}}", &err), AM_EIO);
    store_test_fail_write_after(0);
    check_invariants();
    after = wizard_config_of("bot");
    ck_assert_str_eq(after, before);
    ck_assert_int_eq(stored_version("bot"), 1);
    free(before);
    free(after);
}
END_TEST

START_TEST(create_with_write_failure_stores_nothing)
{
    struct json_object *wc = J(BOT_JSON), *out = NULL;
    struct am_error err;

    store_test_fail_write_after(1);
    error_clear(&err);
    ck_assert_int_eq(agent_create(&app, "acme", wc, &out, &err), AM_EIO);
    store_test_fail_write_after(0);
    check_invariants();
    ck_assert_int_eq(err.code, AM_EIO);
    ck_assert_ptr_null(out);
    ck_assert_str_eq(status_of("bot"), "absent");
    ck_assert_int_eq(agent_create(&app, "acme", wc, &out, &err), 0);
    json_object_put(out);
    json_object_put(wc);
}
END_TEST

/* sqlite-style sweep: each operation from each starting state with the
 * fault armed at write 1, 2 and 3. Each must end in the old state with
 * AM_EIO, or in the new state with 0. */
enum op { OP_DEPLOY, OP_PAUSE, OP_UPDATE, OP_DELETE };
static const struct { enum op op; int start; /* 0 draft, 1 deployed, 2 paused */ } sweep[] = {
    { OP_DEPLOY, 0 }, { OP_DEPLOY, 2 }, { OP_PAUSE, 1 }, { OP_UPDATE, 0 }, { OP_UPDATE, 2 },
    { OP_DELETE, 0 }, { OP_DELETE, 1 }, { OP_DELETE, 2 },
};

START_TEST(transition_with_fault_at_each_write_is_all_or_nothing)
{
    int c = _i / 3, n = _i % 3 + 1, rc;
    struct json_object *out = NULL, *patch = J("{\"step2\":{\"persona\":\"Changed\"}}");
    struct am_error err;
    struct snap before, after;

    create_bot();
    if (sweep[c].start >= 1)
        deploy_ok("bot");
    if (sweep[c].start >= 2)
        pause_ok("bot");
    snap_take(&before, "bot");
    store_test_fail_write_after(n);
    error_clear(&err);
    switch (sweep[c].op) {
    case OP_DEPLOY: rc = agent_deploy(&app, "acme", "bot", NULL, &out, &err); break;
    case OP_PAUSE: rc = agent_pause(&app, "acme", "bot", &out, &err); break;
    case OP_UPDATE: rc = agent_update(&app, "acme", "bot", patch, &out, &err); break;
    default: rc = agent_delete(&app, "acme", "bot", &err); break;
    }
    store_test_fail_write_after(0);
    check_invariants();
    json_object_put(out);
    json_object_put(patch);
    snap_take(&after, "bot");
    ck_assert_msg(rc == 0 || rc == AM_EIO, "case %d fault %d: rc %d", c, n, rc);
    if (rc == AM_EIO) {
        ck_assert_msg(snap_equal(&before, &after), "case %d fault %d: failed call changed state", c, n);
    } else {
        ck_assert_msg(!snap_equal(&before, &after), "case %d fault %d: success changed nothing", c, n);
        switch (sweep[c].op) {
        case OP_DEPLOY: ck_assert_str_eq(after.status, "deployed"); break;
        case OP_PAUSE: ck_assert_str_eq(after.status, "paused"); break;
        case OP_UPDATE:
            ck_assert_str_eq(after.status, before.status);
            ck_assert_int_eq(after.version, before.version + 1);
            ck_assert_ptr_nonnull(strstr(after.wc, "Changed"));
            break;
        default: ck_assert(!after.exists); break;
        }
    }
    snap_free(&before);
    snap_free(&after);
    assert_consistent("bot");
    check_invariants();
}
END_TEST

#if AM_INVARIANTS
/* The check is not vacuous: a registry entry with no stored agent behind
 * it (invariant 1) makes agent_check_invariants abort. */
START_TEST(agent_invariants_abort_on_an_entry_with_no_stored_agent)
{
    struct am_error err;

    create_bot();
    deploy_ok("bot");
    check_invariants();
    error_clear(&err);
    ck_assert_int_eq(registry_load(app.reg, "acme__ghost", 1, 0, "x: 1\n", 5, &err), 0);
    agent_check_invariants(&app);
    ck_abort_msg("agent_check_invariants returned on a registry entry with no agent");
}
END_TEST

/* ... and a deployed agent missing from the registry makes it abort too. */
START_TEST(agent_invariants_abort_on_a_deployed_agent_not_in_the_registry)
{
    create_bot();
    deploy_ok("bot");
    ck_assert_int_eq(registry_unload(app.reg, "acme__bot"), 0);
    agent_check_invariants(&app);
    ck_abort_msg("agent_check_invariants returned on a deployed agent not served");
}
END_TEST
#endif

/* ---- concurrency ------------------------------------------------------------------ */

struct race {
    int deploys, pauses;       /* successful calls (atomic) */
    int bad;                   /* calls with an unexpected answer (atomic) */
    int unavailable;           /* AM_EUNAVAILABLE answers (atomic) */
    char first_bad[160];       /* the first unexpected answer */
};

struct racer {
    struct race *race;
    unsigned seed;
    int id;
};

static void race_bad(struct race *r, const char *what, int rc)
{
    if (__atomic_fetch_add(&r->bad, 1, __ATOMIC_SEQ_CST) == 0)
        snprintf(r->first_bad, sizeof r->first_bad, "%s returned %d", what, rc);
}

static void *racer_main(void *p)
{
    struct racer *me = p;
    struct race *r = me->race;
    struct am_error err;
    char patch_text[96];

    for (int i = 0; i < 200; i++) {
        struct json_object *out = NULL;
        int rc;

        error_clear(&err);
        switch (rand_r(&me->seed) % 4) {
        case 0:
            rc = agent_deploy(&app, "acme", "bot", NULL, &out, &err);
            if (rc == 0)
                __atomic_add_fetch(&r->deploys, 1, __ATOMIC_SEQ_CST);
            else if (rc != AM_EALREADYDEPLOYED)
                rc == AM_EUNAVAILABLE ? (void)__atomic_add_fetch(&r->unavailable, 1, __ATOMIC_SEQ_CST)
                                      : race_bad(r, "deploy", rc);
            break;
        case 1:
            rc = agent_pause(&app, "acme", "bot", &out, &err);
            if (rc == 0)
                __atomic_add_fetch(&r->pauses, 1, __ATOMIC_SEQ_CST);
            else if (rc != AM_EALREADYPAUSED && rc != AM_ETRANSITION)
                rc == AM_EUNAVAILABLE ? (void)__atomic_add_fetch(&r->unavailable, 1, __ATOMIC_SEQ_CST)
                                      : race_bad(r, "pause", rc);
            break;
        case 2: {
            struct json_object *patch;

            snprintf(patch_text, sizeof patch_text, "{\"step2\":{\"persona\":\"racer %d call %d\"}}",
                     me->id, i);
            patch = json_tokener_parse(patch_text);
            rc = agent_update(&app, "acme", "bot", patch, &out, &err);
            json_object_put(patch);
            if (rc != 0 && rc != AM_EDEPLOYED)
                rc == AM_EUNAVAILABLE ? (void)__atomic_add_fetch(&r->unavailable, 1, __ATOMIC_SEQ_CST)
                                      : race_bad(r, "update", rc);
            break;
        }
        default: {
            const char *st;

            rc = agent_get(&app, "acme", "bot", &out, &err);
            if (rc == 0) {
                st = str_of(out, "status");
                if (st == NULL || (strcmp(st, "draft") != 0 && strcmp(st, "deployed") != 0 &&
                                   strcmp(st, "paused") != 0))
                    race_bad(r, "get status", 0);
            } else if (rc == AM_EUNAVAILABLE) {
                __atomic_add_fetch(&r->unavailable, 1, __ATOMIC_SEQ_CST);
            } else {
                race_bad(r, "get", rc);
            }
            break;
        }
        }
        json_object_put(out);
    }
    return NULL;
}

START_TEST(concurrent_transitions_agree)
{
    enum { NTHREADS = 8 };
    struct race race;
    struct racer racers[NTHREADS];
    pthread_t tids[NTHREADS];
    struct snap s;
    int deployed;

    memset(&race, 0, sizeof race);
    create_bot();
    for (int i = 0; i < NTHREADS; i++) {
        racers[i].race = &race;
        racers[i].seed = 1234u + (unsigned)i * 7919u;
        racers[i].id = i;
        ck_assert_int_eq(pthread_create(&tids[i], NULL, racer_main, &racers[i]), 0);
    }
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(tids[i], NULL);

    ck_assert_msg(race.bad == 0, "%d unexpected answers, first: %s", race.bad, race.first_bad);
    snap_take(&s, "bot");
    deployed = strcmp(s.status, "deployed") == 0;
    ck_assert_msg(deployed == s.in_reg, "status %s but registry_contains %d", s.status, s.in_reg);
    ck_assert_msg(race.deploys - race.pauses == deployed,
                  "%d deploys - %d pauses != %d (final %s, %d unavailable)", race.deploys,
                  race.pauses, deployed, s.status, race.unavailable);
    ck_assert_int_gt(race.deploys, 0);
    if (deployed)
        ck_assert_uint_eq(s.reg_version, (uint64_t)s.version);
    snap_free(&s);
    assert_consistent("bot");
    ck_assert_int_le(registry_count(app.reg), 1);
}
END_TEST

/* ---- runner ---------------------------------------------------------------------- */

static Suite *agent_suite(void)
{
    Suite *s = suite_create("agent");
    TCase *create = tcase_create("create");
    TCase *update = tcase_create("update");
    TCase *deploy = tcase_create("deploy");
    TCase *pause = tcase_create("pause");
    TCase *del = tcase_create("delete");
    TCase *yaml = tcase_create("yaml");
    TCase *reconcile = tcase_create("reconcile");
    TCase *fault = tcase_create("fault");
    TCase *race = tcase_create("race");
    TCase *all[] = { create, update, deploy, pause, del, yaml, reconcile, fault, race };

    tcase_add_test(create, create_makes_draft_not_in_registry);
    tcase_add_test(create, create_twice_is_agent_exists);
    tcase_add_test(create, create_past_max_agents_is_plan_limit);
    tcase_add_test(create, deploy_past_max_agents_deployed_is_plan_limit);
    tcase_add_test(create, create_in_unknown_org_stores_nothing);
    tcase_add_loop_test(create, create_invalid_is_validation_error_with_details, 0,
                        NCASES(invalid_creates));

    tcase_add_test(update, update_merges_one_field_keeps_rest);
    tcase_add_loop_test(update, update_invalid_is_validation_error_and_keeps_config, 0,
                        NCASES(invalid_patches));
    tcase_add_test(update, update_while_deployed_is_agent_deployed);

    tcase_add_test(deploy, deploy_loads_registry_with_yaml);
    tcase_add_loop_test(deploy, deploy_without_model_is_invalid_config_with_details, 0,
                        NCASES(undeployable));
    tcase_add_test(deploy, deploy_twice_is_already_deployed);
    tcase_add_loop_test(deploy, deploy_openai_without_key_is_provider_key_missing, 0,
                        NCASES(key_cases));
    tcase_add_test(deploy, deployed_yaml_has_key_ref_never_secret);
    tcase_add_test(deploy, deploy_into_full_registry_is_registry_full_and_stays_draft);
    tcase_add_test(deploy, deploy_larger_than_slot_is_invalid_config_and_stays_draft);
    tcase_add_test(deploy, create_and_put_refuse_what_would_not_fit_the_slot);

    tcase_add_test(pause, pause_unloads_and_keeps_config_bytes);
    tcase_add_test(pause, pause_draft_is_invalid_transition);
    tcase_add_test(pause, pause_twice_is_already_paused);
    tcase_add_test(pause, redeploy_of_paused_agent_skips_recompile);

    tcase_add_loop_test(del, delete_from_each_state, 0, 3);
    tcase_add_loop_test(del, operations_on_missing_agent_are_agent_not_found, 0,
                        NCASES(missing_names));

    tcase_add_test(yaml, yaml_of_draft_compiles_on_the_fly_and_changes_nothing);
    tcase_add_test(yaml, yaml_of_incomplete_draft_still_compiles);
    tcase_add_test(yaml, yaml_of_deployed_agent_is_what_registry_serves);
    tcase_add_test(yaml, yaml_of_edited_paused_agent_shows_the_new_config);

    tcase_add_test(reconcile, reconcile_loads_missing_and_unloads_stale);
    tcase_add_test(reconcile, reconcile_of_entry_without_record_counts_it_not_error);
    tcase_add_test(reconcile, reconcile_unloads_entry_of_paused_agent);
    tcase_add_test(reconcile, reconcile_reloads_entry_with_stale_version);
    tcase_add_test(reconcile, reconcile_with_nothing_to_do_returns_zero);

    tcase_add_test(fault, deploy_with_write_failure_leaves_old_state);
    tcase_add_test(fault, pause_with_write_failure_leaves_old_state);
    tcase_add_loop_test(fault, delete_with_write_failure_leaves_old_state, 0, 3);
    tcase_add_test(fault, update_with_write_failure_keeps_config);
    tcase_add_test(fault, create_with_write_failure_stores_nothing);
    tcase_add_loop_test(fault, transition_with_fault_at_each_write_is_all_or_nothing, 0,
                        3 * NCASES(sweep));

    tcase_add_test(race, concurrent_transitions_agree);
#if AM_INVARIANTS
    tcase_add_test_raise_signal(fault, agent_invariants_abort_on_an_entry_with_no_stored_agent,
                                SIGABRT);
    tcase_add_test_raise_signal(fault,
                                agent_invariants_abort_on_a_deployed_agent_not_in_the_registry,
                                SIGABRT);
#endif

    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        tcase_add_checked_fixture(all[i], setup, teardown);
        tcase_set_timeout(all[i], all[i] == race ? 300 : 60);
        suite_add_tcase(s, all[i]);
    }
    return s;
}

/* A failed check in a forked test skips its teardown: remove what such
 * tests left behind (their registry segments and environment homes). */
static void remove_leftovers(void)
{
    char prefix[48], name[300];
    DIR *d = opendir("/dev/shm");
    struct dirent *de;

    snprintf(prefix, sizeof prefix, "am-test-%d-", (int)runner_pid);
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
    util_strlcpy(base, "/tmp/am-check-agent-XXXXXX", sizeof base);
    if (mkdtemp(base) == NULL) {
        perror("mkdtemp");
        return EXIT_FAILURE;
    }
    sr = srunner_create(agent_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    remove_leftovers();
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
