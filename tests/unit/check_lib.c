/*
 * check_lib.c - unit tests for the primitives in src/lib/ that have no
 * suite of their own: the growable buffer (buf.c), the composite key shapes
 * (key.c), FNV-1a (hash.h) and the error table (error.c).
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include "lib/buf.h"
#include "lib/error.h"
#include "lib/hash.h"
#include "lib/key.h"

/* ---- buf ------------------------------------------------------------------ */

START_TEST(buf_grows_past_its_hint_and_stays_nul_terminated)
{
    struct buf b;
    char *s;

    buf_init(&b, 1);
    ck_assert_str_eq(b.z, "");
    for (int i = 0; i < 1000; i++)
        buf_puts(&b, "ab");
    ck_assert_uint_eq(b.n, 2000);
    ck_assert_uint_eq(strlen(b.z), 2000);
    ck_assert(b.cap > b.n);
    ck_assert_int_eq(memcmp(b.z + 1996, "abab", 5), 0);
    s = buf_take(&b);
    ck_assert_ptr_null(b.z);
    ck_assert_uint_eq(b.n, 0);
    ck_assert_uint_eq(strlen(s), 2000);
    free(s);
}
END_TEST

START_TEST(buf_keeps_embedded_nul_bytes)
{
    struct buf b = {0};

    buf_put(&b, "a\0b", 3);
    buf_put(&b, "", 0);
    ck_assert_uint_eq(b.n, 3);
    ck_assert_int_eq(memcmp(b.z, "a\0b\0", 4), 0);
    buf_free(&b);
    ck_assert_ptr_null(b.z);
}
END_TEST

START_TEST(buf_take_of_an_untouched_buffer_is_an_empty_string)
{
    struct buf b = {0};
    char *s = buf_take(&b);

    ck_assert_str_eq(s, "");
    free(s);
    buf_free(&b);       /* freeing an empty buffer is harmless */
}
END_TEST

START_TEST(buf_put_limited_refuses_what_would_pass_the_limit)
{
    struct buf b = {0};

    ck_assert_int_eq(buf_put_limited(&b, "12345", 5, 8), 0);
    ck_assert_int_eq(buf_put_limited(&b, "678", 3, 8), 0);     /* exactly 8 */
    ck_assert_int_eq(buf_put_limited(&b, "9", 1, 8), -1);
    ck_assert_int_eq(buf_put_limited(&b, "x", SIZE_MAX, 8), -1); /* no overflow */
    ck_assert_uint_eq(b.n, 8);
    ck_assert_str_eq(b.z, "12345678");
    buf_free(&b);
}
END_TEST

/* ---- key ------------------------------------------------------------------ */

START_TEST(key_pair_joins_two_parts_with_a_nul)
{
    char k[16];

    ck_assert_uint_eq(key_pair(k, sizeof(k), "acme", "bot"), 8);
    ck_assert_int_eq(memcmp(k, "acme\0bot", 8), 0);
    /* 4 + 1 + 3 + NUL = 9 bytes: fits in 9, not in 8 */
    ck_assert_uint_eq(key_pair(k, 9, "acme", "bot"), 8);
    ck_assert_uint_eq(key_pair(k, 8, "acme", "bot"), 0);
}
END_TEST

START_TEST(key_agent_id_round_trips_through_split)
{
    char id[KEY_AGENT_ID_MAX];
    const char *name;
    size_t olen;

    ck_assert_int_eq(key_agent_id(id, sizeof(id), "acme-co", "support-bot"), 0);
    ck_assert_str_eq(id, "acme-co__support-bot");
    ck_assert_int_eq(key_agent_id_split(id, &olen, &name), 0);
    ck_assert_uint_eq(olen, 7);
    ck_assert_str_eq(name, "support-bot");
    ck_assert_int_eq(key_agent_id_split("no-separator", &olen, &name), -1);
    ck_assert_int_eq(key_agent_id(id, 6, "acme", "bot"), -1);  /* truncated */
}
END_TEST

/* ---- hash ----------------------------------------------------------------- */

START_TEST(fnv1a_matches_the_published_test_vectors)
{
    /* from the FNV reference (draft-eastlake-fnv): "" and "a" */
    ck_assert_uint_eq(hash_fnv1a64("", 0), UINT64_C(0xcbf29ce484222325));
    ck_assert_uint_eq(hash_fnv1a64("a", 1), UINT64_C(0xaf63dc4c8601ec8c));
    ck_assert_uint_eq(hash_fnv1a32("", 0), UINT32_C(0x811c9dc5));
    ck_assert_uint_eq(hash_fnv1a32("a", 1), UINT32_C(0xe40c292c));
    ck_assert_uint_eq(hash_fnv1a64("foobar", 6), UINT64_C(0x85944171f73967e8));
}
END_TEST

/* ---- error ---------------------------------------------------------------- */

START_TEST(error_set_keeps_the_callers_message_but_not_for_the_groups_codes)
{
    struct am_error err;

    error_clear(&err);
    ck_assert_int_eq(error_set(&err, AM_EIO, "Storage unavailable %d", 7), AM_EIO);
    ck_assert_str_eq(err.message, "Storage unavailable 7");
    ck_assert_int_eq(error_status(AM_EIO), 503);
    /* a commit too few sites confirmed says so, whichever write it was */
    ck_assert_int_eq(error_set(&err, AM_ENOTACKED, "Storage unavailable"), AM_ENOTACKED);
    ck_assert_int_eq(err.code, AM_ENOTACKED);
    ck_assert_str_eq(error_name(err.code), "replication_unavailable");
    ck_assert_ptr_nonnull(strstr(err.message, "confirmed this write"));
    error_set(&err, AM_ENOMASTER, "Storage unavailable");
    ck_assert_str_eq(error_name(err.code), "no_master");
    ck_assert_ptr_nonnull(strstr(err.message, "no reachable master"));
    ck_assert_int_eq(error_status(AM_ENOMASTER), 503);
    ck_assert_int_eq(error_status(12345), 500);
    ck_assert_str_eq(error_name(12345), "internal_error");
}
END_TEST

static Suite *lib_suite(void)
{
    Suite *s = suite_create("lib");
    TCase *tc = tcase_create("buf");

    tcase_add_test(tc, buf_grows_past_its_hint_and_stays_nul_terminated);
    tcase_add_test(tc, buf_keeps_embedded_nul_bytes);
    tcase_add_test(tc, buf_take_of_an_untouched_buffer_is_an_empty_string);
    tcase_add_test(tc, buf_put_limited_refuses_what_would_pass_the_limit);
    suite_add_tcase(s, tc);
    tc = tcase_create("key");
    tcase_add_test(tc, key_pair_joins_two_parts_with_a_nul);
    tcase_add_test(tc, key_agent_id_round_trips_through_split);
    suite_add_tcase(s, tc);
    tc = tcase_create("hash");
    tcase_add_test(tc, fnv1a_matches_the_published_test_vectors);
    suite_add_tcase(s, tc);
    tc = tcase_create("error");
    tcase_add_test(tc, error_set_keeps_the_callers_message_but_not_for_the_groups_codes);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(lib_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
