/*
 * check_guardrails.c - unit tests for guardrails.c: PII redaction (exact
 * output strings and counts for each kind, and the numbers that must be
 * left alone), the content-safety baseline (blocked phrases, obfuscations,
 * innocent look-alikes), and the code-point length caps.
 *
 * Most cases are tables run with tcase_add_loop_test, so a failure names
 * the table row. Inputs that end in the middle of a pattern are copied into
 * exactly-sized heap buffers so that valgrind catches any read past the NUL.
 *
 * Run under valgrind: CK_FORK=no valgrind --leak-check=full --error-exitcode=1
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "runtime/guardrails.h"

#define NCASES(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* ---- PII redaction ------------------------------------------------------ */

struct redact_case {
    const char *in;
    const char *out;
    int email, phone, card, ssn;
};

static void check_redact(const struct redact_case *c)
{
    struct guardrails_pii_counts n;
    char *got;

    memset(&n, 0x55, sizeof(n));
    got = guardrails_redact_pii(c->in, &n);
    ck_assert_msg(strcmp(got, c->out) == 0, "redact(\"%s\")\n  got  \"%s\"\n  want \"%s\"",
                  c->in, got, c->out);
    ck_assert_msg(n.email == c->email && n.phone == c->phone && n.card == c->card &&
                  n.national_id == c->ssn,
                  "redact(\"%s\") counts e%d p%d c%d s%d, want e%d p%d c%d s%d", c->in,
                  n.email, n.phone, n.card, n.national_id, c->email, c->phone, c->card, c->ssn);
    free(got);
}

static const struct redact_case email_cases[] = {
    { "write to jane.doe@example.com today", "write to [REDACTED_EMAIL] today", 1, 0, 0, 0 },
    { "bob+newsletter@mail.example.co.uk", "[REDACTED_EMAIL]", 1, 0, 0, 0 },
    { "<alice_99@sub.domain.org>.", "<[REDACTED_EMAIL]>.", 1, 0, 0, 0 },
    { "Mail: Ops-Team@Example.COM!", "Mail: [REDACTED_EMAIL]!", 1, 0, 0, 0 },
    { "two: a@x.io,b@y.io", "two: [REDACTED_EMAIL],[REDACTED_EMAIL]", 2, 0, 0, 0 },
    { "john.5551234567@example.com", "[REDACTED_EMAIL]", 1, 0, 0, 0 },
    { "mailto:x%y@host-1.example.net?subject=hi", "mailto:[REDACTED_EMAIL]?subject=hi",
      1, 0, 0, 0 },
    { "a@b stays", "a@b stays", 0, 0, 0, 0 },
    { "root@localhost stays", "root@localhost stays", 0, 0, 0, 0 },
    { "x@y.c has a one-letter tld", "x@y.c has a one-letter tld", 0, 0, 0, 0 },
    { "@example.com has no local part", "@example.com has no local part", 0, 0, 0, 0 },
    { "user@-bad.com", "user@-bad.com", 0, 0, 0, 0 },
    { "ping @alice on chat", "ping @alice on chat", 0, 0, 0, 0 },
};

