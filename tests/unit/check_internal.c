/*
 * check_internal.c - unit tests for internal.c, the master's side of the
 * accounting calls a replica makes (POST /api/v1/internal/accounting), on
 * a real Berkeley DB environment in a fresh mkdtemp directory and real
 * quota tables, as check_usage.c sets them up.
 *
 * What a replica (the only caller: routes.c lets no one else reach it)
 * sees: a call that is not one (no JSON, no "op", an unknown op, a field
 * missing or of the wrong type) is 400 bad_request and changes nothing; a
 * well-formed call is 200 {"rc":0|AM_*,"message",...}: "acquire" counts
 * against the limit and says what remains, "key_touch" of a hash no key has
 * is rc AM_ENOENT, never a 500.
 */
#include <check.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <json-c/json.h>
#include "lib/error.h"
#include "server/http.h"
#include "server/internal.h"
#include "state/app.h"
#include "state/quota.h"
#include "state/store.h"

static char home[64];
static struct store *st;
static struct quota *qt, *tq;
static struct app app;             /* cfg NULL: no group, this host commits */

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static void setup(void)
{
    struct store_options o = { home, 8, 0, 64, 0, NULL };
    struct am_error err;

    snprintf(home, sizeof(home), "/tmp/check_internal.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(home));
    error_clear(&err);
    ck_assert_msg(store_open(&st, &o, STORE_OPEN_CREATE, &err) == 0, "store_open: %s",
                  err.message);
    ck_assert_int_eq(quota_create(&qt, 16, 64, &err), 0);
    ck_assert_int_eq(quota_create(&tq, 16, 64, &err), 0);
    memset(&app, 0, sizeof(app));
    app.store = st;
    app.quota = qt;
    app.test_quota = tq;
}

static void teardown(void)
{
    quota_close(qt);
    quota_close(tq);
    store_close(st);
    nftw(home, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* The answer to body: its status; *out the parsed JSON body (caller puts). */
static int call(const char *body, struct json_object **out)
{
    struct http_request req;
    struct http_response resp;
    int status;

    memset(&req, 0, sizeof(req));
    memset(&resp, 0, sizeof(resp));
    req.method = "POST";
    req.path = "/api/v1/internal/accounting";
    req.query = "";
    req.body = body;
    req.body_len = strlen(body);
    internal_accounting(&app, &req, &resp);
    status = resp.status;
    *out = resp.body != NULL ? json_tokener_parse(resp.body) : NULL;
    http_response_free(&resp);
    return status;
}

static const char *str(struct json_object *o, const char *k)
{
    struct json_object *v;

    return json_object_object_get_ex(o, k, &v) ? json_object_get_string(v) : NULL;
}

static int64_t num(struct json_object *o, const char *k)
{
    struct json_object *v;

    ck_assert_msg(json_object_object_get_ex(o, k, &v), "no \"%s\" in %s", k,
                  json_object_to_json_string(o));
    return json_object_get_int64(v);
}

START_TEST(what_is_not_a_call_is_400_bad_request)
{
    static const char *bad[] = {
        "", "not json", "[1,2]", "\"acquire\"", "{}", "{\"op\":7}", "{\"op\":\"nope\"}",
        "{\"op\":\"acquire\"}", "{\"op\":\"acquire\",\"org\":\"o\",\"limit\":\"3\"}",
        "{\"op\":\"acquire\",\"org\":5,\"limit\":3}", "{\"op\":\"acquire\",\"org\":\"o\",\"limit\":-1}",
        "{\"op\":\"settle\",\"trace_id\":\"t\"}", "{\"op\":\"in_flight\"}",
        "{\"op\":\"memory_append\",\"agent_id\":\"a\",\"session\":\"s\",\"mode\":0}",
        "{\"op\":\"memory_delete\",\"agent_id\":\"a\"}", "{\"op\":\"key_touch\"}",
        "{\"op\":\"key_touch\",\"key\":\"zz\"}", "{\"op\":\"key_touch\",\"key\":12}",
        "{\"op\":\"key_touch\",\"key\":"
        "\"ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789\"}",
    };
    struct json_object *o;
    size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_msg(call(bad[i], &o) == 400, "%s", bad[i]);
        ck_assert_str_eq(str(o, "error"), "bad_request");
        json_object_put(o);
    }
    /* nothing was counted by the refused acquires */
    ck_assert_int_eq(call("{\"op\":\"acquire\",\"org\":\"o\",\"limit\":3}", &o), 200);
    ck_assert_int_eq(num(o, "rc"), 0);
    ck_assert_int_eq(num(o, "remaining"), 2);
    json_object_put(o);
}
END_TEST

START_TEST(acquire_counts_against_the_limit_and_says_what_remains)
{
    struct json_object *o;
    int i;

    for (i = 0; i < 2; i++) {
        ck_assert_int_eq(call("{\"op\":\"acquire\",\"org\":\"o\",\"limit\":2}", &o), 200);
        ck_assert_int_eq(num(o, "rc"), 0);
        ck_assert_int_eq(num(o, "remaining"), 1 - i);
        ck_assert_int_ge(num(o, "hold"), 0);
        json_object_put(o);
    }
    ck_assert_int_eq(call("{\"op\":\"acquire\",\"org\":\"o\",\"limit\":2}", &o), 200);
    ck_assert_int_eq(num(o, "rc"), AM_ERATELIMIT);
    ck_assert_int_eq(num(o, "remaining"), 0);
    json_object_put(o);
    /* another org has its own count */
    ck_assert_int_eq(call("{\"op\":\"acquire\",\"org\":\"p\",\"limit\":2}", &o), 200);
    ck_assert_int_eq(num(o, "rc"), 0);
    json_object_put(o);
}
END_TEST

START_TEST(key_touch_of_a_hash_no_key_has_is_not_found_not_a_failure)
{
    struct json_object *o;

    ck_assert_int_eq(call("{\"op\":\"key_touch\",\"key\":"
                          "\"abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789\"}",
                          &o), 200);
    ck_assert_int_eq(num(o, "rc"), AM_ENOENT);
    json_object_put(o);
}
END_TEST

static Suite *internal_suite(void)
{
    Suite *s = suite_create("internal");
    TCase *tc = tcase_create("accounting");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, what_is_not_a_call_is_400_bad_request);
    tcase_add_test(tc, acquire_counts_against_the_limit_and_says_what_remains);
    tcase_add_test(tc, key_touch_of_a_hash_no_key_has_is_not_found_not_a_failure);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(internal_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
