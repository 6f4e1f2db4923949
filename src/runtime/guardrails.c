/*
 * guardrails.c - the input and output guardrails of the agent pipeline:
 * PII redaction (pii_filter), the content-safety baseline (content_safety)
 * and the code-point length caps (max_length, max_tokens).
 *
 * Owns: nothing long-lived. Every function is pure over its input string;
 * the only allocations are the returned copies (caller frees with free())
 * and one scratch array inside guardrails_unsafe, freed before it returns.
 * No globals are written, so every function is safe to call from several
 * threads at once.
 *
 * Must not: do I/O, log, or use regex.h. Every scanner is hand-written,
 * looks only at ASCII bytes (bytes >= 0x80, valid UTF-8 or not, are passed
 * through untouched and count as "not a word character"), never reads past
 * the terminating NUL, and does a bounded amount of work per input byte, so
 * a 32 KiB query costs well under a millisecond.
 *
 * PII REDACTION
 *
 * guardrails_redact_pii runs four left-to-right passes, each one producing
 * a new string, in this order (the order matters: an e-mail address may
 * hold digits, and a card number must never be reported as a phone):
 *
 *   1. e-mail   local@domain.tld: the local part is [A-Za-z0-9._%+-]
 *               (plus-addressing included, leading dots dropped), the domain
 *               is two or more labels of [A-Za-z0-9-] (no label starts or
 *               ends with '-') and the last label, the TLD, is two or more
 *               letters. "a@b" and "a@b.c" are not addresses. Both parts
 *               are ASCII only, so an address glued to CJK text is found,
 *               and one with a non-ASCII local part is not.
 *   2. card     13-19 digits, either one unbroken run or groups joined by a
 *               single space or a single dash (the same one throughout; the
 *               first group has 4 digits, the others 3-6), that pass the
 *               Luhn check and are not all zeros. A 16-digit run that fails
 *               Luhn is left alone, and so is anything after a '+'.
 *   3. SSN      ddd-dd-dddd, excluding area 000, 666 and 900-999, group 00
 *               and serial 0000; also the bare ddddddddd or "ddd dd dddd"
 *               forms, but only when "ssn" or "social security" appears in
 *               the 40 bytes before the number.
 *   4. phone    10-15 digits in one of these shapes (separators are single
 *               ' ', '-' or '.'):
 *                 +CC ...           '+', then any grouping (parenthesised
 *                                   groups allowed after the first), the
 *                                   first group 1-3 digits unless the whole
 *                                   number is one run: +44 20 7946 0958,
 *                                   +1 (555) 123-4567, +4915112345678
 *                 NANP              [1 sep] (AAA) or AAA, EEE, LLLL with
 *                                   A first in 2-9 and one separator kind:
 *                                   555-123-4567, (555) 123-4567,
 *                                   555.123.4567, 1-555-123-4567
 *                 bare run          exactly 10 digits starting 2-9, or 11
 *                                   digits "1" + that: 5551234567
 *                 trunk 0           starting with 0 (but not 000), two or
 *                                   more groups of two or more digits, one
 *                                   separator kind: 020 7946 0958,
 *                                   06.12.34.56.78, 0044 20 7946 0958
 *
 * Every number match must stand alone: the byte before it is not a letter,
 * digit or '_', nor a '.', '-', '/' or ':' glued to a digit (so the tail of
 * "3.14159..." or "2026-11-29" never starts a match), nor '+' or '$'; the
 * byte after it obeys the same rule. That keeps years (2024), prices
 * (1,299.00), dates (2026-11-29), times (12:30), IPv4 addresses, short ids
 * and 10-digit Unix times (they start with 1) out of the redaction.
 *
 * Every pass is linear: candidate starts are only tried at boundaries, and
 * each attempt reads at most a fixed number of bytes (19 digits for a card,
 * 15 digits for a phone, 11 bytes for an SSN); the e-mail pass is driven by
 * the '@' bytes and never scans back past the previous one.
 *
 * CONTENT SAFETY
 *
 * guardrails_unsafe is a deterministic baseline filter, not a classifier:
 * it blocks text that contains one of the phrases in gr_rules[], and
 * nothing else. Matching works on a normalised letter stream:
 *
 *   - ASCII letters are lowercased; inside a token that has at least one
 *     letter (or '@' / '$'), the leetspeak digits map 0->o 1->i 3->e 4->a
 *     5->s 7->t, and '@'->a, '$'->s everywhere; other digits and tokens of
 *     digits only ("-9", "2024") are word breaks. An apostrophe is dropped
 *     without a break ("someone's" is one word).
 *   - everything else (spaces, punctuation, bytes >= 0x80) is a word break,
 *     and breaks are dropped from the stream; each letter only remembers
 *     whether a word starts or ends at it.
 *   - runs of one letter collapse to one ("kiiill" -> "kil"); rule phrases
 *     are collapsed the same way when they are compared.
 *
 * A phrase matches when its letters appear consecutively in the stream,
 * starting at a word start and ending at a word end. Breaks *inside* the
 * phrase are ignored, which is what defeats "b.o.m.b", "b o m b" and
 * "k-i-l-l m.y.s.e.l.f"; the boundary rule at both ends is what keeps
 * "skill", "killer whale", "bombastic" and "kill -9 the process" out. Single
 * dangerous words are never rules on their own: "bomb", "kill", "suicide"
 * and "keylogger" appear only in phrases that ask for or announce harm, so
 * "this song is the bomb", "the bomb squad defused it", "kill the process",
 * "how do I detect a keylogger" and "suicide prevention hotline" all pass.
 * Known false positives that come with the approach: hyperbole ("I could
 * kill someone for a coffee") is blocked.
 *
 * A rule is either a list of phrases, or a list of leads times a list of
 * tails ("make" x "a pipe bomb"); the first rule that matches, scanning the
 * text left to right, names the category.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "runtime/guardrails.h"
#include "lib/buf.h"
#include "lib/util.h"

/* ---- byte classes (ASCII only: never locale-dependent) ------------------ */