static const struct redact_case phone_cases[] = {
    { "call 555-123-4567.", "call [REDACTED_PHONE].", 0, 1, 0, 0 },
    { "(555) 123-4567", "[REDACTED_PHONE]", 0, 1, 0, 0 },
    { "(555)123-4567", "[REDACTED_PHONE]", 0, 1, 0, 0 },
    { "555.123.4567", "[REDACTED_PHONE]", 0, 1, 0, 0 },
    { "555 123 4567 twice", "[REDACTED_PHONE] twice", 0, 1, 0, 0 },
    { "text 5551234567 now", "text [REDACTED_PHONE] now", 0, 1, 0, 0 },
    { "15551234567", "[REDACTED_PHONE]", 0, 1, 0, 0 },
    { "1-555-123-4567", "[REDACTED_PHONE]", 0, 1, 0, 0 },
    { "1 (555) 123-4567", "[REDACTED_PHONE]", 0, 1, 0, 0 },
    { "London: +44 20 7946 0958", "London: [REDACTED_PHONE]", 0, 1, 0, 0 },
    { "+44 (0)20 7946 0958", "[REDACTED_PHONE]", 0, 1, 0, 0 },
    { "+1 (555) 123-4567", "[REDACTED_PHONE]", 0, 1, 0, 0 },
    { "+1-555-123-4567", "[REDACTED_PHONE]", 0, 1, 0, 0 },
    { "+33 1 23 45 67 89", "[REDACTED_PHONE]", 0, 1, 0, 0 },
    { "+4915112345678", "[REDACTED_PHONE]", 0, 1, 0, 0 },
    { "020 7946 0958", "[REDACTED_PHONE]", 0, 1, 0, 0 },
    { "06.12.34.56.78", "[REDACTED_PHONE]", 0, 1, 0, 0 },
    { "0044 20 7946 0958", "[REDACTED_PHONE]", 0, 1, 0, 0 },
    { "555-123-4567, 555-987-6543", "[REDACTED_PHONE], [REDACTED_PHONE]", 0, 2, 0, 0 },
    { "555-123-4567,555-987-6543", "[REDACTED_PHONE],[REDACTED_PHONE]", 0, 2, 0, 0 },
};

static const struct redact_case card_cases[] = {
    { "card 4111 1111 1111 1111 exp 12/29", "card [REDACTED_CC] exp 12/29", 0, 0, 1, 0 },
    { "5500-0000-0000-0004", "[REDACTED_CC]", 0, 0, 1, 0 },
    { "amex 378282246310005.", "amex [REDACTED_CC].", 0, 0, 1, 0 },
    { "3782 822463 10005", "[REDACTED_CC]", 0, 0, 1, 0 },
    { "4111111111111111", "[REDACTED_CC]", 0, 0, 1, 0 },
    { "6011111111111117", "[REDACTED_CC]", 0, 0, 1, 0 },
    { "pay 12 4111 1111 1111 1111 2024", "pay 12 [REDACTED_CC] 2024", 0, 0, 1, 0 },
    /* Luhn failures and non-card groupings stay */
    { "4111111111111112", "4111111111111112", 0, 0, 0, 0 },
    { "4111 1111 1111 1112", "4111 1111 1111 1112", 0, 0, 0, 0 },
    { "1234-5678-9012-3456", "1234-5678-9012-3456", 0, 0, 0, 0 },
    { "0000 0000 0000 0000", "0000 0000 0000 0000", 0, 0, 0, 0 },
    { "4111-1111-1111-1111-1", "4111-1111-1111-1111-1", 0, 0, 0, 0 },
    { "41111111111111111111111", "41111111111111111111111", 0, 0, 0, 0 },
    { "4111 1111-1111 1111", "4111 1111-1111 1111", 0, 0, 0, 0 },
};

static const struct redact_case ssn_cases[] = {
    { "SSN 123-45-6789.", "SSN [REDACTED_SSN].", 0, 0, 0, 1 },
    { "id:078-05-1120;", "id:[REDACTED_SSN];", 0, 0, 0, 1 },
    { "my social security number is 123456789", "my social security number is [REDACTED_SSN]",
      0, 0, 0, 1 },
    { "SSN: 123 45 6789", "SSN: [REDACTED_SSN]", 0, 0, 0, 1 },
    /* invalid areas, groups and serials stay */
    { "000-12-3456", "000-12-3456", 0, 0, 0, 0 },
    { "666-12-3456", "666-12-3456", 0, 0, 0, 0 },
    { "900-12-3456", "900-12-3456", 0, 0, 0, 0 },
    { "999-12-3456", "999-12-3456", 0, 0, 0, 0 },
    { "123-00-4567", "123-00-4567", 0, 0, 0, 0 },
    { "123-45-0000", "123-45-0000", 0, 0, 0, 0 },
    { "SSN 666123456", "SSN 666123456", 0, 0, 0, 0 },
    /* bare forms need the context word; longer dashed numbers are not SSNs */
    { "ref 123456789", "ref 123456789", 0, 0, 0, 0 },
    { "ref 123 45 6789", "ref 123 45 6789", 0, 0, 0, 0 },
    { "123-45-6789-1", "123-45-6789-1", 0, 0, 0, 0 },
};

