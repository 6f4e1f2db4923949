/*
 * routes.c - the route table, authentication of each request, body checks,
 * and the handlers that turn a request into a module call and its answer.
 *
 * Order of checks for every request: route (404), method (405),
 * credentials (401), access to {slug}: membership with the route's role, or
 * an API key of {slug} with the route's scope (403), body size (413), media
 * type (415), JSON syntax (400), validation (422, in the modules).
 *
 * Who may call a route is written in its row of the table, never in a
 * handler: the access kind, the least role of a person, the scope an API
 * key needs (or KEY_NEVER). `astromesh-cloudd --routes` prints the table.
 * One exception, written beside its row: GET /api/v1/metrics is public in
 * the table and checks its own caller (loopback, or metrics.token).
 *
 * Must never: talk to the database directly (agent, account, usage and
 * memory do; health is agent_health); answer anything but the SPEC
 * envelope on an error.
 *
 * An agent call's business (resolve, the daily limit, execute, settle) is
 * run.c's; the run and test handlers only map HTTP to a run_call and the
 * outcome back. Nothing here calls registry_ or store_.
 */
#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "control/account.h"
#include "control/agent.h"
#include "control/agent_import.h"
#include "control/apikey.h"
#include "control/auth.h"
#include "control/members.h"
#include "control/provider_keys.h"
#include <pthread.h>
#include "state/config.h"
#include "state/metrics.h"
#include "server/forward.h"
#include "server/internal.h"
#include "state/cluster.h"
#include "server/routes.h"
#include "state/store.h"
#include "control/run.h"
#include "control/usage.h"
#include "lib/util.h"
#include "lib/utf8.h"
#include "control/wizard.h"
#include "server/openapi_doc.h"

#define JSON_MAX_DEPTH 64
#define PATH_SEGMENTS_MAX 12

/* The scope column's "no API key, whatever its scopes". */
#define KEY_NEVER SCOPE_NONE

/* What a handler gets besides the request. */
struct route_ctx {
    struct app *app;
    const struct http_request *req;
    struct http_response *resp;
    const char *slug;                  /* {slug} capture or NULL */
    const char *name;                  /* {name} capture or NULL */
    const char *item;                  /* {email}, {id}, {provider}, {n} or {a} capture or NULL */
    const char *item2;                 /* {b} capture or NULL */
    struct account_principal who;      /* authenticated user */
    int role;                          /* enum account_role in {slug} */
};

typedef void (*route_fn)(struct route_ctx *c);

struct route {
    const char *method;
    const char *pattern;               /* segments; "{slug}", "{name}" and one of
                                        * "{email}", "{id}", "{provider}" capture */
    route_fn fn;
    int access;                        /* enum route_access */
    int role;                          /* ACCESS_ORG: least enum account_role of a person */
    int scope;                         /* ACCESS_ORG: enum account_scope a key needs, or KEY_NEVER */
};

/* Reply with err, or with a generic envelope if err carries no code. */
static void reply_err(struct route_ctx *c, int rc, struct am_error *err)
{
    if (err->code == AM_OK)
        error_set(err, rc, "Request failed");
    if (err->code == AM_EINFLIGHT)  /* one of the org's runs in flight ends soon */
        http_add_header(c->resp, "Retry-After", "1");
    http_reply_error(c->resp, err);
}

/* The usual ending of a handler: out with status on success, else the
 * error envelope. Takes out. */
static void reply_with(struct route_ctx *c, int rc, struct json_object *out,
                       struct am_error *err, int status)
{
    if (rc != 0)
        reply_err(c, rc, err);
    else
        http_reply_json(c->resp, status, out);
}

/* ---- the one string policy (lib/utf8.h) at the doors: bodies, path ------------ */

/* Reply 400 bad_request naming field in the message (SPEC envelope;
 * details are 422's). */
static void reply_bad_string(struct route_ctx *c, const char *field, const char *problem)
{
    http_reply_errorf(c->resp, AM_EBADREQ, "Field '%s' %s", field, problem);
}

/* 1 (after replying 400) when a string of the parsed body o breaks the
 * policy, else 0. */
static int strings_refused(struct route_ctx *c, struct json_object *o)
{
    char field[128];
    const char *problem;

    if (utf8_check_json(o, 0, field, sizeof(field), &problem) == 0)
        return 0;
    reply_bad_string(c, field, problem);
    return 1;
}

/* 1 (after replying 400) when a path parameter, percent-decoded, breaks
 * the policy (or has a bad escape), else 0. */
static int segment_decode(const char *in, char *out, size_t cap);

static int path_params_refused(struct route_ctx *c, const char *pattern)
{
    const char *names[4] = { "slug", "name", NULL, NULL }, *vals[4], *problem = NULL;
    char dec[1024];
    int i;

    vals[0] = c->slug, vals[1] = c->name, vals[2] = c->item, vals[3] = c->item2;
    names[2] = strstr(pattern, "{email}") ? "email" : strstr(pattern, "{id}") ? "id" :
               strstr(pattern, "{provider}") ? "provider" : strstr(pattern, "{n}") ? "n" : "a";
    names[3] = "b";
    for (i = 0; i < 4; i++) {
        if (vals[i] == NULL)
            continue;
        if (segment_decode(vals[i], dec, sizeof(dec)) != 0)
            problem = "has a bad percent escape or a NUL character";
        else if (utf8_check(dec, strlen(dec), 0, &problem) == 0)
            continue;
        reply_bad_string(c, names[i], problem);
        return 1;
    }
    return 0;
}

/* Parse the body as a JSON object: a new object (caller puts), or NULL
 * after replying on error. */
static struct json_object *json_body(struct route_ctx *c)
{
    const struct http_request *req = c->req;
    struct json_tokener *tok;
    struct json_object *o;
    enum json_tokener_error e;
    const char *ct = req->content_type;
    int complete;

