/*
 * stream.c - the stream process (stream.h): WebSocket connections to
 * agents, held by one epoll loop, each query run on a pool thread through
 * run.c with a sink that relays every token as a frame.
 *
 * Owns: its own Berkeley DB environment handle (opened after the fork),
 * every connection (socket, buffers), the query thread pool, an eventfd
 * the pool wakes the loop with, a signalfd for SIGTERM.
 *
 * Must never: touch the pid file or the registry segment's lifetime; run a
 * model call on the loop thread; write a frame to a socket without the
 * connection's lock (the loop and a query thread both send); close a
 * socket a query thread may still write to (a connection is freed when its
 * last reference goes: the loop's and the running query's).
 *
 * Connection lifecycle (enum conn_phase) and the function of each step:
 *
 *   [C_HTTP] --on_request: refused (404/405/401/403/400/429, the SPEC
 *       envelope) -> close after the answer is written
 *   [C_HTTP] --on_request: 101 Switching Protocols--> [C_WS]
 *   [C_WS] --on_message: a query, on a pool thread (busy until it ends)
 *   [C_WS] --send_close (client close, bad frame, idle, pause/delete,
 *       drain) -> closing: nothing more is sent; closed once written
 *   any --conn_close (EOF, socket error, written close)--> gone; its
 *       stream slot is released; freed at the last conn_unref
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>
#include "control/agent.h"
#include "control/auth.h"
#include "control/run.h"
#include "control/wizard.h"
#include "server/http.h"
#include "server/routes.h"
#include "server/replication.h"
#include "server/stream.h"
#include "server/worker.h"
#include "server/ws.h"
#include "state/app.h"
#include "state/config.h"
#include "state/metrics.h"
#include "state/registry.h"
#include "state/store.h"
#include "state/streams.h"
#include "lib/util.h"
#include "lib/utf8.h"

#define STREAM_STACK_SIZE (256 * 1024)
#define HEAD_MAX 8192               /* request line and headers */
#define MSG_MAX (64 * 1024)         /* one client message, all fragments */
#define OUT_MAX (1024 * 1024)       /* unsent bytes before a query is cancelled */
#define HEAD_TIMEOUT_MS 10000       /* a request's head must arrive within */
#define POLL_AGENTS_MS 250          /* paused or deleted agents are seen within */
#define TICK_MS 100

enum conn_phase { C_HTTP = 0, C_WS };

struct conn {
    struct conn *prev, *next;       /* the loop's list (loop thread only) */
    int fd;
    int phase;                      /* enum conn_phase (loop thread only) */
    int refs;                       /* atomic: the loop's, the running query's */
    pthread_mutex_t lock;           /* out, dead, closing, busy */
    int dead;                       /* socket unusable: sends fail */
    int closing;                    /* a close frame or final answer is queued */
    int busy;                       /* a query runs */
    int cancel;                     /* atomic: the agent went away; stop the query */
    int want_out;                   /* EPOLLOUT armed (loop thread only) */
    int gone;                       /* conn_close ran (loop thread only) */
    uint8_t *in;                    /* unparsed input (loop thread only) */
    size_t in_len, in_cap;
    uint8_t *msg;                   /* a fragmented message so far */
    size_t msg_len;
    uint8_t *out;                   /* unsent output, out_off of it sent */
    size_t out_len, out_off, out_cap;
    uint64_t opened_ms, active_ms, ping_ms;  /* monotonic */
    int slot;                       /* stream slot, -1 if none */
    char org[48];
    char name[72];
    char key[REGISTRY_KEY_MAX];     /* "org__name" */
};

struct query {
    struct query *next;
    struct conn *c;                 /* a reference */
    struct json_object *body;       /* owned; call borrows from it */
    struct run_call call;
    struct runtime_sink sink;
};

struct loop {
    struct app app;
    int ep, listen_fd, wake_fd, sig_fd;
    int draining;
    struct conn *conns;
    int nconns;
    struct conn *graveyard;         /* closed this batch; unref'd after it */
    uint64_t polled_ms;
    /* the pool */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct query *head, *tail;
    int inflight, stop;
};

static struct loop L;

/* ---- connections --------------------------------------------------------------- */