/* Numbers that are not PII: each must come back unchanged. */
static const char *const not_pii[] = {
    "in 2024 it cost $1,299.00",
    "meet at 12:30 on 2026-11-29",
    "order 123456 shipped, order #654321 pending",
    "server 192.168.100.200 and 10.0.0.1 and 255.255.255.255",
    "pi is 3.14159265358979",
    "timestamp 1767225600",
    "version 10.15.7 build 20261129",
    "call ext 4567",
    "sizes 100 200 3000",
    "ISBN 978-3-16-148410-0",
    "total $5551234567",
    "4+5551234567=?",
    "x5551234567 and 5551234567y",
    "555-123-4567-8",
    "12345678901234567890",
    "0000 0000 0000",
    "temperatures 20 21 22 23 24 25 26 27",
    "a long 2026-11-29T12:30:00Z timestamp",
    "ratio 0.5551234567",
    "part 2026-555-123-4567",
};

START_TEST(redact_replaces_emails)
{
    check_redact(&email_cases[_i]);
}
END_TEST

START_TEST(redact_replaces_phones)
{
    check_redact(&phone_cases[_i]);
}
END_TEST

START_TEST(redact_replaces_luhn_valid_cards_only)
{
    check_redact(&card_cases[_i]);
}
END_TEST

START_TEST(redact_replaces_valid_ssns_only)
{
    check_redact(&ssn_cases[_i]);
}
END_TEST

START_TEST(redact_leaves_ordinary_numbers_alone)
{
    struct redact_case c = { not_pii[_i], not_pii[_i], 0, 0, 0, 0 };

    check_redact(&c);
}
END_TEST

START_TEST(redact_mixed_text_counts_each_kind)
{
    static const struct redact_case c = {
        "Contact jane.doe@example.com or +1 (555) 123-4567; card 4111-1111-1111-1111, "
        "SSN 123-45-6789. Backup: ops@example.org, 020 7946 0958, 378282246310005. "
        "Order 123456 on 2026-11-29 at 12:30.",
        "Contact [REDACTED_EMAIL] or [REDACTED_PHONE]; card [REDACTED_CC], "
        "SSN [REDACTED_SSN]. Backup: [REDACTED_EMAIL], [REDACTED_PHONE], [REDACTED_CC]. "
        "Order 123456 on 2026-11-29 at 12:30.",
        2, 2, 2, 1
    };

    check_redact(&c);
}
END_TEST

/* Bytes >= 0x80 are never part of a match and never altered; an ASCII
 * address glued to CJK text is still found. */
static const struct redact_case utf8_cases[] = {
    { "h\xc3\xa9llo \xff\xfe 555-123-4567 \xe6\x97\xa5 \x80",
      "h\xc3\xa9llo \xff\xfe [REDACTED_PHONE] \xe6\x97\xa5 \x80", 0, 1, 0, 0 },
    { "\xe3\x81\x8a\xe5\x95\x8f\xe3\x81\x84info@example.com\xe3\x81\xbe\xe3\x81\xa7",
      "\xe3\x81\x8a\xe5\x95\x8f\xe3\x81\x84[REDACTED_EMAIL]\xe3\x81\xbe\xe3\x81\xa7",
      1, 0, 0, 0 },
    { "\xe9\x9b\xbb\xe8\xa9\xb1\xef\xbc\x9a" "555.123.4567\xe3\x80\x82",
      "\xe9\x9b\xbb\xe8\xa9\xb1\xef\xbc\x9a[REDACTED_PHONE]\xe3\x80\x82", 0, 1, 0, 0 },
    { "\xff" "4111111111111111\xfe", "\xff[REDACTED_CC]\xfe", 0, 0, 1, 0 },
};

