/*
 * runtime.c - load a compiled agent and run the pipeline.
 *
 * Owns: a per-thread cache of parsed agents keyed by registry key and
 * generation (a redeploy changes the generation, so a stale parse is never
 * used), and a per-process circuit breaker per provider/model.
 *
 * The pipeline, in order (each step is another module's job):
 *   input guardrails (guardrails) -> memory load (memory) -> prompt ->
 *   model router: primary, then fallback (providers) -> tool loop under
 *   the orchestration pattern (tools) -> output guardrails -> memory save.
 * Accounting (usage) is the caller's (routes), so `test` can skip it.
 *
 * Must never: log; put an API key anywhere but the provider request.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>
#include "state/config.h"
#include "runtime/guardrails.h"
#include "runtime/memory.h"
#include "runtime/providers/providers.h"
#include "state/registry.h"
#include "runtime/runtime.h"
#include "runtime/tools/tools.h"
#include "lib/key.h"
#include "lib/util.h"

#define YAML_DEPTH_MAX 32
#define AGENT_CACHE_SLOTS 8

enum pattern { PATTERN_SINGLE = 0, PATTERN_REACT, PATTERN_PLAN };
enum routing { ROUTE_COST = 0, ROUTE_LATENCY, ROUTE_QUALITY, ROUTE_ROUND_ROBIN };

struct model_ref {
    int present;
    int provider;                /* enum config_provider */
    char model[129];
    char key_ref[96];            /* "server:openai", "org:acme/openai" or "" */
    int max_tokens;              /* 0 = provider default */
};

/* An agent as the pipeline uses it, parsed from its compiled YAML. */
struct agent_rt {
    char key[REGISTRY_KEY_MAX];
    uint64_t generation;
    struct model_ref primary, fallback;
    int routing;                 /* enum routing */
    char *system;                /* tone sentence + system prompt */
    char *persona;               /* identity.description or NULL */
    int pattern;                 /* enum pattern */
    int max_iterations;
    int tools[TOOL_COUNT];
    int ntools;
    struct json_object *tool_config[TOOL_COUNT];  /* owned, {} when none */
    int memory_on;
    int memory_strategy;         /* enum memory_strategy */
    int memory_limit;            /* messages or tokens */
    int in_pii, in_content, in_max_chars;   /* in_max_chars 0 = no cap */
    int out_pii, out_content, out_max_tokens;
};

static void agent_rt_free(struct agent_rt *a)
{
    int i;

    if (a == NULL)
        return;
    free(a->system);
    free(a->persona);
    for (i = 0; i < TOOL_COUNT; i++)
        json_object_put(a->tool_config[i]);
    free(a);
}

/* ---- YAML to json-c -------------------------------------------------------- */

/* A plain scalar that looks like an integer or a boolean becomes one;
 * quoted scalars stay strings (our emitter quotes anything ambiguous). */
static struct json_object *scalar_to_json(const yaml_event_t *ev)
{
    const char *v = (const char *)ev->data.scalar.value;
    size_t len = ev->data.scalar.length;
    char *end;
    long long n;

    if (ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && len > 0) {
        if (strcmp(v, "true") == 0)
            return json_object_new_boolean(1);
        if (strcmp(v, "false") == 0)
            return json_object_new_boolean(0);
        n = strtoll(v, &end, 10);
        if (*end == '\0' && len < 19)
            return json_object_new_int64(n);
    }
    return json_object_new_string_len(v, (int)len);
}

/* Parse the next node (the event just read is its first). */
static struct json_object *yaml_node(yaml_parser_t *p, yaml_event_t *ev, int depth)
{
    struct json_object *o = NULL, *child;
    yaml_event_t next;
    char *key;