static void wake_loop(void)
{
    uint64_t one = 1;

    if (write(L.wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        log_warn("stream wake-up: %s", strerror(errno));
}

static void conn_unref(struct conn *c)
{
    if (__atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    close(c->fd);
    pthread_mutex_destroy(&c->lock);
    free(c->in);
    free(c->msg);
    free(c->out);
    free(c);
}

/* Write what is queued (lock held). Returns 1 if everything went, 0 if
 * some is left, -1 if the socket failed (c->dead set). */
static int flush_locked(struct conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            c->out_off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return 0;
        } else {
            c->dead = 1;
            return -1;
        }
    }
    c->out_off = c->out_len = 0;
    if (c->out_cap > 4096) {
        free(c->out);
        c->out = NULL;
        c->out_cap = 0;
    }
    return 1;
}

/* Queue bytes a (and b) and write what the socket takes (lock held).
 * Returns 0, or -1 if the connection is gone or too far behind. */
static int queue_locked(struct conn *c, const void *a, size_t alen, const void *b, size_t blen)
{
    int rc;

    if (c->dead || c->closing)
        return -1;
    if (c->out_len - c->out_off + alen + blen > OUT_MAX)
        return -1;
    if (c->out_len + alen + blen > c->out_cap) {
        c->out_cap = c->out_len + alen + blen + 256;
        c->out = xrealloc(c->out, c->out_cap);
    }
    memcpy(c->out + c->out_len, a, alen);
    if (blen > 0)
        memcpy(c->out + c->out_len + alen, b, blen);
    c->out_len += alen + blen;
    rc = flush_locked(c);
    if (rc <= 0)
        wake_loop();        /* arm EPOLLOUT, or close a dead one */
    return rc < 0 ? -1 : 0;
}

/* Send one frame; with last, nothing may follow it. Any thread. Returns 0
 * or -1 (the connection is gone, closing or too far behind). */
static int send_frame(struct conn *c, int opcode, const void *data, size_t len, int last)
{
    uint8_t head[WS_HEADER_MAX];
    size_t hl = ws_frame_header(head, opcode, len);
    int rc;

    pthread_mutex_lock(&c->lock);
    rc = queue_locked(c, head, hl, data, len);
    if (last)
        c->closing = 1;
    pthread_mutex_unlock(&c->lock);
    return rc;
}

/* Send o (taken) as a text frame; with end_query, the connection is free
 * for the next query from the moment the frame is queued. */
static int send_json_ex(struct conn *c, struct json_object *o, int end_query)
{
    uint8_t head[WS_HEADER_MAX];
    size_t n, hl;
    const char *s = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &n);
    int rc;

    hl = ws_frame_header(head, WS_TEXT, n);
    pthread_mutex_lock(&c->lock);
    rc = queue_locked(c, head, hl, s, n);
    if (end_query)
        c->busy = 0;
    pthread_mutex_unlock(&c->lock);
    json_object_put(o);
    return rc;
}

static int send_json(struct conn *c, struct json_object *o)
{
    return send_json_ex(c, o, 0);
}

/* {"type":"error","error":<code>,"message"} (and the details of a 422). */
static struct json_object *error_event(const struct am_error *err)
{
    struct json_object *o = json_object_new_object();
    int i;

    json_object_object_add(o, "type", json_object_new_string("error"));
    json_object_object_add(o, "error", json_object_new_string(error_name(err->code)));
    json_object_object_add(o, "message", json_object_new_string(err->message));
    if (err->ndetails > 0) {
        struct json_object *d = json_object_new_array();
        for (i = 0; i < err->ndetails; i++) {
            struct json_object *x = json_object_new_object();
            json_object_object_add(x, "field", json_object_new_string(err->details[i].field));
            json_object_object_add(x, "problem",
                                   json_object_new_string(err->details[i].problem));
            json_object_array_add(d, x);
        }
        json_object_object_add(o, "details", d);
    }
    return o;
}

static void send_error(struct conn *c, const struct am_error *err)
{
    send_json(c, error_event(err));
}

static void send_errorf(struct conn *c, int code, const char *msg)
{
    struct am_error err;

    error_clear(&err);
    error_set(&err, code, "%s", msg);
    send_error(c, &err);
}

/* A close frame with code and reason; the connection ends once it is out. */
static void send_close(struct conn *c, int code, const char *reason)
{
    uint8_t p[2 + 123];
    size_t n = strlen(reason) > 123 ? 123 : strlen(reason);

    p[0] = (uint8_t)(code >> 8);
    p[1] = (uint8_t)code;
    memcpy(p + 2, reason, n);
    send_frame(c, WS_CLOSE, p, 2 + n, 1);
}

#define STREAM_ROUTE "/api/v1/orgs/{slug}/agents/{name}/stream"

/* The request log line (log.requests) of one WebSocket query (method WS,
 * status 200 or the error's) or of a whole session at its close (method
 * GET, status 101, latency its duration), in the format of every request
 * line (http_request_log_format): never the query's text. */
static void log_stream(const struct conn *c, const char *method, int status, uint64_t ms,
                       const char *trace_id)
{
    struct http_request req;
    struct http_response resp;
    char line[512];

    if (!L.app.cfg->log_requests)
        return;
    memset(&req, 0, sizeof(req));
    memset(&resp, 0, sizeof(resp));
    req.method = method;
    resp.status = status;
    resp.route_pattern = STREAM_ROUTE;
    util_strlcpy(resp.org, c->org, sizeof(resp.org));
    util_strlcpy(resp.agent, c->name, sizeof(resp.agent));
    util_strlcpy(resp.trace_id, trace_id != NULL ? trace_id : "", sizeof(resp.trace_id));
    log_info("%s", http_request_log_format(line, sizeof(line), &req, &resp, ms * 1000));
}

/* Forget c (loop thread): out of epoll and the list, its slot given back,
 * the socket shut so a running query's next send fails. */