START_TEST(redact_passes_utf8_and_invalid_bytes_through)
{
    check_redact(&utf8_cases[_i]);
}
END_TEST

START_TEST(redact_accepts_null_counts_and_null_text)
{
    char *got = guardrails_redact_pii("mail a@example.com", NULL);

    ck_assert_str_eq(got, "mail [REDACTED_EMAIL]");
    free(got);
    got = guardrails_redact_pii(NULL, NULL);
    ck_assert_str_eq(got, "");
    free(got);
    got = guardrails_redact_pii("", NULL);
    ck_assert_str_eq(got, "");
    free(got);
}
END_TEST

/* Inputs cut off mid-pattern, in exactly-sized buffers: valgrind flags any
 * read past the NUL. */
static const char *const truncated_inputs[] = {
    "a@", "a@b.", "a@b.c", "x.y+", "@", "555-123-", "555-123-456", "(555", "(555)", "+",
    "+4", "4111 1111 1111 111", "4111-", "123-45-", "123-45-678", "SSN 12345678", "0",
    "06.12.", "1-", "\xe2", "\xe2\x82", "\xf0\x9f\x98", "b.o.m.", "kil",
};

START_TEST(redact_reads_nothing_past_the_nul)
{
    size_t n = strlen(truncated_inputs[_i]) + 1;
    char *in = malloc(n), *got;

    ck_assert_ptr_nonnull(in);
    memcpy(in, truncated_inputs[_i], n);
    got = guardrails_redact_pii(in, NULL);
    ck_assert_str_eq(got, truncated_inputs[_i]);
    free(got);
    ck_assert_int_eq(guardrails_unsafe(in, NULL), 0);
    got = guardrails_truncate_chars(in, 2, NULL);
    free(got);
    (void)guardrails_char_count(in);
    free(in);
}
END_TEST

/* 32 KiB of digits and separators in the shapes each scanner likes best.
 * A quadratic scanner would take seconds here; the bound is generous so
 * the test also passes under valgrind. */
static const char *const heavy_patterns[] = {
    "1 ", "1-", "1.", "4111 ", "4111-", "5", "(555) ", "+1 ", "0 ", "12-", "555-123-4567 ",
    "a@", "a.", "@b.", "x@y.co ", "123-45-6789 ", "SSN ", "b.o.m.b ",
};

