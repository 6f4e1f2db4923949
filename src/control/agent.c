/*
 * agent.c - the agent lifecycle (see the state diagram in agent.h).
 *
 * Owns: the agent record format in STORE_AGENTS (key "org\0name"):
 *   {"wizard":{…WizardConfig…}, "status":"draft|deployed|paused",
 *    "version":N,                 bumped by every config change (the edit count)
 *    "live_version":n,            the agent version it is at: live when
 *                                 deployed, else the last deployed or the one
 *                                 a rollback restored (0: none yet)
 *    "live_hash":"…",             config_hash of that version (draft_changed)
 *    "wizard_hash":"…",           config_hash of "wizard", set with it
 *    "latest_version":n,          the highest version ever made (never reused)
 *    "rolled_back_at":t, "rolled_back_by":"…", "rolled_back_from":n (the last rollback)
 *    "created_at":t, "updated_at":t, "deployed_at":t|null, "paused_at":t|null}
 * and, under the same key in STORE_COMPILED, written by the first deploy:
 *   {"version":N, "n":n, "key_refs":"…", "yaml":"…"}
 * (N the edit count and n the agent version it was compiled for). The
 * compilation lives apart so that GET and list never parse the YAML. The
 * agent versions themselves are in STORE_VERSIONS (versions.c's format):
 * a deploy whose config differs from the live version's makes version
 * latest_version + 1 in the deploy's transaction, and prunes the versions
 * retention pushes out in the same transaction.
 *
 * Invariants:
 *  1. A record's status is "deployed" exactly when the registry holds
 *     "org__name" with the record's version, once the transaction that
 *     changed either has committed. Each transition changes the registry
 *     last, while it still holds the record's write lock, and repairs it
 *     from the committed record if the commit then fails.
 *  2. The compilation is what the runtime serves: a deployed agent always
 *     has one whose version equals the record's version. It is only ever
 *     written or read while the agent record's write lock is held.
 *  3. Pause and redeploy never touch "wizard": every byte of the config
 *     survives them.
 *  4. A deployed agent's live_version names a stored version, and the
 *     registry serves a compilation made for that version number (its
 *     metadata.version is "n.0.0"): rollback switches both in one
 *     transaction.
 *
 * Must never: log (routes do); hold the registry's writer lock while
 * waiting for the database.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "control/agent.h"
#include "state/config.h"
#include "runtime/memory.h"
#include "state/registry.h"
#include "state/store.h"
#include "state/vault.h"
#include "lib/invariant.h"
#include "lib/key.h"
#include "lib/util.h"
#include "control/versions.h"
#include "control/wizard.h"

static uint64_t compile_count;

uint64_t agent_compile_count(void)
{
    return __atomic_load_n(&compile_count, __ATOMIC_RELAXED);
}

static const char *const status_names[] = { "draft", "deployed", "paused" };

static int status_of(struct json_object *rec)
{
    struct json_object *v;
    const char *s;
    int i;

    if (!json_object_object_get_ex(rec, "status", &v) || (s = json_object_get_string(v)) == NULL)
        return AGENT_DRAFT;
    for (i = 0; i < 3; i++)
        if (strcmp(s, status_names[i]) == 0)
            return i;
    return AGENT_DRAFT;
}

static int64_t int_field(struct json_object *o, const char *k)
{
    struct json_object *v;
    return json_object_object_get_ex(o, k, &v) ? json_object_get_int64(v) : 0;
}

static const char *str_field(struct json_object *o, const char *k)
{
    struct json_object *v;
    return json_object_object_get_ex(o, k, &v) && json_object_is_type(v, json_type_string)
               ? json_object_get_string(v) : NULL;
}

static struct json_object *time_or_null(int64_t t)
{
    char buf[32];

    if (t == 0)
        return NULL;
    util_rfc3339(t, buf, sizeof(buf));
    return json_object_new_string(buf);
}

/* Load the record; AM_EAGENTNOTFOUND if absent. *rec is owned by caller. */
static int record_load(struct app *app, struct store_txn *t, const char *org,
                       const char *name, struct json_object **rec, struct am_error *err)
{
    char key[128], *val = NULL;
    size_t klen = key_pair(key, sizeof(key), org, name), vlen;
    int rc;

    *rec = NULL;
    if (klen == 0 || !wizard_name_valid(name))
        return error_set(err, AM_EAGENTNOTFOUND, "Agent '%s' not found", name);
    rc = store_get(app->store, t, STORE_AGENTS, key, klen, STORE_RMW, &val, &vlen);
    if (rc == AM_ENOENT)
        return error_set(err, AM_EAGENTNOTFOUND, "Agent '%s' not found", name);
    if (rc != 0)
        return rc == AM_EDEADLOCK ? rc : error_set(err, rc, "Storage unavailable");
    *rec = json_tokener_parse(val);
    free(val);
    if (*rec == NULL)
        return error_set(err, AM_EIO, "Stored agent '%s' is unreadable", name);
    return 0;
}

static int record_save(struct app *app, struct store_txn *t, const char *org,
                       const char *name, struct json_object *rec, struct am_error *err)
{
    char key[128];
    size_t klen = key_pair(key, sizeof(key), org, name), len;
    const char *s = json_object_to_json_string_length(rec, JSON_C_TO_STRING_PLAIN, &len);
    int rc = store_put(app->store, t, STORE_AGENTS, key, klen, s, len);

    if (rc != 0 && rc != AM_EDEADLOCK)
        error_set(err, rc, "Storage unavailable");
    return rc;
}

/* The model string of the WizardConfig, or NULL. */
static struct json_object *model_of(struct json_object *wc)
{
    struct json_object *s1, *m;

    if (json_object_object_get_ex(wc, "step1", &s1) && json_object_object_get_ex(s1, "model", &m))
        return json_object_get(m);
    return NULL;
}

/* Set the record's config to wc (taken) with its config hash, which every
 * read compares with the live version's (draft_changed): hashed once per
 * write, not once per GET. */
static void record_set_wizard(struct json_object *rec, struct json_object *wc)
{
    char hex[VERSIONS_HASH_HEX];

    versions_hash(wc, hex);
    json_object_object_add(rec, "wizard", wc);
    json_object_object_add(rec, "wizard_hash", json_object_new_string(hex));
}

/* "version" (null before the first deploy) and "draft_changed" (the
 * config differs from that version's, or there is none). */
