/*
 * run.h - one call of a deployed agent, whatever carries it: POST run and
 * test (buffered JSON or Server-Sent Events) and each query of the
 * WebSocket stream all go through run_agent, so they resolve the agent,
 * take the daily limit, execute, settle usage and report what is left of
 * the day in exactly one way.
 */
#ifndef AM_RUN_H
#define AM_RUN_H

#include <stdint.h>
#include <json-c/json.h>
#include "state/app.h"
#include "runtime/runtime.h"
#include "lib/error.h"

/* What to run. Strings and context are borrowed (from the request body,
 * which must outlive the call). */
struct run_call {
    const char *org;
    const char *name;
    const char *query;
    const char *session_id;             /* NULL: a new session */
    struct json_object *context;        /* NULL or an object */
    int mode;                           /* RUNTIME_RUN: the daily limit; RUNTIME_TEST: the
                                           daily test allowance */
    const struct runtime_sink *sink;    /* NULL: buffered */
};

/* What came of it. */
struct run_outcome {
    struct runtime_result res;          /* the answer and its trace (run_outcome_free) */
    int limit;                          /* runs a day (X-RateLimit-Limit) */
    int remaining;                      /* of today's, after this call (X-RateLimit-Remaining) */
    int64_t reset;                      /* epoch seconds of the next UTC midnight */
    int test_limit;                     /* a test: tests a day (X-TestLimit-Limit); else -1 */
    int test_remaining;                 /* a test: of today's tests, after this call */
};

/* Check a run/test body {"query","session_id","context"} (each problem is
 * a detail of one AM_EVALIDATION) and fill call's query, session_id and
 * context, borrowed from body. Returns 0 or AM_EVALIDATION. */
int run_parse_body(struct json_object *body, struct run_call *call, struct am_error *err);

/* Run call. On every return out is filled as far as it got (limit and
 * reset always; remaining always; res when the runtime ran: free with
 * run_outcome_free). Errors: AM_EAGENTNOTFOUND, AM_ENOTDEPLOYED (message
 * naming the state), AM_ERATELIMIT, AM_ETESTLIMIT, and the runtime's (AM_EGUARDRAIL,
 * AM_EPROVIDER, AM_ETIMEOUT, AM_ECANCELLED, AM_EUNAVAILABLE). A run that
 * never reached a provider is given back to the limit. Logs, once with the
 * trace id, a run whose usage or memory turn could not be written (the
 * client still gets its answer). */
int run_agent(struct app *app, const struct run_call *call, struct run_outcome *out,
              struct am_error *err);

/* The X-RateLimit figures of org (the daily limit of runs) and, for a
 * call of mode RUNTIME_TEST, its X-TestLimit figures (the daily test
 * allowance), without running anything (for an answer refused before
 * run_agent). */
void run_limits(struct app *app, const char *org, int mode, struct run_outcome *out);

void run_outcome_free(struct run_outcome *out);

#endif