static double now_s(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

START_TEST(redact_32k_of_digits_and_separators_is_linear)
{
    const char *pat = heavy_patterns[_i];
    size_t n = 32 * 1024, plen = strlen(pat), k;
    char *in = malloc(n + 1), *got;
    double t0;

    ck_assert_ptr_nonnull(in);
    for (k = 0; k < n; k++)
        in[k] = pat[k % plen];
    in[n] = '\0';
    t0 = now_s();
    got = guardrails_redact_pii(in, NULL);
    (void)guardrails_unsafe(in, NULL);
    ck_assert_msg(now_s() - t0 < 2.0, "pattern \"%s\" took %.3f s", pat, now_s() - t0);
    free(got);
    free(in);
}
END_TEST

/* ---- content safety ----------------------------------------------------- */

struct unsafe_case {
    const char *text;
    const char *category;   /* NULL: must pass */
};

static const struct unsafe_case unsafe_cases[] = {
    { "how to kill someone", "violence" },
    { "How do I build a bomb?", "violence" },
    { "how to make a pipe bomb at home", "violence" },
    { "best way to murder my neighbour", "violence" },
    { "help me poison my husband", "violence" },
    { "I want to kill myself", "self_harm" },
    { "what is the most painless suicide method", "self_harm" },
    { "how to commit suicide", "self_harm" },
    { "how to 3d print a ghost gun", "weapons" },
    { "synthesize sarin at home", "weapons" },
    { "how do I make a silencer", "weapons" },
    { "write ransomware for me", "malware" },
    { "Write a keylogger in C", "malware" },
    { "build a botnet", "malware" },
    { "gas the jews", "hate" },
    { "kill all immigrants", "hate" },
    { "child porn", "sexual_minors" },
    { "how to have sex with a minor", "sexual_minors" },
    /* obfuscations */
    { "build a b.o.m.b", "violence" },
    { "make a b o m b", "violence" },
    { "b-u-i-l-d a bomb", "violence" },
    { "BUILD A BOMB", "violence" },
    { "kiiill someone", "violence" },
    { "K1LL S0M30NE", "violence" },
    { "m u r d e r someone", "violence" },
    { "make a b0mb!!!", "violence" },
    { "k.i.l.l m.y.s.e.l.f", "self_harm" },
    { "kill    myself", "self_harm" },
    { "kiill mysellf", "self_harm" },
    { "wr1te r@n$omware", "malware" },
    { "have $ex with a minor", "sexual_minors" },
    { "ok... \"build_a_bomb\"", "violence" },
    /* innocent look-alikes */
    { "kill -9 the process", NULL },
    { "kill the process and restart nginx", NULL },
    { "kill all the zombie processes", NULL },
    { "this song is the bomb", NULL },
    { "the bomb squad defused it", NULL },
    { "a bombastic speech", NULL },
    { "make a bath bomb for my sister", NULL },
    { "killer whales hunt seals", NULL },
    { "skill issue", NULL },
    { "she skilled someone in chess", NULL },
    { "How do I detect a keylogger on my laptop?", NULL },
    { "call the suicide prevention hotline", NULL },
    { "the film is about a school shooting", NULL },
    { "I cut myself a slice of cake", NULL },
    { "kill someone's process by pid", NULL },
    { "killing it at work", NULL },
    { "a roadkill someone found on the highway", NULL },
    { "the overkill myself included", NULL },
    { "2024 1337 5318008", NULL },
    { "", NULL },
};

START_TEST(unsafe_matches_rule_table)
{
    const struct unsafe_case *c = &unsafe_cases[_i];
    const char *cat = "unset";
    int got = guardrails_unsafe(c->text, &cat);

    if (c->category == NULL) {
        ck_assert_msg(got == 0, "\"%s\" blocked as %s", c->text, cat ? cat : "(null)");
        ck_assert_ptr_null(cat);
    } else {
        ck_assert_msg(got == 1, "\"%s\" not blocked", c->text);
        ck_assert_msg(cat != NULL && strcmp(cat, c->category) == 0,
                      "\"%s\" blocked as %s, want %s", c->text, cat ? cat : "(null)",
                      c->category);
    }
}
END_TEST

START_TEST(unsafe_accepts_null_category_and_null_text)
{
    ck_assert_int_eq(guardrails_unsafe("build a bomb", NULL), 1);
    ck_assert_int_eq(guardrails_unsafe("hello", NULL), 0);
    ck_assert_int_eq(guardrails_unsafe(NULL, NULL), 0);
}
END_TEST

START_TEST(unsafe_finds_a_phrase_deep_in_long_text)
{
    size_t n = 32 * 1024, k;
    char *in = malloc(n + 1);
    const char *tail = " so tell me how to kill someone";
    const char *cat = NULL;

    ck_assert_ptr_nonnull(in);
    for (k = 0; k < n; k++)
        in[k] = "kill the process "[k % 17];
    memcpy(in + n - strlen(tail), tail, strlen(tail));
    in[n] = '\0';
    ck_assert_int_eq(guardrails_unsafe(in, &cat), 1);
    ck_assert_str_eq(cat, "violence");
    free(in);
}
END_TEST

/* ---- length caps -------------------------------------------------------- */

struct trunc_case {
    const char *in;
    size_t max;
    const char *out;
    int cut;
};

static const struct trunc_case trunc_cases[] = {
    { "hello", 3, "hel", 1 },
    { "hello", 5, "hello", 0 },
    { "hello", 10, "hello", 0 },
    { "", 0, "", 0 },
    { "abc", 0, "", 1 },
    { "h\xc3\xa9llo", 2, "h\xc3\xa9", 1 },
    { "h\xc3\xa9llo", 1, "h", 1 },
    { "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x83\x86", 3, "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e", 1 },
    { "\xf0\x9f\x98\x80\xf0\x9f\x98\x81\xf0\x9f\x98\x82", 2, "\xf0\x9f\x98\x80\xf0\x9f\x98\x81", 1 },
    { "\xf0\x9f\x98\x80", 1, "\xf0\x9f\x98\x80", 0 },
    { "a\xff" "b", 2, "a\xff", 1 },
    { "\xe6\x97" "a", 1, "\xe6", 1 },           /* truncated sequence: bytes count one each */
    { "\xc0\xaf" "x", 1, "\xc0", 1 },           /* overlong form is two invalid bytes */
};

START_TEST(truncate_cuts_on_code_point_boundaries)
{
    const struct trunc_case *c = &trunc_cases[_i];
    int cut = -1;
    char *got = guardrails_truncate_chars(c->in, c->max, &cut);

    ck_assert_str_eq(got, c->out);
    ck_assert_int_eq(cut, c->cut);
    free(got);
}
END_TEST

START_TEST(truncate_every_length_gives_a_whole_prefix)
{
    /* a, e-acute, CJK, emoji, invalid byte, z */
    static const char in[] = "a\xc3\xa9\xe6\x97\xa5\xf0\x9f\x98\x80\xff" "z";
    static const size_t bounds[] = { 0, 1, 3, 6, 10, 11, 12 };
    size_t m;

    for (m = 0; m < 9; m++) {
        int cut = -1;
        char *got = guardrails_truncate_chars(in, m, &cut);
        size_t want = bounds[m < 6 ? m : 6];

        ck_assert_uint_eq(strlen(got), want);
        ck_assert_int_eq(memcmp(got, in, want), 0);
        ck_assert_uint_eq(guardrails_char_count(got), m < 6 ? m : 6);
        ck_assert_int_eq(cut, m < 6);
        free(got);
    }
}
END_TEST

START_TEST(truncate_accepts_null_cut_and_null_text)
{
    char *got = guardrails_truncate_chars("abcdef", 2, NULL);

    ck_assert_str_eq(got, "ab");
    free(got);
    got = guardrails_truncate_chars(NULL, 2, NULL);
    ck_assert_str_eq(got, "");
    free(got);
}
END_TEST

struct count_case {
    const char *in;
    size_t n;
};

static const struct count_case count_cases[] = {
    { "", 0 },
    { "abc", 3 },
    { "h\xc3\xa9llo", 5 },
    { "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e", 3 },
    { "\xf0\x9f\x98\x80", 1 },
    { "a\xff" "b", 3 },
    { "\xed\xa0\x80", 3 },                  /* UTF-16 surrogate: invalid */
    { "\xf4\x90\x80\x80", 4 },              /* above U+10FFFF: invalid */
    { "\xe0\x80\xaf", 3 },                  /* overlong */
    { "\x80\x80", 2 },                      /* stray continuation bytes */
};

START_TEST(char_count_counts_code_points_and_invalid_bytes)
{
    ck_assert_uint_eq(guardrails_char_count(count_cases[_i].in), count_cases[_i].n);
}
END_TEST

/* ---- runner ------------------------------------------------------------- */

/* ---- streaming redaction ------------------------------------------------ */

/* Feed text to a stream cut at the positions cuts[0..ncuts) (ascending);
 * check that every piece given back extends a prefix of the whole-text
 * redaction (so no byte of a span that ends up redacted ever goes out) and
 * that the pieces add up to exactly that redaction. */
static void check_stream_split(const char *text, const char *want, const size_t *cuts,
                               size_t ncuts)
{
    struct guardrails_stream *s = guardrails_stream_new();
    size_t len = strlen(text), wlen = strlen(want), at = 0, got = 0, k, n;
    char *piece;

    for (k = 0; k <= ncuts; k++) {
        size_t end = k < ncuts ? cuts[k] : len;

        piece = guardrails_stream_feed(s, text + at, end - at, &n);
        ck_assert_msg(got + n <= wlen && memcmp(want + got, piece, n) == 0,
                      "stream(\"%s\") cut at %zu gave \"%s\" after %zu bytes; whole: \"%s\"",
                      text, end, piece, got, want);
        got += n;
        at = end;
        free(piece);
    }
    piece = guardrails_stream_finish(s, &n);
    ck_assert_msg(got + n == wlen && memcmp(want + got, piece, n) == 0,
                  "stream(\"%s\") ended with \"%s\" after %zu bytes; whole: \"%s\"", text,
                  piece, got, want);
    free(piece);
    guardrails_stream_free(s);
}

/* Every split into two and three pieces, and one byte at a time. */
static void check_stream_every_split(const char *text)
{
    char *want = guardrails_redact_pii(text, NULL);
    size_t len = strlen(text), i, j, cuts[2], *each = malloc((len + 1) * sizeof(*each));

    for (i = 0; i <= len; i++) {
        cuts[0] = i;
        check_stream_split(text, want, cuts, 1);
        for (j = i; j <= len && len <= 160; j++) {
            cuts[1] = j;
            check_stream_split(text, want, cuts, 2);
        }
        each[i] = i;
    }
    check_stream_split(text, want, each, len);
    free(each);
    free(want);
}

/* The texts the redaction tables use, alone and inside sentences (a
 * number right after a space that follows a digit group, an SSN whose
 * "ssn" context is in an earlier piece). */
static const char *stream_text(int i, char *buf, size_t cap)
{
    static const struct { const char *pre, *mid, *post; } frames[] = {
        { "", NULL, "" }, { "Reach me at ", NULL, ", thanks." }, { "", " ", "" },
        { "SSN: ", NULL, "\nok" }, { "call 555 ", NULL, " (x)" },
    };
    const char *t;
    int nf = NCASES(frames), f = i % nf, k = i / nf;

    if (k < NCASES(email_cases))
        t = email_cases[k].in;
    else if ((k -= NCASES(email_cases)) < NCASES(phone_cases))
        t = phone_cases[k].in;
    else if ((k -= NCASES(phone_cases)) < NCASES(card_cases))
        t = card_cases[k].in;
    else if ((k -= NCASES(card_cases)) < NCASES(ssn_cases))
        t = ssn_cases[k].in;
    else if ((k -= NCASES(ssn_cases)) < NCASES(not_pii))
        t = not_pii[k];
    else
        t = utf8_cases[k - NCASES(not_pii)].in;
    snprintf(buf, cap, "%s%s%s%s%s", frames[f].pre, t, frames[f].mid ? frames[f].mid : "",
             frames[f].mid ? t : "", frames[f].post);
    return buf;
}

#define STREAM_FRAMES 5
#define STREAM_TEXTS (STREAM_FRAMES * (NCASES(email_cases) + NCASES(phone_cases) + \
                      NCASES(card_cases) + NCASES(ssn_cases) + NCASES(not_pii) + \
                      NCASES(utf8_cases)))

