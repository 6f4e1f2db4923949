/*
 * agent_yaml.h - the compiled agent YAML (apiVersion astromesh/v1, kind
 * Agent): its words, its emitter and its reader, in one place.
 *
 * struct agent_yaml_doc is the document as plain C: the wizard fills one
 * from a WizardConfig and emits it (agent_yaml_emit); the runtime loads one
 * from the YAML it finds in the registry (agent_yaml_load) and runs it.
 * The words of the format (routing strategies, orchestration patterns,
 * memory strategies, guardrail types) are the tables below, indexed by the
 * enums; tool names are the tools module's (tools_name/tools_from_name).
 *
 * Pure: no I/O, no logging.
 */
#ifndef AM_AGENT_YAML_H
#define AM_AGENT_YAML_H

#include <stddef.h>
#include <stdint.h>
#include <json-c/json.h>
#include "lib/error.h"
#include "runtime/memory.h"
#include "runtime/tools/tools.h"

#define AGENT_YAML_NAME_MAX 128      /* metadata.name ("org__agent") and namespace, bytes + NUL */
#define AGENT_YAML_GUARDRAILS_MAX 8  /* entries kept per guardrail list */

/* model.routing.strategy; agent_yaml_routings[] names them. */
enum agent_yaml_routing {
    AGENT_YAML_ROUTE_COST = 0, AGENT_YAML_ROUTE_LATENCY, AGENT_YAML_ROUTE_QUALITY,
    AGENT_YAML_ROUTE_ROUND_ROBIN
};
/* orchestration.pattern; agent_yaml_patterns[] names them. */
enum agent_yaml_pattern {
    AGENT_YAML_PATTERN_SINGLE = 0, AGENT_YAML_PATTERN_REACT, AGENT_YAML_PATTERN_PLAN
};
/* A guardrail entry's type; agent_yaml_guardrail_types[] names them. */
enum agent_yaml_guardrail_type {
    AGENT_YAML_PII_DETECTION = 0,   /* action: redact */
    AGENT_YAML_CONTENT_FILTER,      /* action: block */
    AGENT_YAML_MAX_LENGTH,          /* max_chars: limit */
    AGENT_YAML_COST_LIMIT           /* max_tokens_per_turn: limit */
};

/* The words, NULL-terminated, index = the enum value (the wizard validates
 * against the same tables). Memory strategies are indexed by enum
 * memory_strategy (memory.h). */
extern const char *const agent_yaml_routings[];
extern const char *const agent_yaml_patterns[];
extern const char *const agent_yaml_memory_strategies[];
extern const char *const agent_yaml_guardrail_types[];

/* model.primary / model.fallback */
struct agent_yaml_model {
    int present;
    int provider;                /* enum config_provider */
    char model[129];
    char endpoint[256];          /* "" = none */
    char key_ref[96];            /* "server:openai", "org:openai" (the running org's) or "" */
    int max_tokens;              /* parameters.max_tokens; 0 = none (provider default) */
};

struct agent_yaml_guardrail {
    int type;                    /* enum agent_yaml_guardrail_type */
    int limit;                   /* max_chars or max_tokens_per_turn; 0 otherwise */
};

/* The document. Strings are malloc'd (or NULL = absent) and freed by
 * agent_yaml_doc_clear; a zeroed struct is an empty document. */
struct agent_yaml_doc {
    char name[AGENT_YAML_NAME_MAX];       /* metadata.name, the registry key */
    char namespace_[AGENT_YAML_NAME_MAX]; /* metadata.namespace, the org */
    uint64_t version;                     /* metadata.version: N of "N.0.0" */
    char *display_name;                   /* identity.display_name */
    char *description;                    /* identity.description (persona); NULL/"" = none */
    struct agent_yaml_model primary, fallback;
    int routing;                          /* enum agent_yaml_routing */
    char *system;                         /* prompts.system */
    int pattern;                          /* enum agent_yaml_pattern */
    int max_iterations;                   /* orchestration.max_iterations */
    int tools[TOOL_COUNT];                /* enum tools_id, in document order, unique */
    int ntools;
    struct json_object *tool_config[TOOL_COUNT];  /* by tool id; owned; NULL = {} */
    int memory_on;                        /* memory.conversational present */
    int memory_strategy;                  /* enum memory_strategy */
    int memory_limit;                     /* max_turns (messages) or max_tokens */
    struct agent_yaml_guardrail input[AGENT_YAML_GUARDRAILS_MAX];
    int ninput;
    struct agent_yaml_guardrail output[AGENT_YAML_GUARDRAILS_MAX];
    int noutput;
};

