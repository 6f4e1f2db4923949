/*
 * check_vault.c - unit tests for vault.c: the master key file's checks,
 * subkey derivation, and sealing (round trip; a wrong master key, another
 * associated data, a flipped or truncated byte all fail cleanly, never
 * with garbage in the caller's buffer); the org provider-key records
 * (put, get, masked list, delete, a record moved to another org does not
 * open, a wrong master key is AM_EUNAVAILABLE, the raw record never holds
 * the key), against a real Berkeley DB environment.
 */
#include <check.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "state/store.h"
#include "state/vault.h"

static char dir[64];

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb; (void)flag; (void)ftw;
    return remove(path);
}

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/am-check-vault-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void)
{
    nftw(dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

/* Write n bytes of fill to dir/name with mode; returns the path (static). */
static const char *key_file(const char *name, size_t n, int fill, mode_t mode)
{
    static char path[128];
    unsigned char buf[64];
    int fd;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    unlink(path);
    memset(buf, fill, sizeof(buf));
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, buf, n), (ssize_t)n);
    close(fd);
    ck_assert_int_eq(chmod(path, mode), 0);
    return path;
}

static struct vault *open_ok(const char *name, int fill)
{
    struct vault *v = NULL;
    struct am_error err;

    error_clear(&err);
    ck_assert_msg(vault_open(&v, key_file(name, 32, fill, 0600), &err) == 0, "%s", err.message);
    return v;
}

static const struct {
    const char *what;
    size_t n;
    mode_t mode;
    const char *says;
} bad_files[] = {
    { "short", 31, 0600, "31 bytes, must be exactly 32" },
    { "long", 33, 0600, "33 bytes, must be exactly 32" },
    { "empty", 0, 0600, "0 bytes, must be exactly 32" },
    { "group-readable", 32, 0640, "chmod 600" },
    { "other-readable", 32, 0604, "chmod 600" },
    { "group-writable", 32, 0620, "chmod 600" },
};

START_TEST(master_key_file_that_is_not_32_private_bytes_is_refused)
{
    struct vault *v = (struct vault *)1;
    struct am_error err;
    const char *path = key_file("k", bad_files[_i].n, 7, bad_files[_i].mode);

    error_clear(&err);
    ck_assert_int_eq(vault_open(&v, path, &err), AM_ECONFIG);
    ck_assert_ptr_null(v);
    ck_assert_msg(strstr(err.message, bad_files[_i].says) != NULL, "%s: %s",
                  bad_files[_i].what, err.message);
    ck_assert_ptr_nonnull(strstr(err.message, path));
}
END_TEST

START_TEST(missing_master_key_says_how_to_make_one)
{
    struct vault *v = NULL;
    struct am_error err;
    char path[128];

    snprintf(path, sizeof(path), "%s/nope", dir);
    error_clear(&err);
    ck_assert_int_eq(vault_open(&v, path, &err), AM_ECONFIG);
    ck_assert_ptr_nonnull(strstr(err.message, "No such file"));
    ck_assert_ptr_nonnull(strstr(err.message, "head -c 32 /dev/urandom"));
}
END_TEST

START_TEST(a_directory_or_a_symlink_is_not_a_master_key)
{
    struct vault *v = NULL;
    struct am_error err;
    char link[160];
    const char *path = key_file("real", 32, 1, 0600);

    error_clear(&err);
    ck_assert_int_eq(vault_open(&v, dir, &err), AM_ECONFIG);
    snprintf(link, sizeof(link), "%s/link", dir);
    ck_assert_int_eq(symlink(path, link), 0);
    ck_assert_int_eq(vault_open(&v, link, &err), AM_ECONFIG);   /* O_NOFOLLOW */
}
END_TEST

START_TEST(subkeys_are_deterministic_and_differ_by_purpose_and_master)
{
    struct vault *a = open_ok("a", 1), *a2 = open_ok("a2", 1), *b = open_ok("b", 2);
    unsigned char k1[VAULT_KEY_BYTES], k2[VAULT_KEY_BYTES], k3[VAULT_KEY_BYTES];

    vault_subkey(a, VAULT_APIKEY_HASH, k1);
    vault_subkey(a2, VAULT_APIKEY_HASH, k2);
    ck_assert_int_eq(memcmp(k1, k2, sizeof(k1)), 0);
    vault_subkey(a, VAULT_PROVIDER_KEYS, k2);
    ck_assert_int_ne(memcmp(k1, k2, sizeof(k1)), 0);
    vault_subkey(b, VAULT_APIKEY_HASH, k3);
    ck_assert_int_ne(memcmp(k1, k3, sizeof(k1)), 0);
    vault_close(a);
    vault_close(a2);
    vault_close(b);
}
END_TEST

