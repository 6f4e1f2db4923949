/*
 * file_reader.h - the file_reader tool, for the tool table in tools.c.
 */
#ifndef AM_FILE_READER_H
#define AM_FILE_READER_H

#include <json-c/json.h>
#include "runtime/tools/tools.h"

#define FILE_READER_MAX_BYTES (1024u * 1024)   /* content returned; the rest is cut */

/* args "path" (relative to file_root): {path, size, content, truncated}, or
 * an error reply (caller puts). */
struct json_object *file_reader_tool(struct json_object *args, const struct tools_ctx *ctx);

#endif
