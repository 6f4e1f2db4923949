/*
 * provider_stream.c - reading a streamed answer incrementally: the two
 * framings (Server-Sent Events for OpenAI, Anthropic and Cohere; NDJSON
 * lines for Ollama), the assembly of a providers_response from the events
 * (text, tool calls by index, usage, model), and the hand-over of each text
 * delta to the caller's sink.
 *
 * Owns a stream's line and event buffers and the response being built.
 * What an event means is the protocol files' business (their stream_event);
 * this file only frames bytes into events and keeps what they add. Like
 * every file here it never logs, does no I/O of its own (providers.c feeds
 * it from libcurl's write callback) and never sees a key.
 *
 * The bytes arrive in chunks of any size, so a line, an event, a JSON text
 * or a UTF-8 sequence may be split anywhere; nothing is parsed before its
 * line is complete. At most PROVIDER_WIRE_MAX_ANSWER bytes are read. The
 * stream must end with the protocol's last event (s->done): a stream cut
 * before it is "truncated", never a short answer.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <json-c/json.h>

#include "state/config.h"
#include "lib/error.h"
#include "runtime/providers/provider_wire.h"
#include "runtime/providers/providers.h"
#include "lib/util.h"

struct providers_stream {
    struct provider_stream s;
};

/* Append n bytes to a growing string (*z, *len, *cap); keeps a NUL after. */
static void grow_put(char **z, size_t *len, size_t *cap, const char *p, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t c = *cap ? *cap : 64;

        while (c < *len + n + 1)
            c *= 2;
        *z = xrealloc(*z, c);
        *cap = c;
    }
    memcpy(*z + *len, p, n);
    *len += n;
    (*z)[*len] = '\0';
}

int provider_stream_text(struct provider_stream *s, struct json_object *text,
                         struct am_error *err)
{
    const char *t;
    size_t n;

    if (!json_object_is_type(text, json_type_string))
        return 0;
    t = json_object_get_string(text);
    n = strlen(t);
    grow_put(&s->resp.content, &s->ncontent, &s->capcontent, t, n);
    if (n > 0 && s->sink != NULL && s->sink->text(s->sink->arg, t, n) != 0)
        return error_set(err, AM_ECANCELLED, "provider %s: the stream was abandoned",
                         s->pname);
    return 0;
}

struct provider_stream_slot *provider_stream_slot(struct provider_stream *s,
                                                  struct json_object *idx,
                                                  struct am_error *err)
{
    int64_t i;

    if (!json_object_is_type(idx, json_type_int) ||
        (i = json_object_get_int64(idx)) < 0 || i >= PROVIDER_WIRE_MAX_CALLS) {
        provider_wire_malformed(err, s->pname, "tool call index missing or out of range");
        return NULL;
    }
    s->slots[i].used = 1;
    return &s->slots[i];
}

int provider_stream_slot_fill(struct provider_stream *s, struct provider_stream_slot *slot,
                              struct json_object *id, struct json_object *name,
                              struct json_object *args, struct am_error *err)
{
    size_t cap = slot->args ? slot->nargs + 1 : 0;

    if (json_object_is_type(id, json_type_string)) {
        if (strlen(json_object_get_string(id)) >= sizeof(slot->id))
            return provider_wire_malformed(err, s->pname, "tool call id too long");
        util_strlcpy(slot->id, json_object_get_string(id), sizeof(slot->id));
    }
    if (json_object_is_type(name, json_type_string)) {
        if (strlen(json_object_get_string(name)) >= sizeof(slot->name))
            return provider_wire_malformed(err, s->pname, "tool name too long");
        util_strlcpy(slot->name, json_object_get_string(name), sizeof(slot->name));
    }
    if (json_object_is_type(args, json_type_string))
        grow_put(&slot->args, &slot->nargs, &cap, json_object_get_string(args),
                 strlen(json_object_get_string(args)));
    return 0;
}

struct json_object *provider_stream_path(struct json_object *o, const char *path)
{
    char key[64];

    while (o != NULL && *path) {
        size_t n = strcspn(path, ".");

        if (n >= sizeof(key) || !json_object_is_type(o, json_type_object))
            return NULL;
        memcpy(key, path, n);
        key[n] = '\0';
        if (!json_object_object_get_ex(o, key, &o))
            return NULL;
        path += n + (path[n] == '.');
    }
    return o;
}

int provider_stream_error(struct provider_stream *s, struct json_object *msg,
                          struct am_error *err)
{
    const char *m = json_object_is_type(msg, json_type_string) ? json_object_get_string(msg)
                                                                : "an error event";

    return error_set(err, AM_EPROVIDER, "provider %s: %.160s", s->pname, m);
}

/* ------------------------------------------------------------------------ */
/* Framing                                                                   */

/* Hand the data of one event (SSE) or one line (NDJSON) to the protocol. */
static int dispatch(struct provider_stream *s, const char *data, size_t n, struct am_error *err)
{
    struct json_object *root = NULL;
    const char *why = NULL;
    int rc;

    if (s->done)
        return 0;                       /* anything after the end is ignored */
    if (!s->wire->ndjson && n == 6 && memcmp(data, "[DONE]", 6) == 0) {
        s->done = 1;                    /* OpenAI's end marker */
        return 0;
    }
    if (provider_wire_parse_ex(data, n, &root, &why) != 0)
        return provider_wire_malformed(err, s->pname, "stream event: %s", why);
    if (!json_object_is_type(root, json_type_object)) {
        json_object_put(root);
        return provider_wire_malformed(err, s->pname, "stream event is not a JSON object");
    }
    rc = s->wire->stream_event(s, s->event, root, err);
    json_object_put(root);
    return rc;
}