START_TEST(sealed_secret_round_trips_and_holds_no_plaintext)
{
    struct vault *v = open_ok("a", 1);
    const char *secret = "sk-live-0123456789abcdef";
    char out[64];
    size_t n = 0;
    char *sealed = vault_seal(v, "acme\0openai", 11, secret, strlen(secret));

    ck_assert_ptr_null(strstr(sealed, "sk-live"));
    ck_assert_int_eq(vault_unseal(v, "acme\0openai", 11, sealed, out, sizeof(out), &n), 0);
    ck_assert_uint_eq(n, strlen(secret));
    ck_assert_str_eq(out, secret);
    free(sealed);
    vault_close(v);
}
END_TEST

START_TEST(sealing_twice_gives_different_text)
{
    struct vault *v = open_ok("a", 1);
    char *s1 = vault_seal(v, "x", 1, "same", 4), *s2 = vault_seal(v, "x", 1, "same", 4);

    ck_assert_str_ne(s1, s2);       /* a fresh nonce each time */
    free(s1);
    free(s2);
    vault_close(v);
}
END_TEST

/* A failed unseal returns an error and leaves nothing in out. */
static void assert_unseal_fails(struct vault *v, const char *ad, size_t adlen,
                                const char *sealed, int want)
{
    char out[64];
    size_t n = 0;

    memset(out, 'Z', sizeof(out));
    ck_assert_int_eq(vault_unseal(v, ad, adlen, sealed, out, sizeof(out), &n), want);
    for (size_t i = 0; i < sizeof(out); i++)
        ck_assert_int_eq(out[i], 0);
}

START_TEST(wrong_master_key_other_record_or_tampering_fail_cleanly)
{
    struct vault *v = open_ok("a", 1), *w = open_ok("b", 2);
    char *sealed = vault_seal(v, "acme\0openai", 11, "sk-secret", 9);
    char *bad = strdup(sealed);
    size_t len = strlen(sealed);

    assert_unseal_fails(w, "acme\0openai", 11, sealed, AM_EUNAVAILABLE);  /* other master */
    assert_unseal_fails(v, "evil\0openai", 11, sealed, AM_EUNAVAILABLE);  /* other org */
    assert_unseal_fails(v, "acme\0groq", 9, sealed, AM_EUNAVAILABLE);     /* other provider */
    bad[len / 2] = bad[len / 2] == 'A' ? 'B' : 'A';                       /* flipped byte */
    assert_unseal_fails(v, "acme\0openai", 11, bad, AM_EUNAVAILABLE);
    bad[len - 5] = '\0';                                                  /* truncated */
    assert_unseal_fails(v, "acme\0openai", 11, bad, AM_EUNAVAILABLE);
    assert_unseal_fails(v, "acme\0openai", 11, "", AM_EUNAVAILABLE);
    assert_unseal_fails(v, "acme\0openai", 11, "!!not base64!!", AM_EUNAVAILABLE);
    free(bad);
    free(sealed);
    vault_close(v);
    vault_close(w);
}
END_TEST

START_TEST(plaintext_larger_than_the_buffer_is_refused)
{
    struct vault *v = open_ok("a", 1);
    char big[100], out[16];
    size_t n = 0;
    char *sealed;

    memset(big, 'k', sizeof(big));
    sealed = vault_seal(v, "a", 1, big, sizeof(big));
    ck_assert_int_eq(vault_unseal(v, "a", 1, sealed, out, sizeof(out), &n), AM_ETOOLARGE);
    free(sealed);
    vault_close(v);
}
END_TEST

/* ---- org provider keys ------------------------------------------------------ */

static struct store *open_store(void)
{
    char home[128];
    struct store_options o = { home, 8, 1, 16, 0, NULL };
    struct store *st = NULL;
    struct am_error err;

    snprintf(home, sizeof(home), "%s/env", dir);
    ck_assert_int_eq(mkdir(home, 0700), 0);
    error_clear(&err);
    ck_assert_msg(store_open(&st, &o, STORE_OPEN_CREATE, &err) == 0, "%s", err.message);
    return st;
}

