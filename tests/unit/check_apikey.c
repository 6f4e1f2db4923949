/*
 * check_apikey.c - unit tests for apikey.c (API keys: create, list, delete,
 * authentication, the per-thread memo, last_used_at), against a real
 * Berkeley DB environment (fresh mkdtemp directory per test), a real shared
 * auth epoch (auth_state.c) and a real master key file (vault.c).
 *
 * What is asserted: a secret's shape, and that secrets and ids do not
 * repeat; no stored record holds the secret (the raw records are read);
 * a key is found by its hash, and not at all under another master key;
 * the scopes table and the create body's validation table; delete, also of
 * another org's id; the memo answers without the database until the auth
 * epoch moves; 100 uses from several threads write last_used_at once.
 */
#include <check.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <json-c/json.h>
#include "control/apikey.h"
#include "control/auth.h"
#include "control/auth_state.h"
#include "state/app.h"
#include "state/config.h"
#include "state/store.h"
#include "state/vault.h"
#include "lib/util.h"

#define NCASES(a) ((int)(sizeof(a) / sizeof((a)[0])))

static char base[64];
static char home[96];
static struct config cfg;
static struct app app;
static struct vault *vault;

/* ---- fixture ------------------------------------------------------------- */

/* A master key file of 32 bytes of fill under base; returns its vault. */
static struct vault *vault_of(int fill)
{
    char path[128];
    unsigned char k[VAULT_KEY_BYTES];
    struct vault *v = NULL;
    struct am_error err;
    int fd;

    snprintf(path, sizeof path, "%s/master-%d.key", home, fill);
    memset(k, fill, sizeof k);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, k, sizeof k), (ssize_t)sizeof k);
    close(fd);
    error_clear(&err);
    ck_assert_msg(vault_open(&v, path, &err) == 0, "%s", err.message);
    return v;
}

static void put_org(const char *slug)
{
    const char val[] = "{\"slug\":\"x\"}";

    ck_assert_int_eq(store_put(app.store, NULL, STORE_ORGS, slug, strlen(slug), val,
                               strlen(val)), 0);
}

static void setup(void)
{
    struct store_options o = { home, 8, 1, 64, 0, NULL };
    struct am_error err;

    snprintf(home, sizeof home, "%s/env-XXXXXX", base);
    ck_assert_ptr_nonnull(mkdtemp(home));
    config_defaults(&cfg);
    memset(&app, 0, sizeof app);
    app.cfg = &cfg;
    error_clear(&err);
    ck_assert_msg(store_open(&app.store, &o, STORE_OPEN_CREATE, &err) == 0, "%s", err.message);
    ck_assert_msg(auth_state_create(&app.auth, &err) == 0, "%s", err.message);
    vault = vault_of(7);
    app.vault = vault;
    put_org("acme");
    put_org("globex");
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb; (void)flag; (void)ftw;
    return remove(path);
}

