/*
 * forward.h - a write that reached a replica, sent on to the group's master.
 *
 * The replica's worker replays the request over HTTP (libcurl) to the
 * master's front server, with the group's shared secret in
 * X-Astromesh-Cluster, and relays the master's answer: status, body and the
 * headers a client acts on (the commit token, Retry-After, the rate
 * headers, Allow). The master serves it like any request, except that it
 * never forwards it again.
 */
#ifndef AM_FORWARD_H
#define AM_FORWARD_H

#include "server/http.h"

/* Send req to base_url (the master's front server, no trailing slash) with
 * secret, wait at most timeout_ms, and fill resp with the answer. Returns
 * 0 (resp filled), or AM_ENOMASTER when the master could not be reached,
 * answered nothing usable, or its front server answered 500, 502 or 504,
 * or 503 on its own (resp untouched). */
int forward_request(const char *base_url, const char *secret, const struct http_request *req,
                    int timeout_ms, struct http_response *resp);

/* Is the X-Astromesh-Cluster value the group's secret? Constant time. */
int forward_secret_ok(const char *given, const char *secret);

#endif
