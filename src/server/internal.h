/*
 * internal.h - the master's side of the accounting calls of the replicas
 * (state/cluster.h): POST /api/v1/internal/accounting, only with the
 * group's secret, never in the public route table.
 */
#ifndef AM_INTERNAL_H
#define AM_INTERNAL_H

#include "server/http.h"

struct app;

/* Serve one call: req's body is {"op": ..., ...}. Answers 200 with
 * {"rc": 0 or an AM_* code, "message": ..., and the op's fields}, or the
 * error envelope when the call itself is malformed. The caller has
 * checked the secret. */
void internal_accounting(struct app *app, const struct http_request *req,
                         struct http_response *resp);

#endif