static const struct {
    const char *key, *masked;
} masks[] = {
    { "sk-live-0123456789abcd", "sk-...abcd" },
    { "sk-abcdefghij", "sk-...ghij" },          /* 13 */
    { "abcdefghijkl", "abc...ijkl" },           /* 12: the long form */
    { "abcdefghijk", "...jk" },                 /* 11: only the last 2 */
    { "short", "...rt" },
    { "x", "...x" },
};

START_TEST(mask_shows_three_and_four_or_only_the_last_two)
{
    char out[24];

    vault_mask(masks[_i].key, out, sizeof(out));
    ck_assert_str_eq(out, masks[_i].masked);
}
END_TEST

static const char *KEY1 = "sk-org-acme-openai-0123456789";

START_TEST(provider_key_put_get_list_delete)
{
    struct vault *v = open_ok("a", 1);
    struct store *st = open_store();
    struct vault_provider_entry *e = NULL;
    struct am_error err;
    char out[VAULT_PROVIDER_KEY_MAX + 1];
    size_t n = 0;

    error_clear(&err);
    ck_assert_int_eq(vault_provider_get(st, NULL, v, "acme", "openai", out, sizeof(out), &err),
                     AM_ENOENT);
    ck_assert_int_eq(vault_provider_exists(st, NULL, "acme", "openai"), 0);
    ck_assert_int_eq(vault_provider_put(st, v, "acme", "openai", "sk-first-key-000000", &err), 0);
    ck_assert_int_eq(vault_provider_put(st, v, "acme", "openai", KEY1, &err), 0);  /* replaces */
    ck_assert_int_eq(vault_provider_put(st, v, "acme", "groq", "gsk_short", &err), 0);
    ck_assert_int_eq(vault_provider_put(st, v, "acme2", "anthropic", "sk-ant-other-org", &err), 0);
    ck_assert_int_eq(vault_provider_exists(st, NULL, "acme", "openai"), 1);
    ck_assert_int_eq(vault_provider_get(st, NULL, v, "acme", "openai", out, sizeof(out), &err), 0);
    ck_assert_str_eq(out, KEY1);

    ck_assert_int_eq(vault_provider_list(st, "acme", &e, &n, &err), 0);
    ck_assert_uint_eq(n, 2);                    /* not acme2's */
    ck_assert_str_eq(e[0].provider, "groq");
    ck_assert_str_eq(e[0].masked, "...rt");
    ck_assert_str_eq(e[1].provider, "openai");
    ck_assert_str_eq(e[1].masked, "sk-...6789");
    ck_assert_int_gt(e[1].added_at, 1700000000);
    free(e);

    ck_assert_int_eq(vault_provider_del(st, "acme", "openai", &err), 0);
    ck_assert_int_eq(vault_provider_del(st, "acme", "openai", &err), AM_EKEYNOTFOUND);
    ck_assert_int_eq(vault_provider_get(st, NULL, v, "acme", "openai", out, sizeof(out), &err),
                     AM_ENOENT);
    ck_assert_int_eq(vault_provider_list(st, "acme", &e, &n, &err), 0);
    ck_assert_uint_eq(n, 1);
    free(e);
    ck_assert_int_eq(vault_provider_list(st, "nobody", &e, &n, &err), 0);
    ck_assert_uint_eq(n, 0);
    ck_assert_ptr_null(e);
    store_close(st);
    vault_close(v);
}
END_TEST

/* Assert that no record of db holds needle (the raw bytes). */
static int raw_has(const char *key, size_t klen, const char *val, size_t vlen, void *arg)
{
    (void)key; (void)klen; (void)vlen;
    return strstr(val, arg) != NULL ? -1 : 0;
}

START_TEST(stored_record_never_holds_the_key)
{
    struct vault *v = open_ok("a", 1);
    struct store *st = open_store();
    struct am_error err;
    char *val = NULL;

    error_clear(&err);
    ck_assert_int_eq(vault_provider_put(st, v, "acme", "openai", KEY1, &err), 0);
    ck_assert_int_eq(store_scan(st, NULL, STORE_PROVIDER_KEYS, "", 0, raw_has,
                                (void *)"acme-openai-0123"), 0);
    ck_assert_int_eq(store_scan(st, NULL, STORE_PROVIDER_KEYS, "", 0, raw_has,
                                (void *)"sk-...6789"), -1);   /* the scan does see records */
    ck_assert_int_eq(store_get(st, NULL, STORE_PROVIDER_KEYS, "acme\0openai", 11, 0, &val, NULL),
                     0);
    ck_assert_ptr_null(strstr(val, KEY1));
    ck_assert_ptr_nonnull(strstr(val, "\"sealed\""));
    free(val);
    store_close(st);
    vault_close(v);
}
END_TEST