static int gr_digit(unsigned char c) { return c >= '0' && c <= '9'; }
static int gr_alpha(unsigned char c) { return (c | 0x20) >= 'a' && (c | 0x20) <= 'z'; }
static int gr_alnum(unsigned char c) { return gr_digit(c) || gr_alpha(c); }
static int gr_word(unsigned char c) { return gr_alnum(c) || c == '_'; }
static char gr_lower(unsigned char c) { return (char)(gr_alpha(c) ? c | 0x20 : c); }

/* Bytes that glue two numbers into one larger token ("2026-11-29", "3.14"). */
static int gr_joiner(unsigned char c) { return c == '.' || c == '-' || c == '/' || c == ':'; }

/* May a number match start at z[i]? */
static int gr_left_ok(const char *z, size_t i)
{
    unsigned char c;

    if (i == 0)
        return 1;
    c = (unsigned char)z[i - 1];
    if (gr_word(c) || c == '+' || c == '$')
        return 0;
    if (gr_joiner(c) && i >= 2 && gr_digit((unsigned char)z[i - 2]))
        return 0;
    return 1;
}

/* May a number match end just before z[e] (len = strlen(z))? */
static int gr_right_ok(const char *z, size_t len, size_t e)
{
    unsigned char c;

    if (e >= len)
        return 1;
    c = (unsigned char)z[e];
    if (gr_word(c))
        return 0;
    if (gr_joiner(c) && e + 1 < len && gr_digit((unsigned char)z[e + 1]))
        return 0;
    return 1;
}

/* ---- 1. e-mail addresses ------------------------------------------------ */

static int gr_email_local(unsigned char c)
{
    return gr_alnum(c) || c == '.' || c == '_' || c == '%' || c == '+' || c == '-';
}

static int gr_label_char(unsigned char c) { return gr_alnum(c) || c == '-'; }

/* Parse the domain that starts at z[p]; return the end of the longest
 * prefix that is a valid domain (two or more labels, alphabetic TLD of two
 * or more letters), or 0 if there is none. */
static size_t gr_email_domain(const char *z, size_t len, size_t p)
{
    size_t best = 0;
    int nlabels = 0;

    for (;;) {
        size_t ls = p, k;
        int tld = 1;

        while (p < len && gr_label_char((unsigned char)z[p]))
            p++;
        if (p == ls || z[ls] == '-' || z[p - 1] == '-')
            break;
        nlabels++;
        for (k = ls; k < p; k++)
            if (!gr_alpha((unsigned char)z[k]))
                tld = 0;
        if (nlabels >= 2 && tld && p - ls >= 2)
            best = p;
        if (p + 1 < len && z[p] == '.' && gr_alnum((unsigned char)z[p + 1]))
            p++;
        else
            break;
    }
    return best;
}

static char *gr_pass_email(const char *z, int *count)
{
    size_t len = strlen(z), copied = 0, i;
    struct buf b;

    buf_init(&b, len);
    for (i = 0; i < len; i++) {
        size_t s = i, e;

        if (z[i] != '@')
            continue;
        while (s > copied && gr_email_local((unsigned char)z[s - 1]))
            s--;
        while (s < i && z[s] == '.')
            s++;
        if (s == i || (e = gr_email_domain(z, len, i + 1)) == 0)
            continue;
        buf_put(&b, z + copied, s - copied);
        buf_puts(&b, "[REDACTED_EMAIL]");
        (*count)++;
        copied = e;
        i = e - 1;
    }
    buf_put(&b, z + copied, len - copied);
    return buf_take(&b);
}

