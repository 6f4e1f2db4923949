/*
 * runtime.c - load a compiled agent and run the pipeline.
 *
 * The agent comes from its compiled YAML through agent_yaml_load (the
 * format is agent_yaml's); this file keeps only run-time state.
 *
 * Owns: a per-thread cache of parsed agents keyed by registry key and
 * generation (a redeploy changes the generation, so a stale parse is never
 * used). The circuit breakers (per org, provider and model) are shared
 * by every process: state/breakers.
 *
 * The pipeline, in order (each step is another module's job):
 *   input guardrails (guardrails) -> memory load (memory) -> prompt ->
 *   model router: primary, then fallback (providers) -> tool loop under
 *   the orchestration pattern (tools) -> output guardrails -> memory save.
 * Accounting (usage) is the caller's (routes), so `test` can skip it.
 *
 * With a sink (runtime_request.sink) the same pipeline streams: a model
 * call that can only give the answer (no tools offered) is made streamed
 * and its text goes through the output guard (struct out_stream: the
 * streaming PII redactor, content_safety holding the whole answer, the
 * max_tokens cap) to the sink as it arrives; a call offering tools is
 * buffered (a tool round stays silent) and its text goes out in one piece
 * when it is the answer. The fallback model runs only while nothing has
 * reached the sink. The sink is called on the run's thread, never under a
 * lock; res->answer is exactly what it was given.
 *
 * Must never: log; put an API key anywhere but the provider request (an
 * org's key is unsealed into a stack buffer for one call, then wiped).
 */
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "state/metrics.h"
#include "state/config.h"
#include "runtime/agent_yaml.h"
#include "runtime/guardrails.h"
#include "runtime/memory.h"
#include "runtime/providers/providers.h"
#include "state/registry.h"
#include "state/breakers.h"
#include "state/vault.h"
#include "runtime/runtime.h"
#include "runtime/tools/tools.h"
#include "lib/buf.h"
#include "lib/key.h"
#include "lib/util.h"

#define AGENT_CACHE_SLOTS 8

/* An agent as the pipeline uses it: the loaded document, plus what the
 * pipeline derives from its guardrail lists once per load. */
struct agent_rt {
    char key[REGISTRY_KEY_MAX];
    uint64_t generation;
    struct agent_yaml_doc doc;
    int in_pii, in_content, in_max_chars;   /* in_max_chars 0 = no cap */
    int out_pii, out_content, out_max_tokens;
};

static void agent_rt_free(struct agent_rt *a)
{
    if (a == NULL)
        return;
    agent_yaml_doc_clear(&a->doc);
    free(a);
}

/* pii / content flags and the limit of the last entry of limit_type. */
static void guard_flags(const struct agent_yaml_guardrail *list, int n, int limit_type,
                        int *pii, int *content, int *limit)
{
    int i;

    for (i = 0; i < n; i++) {
        if (list[i].type == AGENT_YAML_PII_DETECTION)
            *pii = 1;
        else if (list[i].type == AGENT_YAML_CONTENT_FILTER)
            *content = 1;
        else if (list[i].type == limit_type)
            *limit = list[i].limit;
    }
}

