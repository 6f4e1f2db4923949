/*
 * client.c - the astromesh client's requests over libcurl.
 *
 * Owns one curl easy handle per request (nothing survives a call) and the
 * refresh of an expired access token: a 401 on a token read from the
 * credentials file triggers one POST /auth/refresh, a save of the rotated
 * pair, and one retry. Never retries anything else, never logs a token.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <curl/curl.h>
#include "cli/args.h"
#include "cli/client.h"
#include "lib/util.h"

#define CLIENT_BODY_MAX (16u << 20)   /* an answer larger than this is cut */
#define CLIENT_TIMEOUT_S 300L

/* The per-request state the write callback sees. */
struct xfer {
    CURL *h;
    struct client_resp *r;
    client_event_fn on_event;
    void *ctx;
    int is_stream;          /* -1 unknown yet, 0 no, 1 yes */
    struct buf line;        /* the event-stream line being read */
    struct buf data;        /* the data of the event being read */
    char event[32];
    int stopped;
};

/* One complete line of an event stream (without its newline). */
static void sse_line(struct xfer *x, const char *s)
{
    if (s[0] == '\0') {
        if (x->data.n > 0 && !x->stopped)
            x->stopped = x->on_event(x->ctx, x->event[0] ? x->event : "message", x->data.z);
        buf_free(&x->data);
        x->event[0] = '\0';
    } else if (strncmp(s, "event:", 6) == 0) {
        util_strlcpy(x->event, s + 6 + (s[6] == ' '), sizeof(x->event));
    } else if (strncmp(s, "data:", 5) == 0) {
        if (x->data.n > 0)
            buf_puts(&x->data, "\n");
        buf_puts(&x->data, s + 5 + (s[5] == ' '));
    }
}

static size_t on_write(char *p, size_t size, size_t nmemb, void *ud)
{
    struct xfer *x = ud;
    size_t n = size * nmemb;
    if (x->is_stream < 0) {
        char *ct = NULL;
        curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &x->r->status);
        curl_easy_getinfo(x->h, CURLINFO_CONTENT_TYPE, &ct);
        x->is_stream = x->on_event && x->r->status == 200 && ct &&
                       strncasecmp(ct, "text/event-stream", 17) == 0;
        x->r->streamed = x->is_stream;
    }
    if (!x->is_stream) {
        if (buf_put_limited(&x->r->body, p, n, CLIENT_BODY_MAX) != 0)
            return 0;
        return n;
    }
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\n') {
            if (x->line.n > 0 && x->line.z[x->line.n - 1] == '\r')
                x->line.z[--x->line.n] = '\0';
            sse_line(x, x->line.n ? x->line.z : "");
            buf_free(&x->line);
        } else if (buf_put_limited(&x->line, p + i, 1, CLIENT_BODY_MAX) != 0) {
            return 0;
        }
    }
    return x->stopped ? 0 : n;
}