static void version_fields(struct json_object *o, struct json_object *rec,
                           struct json_object *wc)
{
    int64_t live = int_field(rec, "live_version");
    const char *live_hash = str_field(rec, "live_hash"), *hash = str_field(rec, "wizard_hash");
    char hex[VERSIONS_HASH_HEX];

    if (hash == NULL) {         /* a record written before wizard_hash existed */
        versions_hash(wc, hex);
        hash = hex;
    }
    json_object_object_add(o, "version", live > 0 ? json_object_new_int64(live) : NULL);
    json_object_object_add(o, "draft_changed", json_object_new_boolean(
                               live <= 0 || live_hash == NULL || strcmp(hash, live_hash) != 0));
}

/* The public agent object: list form (full == 0) or GET form. */
static struct json_object *agent_view(const char *org, struct json_object *rec, int full)
{
    struct json_object *o = json_object_new_object(), *wc = NULL, *dn;
    char id[REGISTRY_KEY_MAX];
    const char *name;

    json_object_object_get_ex(rec, "wizard", &wc);
    name = str_field(wc, "name");
    json_object_object_add(o, "name", json_object_new_string(name ? name : ""));
    json_object_object_add(o, "display_name",
                           json_object_object_get_ex(wc, "display_name", &dn)
                               ? json_object_get(dn) : json_object_new_string(name ? name : ""));
    json_object_object_add(o, "status", json_object_new_string(status_names[status_of(rec)]));
    if (full) {
        (void)key_agent_id(id, sizeof(id), org, name ? name : "");
        json_object_object_add(o, "agent_id", json_object_new_string(id));
    }
    json_object_object_add(o, "model", model_of(wc));
    if (full)
        json_object_object_add(o, "wizard_config", json_object_get(wc));
    version_fields(o, rec, wc);
    json_object_object_add(o, "created_at", time_or_null(int_field(rec, "created_at")));
    json_object_object_add(o, "updated_at", time_or_null(int_field(rec, "updated_at")));
    json_object_object_add(o, "deployed_at", time_or_null(int_field(rec, "deployed_at")));
    if (full)
        json_object_object_add(o, "paused_at", time_or_null(int_field(rec, "paused_at")));
    return o;
}

/* ---- create ---------------------------------------------------------------- */

struct create_ctx {
    struct app *app;
    const char *org;
    const char *name;
    struct json_object *wc;     /* borrowed */
    struct json_object *rec;    /* OUT: the stored record (owned) */
    struct am_error *err;
};

static int count_one(const char *k, size_t kl, const char *v, size_t vl, void *arg)
{
    (void)k; (void)kl; (void)v; (void)vl;
    ++*(int *)arg;
    return 0;
}

static int create_txn(struct store *s, struct store_txn *t, void *arg)
{
    struct create_ctx *c = arg;
    char key[128], *val = NULL;
    size_t klen = key_pair(key, sizeof(key), c->org, c->name);
    int64_t now = util_now();
    int rc, n = 0;

    json_object_put(c->rec);
    c->rec = NULL;
    /* The org record's write lock serialises creates within one org, so the
     * count below cannot race past max_agents. */
    rc = store_get(s, t, STORE_ORGS, c->org, strlen(c->org), STORE_RMW, &val, NULL);
    free(val);
    if (rc != 0)
        return rc == AM_ENOENT ? error_set(c->err, AM_EFORBIDDEN, "No such organization") : rc;
    rc = store_get(s, t, STORE_AGENTS, key, klen, STORE_RMW, &val, NULL);
    free(val);
    if (rc == 0)
        return error_set(c->err, AM_EEXISTS, "Agent '%s' already exists", c->name);
    if (rc != AM_ENOENT)
        return rc;
    rc = store_scan(s, t, STORE_AGENTS, c->org, strlen(c->org) + 1, count_one, &n);
    if (rc != 0)
        return rc;
    if (n >= c->app->cfg->max_agents)
        return error_set(c->err, AM_EPLANLIMIT,
                         "Organization has reached its limit of %d agents",
                         c->app->cfg->max_agents);
    c->rec = json_object_new_object();
    record_set_wizard(c->rec, json_object_get(c->wc));
    json_object_object_add(c->rec, "status", json_object_new_string("draft"));
    json_object_object_add(c->rec, "version", json_object_new_int64(1));
    json_object_object_add(c->rec, "created_at", json_object_new_int64(now));
    json_object_object_add(c->rec, "updated_at", json_object_new_int64(now));
    return record_save(c->app, t, c->org, c->name, c->rec, c->err);
}

/* The compiled-size check of create and PUT (wizard_check_compiled_size)
 * against this registry's slot: what they accept always deploys. */
static int agent_check_size(struct app *app, const char *org, struct json_object *wc,
                            struct am_error *err)
{
    size_t slot = app->reg != NULL ? registry_slot_bytes(app->reg)
                                   : (size_t)app->cfg->registry_slot_kb * 1024;

    return wizard_check_compiled_size(wc, org, app->cfg, slot, err);
}

int agent_create(struct app *app, const char *org, struct json_object *wc,
                 struct json_object **out, struct am_error *err)
{
    struct create_ctx c = { app, org, NULL, wc, NULL, err };
    int rc;

    *out = NULL;
    if ((rc = wizard_validate(wc, err)) != 0 ||
        (rc = agent_check_size(app, org, wc, err)) != 0)
        return rc;
    c.name = str_field(wc, "name");
    rc = store_transact(app->store, create_txn, &c);
    if (rc == 0)
        *out = agent_view(org, c.rec, 1);
    else if (err->code != rc)
        error_set(err, rc, "Storage unavailable");
    json_object_put(c.rec);
    return rc;
}

/* ---- read ------------------------------------------------------------------ */

int agent_get(struct app *app, const char *org, const char *name,
              struct json_object **out, struct am_error *err)
{
    struct json_object *rec;
    int rc = record_load(app, NULL, org, name, &rec, err);

    *out = NULL;
    if (rc != 0)
        return rc == AM_EDEADLOCK ? error_set(err, AM_EUNAVAILABLE, "Busy, retry") : rc;
    *out = agent_view(org, rec, 1);
    json_object_put(rec);
    return 0;
}

int agent_status(struct app *app, const char *org, const char *name)
{
    struct json_object *rec;
    int rc = record_load(app, NULL, org, name, &rec, NULL);

    if (rc != 0)
        return rc == AM_EAGENTNOTFOUND ? rc : AM_EUNAVAILABLE;
    rc = status_of(rec);
    json_object_put(rec);
    return rc;
}

