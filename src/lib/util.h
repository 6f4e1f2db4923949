/*
 * util.h - allocation wrappers that abort on failure, bounded string
 * helpers, time formatting and logging.
 *
 * Allocation failure is not an error path in this project: the worker logs
 * one line and aborts, the supervisor restarts it and runs failchk.
 */
#ifndef AM_UTIL_H
#define AM_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

void *xmalloc(size_t n);
void *xcalloc(size_t nmemb, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

/* Copy src into dst (capacity cap, cap > 0), always NUL-terminated.
 * Returns the length of src; a result >= cap means truncation. */
size_t util_strlcpy(char *dst, const char *src, size_t cap);

/* snprintf that returns 0 if it fit, -1 if truncated. */
int util_snprintf(char *dst, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Format epoch seconds as RFC 3339 UTC ("2026-03-17T12:00:00Z") into buf
 * (at least 21 bytes). */
void util_rfc3339(int64_t t, char *buf, size_t cap);

/* Random hex id of 2*nbytes chars (libsodium's randombytes; sodium_init
 * must have run) into out (cap >= 2*nbytes+1, else fewer bytes, to fit). */
void util_random_hex(char *out, size_t cap, size_t nbytes);

/* Current wall-clock time in epoch seconds / monotonic milliseconds. */
int64_t util_now(void);
uint64_t util_monotonic_ms(void);

/* Log levels; messages go to stderr (journal under systemd) with a
 * "<N>" syslog priority prefix that journald understands. */
enum log_level { LOG_LVL_ERROR = 3, LOG_LVL_WARN = 4, LOG_LVL_INFO = 6, LOG_LVL_DEBUG = 7 };

void log_set_level(int level);
void log_set_ident(const char *ident);
void log_write(int level, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define log_error(...) log_write(LOG_LVL_ERROR, __FILE__, __LINE__, __VA_ARGS__)
#define log_warn(...)  log_write(LOG_LVL_WARN, __FILE__, __LINE__, __VA_ARGS__)
#define log_info(...)  log_write(LOG_LVL_INFO, __FILE__, __LINE__, __VA_ARGS__)
#define log_debug(...) log_write(LOG_LVL_DEBUG, __FILE__, __LINE__, __VA_ARGS__)

#endif
