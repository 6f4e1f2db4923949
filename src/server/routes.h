/*
 * routes.h - the route table and its handlers: the one place that knows
 * which URL does what, which authentication it needs, and how a body is
 * checked before a module sees it.
 */
#ifndef AM_ROUTES_H
#define AM_ROUTES_H

#include <stdio.h>
#include "state/app.h"
#include "server/http.h"
#include "control/account.h"

/* Who may call a route: the access column of the route table. */
enum route_access {
    ACCESS_PUBLIC = 0,  /* anyone, no credentials read */
    ACCESS_USER,        /* a person's valid access token; API keys get 403 */
    ACCESS_ORG,         /* a member of {slug} with the row's least role, or an
                         * API key of {slug} with the row's scope */
};

/* The access decision of one request, pure (the table's rule, SPEC section
 * 3): may the authenticated principal who call a route of access kind
 * `access` needing `least_role` (enum account_role) of a person or `scope`
 * (enum account_scope; SCOPE_NONE: no key ever) of a key? own_org: the key
 * belongs to the route's {slug}; role: the person's role there (ROLE_NONE
 * if none). Returns 0, or AM_EFORBIDDEN with *why set to a static message
 * for the client. */
int routes_decide(int access, int least_role, int scope, const struct account_principal *who,
                  int own_org, int role, const char **why);

/* Print the route table to f, one route a line, tab-separated:
 *   METHOD  PATTERN  ACCESS  ROLE  KEY-SCOPE
 * ACCESS is public, user or org; ROLE the least role of a person (org
 * routes) or "-"; KEY-SCOPE run, manage or never (API keys refused). Tests
 * read it to cover every route; operators, to audit who may do what. */
void routes_print(FILE *f);

/* The door of WS .../agents/{name}/stream (served by server/stream.c, not
 * by this table): authenticate the Authorization header (a Bearer token),
 * else the X-API-Key, and authorise it as a run of org slug would be (a
 * member, or a key of slug with the run scope). Returns 0, or -1 with resp
 * filled with the 401/403 envelope. */
int routes_authorize_stream(struct app *app, const char *slug, const char *authorization,
                            const char *api_key, struct http_response *resp);

/* The metrics row (metrics_request, metrics_in_flight) of a query on the
 * WebSocket stream: one past the route table and its unmatched row. */
int routes_stream_row(void);

/* The http_handler for every request; app is a struct app *. */
void routes_handle(void *app, const struct http_request *req,
                   struct http_response *resp);

#endif
