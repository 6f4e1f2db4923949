/*
 * fake_openai.c - a fast fake OpenAI-compatible model provider, for the
 * benchmark and tests ONLY.
 *
 * What it is for: `make bench` (tests/bench/bench.sh) measures how many
 * runs per second the daemon can push through a model provider. The
 * scriptable Python fake (tests/fake_provider.py) tops out at about 1800
 * answers/s (one core, the GIL), so it, not the daemon, was the limit. This
 * program answers the same non-streaming chat completion, in the same
 * shape, with the same text and token counts, tens of thousands of times
 * a second on one core: non-blocking sockets, one epoll loop per thread.
 *
 * What it must NEVER be used for: anything but tests and benchmarks on
 * one machine. It is not a model, not a proxy and not a server to expose:
 * it checks no API key, speaks plain HTTP only, listens on 127.0.0.1 only,
 * trusts its client, implements just enough of HTTP/1.1 for libcurl and
 * wrk, and makes up every answer. Do not ship it, install it or point
 * anything but a test at it.
 *
 * Usage:
 *   fake_openai [--port N] [--threads N]
 * Listens on 127.0.0.1:N (0, the default, picks a free port) and prints the
 * bound port and a newline on stdout as its first line. --threads N (default
 * 1) runs N event loops, each with its own SO_REUSEPORT listener. It exits 0
 * on SIGTERM or SIGINT, and by itself when the process that started it goes
 * away (PR_SET_PDEATHSIG, plus a getppid() check every 0.5 s, like
 * fake_provider.py's watch_parent). Note that PR_SET_PDEATHSIG fires when
 * the parent *thread* that forked it exits: start it from a shell or from a
 * thread that outlives it.
 *
 * HTTP: HTTP/1.1 with keep-alive (HTTP/1.0 with "Connection: keep-alive"),
 * Content-Length request bodies only (chunked bodies get 411), bodies up
 * to 1 MiB (413 beyond), "Expect: 100-continue" answered with "100
 * Continue", pipelined requests answered in order.
 *
 * The one endpoint: POST <prefix>/chat/completions (as fake_provider.py,
 * any prefix; the daemon uses base_url http://127.0.0.1:PORT/v1, so
 * /v1/chat/completions), an OpenAI chat body. The answer is
 * fake_provider.py's default ("ok" mode) non-streaming OpenAI answer:
 *   {"id":"chatcmpl-fake-<n>","object":"chat.completion","created":<time>,
 *    "model":<request's model or "">,"system_fingerprint":"fp_fake",
 *    "choices":[{"index":0,"message":{"role":"assistant",
 *      "content":"fake answer to: <last user text>","refusal":null},
 *      "logprobs":null,"finish_reason":"stop"}],
 *    "usage":{"prompt_tokens":P,"completion_tokens":C,"total_tokens":P+C}}
 * with <n> a counter of answered requests, the user text, tool result and
 * token counts computed exactly as fake_provider.py's conversation() and
 * words() do (words = runs of non-blanks, Python's str.split(); P = words
 * of every message's text, C = words of the answer; "; tool said: <text>"
 * appended when the last message is a tool result). A body that is not a
 * JSON object, or has no message with role "user", gets 400; any other
 * method or path 404; both with an OpenAI error body
 *   {"error":{"message":"...","type":"invalid_request_error",
 *             "param":null,"code":null}}.
 * Not implemented (use fake_provider.py for them): streaming, tool calls,
 * the /_control scripting API, /_requests, /_health, API key checks.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <json.h>

#define MAX_BODY (1024 * 1024)        /* larger request bodies get 413 */
#define MAX_HEAD (64 * 1024)          /* larger request heads get 431 */
#define READ_CHUNK 16384              /* room made before each recv() */
#define OUT_HIGH (256 * 1024)         /* stop reading while this much is unsent */
#define MAX_THREADS 64
#define DRAIN_SECONDS 2               /* how long a closing connection is drained */
#define MAX_EVENTS 256

struct buf {
    char *p;
    size_t len, cap;
};