static void conn_close(struct conn *c)
{
    epoll_ctl(L.ep, EPOLL_CTL_DEL, c->fd, NULL);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        L.conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    L.nconns--;
    pthread_mutex_lock(&c->lock);
    c->dead = 1;
    pthread_mutex_unlock(&c->lock);
    shutdown(c->fd, SHUT_RDWR);
    if (c->phase == C_WS)
        log_stream(c, "GET", 101, util_monotonic_ms() - c->opened_ms, NULL);
    streams_release(L.app.streams, c->slot);
    c->slot = -1;
    c->gone = 1;
    c->next = L.graveyard;          /* events of this batch may still name it */
    L.graveyard = c;
}

static void bury(void)
{
    while (L.graveyard != NULL) {
        struct conn *c = L.graveyard;
        L.graveyard = c->next;
        conn_unref(c);
    }
}

static void conn_accept(void)
{
    for (;;) {
        int fd = accept4(L.listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP };
        struct conn *c;

        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE)
                log_warn("stream: accept: %s", strerror(errno));
            return;
        }
        c = xcalloc(1, sizeof(*c));
        c->fd = fd;
        c->refs = 1;
        c->slot = -1;
        c->opened_ms = c->active_ms = c->ping_ms = util_monotonic_ms();
        pthread_mutex_init(&c->lock, NULL);
        ev.data.ptr = c;
        if (epoll_ctl(L.ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
            close(fd);
            pthread_mutex_destroy(&c->lock);
            free(c);
            continue;
        }
        c->next = L.conns;
        if (L.conns != NULL)
            L.conns->prev = c;
        L.conns = c;
        L.nconns++;
    }
}

/* ---- queries (pool threads) ---------------------------------------------------- */

/* The run's sink: one token frame per piece of text. Non-zero cancels. */
static int query_token(void *arg, const char *text, size_t n)
{
    struct conn *c = arg;
    struct json_object *o;

    if (__atomic_load_n(&c->cancel, __ATOMIC_ACQUIRE))
        return -1;
    o = json_object_new_object();
    json_object_object_add(o, "type", json_object_new_string("token"));
    json_object_object_add(o, "content", json_object_new_string_len(text, (int)n));
    return send_json(c, o);
}

/* The run's liveness hook, polled while a model call waits on its provider:
 * 0 once the client has gone (or the agent did), so the provider call is
 * abandoned within a second even between tokens. */
static int query_alive(void *arg)
{
    struct conn *c = arg;
    int dead;

    if (__atomic_load_n(&c->cancel, __ATOMIC_ACQUIRE))
        return 0;
    pthread_mutex_lock(&c->lock);
    dead = c->dead;
    pthread_mutex_unlock(&c->lock);
    return !dead;
}

/* The done or error event that ends a query; the connection takes the
 * next query once it is queued. */
static void query_answer(struct conn *c, int rc, const struct run_outcome *out,
                         const struct am_error *err)
{
    struct json_object *o;

    if (rc == AM_ECANCELLED) {
        pthread_mutex_lock(&c->lock);
        c->busy = 0;
        pthread_mutex_unlock(&c->lock);
        return;
    }
    if (rc != 0) {
        send_json_ex(c, error_event(err), 1);
        return;
    }
    o = json_object_new_object();
    json_object_object_add(o, "type", json_object_new_string("done"));
    json_object_object_add(o, "answer", json_object_new_string(out->res.answer));
    json_object_object_add(o, "tokens_used", json_object_new_int(out->res.tokens_used));
    json_object_object_add(o, "session_id", json_object_new_string(out->res.session_id));
    json_object_object_add(o, "model", json_object_new_string(out->res.model));
    json_object_object_add(o, "trace_id", json_object_new_string(out->res.trace_id));
    json_object_object_add(o, "version", json_object_new_int64((int64_t)out->res.version));
    if (out->res.blocked)
        json_object_object_add(o, "blocked", json_object_new_boolean(1));
    send_json_ex(c, o, 1);
}

static void query_run(struct query *q)
{
    struct run_outcome out;
    struct am_error err;
    int rc;

    uint64_t t0 = util_monotonic_ms();
    int status;

    error_clear(&err);
    metrics_in_flight(routes_stream_row(), 1);
    rc = run_agent(&L.app, &q->call, &out, &err);
    metrics_in_flight(routes_stream_row(), -1);
    if (rc != 0 && err.code == AM_OK)
        error_set(&err, rc, "The query failed");
    query_answer(q->c, rc, &out, &err);
    status = rc == 0 ? 200 : error_status(rc);
    metrics_request(routes_stream_row(), status, (util_monotonic_ms() - t0) * 1000);
    log_stream(q->c, "WS", status, util_monotonic_ms() - t0, out.res.trace_id);
    run_outcome_free(&out);
    json_object_put(q->body);
    conn_unref(q->c);
    free(q);
}

static void *pool_thread(void *unused)
{
    struct query *q;

    (void)unused;
    for (;;) {
        pthread_mutex_lock(&L.mu);
        while (L.head == NULL && !L.stop)
            pthread_cond_wait(&L.cv, &L.mu);
        if (L.head == NULL) {
            pthread_mutex_unlock(&L.mu);
            return NULL;
        }
        q = L.head;
        L.head = q->next;
        if (L.head == NULL)
            L.tail = NULL;
        pthread_mutex_unlock(&L.mu);
        query_run(q);
        pthread_mutex_lock(&L.mu);
        L.inflight--;
        pthread_mutex_unlock(&L.mu);
        wake_loop();        /* a draining loop waits for the last query */
    }
}

