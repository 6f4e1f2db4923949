/*
 * agent_yaml.c - the compiled agent YAML: the words of the format, the
 * emitter (struct agent_yaml_doc -> text) and the reader (text -> struct
 * agent_yaml_doc). The wizard emits, the runtime reads; neither writes a
 * word of the format itself.
 *
 * Owns: nothing long-lived; emit hands its buffer to the caller, load fills
 * the caller's struct.
 *
 * Must not: do I/O, log, or know about WizardConfigs (the wizard maps its
 * own fields, tone sentences and guardrail names onto the document).
 *
 * The emitted bytes are what the store keeps and GET /yaml shows, so the
 * order of keys and the scalar styles below are part of the format: keys
 * plain, strings plain only when no YAML resolver can read them as anything
 * else, version / endpoint / api_key_ref / prompts.system always
 * double-quoted, block style, indent 2, no line wrapping.
 */
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>
#include "runtime/agent_yaml.h"
#include "state/config.h"
#include "lib/buf.h"
#include "lib/util.h"

#define AY_DEPTH_MAX 32

const char *const agent_yaml_routings[] = {
    "cost_optimized", "latency_optimized", "quality_first", "round_robin", NULL };
const char *const agent_yaml_patterns[] = {
    "single_pass", "react", "plan_and_execute", NULL };
const char *const agent_yaml_memory_strategies[] = {
    "sliding_window", "token_budget", NULL };
const char *const agent_yaml_guardrail_types[] = {
    "pii_detection", "content_filter", "max_length", "cost_limit", NULL };

/* words[i] for a valid index, else words[0] (the format's default). */
static const char *ay_word(const char *const words[], int i)
{
    int n;

    for (n = 0; words[n] != NULL; n++)
        ;
    return i >= 0 && i < n ? words[i] : words[0];
}

/* Index of s in the NULL-terminated words, or dflt. */
static int ay_word_index(const char *s, const char *const words[], int dflt)
{
    int i;

    for (i = 0; s != NULL && words[i] != NULL; i++)
        if (strcmp(s, words[i]) == 0)
            return i;
    return dflt;
}

void agent_yaml_doc_clear(struct agent_yaml_doc *doc)
{
    int i;

    if (doc == NULL)
        return;
    free(doc->display_name);
    free(doc->description);
    free(doc->system);
    for (i = 0; i < TOOL_COUNT; i++)
        json_object_put(doc->tool_config[i]);
    memset(doc, 0, sizeof(*doc));
}

/* ---- emit: libyaml events -------------------------------------------------- */

static int ay_out_write(void *data, unsigned char *bytes, size_t size)
{
    buf_put(data, bytes, size);
    return 1;
}

struct ay_em {
    yaml_emitter_t emitter;
    int failed;     /* set by the first failure; every later call is a no-op */
    int portable;   /* 1: the upstream-schema variant (agent_yaml_emit_portable) */
};

static void ay_emit(struct ay_em *e, yaml_event_t *ev, int initialised)
{
    if (!initialised) {
        e->failed = 1;
        return;
    }
    if (!yaml_emitter_emit(&e->emitter, ev))   /* takes ev either way */
        e->failed = 1;
}

static void ay_scalar(struct ay_em *e, const char *s, yaml_scalar_style_t style)
{
    yaml_event_t ev;
    size_t len = strlen(s);
    int plain = style == YAML_PLAIN_SCALAR_STYLE;

    if (e->failed)
        return;
    if (len > INT_MAX) {
        e->failed = 1;
        return;
    }
    ay_emit(e, &ev, yaml_scalar_event_initialize(&ev, NULL, NULL,
            (const yaml_char_t *)s, (int)len, plain, !plain, style));
}

/* A plain scalar is safe when no YAML 1.1/1.2 resolver can read it as
 * anything but a string: a letter, then letters, digits, ' ', '.', '_',
 * '/', '-', no trailing space, and not a bool/null word. */
static int ay_plain_safe(const char *s)
{
    static const char *const words[] = {
        "y", "n", "yes", "no", "on", "off", "true", "false", "null", NULL };
    size_t i, len = strlen(s);

    if (len == 0 || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z')))
        return 0;
    if (s[len - 1] == ' ')
        return 0;
    for (i = 0; i < len; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || strchr(" ._/-", s[i]) != NULL))
            return 0;
    for (i = 0; words[i] != NULL; i++)
        if (strcasecmp(s, words[i]) == 0)
            return 0;
    return 1;
}

