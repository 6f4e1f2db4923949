/*
 * check_provider_keys.c - unit tests for provider_keys.c: the validation of
 * POST /orgs/{slug}/providers bodies (table-driven: which providers take a
 * key, what a key may look like, unknown fields; no detail or message
 * quotes the key), the answers' JSON, and delete's 404 for names that are
 * not saved; against a real Berkeley DB environment and a real vault.
 */
#include <check.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "control/provider_keys.h"
#include "state/config.h"
#include "state/store.h"
#include "state/vault.h"
#include "lib/util.h"

#define SECRET "sk-unit-secret-0123456789"

static char dir[64];
static struct config cfg;
static struct app app;
static struct vault *vault;

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb; (void)flag; (void)ftw;
    return remove(path);
}

static void setup(void)
{
    char home[128], key[128];
    struct store_options o = { home, 8, 1, 16, 0, NULL };
    struct am_error err;
    unsigned char bytes[VAULT_KEY_BYTES];
    int fd;

    snprintf(dir, sizeof(dir), "/tmp/am-check-pk-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(home, sizeof(home), "%s/env", dir);
    ck_assert_int_eq(mkdir(home, 0700), 0);
    snprintf(key, sizeof(key), "%s/master.key", dir);
    memset(bytes, 7, sizeof(bytes));
    fd = open(key, O_WRONLY | O_CREAT | O_EXCL, 0600);
    ck_assert_int_eq(write(fd, bytes, sizeof(bytes)), (ssize_t)sizeof(bytes));
    close(fd);
    config_defaults(&cfg);
    memset(&app, 0, sizeof(app));
    app.cfg = &cfg;
    error_clear(&err);
    ck_assert_msg(vault_open(&vault, key, &err) == 0, "%s", err.message);
    app.vault = vault;
    ck_assert_msg(store_open(&app.store, &o, STORE_OPEN_CREATE, &err) == 0, "%s", err.message);
}

static void teardown(void)
{
    store_close(app.store);
    vault_close(vault);
    nftw(dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

static const struct {
    const char *body;       /* JSON */
    const char *field;      /* the detail's field; NULL: accepted */
    const char *says;       /* in the detail's problem */
} bodies[] = {
    { "{\"provider\":\"openai\",\"api_key\":\"" SECRET "\"}", NULL, NULL },
    { "{\"provider\":\"anthropic\",\"api_key\":\"k\"}", NULL, NULL },
    { "{\"provider\":\"groq\",\"api_key\":\"" SECRET "\"}", NULL, NULL },
    { "{\"provider\":\"mistral\",\"api_key\":\"" SECRET "\"}", NULL, NULL },
    { "{\"provider\":\"cohere\",\"api_key\":\"" SECRET "\"}", NULL, NULL },
    { "{\"provider\":\"ollama\",\"api_key\":\"" SECRET "\"}", "provider", "need no API key" },
    { "{\"provider\":\"echo\",\"api_key\":\"" SECRET "\"}", "provider", "need no API key" },
    { "{\"provider\":\"azure\",\"api_key\":\"" SECRET "\"}", "provider", "must be one of" },
    { "{\"provider\":\"\",\"api_key\":\"" SECRET "\"}", "provider", "must be one of" },
    { "{\"provider\":true,\"api_key\":\"" SECRET "\"}", "provider", "string" },
    { "{\"api_key\":\"" SECRET "\"}", "provider", "required" },
    { "{\"provider\":\"openai\"}", "api_key", "required" },
    { "{\"provider\":\"openai\",\"api_key\":\"\"}", "api_key", "between 1 and 255" },
    { "{\"provider\":\"openai\",\"api_key\":[\"" SECRET "\"]}", "api_key", "string" },
    { "{\"provider\":\"openai\",\"api_key\":\"" SECRET " \"}", "api_key", "spaces" },
    { "{\"provider\":\"openai\",\"api_key\":\" " SECRET "\"}", "api_key", "spaces" },
    { "{\"provider\":\"openai\",\"api_key\":\"" SECRET "\\u0000x\"}", "api_key", "control" },
    { "{\"provider\":\"openai\",\"api_key\":\"" SECRET "\\r\"}", "api_key", "control" },
    { "{\"provider\":\"openai\",\"api_key\":\"" SECRET "\\u007f\"}", "api_key", "control" },
    { "{\"provider\":\"openai\",\"api_key\":\"" SECRET "\",\"note\":1}", "note", "unknown" },
};

START_TEST(body_is_validated_and_no_detail_quotes_the_key)
{
    struct json_object *body = json_tokener_parse(bodies[_i].body), *out = NULL;
    struct am_error err;
    int rc, i;

    ck_assert_ptr_nonnull(body);
    error_clear(&err);
    rc = provider_keys_put(&app, "acme", body, &out, &err);
    if (bodies[_i].field == NULL) {
        ck_assert_msg(rc == 0, "%s: %s", bodies[_i].body, err.message);
        ck_assert_str_eq(json_object_get_string(json_object_object_get(out, "status")), "saved");
    } else {
        ck_assert_int_eq(rc, AM_EVALIDATION);
        ck_assert_ptr_null(out);
        ck_assert_int_ge(err.ndetails, 1);
        ck_assert_str_eq(err.details[0].field, bodies[_i].field);
        ck_assert_msg(strstr(err.details[0].problem, bodies[_i].says) != NULL, "%s: %s",
                      bodies[_i].body, err.details[0].problem);
        for (i = 0; i < err.ndetails; i++)
            ck_assert_ptr_null(strstr(err.details[i].problem, "0123456789"));
        ck_assert_ptr_null(strstr(err.message, "0123456789"));
    }
    json_object_put(out);
    json_object_put(body);
}
END_TEST

START_TEST(key_of_255_bytes_is_taken_and_256_is_not)
{
    char json[400], k[257];
    struct json_object *body, *out = NULL;
    struct am_error err;

    memset(k, 'k', sizeof(k));
    k[255] = '\0';
    snprintf(json, sizeof(json), "{\"provider\":\"openai\",\"api_key\":\"%s\"}", k);
    body = json_tokener_parse(json);
    error_clear(&err);
    ck_assert_int_eq(provider_keys_put(&app, "acme", body, &out, &err), 0);
    json_object_put(out);
    json_object_put(body);
    k[255] = 'k';
    k[256] = '\0';
    snprintf(json, sizeof(json), "{\"provider\":\"openai\",\"api_key\":\"%s\"}", k);
    body = json_tokener_parse(json);
    ck_assert_int_eq(provider_keys_put(&app, "acme", body, &out, &err), AM_EVALIDATION);
    json_object_put(body);
}
END_TEST

START_TEST(list_answers_masks_and_delete_says_key_not_found)
{
    struct json_object *body = json_tokener_parse("{\"provider\":\"openai\",\"api_key\":\""
                                                  SECRET "\"}"), *out = NULL, *arr, *e;
    struct am_error err;
    const char *text;

    error_clear(&err);
    ck_assert_int_eq(provider_keys_put(&app, "acme", body, &out, &err), 0);
    json_object_put(out);
    ck_assert_int_eq(provider_keys_list(&app, "acme", &out, &err), 0);
    text = json_object_to_json_string(out);
    ck_assert_ptr_null(strstr(text, "unit-secret"));
    arr = json_object_object_get(out, "providers");
    ck_assert_int_eq((int)json_object_array_length(arr), 1);
    e = json_object_array_get_idx(arr, 0);
    ck_assert_str_eq(json_object_get_string(json_object_object_get(e, "masked_key")),
                     "sk-...6789");
    ck_assert_str_eq(json_object_get_string(json_object_object_get(e, "provider")), "openai");
    ck_assert_int_eq((int)strlen(json_object_get_string(json_object_object_get(e, "added_at"))),
                     20);
    json_object_put(out);
    ck_assert_int_eq(provider_keys_delete(&app, "acme", "ollama", &err), AM_EKEYNOTFOUND);
    ck_assert_int_eq(provider_keys_delete(&app, "acme", "nosuch", &err), AM_EKEYNOTFOUND);
    ck_assert_int_eq(provider_keys_delete(&app, "other", "openai", &err), AM_EKEYNOTFOUND);
    ck_assert_int_eq(provider_keys_delete(&app, "acme", "openai", &err), 0);
    ck_assert_int_eq(provider_keys_delete(&app, "acme", "openai", &err), AM_EKEYNOTFOUND);
    json_object_put(body);
}
END_TEST

static Suite *provider_keys_suite(void)
{
    Suite *s = suite_create("provider_keys");
    TCase *tc = tcase_create("routes' logic");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_loop_test(tc, body_is_validated_and_no_detail_quotes_the_key, 0,
                        (int)(sizeof(bodies) / sizeof(bodies[0])));
    tcase_add_test(tc, key_of_255_bytes_is_taken_and_256_is_not);
    tcase_add_test(tc, list_answers_masks_and_delete_says_key_not_found);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(provider_keys_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