/* Hand q to a pool thread. Returns 0, or -1 if every thread is taken. */
static int pool_submit(struct query *q)
{
    int rc = -1;

    pthread_mutex_lock(&L.mu);
    if (L.inflight < L.app.cfg->stream_max_queries) {
        L.inflight++;
        q->next = NULL;
        if (L.tail != NULL)
            L.tail->next = q;
        else
            L.head = q;
        L.tail = q;
        pthread_cond_signal(&L.cv);
        rc = 0;
    }
    pthread_mutex_unlock(&L.mu);
    return rc;
}

/* ---- WebSocket messages (loop thread) ------------------------------------------ */

/* Parse a text message as a JSON object; NULL after an error event. */
static struct json_object *message_json(struct conn *c, const uint8_t *data, size_t len)
{
    struct json_tokener *tok = json_tokener_new_ex(64);
    struct json_object *o;
    int ok;

    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    o = json_tokener_parse_ex(tok, (const char *)data, (int)len);
    ok = json_tokener_get_error(tok) == json_tokener_success &&
         json_tokener_get_parse_end(tok) == len;
    json_tokener_free(tok);
    if (!ok || o == NULL || !json_object_is_type(o, json_type_object)) {
        if (ok)
            send_errorf(c, AM_EVALIDATION, "A message must be a JSON object "
                        "{\"query\",\"session_id\"}");
        else
            send_errorf(c, AM_EBADJSON, "Malformed JSON message");
        json_object_put(o);
        return NULL;
    }
    return o;
}

static void on_message(struct conn *c, const uint8_t *data, size_t len)
{
    struct query *q;
    struct am_error err;
    int busy;

    c->active_ms = util_monotonic_ms();
    if (!ws_utf8_valid(data, len)) {
        send_close(c, WS_CLOSE_BAD_DATA, "text must be UTF-8");
        return;
    }
    q = xcalloc(1, sizeof(*q));
    error_clear(&err);
    if ((q->body = message_json(c, data, len)) == NULL)
        goto refused;
    {   /* the one string policy (lib/utf8.h), as routes.c applies it to bodies */
        char field[128];
        const char *problem;
        if (utf8_check_json(q->body, 0, field, sizeof(field), &problem) != 0) {
            error_set(&err, AM_EBADREQ, "Field '%s' %s", field, problem);
            send_error(c, &err);
            goto refused;
        }
    }
    if (run_parse_body(q->body, &q->call, &err) != 0) {
        send_error(c, &err);
        goto refused;
    }
    pthread_mutex_lock(&c->lock);
    busy = c->busy;
    c->busy = 1;
    pthread_mutex_unlock(&c->lock);
    if (busy) {
        send_errorf(c, AM_ECONFLICT, "A query is already running on this connection; "
                    "wait for its done or error event");
        goto refused;
    }
    q->c = c;
    q->call.org = c->org;
    q->call.name = c->name;
    q->call.mode = RUNTIME_RUN;
    q->sink.token = query_token;
    q->sink.alive = query_alive;
    q->sink.arg = c;
    q->call.sink = &q->sink;
    __atomic_add_fetch(&c->refs, 1, __ATOMIC_ACQ_REL);
    if (pool_submit(q) == 0)
        return;
    __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL);   /* the loop still holds one */
    pthread_mutex_lock(&c->lock);
    c->busy = 0;
    pthread_mutex_unlock(&c->lock);
    send_errorf(c, AM_EUNAVAILABLE, "Too many queries running; retry");
refused:
    json_object_put(q->body);
    free(q);
}

/* The code to answer a client's close with: its own if it may travel on
 * the wire (RFC 6455 7.4), 1000 if it sent none, else 1002. */
static int close_reply_code(const struct ws_frame *f, const uint8_t *p)
{
    int code;

    if (f->len == 0)
        return WS_CLOSE_NORMAL;
    if (f->len == 1)
        return WS_CLOSE_PROTOCOL;
    code = p[0] << 8 | p[1];
    if ((code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011) ||
        (code >= 3000 && code <= 4999))
        return code;
    return WS_CLOSE_PROTOCOL;
}

/* One complete frame (payload unmasked). Returns 0, or -1 once closing. */
static int on_frame(struct conn *c, const struct ws_frame *f, uint8_t *p)
{
    switch (f->opcode) {
    case WS_TEXT:
        if (c->msg != NULL)
            break;                                  /* a new message inside one */
        if (f->fin) {
            on_message(c, p, f->len);
        } else {
            c->msg = xmalloc(f->len + 1);
            memcpy(c->msg, p, f->len);
            c->msg_len = f->len;
        }
        return 0;
    case WS_CONT:
        if (c->msg == NULL)
            break;
        if (c->msg_len + f->len > MSG_MAX) {
            send_close(c, WS_CLOSE_TOO_BIG, "message over 64 KiB");
            return -1;
        }
        c->msg = xrealloc(c->msg, c->msg_len + f->len + 1);
        memcpy(c->msg + c->msg_len, p, f->len);
        c->msg_len += f->len;
        if (f->fin) {
            uint8_t *m = c->msg;
            c->msg = NULL;
            on_message(c, m, c->msg_len);
            free(m);
        }
        return 0;
    case WS_BINARY:
        send_close(c, WS_CLOSE_UNSUPPORTED, "binary messages are not accepted");
        return -1;
    case WS_CLOSE:
        send_close(c, close_reply_code(f, p), "");
        return -1;
    case WS_PING:
        send_frame(c, WS_PONG, p, f->len, 0);
        return 0;
    default:                                        /* WS_PONG */
        return 0;
    }
    send_close(c, WS_CLOSE_PROTOCOL, "unexpected continuation");
    return -1;
}