/* ---- the number passes share one driver --------------------------------- */

/* A matcher looks at z[i] and returns the end of a match starting there,
 * or 0. It reads a bounded number of bytes. */
typedef size_t (*gr_matcher)(const char *z, size_t len, size_t i);

/* The text of z from byte `from` on, every match of `match` starting at or
 * after `from` replaced by placeholder; z[0..from) is only read, as left
 * context (the streaming redactor's SSN window). */
static char *gr_pass_numbers_from(const char *z, size_t from, gr_matcher match,
                                  const char *placeholder, int *count)
{
    size_t len = strlen(z), copied = from, i = from;
    struct buf b;

    buf_init(&b, len);
    while (i < len) {
        size_t e = match(z, len, i);

        if (e > i) {
            buf_put(&b, z + copied, i - copied);
            buf_puts(&b, placeholder);
            (*count)++;
            copied = i = e;
        } else {
            i++;
        }
    }
    buf_put(&b, z + copied, len - copied);
    return buf_take(&b);
}

static char *gr_pass_numbers(const char *z, gr_matcher match, const char *placeholder,
                             int *count)
{
    return gr_pass_numbers_from(z, 0, match, placeholder, count);
}

/* Length of the digit run at z[p], counting at most max + 1 digits. */
static size_t gr_digits(const char *z, size_t len, size_t p, size_t max)
{
    size_t n = 0;

    while (p + n < len && n <= max && gr_digit((unsigned char)z[p + n]))
        n++;
    return n;
}

/* ---- 2. card numbers ---------------------------------------------------- */

#define GR_CARD_MIN 13
#define GR_CARD_MAX 19

/* Luhn over the digits of z[s..e); 0 for an all-zero number. */
static int gr_luhn(const char *z, size_t s, size_t e)
{
    int sum = 0, dbl = 0, nonzero = 0;
    size_t k;

    for (k = e; k > s; k--) {
        int d;

        if (!gr_digit((unsigned char)z[k - 1]))
            continue;
        d = z[k - 1] - '0';
        nonzero |= d;
        if (dbl && (d *= 2) > 9)
            d -= 9;
        sum += d;
        dbl = !dbl;
    }
    return nonzero && sum % 10 == 0;
}

static size_t gr_match_card(const char *z, size_t len, size_t i)
{
    size_t gend[GR_CARD_MAX + 1], p = i;
    int gdig[GR_CARD_MAX + 1], ng = 0, total = 0, k;
    char sep = 0;

    if (!gr_digit((unsigned char)z[i]) || !gr_left_ok(z, i))
        return 0;
    for (;;) {
        size_t n = gr_digits(z, len, p, GR_CARD_MAX);

        if (n > GR_CARD_MAX || total + (int)n > GR_CARD_MAX)
            break;                      /* this group does not fit */
        if (ng > 0 && (gdig[0] != 4 || n < 3 || n > 6))
            break;                      /* not a card grouping: 4, then 3-6 each */
        gend[ng] = p + n;
        gdig[ng++] = (int)n;
        total += (int)n;
        p += n;
        if (p + 1 < len && (z[p] == ' ' || z[p] == '-') && (sep == 0 || z[p] == sep) &&
            gr_digit((unsigned char)z[p + 1])) {
            sep = z[p];
            p++;
        } else {
            break;
        }
    }
    /* Every prefix of the chain is a card grouping; the longest that
     * passes wins. */
    for (k = ng; k >= 1; k--) {
        if (total >= GR_CARD_MIN && gr_right_ok(z, len, gend[k - 1]) &&
            gr_luhn(z, i, gend[k - 1]))
            return gend[k - 1];
        total -= gdig[k - 1];
    }
    return 0;
}

/* ---- 3. US social security numbers -------------------------------------- */

/* Decimal value of the n digits at z[p]. */
static int gr_num(const char *z, size_t p, int n)
{
    int v = 0, k;

    for (k = 0; k < n; k++)
        v = v * 10 + (z[p + k] - '0');
    return v;
}

static int gr_ssn_valid(int area, int group, int serial)
{
    return area != 0 && area != 666 && area < 900 && group != 0 && serial != 0;
}

#define GR_SSN_WINDOW 40

/* Does "ssn" or "social security" (any case) appear in the GR_SSN_WINDOW
 * bytes before z[i]? */
static int gr_ssn_context(const char *z, size_t i)
{
    static const char *const words[] = { "ssn", "social security" };
    size_t from = i > GR_SSN_WINDOW ? i - GR_SSN_WINDOW : 0, p, w;

    for (p = from; p < i; p++) {
        for (w = 0; w < sizeof(words) / sizeof(words[0]); w++) {
            size_t k, n = strlen(words[w]);

            if (p + n > i)
                continue;
            for (k = 0; k < n; k++)
                if (gr_lower((unsigned char)z[p + k]) != words[w][k])
                    break;
            if (k == n)
                return 1;
        }
    }
    return 0;
}