    if (req->body_too_large) {
        http_reply_errorf(c->resp, AM_ETOOLARGE, "Request body is larger than 1 MiB");
        return NULL;
    }
    if (ct == NULL || strncasecmp(ct, "application/json", 16) != 0 ||
        (ct[16] != '\0' && ct[16] != ';' && ct[16] != ' ')) {
        http_reply_errorf(c->resp, AM_EMEDIATYPE, "Content-Type must be application/json");
        return NULL;
    }
    if (req->body_len == 0) {
        http_reply_errorf(c->resp, AM_EBADJSON, "Request body is empty; a JSON object is required");
        return NULL;
    }
    tok = json_tokener_new_ex(JSON_MAX_DEPTH);
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);    /* UTF-8: the string policy below */
    o = json_tokener_parse_ex(tok, req->body, (int)req->body_len);
    e = json_tokener_get_error(tok);
    complete = json_tokener_get_parse_end(tok) == req->body_len;
    /* A bare number is only complete at end of input: say so explicitly. */
    if (o == NULL && e == json_tokener_continue && complete) {
        o = json_tokener_parse_ex(tok, "", 1);
        e = json_tokener_get_error(tok);
    }
    json_tokener_free(tok);
    if (e != json_tokener_success || !complete) {
        if (e == json_tokener_success)
            http_reply_errorf(c->resp, AM_EBADJSON, "Malformed JSON: trailing data after the value");
        else if (e == json_tokener_continue)
            http_reply_errorf(c->resp, AM_EBADJSON, "Malformed JSON: unexpected end of input");
        else
            http_reply_errorf(c->resp, AM_EBADJSON, "Malformed JSON: %s",
                              json_tokener_error_desc(e));
        json_object_put(o);
        return NULL;
    }
    if (o == NULL || !json_object_is_type(o, json_type_object)) {   /* NULL: JSON null */
        struct am_error err;
        error_clear(&err);
        error_set(&err, AM_EVALIDATION, "Request body must be a JSON object");
        error_add_detail(&err, "body", "must be an object");
        http_reply_error(c->resp, &err);
        json_object_put(o);
        return NULL;
    }
    if (strings_refused(c, o)) {
        json_object_put(o);
        return NULL;
    }
    return o;
}

/* In the versions block below: who calls (deploy records it), ?by=version. */
static const char *caller_name(struct route_ctx *c);
static int query_by_version(struct route_ctx *c);

/* ---- the three shapes most org handlers share ------------------------------- */

/* GET of an org's collection: fn(app, org, &out, &err), 200. */
typedef int (*org_read_fn)(struct app *app, const char *org, struct json_object **out,
                           struct am_error *err);

static void org_read(struct route_ctx *c, org_read_fn fn)
{
    struct json_object *out;
    struct am_error err;
    int rc;

    error_clear(&err);
    rc = fn(c->app, c->slug, &out, &err);
    reply_with(c, rc, out, &err, 200);
}

/* A JSON body for org, done by the caller: fn(app, org, by, body, &out,
 * &err) with body borrowed; status on success. */
typedef int (*org_write_fn)(struct app *app, const char *org, const char *by,
                            struct json_object *body, struct json_object **out,
                            struct am_error *err);

static void org_write(struct route_ctx *c, org_write_fn fn, int status)
{
    struct json_object *body, *out;
    struct am_error err;
    int rc;

    error_clear(&err);
    if ((body = json_body(c)) == NULL)
        return;
    rc = fn(c->app, c->slug, c->who.email, body, &out, &err);
    json_object_put(body);
    reply_with(c, rc, out, &err, status);
}

/* DELETE of the org's {id}/{provider} item: fn(app, org, item, &err), 204. */
typedef int (*org_delete_fn)(struct app *app, const char *org, const char *item,
                             struct am_error *err);

static void org_delete(struct route_ctx *c, org_delete_fn fn)
{
    struct am_error err;
    int rc;

    error_clear(&err);
    if ((rc = fn(c->app, c->slug, c->item, &err)) != 0)
        reply_err(c, rc, &err);
    else
        c->resp->status = 204;
}

/* ---- handlers -------------------------------------------------------------- */

static void route_health(struct route_ctx *c)
{
    struct json_object *o;
    int rc = agent_health(c->app, &o);
    struct store_rep_status st;

    /* In a group: this host's role and the master it knows (front servers
     * and balancers send writes by it). */
    if (c->app->cfg->rep_nsites > 0 && store_rep_status(c->app->store, &st) == 0) {
        const struct config_site *m = cluster_master_site(c->app) >= 0
                                    ? &c->app->cfg->rep_sites[cluster_master_site(c->app)]
                                    : NULL;
        char addr[80];

        json_object_object_add(o, "role", json_object_new_string(
            st.role == STORE_ROLE_MASTER ? "master" : "replica"));
        if (m != NULL)
            snprintf(addr, sizeof(addr), "%s:%d", m->host, m->port);
        json_object_object_add(o, "master", m != NULL ? json_object_new_string(addr) : NULL);
    }

    http_reply_json(c->resp, rc == 0 ? 200 : 503, o);
}

/* GET /config: what a client (the Studio) needs before sign-in, nothing
 * secret: the sign-in methods and the per-org limits of the config. */
static void route_config(struct route_ctx *c)
{
    const struct config *cfg = c->app->cfg;
    struct json_object *o = json_object_new_object(), *in = json_object_new_object();
    struct json_object *lim = json_object_new_object();

    json_object_object_add(in, "dev_login", json_object_new_boolean(cfg->dev_login != 0));
    json_object_object_add(in, "api_key", json_object_new_boolean(1));
    json_object_object_add(o, "sign_in", in);
    json_object_object_add(lim, "max_agents", json_object_new_int(cfg->max_agents));
    json_object_object_add(lim, "requests_per_day", json_object_new_int(cfg->requests_per_day));
    json_object_object_add(lim, "max_members", json_object_new_int(cfg->max_members));
    json_object_object_add(lim, "max_streams", json_object_new_int(cfg->max_streams));
    json_object_object_add(o, "limits", lim);
    http_reply_json(c->resp, 200, o);
}

static void route_auth_dev_login(struct route_ctx *c)
{
    struct json_object *body, *out;
    struct am_error err;
    int rc;

    error_clear(&err);
    if (!c->app->cfg->dev_login) {
        http_reply_errorf(c->resp, AM_ENOTFOUND, "Dev login is disabled on this server");
        return;
    }
    if ((body = json_body(c)) == NULL)
        return;
    rc = account_dev_login(c->app, body, &out, &err);
    json_object_put(body);
    reply_with(c, rc, out, &err, 200);
}

static void route_auth_refresh(struct route_ctx *c)
{
    struct json_object *body, *out;
    struct am_error err;
    int rc;

    error_clear(&err);
    if ((body = json_body(c)) == NULL)
        return;
    rc = account_refresh(c->app, body, &out, &err);
    json_object_put(body);
    reply_with(c, rc, out, &err, 200);
}

static void route_auth_logout(struct route_ctx *c)
{
    struct am_error err;
    int rc;

    error_clear(&err);
    if ((rc = account_logout(c->app, c->who.email, c->who.fam, &err)) != 0)
        reply_err(c, rc, &err);
    else
        c->resp->status = 204;
}

static void route_not_implemented(struct route_ctx *c)
{
    http_reply_errorf(c->resp, AM_ENOTIMPL, "This sign-in method is not implemented yet");
}

/* The OpenAPI document built into this binary (docs/openapi.json), with
 * its ETag (http.c sends Cache-Control: no-store on every answer). */
static void route_openapi(struct route_ctx *c)
{
    http_add_header(c->resp, "ETag", openapi_doc_etag);
    http_reply_raw(c->resp, 200, "application/json; charset=utf-8",
                   (const char *)openapi_doc_json, openapi_doc_json_len);
}