/* Consume every complete frame in c->in. */
static void ws_input(struct conn *c)
{
    size_t pos = 0;
    struct ws_frame f;
    int r;

    while (!c->closing && (r = ws_parse_header(c->in + pos, c->in_len - pos, &f)) != 0) {
        if (r < 0 || !f.masked) {
            send_close(c, WS_CLOSE_PROTOCOL, r < 0 ? "bad frame" : "client frames must be masked");
            break;
        }
        if (f.len > MSG_MAX) {
            send_close(c, WS_CLOSE_TOO_BIG, "message over 64 KiB");
            break;
        }
        if (c->in_len - pos < f.header_len + f.len)
            break;
        ws_unmask(c->in + pos + f.header_len, (size_t)f.len, f.mask, 0);
        r = on_frame(c, &f, c->in + pos + f.header_len);
        pos += f.header_len + (size_t)f.len;
        if (r != 0)
            break;
    }
    if (c->closing)
        pos = c->in_len;
    memmove(c->in, c->in + pos, c->in_len - pos);
    c->in_len -= pos;
}

/* ---- the HTTP request before the upgrade (loop thread) ------------------------- */

struct head {
    char *method, *target, *version;
    const char *upgrade, *key, *ws_version, *authorization, *api_key;
};

static const char *status_text(int status)
{
    switch (status) {
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 429: return "Too Many Requests";
    case 503: return "Service Unavailable";
    default: return "Error";
    }
}

/* Answer resp as HTTP/1.1 and close once written. */
static void http_answer(struct conn *c, const struct http_response *resp)
{
    char head[1024];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
                     "Connection: close\r\n\r\n",
                     resp->status, status_text(resp->status),
                     resp->content_type ? resp->content_type : "application/json; charset=utf-8",
                     resp->body_len, resp->headers);

    pthread_mutex_lock(&c->lock);
    queue_locked(c, head, (size_t)(n < (int)sizeof(head) ? n : (int)sizeof(head) - 1),
                 resp->body, resp->body_len);
    c->closing = 1;
    pthread_mutex_unlock(&c->lock);
}

static void http_refuse(struct conn *c, int code, const char *msg)
{
    struct http_response resp;

    memset(&resp, 0, sizeof(resp));
    http_reply_errorf(&resp, code, "%s", msg);
    if (code == AM_EMETHOD)
        http_add_header(&resp, "Allow", "GET");
    http_answer(c, &resp);
    http_response_free(&resp);
}

/* Split the head (NUL-terminated, in place) into h. Returns 0 or -1. */
static int head_parse(char *buf, struct head *h)
{
    char *line, *save = NULL, *sp1, *sp2;

    memset(h, 0, sizeof(*h));
    if ((line = strtok_r(buf, "\r\n", &save)) == NULL ||
        (sp1 = strchr(line, ' ')) == NULL || (sp2 = strchr(sp1 + 1, ' ')) == NULL)
        return -1;
    *sp1 = *sp2 = '\0';
    h->method = line;
    h->target = sp1 + 1;
    h->version = sp2 + 1;
    if (strncmp(h->version, "HTTP/1.", 7) != 0)
        return -1;
    while ((line = strtok_r(NULL, "\r\n", &save)) != NULL) {
        char *colon = strchr(line, ':'), *v;
        if (colon == NULL)
            return -1;
        *colon = '\0';
        for (v = colon + 1; *v == ' ' || *v == '\t'; v++)
            ;
        for (char *e = v + strlen(v); e > v && (e[-1] == ' ' || e[-1] == '\t'); )
            *--e = '\0';
        if (strcasecmp(line, "Upgrade") == 0)
            h->upgrade = v;
        else if (strcasecmp(line, "Sec-WebSocket-Key") == 0)
            h->key = v;
        else if (strcasecmp(line, "Sec-WebSocket-Version") == 0)
            h->ws_version = v;
        else if (strcasecmp(line, "Authorization") == 0)
            h->authorization = v;
        else if (strcasecmp(line, "X-API-Key") == 0)
            h->api_key = v;
    }
    return 0;
}