static size_t gr_match_ssn(const char *z, size_t len, size_t i)
{
    size_t a, g, s;

    if (!gr_digit((unsigned char)z[i]) || !gr_left_ok(z, i))
        return 0;
    if (gr_digits(z, len, i, 9) == 9) {         /* bare form, context only */
        if (gr_right_ok(z, len, i + 9) && gr_ssn_context(z, i) &&
            gr_ssn_valid(gr_num(z, i, 3), gr_num(z, i + 3, 2), gr_num(z, i + 5, 4)))
            return i + 9;
        return 0;
    }
    a = gr_digits(z, len, i, 3);
    if (a != 3 || i + 11 > len || (z[i + 3] != '-' && z[i + 3] != ' ') || z[i + 6] != z[i + 3])
        return 0;
    g = gr_digits(z, len, i + 4, 2);
    s = gr_digits(z, len, i + 7, 4);
    if (g != 2 || s != 4 || !gr_right_ok(z, len, i + 11))
        return 0;
    if (z[i + 3] == ' ' && !gr_ssn_context(z, i))
        return 0;
    if (!gr_ssn_valid(gr_num(z, i, 3), gr_num(z, i + 4, 2), gr_num(z, i + 7, 4)))
        return 0;
    return i + 11;
}

/* ---- 4. phone numbers --------------------------------------------------- */

#define GR_PHONE_MIN 10
#define GR_PHONE_MAX 15

struct gr_group {
    size_t start;   /* first digit */
    size_t end;     /* one past the group, after ')' if parenthesised */
    int ndig;       /* digits in the group */
    int paren;      /* 1 if written "(ddd)" */
    char sep;       /* separator before the group: ' ', '-', '.', or 0 */
};

static int gr_phone_sep(char c) { return c == ' ' || c == '-' || c == '.'; }

/* Is groups g[0..k) with total digits d, written with a leading '+' or
 * not, a phone number? See the shapes in the header comment. */
static int gr_phone_shape(const struct gr_group *g, int k, int d, int plus, const char *z)
{
    int j = 0, x;

    if (d < GR_PHONE_MIN || d > GR_PHONE_MAX)
        return 0;
    if (plus)
        return !g[0].paren && (k == 1 || g[0].ndig <= 3);
    if (k == 1)                                 /* one bare run */
        return !g[0].paren &&
               ((d == 10 && z[g[0].start] >= '2') ||
                (d == 11 && z[g[0].start] == '1' && z[g[0].start + 1] >= '2'));
    if (z[g[0].start] == '0') {                 /* trunk-0 national form */
        const char *third = g[0].ndig >= 3 ? &z[g[0].start + 2] : &z[g[1].start];

        if (z[g[0].start + 1] == '0' && *third == '0')
            return 0;                           /* no dialling prefix is 000 */
        for (x = 0; x < k; x++)
            if (g[x].ndig < 2 || (x >= 2 && g[x].sep != g[k - 1].sep) ||
                (x >= 1 && !g[x - 1].paren && g[x].sep == 0) || (x >= 1 && g[x].paren))
                return 0;
        return 1;
    }
    if (k == 4 && g[0].ndig == 1 && z[g[0].start] == '1' && !g[0].paren && g[1].sep)
        j = 1;                                  /* leading "1 " of NANP */
    if (k - j != 3 || g[j].ndig != 3 || g[j + 1].ndig != 3 || g[j + 2].ndig != 4 ||
        g[j + 1].paren || g[j + 2].paren || z[g[j].start] < '2')
        return 0;
    if (g[j].paren)
        return g[j + 1].sep != '.' && g[j + 2].sep != 0;
    return g[j + 1].sep != 0 && g[j + 1].sep == g[j + 2].sep && (j == 0 || g[j].sep != 0);
}