START_TEST(record_copied_to_another_org_does_not_unseal)
{
    struct vault *v = open_ok("a", 1);
    struct store *st = open_store();
    struct am_error err;
    char out[VAULT_PROVIDER_KEY_MAX + 1], *val = NULL;
    size_t vlen = 0;

    error_clear(&err);
    ck_assert_int_eq(vault_provider_put(st, v, "acme", "openai", KEY1, &err), 0);
    ck_assert_int_eq(store_get(st, NULL, STORE_PROVIDER_KEYS, "acme\0openai", 11, 0, &val, &vlen),
                     0);
    ck_assert_int_eq(store_put(st, NULL, STORE_PROVIDER_KEYS, "evil\0openai", 11, val, vlen), 0);
    ck_assert_int_eq(store_put(st, NULL, STORE_PROVIDER_KEYS, "acme\0groq", 9, val, vlen), 0);
    memset(out, 'Z', sizeof(out));
    ck_assert_int_eq(vault_provider_get(st, NULL, v, "evil", "openai", out, sizeof(out), &err),
                     AM_EUNAVAILABLE);
    ck_assert_int_eq(out[0], 0);
    ck_assert_ptr_null(strstr(err.message, KEY1));
    ck_assert_int_eq(vault_provider_get(st, NULL, v, "acme", "groq", out, sizeof(out), &err),
                     AM_EUNAVAILABLE);
    free(val);
    store_close(st);
    vault_close(v);
}
END_TEST

START_TEST(wrong_master_key_gives_unavailable_never_garbage)
{
    struct vault *v = open_ok("a", 1), *w = open_ok("b", 2);
    struct store *st = open_store();
    struct am_error err;
    char out[VAULT_PROVIDER_KEY_MAX + 1];

    error_clear(&err);
    ck_assert_int_eq(vault_provider_put(st, v, "acme", "openai", KEY1, &err), 0);
    memset(out, 'Z', sizeof(out));
    ck_assert_int_eq(vault_provider_get(st, NULL, w, "acme", "openai", out, sizeof(out), &err),
                     AM_EUNAVAILABLE);
    for (size_t i = 0; i < sizeof(out); i++)
        ck_assert_int_eq(out[i], 0);
    ck_assert_ptr_nonnull(strstr(err.message, "master key"));
    ck_assert_int_eq(vault_provider_get(st, NULL, v, "acme", "openai", out, sizeof(out), &err), 0);
    store_close(st);
    vault_close(v);
    vault_close(w);
}
END_TEST

static Suite *vault_suite(void)
{
    Suite *s = suite_create("vault");
    TCase *tc = tcase_create("master key file");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, master_key_file_that_is_not_32_private_bytes_is_refused, 0,
                        (int)(sizeof(bad_files) / sizeof(bad_files[0])));
    tcase_add_test(tc, missing_master_key_says_how_to_make_one);
    tcase_add_test(tc, a_directory_or_a_symlink_is_not_a_master_key);
    suite_add_tcase(s, tc);
    tc = tcase_create("keys and seals");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, subkeys_are_deterministic_and_differ_by_purpose_and_master);
    tcase_add_test(tc, sealed_secret_round_trips_and_holds_no_plaintext);
    tcase_add_test(tc, sealing_twice_gives_different_text);
    tcase_add_test(tc, wrong_master_key_other_record_or_tampering_fail_cleanly);
    tcase_add_test(tc, plaintext_larger_than_the_buffer_is_refused);
    suite_add_tcase(s, tc);
    tc = tcase_create("org provider keys");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_loop_test(tc, mask_shows_three_and_four_or_only_the_last_two, 0,
                        (int)(sizeof(masks) / sizeof(masks[0])));
    tcase_add_test(tc, provider_key_put_get_list_delete);
    tcase_add_test(tc, stored_record_never_holds_the_key);
    tcase_add_test(tc, record_copied_to_another_org_does_not_unseal);
    tcase_add_test(tc, wrong_master_key_gives_unavailable_never_garbage);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(vault_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
