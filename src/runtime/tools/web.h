/*
 * web.h - the http_request and web_search tools, for the tool table in
 * tools.c.
 */
#ifndef AM_WEB_H
#define AM_WEB_H

#include <json-c/json.h>
#include "runtime/tools/tools.h"

/* args "url", optional "method", "body", "headers": {"result": {status,
 * headers, body, truncated}} or an error reply (caller puts). */
struct json_object *web_http_request(struct json_object *args, const struct tools_ctx *ctx);

/* args "query": the top results {title, url, snippet} from the server's
 * web_search_url, or an error reply (caller puts). */
struct json_object *web_search(struct json_object *args, const struct tools_ctx *ctx);

#endif
