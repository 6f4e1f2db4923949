/*
 * fuzz_calculator - libFuzzer target: the calculator tool's expression
 * evaluator (tools_calc_eval) on the input as a string, and the tool
 * itself on {"expression": input} (the JSON the model sends). A success
 * is a finite number; a failure always has a message.
 */
#include <math.h>
#include <json-c/json.h>
#include "runtime/tools/tools.h"
#include "runtime/tools/calculator.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *expr = fuzz_cstr(data, size), msg[256];
    struct tools_settings settings;
    struct tools_ctx ctx;
    struct json_object *args, *r;
    double v = 0;

    msg[0] = '\0';
    if (tools_calc_eval(expr, &v, msg, sizeof(msg)) == 0) {
        if (!isfinite(v))
            __builtin_trap();
    } else if (msg[0] == '\0') {
        __builtin_trap();
    }
    memset(&settings, 0, sizeof(settings));
    memset(&ctx, 0, sizeof(ctx));
    ctx.settings = &settings;
    args = json_object_new_object();
    json_object_object_add(args, "expression", json_object_new_string_len(expr, (int)size));
    ctx.tool_config = json_object_new_object();
    r = calculator_tool(args, &ctx);
    json_object_put(r);
    json_object_put(ctx.tool_config);
    json_object_put(args);
    free(expr);
    return 0;
}
