/*
 * check_cli_args.c - unit tests for the astromesh client's argument
 * splitting (src/cli/args.c): global options anywhere on the line, both
 * "--x v" and "--x=v", short options, repeated --scope, "--" ending the
 * options, and the errors (unknown option, missing value, a value given to
 * a flag, too many words).
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include "cli/args.h"

#define NCASES(a) ((int)(sizeof(a) / sizeof((a)[0])))

static int parse(struct args *a, char *err, const char *const *words)
{
    char *argv[32];
    int argc = 0;
    argv[argc++] = (char *)"astromesh";
    for (; *words; words++)
        argv[argc++] = (char *)*words;
    return args_parse(argc, argv, a, err, 128);
}

START_TEST(options_anywhere_and_words_in_order)
{
    static const char *const w[] = { "agents", "--json", "get", "--org=acme", "bot", "-q", NULL };
    struct args a;
    char err[128];
    ck_assert_int_eq(parse(&a, err, w), 0);
    ck_assert_int_eq(a.npos, 3);
    ck_assert_str_eq(a.pos[0], "agents");
    ck_assert_str_eq(a.pos[1], "get");
    ck_assert_str_eq(a.pos[2], "bot");
    ck_assert_int_eq(a.json, 1);
    ck_assert_int_eq(a.quiet, 1);
    ck_assert_str_eq(a.org, "acme");
}
END_TEST

START_TEST(values_short_file_scopes_and_double_dash)
{
    static const char *const w[] = { "apply", "-f", "x.yaml", "--prune", "--dry-run", "--scope",
                                     "run", "--scope=manage", "--", "--not-an-option", NULL };
    struct args a;
    char err[128];
    ck_assert_int_eq(parse(&a, err, w), 0);
    ck_assert_str_eq(a.file, "x.yaml");
    ck_assert_int_eq(a.prune, 1);
    ck_assert_int_eq(a.dry_run, 1);
    ck_assert_int_eq(a.nscopes, 2);
    ck_assert_str_eq(a.scopes[0], "run");
    ck_assert_str_eq(a.scopes[1], "manage");
    ck_assert_int_eq(a.npos, 2);
    ck_assert_str_eq(a.pos[1], "--not-an-option");
}
END_TEST

static const struct {
    const char *w[4];
    const char *reason;
} bad[] = {
    { { "agents", "--bogus", NULL }, "unknown option '--bogus'" },
    { { "agents", "list", "--org", NULL }, "option '--org' needs a value" },
    { { "agents", "--json=yes", NULL }, "option '--json' takes no value" },
    { { "run", "-x", NULL }, "unknown option '-x'" },
};

START_TEST(bad_lines_are_refused_with_a_reason)
{
    struct args a;
    char err[128] = "";
    ck_assert_int_eq(parse(&a, err, bad[_i].w), -1);
    ck_assert_str_eq(err, bad[_i].reason);
}
END_TEST

START_TEST(too_many_words_are_refused)
{
    static const char *const w[] = { "1", "2", "3", "4", "5", "6", "7", "8", "9", NULL };
    struct args a;
    char err[128] = "";
    ck_assert_int_eq(parse(&a, err, w), -1);
    ck_assert_ptr_nonnull(strstr(err, "too many arguments"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cli_args");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, options_anywhere_and_words_in_order);
    tcase_add_test(tc, values_short_file_scopes_and_double_dash);
    tcase_add_loop_test(tc, bad_lines_are_refused_with_a_reason, 0, NCASES(bad));
    tcase_add_test(tc, too_many_words_are_refused);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
