/*
 * runtime.h - executing a deployed agent: load its compiled YAML from the
 * registry and run the pipeline (input guardrails -> memory -> prompt ->
 * model router with fallback -> tool loop under the agent's orchestration
 * -> output guardrails -> memory save), with a trace id per run.
 */
#ifndef AM_RUNTIME_H
#define AM_RUNTIME_H

#include <stdint.h>
#include <json-c/json.h>
#include "state/app.h"
#include "lib/error.h"

enum runtime_mode { RUNTIME_RUN = 0, RUNTIME_TEST = 1 };

#define RUNTIME_QUERY_MAX (32 * 1024)

/* Where the answer goes, piece by piece, as the model produces it: the
 * same pipeline serves a buffered answer (no sink) and a stream. */
struct runtime_sink {
    /* The next n bytes of the answer (after the output guardrails), in
     * order. Returns 0 to go on, non-zero to cancel the run (the client has
     * gone): the provider call is abandoned and the run ends AM_ECANCELLED. */
    int (*token)(void *arg, const char *text, size_t n);
    void *arg;
    /* NULL, or 0 once the client has gone: polled while a model call waits
     * on its provider (at least once a second), so a vanished client
     * cancels the call even between tokens. */
    int (*alive)(void *arg);
};

struct runtime_result;

struct runtime_request {
    const char *org;
    const char *name;
    const char *query;              /* 1 byte .. RUNTIME_QUERY_MAX */
    const char *session_id;         /* NULL: generate one; else memory_session_valid() */
    struct json_object *context;    /* NULL or an object; borrowed */
    int mode;                       /* enum runtime_mode */
    const struct runtime_sink *sink;/* NULL: the answer is only in the result */
    /* Called once, when the agent is resolved and before anything reaches a
     * provider (the daily limit is taken here). A non-zero return, an AM_E*
     * code with err filled, ends the run with it. NULL: always admitted. */
    int (*admit)(void *arg, struct am_error *err);
    void *admit_arg;
    /* Called (with admit_arg) once per run, just before its first provider
     * call is sent, with the result so far (trace id, version): the run is
     * recorded as reaching a provider before its answer is awaited, so a
     * worker killed meanwhile still leaves it counted. NULL: nothing. */
    void (*before_provider)(void *arg, const struct runtime_result *res);
};

struct runtime_result {
    char *answer;                   /* malloc'd */
    char session_id[132];
    int tokens_used;                /* prompt + completion, every call of the run */
    char model[200];                /* "provider/model" that produced the answer */
    int64_t latency_ms;
    char trace_id[40];
    int blocked;                    /* output guardrail replaced the answer */
    int provider_called;            /* a provider was reached (the run counts) */
    int admitted;                   /* admit() accepted the run */
    int memory_error;               /* AM_E* of a memory save that failed, 0 if none */
    uint64_t version;               /* the agent version that answered (metadata.version) */
};

/* Set up the provider clients now rather than at the first model call
 * (they set themselves up on first use; workers leave it to that, so an
 * idle worker never loads the TLS library's state). */
int runtime_init(void);

/* Run the agent org/name, which must be in the registry. Fills *res (free
 * with runtime_result_free) even on provider errors (trace id, latency).
 * Errors: AM_ENOTDEPLOYED (not in the registry), whatever admit returned,
 * AM_EGUARDRAIL, AM_EPROVIDER, AM_ETIMEOUT, AM_ECANCELLED (the sink said
 * stop). A memory save that fails does not fail the run: it is in
 * res->memory_error. */
int runtime_execute(struct app *app, const struct runtime_request *req,
                    struct runtime_result *res, struct am_error *err);

void runtime_result_free(struct runtime_result *res);

#endif
