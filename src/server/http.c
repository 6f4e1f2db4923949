/*
 * http.c - FastCGI in, HTTP out: the accept loop, request parsing, response
 * writing and the error table.
 *
 * Owns: one FCGX_Request per accept thread (on its stack) and nothing that
 * outlives a request. The only file that includes fcgiapp.h.
 *
 * After each answer it writes the request log line (log.requests) and
 * counts the request in the shared metrics (state/metrics.h): the route
 * row, pattern, org, agent and trace id the handler left in the response.
 * The line never carries the raw path, the query string, a header or the
 * body (http_request_log_format).
 *
 * Must never: let a handler's failure reach the client as anything but the
 * SPEC envelope; read a body larger than HTTP_BODY_MAX into memory; hold
 * back an event of a streamed answer (each is flushed as it is written).
 *
 * Shutdown: the listening socket is non-blocking (the supervisor sets it),
 * so each thread waits in its own epoll set on both the socket (added
 * with EPOLLEXCLUSIVE, so a connection wakes one thread, not all of them)
 * and a wake-up fd, and only calls FCGX_Accept_r when a connection is
 * pending. A stop makes the
 * wake-up fd readable; a thread notices it after finishing its request and
 * then drains: it keeps accepting until nothing is queued, so a request
 * the front server already handed over is answered, never cut. accept()
 * may lose the race to another process and fail with EAGAIN, which is
 * simply another turn of the loop.
 */
#include <fcgiapp.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <sys/epoll.h>
#include <unistd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include "server/http.h"
#include "state/metrics.h"
#include "lib/util.h"

static const char *http_reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return status < 400 ? "OK" : "Internal Server Error";
    }
}

int http_init(void)
{
    return FCGX_Init();
}

void http_response_free(struct http_response *resp)
{
    free(resp->body);
    resp->body = NULL;
}

void http_reply_raw(struct http_response *resp, int status, const char *content_type,
                    const char *body, size_t len)
{
    free(resp->body);
    resp->status = status;
    resp->content_type = content_type;
    resp->body = xstrndup(body, len);
    resp->body_len = len;
}

void http_reply_json(struct http_response *resp, int status, struct json_object *obj)
{
    size_t len;
    const char *s = json_object_to_json_string_length(
        obj, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);

    http_reply_raw(resp, status, "application/json; charset=utf-8", s, len);
    json_object_put(obj);
}

void http_reply_error(struct http_response *resp, const struct am_error *err)
{
    struct json_object *o = json_object_new_object(), *details;
    int status = error_status(err->code), i;

    json_object_object_add(o, "error", json_object_new_string(error_name(err->code)));
    json_object_object_add(o, "message",
                           json_object_new_string(err->message[0] ? err->message
                                                                  : http_reason(status)));
    json_object_object_add(o, "status", json_object_new_int(status));
    if (status == 422) {
        details = json_object_new_array();
        for (i = 0; i < err->ndetails; i++) {
            struct json_object *d = json_object_new_object();
            json_object_object_add(d, "field", json_object_new_string(err->details[i].field));
            json_object_object_add(d, "problem", json_object_new_string(err->details[i].problem));
            json_object_array_add(details, d);
        }
        json_object_object_add(o, "details", details);
    }
    http_reply_json(resp, status, o);
}

void http_reply_errorf(struct http_response *resp, int code, const char *fmt, ...)
{
    struct am_error err;
    char message[sizeof(err.message)];
    va_list ap;

    error_clear(&err);
    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    error_set(&err, code, "%s", message);
    http_reply_error(resp, &err);
}

void http_add_header(struct http_response *resp, const char *name, const char *value)
{
    size_t used = strlen(resp->headers);

    /* Header names and values are ours, never a client's: no CR/LF check. */
    snprintf(resp->headers + used, sizeof(resp->headers) - used, "%s: %s\r\n", name, value);
}

char *http_read_body(const char *cl, http_read_fn rd, void *arg, size_t *len_out,
                     int *too_large)
{
    size_t want = HTTP_BODY_MAX + 1, got = 0;
    char *buf;
    int n;

    *too_large = 0;
    if (cl != NULL && *cl != '\0') {
        char *end;
        unsigned long long v = strtoull(cl, &end, 10);
        if (*end != '\0' || v > HTTP_BODY_MAX) {
            *too_large = 1;
            *len_out = 0;
            return xstrdup("");
        }
        want = (size_t)v;
    }
    buf = xmalloc(want + 1);
    while (got < want && (n = rd(arg, buf + got, (int)(want - got))) > 0)
        got += (size_t)n;
    if (got > HTTP_BODY_MAX) {
        *too_large = 1;
        got = 0;
    }
    buf[got] = '\0';
    *len_out = got;
    return buf;
}

