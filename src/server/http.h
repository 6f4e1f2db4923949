/*
 * http.h - requests and responses, the FastCGI accept loop, and the error
 * envelope.
 *
 * This is the only module that knows FastCGI. It turns one FastCGI request
 * into a struct http_request (method, path, a few headers, the body read
 * up to the 1 MiB limit), hands it to a handler, and writes the handler's
 * struct http_response back. It also owns the one table that maps every
 * AM_* error code to an HTTP status and a stable snake_case name, so that
 * no error can leave as anything but the SPEC envelope.
 *
 * A handler may instead stream its answer as Server-Sent Events
 * (http_stream_start, then http_stream_event per event, each flushed to the
 * front server at once); the request's struct http_response is then not
 * written.
 */
#ifndef AM_HTTP_H
#define AM_HTTP_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <json-c/json.h>
#include "lib/error.h"

#define HTTP_BODY_MAX (1024 * 1024)   /* bodies over 1 MiB: 413 */

/* A streamed answer (text/event-stream) of one request: opaque, owned by
 * http.c for the length of the request. */
struct http_stream;

struct http_request {
    const char *method;         /* "GET", "POST", ... */
    const char *path;           /* URI path, without the query */
    const char *query;          /* after '?', "" if none */
    const char *authorization;  /* Authorization header or NULL */
    const char *api_key;        /* X-API-Key header or NULL */
    const char *content_type;   /* Content-Type or NULL */
    const char *accept;         /* Accept header or NULL */
    const char *remote_addr;    /* REMOTE_ADDR as the front server passes it, or NULL */
    const char *request_id;     /* the client's X-Request-Id if well-formed, else ours */
    const char *cluster;        /* X-Astromesh-Cluster (a forwarding host's secret) or NULL */
    const char *after;          /* X-Astromesh-After (a commit token to wait for) or NULL */
    struct http_stream *stream; /* where to stream an answer; NULL: cannot (tests) */
    const char *body;           /* NUL-terminated body ("" if none) */
    size_t body_len;            /* bytes of body */
    int body_too_large;         /* the body was over HTTP_BODY_MAX and not read */
};

struct http_response {
    int status;                 /* HTTP status */
    const char *content_type;   /* static string */
    char *body;                 /* malloc'd, owned by the response */
    size_t body_len;
    char headers[512];          /* extra "Name: value\r\n" lines */
    /* For the request log line and the metrics, set by the handler: */
    int route;                  /* route-table row that answered; -1: none (not counted) */
    const char *route_pattern;  /* static pattern of that row; NULL: no route matched */
    char org[48];               /* {slug} of the matched route, "" if none */
    char agent[72];             /* {name} of the matched route, "" if none */
    char trace_id[40];          /* a run's trace id, "" if none */
};

typedef void (*http_handler)(void *app, const struct http_request *req,
                             struct http_response *resp);

/* Reads at most n bytes into buf; returns the bytes read, 0 at the end of
 * the body, or negative on an error (treated as the end). */
typedef int (*http_read_fn)(void *arg, char *buf, int n);

/* The parsing half of serving a request, apart from FastCGI's I/O so it
 * can be tested. Fill req's method ("GET" if absent), path and query (split
 * at the first '?'; query "" if none; path "/" if there is no REQUEST_URI)
 * and the Authorization, X-API-Key, Content-Type and Accept headers (NULL if
 * absent) from envp, FastCGI's NULL-terminated "NAME=value" array. The
 * header and method pointers are borrowed from envp; path and query point
 * into the returned malloc'd copy of the URI, which the caller frees once
 * req is done with. Body fields are left alone. */
char *http_request_from_params(struct http_request *req, char **envp);

/* Read a body of content_length bytes (CONTENT_LENGTH's value; NULL or ""
 * means "until the end", as with a chunked request) through rd, never more
 * than HTTP_BODY_MAX. Returns a malloc'd NUL-terminated buffer (caller
 * frees; the body may contain NULs, *len_out counts them) and *too_large 0;
 * or "" with *len_out 0 and *too_large 1 when the announced length is over
 * the limit or not a decimal number (nothing is read), or when a body
 * without a length runs past the limit. A body shorter than announced is
 * returned as far as it came. */