struct conn {
    int fd;
    struct buf in;          /* bytes received, not yet consumed */
    struct buf out;         /* bytes to send */
    size_t out_off;         /* how much of out is sent */
    size_t scanned;         /* how much of in was searched for the end of the head */
    /* the request being received, once its head is complete */
    int have_head;
    size_t head_len, body_len;
    size_t method_off, method_len, path_off, path_len;
    int keep_alive, http10;
    int expect_continue, sent_continue;
    /* after the last answer: shut down, then drain until EOF or the deadline */
    int closing;            /* no more requests; close once out is sent */
    int draining;           /* write side shut; reading and discarding */
    time_t drain_deadline;
    uint32_t events;        /* the epoll interest set */
    struct conn *prev, *next;
};

struct loop {
    int listen_fd;
    int epfd;
    int wake_fd;            /* shared eventfd: readable means stop */
    pthread_t thread;
    json_tokener *tok;
    struct conn *conns;     /* every open connection, for the clean-up */
    int ndraining;
};

static atomic_ulong serial;  /* fake_provider.py's plan() serial */

/* markers for epoll_event.data.ptr */
static char listen_marker, wake_marker;

static void die(const char *what)
{
    fprintf(stderr, "fake_openai: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* --- buffers ------------------------------------------------------------- */

static int buf_reserve(struct buf *b, size_t more)
{
    if (b->cap - b->len >= more)
        return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->len < more)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p)
        return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static int buf_add(struct buf *b, const void *data, size_t n)
{
    if (buf_reserve(b, n) < 0)
        return -1;
    memcpy(b->p + b->len, data, n);
    b->len += n;
    return 0;
}

static void buf_free(struct buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* --- Python's str.split(), on UTF-8 ------------------------------------- */

/* Python's str.isspace() */
static int py_space(uint32_t c)
{
    if (c < 0x80)
        return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20);
    return c == 0x85 || c == 0xa0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200a) ||
           c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

/* The next code point of s[*i..n); invalid bytes count as themselves
 * (json-c validated the UTF-8, so they do not occur). */
static uint32_t next_cp(const unsigned char *s, size_t n, size_t *i)
{
    uint32_t c = s[(*i)++];
    int extra = c >= 0xf0 ? 3 : c >= 0xe0 ? 2 : c >= 0xc0 ? 1 : 0;
    if (extra)
        c &= 0x3f >> extra;
    while (extra-- > 0 && *i < n && (s[*i] & 0xc0) == 0x80)
        c = (c << 6) | (s[(*i)++] & 0x3f);
    return c;
}

/* len(text.split()) */
static long words(const char *text, size_t n)
{
    const unsigned char *s = (const unsigned char *)text;
    long count = 0;
    int in_word = 0;
    size_t i = 0;
    while (i < n) {
        uint32_t c = next_cp(s, n, &i);
        if (py_space(c)) {
            in_word = 0;
        } else if (!in_word) {
            in_word = 1;
            count++;
        }
    }
    return count;
}

/* --- fake_provider.py's conversation() ---------------------------------- */

static int is_str(json_object *o)
{
    return o && json_object_is_type(o, json_type_string);
}

static int str_eq(json_object *o, const char *s)
{
    return is_str(o) && strcmp(json_object_get_string(o), s) == 0;
}

static json_object *get(json_object *obj, const char *key)
{
    json_object *v = NULL;
    if (obj && json_object_is_type(obj, json_type_object))
        json_object_object_get_ex(obj, key, &v);
    return v;
}

/* text_of(content): a string, or the non-empty text parts (and, nested,
 * tool_result contents) of a list joined by " ". Appends to out (if not
 * NULL) and returns the word count either way. */
static long text_of(json_object *content, struct buf *out, int *oom)
{
    if (is_str(content)) {
        const char *s = json_object_get_string(content);
        size_t n = (size_t)json_object_get_string_len(content);
        if (out && buf_add(out, s, n) < 0)
            *oom = 1;
        return words(s, n);
    }
    if (!content || !json_object_is_type(content, json_type_array))
        return 0;
    long total = 0;
    int first = 1;
    size_t n = json_object_array_length(content);
    for (size_t i = 0; i < n; i++) {
        json_object *b = json_object_array_get_idx(content, i);
        if (!b || !json_object_is_type(b, json_type_object))
            continue;
        json_object *part = get(b, "text");
        if (!is_str(part)) {
            if (!str_eq(get(b, "type"), "tool_result"))
                continue;
            part = get(b, "content");
        }
        if (!out) {
            total += text_of(part, NULL, oom);
            continue;
        }
        size_t mark = out->len;
        if (!first && buf_add(out, " ", 1) < 0)
            *oom = 1;
        size_t before = out->len;
        total += text_of(part, out, oom);
        if (out->len == before)
            out->len = mark;    /* " ".join(p for p in parts if p) */
        else
            first = 0;
    }
    return total;
}

/* user_text(content): like text_of, but a list's "text" parts only, all
 * of them (empty ones too) joined by " ". */
static void user_text(json_object *content, struct buf *out, int *oom)
{
    if (!content || !json_object_is_type(content, json_type_array)) {
        text_of(content, out, oom);
        return;
    }
    int first = 1;
    size_t n = json_object_array_length(content);
    for (size_t i = 0; i < n; i++) {
        json_object *t = get(json_object_array_get_idx(content, i), "text");
        if (!is_str(t))
            continue;
        if ((!first && buf_add(out, " ", 1) < 0) ||
            buf_add(out, json_object_get_string(t),
                    (size_t)json_object_get_string_len(t)) < 0)
            *oom = 1;
        first = 0;
    }
}

/* --- answers -------------------------------------------------------------- */

static const char *reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    default: return "Unknown";
    }
}

