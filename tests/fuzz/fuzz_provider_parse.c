/*
 * fuzz_provider_parse - libFuzzer target: each provider's parser of a
 * whole (non-streamed) answer body, providers_parse, for every provider
 * of enum config_provider on the same bytes (the seeds are real answers of
 * each). Pure: no network.
 */
#include "runtime/providers/providers.h"
#include "state/config.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct providers_response resp;
    struct am_error err;
    int p;

    for (p = 0; p < PROVIDER_COUNT; p++) {
        memset(&resp, 0, sizeof(resp));
        error_clear(&err);
        if (providers_parse(p, (const char *)data, size, &resp, &err) == 0)
            providers_response_free(&resp);
    }
    return 0;
}
