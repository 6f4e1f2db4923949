/*
 * providers.h - clients for the model providers' wire protocols, on
 * libcurl: OpenAI-compatible chat completions (openai, groq, mistral),
 * Anthropic messages, Cohere chat (v2), Ollama /api/chat, and the built-in
 * offline echo provider.
 *
 * The only module that speaks HTTP to model providers. It never logs and
 * never puts an API key anywhere but the request's auth header: not in an
 * error message, not in a body.
 */
#ifndef AM_PROVIDERS_H
#define AM_PROVIDERS_H

#include <stddef.h>
#include "lib/error.h"

/* One chat message. role: "system", "user", "assistant" or "tool". */
struct providers_message {
    const char *role;
    const char *content;          /* may be NULL for an assistant turn with tool calls */
    const char *tool_call_id;     /* role "tool": the call this answers */
    const char *tool_name;        /* role "tool": the tool's name (some protocols need it) */
    const struct providers_tool_call *calls;  /* role "assistant": calls the model made */
    size_t ncalls;
};

/* A tool offered to the model (OpenAI function form). */
struct providers_tool {
    const char *name;
    const char *description;
    const char *parameters;       /* JSON schema text */
};

/* A tool call the model asked for. */
struct providers_tool_call {
    char id[96];
    char name[64];
    char *arguments;              /* JSON text, malloc'd */
};

/* Where a streamed answer's text goes as it arrives. */
struct providers_sink {
    /* The next n bytes of the answer's text, in order. Returns 0 to go on,
     * non-zero to abandon the call at once (it then fails AM_ECANCELLED). */
    int (*text)(void *arg, const char *text, size_t n);
    void *arg;
};

struct providers_request {
    int provider;                 /* enum config_provider */
    const char *model;
    const char *base_url;         /* e.g. "https://api.openai.com/v1" (from the config) */
    const char *api_key;          /* "" or NULL for none */
    int timeout_ms;               /* whole call */
    int max_tokens;               /* 0 = provider default */
    const struct providers_message *messages;
    size_t nmessages;
    const struct providers_tool *tools;
    size_t ntools;
    /* NULL: one buffered answer, as always. Set: the provider is asked to
     * stream, each text delta goes to the sink as it arrives, and the
     * response is assembled exactly as the buffered answer would give it. */
    const struct providers_sink *sink;
    /* NULL, or polled while the call waits on the provider (libcurl's
     * progress callback: at least once a second): 0 abandons the call at
     * once, which then fails AM_ECANCELLED (the client has gone). */
    int (*alive)(void *arg);
    void *alive_arg;
};

struct providers_response {
    char *content;                /* malloc'd text answer ("" if only tool calls) */
    struct providers_tool_call *calls;  /* malloc'd array */
    size_t ncalls;
    int prompt_tokens;            /* from the provider's usage fields */
    int completion_tokens;
    char model[128];              /* the model that answered, as reported */
    /* Set also when providers_chat fails: the HTTP status of an error
     * answer (0: none, a transport failure) and its Retry-After in seconds
     * (0: none). */
    long http_status;
    long retry_after_s;
};

/* Library set-up (curl_global_init); once per process, before threads. */
int providers_init(void);

/* One chat call. Returns 0 and fills *resp (free with
 * providers_response_free), or AM_EPROVIDERREJECT (the provider refused
 * the request itself: HTTP 400, 404, 413 or 422; the request's error, not
 * the provider's), AM_EPROVIDER (connection refused, any other HTTP error,
 * wrong key, malformed or truncated answer), AM_ETIMEOUT, or, with
 * req->sink, AM_ECANCELLED (the sink said stop), with a
 * message that names the provider and the HTTP status but never the key. */
int providers_chat(const struct providers_request *req, struct providers_response *resp,
                   struct am_error *err);

void providers_response_free(struct providers_response *resp);

/* The incremental reader of a streamed answer, exposed for unit tests
 * (providers_chat uses it with a sink): feed the 2xx body in chunks of any
 * size, then finish. new never fails; sink may be NULL. feed and finish
 * return 0, AM_EPROVIDER (malformed or truncated stream, an error event,
 * over 8 MiB) or AM_ECANCELLED (the sink said stop); after an error every
 * later call returns it again. finish fills *resp on 0 (free with
 * providers_response_free). */
struct providers_stream;
struct providers_stream *providers_stream_new(int provider, const struct providers_sink *sink);
int providers_stream_feed(struct providers_stream *s, const char *data, size_t n,
                          struct am_error *err);
int providers_stream_finish(struct providers_stream *s, struct providers_response *resp,
                            struct am_error *err);
void providers_stream_free(struct providers_stream *s);

/* Replace in err->message (err may be NULL) the key and every run of 8 or
 * more of its characters with "[redacted]"; a key under 8 characters only
 * whole. providers_chat does this to every error it returns; exposed for
 * unit tests and for callers that build messages around a key. */
void providers_scrub_key(struct am_error *err, const char *key);

/* The wire format, exposed for unit tests: the URL path and JSON body of a
 * request (malloc'd), and the parse of an answer body. */
int providers_build(const struct providers_request *req, char **url, char **body,
                    struct am_error *err);
int providers_parse(int provider, const char *body, size_t len,
                    struct providers_response *resp, struct am_error *err);

#endif