const char *agent_status_name(int status)
{
    return status >= AGENT_DRAFT && status <= AGENT_PAUSED ? status_names[status] : "unknown";
}

int agent_health(struct app *app, struct json_object **out)
{
    struct json_object *o = json_object_new_object(), *reg = json_object_new_object();
    int db_ok = store_ping(app->store) == 0;

    json_object_object_add(o, "status", json_object_new_string(db_ok ? "ok" : "unavailable"));
    json_object_object_add(o, "version", json_object_new_string(PACKAGE_VERSION));
    json_object_object_add(reg, "agents", json_object_new_int(registry_count(app->reg)));
    json_object_object_add(o, "registry", reg);
    json_object_object_add(o, "db", json_object_new_string(db_ok ? "ok" : "unavailable"));
    *out = o;
    return db_ok ? 0 : AM_EUNAVAILABLE;
}

struct list_ctx {
    const char *org;
    struct json_object *arr;
};

static int list_one(const char *k, size_t kl, const char *v, size_t vl, void *arg)
{
    struct list_ctx *c = arg;
    struct json_object *rec = json_tokener_parse(v);

    (void)k; (void)kl; (void)vl;
    if (rec != NULL)
        json_object_array_add(c->arr, agent_view(c->org, rec, 0));
    json_object_put(rec);
    return 0;
}

int agent_list(struct app *app, const char *org, struct json_object **out,
               struct am_error *err)
{
    struct list_ctx c = { org, json_object_new_array() };
    int rc = store_scan(app->store, NULL, STORE_AGENTS, org, strlen(org) + 1, list_one, &c);

    *out = NULL;
    if (rc != 0) {
        json_object_put(c.arr);
        return error_set(err, rc == AM_EDEADLOCK ? AM_EUNAVAILABLE : rc, "Storage unavailable");
    }
    *out = json_object_new_object();
    json_object_object_add(*out, "agents", c.arr);
    return 0;
}

/* ---- transitions ----------------------------------------------------------- */

struct tx_ctx {
    struct app *app;
    const char *org;
    const char *name;
    struct json_object *patch;  /* update: borrowed */
    struct json_object *out;    /* OUT: the answer (owned) */
    int registry_touched;       /* the registry changed in the last attempt */
    struct am_error *err;
    const char *by;             /* deploy, rollback: who (NULL if unknown) */
    int64_t target;             /* rollback: the version to go back to */
};

static void tx_reset(struct tx_ctx *c)
{
    json_object_put(c->out);
    c->out = NULL;
    c->registry_touched = 0;
    error_clear(c->err);
}

static int update_txn(struct store *s, struct store_txn *t, void *arg)
{
    struct tx_ctx *c = arg;
    struct json_object *rec = NULL, *wc, *merged = NULL;
    int rc;

    (void)s;
    tx_reset(c);
    if ((rc = record_load(c->app, t, c->org, c->name, &rec, c->err)) != 0)
        goto out;
    if (status_of(rec) == AGENT_DEPLOYED) {
        rc = error_set(c->err, AM_EDEPLOYED,
                       "Agent '%s' is deployed; pause it first to edit its config", c->name);
        goto out;
    }
    json_object_object_get_ex(rec, "wizard", &wc);
    merged = wizard_merge(wc, c->patch);
    if ((rc = wizard_validate(merged, c->err)) != 0 ||
        (rc = agent_check_size(c->app, c->org, merged, c->err)) != 0)
        goto out;
    record_set_wizard(rec, merged);
    merged = NULL;
    json_object_object_add(rec, "version", json_object_new_int64(int_field(rec, "version") + 1));
    json_object_object_add(rec, "updated_at", json_object_new_int64(util_now()));
    if ((rc = record_save(c->app, t, c->org, c->name, rec, c->err)) != 0)
        goto out;
    c->out = agent_view(c->org, rec, 1);
out:
    json_object_put(merged);
    json_object_put(rec);
    return rc;
}

static int delete_txn(struct store *s, struct store_txn *t, void *arg)
{
    struct tx_ctx *c = arg;
    struct json_object *rec = NULL;
    char key[128], rkey[REGISTRY_KEY_MAX];
    size_t klen = key_pair(key, sizeof(key), c->org, c->name);
    int rc;

    tx_reset(c);
    if ((rc = record_load(c->app, t, c->org, c->name, &rec, c->err)) != 0)
        goto out;
    if ((rc = store_del(s, t, STORE_AGENTS, key, klen)) != 0)
        goto out;
    rc = store_del(s, t, STORE_COMPILED, key, klen);
    if (rc != 0 && rc != AM_ENOENT)
        goto out;
    /* Its conversations go with it: a new agent of the same name starts
     * with no memory. */
    (void)key_agent_id(rkey, sizeof(rkey), c->org, c->name);
    if ((rc = memory_forget_agent(s, t, rkey)) != 0)
        goto out;
    if ((rc = versions_forget(s, t, c->org, c->name)) != 0)
        goto out;
    if (status_of(rec) == AGENT_DEPLOYED) {
        registry_unload(c->app->reg, rkey);
        c->registry_touched = 1;
    }
out:
    json_object_put(rec);
    return rc;
}

/* api_key_ref for each provider the config uses (primary and fallback):
 * the org's own key first ("org:openai", read inside t when t is not NULL,
 * so a concurrent delete is ordered before or after the deploy), then the
 * server's ("server:openai"). AM_EKEYMISSING names a provider that needs a
 * key and has neither; AM_EDEADLOCK/AM_EIO from the store pass through.
 * refs_joined gets "ref;…". */
static int key_refs_for(struct app *app, struct store_txn *t, const char *org,
                        struct json_object *wc, const char *refs[PROVIDER_COUNT],
                        char bufs[PROVIDER_COUNT][64], char *joined, size_t cap,
                        struct am_error *err)
{
    int used[2], i, p, has;
    size_t n = 0;

