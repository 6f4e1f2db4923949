/*
 * provider_keys.h - an org's own model-provider keys ("bring your own
 * key"): which providers take one, what a key may look like, and the JSON
 * of the three routes (SPEC section 7). Storage and sealing are vault.c's
 * (state/); this module validates and shapes answers.
 *
 * Must never: log; put a key anywhere but vault_provider_put (not in an
 * answer, not in an error message: a listing shows only the mask).
 */
#ifndef AM_PROVIDER_KEYS_H
#define AM_PROVIDER_KEYS_H

#include <json-c/json.h>
#include "state/app.h"
#include "lib/error.h"

/* GET /orgs/{slug}/providers: {"providers":[{"provider","masked_key",
 * "added_at"}]} into *out (caller puts). Returns 0 or AM_EUNAVAILABLE /
 * AM_EIO. */
int provider_keys_list(struct app *app, const char *org, struct json_object **out,
                       struct am_error *err);

/* POST /orgs/{slug}/providers with body {"provider","api_key"} (borrowed):
 * validates (AM_EVALIDATION with details: unknown fields, a provider that
 * takes no key or does not exist, an empty, over-long, or space- or
 * control-character-bearing key), saves or replaces the org's key, and
 * sets *out to {"provider","status":"saved"} (caller puts). */
int provider_keys_put(struct app *app, const char *org, struct json_object *body,
                      struct json_object **out, struct am_error *err);

/* DELETE /orgs/{slug}/providers/{provider}: 0, or AM_EKEYNOTFOUND when no
 * key is saved for it (an unknown provider name included). */
int provider_keys_delete(struct app *app, const char *org, const char *provider,
                         struct am_error *err);

#endif
