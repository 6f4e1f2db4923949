/*
 * run.c - the business flow of one agent call (run.h): resolve, admit
 * (the daily limit), execute, settle, report.
 *
 * Owns no state. The order matters and is the same for every carrier:
 *  1. the runtime resolves the agent in the registry, once;
 *  2. then admits the run: a run or a test takes one of the org's
 *     limits.max_in_flight slots (shared by every process, given back when
 *     the call returns, or by the supervisor when its process died), then
 *     a `run` takes one request of the org's daily limit (exact across
 *     processes, quota.c), a `test` one of the org's daily test allowance
 *     (limits.tests_per_day, kept the same way);
 *  3. executes the pipeline, streaming into the caller's sink if any;
 *  4. the run is settled in usage: counted with its tokens, or given back
 *     if it never reached a provider; the run log line is written either
 *     way (usage.c says what a settle's commit guarantees).
 * An agent found not deployed costs nothing: nothing was taken.
 *
 * Must never: speak HTTP (routes.c and stream.c map this to their wire);
 * take the runs' limit for a test (nor the tests' for a run); count a run
 * twice or give it back twice.
 */
#include <string.h>
#include "control/run.h"
#include "control/agent.h"
#include "control/usage.h"
#include "control/wizard.h"
#include "runtime/memory.h"
#include "state/config.h"
#include "state/app.h"
#include "state/streams.h"
#include "lib/util.h"

int run_parse_body(struct json_object *body, struct run_call *call, struct am_error *err)
{
    struct json_object *v;

    error_set(err, AM_EVALIDATION, "Invalid run request");
    json_object_object_foreach(body, key, val) {
        (void)val;
        if (strcmp(key, "query") != 0 && strcmp(key, "session_id") != 0 &&
            strcmp(key, "context") != 0)
            error_add_detail(err, key, "unknown field");
    }
    if (!json_object_object_get_ex(body, "query", &v))
        error_add_detail(err, "query", "required");
    else if (!json_object_is_type(v, json_type_string))
        error_add_detail(err, "query", "must be a string");
    else if (json_object_get_string_len(v) < 1 ||
             json_object_get_string_len(v) > RUNTIME_QUERY_MAX)
        error_add_detail(err, "query", "must be between 1 and 32768 bytes");
    else if (strlen(json_object_get_string(v)) != (size_t)json_object_get_string_len(v))
        error_add_detail(err, "query", "must not contain NUL characters");
    else
        call->query = json_object_get_string(v);
    if (json_object_object_get_ex(body, "session_id", &v) && !json_object_is_type(v, json_type_null)) {
        if (!json_object_is_type(v, json_type_string) || !memory_session_valid(json_object_get_string(v)))
            error_add_detail(err, "session_id",
                             "must be 1 to 128 characters of A-Z a-z 0-9 . _ : -");
        else
            call->session_id = json_object_get_string(v);
    }
    if (json_object_object_get_ex(body, "context", &v) && !json_object_is_type(v, json_type_null)) {
        if (!json_object_is_type(v, json_type_object))
            error_add_detail(err, "context", "must be an object");
        else
            call->context = v;
    }
    if (err->ndetails > 0)
        return AM_EVALIDATION;
    error_clear(err);
    return 0;
}

void run_limits(struct app *app, const char *org, int mode, struct run_outcome *out)
{
    out->limit = app->cfg->requests_per_day;
    out->remaining = usage_remaining(app, org, out->limit);
    out->reset = usage_next_reset();
    out->test_limit = out->test_remaining = -1;
    if (mode == RUNTIME_TEST) {
        out->test_limit = app->cfg->tests_per_day;
        out->test_remaining = usage_remaining_test(app, org, out->test_limit);
    }
}

/* The admission of one run (runtime_request.admit). */
struct run_admission {
    struct app *app;
    const struct run_call *call;
    struct run_outcome *out;
    struct usage_claim claim;
    int in_flight;                      /* the org's in-flight slot, -1: none */
};

/* Take one of the org's limits.max_in_flight slots, held by this process
 * (the supervisor gives back a dead process's). Returns 0 (held, or not
 * held because the table is full: the cap is then not enforced for this
 * run) or AM_EINFLIGHT. */
static int run_take_in_flight(struct run_admission *ad, struct am_error *err)
{
    int slot;

    if (ad->app->inflight == NULL)
        return 0;
    slot = streams_acquire(ad->app->inflight, ad->call->org, ad->app->cfg->max_in_flight);
    if (slot == AM_ESTREAMLIMIT)
        return error_set(err, AM_EINFLIGHT, "This organization already has %d runs in "
                         "flight; retry when one has finished",
                         ad->app->cfg->max_in_flight);
    ad->in_flight = slot >= 0 ? slot : -1;
    return 0;
}

