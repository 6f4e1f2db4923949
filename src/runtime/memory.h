/*
 * memory.h - conversational memory: the messages of one session of one
 * agent, kept in Berkeley DB.
 *
 * A session is addressed by the agent id "org__name" (so one org's
 * sessions can never be reached from another's), the mode (run or test:
 * test sessions live apart), and the session id.
 */
#ifndef AM_MEMORY_H
#define AM_MEMORY_H

#include <stdint.h>
#include <json-c/json.h>
#include "state/app.h"

struct store;
struct store_txn;

enum memory_mode { MEMORY_RUN = 0, MEMORY_TEST = 1 };
enum memory_strategy { MEMORY_SLIDING_WINDOW = 0, MEMORY_TOKEN_BUDGET = 1 };

/* 1 if s is a usable session id: 1..128 bytes of [A-Za-z0-9._:-]. */
int memory_session_valid(const char *s);

/* The session's messages as a new array of {"role","content"} strings
 * (empty if none; caller puts). Returns 0, AM_EBADREQ (ids too long),
 * AM_EUNAVAILABLE (storage), or AM_EIO if the stored record is corrupt;
 * *messages is NULL on an error. */
int memory_load(struct app *app, const char *agent_id, int mode, const char *session,
                struct json_object **messages);

/* Append a user and an assistant message, then trim: sliding_window keeps
 * the last `limit` messages (at least 1), token_budget the most recent
 * messages whose estimated tokens fit in `limit`. In the same transaction
 * the session's last use and size are indexed and, past app->cfg's
 * memory bounds (none without a cfg), the least recently used sessions of
 * the agent (of the org) and mode are dropped. Returns 0, AM_EBADREQ
 * (ids too long) or AM_EUNAVAILABLE (storage, or a corrupt record, which
 * is left as it is). */
int memory_append(struct app *app, const char *agent_id, int mode, const char *session,
                  const char *user, const char *assistant, int strategy, int limit);

/* The bounds a turn is written under (memory.max_sessions_per_agent,
 * memory.max_kb_per_org in bytes; <= 0: none). */
struct memory_bounds {
    int64_t max_sessions;       /* live sessions per agent and mode */
    int64_t max_bytes;          /* stored session bytes per org and mode */
};

/* Expire, in transactions of at most 128 sessions, the sessions last
 * used more than ttl_s seconds before now_ms, at most max of them; *swept
 * gets how many went. For the supervisor's storage task (never a request).
 * Returns 0 or the store's error. */
int memory_sweep(struct store *s, int64_t now_ms, int ttl_s, int max, int *swept);

/* Milliseconds since the epoch (the sessions' last-use clock). */
int64_t memory_now_ms(void);

/* Forget a session (disposable test sessions). */
void memory_delete(struct app *app, const char *agent_id, int mode, const char *session);

/* Forget every session of the agent agent_id ("org__name"), run and test,
 * inside the caller's transaction t (an agent's delete). Returns 0 or the
 * store's error. */
int memory_forget_agent(struct store *s, struct store_txn *t, const char *agent_id);

/* Rough token estimate of a text (about 4 bytes a token). */
int memory_estimate_tokens(const char *text);

#endif
