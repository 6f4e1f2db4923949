/*
 * calculator.h - the calculator tool, for the tool table in tools.c (its
 * evaluator, tools_calc_eval, is declared in tools.h).
 */
#ifndef AM_CALCULATOR_H
#define AM_CALCULATOR_H

#include <json-c/json.h>
#include "runtime/tools/tools.h"

/* Evaluate args "expression": {"result": number, "text": "%.15g"} or an
 * error reply. Returns a new object (caller puts). */
struct json_object *calculator_tool(struct json_object *args, const struct tools_ctx *ctx);

#endif