static void add_key(json_object *obj, const char *key, json_object *val)
{
    json_object_object_add_ex(obj, key, val,
                              JSON_C_OBJECT_ADD_KEY_IS_NEW | JSON_C_OBJECT_ADD_CONSTANT_KEY);
}

/* Queue one answer: status line, headers and the JSON text of obj (which
 * it frees). head_only leaves the body out (HEAD). */
static void respond(struct conn *c, int status, json_object *obj, int head_only)
{
    size_t len = 0;
    const char *body = "";
    if (obj)
        body = json_object_to_json_string_length(
            obj, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
    if (!body) {
        body = "";
        len = 0;
    }
    char head[256];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n%s\r\n",
                     status, reason(status), len,
                     !c->keep_alive ? "Connection: close\r\n" :
                     c->http10 ? "Connection: keep-alive\r\n" : "");
    if (n < 0 || (size_t)n >= sizeof head ||
        buf_reserve(&c->out, (size_t)n + len) < 0) {
        c->closing = 1;         /* out of memory: give up on this client */
    } else {
        buf_add(&c->out, head, (size_t)n);
        if (!head_only)
            buf_add(&c->out, body, len);
    }
    if (obj)
        json_object_put(obj);
}

static void respond_error(struct conn *c, int status, const char *message, int head_only)
{
    json_object *err = json_object_new_object();
    json_object *inner = json_object_new_object();
    if (!err || !inner) {
        json_object_put(err);
        json_object_put(inner);
        c->keep_alive = 0;
        c->closing = 1;
        return;
    }
    add_key(inner, "message", json_object_new_string(message));
    add_key(inner, "type", json_object_new_string("invalid_request_error"));
    add_key(inner, "param", NULL);
    add_key(inner, "code", NULL);
    add_key(err, "error", inner);
    respond(c, status, err, head_only);
}