/* One HTTP exchange, no refresh. Returns 0 or -1 (c->neterr). */
static int perform(struct client *c, const char *method, const char *path, const char *body,
                   client_event_fn on_event, void *ctx, struct client_resp *r)
{
    char url[1024], hdr[CREDS_TOKEN_MAX + 64];
    struct curl_slist *hl = NULL;
    struct xfer x = { .r = r, .on_event = on_event, .ctx = ctx, .is_stream = -1 };
    int rc = -1;
    client_resp_free(r);
    x.h = curl_easy_init();
    if (x.h == NULL || util_snprintf(url, sizeof(url), "%s%s", c->url, path) != 0) {
        util_snprintf(c->neterr, sizeof(c->neterr), "cannot build the request");
        goto out;
    }
    if (c->token[0] && util_snprintf(hdr, sizeof(hdr), "Authorization: Bearer %s", c->token) == 0)
        hl = curl_slist_append(hl, hdr);
    else if (c->api_key[0] && util_snprintf(hdr, sizeof(hdr), "X-API-Key: %s", c->api_key) == 0)
        hl = curl_slist_append(hl, hdr);
    hl = curl_slist_append(hl, on_event ? "Accept: text/event-stream" : "Accept: application/json");
    if (body) {
        hl = curl_slist_append(hl, "Content-Type: application/json");
        curl_easy_setopt(x.h, CURLOPT_POSTFIELDS, body);
    } else if (strcmp(method, "GET") != 0 && strcmp(method, "DELETE") != 0) {
        curl_easy_setopt(x.h, CURLOPT_POSTFIELDS, "");   /* Content-Length: 0, not 411 */
    }
    curl_easy_setopt(x.h, CURLOPT_URL, url);
    curl_easy_setopt(x.h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(x.h, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(x.h, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(x.h, CURLOPT_WRITEDATA, &x);
    curl_easy_setopt(x.h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(x.h, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(x.h, CURLOPT_TIMEOUT, CLIENT_TIMEOUT_S);
    curl_easy_setopt(x.h, CURLOPT_USERAGENT, "astromesh-cli/" PACKAGE_VERSION);
    CURLcode cc = curl_easy_perform(x.h);
    if (cc != CURLE_OK && !(cc == CURLE_WRITE_ERROR && x.stopped)) {
        util_snprintf(c->neterr, sizeof(c->neterr), "cannot reach %s: %s", c->url,
                      curl_easy_strerror(cc));
        goto out;
    }
    curl_easy_getinfo(x.h, CURLINFO_RESPONSE_CODE, &r->status);
    if (x.line.n > 0)
        sse_line(&x, x.line.z);
    if (x.data.n > 0)
        sse_line(&x, "");
    rc = 0;
out:
    buf_free(&x.line);
    buf_free(&x.data);
    curl_slist_free_all(hl);
    if (x.h)
        curl_easy_cleanup(x.h);
    return rc;
}

/* Under the credentials lock: if another client refreshed since this one
 * read the file, take its access token (1); otherwise POST /auth/refresh
 * with the saved refresh token and, on 200, keep and save the new pair
 * (1). Returns 0 if the token could not be refreshed, -1 on a network
 * failure. */
static int refresh(struct client *c)
{
    struct client_resp r = { 0 };
    struct json_object *req = json_object_new_object(), *ans = NULL, *v;
    struct creds now;
    char saved[CREDS_TOKEN_MAX], err[256];
    int rc = 0, lock = creds_lock(c->creds_path);
    util_strlcpy(saved, c->token, sizeof(saved));
    if (creds_load(c->creds_path, &now, err, sizeof(err)) == 0 && now.access_token[0] &&
        strcmp(now.access_token, saved) != 0) {
        c->creds = now;                       /* another client refreshed first */
        util_strlcpy(c->token, now.access_token, sizeof(c->token));
        rc = 1;
        goto out;
    }
    json_object_object_add(req, "refresh_token", json_object_new_string(c->creds.refresh_token));
    c->token[0] = '\0';
    if (perform(c, "POST", "/api/v1/auth/refresh", json_object_to_json_string(req), NULL, NULL,
                &r) != 0) {
        util_strlcpy(c->token, saved, sizeof(c->token));
        rc = -1;
        goto out;
    }
    ans = client_resp_json(&r);
    if (r.status != 200 || ans == NULL ||
        !json_object_object_get_ex(ans, "access_token", &v)) {
        util_strlcpy(c->token, saved, sizeof(c->token));
        goto out;
    }
    util_strlcpy(c->creds.access_token, json_object_get_string(v), sizeof(c->creds.access_token));
    if (json_object_object_get_ex(ans, "refresh_token", &v))
        util_strlcpy(c->creds.refresh_token, json_object_get_string(v),
                     sizeof(c->creds.refresh_token));
    util_strlcpy(c->token, c->creds.access_token, sizeof(c->token));
    if (creds_save(c->creds_path, &c->creds, err, sizeof(err)) != 0)
        fprintf(stderr, "astromesh: warning: %s\n", err);
    rc = 1;
out:
    creds_unlock(lock);
    json_object_put(req);
    json_object_put(ans);
    client_resp_free(&r);
    return rc;
}

int client_call(struct client *c, const char *method, const char *path,
                struct json_object *body, client_event_fn on_event, void *ctx,
                struct client_resp *r)
{
    const char *text = body ? json_object_to_json_string_ext(body, JSON_C_TO_STRING_PLAIN) : NULL;
    if (perform(c, method, path, text, on_event, ctx, r) != 0)
        return -1;
    if (r->status != 401 || !c->refreshable || !c->creds.refresh_token[0])
        return 0;
    int rf = refresh(c);
    if (rf < 0)
        return -1;
    if (rf == 0)
        return 0;
    return perform(c, method, path, text, on_event, ctx, r);
}

void client_resp_free(struct client_resp *r)
{
    buf_free(&r->body);
    r->status = 0;
    r->streamed = 0;
}

struct json_object *client_resp_json(const struct client_resp *r)
{
    if (r->body.n == 0)
        return NULL;
    return json_tokener_parse(r->body.z);
}

/* The string member k of o, or dflt. */
static const char *str_of(struct json_object *o, const char *k, const char *dflt)
{
    struct json_object *v;
    if (o && json_object_object_get_ex(o, k, &v) && json_object_is_type(v, json_type_string))
        return json_object_get_string(v);
    return dflt;
}

int client_report(const struct client_resp *r)
{
    struct json_object *o = client_resp_json(r), *details;
    fprintf(stderr, "astromesh: %s (%s, HTTP %ld)\n", str_of(o, "message", "the server answered an error"),
            str_of(o, "error", "error"), r->status);
    if (o && json_object_object_get_ex(o, "details", &details) &&
        json_object_is_type(details, json_type_array)) {
        for (size_t i = 0; i < json_object_array_length(details); i++) {
            struct json_object *d = json_object_array_get_idx(details, i);
            fprintf(stderr, "  %s: %s\n", str_of(d, "field", "?"), str_of(d, "problem", "?"));
        }
    }
    json_object_put(o);
    return (r->status == 401 || r->status == 403) ? ARGS_EXIT_AUTH : ARGS_EXIT_API;
}
