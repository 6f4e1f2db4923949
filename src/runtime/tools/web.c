/*
 * web.c - the two tools that reach the web through the guarded client in
 * http_client.c: http_request (GET, POST or HEAD to a host in the agent's
 * allowed_hosts) and web_search (the operator's SearxNG-style endpoint).
 *
 * Owns nothing beyond one call: each call's curl handle, header lists and
 * fetch are freed before it returns. Must not open a connection except
 * through http_client_fetch_easy() (so the address policy and the
 * opensocket hook always apply), must not let the model set the headers
 * curl owns (Host, Content-Length, Transfer-Encoding, Connection) or inject
 * CR/LF, and must not log.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "runtime/tools/web.h"
#include "runtime/tools/http_client.h"
#include "runtime/tools/tool_common.h"
#include "lib/util.h"

#define HTTP_MAX_BODY_OUT (1024u * 1024)   /* request body the model may send */
#define SEARCH_TOP 5
#define SEARCH_FIELD_MAX 1000              /* bytes of a title/url/snippet */

/* ---- http_request -------------------------------------------------------- */

/* The model's "headers" object as a curl list; refuses what curl must own
 * and anything that could inject a header. */
static struct json_object *http_headers(struct json_object *args, struct curl_slist **list)
{
    struct json_object *hdrs = NULL;
    char line[2048];
    int count = 0;

    *list = curl_slist_append(NULL, "Expect:");
    if (!json_object_object_get_ex(args, "headers", &hdrs) || hdrs == NULL)
        return NULL;
    if (!json_object_is_type(hdrs, json_type_object))
        return tool_reply_error("argument 'headers' must be an object of strings");
    json_object_object_foreach(hdrs, name, v) {
        const char *s = json_object_get_string(v), *c;

        if (!json_object_is_type(v, json_type_string))
            return tool_reply_error("header '%s' must be a string", name);
        if (++count > 32)
            return tool_reply_error("too many headers (limit 32)");
        for (c = name; *c; c++)
            if (!isalnum((unsigned char)*c) && !strchr("!#$%&'*+-.^_`|~", *c))
                return tool_reply_error("invalid header name '%s'", name);
        if (*name == '\0' || strcasecmp(name, "host") == 0 || strcasecmp(name, "content-length") == 0 ||
            strcasecmp(name, "transfer-encoding") == 0 || strcasecmp(name, "connection") == 0)
            return tool_reply_error("header '%s' may not be set", name);
        if (strpbrk(s, "\r\n") || strlen(s) != (size_t)json_object_get_string_len(v))
            return tool_reply_error("header '%s' contains CR, LF or NUL", name);
        if (util_snprintf(line, sizeof(line), "%s: %s", name, s) < 0)
            return tool_reply_error("header '%s' is too long", name);
        *list = curl_slist_append(*list, line);
    }
    return NULL;
}

static struct json_object *http_result(CURL *h, struct http_client_fetch *f)
{
    struct json_object *o = json_object_new_object();
    long status = 0;
    size_t n = f->truncated ? tool_utf8_trim_partial(f->body.z ? f->body.z : "", f->body.n) : f->body.n;

    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    json_object_object_add(o, "status", json_object_new_int((int)status));
    json_object_object_add(o, "headers", json_object_get(f->headers));
    json_object_object_add(o, "body", tool_json_str_clean(f->body.z ? f->body.z : "", n));
    json_object_object_add(o, "truncated", json_object_new_boolean(f->truncated));
    return tool_reply_result(o);
}

struct json_object *web_http_request(struct json_object *args, const struct tools_ctx *ctx)
{
    struct json_object *err = NULL, *allowed = tool_cfg_get(ctx, "allowed_hosts", json_type_array);
    struct json_object *ap = tool_cfg_get(ctx, "allow_private", json_type_boolean);
    bool allow_private = ap && json_object_get_boolean(ap);
    struct http_client_target t;
    struct curl_slist *hdrs = NULL, *pin = NULL;
    struct http_client_fetch f;
    const char *url, *method, *body;
    size_t body_len = 0, max_bytes;
    long timeout_ms;
    CURL *h = NULL;

