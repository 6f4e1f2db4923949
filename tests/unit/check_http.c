/*
 * check_http.c - unit tests for http.c without a FastCGI peer: request
 * parsing from a FastCGI parameter array (method, path/query split, header
 * lookup), body reading through an in-memory reader (Content-Length, the
 * 1 MiB limit, bodies without a length as a chunked request sends them,
 * short reads, NULs), the one error table with its SPEC envelope, the
 * Accept header's parsing and the formatting of a Server-Sent Event.
 * Table-driven throughout.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <json-c/json.h>
#include "server/http.h"
#include "lib/error.h"

#define NCASES(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* ---- request parameters ------------------------------------------------------ */

static const struct {
    const char *uri;        /* REQUEST_URI, NULL = absent */
    const char *path;
    const char *query;
} uri_cases[] = {
    { "/api/v1/health", "/api/v1/health", "" },
    { "/api/v1/orgs?limit=5&x", "/api/v1/orgs", "limit=5&x" },
    { "/a?", "/a", "" },
    { "/a?b?c", "/a", "b?c" },
    { "?only", "", "only" },
    { "/a%20b?q=%3F", "/a%20b", "q=%3F" },      /* nothing is decoded */
    { "", "", "" },
    { NULL, "/", "" },
};

START_TEST(uri_splits_into_path_and_query_at_the_first_question_mark)
{
    char uri[256], *env[3] = { NULL, NULL, NULL }, *path;
    struct http_request req;

    if (uri_cases[_i].uri != NULL) {
        snprintf(uri, sizeof uri, "REQUEST_URI=%s", uri_cases[_i].uri);
        env[0] = uri;
    }
    memset(&req, 0, sizeof req);
    path = http_request_from_params(&req, env);
    ck_assert_ptr_eq(req.path, path);
    ck_assert_str_eq(req.path, uri_cases[_i].path);
    ck_assert_str_eq(req.query, uri_cases[_i].query);
    free(path);
}
END_TEST

START_TEST(headers_are_found_by_their_exact_names)
{
    char *env[] = {
        "REQUEST_METHOD=POST", "REQUEST_URI=/x",
        "HTTP_AUTHORIZATIONX=wrong", "HTTP_AUTHORIZATION=Bearer abc=def",
        "HTTP_X_API_KEY=key-1", "CONTENT_TYPE=application/json; charset=utf-8",
        "CONTENT_LENGTH=12", "HTTP_ACCEPT=text/event-stream", NULL,
    };
    struct http_request req;
    char *path;

    memset(&req, 0, sizeof req);
    path = http_request_from_params(&req, env);
    ck_assert_str_eq(req.method, "POST");
    ck_assert_str_eq(req.authorization, "Bearer abc=def");
    ck_assert_str_eq(req.api_key, "key-1");
    ck_assert_str_eq(req.content_type, "application/json; charset=utf-8");
    ck_assert_str_eq(req.accept, "text/event-stream");
    ck_assert_ptr_null(req.body);                  /* the body is read separately */
    free(path);
}
END_TEST

START_TEST(absent_headers_are_null_and_absent_method_is_get)
{
    char *env[] = { "REQUEST_URI=/x", "HTTP_HOST=example.com", NULL };
    struct http_request req;
    char *path;

    memset(&req, 0, sizeof req);
    path = http_request_from_params(&req, env);
    ck_assert_str_eq(req.method, "GET");
    ck_assert_ptr_null(req.authorization);
    ck_assert_ptr_null(req.api_key);
    ck_assert_ptr_null(req.content_type);
    free(path);
}
END_TEST

/* ---- bodies ------------------------------------------------------------------ */

/* An in-memory body handed out at most `chunk` bytes a call. */
struct src {
    const char *data;
    size_t len, pos, chunk;
    int calls;
};

static int src_read(void *arg, char *buf, int n)
{
    struct src *s = arg;
    size_t k = s->len - s->pos;

    s->calls++;
    if (k > (size_t)n)
        k = (size_t)n;
    if (s->chunk > 0 && k > s->chunk)
        k = s->chunk;
    memcpy(buf, s->data + s->pos, k);
    s->pos += k;
    return (int)k;
}

#define MIB HTTP_BODY_MAX

