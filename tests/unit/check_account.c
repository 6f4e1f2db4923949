/*
 * check_account.c - unit tests for account.c (users, orgs, memberships,
 * dev login, refresh-token families, the per-thread auth memo), run against
 * a real Berkeley DB environment (fresh mkdtemp directory per test) and a
 * real shared mapping for the auth epoch (auth_state.c).
 *
 * What is asserted: dev login creates the user and a personal org once and
 * the same org on every later login; the slug derived from the e-mail
 * (table) and a taken slug's suffix; roles; a refresh rotates the family,
 * a rotated refresh token presented again revokes the whole family, logout
 * revokes it; the memo answers without the database until the auth epoch
 * moves, and not after; each bad input gives its AM_* code (tables).
 */
#include <check.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <json-c/json.h>
#include "control/account.h"
#include "control/auth.h"
#include "state/app.h"
#include "state/config.h"
#include "control/auth_state.h"
#include "state/store.h"
#include "lib/key.h"
#include "lib/util.h"

#define NCASES(a) ((int)(sizeof(a) / sizeof((a)[0])))
#define SECRET "check-account-jwt-secret-0123456789abcdef"

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

/* The tokens and org of one login or refresh answer. */
struct tokens {
    char access[AUTH_TOKEN_MAX];
    char refresh[AUTH_TOKEN_MAX];
    char slug[64];
};

static void take_answer(struct json_object *out, struct tokens *t)
{
    ck_assert_ptr_nonnull(str_of(out, "access_token"));
    ck_assert_ptr_nonnull(str_of(out, "refresh_token"));
    ck_assert_str_eq(str_of(out, "token_type"), "bearer");
    util_strlcpy(t->access, str_of(out, "access_token"), sizeof t->access);
    util_strlcpy(t->refresh, str_of(out, "refresh_token"), sizeof t->refresh);
    util_strlcpy(t->slug, str_of(out, "org_slug"), sizeof t->slug);
    json_object_put(out);
}

static void login(const char *email, struct tokens *t)
{
    char body[512];
    struct json_object *b, *out = NULL;
    struct am_error err;

    snprintf(body, sizeof body, "{\"email\":\"%s\"}", email);
    b = J(body);
    error_clear(&err);
    ck_assert_msg(account_dev_login(&app, b, &out, &err) == 0, "%s: %s", email, err.message);
    json_object_put(b);
    take_answer(out, t);
}

/* account_refresh with token; on 0 fills next (if given). */
static int refresh(const char *token, struct tokens *next)
{
    char body[AUTH_TOKEN_MAX + 64];
    struct json_object *b, *out = NULL;
    struct am_error err;
    int rc;

    snprintf(body, sizeof body, "{\"refresh_token\":\"%s\"}", token);
    b = J(body);
    error_clear(&err);
    rc = account_refresh(&app, b, &out, &err);
    json_object_put(b);
    if (rc == 0 && next != NULL)
        take_answer(out, next);
    else
        json_object_put(out);
    if (rc != 0)
        ck_assert_ptr_null(out);
    return rc;
}

static int authenticate(const char *token, struct account_principal *who)
{
    struct am_error err;

    error_clear(&err);
    return account_authenticate(&app, token, who, &err);
}

static void family_of(const char *token, char *fam, size_t cap)
{
    struct auth_claims c;
    struct am_error err;

    error_clear(&err);
    ck_assert_int_eq(auth_jwt_verify(SECRET, token, util_now(), &c, &err), 0);
    util_strlcpy(fam, c.fam, cap);
}

/* ---- dev login -------------------------------------------------------------- */

START_TEST(dev_login_creates_user_and_personal_org_once)
{
    struct tokens a, b;
    struct json_object *list = NULL, *orgs;
    struct am_error err;

    ck_assert(!account_user_exists(&app, "dev@example.com"));
    login("dev@example.com", &a);
    ck_assert_str_eq(a.slug, "dev-example-com");
    ck_assert(account_user_exists(&app, "dev@example.com"));
    ck_assert_int_eq(account_role(&app, "dev-example-com", "dev@example.com"), ROLE_OWNER);
    login("DEV@Example.com", &b);                      /* e-mails are case-blind */
    ck_assert_str_eq(b.slug, "dev-example-com");
    error_clear(&err);
    ck_assert_int_eq(account_org_list(&app, "dev@example.com", &list, &err), 0);
    json_object_object_get_ex(list, "orgs", &orgs);
    ck_assert_int_eq((int)json_object_array_length(orgs), 1);
    ck_assert_str_eq(str_of(json_object_array_get_idx(orgs, 0), "role"), "owner");
    json_object_put(list);
}
END_TEST

