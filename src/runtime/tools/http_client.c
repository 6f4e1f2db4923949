/*
 * http_client.c - the guarded HTTP client that http_request and web_search
 * (web.c) share: the address policy (private, loopback, link-local and
 * reserved ranges), URL checks, resolving and pinning the checked addresses,
 * the opensocket hook, and the size and time caps.
 *
 * Owns nothing beyond one fetch: the caller's struct http_client_fetch holds
 * the body and headers until http_client_fetch_free(). It never connects to
 * an address the policy refused: every address a name resolves to is
 * checked before the transfer, the checked ones are pinned, and the
 * opensocket hook checks again the address of every socket curl opens. Must
 * not follow redirects, use a proxy from the environment (it would make the
 * address check meaningless), or keep more of a body than the cap. Must not
 * log.
 *
 * http_request, in order: scheme http/https only; host in the agent's
 * allowed_hosts (exact, case-insensitive, or "*.example.com" for strict
 * subdomains); every address the host resolves to must be public unless
 * allow_private; the checked addresses are pinned with CURLOPT_RESOLVE so a
 * second lookup (DNS rebinding) cannot switch them, and an
 * OPENSOCKETFUNCTION re-checks the address of every socket curl opens.
 * Redirects are not followed (the 3xx and its Location go back to the
 * model, whose next call is checked again); proxies from the environment
 * are ignored. The body is cut at the byte cap and the transfer aborted
 * there.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include "runtime/tools/http_client.h"
#include "runtime/tools/tool_common.h"
#include "lib/util.h"

#ifdef PACKAGE_VERSION
#define TOOLS_USER_AGENT "astromesh-cloud/" PACKAGE_VERSION " (tool)"
#else
#define TOOLS_USER_AGENT "astromesh-cloud (tool)"
#endif
#define HTTP_CLIENT_DEFAULT_MAX_BYTES (1024u * 1024)
#define HTTP_MAX_ADDRS 8                   /* resolved addresses pinned */

/* ---- address policy ------------------------------------------------------ */

/* IPv4 address (host order) outside the public unicast space. */
static bool addr4_private(uint32_t a)
{
    return (a >> 24) == 0 || (a >> 24) == 10 || (a >> 24) == 127 ||
           (a & 0xffc00000u) == 0x64400000u ||   /* 100.64/10 carrier NAT */
           (a & 0xffff0000u) == 0xa9fe0000u ||   /* 169.254/16 link-local */
           (a & 0xfff00000u) == 0xac100000u ||   /* 172.16/12 */
           (a & 0xffff0000u) == 0xc0a80000u ||   /* 192.168/16 */
           (a & 0xffffff00u) == 0xc0000000u ||   /* 192.0.0/24 protocol assignments */
           (a & 0xfffe0000u) == 0xc6120000u ||   /* 198.18/15 benchmarking */
           (a >> 28) >= 0xe;                     /* multicast, reserved, broadcast */
}

static bool addr6_private(const unsigned char *b)
{
    static const unsigned char v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
    static const unsigned char nat64[12] = { 0, 0x64, 0xff, 0x9b };
    static const unsigned char zero[12];

    if (memcmp(b, v4mapped, 12) == 0 || memcmp(b, nat64, 12) == 0)
        return addr4_private(tool_be32(b + 12));
    if (memcmp(b, zero, 12) == 0)
        return true;                           /* ::, ::1, IPv4-compatible */
    if (b[0] == 0x20 && b[1] == 0x02)
        return addr4_private(tool_be32(b + 2));     /* 6to4 */
    return (b[0] & 0xfe) == 0xfc ||            /* fc00::/7 unique local */
           (b[0] == 0xfe && (b[1] & 0x80) == 0x80) ||  /* fe80::/10, fec0::/10 */
           b[0] == 0xff;                       /* multicast */
}

bool http_client_addr_private(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        struct sockaddr_in in;

        memcpy(&in, sa, sizeof(in));
        return addr4_private(ntohl(in.sin_addr.s_addr));
    }
    if (sa->sa_family == AF_INET6) {
        struct sockaddr_in6 in6;

        memcpy(&in6, sa, sizeof(in6));
        return addr6_private(in6.sin6_addr.s6_addr);
    }
    return true;
}

/* ---- one fetch ----------------------------------------------------------- */

/* Keep what fits under the cap; past it, keep the part that fits, mark the
 * body truncated and abort the transfer. */