/* Free what doc owns and zero it. doc may be NULL. */
void agent_yaml_doc_clear(struct agent_yaml_doc *doc);

/* Write doc as the agent YAML. Returns 0 and a malloc'd NUL-terminated
 * *yaml_out (caller frees) with *len_out, or AM_EINTERNAL when libyaml
 * refuses (e.g. a string that is not UTF-8). */
int agent_yaml_emit(const struct agent_yaml_doc *doc, char **yaml_out, size_t *len_out,
                    struct am_error *err);

/* Read the agent YAML text (len bytes) into *doc (OUT; clear it with
 * agent_yaml_doc_clear even on failure). Unknown words take their
 * defaults (cost_optimized, single_pass, sliding_window); unknown tools and
 * guardrail types are skipped. Returns 0, or AM_EINVALIDCONFIG when the text
 * is not YAML, has no spec, has no usable model.primary, or a model entry
 * names no known provider. */
int agent_yaml_load(const char *yaml, size_t len, struct agent_yaml_doc *doc,
                    struct am_error *err);

/* agent_yaml_load for a draft's document: model.primary may be absent. */
int agent_yaml_load_draft(const char *yaml, size_t len, struct agent_yaml_doc *doc,
                          struct am_error *err);

/* The portable variant (GET /yaml?portable=true): the document the open-
 * source Astromesh runtime's schema and loader accept. metadata.name is the
 * agent's own name (agent_yaml_portable_name), namespace the org; model
 * blocks name an upstream adapter and api_key_env, never a key or key ref;
 * memory backend sqlite; single_pass becomes react with max_iterations 1;
 * what upstream cannot say (a renamed name, a token budget) rides in
 * metadata.labels. Returns 0 and *yaml_out (caller frees), AM_EINVALIDCONFIG
 * with a detail when a model's provider has no upstream equivalent (echo),
 * or AM_EINTERNAL. */
int agent_yaml_emit_portable(const struct agent_yaml_doc *doc, char **yaml_out,
                             size_t *len_out, struct am_error *err);

/* The labels the portable variant writes (upstream ignores labels). */
#define AGENT_YAML_LABEL_NAME "astromesh.cloud/name"
#define AGENT_YAML_LABEL_BUDGET "astromesh.cloud/memory-max-tokens"

/* name as upstream's ^[a-z][a-z0-9-]*[a-z0-9]$ wants it: itself when it
 * matches, else prefix + name ("7up" -> "agent-7up"). Writes out (cap
 * bytes, truncated). */
void agent_yaml_portable_name(const char *name, const char *prefix, char *out, size_t cap);

/* The conventional API key variable of a provider ("OPENAI_API_KEY"), or
 * NULL (ollama, echo). */
const char *agent_yaml_key_env(int provider);

/* Our provider for an upstream model block's provider and endpoint (NULL =
 * none): openai, ollama, our own names, or openai_compat at a known
 * compatibility endpoint. -1 when none of ours. */
int agent_yaml_portable_provider(const char *upstream, const char *endpoint);

/* Parse YAML text into json-c (the first document; plain true/false and
 * integers typed, everything else a string). Returns 0 and *out (caller
 * puts), or AM_EBADREQ naming the line and column in the message. */
int agent_yaml_parse(const char *yaml, size_t len, struct json_object **out,
                     struct am_error *err);

#endif