static const struct {
    const char *what;
    const char *content_length;   /* NULL = absent */
    size_t sent;                  /* bytes the peer sends ('x' each) */
    size_t chunk;                 /* bytes per read, 0 = as many as asked */
    size_t len;                   /* expected body length */
    int too_large;
    int reads;                    /* 1 = the reader may be called, 0 = never */
} body_cases[] = {
    { "no length, small body", NULL, 3, 0, 3, 0, 1 },
    { "empty length reads to the end", "", 5, 0, 5, 0, 1 },
    { "no length, body in chunks", NULL, 10000, 7, 10000, 0, 1 },
    { "length stops the read", "3", 10, 0, 3, 0, 1 },
    { "length in short reads", "100", 100, 1, 100, 0, 1 },
    { "body shorter than announced", "10", 4, 0, 4, 0, 1 },
    { "zero length", "0", 5, 0, 0, 0, 0 },
    { "length of exactly 1 MiB", "1048576", MIB, 0, MIB, 0, 1 },
    { "length over 1 MiB", "1048577", MIB + 1, 0, 0, 1, 0 },
    { "huge length", "99999999999999999999999", 10, 0, 0, 1, 0 },
    { "negative length", "-1", 10, 0, 0, 1, 0 },
    { "length not a number", "abc", 10, 0, 0, 1, 0 },
    { "length with trailing junk", "3x", 10, 0, 0, 1, 0 },
    { "no length, exactly 1 MiB", NULL, MIB, 4096, MIB, 0, 1 },
    { "no length, 1 MiB and a byte", NULL, MIB + 1, 4096, 0, 1, 1 },
    { "no length, far over 1 MiB", NULL, 3 * MIB, 0, 0, 1, 1 },
};

START_TEST(body_is_read_up_to_its_length_and_the_limit)
{
    size_t sent = body_cases[_i].sent, len = 12345;
    char *data = malloc(sent), *body;
    struct src s = { data, sent, 0, body_cases[_i].chunk, 0 };
    int too_large = -1;

    memset(data, 'x', sent);
    body = http_read_body(body_cases[_i].content_length, src_read, &s, &len, &too_large);
    ck_assert_msg(len == body_cases[_i].len, "%s: len %zu", body_cases[_i].what, len);
    ck_assert_msg(too_large == body_cases[_i].too_large, "%s: too_large %d", body_cases[_i].what,
                  too_large);
    ck_assert_msg(body_cases[_i].reads || s.calls == 0, "%s: read %d times",
                  body_cases[_i].what, s.calls);
    ck_assert_msg(s.pos <= (size_t)MIB + 1, "%s: %zu bytes taken", body_cases[_i].what, s.pos);
    ck_assert_int_eq(body[len], '\0');
    ck_assert_uint_eq(strspn(body, "x"), len);
    free(body);
    free(data);
}
END_TEST

START_TEST(body_keeps_nul_bytes_and_counts_them)
{
    static const char data[] = "a\0b\0\0c";     /* 6 bytes */
    struct src s = { data, 6, 0, 2, 0 };
    size_t len = 0;
    int too_large = -1;
    char *body = http_read_body("6", src_read, &s, &len, &too_large);

    ck_assert_uint_eq(len, 6);
    ck_assert_int_eq(too_large, 0);
    ck_assert_int_eq(memcmp(body, data, 6), 0);
    ck_assert_int_eq(body[6], '\0');
    free(body);
}
END_TEST

static int failing_read(void *arg, char *buf, int n)
{
    (void)arg; (void)buf; (void)n;
    return -1;
}

START_TEST(read_error_ends_the_body_where_it_is)
{
    size_t len = 99;
    int too_large = -1;
    char *body = http_read_body("10", failing_read, NULL, &len, &too_large);

    ck_assert_uint_eq(len, 0);
    ck_assert_int_eq(too_large, 0);
    ck_assert_str_eq(body, "");
    free(body);
}
END_TEST

/* ---- the error table --------------------------------------------------------- */