static const struct {
    const char *email;
    const char *slug;
} slug_cases[] = {
    { "dev@example.com", "dev-example-com" },
    { "Jane.Doe+tag@Example.COM", "jane-doe-tag-example-com" },
    { "--x__y@a.b", "x-y-a-b" },
    { "\xc3\xa9t\xc3\xa9@caf\xc3\xa9.fr", "t-caf-fr" },
    { "a@b.c", "a-b-c" },
    { "very.long.name.for.a.mailbox.that.goes.on@example-domain.org",
      "very-long-name-for-a-mailbox-that-goes-o" },
    { "abcdefghijklmnopqrstuvwxyz0123456789abc@x.y",   /* cut at 40 ends in '-' */
      "abcdefghijklmnopqrstuvwxyz0123456789abc" },
};

START_TEST(slug_is_derived_from_the_email)
{
    struct tokens t;

    login(slug_cases[_i].email, &t);
    ck_assert_msg(strcmp(t.slug, slug_cases[_i].slug) == 0, "%s -> %s", slug_cases[_i].email,
                  t.slug);
}
END_TEST

START_TEST(taken_slug_gets_a_numeric_suffix)
{
    struct tokens a, b, c;

    login("a.b@c.d", &a);
    login("a-b@c.d", &b);
    login("a_b@c.d", &c);
    ck_assert_str_eq(a.slug, "a-b-c-d");
    ck_assert_str_eq(b.slug, "a-b-c-d-2");
    ck_assert_str_eq(c.slug, "a-b-c-d-3");
    ck_assert_int_eq(account_role(&app, "a-b-c-d-2", "a-b@c.d"), ROLE_OWNER);
    ck_assert_int_eq(account_role(&app, "a-b-c-d-2", "a.b@c.d"), ROLE_NONE);
}
END_TEST

/* ---- roles -------------------------------------------------------------------- */

static void put_member(const char *org, const char *email, const char *role)
{
    char key[320], val[128];
    size_t klen = key_pair(key, sizeof key, org, email);

    snprintf(val, sizeof val, "{\"role\":\"%s\",\"joined_at\":1}", role);
    ck_assert_int_eq(store_put(app.store, NULL, STORE_MEMBERS, key, klen, val, strlen(val)), 0);
}

static const struct {
    const char *stored;     /* NULL: no membership record */
    int role;
} role_cases[] = {
    { "owner", ROLE_OWNER },
    { "admin", ROLE_ADMIN },
    { "member", ROLE_MEMBER },
    { "none", ROLE_NONE },
    { "superuser", ROLE_NONE },
    { "", ROLE_NONE },
    { NULL, ROLE_NONE },
};

START_TEST(role_is_read_from_the_membership_record)
{
    struct tokens t;

    login("owner@example.com", &t);
    if (role_cases[_i].stored != NULL)
        put_member(t.slug, "guest@example.com", role_cases[_i].stored);
    ck_assert_int_eq(account_role(&app, t.slug, "guest@example.com"), role_cases[_i].role);
}
END_TEST

START_TEST(role_in_unknown_org_is_none_like_a_non_member)
{
    struct tokens t;

    login("owner@example.com", &t);
    ck_assert_int_eq(account_role(&app, "no-such-org", "owner@example.com"), ROLE_NONE);
    ck_assert_int_eq(account_role(&app, t.slug, "stranger@example.com"), ROLE_NONE);
}
END_TEST

/* ---- refresh-token families ----------------------------------------------- */