/* A string value: plain when that is unambiguous, else double-quoted. */
static void ay_str(struct ay_em *e, const char *s)
{
    ay_scalar(e, s, ay_plain_safe(s) ? YAML_PLAIN_SCALAR_STYLE
                                     : YAML_DOUBLE_QUOTED_SCALAR_STYLE);
}

static void ay_quoted(struct ay_em *e, const char *s)
{
    ay_scalar(e, s, YAML_DOUBLE_QUOTED_SCALAR_STYLE);
}

static void ay_int(struct ay_em *e, int64_t v)
{
    char num[24];

    (void)util_snprintf(num, sizeof(num), "%" PRId64, v);
    ay_scalar(e, num, YAML_PLAIN_SCALAR_STYLE);
}

static void ay_map_start(struct ay_em *e)
{
    yaml_event_t ev;

    if (!e->failed)
        ay_emit(e, &ev, yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1,
                                                            YAML_BLOCK_MAPPING_STYLE));
}

static void ay_map_end(struct ay_em *e)
{
    yaml_event_t ev;

    if (!e->failed)
        ay_emit(e, &ev, yaml_mapping_end_event_initialize(&ev));
}

static void ay_seq_start(struct ay_em *e)
{
    yaml_event_t ev;

    if (!e->failed)
        ay_emit(e, &ev, yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1,
                                                             YAML_BLOCK_SEQUENCE_STYLE));
}

static void ay_seq_end(struct ay_em *e)
{
    yaml_event_t ev;

    if (!e->failed)
        ay_emit(e, &ev, yaml_sequence_end_event_initialize(&ev));
}

static void ay_key(struct ay_em *e, const char *key)
{
    ay_scalar(e, key, YAML_PLAIN_SCALAR_STYLE);
}

/* key: value, for our own fixed keys */
static void ay_kv_str(struct ay_em *e, const char *key, const char *value)
{
    ay_key(e, key);
    ay_str(e, value);
}

static void ay_kv_int(struct ay_em *e, const char *key, int64_t value)
{
    ay_key(e, key);
    ay_int(e, value);
}

/* A tool's config value: booleans and integers plain, strings as ay_str,
 * arrays and objects in block style, members in their stored order. */
static void ay_json(struct ay_em *e, struct json_object *v, int depth)
{
    size_t i, n;

    if (depth > AY_DEPTH_MAX) {
        e->failed = 1;
        return;
    }
    switch (json_object_get_type(v)) {
    case json_type_boolean:
        ay_scalar(e, json_object_get_boolean(v) ? "true" : "false", YAML_PLAIN_SCALAR_STYLE);
        break;
    case json_type_int:
        ay_int(e, json_object_get_int64(v));
        break;
    case json_type_array:
        ay_seq_start(e);
        n = json_object_array_length(v);
        for (i = 0; i < n; i++)
            ay_json(e, json_object_array_get_idx(v, i), depth + 1);
        ay_seq_end(e);
        break;
    case json_type_object:
        ay_map_start(e);
        json_object_object_foreach(v, key, member) {
            ay_key(e, key);
            ay_json(e, member, depth + 1);
        }
        ay_map_end(e);
        break;
    case json_type_null:
        ay_scalar(e, "null", YAML_PLAIN_SCALAR_STYLE);
        break;
    default:    /* string, double */
        ay_str(e, json_object_get_string(v));
        break;
    }
}

/* ---- emit: the document ---------------------------------------------------- */

/* The part of "org__name" after the "__" (names and slugs never hold one). */
static const char *ay_own_name(const char *id)
{
    const char *sep = strstr(id, "__");
    return sep != NULL ? sep + 2 : id;
}