    memset(refs, 0, sizeof(refs[0]) * PROVIDER_COUNT);
    joined[0] = '\0';
    wizard_providers(wc, used);
    for (i = 0; i < 2; i++) {
        p = used[i];
        if (p < 0 || p == PROVIDER_ECHO || p == PROVIDER_OLLAMA || refs[p] != NULL)
            continue;
        if ((has = vault_provider_exists(app->store, t, org, config_provider_name(p))) < 0)
            return has == AM_EDEADLOCK ? has   /* the transaction runs again */
                   : error_set(err, has == AM_EIO ? AM_EIO : AM_EUNAVAILABLE,
                               "Storage unavailable, retry");
        if (!has && app->cfg->providers[p].api_key[0] == '\0')
            return error_set(err, AM_EKEYMISSING,
                             "No API key for provider '%s': add one to the organization "
                             "(POST /orgs/%s/providers) or the server config",
                             config_provider_name(p), org);
        snprintf(bufs[p], 64, "%s:%s", has ? "org" : "server", config_provider_name(p));
        refs[p] = bufs[p];
        n += (size_t)snprintf(joined + n, n < cap ? cap - n : 0, "%s;", bufs[p]);
    }
    return 0;
}

/* The stored compilation of org/name, or NULL with *rc set (AM_ENOENT). */
static struct json_object *compiled_load(struct app *app, struct store_txn *t,
                                         const char *org, const char *name, int *rc)
{
    char key[128], *val = NULL;
    size_t klen = key_pair(key, sizeof(key), org, name);
    struct json_object *comp = NULL;

    *rc = store_get(app->store, t, STORE_COMPILED, key, klen, 0, &val, NULL);
    if (*rc == 0 && (comp = json_tokener_parse(val)) == NULL)
        *rc = AM_EIO;
    free(val);
    return comp;
}

/* The YAML of a compilation if it was built from `version`, else NULL. */
static const char *compiled_yaml(struct json_object *comp, int64_t version)
{
    if (comp == NULL || int_field(comp, "version") != version)
        return NULL;
    return str_field(comp, "yaml");
}

/* The YAML of stored version n (vrec if the caller has it read, else read
 * here) if it was compiled with key refs `joined`: a malloc'd copy in
 * *yaml (NULL when not). Returns 0 or the store's error. */
static int version_yaml(struct tx_ctx *c, struct store_txn *t, int64_t n,
                        struct json_object *vrec, const char *joined, char **yaml, size_t *len)
{
    struct json_object *own = NULL;
    const char *y, *refs;
    int rc = vrec != NULL ? 0 : versions_load(c->app->store, t, c->org, c->name, n, &own);

    *yaml = NULL;
    if (rc == AM_ENOENT)
        return 0;
    if (vrec == NULL)
        vrec = own;
    if (rc == 0 && (y = str_field(vrec, "yaml")) != NULL &&
        (refs = str_field(vrec, "key_refs")) != NULL && strcmp(refs, joined) == 0) {
        *len = strlen(y);
        *yaml = xstrndup(y, *len);
    }
    json_object_put(own);
    return rc;
}

/* Make sure STORE_COMPILED holds a compilation of rec for its edit count,
 * agent version n and the current key refs, compiling only when neither it
 * nor stored version n (when `existing`; vrec if already read, else NULL)
 * has one (the redeploy and rollback fast paths). On 0, *yaml is a
 * malloc'd copy for the registry and joined the key refs it was made with. */
static int ensure_compiled(struct tx_ctx *c, struct store_txn *t, struct json_object *rec,
                           int64_t n, int existing, struct json_object *vrec, char joined[256],
                           char **yaml, size_t *len, struct am_error *err)
{
    struct json_object *wc, *comp;
    const char *refs[PROVIDER_COUNT], *have;
    char bufs[PROVIDER_COUNT][64], key[128];
    int64_t version = int_field(rec, "version");
    size_t vlen;
    int rc;

    *yaml = NULL;
    json_object_object_get_ex(rec, "wizard", &wc);
    if ((rc = key_refs_for(c->app, t, c->org, wc, refs, bufs, joined, 256, err)) != 0)
        return rc;
    comp = compiled_load(c->app, t, c->org, c->name, &rc);
    if (rc != 0 && rc != AM_ENOENT)
        return rc;
    if ((have = compiled_yaml(comp, version)) != NULL && int_field(comp, "n") == n &&
        str_field(comp, "key_refs") != NULL && strcmp(str_field(comp, "key_refs"), joined) == 0) {
        *len = strlen(have);
        *yaml = xstrndup(have, *len);
        json_object_put(comp);
        return 0;
    }
    json_object_put(comp);
    if (existing && (rc = version_yaml(c, t, n, vrec, joined, yaml, len)) != 0)
        return rc;
    if (*yaml == NULL) {
        if ((rc = wizard_validate_deploy(wc, err)) != 0)
            return rc;
        if ((rc = wizard_compile(wc, c->org, (uint64_t)n, refs, c->app->cfg, yaml, len, err)) != 0)
            return rc;
        __atomic_add_fetch(&compile_count, 1, __ATOMIC_RELAXED);
    }
    comp = json_object_new_object();
    json_object_object_add(comp, "version", json_object_new_int64(version));
    json_object_object_add(comp, "n", json_object_new_int64(n));
    json_object_object_add(comp, "key_refs", json_object_new_string(joined));
    json_object_object_add(comp, "yaml", json_object_new_string_len(*yaml, (int)*len));
    {
        const char *v = json_object_to_json_string_length(comp, JSON_C_TO_STRING_PLAIN, &vlen);
        rc = store_put(c->app->store, t, STORE_COMPILED, key,
                       key_pair(key, sizeof(key), c->org, c->name), v, vlen);
    }
    json_object_put(comp);
    if (rc != 0) {
        free(*yaml);
        *yaml = NULL;
    }
    return rc;
}

/* The version a deploy makes live: the one the agent is at when its
 * config is unchanged since (*existing = 1), else a new one numbered
 * latest_version + 1. */
static int64_t deploy_version(struct json_object *rec, const char *hash, int *existing)
{
    int64_t live = int_field(rec, "live_version");
    const char *live_hash = str_field(rec, "live_hash");

    *existing = live > 0 && live_hash != NULL && strcmp(live_hash, hash) == 0;
    return *existing ? live : int_field(rec, "latest_version") + 1;
}

/* Record version n of rec's config (compiled as yaml) and make it the one
 * the agent is at; prune what retention pushes out. Inside t. */
