/*
 * check_utf8.c - unit tests for the one string policy (src/lib/utf8.c):
 * each malformed UTF-8 class, NUL, the control characters, and what
 * UTF8_MULTILINE allows.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <json-c/json.h>
#include "lib/error.h"
#include "lib/utf8.h"

static int check_str(const char *s, size_t n, int flags, const char **why)
{
    *why = NULL;
    return utf8_check(s, n, flags, why);
}

START_TEST(valid_text_of_every_length_passes)
{
    static const char *ok[] = {
        "", "plain ascii", "caf\xC3\xA9", "\xE2\x82\xAC euro", "\xF0\x9F\x98\x80 emoji",
        "\xED\x9F\xBF",                 /* U+D7FF, just below the surrogates */
        "\xEE\x80\x80",                 /* U+E000, just above */
        "\xF4\x8F\xBF\xBF",             /* U+10FFFF, the last code point */
        "\xC2\x80", "\xE0\xA0\x80", "\xF0\x90\x80\x80",   /* the shortest of each length */
        "~\x7E",
    };
    const char *why;

    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        ck_assert_msg(check_str(ok[i], strlen(ok[i]), 0, &why) == 0, "refused #%zu: %s", i, why);
}
END_TEST

START_TEST(each_malformed_class_is_refused)
{
    static const struct { const char *s; const char *what; } bad[] = {
        { "\xC0\xAF", "overlong 2-byte '/'" },
        { "\xC1\xBF", "overlong 2-byte" },
        { "\xE0\x80\xAF", "overlong 3-byte" },
        { "\xE0\x9F\xBF", "overlong 3-byte, top" },
        { "\xF0\x80\x80\xAF", "overlong 4-byte" },
        { "\xF0\x8F\xBF\xBF", "overlong 4-byte, top" },
        { "\xED\xA0\x80", "surrogate U+D800" },
        { "\xED\xBF\xBF", "surrogate U+DFFF" },
        { "\xED\xA0\xBD\xED\xB8\x80", "CESU-8 surrogate pair" },
        { "\xF4\x90\x80\x80", "U+110000" },
        { "\xF5\x80\x80\x80", "lead 0xF5" },
        { "\xFF", "byte 0xFF" },
        { "\xFE", "byte 0xFE" },
        { "abc\xC3", "truncated 2-byte at the end" },
        { "\xE2\x82", "truncated 3-byte" },
        { "\xF0\x9F\x98", "truncated 4-byte" },
        { "\xE2\x82x", "truncated 3-byte before ASCII" },
        { "\x80", "lone continuation" },
        { "a\xBF" "b", "lone continuation inside" },
        { "\xC3\xA9\xA9", "continuation after a complete sequence" },
    };
    const char *why;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_msg(check_str(bad[i].s, strlen(bad[i].s), UTF8_MULTILINE, &why) == AM_EBADREQ,
                      "accepted %s", bad[i].what);
        ck_assert_str_eq(why, "is not valid UTF-8");
    }
}
END_TEST

START_TEST(nul_anywhere_is_refused_by_name)
{
    const char *why;

    ck_assert_int_eq(check_str("ab\0cd", 5, UTF8_MULTILINE, &why), AM_EBADREQ);
    ck_assert_str_eq(why, "must not contain NUL characters");
    ck_assert_int_eq(check_str("\0", 1, 0, &why), AM_EBADREQ);
    ck_assert_str_eq(why, "must not contain NUL characters");
    /* the length is the caller's: a NUL past n is not looked at */
    ck_assert_int_eq(check_str("ab\0cd", 2, 0, &why), 0);
}
END_TEST

START_TEST(controls_only_where_the_field_allows_them)
{
    const char *why;

    ck_assert_int_eq(check_str("line\nline\ttab\r\n", 15, UTF8_MULTILINE, &why), 0);
    ck_assert_int_eq(check_str("line\nline", 9, 0, &why), AM_EBADREQ);
    ck_assert_str_eq(why, "must not contain control characters");
    ck_assert_int_eq(check_str("tab\t", 4, 0, &why), AM_EBADREQ);
    ck_assert_int_eq(check_str("bell\x07", 5, UTF8_MULTILINE, &why), AM_EBADREQ);
    ck_assert_str_eq(why, "must not contain control characters");
    ck_assert_int_eq(check_str("esc\x1B[0m", 7, UTF8_MULTILINE, &why), AM_EBADREQ);
    ck_assert_int_eq(check_str("del\x7F", 4, UTF8_MULTILINE, &why), AM_EBADREQ);
    /* U+0085 (C1, two bytes) is valid UTF-8 text: not refused */
    ck_assert_int_eq(check_str("\xC2\x85", 2, 0, &why), 0);
}
END_TEST