static size_t gr_match_phone(const char *z, size_t len, size_t i)
{
    struct gr_group g[GR_PHONE_MAX + 1];
    size_t p = i;
    int plus = 0, ng = 0, d = 0, k;
    char sep = 0;

    if (z[i] != '+' && z[i] != '(' && !gr_digit((unsigned char)z[i]))
        return 0;
    if (!gr_left_ok(z, i))
        return 0;
    if (z[i] == '+') {
        plus = 1;
        p++;
        if (p >= len || !gr_digit((unsigned char)z[p]))
            return 0;
    }
    for (;;) {
        struct gr_group *cur = &g[ng];
        int paren = z[p] == '(';
        size_t n = gr_digits(z, len, p + paren, GR_PHONE_MAX);

        if (n == 0 || d + (int)n > GR_PHONE_MAX)
            break;
        if (paren && (n > 5 || p + 1 + n >= len || z[p + 1 + n] != ')'))
            break;
        cur->start = p + paren;
        cur->end = p + paren + n + paren;
        cur->ndig = (int)n;
        cur->paren = paren;
        cur->sep = sep;
        d += (int)n;
        ng++;
        p = cur->end;
        /* What joins this group to the next one? */
        if (p + 1 < len && gr_phone_sep(z[p]) &&
            (gr_digit((unsigned char)z[p + 1]) || z[p + 1] == '(')) {
            sep = z[p];
            p++;
        } else if (p < len && (z[p] == '(' || (paren && gr_digit((unsigned char)z[p])))) {
            sep = 0;
        } else {
            break;
        }
    }
    for (k = ng; k >= 1; k--)
        if (gr_phone_shape(g, k, d, plus, z) && gr_right_ok(z, len, g[k - 1].end))
            return g[k - 1].end;
        else
            d -= g[k - 1].ndig;
    return 0;
}

/* ---- redaction entry point ---------------------------------------------- */

char *guardrails_redact_pii(const char *text, struct guardrails_pii_counts *counts)
{
    struct guardrails_pii_counts local;
    char *a, *b;

    if (counts == NULL)
        counts = &local;
    memset(counts, 0, sizeof(*counts));
    if (text == NULL)
        return xstrdup("");
    a = gr_pass_email(text, &counts->email);
    b = gr_pass_numbers(a, gr_match_card, "[REDACTED_CC]", &counts->card);
    free(a);
    a = gr_pass_numbers(b, gr_match_ssn, "[REDACTED_SSN]", &counts->national_id);
    free(b);
    b = gr_pass_numbers(a, gr_match_phone, "[REDACTED_PHONE]", &counts->phone);
    free(a);
    return b;
}

/* ---- streaming redaction ------------------------------------------------ */

/* A byte no match of any pass contains, and whose presence just before a
 * match start or just after a match end decides nothing beyond "not glued":
 * ASCII, not a letter or digit, not one of the bytes an e-mail address or a
 * number is made of ("._%+-@ ()"), not a joiner ('/', ':') and not '$'
 * (which forbids a match right after it). Bytes >= 0x80 are hard too, but
 * only at the end of their UTF-8 sequence (gr_stream_cut). */
static int gr_hard(unsigned char c)
{
    return c != 0 && c < 0x80 && !gr_alnum(c) && !strchr("._%+-@ ()$/:", c);
}

struct guardrails_stream {
    struct buf pend;                  /* raw text after the last cut, not yet out */
    unsigned char prev[2];            /* the two raw bytes before pend (0 = none) */
    char ssn_ctx[GR_SSN_WINDOW + 1];  /* the SSN pass's input just before pend */
    size_t nssn;
};

struct guardrails_stream *guardrails_stream_new(void)
{
    struct guardrails_stream *s = xcalloc(1, sizeof(*s));

    buf_init(&s->pend, 256);
    return s;
}

void guardrails_stream_free(struct guardrails_stream *s)
{
    if (s == NULL)
        return;
    buf_free(&s->pend);
    free(s);
}

size_t guardrails_stream_held(const struct guardrails_stream *s)
{
    return s->pend.n;
}

/* Byte k of the raw text counted from the start of pend (k may be -1 or
 * -2: the bytes before it; 0 when there are none). */
static unsigned char gr_stream_at(const struct guardrails_stream *s, long k)
{
    if (k >= 0)
        return (unsigned char)s->pend.z[k];
    return k == -1 ? s->prev[1] : s->prev[0];
}

/* May the text be cut between pend[c-1] and pend[c] (c <= pend.n; at
 * c == pend.n the next byte is not known yet)? Yes when no match of any
 * pass can contain both bytes and nothing on one side changes a match on
 * the other: after a hard byte; after a complete UTF-8 character; after a
 * space that does not sit between two digit groups (a card, an SSN or a
 * phone may be groups joined by spaces: "4111 1111 ...", "(555) 123").
 * The only look across a cut is the SSN pass's context window, which the
 * stream carries (ssn_ctx). */
static int gr_stream_cut(const struct guardrails_stream *s, size_t c)
{
    unsigned char a = gr_stream_at(s, (long)c - 1), b, z;
    int known = c < s->pend.n;

    b = known ? (unsigned char)s->pend.z[c] : 0;
    if (a >= 0x80)
        return known && (b < 0x80 || b >= 0xC0);
    if (gr_hard(a))
        return 1;
    if (a != ' ')
        return 0;
    z = gr_stream_at(s, (long)c - 2);
    if (!gr_digit(z) && z != ')')
        return 1;
    return known && !gr_digit(b) && b != '(';
}