static int version_record(struct tx_ctx *c, struct store_txn *t, struct json_object *rec,
                          int64_t n, const char *hash, const char *yaml, size_t len,
                          const char *joined, int64_t now)
{
    struct versions_new v = { n, NULL, yaml, len, joined, c->by, now };
    int rc;

    json_object_object_get_ex(rec, "wizard", &v.wizard);
    if ((rc = versions_put(c->app->store, t, c->org, c->name, &v)) != 0)
        return rc;
    rc = versions_prune(c->app->store, t, c->org, c->name, c->app->cfg->max_versions, n);
    if (rc < 0)
        return rc;
    json_object_object_add(rec, "latest_version", json_object_new_int64(n));
    json_object_object_add(rec, "live_version", json_object_new_int64(n));
    json_object_object_add(rec, "live_hash", json_object_new_string(hash));
    return 0;
}

static int count_deployed(const char *k, size_t kl, const char *v, size_t vl, void *arg)
{
    struct json_object *rec = json_tokener_parse(v);

    (void)k; (void)kl; (void)vl;
    if (rec != NULL && status_of(rec) == AGENT_DEPLOYED)
        ++*(int *)arg;
    json_object_put(rec);
    return 0;
}

/* Registry fairness: an org's deployed agents come out of its own plan
 * limit (create already holds the agents in any state to it; this holds
 * a deploy to it after limits.max_agents was lowered). The org record's
 * write lock serialises the deploys of one org, as it does the creates.
 * Returns 0, AM_EPLANLIMIT or the store's error. */
static int deploy_within_plan(struct tx_ctx *c, struct store *s, struct store_txn *t)
{
    char *val = NULL;
    int rc, n = 0;

    rc = store_get(s, t, STORE_ORGS, c->org, strlen(c->org), STORE_RMW, &val, NULL);
    free(val);
    if (rc != 0 && rc != AM_ENOENT)
        return rc;
    if ((rc = store_scan(s, t, STORE_AGENTS, c->org, strlen(c->org) + 1, count_deployed,
                         &n)) != 0)
        return rc;
    if (n >= c->app->cfg->max_agents)
        return error_set(c->err, AM_EPLANLIMIT, "Organization already has %d deployed agents, "
                         "its limit; pause one first", n);
    return 0;
}

static int deploy_txn(struct store *s, struct store_txn *t, void *arg)
{
    struct tx_ctx *c = arg;
    struct json_object *rec = NULL, *wc;
    char rkey[REGISTRY_KEY_MAX], when[32], hash[VERSIONS_HASH_HEX], joined[256], *yaml = NULL;
    int64_t now = util_now(), n;
    size_t len = 0;
    int rc, existing;

    tx_reset(c);
    if ((rc = record_load(c->app, t, c->org, c->name, &rec, c->err)) != 0)
        goto out;
    if (status_of(rec) == AGENT_DEPLOYED) {
        rc = error_set(c->err, AM_EALREADYDEPLOYED, "Agent '%s' is already deployed", c->name);
        goto out;
    }
    if ((rc = deploy_within_plan(c, s, t)) != 0)
        goto out;
    json_object_object_get_ex(rec, "wizard", &wc);
    versions_hash(wc, hash);
    n = deploy_version(rec, hash, &existing);
    if ((rc = ensure_compiled(c, t, rec, n, existing, NULL, joined, &yaml, &len, c->err)) != 0)
        goto out;
    if (!existing && (rc = version_record(c, t, rec, n, hash, yaml, len, joined, now)) != 0)
        goto out;
    json_object_object_add(rec, "status", json_object_new_string("deployed"));
    json_object_object_add(rec, "deployed_at", json_object_new_int64(now));
    if ((rc = record_save(c->app, t, c->org, c->name, rec, c->err)) != 0)
        goto out;
    (void)key_agent_id(rkey, sizeof(rkey), c->org, c->name);
    rc = registry_load(c->app->reg, rkey, (uint64_t)int_field(rec, "version"), now, yaml,
                       len, c->err);
    if (rc != 0) {
        if (rc == AM_ETOOLARGE)
            rc = error_set(c->err, AM_EINVALIDCONFIG, "Compiled agent is larger than the "
                           "registry slot (%zu bytes)", registry_slot_bytes(c->app->reg));
        goto out;
    }
    c->registry_touched = 1;
    c->out = json_object_new_object();
    json_object_object_add(c->out, "status", json_object_new_string("deployed"));
    json_object_object_add(c->out, "agent_id", json_object_new_string(rkey));
    util_rfc3339(now, when, sizeof(when));
    json_object_object_add(c->out, "deployed_at", json_object_new_string(when));
    json_object_object_add(c->out, "version", json_object_new_int64(n));
out:
    free(yaml);
    json_object_put(rec);
    return rc;
}

static int pause_txn(struct store *s, struct store_txn *t, void *arg)
{
    struct tx_ctx *c = arg;
    struct json_object *rec = NULL;
    char rkey[REGISTRY_KEY_MAX], when[32];
    int64_t now = util_now();
    int rc, st;

    (void)s;
    tx_reset(c);
    if ((rc = record_load(c->app, t, c->org, c->name, &rec, c->err)) != 0)
        goto out;
    st = status_of(rec);
    if (st != AGENT_DEPLOYED) {
        rc = st == AGENT_PAUSED
                 ? error_set(c->err, AM_EALREADYPAUSED, "Agent '%s' is already paused", c->name)
                 : error_set(c->err, AM_ETRANSITION,
                             "Agent '%s' is in draft state; only a deployed agent can be paused",
                             c->name);
        goto out;
    }
    json_object_object_add(rec, "status", json_object_new_string("paused"));
    json_object_object_add(rec, "paused_at", json_object_new_int64(now));
    if ((rc = record_save(c->app, t, c->org, c->name, rec, c->err)) != 0)
        goto out;
    (void)key_agent_id(rkey, sizeof(rkey), c->org, c->name);
    registry_unload(c->app->reg, rkey);
    c->registry_touched = 1;
    c->out = json_object_new_object();
    json_object_object_add(c->out, "status", json_object_new_string("paused"));
    util_rfc3339(now, when, sizeof(when));
    json_object_object_add(c->out, "paused_at", json_object_new_string(when));
out:
    json_object_put(rec);
    return rc;
}

/* Point rec at stored version vrec: its config, its number, a new edit
 * count; the rollback itself is recorded on the record. */