    memset(&t, 0, sizeof(t));
    http_client_caps(ctx, &timeout_ms, &max_bytes);
    http_client_fetch_init(&f, max_bytes, allow_private);
    if ((url = tool_arg_str(args, "url", true, 8192, NULL, &err)) == NULL)
        goto out;
    method = tool_arg_str(args, "method", false, 8, NULL, &err);
    if (err)
        goto out;
    body = tool_arg_str(args, "body", false, HTTP_MAX_BODY_OUT, &body_len, &err);
    if (err)
        goto out;
    if (method == NULL || *method == '\0')
        method = "GET";
    if (strcasecmp(method, "GET") != 0 && strcasecmp(method, "POST") != 0 &&
        strcasecmp(method, "HEAD") != 0) {
        err = tool_reply_error("method must be GET, POST or HEAD");
        goto out;
    }
    if (body && strcasecmp(method, "POST") != 0) {
        err = tool_reply_error("a body is only allowed with POST");
        goto out;
    }
    if ((err = http_client_target_parse(url, &t)) != NULL)
        goto out;
    if (allowed == NULL || !tool_list_matches(allowed, t.host)) {
        err = tool_reply_error("host '%s' is not in this agent's allowed_hosts", t.host);
        goto out;
    }
    if ((err = http_client_resolve(&t, allow_private)) != NULL || (err = http_headers(args, &hdrs)) != NULL)
        goto out;
    if ((h = http_client_fetch_easy(&f, t.url, timeout_ms)) == NULL) {
        err = tool_reply_error("request failed: out of resources");
        goto out;
    }
    if (t.resolve[0]) {
        pin = curl_slist_append(NULL, t.resolve);
        curl_easy_setopt(h, CURLOPT_RESOLVE, pin);
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    if (strcasecmp(method, "HEAD") == 0) {
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else if (strcasecmp(method, "POST") == 0) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
        curl_easy_setopt(h, CURLOPT_COPYPOSTFIELDS, body ? body : "");
    }
    if ((err = http_client_fetch_perform(h, &f, timeout_ms)) == NULL)
        err = http_result(h, &f);
out:
    if (h)
        curl_easy_cleanup(h);
    curl_slist_free_all(pin);
    curl_slist_free_all(hdrs);
    http_client_fetch_free(&f);
    free(t.url);
    return err;
}

/* ---- web_search ---------------------------------------------------------- */

/* Top SEARCH_TOP {title, url, snippet} of a SearxNG answer. */
static struct json_object *search_results(const char *query, struct http_client_fetch *f)
{
    struct json_object *doc = NULL, *results = NULL, *out, *o;
    char msg[200];
    size_t i, n;

    if (f->truncated || tool_json_parse_limited(f->body.z ? f->body.z : "", f->body.n, &doc, msg, sizeof(msg)) < 0)
        return tool_reply_error("the search engine's answer is not valid JSON%s",
                           f->truncated ? " (too large)" : "");
    if (!json_object_object_get_ex(doc, "results", &results) ||
        !json_object_is_type(results, json_type_array)) {
        json_object_put(doc);
        return tool_reply_error("the search engine's answer has no results list");
    }
    out = json_object_new_array();
    n = json_object_array_length(results);
    for (i = 0; i < n && json_object_array_length(out) < SEARCH_TOP; i++) {
        static const char *const from[] = { "title", "url", "content" };
        static const char *const to[] = { "title", "url", "snippet" };
        struct json_object *r = json_object_array_get_idx(results, i), *v;
        size_t k;

        if (!json_object_is_type(r, json_type_object))
            continue;
        o = json_object_new_object();
        for (k = 0; k < 3; k++) {
            const char *s = "";
            size_t len = 0;

            if (json_object_object_get_ex(r, from[k], &v) && json_object_is_type(v, json_type_string)) {
                s = json_object_get_string(v);
                len = (size_t)json_object_get_string_len(v);
            }
            if (len > SEARCH_FIELD_MAX)
                len = tool_utf8_trim_partial(s, SEARCH_FIELD_MAX);
            json_object_object_add(o, to[k], tool_json_str_clean(s, len));
        }
        json_object_array_add(out, o);
    }
    json_object_put(doc);
    o = json_object_new_object();
    json_object_object_add(o, "query", json_object_new_string(query));
    json_object_object_add(o, "results", out);
    return tool_reply_result(o);
}

struct json_object *web_search(struct json_object *args, const struct tools_ctx *ctx)
{
    const struct tools_settings *s = ctx->settings;
    struct json_object *err = NULL;
    struct http_client_fetch f;
    const char *q;
    char *esc = NULL, *url = NULL;
    size_t max_bytes, n;
    long timeout_ms, status = 0;
    CURL *h = NULL;

    if (s->web_search_url == NULL || s->web_search_url[0] == '\0')
        return tool_reply_error("web search is not configured on this server");
    if ((q = tool_arg_str(args, "query", true, 2048, NULL, &err)) == NULL)
        return err;
    http_client_caps(ctx, &timeout_ms, &max_bytes);
    http_client_fetch_init(&f, max_bytes, true);           /* the operator chose this endpoint */
    if ((h = http_client_fetch_easy(&f, "", timeout_ms)) == NULL || (esc = curl_easy_escape(h, q, 0)) == NULL) {
        err = tool_reply_error("web search failed: out of resources");
        goto out;
    }
    n = strlen(s->web_search_url) + strlen(esc) + 32;
    url = xmalloc(n);
    snprintf(url, n, "%s%cq=%s&format=json", s->web_search_url,
             strchr(s->web_search_url, '?') ? '&' : '?', esc);
    curl_easy_setopt(h, CURLOPT_URL, url);
    if ((err = http_client_fetch_perform(h, &f, timeout_ms)) != NULL)
        goto out;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200 || status > 299)
        err = tool_reply_error("the search engine answered HTTP %ld", status);
    else
        err = search_results(q, &f);
out:
    curl_free(esc);
    if (h)
        curl_easy_cleanup(h);
    free(url);
    http_client_fetch_free(&f);
    return err;
}