static void teardown(void)
{
    vault_close(vault);
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

struct made {
    char id[32];
    char secret[64];
};

/* Create a key in org with body text; assert success; fill m. */
static void make_key(const char *org, const char *body, struct made *m)
{
    struct json_object *b = J(body), *out = NULL;
    struct am_error err;

    error_clear(&err);
    ck_assert_msg(apikey_create(&app, org, "owner@example.com", b, &out, &err) == 0, "%s: %s",
                  body, err.message);
    json_object_put(b);
    util_strlcpy(m->id, str_of(out, "id"), sizeof m->id);
    util_strlcpy(m->secret, str_of(out, "secret"), sizeof m->secret);
    json_object_put(out);
}

static int authn(const char *secret, struct account_principal *who)
{
    struct am_error err;

    error_clear(&err);
    return apikey_authenticate(&app, secret, who, &err);
}

struct raw_scan {
    const char *needle;         /* must not occur */
    int records, found;
};

static int contains(const char *hay, size_t n, const char *needle, size_t m)
{
    size_t i;

    for (i = 0; i + m <= n; i++)
        if (memcmp(hay + i, needle, m) == 0)
            return 1;
    return 0;
}

static int raw_one(const char *key, size_t klen, const char *val, size_t vlen, void *arg)
{
    struct raw_scan *r = arg;
    size_t n = strlen(r->needle);

    r->records++;
    if (contains(key, klen, r->needle, n) || contains(val, vlen, r->needle, n))
        r->found++;
    return 0;
}

/* Rewrite the "h" record of the only key of the store behind apikey.c's
 * back (no epoch bump): last_used_at = when, or delete it when when < 0. */
static int find_h(const char *key, size_t klen, const char *val, size_t vlen, void *arg)
{
    char *hk = arg;

    (void)val; (void)vlen;
    ck_assert_int_lt((int)klen, 128);
    memcpy(hk, key, klen);
    hk[klen] = '\0';
    return 1;
}

static void rewrite_record(int64_t when)
{
    char hk[128], *val = NULL;
    size_t klen;
    struct json_object *rec;
    const char *s;

    memset(hk, 0, sizeof hk);
    ck_assert_int_eq(store_scan(app.store, NULL, STORE_APIKEYS, "h", 2, find_h, hk), 0);
    ck_assert_int_eq(hk[0], 'h');
    klen = 2 + strlen(hk + 2);
    if (when < 0) {
        ck_assert_int_eq(store_del(app.store, NULL, STORE_APIKEYS, hk, klen), 0);
        return;
    }
    ck_assert_int_eq(store_get(app.store, NULL, STORE_APIKEYS, hk, klen, 0, &val, NULL), 0);
    rec = J(val);
    free(val);
    json_object_object_add(rec, "last_used_at", json_object_new_int64(when));
    s = json_object_to_json_string(rec);
    ck_assert_int_eq(store_put(app.store, NULL, STORE_APIKEYS, hk, klen, s, strlen(s)), 0);
    json_object_put(rec);
}

/* ---- generation ------------------------------------------------------------- */

START_TEST(secrets_have_their_shape_and_never_repeat)
{
    struct made m[20];
    regex_t re;
    int i, j;

    ck_assert_int_eq(regcomp(&re, "^ask-[A-Za-z0-9_-]{43}$", REG_EXTENDED | REG_NOSUB), 0);
    for (i = 0; i < NCASES(m); i++) {
        make_key("acme", "{\"name\":\"k\"}", &m[i]);
        ck_assert_msg(regexec(&re, m[i].secret, 0, NULL, 0) == 0, "%s", m[i].secret);
        ck_assert_int_eq((int)strlen(m[i].id), APIKEY_ID_LEN);
        ck_assert(strncmp(m[i].id, "key_", 4) == 0);
        for (j = 0; j < i; j++) {
            ck_assert_str_ne(m[i].secret, m[j].secret);
            ck_assert_str_ne(m[i].id, m[j].id);
        }
    }
    regfree(&re);
}
END_TEST

START_TEST(stored_records_hold_no_secret)
{
    struct made m;
    struct raw_scan whole = { NULL, 0, 0 }, tail = { NULL, 0, 0 };

    make_key("acme", "{\"name\":\"k\",\"scopes\":[\"run\",\"manage\"]}", &m);
    whole.needle = m.secret;
    tail.needle = m.secret + APIKEY_SHOWN_PREFIX;     /* what is not shown */
    ck_assert_int_eq(store_scan(app.store, NULL, STORE_APIKEYS, "", 0, raw_one, &whole), 0);
    ck_assert_int_eq(store_scan(app.store, NULL, STORE_APIKEYS, "", 0, raw_one, &tail), 0);
    ck_assert_int_eq(whole.records, 2);               /* "h" record and "o" index */
    ck_assert_int_eq(whole.found, 0);
    ck_assert_int_eq(tail.found, 0);
}
END_TEST

/* ---- authentication --------------------------------------------------------- */

START_TEST(key_is_found_by_its_hash_with_its_org_and_scopes)
{
    struct made run, both;
    struct account_principal who;

    make_key("acme", "{\"name\":\"r\"}", &run);
    make_key("globex", "{\"name\":\"b\",\"scopes\":[\"manage\",\"run\"]}", &both);
    ck_assert_int_eq(authn(run.secret, &who), 0);
    ck_assert_int_eq(who.kind, PRINCIPAL_KEY);
    ck_assert_str_eq(who.org, "acme");
    ck_assert_str_eq(who.key_id, run.id);
    ck_assert_int_eq(who.scopes, SCOPE_RUN);
    ck_assert_str_eq(who.email, "");
    ck_assert_int_eq(authn(both.secret, &who), 0);
    ck_assert_str_eq(who.org, "globex");
    ck_assert_int_eq(who.scopes, SCOPE_RUN | SCOPE_MANAGE);
}
END_TEST

static const char *const bad_secrets[] = {
    "", "ask-", "junk", "ASK-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "ask-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",          /* 42 */
    "ask-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",        /* 44 */
    "ask-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",         /* padding */
    "ask-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA+",         /* not URL-safe */
    "ask-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",         /* well formed, unknown */
};

START_TEST(malformed_or_unknown_secret_is_unauthorized_without_echoing_it)
{
    struct account_principal who;
    struct am_error err;
    struct made m;

    make_key("acme", "{\"name\":\"k\"}", &m);
    error_clear(&err);
    ck_assert_int_eq(apikey_authenticate(&app, bad_secrets[_i], &who, &err), AM_EUNAUTH);
    ck_assert_str_eq(err.message, "Invalid API key");
}
END_TEST

START_TEST(another_master_key_finds_no_key)
{
    struct made m;
    struct account_principal who;
    struct vault *other = vault_of(9);

    make_key("acme", "{\"name\":\"k\"}", &m);
    app.vault = other;
    ck_assert_int_eq(authn(m.secret, &who), AM_EUNAUTH);
    app.vault = vault;
    ck_assert_int_eq(authn(m.secret, &who), 0);
    app.vault = NULL;
    ck_assert_int_eq(authn(m.secret, &who), AM_EUNAUTH);
    app.vault = vault;
    vault_close(other);
}
END_TEST

START_TEST(deleted_key_is_refused_and_its_id_is_gone)
{
    struct made a, b;
    struct account_principal who;
    struct am_error err;
    struct json_object *out = NULL;

    make_key("acme", "{\"name\":\"a\"}", &a);
    make_key("globex", "{\"name\":\"b\"}", &b);
    ck_assert_int_eq(authn(a.secret, &who), 0);           /* in the memo now */
    error_clear(&err);
    /* another org's id, however real, is not found here */
    ck_assert_int_eq(apikey_delete(&app, "acme", b.id, &err), AM_EKEYNOTFOUND);
    ck_assert_int_eq(authn(b.secret, &who), 0);
    ck_assert_int_eq(apikey_delete(&app, "acme", a.id, &err), 0);
    ck_assert_int_eq(authn(a.secret, &who), AM_EUNAUTH);
    ck_assert_int_eq(apikey_delete(&app, "acme", a.id, &err), AM_EKEYNOTFOUND);
    ck_assert_int_eq(apikey_delete(&app, "acme", "key_zzzzzzzzzzzz", &err), AM_EKEYNOTFOUND);
    ck_assert_int_eq(apikey_list(&app, "acme", &out, &err), 0);
    ck_assert_int_eq(json_object_array_length(json_object_object_get(out, "keys")), 0);
    json_object_put(out);
}
END_TEST

START_TEST(memo_answers_until_the_auth_epoch_moves)
{
    struct made m;
    struct account_principal who;

    make_key("acme", "{\"name\":\"k\"}", &m);
    ck_assert_int_eq(authn(m.secret, &who), 0);
    rewrite_record(-1);          /* the record goes, quietly: no epoch bump */
    /* the memo still vouches for the key: no database read was made */
    ck_assert_int_eq(authn(m.secret, &who), 0);
    ck_assert_str_eq(who.key_id, m.id);
    auth_state_bump(app.auth);
    ck_assert_int_eq(authn(m.secret, &who), AM_EUNAUTH);
}
END_TEST

/* ---- last_used_at ----------------------------------------------------------- */

struct hammer {
    const char *secret;
    int failures;
};

static void *hammer_25(void *arg)
{
    struct hammer *h = arg;
    struct account_principal who;
    int i;

    for (i = 0; i < 25; i++)
        if (authn(h->secret, &who) != 0)
            __atomic_fetch_add(&h->failures, 1, __ATOMIC_RELAXED);
    return NULL;
}

START_TEST(hundred_uses_from_four_threads_write_last_used_once)
{
    struct made m;
    struct hammer h;
    pthread_t th[4];
    unsigned long before;
    int i;

    make_key("acme", "{\"name\":\"k\"}", &m);
    h.secret = m.secret;
    h.failures = 0;
    before = apikey_test_touch_count();
    for (i = 0; i < 4; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, hammer_25, &h), 0);
    for (i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    ck_assert_int_eq(h.failures, 0);
    ck_assert_int_eq(apikey_test_touch_count() - before, 1);
}
END_TEST

START_TEST(last_used_is_written_again_only_after_a_minute)
{
    struct made m;
    struct account_principal who;
    unsigned long before;

    make_key("acme", "{\"name\":\"k\"}", &m);
    before = apikey_test_touch_count();
    ck_assert_int_eq(authn(m.secret, &who), 0);
    ck_assert_int_eq(apikey_test_touch_count() - before, 1);
    /* 59 s ago: not due, whether from the memo or from the record */
    rewrite_record(util_now() - 59);
    ck_assert_int_eq(authn(m.secret, &who), 0);
    auth_state_bump(app.auth);
    ck_assert_int_eq(authn(m.secret, &who), 0);
    ck_assert_int_eq(apikey_test_touch_count() - before, 1);
    /* 61 s ago, read afresh: due, written once */
    rewrite_record(util_now() - 61);
    auth_state_bump(app.auth);
    ck_assert_int_eq(authn(m.secret, &who), 0);
    ck_assert_int_eq(authn(m.secret, &who), 0);
    ck_assert_int_eq(apikey_test_touch_count() - before, 2);
}
END_TEST

START_TEST(list_shows_last_use_and_never_a_secret)
{
    struct made m;
    struct account_principal who;
    struct am_error err;
    struct json_object *out = NULL, *k;
    const char *text;

    make_key("acme", "{\"name\":\"k\"}", &m);
    error_clear(&err);
    ck_assert_int_eq(apikey_list(&app, "acme", &out, &err), 0);
    k = json_object_array_get_idx(json_object_object_get(out, "keys"), 0);
    ck_assert_int_eq(json_object_object_length(k), 6);
    ck_assert(json_object_object_get_ex(k, "last_used_at", NULL));
    ck_assert_ptr_null(json_object_object_get(k, "last_used_at"));
    ck_assert_str_eq(str_of(k, "id"), m.id);
    text = json_object_to_json_string(out);
    ck_assert_ptr_null(strstr(text, m.secret + APIKEY_SHOWN_PREFIX));
    json_object_put(out);
    ck_assert_int_eq(authn(m.secret, &who), 0);
    ck_assert_int_eq(apikey_list(&app, "acme", &out, &err), 0);
    k = json_object_array_get_idx(json_object_object_get(out, "keys"), 0);
    ck_assert_ptr_nonnull(str_of(k, "last_used_at"));
    json_object_put(out);
    ck_assert_int_eq(apikey_list(&app, "globex", &out, &err), 0);
    ck_assert_int_eq(json_object_array_length(json_object_object_get(out, "keys")), 0);
    json_object_put(out);
}
END_TEST

/* ---- scopes and bodies ------------------------------------------------------ */

static const struct {
    const char *json;           /* the "scopes" value; NULL = absent */
    int bits;                   /* -1 = refused */
} scope_cases[] = {
    { NULL, SCOPE_RUN },
    { "null", SCOPE_RUN },
    { "[\"run\"]", SCOPE_RUN },
    { "[\"manage\"]", SCOPE_MANAGE },
    { "[\"run\",\"manage\"]", SCOPE_RUN | SCOPE_MANAGE },
    { "[\"manage\",\"run\"]", SCOPE_RUN | SCOPE_MANAGE },
    { "[]", -1 },
    { "[\"run\",\"run\"]", -1 },
    { "[\"admin\"]", -1 },
    { "[\"Run\"]", -1 },
    { "[\"run\\u0000\"]", -1 },
    { "[1]", -1 },
    { "[null]", -1 },
    { "\"run\"", -1 },
    { "{}", -1 },
    { "true", -1 },
};

START_TEST(scopes_parse_table)
{
    const char *text = scope_cases[_i].json;
    /* JSON null is NULL in json-c, like an absent member */
    struct json_object *v = text && strcmp(text, "null") != 0 ? J(text) : NULL;
    const char *problem = NULL;
    int bits = apikey_scopes_parse(v, &problem);

    ck_assert_msg(bits == scope_cases[_i].bits, "%s: %d", scope_cases[_i].json, bits);
    if (bits < 0)
        ck_assert_ptr_nonnull(problem);
    json_object_put(v);
}
END_TEST

static const struct {
    const char *body;
    const char *field;
} body_cases[] = {
    { "{}", "name" },
    { "{\"name\":\"\"}", "name" },
    { "{\"name\":\"   \"}", "name" },
    { "{\"name\":7}", "name" },
    { "{\"name\":null}", "name" },
    { "{\"name\":\"a\\nb\"}", "name" },
    { "{\"name\":\"a\\u0000b\"}", "name" },
    { "{\"name\":\"a\\u007fb\"}", "name" },
    { "{\"name\":\"a\\u0085b\"}", "name" },
    { "{\"name\":\"0123456789012345678901234567890123456789012345678901234567890123x\"}", "name" },
    { "{\"name\":\"k\",\"scopes\":[]}", "scopes" },
    { "{\"name\":\"k\",\"scopes\":[\"owner\"]}", "scopes" },
    { "{\"name\":\"k\",\"id\":\"key_000000000000\"}", "id" },
    { "{\"name\":\"k\",\"secret\":\"ask-x\"}", "secret" },
};

START_TEST(bad_create_body_is_validation_error_naming_the_field)
{
    struct json_object *b = J(body_cases[_i].body), *out = (void *)1;
    struct am_error err;
    int i, named = 0;

    error_clear(&err);
    ck_assert_int_eq(apikey_create(&app, "acme", "o@example.com", b, &out, &err), AM_EVALIDATION);
    ck_assert_ptr_null(out);
    for (i = 0; i < err.ndetails; i++)
        named |= strcmp(err.details[i].field, body_cases[_i].field) == 0;
    ck_assert_msg(named, "%s: %s not named", body_cases[_i].body, body_cases[_i].field);
    json_object_put(b);
}
END_TEST

START_TEST(name_of_64_characters_is_fine_in_any_script)
{
    struct made m;
    char body[512];
    size_t n = 9;
    int i;

    memcpy(body, "{\"name\":\"", n);
    for (i = 0; i < 64; i++, n += 2)
        memcpy(body + n, "\xc3\xa9", 2);                /* é: 2 bytes, 1 character */
    memcpy(body + n, "\"}", 3);
    make_key("acme", body, &m);
}
END_TEST

START_TEST(an_org_holds_at_most_fifty_keys)
{
    struct made m;
    struct json_object *b = J("{\"name\":\"one more\"}"), *out = NULL;
    struct am_error err;
    int i;

    for (i = 0; i < APIKEY_PER_ORG_MAX; i++)
        make_key("acme", "{\"name\":\"k\"}", &m);
    error_clear(&err);
    ck_assert_int_eq(apikey_create(&app, "acme", "o@example.com", b, &out, &err), AM_EPLANLIMIT);
    /* other orgs are not counted against it */
    make_key("globex", "{\"name\":\"k\"}", &m);
    ck_assert_int_eq(apikey_delete(&app, "globex", m.id, &err), 0);
    error_clear(&err);
    ck_assert_int_eq(apikey_create(&app, "nowhere", "o@example.com", b, &out, &err),
                     AM_EFORBIDDEN);
    json_object_put(b);
}
END_TEST

static Suite *apikey_suite(void)
{
    Suite *s = suite_create("apikey");
    TCase *gen = tcase_create("generation"), *auth = tcase_create("authentication");
    TCase *used = tcase_create("last_used"), *bad = tcase_create("validation");
    TCase *all[] = { gen, auth, used, bad };
    int i;

    tcase_add_test(gen, secrets_have_their_shape_and_never_repeat);
    tcase_add_test(gen, stored_records_hold_no_secret);
    tcase_add_test(auth, key_is_found_by_its_hash_with_its_org_and_scopes);
    tcase_add_loop_test(auth, malformed_or_unknown_secret_is_unauthorized_without_echoing_it, 0,
                        NCASES(bad_secrets));
    tcase_add_test(auth, another_master_key_finds_no_key);
    tcase_add_test(auth, deleted_key_is_refused_and_its_id_is_gone);
    tcase_add_test(auth, memo_answers_until_the_auth_epoch_moves);
    tcase_add_test(used, hundred_uses_from_four_threads_write_last_used_once);
    tcase_add_test(used, last_used_is_written_again_only_after_a_minute);
    tcase_add_test(used, list_shows_last_use_and_never_a_secret);
    tcase_add_loop_test(bad, scopes_parse_table, 0, NCASES(scope_cases));
    tcase_add_loop_test(bad, bad_create_body_is_validation_error_naming_the_field, 0,
                        NCASES(body_cases));
    tcase_add_test(bad, name_of_64_characters_is_fine_in_any_script);
    tcase_add_test(bad, an_org_holds_at_most_fifty_keys);
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
    util_strlcpy(base, "/tmp/am-check-apikey-XXXXXX", sizeof base);
    if (mkdtemp(base) == NULL) {
        perror("mkdtemp");
        return EXIT_FAILURE;
    }
    sr = srunner_create(apikey_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
