/*
 * providers.c - the providers module's front: dispatch by provider (the
 * table of protocol wires, the echo short-cut), the checks every request
 * passes, the libcurl transport (one easy handle per thread, the auth
 * header, the answer buffer) and the mapping of transport and HTTP
 * failures to AM_EPROVIDER / AM_ETIMEOUT.
 *
 * It owns each thread's curl easy handle and, during a call, the header
 * list and the answer buffer. It is the only file in the project that
 * speaks HTTP to a model provider and the only one that handles the API
 * key; it must never log, never put the key in a URL, a body or an error
 * message, and never read more than PROVIDERS_MAX_ANSWER bytes of an
 * answer. The wire formats are the protocol files' and provider_wire.c's
 * business, not this file's.
 *
 * DESIGN
 *
 * A call is: build the body (protocol file) -> POST it with the calling
 * thread's libcurl easy handle -> check the HTTP status -> parse the
 * answer (protocol file). Each thread keeps its handle between calls
 * (thread_handle), so the connection to a provider stays open and a run
 * pays no new TCP and TLS handshake; curl_easy_reset after every call
 * drops all the options (headers, buffers) and keeps only the connection
 * (at most one idle connection a thread, CURLOPT_MAXCONNECTS). Nothing
 * else is shared between calls but curl's global state, set up once by
 * providers_init, so any number of threads may call providers_chat at
 * once. The echo provider short-cuts all of it (provider_echo.c).
 *
 * Invariants:
 *  1. The API key goes into exactly one place: an auth header line in the
 *     curl_slist of the call, wiped before it is freed. It is never in a
 *     URL or a body, and every error message is scrubbed of it, and of
 *     every run of 8+ of its characters, before providers_chat returns (a
 *     provider may quote it back at us, whole or in part).
 *  2. An answer is read into a buffer of at most PROVIDERS_MAX_ANSWER
 *     bytes; a bigger one fails the call instead of growing memory.
 *  3. Every answer is parsed with a depth limit and every field read is
 *     type-checked (provider_wire_field), so no body can crash the worker;
 *     the worst a provider can do is an AM_EPROVIDER.
 *  4. The module never logs; the caller reports the error once.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <curl/curl.h>
#include <json-c/json.h>

#include "state/config.h"
#include "lib/buf.h"
#include "lib/error.h"
#include "runtime/providers/provider_wire.h"
#include "runtime/providers/providers.h"
#include "lib/util.h"

#define PROVIDERS_MAX_ANSWER PROVIDER_WIRE_MAX_ANSWER  /* bytes read from a provider */
#define PROVIDERS_ANSWER_HINT 16384                 /* first allocation for an answer */
#define PROVIDERS_DEFAULT_TIMEOUT_MS 60000          /* when the request says 0 */
#define PROVIDERS_SNIPPET 120                       /* provider error text quoted */
#define PROVIDERS_SCRUB_MIN 8                       /* shortest run of a key scrubbed */

#ifdef PACKAGE_VERSION
#define PROVIDERS_USER_AGENT "astromesh-cloud/" PACKAGE_VERSION
#else
#define PROVIDERS_USER_AGENT "astromesh-cloud"
#endif

/* Indexed by enum config_provider. Echo's body and answer use the OpenAI
 * shape (providers_build/providers_parse), but providers_chat never sends
 * it anywhere. */
static const struct provider_wire *const wires[PROVIDER_COUNT] = {
    [PROVIDER_OPENAI] = &provider_openai_wire,
    [PROVIDER_ANTHROPIC] = &provider_anthropic_wire,
    [PROVIDER_GROQ] = &provider_openai_wire,
    [PROVIDER_MISTRAL] = &provider_openai_wire,
    [PROVIDER_COHERE] = &provider_cohere_wire,
    [PROVIDER_OLLAMA] = &provider_ollama_wire,
    [PROVIDER_ECHO] = &provider_openai_wire,
};

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int init_rc = -1;

static void init_curl(void)
{
    init_rc = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1;
}

int providers_init(void)
{
    pthread_once(&init_once, init_curl);
    return init_rc == 0 ? 0 : AM_EINTERNAL;
}

static const char *pname_of(int provider)
{
    const char *n = config_provider_name(provider);
    return n ? n : "unknown";
}

/* ------------------------------------------------------------------------ */
/* Build and parse                                                           */