static void route_orgs_me(struct route_ctx *c)
{
    struct json_object *out;
    struct am_error err;
    int rc;

    error_clear(&err);
    rc = account_org_me(c->app, c->who.email, &out, &err);
    reply_with(c, rc, out, &err, 200);
}

static void route_orgs_list(struct route_ctx *c)
{
    struct json_object *out;
    struct am_error err;
    int rc;

    error_clear(&err);
    rc = account_org_list(c->app, c->who.email, &out, &err);
    reply_with(c, rc, out, &err, 200);
}

static void route_agents_list(struct route_ctx *c)
{
    org_read(c, agent_list);
}

static void route_agents_create(struct route_ctx *c)
{
    struct json_object *body, *out;
    struct am_error err;
    int rc;

    error_clear(&err);
    if ((body = json_body(c)) == NULL)
        return;
    rc = agent_create(c->app, c->slug, body, &out, &err);
    json_object_put(body);
    reply_with(c, rc, out, &err, 201);
}

static void route_agent_get(struct route_ctx *c)
{
    struct json_object *out;
    struct am_error err;
    int rc;

    error_clear(&err);
    rc = agent_get(c->app, c->slug, c->name, &out, &err);
    reply_with(c, rc, out, &err, 200);
}

static void route_agent_put(struct route_ctx *c)
{
    struct json_object *body, *out;
    struct am_error err;
    int rc;

    error_clear(&err);
    if ((body = json_body(c)) == NULL)
        return;
    rc = agent_update(c->app, c->slug, c->name, body, &out, &err);
    json_object_put(body);
    reply_with(c, rc, out, &err, 200);
}

static void route_agent_delete(struct route_ctx *c)
{
    struct am_error err;
    int rc;

    error_clear(&err);
    if ((rc = agent_delete(c->app, c->slug, c->name, &err)) != 0) {
        reply_err(c, rc, &err);
        return;
    }
    c->resp->status = 204;
}

static void route_agent_deploy(struct route_ctx *c)
{
    struct json_object *out;
    struct am_error err;
    int rc;

    error_clear(&err);
    rc = agent_deploy(c->app, c->slug, c->name, caller_name(c), &out, &err);
    reply_with(c, rc, out, &err, 200);
}

static void route_agent_pause(struct route_ctx *c)
{
    struct json_object *out;
    struct am_error err;
    int rc;

    error_clear(&err);
    rc = agent_pause(c->app, c->slug, c->name, &out, &err);
    reply_with(c, rc, out, &err, 200);
}

/* ---- the agent YAML: ?portable=, import (issue 17) ------------------------ */

static const char *query_param(struct route_ctx *c, const char *name, size_t *len);

static void route_agent_yaml(struct route_ctx *c)
{
    struct am_error err;
    char *yaml;
    size_t len, plen = 0;
    const char *portable = query_param(c, "portable", &plen);
    int rc, want;

    error_clear(&err);
    want = portable != NULL && plen == 4 && strncmp(portable, "true", 4) == 0;
    if (portable != NULL && !want && !(plen == 5 && strncmp(portable, "false", 5) == 0)) {
        http_reply_errorf(c->resp, AM_EBADREQ, "Query parameter portable must be true or false");
        return;
    }
    rc = want ? agent_export_portable(c->app, c->slug, c->name, &yaml, &len, &err)
              : agent_yaml(c->app, c->slug, c->name, &yaml, &len, &err);
    if (rc != 0) {
        reply_err(c, rc, &err);
        return;
    }
    http_reply_raw(c->resp, 200, "application/yaml; charset=utf-8", yaml, len);
    free(yaml);
}

/* POST /agents/import: an Astromesh agent YAML becomes a draft. */
static void route_agents_import(struct route_ctx *c)
{
    const char *ct = c->req->content_type, *problem;
    struct json_object *out = NULL;
    struct am_error err;
    size_t n = 0;
    int rc;

    error_clear(&err);
    if (c->req->body_too_large) {
        http_reply_errorf(c->resp, AM_ETOOLARGE, "Request body is larger than 1 MiB");
        return;
    }
    if (ct != NULL)
        n = strncasecmp(ct, "application/yaml", 16) == 0 ? 16
          : strncasecmp(ct, "application/x-yaml", 18) == 0 ? 18 : 0;
    if (n == 0 || (ct[n] != '\0' && ct[n] != ';' && ct[n] != ' ')) {
        http_reply_errorf(c->resp, AM_EMEDIATYPE, "Content-Type must be application/yaml");
        return;
    }
    if (c->req->body_len == 0) {
        http_reply_errorf(c->resp, AM_EBADREQ, "Request body is empty; an agent YAML is required");
        return;
    }
    if (utf8_check(c->req->body, c->req->body_len, UTF8_MULTILINE, &problem) != 0) {
        reply_bad_string(c, "body", problem);
        return;
    }
    rc = agent_import(c->app, c->slug, c->req->body, c->req->body_len, &out, &err);
    reply_with(c, rc, out, &err, 201);
}

/* ---- execution ------------------------------------------------------------------ */

static void rate_headers(struct route_ctx *c, const struct run_outcome *o)
{
    char buf[32];

    snprintf(buf, sizeof(buf), "%d", o->limit);
    http_add_header(c->resp, "X-RateLimit-Limit", buf);
    snprintf(buf, sizeof(buf), "%d", o->remaining < 0 ? 0 : o->remaining);
    http_add_header(c->resp, "X-RateLimit-Remaining", buf);
    snprintf(buf, sizeof(buf), "%lld", (long long)o->reset);
    http_add_header(c->resp, "X-RateLimit-Reset", buf);
    if (o->test_limit >= 0) {     /* a test: its own daily allowance (issue 15) */
        snprintf(buf, sizeof(buf), "%d", o->test_limit);
        http_add_header(c->resp, "X-TestLimit-Limit", buf);
        snprintf(buf, sizeof(buf), "%d", o->test_remaining < 0 ? 0 : o->test_remaining);
        http_add_header(c->resp, "X-TestLimit-Remaining", buf);
    }
}

/* The fields of a run's answer, added to o: the JSON answer and the
 * stream's done event carry the same ones. */
static void answer_fields(struct json_object *o, const struct run_outcome *out)
{
    json_object_object_add(o, "answer", json_object_new_string(out->res.answer));
    json_object_object_add(o, "session_id", json_object_new_string(out->res.session_id));
    json_object_object_add(o, "tokens_used", json_object_new_int(out->res.tokens_used));
    json_object_object_add(o, "model", json_object_new_string(out->res.model));
    json_object_object_add(o, "latency_ms", json_object_new_int64(out->res.latency_ms));
    json_object_object_add(o, "trace_id", json_object_new_string(out->res.trace_id));
    json_object_object_add(o, "version", json_object_new_int64((int64_t)out->res.version));
    if (out->res.blocked)
        json_object_object_add(o, "blocked", json_object_new_boolean(1));
}