    if (depth > YAML_DEPTH_MAX)
        return NULL;
    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        return scalar_to_json(ev);
    case YAML_SEQUENCE_START_EVENT:
        o = json_object_new_array();
        for (;;) {
            if (!yaml_parser_parse(p, &next))
                goto fail;
            if (next.type == YAML_SEQUENCE_END_EVENT) {
                yaml_event_delete(&next);
                return o;
            }
            child = yaml_node(p, &next, depth + 1);
            yaml_event_delete(&next);
            if (child == NULL)
                goto fail;
            json_object_array_add(o, child);
        }
    case YAML_MAPPING_START_EVENT:
        o = json_object_new_object();
        for (;;) {
            if (!yaml_parser_parse(p, &next))
                goto fail;
            if (next.type == YAML_MAPPING_END_EVENT) {
                yaml_event_delete(&next);
                return o;
            }
            if (next.type != YAML_SCALAR_EVENT) {
                yaml_event_delete(&next);
                goto fail;
            }
            key = xstrdup((const char *)next.data.scalar.value);
            yaml_event_delete(&next);
            if (!yaml_parser_parse(p, &next)) {
                free(key);
                goto fail;
            }
            child = yaml_node(p, &next, depth + 1);
            yaml_event_delete(&next);
            if (child == NULL) {
                free(key);
                goto fail;
            }
            json_object_object_add(o, key, child);
            free(key);
        }
    default:
        return NULL;
    }
fail:
    json_object_put(o);
    return NULL;
}

static struct json_object *yaml_to_json(const char *text, size_t len)
{
    yaml_parser_t p;
    yaml_event_t ev;
    struct json_object *root = NULL;
    int done = 0, tried = 0;

    if (!yaml_parser_initialize(&p))
        return NULL;
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    while (!done && yaml_parser_parse(&p, &ev)) {
        if (ev.type == YAML_MAPPING_START_EVENT && !tried) {
            tried = 1;
            root = yaml_node(&p, &ev, 0);
        }
        done = ev.type == YAML_STREAM_END_EVENT || ev.type == YAML_NO_EVENT ||
               (tried && root == NULL);
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&p);
    return root;
}

/* ---- the compiled YAML to struct agent_rt ---------------------------------- */

/* Walk a dotted path of object keys ("spec.model.primary"). */
static struct json_object *at(struct json_object *o, const char *path)
{
    char buf[128], *save = NULL, *k;

    util_strlcpy(buf, path, sizeof(buf));
    for (k = strtok_r(buf, ".", &save); k != NULL && o != NULL; k = strtok_r(NULL, ".", &save))
        if (!json_object_object_get_ex(o, k, &o))
            return NULL;
    return o;
}