START_TEST(refresh_rotates_within_the_family)
{
    struct tokens t, n1, n2;
    struct account_principal who;
    char fam0[48], fam1[48];

    login("r@example.com", &t);
    ck_assert_int_eq(refresh(t.refresh, &n1), 0);
    ck_assert_str_ne(n1.refresh, t.refresh);
    ck_assert_str_eq(n1.slug, t.slug);
    family_of(t.refresh, fam0, sizeof fam0);
    family_of(n1.refresh, fam1, sizeof fam1);
    ck_assert_str_eq(fam0, fam1);
    ck_assert_int_eq(refresh(n1.refresh, &n2), 0);
    ck_assert_int_eq(authenticate(n2.access, &who), 0);
    ck_assert_str_eq(who.email, "r@example.com");
    ck_assert_str_eq(who.fam, fam0);
    ck_assert(account_token_live(&app, fam0));
}
END_TEST

START_TEST(reuse_of_a_rotated_refresh_token_revokes_the_family)
{
    struct tokens t, n1, other;
    struct account_principal who;
    char fam[48];

    login("r@example.com", &t);
    login("r@example.com", &other);                 /* a second session, its own family */
    ck_assert_int_eq(refresh(t.refresh, &n1), 0);
    ck_assert_int_eq(refresh(t.refresh, NULL), AM_EUNAUTH);      /* the reuse */
    family_of(t.refresh, fam, sizeof fam);
    ck_assert(!account_token_live(&app, fam));
    ck_assert_int_eq(refresh(n1.refresh, NULL), AM_EUNAUTH);     /* the current one too */
    ck_assert_int_eq(authenticate(n1.access, &who), AM_EUNAUTH);
    ck_assert_int_eq(authenticate(t.access, &who), AM_EUNAUTH);
    ck_assert_int_eq(authenticate(other.access, &who), 0);       /* other family untouched */
    ck_assert_int_eq(refresh(other.refresh, NULL), 0);
}
END_TEST

START_TEST(logout_revokes_access_and_refresh_of_the_family)
{
    struct tokens t;
    struct account_principal who;
    struct am_error err;

    login("out@example.com", &t);
    ck_assert_int_eq(authenticate(t.access, &who), 0);
    error_clear(&err);
    ck_assert_int_eq(account_logout(&app, who.email, who.fam, &err), 0);
    ck_assert(!account_token_live(&app, who.fam));
    ck_assert_int_eq(authenticate(t.access, &who), AM_EUNAUTH);
    ck_assert_int_eq(refresh(t.refresh, NULL), AM_EUNAUTH);
}
END_TEST

START_TEST(unknown_or_empty_family_is_not_live)
{
    ck_assert(!account_token_live(&app, ""));
    ck_assert(!account_token_live(&app, "0123456789abcdef"));
}
END_TEST

/* ---- the per-thread memo ---------------------------------------------------- */

/* Revoke fam in the store behind account.c's back: no epoch bump. */
static void revoke_quietly(const char *fam)
{
    char key[64];
    const char val[] = "{\"sub\":\"x\",\"current\":\"\",\"revoked\":true}";

    snprintf(key, sizeof key, "fam:%s", fam);
    ck_assert_int_eq(store_put(app.store, NULL, STORE_TOKENS, key, strlen(key), val,
                               strlen(val)), 0);
}

START_TEST(memo_answers_until_the_auth_epoch_moves)
{
    struct tokens t;
    struct account_principal who;

    login("memo@example.com", &t);
    ck_assert_int_eq(authenticate(t.access, &who), 0);
    ck_assert_int_ge(who.memo, 0);
    revoke_quietly(who.fam);
    /* the memo still vouches for the token: no database read was made */
    ck_assert_int_eq(authenticate(t.access, &who), 0);
    auth_state_bump(app.auth);
    ck_assert_int_eq(authenticate(t.access, &who), AM_EUNAUTH);
}
END_TEST

START_TEST(logout_invalidates_the_memo_of_this_thread)
{
    struct tokens t;
    struct account_principal who;
    struct am_error err;
    char fam[48];

    login("memo@example.com", &t);
    ck_assert_int_eq(authenticate(t.access, &who), 0);
    ck_assert_int_eq(authenticate(t.access, &who), 0);       /* now from the memo */
    util_strlcpy(fam, who.fam, sizeof fam);
    error_clear(&err);
    ck_assert_int_eq(account_logout(&app, who.email, fam, &err), 0);
    ck_assert_int_eq(authenticate(t.access, &who), AM_EUNAUTH);
}
END_TEST