/* Server-Sent Events for run and test (Accept: text/event-stream). The
 * stream starts with the first piece of the answer, so anything refused
 * before it (validation, not deployed, the daily limit, a provider that
 * failed before answering) keeps its HTTP status and JSON envelope; after
 * it, an error is an error event. The runtime may call the sink once with
 * the whole answer or once per token: either is a series of token events
 * whose contents, joined, are the done event's answer. */
struct sse_run {
    struct route_ctx *c;
    const struct run_outcome *out;     /* its limit, remaining and reset: the headers */
};

/* An event {"type":event, ...fields of o} on the stream; takes o. */
static int sse_send(struct route_ctx *c, const char *event, struct json_object *o)
{
    struct json_object *e = json_object_new_object();
    int rc;

    json_object_object_add(e, "type", json_object_new_string(event));
    json_object_object_foreach(o, k, v)
        json_object_object_add(e, k, json_object_get(v));
    json_object_put(o);
    rc = http_stream_event(c->req->stream, event, e);
    json_object_put(e);
    return rc;
}

static int sse_begin(struct route_ctx *c, const struct run_outcome *out)
{
    if (http_stream_started(c->req->stream))
        return 0;
    rate_headers(c, out);
    return http_stream_start(c->req->stream, c->resp);
}

/* runtime_sink.token: one token event. Non-zero (the client is gone)
 * cancels the run. */
static int sse_token(void *arg, const char *text, size_t n)
{
    struct sse_run *s = arg;
    struct json_object *o;

    if (n == 0)
        return 0;
    if (n > INT_MAX || sse_begin(s->c, s->out) != 0)
        return 1;
    o = json_object_new_object();
    json_object_object_add(o, "content", json_object_new_string_len(text, (int)n));
    return sse_send(s->c, "token", o) != 0;
}

/* The end of a streamed run: done, or the error (as an event once the
 * stream has started, else as an ordinary answer). */
static void sse_finish(struct route_ctx *c, int rc, const struct run_outcome *out,
                       struct am_error *err)
{
    struct json_object *o;

    if (rc == AM_ECANCELLED)        /* nobody is listening any more */
        return;
    if (rc != 0 && !http_stream_started(c->req->stream)) {
        rate_headers(c, out);
        reply_err(c, rc, err);
        return;
    }
    if (sse_begin(c, out) != 0)
        return;
    o = json_object_new_object();
    if (rc == 0) {
        answer_fields(o, out);
        (void)sse_send(c, "done", o);
        return;
    }
    if (err->code == AM_OK)
        error_set(err, rc, "Request failed");
    json_object_object_add(o, "error", json_object_new_string(error_name(err->code)));
    json_object_object_add(o, "message", json_object_new_string(err->message));
    (void)sse_send(c, "error", o);
}

/* POST run or test: the body to a run_call, run.c's outcome to HTTP: a
 * JSON answer, or events when the client asks for text/event-stream. */
static void route_agent_execute(struct route_ctx *c, int mode)
{
    struct run_call call = { .org = c->slug, .name = c->name, .mode = mode };
    struct run_outcome out;
    struct sse_run sse = { c, &out };
    /* no liveness hook: lighttpd and Apache tell a FastCGI backend that is
     * not writing nothing of a client that left, so a vanished SSE client
     * is seen at the next event written */
    struct runtime_sink sink = { sse_token, &sse, NULL };
    struct json_object *body, *o;
    struct am_error err;
    int rc, stream = c->req->stream != NULL && http_accepts(c->req->accept, "text/event-stream");

    memset(&out, 0, sizeof(out));
    error_clear(&err);
    if ((body = json_body(c)) == NULL || (rc = run_parse_body(body, &call, &err)) != 0) {
        run_limits(c->app, c->slug, mode, &out);
        rate_headers(c, &out);
        if (body != NULL)
            http_reply_error(c->resp, &err);
        goto out;
    }
    if (stream)
        call.sink = &sink;
    rc = run_agent(c->app, &call, &out, &err);
    util_strlcpy(c->resp->trace_id, out.res.trace_id, sizeof(c->resp->trace_id));
    if (stream) {
        sse_finish(c, rc, &out, &err);
        goto out;
    }
    rate_headers(c, &out);
    if (rc != 0) {
        reply_err(c, rc, &err);
        goto out;
    }
    o = json_object_new_object();
    answer_fields(o, &out);
    http_reply_json(c->resp, 200, o);
out:
    run_outcome_free(&out);
    json_object_put(body);
}

static void route_agent_run(struct route_ctx *c)
{
    route_agent_execute(c, RUNTIME_RUN);
}

static void route_agent_test(struct route_ctx *c)
{
    route_agent_execute(c, RUNTIME_TEST);
}

/* ?days=N, 1..90, default 30. Returns N or -1 after replying 422. */
static int query_days(struct route_ctx *c)
{
    const char *q = c->req->query, *p;
    struct am_error err;
    char *end;
    long v;

    for (p = q; p != NULL && *p != '\0'; p = strchr(p, '&') ? strchr(p, '&') + 1 : NULL) {
        if (strncmp(p, "days=", 5) != 0)
            continue;
        v = strtol(p + 5, &end, 10);
        if (end != p + 5 && (*end == '\0' || *end == '&') && v >= 1 && v <= 90)
            return (int)v;
        error_clear(&err);
        error_set(&err, AM_EVALIDATION, "Invalid usage query");
        error_add_detail(&err, "days", "must be an integer between 1 and 90");
        http_reply_error(c->resp, &err);
        return -1;
    }
    return 30;
}

static void route_usage(struct route_ctx *c)
{
    struct json_object *out;
    struct am_error err;
    int days = query_days(c), rc;

    if (days < 0)
        return;
    error_clear(&err);
    rc = usage_report(c->app, c->slug, days, c->app->cfg->requests_per_day,
                      c->app->cfg->tests_per_day, query_by_version(c), &out, &err);
    reply_with(c, rc, out, &err, 200);
}

/* ---- API keys (control/apikey.c) ------------------------------------------------ */

static void route_keys_list(struct route_ctx *c)
{
    org_read(c, apikey_list);
}

static void route_keys_create(struct route_ctx *c)
{
    org_write(c, apikey_create, 201);
}

static void route_key_delete(struct route_ctx *c)
{
    org_delete(c, apikey_delete);
}

/* ---- the org's own provider keys (BYOK) --------------------------------------- */

static void route_providers_list(struct route_ctx *c)
{
    org_read(c, provider_keys_list);
}

static void route_providers_put(struct route_ctx *c)
{
    struct json_object *body, *out;
    struct am_error err;
    int rc;

    error_clear(&err);
    if ((body = json_body(c)) == NULL)
        return;
    rc = provider_keys_put(c->app, c->slug, body, &out, &err);
    json_object_put(body);
    reply_with(c, rc, out, &err, 200);
}