static int run_admit(void *arg, struct am_error *err)
{
    struct run_admission *ad = arg;
    int rc;

    if ((rc = run_take_in_flight(ad, err)) != 0) {
        ad->out->remaining = usage_remaining(ad->app, ad->call->org, ad->out->limit);
        return rc;
    }
    if (ad->call->mode != RUNTIME_RUN) {
        /* a test: its own allowance; the runs' figure is only shown */
        ad->out->remaining = usage_remaining(ad->app, ad->call->org, ad->out->limit);
        rc = usage_acquire_test(ad->app, ad->call->org, ad->out->test_limit, &ad->claim,
                                &ad->out->test_remaining, err);
        if (rc != 0)
            ad->out->test_remaining = 0;
        return rc;
    }
    rc = usage_acquire(ad->app, ad->call->org, ad->out->limit, &ad->claim,
                       &ad->out->remaining, err);
    if (rc != 0)
        ad->out->remaining = 0;
    return rc;
}

/* runtime_request.before_provider: the run reaches a provider; record it
 * first, so a worker killed while the provider answers leaves it counted
 * (usage_in_flight). */
static void run_before_provider(void *arg, const struct runtime_result *res)
{
    struct run_admission *ad = arg;
    struct usage_run ur = {
        .trace_id = res->trace_id, .org = ad->call->org, .agent = ad->call->name,
        .version = res->version, .mode = ad->call->mode == RUNTIME_RUN ? "run" : "test",
        .model = "", .outcome = USAGE_IN_FLIGHT, .claim = &ad->claim,
    };

    (void)usage_in_flight(ad->app, &ur);    /* failing: as before, given back at a death */
}

/* Count the admitted run, or give it back if no provider saw it. */
static void run_settle(struct run_admission *ad, int rc)
{
    const struct run_call *call = ad->call;
    struct runtime_result *res = &ad->out->res;
    struct usage_run ur = {
        .trace_id = res->trace_id, .org = call->org, .agent = call->name,
        .version = res->version,
        .mode = call->mode == RUNTIME_RUN ? "run" : "test", .model = res->model,
        .outcome = rc == 0 ? (res->blocked ? "blocked_output" : "ok") : error_name(rc),
        .claim = &ad->claim,
        .refund = !res->provider_called,
        .tokens = res->tokens_used, .latency_ms = res->latency_ms,
    };
    int settled = usage_settle(ad->app, &ur);

    /* The provider has answered: the client gets the answer even if its
     * record could not be written, and the operator a log line. */
    if (settled != 0)
        log_error("run %s of %s/%s: its usage and run log line were not written (%s)",
                  res->trace_id, call->org, call->name, error_name(settled));
    if (ur.refund && call->mode == RUNTIME_RUN)
        ad->out->remaining++;
    else if (ur.refund)
        ad->out->test_remaining++;
}

/* AM_EAGENTNOTFOUND, or AM_ENOTDEPLOYED naming the agent's state. */
static int run_not_deployed(struct app *app, const struct run_call *call, struct am_error *err)
{
    int st = wizard_name_valid(call->name) ? agent_status(app, call->org, call->name)
                                           : AM_EAGENTNOTFOUND;

    error_clear(err);
    if (st == AM_EAGENTNOTFOUND)
        return error_set(err, AM_EAGENTNOTFOUND, "Agent '%s' not found", call->name);
    if (st < 0)
        return error_set(err, AM_EUNAVAILABLE, "Storage unavailable, retry");
    if (st == AGENT_DEPLOYED)       /* deployed, but not loaded: a full or stale registry */
        return error_set(err, AM_EUNAVAILABLE, "Agent '%s' is being loaded, retry",
                         call->name);
    return error_set(err, AM_ENOTDEPLOYED, "Agent '%s' is in %s state. Deploy it first.",
                     call->name, agent_status_name(st));
}

int run_agent(struct app *app, const struct run_call *call, struct run_outcome *out,
              struct am_error *err)
{
    struct run_admission ad = { app, call, out, { 0, -1 }, -1 };
    struct runtime_request req = {
        .org = call->org, .name = call->name, .query = call->query,
        .session_id = call->session_id, .context = call->context, .mode = call->mode,
        .sink = call->sink, .admit = run_admit, .admit_arg = &ad,
        .before_provider = run_before_provider,
    };
    int rc;

    memset(out, 0, sizeof(*out));
    run_limits(app, call->org, call->mode, out);
    if (!wizard_name_valid(call->name))
        return run_not_deployed(app, call, err);
    rc = runtime_execute(app, &req, &out->res, err);
    streams_release(app->inflight, ad.in_flight);    /* every path: -1 is fine */
    if (out->res.admitted)
        run_settle(&ad, rc);
    else if (rc != AM_ERATELIMIT && rc != AM_ETESTLIMIT)
        run_limits(app, call->org, call->mode, out);
    if (out->res.memory_error != 0)
        log_error("run %s of %s/%s: its memory turn was not saved (%s)", out->res.trace_id,
                  call->org, call->name, error_name(out->res.memory_error));
    if (rc == AM_ENOTDEPLOYED)
        return run_not_deployed(app, call, err);
    return rc;
}

void run_outcome_free(struct run_outcome *out)
{
    runtime_result_free(&out->res);
}
