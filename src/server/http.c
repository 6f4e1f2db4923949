/*
 * http.c - FastCGI in, HTTP out: the accept loop, request parsing, response
 * writing and the error table.
 *
 * Owns: one FCGX_Request per accept thread (on its stack) and nothing that
 * outlives a request. The only file that includes fcgiapp.h.
 *
 * Must never: let a handler's failure reach the client as anything but the
 * SPEC envelope; read a body larger than HTTP_BODY_MAX into memory.
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
#include <errno.h>
#include <poll.h>
#include <sys/epoll.h>
#include <unistd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "server/http.h"
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
    va_list ap;

    error_clear(&err);
    err.code = code;
    va_start(ap, fmt);
    vsnprintf(err.message, sizeof(err.message), fmt, ap);
    va_end(ap);
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
    return path;
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

static void serve_one(FCGX_Request *fr, http_handler handler, void *app)
{
    struct http_request req;
    struct http_response resp;
    char *path, *body;

    memset(&req, 0, sizeof(req));
    memset(&resp, 0, sizeof(resp));
    path = http_request_from_params(&req, fr->envp);
    body = http_read_body(FCGX_GetParam("CONTENT_LENGTH", fr->envp), fcgx_read, fr->in,
                          &req.body_len, &req.body_too_large);
    req.body = body;

    handler(app, &req, &resp);
    if (resp.status == 0)
        http_reply_errorf(&resp, AM_EINTERNAL, "No response");
    write_response(fr, &resp);
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
        serve_one(&fr, handler, app);
        FCGX_Finish_r(&fr);
    }
    FCGX_Free(&fr, 1);
    close(ep);
}
