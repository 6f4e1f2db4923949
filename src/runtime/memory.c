/*
 * memory.c - conversational memory in STORE_SESSIONS.
 *
 * Owns the record format: key "org__agent\0r|t\0session" -> a JSON array
 * of {"role","content"}, oldest first. Appending is a read-modify-write
 * in one transaction, so two runs on one session never lose a turn.
 *
 * Must never: log; hand one agent's (or org's) messages to another: the
 * agent id is the first part of every key; hand out a record it did not
 * write (a corrupt one is AM_EIO, never a half-read history).
 */
#include <stdlib.h>
#include <string.h>
#include "runtime/memory.h"
#include "state/store.h"
#include "lib/util.h"

int memory_session_valid(const char *s)
{
    size_t n = 0;

    for (; s[n] != '\0'; n++) {
        char c = s[n];
        if (n >= 128 || !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                          (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' ||
                          c == '-'))
            return 0;
    }
    return n > 0;
}

static size_t session_key(char *buf, size_t cap, const char *agent_id, int mode,
                          const char *session)
{
    size_t la = strlen(agent_id), ls = strlen(session);

    if (la + ls + 4 > cap)
        return 0;
    memcpy(buf, agent_id, la);
    buf[la] = '\0';
    buf[la + 1] = mode == MEMORY_TEST ? 't' : 'r';
    buf[la + 2] = '\0';
    memcpy(buf + la + 3, session, ls);
    return la + 3 + ls;
}

int memory_estimate_tokens(const char *text)
{
    size_t n = strlen(text);
    return (int)((n + 3) / 4);
}

/* 1 if a is what append_txn writes: an array of {"role","content"} with
 * both strings. Anything else was not written by this module. */
static int record_valid(struct json_object *a)
{
    size_t i, n;

    if (!json_object_is_type(a, json_type_array))
        return 0;
    n = json_object_array_length(a);
    for (i = 0; i < n; i++) {
        struct json_object *m = json_object_array_get_idx(a, i), *r, *c;
        if (!json_object_object_get_ex(m, "role", &r) || !json_object_is_type(r, json_type_string) ||
            !json_object_object_get_ex(m, "content", &c) || !json_object_is_type(c, json_type_string))
            return 0;
    }
    return 1;
}

/* The session's array (new reference, caller puts; empty if there is no
 * record), or NULL with *rc set: a store error, or AM_EIO when the record
 * is corrupt (not JSON, or not an array of role/content strings). */
static struct json_object *load_array(struct store *s, struct store_txn *t, const char *key,
                                      size_t klen, int flags, int *rc)
{
    struct json_object *a = NULL;
    char *val = NULL;

    *rc = store_get(s, t, STORE_SESSIONS, key, klen, flags, &val, NULL);
    if (*rc == 0)
        a = json_tokener_parse(val);
    free(val);
    if (*rc == AM_ENOENT) {
        *rc = 0;
        return json_object_new_array();
    }
    if (*rc == 0 && !record_valid(a))
        *rc = AM_EIO;
    if (*rc != 0) {
        json_object_put(a);
        return NULL;
    }
    return a;
}

int memory_load(struct app *app, const char *agent_id, int mode, const char *session,
                struct json_object **messages)
{
    char key[512];
    size_t klen = session_key(key, sizeof(key), agent_id, mode, session);
    int rc;

    *messages = NULL;
    if (klen == 0)
        return AM_EBADREQ;
    *messages = load_array(app->store, NULL, key, klen, 0, &rc);
    if (rc != 0)
        return rc == AM_EIO ? AM_EIO : AM_EUNAVAILABLE;
    return 0;
}

struct append_ctx {
    const char *key;
    size_t klen;
    const char *user, *assistant;
    int strategy, limit;
};

static struct json_object *message(const char *role, const char *content)
{
    struct json_object *m = json_object_new_object();

    json_object_object_add(m, "role", json_object_new_string(role));
    json_object_object_add(m, "content", json_object_new_string(content));
    return m;
}

/* Index of the first message to keep under the strategy. */
static size_t trim_start(struct json_object *a, int strategy, int limit)
{
    size_t n = json_object_array_length(a), i;
    int budget = limit;

    if (strategy == MEMORY_SLIDING_WINDOW)
        return n > (size_t)limit ? n - (size_t)limit : 0;
    for (i = n; i > 0; i--) {
        struct json_object *m = json_object_array_get_idx(a, i - 1), *c;
        json_object_object_get_ex(m, "content", &c);
        budget -= memory_estimate_tokens(json_object_get_string(c));
        if (budget < 0)
            return i;
    }
    return 0;
}

static int append_txn(struct store *s, struct store_txn *t, void *arg)
{
    struct append_ctx *c = arg;
    struct json_object *a, *kept;
    size_t i, start, n, len;
    const char *v;
    int rc;

    if ((a = load_array(s, t, c->key, c->klen, STORE_RMW, &rc)) == NULL)
        return rc;
    json_object_array_add(a, message("user", c->user));
    json_object_array_add(a, message("assistant", c->assistant));
    start = trim_start(a, c->strategy, c->limit);
    n = json_object_array_length(a);
    kept = json_object_new_array();
    for (i = start; i < n; i++)
        json_object_array_add(kept, json_object_get(json_object_array_get_idx(a, i)));
    v = json_object_to_json_string_length(kept, JSON_C_TO_STRING_PLAIN, &len);
    rc = store_put(s, t, STORE_SESSIONS, c->key, c->klen, v, len);
    json_object_put(kept);
    json_object_put(a);
    return rc;
}

int memory_append(struct app *app, const char *agent_id, int mode, const char *session,
                  const char *user, const char *assistant, int strategy, int limit)
{
    char key[512];
    struct append_ctx c = { key, session_key(key, sizeof(key), agent_id, mode, session),
                            user, assistant, strategy, limit > 0 ? limit : 1 };

    if (c.klen == 0)
        return AM_EBADREQ;
    return store_transact_deferred(app->store, append_txn, &c) == 0 ? 0 : AM_EUNAVAILABLE;
}

void memory_delete(struct app *app, const char *agent_id, int mode, const char *session)
{
    char key[512];
    size_t klen = session_key(key, sizeof(key), agent_id, mode, session);

    if (klen != 0)
        store_del(app->store, NULL, STORE_SESSIONS, key, klen);
}

int memory_forget_agent(struct store *s, struct store_txn *t, const char *agent_id)
{
    /* every key of the agent starts "org__name\0" (see the top) */
    return store_del_prefix(s, t, STORE_SESSIONS, agent_id, strlen(agent_id) + 1);
}
