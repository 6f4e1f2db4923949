/*
 * check_ws.c - RFC 6455 framing (server/ws.c): the handshake answer, SHA-1
 * against FIPS test vectors, frame headers in and out, masking, UTF-8.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include "server/ws.h"

static void hex(const uint8_t *d, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    size_t i;

    for (i = 0; i < n; i++) {
        out[2 * i] = digits[d[i] >> 4];
        out[2 * i + 1] = digits[d[i] & 15];
    }
    out[2 * n] = '\0';
}

static const struct { const char *in; const char *sha1; } sha_cases[] = {
    { "", "da39a3ee5e6b4b0d3255bfef95601890afd80709" },
    { "abc", "a9993e364706816aba3e25717850c26c9cd0d89d" },
    { "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
      "84983e441c3bd26ebaae4aa1f95129e5e54670f1" },
};

START_TEST(sha1_matches_the_fips_vectors)
{
    uint8_t d[20];
    char h[41];

    ws_sha1(sha_cases[_i].in, strlen(sha_cases[_i].in), d);
    hex(d, 20, h);
    ck_assert_str_eq(h, sha_cases[_i].sha1);
}
END_TEST

START_TEST(sha1_of_a_million_a)
{
    char *m = malloc(1000000);
    uint8_t d[20];
    char h[41];

    memset(m, 'a', 1000000);
    ws_sha1(m, 1000000, d);
    hex(d, 20, h);
    ck_assert_str_eq(h, "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
    free(m);
}
END_TEST

START_TEST(accept_key_is_the_rfc_example)
{
    char out[WS_ACCEPT_LEN + 1];

    ck_assert_int_eq(ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", out), 0);
    ck_assert_str_eq(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}
END_TEST

START_TEST(accept_key_refuses_what_is_not_a_16_byte_nonce)
{
    char out[WS_ACCEPT_LEN + 1];

    ck_assert_int_eq(ws_accept_key(NULL, out), -1);
    ck_assert_int_eq(ws_accept_key("", out), -1);
    ck_assert_int_eq(ws_accept_key("dGhlIHNhbXBsZSBub25jZQ", out), -1);
    ck_assert_int_eq(ws_accept_key("!!!!!!!!!!!!!!!!!!!!!!==", out), -1);
    ck_assert_int_eq(ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==x", out), -1);
}
END_TEST

START_TEST(masked_text_frame_parses_and_unmasks)
{
    /* RFC 6455 5.7: a masked "Hello" */
    uint8_t f[] = { 0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58 };
    struct ws_frame fr;

    ck_assert_int_eq(ws_parse_header(f, sizeof(f), &fr), 1);
    ck_assert_int_eq(fr.fin, 1);
    ck_assert_int_eq(fr.opcode, WS_TEXT);
    ck_assert_int_eq(fr.masked, 1);
    ck_assert_int_eq((int)fr.len, 5);
    ck_assert_int_eq((int)fr.header_len, 6);
    ws_unmask(f + 6, 5, fr.mask, 0);
    ck_assert(memcmp(f + 6, "Hello", 5) == 0);
}
END_TEST

START_TEST(partial_headers_ask_for_more)
{
    uint8_t f[] = { 0x81, 0xFE, 0x01, 0x00, 1, 2, 3, 4 };
    struct ws_frame fr;
    size_t n;

    for (n = 0; n < sizeof(f); n++)
        ck_assert_int_eq(ws_parse_header(f, n, &fr), 0);
    ck_assert_int_eq(ws_parse_header(f, sizeof(f), &fr), 1);
    ck_assert_int_eq((int)fr.len, 256);
    ck_assert_int_eq((int)fr.header_len, 8);
}
END_TEST

static const struct { const char *name; uint8_t b[10]; size_t n; } bad_frames[] = {
    { "reserved_bit", { 0xC1, 0x80, 0, 0, 0, 0 }, 6 },
    { "unknown_opcode", { 0x83, 0x80, 0, 0, 0, 0 }, 6 },
    { "fragmented_ping", { 0x09, 0x80, 0, 0, 0, 0 }, 6 },
    { "long_close", { 0x88, 0xFE, 0, 200, 0, 0, 0, 0 }, 8 },
    { "top_bit_length", { 0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 1 }, 10 },
};

START_TEST(protocol_errors_are_refused)
{
    struct ws_frame fr;

    ck_assert_msg(ws_parse_header(bad_frames[_i].b, bad_frames[_i].n, &fr) == -1, "%s",
                  bad_frames[_i].name);
}
END_TEST

START_TEST(frame_header_lengths_round_trip)
{
    static const uint64_t lens[] = { 0, 125, 126, 65535, 65536, 5000000 };
    uint8_t h[WS_HEADER_MAX + 4];
    struct ws_frame fr;
    size_t i, hl;

    for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        hl = ws_frame_header(h, WS_TEXT, lens[i]);
        ck_assert_int_eq(h[1] & 0x80, 0);           /* server frames are not masked */
        ck_assert_int_eq(ws_parse_header(h, hl, &fr), 1);
        ck_assert(fr.len == lens[i]);
        ck_assert_int_eq(fr.fin, 1);
        ck_assert_int_eq(fr.masked, 0);
        ck_assert_int_eq((int)fr.header_len, (int)hl);
    }
}
END_TEST

static const struct { const char *s; int ok; } utf8_cases[] = {
    { "plain ascii", 1 },
    { "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 1 },
    { "\xc0\xaf", 0 },                  /* overlong '/' */
    { "\xe0\x80\xaf", 0 },              /* overlong, 3 bytes */
    { "\xed\xa0\x80", 0 },              /* a surrogate */
    { "\xf4\x90\x80\x80", 0 },          /* past U+10FFFF */
    { "\xc3", 0 },                      /* cut short */
    { "\xe2\x82", 0 },
    { "\x80", 0 },                      /* a lone continuation */
    { "\xff", 0 },
};

START_TEST(utf8_is_checked_strictly)
{
    const char *s = utf8_cases[_i].s;

    ck_assert_msg(ws_utf8_valid((const uint8_t *)s, strlen(s)) == utf8_cases[_i].ok,
                  "case %d", _i);
}
END_TEST

static Suite *ws_suite(void)
{
    Suite *s = suite_create("ws");
    TCase *t = tcase_create("ws");

    tcase_add_loop_test(t, sha1_matches_the_fips_vectors, 0,
                        sizeof(sha_cases) / sizeof(sha_cases[0]));
    tcase_add_test(t, sha1_of_a_million_a);
    tcase_add_test(t, accept_key_is_the_rfc_example);
    tcase_add_test(t, accept_key_refuses_what_is_not_a_16_byte_nonce);
    tcase_add_test(t, masked_text_frame_parses_and_unmasks);
    tcase_add_test(t, partial_headers_ask_for_more);
    tcase_add_loop_test(t, protocol_errors_are_refused, 0,
                        sizeof(bad_frames) / sizeof(bad_frames[0]));
    tcase_add_test(t, frame_header_lengths_round_trip);
    tcase_add_loop_test(t, utf8_is_checked_strictly, 0,
                        sizeof(utf8_cases) / sizeof(utf8_cases[0]));
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(ws_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
