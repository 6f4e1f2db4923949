/*
 * internal.c - the accounting of runs that execute on a replica, done at
 * the master (see internal.h and state/cluster.h).
 *
 * Owns: the decoding of a call into the very calls the master makes for its
 * own runs: usage_acquire(_test), usage_in_flight, usage_settle,
 * memory_append, memory_delete; and the last use of an API key used on a
 * replica (apikey_touch_hash).
 *
 * Must never: be reached without the group's secret (routes.c checks);
 * trust a field's type (a missing or wrong one is a 400); run anything but
 * those calls.
 */
#include <string.h>
#include <json-c/json.h>
#include "control/apikey.h"
#include "control/usage.h"
#include "lib/error.h"
#include "runtime/memory.h"
#include "server/internal.h"
#include "state/app.h"

static const char *str_field(struct json_object *o, const char *k)
{
    struct json_object *v;

    return json_object_object_get_ex(o, k, &v) && json_object_is_type(v, json_type_string)
           ? json_object_get_string(v) : NULL;
}

static int64_t int_field(struct json_object *o, const char *k, int *ok)
{
    struct json_object *v;

    if (!json_object_object_get_ex(o, k, &v) || !json_object_is_type(v, json_type_int)) {
        *ok = 0;
        return 0;
    }
    return json_object_get_int64(v);
}

static int bool_field(struct json_object *o, const char *k)
{
    struct json_object *v;

    return json_object_object_get_ex(o, k, &v) && json_object_get_boolean(v);
}

/* "in_flight" and "settle": the run as the replica describes it. */
static int run_call(struct app *app, struct json_object *b, int settle)
{
    struct usage_run run;
    struct usage_claim claim;
    struct json_object *c;
    int ok = 1;

    memset(&run, 0, sizeof(run));
    run.trace_id = str_field(b, "trace_id");
    run.org = str_field(b, "org");
    run.agent = str_field(b, "agent");
    run.mode = str_field(b, "mode");
    run.model = str_field(b, "model");
    run.outcome = str_field(b, "outcome");
    run.version = (uint64_t)int_field(b, "version", &ok);
    run.tokens = (int)int_field(b, "tokens", &ok);
    run.latency_ms = int_field(b, "latency_ms", &ok);
    run.refund = bool_field(b, "refund");
    if (json_object_object_get_ex(b, "claim", &c) && c != NULL) {
        claim.day = (int)int_field(c, "day", &ok);
        claim.hold = (int)int_field(c, "hold", &ok);
        run.claim = &claim;
    }
    if (!ok || run.trace_id == NULL || run.org == NULL || run.agent == NULL ||
        run.mode == NULL || run.model == NULL || run.outcome == NULL)
        return AM_EBADREQ;
    return settle ? usage_settle(app, &run) : usage_in_flight(app, &run);
}

static int acquire_call(struct app *app, struct json_object *b, struct json_object *out,
                        struct am_error *err)
{
    struct usage_claim claim = { 0, -1 };
    const char *org = str_field(b, "org");
    int ok = 1, remaining = 0, rc;
    int limit = (int)int_field(b, "limit", &ok);

    if (!ok || org == NULL || limit < 0)
        return AM_EBADREQ;
    rc = bool_field(b, "tests")
         ? usage_acquire_test(app, org, limit, &claim, &remaining, err)
         : usage_acquire(app, org, limit, &claim, &remaining, err);
    json_object_object_add(out, "day", json_object_new_int(claim.day));
    json_object_object_add(out, "hold", json_object_new_int(claim.hold));
    json_object_object_add(out, "remaining", json_object_new_int(remaining));
    return rc;
}

static int memory_call(struct app *app, struct json_object *b, int append)
{
    const char *agent = str_field(b, "agent_id"), *session = str_field(b, "session");
    const char *user = str_field(b, "user"), *assistant = str_field(b, "assistant");
    int ok = 1, mode = (int)int_field(b, "mode", &ok), strategy = 0, limit = 0;

    if (append) {
        strategy = (int)int_field(b, "strategy", &ok);
        limit = (int)int_field(b, "limit", &ok);
    }
    if (!ok || agent == NULL || session == NULL || (append && (user == NULL || assistant == NULL)))
        return AM_EBADREQ;
    if (!append) {
        memory_delete(app, agent, mode, session);
        return 0;
    }
    return memory_append(app, agent, mode, session, user, assistant, strategy, limit);
}

static int key_touch_call(struct app *app, struct json_object *b, struct json_object *out)
{
    const char *hex = str_field(b, "key");
    int64_t stored = 0;
    int rc;

    if (hex == NULL)
        return AM_EBADREQ;
    if ((rc = apikey_touch_hash(app, hex, &stored)) == 0)
        json_object_object_add(out, "last_used_at", json_object_new_int64(stored));
    return rc;
}

void internal_accounting(struct app *app, const struct http_request *req,
                         struct http_response *resp)
{
    struct json_object *b = json_tokener_parse(req->body), *out;
    const char *op = b != NULL ? str_field(b, "op") : NULL;
    struct am_error err;
    int rc;

    error_clear(&err);
    if (op == NULL) {
        json_object_put(b);
        http_reply_errorf(resp, AM_EBADREQ, "Not an accounting call");
        return;
    }
    out = json_object_new_object();
    if (strcmp(op, "acquire") == 0)
        rc = acquire_call(app, b, out, &err);
    else if (strcmp(op, "in_flight") == 0 || strcmp(op, "settle") == 0)
        rc = run_call(app, b, strcmp(op, "settle") == 0);
    else if (strcmp(op, "memory_append") == 0 || strcmp(op, "memory_delete") == 0)
        rc = memory_call(app, b, strcmp(op, "memory_append") == 0);
    else if (strcmp(op, "key_touch") == 0)
        rc = key_touch_call(app, b, out);
    else
        rc = AM_EBADREQ;
    json_object_put(b);
    if (rc == AM_EBADREQ && err.code == 0) {
        json_object_put(out);
        http_reply_errorf(resp, AM_EBADREQ, "Malformed accounting call");
        return;
    }
    json_object_object_add(out, "rc", json_object_new_int(rc));
    json_object_object_add(out, "message", json_object_new_string(err.code ? err.message : ""));
    http_reply_json(resp, 200, out);
}