/* POST .../chat/completions */
static void chat(struct loop *lp, struct conn *c, const char *body, size_t len)
{
    json_tokener_reset(lp->tok);
    json_object *req = len ? json_tokener_parse_ex(lp->tok, body, (int)len) : NULL;
    if (req) {
        /* only JSON whitespace may follow the value, as for json.loads() */
        for (size_t i = json_tokener_get_parse_end(lp->tok); i < len; i++) {
            if (!strchr(" \t\r\n", body[i]) || body[i] == '\0') {
                json_object_put(req);
                req = NULL;
                break;
            }
        }
    }
    if (!req || !json_object_is_type(req, json_type_object)) {
        json_object_put(req);
        respond_error(c, 400, "request body is not a JSON object", 0);
        return;
    }

    json_object *m = get(req, "model");
    json_object *msgs = get(req, "messages");
    size_t nmsgs = msgs && json_object_is_type(msgs, json_type_array)
                       ? json_object_array_length(msgs) : 0;
    long prompt = 0;
    int any_user = 0, oom = 0;
    json_object *last_user = NULL, *last = NULL;
    struct buf text = {0};
    for (size_t i = 0; i < nmsgs; i++) {
        json_object *msg = json_object_array_get_idx(msgs, i);
        if (!msg || !json_object_is_type(msg, json_type_object))
            continue;
        last = msg;
        json_object *content = get(msg, "content");
        prompt += text_of(content, NULL, &oom);
        if (str_eq(get(msg, "role"), "user")) {
            any_user = 1;
            text.len = 0;
            user_text(content, &text, &oom);
            if (text.len)                 /* the last with non-empty text */
                last_user = msg;
        }
    }
    if (!any_user) {
        buf_free(&text);
        json_object_put(req);
        respond_error(c, 400, "messages: no message with role \"user\"", 0);
        return;
    }

    static const char prefix[] = "fake answer to: ";
    text.len = 0;
    if (buf_add(&text, prefix, sizeof prefix - 1) < 0)
        oom = 1;
    if (last_user)
        user_text(get(last_user, "content"), &text, &oom);
    if (last && str_eq(get(last, "role"), "tool")) {
        static const char said[] = "; tool said: ";
        if (buf_add(&text, said, sizeof said - 1) < 0)
            oom = 1;
        text_of(get(last, "content"), &text, &oom);
    }
    long completion = words(text.p, text.len);

    unsigned long n = atomic_fetch_add(&serial, 1) + 1;
    char id[48];
    snprintf(id, sizeof id, "chatcmpl-fake-%lu", n);

    json_object *ans = json_object_new_object();
    json_object *choices = json_object_new_array_ext(1);
    json_object *choice = json_object_new_object();
    json_object *message = json_object_new_object();
    json_object *usage = json_object_new_object();
    if (oom || text.len > INT_MAX || !ans || !choices || !choice || !message || !usage) {
        json_object_put(ans);
        json_object_put(choices);
        json_object_put(choice);
        json_object_put(message);
        json_object_put(usage);
        buf_free(&text);
        json_object_put(req);
        respond_error(c, 500, "out of memory", 0);
        return;
    }
    add_key(ans, "id", json_object_new_string(id));
    add_key(ans, "object", json_object_new_string("chat.completion"));
    add_key(ans, "created", json_object_new_int64((int64_t)time(NULL)));
    add_key(ans, "model", is_str(m) ? json_object_get(m) : json_object_new_string(""));
    add_key(ans, "system_fingerprint", json_object_new_string("fp_fake"));
    add_key(message, "role", json_object_new_string("assistant"));
    add_key(message, "content", json_object_new_string_len(text.p, (int)text.len));
    add_key(message, "refusal", NULL);
    add_key(choice, "index", json_object_new_int(0));
    add_key(choice, "message", message);
    add_key(choice, "logprobs", NULL);
    add_key(choice, "finish_reason", json_object_new_string("stop"));
    json_object_array_add(choices, choice);
    add_key(ans, "choices", choices);
    add_key(usage, "prompt_tokens", json_object_new_int64(prompt));
    add_key(usage, "completion_tokens", json_object_new_int64(completion));
    add_key(usage, "total_tokens", json_object_new_int64(prompt + completion));
    add_key(ans, "usage", usage);
    buf_free(&text);
    respond(c, 200, ans, 0);
    json_object_put(req);        /* after respond: ans shares the model string */
}

/* --- HTTP ------------------------------------------------------------------ */

static int token_eq(const char *s, size_t n, const char *lit)
{
    return strlen(lit) == n && strncasecmp(s, lit, n) == 0;
}

/* Does the comma-separated header value contain token lit? */
static int has_token(const char *v, size_t n, const char *lit)
{
    size_t i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t s = i;
        while (i < n && v[i] != ',')
            i++;
        size_t e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (token_eq(v + s, e - s, lit))
            return 1;
    }
    return 0;
}