static void rollback_apply(struct tx_ctx *c, struct json_object *rec, struct json_object *vrec,
                           int64_t now)
{
    struct json_object *wc = NULL;
    const char *hash = str_field(vrec, "config_hash");

    json_object_object_get_ex(vrec, "wizard", &wc);
    json_object_object_add(rec, "rolled_back_from",
                           json_object_new_int64(int_field(rec, "live_version")));
    json_object_object_add(rec, "rolled_back_at", json_object_new_int64(now));
    json_object_object_add(rec, "rolled_back_by", c->by ? json_object_new_string(c->by) : NULL);
    record_set_wizard(rec, json_object_get(wc));
    json_object_object_add(rec, "version", json_object_new_int64(int_field(rec, "version") + 1));
    json_object_object_add(rec, "live_version", json_object_new_int64(c->target));
    json_object_object_add(rec, "live_hash", json_object_new_string(hash ? hash : ""));
    json_object_object_add(rec, "updated_at", json_object_new_int64(now));
}

static int rollback_txn(struct store *s, struct store_txn *t, void *arg)
{
    struct tx_ctx *c = arg;
    struct json_object *rec = NULL, *vrec = NULL, *wc;
    const char *refs[PROVIDER_COUNT];
    char rkey[REGISTRY_KEY_MAX], bufs[PROVIDER_COUNT][64], joined[256], *yaml = NULL;
    int64_t now = util_now();
    size_t len = 0;
    int rc, deployed;

    tx_reset(c);
    if ((rc = record_load(c->app, t, c->org, c->name, &rec, c->err)) != 0)
        goto out;
    rc = versions_load(s, t, c->org, c->name, c->target, &vrec);
    if (rc == AM_ENOENT) {
        rc = error_set(c->err, AM_EVERSIONNOTFOUND, "Agent '%s' has no version %lld", c->name,
                       (long long)c->target);
        goto out;
    }
    if (rc != 0)
        goto out;
    deployed = status_of(rec) == AGENT_DEPLOYED;
    rollback_apply(c, rec, vrec, now);
    json_object_object_get_ex(rec, "wizard", &wc);
    /* Deployed: the version's compilation (or a new one for today's key
     * refs). Otherwise only the config: still refused, with nothing
     * changed, when a provider it needs has no key any more. */
    rc = deployed ? ensure_compiled(c, t, rec, c->target, 1, vrec, joined, &yaml, &len, c->err)
                  : key_refs_for(c->app, t, c->org, wc, refs, bufs, joined, sizeof(joined), c->err);
    if (rc != 0 || (rc = record_save(c->app, t, c->org, c->name, rec, c->err)) != 0)
        goto out;
    if (deployed) {
        (void)key_agent_id(rkey, sizeof(rkey), c->org, c->name);
        rc = registry_load(c->app->reg, rkey, (uint64_t)int_field(rec, "version"),
                           int_field(rec, "deployed_at"), yaml, len, c->err);
        if (rc != 0)
            goto out;
        c->registry_touched = 1;
    }
    c->out = agent_view(c->org, rec, 1);
out:
    free(yaml);
    json_object_put(vrec);
    json_object_put(rec);
    return rc;
}

static int reconcile_key(struct app *app, const char *org, const char *name);

/* Run one transition; repair the registry if the commit failed after the
 * registry had already been changed. */
static int run_transition(struct tx_ctx *c, store_txn_fn fn, struct json_object **out)
{
    int rc = store_transact(c->app->store, fn, c);

    if (out != NULL)
        *out = NULL;
    if (rc != 0) {
        if (c->registry_touched)
            reconcile_key(c->app, c->org, c->name);
        if (c->err->code != rc)
            error_set(c->err, rc == AM_EDEADLOCK ? AM_EUNAVAILABLE : rc,
                      "Storage unavailable, retry");
        json_object_put(c->out);
        return c->err->code;
    }
    if (out != NULL)
        *out = c->out;
    else
        json_object_put(c->out);
    return 0;
}

int agent_update(struct app *app, const char *org, const char *name,
                 struct json_object *patch, struct json_object **out, struct am_error *err)
{
    struct tx_ctx c = { .app = app, .org = org, .name = name, .patch = patch, .err = err };
    int rc;

    if ((rc = wizard_validate_patch(patch, name, err)) != 0)
        return rc;
    return run_transition(&c, update_txn, out);
}

int agent_delete(struct app *app, const char *org, const char *name, struct am_error *err)
{
    struct tx_ctx c = { .app = app, .org = org, .name = name, .err = err };
    return run_transition(&c, delete_txn, NULL);
}

int agent_deploy(struct app *app, const char *org, const char *name, const char *by,
                 struct json_object **out, struct am_error *err)
{
    struct tx_ctx c = { .app = app, .org = org, .name = name, .err = err, .by = by };
    return run_transition(&c, deploy_txn, out);
}

int agent_pause(struct app *app, const char *org, const char *name,
                struct json_object **out, struct am_error *err)
{
    struct tx_ctx c = { .app = app, .org = org, .name = name, .err = err };
    return run_transition(&c, pause_txn, out);
}

/* ---- versions ------------------------------------------------------------- */

/* A version number from a path segment or a body: 1..VERSIONS_MAX, or -1. */
static int64_t version_number(const char *text)
{
    char *end;
    long long v;

    if (text == NULL || *text < '0' || *text > '9' || strlen(text) > 10)
        return -1;
    v = strtoll(text, &end, 10);
    return *end == '\0' && v >= 1 && v <= VERSIONS_MAX ? (int64_t)v : -1;
}

/* The body {"version":n}: n, or AM_EVALIDATION with details. */
static int64_t rollback_target(struct json_object *body, struct am_error *err)
{
    struct json_object *v = NULL;
    int64_t n = -1;

    error_set(err, AM_EVALIDATION, "Invalid rollback request");
    json_object_object_foreach(body, k, val) {
        (void)val;
        if (strcmp(k, "version") != 0)
            error_add_detail(err, k, "unknown field");
    }
    if (!json_object_object_get_ex(body, "version", &v) || v == NULL)
        error_add_detail(err, "version", "required");
    else if (!json_object_is_type(v, json_type_int) ||
             (n = json_object_get_int64(v)) < 1 || n > VERSIONS_MAX)
        error_add_detail(err, "version", "must be a positive integer");
    if (err->ndetails > 0)
        return AM_EVALIDATION;
    error_clear(err);
    return n;
}

int agent_rollback(struct app *app, const char *org, const char *name, const char *by,
                   struct json_object *body, struct json_object **out, struct am_error *err)
{
    struct tx_ctx c = { .app = app, .org = org, .name = name, .err = err, .by = by };

    *out = NULL;
    if ((c.target = rollback_target(body, err)) < 0)
        return (int)c.target;
    return run_transition(&c, rollback_txn, out);
}