/* Redact raw[0..n), a piece that starts and ends at cuts, exactly as
 * guardrails_redact_pii treats it inside the whole text; append to out. */
static void gr_stream_segment(struct guardrails_stream *s, const char *raw, size_t n,
                              struct buf *out)
{
    struct buf z;
    char *x = xstrndup(raw, n), *a, *b;
    int cnt = 0;
    size_t keep;

    a = gr_pass_email(x, &cnt);
    b = gr_pass_numbers(a, gr_match_card, "[REDACTED_CC]", &cnt);
    free(a);
    free(x);
    buf_init(&z, s->nssn + strlen(b) + 1);
    buf_put(&z, s->ssn_ctx, s->nssn);
    buf_puts(&z, b);
    free(b);
    a = gr_pass_numbers_from(z.z, s->nssn, gr_match_ssn, "[REDACTED_SSN]", &cnt);
    keep = z.n < GR_SSN_WINDOW ? z.n : GR_SSN_WINDOW;
    memcpy(s->ssn_ctx, z.z + z.n - keep, keep);
    s->ssn_ctx[keep] = '\0';
    s->nssn = keep;
    buf_free(&z);
    b = gr_pass_numbers(a, gr_match_phone, "[REDACTED_PHONE]", &cnt);
    buf_puts(out, b);
    free(a);
    free(b);
}

/* Redact and drop pend[0..c); remember the bytes before the new pend. */
static void gr_stream_emit(struct guardrails_stream *s, size_t c, struct buf *out)
{
    if (c == 0)
        return;
    gr_stream_segment(s, s->pend.z, c, out);
    s->prev[0] = c >= 2 ? (unsigned char)s->pend.z[c - 2] : s->prev[1];
    s->prev[1] = (unsigned char)s->pend.z[c - 1];
    memmove(s->pend.z, s->pend.z + c, s->pend.n - c);
    s->pend.n -= c;
    s->pend.z[s->pend.n] = '\0';
}

char *guardrails_stream_feed(struct guardrails_stream *s, const char *text, size_t n,
                             size_t *outn)
{
    struct buf out;
    const char *nul = memchr(text, '\0', n);
    size_t c;

    if (nul != NULL)
        n = (size_t)(nul - text);
    buf_init(&out, n + 16);
    buf_put(&s->pend, text, n);
    for (c = s->pend.n; c > 0 && !gr_stream_cut(s, c); c--)
        ;
    gr_stream_emit(s, c, &out);
    *outn = out.n;
    return buf_take(&out);
}

char *guardrails_stream_finish(struct guardrails_stream *s, size_t *outn)
{
    struct buf out;

    buf_init(&out, s->pend.n + 16);
    gr_stream_emit(s, s->pend.n, &out);
    *outn = out.n;
    return buf_take(&out);
}

/* ---- content safety: the rule table ------------------------------------- */

/* Phrases are lowercase letters and single spaces only (they go through the
 * same collapse as the text, but not through leetspeak mapping). */

/* violence: harm to a person, and explosives */
static const char *const v_verbs[] = {
    "kill", "murder", "stab", "strangle", "poison", "behead", "torture", "kidnap",
    "abduct", "dismember", NULL
};
static const char *const v_victims[] = {
    "someone", "somebody", "a person", "a human", "my wife", "my husband",
    "my girlfriend", "my boyfriend", "my boss", "my mom", "my mother", "my dad",
    "my father", "my teacher", "my neighbor", "my neighbour", "my ex", "a child",
    "a kid", "a baby", NULL
};
static const char *const v_phrases[] = {
    "shoot up a school", "shoot up my school", "shoot up the school",
    "plan a mass shooting", "commit a mass shooting", "hire a hitman",
    "hire a hit man", "get rid of a body", "dispose of a body", NULL
};
static const char *const bomb_verbs[] = {
    "build", "building", "make", "making", "assemble", "construct", NULL
};
static const char *const bombs[] = {
    "a bomb", "bombs", "a pipe bomb", "pipe bombs", "a dirty bomb", "a car bomb",
    "a nail bomb", "a pressure cooker bomb", "an explosive device", "explosives",
    "a molotov", "a molotov cocktail", "molotov cocktails", "napalm", NULL
};

