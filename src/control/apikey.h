/*
 * apikey.h - an organisation's API keys: create (the secret shown once),
 * list, revoke, and the check of an X-API-Key header on every request.
 *
 * A key is "ask-" and 43 characters (32 random bytes, URL-safe base64
 * without padding). The store keeps only a keyed BLAKE2b hash of it (the
 * key of the hash is derived from the master key, vault.h), so the
 * database alone cannot check or recover a secret.
 */
#ifndef AM_APIKEY_H
#define AM_APIKEY_H

#include <json-c/json.h>
#include "control/account.h"
#include "state/app.h"
#include "lib/error.h"

#define APIKEY_PREFIX "ask-"
#define APIKEY_SECRET_LEN 47      /* "ask-" + 43 base64url characters */
#define APIKEY_SHOWN_PREFIX 12    /* characters of the secret kept and listed ("ask-AbCdEfGh") */
#define APIKEY_ID_LEN 16          /* "key_" + 12 hex */
#define APIKEY_NAME_MAX 64        /* characters (code points) of a key's name */
#define APIKEY_PER_ORG_MAX 50     /* keys one org may hold */
#define APIKEY_TOUCH_SECONDS 60   /* last_used_at is written at most this often per key */

/* Check the secret of an X-API-Key header. On 0, who is the key
 * (PRINCIPAL_KEY, org, key_id, scopes). Each thread remembers a few keys it
 * checked until the auth epoch moves (auth_state.h), so a client reusing
 * its key costs no database read; every revocation bumps the epoch. When
 * the stored last use is APIKEY_TOUCH_SECONDS old, it is updated with a
 * deferred commit (never a synced write on the request path). Returns 0 or
 * AM_EUNAUTH with one message for a malformed, unknown or revoked key (the
 * message never says which, and never contains the secret). */
int apikey_authenticate(struct app *app, const char *secret,
                        struct account_principal *who, struct am_error *err);

/* The master's side of a replica's use of a key (server/internal.c): write
 * its last use now if the stored one is APIKEY_TOUCH_SECONDS old. hex: the
 * key's hash, as the replica computed it. *stored gets the stored last use.
 * Returns 0, AM_EBADREQ (not a hash), AM_ENOENT (no such key) or a storage
 * code. */
int apikey_touch_hash(struct app *app, const char *hex, int64_t *stored);

/* GET /orgs/{org}/keys: {"keys":[{"id","name","prefix","scopes",
 * "created_at","last_used_at"}]}, oldest first; never a secret or a hash.
 * On 0, *out is a new object (caller puts), else NULL. Errors: AM_EIO. */
int apikey_list(struct app *app, const char *org, struct json_object **out,
                struct am_error *err);

/* POST /orgs/{org}/keys: body {"name","scopes"} (borrowed; scopes default
 * ["run"]). created_by is the e-mail of the person creating it. On 0, *out
 * is the 201 answer with the secret, the only time it is shown (caller
 * puts). Errors: AM_EVALIDATION (+details), AM_EPLANLIMIT (the org holds
 * APIKEY_PER_ORG_MAX keys), AM_EFORBIDDEN (no such org), AM_EUNAVAILABLE
 * (no master key, storage). */
int apikey_create(struct app *app, const char *org, const char *created_by,
                  struct json_object *body, struct json_object **out,
                  struct am_error *err);

/* DELETE /orgs/{org}/keys/{id}: remove the key and its org index record in
 * one transaction, then bump the auth epoch so every worker refuses it from
 * its next request. Errors: AM_EKEYNOTFOUND (no key id in org, whether or
 * not another org has one), AM_EUNAVAILABLE. */
int apikey_delete(struct app *app, const char *org, const char *id,
                  struct am_error *err);

/* Parse a "scopes" value into enum account_scope bits: a non-empty array
 * of "run"/"manage" without duplicates; NULL (absent) or JSON null gives
 * SCOPE_RUN. Returns the bits, or -1 with the problem in *problem (a
 * static string). */
int apikey_scopes_parse(struct json_object *v, const char **problem);

/* Test hook: how many last_used_at writes this process has committed. */
unsigned long apikey_test_touch_count(void);

#endif