void providers_response_free(struct providers_response *resp)
{
    provider_wire_response_free(resp);
}

/* Checks shared by every protocol before a body is built. */
static int check_request(const struct providers_request *req, struct am_error *err)
{
    size_t i;

    if (req->provider < 0 || req->provider >= PROVIDER_COUNT)
        return error_set(err, AM_EINTERNAL, "unknown provider %d", req->provider);
    if (req->model == NULL || *req->model == '\0')
        return error_set(err, AM_EINTERNAL, "provider %s: no model given",
                         pname_of(req->provider));
    if ((req->nmessages && req->messages == NULL) || (req->ntools && req->tools == NULL))
        return error_set(err, AM_EINTERNAL, "provider request without its arrays");
    for (i = 0; i < req->nmessages; i++) {
        const char *r = req->messages[i].role;

        if (r == NULL || (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant")
                          && strcmp(r, "tool")))
            return error_set(err, AM_EINTERNAL, "message %zu has an unknown role", i);
        if (req->messages[i].ncalls && req->messages[i].calls == NULL)
            return error_set(err, AM_EINTERNAL, "message %zu: calls missing", i);
    }
    return 0;
}

/* base_url without trailing slashes + path; NULL if base_url is unusable. */
static char *make_url(const char *base, const char *path)
{
    struct buf url = {0};
    size_t n;

    if (base == NULL || (strncmp(base, "http://", 7) && strncmp(base, "https://", 8)))
        return NULL;
    n = strlen(base);
    while (n > 0 && base[n - 1] == '/')
        n--;
    buf_put(&url, base, n);
    buf_puts(&url, path);
    return buf_take(&url);
}

int providers_build(const struct providers_request *req, char **url, char **body,
                    struct am_error *err)
{
    const struct provider_wire *w;
    struct json_object *obj = NULL;
    int rc;

    *url = NULL;
    *body = NULL;
    if ((rc = check_request(req, err)) != 0)
        return rc;
    w = wires[req->provider];
    if (req->provider == PROVIDER_ECHO)
        *url = xstrdup("echo://local");
    else if ((*url = make_url(req->base_url, w->path)) == NULL)
        return error_set(err, AM_EPROVIDER, "provider %s has no http(s) base_url configured",
                         pname_of(req->provider));
    if ((rc = w->build_body(req, &obj, err)) != 0) {
        free(*url);
        *url = NULL;
        return rc;
    }
    *body = xstrdup(provider_wire_json_text(obj));
    json_object_put(obj);
    return 0;
}

int providers_parse(int provider, const char *body, size_t len,
                    struct providers_response *resp, struct am_error *err)
{
    struct json_object *root = NULL;
    const char *pname = pname_of(provider);
    const char *why = NULL;
    int rc;