/* Parse the head in c->in[0..head_len). Returns 0, or an HTTP status to
 * answer with before closing. */
static int parse_head(struct conn *c)
{
    const char *p = c->in.p, *end = c->in.p + c->head_len - 2; /* at the final CRLF */
    const char *eol = memmem(p, (size_t)(end - p) + 2, "\r\n", 2);
    /* request line: METHOD SP TARGET SP HTTP/1.x */
    const char *sp1 = memchr(p, ' ', (size_t)(eol - p));
    if (!sp1 || sp1 == p)
        return 400;
    const char *sp2 = memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1));
    if (!sp2 || sp2 == sp1 + 1)
        return 400;
    const char *ver = sp2 + 1;
    size_t vlen = (size_t)(eol - ver);
    int minor;
    if (vlen == 8 && memcmp(ver, "HTTP/1.1", 8) == 0)
        minor = 1;
    else if (vlen == 8 && memcmp(ver, "HTTP/1.0", 8) == 0)
        minor = 0;
    else
        return 400;
    c->method_off = 0;
    c->method_len = (size_t)(sp1 - p);
    c->path_off = (size_t)(sp1 + 1 - p);
    c->path_len = (size_t)(sp2 - sp1 - 1);
    c->keep_alive = minor == 1;
    c->http10 = minor == 0;
    c->expect_continue = 0;

    int have_len = 0, chunked = 0;
    size_t clen = 0;
    const char *line = eol + 2;
    while (line < end) {
        const char *le = memmem(line, (size_t)(end - line) + 2, "\r\n", 2);
        const char *colon = memchr(line, ':', (size_t)(le - line));
        if (!colon || colon == line)
            return 400;
        size_t nlen = (size_t)(colon - line);
        const char *v = colon + 1;
        while (v < le && (*v == ' ' || *v == '\t'))
            v++;
        const char *ve = le;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        size_t vl = (size_t)(ve - v);
        if (token_eq(line, nlen, "content-length")) {
            size_t x = 0;
            if (vl == 0)
                return 400;
            for (size_t i = 0; i < vl; i++) {
                if (v[i] < '0' || v[i] > '9')
                    return 400;
                if (x > (SIZE_MAX - 9) / 10)
                    return 413;
                x = x * 10 + (size_t)(v[i] - '0');
            }
            if (have_len && x != clen)
                return 400;
            have_len = 1;
            clen = x;
        } else if (token_eq(line, nlen, "transfer-encoding")) {
            chunked = 1;        /* chunked or anything else: not supported */
        } else if (token_eq(line, nlen, "expect")) {
            if (token_eq(v, vl, "100-continue"))
                c->expect_continue = 1;
        } else if (token_eq(line, nlen, "connection")) {
            if (has_token(v, vl, "close"))
                c->keep_alive = 0;
            else if (has_token(v, vl, "keep-alive"))
                c->keep_alive = 1;
        }
        line = le + 2;
    }
    if (chunked)
        return 411;
    if (clen > MAX_BODY)
        return 413;
    c->body_len = clen;
    return 0;
}

static void handle(struct loop *lp, struct conn *c)
{
    const char *method = c->in.p + c->method_off;
    const char *path = c->in.p + c->path_off;
    size_t plen = c->path_len;
    const char *q = memchr(path, '?', plen);
    if (q)
        plen = (size_t)(q - path);
    static const char ep[] = "/chat/completions";
    size_t eplen = sizeof ep - 1;
    int is_post = c->method_len == 4 && memcmp(method, "POST", 4) == 0;
    if (is_post && plen >= eplen && memcmp(path + plen - eplen, ep, eplen) == 0) {
        chat(lp, c, c->in.p + c->head_len, c->body_len);
        return;
    }
    int head_only = c->method_len == 4 && memcmp(method, "HEAD", 4) == 0;
    respond_error(c, 404, "not found: this fake serves only POST /v1/chat/completions",
                  head_only);
}

