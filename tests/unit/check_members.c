/*
 * check_members.c - unit tests for members.c (invitations, acceptance at
 * dev login, removal, the member list, PATCH of the org), run against a
 * real Berkeley DB environment (fresh mkdtemp directory per test) and a
 * real shared mapping for the auth epoch.
 *
 * What is asserted: an invitation is stored under both key shapes and
 * listed as invited; members + pending stop at limits.max_members, also
 * when two threads invite at once; an owner cannot be invited; a member or
 * an invited address cannot be invited again; the next dev login turns
 * every invitation into a membership with its role (orgs list and
 * membership in step, invitation gone); the last owner stays; an admin
 * cannot remove an owner; a removal bumps the auth epoch and the memo
 * forgets the role; bad bodies give AM_EVALIDATION naming the field.
 */
#include <check.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <json-c/json.h>
#include "control/account.h"
#include "control/auth.h"
#include "control/auth_state.h"
#include "control/members.h"
#include "state/app.h"
#include "state/config.h"
#include "state/store.h"
#include "lib/key.h"
#include "lib/util.h"

#define NCASES(a) ((int)(sizeof(a) / sizeof((a)[0])))
#define SECRET "check-members-jwt-secret-0123456789abcdef"
#define ORG "owner-example-com"

static char base[64];
static char home[96];
static struct config cfg;
static struct app app;

/* ---- fixture ------------------------------------------------------------- */

static void setup(void)
{
    struct store_options o = { home, 8, 1, 64, 0, NULL };
    struct am_error err;

    snprintf(home, sizeof home, "%s/env-XXXXXX", base);
    ck_assert_ptr_nonnull(mkdtemp(home));
    config_defaults(&cfg);
    util_strlcpy(cfg.jwt_secret, SECRET, sizeof cfg.jwt_secret);
    memset(&app, 0, sizeof app);
    app.cfg = &cfg;
    error_clear(&err);
    ck_assert_msg(store_open(&app.store, &o, STORE_OPEN_CREATE, &err) == 0, "%s", err.message);
    ck_assert_msg(auth_state_create(&app.auth, &err) == 0, "%s", err.message);
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb; (void)flag; (void)ftw;
    return remove(path);
}

