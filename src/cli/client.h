/*
 * client.h - the astromesh client's HTTP: one request to the API with the
 * caller's credentials (Bearer token or X-API-Key), a transparent refresh
 * of an expired access token, and Server-Sent Events read as they arrive.
 *
 * Owns the libcurl handle. Prints only through client_report (the error
 * envelope of an answer, on stderr).
 */
#ifndef AM_CLI_CLIENT_H
#define AM_CLI_CLIENT_H

#include <json-c/json.h>
#include "cli/creds.h"
#include "lib/buf.h"

struct client {
    char url[512];                     /* API root without /api/v1 */
    char org[64];                      /* org slug ("" if unknown) */
    char token[CREDS_TOKEN_MAX];       /* Bearer token, or "" */
    char api_key[256];                 /* X-API-Key, or "" */
    int refreshable;                   /* token came from the credentials file */
    char creds_path[CREDS_PATH_MAX];   /* where a refreshed pair is saved */
    struct creds creds;                /* the file's content (refresh rewrites it) */
    char neterr[256];                  /* why the server could not be reached */
};

struct client_resp {
    long status;                       /* HTTP status, 0 before an answer */
    struct buf body;                   /* the body (not the events of a stream) */
    int streamed;                      /* 1 when the answer was an event stream */
};

/* Called per Server-Sent Event: its name ("token", "done", "error") and
 * its data line(s). Returns 0 to go on, nonzero to stop reading. */
typedef int (*client_event_fn)(void *ctx, const char *event, const char *data);

/* Send method path (from "/api/v1/...") with body (JSON, may be NULL; not
 * taken) and read the answer into r (caller frees with client_resp_free).
 * A 401 with a refreshable token runs POST /auth/refresh once, saves the
 * new pair and retries. With on_event non-NULL the request asks for
 * text/event-stream and an event-stream answer is delivered event by
 * event. Returns 0 when an answer arrived (any status), or -1 when the
 * server could not be reached (c->neterr says why). */
int client_call(struct client *c, const char *method, const char *path,
                struct json_object *body, client_event_fn on_event, void *ctx,
                struct client_resp *r);

/* Free the body of r. */
void client_resp_free(struct client_resp *r);

/* The answer's body parsed as JSON (caller puts), or NULL. */
struct json_object *client_resp_json(const struct client_resp *r);

/* Print an error answer on stderr ("astromesh: message (code)" and one
 * "  field: problem" line per detail). Returns the exit code: 4 for 401
 * and 403, 1 otherwise. */
int client_report(const struct client_resp *r);

#endif