static const char *str_at(struct json_object *o, const char *path)
{
    struct json_object *v = at(o, path);
    return v != NULL && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

static int int_at(struct json_object *o, const char *path, int dflt)
{
    struct json_object *v = at(o, path);
    return v != NULL && json_object_is_type(v, json_type_int) ? json_object_get_int(v) : dflt;
}

static int word_index(const char *s, const char *const words[], int n, int dflt)
{
    int i;

    for (i = 0; s != NULL && i < n; i++)
        if (strcmp(s, words[i]) == 0)
            return i;
    return dflt;
}

static int model_from(struct json_object *m, struct model_ref *out)
{
    const char *prov = str_at(m, "provider"), *model = str_at(m, "model"), *ref;

    memset(out, 0, sizeof(*out));
    if (m == NULL)
        return 0;
    if (prov == NULL || model == NULL || (out->provider = config_provider_from_name(prov)) < 0)
        return -1;
    util_strlcpy(out->model, model, sizeof(out->model));
    if ((ref = str_at(m, "api_key_ref")) != NULL)
        util_strlcpy(out->key_ref, ref, sizeof(out->key_ref));
    out->max_tokens = int_at(m, "parameters.max_tokens", 0);
    out->present = 1;
    return 0;
}

static void guardrails_from(struct json_object *list, int *pii, int *content, int *num,
                            const char *num_type, const char *num_key)
{
    size_t i;

    for (i = 0; list != NULL && i < json_object_array_length(list); i++) {
        struct json_object *g = json_object_array_get_idx(list, i);
        const char *type = str_at(g, "type");
        if (type == NULL)
            continue;
        if (strcmp(type, "pii_detection") == 0)
            *pii = 1;
        else if (strcmp(type, "content_filter") == 0)
            *content = 1;
        else if (strcmp(type, num_type) == 0)
            *num = int_at(g, num_key, 0);
    }
}

static void tools_from(struct json_object *list, struct agent_rt *a)
{
    size_t i;

    for (i = 0; list != NULL && i < json_object_array_length(list) && a->ntools < TOOL_COUNT; i++) {
        struct json_object *t = json_object_array_get_idx(list, i), *cfg;
        int id = tools_from_name(str_at(t, "name"));
        if (id < 0 || a->tool_config[id] != NULL)
            continue;
        cfg = at(t, "config");
        a->tool_config[id] = cfg != NULL && json_object_is_type(cfg, json_type_object)
                                 ? json_object_get(cfg) : json_object_new_object();
        a->tools[a->ntools++] = id;
    }
}

/* Parse a compiled agent. Returns NULL if the YAML is not one. */
static struct agent_rt *agent_parse(const char *key, uint64_t generation, const char *yaml,
                                    size_t len)
{
    static const char *const patterns[] = { "single_pass", "react", "plan_and_execute" };
    static const char *const routings[] = { "cost_optimized", "latency_optimized",
                                            "quality_first", "round_robin" };
    struct json_object *doc = yaml_to_json(yaml, len), *spec;
    struct agent_rt *a = NULL;
    const char *s;

    if (doc == NULL || (spec = at(doc, "spec")) == NULL)
        goto out;
    a = xcalloc(1, sizeof(*a));
    util_strlcpy(a->key, key, sizeof(a->key));
    a->generation = generation;
    if (model_from(at(spec, "model.primary"), &a->primary) != 0 || !a->primary.present ||
        model_from(at(spec, "model.fallback"), &a->fallback) != 0) {
        agent_rt_free(a);
        a = NULL;
        goto out;
    }
    a->routing = word_index(str_at(spec, "model.routing.strategy"), routings, 4, ROUTE_COST);
    a->system = xstrdup((s = str_at(spec, "prompts.system")) != NULL ? s : "");
    a->persona = (s = str_at(spec, "identity.description")) != NULL ? xstrdup(s) : NULL;
    a->pattern = word_index(str_at(spec, "orchestration.pattern"), patterns, 3, PATTERN_SINGLE);
    a->max_iterations = int_at(spec, "orchestration.max_iterations", 10);
    if (a->max_iterations < 1 || a->max_iterations > 50)
        a->max_iterations = 10;
    tools_from(at(spec, "tools"), a);
    if (at(spec, "memory.conversational") != NULL) {
        a->memory_on = 1;
        s = str_at(spec, "memory.conversational.strategy");
        a->memory_strategy = s != NULL && strcmp(s, "token_budget") == 0
                                 ? MEMORY_TOKEN_BUDGET : MEMORY_SLIDING_WINDOW;
        a->memory_limit = a->memory_strategy == MEMORY_TOKEN_BUDGET
                              ? int_at(spec, "memory.conversational.max_tokens", 4000)
                              : int_at(spec, "memory.conversational.max_turns", 40);
    }
    guardrails_from(at(spec, "guardrails.input"), &a->in_pii, &a->in_content, &a->in_max_chars,
                    "max_length", "max_chars");
    guardrails_from(at(spec, "guardrails.output"), &a->out_pii, &a->out_content,
                    &a->out_max_tokens, "cost_limit", "max_tokens_per_turn");
out:
    json_object_put(doc);
    return a;
}

/* The parsed agent for key, from this thread's cache or the registry.
 * Borrowed: valid until this thread's next call. NULL if not deployed. */
static __thread struct agent_rt *agent_cache[AGENT_CACHE_SLOTS];
static __thread unsigned agent_cache_next;

static struct agent_rt *agent_lookup(struct registry *reg, const char *key, int *corrupt)
{
    struct registry_agent ra;
    struct agent_rt *a;
    int i;

    *corrupt = 0;
    memset(&ra, 0, sizeof(ra));
    if (registry_get(reg, key, &ra) != 0)
        return NULL;
    for (i = 0; i < AGENT_CACHE_SLOTS; i++) {
        a = agent_cache[i];
        if (a != NULL && a->generation == ra.generation && strcmp(a->key, key) == 0) {
            registry_agent_clear(&ra);
            return a;
        }
    }
    a = agent_parse(key, ra.generation, ra.yaml, ra.yaml_len);
    registry_agent_clear(&ra);
    if (a == NULL) {
        *corrupt = 1;
        return NULL;
    }
    i = (int)(agent_cache_next++ % AGENT_CACHE_SLOTS);
    agent_rt_free(agent_cache[i]);
    agent_cache[i] = a;
    return a;
}

/* ---- circuit breaker and latency, per process ------------------------------ */

#define BREAKER_SLOTS 64

struct breaker {
    int provider;                /* -1 = unused */
    char model[129];
    int fails;                   /* consecutive failures */
    uint64_t open_until_ms;      /* monotonic ms; 0 = closed */
    uint64_t ewma_ms;            /* smoothed latency of successes, 0 = none yet */
};

static pthread_mutex_t breaker_lock = PTHREAD_MUTEX_INITIALIZER;
static struct breaker breakers[BREAKER_SLOTS];
static int breakers_used;
static unsigned long round_robin_turn;

static struct breaker *breaker_of(int provider, const char *model)
{
    int i;

    for (i = 0; i < breakers_used; i++)
        if (breakers[i].provider == provider && strcmp(breakers[i].model, model) == 0)
            return &breakers[i];
    if (breakers_used == BREAKER_SLOTS)
        return NULL;
    i = breakers_used++;
    memset(&breakers[i], 0, sizeof(breakers[i]));
    breakers[i].provider = provider;
    util_strlcpy(breakers[i].model, model, sizeof(breakers[i].model));
    return &breakers[i];
}

/* 1 if the provider/model is cooling down after repeated failures. */
static int breaker_is_open(const struct model_ref *m, uint64_t *ewma)
{
    struct breaker *b;
    int open = 0;

    pthread_mutex_lock(&breaker_lock);
    b = breaker_of(m->provider, m->model);
    if (b != NULL) {
        open = b->open_until_ms > util_monotonic_ms();
        if (ewma != NULL)
            *ewma = b->ewma_ms;
    }
    pthread_mutex_unlock(&breaker_lock);
    return open;
}

static void breaker_record(const struct config *cfg, const struct model_ref *m, int ok,
                           uint64_t ms)
{
    struct breaker *b;

    pthread_mutex_lock(&breaker_lock);
    if ((b = breaker_of(m->provider, m->model)) != NULL) {
        if (ok) {
            b->fails = 0;
            b->open_until_ms = 0;
            /* never 0: 0 means "no sample yet" to route_order */
            b->ewma_ms = b->ewma_ms ? (b->ewma_ms * 7 + ms) / 8 : ms;
            if (b->ewma_ms == 0)
                b->ewma_ms = 1;
        } else if (++b->fails >= cfg->breaker_failures) {
            b->open_until_ms = util_monotonic_ms() + (uint64_t)cfg->breaker_cooldown_ms;
            b->fails = 0;
        }
    }
    pthread_mutex_unlock(&breaker_lock);
}

/* ---- one run's state --------------------------------------------------------- */

struct run {
    struct app *app;
    const struct agent_rt *agent;
    struct runtime_result *res;
    struct providers_message *msgs;   /* the conversation sent to the model */
    size_t nmsgs, capmsgs;
    char **owned;                     /* strings the messages point into */
    size_t nowned, capowned;
    struct providers_response *resps; /* kept alive: messages point at their calls */
    size_t nresps, capresps;
    int last_timeout;                 /* the last provider failure was a timeout */
};

static const char *run_own(struct run *r, char *s)
{
    if (r->nowned == r->capowned) {
        r->capowned = r->capowned ? 2 * r->capowned : 16;
        r->owned = xrealloc(r->owned, r->capowned * sizeof(*r->owned));
    }
    r->owned[r->nowned++] = s;
    return s;
}

static struct providers_message *run_push(struct run *r, const char *role, const char *content)
{
    struct providers_message *m;

    if (r->nmsgs == r->capmsgs) {
        r->capmsgs = r->capmsgs ? 2 * r->capmsgs : 16;
        r->msgs = xrealloc(r->msgs, r->capmsgs * sizeof(*r->msgs));
    }
    m = &r->msgs[r->nmsgs++];
    memset(m, 0, sizeof(*m));
    m->role = role;
    m->content = content != NULL ? run_own(r, xstrdup(content)) : NULL;
    return m;
}

static void run_free(struct run *r)
{
    size_t i;

    for (i = 0; i < r->nowned; i++)
        free(r->owned[i]);
    for (i = 0; i < r->nresps; i++)
        providers_response_free(&r->resps[i]);
    free(r->owned);
    free(r->msgs);
    free(r->resps);
}

static struct providers_response *run_new_response(struct run *r)
{
    if (r->nresps == r->capresps) {
        r->capresps = r->capresps ? 2 * r->capresps : 8;
        r->resps = xrealloc(r->resps, r->capresps * sizeof(*r->resps));
    }
    memset(&r->resps[r->nresps], 0, sizeof(r->resps[0]));
    return &r->resps[r->nresps++];
}

/* ---- the model router ---------------------------------------------------------- */

static const char *api_key_of(const struct config *cfg, const struct model_ref *m)
{
    if (strncmp(m->key_ref, "server:", 7) == 0)
        return cfg->providers[m->provider].api_key;
    return "";   /* echo, ollama; org keys arrive with the tenancy milestone */
}

/* Candidates in the order to try: primary then fallback, except that
 * round_robin alternates and latency_optimized puts the one measured
 * faster first once both have answered before. */
static int route_order(const struct agent_rt *a, const struct model_ref *order[2])
{
    uint64_t lp = 0, lf = 0;
    int n = 1;

    order[0] = &a->primary;
    order[1] = NULL;
    if (!a->fallback.present)
        return 1;
    order[1] = &a->fallback;
    n = 2;
    if (a->routing == ROUTE_ROUND_ROBIN &&
        (__atomic_fetch_add(&round_robin_turn, 1, __ATOMIC_RELAXED) & 1)) {
        order[0] = &a->fallback;
        order[1] = &a->primary;
    } else if (a->routing == ROUTE_LATENCY) {
        breaker_is_open(&a->primary, &lp);
        breaker_is_open(&a->fallback, &lf);
        if (lp && lf && lf < lp) {
            order[0] = &a->fallback;
            order[1] = &a->primary;
        }
    }
    return n;
}

/* One model call through the router. msgs/n is the conversation; tools
 * are offered when with_tools. On 0, *out is a response owned by the run. */
static int route_chat(struct run *r, const struct providers_message *msgs, size_t n,
                      int with_tools, struct providers_response **out, struct am_error *err)
{
    const struct config *cfg = r->app->cfg;
    const struct agent_rt *a = r->agent;
    const struct model_ref *order[2];
    struct providers_tool tools[TOOL_COUNT];
    struct providers_request req;
    struct providers_response *resp;
    int i, ncand = route_order(a, order), tried = 0, rc = AM_EPROVIDER;

    for (i = 0; i < a->ntools; i++) {
        tools[i].name = tools_name(a->tools[i]);
        tools[i].description = tools_description(a->tools[i]);
        tools[i].parameters = tools_parameters(a->tools[i]);
    }
    for (i = 0; i < ncand; i++) {
        const struct model_ref *m = order[i];
        uint64_t t0;

        if (breaker_is_open(m, NULL))
            continue;
        tried++;
        memset(&req, 0, sizeof(req));
        req.provider = m->provider;
        req.model = m->model;
        req.base_url = cfg->providers[m->provider].base_url;
        req.api_key = api_key_of(cfg, m);
        req.timeout_ms = cfg->providers[m->provider].timeout_ms;
        req.max_tokens = m->max_tokens;
        req.messages = msgs;
        req.nmessages = n;
        req.tools = with_tools && a->ntools > 0 ? tools : NULL;
        req.ntools = with_tools ? (size_t)a->ntools : 0;
        resp = run_new_response(r);
        error_clear(err);
        providers_init();    /* once per process; not part of any model's latency */
        t0 = util_monotonic_ms();
        r->res->provider_called = 1;
        rc = providers_chat(&req, resp, err);
        breaker_record(cfg, m, rc == 0, util_monotonic_ms() - t0);
        if (rc == 0) {
            r->res->tokens_used += resp->prompt_tokens + resp->completion_tokens;
            snprintf(r->res->model, sizeof(r->res->model), "%s/%s",
                     config_provider_name(m->provider), m->model);
            *out = resp;
            return 0;
        }
        r->last_timeout = rc == AM_ETIMEOUT;
    }
    if (tried == 0)
        return error_set(err, AM_EPROVIDER,
                         "Every model of this agent is cooling down after repeated failures");
    return rc;
}

/* ---- tools and orchestration ------------------------------------------------- */

/* text_summarizer and translator ask the agent's own models. */
static int llm_subcall(void *arg, const char *system, const char *prompt, char **answer,
                       struct am_error *err)
{
    struct run *r = arg;
    struct providers_message m[2];
    struct providers_response *resp;
    int rc;

    memset(m, 0, sizeof(m));
    m[0].role = "system";
    m[0].content = system;
    m[1].role = "user";
    m[1].content = prompt;
    rc = route_chat(r, m, 2, 0, &resp, err);
    if (rc == 0)
        *answer = xstrdup(resp->content != NULL ? resp->content : "");
    return rc;
}

static int agent_has_tool(const struct agent_rt *a, int id)
{
    return id >= 0 && a->tool_config[id] != NULL;
}

/* Answer each tool call of resp with a "tool" message. */
static void run_tools(struct run *r, const struct providers_response *resp)
{
    const struct config *cfg = r->app->cfg;
    struct tools_settings ts = { cfg->web_search_url, cfg->smtp_url, cfg->smtp_from,
                                 cfg->file_root, cfg->tool_http_timeout_ms,
                                 (size_t)cfg->tool_http_max_bytes };
    size_t i;

    for (i = 0; i < resp->ncalls; i++) {
        const struct providers_tool_call *call = &resp->calls[i];
        int id = tools_from_name(call->name);
        struct providers_message *m;
        char *result = NULL;

        if (!agent_has_tool(r->agent, id)) {
            result = xstrdup("{\"error\":\"this agent has no such tool\"}");
        } else {
            struct tools_ctx ctx = { &ts, r->agent->tool_config[id], llm_subcall, r };
            if (tools_call(id, call->arguments ? call->arguments : "{}", &ctx, &result) != 0 ||
                result == NULL) {
                free(result);
                result = xstrdup("{\"error\":\"the tool failed\"}");
            }
        }
        m = run_push(r, "tool", NULL);
        m->content = run_own(r, result);
        m->tool_call_id = call->id;
        m->tool_name = call->name;
    }
}

/* Call the model, run the tools it asks for, and repeat, at most `rounds`
 * tool rounds; the last call offers no tools so the model must answer. */
static int tool_loop(struct run *r, int rounds, char **answer, struct am_error *err)
{
    struct providers_response *resp;
    struct providers_message *m;
    int round, rc;

    for (round = 0;; round++) {
        int offer = round < rounds && r->agent->ntools > 0;
        if ((rc = route_chat(r, r->msgs, r->nmsgs, offer, &resp, err)) != 0)
            return rc;
        if (resp->ncalls == 0 || !offer) {
            *answer = xstrdup(resp->content != NULL ? resp->content : "");
            return 0;
        }
        m = run_push(r, "assistant", resp->content);
        m->calls = resp->calls;
        m->ncalls = resp->ncalls;
        run_tools(r, resp);
    }
}

static const char react_note[] =
    "Work in steps: think about what is needed, call a tool when it helps, read its "
    "result, and repeat; when you know the answer, reply with the answer only.";
static const char plan_note[] =
    "First write a short numbered plan (at most 5 steps) for answering the user's "
    "request. Do not answer yet.";

/* plan_and_execute: a plan first (no tools), then the steps. */
static int orchestrate(struct run *r, char **answer, struct am_error *err)
{
    const struct agent_rt *a = r->agent;
    struct providers_response *resp;
    char *plan;
    int rc;

    if (a->pattern == PATTERN_SINGLE)
        return tool_loop(r, 1, answer, err);
    if (a->pattern == PATTERN_REACT)
        return tool_loop(r, a->max_iterations, answer, err);
    run_push(r, "system", plan_note);
    rc = route_chat(r, r->msgs, r->nmsgs, 0, &resp, err);
    r->nmsgs--;                       /* the planning instruction is not kept */
    if (rc != 0)
        return rc;
    plan = xstrdup(resp->content != NULL ? resp->content : "");
    run_own(r, plan);
    {
        size_t len = strlen(plan) + 96;
        char *note = xmalloc(len);
        snprintf(note, len, "Follow this plan, using tools where needed, then give the "
                            "final answer:\n%s", plan);
        run_push(r, "system", note);
        free(note);
    }
    return tool_loop(r, a->max_iterations, answer, err);
}

/* ---- the pipeline -------------------------------------------------------------- */

/* The system message: prompt, persona, pattern note, tools, context (the
 * request's JSON, already through the input guardrails). */
static char *system_prompt(const struct agent_rt *a, const char *context)
{
    size_t cap = strlen(a->system) + 4096, n;
    char *s;
    int i;

    if (context != NULL)
        cap += strlen(context);
    if (a->persona != NULL)
        cap += strlen(a->persona);
    s = xmalloc(cap);
    n = (size_t)snprintf(s, cap, "%s", a->system);
    if (a->persona != NULL && a->persona[0] != '\0')
        n += (size_t)snprintf(s + n, cap - n, "\n\nYou are acting as: %s.", a->persona);
    if (a->pattern == PATTERN_REACT)
        n += (size_t)snprintf(s + n, cap - n, "\n\n%s", react_note);
    if (a->ntools > 0) {
        n += (size_t)snprintf(s + n, cap - n, "\n\nTools you can call:");
        for (i = 0; i < a->ntools && n < cap; i++)
            n += (size_t)snprintf(s + n, cap - n, "\n- %s: %s", tools_name(a->tools[i]),
                                  tools_description(a->tools[i]));
    }
    if (context != NULL && n < cap)
        snprintf(s + n, cap - n, "\n\nContext (JSON): %s", context);
    return s;
}

/* Input guardrails: cap, redact, block. Returns the text to use (malloc'd)
 * or NULL with err set when content safety blocks it. */
static char *guard_input(const struct agent_rt *a, const char *query, struct am_error *err)
{
    char *q = xstrdup(query), *t;
    const char *category = NULL;

    if (a->in_max_chars > 0) {
        t = guardrails_truncate_chars(q, (size_t)a->in_max_chars, NULL);
        free(q);
        q = t;
    }
    if (a->in_pii) {
        t = guardrails_redact_pii(q, NULL);
        free(q);
        q = t;
    }
    if (a->in_content && guardrails_unsafe(q, &category)) {
        free(q);
        error_set(err, AM_EGUARDRAIL, "The request was blocked by the content_safety "
                  "guardrail (%s)", category != NULL ? category : "unsafe");
        return NULL;
    }
    return q;
}

/* Output guardrails: redact, refuse, cap. Takes answer, returns the result. */
static char *guard_output(const struct agent_rt *a, char *answer, int *blocked)
{
    char *t;

    if (a->out_pii) {
        t = guardrails_redact_pii(answer, NULL);
        free(answer);
        answer = t;
    }
    if (a->out_content && guardrails_unsafe(answer, NULL)) {
        free(answer);
        *blocked = 1;
        return xstrdup(GUARDRAILS_REFUSAL);
    }
    if (a->out_max_tokens > 0) {
        /* about four characters a token, as memory_estimate_tokens counts */
        t = guardrails_truncate_chars(answer, (size_t)a->out_max_tokens * 4, NULL);
        free(answer);
        answer = t;
    }
    return answer;
}

static void load_history(struct run *r, struct json_object *hist)
{
    size_t i;

    for (i = 0; hist != NULL && i < json_object_array_length(hist); i++) {
        struct json_object *m = json_object_array_get_idx(hist, i), *role, *content;
        if (json_object_object_get_ex(m, "role", &role) &&
            json_object_object_get_ex(m, "content", &content)) {
            const char *rs = json_object_get_string(role);
            run_push(r, strcmp(rs, "assistant") == 0 ? "assistant" : "user",
                     json_object_get_string(content));
        }
    }
}

int runtime_init(void)
{
    return providers_init();
}

void runtime_result_free(struct runtime_result *res)
{
    free(res->answer);
    res->answer = NULL;
}

int runtime_execute(struct app *app, const struct runtime_request *req,
                    struct runtime_result *res, struct am_error *err)
{
    uint64_t t0 = util_monotonic_ms();
    char key[REGISTRY_KEY_MAX], *query = NULL, *system = NULL, *answer = NULL, *context = NULL;
    struct json_object *hist = NULL;
    struct run r;
    struct agent_rt *a;
    int rc, corrupt, disposable = 0, mode = req->mode == RUNTIME_TEST ? MEMORY_TEST : MEMORY_RUN;

    memset(res, 0, sizeof(*res));
    memset(&r, 0, sizeof(r));
    util_random_hex(res->trace_id, sizeof(res->trace_id), 16);
    if (req->session_id != NULL) {
        if (!memory_session_valid(req->session_id)) {
            error_set(err, AM_EVALIDATION, "Invalid run request");
            error_add_detail(err, "session_id", "must be 1 to 128 characters of A-Z a-z 0-9 . _ : -");
            return AM_EVALIDATION;
        }
        util_strlcpy(res->session_id, req->session_id, sizeof(res->session_id));
    } else {
        char hex[33];
        util_random_hex(hex, sizeof(hex), 16);
        snprintf(res->session_id, sizeof(res->session_id), "%s-%s",
                 req->mode == RUNTIME_TEST ? "test" : "s", hex);
        disposable = req->mode == RUNTIME_TEST;
    }
    (void)key_agent_id(key, sizeof(key), req->org, req->name);
    if ((a = agent_lookup(app->reg, key, &corrupt)) == NULL)
        return corrupt ? error_set(err, AM_EUNAVAILABLE, "Agent '%s' could not be loaded", req->name)
                       : error_set(err, AM_ENOTDEPLOYED, "Agent '%s' is not deployed", req->name);
    r.app = app;
    r.agent = a;
    r.res = res;
    if ((query = guard_input(a, req->query, err)) == NULL) {
        rc = err->code;
        goto out;
    }
    if (a->memory_on && memory_load(app, key, mode, res->session_id, &hist) != 0) {
        rc = error_set(err, AM_EUNAVAILABLE, "Conversation memory unavailable, retry");
        goto out;
    }
    if (req->context != NULL) {
        /* The context goes to the provider too: it passes the same PII filter. */
        const char *ctext = json_object_to_json_string_ext(req->context, JSON_C_TO_STRING_PLAIN);
        context = a->in_pii ? guardrails_redact_pii(ctext, NULL) : xstrdup(ctext);
    }
    system = system_prompt(a, context);
    run_push(&r, "system", system);
    load_history(&r, hist);
    run_push(&r, "user", query);
    if ((rc = orchestrate(&r, &answer, err)) != 0)
        goto out;
    answer = guard_output(a, answer, &res->blocked);
    if (a->memory_on && !disposable)
        memory_append(app, key, mode, res->session_id, query, answer, a->memory_strategy,
                      a->memory_limit);
    res->answer = answer;
    answer = NULL;
    rc = 0;
out:
    res->latency_ms = (int64_t)(util_monotonic_ms() - t0);
    free(answer);
    free(system);
    free(context);
    free(query);
    json_object_put(hist);
    run_free(&r);
    return rc;
}