static void teardown(void)
{
    auth_state_close(app.auth);
    store_close(app.store);
    memset(&app, 0, sizeof app);
    if (home[0] != '\0')
        nftw(home, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    home[0] = '\0';
}

/* ---- helpers ---------------------------------------------------------------- */

static struct json_object *J(const char *text)
{
    struct json_object *o = json_tokener_parse(text);

    ck_assert_msg(o != NULL, "bad test JSON: %s", text);
    return o;
}

static const char *str_of(struct json_object *o, const char *key)
{
    struct json_object *v;

    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

/* Dev login; the access token into access (if not NULL). */
static void login(const char *email, char *access, size_t cap)
{
    char body[512];
    struct json_object *b, *out = NULL;
    struct am_error err;

    snprintf(body, sizeof body, "{\"email\":\"%s\"}", email);
    b = J(body);
    error_clear(&err);
    ck_assert_msg(account_dev_login(&app, b, &out, &err) == 0, "%s: %s", email, err.message);
    json_object_put(b);
    if (access != NULL)
        util_strlcpy(access, str_of(out, "access_token"), cap);
    json_object_put(out);
}

/* members_invite with a literal body; returns its code. */
static int invite_body(const char *slug, const char *body, struct am_error *err)
{
    struct json_object *b = J(body), *out = NULL;
    int rc;

    error_clear(err);
    rc = members_invite(&app, slug, "owner@example.com", b, &out, err);
    json_object_put(b);
    if (rc == 0) {
        ck_assert_str_eq(str_of(out, "status"), "invited");
        ck_assert_ptr_nonnull(str_of(out, "role"));
    } else {
        ck_assert_ptr_null(out);
    }
    json_object_put(out);
    return rc;
}

static int invite(const char *email, const char *role)
{
    char body[512];
    struct am_error err;

    snprintf(body, sizeof body, "{\"email\":\"%s\",\"role\":\"%s\"}", email, role);
    return invite_body(ORG, body, &err);
}

static int remove_as(const char *actor, const char *target)
{
    struct am_error err;

    error_clear(&err);
    return members_remove(&app, ORG, actor, target, &err);
}

/* The members list entry for email, or NULL (borrowed from *list). */
static struct json_object *listed(struct json_object **list, const char *email)
{
    struct json_object *arr;
    struct am_error err;
    size_t i;

    json_object_put(*list);
    error_clear(&err);
    ck_assert_int_eq(members_list(&app, ORG, list, &err), 0);
    ck_assert(json_object_object_get_ex(*list, "members", &arr));
    for (i = 0; i < json_object_array_length(arr); i++) {
        struct json_object *m = json_object_array_get_idx(arr, i);
        if (strcmp(str_of(m, "email"), email) == 0)
            return m;
    }
    return NULL;
}

static int count_prefix_fn(const char *k, size_t kl, const char *v, size_t vl, void *arg)
{
    (void)k; (void)kl; (void)v; (void)vl;
    (*(int *)arg)++;
    return 0;
}

/* Records in STORE_INVITES under "first\0". */
static int invites_under(const char *first)
{
    char prefix[320];
    size_t plen = key_pair(prefix, sizeof prefix, first, "");
    int n = 0;

    ck_assert_int_eq(store_scan(app.store, NULL, STORE_INVITES, prefix, plen,
                                count_prefix_fn, &n), 0);
    return n;
}

/* The slugs of a user's orgs, comma-joined, into buf. */
static const char *orgs_of(const char *email, char *buf, size_t cap)
{
    struct json_object *list = NULL, *orgs;
    struct am_error err;
    size_t i;

    buf[0] = '\0';
    error_clear(&err);
    ck_assert_int_eq(account_org_list(&app, email, &list, &err), 0);
    json_object_object_get_ex(list, "orgs", &orgs);
    for (i = 0; i < json_object_array_length(orgs); i++) {
        struct json_object *o = json_object_array_get_idx(orgs, i);
        if (i > 0)
            strncat(buf, ",", cap - strlen(buf) - 1);
        strncat(buf, str_of(o, "slug"), cap - strlen(buf) - 1);
        strncat(buf, ":", cap - strlen(buf) - 1);
        strncat(buf, str_of(o, "role"), cap - strlen(buf) - 1);
    }
    json_object_put(list);
    return buf;
}

struct second_owner {
    const char *email;
};

static int make_owner_txn(struct store *s, struct store_txn *t, void *arg)
{
    struct second_owner *o = arg;

    return account_txn_join(s, t, ORG, o->email, ROLE_OWNER, util_now());
}

/* No route makes a second owner; the test writes one directly. */
static void make_owner(const char *email)
{
    struct second_owner o = { email };

    login(email, NULL, 0);
    ck_assert_int_eq(store_transact(app.store, make_owner_txn, &o), 0);
}

/* ---- invitations --------------------------------------------------------------- */

START_TEST(invitation_is_stored_under_both_keys_and_listed_as_invited)
{
    struct json_object *list = NULL, *m;

    login("owner@example.com", NULL, 0);
    ck_assert_int_eq(invite("Bob@Example.com", "admin"), 0);
    ck_assert_int_eq(invites_under(ORG), 1);
    ck_assert_int_eq(invites_under("bob@example.com"), 1);
    ck_assert_ptr_nonnull(m = listed(&list, "bob@example.com"));
    ck_assert_str_eq(str_of(m, "status"), "invited");
    ck_assert_str_eq(str_of(m, "role"), "admin");
    ck_assert_ptr_nonnull(str_of(m, "invited_at"));
    ck_assert_ptr_nonnull(m = listed(&list, "owner@example.com"));
    ck_assert_str_eq(str_of(m, "status"), "active");
    ck_assert_str_eq(str_of(m, "role"), "owner");
    ck_assert_str_eq(str_of(m, "name"), "owner@example.com");
    ck_assert_ptr_nonnull(str_of(m, "joined_at"));
    json_object_put(list);
}
END_TEST

START_TEST(role_defaults_to_member)
{
    struct am_error err;
    struct json_object *list = NULL;

    login("owner@example.com", NULL, 0);
    ck_assert_int_eq(invite_body(ORG, "{\"email\":\"m@example.com\"}", &err), 0);
    ck_assert_str_eq(str_of(listed(&list, "m@example.com"), "role"), "member");
    json_object_put(list);
}
END_TEST

START_TEST(invitations_stop_at_max_members_counting_pending)
{
    login("owner@example.com", NULL, 0);
    ck_assert_int_eq(cfg.max_members, 3);
    ck_assert_int_eq(invite("a@example.com", "member"), 0);
    ck_assert_int_eq(invite("b@example.com", "admin"), 0);
    ck_assert_int_eq(invite("c@example.com", "member"), AM_EPLANLIMIT);
    ck_assert_int_eq(remove_as("owner@example.com", "a@example.com"), 0);   /* withdrawn */
    ck_assert_int_eq(invite("c@example.com", "member"), 0);
    ck_assert_int_eq(invites_under(ORG), 2);
}
END_TEST

START_TEST(member_or_invited_address_cannot_be_invited_again)
{
    login("owner@example.com", NULL, 0);
    ck_assert_int_eq(invite("owner@example.com", "member"), AM_ECONFLICT);
    ck_assert_int_eq(invite("b@example.com", "member"), 0);
    ck_assert_int_eq(invite("B@example.com", "admin"), AM_ECONFLICT);
    ck_assert_int_eq(invites_under(ORG), 1);
}
END_TEST

static const struct {
    const char *body;
    const char *field;
} invite_cases[] = {
    { "{\"email\":\"x@example.com\",\"role\":\"owner\"}", "role" },
    { "{\"email\":\"x@example.com\",\"role\":\"boss\"}", "role" },
    { "{\"email\":\"x@example.com\",\"role\":1}", "role" },
    { "{\"email\":\"x@example.com\",\"role\":null}", "role" },
    { "{\"email\":\"not-an-address\"}", "email" },
    { "{\"email\":\"a b@example.com\"}", "email" },
    { "{\"email\":42}", "email" },
    { "{\"role\":\"member\"}", "email" },
    { "{}", "email" },
    { "{\"email\":\"x@example.com\",\"extra\":1}", "extra" },
};

START_TEST(bad_invitation_is_validation_error_naming_the_field)
{
    struct am_error err;
    int i;

    login("owner@example.com", NULL, 0);
    ck_assert_int_eq(invite_body(ORG, invite_cases[_i].body, &err), AM_EVALIDATION);
    ck_assert_int_ge(err.ndetails, 1);
    for (i = 0; i < err.ndetails; i++)
        if (strcmp(err.details[i].field, invite_cases[_i].field) == 0)
            break;
    ck_assert_msg(i < err.ndetails, "%s: no detail on %s", invite_cases[_i].body,
                  invite_cases[_i].field);
    ck_assert_int_eq(invites_under(ORG), 0);
}
END_TEST

/* ---- acceptance at login --------------------------------------------------------- */

START_TEST(next_login_turns_invitations_into_memberships)
{
    struct json_object *list = NULL, *m;
    char buf[512];
    uint64_t before;

    login("owner@example.com", NULL, 0);
    ck_assert_int_eq(invite("bob@example.com", "admin"), 0);
    before = auth_state_epoch(app.auth);
    login("bob@example.com", NULL, 0);
    ck_assert_uint_gt(auth_state_epoch(app.auth), before);
    ck_assert_int_eq(account_role(&app, ORG, "bob@example.com"), ROLE_ADMIN);
    ck_assert_str_eq(orgs_of("bob@example.com", buf, sizeof buf),
                     "bob-example-com:owner," ORG ":admin");
    ck_assert_int_eq(invites_under(ORG), 0);
    ck_assert_int_eq(invites_under("bob@example.com"), 0);
    ck_assert_ptr_nonnull(m = listed(&list, "bob@example.com"));
    ck_assert_str_eq(str_of(m, "status"), "active");
    ck_assert_str_eq(str_of(m, "role"), "admin");
    json_object_put(list);
    login("bob@example.com", NULL, 0);                 /* nothing more to accept */
    ck_assert_str_eq(orgs_of("bob@example.com", buf, sizeof buf),
                     "bob-example-com:owner," ORG ":admin");
}
END_TEST

START_TEST(existing_user_accepts_at_next_login)
{
    char buf[512];

    login("owner@example.com", NULL, 0);
    login("carol@example.com", NULL, 0);
    ck_assert_int_eq(invite("carol@example.com", "member"), 0);
    ck_assert_int_eq(account_role(&app, ORG, "carol@example.com"), ROLE_NONE);
    login("carol@example.com", NULL, 0);
    ck_assert_str_eq(orgs_of("carol@example.com", buf, sizeof buf),
                     "carol-example-com:owner," ORG ":member");
}
END_TEST

/* ---- removal ----------------------------------------------------------------- */

START_TEST(last_owner_cannot_be_removed)
{
    login("owner@example.com", NULL, 0);
    ck_assert_int_eq(remove_as("owner@example.com", "owner@example.com"), AM_ECONFLICT);
    ck_assert_int_eq(account_role(&app, ORG, "owner@example.com"), ROLE_OWNER);
    make_owner("second@example.com");
    ck_assert_int_eq(remove_as("owner@example.com", "second@example.com"), 0);
    ck_assert_int_eq(remove_as("owner@example.com", "owner@example.com"), AM_ECONFLICT);
}
END_TEST

START_TEST(admin_cannot_remove_an_owner)
{
    login("owner@example.com", NULL, 0);
    make_owner("second@example.com");
    ck_assert_int_eq(invite("adm@example.com", "admin"), 0);
    login("adm@example.com", NULL, 0);
    ck_assert_int_eq(remove_as("adm@example.com", "second@example.com"), AM_EFORBIDDEN);
    ck_assert_int_eq(account_role(&app, ORG, "second@example.com"), ROLE_OWNER);
    ck_assert_int_eq(remove_as("second@example.com", "adm@example.com"), 0);
}
END_TEST

START_TEST(unknown_or_bad_address_is_member_not_found)
{
    login("owner@example.com", NULL, 0);
    ck_assert_int_eq(remove_as("owner@example.com", "nobody@example.com"), AM_EMEMBERNOTFOUND);
    ck_assert_int_eq(remove_as("owner@example.com", "not an address"), AM_EMEMBERNOTFOUND);
    ck_assert_int_eq(invite("x@example.com", "member"), 0);
    ck_assert_int_eq(remove_as("owner@example.com", "X@example.com"), 0);
    ck_assert_int_eq(invites_under(ORG), 0);
    ck_assert_int_eq(invites_under("x@example.com"), 0);
    ck_assert_int_eq(remove_as("owner@example.com", "x@example.com"), AM_EMEMBERNOTFOUND);
}
END_TEST

START_TEST(removal_bumps_the_epoch_and_the_memo_forgets_the_role)
{
    char token[AUTH_TOKEN_MAX], buf[512];
    struct account_principal who;
    struct am_error err;
    uint64_t before;

    login("owner@example.com", NULL, 0);
    ck_assert_int_eq(invite("bob@example.com", "admin"), 0);
    login("bob@example.com", token, sizeof token);
    error_clear(&err);
    ck_assert_int_eq(account_authenticate(&app, token, &who, &err), 0);
    ck_assert_int_eq(account_member_role(&app, &who, ORG), ROLE_ADMIN);
    ck_assert_int_eq(account_authenticate(&app, token, &who, &err), 0);
    ck_assert_int_ge(who.memo, 0);                      /* answered from the memo */
    before = auth_state_epoch(app.auth);
    ck_assert_int_eq(remove_as("owner@example.com", "bob@example.com"), 0);
    ck_assert_uint_gt(auth_state_epoch(app.auth), before);
    ck_assert_int_eq(account_authenticate(&app, token, &who, &err), 0);
    ck_assert_int_eq(account_member_role(&app, &who, ORG), ROLE_NONE);
    ck_assert_str_eq(orgs_of("bob@example.com", buf, sizeof buf), "bob-example-com:owner");
}
END_TEST

/* ---- two threads invite at once ---------------------------------------------------- */

struct racer {
    const char *prefix;
    int ok;
};

static void *race_invites(void *arg)
{
    struct racer *r = arg;
    char body[128];
    int i;

    for (i = 0; i < 10; i++) {
        struct json_object *b, *out = NULL;
        struct am_error err;

        snprintf(body, sizeof body, "{\"email\":\"%s%d@example.com\"}", r->prefix, i);
        b = json_tokener_parse(body);
        error_clear(&err);
        if (members_invite(&app, ORG, "owner@example.com", b, &out, &err) == 0)
            r->ok++;
        json_object_put(out);
        json_object_put(b);
    }
    return NULL;
}

START_TEST(concurrent_invites_never_exceed_max_members)
{
    struct racer a = { "a", 0 }, b = { "b", 0 };
    pthread_t ta, tb;

    cfg.max_members = 6;
    login("owner@example.com", NULL, 0);
    ck_assert_int_eq(pthread_create(&ta, NULL, race_invites, &a), 0);
    ck_assert_int_eq(pthread_create(&tb, NULL, race_invites, &b), 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    ck_assert_int_eq(a.ok + b.ok, 5);
    ck_assert_int_eq(invites_under(ORG), 5);
}
END_TEST

/* ---- PATCH /orgs/{slug} -------------------------------------------------------- */

START_TEST(org_rename_answers_the_org_with_the_callers_role)
{
    struct json_object *b = J("{\"display_name\":\"Acme \\u00e9quipe\"}"), *out = NULL, *me = NULL;
    struct am_error err;

    login("owner@example.com", NULL, 0);
    error_clear(&err);
    ck_assert_int_eq(members_org_update(&app, ORG, "owner@example.com", b, &out, &err), 0);
    ck_assert_str_eq(str_of(out, "display_name"), "Acme \xc3\xa9quipe");
    ck_assert_str_eq(str_of(out, "role"), "owner");
    ck_assert_str_eq(str_of(out, "slug"), ORG);
    ck_assert_int_eq(account_org_me(&app, "owner@example.com", &me, &err), 0);
    ck_assert_str_eq(str_of(me, "display_name"), "Acme \xc3\xa9quipe");
    json_object_put(me);
    json_object_put(out);
    json_object_put(b);
}
END_TEST

static const char *const rename_cases[] = {
    "{}",
    "{\"display_name\":\"\"}",
    "{\"display_name\":\"a\\nb\"}",
    "{\"display_name\":\"a\\u0000b\"}",
    "{\"display_name\":\"a\\u0085b\"}",
    "{\"display_name\":12}",
    "{\"display_name\":null}",
    "{\"display_name\":\"ok\",\"plan\":\"pro\"}",
    "{\"display_name\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}",      /* 129 */
};

START_TEST(bad_rename_is_validation_error)
{
    struct json_object *b = J(rename_cases[_i]), *out = NULL;
    struct am_error err;

    login("owner@example.com", NULL, 0);
    error_clear(&err);
    ck_assert_int_eq(members_org_update(&app, ORG, "owner@example.com", b, &out, &err),
                     AM_EVALIDATION);
    ck_assert_ptr_null(out);
    ck_assert_int_ge(err.ndetails, 1);
    json_object_put(b);
}
END_TEST

START_TEST(rename_of_128_characters_is_accepted)
{
    char body[1024] = "{\"display_name\":\"";
    struct json_object *b, *out = NULL;
    struct am_error err;
    int i;

    for (i = 0; i < 128; i++)
        strcat(body, "\xc3\xa9");               /* two bytes, one character */
    strcat(body, "\"}");
    b = J(body);
    login("owner@example.com", NULL, 0);
    error_clear(&err);
    ck_assert_int_eq(members_org_update(&app, ORG, "owner@example.com", b, &out, &err), 0);
    json_object_put(out);
    json_object_put(b);
}
END_TEST

/* ---- runner ----------------------------------------------------------------- */

static Suite *members_suite(void)
{
    Suite *s = suite_create("members");
    TCase *inv = tcase_create("invite");
    TCase *acc = tcase_create("accept");
    TCase *rem = tcase_create("remove");
    TCase *race = tcase_create("race");
    TCase *org = tcase_create("org");
    TCase *all[] = { inv, acc, rem, race, org };
    int i;

    tcase_add_test(inv, invitation_is_stored_under_both_keys_and_listed_as_invited);
    tcase_add_test(inv, role_defaults_to_member);
    tcase_add_test(inv, invitations_stop_at_max_members_counting_pending);
    tcase_add_test(inv, member_or_invited_address_cannot_be_invited_again);
    tcase_add_loop_test(inv, bad_invitation_is_validation_error_naming_the_field, 0,
                        NCASES(invite_cases));
    tcase_add_test(acc, next_login_turns_invitations_into_memberships);
    tcase_add_test(acc, existing_user_accepts_at_next_login);
    tcase_add_test(rem, last_owner_cannot_be_removed);
    tcase_add_test(rem, admin_cannot_remove_an_owner);
    tcase_add_test(rem, unknown_or_bad_address_is_member_not_found);
    tcase_add_test(rem, removal_bumps_the_epoch_and_the_memo_forgets_the_role);
    tcase_add_test(race, concurrent_invites_never_exceed_max_members);
    tcase_add_test(org, org_rename_answers_the_org_with_the_callers_role);
    tcase_add_loop_test(org, bad_rename_is_validation_error, 0, NCASES(rename_cases));
    tcase_add_test(org, rename_of_128_characters_is_accepted);
    for (i = 0; i < NCASES(all); i++) {
        tcase_add_checked_fixture(all[i], setup, teardown);
        tcase_set_timeout(all[i], 60);
        suite_add_tcase(s, all[i]);
    }
    return s;
}

int main(void)
{
    SRunner *sr;
    int failed;

    if (auth_init() != 0)
        return EXIT_FAILURE;
    util_strlcpy(base, "/tmp/am-check-members-XXXXXX", sizeof base);
    if (mkdtemp(base) == NULL) {
        perror("mkdtemp");
        return EXIT_FAILURE;
    }
    sr = srunner_create(members_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
