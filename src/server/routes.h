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

/* Print the route table to f, one route a line, tab-separated:
 *   METHOD  PATTERN  ACCESS  ROLE  KEY-SCOPE
 * ACCESS is public, user or org; ROLE the least role of a person (org
 * routes) or "-"; KEY-SCOPE run, manage or never (API keys refused). Tests
 * read it to cover every route; operators, to audit who may do what. */
void routes_print(FILE *f);

/* The http_handler for every request; app is a struct app *. */
void routes_handle(void *app, const struct http_request *req,
                   struct http_response *resp);

#endif