/* The value of name in a query string, percent-decoded into out. */
static int query_param(const char *query, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name), o = 0;
    const char *p = query;

    while (p != NULL && *p != '\0') {
        if (strncmp(p, name, nl) == 0 && p[nl] == '=') {
            for (p += nl + 1; *p != '\0' && *p != '&' && o + 1 < cap; p++) {
                unsigned v;
                if (*p == '%' && sscanf(p + 1, "%2x", &v) == 1 && p[1] && p[2]) {
                    out[o++] = (char)v;
                    p += 2;
                } else {
                    out[o++] = *p == '+' ? ' ' : *p;
                }
            }
            out[o] = '\0';
            return 1;
        }
        p = strchr(p, '&');
        p = p != NULL ? p + 1 : NULL;
    }
    return 0;
}

/* "/api/v1/orgs/{slug}/agents/{name}/stream" into c->org, c->name. */
static int path_match(struct conn *c, char *path)
{
    char *seg[8], *save = NULL, *s;
    int n = 0;

    for (s = strtok_r(path, "/", &save); s != NULL; s = strtok_r(NULL, "/", &save)) {
        if (n == 7)
            return -1;
        seg[n++] = s;
    }
    if (n != 7 || strcmp(seg[0], "api") != 0 || strcmp(seg[1], "v1") != 0 ||
        strcmp(seg[2], "orgs") != 0 || strcmp(seg[4], "agents") != 0 ||
        strcmp(seg[6], "stream") != 0 || strlen(seg[3]) >= sizeof(c->org) ||
        strlen(seg[5]) >= sizeof(c->name))
        return -1;
    util_strlcpy(c->org, seg[3], sizeof(c->org));
    util_strlcpy(c->name, seg[5], sizeof(c->name));
    return 0;
}

/* 0 if the agent is deployed and loaded; else err (404, 400 or 503). */
static int agent_ready(struct conn *c, struct am_error *err)
{
    int st;

    error_clear(err);
    util_snprintf(c->key, sizeof(c->key), "%s__%s", c->org, c->name);
    if (!wizard_name_valid(c->name))
        return error_set(err, AM_EAGENTNOTFOUND, "Agent '%s' not found", c->name);
    if (registry_contains(L.app.reg, c->key, NULL))
        return 0;
    st = agent_status(&L.app, c->org, c->name);
    if (st == AM_EAGENTNOTFOUND)
        return error_set(err, AM_EAGENTNOTFOUND, "Agent '%s' not found", c->name);
    if (st < 0 || st == AGENT_DEPLOYED)
        return error_set(err, AM_EUNAVAILABLE, "Agent '%s' cannot be loaded now, retry",
                         c->name);
    return error_set(err, AM_ENOTDEPLOYED, "Agent '%s' is in %s state. Deploy it first.",
                     c->name, agent_status_name(st));
}

/* Credentials: Authorization, X-API-Key, ?token=, ?api_key=. Fills resp on refusal. */
static int stream_auth(struct conn *c, const struct head *h, const char *query,
                       struct http_response *resp)
{
    char token[2048], bearer[2048 + 8];
    const char *authz = h->authorization, *key = h->api_key;

    if ((authz == NULL || *authz == '\0') && (key == NULL || *key == '\0')) {
        if (query_param(query, "token", token, sizeof(token))) {
            util_snprintf(bearer, sizeof(bearer), "Bearer %s", token);
            authz = bearer;
        } else if (query_param(query, "api_key", token, sizeof(token))) {
            key = token;
        }
    }
    return routes_authorize_stream(&L.app, c->org, authz, key, resp);
}

/* The whole head is in c->in[0..end): answer it. */
static void on_request(struct conn *c, size_t end)
{
    struct http_response resp;
    struct am_error err;
    struct head h;
    char accept[WS_ACCEPT_LEN + 1], reply[256], *query;
    int slot;

    memset(&resp, 0, sizeof(resp));
    c->in[end - 2] = '\0';
    if (head_parse((char *)c->in, &h) != 0)
        { http_refuse(c, AM_EBADREQ, "Malformed HTTP request"); return; }
    if ((query = strchr(h.target, '?')) != NULL)
        *query++ = '\0';
    if (path_match(c, h.target) != 0)
        { http_refuse(c, AM_ENOTFOUND, "No such route"); return; }
    if (strcmp(h.method, "GET") != 0)
        { http_refuse(c, AM_EMETHOD, "Method not allowed here: open a WebSocket with GET"); return; }
    if (stream_auth(c, &h, query ? query : "", &resp) != 0)
        goto answer;
    if (agent_ready(c, &err) != 0) {
        http_reply_error(&resp, &err);
        goto answer;
    }
    if (h.upgrade == NULL || strcasecmp(h.upgrade, "websocket") != 0 ||
        h.ws_version == NULL || strcmp(h.ws_version, "13") != 0 ||
        ws_accept_key(h.key, accept) != 0)
        { http_refuse(c, AM_EBADREQ, "A WebSocket upgrade (version 13) is required here"); return; }
    slot = streams_acquire(L.app.streams, c->org, L.app.cfg->max_streams);
    if (slot < 0) {
        http_reply_errorf(&resp, slot, slot == AM_ESTREAMLIMIT
                          ? "The organization has its %d stream connections open"
                          : "No stream connection can be opened now (%d)",
                          L.app.cfg->max_streams);
        goto answer;
    }
    c->slot = slot;
    c->phase = C_WS;
    c->active_ms = c->ping_ms = util_monotonic_ms();
    util_snprintf(reply, sizeof(reply), "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket"
                  "\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", accept);
    pthread_mutex_lock(&c->lock);
    queue_locked(c, reply, strlen(reply), NULL, 0);
    pthread_mutex_unlock(&c->lock);
    return;
answer:
    http_answer(c, &resp);
    http_response_free(&resp);
}