static int fcgx_read(void *arg, char *buf, int n)
{
    return FCGX_GetStr(buf, n, arg);
}

char *http_request_from_params(struct http_request *req, char **envp)
{
    const char *uri = FCGX_GetParam("REQUEST_URI", envp);
    char *path = xstrdup(uri != NULL ? uri : "/"), *q = strchr(path, '?');

    req->query = "";
    if (q != NULL) {
        *q = '\0';
        req->query = q + 1;
    }
    req->path = path;
    req->method = FCGX_GetParam("REQUEST_METHOD", envp);
    if (req->method == NULL)
        req->method = "GET";
    req->authorization = FCGX_GetParam("HTTP_AUTHORIZATION", envp);
    req->api_key = FCGX_GetParam("HTTP_X_API_KEY", envp);
    req->content_type = FCGX_GetParam("CONTENT_TYPE", envp);
    req->accept = FCGX_GetParam("HTTP_ACCEPT", envp);
    req->remote_addr = FCGX_GetParam("REMOTE_ADDR", envp);
    req->cluster = FCGX_GetParam("HTTP_X_ASTROMESH_CLUSTER", envp);
    req->after = FCGX_GetParam("HTTP_X_ASTROMESH_AFTER", envp);
    return path;
}

/* ---- Accept -------------------------------------------------------------- */