static const struct {
    int code, status;
    const char *name;
} error_cases[] = {
    { AM_EBADJSON, 400, "invalid_json" },
    { AM_EBADREQ, 400, "bad_request" },
    { AM_EUNAUTH, 401, "unauthorized" },
    { AM_EFORBIDDEN, 403, "forbidden" },
    { AM_ENOTFOUND, 404, "not_found" },
    { AM_EAGENTNOTFOUND, 404, "agent_not_found" },
    { AM_EMETHOD, 405, "method_not_allowed" },
    { AM_EEXISTS, 409, "agent_exists" },
    { AM_EPLANLIMIT, 409, "plan_limit_reached" },
    { AM_EDEPLOYED, 409, "agent_deployed" },
    { AM_EALREADYDEPLOYED, 409, "already_deployed" },
    { AM_EALREADYPAUSED, 409, "already_paused" },
    { AM_ETRANSITION, 409, "invalid_transition" },
    { AM_ETOOLARGE, 413, "payload_too_large" },
    { AM_EMEDIATYPE, 415, "unsupported_media_type" },
    { AM_EVALIDATION, 422, "validation_error" },
    { AM_EINVALIDCONFIG, 422, "invalid_config" },
    { AM_EKEYMISSING, 422, "provider_key_missing" },
    { AM_ENOTDEPLOYED, 400, "agent_not_deployed" },
    { AM_ERATELIMIT, 429, "daily_limit_reached" },
    { AM_ENOTIMPL, 501, "not_implemented" },
    { AM_EPROVIDER, 502, "provider_error" },
    { AM_ETIMEOUT, 504, "provider_timeout" },
    { AM_EUNAVAILABLE, 503, "service_unavailable" },
    { AM_EREGISTRYFULL, 503, "registry_full" },
    { AM_EDEADLOCK, 503, "service_unavailable" },
    { AM_EIO, 503, "storage_unavailable" },
    { AM_EGUARDRAIL, 400, "guardrail_blocked" },
    { AM_ECONFLICT, 409, "conflict" },
    { AM_EKEYNOTFOUND, 404, "key_not_found" },
    { AM_EMEMBERNOTFOUND, 404, "member_not_found" },
    { AM_ECANCELLED, 499, "client_closed" },
    { AM_EVERSIONNOTFOUND, 404, "version_not_found" },
    /* never client input: a bug, so 500 */
    { AM_EINTERNAL, 500, "internal_error" },
    { AM_ECONFIG, 500, "internal_error" },
    { AM_ENOENT, 500, "internal_error" },
    { AM_ESTREAMLIMIT, 429, "stream_limit_reached" },
    { AM_EPROVIDERREJECT, 422, "provider_rejected_request" },
    { AM_EINFLIGHT, 429, "too_many_in_flight" },
    { AM_ETESTLIMIT, 429, "daily_test_limit_reached" },
    { AM_ENOMASTER, 503, "no_master" },
    { AM_ENOTACKED, 503, "replication_unavailable" },
    { AM_ERR_LAST, 500, "internal_error" },
    { 12345, 500, "internal_error" },
};

START_TEST(each_error_has_one_status_and_one_name)
{
    ck_assert_int_eq(error_status(error_cases[_i].code), error_cases[_i].status);
    ck_assert_str_eq(error_name(error_cases[_i].code), error_cases[_i].name);
}
END_TEST

START_TEST(every_code_in_the_enum_is_in_the_table)
{
    int code, i, found;

    for (code = AM_ERR_LAST + 1; code < 0; code++) {
        for (i = 0, found = 0; i < NCASES(error_cases); i++)
            found |= error_cases[i].code == code;
        ck_assert_msg(found, "code %d is not in this test's table", code);
    }
}
END_TEST

static struct json_object *envelope(const struct am_error *err, int *status)
{
    struct http_response resp;
    struct json_object *o;

    memset(&resp, 0, sizeof resp);
    http_reply_error(&resp, err);
    *status = resp.status;
    ck_assert_str_eq(resp.content_type, "application/json; charset=utf-8");
    ck_assert_uint_eq(strlen(resp.body), resp.body_len);
    o = json_tokener_parse(resp.body);
    ck_assert_ptr_nonnull(o);
    http_response_free(&resp);
    ck_assert_ptr_null(resp.body);
    return o;
}

START_TEST(error_envelope_has_error_message_status_and_details_on_422)
{
    struct am_error err;
    struct json_object *o, *v, *d;
    int status;

    error_clear(&err);
    error_set(&err, AM_EVALIDATION, "Invalid %s", "agent");
    error_add_detail(&err, "step1.model", "required");
    o = envelope(&err, &status);
    ck_assert_int_eq(status, 422);
    ck_assert(json_object_object_get_ex(o, "error", &v));
    ck_assert_str_eq(json_object_get_string(v), "validation_error");
    ck_assert(json_object_object_get_ex(o, "message", &v));
    ck_assert_str_eq(json_object_get_string(v), "Invalid agent");
    ck_assert(json_object_object_get_ex(o, "status", &v));
    ck_assert_int_eq(json_object_get_int(v), 422);
    ck_assert(json_object_object_get_ex(o, "details", &v));
    ck_assert_int_eq((int)json_object_array_length(v), 1);
    d = json_object_array_get_idx(v, 0);
    ck_assert(json_object_object_get_ex(d, "field", &v));
    ck_assert_str_eq(json_object_get_string(v), "step1.model");
    json_object_put(o);

    error_clear(&err);
    err.code = AM_ENOTFOUND;                       /* no message: the reason phrase */
    o = envelope(&err, &status);
    ck_assert_int_eq(status, 404);
    ck_assert(json_object_object_get_ex(o, "message", &v));
    ck_assert_str_eq(json_object_get_string(v), "Not Found");
    ck_assert(!json_object_object_get_ex(o, "details", &v));
    json_object_put(o);
}
END_TEST