static void route_providers_delete(struct route_ctx *c)
{
    org_delete(c, provider_keys_delete);
}

/* ---- organisation settings, members and invitations (members.c) --------------- */

/* Percent-decode a path segment into out (cap bytes). Returns 0, or -1 if
 * it does not fit, has a bad escape or decodes to a NUL. */
static int segment_decode(const char *in, char *out, size_t cap)
{
    size_t n = 0;

    for (; *in != '\0'; in++) {
        int c = (unsigned char)*in;

        if (c == '%') {
            char hex[3] = { in[1], in[1] ? in[2] : '\0', '\0' };
            char *end;

            if (!isxdigit((unsigned char)hex[0]) || !isxdigit((unsigned char)hex[1]))
                return -1;
            c = (int)strtol(hex, &end, 16);
            in += 2;
            if (c == 0)
                return -1;
        }
        if (n + 1 >= cap)
            return -1;
        out[n++] = (char)c;
    }
    out[n] = '\0';
    return 0;
}

static void route_org_patch(struct route_ctx *c)
{
    org_write(c, members_org_update, 200);
}

static void route_members_list(struct route_ctx *c)
{
    org_read(c, members_list);
}

static void route_members_invite(struct route_ctx *c)
{
    org_write(c, members_invite, 201);
}

static void route_member_delete(struct route_ctx *c)
{
    char email[MEMBERS_EMAIL_MAX];
    struct am_error err;
    int rc;

    error_clear(&err);
    if (segment_decode(c->item, email, sizeof(email)) != 0) {
        http_reply_errorf(c->resp, AM_EMEMBERNOTFOUND, "No member or invitation for that address");
        return;
    }
    if ((rc = members_remove(c->app, c->slug, c->who.email, email, &err)) != 0)
        reply_err(c, rc, &err);
    else
        c->resp->status = 204;
}

/* ---- versions and rollback (control/agent.c, control/versions.c) ---------------- */

/* Who is calling, as a version records it: the e-mail of a person, or
 * "key:<id>" for an API key. Borrowed: valid until this thread's next call. */
static const char *caller_name(struct route_ctx *c)
{
    static _Thread_local char buf[64];

    if (c->who.kind != PRINCIPAL_KEY)
        return c->who.email;
    (void)util_snprintf(buf, sizeof(buf), "key:%s", c->who.key_id);
    return buf;
}

/* The value of ?name= in the query string (borrowed up to '&'), or NULL. */
static const char *query_param(struct route_ctx *c, const char *name, size_t *len)
{
    const char *p = c->req->query;
    size_t n = strlen(name);

    for (; p != NULL && *p != '\0'; p = strchr(p, '&') ? strchr(p, '&') + 1 : NULL)
        if (strncmp(p, name, n) == 0 && p[n] == '=') {
            *len = strcspn(p + n + 1, "&");
            return p + n + 1;
        }
    return NULL;
}

/* 1 when the query asks ?by=version (any other "by" is ignored). */
static int query_by_version(struct route_ctx *c)
{
    size_t len;
    const char *v = query_param(c, "by", &len);

    return v != NULL && len == 7 && strncmp(v, "version", 7) == 0;
}

/* ?name=N in lo..hi into *out (def when absent). 0, or -1 after adding the
 * detail (name, problem) to err. */
static int query_int(struct route_ctx *c, const char *name, long long lo, long long hi,
                     long long def, const char *problem, long long *out, struct am_error *err)
{
    size_t len;
    const char *v = query_param(c, name, &len);
    char buf[24], *end;

    *out = def;
    if (v == NULL)
        return 0;
    if (len > 0 && len < sizeof(buf) && v[0] >= '0' && v[0] <= '9') {
        memcpy(buf, v, len);
        buf[len] = '\0';
        *out = strtoll(buf, &end, 10);
        if (*end == '\0' && *out >= lo && *out <= hi)
            return 0;
    }
    error_add_detail(err, name, problem);
    return -1;
}

static void route_agent_versions(struct route_ctx *c)
{
    struct json_object *out = NULL;
    struct am_error err;
    long long limit, before;
    int bad, rc;

    error_clear(&err);
    error_set(&err, AM_EVALIDATION, "Invalid versions query");
    bad = query_int(c, "limit", 1, 100, 20, "must be an integer between 1 and 100", &limit, &err);
    bad |= query_int(c, "before", 1, 9999999999LL, 0, "must be a positive integer", &before,
                     &err);
    if (bad) {
        http_reply_error(c->resp, &err);
        return;
    }
    error_clear(&err);
    rc = agent_versions(c->app, c->slug, c->name, (int)limit, before, &out, &err);
    reply_with(c, rc, out, &err, 200);
}

static void route_agent_version_get(struct route_ctx *c)
{
    struct json_object *out;
    struct am_error err;
    int rc;

    error_clear(&err);
    rc = agent_version_get(c->app, c->slug, c->name, c->item, &out, &err);
    reply_with(c, rc, out, &err, 200);
}

static void route_agent_version_diff(struct route_ctx *c)
{
    struct json_object *out;
    struct am_error err;
    int rc;

    error_clear(&err);
    rc = agent_version_diff(c->app, c->slug, c->name, c->item, c->item2, &out, &err);
    reply_with(c, rc, out, &err, 200);
}

static void route_agent_rollback(struct route_ctx *c)
{
    struct json_object *body, *out;
    struct am_error err;
    int rc;

    error_clear(&err);
    if ((body = json_body(c)) == NULL)
        return;
    rc = agent_rollback(c->app, c->slug, c->name, caller_name(c), body, &out, &err);
    json_object_put(body);
    reply_with(c, rc, out, &err, 200);
}

/* ---- the operator's view: GET /api/v1/metrics --------------------------------- */

/* Is addr (REMOTE_ADDR) a loopback address? */
static int loopback(const char *addr)
{
    return addr != NULL && (strncmp(addr, "127.", 4) == 0 || strcmp(addr, "::1") == 0 ||
                            strncmp(addr, "::ffff:127.", 11) == 0);
}

/* Does authorization carry "Bearer <want>"? want's length and bytes are
 * compared in time that does not depend on where they differ. */
static int bearer_is(const char *authorization, const char *want)
{
    const char *got;
    size_t lg, lw = strlen(want), i;
    unsigned char d;

    if (lw == 0 || authorization == NULL || strncasecmp(authorization, "Bearer ", 7) != 0)
        return 0;
    got = authorization + 7;
    lg = strlen(got);
    d = lg != lw;
    for (i = 0; i < lw; i++)
        d |= (unsigned char)((i < lg ? (unsigned char)got[i] : 0) ^ (unsigned char)want[i]);
    return d == 0;
}

