/*
 * routes.h - the route table and its handlers: the one place that knows
 * which URL does what, which authentication it needs, and how a body is
 * checked before a module sees it.
 */
#ifndef AM_ROUTES_H
#define AM_ROUTES_H

#include "state/app.h"
#include "server/http.h"

/* The http_handler for every request; app is a struct app *. */
void routes_handle(void *app, const struct http_request *req,
                   struct http_response *resp);

#endif