    memset(resp, 0, sizeof(*resp));
    if (provider < 0 || provider >= PROVIDER_COUNT)
        return error_set(err, AM_EINTERNAL, "unknown provider %d", provider);
    if (body == NULL)
        len = 0;
    if (provider_wire_parse_ex(body, len, &root, &why) != 0)
        return provider_wire_malformed(err, pname, "%s", why);
    if (!json_object_is_type(root, json_type_object)) {
        json_object_put(root);
        return provider_wire_malformed(err, pname, "not a JSON object");
    }
    rc = wires[provider]->parse(root, pname, resp, err);
    json_object_put(root);
    if (rc != 0) {
        providers_response_free(resp);
        return rc;
    }
    if (resp->content == NULL)
        resp->content = xstrdup("");
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Transport                                                                 */

struct answer_buf {
    struct buf body;         /* the answer so far, at most PROVIDERS_MAX_ANSWER bytes */
    int too_large;           /* set when the provider sent more than that */
    /* streaming (req->sink): a 2xx text/event-stream or NDJSON answer goes
     * to the reader as it arrives; an error answer, or a provider that
     * answered with one JSON body after all, is buffered as above */
    struct providers_stream *stream;
    CURL *curl;
    int mode;                /* 0 not known yet, 1 streamed, 2 buffered */
    int stream_rc;           /* the reader's error, which stopped the transfer */
    long retry_after;        /* the answer's Retry-After in seconds, 0: none */
    struct am_error *err;
};

/* The first bytes of a streamed call: read them as a stream unless the
 * status is not 2xx or the answer is a single JSON document. */
static int answer_mode(struct answer_buf *b)
{
    long status = 0;
    char *ctype = NULL;

    curl_easy_getinfo(b->curl, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(b->curl, CURLINFO_CONTENT_TYPE, &ctype);
    if (status < 200 || status > 299 ||
        (ctype != NULL && strncasecmp(ctype, "application/json", 16) == 0))
        return 2;
    return 1;
}

static size_t answer_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct answer_buf *b = userdata;
    size_t n = size * nmemb;

    if (b->stream != NULL && b->mode == 0)
        b->mode = answer_mode(b);
    if (b->mode == 1) {
        if ((b->stream_rc = providers_stream_feed(b->stream, ptr, n, b->err)) != 0)
            return 0;        /* curl stops at once with CURLE_WRITE_ERROR */
        return n;
    }
    if (b->body.cap == 0)
        buf_init(&b->body, PROVIDERS_ANSWER_HINT);
    if (buf_put_limited(&b->body, ptr, n, PROVIDERS_MAX_ANSWER) != 0) {
        b->too_large = 1;
        return 0;            /* curl stops with CURLE_WRITE_ERROR */
    }
    return n;
}

/* The header list of one call; the auth line holds the key (invariant 1). */
static struct curl_slist *make_headers(const struct provider_wire *w, const char *key,
                                       int streamed)
{
    struct curl_slist *h = NULL;
    const char *const *x;

    h = curl_slist_append(h, "Content-Type: application/json");
    h = curl_slist_append(h, !streamed ? "Accept: application/json"
                          : w->ndjson ? "Accept: application/x-ndjson, application/json"
                          : "Accept: text/event-stream, application/json");
    h = curl_slist_append(h, "Expect:");
    for (x = w->headers; x && *x; x++)
        h = curl_slist_append(h, *x);
    if (w->auth_prefix && key && *key) {
        size_t n = strlen(w->auth_prefix) + strlen(key) + 1;
        char *line = xmalloc(n);

        snprintf(line, n, "%s%s", w->auth_prefix, key);
        h = curl_slist_append(h, line);
        explicit_bzero(line, n);
        free(line);
    }
    if (h == NULL)
        abort();
    return h;
}

static void free_headers(struct curl_slist *h)
{
    struct curl_slist *p;

    for (p = h; p; p = p->next)
        explicit_bzero(p->data, strlen(p->data));
    curl_slist_free_all(h);
}

/* An ASCII control character (whatever the locale says). */
static int is_control(unsigned char c)
{
    return c < 0x20 || c == 0x7f;
}

/* Control characters in a key would let it split the header. */
static int key_is_clean(const char *key)
{
    const unsigned char *p;

    for (p = (const unsigned char *)key; p && *p; p++)
        if (is_control(*p))
            return 0;
    return 1;
}

/* A short, printable quote of the provider's own error text, if the body
 * carries one (error.message, error, message). "" otherwise. */
static void error_snippet(const char *body, size_t len, char *out, size_t cap)
{
    struct json_object *root = provider_wire_parse_text(body, len);
    struct json_object *e = NULL, *m = NULL;
    const char *s = NULL;
    size_t i;

    out[0] = '\0';
    if (json_object_object_get_ex(root, "error", &e)) {
        if (json_object_is_type(e, json_type_string))
            s = json_object_get_string(e);
        else if (json_object_object_get_ex(e, "message", &m)
                 && json_object_is_type(m, json_type_string))
            s = json_object_get_string(m);
    } else if (json_object_object_get_ex(root, "message", &m)
               && json_object_is_type(m, json_type_string)) {
        s = json_object_get_string(m);
    }
    if (s) {
        util_strlcpy(out, s, cap < PROVIDERS_SNIPPET ? cap : PROVIDERS_SNIPPET);
        for (i = 0; out[i]; i++)
            if (is_control((unsigned char)out[i]))
                out[i] = ' ';
    }
    json_object_put(root);
}

static int http_error(const char *pname, long status, const struct answer_buf *b,
                      struct am_error *err)
{
    char snip[PROVIDERS_SNIPPET];