static void ay_emit_labels(struct ay_em *e, const struct agent_yaml_doc *d,
                           const char *own, const char *mapped)
{
    int budget = d->memory_on && d->memory_strategy == MEMORY_TOKEN_BUDGET;

    if (strcmp(own, mapped) == 0 && !budget)
        return;
    ay_key(e, "labels");
    ay_map_start(e);
    if (strcmp(own, mapped) != 0)
        ay_kv_str(e, AGENT_YAML_LABEL_NAME, own);
    if (budget) {
        char num[24];
        (void)util_snprintf(num, sizeof(num), "%d", d->memory_limit);
        ay_key(e, AGENT_YAML_LABEL_BUDGET);
        ay_quoted(e, num);
    }
    ay_map_end(e);
}

static void ay_emit_metadata(struct ay_em *e, const struct agent_yaml_doc *d)
{
    char version[24], name[AGENT_YAML_NAME_MAX], ns[AGENT_YAML_NAME_MAX];
    const char *own = ay_own_name(d->name);

    /* The semantic version "N.0.0" of agent version N (SPEC section 9);
     * reading takes the leading N back. */
    (void)util_snprintf(version, sizeof(version), "%" PRIu64 ".0.0", d->version);
    agent_yaml_portable_name(own, "agent-", name, sizeof(name));
    agent_yaml_portable_name(d->namespace_, "org-", ns, sizeof(ns));
    ay_key(e, "metadata");
    ay_map_start(e);
    ay_kv_str(e, "name", e->portable ? name : d->name);
    ay_key(e, "version");
    ay_quoted(e, version);
    ay_kv_str(e, "namespace", e->portable ? ns : d->namespace_);
    if (e->portable)
        ay_emit_labels(e, d, own, name);
    ay_map_end(e);
}

static void ay_emit_identity(struct ay_em *e, const struct agent_yaml_doc *d)
{
    ay_key(e, "identity");
    ay_map_start(e);
    if (d->display_name != NULL)
        ay_kv_str(e, "display_name", d->display_name);
    if (d->description != NULL && d->description[0] != '\0')
        ay_kv_str(e, "description", d->description);
    ay_map_end(e);
}

/* The upstream adapter for each of our providers: openai and ollama are
 * upstream's own; the others speak the OpenAI protocol at their
 * compatibility endpoint (upstream's ADK maps anthropic the same way). */
static const struct {
    int provider;
    const char *upstream;        /* model block's provider */
    const char *endpoint;        /* NULL: the adapter's default / ours */
    const char *key_env;         /* NULL: no key */
} ay_portable_providers[] = {
    { PROVIDER_OPENAI, "openai", NULL, "OPENAI_API_KEY" },
    { PROVIDER_ANTHROPIC, "openai_compat", "https://api.anthropic.com/v1", "ANTHROPIC_API_KEY" },
    { PROVIDER_GROQ, "openai_compat", "https://api.groq.com/openai/v1", "GROQ_API_KEY" },
    { PROVIDER_MISTRAL, "openai_compat", "https://api.mistral.ai/v1", "MISTRAL_API_KEY" },
    { PROVIDER_COHERE, "openai_compat", "https://api.cohere.ai/compatibility/v1", "CO_API_KEY" },
    { PROVIDER_OLLAMA, "ollama", NULL, NULL },
};
#define AY_NPORTABLE (sizeof(ay_portable_providers) / sizeof(ay_portable_providers[0]))

const char *agent_yaml_key_env(int provider)
{
    size_t i;

    for (i = 0; i < AY_NPORTABLE; i++)
        if (ay_portable_providers[i].provider == provider)
            return ay_portable_providers[i].key_env;
    return NULL;
}

int agent_yaml_portable_provider(const char *upstream, const char *endpoint)
{
    size_t i, n;

    if (upstream == NULL)
        return -1;
    if (strcmp(upstream, "openai_compat") != 0)
        return strcmp(upstream, "openai") == 0 ? PROVIDER_OPENAI
             : strcmp(upstream, "ollama") == 0 ? PROVIDER_OLLAMA
             : config_provider_from_name(upstream);
    /* upstream's openai_compat default is api.openai.com */
    if (endpoint == NULL || strcmp(endpoint, "https://api.openai.com/v1") == 0 ||
        strcmp(endpoint, "https://api.openai.com/v1/") == 0)
        return PROVIDER_OPENAI;
    for (i = 0; i < AY_NPORTABLE; i++) {
        const char *ep = ay_portable_providers[i].endpoint;
        if (ep == NULL)
            continue;
        n = strlen(ep);
        if (strncmp(endpoint, ep, n) == 0 && (endpoint[n] == '\0' ||
                                              strcmp(endpoint + n, "/") == 0))
            return ay_portable_providers[i].provider;
    }
    return -1;
}

