/*
 * llm_tools.h - the text_summarizer and translator tools, for the tool
 * table in tools.c.
 */
#ifndef AM_LLM_TOOLS_H
#define AM_LLM_TOOLS_H

#include <json-c/json.h>
#include "runtime/tools/tools.h"

/* args "text", optional "max_words" (10..2000, else tool_config, else 150):
 * the model's summary, or an error reply (caller puts). */
struct json_object *llm_tools_summarizer(struct json_object *args, const struct tools_ctx *ctx);

/* args "text", optional "target_language" (else tool_config, else
 * English): the model's translation, or an error reply (caller puts). */
struct json_object *llm_tools_translator(struct json_object *args, const struct tools_ctx *ctx);

#endif