/* Answer every complete request in c->in. */
static void process(struct loop *lp, struct conn *c)
{
    size_t pos = 0;    /* consumed bytes */
    while (!c->closing) {
        char *start = c->in.p + pos;
        size_t avail = c->in.len - pos;
        if (!c->have_head) {
            size_t from = c->scanned > 3 ? c->scanned - 3 : 0;
            char *e = avail > from ? memmem(start + from, avail - from, "\r\n\r\n", 4) : NULL;
            if (!e) {
                c->scanned = avail;
                if (avail > MAX_HEAD) {
                    c->keep_alive = 0;
                    respond_error(c, 431, "request head too large", 0);
                    c->closing = 1;
                }
                break;
            }
            /* parse_head works on c->in from 0: move the request there */
            if (pos) {
                memmove(c->in.p, start, avail);
                c->in.len = avail;
                pos = 0;
                e = c->in.p + (e - start);
                start = c->in.p;
            }
            c->head_len = (size_t)(e - start) + 4;
            c->scanned = 0;
            if (c->head_len > MAX_HEAD) {
                c->keep_alive = 0;
                respond_error(c, 431, "request head too large", 0);
                c->closing = 1;
                break;
            }
            int status = parse_head(c);
            if (status) {
                c->keep_alive = 0;
                respond_error(c, status,
                              status == 411 ? "request bodies must have a Content-Length" :
                              status == 413 ? "request body larger than 1 MiB" :
                              "malformed HTTP request", 0);
                c->closing = 1;
                break;
            }
            c->have_head = 1;
            c->sent_continue = 0;
        }
        if (avail < c->head_len + c->body_len) {
            if (c->expect_continue && !c->sent_continue) {
                static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
                if (buf_add(&c->out, cont, sizeof cont - 1) < 0)
                    c->closing = 1;
                c->sent_continue = 1;
            }
            break;
        }
        /* handle() reads method/path at offsets from c->in.p */
        if (pos) {
            memmove(c->in.p, start, avail);
            c->in.len = avail;
            pos = 0;
        }
        handle(lp, c);
        pos = c->head_len + c->body_len;
        c->have_head = 0;
        if (!c->keep_alive)
            c->closing = 1;
    }
    if (pos) {
        memmove(c->in.p, c->in.p + pos, c->in.len - pos);
        c->in.len -= pos;
    }
    /* do not keep a large body's buffer around an idle connection */
    if (c->in.len == 0 && c->in.cap > 64 * 1024)
        buf_free(&c->in);
}

/* --- connections -------------------------------------------------------- */