    if (status == 401 || status == 403)
        return error_set(err, AM_EPROVIDER, "provider %s rejected the API key (HTTP %ld)",
                         pname, status);
    error_snippet(b->body.z, b->body.n, snip, sizeof(snip));
    /* the request's own fault: its content, its size, its model name */
    if (status == 400 || status == 404 || status == 413 || status == 422)
        return error_set(err, AM_EPROVIDERREJECT, "provider %s refused the request (HTTP "
                         "%ld)%s%s", pname, status, *snip ? ": " : "", snip);
    return error_set(err, AM_EPROVIDER, "provider %s answered HTTP %ld%s%s%s", pname, status,
                     status == 429 ? " (rate limited)" : "", *snip ? ": " : "", snip);
}

static int transport_error(const char *pname, CURLcode cc, const char *errbuf, int timeout_ms,
                           const struct answer_buf *b, struct am_error *err)
{
    const char *detail = *errbuf ? errbuf : curl_easy_strerror(cc);

    switch (cc) {
    case CURLE_OPERATION_TIMEDOUT:
        return error_set(err, AM_ETIMEOUT, "provider %s timed out after %d ms", pname,
                         timeout_ms);
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
        return error_set(err, AM_EPROVIDER, "provider %s unreachable: %s", pname, detail);
    case CURLE_WRITE_ERROR:
        if (b->stream_rc != 0)
            return b->stream_rc;  /* err was filled by the stream reader */
        if (b->too_large)
            return error_set(err, AM_EPROVIDER, "provider %s: answer too large (over %u MiB)",
                             pname, PROVIDERS_MAX_ANSWER >> 20);
        break;
    case CURLE_PARTIAL_FILE:
        return error_set(err, AM_EPROVIDER, "provider %s: answer cut short: %s", pname, detail);
    case CURLE_ABORTED_BY_CALLBACK:     /* the alive hook said the client has gone */
        return error_set(err, AM_ECANCELLED, "provider %s: the call was abandoned", pname);
    default:
        break;
    }
    return error_set(err, AM_EPROVIDER, "provider %s: transport error: %s", pname, detail);
}

/* Length of the longest run of key (any start in it) that begins at p,
 * or 0 when shorter than PROVIDERS_SCRUB_MIN. */
static size_t key_run_at(const char *p, const char *key, size_t klen)
{
    size_t best = 0, s, n;

    for (s = 0; s + PROVIDERS_SCRUB_MIN <= klen; s++) {
        for (n = 0; s + n < klen && p[n] != '\0' && p[n] == key[s + n]; n++)
            ;
        if (n > best)
            best = n;
    }
    return best >= PROVIDERS_SCRUB_MIN ? best : 0;
}

void providers_scrub_key(struct am_error *err, const char *key)
{
    static const char mask[] = "[redacted]";
    char out[AM_ERROR_MSG_MAX];
    size_t klen = key ? strlen(key) : 0, o = 0, run;
    const char *p = err ? err->message : NULL;

    if (p == NULL || klen == 0)
        return;
    while (*p && o + sizeof(mask) < sizeof(out)) {
        run = klen < PROVIDERS_SCRUB_MIN ? (strncmp(p, key, klen) == 0 ? klen : 0)
                                         : key_run_at(p, key, klen);
        if (run > 0) {
            memcpy(out + o, mask, sizeof(mask) - 1);
            o += sizeof(mask) - 1;
            p += run;
        } else {
            out[o++] = *p++;
        }
    }
    out[o] = '\0';
    util_strlcpy(err->message, out, sizeof(err->message));
}

/* The calling thread's easy handle (created on first use, cleaned up when
 * the thread exits), or NULL. */
static pthread_key_t handle_key;
static pthread_once_t handle_once = PTHREAD_ONCE_INIT;
static int handle_key_ok;

static void handle_free(void *c)
{
    curl_easy_cleanup(c);
}

static void handle_key_init(void)
{
    handle_key_ok = pthread_key_create(&handle_key, handle_free) == 0;
}

static CURL *thread_handle(int *owned)
{
    CURL *c;

    pthread_once(&handle_once, handle_key_init);
    *owned = 0;
    if (handle_key_ok && (c = pthread_getspecific(handle_key)) != NULL)
        return c;
    if ((c = curl_easy_init()) == NULL)
        return NULL;
    if (!handle_key_ok || pthread_setspecific(handle_key, c) != 0)
        *owned = 1;   /* no thread slot: the call cleans it up */
    return c;
}

static void set_options(CURL *c, const char *url, const char *body, struct curl_slist *h,
                        struct answer_buf *b, char *errbuf, int timeout_ms)
{
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, answer_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, b);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, PROVIDERS_USER_AGENT);
    curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, "");
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(c, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_MAXCONNECTS, 1L);
}

