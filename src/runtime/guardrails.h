/*
 * guardrails.h - the input and output guardrails of the agent pipeline:
 * PII redaction, content safety, and length caps.
 *
 * Pure functions over UTF-8 text: no I/O, no logging, no allocation that
 * the caller does not free.
 */
#ifndef AM_GUARDRAILS_H
#define AM_GUARDRAILS_H

#include <stddef.h>

/* What guardrails_redact_pii found, by kind. */
struct guardrails_pii_counts {
    int email;      /* replaced by [REDACTED_EMAIL] */
    int phone;      /* replaced by [REDACTED_PHONE] */
    int card;       /* payment card numbers passing the Luhn check: [REDACTED_CC] */
    int national_id;/* national id numbers (US SSN form ddd-dd-dddd and the like): [REDACTED_SSN] */
};

/* Return a malloc'd copy of text with every e-mail address, phone number,
 * Luhn-valid card number and national id number replaced by its
 * placeholder; counts (may be NULL) says what was replaced. Never fails
 * (allocation failure aborts). */
char *guardrails_redact_pii(const char *text, struct guardrails_pii_counts *counts);

/* Streaming PII redaction: text arrives in pieces (a model's tokens) and
 * what is given back, concatenated, is exactly guardrails_redact_pii of
 * the whole text; no byte of a span that ends up redacted is ever given
 * back. What is held back is the tail since the last point where no match
 * can span: the word being written (an e-mail's local part is a run of
 * [A-Za-z0-9._%+-], so any word may still become one), or a run of digit
 * groups joined by single spaces (a card, an SSN or a phone number may be
 * written that way), plus one byte after a space that follows a digit and
 * after a non-ASCII byte (to see whether a group or a UTF-8 sequence goes
 * on). Everything before a space that follows a letter, or before a
 * punctuation byte that no match contains (",;!?\n" ...), goes out at
 * once. A stream is used by one thread. */
struct guardrails_stream;

/* A new stream (free with guardrails_stream_free). Never fails. */
struct guardrails_stream *guardrails_stream_new(void);
void guardrails_stream_free(struct guardrails_stream *s);

/* Feed the next n bytes (up to a NUL, if any). Returns the redacted text
 * that can go out now (malloc'd, NUL-terminated, maybe ""; caller frees),
 * its length in *outn. */
char *guardrails_stream_feed(struct guardrails_stream *s, const char *text, size_t n,
                             size_t *outn);

/* The end of the text: the rest, redacted (malloc'd; caller frees). */
char *guardrails_stream_finish(struct guardrails_stream *s, size_t *outn);

/* Bytes held back right now. */
size_t guardrails_stream_held(const struct guardrails_stream *s);

/* Content safety: 1 if text must be blocked, 0 if not. *category (may be
 * NULL) gets a static name of the rule that matched ("violence",
 * "self_harm", "weapons", "hate", "sexual_minors", "malware"). Matching is
 * case-insensitive, on word boundaries, and resists simple obfuscation
 * (repeated letters, inserted punctuation or spaces between letters). */
int guardrails_unsafe(const char *text, const char **category);

/* Cut text to at most max_chars Unicode code points (not bytes), never
 * splitting a UTF-8 sequence. Returns a malloc'd copy; *cut (may be NULL)
 * is 1 if anything was removed. */
char *guardrails_truncate_chars(const char *text, size_t max_chars, int *cut);

/* Number of Unicode code points in text (invalid bytes count one each). */
size_t guardrails_char_count(const char *text);

/* The refusal text an output blocked by content safety is replaced with. */
#define GUARDRAILS_REFUSAL "I can't help with that request."

#endif