/* The portable head of a model block: provider, model, endpoint,
 * api_key_env. */
static void ay_emit_portable_model(struct ay_em *e, const struct agent_yaml_model *m)
{
    size_t i;

    for (i = 0; i < AY_NPORTABLE && ay_portable_providers[i].provider != m->provider; i++)
        ;
    if (i == AY_NPORTABLE) {        /* echo: nothing upstream runs it */
        e->failed = 1;
        return;
    }
    ay_kv_str(e, "provider", ay_portable_providers[i].upstream);
    ay_kv_str(e, "model", m->model);
    if (ay_portable_providers[i].endpoint != NULL || m->endpoint[0] != '\0') {
        ay_key(e, "endpoint");
        ay_quoted(e, ay_portable_providers[i].endpoint != NULL
                         ? ay_portable_providers[i].endpoint : m->endpoint);
    }
    if (ay_portable_providers[i].key_env != NULL)
        ay_kv_str(e, "api_key_env", ay_portable_providers[i].key_env);
}

/* One of model.primary / model.fallback. */
static void ay_emit_model_entry(struct ay_em *e, const char *key,
                                const struct agent_yaml_model *m)
{
    if (!m->present || config_provider_name(m->provider) == NULL)
        return;
    ay_key(e, key);
    ay_map_start(e);
    if (e->portable) {
        ay_emit_portable_model(e, m);
    } else {
        ay_kv_str(e, "provider", config_provider_name(m->provider));
        ay_kv_str(e, "model", m->model);
        if (m->endpoint[0] != '\0') {
            ay_key(e, "endpoint");
            ay_quoted(e, m->endpoint);
        }
        if (m->key_ref[0] != '\0') {
            ay_key(e, "api_key_ref");
            ay_quoted(e, m->key_ref);
        }
    }
    if (m->max_tokens > 0) {
        ay_key(e, "parameters");
        ay_map_start(e);
        ay_kv_int(e, "max_tokens", m->max_tokens);
        ay_map_end(e);
    }
    ay_map_end(e);
}

static void ay_emit_model(struct ay_em *e, const struct agent_yaml_doc *d)
{
    ay_key(e, "model");
    ay_map_start(e);
    ay_emit_model_entry(e, "primary", &d->primary);
    ay_emit_model_entry(e, "fallback", &d->fallback);
    ay_key(e, "routing");
    ay_map_start(e);
    ay_kv_str(e, "strategy", ay_word(agent_yaml_routings, d->routing));
    ay_map_end(e);
    ay_map_end(e);
}

static void ay_emit_prompts_orchestration(struct ay_em *e, const struct agent_yaml_doc *d)
{
    ay_key(e, "prompts");
    ay_map_start(e);
    if (d->system != NULL) {
        ay_key(e, "system");
        ay_quoted(e, d->system);
    }
    ay_map_end(e);
    ay_key(e, "orchestration");
    ay_map_start(e);
    if (e->portable && d->pattern == AGENT_YAML_PATTERN_SINGLE) {
        /* upstream has no single_pass: a react loop of one iteration */
        ay_kv_str(e, "pattern", "react");
        ay_kv_int(e, "max_iterations", 1);
    } else {
        ay_kv_str(e, "pattern", ay_word(agent_yaml_patterns, d->pattern));
        ay_kv_int(e, "max_iterations", d->max_iterations);
    }
    ay_map_end(e);
}

static void ay_emit_tools(struct ay_em *e, const struct agent_yaml_doc *d)
{
    int i, id;

    ay_key(e, "tools");
    ay_seq_start(e);
    for (i = 0; i < d->ntools; i++) {
        id = d->tools[i];
        if (tools_name(id) == NULL)
            continue;
        ay_map_start(e);
        ay_kv_str(e, "name", tools_name(id));
        ay_kv_str(e, "type", "builtin");
        ay_key(e, "config");
        if (d->tool_config[id] != NULL &&
            json_object_is_type(d->tool_config[id], json_type_object)) {
            ay_json(e, d->tool_config[id], 0);
        } else {
            ay_map_start(e);
            ay_map_end(e);
        }
        ay_map_end(e);
    }
    ay_seq_end(e);
}