/* libcurl's progress callback: abort when the request's client has gone. */
static int transport_alive(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                           curl_off_t ulnow)
{
    const struct providers_request *req = arg;

    (void)dltotal; (void)dlnow; (void)ultotal; (void)ulnow;
    return req->alive(req->alive_arg) ? 0 : 1;
}

/* POST body to url. Returns 0 with the HTTP status and the answer in b,
 * or the mapped transport error. */
static int transport_post(const struct providers_request *req, const struct provider_wire *w,
                          const char *url, const char *body, long *status,
                          struct answer_buf *b, struct am_error *err)
{
    const char *pname = pname_of(req->provider);
    char errbuf[CURL_ERROR_SIZE] = "";
    int timeout_ms = req->timeout_ms > 0 ? req->timeout_ms : PROVIDERS_DEFAULT_TIMEOUT_MS;
    struct curl_slist *h;
    CURLcode cc;
    CURL *c;
    int rc = 0, owned;

    if (!key_is_clean(req->api_key))
        return error_set(err, AM_EPROVIDER, "provider %s: the API key contains control "
                         "characters", pname);
    if ((c = thread_handle(&owned)) == NULL)
        return error_set(err, AM_EPROVIDER, "provider %s: cannot create an HTTP handle", pname);
    h = make_headers(w, req->api_key, req->sink != NULL);
    b->curl = c;
    set_options(c, url, body, h, b, errbuf, timeout_ms);
    if (req->alive != NULL) {
        curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, transport_alive);
        curl_easy_setopt(c, CURLOPT_XFERINFODATA, req);
        curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    }
    cc = curl_easy_perform(c);
    if (cc != CURLE_OK)
        rc = transport_error(pname, cc, errbuf, timeout_ms, b, err);
    else
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    if (cc == CURLE_OK) {
        curl_off_t ra = 0;
        if (curl_easy_getinfo(c, CURLINFO_RETRY_AFTER, &ra) == CURLE_OK && ra > 0)
            b->retry_after = ra > 86400 ? 86400 : (long)ra;
    }
    /* forget the headers, buffers and error buffer of this call; keep the
     * connection */
    curl_easy_reset(c);
    if (owned)
        curl_easy_cleanup(c);
    free_headers(h);
    return rc;
}

int providers_chat(const struct providers_request *req, struct providers_response *resp,
                   struct am_error *err)
{
    struct answer_buf b = {0};
    char *url = NULL, *body = NULL;
    const char *pname;
    long status = 0;
    int rc;

    memset(resp, 0, sizeof(*resp));
    if ((rc = check_request(req, err)) != 0)
        return rc;
    if (req->provider == PROVIDER_ECHO)
        return provider_echo_chat(req, resp, err);
    pname = pname_of(req->provider);
    providers_init();
    if ((rc = providers_build(req, &url, &body, err)) != 0)
        goto out;
    if (req->sink != NULL) {
        b.stream = providers_stream_new(req->provider, req->sink);
        b.err = err;
    }
    if ((rc = transport_post(req, wires[req->provider], url, body, &status, &b, err)) != 0)
        goto out;
    if (status < 200 || status > 299) {
        resp->http_status = status;
        resp->retry_after_s = b.retry_after;
        rc = http_error(pname, status, &b, err);
        goto out;
    }
    if (b.mode == 1)
        rc = providers_stream_finish(b.stream, resp, err);
    else if ((rc = providers_parse(req->provider, b.body.z, b.body.n, resp, err)) == 0 &&
             req->sink != NULL && resp->content[0] != '\0' &&
             req->sink->text(req->sink->arg, resp->content, strlen(resp->content)) != 0)
        rc = error_set(err, AM_ECANCELLED, "provider %s: the answer was abandoned", pname);
    if (rc != 0)
        goto out;
    if (resp->model[0] == '\0')
        util_strlcpy(resp->model, req->model, sizeof(resp->model));
out:
    if (rc != 0)
        providers_scrub_key(err, req->api_key);
    providers_stream_free(b.stream);
    buf_free(&b.body);
    free(body);
    free(url);
    return rc;
}