/* Bytes arrived on c (loop thread). */
static void on_readable(struct conn *c)
{
    uint8_t buf[16384];
    ssize_t n;

    for (;;) {
        n = recv(c->fd, buf, sizeof(buf), 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            conn_close(c);
            return;
        }
        if (n < 0)
            break;
        if (c->closing)
            continue;                       /* drained and dropped */
        if (c->in_len + (size_t)n > c->in_cap) {
            c->in_cap = c->in_len + (size_t)n;
            c->in = xrealloc(c->in, c->in_cap + 1);
        }
        memcpy(c->in + c->in_len, buf, (size_t)n);
        c->in_len += (size_t)n;
        if (c->phase == C_HTTP) {
            uint8_t *e;
            c->in[c->in_len] = '\0';
            e = memmem(c->in, c->in_len, "\r\n\r\n", 4);
            if (e == NULL && c->in_len > HEAD_MAX) {
                http_refuse(c, AM_EBADREQ, "Request head too large");
            } else if (e != NULL) {
                size_t end = (size_t)(e - c->in) + 4;
                on_request(c, end);
                memmove(c->in, c->in + end, c->in_len - end);
                c->in_len -= end;
            }
        }
        if (c->phase == C_WS && !c->closing)
            ws_input(c);
        if ((size_t)n < sizeof(buf))
            break;
    }
    if (!c->gone && c->in_len == 0) {
        free(c->in);
        c->in = NULL;
        c->in_cap = 0;
    }
}

/* ---- the loop ------------------------------------------------------------------ */

/* c can be written again (loop thread). */
static void on_writable(struct conn *c)
{
    int rc, done;

    pthread_mutex_lock(&c->lock);
    rc = flush_locked(c);
    done = rc < 0 || (rc == 1 && c->closing);
    pthread_mutex_unlock(&c->lock);
    if (done) {
        conn_close(c);
    } else if (rc == 1 && c->want_out) {
        struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP, .data.ptr = c };
        epoll_ctl(L.ep, EPOLL_CTL_MOD, c->fd, &ev);
        c->want_out = 0;
    }
}

/* Arm EPOLLOUT if output waits, close c if it is dead or done, or start
 * closing it when draining. Loop thread. */
static void conn_settle(struct conn *c)
{
    int pending, dead, closing, busy;

    if (c->gone)
        return;
    pthread_mutex_lock(&c->lock);
    pending = c->out_off < c->out_len;
    dead = c->dead;
    closing = c->closing;
    busy = c->busy;
    pthread_mutex_unlock(&c->lock);
    if (dead || (closing && !pending)) {
        conn_close(c);
    } else if (pending && !c->want_out) {
        struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP | EPOLLOUT, .data.ptr = c };
        epoll_ctl(L.ep, EPOLL_CTL_MOD, c->fd, &ev);
        c->want_out = 1;
    } else if (L.draining && !busy && !closing) {
        if (c->phase == C_WS) {
            send_close(c, WS_CLOSE_GOING_AWAY, "server going away");
            conn_settle(c);
        } else {
            conn_close(c);
        }
    }
}

/* Settle every connection (after a wake-up from a query thread, a tick). */
static void sweep(void)
{
    struct conn *c, *next;

    for (c = L.conns; c != NULL; c = next) {
        next = c->next;
        conn_settle(c);
    }
}

/* Timers: pings, idle connections, slow heads, paused or deleted agents. */
static void tick(uint64_t now)
{
    const struct config *cfg = L.app.cfg;
    int poll_agents = now - L.polled_ms >= POLL_AGENTS_MS;
    struct conn *c, *next;

    if (poll_agents)
        L.polled_ms = now;
    for (c = L.conns; c != NULL; c = next) {
        int busy;

        next = c->next;
        if (c->closing)
            continue;
        if (c->phase == C_HTTP) {
            if (now - c->opened_ms >= HEAD_TIMEOUT_MS)
                conn_close(c);
            continue;
        }
        pthread_mutex_lock(&c->lock);
        busy = c->busy;
        pthread_mutex_unlock(&c->lock);
        if (poll_agents && !registry_contains(L.app.reg, c->key, NULL)) {
            __atomic_store_n(&c->cancel, 1, __ATOMIC_RELEASE);
            send_errorf(c, AM_ENOTDEPLOYED, "The agent was paused or deleted");
            send_close(c, WS_CLOSE_POLICY, "agent not deployed");
        } else if (!busy && now - c->active_ms >= (uint64_t)cfg->stream_idle_timeout_ms) {
            send_close(c, WS_CLOSE_GOING_AWAY, "idle timeout");
        } else if (now - c->ping_ms >= (uint64_t)cfg->stream_ping_interval_ms) {
            c->ping_ms = now;
            send_frame(c, WS_PING, "", 0, 0);
        }
    }
    sweep();
}

