/*
 * forward.c - replaying a request at the group's master (see forward.h).
 *
 * Owns: one libcurl easy handle per thread (kept, so the connection to the
 * master is reused between requests), the request's copy of the headers.
 *
 * Must never: forward a request that was itself forwarded (routes.c checks
 * the secret first); pass on a header the client did not send or one that
 * carries CR/LF; log a header or a body.
 */
#include <curl/curl.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "lib/buf.h"
#include "lib/error.h"
#include "lib/util.h"
#include "server/forward.h"
#include "state/cluster.h"

#define FORWARD_BODY_MAX (16 * 1024 * 1024)

static __thread CURL *forward_curl;

struct answer {
    struct buf body;
    int too_large;
    char content_type[64];
    char headers[400];          /* the relayed "Name: value\r\n" lines */
    int from_daemon;            /* it carries X-Request-Id: our daemon answered, not the
                                   front server alone */
};

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    struct answer *a = arg;

    if (buf_put_limited(&a->body, data, size * n, FORWARD_BODY_MAX) != 0) {
        a->too_large = 1;
        return 0;
    }
    return size * n;
}

/* The headers a client of the master would act on. */
static const char *const relayed[] = {
    "X-Astromesh-Commit", "Retry-After", "Allow", "Location", "X-RateLimit-Limit",
    "X-RateLimit-Remaining", "X-RateLimit-Reset", "X-TestLimit-Limit",
    "X-TestLimit-Remaining", "X-TestLimit-Reset", NULL
};

static size_t on_header(char *data, size_t size, size_t n, void *arg)
{
    struct answer *a = arg;
    size_t len = size * n, i, used;
    const char *colon = memchr(data, ':', len);

    if (colon == NULL)
        return len;
    while (len > 0 && (data[len - 1] == '\n' || data[len - 1] == '\r'))
        len--;
    if ((size_t)(colon - data) == 12 && strncasecmp(data, "X-Request-Id", 12) == 0)
        a->from_daemon = 1;
    if ((size_t)(colon - data) == 12 && strncasecmp(data, "Content-Type", 12) == 0) {
        size_t v = len - 13;
        const char *val = colon + 1;

        while (v > 0 && *val == ' ') {
            val++;
            v--;
        }
        if (v < sizeof(a->content_type)) {
            memcpy(a->content_type, val, v);
            a->content_type[v] = '\0';
        }
        return size * n;
    }
    for (i = 0; relayed[i] != NULL; i++) {
        size_t nl = strlen(relayed[i]);

        if ((size_t)(colon - data) != nl || strncasecmp(data, relayed[i], nl) != 0)
            continue;
        used = strlen(a->headers);
        if (memchr(data, '\r', len) == NULL && used + len + 3 < sizeof(a->headers)) {
            memcpy(a->headers + used, data, len);
            memcpy(a->headers + used + len, "\r\n", 3);
        }
        break;
    }
    return size * n;
}

/* Content types are static strings in a response: the ones we answer with. */
static const char *static_type(const char *t)
{
    static const char *const known[] = { "application/json", "application/yaml",
                                         "text/plain; charset=utf-8", "text/plain",
                                         "text/yaml", NULL };
    size_t i;

    for (i = 0; known[i] != NULL; i++)
        if (strncasecmp(t, known[i], strlen(known[i])) == 0)
            return known[i];
    return "application/octet-stream";
}

static struct curl_slist *add_header(struct curl_slist *h, const char *name, const char *v)
{
    char line[1024];

    if (v == NULL || strpbrk(v, "\r\n") != NULL)
        return h;
    if ((size_t)snprintf(line, sizeof(line), "%s: %s", name, v) >= sizeof(line))
        return h;
    return curl_slist_append(h, line);
}

int forward_request(const char *base_url, const char *secret, const struct http_request *req,
                    int timeout_ms, struct http_response *resp)
{
    struct answer a;
    struct curl_slist *h = NULL;
    struct buf url;
    long status = 0;
    CURLcode cc;
    int rc = AM_ENOMASTER;

    memset(&a, 0, sizeof(a));
    if (forward_curl == NULL && (forward_curl = curl_easy_init()) == NULL)
        return AM_ENOMASTER;
    curl_easy_reset(forward_curl);
    buf_init(&url, 256);
    buf_puts(&url, base_url);
    buf_puts(&url, req->path);
    if (req->query[0] != '\0') {
        buf_puts(&url, "?");
        buf_puts(&url, req->query);
    }
    h = add_header(h, CLUSTER_SECRET_HEADER, secret);
    h = add_header(h, "Authorization", req->authorization);
    h = add_header(h, "X-API-Key", req->api_key);
    h = add_header(h, "Content-Type", req->content_type);
    h = add_header(h, "Accept", req->accept);
    h = add_header(h, "X-Request-Id", req->request_id);
    h = curl_slist_append(h, "Expect:");
    curl_easy_setopt(forward_curl, CURLOPT_URL, url.z);
    curl_easy_setopt(forward_curl, CURLOPT_CUSTOMREQUEST, req->method);
    curl_easy_setopt(forward_curl, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(forward_curl, CURLOPT_POSTFIELDS, req->body);
    curl_easy_setopt(forward_curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    curl_easy_setopt(forward_curl, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(forward_curl, CURLOPT_CONNECTTIMEOUT_MS, 2000L);
    curl_easy_setopt(forward_curl, CURLOPT_NOSIGNAL, 1L);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(forward_curl, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(forward_curl, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    curl_easy_setopt(forward_curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(forward_curl, CURLOPT_WRITEDATA, &a);
    curl_easy_setopt(forward_curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(forward_curl, CURLOPT_HEADERDATA, &a);
    cc = curl_easy_perform(forward_curl);
    curl_easy_getinfo(forward_curl, CURLINFO_RESPONSE_CODE, &status);
    /* A 500, 502 or 504 is the master's front server failing (the master
     * died under the request, or is restarting), and so is a 503 that our
     * daemon did not write (no X-Request-Id: the front could not reach it):
     * the write may or may not have been made there, and the client must
     * learn to retry at the master the group elects, not that the server
     * broke. Forwarded writes call no model provider, so these are never a
     * provider's answer. */
    if (cc != CURLE_OK || a.too_large || status < 200 || status > 599 || status == 500 ||
        status == 502 || status == 504 || (status == 503 && !a.from_daemon))
        goto out;
    http_reply_raw(resp, (int)status, static_type(a.content_type), a.body.z ? a.body.z : "",
                   a.body.n);
    util_strlcpy(resp->headers + strlen(resp->headers), a.headers,
                 sizeof(resp->headers) - strlen(resp->headers));
    rc = 0;
out:
    curl_slist_free_all(h);
    buf_free(&url);
    buf_free(&a.body);
    return rc;
}

int forward_secret_ok(const char *given, const char *secret)
{
    size_t n = strlen(secret);

    if (given == NULL || n == 0 || strlen(given) != n)
        return 0;
    return sodium_memcmp(given, secret, n) == 0;
}