/* One complete line (without its newline). */
static int on_line(struct provider_stream *s, char *line, size_t n, struct am_error *err)
{
    int rc = 0;

    if (n > 0 && line[n - 1] == '\r')
        line[--n] = '\0';
    if (s->wire->ndjson)
        return n > 0 ? dispatch(s, line, n, err) : 0;
    if (n == 0) {                       /* a blank line ends the event */
        if (s->ndata > 0)
            rc = dispatch(s, s->data, s->ndata, err);
        s->ndata = 0;
        s->event[0] = '\0';
        return rc;
    }
    if (strncmp(line, "data:", 5) == 0) {
        const char *v = line + 5 + (line[5] == ' ');

        if (s->ndata > 0)
            grow_put(&s->data, &s->ndata, &s->capdata, "\n", 1);
        grow_put(&s->data, &s->ndata, &s->capdata, v, n - (size_t)(v - line));
    } else if (strncmp(line, "event:", 6) == 0) {
        util_strlcpy(s->event, line + 6 + (line[6] == ' '), sizeof(s->event));
    }
    return 0;                           /* comments (":"), id:, retry: */
}

static int stream_feed(struct provider_stream *s, const char *p, size_t n, struct am_error *err)
{
    const char *nl;

    if (s->rc != 0)
        return error_set(err, s->rc, "provider %s: the stream already failed", s->pname);
    if ((s->total += n) > PROVIDER_WIRE_MAX_ANSWER)
        return s->rc = error_set(err, AM_EPROVIDER, "provider %s: answer too large (over %u "
                                 "MiB)", s->pname, PROVIDER_WIRE_MAX_ANSWER >> 20);
    while (n > 0) {
        size_t take;
        int rc;

        nl = memchr(p, '\n', n);
        take = nl ? (size_t)(nl - p) : n;
        grow_put(&s->line, &s->nline, &s->capline, p, take);
        if (nl == NULL)
            break;
        p += take + 1;
        n -= take + 1;
        rc = on_line(s, s->line, s->nline, err);
        s->nline = 0;
        if (rc != 0)
            return s->rc = rc;
    }
    return 0;
}

/* The slots' calls, in index order, after whatever resp holds. */
static int stream_calls(struct provider_stream *s, struct am_error *err)
{
    int i, rc;

    for (i = 0; i < PROVIDER_WIRE_MAX_CALLS; i++) {
        struct provider_stream_slot *t = &s->slots[i];
        struct json_object *obj = NULL;
        const char *args = t->args ? t->args : "";
        char at[48];

        if (!t->used)
            continue;
        snprintf(at, sizeof(at), "tool call %d", i);
        if (s->wire->args_object) {
            if (*args == '\0')
                args = "{}";
            obj = provider_wire_parse_text(args, strlen(args));
            if (!json_object_is_type(obj, json_type_object)) {
                json_object_put(obj);
                return provider_wire_malformed(err, s->pname, "%s: input is not an object",
                                               at);
            }
            args = provider_wire_json_text(obj);
        }
        rc = provider_wire_add_call(&s->resp, t->id, t->name, args, at, s->pname, err);
        json_object_put(obj);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int stream_finish(struct provider_stream *s, struct providers_response *resp,
                         struct am_error *err)
{
    int rc;

    memset(resp, 0, sizeof(*resp));
    if (s->rc != 0)
        return error_set(err, s->rc, "provider %s: the stream already failed", s->pname);
    if (s->nline > 0 && (rc = on_line(s, s->line, s->nline, err)) != 0)
        return s->rc = rc;              /* a last line without its newline */
    s->nline = 0;
    if (!s->wire->ndjson && s->ndata > 0 && (rc = dispatch(s, s->data, s->ndata, err)) != 0)
        return s->rc = rc;              /* a last event without its blank line */
    s->ndata = 0;
    if (!s->done)
        return s->rc = provider_wire_malformed(err, s->pname, "truncated stream (it ended "
                                               "before its last event)");
    if ((rc = stream_calls(s, err)) != 0)
        return s->rc = rc;
    if (s->resp.content == NULL)
        s->resp.content = xstrdup("");
    *resp = s->resp;
    memset(&s->resp, 0, sizeof(s->resp));
    s->ncontent = s->capcontent = 0;
    s->rc = AM_EINTERNAL;               /* finished: nothing more to read */
    return 0;
}

/* ------------------------------------------------------------------------ */
/* The exposed reader                                                        */

static const struct provider_wire *stream_wire(int provider)
{
    switch (provider) {
    case PROVIDER_ANTHROPIC: return &provider_anthropic_wire;
    case PROVIDER_COHERE: return &provider_cohere_wire;
    case PROVIDER_OLLAMA: return &provider_ollama_wire;
    default: return &provider_openai_wire;
    }
}

struct providers_stream *providers_stream_new(int provider, const struct providers_sink *sink)
{
    struct providers_stream *w = xcalloc(1, sizeof(*w));
    const char *n = config_provider_name(provider);

    w->s.wire = stream_wire(provider);
    w->s.pname = n ? n : "unknown";
    w->s.sink = sink;
    return w;
}

int providers_stream_feed(struct providers_stream *w, const char *data, size_t n,
                          struct am_error *err)
{
    return stream_feed(&w->s, data, n, err);
}

int providers_stream_finish(struct providers_stream *w, struct providers_response *resp,
                            struct am_error *err)
{
    return stream_finish(&w->s, resp, err);
}

void providers_stream_free(struct providers_stream *w)
{
    int i;

    if (w == NULL)
        return;
    for (i = 0; i < PROVIDER_WIRE_MAX_CALLS; i++)
        free(w->s.slots[i].args);
    provider_wire_response_free(&w->s.resp);
    free(w->s.line);
    free(w->s.data);
    free(w);
}