START_TEST(problem_may_be_null)
{
    ck_assert_int_eq(utf8_check("\xC0\xAF", 2, 0, NULL), AM_EBADREQ);
    ck_assert_int_eq(utf8_check("fine", 4, 0, NULL), 0);
}
END_TEST

/* The JSON walk: the first offending field's path, keys included, and
 * TAB/LF/CR only in system_prompt, query and anything under context. */
static int check_json(const char *text, char *field, size_t cap, const char **why)
{
    struct json_object *o = json_tokener_parse(text);
    int rc;

    ck_assert_ptr_nonnull(o);
    *why = NULL;
    rc = utf8_check_json(o, 0, field, cap, why);
    json_object_put(o);
    return rc;
}

START_TEST(json_walk_names_the_field)
{
    char field[128];
    const char *why;

    ck_assert_int_eq(check_json("{\"step2\":{\"system_prompt\":\"a\\nb\\tc\"},"
                                "\"query\":\"x\\ny\",\"context\":{\"k\":[\"l\\r\\n\"]}}",
                                field, sizeof(field), &why), 0);
    ck_assert_str_eq(field, "");
    ck_assert_int_eq(check_json("{\"step2\":{\"persona\":\"a\\nb\"}}", field,
                                sizeof(field), &why), AM_EBADREQ);
    ck_assert_str_eq(field, "step2.persona");
    ck_assert_str_eq(why, "must not contain control characters");
    ck_assert_int_eq(check_json("{\"a\":1,\"scopes\":[\"run\",\"x\\u0000\"]}", field,
                                sizeof(field), &why), AM_EBADREQ);
    ck_assert_str_eq(field, "scopes[1]");
    ck_assert_str_eq(why, "must not contain NUL characters");
    ck_assert_int_eq(check_json("{\"s\":{\"t\":{\"x\\u0007\":1}}}", field, sizeof(field), &why),
                     AM_EBADREQ);
    ck_assert_str_eq(field, "s.t (a key)");
    ck_assert_int_eq(check_json("{\"x\\u0007\":1}", field, sizeof(field), &why), AM_EBADREQ);
    ck_assert_str_eq(field, "body (a key)");
    /* a tiny buffer only shortens the name */
    ck_assert_int_eq(check_json("{\"display_name\":\"\\u0001\"}", field, 5, &why), AM_EBADREQ);
    ck_assert_str_eq(field, "disp");
    /* found by fuzz_wizard: a bad key under a path that already filled the
     * buffer left it without its NUL (the reply then read past it) */
    ck_assert_int_eq(check_json("{\"a\":{\"kkkkkkkk\":{\"x\\u0007\":1}}}", field, 8, &why),
                     AM_EBADREQ);
    ck_assert_uint_lt(strnlen(field, 8), 8);
    ck_assert_str_eq(field, "a.kkkkk");
}
END_TEST

START_TEST(json_walk_sees_raw_bytes)
{
    struct json_tokener *tok = json_tokener_new();
    const char raw[] = "{\"name\":\"a\xed\xa0\x80z\"}";
    struct json_object *o = json_tokener_parse_ex(tok, raw, (int)strlen(raw));
    char field[64];
    const char *why;

    ck_assert_ptr_nonnull(o);
    ck_assert_int_eq(utf8_check_json(o, 0, field, sizeof(field), &why), AM_EBADREQ);
    ck_assert_str_eq(field, "name");
    ck_assert_str_eq(why, "is not valid UTF-8");
    json_object_put(o);
    json_tokener_free(tok);
    /* UTF8_MULTILINE everywhere: newlines pass in any value, never in a key */
    o = json_tokener_parse("{\"a\":{\"b\":\"x\\ny\"}}");
    ck_assert_int_eq(utf8_check_json(o, UTF8_MULTILINE, field, sizeof(field), &why), 0);
    ck_assert_int_eq(utf8_check_json(o, 0, field, sizeof(field), &why), AM_EBADREQ);
    ck_assert_str_eq(field, "a.b");
    json_object_put(o);
    o = json_tokener_parse("{\"a\\nb\":1}");
    ck_assert_int_eq(utf8_check_json(o, UTF8_MULTILINE, field, sizeof(field), &why), AM_EBADREQ);
    json_object_put(o);
}
END_TEST

static Suite *utf8_suite(void)
{
    Suite *s = suite_create("utf8");
    TCase *tc = tcase_create("policy");

    tcase_add_test(tc, valid_text_of_every_length_passes);
    tcase_add_test(tc, each_malformed_class_is_refused);
    tcase_add_test(tc, nul_anywhere_is_refused_by_name);
    tcase_add_test(tc, controls_only_where_the_field_allows_them);
    tcase_add_test(tc, problem_may_be_null);
    tcase_add_test(tc, json_walk_names_the_field);
    tcase_add_test(tc, json_walk_sees_raw_bytes);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(utf8_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
