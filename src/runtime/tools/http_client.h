/*
 * http_client.h - the guarded HTTP client, for the tool files (web.c) and
 * the unit test. It never connects to an address the policy refused; see
 * http_client.c for the order of the checks.
 */
#ifndef AM_HTTP_CLIENT_H
#define AM_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <curl/curl.h>
#include <json-c/json.h>
#include "runtime/tools/tools.h"
#include "lib/buf.h"

/* One transfer's state; http_client_fetch_init() it, free it with
 * http_client_fetch_free(). */
struct http_client_fetch {
    struct buf body;             /* received bytes, NUL-terminated once any came */
    size_t limit;                /* cap on body.n */
    bool truncated;              /* the body reached limit and was cut */
    struct json_object *headers; /* a few response headers (owned) */
    bool allow_private;          /* let sockets reach private addresses */
    bool refused;                /* OUT: a socket to a private address was refused */
    char errbuf[CURL_ERROR_SIZE];
};

/* A checked URL (http_client_target_parse) and its pinned addresses
 * (http_client_resolve). Zero it first; the caller frees url. */
struct http_client_target {
    char *url;                   /* normalised URL for curl (malloc) */
    char host[256];              /* lowercase, no brackets, no trailing dot */
    char port[8];
    char resolve[1024];          /* "host:port:addr,..." or "" for IP literals */
};

/* Whether sa lies outside the public unicast space (private, loopback,
 * link-local, carrier NAT, multicast, reserved; IPv4 inside IPv6 forms is
 * judged as IPv4). Anything not IPv4 or IPv6 counts as private. */
bool http_client_addr_private(const struct sockaddr *sa);

/* Start f empty with a body cap of limit bytes. */
void http_client_fetch_init(struct http_client_fetch *f, size_t limit, bool allow_private);

/* Free f's body and headers. */
void http_client_fetch_free(struct http_client_fetch *f);

/* The CURLOPT_OPENSOCKETFUNCTION of every handle (ud is the fetch): refuses
 * a connection to a private address unless allowed, setting f->refused.
 * External so the test can call it as curl would. */
curl_socket_t http_client_opensocket(void *ud, curlsocktype purpose, struct curl_sockaddr *a);

/* An easy handle for one GET of url into f: http/https only, no redirects,
 * no proxy, no signals, time-capped. NULL when curl has no memory; caller
 * cleans up with curl_easy_cleanup(). */
CURL *http_client_fetch_easy(struct http_client_fetch *f, const char *url, long timeout_ms);

/* Run the transfer. NULL on a response (a body cut at the cap counts), else
 * a new error reply (caller puts). */
struct json_object *http_client_fetch_perform(CURL *h, struct http_client_fetch *f,
                                              long timeout_ms);

/* Check url's scheme and host syntax and normalise it into t. NULL, or a new
 * error reply (caller puts). */
struct json_object *http_client_target_parse(const char *url, struct http_client_target *t);

/* Resolve t->host, refuse private addresses unless allowed, and fill
 * t->resolve with the addresses curl must use. NULL, or a new error reply. */
struct json_object *http_client_resolve(struct http_client_target *t, bool allow_private);

/* Timeout and byte cap: the agent's tool_config, else the server's, else
 * the defaults. */
void http_client_caps(const struct tools_ctx *ctx, long *timeout_ms, size_t *max_bytes);

#endif