static void conn_close(struct loop *lp, struct conn *c)
{
    epoll_ctl(lp->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    if (c->draining)
        lp->ndraining--;
    if (c->prev)
        c->prev->next = c->next;
    else
        lp->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    buf_free(&c->in);
    buf_free(&c->out);
    free(c);
}

static int conn_interest(struct loop *lp, struct conn *c)
{
    size_t pending = c->out.len - c->out_off;
    uint32_t ev = 0;
    if (c->draining || (!c->closing && pending < OUT_HIGH))
        ev |= EPOLLIN;
    if (pending)
        ev |= EPOLLOUT;
    if (ev == c->events)
        return 0;
    struct epoll_event e = {.events = ev, .data.ptr = c};
    if (epoll_ctl(lp->epfd, EPOLL_CTL_MOD, c->fd, &e) < 0)
        return -1;
    c->events = ev;
    return 0;
}

/* Send what is queued. Returns -1 if the connection is to be closed now. */
static int conn_flush(struct loop *lp, struct conn *c)
{
    while (c->out_off < c->out.len) {
        ssize_t n = send(c->fd, c->out.p + c->out_off, c->out.len - c->out_off, MSG_NOSIGNAL);
        if (n > 0) {
            c->out_off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        } else {
            return -1;
        }
    }
    if (c->out_off == c->out.len) {
        c->out.len = c->out_off = 0;
        if (c->out.cap > 64 * 1024)
            buf_free(&c->out);
        if (c->closing && !c->draining) {
            /* Half-close, then read until the client's EOF, so that bytes
             * it still sends (a refused body) do not turn our close into
             * a reset that could destroy the answer in flight. */
            shutdown(c->fd, SHUT_WR);
            c->draining = 1;
            c->drain_deadline = time(NULL) + DRAIN_SECONDS;
            lp->ndraining++;
            buf_free(&c->in);
        }
    }
    return conn_interest(lp, c);
}

static void conn_readable(struct loop *lp, struct conn *c)
{
    if (c->draining) {
        char junk[16384];
        for (;;) {
            ssize_t n = recv(c->fd, junk, sizeof junk, 0);
            if (n > 0)
                continue;
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                return;
            conn_close(lp, c);
            return;
        }
    }
    for (;;) {
        if (buf_reserve(&c->in, READ_CHUNK) < 0) {
            conn_close(lp, c);
            return;
        }
        size_t room = c->in.cap - c->in.len;
        ssize_t n = recv(c->fd, c->in.p + c->in.len, room, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n == 0) {           /* EOF: answer what came, then close */
            c->closing = 1;
            break;
        }
        if (n < 0) {
            conn_close(lp, c);
            return;
        }
        c->in.len += (size_t)n;
        process(lp, c);
        if (c->closing || c->out.len - c->out_off >= OUT_HIGH)
            break;
        if ((size_t)n < room)   /* most likely drained; epoll says if not */
            break;
    }
    if (conn_flush(lp, c) < 0)
        conn_close(lp, c);
}

static void accept_all(struct loop *lp)
{
    for (;;) {
        int fd = accept4(lp->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                fprintf(stderr, "fake_openai: accept: %s\n", strerror(errno));
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        c->events = EPOLLIN;
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(lp->epfd, EPOLL_CTL_ADD, fd, &e) < 0) {
            close(fd);
            free(c);
            continue;
        }
        c->next = lp->conns;
        if (lp->conns)
            lp->conns->prev = c;
        lp->conns = c;
    }
}

static void sweep_draining(struct loop *lp)
{
    time_t now = time(NULL);
    struct conn *c = lp->conns;
    while (c) {
        struct conn *next = c->next;
        if (c->draining && now >= c->drain_deadline)
            conn_close(lp, c);
        c = next;
    }
}

static void *loop_run(void *arg)
{
    struct loop *lp = arg;
    struct epoll_event evs[MAX_EVENTS];
    int running = 1;
    while (running) {
        int n = epoll_wait(lp->epfd, evs, MAX_EVENTS, lp->ndraining ? 1000 : -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "fake_openai: epoll_wait: %s\n", strerror(errno));
            break;
        }
        for (int i = 0; i < n; i++) {
            void *p = evs[i].data.ptr;
            if (p == &wake_marker) {
                running = 0;
            } else if (p == &listen_marker) {
                accept_all(lp);
            } else {
                struct conn *c = p;
                if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                    /* conn_readable flushes too, and may free c */
                    conn_readable(lp, c);
                } else if (evs[i].events & EPOLLOUT) {
                    if (conn_flush(lp, c) < 0)
                        conn_close(lp, c);
                }
            }
        }
        if (lp->ndraining)
            sweep_draining(lp);
    }
    while (lp->conns)
        conn_close(lp, lp->conns);
    return NULL;
}

/* --- start-up ---------------------------------------------------------- */

static int listen_on(int port, int reuseport)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket");
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
        die("SO_REUSEADDR");
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0)
        die("SO_REUSEPORT");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0)
        die("bind 127.0.0.1");
    if (listen(fd, 4096) < 0)
        die("listen");
    return fd;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: fake_openai [--port N] [--threads N]\n"
               "  A fake OpenAI-compatible chat-completions server on 127.0.0.1, for\n"
               "  tests and benchmarks only. Prints the port first; exits on SIGTERM,\n"
               "  SIGINT or when its parent goes away.\n");
}

static long int_arg(const char *name, const char *v, long lo, long hi)
{
    char *end;
    errno = 0;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || errno || end == v || *end || x < lo || x > hi) {
        fprintf(stderr, "fake_openai: %s needs an integer in %ld..%ld\n", name, lo, hi);
        usage(stderr);
        exit(2);
    }
    return x;
}