/* The metrics' label set of each route-table row, then of the unmatched
 * row (ROW_UNMATCHED): built once, after the table (labels_init). */
static char row_labels[METRICS_ROUTES][160];
static const char *row_label_ptrs[METRICS_ROUTES];
static int nrows;
static void labels_init(void);

/* Public in the table, with its own check: loopback, or the bearer token
 * of metrics.token. Anything else: 403. */
static void route_metrics(struct route_ctx *c)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    struct metrics_extra x;
    struct buf b = {0};
    char *text;

    if (!loopback(c->req->remote_addr) &&
        !bearer_is(c->req->authorization, c->app->cfg->metrics_token)) {
        http_reply_errorf(c->resp, AM_EFORBIDDEN,
                          "Metrics are served to loopback clients or with the metrics token");
        return;
    }
    pthread_once(&once, labels_init);
    metrics_collect(c->app, &x);
    buf_init(&b, 16384);
    metrics_render(&b, row_label_ptrs, nrows, &x);
    buf_puts(&b, "");
    text = buf_take(&b);
    http_reply_raw(c->resp, 200, "text/plain; version=0.0.4; charset=utf-8", text, strlen(text));
    free(text);
}

#define ORG "/api/v1/orgs/{slug}"
#define AGENT ORG "/agents/{name}"

/* Access columns: who may call a route (SPEC section 3). */
#define PUBLIC ACCESS_PUBLIC, ROLE_NONE, KEY_NEVER
#define USER ACCESS_USER, ROLE_NONE, KEY_NEVER
#define MEMBER_OR_KEY(scope) ACCESS_ORG, ROLE_MEMBER, (scope)
#define MEMBER_ONLY ACCESS_ORG, ROLE_MEMBER, KEY_NEVER
#define ADMIN_ONLY ACCESS_ORG, ROLE_ADMIN, KEY_NEVER

static const struct route routes[] = {
    { "GET", "/api/v1/health", route_health, PUBLIC },
    { "GET", "/api/v1/metrics", route_metrics, PUBLIC },    /* loopback or metrics.token */
    { "GET", "/api/v1/config", route_config, PUBLIC },
    { "POST", "/api/v1/auth/dev/login", route_auth_dev_login, PUBLIC },
    { "POST", "/api/v1/auth/refresh", route_auth_refresh, PUBLIC },
    { "POST", "/api/v1/auth/logout", route_auth_logout, USER },
    { "POST", "/api/v1/auth/google", route_not_implemented, PUBLIC },
    { "POST", "/api/v1/auth/github", route_not_implemented, PUBLIC },
    { "GET", "/api/v1/openapi.json", route_openapi, PUBLIC },
    { "GET", "/api/v1/orgs/me", route_orgs_me, USER },
    { "GET", "/api/v1/orgs", route_orgs_list, USER },
    { "GET", ORG "/agents", route_agents_list, MEMBER_OR_KEY(SCOPE_RUN) },
    { "POST", ORG "/agents", route_agents_create, MEMBER_OR_KEY(SCOPE_MANAGE) },
    { "POST", ORG "/agents/import", route_agents_import, MEMBER_OR_KEY(SCOPE_MANAGE) },
    { "GET", AGENT, route_agent_get, MEMBER_OR_KEY(SCOPE_RUN) },
    { "PUT", AGENT, route_agent_put, MEMBER_OR_KEY(SCOPE_MANAGE) },
    { "DELETE", AGENT, route_agent_delete, MEMBER_OR_KEY(SCOPE_MANAGE) },
    { "POST", AGENT "/deploy", route_agent_deploy, MEMBER_OR_KEY(SCOPE_MANAGE) },
    { "POST", AGENT "/pause", route_agent_pause, MEMBER_OR_KEY(SCOPE_MANAGE) },
    { "GET", AGENT "/yaml", route_agent_yaml, MEMBER_OR_KEY(SCOPE_RUN) },
    { "POST", AGENT "/run", route_agent_run, MEMBER_OR_KEY(SCOPE_RUN) },
    { "POST", AGENT "/test", route_agent_test, MEMBER_OR_KEY(SCOPE_RUN) },
    { "GET", ORG "/usage", route_usage, MEMBER_OR_KEY(SCOPE_MANAGE) },
    { "GET", AGENT "/versions", route_agent_versions, MEMBER_OR_KEY(SCOPE_RUN) },
    { "GET", AGENT "/versions/{n}", route_agent_version_get, MEMBER_OR_KEY(SCOPE_RUN) },
    { "GET", AGENT "/versions/{a}/diff/{b}", route_agent_version_diff, MEMBER_OR_KEY(SCOPE_RUN) },
    { "POST", AGENT "/rollback", route_agent_rollback, MEMBER_OR_KEY(SCOPE_MANAGE) },
    { "PATCH", ORG, route_org_patch, ADMIN_ONLY },
    { "GET", ORG "/members", route_members_list, MEMBER_ONLY },
    { "POST", ORG "/members/invite", route_members_invite, ADMIN_ONLY },
    { "DELETE", ORG "/members/{email}", route_member_delete, ADMIN_ONLY },
    { "GET", ORG "/keys", route_keys_list, ADMIN_ONLY },
    { "POST", ORG "/keys", route_keys_create, ADMIN_ONLY },
    { "DELETE", ORG "/keys/{id}", route_key_delete, ADMIN_ONLY },
    { "GET", ORG "/providers", route_providers_list, ADMIN_ONLY },
    { "POST", ORG "/providers", route_providers_put, ADMIN_ONLY },
    { "DELETE", ORG "/providers/{provider}", route_providers_delete, ADMIN_ONLY },
};

#define NROUTES ((int)(sizeof(routes) / sizeof(routes[0])))
#define ROW_UNMATCHED NROUTES          /* requests no row matched: 404, 405 */
#define ROW_STREAM (NROUTES + 1)       /* queries on the WebSocket (server/stream.c) */
_Static_assert(NROUTES + 2 <= METRICS_ROUTES, "metrics: raise METRICS_ROUTES");

int routes_stream_row(void)
{
    return ROW_STREAM;
}

static void labels_init(void)
{
    int i;

    for (i = 0; i < NROUTES; i++)
        snprintf(row_labels[i], sizeof(row_labels[i]), "method=\"%s\",route=\"%s\"",
                 routes[i].method, routes[i].pattern);
    snprintf(row_labels[ROW_UNMATCHED], sizeof(row_labels[0]), "method=\"-\",route=\"-\"");
    snprintf(row_labels[ROW_STREAM], sizeof(row_labels[0]), "method=\"WS\",route=\"%s\"",
             AGENT "/stream");
    for (i = 0; i <= ROW_STREAM; i++)
        row_label_ptrs[i] = row_labels[i];
    nrows = ROW_STREAM + 1;
}