static void begin_drain(void)
{
    if (L.draining)
        return;
    L.draining = 1;
    epoll_ctl(L.ep, EPOLL_CTL_DEL, L.listen_fd, NULL);
    close(L.listen_fd);
    L.listen_fd = -1;
    sweep();
}

static void on_event(struct epoll_event *ev)
{
    struct conn *c = ev->data.ptr;

    if (c == (void *)&L.listen_fd) {
        conn_accept();
    } else if (c == (void *)&L.wake_fd) {
        uint64_t n;
        if (read(L.wake_fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
            log_warn("stream wake-up read: %s", strerror(errno));
        sweep();
    } else if (c == (void *)&L.sig_fd) {
        struct signalfd_siginfo si;
        if (read(L.sig_fd, &si, sizeof(si)) == (ssize_t)sizeof(si))
            begin_drain();
    } else if (!c->gone) {
        if (ev->events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
            on_readable(c);             /* EOF and errors close it there */
        if (!c->gone && (ev->events & EPOLLOUT))
            on_writable(c);
        conn_settle(c);
    }
}

static void serve(void)
{
    struct epoll_event evs[256];
    uint64_t last_tick = util_monotonic_ms();
    int n, i;

    while (!L.draining || L.nconns > 0) {
        n = epoll_wait(L.ep, evs, 256, TICK_MS);
        if (n < 0 && errno != EINTR) {
            log_error("stream: epoll_wait: %s", strerror(errno));
            break;
        }
        for (i = 0; i < n; i++)
            on_event(&evs[i]);
        if (util_monotonic_ms() - last_tick >= TICK_MS) {
            last_tick = util_monotonic_ms();
            tick(last_tick);
            /* in a group: replication replaced the databases under us;
             * drain, and the supervisor starts a process that opens them */
            if (!L.draining && store_handles_dead(L.app.store)) {
                log_info("the databases were replaced by replication: restarting the "
                         "stream process");
                begin_drain();
            }
        }
        bury();
    }
}

/* Signals as in a worker, but SIGTERM/SIGINT/SIGHUP (a drain; a roll: the
 * supervisor replaces us) read from a signalfd. */
static int stream_signals(void)
{
    sigset_t set;

    worker_child_signals(&set);
    return signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
}

static int watch(int fd, void *tag)
{
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = tag };

    return epoll_ctl(L.ep, EPOLL_CTL_ADD, fd, &ev);
}

static int start_pool(pthread_t **threads)
{
    pthread_attr_t attr;
    int i, n = L.app.cfg->stream_max_queries;

    pthread_mutex_init(&L.mu, NULL);
    pthread_cond_init(&L.cv, NULL);
    *threads = xcalloc((size_t)n, sizeof(**threads));
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, STREAM_STACK_SIZE);
    for (i = 0; i < n; i++)
        if (pthread_create(&(*threads)[i], &attr, pool_thread, NULL) != 0)
            break;
    pthread_attr_destroy(&attr);
    return i;
}

void stream_run(const struct app *shared, int listen_fd)
{
    const struct config *cfg = shared->cfg;
    struct store_options so = { cfg->data_dir, cfg->db_cache_mb, cfg->db_sync,
                                cfg->workers * cfg->threads * 2 + cfg->stream_max_queries + 72,
                                cfg->db_run_flush_ms, replication_options(cfg) };
    sigset_t stopset;
    pthread_t *threads = NULL;
    int i, nthreads;
    pid_t parent = getppid();

    memset(&L, 0, sizeof(L));
    L.app = *shared;
    L.app.store = NULL;
    L.listen_fd = listen_fd;
    log_set_ident("astromesh-cloudd/stream");
    L.sig_fd = stream_signals();
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    prctl(PR_SET_NAME, "am-stream");
    if (getppid() != parent)
        _exit(1);
    L.ep = epoll_create1(EPOLL_CLOEXEC);
    L.wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (L.sig_fd < 0 || L.ep < 0 || L.wake_fd < 0 || auth_init() != 0 || http_init() != 0 ||
        watch(listen_fd, &L.listen_fd) != 0 || watch(L.wake_fd, &L.wake_fd) != 0 ||
        watch(L.sig_fd, &L.sig_fd) != 0) {
        log_error("stream process start-up failed: %s", strerror(errno));
        _exit(1);
    }
    sigemptyset(&stopset);
    sigaddset(&stopset, SIGTERM);
    sigaddset(&stopset, SIGINT);
    sigaddset(&stopset, SIGHUP);
    worker_store_open(&L.app.store, &so, &stopset);
    if ((nthreads = start_pool(&threads)) == 0) {
        log_error("stream process could not start any query thread");
        _exit(1);
    }
    log_debug("stream process ready with %d query threads", nthreads);
    serve();
    pthread_mutex_lock(&L.mu);
    L.stop = 1;
    pthread_cond_broadcast(&L.cv);
    pthread_mutex_unlock(&L.mu);
    for (i = 0; i < nthreads; i++)
        pthread_join(threads[i], NULL);
    bury();
    store_close(L.app.store);
    free(threads);
    _exit(0);
}