static size_t fetch_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct http_client_fetch *f = ud;
    size_t n = size * nmemb;

    if (buf_put_limited(&f->body, ptr, n, f->limit) == 0)
        return n;
    buf_put(&f->body, ptr, f->limit - f->body.n);
    f->truncated = true;
    return 0;                                  /* 0 aborts the transfer */
}

static size_t fetch_header(char *buf, size_t size, size_t nitems, void *ud)
{
    static const char *const keep[] = { "content-type", "content-length", "location",
                                        "last-modified", "retry-after" };
    struct http_client_fetch *f = ud;
    size_t n = size * nitems, i, nl, vl;
    const char *colon, *v;

    if (n >= 5 && memcmp(buf, "HTTP/", 5) == 0) {  /* a new response (after 100) */
        json_object_put(f->headers);
        f->headers = json_object_new_object();
        return n;
    }
    if ((colon = memchr(buf, ':', n)) == NULL)
        return n;
    nl = (size_t)(colon - buf);
    for (v = colon + 1; v < buf + n && (*v == ' ' || *v == '\t'); v++)
        ;
    vl = (size_t)(buf + n - v);
    while (vl > 0 && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
        vl--;
    for (i = 0; i < sizeof(keep) / sizeof(keep[0]); i++)
        if (strlen(keep[i]) == nl && strncasecmp(keep[i], buf, nl) == 0)
            json_object_object_add(f->headers, keep[i], tool_json_str_clean(v, vl > 1024 ? 1024 : vl));
    return n;
}

/* Every socket curl opens passes here: the last word on where it connects. */
curl_socket_t http_client_opensocket(void *ud, curlsocktype purpose, struct curl_sockaddr *a)
{
    struct http_client_fetch *f = ud;

    if (purpose == CURLSOCKTYPE_IPCXN && !f->allow_private && http_client_addr_private(&a->addr)) {
        f->refused = true;
        return CURL_SOCKET_BAD;
    }
    return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

void http_client_fetch_init(struct http_client_fetch *f, size_t limit, bool allow_private)
{
    memset(f, 0, sizeof(*f));
    f->limit = limit;
    f->allow_private = allow_private;
    f->headers = json_object_new_object();
}

void http_client_fetch_free(struct http_client_fetch *f)
{
    buf_free(&f->body);
    json_object_put(f->headers);
}

/* An easy handle for one GET of url into f: http/https only, no redirects,
 * no proxy, no signals, time-capped. Caller cleans up. */
CURL *http_client_fetch_easy(struct http_client_fetch *f, const char *url, long timeout_ms)
{
    CURL *h = curl_easy_init();

    if (h == NULL)
        return NULL;
    curl_easy_setopt(h, CURLOPT_URL, url);
    tool_curl_protocols(h, "http,https", CURLPROTO_HTTP | CURLPROTO_HTTPS);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROXY, "");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h, CURLOPT_USERAGENT, TOOLS_USER_AGENT);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, f->errbuf);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, fetch_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, f);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, fetch_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, f);
    curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, http_client_opensocket);
    curl_easy_setopt(h, CURLOPT_OPENSOCKETDATA, f);
    return h;
}

/* Run the transfer. NULL on a response (a body cut at the cap counts), else
 * the error reply. */
struct json_object *http_client_fetch_perform(CURL *h, struct http_client_fetch *f, long timeout_ms)
{
    CURLcode rc = curl_easy_perform(h);

    if (rc == CURLE_OK || (rc == CURLE_WRITE_ERROR && f->truncated))
        return NULL;
    if (f->refused)
        return tool_reply_error("refused: the server address is private or loopback");
    if (rc == CURLE_OPERATION_TIMEDOUT)
        return tool_reply_error("request timed out after %ld ms", timeout_ms);
    return tool_reply_error("request failed: %s", f->errbuf[0] ? f->errbuf : curl_easy_strerror(rc));
}

/* ---- the target: URL checks and the pinned addresses ---------------------- */

/* Check url's scheme and host syntax and normalise it into t. */
struct json_object *http_client_target_parse(const char *url, struct http_client_target *t)
{
    struct json_object *err = NULL;
    CURLU *u = curl_url();
    char *host = NULL, *port = NULL, *full = NULL, buf[260];
    size_t i, n;