static void ay_emit_memory(struct ay_em *e, const struct agent_yaml_doc *d)
{
    ay_key(e, "memory");
    ay_map_start(e);
    if (d->memory_on) {
        ay_key(e, "conversational");
        ay_map_start(e);
        ay_kv_str(e, "backend", e->portable ? "sqlite" : "berkeleydb");
        ay_kv_str(e, "strategy", ay_word(agent_yaml_memory_strategies, d->memory_strategy));
        /* the runtime schema counts messages; a turn is two of them. The
         * upstream schema has no token count: the budget is a label. */
        if (!e->portable)
            ay_kv_int(e, d->memory_strategy == MEMORY_TOKEN_BUDGET ? "max_tokens" : "max_turns",
                      d->memory_limit);
        else if (d->memory_strategy != MEMORY_TOKEN_BUDGET)
            ay_kv_int(e, "max_messages", d->memory_limit);
        ay_map_end(e);
    }
    ay_map_end(e);
}

static void ay_emit_guardrail_list(struct ay_em *e, const char *key,
                                   const struct agent_yaml_guardrail *list, int n)
{
    int i;

    ay_key(e, key);
    ay_seq_start(e);
    for (i = 0; i < n; i++) {
        ay_map_start(e);
        ay_kv_str(e, "type", ay_word(agent_yaml_guardrail_types, list[i].type));
        switch (list[i].type) {
        case AGENT_YAML_CONTENT_FILTER:
            ay_kv_str(e, "action", "block");
            break;
        case AGENT_YAML_MAX_LENGTH:
            ay_kv_int(e, "max_chars", list[i].limit);
            break;
        case AGENT_YAML_COST_LIMIT:
            ay_kv_int(e, "max_tokens_per_turn", list[i].limit);
            break;
        default:    /* AGENT_YAML_PII_DETECTION */
            ay_kv_str(e, "action", "redact");
            break;
        }
        ay_map_end(e);
    }
    ay_seq_end(e);
}

static void ay_emit_document(struct ay_em *e, const struct agent_yaml_doc *d)
{
    yaml_event_t ev;

    ay_emit(e, &ev, yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING));
    if (!e->failed)
        ay_emit(e, &ev, yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 1));
    ay_map_start(e);
    ay_kv_str(e, "apiVersion", "astromesh/v1");
    ay_kv_str(e, "kind", "Agent");
    ay_emit_metadata(e, d);
    ay_key(e, "spec");
    ay_map_start(e);
    ay_emit_identity(e, d);
    ay_emit_model(e, d);
    ay_emit_prompts_orchestration(e, d);
    ay_emit_tools(e, d);
    ay_emit_memory(e, d);
    ay_key(e, "guardrails");
    ay_map_start(e);
    ay_emit_guardrail_list(e, "input", d->input, d->ninput);
    ay_emit_guardrail_list(e, "output", d->output, d->noutput);
    ay_map_end(e);
    ay_map_end(e);
    ay_map_end(e);
    if (!e->failed)
        ay_emit(e, &ev, yaml_document_end_event_initialize(&ev, 1));
    if (!e->failed)
        ay_emit(e, &ev, yaml_stream_end_event_initialize(&ev));
}

static int ay_emit_variant(const struct agent_yaml_doc *doc, int portable, char **yaml_out,
                           size_t *len_out, struct am_error *err)
{
    struct buf out = { NULL, 0, 0 };
    struct ay_em e;
    int rc = 0;

    *yaml_out = NULL;
    *len_out = 0;
    if (!yaml_emitter_initialize(&e.emitter))
        return error_set(err, AM_EINTERNAL, "cannot initialise the YAML emitter");
    e.failed = 0;
    e.portable = portable;
    yaml_emitter_set_output(&e.emitter, ay_out_write, &out);
    yaml_emitter_set_unicode(&e.emitter, 1);
    yaml_emitter_set_indent(&e.emitter, 2);
    yaml_emitter_set_width(&e.emitter, -1);
    yaml_emitter_set_break(&e.emitter, YAML_LN_BREAK);
    ay_emit_document(&e, doc);
    if (!e.failed && !yaml_emitter_flush(&e.emitter))
        e.failed = 1;
    if (e.failed || out.z == NULL) {
        rc = error_set(err, AM_EINTERNAL, "YAML emitter failed: %s",
                       e.emitter.problem ? e.emitter.problem : "bad event");
        goto out;
    }
    *len_out = out.n;
    *yaml_out = buf_take(&out);
out:
    yaml_emitter_delete(&e.emitter);
    buf_free(&out);
    return rc;
}

