/*
 * fuzz_agent_import - libFuzzer target: POST /agents/import's parser,
 * agent_yaml_parse (YAML into json-c) and agent_import_wizard (ours or the
 * upstream runtime's agent YAML into a WizardConfig); a WizardConfig that
 * comes out is validated as create would. Pure: no store.
 */
#include <json-c/json.h>
#include "control/agent_import.h"
#include "control/wizard.h"
#include "runtime/agent_yaml.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct json_object *o = NULL;
    struct am_error err;
    char *text = fuzz_cstr(data, size);

    error_clear(&err);
    if (agent_yaml_parse(text, size, &o, &err) == 0)
        json_object_put(o);
    o = NULL;
    error_clear(&err);
    if (agent_import_wizard(text, size, &o, &err) == 0) {
        error_clear(&err);
        (void)wizard_validate(o, &err);
        json_object_put(o);
    }
    free(text);
    return 0;
}