START_TEST(memoised_role_follows_a_membership_change_after_the_epoch_moves)
{
    struct tokens owner, guest;
    struct account_principal who;

    login("owner@example.com", &owner);
    login("guest@example.com", &guest);
    ck_assert_int_eq(authenticate(guest.access, &who), 0);
    ck_assert_int_eq(account_member_role(&app, &who, owner.slug), ROLE_NONE);
    put_member(owner.slug, "guest@example.com", "admin");
    ck_assert_int_eq(account_member_role(&app, &who, owner.slug), ROLE_NONE);  /* memo */
    auth_state_bump(app.auth);
    ck_assert_int_eq(authenticate(guest.access, &who), 0);
    ck_assert_int_eq(account_member_role(&app, &who, owner.slug), ROLE_ADMIN);
}
END_TEST

/* ---- bad input ------------------------------------------------------------- */

static const struct {
    const char *body;
    const char *field;      /* the detail expected */
} login_cases[] = {
    { "{}", "email" },
    { "{\"email\":42}", "email" },
    { "{\"email\":null}", "email" },
    { "{\"email\":\"no-at-sign\"}", "email" },
    { "{\"email\":\"@example.com\"}", "email" },
    { "{\"email\":\"dev@\"}", "email" },
    { "{\"email\":\"a@b@c\"}", "email" },
    { "{\"email\":\"sp ace@example.com\"}", "email" },
    { "{\"email\":\"ab\"}", "email" },
    { "{\"email\":\"dev@example.com\",\"name\":\"\"}", "name" },
    { "{\"email\":\"dev@example.com\",\"name\":7}", "name" },
    { "{\"email\":\"dev@example.com\",\"role\":\"owner\"}", "role" },
};

START_TEST(bad_login_body_is_validation_error_naming_the_field)
{
    struct json_object *b = J(login_cases[_i].body), *out = (struct json_object *)&b;
    struct am_error err;
    int i, found = 0;

    error_clear(&err);
    ck_assert_int_eq(account_dev_login(&app, b, &out, &err), AM_EVALIDATION);
    ck_assert_int_eq(err.code, AM_EVALIDATION);
    ck_assert_ptr_null(out);
    for (i = 0; i < err.ndetails; i++)
        found |= strcmp(err.details[i].field, login_cases[_i].field) == 0;
    ck_assert_msg(found, "%s: no detail for %s", login_cases[_i].body, login_cases[_i].field);
    ck_assert(!account_user_exists(&app, "dev@example.com"));
    json_object_put(b);
}
END_TEST

START_TEST(login_name_over_128_bytes_is_validation_error)
{
    char body[400], name[130];
    struct json_object *b, *out = NULL;
    struct am_error err;

    memset(name, 'n', 129);
    name[129] = '\0';
    snprintf(body, sizeof body, "{\"email\":\"dev@example.com\",\"name\":\"%s\"}", name);
    b = J(body);
    error_clear(&err);
    ck_assert_int_eq(account_dev_login(&app, b, &out, &err), AM_EVALIDATION);
    ck_assert_str_eq(err.details[0].field, "name");
    json_object_put(b);
    name[128] = '\0';
    snprintf(body, sizeof body, "{\"email\":\"dev@example.com\",\"name\":\"%s\"}", name);
    b = J(body);
    error_clear(&err);
    ck_assert_int_eq(account_dev_login(&app, b, &out, &err), 0);
    json_object_put(out);
    json_object_put(b);
}
END_TEST

static const struct {
    const char *body;
    int code;
} refresh_cases[] = {
    { "{}", AM_EVALIDATION },
    { "{\"refresh_token\":7}", AM_EVALIDATION },
    { "{\"refresh_token\":\"x\",\"extra\":1}", AM_EVALIDATION },
    { "{\"refresh_token\":\"not.a.jwt\"}", AM_EUNAUTH },
    { "{\"refresh_token\":\"\"}", AM_EUNAUTH },
};

START_TEST(bad_refresh_body_gives_its_code)
{
    struct json_object *b = J(refresh_cases[_i].body), *out = (struct json_object *)&b;
    struct am_error err;

    error_clear(&err);
    ck_assert_int_eq(account_refresh(&app, b, &out, &err), refresh_cases[_i].code);
    ck_assert_ptr_null(out);
    json_object_put(b);
}
END_TEST