START_TEST(headers_are_appended_as_lines)
{
    struct http_response resp;

    memset(&resp, 0, sizeof resp);
    http_add_header(&resp, "X-RateLimit-Limit", "100");
    http_add_header(&resp, "X-RateLimit-Remaining", "7");
    ck_assert_str_eq(resp.headers, "X-RateLimit-Limit: 100\r\nX-RateLimit-Remaining: 7\r\n");
}
END_TEST

/* ---- runner ----------------------------------------------------------------- */

/* ---- Accept and Server-Sent Events ------------------------------------------ */

static const struct {
    const char *accept;     /* NULL = no header */
    int streams;            /* http_accepts(accept, "text/event-stream") */
} accept_cases[] = {
    { "text/event-stream", 1 },
    { "TEXT/Event-Stream", 1 },
    { "text/event-stream;charset=utf-8", 1 },
    { "text/event-stream ; q=0.5", 1 },
    { "application/json, text/event-stream", 1 },
    { "application/json,text/event-stream;q=1", 1 },
    { "  ,, text/event-stream", 1 },
    { "text/html;level=\"a,b;q=0\", text/event-stream", 1 },
    { "text/event-stream;q=0.001", 1 },
    { "text/event-stream;Q=1.0", 1 },
    { "text/event-stream;q=0", 0 },
    { "text/event-stream;q=0.", 0 },
    { "text/event-stream; q=0.000", 0 },
    { "text/event-stream;Q=0, application/json", 0 },
    { "text/event-stream;q=0, text/event-stream", 1 },   /* listed again, acceptable */
    { "text/html;x=\"text/event-stream\"", 0 },           /* only inside a quoted value */
    { "text/html;x=\"a,text/event-stream\"", 0 },         /* a comma inside quotes */
    { "text/html;x=\"a\\\",text/event-stream\"", 0 },     /* an escaped quote inside */
    { "text/event-streams", 0 },
    { "text/event", 0 },
    { "xtext/event-stream", 0 },
    { "text/event-stream-x", 0 },
    { "*/*", 0 },
    { "text/*", 0 },
    { "application/json", 0 },
    { "", 0 },
    { ";;;,,,\"", 0 },
    { "text/html;x=\"unterminated, text/event-stream", 0 },
    { NULL, 0 },
};

START_TEST(accept_names_event_stream_among_ranges_with_parameters)
{
    ck_assert_msg(http_accepts(accept_cases[_i].accept, "text/event-stream") ==
                  accept_cases[_i].streams, "Accept: %s", accept_cases[_i].accept
                  ? accept_cases[_i].accept : "(none)");
}
END_TEST

static const char *const sse_texts[] = {
    "plain", "", "two\nlines", "cr\ronly", "crlf\r\nend", "\n\n\n", "event: x\ndata: y\n\n",
    "quote \" back\\slash / slash", "caf\xc3\xa9 \xe2\x80\xa8 sep", "tab\tand\x01control",
};

START_TEST(sse_event_is_one_event_line_and_one_data_line_of_json)
{
    struct json_object *o = json_object_new_object(), *back, *v;
    const char *text = sse_texts[_i], *data;
    size_t len;
    char *ev;

    json_object_object_add(o, "type", json_object_new_string("token"));
    json_object_object_add(o, "content", json_object_new_string(text));
    ev = http_sse_format("token", o, &len);
    ck_assert_uint_eq(len, strlen(ev));
    ck_assert_msg(strncmp(ev, "event: token\ndata: ", 19) == 0, "%s", ev);
    data = ev + 19;
    /* the data line ends at the event's end, and nowhere before */
    ck_assert_ptr_eq(strpbrk(data, "\r\n"), ev + len - 2);
    ck_assert_str_eq(ev + len - 2, "\n\n");
    ev[len - 2] = '\0';
    back = json_tokener_parse(data);
    ck_assert_ptr_nonnull(back);
    ck_assert(json_object_object_get_ex(back, "content", &v));
    ck_assert_str_eq(json_object_get_string(v), text);
    ck_assert(json_object_object_get_ex(back, "type", &v));
    ck_assert_str_eq(json_object_get_string(v), "token");
    json_object_put(back);
    json_object_put(o);
    free(ev);
}
END_TEST