static const char *skip_ows(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

/* The end of the RFC 9110 token starting at p (p itself if none). */
static const char *token_end(const char *p)
{
    while (*p != '\0' && (isalnum((unsigned char)*p) || strchr("!#$%&'*+-.^_`|~", *p) != NULL))
        p++;
    return p;
}

/* p at an opening '"': the end of the quoted string (after the closing
 * quote, or at the NUL of an unterminated one). */
static const char *quoted_end(const char *p)
{
    for (p++; *p != '\0' && *p != '"'; p++)
        if (*p == '\\' && p[1] != '\0')
            p++;
    return *p == '"' ? p + 1 : p;
}

/* Is the qvalue [v, end) zero ("0", "0.", "0.000")? */
static int qvalue_zero(const char *v, const char *end)
{
    if (v == end || *v++ != '0')
        return 0;
    if (v < end && *v == '.')
        v++;
    while (v < end && *v == '0')
        v++;
    return v == end;
}

/* Parse the parameters after a media range (p just past type/subtype);
 * sets *refused on q=0. Returns where they end. */
static const char *accept_params(const char *p, int *refused)
{
    const char *name, *v, *vend;

    *refused = 0;
    for (;;) {
        p = skip_ows(p);
        if (*p != ';')
            return p;
        name = p = skip_ows(p + 1);
        p = token_end(p);
        if (*p != '=')
            continue;
        v = ++p;
        p = *p == '"' ? quoted_end(p) : token_end(p);
        vend = p;
        if (name + 1 == v - 1 && (*name == 'q' || *name == 'Q') && qvalue_zero(v, vend))
            *refused = 1;
    }
}

int http_accepts(const char *accept, const char *type)
{
    const char *p = accept, *start;
    size_t tlen = strlen(type);
    int refused, match;

    if (p == NULL)
        return 0;
    while (*p != '\0') {
        start = p = skip_ows(p);
        p = token_end(p);
        if (*p == '/')
            p = token_end(p + 1);
        match = (size_t)(p - start) == tlen && strncasecmp(start, type, tlen) == 0;
        p = accept_params(p, &refused);
        if (match && !refused)
            return 1;
        while (*p != '\0' && *p != ',')       /* whatever is left of this range */
            p = *p == '"' ? quoted_end(p) : p + 1;
        if (*p == ',')
            p++;
    }
    return 0;
}

/* ---- Server-Sent Events -------------------------------------------------- */

struct http_stream {
    FCGX_Stream *out;           /* the request's FastCGI stdout */
    int started;                /* the head is written: resp is not */
    int failed;                 /* a write failed: the peer is gone */
};

char *http_sse_format(const char *event, struct json_object *data, size_t *len)
{
    size_t jlen, n;
    const char *js = json_object_to_json_string_length(
        data, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &jlen);
    char *out;

    n = strlen("event: \ndata: \n\n") + strlen(event) + jlen;
    out = xmalloc(n + 1);
    snprintf(out, n + 1, "event: %s\ndata: %s\n\n", event, js);
    *len = n;
    return out;
}

/* Write and flush; once a write fails, every later one fails too. */
static int stream_put(struct http_stream *s, const char *data, size_t len)
{
    if (s->failed)
        return AM_ECANCELLED;
    if (len > INT_MAX || FCGX_PutStr(data, (int)len, s->out) != (int)len ||
        FCGX_FFlush(s->out) != 0 || FCGX_GetError(s->out) != 0) {
        s->failed = 1;
        return AM_ECANCELLED;
    }
    return 0;
}

int http_stream_start(struct http_stream *s, struct http_response *resp)
{
    char head[1024];
    int n;

    if (s == NULL || s->started)
        return AM_EINTERNAL;
    s->started = 1;
    resp->status = 200;
    /* X-Accel-Buffering: the same request to an nginx, should one stand
     * in front of the front server. */
    n = snprintf(head, sizeof(head), "Status: 200 OK\r\n"
                 "Content-Type: text/event-stream; charset=utf-8\r\n"
                 "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n%s\r\n", resp->headers);
    if (n < 0 || (size_t)n >= sizeof(head))
        return AM_EINTERNAL;
    return stream_put(s, head, (size_t)n);
}

int http_stream_started(const struct http_stream *s)
{
    return s != NULL && s->started;
}

int http_stream_event(struct http_stream *s, const char *event, struct json_object *data)
{
    char *text;
    size_t len;
    int rc;

    if (s == NULL || !s->started)
        return AM_EINTERNAL;
    if (s->failed)
        return AM_ECANCELLED;
    text = http_sse_format(event, data, &len);
    rc = stream_put(s, text, len);
    free(text);
    return rc;
}

static void write_response(FCGX_Request *fr, const struct http_response *resp)
{
    FCGX_FPrintF(fr->out, "Status: %d %s\r\n", resp->status, http_reason(resp->status));
    if (resp->status != 204 && resp->body != NULL) {
        FCGX_FPrintF(fr->out, "Content-Type: %s\r\nContent-Length: %lu\r\n",
                     resp->content_type, (unsigned long)resp->body_len);
    }
    FCGX_FPrintF(fr->out, "Cache-Control: no-store\r\n%s\r\n", resp->headers);
    if (resp->status != 204 && resp->body != NULL)
        FCGX_PutStr(resp->body, (int)resp->body_len, fr->out);
}

/* ---- the request log line and the metrics of one request ---------------- */

static int request_log_on = 1;      /* log.requests; set before the threads start */

void http_set_request_log(int on)
{
    request_log_on = on;
}

int http_request_id_ok(const char *id)
{
    size_t n = 0;

    if (id == NULL)
        return 0;
    for (; id[n] != '\0'; n++)
        if (n >= 64 || !(isalnum((unsigned char)id[n]) || strchr("._:-", id[n]) != NULL))
            return 0;
    return n > 0;
}

/* Copy what a log line may show of a captured name: slug characters only
 * (org and agent names are [a-z0-9-]); "-" if empty. */
static const char *log_name(const char *in, char *out, size_t cap)
{
    size_t i;

    for (i = 0; in[i] != '\0' && i + 1 < cap; i++)
        out[i] = (isalnum((unsigned char)in[i]) || in[i] == '-') ? in[i] : '?';
    out[i] = '\0';
    return i > 0 ? out : "-";
}

char *http_request_log_format(char *out, size_t cap, const struct http_request *req,
                              const struct http_response *resp, uint64_t latency_us)
{
    char org[sizeof(resp->org)], agent[sizeof(resp->agent)];
    const char *method = "-";

    /* The method is the front server's; still, only a token goes out. */
    if (req->method != NULL && *req->method != '\0' && *token_end(req->method) == '\0')
        method = req->method;
    snprintf(out, cap, "request method=%.16s route=%s status=%d latency_ms=%.3f org=%s "
             "agent=%s request_id=%s trace_id=%s", method,
             resp->route_pattern != NULL ? resp->route_pattern : "-", resp->status,
             (double)latency_us / 1000.0, log_name(resp->org, org, sizeof(org)),
             log_name(resp->agent, agent, sizeof(agent)),
             http_request_id_ok(req->request_id) ? req->request_id : "-",
             http_request_id_ok(resp->trace_id) ? resp->trace_id : "-");
    return out;
}

/* A request id of ours: 16 hex digits, a random tag drawn once per thread
 * and the thread's request count (no system call per request). */
static void request_id_new(char *out, size_t cap)
{
    static _Thread_local char tag[9];
    static _Thread_local uint32_t count;

    if (tag[0] == '\0')
        util_random_hex(tag, sizeof(tag), 4);
    snprintf(out, cap, "%s%08x", tag, (unsigned)++count);
}

static uint64_t now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void serve_one(FCGX_Request *fr, http_handler handler, void *app)
{
    struct http_request req;
    struct http_response resp;
    struct http_stream stream = { fr->out, 0, 0 };
    char *path, *body, rid[65], line[512];
    uint64_t t0 = now_us(), us;

    memset(&req, 0, sizeof(req));
    memset(&resp, 0, sizeof(resp));
    resp.route = -1;
    path = http_request_from_params(&req, fr->envp);
    req.request_id = FCGX_GetParam("HTTP_X_REQUEST_ID", fr->envp);
    if (!http_request_id_ok(req.request_id)) {
        request_id_new(rid, sizeof(rid));
        req.request_id = rid;
    }
    http_add_header(&resp, "X-Request-Id", req.request_id);
    req.stream = &stream;
    body = http_read_body(FCGX_GetParam("CONTENT_LENGTH", fr->envp), fcgx_read, fr->in,
                          &req.body_len, &req.body_too_large);
    req.body = body;

    handler(app, &req, &resp);
    if (resp.status == 0)
        http_reply_errorf(&resp, AM_EINTERNAL, "No response");
    if (!stream.started)        /* a stream has answered already */
        write_response(fr, &resp);
    us = now_us() - t0;
    metrics_request(resp.route, resp.status, us);
    if (request_log_on)
        log_info("%s", http_request_log_format(line, sizeof(line), &req, &resp, us));
    http_response_free(&resp);
    free(body);
    free(path);
}

void http_serve_loop(int listen_fd, int wake_fd, http_handler handler, void *app)
{
    FCGX_Request fr;
    struct epoll_event ev[2];
    int ep, draining = 0, n, i, listen_ready;

    if ((ep = epoll_create1(EPOLL_CLOEXEC)) < 0)
        return;
    /* EPOLLEXCLUSIVE: a new connection wakes one waiting thread (of any
     * worker), not every thread blocked on the socket. */
    ev[0].events = EPOLLIN | EPOLLEXCLUSIVE;
    ev[0].data.fd = listen_fd;
    ev[1].events = EPOLLIN;
    ev[1].data.fd = wake_fd;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, listen_fd, &ev[0]) != 0 ||
        epoll_ctl(ep, EPOLL_CTL_ADD, wake_fd, &ev[1]) != 0 ||
        FCGX_InitRequest(&fr, listen_fd, FCGI_FAIL_ACCEPT_ON_INTR) != 0) {
        close(ep);
        return;
    }
    for (;;) {
        /* Draining: the supervisor has unlinked the socket, so nothing new
         * can arrive; serve what is already queued, then leave. */
        n = epoll_wait(ep, ev, 2, draining ? 0 : -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        listen_ready = 0;
        for (i = 0; i < n; i++) {
            if (ev[i].data.fd == wake_fd)
                draining = 1;
            else if (ev[i].events & EPOLLIN)
                listen_ready = 1;
        }
        if (!listen_ready) {
            if (draining && n <= 1)
                break;
            continue;
        }
        if ((n = FCGX_Accept_r(&fr)) < 0) {
            /* Another thread took it (EAGAIN) or the peer reset: go on.
             * Anything else (out of descriptors, say) would spin: pause. */
            if (n != -EAGAIN && n != -EWOULDBLOCK && n != -EINTR && n != -ECONNABORTED)
                poll(NULL, 0, 10);
            continue;
        }
        metrics_thread_busy(1);
        serve_one(&fr, handler, app);
        FCGX_Finish_r(&fr);
        metrics_thread_busy(-1);
    }
    FCGX_Free(&fr, 1);
    close(ep);
}