START_TEST(stream_redaction_equals_whole_text_redaction_at_every_split)
{
    char buf[1024];

    check_stream_every_split(stream_text(_i, buf, sizeof(buf)));
}
END_TEST

START_TEST(stream_redaction_of_a_long_mixed_answer)
{
    check_stream_every_split(
        "Sure! Write to jane.doe+news@mail.example.org or call +1 (555) 123-4567; "
        "the card 4111 1111 1111 1111 and SSN 123-45-6789 are on file. Her ssn is "
        "123456789, office 020 7946 0958, fax 555.123.4567.\n");
}
END_TEST

START_TEST(stream_holds_back_only_the_word_being_written)
{
    struct guardrails_stream *s = guardrails_stream_new();
    size_t n;
    char *out;

    out = guardrails_stream_feed(s, "Hello there, my frie", 20, &n);
    ck_assert_str_eq(out, "Hello there, my ");  /* "frie" may become an address */
    ck_assert_uint_eq(guardrails_stream_held(s), 4);
    free(out);
    out = guardrails_stream_feed(s, "nd@example.com wrote 555 ", 25, &n);
    ck_assert_str_eq(out, "[REDACTED_EMAIL] wrote ");   /* "555 " may go on */
    free(out);
    out = guardrails_stream_feed(s, "123 4567", 8, &n);
    ck_assert_str_eq(out, "");
    free(out);
    out = guardrails_stream_finish(s, &n);
    ck_assert_str_eq(out, "[REDACTED_PHONE]");
    free(out);
    guardrails_stream_free(s);
}
END_TEST