START_TEST(access_token_is_not_a_refresh_token_and_back)
{
    struct tokens t;
    struct account_principal who;

    login("t@example.com", &t);
    ck_assert_int_eq(refresh(t.access, NULL), AM_EUNAUTH);
    ck_assert_int_eq(authenticate(t.refresh, &who), AM_EUNAUTH);
    ck_assert_int_eq(authenticate("garbage", &who), AM_EUNAUTH);
    ck_assert_int_eq(authenticate(t.access, &who), 0);
}
END_TEST

START_TEST(token_signed_with_another_secret_is_unauthorized)
{
    struct tokens t;
    struct account_principal who;

    login("t@example.com", &t);
    util_strlcpy(cfg.jwt_secret, "another-secret-0123456789abcdef-0123456789", sizeof cfg.jwt_secret);
    ck_assert_int_eq(authenticate(t.access, &who), AM_EUNAUTH);
    ck_assert_int_eq(refresh(t.refresh, NULL), AM_EUNAUTH);
}
END_TEST

START_TEST(orgs_of_unknown_user_are_unauthorized)
{
    struct json_object *out = (struct json_object *)&out;
    struct am_error err;

    error_clear(&err);
    ck_assert_int_eq(account_org_list(&app, "ghost@example.com", &out, &err), AM_EUNAUTH);
    ck_assert_ptr_null(out);
    error_clear(&err);
    ck_assert_int_eq(account_org_me(&app, "ghost@example.com", &out, &err), AM_EUNAUTH);
    ck_assert_ptr_null(out);
}
END_TEST

/* ---- runner ----------------------------------------------------------------- */

static Suite *account_suite(void)
{
    Suite *s = suite_create("account");
    TCase *dev = tcase_create("dev_login");
    TCase *roles = tcase_create("roles");
    TCase *fam = tcase_create("families");
    TCase *memo = tcase_create("memo");
    TCase *bad = tcase_create("bad_input");
    TCase *all[] = { dev, roles, fam, memo, bad };
    int i;

    tcase_add_test(dev, dev_login_creates_user_and_personal_org_once);
    tcase_add_loop_test(dev, slug_is_derived_from_the_email, 0, NCASES(slug_cases));
    tcase_add_test(dev, taken_slug_gets_a_numeric_suffix);
    tcase_add_loop_test(roles, role_is_read_from_the_membership_record, 0, NCASES(role_cases));
    tcase_add_test(roles, role_in_unknown_org_is_none_like_a_non_member);
    tcase_add_test(fam, refresh_rotates_within_the_family);
    tcase_add_test(fam, reuse_of_a_rotated_refresh_token_revokes_the_family);
    tcase_add_test(fam, logout_revokes_access_and_refresh_of_the_family);
    tcase_add_test(fam, unknown_or_empty_family_is_not_live);
    tcase_add_test(memo, memo_answers_until_the_auth_epoch_moves);
    tcase_add_test(memo, logout_invalidates_the_memo_of_this_thread);
    tcase_add_test(memo, memoised_role_follows_a_membership_change_after_the_epoch_moves);
    tcase_add_loop_test(bad, bad_login_body_is_validation_error_naming_the_field, 0,
                        NCASES(login_cases));
    tcase_add_test(bad, login_name_over_128_bytes_is_validation_error);
    tcase_add_loop_test(bad, bad_refresh_body_gives_its_code, 0, NCASES(refresh_cases));
    tcase_add_test(bad, access_token_is_not_a_refresh_token_and_back);
    tcase_add_test(bad, token_signed_with_another_secret_is_unauthorized);
    tcase_add_test(bad, orgs_of_unknown_user_are_unauthorized);
    for (i = 0; i < NCASES(all); i++) {
        tcase_add_checked_fixture(all[i], setup, teardown);
        tcase_set_timeout(all[i], 60);
        suite_add_tcase(s, all[i]);
    }
    return s;
}

static void remove_leftovers(void)
{
    nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int main(void)
{
    SRunner *sr;
    int failed;

    if (auth_init() != 0)
        return EXIT_FAILURE;
    util_strlcpy(base, "/tmp/am-check-account-XXXXXX", sizeof base);
    if (mkdtemp(base) == NULL) {
        perror("mkdtemp");
        return EXIT_FAILURE;
    }
    sr = srunner_create(account_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    remove_leftovers();
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
