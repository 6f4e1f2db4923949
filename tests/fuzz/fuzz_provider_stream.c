/*
 * fuzz_provider_stream - libFuzzer target: the incremental readers of a
 * streamed answer (SSE for OpenAI-compatible, Anthropic and Cohere,
 * NDJSON for Ollama), fed the same bytes for every provider, in chunks
 * whose sizes the first input byte chooses (1 to 64 bytes, or all at
 * once), then finished. A sink counts the text it is handed.
 */
#include "runtime/providers/providers.h"
#include "state/config.h"
#include "fuzz.h"

static int sink_text(void *arg, const char *text, size_t n)
{
    (void)text;
    *(size_t *)arg += n;
    return 0;
}

static void feed(int p, const char *data, size_t size, size_t chunk)
{
    size_t got = 0, at = 0, n;
    struct providers_sink sink;
    struct providers_stream *s;
    struct providers_response resp;
    struct am_error err;
    int rc = 0;

    memset(&sink, 0, sizeof(sink));
    sink.text = sink_text;
    sink.arg = &got;
    s = providers_stream_new(p, &sink);
    while (rc == 0 && at < size) {
        n = size - at < chunk ? size - at : chunk;
        error_clear(&err);
        rc = providers_stream_feed(s, data + at, n, &err);
        at += n;
    }
    memset(&resp, 0, sizeof(resp));
    error_clear(&err);
    if (rc == 0 && providers_stream_finish(s, &resp, &err) == 0)
        providers_response_free(&resp);
    providers_stream_free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t chunk;
    int p;

    if (size == 0)
        return 0;
    chunk = data[0] % 65 == 0 ? size : data[0] % 65;
    for (p = 0; p < PROVIDER_COUNT; p++)
        feed(p, (const char *)data + 1, size - 1, chunk);
    return 0;
}