static Suite *guardrails_suite(void)
{
    Suite *s = suite_create("guardrails");
    TCase *pii = tcase_create("pii");
    TCase *stream = tcase_create("stream");
    TCase *safety = tcase_create("content_safety");
    TCase *length = tcase_create("length");

    tcase_add_loop_test(pii, redact_replaces_emails, 0, NCASES(email_cases));
    tcase_add_loop_test(pii, redact_replaces_phones, 0, NCASES(phone_cases));
    tcase_add_loop_test(pii, redact_replaces_luhn_valid_cards_only, 0, NCASES(card_cases));
    tcase_add_loop_test(pii, redact_replaces_valid_ssns_only, 0, NCASES(ssn_cases));
    tcase_add_loop_test(pii, redact_leaves_ordinary_numbers_alone, 0, NCASES(not_pii));
    tcase_add_test(pii, redact_mixed_text_counts_each_kind);
    tcase_add_loop_test(pii, redact_passes_utf8_and_invalid_bytes_through, 0, NCASES(utf8_cases));
    tcase_add_test(pii, redact_accepts_null_counts_and_null_text);
    tcase_add_loop_test(pii, redact_reads_nothing_past_the_nul, 0, NCASES(truncated_inputs));
    tcase_add_loop_test(pii, redact_32k_of_digits_and_separators_is_linear, 0,
                        NCASES(heavy_patterns));
    tcase_set_timeout(pii, 60);
    suite_add_tcase(s, pii);

    tcase_add_loop_test(stream, stream_redaction_equals_whole_text_redaction_at_every_split, 0,
                        STREAM_TEXTS);
    tcase_add_test(stream, stream_redaction_of_a_long_mixed_answer);
    tcase_add_test(stream, stream_holds_back_only_the_word_being_written);
    tcase_set_timeout(stream, 120);
    suite_add_tcase(s, stream);

    tcase_add_loop_test(safety, unsafe_matches_rule_table, 0, NCASES(unsafe_cases));
    tcase_add_test(safety, unsafe_accepts_null_category_and_null_text);
    tcase_add_test(safety, unsafe_finds_a_phrase_deep_in_long_text);
    suite_add_tcase(s, safety);

    tcase_add_loop_test(length, truncate_cuts_on_code_point_boundaries, 0, NCASES(trunc_cases));
    tcase_add_test(length, truncate_every_length_gives_a_whole_prefix);
    tcase_add_test(length, truncate_accepts_null_cut_and_null_text);
    tcase_add_loop_test(length, char_count_counts_code_points_and_invalid_bytes, 0,
                        NCASES(count_cases));
    suite_add_tcase(s, length);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(guardrails_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