/* weapons: untraceable or illegal firearms, chemical and biological agents */
static const char *const gun_verbs[] = {
    "build", "building", "make", "making", "assemble", "print", "manufacture", NULL
};
static const char *const guns[] = {
    "a ghost gun", "ghost guns", "an untraceable gun", "untraceable guns",
    "an untraceable firearm", "a silencer", "a suppressor", "a zip gun",
    "an auto sear", "a machine gun conversion", NULL
};
static const char *const chem_verbs[] = {
    "make", "making", "synthesize", "synthesise", "produce", "brew", "weaponize",
    "weaponise", "culture", NULL
};
static const char *const chems[] = {
    "sarin", "ricin", "vx", "tabun", "nerve agent", "nerve gas", "mustard gas",
    "anthrax", "a bioweapon", "bioweapons", "a chemical weapon", "chemical weapons", NULL
};

/* self_harm: intent or method */
static const char *const sh_phrases[] = {
    "kill myself", "killing myself", "end my life", "ending my life", "end my own life",
    "take my own life", "taking my own life", "hang myself", "hanging myself",
    "slit my wrists", "suicide method", "suicide methods", "how to commit suicide",
    "way to commit suicide", "ways to commit suicide", "painless suicide",
    "painless way to die", "overdose on purpose", NULL
};

/* malware: writing or building malicious software */
static const char *const mw_verbs[] = {
    "write", "writing", "create", "creating", "build", "building", "make", "code",
    "develop", "program", NULL
};
static const char *const malware[] = {
    "ransomware", "a ransomware", "a keylogger", "keylogger", "keyloggers", "malware",
    "a computer virus", "a rootkit", "a botnet", "a credential stealer", "an infostealer",
    "a cryptolocker", "spyware", NULL
};

/* hate: calls for violence against a group (slurs are deliberately not
 * spelled out in the source; this is a baseline, not a lexicon) */
static const char *const hate_leads[] = {
    "kill all", "kill the", "exterminate all", "exterminate the", "gas the", "gas all",
    "death to all", "death to", "eradicate all", "eradicate the", "wipe out all",
    "wipe out the", NULL
};
static const char *const hate_groups[] = {
    "jews", "muslims", "christians", "blacks", "black people", "whites", "white people",
    "gays", "gay people", "trans people", "immigrants", "mexicans", "arabs", "asians",
    "hindus", "sikhs", "women", NULL
};

/* sexual_minors: any sexual content involving children */
static const char *const sm_leads[] = {
    "have sex with", "having sex with", "nudes of", "nude pictures of", "nude photos of",
    "naked pictures of", "naked photos of", "sexual pictures of", "sexual photos of", NULL
};
static const char *const sm_minors[] = {
    "a child", "children", "a minor", "minors", "a kid", "kids", "a little girl",
    "a little boy", "a preteen", "preteens", "an underage girl", "an underage boy", NULL
};
static const char *const sm_phrases[] = {
    "child porn", "child pornography", "kiddie porn", "kiddy porn", "underage porn",
    "preteen porn", "underage nudes", "preteen nudes", NULL
};

struct gr_rule {
    const char *category;       /* static name reported to the caller */
    const char *const *lead;    /* alternatives, NULL-terminated */
    const char *const *tail;    /* alternatives that must follow a lead, or NULL */
};

static const struct gr_rule gr_rules[] = {
    { "self_harm",     sh_phrases, NULL },
    { "violence",      v_verbs,    v_victims },
    { "violence",      v_phrases,  NULL },
    { "violence",      bomb_verbs, bombs },
    { "weapons",       gun_verbs,  guns },
    { "weapons",       chem_verbs, chems },
    { "malware",       mw_verbs,   malware },
    { "hate",          hate_leads, hate_groups },
    { "sexual_minors", sm_phrases, NULL },
    { "sexual_minors", sm_leads,   sm_minors },
};

/* ---- content safety: normalisation and matching ------------------------- */

#define GR_WS 1     /* a word starts at this letter */
#define GR_WE 2     /* a word ends at this letter */

struct gr_letter {
    char c;                 /* 'a'..'z' */
    unsigned char flags;    /* GR_WS | GR_WE */
};

static int gr_tokchar(unsigned char c)
{
    return gr_alnum(c) || c == '@' || c == '$' || c == '\'';
}

/* Map one token byte to a letter, 0 for a word break, or '\'' for "drop". */
static char gr_fold(unsigned char c, int wordy)
{
    static const char leet[10] = { 'o', 'i', 0, 'e', 'a', 's', 0, 't', 0, 0 };

    if (gr_alpha(c))
        return gr_lower(c);
    if (c == '@')
        return 'a';
    if (c == '$')
        return 's';
    if (c == '\'')
        return '\'';
    return wordy ? leet[c - '0'] : 0;
}

static void gr_emit(struct gr_letter *out, size_t *n, char c, int *pending)
{
    if (*n > 0 && out[*n - 1].c == c) {         /* collapse the repeat */
        if (*pending)
            out[*n - 1].flags |= GR_WS | GR_WE;
    } else {
        if (*pending && *n > 0)
            out[*n - 1].flags |= GR_WE;
        out[*n].c = c;
        out[*n].flags = *pending ? GR_WS : 0;
        (*n)++;
    }
    *pending = 0;
}