int agent_yaml_emit(const struct agent_yaml_doc *doc, char **yaml_out, size_t *len_out,
                    struct am_error *err)
{
    return ay_emit_variant(doc, 0, yaml_out, len_out, err);
}

int agent_yaml_emit_portable(const struct agent_yaml_doc *doc, char **yaml_out,
                             size_t *len_out, struct am_error *err)
{
    const struct agent_yaml_model *m[2] = { &doc->primary, &doc->fallback };
    int i;

    *yaml_out = NULL;
    *len_out = 0;
    for (i = 0; i < 2; i++)
        if (m[i]->present && agent_yaml_key_env(m[i]->provider) == NULL &&
            m[i]->provider != PROVIDER_OLLAMA) {
            error_set(err, AM_EINVALIDCONFIG, "This agent cannot be exported portably");
            error_add_detail(err, i == 0 ? "spec.model.primary.provider"
                                         : "spec.model.fallback.provider",
                             "this provider has no upstream equivalent");
            return err->code;
        }
    return ay_emit_variant(doc, 1, yaml_out, len_out, err);
}

void agent_yaml_portable_name(const char *name, const char *prefix, char *out, size_t cap)
{
    size_t len = strlen(name);
    int ok = len >= 2 && name[0] >= 'a' && name[0] <= 'z' && name[len - 1] != '-';

    /* upstream: ^[a-z][a-z0-9-]*[a-z0-9]$ (ours: [a-z0-9] first, one byte allowed) */
    if (ok)
        util_strlcpy(out, name, cap);
    else
        (void)util_snprintf(out, cap, "%s%s", prefix, name);
}

/* ---- load: YAML to json-c -------------------------------------------------- */

/* A plain scalar that looks like an integer or a boolean becomes one;
 * quoted scalars stay strings (our emitter quotes anything ambiguous). */
static struct json_object *ay_scalar_to_json(const yaml_event_t *ev)
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
static struct json_object *ay_node(yaml_parser_t *p, yaml_event_t *ev, int depth)
{
    struct json_object *o = NULL, *child;
    yaml_event_t next;
    char *key;

