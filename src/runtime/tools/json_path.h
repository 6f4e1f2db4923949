/*
 * json_path.h - the json_parser tool, for the tool table in tools.c.
 */
#ifndef AM_JSON_PATH_H
#define AM_JSON_PATH_H

#include <json-c/json.h>
#include "runtime/tools/tools.h"

/* args "json" (text, or the value itself) and optional "path": the value
 * there, or an error reply naming the missing segment. Returns a new object
 * (caller puts). */
struct json_object *json_path_tool(struct json_object *args, const struct tools_ctx *ctx);

#endif