/* Load a compiled agent. Returns NULL if the YAML is not one. */
static struct agent_rt *agent_parse(const char *key, uint64_t generation, const char *yaml,
                                    size_t len)
{
    struct agent_rt *a = xcalloc(1, sizeof(*a));
    struct agent_yaml_doc *d = &a->doc;

    if (agent_yaml_load(yaml, len, d, NULL) != 0) {
        agent_rt_free(a);
        return NULL;
    }
    util_strlcpy(a->key, key, sizeof(a->key));
    a->generation = generation;
    if (d->system == NULL)
        d->system = xstrdup("");
    if (d->max_iterations < 1 || d->max_iterations > 50)
        d->max_iterations = 10;
    guard_flags(d->input, d->ninput, AGENT_YAML_MAX_LENGTH, &a->in_pii, &a->in_content,
                &a->in_max_chars);
    guard_flags(d->output, d->noutput, AGENT_YAML_COST_LIMIT, &a->out_pii, &a->out_content,
                &a->out_max_tokens);
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

/* ---- circuit breaker and latency: shared by every process (state/breakers) ---- */

static unsigned long round_robin_turn;

/* 1 if org's provider/model is cooling down after repeated failures. */
static int breaker_is_open(const struct app *app, const char *org,
                           const struct agent_yaml_model *m, uint64_t *ewma)
{
    return breakers_is_open(app->breakers, org, m->provider, m->model, util_monotonic_ms(),
                            ewma);
}

/* Count the outcome rc of one call of m for org. A refusal of the request
 * itself (AM_EPROVIDERREJECT) and a client that went away count nothing:
 * they say nothing of the provider. A 429's Retry-After opens the breaker
 * at least that long. */
static void breaker_record(const struct app *app, const char *org,
                           const struct agent_yaml_model *m, int rc,
                           const struct providers_response *resp, uint64_t ms)
{
    const struct config *cfg = app->cfg;
    struct breakers_outcome o = {
        .ok = rc == 0, .latency_ms = ms, .failures = cfg->breaker_failures,
        .cooldown_ms = (uint64_t)cfg->breaker_cooldown_ms,
        .retry_after_ms = rc != 0 && resp->http_status == 429 && resp->retry_after_s > 0
                          ? (uint64_t)resp->retry_after_s * 1000 : 0,
    };

    metrics_provider_call(m->provider, ms * 1000, rc == 0);
    if (rc == AM_EPROVIDERREJECT || rc == AM_ECANCELLED)
        return;
    breakers_record(app->breakers, org, m->provider, m->model, util_monotonic_ms(), &o);
}

static char *guard_output(const struct agent_rt *a, char *answer, int *blocked);

/* ---- the output guard of a streamed answer --------------------------------------- */

/* With a sink, the answer's text goes through the output guardrails piece
 * by piece on its way to the sink, and what reached the sink is the answer:
 *  - pii_filter: guardrails_stream_* (only the tail that could still
 *    become or change a match is held back; see guardrails.h);
 *  - content_safety: the whole answer is held until it is complete, then
 *    judged as one text; a blocked answer never goes out in part, the
 *    refusal goes out instead (res->blocked);
 *  - max_tokens (cost_limit): the same cap on code points as guard_output,
 *    counted over what went out; the rest is dropped.
 * The result is exactly guard_output's for the whole answer. */
struct out_stream {
    const struct runtime_sink *sink;
    const struct agent_rt *agent;
    struct guardrails_stream *pii;   /* NULL without pii_filter */
    struct buf held;                 /* content_safety: the answer so far */
    struct buf sent;                 /* what reached the sink */
    size_t chars;                    /* code points in sent */
};

static void out_init(struct out_stream *o, const struct runtime_sink *sink,
                     const struct agent_rt *a)
{
    memset(o, 0, sizeof(*o));
    o->sink = sink;
    o->agent = a;
    o->pii = a->out_pii && !a->out_content ? guardrails_stream_new() : NULL;
    buf_init(&o->held, 256);
    buf_init(&o->sent, 256);
}

/* Forget what is held (a failed model call before anything went out). */
static void out_reset(struct out_stream *o)
{
    if (o->pii != NULL) {
        guardrails_stream_free(o->pii);
        o->pii = guardrails_stream_new();
    }
    o->held.n = 0;
}

static void out_free(struct out_stream *o)
{
    guardrails_stream_free(o->pii);
    buf_free(&o->held);
    buf_free(&o->sent);
}

/* Text that passed the guardrails: cap it, send it. Returns the sink's
 * verdict (non-zero: stop). */
static int out_send(struct out_stream *o, const char *p, size_t n)
{
    size_t cap = o->agent->out_max_tokens > 0 ? (size_t)o->agent->out_max_tokens * 4 : 0;
    char *t = NULL;
    int rc;

    if (cap > 0) {
        char *z = xstrndup(p, n);

        t = guardrails_truncate_chars(z, o->chars >= cap ? 0 : cap - o->chars, NULL);
        free(z);
        p = t;
        n = strlen(t);
        o->chars += guardrails_char_count(t);
    }
    rc = n > 0 ? o->sink->token(o->sink->arg, p, n) : 0;
    buf_put(&o->sent, p, n);
    free(t);
    return rc;
}

/* The next piece of the model's answer. Returns non-zero to stop. */
static int out_feed(struct out_stream *o, const char *p, size_t n)
{
    char *t;
    size_t tn;
    int rc;

    if (o->agent->out_content) {
        buf_put(&o->held, p, n);
        return 0;
    }
    if (o->pii == NULL)
        return out_send(o, p, n);
    t = guardrails_stream_feed(o->pii, p, n, &tn);
    rc = out_send(o, t, tn);
    free(t);
    return rc;
}

/* The answer is complete: send what was held. Returns non-zero to stop. */
static int out_finish(struct out_stream *o, int *blocked)
{
    char *t;
    size_t tn;
    int rc;

    if (o->agent->out_content) {
        t = guard_output(o->agent, xstrndup(o->held.z ? o->held.z : "", o->held.n), blocked);
        rc = o->sink->token(o->sink->arg, t, strlen(t));
        buf_puts(&o->sent, t);
        free(t);
        return rc;
    }
    if (o->pii == NULL)
        return 0;
    t = guardrails_stream_finish(o->pii, &tn);
    rc = out_send(o, t, tn);
    free(t);
    return rc;
}

/* The providers_sink of a model call whose text streams live. */
static int out_text(void *arg, const char *text, size_t n)
{
    return out_feed(arg, text, n);
}

/* ---- one run's state --------------------------------------------------------- */

struct run {
    struct app *app;
    const char *org;                  /* the org whose agent runs (its keys) */
    const struct agent_rt *agent;
    struct runtime_result *res;
    struct providers_message *msgs;   /* the conversation sent to the model */
    size_t nmsgs, capmsgs;
    char **owned;                     /* strings the messages point into */
    size_t nowned, capowned;
    struct providers_response *resps; /* kept alive: messages point at their calls */
    size_t nresps, capresps;
    int last_timeout;                 /* the last provider failure was a timeout */
    struct out_stream *out;           /* NULL: no sink, the answer is buffered */
    const struct runtime_request *req;/* its hooks (before_provider); NULL: none */
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

/* The API key model m calls with, into buf (cap bytes, "" for echo and
 * ollama): the server's for "server:X"; for "org:X" the org's own, unsealed
 * for this call only (no cache: a put or delete is seen at once by every
 * worker), or the server's when the org's was removed since the deploy.
 * Returns 0, or AM_EPROVIDER / AM_EIO with a message naming the missing or
 * unreadable key (never the key). */
static int api_key_of(const struct run *r, const struct agent_yaml_model *m, char *buf,
                      size_t cap, struct am_error *err)
{
    const char *server = r->app->cfg->providers[m->provider].api_key;
    const char *pname = config_provider_name(m->provider);
    int rc;

    buf[0] = '\0';
    if (strncmp(m->key_ref, "server:", 7) == 0) {
        util_strlcpy(buf, server, cap);
        return 0;
    }
    if (strncmp(m->key_ref, "org:", 4) != 0)
        return 0;
    rc = vault_provider_get(r->app->store, NULL, r->app->vault, r->org, pname, buf, cap, NULL);
    if (rc == 0)
        return 0;
    if (rc == AM_ENOENT && server[0] != '\0') {
        util_strlcpy(buf, server, cap);
        return 0;
    }
    if (rc == AM_ENOENT)
        return error_set(err, AM_EPROVIDER, "The organization's %s key was removed; add it "
                         "again or redeploy", pname);
    if (rc == AM_EIO)
        return error_set(err, AM_EIO, "Storage unavailable, retry");
    return error_set(err, AM_EPROVIDER, "The organization's %s key cannot be decrypted with "
                     "this server's master key (was the master key changed?); save the key "
                     "again", pname);
}

/* Candidates in the order to try: primary then fallback, except that
 * round_robin alternates and latency_optimized puts the one measured
 * faster first once both have answered before. */
static int route_order(const struct run *r, const struct agent_yaml_model *order[2])
{
    const struct agent_rt *a = r->agent;
    uint64_t lp = 0, lf = 0;
    int n = 1;

    order[0] = &a->doc.primary;
    order[1] = NULL;
    if (!a->doc.fallback.present)
        return 1;
    order[1] = &a->doc.fallback;
    n = 2;
    if (a->doc.routing == AGENT_YAML_ROUTE_ROUND_ROBIN &&
        (__atomic_fetch_add(&round_robin_turn, 1, __ATOMIC_RELAXED) & 1)) {
        order[0] = &a->doc.fallback;
        order[1] = &a->doc.primary;
    } else if (a->doc.routing == AGENT_YAML_ROUTE_LATENCY) {
        breaker_is_open(r->app, r->org, &a->doc.primary, &lp);
        breaker_is_open(r->app, r->org, &a->doc.fallback, &lf);
        if (lp && lf && lf < lp) {
            order[0] = &a->doc.fallback;
            order[1] = &a->doc.primary;
        }
    }
    return n;
}

/* One model call through the router. msgs/n is the conversation; tools
 * are offered when with_tools; live: the answer's text streams to the
 * run's output guard as it arrives (r->out must be set). On 0, *out is a
 * response owned by the run. The fallback runs only while nothing reached
 * the sink: once it has, a failure ends the run (no restart mid-answer);
 * AM_ECANCELLED (the sink said stop) ends it at once. */
static int route_chat(struct run *r, const struct providers_message *msgs, size_t n,
                      int with_tools, int live, struct providers_response **out,
                      struct am_error *err)
{
    struct providers_sink sink = { out_text, r->out };
    const struct config *cfg = r->app->cfg;
    const struct agent_rt *a = r->agent;
    const struct agent_yaml_model *order[2];
    struct providers_tool tools[TOOL_COUNT];
    struct providers_request req;
    struct providers_response *resp;
    char key[VAULT_PROVIDER_KEY_MAX + 1];
    int i, ncand = route_order(r, order), tried = 0, rc = AM_EPROVIDER;

    for (i = 0; i < a->doc.ntools; i++) {
        tools[i].name = tools_name(a->doc.tools[i]);
        tools[i].description = tools_description(a->doc.tools[i]);
        tools[i].parameters = tools_parameters(a->doc.tools[i]);
    }
    for (i = 0; i < ncand; i++) {
        const struct agent_yaml_model *m = order[i];
        uint64_t t0;

        if (breaker_is_open(r->app, r->org, m, NULL))
            continue;
        tried++;
        memset(&req, 0, sizeof(req));
        req.provider = m->provider;
        req.model = m->model;
        req.base_url = cfg->providers[m->provider].base_url;
        error_clear(err);
        if ((rc = api_key_of(r, m, key, sizeof(key), err)) != 0) {
            r->last_timeout = 0;
            continue;       /* no key to call it with: the next candidate, if any */
        }
        req.api_key = key;
        req.timeout_ms = cfg->providers[m->provider].timeout_ms;
        req.max_tokens = m->max_tokens;
        req.messages = msgs;
        req.nmessages = n;
        req.tools = with_tools && a->doc.ntools > 0 ? tools : NULL;
        req.ntools = with_tools ? (size_t)a->doc.ntools : 0;
        req.sink = live && r->out != NULL ? &sink : NULL;
        if (r->out != NULL && r->out->sink->alive != NULL) {   /* streamed or not */
            req.alive = r->out->sink->alive;
            req.alive_arg = r->out->sink->arg;
        }
        resp = run_new_response(r);
        error_clear(err);
        providers_init();    /* once per process; not part of any model's latency */
        t0 = util_monotonic_ms();
        if (!r->res->provider_called && r->req != NULL && r->req->before_provider != NULL)
            r->req->before_provider(r->req->admit_arg, r->res);
        r->res->provider_called = 1;
        rc = providers_chat(&req, resp, err);
        sodium_memzero(key, sizeof(key));
        if (rc == AM_ECANCELLED)
            return error_set(err, AM_ECANCELLED, "The client went away");
        breaker_record(r->app, r->org, m, rc, resp, util_monotonic_ms() - t0);
        if (rc == AM_EPROVIDERREJECT)
            return rc;      /* the request's own error: another model would refuse it too */
        if (rc == 0) {
            r->res->tokens_used += resp->prompt_tokens + resp->completion_tokens;
            snprintf(r->res->model, sizeof(r->res->model), "%s/%s",
                     config_provider_name(m->provider), m->model);
            *out = resp;
            return 0;
        }
        r->last_timeout = rc == AM_ETIMEOUT;
        if (req.sink != NULL && r->out->sent.n > 0)
            return rc;      /* part of the answer is out: no fallback */
        if (req.sink != NULL)
            out_reset(r->out);
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
    rc = route_chat(r, m, 2, 0, 0, &resp, err);
    if (rc == 0)
        *answer = xstrdup(resp->content != NULL ? resp->content : "");
    return rc;
}

static int agent_has_tool(const struct agent_rt *a, int id)
{
    return id >= 0 && a->doc.tool_config[id] != NULL;
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
            struct tools_ctx ctx = { &ts, r->agent->doc.tool_config[id], llm_subcall, r };
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
 * tool rounds; the last call offers no tools so the model must answer.
 *
 * Streaming (r->out): a call that offers no tools can only give the
 * answer, so its text streams live. A call that offers tools may turn out
 * to be a tool round, whose text must not reach the client, so it is made
 * buffered, and its text goes to the output guard in one piece when it
 * turns out to be the answer (no tool calls). */
static int tool_loop(struct run *r, int rounds, char **answer, struct am_error *err)
{
    struct providers_response *resp;
    struct providers_message *m;
    int round, rc;

    for (round = 0;; round++) {
        int offer = round < rounds && r->agent->doc.ntools > 0;
        if ((rc = route_chat(r, r->msgs, r->nmsgs, offer, !offer, &resp, err)) != 0)
            return rc;
        if (resp->ncalls == 0 || !offer) {
            *answer = xstrdup(resp->content != NULL ? resp->content : "");
            if (offer && r->out != NULL && out_feed(r->out, *answer, strlen(*answer)) != 0)
                return error_set(err, AM_ECANCELLED, "The client went away");
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

    if (a->doc.pattern == AGENT_YAML_PATTERN_SINGLE)
        return tool_loop(r, 1, answer, err);
    if (a->doc.pattern == AGENT_YAML_PATTERN_REACT)
        return tool_loop(r, a->doc.max_iterations, answer, err);
    run_push(r, "system", plan_note);
    rc = route_chat(r, r->msgs, r->nmsgs, 0, 0, &resp, err);
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
    return tool_loop(r, a->doc.max_iterations, answer, err);
}

/* ---- the pipeline -------------------------------------------------------------- */

/* The system message: prompt, persona, pattern note, tools, context (the
 * request's JSON, already through the input guardrails). */
static char *system_prompt(const struct agent_rt *a, const char *context)
{
    size_t cap = strlen(a->doc.system) + 4096, n;
    char *s;
    int i;

    if (context != NULL)
        cap += strlen(context);
    if (a->doc.description != NULL)
        cap += strlen(a->doc.description);
    s = xmalloc(cap);
    n = (size_t)snprintf(s, cap, "%s", a->doc.system);
    if (a->doc.description != NULL && a->doc.description[0] != '\0')
        n += (size_t)snprintf(s + n, cap - n, "\n\nYou are acting as: %s.", a->doc.description);
    if (a->doc.pattern == AGENT_YAML_PATTERN_REACT)
        n += (size_t)snprintf(s + n, cap - n, "\n\n%s", react_note);
    if (a->doc.ntools > 0) {
        n += (size_t)snprintf(s + n, cap - n, "\n\nTools you can call:");
        for (i = 0; i < a->doc.ntools && n < cap; i++)
            n += (size_t)snprintf(s + n, cap - n, "\n- %s: %s", tools_name(a->doc.tools[i]),
                                  tools_description(a->doc.tools[i]));
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
    /* out_stream gives the same result piece by piece: keep them in step */
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

/* The pipeline for the resolved agent a (registry key `key`); res has its
 * trace and session ids. disposable: a test run's generated session, never
 * saved. t0: when the run started (latency). */
static int run_pipeline(struct app *app, struct agent_rt *a, const char *key, int disposable,
                        uint64_t t0, const struct runtime_request *req,
                        struct runtime_result *res, struct am_error *err)
{
    char *query = NULL, *system = NULL, *answer = NULL, *context = NULL;
    struct json_object *hist = NULL;
    struct out_stream out;
    struct run r;
    int rc, mode = req->mode == RUNTIME_TEST ? MEMORY_TEST : MEMORY_RUN;

    memset(&r, 0, sizeof(r));
    r.app = app;
    r.org = req->org;
    r.agent = a;
    r.res = res;
    r.req = req;
    if (req->sink != NULL) {
        out_init(&out, req->sink, a);
        r.out = &out;
    }
    if (req->admit != NULL && (rc = req->admit(req->admit_arg, err)) != 0)
        goto out;
    res->admitted = 1;
    if ((query = guard_input(a, req->query, err)) == NULL) {
        rc = err->code;
        goto out;
    }
    if (a->doc.memory_on && memory_load(app, key, mode, res->session_id, &hist) != 0) {
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
    if (r.out == NULL) {
        answer = guard_output(a, answer, &res->blocked);
    } else {
        free(answer);
        answer = NULL;
        if (out_finish(r.out, &res->blocked) != 0) {
            rc = error_set(err, AM_ECANCELLED, "The client went away");
            goto out;
        }
        answer = xstrndup(r.out->sent.z ? r.out->sent.z : "", r.out->sent.n);
    }
    if (a->doc.memory_on && !disposable)
        res->memory_error = memory_append(app, key, mode, res->session_id, query, answer,
                                          a->doc.memory_strategy, a->doc.memory_limit);
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
    if (r.out != NULL)
        out_free(r.out);
    run_free(&r);
    return rc;
}

int runtime_execute(struct app *app, const struct runtime_request *req,
                    struct runtime_result *res, struct am_error *err)
{
    uint64_t t0 = util_monotonic_ms();
    char key[REGISTRY_KEY_MAX];
    struct agent_rt *a;
    int corrupt, disposable = 0;

    memset(res, 0, sizeof(*res));
    util_random_hex(res->trace_id, sizeof(res->trace_id), 16);
    if (req->session_id != NULL) {
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
    res->version = a->doc.version;
    return run_pipeline(app, a, key, disposable, t0, req, res, err);
}
