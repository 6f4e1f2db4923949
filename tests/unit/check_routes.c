/*
 * check_routes.c - unit tests for the access rule every route applies
 * (routes_decide, SPEC section 3): each kind of caller against each kind of
 * route row, table-driven; the integration test test_isolation.py checks
 * the same rule through the real daemon for every row of the real table.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "control/account.h"
#include "server/routes.h"

enum caller { PERSON, RUN_KEY, MANAGE_KEY, BOTH_KEY };

static const struct {
    const char *what;
    int access, least_role, scope;  /* the route row */
    int caller, own_org, role;      /* the caller: kind, key of this org?, person's role */
    int allowed;
} cases[] = {
    /* public: anyone */
    { "public, a key of another org", ACCESS_PUBLIC, ROLE_NONE, SCOPE_NONE, RUN_KEY, 0, 0, 1 },
    { "public, a person of no org", ACCESS_PUBLIC, ROLE_NONE, SCOPE_NONE, PERSON, 0, ROLE_NONE, 1 },
    /* user routes: people only */
    { "user route, a person", ACCESS_USER, ROLE_NONE, SCOPE_NONE, PERSON, 0, ROLE_NONE, 1 },
    { "user route, a manage key", ACCESS_USER, ROLE_NONE, SCOPE_NONE, MANAGE_KEY, 1, 0, 0 },
    /* run rows (list/get agents, run, test) */
    { "run row, member", ACCESS_ORG, ROLE_MEMBER, SCOPE_RUN, PERSON, 0, ROLE_MEMBER, 1 },
    { "run row, outsider", ACCESS_ORG, ROLE_MEMBER, SCOPE_RUN, PERSON, 0, ROLE_NONE, 0 },
    { "run row, run key", ACCESS_ORG, ROLE_MEMBER, SCOPE_RUN, RUN_KEY, 1, 0, 1 },
    { "run row, manage key (manage includes run)", ACCESS_ORG, ROLE_MEMBER, SCOPE_RUN,
      MANAGE_KEY, 1, 0, 1 },
    { "run row, run key of another org", ACCESS_ORG, ROLE_MEMBER, SCOPE_RUN, RUN_KEY, 0, 0, 0 },
    /* manage rows (create/edit/delete/deploy/pause, usage) */
    { "manage row, member", ACCESS_ORG, ROLE_MEMBER, SCOPE_MANAGE, PERSON, 0, ROLE_MEMBER, 1 },
    { "manage row, run key", ACCESS_ORG, ROLE_MEMBER, SCOPE_MANAGE, RUN_KEY, 1, 0, 0 },
    { "manage row, manage key", ACCESS_ORG, ROLE_MEMBER, SCOPE_MANAGE, MANAGE_KEY, 1, 0, 1 },
    { "manage row, run+manage key", ACCESS_ORG, ROLE_MEMBER, SCOPE_MANAGE, BOTH_KEY, 1, 0, 1 },
    { "manage row, manage key of another org", ACCESS_ORG, ROLE_MEMBER, SCOPE_MANAGE,
      MANAGE_KEY, 0, 0, 0 },
    /* member-only rows (the member list) */
    { "member-only row, member", ACCESS_ORG, ROLE_MEMBER, SCOPE_NONE, PERSON, 0, ROLE_MEMBER, 1 },
    { "member-only row, manage key", ACCESS_ORG, ROLE_MEMBER, SCOPE_NONE, BOTH_KEY, 1, 0, 0 },
    /* admin rows (keys, providers, invitations, org settings) */
    { "admin row, member", ACCESS_ORG, ROLE_ADMIN, SCOPE_NONE, PERSON, 0, ROLE_MEMBER, 0 },
    { "admin row, admin", ACCESS_ORG, ROLE_ADMIN, SCOPE_NONE, PERSON, 0, ROLE_ADMIN, 1 },
    { "admin row, owner", ACCESS_ORG, ROLE_ADMIN, SCOPE_NONE, PERSON, 0, ROLE_OWNER, 1 },
    { "admin row, outsider", ACCESS_ORG, ROLE_ADMIN, SCOPE_NONE, PERSON, 0, ROLE_NONE, 0 },
    { "admin row, a key with every scope", ACCESS_ORG, ROLE_ADMIN, SCOPE_NONE, BOTH_KEY, 1, 0,
      0 },
};

START_TEST(each_caller_on_each_kind_of_route)
{
    struct account_principal who;
    const char *why = "unset";
    int rc;

    memset(&who, 0, sizeof(who));
    who.kind = cases[_i].caller == PERSON ? PRINCIPAL_USER : PRINCIPAL_KEY;
    who.scopes = cases[_i].caller == RUN_KEY ? SCOPE_RUN
               : cases[_i].caller == MANAGE_KEY ? SCOPE_MANAGE
               : cases[_i].caller == BOTH_KEY ? (SCOPE_RUN | SCOPE_MANAGE) : 0;
    rc = routes_decide(cases[_i].access, cases[_i].least_role, cases[_i].scope, &who,
                       cases[_i].own_org, cases[_i].role, &why);
    if (cases[_i].allowed) {
        ck_assert_msg(rc == 0, "%s: refused (%s)", cases[_i].what, why ? why : "");
        ck_assert_ptr_null(why);
    } else {
        ck_assert_msg(rc == AM_EFORBIDDEN, "%s: got %d", cases[_i].what, rc);
        ck_assert_msg(why != NULL && *why != '\0', "%s: no reason", cases[_i].what);
    }
}
END_TEST

START_TEST(refusals_say_why_without_naming_another_org)
{
    struct account_principal key;
    const char *why = NULL;

    memset(&key, 0, sizeof(key));
    key.kind = PRINCIPAL_KEY;
    key.scopes = SCOPE_RUN;
    snprintf(key.org, sizeof(key.org), "%s", "secret-org-name");
    ck_assert_int_eq(routes_decide(ACCESS_ORG, ROLE_MEMBER, SCOPE_MANAGE, &key, 1, 0, &why),
                     AM_EFORBIDDEN);
    ck_assert_ptr_nonnull(strstr(why, "'manage' scope"));
    ck_assert_int_eq(routes_decide(ACCESS_ORG, ROLE_MEMBER, SCOPE_RUN, &key, 0, 0, &why),
                     AM_EFORBIDDEN);
    ck_assert_ptr_null(strstr(why, "secret-org-name"));
}
END_TEST

static Suite *routes_suite(void)
{
    Suite *s = suite_create("routes");
    TCase *tc = tcase_create("access");

    tcase_add_loop_test(tc, each_caller_on_each_kind_of_route, 0,
                        (int)(sizeof(cases) / sizeof(cases[0])));
    tcase_add_test(tc, refusals_say_why_without_naming_another_org);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(routes_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