    if (depth > AY_DEPTH_MAX)
        return NULL;
    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        return ay_scalar_to_json(ev);
    case YAML_SEQUENCE_START_EVENT:
        o = json_object_new_array();
        for (;;) {
            if (!yaml_parser_parse(p, &next))
                goto fail;
            if (next.type == YAML_SEQUENCE_END_EVENT) {
                yaml_event_delete(&next);
                return o;
            }
            child = ay_node(p, &next, depth + 1);
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
            child = ay_node(p, &next, depth + 1);
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

/* The text's first document as json-c (caller puts), or NULL with *line,
 * *col (1-based) and *problem set when err_out is wanted. */
static struct json_object *ay_yaml_to_json_at(const char *text, size_t len, size_t *line,
                                              size_t *col, const char **problem)
{
    yaml_parser_t p;
    yaml_event_t ev;
    struct json_object *root = NULL;
    int done = 0, tried = 0;

    *line = *col = 0;
    *problem = NULL;
    if (!yaml_parser_initialize(&p))
        return NULL;
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    while (!done && yaml_parser_parse(&p, &ev)) {
        if (ev.type == YAML_MAPPING_START_EVENT && !tried) {
            tried = 1;
            root = ay_node(&p, &ev, 0);
        }
        done = ev.type == YAML_STREAM_END_EVENT || ev.type == YAML_NO_EVENT ||
               (tried && root == NULL);
        yaml_event_delete(&ev);
    }
    if (p.error != YAML_NO_ERROR) {
        json_object_put(root);
        root = NULL;
        *problem = p.problem != NULL ? p.problem : "not YAML";
        *line = p.problem_mark.line + 1;
        *col = p.problem_mark.column + 1;
    } else if (root == NULL) {
        *problem = tried ? "alias, non-scalar key or nesting deeper than 32"
                         : "the document is not a mapping";
        *line = p.mark.line + 1;
        *col = p.mark.column + 1;
    }
    yaml_parser_delete(&p);
    return root;
}

static struct json_object *ay_yaml_to_json(const char *text, size_t len)
{
    size_t line, col;
    const char *problem;

    return ay_yaml_to_json_at(text, len, &line, &col, &problem);
}

int agent_yaml_parse(const char *yaml, size_t len, struct json_object **out,
                     struct am_error *err)
{
    size_t line, col;
    const char *problem;

    *out = ay_yaml_to_json_at(yaml, len, &line, &col, &problem);
    if (*out != NULL)
        return 0;
    return error_set(err, AM_EBADREQ, "Malformed YAML at line %zu, column %zu: %s", line, col,
                     problem);
}

/* ---- load: json-c to the document ------------------------------------------ */

/* Walk a dotted path of object keys ("spec.model.primary"). */
static struct json_object *ay_at(struct json_object *o, const char *path)
{
    char tmp[128], *save = NULL, *k;

    util_strlcpy(tmp, path, sizeof(tmp));
    for (k = strtok_r(tmp, ".", &save); k != NULL && o != NULL; k = strtok_r(NULL, ".", &save))
        if (!json_object_object_get_ex(o, k, &o))
            return NULL;
    return o;
}

static const char *ay_str_at(struct json_object *o, const char *path)
{
    struct json_object *v = ay_at(o, path);
    return v != NULL && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

static int ay_int_at(struct json_object *o, const char *path, int dflt)
{
    struct json_object *v = ay_at(o, path);
    return v != NULL && json_object_is_type(v, json_type_int) ? json_object_get_int(v) : dflt;
}

static char *ay_strdup_at(struct json_object *o, const char *path)
{
    const char *s = ay_str_at(o, path);
    return s != NULL ? xstrdup(s) : NULL;
}

/* m absent: *out stays not present, 0. Present: provider and model required. */
static int ay_model_from(struct json_object *m, struct agent_yaml_model *out)
{
    const char *prov = ay_str_at(m, "provider"), *model = ay_str_at(m, "model"), *s;

    memset(out, 0, sizeof(*out));
    if (m == NULL)
        return 0;
    if (prov == NULL || model == NULL || (out->provider = config_provider_from_name(prov)) < 0)
        return -1;
    util_strlcpy(out->model, model, sizeof(out->model));
    if ((s = ay_str_at(m, "endpoint")) != NULL)
        util_strlcpy(out->endpoint, s, sizeof(out->endpoint));
    if ((s = ay_str_at(m, "api_key_ref")) != NULL)
        util_strlcpy(out->key_ref, s, sizeof(out->key_ref));
    out->max_tokens = ay_int_at(m, "parameters.max_tokens", 0);
    out->present = 1;
    return 0;
}

/* Known guardrail types, in order, at most AGENT_YAML_GUARDRAILS_MAX; a
 * list that is not a sequence (absent, a scalar, a mapping) has none. */
static int ay_guardrails_from(struct json_object *list, struct agent_yaml_guardrail *out)
{
    size_t i;
    int n = 0, type;

    if (!json_object_is_type(list, json_type_array))
        return 0;
    for (i = 0; i < json_object_array_length(list) &&
                n < AGENT_YAML_GUARDRAILS_MAX; i++) {
        struct json_object *g = json_object_array_get_idx(list, i);

        type = ay_word_index(ay_str_at(g, "type"), agent_yaml_guardrail_types, -1);
        if (type < 0)
            continue;
        out[n].type = type;
        out[n].limit = type == AGENT_YAML_MAX_LENGTH ? ay_int_at(g, "max_chars", 0)
                     : type == AGENT_YAML_COST_LIMIT ? ay_int_at(g, "max_tokens_per_turn", 0)
                     : 0;
        n++;
    }
    return n;
}

/* Known tools, first occurrence of each; config {} when absent. tools that
 * is not a sequence (absent, a scalar, a mapping) has none. */
static void ay_tools_from(struct json_object *list, struct agent_yaml_doc *d)
{
    size_t i;

    if (!json_object_is_type(list, json_type_array))
        return;
    for (i = 0; i < json_object_array_length(list) && d->ntools < TOOL_COUNT; i++) {
        struct json_object *t = json_object_array_get_idx(list, i), *cfg;
        int id = tools_from_name(ay_str_at(t, "name"));
        if (id < 0 || d->tool_config[id] != NULL)
            continue;
        cfg = ay_at(t, "config");
        d->tool_config[id] = cfg != NULL && json_object_is_type(cfg, json_type_object)
                                 ? json_object_get(cfg) : json_object_new_object();
        d->tools[d->ntools++] = id;
    }
}

static void ay_memory_from(struct json_object *spec, struct agent_yaml_doc *d)
{
    if (ay_at(spec, "memory.conversational") == NULL)
        return;
    d->memory_on = 1;
    d->memory_strategy = ay_word_index(ay_str_at(spec, "memory.conversational.strategy"),
                                       agent_yaml_memory_strategies, MEMORY_SLIDING_WINDOW);
    d->memory_limit = d->memory_strategy == MEMORY_TOKEN_BUDGET
                          ? ay_int_at(spec, "memory.conversational.max_tokens", 4000)
                          : ay_int_at(spec, "memory.conversational.max_turns", 40);
}

static int ay_load(const char *yaml, size_t len, struct agent_yaml_doc *doc,
                   int need_primary, struct am_error *err)
{
    struct json_object *root = ay_yaml_to_json(yaml, len), *spec = NULL;
    const char *s;
    int rc = 0;

    memset(doc, 0, sizeof(*doc));
    if (root == NULL || (spec = ay_at(root, "spec")) == NULL) {
        rc = error_set(err, AM_EINVALIDCONFIG, "not an agent YAML document");
        goto out;
    }
    if (ay_model_from(ay_at(spec, "model.primary"), &doc->primary) != 0 ||
        (need_primary && !doc->primary.present) ||
        ay_model_from(ay_at(spec, "model.fallback"), &doc->fallback) != 0) {
        rc = error_set(err, AM_EINVALIDCONFIG, "model.primary or model.fallback unusable");
        goto out;
    }
    util_strlcpy(doc->name, (s = ay_str_at(root, "metadata.name")) ? s : "", sizeof(doc->name));
    util_strlcpy(doc->namespace_, (s = ay_str_at(root, "metadata.namespace")) ? s : "",
                 sizeof(doc->namespace_));
    if ((s = ay_str_at(root, "metadata.version")) != NULL)
        doc->version = strtoull(s, NULL, 10);
    doc->display_name = ay_strdup_at(spec, "identity.display_name");
    doc->description = ay_strdup_at(spec, "identity.description");
    doc->routing = ay_word_index(ay_str_at(spec, "model.routing.strategy"),
                                 agent_yaml_routings, AGENT_YAML_ROUTE_COST);
    doc->system = ay_strdup_at(spec, "prompts.system");
    doc->pattern = ay_word_index(ay_str_at(spec, "orchestration.pattern"),
                                 agent_yaml_patterns, AGENT_YAML_PATTERN_SINGLE);
    doc->max_iterations = ay_int_at(spec, "orchestration.max_iterations", 10);
    ay_tools_from(ay_at(spec, "tools"), doc);
    ay_memory_from(spec, doc);
    doc->ninput = ay_guardrails_from(ay_at(spec, "guardrails.input"), doc->input);
    doc->noutput = ay_guardrails_from(ay_at(spec, "guardrails.output"), doc->output);
out:
    json_object_put(root);
    return rc;
}

int agent_yaml_load(const char *yaml, size_t len, struct agent_yaml_doc *doc,
                    struct am_error *err)
{
    return ay_load(yaml, len, doc, 1, err);
}

int agent_yaml_load_draft(const char *yaml, size_t len, struct agent_yaml_doc *doc,
                          struct am_error *err)
{
    return ay_load(yaml, len, doc, 0, err);
}