void routes_print(FILE *f)
{
    static const char *const access[] = { "public", "user", "org" };
    static const char *const roles[] = { "-", "member", "admin", "owner" };
    size_t i;

    for (i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        const struct route *r = &routes[i];
        int org = r->access == ACCESS_ORG;

        fprintf(f, "%s\t%s\t%s\t%s\t%s\n", r->method, r->pattern, access[r->access],
                org ? roles[r->role] : "-",
                r->scope == SCOPE_MANAGE ? "manage" : r->scope == SCOPE_RUN ? "run" : "never");
    }
}

/* ---- dispatch -------------------------------------------------------------- */

/* Split path into at most PATH_SEGMENTS_MAX segments (in place, in buf).
 * One trailing slash is ignored. Returns the count, or -1 if too many. */
static int split_path(char *buf, char *seg[PATH_SEGMENTS_MAX])
{
    int n = 0;
    char *p = buf, *slash;
    size_t len = strlen(buf);

    if (len > 1 && buf[len - 1] == '/')
        buf[len - 1] = '\0';
    if (*p == '/')
        p++;
    while (*p != '\0') {
        if (n == PATH_SEGMENTS_MAX)
            return -1;
        seg[n++] = p;
        if ((slash = strchr(p, '/')) == NULL)
            break;
        *slash = '\0';
        p = slash + 1;
    }
    return n;
}

/* Does the route's pattern match seg[0..n)? Fills the captures of c. */
static int pattern_match(const char *pattern, char *seg[], int n, struct route_ctx *c)
{
    char pbuf[128], *pseg[PATH_SEGMENTS_MAX];
    int pn, i;

    util_strlcpy(pbuf, pattern, sizeof(pbuf));
    if ((pn = split_path(pbuf, pseg)) != n)
        return 0;
    for (i = 0; i < n; i++) {
        if (strcmp(pseg[i], "{slug}") == 0)
            c->slug = seg[i];
        else if (strcmp(pseg[i], "{name}") == 0)
            c->name = seg[i];
        else if (strcmp(pseg[i], "{email}") == 0 || strcmp(pseg[i], "{id}") == 0 ||
                 strcmp(pseg[i], "{provider}") == 0 || strcmp(pseg[i], "{n}") == 0 ||
                 strcmp(pseg[i], "{a}") == 0)
            c->item = seg[i];
        else if (strcmp(pseg[i], "{b}") == 0)
            c->item2 = seg[i];
        else if (strcmp(pseg[i], seg[i]) != 0)
            return 0;
    }
    return 1;
}

/* Check the credentials; fills c->who. A bearer token when there is an
 * Authorization header, else the X-API-Key header. Replies and returns -1
 * on failure. */
static int authenticate(struct route_ctx *c)
{
    const char *h = c->req->authorization, *key = c->req->api_key;
    struct am_error err;

    error_clear(&err);
    if ((h == NULL || *h == '\0') && key != NULL && *key != '\0') {
        if (apikey_authenticate(c->app, key, &c->who, &err) != 0) {
            http_reply_error(c->resp, &err);
            return -1;
        }
        return 0;
    }
    if (h == NULL || *h == '\0') {
        http_reply_errorf(c->resp, AM_EUNAUTH, "Missing credentials: send Authorization: "
                          "Bearer <token> or X-API-Key: <key>");
        return -1;
    }
    if (strncasecmp(h, "Bearer ", 7) != 0) {
        http_reply_errorf(c->resp, AM_EUNAUTH, "Authorization must use the Bearer scheme");
        return -1;
    }
    for (h += 7; *h == ' '; h++)
        ;
    if (account_authenticate(c->app, h, &c->who, &err) != 0) {
        http_reply_error(c->resp, &err);
        return -1;
    }
    return 0;
}

int routes_decide(int access, int least_role, int scope, const struct account_principal *who,
                  int own_org, int role, const char **why)
{
    int need = scope == SCOPE_RUN ? (SCOPE_RUN | SCOPE_MANAGE) : scope;

    *why = NULL;
    if (access == ACCESS_PUBLIC)
        return 0;
    if (access == ACCESS_USER) {
        if (who->kind == PRINCIPAL_USER)
            return 0;
        *why = "API keys cannot be used here; sign in";
    } else if (who->kind == PRINCIPAL_KEY) {
        if (!own_org)
            *why = "This API key does not have access to this organization";
        else if (scope == KEY_NEVER)
            *why = "API keys cannot manage keys, providers, members or the organization; "
                   "sign in as an owner or admin";
        else if ((who->scopes & need) == 0)
            *why = scope == SCOPE_MANAGE ? "This API key lacks the 'manage' scope"
                                         : "This API key lacks the 'run' scope";
        else
            return 0;
    } else if (role == ROLE_NONE) {
        *why = "You do not have access to this organization";
    } else if (role < least_role) {
        *why = "Only an owner or an admin of this organization may do this";
    } else {
        return 0;
    }
    return AM_EFORBIDDEN;
}

/* Apply routes_decide to c->who on route r and c->slug; sets c->role for a
 * person. Replies (401 or 403) and returns -1 if the caller may not. */
static int authorize(struct route_ctx *c, const struct route *r)
{
    const struct account_principal *who = &c->who;
    const char *why;
    int own_org = 0;

    if (r->access == ACCESS_ORG && wizard_slug_valid(c->slug)) {
        if (who->kind == PRINCIPAL_KEY)
            own_org = strcmp(who->org, c->slug) == 0;
        else
            c->role = account_member_role(c->app, &c->who, c->slug);
    }
    if (routes_decide(r->access, r->role, r->scope, who, own_org, c->role, &why) == 0)
        return 0;
    /* a token of a user deleted since it was issued: not a 403 */
    if (r->access == ACCESS_ORG && who->kind == PRINCIPAL_USER && c->role == ROLE_NONE &&
        !account_user_exists(c->app, who->email))
        http_reply_errorf(c->resp, AM_EUNAUTH, "Unknown user");
    else
        http_reply_errorf(c->resp, AM_EFORBIDDEN, "%s", why);
    return -1;
}

static void set_allow(struct http_response *resp, char *seg[], int n)
{
    struct route_ctx probe;
    char allow[64] = "";
    size_t i;

    for (i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        memset(&probe, 0, sizeof(probe));
        if (pattern_match(routes[i].pattern, seg, n, &probe)) {
            if (allow[0] != '\0')
                strncat(allow, ", ", sizeof(allow) - strlen(allow) - 1);
            strncat(allow, routes[i].method, sizeof(allow) - strlen(allow) - 1);
        }
    }
    http_add_header(resp, "Allow", allow);
}

/* ---- a replication group ------------------------------------------------- */

/* Does route r execute on the host that received it (a run or a test: the
 * provider call happens here, only its accounting goes to the master)? */