START_TEST(sse_stream_functions_refuse_a_missing_stream)
{
    struct http_response resp;
    struct json_object *o = json_object_new_object();

    memset(&resp, 0, sizeof resp);
    ck_assert_int_eq(http_stream_started(NULL), 0);
    ck_assert_int_eq(http_stream_start(NULL, &resp), AM_EINTERNAL);
    ck_assert_int_eq(http_stream_event(NULL, "token", o), AM_EINTERNAL);
    ck_assert_int_eq(resp.status, 0);
    json_object_put(o);
}
END_TEST

/* ---- the request log line (issue 11) ------------------------------------- */

START_TEST(request_ids_are_short_tokens_only)
{
    ck_assert(http_request_id_ok("abc-123.x:y_z"));
    ck_assert(http_request_id_ok("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"));
    ck_assert(!http_request_id_ok("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0"));
    ck_assert(!http_request_id_ok(""));
    ck_assert(!http_request_id_ok(NULL));
    ck_assert(!http_request_id_ok("a b"));
    ck_assert(!http_request_id_ok("a\nb"));
    ck_assert(!http_request_id_ok("a\"b"));
}
END_TEST

START_TEST(log_line_has_the_pattern_and_no_raw_input)
{
    struct http_request req;
    struct http_response resp;
    char line[512];

    memset(&req, 0, sizeof(req));
    memset(&resp, 0, sizeof(resp));
    req.method = "POST";
    req.path = "/api/v1/orgs/acme/agents/bot/run";
    req.query = "token=hunter2";
    req.authorization = "Bearer eyJsecret";
    req.body = "{\"query\":\"private words\"}";
    req.request_id = "rid-1";
    resp.status = 200;
    resp.route_pattern = "/api/v1/orgs/{slug}/agents/{name}/run";
    snprintf(resp.org, sizeof(resp.org), "acme");
    snprintf(resp.agent, sizeof(resp.agent), "bot\n<6>forged line");
    snprintf(resp.trace_id, sizeof(resp.trace_id), "0123abcd");
    http_request_log_format(line, sizeof(line), &req, &resp, 1500);
    ck_assert_str_eq(line, "request method=POST route=/api/v1/orgs/{slug}/agents/{name}/run "
                           "status=200 latency_ms=1.500 org=acme agent=bot??6?forged?line "
                           "request_id=rid-1 trace_id=0123abcd");
    /* nothing matched, nothing known */
    memset(&resp, 0, sizeof(resp));
    resp.status = 404;
    req.method = "GE T";
    req.request_id = "bad id";
    http_request_log_format(line, sizeof(line), &req, &resp, 0);
    ck_assert_str_eq(line, "request method=- route=- status=404 latency_ms=0.000 org=- "
                           "agent=- request_id=- trace_id=-");
}
END_TEST

static Suite *http_suite(void)
{
    Suite *s = suite_create("http");
    TCase *params = tcase_create("params");
    TCase *body = tcase_create("body");
    TCase *errors = tcase_create("errors");
    TCase *sse = tcase_create("sse");

    tcase_add_loop_test(params, uri_splits_into_path_and_query_at_the_first_question_mark, 0,
                        NCASES(uri_cases));
    tcase_add_test(params, headers_are_found_by_their_exact_names);
    tcase_add_test(params, absent_headers_are_null_and_absent_method_is_get);
    tcase_add_loop_test(body, body_is_read_up_to_its_length_and_the_limit, 0,
                        NCASES(body_cases));
    tcase_add_test(body, body_keeps_nul_bytes_and_counts_them);
    tcase_add_test(body, read_error_ends_the_body_where_it_is);
    tcase_add_loop_test(errors, each_error_has_one_status_and_one_name, 0, NCASES(error_cases));
    tcase_add_test(errors, every_code_in_the_enum_is_in_the_table);
    tcase_add_test(errors, error_envelope_has_error_message_status_and_details_on_422);
    tcase_add_test(errors, headers_are_appended_as_lines);
    tcase_add_test(errors, request_ids_are_short_tokens_only);
    tcase_add_test(errors, log_line_has_the_pattern_and_no_raw_input);
    suite_add_tcase(s, params);
    suite_add_tcase(s, body);
    tcase_add_loop_test(sse, accept_names_event_stream_among_ranges_with_parameters, 0,
                        NCASES(accept_cases));
    tcase_add_loop_test(sse, sse_event_is_one_event_line_and_one_data_line_of_json, 0,
                        NCASES(sse_texts));
    tcase_add_test(sse, sse_stream_functions_refuse_a_missing_stream);
    suite_add_tcase(s, errors);
    suite_add_tcase(s, sse);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(http_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
