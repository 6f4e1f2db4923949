/*
 * agent_import.c - an Astromesh agent YAML back into a WizardConfig (the
 * import route), and the portable export.
 *
 * Owns: nothing long-lived. The mapping is the inverse of wizard_compile
 * for both variants agent_yaml emits (internal and portable), and reads a
 * hand-written upstream agent the same way: every key is checked against
 * what the WizardConfig can say, and each one it cannot is refused with its
 * YAML path ("spec.orchestration.pattern") as a validation detail; nothing
 * is silently dropped except what the server decides itself (versions,
 * namespaces, key references and variables, the memory backend, the
 * Ollama endpoint).
 *
 * Must not: log, touch the store (agent_create does), or accept a key: an
 * api_key in a model block is refused, never stored.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "control/agent_import.h"
#include "control/agent.h"
#include "control/wizard.h"
#include "runtime/agent_yaml.h"
#include "runtime/tools/tools.h"
#include "lib/util.h"
#include "lib/utf8.h"

#define IM_PATH_MAX 96

/* The mapping's state: the error, the WizardConfig's steps being built. */
struct im {
    struct am_error *err;
    int bad;
    struct json_object *wc, *step[6];   /* step[1..5]; [0] unused */
    int64_t max_tokens;                 /* step5.max_tokens seen, 0 = none */
};

static void im_bad(struct im *c, const char *path, const char *problem)
{
    if (!c->bad)
        error_set(c->err, AM_EVALIDATION, "The YAML says something a WizardConfig cannot");
    c->bad = 1;
    error_add_detail(c->err, path, problem);
}

static struct json_object *im_get(struct json_object *o, const char *key)
{
    struct json_object *v = NULL;

    if (!json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, key, &v))
        return NULL;
    return v;
}