/* The record of org/name read outside a transaction, for the reads. */
static int record_read(struct app *app, const char *org, const char *name,
                       struct json_object **rec, struct am_error *err)
{
    int rc = record_load(app, NULL, org, name, rec, err);

    return rc == AM_EDEADLOCK ? error_set(err, AM_EUNAVAILABLE, "Busy, retry") : rc;
}

int agent_versions(struct app *app, const char *org, const char *name, int limit,
                   int64_t before, struct json_object **out, struct am_error *err)
{
    struct json_object *rec = NULL, *arr = NULL;
    int rc;

    *out = NULL;
    if ((rc = record_read(app, org, name, &rec, err)) != 0)
        return rc;
    rc = versions_list(app->store, NULL, org, name, int_field(rec, "live_version"), limit,
                       before, &arr);
    json_object_put(rec);
    if (rc != 0)
        return error_set(err, rc == AM_EDEADLOCK ? AM_EUNAVAILABLE : rc, "Storage unavailable");
    *out = json_object_new_object();
    json_object_object_add(*out, "versions", arr);
    return 0;
}

/* Stored version `text` of org/name into *vrec, and the version the agent
 * is at into *live. */
static int version_read(struct app *app, const char *org, const char *name, const char *text,
                        struct json_object **vrec, int64_t *live, struct am_error *err)
{
    struct json_object *rec = NULL;
    int64_t n = version_number(text);
    int rc;

    *vrec = NULL;
    if ((rc = record_read(app, org, name, &rec, err)) != 0)
        return rc;
    *live = int_field(rec, "live_version");
    json_object_put(rec);
    rc = n < 0 ? AM_ENOENT : versions_load(app->store, NULL, org, name, n, vrec);
    if (rc == AM_ENOENT)
        return error_set(err, AM_EVERSIONNOTFOUND, "Agent '%s' has no version %s", name, text);
    if (rc != 0)
        return error_set(err, rc == AM_EDEADLOCK ? AM_EUNAVAILABLE : rc, "Storage unavailable");
    return 0;
}

int agent_version_get(struct app *app, const char *org, const char *name, const char *n,
                      struct json_object **out, struct am_error *err)
{
    struct json_object *vrec;
    int64_t live;
    int rc = version_read(app, org, name, n, &vrec, &live, err);

    *out = rc == 0 ? versions_view(vrec, live, 1) : NULL;
    json_object_put(vrec);
    return rc;
}

int agent_version_diff(struct app *app, const char *org, const char *name, const char *a,
                       const char *b, struct json_object **out, struct am_error *err)
{
    struct json_object *va = NULL, *vb = NULL, *wa = NULL, *wb = NULL;
    int64_t live;
    int rc;

    *out = NULL;
    if ((rc = version_read(app, org, name, a, &va, &live, err)) != 0 ||
        (rc = version_read(app, org, name, b, &vb, &live, err)) != 0)
        goto out;
    json_object_object_get_ex(va, "wizard", &wa);
    json_object_object_get_ex(vb, "wizard", &wb);
    *out = json_object_new_object();
    json_object_object_add(*out, "from", json_object_new_int64(int_field(va, "version")));
    json_object_object_add(*out, "to", json_object_new_int64(int_field(vb, "version")));
    json_object_object_add(*out, "changes", versions_diff(wa, wb));
out:
    json_object_put(va);
    json_object_put(vb);
    return rc;
}

int agent_yaml(struct app *app, const char *org, const char *name, char **yaml,
               size_t *len, struct am_error *err)
{
    struct json_object *rec = NULL, *comp = NULL, *wc;
    const char *refs[PROVIDER_COUNT], *y;
    char bufs[PROVIDER_COUNT][64], joined[256];
    int rc;

    *yaml = NULL;
    if ((rc = record_load(app, NULL, org, name, &rec, err)) != 0)
        return rc == AM_EDEADLOCK ? error_set(err, AM_EUNAVAILABLE, "Busy, retry") : rc;
    /* Deployed and paused agents show what the runtime loads (or loaded). */
    comp = compiled_load(app, NULL, org, name, &rc);
    rc = 0;
    if ((y = compiled_yaml(comp, int_field(rec, "version"))) != NULL) {
        *len = strlen(y);
        *yaml = xstrndup(y, *len);
        goto out;
    }
    /* A draft, or an edited paused agent: compile on the fly, even when
     * incomplete or when a provider key does not exist yet. */
    json_object_object_get_ex(rec, "wizard", &wc);
    if (key_refs_for(app, NULL, org, wc, refs, bufs, joined, sizeof(joined), NULL) != 0)
        memset(refs, 0, sizeof(refs));
    /* Numbered as the version a deploy would make live now. */
    {
        char hash[VERSIONS_HASH_HEX];
        int existing;
        versions_hash(wc, hash);
        rc = wizard_compile(wc, org, (uint64_t)deploy_version(rec, hash, &existing), refs,
                            app->cfg, yaml, len, err);
    }
out:
    json_object_put(comp);
    json_object_put(rec);
    return rc;
}

/* ---- reconcile ------------------------------------------------------------- */

struct reconcile_ctx {
    struct app *app;
    const char *org;
    const char *name;
    int changed;                /* OUT: 1 if the registry was changed */
};

static int reconcile_txn(struct store *s, struct store_txn *t, void *arg)
{
    struct reconcile_ctx *c = arg;
    struct json_object *rec = NULL, *comp = NULL;
    char rkey[REGISTRY_KEY_MAX];
    const char *yaml;
    uint64_t have;
    int rc, loaded;

    (void)s;
    c->changed = 0;
    (void)key_agent_id(rkey, sizeof(rkey), c->org, c->name);
    rc = record_load(c->app, t, c->org, c->name, &rec, NULL);
    if (rc != 0 && rc != AM_EAGENTNOTFOUND)
        return rc;
    rc = 0;   /* no record: the entry, if any, is stale */
    loaded = registry_contains(c->app->reg, rkey, &have);
    if (rec != NULL && status_of(rec) == AGENT_DEPLOYED)
        comp = compiled_load(c->app, t, c->org, c->name, &rc);
    if (rc != 0 && rc != AM_ENOENT)
        goto out;
    rc = 0;
    if ((yaml = compiled_yaml(comp, int_field(rec, "version"))) != NULL) {
        uint64_t version = (uint64_t)int_field(rec, "version");
        if (!loaded || have != version) {
            rc = registry_load(c->app->reg, rkey, version, int_field(rec, "deployed_at"),
                               yaml, strlen(yaml), NULL);
            c->changed = 1;
        }
    } else if (loaded) {
        registry_unload(c->app->reg, rkey);
        c->changed = 1;
    }
out:
    json_object_put(comp);
    json_object_put(rec);
    return rc;
}