static int runs_here(const struct route *r)
{
    return r->fn == route_agent_run || r->fn == route_agent_test;
}

/* In a group, before the route runs: a forwarding header must carry the
 * group's secret; a write reaching a replica goes to the master; a request
 * carrying X-Astromesh-After waits until this host has that commit.
 * Returns 1 when it answered the request itself. */
static int group_before_route(struct route_ctx *c, const struct route *r)
{
    struct app *app = c->app;
    const struct config *cfg = app->cfg;
    const char *url;
    int rc;

    if (cfg->rep_nsites == 0)
        return 0;
    if (c->req->cluster != NULL && !forward_secret_ok(c->req->cluster, cfg->rep_secret)) {
        http_reply_errorf(c->resp, AM_EUNAUTH, "Bad " CLUSTER_SECRET_HEADER " secret");
        return 1;
    }
    if (strcmp(r->method, "GET") != 0 && !runs_here(r) && !store_rep_is_master(app->store)) {
        /* forwarded once at most: a host that is not master either says so */
        if (c->req->cluster != NULL || (url = cluster_master_url(app)) == NULL ||
            forward_request(url, cfg->rep_secret, c->req, 60000, c->resp) != 0) {
            http_add_header(c->resp, "Retry-After", "1");
            http_reply_errorf(c->resp, AM_ENOMASTER, "no master");  /* error.c's message */
        } else {
            metrics_rep_forwarded();
        }
        return 1;
    }
    if (c->req->after != NULL) {
        rc = store_wait_applied(app->store, c->req->after, cfg->rep_read_wait_ms);
        if (rc == AM_EBADREQ) {
            http_reply_errorf(c->resp, AM_EBADREQ, "X-Astromesh-After: not a commit token");
            return 1;
        }
        if (rc != 0) {
            http_add_header(c->resp, "Retry-After", "1");
            http_reply_errorf(c->resp, AM_EUNAVAILABLE, "This host has not caught up with "
                              "that write yet; retry");
            return 1;
        }
    }
    return 0;
}

/* The position of this request's last commit, here or (a run on a
 * replica) at the master: any host of the group serves a read sent with it
 * in X-Astromesh-After after it. resp NULL: forget it. */
static void commit_token_header(struct http_response *resp)
{
    char token[STORE_TOKEN_HEX];
    int have = store_token_take(token);

    if (cluster_token_take(token))
        have = 1;
    if (have && resp != NULL && resp->status < 300)
        http_add_header(resp, "X-Astromesh-Commit", token);
}

/* The accounting calls of the group's replicas (server/internal.c): only
 * with the group's secret; to anyone else the path does not exist.
 * Returns 1 when it answered. */
static int internal_call(struct route_ctx *c)
{
    const struct config *cfg = c->app->cfg;

    if (strcmp(c->req->path, CLUSTER_ACCOUNTING_PATH) != 0)
        return 0;
    c->resp->route = ROW_UNMATCHED;
    if (cfg->rep_nsites == 0 || !forward_secret_ok(c->req->cluster, cfg->rep_secret)) {
        http_reply_errorf(c->resp, AM_ENOTFOUND, "No such route");
        return 1;
    }
    if (strcmp(c->req->method, "POST") != 0) {
        http_reply_errorf(c->resp, AM_EMETHOD, "Method %s is not allowed here", c->req->method);
        return 1;
    }
    if (!store_rep_is_master(c->app->store)) {
        http_add_header(c->resp, "Retry-After", "1");
        http_reply_errorf(c->resp, AM_ENOMASTER, "not master");  /* error.c's message */
        return 1;
    }
    commit_token_header(NULL);
    internal_accounting(c->app, c->req, c->resp);
    commit_token_header(c->resp);
    return 1;
}

void routes_handle(void *app, const struct http_request *req, struct http_response *resp)
{
    struct route_ctx c;
    char buf[1024], *seg[PATH_SEGMENTS_MAX];
    const struct route *r = NULL;
    int n, path_known = 0;
    size_t i;

    memset(&c, 0, sizeof(c));
    c.app = app;
    c.req = req;
    c.resp = resp;
    if (internal_call(&c))
        return;
    if (util_strlcpy(buf, req->path, sizeof(buf)) >= sizeof(buf) ||
        (n = split_path(buf, seg)) < 0) {
        http_reply_errorf(resp, AM_ENOTFOUND, "No such route");
        return;
    }
    for (i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        c.slug = c.name = c.item = NULL;
        if (!pattern_match(routes[i].pattern, seg, n, &c))
            continue;
        path_known = 1;
        if (strcmp(routes[i].method, req->method) == 0) {
            r = &routes[i];
            break;
        }
    }
    resp->route = r != NULL ? (int)(r - routes) : ROW_UNMATCHED;
    if (r == NULL) {
        if (path_known) {
            set_allow(resp, seg, n);
            http_reply_errorf(resp, AM_EMETHOD, "Method %s is not allowed here", req->method);
        } else {
            http_reply_errorf(resp, AM_ENOTFOUND, "No such route");
        }
        return;
    }
    /* For the request log line: the pattern, never the raw path. */
    resp->route_pattern = r->pattern;
    if (path_params_refused(&c, r->pattern))
        return;
    util_strlcpy(resp->org, c.slug != NULL ? c.slug : "", sizeof(resp->org));
    util_strlcpy(resp->agent, c.name != NULL ? c.name : "", sizeof(resp->agent));
    if (group_before_route(&c, r))
        return;
    if (r->access != ACCESS_PUBLIC && (authenticate(&c) != 0 || authorize(&c, r) != 0))
        return;
    metrics_in_flight(resp->route, 1);
    commit_token_header(NULL);      /* forget a token of an earlier request */
    r->fn(&c);
    metrics_in_flight(resp->route, -1);
    commit_token_header(resp);
    /* Log what went wrong on our side, once; provider failures (502/504)
     * are the provider's and are in the run log. */
    if (resp->status >= 500 && resp->status != 502 && resp->status != 504)
        log_warn("%s %s answered %d", req->method, req->path, resp->status);
}

/* ---- the stream's door (server/stream.c) --------------------------------------- */

int routes_authorize_stream(struct app *app, const char *slug, const char *authorization,
                            const char *api_key, struct http_response *resp)
{
    static const struct route stream_row = {
        "GET", AGENT "/stream", NULL, MEMBER_OR_KEY(SCOPE_RUN)
    };
    struct http_request req;
    struct route_ctx c;

    memset(&req, 0, sizeof(req));
    memset(&c, 0, sizeof(c));
    req.method = "GET";
    req.path = "";
    req.query = "";
    req.authorization = authorization;
    req.api_key = api_key;
    c.app = app;
    c.req = &req;
    c.resp = resp;
    c.slug = slug;
    if (authenticate(&c) != 0 || authorize(&c, &stream_row) != 0)
        return -1;
    return 0;
}
