/*
 * provider_keys.c - the org's own provider keys (provider_keys.h): the
 * rules a key and a provider name must pass, and the answers' JSON. The
 * records are vault.c's; deploy (agent.c) and the runtime read them there.
 *
 * No cache of keys here or anywhere: the runtime unseals a key per model
 * call (about a microsecond), so a put or a delete is seen by every worker
 * on its next call and no epoch is needed.
 *
 * Must never: log; quote a key back (not in a detail, not in a message).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "control/provider_keys.h"
#include "state/config.h"
#include "state/vault.h"
#include "lib/util.h"

/* Does provider p take an org key? echo and ollama need none. */
static int takes_key(int p)
{
    return p >= 0 && p != PROVIDER_ECHO && p != PROVIDER_OLLAMA;
}

/* Check the "provider" field; the provider's index, or -1 after a detail. */
static int check_provider(struct json_object *body, struct am_error *err)
{
    struct json_object *v;
    int p;

    if (!json_object_object_get_ex(body, "provider", &v)) {
        error_add_detail(err, "provider", "required");
        return -1;
    }
    if (!json_object_is_type(v, json_type_string)) {
        error_add_detail(err, "provider", "must be a string");
        return -1;
    }
    p = config_provider_from_name(json_object_get_string(v));
    if (p == PROVIDER_ECHO || p == PROVIDER_OLLAMA) {
        error_add_detail(err, "provider", "echo and ollama need no API key");
        return -1;
    }
    if (!takes_key(p)) {
        error_add_detail(err, "provider",
                         "must be one of openai, anthropic, groq, mistral, cohere");
        return -1;
    }
    return p;
}

/* Check the "api_key" field: the key (borrowed from body), or NULL after a
 * detail. The detail never quotes the key. */
static const char *check_key(struct json_object *body, struct am_error *err)
{
    struct json_object *v;
    const char *k;
    size_t n, i;

    if (!json_object_object_get_ex(body, "api_key", &v)) {
        error_add_detail(err, "api_key", "required");
        return NULL;
    }
    if (!json_object_is_type(v, json_type_string)) {
        error_add_detail(err, "api_key", "must be a string");
        return NULL;
    }
    k = json_object_get_string(v);
    n = (size_t)json_object_get_string_len(v);
    if (n == 0 || n > VAULT_PROVIDER_KEY_MAX) {
        error_add_detail(err, "api_key", "must be between 1 and 255 bytes");
        return NULL;
    }
    for (i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)k[i];

        if (ch <= 0x20 || ch == 0x7f) {
            error_add_detail(err, "api_key", "must not contain spaces or control characters");
            return NULL;
        }
    }
    return k;
}

int provider_keys_put(struct app *app, const char *org, struct json_object *body,
                      struct json_object **out, struct am_error *err)
{
    const char *key;
    int p, rc;

    *out = NULL;
    error_set(err, AM_EVALIDATION, "Invalid provider key");
    json_object_object_foreach(body, name, val) {
        (void)val;
        if (strcmp(name, "provider") != 0 && strcmp(name, "api_key") != 0)
            error_add_detail(err, name, "unknown field");
    }
    p = check_provider(body, err);
    key = check_key(body, err);
    if (err->ndetails > 0)
        return AM_EVALIDATION;
    error_clear(err);
    if ((rc = vault_provider_put(app->store, app->vault, org, config_provider_name(p), key,
                                 err)) != 0)
        return rc;
    *out = json_object_new_object();
    json_object_object_add(*out, "provider", json_object_new_string(config_provider_name(p)));
    json_object_object_add(*out, "status", json_object_new_string("saved"));
    return 0;
}

int provider_keys_list(struct app *app, const char *org, struct json_object **out,
                       struct am_error *err)
{
    struct vault_provider_entry *e = NULL;
    struct json_object *arr;
    char at[40];
    size_t n = 0, i;
    int rc;

    *out = NULL;
    if ((rc = vault_provider_list(app->store, org, &e, &n, err)) != 0)
        return rc;
    arr = json_object_new_array();
    for (i = 0; i < n; i++) {
        struct json_object *o = json_object_new_object();

        util_rfc3339(e[i].added_at, at, sizeof(at));
        json_object_object_add(o, "provider", json_object_new_string(e[i].provider));
        json_object_object_add(o, "masked_key", json_object_new_string(e[i].masked));
        json_object_object_add(o, "added_at", json_object_new_string(at));
        json_object_array_add(arr, o);
    }
    free(e);
    *out = json_object_new_object();
    json_object_object_add(*out, "providers", arr);
    return 0;
}

int provider_keys_delete(struct app *app, const char *org, const char *provider,
                         struct am_error *err)
{
    if (!takes_key(config_provider_from_name(provider)))
        return error_set(err, AM_EKEYNOTFOUND, "No key is saved for provider '%.40s'",
                         provider);
    return vault_provider_del(app->store, org, provider, err);
}