    if (u == NULL)
        abort();
    if (strncasecmp(url, "http://", 7) != 0 && strncasecmp(url, "https://", 8) != 0) {
        err = tool_reply_error("only http:// and https:// URLs are allowed");
        goto out;
    }
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK) {
        err = tool_reply_error("invalid URL");
        goto out;
    }
    n = strlen(host);
    if (n >= 2 && host[0] == '[')              /* IPv6 literal */
        util_strlcpy(t->host, host + 1, n - 1 < sizeof(t->host) ? n - 1 : sizeof(t->host));
    else
        util_strlcpy(t->host, host, sizeof(t->host));
    n = strlen(t->host);
    while (n > 0 && t->host[n - 1] == '.')
        t->host[--n] = '\0';
    for (i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)t->host[i];

        t->host[i] = (char)tolower(ch);
        if (!isalnum(ch) && ch != '.' && ch != '-' && ch != '_' && ch != ':')
            break;
    }
    if (n == 0 || n > 253 || i < n) {
        err = tool_reply_error("invalid host in URL");
        goto out;
    }
    util_strlcpy(t->port, port, sizeof(t->port));
    snprintf(buf, sizeof(buf), strchr(t->host, ':') ? "[%s]" : "%s", t->host);
    if (curl_url_set(u, CURLUPART_HOST, buf, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_URL, &full, 0) != CURLUE_OK) {
        err = tool_reply_error("invalid URL");
        goto out;
    }
    t->url = xstrdup(full);
out:
    curl_free(full);
    curl_free(port);
    curl_free(host);
    curl_url_cleanup(u);
    return err;
}

/* Resolve t->host, refuse private addresses unless allowed, and fill
 * t->resolve with the addresses curl must use. */
struct json_object *http_client_resolve(struct http_client_target *t, bool allow_private)
{
    struct addrinfo hints, *res = NULL, *ai;
    struct in6_addr lit;
    char ip[INET6_ADDRSTRLEN];
    size_t used;
    int rc, count = 0;
    bool literal = inet_pton(AF_INET, t->host, &lit) == 1 || inet_pton(AF_INET6, t->host, &lit) == 1;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    if ((rc = getaddrinfo(t->host, t->port, &hints, &res)) != 0)
        return tool_reply_error("could not resolve host '%s': %s", t->host, gai_strerror(rc));
    snprintf(t->resolve, sizeof(t->resolve), "%s:%s:", t->host, t->port);
    for (ai = res; ai && count < HTTP_MAX_ADDRS; ai = ai->ai_next) {
        const void *a;

        if (ai->ai_family == AF_INET)
            a = &((const struct sockaddr_in *)(const void *)ai->ai_addr)->sin_addr;
        else if (ai->ai_family == AF_INET6)
            a = &((const struct sockaddr_in6 *)(const void *)ai->ai_addr)->sin6_addr;
        else
            continue;
        inet_ntop(ai->ai_family, a, ip, sizeof(ip));
        if (!allow_private && http_client_addr_private(ai->ai_addr)) {
            freeaddrinfo(res);
            return tool_reply_error("refused: '%s' resolves to a private or loopback address (%s)",
                               t->host, ip);
        }
        used = strlen(t->resolve);
        snprintf(t->resolve + used, sizeof(t->resolve) - used, ai->ai_family == AF_INET6 ? "%s[%s]" : "%s%s",
                 count ? "," : "", ip);
        count++;
    }
    freeaddrinfo(res);
    if (count == 0)
        return tool_reply_error("could not resolve host '%s'", t->host);
    if (literal)
        t->resolve[0] = '\0';                  /* nothing to pin for an address */
    return NULL;
}

/* ---- caps ---------------------------------------------------------------- */

/* Timeout and byte cap: the agent's tool_config, else the server's. */
void http_client_caps(const struct tools_ctx *ctx, long *timeout_ms, size_t *max_bytes)
{
    const struct tools_settings *s = ctx->settings;
    int64_t b = s->http_max_bytes > 0 ? (int64_t)s->http_max_bytes : HTTP_CLIENT_DEFAULT_MAX_BYTES;

    *timeout_ms = (long)tool_cfg_int(ctx, "timeout_ms", 1, 600000, tool_timeout_ms(ctx));
    *max_bytes = (size_t)tool_cfg_int(ctx, "max_bytes", 1, 64 * 1024 * 1024, b);
}
