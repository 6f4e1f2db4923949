/*
 * usage.h - daily request and token counters per org and agent, the daily
 * limit, and the run log.
 *
 * Counters are per UTC day. Accepting a run and counting it is one
 * transaction on the org's day record, so under any concurrency no more
 * than the limit are accepted.
 */
#ifndef AM_USAGE_H
#define AM_USAGE_H

#include <stdint.h>
#include <json-c/json.h>
#include "app.h"
#include "error.h"

/* Accept one run of agent for org today if fewer than limit were accepted:
 * counts it and sets *remaining to what is left. AM_ERATELIMIT (with
 * *remaining = 0) when the limit is reached. */
int usage_acquire(struct app *app, const char *org, const char *agent, int limit,
                  int *remaining, struct am_error *err);

/* Undo an accepted run that never reached a provider (blocked input). */
void usage_release(struct app *app, const char *org, const char *agent);

/* Add the tokens a counted run used. */
void usage_add_tokens(struct app *app, const char *org, const char *agent, int tokens);

/* Runs left today (limit - accepted, at least 0). */
int usage_remaining(struct app *app, const char *org, int limit);

/* Epoch seconds of the next UTC midnight (X-RateLimit-Reset). */
int64_t usage_next_reset(void);

/* GET /orgs/{slug}/usage?days=N body. */
int usage_report(struct app *app, const char *org, int days, int limit,
                 struct json_object **out, struct am_error *err);

/* Append one run to the run log (best effort: a failure is not the run's). */
void usage_log_run(struct app *app, const char *trace_id, const char *org,
                   const char *agent, const char *mode, const char *model, int tokens,
                   int64_t latency_ms, const char *outcome);

#endif
