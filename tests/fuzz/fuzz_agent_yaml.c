/*
 * fuzz_agent_yaml - libFuzzer target: the compiled-YAML loader the
 * workers run (agent_yaml_load and its draft variant); a document that
 * loads is emitted again, in both the internal and the portable form, and
 * the internal form must load back. Pure: no files, no store.
 */
#include <stdlib.h>
#include "runtime/agent_yaml.h"
#include "fuzz.h"

static void round_trip(const struct agent_yaml_doc *doc)
{
    struct agent_yaml_doc again;
    struct am_error err;
    char *yaml = NULL;
    size_t len = 0;

    error_clear(&err);
    if (agent_yaml_emit(doc, &yaml, &len, &err) == 0) {
        memset(&again, 0, sizeof(again));
        error_clear(&err);
        (void)agent_yaml_load_draft(yaml, len, &again, &err);
        agent_yaml_doc_clear(&again);
    }
    free(yaml);
    yaml = NULL;
    error_clear(&err);
    (void)agent_yaml_emit_portable(doc, &yaml, &len, &err);
    free(yaml);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct agent_yaml_doc doc;
    struct am_error err;
    char *text = fuzz_cstr(data, size);

    memset(&doc, 0, sizeof(doc));
    error_clear(&err);
    if (agent_yaml_load(text, size, &doc, &err) == 0)
        round_trip(&doc);
    agent_yaml_doc_clear(&doc);
    memset(&doc, 0, sizeof(doc));
    error_clear(&err);
    if (agent_yaml_load_draft(text, size, &doc, &err) == 0)
        round_trip(&doc);
    agent_yaml_doc_clear(&doc);
    free(text);
    return 0;
}