static const char *im_str(struct json_object *o, const char *key)
{
    struct json_object *v = im_get(o, key);
    return json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

/* o must be a mapping (or absent) whose keys are all in keys[]. 0 when so. */
static int im_keys(struct im *c, struct json_object *o, const char *path,
                   const char *const keys[])
{
    char sub[IM_PATH_MAX];
    int i, ok = 1;

    if (o == NULL)
        return 0;
    if (!json_object_is_type(o, json_type_object)) {
        im_bad(c, path, "must be a mapping");
        return -1;
    }
    json_object_object_foreach(o, key, v) {
        (void)v;
        for (i = 0; keys[i] != NULL && strcmp(keys[i], key) != 0; i++)
            ;
        if (keys[i] == NULL) {
            (void)util_snprintf(sub, sizeof(sub), "%s.%s", path, key);
            im_bad(c, sub, "not supported by Astromesh Cloud");
            ok = 0;
        }
    }
    return ok ? 0 : -1;
}

/* step[n] key = v (takes v). */
static void im_set(struct im *c, int n, const char *key, struct json_object *v)
{
    json_object_object_add(c->step[n], key, v);
}

/* An integer at o.key in lo..hi (0 when absent); -1 after a detail. */
static int64_t im_int(struct im *c, struct json_object *o, const char *key, const char *path,
                      int64_t lo, int64_t hi)
{
    struct json_object *v = im_get(o, key);
    char sub[IM_PATH_MAX];
    int64_t n;

    if (v == NULL)
        return 0;
    n = json_object_get_int64(v);
    if (json_object_is_type(v, json_type_int) && n >= lo && n <= hi)
        return n;
    (void)util_snprintf(sub, sizeof(sub), "%s.%s", path, key);
    im_bad(c, sub, "must be an integer in range");
    return -1;
}

/* ---- metadata ------------------------------------------------------------- */

static void im_metadata(struct im *c, struct json_object *md)
{
    static const char *const keys[] = { "name", "version", "namespace", "labels", NULL };
    static const char *const labels[] = { AGENT_YAML_LABEL_NAME, AGENT_YAML_LABEL_BUDGET, NULL };
    const char *name = im_str(md, "name"), *own, *sep, *label;
    char mapped[AGENT_YAML_NAME_MAX];

    if (md == NULL || im_keys(c, md, "metadata", keys) != 0)
        return;
    (void)im_keys(c, im_get(md, "labels"), "metadata.labels", labels);
    if (name == NULL) {
        im_bad(c, "metadata.name", "required");
        return;
    }
    /* ours: "org__name"; portable: a mapped name whose original is a label */
    own = (sep = strstr(name, "__")) != NULL ? sep + 2 : name;
    label = im_str(im_get(md, "labels"), AGENT_YAML_LABEL_NAME);
    if (label != NULL) {
        agent_yaml_portable_name(label, "agent-", mapped, sizeof(mapped));
        if (strcmp(mapped, own) == 0)
            own = label;
    }
    if (!wizard_name_valid(own))
        im_bad(c, "metadata.name", "must be 1 to 63 of a-z, 0-9 and '-', not at either end");
    json_object_object_add(c->wc, "name", json_object_new_string(own));
}

static void im_identity(struct im *c, struct json_object *id)
{
    static const char *const keys[] = { "display_name", "description", NULL };
    const char *s;

    if (im_keys(c, id, "spec.identity", keys) != 0)
        return;
    if ((s = im_str(id, "display_name")) != NULL)
        json_object_object_add(c->wc, "display_name", json_object_new_string(s));
    if ((s = im_str(id, "description")) != NULL && s[0] != '\0')
        im_set(c, 2, "persona", json_object_new_string(s));
}

/* ---- model ------------------------------------------------------------------ */

/* One model block into step1's field ("model", "fallback_model"). */
static void im_model_entry(struct im *c, struct json_object *m, const char *which,
                           const char *field)
{
    static const char *const keys[] = {
        "provider", "source", "model", "endpoint", "api_key_env", "api_key_ref",
        "api_key", "max_tokens", "parameters", NULL };
    static const char *const params[] = { "max_tokens", NULL };
    const char *prov = im_str(m, "provider"), *model = im_str(m, "model");
    const char *ep = im_str(m, "endpoint");
    char path[IM_PATH_MAX], sub[IM_PATH_MAX], full[300];
    int p;
    int64_t mt;

    (void)util_snprintf(path, sizeof(path), "spec.model.%s", which);
    if (m == NULL || im_keys(c, m, path, keys) != 0)
        return;
    if (prov == NULL)
        prov = im_str(m, "source");
    (void)util_snprintf(sub, sizeof(sub), "%s.api_key", path);
    if (im_get(m, "api_key") != NULL)
        im_bad(c, sub, "keys are never imported: store it with POST /providers");
    (void)util_snprintf(sub, sizeof(sub), "%s.parameters", path);
    (void)im_keys(c, im_get(m, "parameters"), sub, params);
    /* openai_compat names its provider by endpoint; ollama's endpoint is the
     * server's own; any other endpoint cannot be said */
    p = agent_yaml_portable_provider(prov, ep);
    if (p >= 0 && p != PROVIDER_OLLAMA && ep != NULL && strcmp(prov, "openai_compat") != 0) {
        (void)util_snprintf(sub, sizeof(sub), "%s.endpoint", path);
        im_bad(c, sub, "a custom endpoint cannot be expressed");
    }
    (void)util_snprintf(sub, sizeof(sub), "%s.provider", path);
    if (p < 0) {
        im_bad(c, sub, ep != NULL ? "unknown provider at this endpoint" : "unknown provider");
        return;
    }
    (void)util_snprintf(sub, sizeof(sub), "%s.model", path);
    if (model == NULL) {
        im_bad(c, sub, "required");
        return;
    }
    (void)util_snprintf(full, sizeof(full), "%s/%s", config_provider_name(p), model);
    im_set(c, 1, field, json_object_new_string(full));
    mt = im_int(c, im_get(m, "parameters"), "max_tokens", sub, 1, 32768);
    if (mt == 0)
        mt = im_int(c, m, "max_tokens", path, 1, 32768);
    if (mt > 0 && c->max_tokens != 0 && c->max_tokens != mt)
        im_bad(c, sub, "max_tokens differs from the other model's");
    if (mt > 0)
        c->max_tokens = mt;
}

static void im_model(struct im *c, struct json_object *model)
{
    static const char *const keys[] = { "primary", "fallback", "routing", NULL };
    static const char *const routing[] = { "strategy", NULL };
    const char *s;
    int i;

    if (im_keys(c, model, "spec.model", keys) != 0)
        return;
    im_model_entry(c, im_get(model, "primary"), "primary", "model");
    im_model_entry(c, im_get(model, "fallback"), "fallback", "fallback_model");
    if (im_keys(c, im_get(model, "routing"), "spec.model.routing", routing) != 0 ||
        (s = im_str(im_get(model, "routing"), "strategy")) == NULL)
        return;
    for (i = 0; agent_yaml_routings[i] != NULL && strcmp(agent_yaml_routings[i], s) != 0; i++)
        ;
    if (agent_yaml_routings[i] == NULL)
        im_bad(c, "spec.model.routing.strategy", "not one of Astromesh Cloud's strategies");
    else
        im_set(c, 1, "routing_strategy", json_object_new_string(s));
}

/* ---- prompts, orchestration ------------------------------------------------ */

static void im_prompts(struct im *c, struct json_object *prompts)
{
    static const char *const keys[] = { "system", NULL };
    const char *system, *prompt, *tone;

    if (im_keys(c, prompts, "spec.prompts", keys) != 0 ||
        (system = im_str(prompts, "system")) == NULL)
        return;
    tone = wizard_split_system(system, &prompt);
    if (tone != NULL)
        im_set(c, 2, "tone", json_object_new_string(tone));
    if (prompt != NULL)
        im_set(c, 2, "system_prompt", json_object_new_string(prompt));
}

static void im_orchestration(struct im *c, struct json_object *o)
{
    static const char *const keys[] = { "pattern", "max_iterations", NULL };
    const char *pattern = im_str(o, "pattern");
    int64_t iter;

    if (im_keys(c, o, "spec.orchestration", keys) != 0)
        return;
    iter = im_int(c, o, "max_iterations", "spec.orchestration", 1, 1000);
    if (pattern == NULL)
        pattern = "react";      /* upstream's default */
    if (strcmp(pattern, "react") == 0 && iter == 1)
        pattern = "single_pass";
    else if (iter != 0 && iter != 10 && iter != -1)
        im_bad(c, "spec.orchestration.max_iterations", "only 10 (or 1 with react) is supported");
    if (strcmp(pattern, "single_pass") != 0 && strcmp(pattern, "react") != 0 &&
        strcmp(pattern, "plan_and_execute") != 0) {
        im_bad(c, "spec.orchestration.pattern",
               "only single_pass, react and plan_and_execute are supported");
        return;
    }
    im_set(c, 5, "orchestration", json_object_new_string(pattern));
}

/* ---- tools, memory ------------------------------------------------------- */

static void im_tools(struct im *c, struct json_object *tools)
{
    static const char *const keys[] = { "name", "type", "config", NULL };
    struct json_object *names = json_object_new_array(), *configs = json_object_new_object();
    char path[IM_PATH_MAX], sub[IM_PATH_MAX];
    size_t i, n = json_object_is_type(tools, json_type_array) ? json_object_array_length(tools) : 0;

    if (tools != NULL && !json_object_is_type(tools, json_type_array))
        im_bad(c, "spec.tools", "must be a list");
    for (i = 0; i < n; i++) {
        struct json_object *t = json_object_array_get_idx(tools, i), *cfg = im_get(t, "config");
        const char *name = im_str(t, "name"), *type = im_str(t, "type");

        (void)util_snprintf(path, sizeof(path), "spec.tools[%zu]", i);
        if (im_keys(c, t, path, keys) != 0)
            continue;
        (void)util_snprintf(sub, sizeof(sub), "%s.type", path);
        if (type != NULL && strcmp(type, "builtin") != 0)
            im_bad(c, sub, "only builtin tools are supported");
        (void)util_snprintf(sub, sizeof(sub), "%s.name", path);
        if (name == NULL || tools_from_name(name) < 0) {
            im_bad(c, sub, "not one of Astromesh Cloud's tools");
            continue;
        }
        json_object_array_add(names, json_object_new_string(name));
        (void)util_snprintf(sub, sizeof(sub), "%s.config", path);
        if (cfg != NULL && !json_object_is_type(cfg, json_type_object))
            im_bad(c, sub, "must be a mapping");
        else if (cfg != NULL && json_object_object_length(cfg) > 0)
            json_object_object_add(configs, name, json_object_get(cfg));
    }
    if (json_object_array_length(names) > 0)
        im_set(c, 3, "tools", names);
    else
        json_object_put(names);
    if (json_object_object_length(configs) > 0)
        im_set(c, 3, "tool_configs", configs);
    else
        json_object_put(configs);
}

static void im_memory(struct im *c, struct json_object *mem, struct json_object *labels)
{
    static const char *const keys[] = { "conversational", NULL };
    static const char *const conv_keys[] = {
        "backend", "strategy", "max_turns", "max_messages", "max_tokens", NULL };
    struct json_object *conv = im_get(mem, "conversational");
    const char *strategy = im_str(conv, "strategy"), *budget;
    int64_t n;

    if (im_keys(c, mem, "spec.memory", keys) != 0 ||
        im_keys(c, conv, "spec.memory.conversational", conv_keys) != 0)
        return;
    if (conv == NULL) {
        im_set(c, 4, "memory_type", json_object_new_string("none"));
        return;
    }
    im_set(c, 4, "memory_type", json_object_new_string("conversational"));
    if (strategy != NULL && strcmp(strategy, "token_budget") == 0) {
        im_set(c, 4, "memory_strategy", json_object_new_string(strategy));
        n = im_int(c, conv, "max_tokens", "spec.memory.conversational", 100, 200000);
        budget = im_str(labels, AGENT_YAML_LABEL_BUDGET);
        if (n == 0 && budget != NULL)
            n = strtoll(budget, NULL, 10);
        if (n > 0)
            im_set(c, 4, "token_budget", json_object_new_int64(n));
        return;
    }
    if (strategy != NULL && strcmp(strategy, "sliding_window") != 0) {
        im_bad(c, "spec.memory.conversational.strategy",
               "only sliding_window and token_budget are supported");
        return;
    }
    im_set(c, 4, "memory_strategy", json_object_new_string("sliding_window"));
    /* both count messages; the WizardConfig's window counts turns of two */
    n = im_int(c, conv, "max_messages", "spec.memory.conversational", 1, 200);
    if (n == 0)
        n = im_int(c, conv, "max_turns", "spec.memory.conversational", 1, 200);
    if (n > 0)
        im_set(c, 4, "window_size", json_object_new_int64((n + 1) / 2));
}

/* ---- guardrails ------------------------------------------------------------ */

/* One list; output lists take no max_length. */
static void im_guardrail_list(struct im *c, struct json_object *list, const char *which,
                              const char *field)
{
    static const char *const keys[] = { "type", "action", "max_chars", "max_tokens_per_turn",
                                         NULL };
    struct json_object *names = json_object_new_array();
    char path[IM_PATH_MAX], sub[IM_PATH_MAX];
    size_t i, n = json_object_is_type(list, json_type_array) ? json_object_array_length(list) : 0;
    int64_t v;

    (void)util_snprintf(path, sizeof(path), "spec.guardrails.%s", which);
    if (list != NULL && !json_object_is_type(list, json_type_array))
        im_bad(c, path, "must be a list");
    for (i = 0; i < n; i++) {
        struct json_object *g = json_object_array_get_idx(list, i);
        const char *type = im_str(g, "type"), *action = im_str(g, "action"), *want = NULL;

        (void)util_snprintf(path, sizeof(path), "spec.guardrails.%s[%zu]", which, i);
        if (im_keys(c, g, path, keys) != 0)
            continue;
        (void)util_snprintf(sub, sizeof(sub), "%s.type", path);
        if (type != NULL && strcmp(type, "pii_detection") == 0) {
            json_object_array_add(names, json_object_new_string("pii_filter"));
            want = "redact";
        } else if (type != NULL && strcmp(type, "content_filter") == 0) {
            json_object_array_add(names, json_object_new_string("content_safety"));
            want = "block";
        } else if (type != NULL && strcmp(type, "max_length") == 0 && field[0] == 'i') {
            json_object_array_add(names, json_object_new_string("max_length"));
            if ((v = im_int(c, g, "max_chars", path, 1, 32768)) > 0)
                im_set(c, 5, "max_input_chars", json_object_new_int64(v));
        } else if (type != NULL && strcmp(type, "cost_limit") == 0) {
            v = im_int(c, g, "max_tokens_per_turn", path, 1, 32768);
            if (v > 0 && c->max_tokens != 0 && v != c->max_tokens)
                im_bad(c, sub, "max_tokens_per_turn differs from the model's max_tokens");
            else if (v > 0)
                c->max_tokens = v;
        } else {
            im_bad(c, sub, "not a guardrail Astromesh Cloud has here");
        }
        (void)util_snprintf(sub, sizeof(sub), "%s.action", path);
        if (action != NULL && (want == NULL || strcmp(action, want) != 0))
            im_bad(c, sub, "this guardrail's action cannot be changed");
    }
    if (json_object_array_length(names) > 0)
        im_set(c, 5, field, names);
    else
        json_object_put(names);
}

static void im_guardrails(struct im *c, struct json_object *g)
{
    static const char *const keys[] = { "input", "output", NULL };

    if (im_keys(c, g, "spec.guardrails", keys) != 0)
        return;
    im_guardrail_list(c, im_get(g, "input"), "input", "input_guardrails");
    im_guardrail_list(c, im_get(g, "output"), "output", "output_guardrails");
}

/* ---- the document --------------------------------------------------------- */

static void im_document(struct im *c, struct json_object *root)
{
    static const char *const top[] = { "apiVersion", "kind", "metadata", "spec", NULL };
    static const char *const spec_keys[] = {
        "identity", "model", "prompts", "orchestration", "tools", "memory", "guardrails", NULL };
    const char *s;
    struct json_object *spec = im_get(root, "spec");

    if (im_keys(c, root, "body", top) != 0 && !json_object_is_type(root, json_type_object))
        return;
    if ((s = im_str(root, "apiVersion")) == NULL || strcmp(s, "astromesh/v1") != 0)
        im_bad(c, "apiVersion", "must be astromesh/v1");
    if ((s = im_str(root, "kind")) == NULL || strcmp(s, "Agent") != 0)
        im_bad(c, "kind", "must be Agent");
    im_metadata(c, im_get(root, "metadata"));
    if (im_get(root, "metadata") == NULL)
        im_bad(c, "metadata", "required");
    if (spec == NULL) {
        im_bad(c, "spec", "required");
        return;
    }
    if (im_keys(c, spec, "spec", spec_keys) != 0 && !json_object_is_type(spec, json_type_object))
        return;
    im_identity(c, im_get(spec, "identity"));
    im_model(c, im_get(spec, "model"));
    im_prompts(c, im_get(spec, "prompts"));
    im_orchestration(c, im_get(spec, "orchestration"));
    im_tools(c, im_get(spec, "tools"));
    im_memory(c, im_get(spec, "memory"), im_get(im_get(root, "metadata"), "labels"));
    im_guardrails(c, im_get(spec, "guardrails"));
    if (c->max_tokens > 0)
        im_set(c, 5, "max_tokens", json_object_new_int64(c->max_tokens));
}

int agent_import_wizard(const char *yaml, size_t len, struct json_object **wc,
                        struct am_error *err)
{
    struct json_object *root = NULL;
    struct im c;
    char key[8];
    int i, rc;

    *wc = NULL;
    if ((rc = agent_yaml_parse(yaml, len, &root, err)) != 0)
        return rc;
    memset(&c, 0, sizeof(c));
    c.err = err;
    c.wc = json_object_new_object();
    for (i = 1; i <= 5; i++)
        c.step[i] = json_object_new_object();
    im_document(&c, root);
    for (i = 1; i <= 5; i++) {
        (void)util_snprintf(key, sizeof(key), "step%d", i);
        if (json_object_object_length(c.step[i]) > 0)
            json_object_object_add(c.wc, key, c.step[i]);
        else
            json_object_put(c.step[i]);
    }
    json_object_put(root);
    if (c.bad) {
        json_object_put(c.wc);
        return err->code;
    }
    *wc = c.wc;
    return 0;
}

/* The one string policy (lib/utf8.h) on every string of the document as
 * YAML decodes it ("\0" and "\a" escapes included), before the mapping
 * copies any into a C string that a NUL would cut. Returns 0, or
 * AM_EBADREQ naming the document's field; a YAML error is the parser's. */
static int import_strings_ok(const char *yaml, size_t len, struct am_error *err)
{
    struct json_object *root = NULL;
    char field[128];
    const char *problem;
    int rc;

    if ((rc = agent_yaml_parse(yaml, len, &root, err)) != 0)
        return rc;
    if (utf8_check_json(root, UTF8_MULTILINE, field, sizeof(field), &problem) != 0)
        rc = error_set(err, AM_EBADREQ, "Field '%s' %s", field, problem);
    json_object_put(root);
    return rc;
}

int agent_import(struct app *app, const char *org, const char *yaml, size_t len,
                 struct json_object **out, struct am_error *err)
{
    struct json_object *wc = NULL;
    int rc;

    *out = NULL;
    if ((rc = import_strings_ok(yaml, len, err)) != 0 ||
        (rc = agent_import_wizard(yaml, len, &wc, err)) != 0)
        return rc;
    {   /* the wizard's own fields, with their rules (a one-line display_name) */
        char field[128];
        const char *problem;
        if (utf8_check_json(wc, 0, field, sizeof(field), &problem) != 0) {
            json_object_put(wc);
            return error_set(err, AM_EBADREQ, "Field '%s' %s", field, problem);
        }
    }
    rc = agent_create(app, org, wc, out, err);
    json_object_put(wc);
    return rc;
}

int agent_export_portable(struct app *app, const char *org, const char *name, char **yaml,
                          size_t *len, struct am_error *err)
{
    struct agent_yaml_doc doc;
    char *internal = NULL;
    size_t ilen = 0;
    int rc;

    *yaml = NULL;
    *len = 0;
    memset(&doc, 0, sizeof(doc));
    if ((rc = agent_yaml(app, org, name, &internal, &ilen, err)) != 0)
        return rc;
    if ((rc = agent_yaml_load_draft(internal, ilen, &doc, err)) != 0)
        goto out;
    rc = agent_yaml_emit_portable(&doc, yaml, len, err);
out:
    agent_yaml_doc_clear(&doc);
    free(internal);
    return rc;
}