int main(int argc, char **argv)
{
    pid_t ppid = getppid();
    long port = 0, nthreads = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--port") == 0)
            port = int_arg("--port", i + 1 < argc ? argv[++i] : NULL, 0, 65535);
        else if (strncmp(a, "--port=", 7) == 0)
            port = int_arg("--port", a + 7, 0, 65535);
        else if (strcmp(a, "--threads") == 0)
            nthreads = int_arg("--threads", i + 1 < argc ? argv[++i] : NULL, 1, MAX_THREADS);
        else if (strncmp(a, "--threads=", 10) == 0)
            nthreads = int_arg("--threads", a + 10, 1, MAX_THREADS);
        else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "fake_openai: unknown argument %s\n", a);
            usage(stderr);
            return 2;
        }
    }

    /* Exit with the process that started us (a crashed test or benchmark),
     * as fake_provider.py does; ppid 1 means there is no such process. */
    if (ppid != 1) {
        if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0)
            die("prctl(PR_SET_PDEATHSIG)");
        if (getppid() != ppid)
            return 0;           /* it went away before the prctl() */
    }

    /* The signals are taken by the main thread with sigtimedwait(); every
     * event-loop thread inherits this mask. */
    sigset_t stop_sigs;
    sigemptyset(&stop_sigs);
    sigaddset(&stop_sigs, SIGTERM);
    sigaddset(&stop_sigs, SIGINT);
    if (pthread_sigmask(SIG_BLOCK, &stop_sigs, NULL) != 0)
        die("pthread_sigmask");
    signal(SIGPIPE, SIG_IGN);

    int wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wake_fd < 0)
        die("eventfd");
    struct loop *loops = calloc((size_t)nthreads, sizeof *loops);
    if (!loops)
        die("calloc");
    int bound_port = (int)port;
    for (long i = 0; i < nthreads; i++) {
        struct loop *lp = &loops[i];
        lp->listen_fd = listen_on(bound_port, nthreads > 1);
        if (i == 0) {
            struct sockaddr_in a;
            socklen_t alen = sizeof a;
            if (getsockname(lp->listen_fd, (struct sockaddr *)&a, &alen) < 0)
                die("getsockname");
            bound_port = ntohs(a.sin_port);
        }
        lp->wake_fd = wake_fd;
        lp->epfd = epoll_create1(EPOLL_CLOEXEC);
        if (lp->epfd < 0)
            die("epoll_create1");
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = &listen_marker};
        if (epoll_ctl(lp->epfd, EPOLL_CTL_ADD, lp->listen_fd, &e) < 0)
            die("epoll_ctl listener");
        struct epoll_event w = {.events = EPOLLIN, .data.ptr = &wake_marker};
        if (epoll_ctl(lp->epfd, EPOLL_CTL_ADD, wake_fd, &w) < 0)
            die("epoll_ctl eventfd");
        lp->tok = json_tokener_new_ex(64);
        if (!lp->tok)
            die("json_tokener_new_ex");
        json_tokener_set_flags(lp->tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    }
    for (long i = 0; i < nthreads; i++) {
        int err = pthread_create(&loops[i].thread, NULL, loop_run, &loops[i]);
        if (err) {
            errno = err;
            die("pthread_create");
        }
    }

    printf("%d\n", bound_port);
    fflush(stdout);

    /* Wait for SIGTERM/SIGINT, checking every 0.5 s that the parent lives. */
    for (;;) {
        struct timespec half = {0, 500 * 1000 * 1000};
        int sig = sigtimedwait(&stop_sigs, NULL, &half);
        if (sig == SIGTERM || sig == SIGINT)
            break;
        if (sig < 0 && errno != EAGAIN && errno != EINTR)
            die("sigtimedwait");
        if (ppid != 1 && getppid() != ppid)
            break;
    }

    uint64_t one = 1;
    if (write(wake_fd, &one, sizeof one) < 0)
        die("eventfd write");
    for (long i = 0; i < nthreads; i++) {
        pthread_join(loops[i].thread, NULL);
        close(loops[i].listen_fd);
        close(loops[i].epfd);
        json_tokener_free(loops[i].tok);
    }
    close(wake_fd);
    free(loops);
    return 0;
}