static int reconcile_key(struct app *app, const char *org, const char *name)
{
    struct reconcile_ctx c = { app, org, name, 0 };
    int rc = store_transact(app->store, reconcile_txn, &c);

    return rc != 0 ? rc : c.changed;
}

struct name_list {
    char (*keys)[REGISTRY_KEY_MAX];   /* "org\0name" pairs, NUL-separated */
    size_t n, cap;
};

static void name_list_add(struct name_list *l, const char *org, size_t olen,
                          const char *name, size_t nlen)
{
    if (olen + nlen + 2 > REGISTRY_KEY_MAX)
        return;
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->keys = xrealloc(l->keys, l->cap * sizeof(*l->keys));
    }
    memcpy(l->keys[l->n], org, olen);
    l->keys[l->n][olen] = '\0';
    memcpy(l->keys[l->n] + olen + 1, name, nlen);
    l->keys[l->n][olen + 1 + nlen] = '\0';
    l->n++;
}

static int collect_record(const char *k, size_t kl, const char *v, size_t vl, void *arg)
{
    size_t olen = strnlen(k, kl);

    (void)v; (void)vl;
    if (olen < kl)
        name_list_add(arg, k, olen, k + olen + 1, kl - olen - 1);
    return 0;
}

static void collect_entry(const char *key, void *arg)
{
    const char *name;
    size_t olen;

    if (key_agent_id_split(key, &olen, &name) == 0)
        name_list_add(arg, key, olen, name, strlen(name));
}

int agent_reconcile(struct app *app, struct am_error *err)
{
    struct name_list l = { NULL, 0, 0 };
    size_t i;
    int rc, changed = 0;

    rc = store_scan(app->store, NULL, STORE_AGENTS, "", 0, collect_record, &l);
    if (rc == 0)
        registry_foreach(app->reg, collect_entry, &l);
    /* Keep going past a failed key (a full registry, say): every other
     * agent still deserves to be served. The first error is reported. */
    for (i = 0; i < l.n; i++) {
        const char *org = l.keys[i];
        int r = reconcile_key(app, org, org + strlen(org) + 1);
        if (r < 0 && rc == 0)
            rc = r;
        else if (r > 0)
            changed += r;
    }
    free(l.keys);
    if (rc != 0)
        return error_set(err, rc, "reconciling the registry with the database failed");
    return changed;
}

/* ---- invariants ----------------------------------------------------------------- */

/* Invariants 1 and 2 for one stored record ("org\0name" -> JSON). */
static int check_record(const char *k, size_t kl, const char *v, size_t vl, void *arg)
{
    struct app *app = arg;
    struct json_object *rec, *comp = NULL;
    char org[REGISTRY_KEY_MAX], rkey[REGISTRY_KEY_MAX];
    const char *name;
    size_t olen = strnlen(k, kl);
    uint64_t have = 0;
    int64_t version, live;
    int loaded, deployed, rc;

    (void)vl;
    if (olen >= kl || kl >= sizeof(org))
        invariant_fail("agent: stored key of %zu bytes is not \"org\\0name\"", kl);
    memcpy(org, k, kl);
    org[kl] = '\0';
    name = org + olen + 1;
    if ((rec = json_tokener_parse(v)) == NULL)
        invariant_fail("agent: stored record %s/%s is unreadable", org, name);
    version = int_field(rec, "version");
    deployed = status_of(rec) == AGENT_DEPLOYED;
    live = int_field(rec, "live_version");
    json_object_put(rec);
    if (deployed && live > 0 &&
        (rc = versions_load(app->store, NULL, org, name, live, &comp)) != 0)
        invariant_fail("agent 4: deployed %s/%s is at version %lld, which is not stored (%d)",
                       org, name, (long long)live, rc);
    json_object_put(comp);
    comp = NULL;
    (void)key_agent_id(rkey, sizeof(rkey), org, name);
    loaded = registry_contains(app->reg, rkey, &have);
    if (deployed && !loaded)
        invariant_fail("agent 1: %s is deployed but not in the registry", rkey);
    if (deployed && have != (uint64_t)version)
        invariant_fail("agent 1: %s is deployed at version %lld, the registry serves %llu", rkey,
                       (long long)version, (unsigned long long)have);
    if (!deployed && loaded)
        invariant_fail("agent 1: %s is not deployed but the registry serves it", rkey);
    if (deployed) {
        comp = compiled_load(app, NULL, org, name, &rc);
        if (compiled_yaml(comp, version) == NULL)
            invariant_fail("agent 2: deployed %s has no compilation of version %lld", rkey,
                           (long long)version);
        json_object_put(comp);
    }
    return 0;
}

/* Invariant 1 the other way: a registry entry has a record stored as deployed. */
static void check_entry(const char *key, void *arg)
{
    struct app *app = arg;
    char org[REGISTRY_KEY_MAX], pair[REGISTRY_KEY_MAX], *val = NULL;
    const char *name;
    struct json_object *rec;
    size_t olen, klen;
    int deployed = 0;

    if (key_agent_id_split(key, &olen, &name) != 0 || olen >= sizeof(org))
        invariant_fail("agent 1: registry key \"%s\" names no agent", key);
    memcpy(org, key, olen);
    org[olen] = '\0';
    klen = key_pair(pair, sizeof(pair), org, name);
    if (klen != 0 && store_get(app->store, NULL, STORE_AGENTS, pair, klen, 0, &val, NULL) == 0 &&
        (rec = json_tokener_parse(val)) != NULL) {
        deployed = status_of(rec) == AGENT_DEPLOYED;
        json_object_put(rec);
    }
    free(val);
    if (!deployed)
        invariant_fail("agent 1: the registry serves %s, which is not stored as deployed", key);
}

void agent_check_invariants(struct app *app)
{
    int rc = store_scan(app->store, NULL, STORE_AGENTS, "", 0, check_record, app);

    if (rc != 0)
        invariant_fail("agent: cannot read the stored agents (%d)", rc);
    registry_foreach(app->reg, check_entry, app);
}