char *http_read_body(const char *content_length, http_read_fn rd, void *arg, size_t *len_out,
                     int *too_large);

/* Library set-up; call once per process before any other http_ call. */
int http_init(void);

/* Write one info line per answered request (log.requests), or none. Call
 * before the accept threads start. */
void http_set_request_log(int on);

/* Is id a usable X-Request-Id from a client: 1 to 64 characters of
 * [A-Za-z0-9._:-]? Anything else is replaced by one of ours, so a log line
 * never carries a client's arbitrary bytes. */
int http_request_id_ok(const char *id);

/* The request log line of one answered request, without the level prefix:
 * "request method=M route=P status=S latency_ms=L org=O agent=A
 * request_id=R trace_id=T" ("-" for what is absent; org and agent are
 * printed only as far as they are slug characters). Never the raw path,
 * the query string, a header or the body. Returns out. */
char *http_request_log_format(char *out, size_t cap, const struct http_request *req,
                              const struct http_response *resp, uint64_t latency_us);

/* Serve FastCGI requests on listen_fd (non-blocking, shared with other
 * processes) until wake_fd becomes readable. Each request is handled
 * completely before the loop looks at wake_fd again, so a stop lets
 * in-flight requests finish. Thread-safe: run it in several threads. */
void http_serve_loop(int listen_fd, int wake_fd, http_handler handler, void *app);

/* Fill resp with status and the JSON serialisation of obj. Takes obj: the
 * caller's reference is put here, so the caller must not use or put it. */
void http_reply_json(struct http_response *resp, int status, struct json_object *obj);

/* Fill resp with a raw body of the given content type. body is copied;
 * content_type is kept as a pointer, so it must be a static string. */
void http_reply_raw(struct http_response *resp, int status, const char *content_type,
                    const char *body, size_t len);

/* Fill resp with the SPEC error envelope for err (with details on 422). */
void http_reply_error(struct http_response *resp, const struct am_error *err);

/* Shorthand: envelope for code with a formatted message. */
void http_reply_errorf(struct http_response *resp, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Append one "Name: value" header line. */
void http_add_header(struct http_response *resp, const char *name, const char *value);

/* Does the Accept header value name media type (such as
 * "text/event-stream") as acceptable? Each comma-separated media range is
 * compared case-insensitively on type/subtype, parameters allowed (quoted
 * strings may hold commas); a range with q=0 is a refusal. Wildcard ranges
 * (any type, any text type) do not count: a client gets a stream only when
 * it names it. Returns 1 or 0; 0 for a NULL header. */
int http_accepts(const char *accept, const char *type);

/* One Server-Sent Event: "event: <event>\ndata: <data as JSON>\n\n". The
 * JSON is on one line (strings escape CR and LF), so the data line can
 * never be cut by the text it carries. Returns a malloc'd string (caller
 * frees) of *len bytes. event must be a plain word. */
char *http_sse_format(const char *event, struct json_object *data, size_t *len);

/* Start s as the answer to its request: status 200, Content-Type
 * text/event-stream; charset=utf-8, Cache-Control: no-cache, resp's extra
 * headers (add them first), written and flushed at once; resp->status is
 * set to 200 and resp is not written again. Returns 0, AM_ECANCELLED if
 * the front server or the client is gone (s stays unusable), or
 * AM_EINTERNAL if s is NULL or already started. */
int http_stream_start(struct http_stream *s, struct http_response *resp);

/* Is s started (and no longer an ordinary answer)? 0 for NULL. */
int http_stream_started(const struct http_stream *s);

/* Write one event (http_sse_format) on a started s and flush it to the
 * front server. Returns 0, or AM_ECANCELLED once a write has failed (the
 * client or the front server went away; every later call fails the same
 * way without writing). data is borrowed. */
int http_stream_event(struct http_stream *s, const char *event, struct json_object *data);

/* Free resp->body (the response struct itself is the caller's). */
void http_response_free(struct http_response *resp);

#endif