/* Build the letter stream of z into out (room for strlen(z) letters);
 * returns the number of letters. */
static size_t gr_normalise(const char *z, struct gr_letter *out)
{
    size_t n = 0, i = 0;
    int pending = 1;

    while (z[i]) {
        size_t j = i, k;
        int wordy = 0;

        if (!gr_tokchar((unsigned char)z[i])) {
            pending = 1;
            i++;
            continue;
        }
        for (; z[j] && gr_tokchar((unsigned char)z[j]); j++)
            if (!gr_digit((unsigned char)z[j]) && z[j] != '\'')
                wordy = 1;
        for (k = i; k < j; k++) {
            char c = gr_fold((unsigned char)z[k], wordy);

            if (c == 0)
                pending = 1;
            else if (c != '\'')
                gr_emit(out, &n, c, &pending);
        }
        i = j;
    }
    if (n > 0)
        out[n - 1].flags |= GR_WE;
    return n;
}

/* Match phrase pat at s[p], skipping its spaces and collapsing its repeats
 * (*prev is the last phrase letter matched so far, updated). Returns the
 * stream position after the match, or SIZE_MAX. */
static size_t gr_match_phrase(const struct gr_letter *s, size_t n, size_t p,
                              const char *pat, char *prev)
{
    for (; *pat; pat++) {
        if (*pat == ' ' || *pat == *prev)
            continue;
        if (p >= n || s[p].c != *pat)
            return SIZE_MAX;
        *prev = *pat;
        p++;
    }
    return p;
}

static int gr_rule_at(const struct gr_rule *r, const struct gr_letter *s, size_t n, size_t p)
{
    const char *const *l, *const *t;

    for (l = r->lead; *l; l++) {
        char prev = 0;
        size_t q = gr_match_phrase(s, n, p, *l, &prev);

        if (q == SIZE_MAX)
            continue;
        if (r->tail == NULL) {
            if (s[q - 1].flags & GR_WE)
                return 1;
            continue;
        }
        for (t = r->tail; *t; t++) {
            char pv = prev;
            size_t e = gr_match_phrase(s, n, q, *t, &pv);

            if (e != SIZE_MAX && (s[e - 1].flags & GR_WE))
                return 1;
        }
    }
    return 0;
}

int guardrails_unsafe(const char *text, const char **category)
{
    struct gr_letter *s;
    size_t n, p, r;
    int hit = 0;

    if (category != NULL)
        *category = NULL;
    if (text == NULL || *text == '\0')
        return 0;
    s = xmalloc(strlen(text) * sizeof(*s));
    n = gr_normalise(text, s);
    for (p = 0; p < n && !hit; p++) {
        if (!(s[p].flags & GR_WS))
            continue;
        for (r = 0; r < sizeof(gr_rules) / sizeof(gr_rules[0]); r++) {
            if (gr_rule_at(&gr_rules[r], s, n, p)) {
                if (category != NULL)
                    *category = gr_rules[r].category;
                hit = 1;
                break;
            }
        }
    }
    free(s);
    return hit;
}

/* ---- code points -------------------------------------------------------- */

static int gr_cont(unsigned char c) { return (c & 0xC0) == 0x80; }

/* Length of the UTF-8 unit at z (z[0] != 0): the length of a valid,
 * shortest-form sequence, or 1 for an invalid byte. Reads no further than
 * the first byte that is not a continuation byte, so never past the NUL. */
static size_t gr_utf8_len(const unsigned char *z)
{
    unsigned char c = z[0];

    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        return gr_cont(z[1]) ? 2 : 1;
    if (c >= 0xE0 && c <= 0xEF) {
        unsigned char lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;

        return z[1] >= lo && z[1] <= hi && gr_cont(z[2]) ? 3 : 1;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        unsigned char lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;

        return z[1] >= lo && z[1] <= hi && gr_cont(z[2]) && gr_cont(z[3]) ? 4 : 1;
    }
    return 1;
}

char *guardrails_truncate_chars(const char *text, size_t max_chars, int *cut)
{
    const unsigned char *z = (const unsigned char *)(text ? text : "");
    size_t i = 0, chars = 0;

    while (z[i] && chars < max_chars) {
        i += gr_utf8_len(z + i);
        chars++;
    }
    if (cut != NULL)
        *cut = z[i] != '\0';
    return xstrndup((const char *)z, i);
}

size_t guardrails_char_count(const char *text)
{
    const unsigned char *z = (const unsigned char *)(text ? text : "");
    size_t i = 0, chars = 0;

    while (z[i]) {
        i += gr_utf8_len(z + i);
        chars++;
    }
    return chars;
}
