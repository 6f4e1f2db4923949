/*
 * util.c - allocation wrappers (abort on failure), bounded strings, time,
 * and the one logging function.
 *
 * Logging writes one line per call to stderr, prefixed with the syslog
 * priority "<N>" so journald files it at the right level, and with the
 * source position of the caller.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sodium.h>
#include "lib/util.h"

static int log_level = LOG_LVL_INFO;
static char log_ident[32] = "astromesh-cloudd";

static void die_oom(size_t n)
{
    fprintf(stderr, "<2>%s[%d]: out of memory allocating %zu bytes\n",
            log_ident, (int)getpid(), n);
    abort();
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        die_oom(n);
    return p;
}

void *xcalloc(size_t nmemb, size_t size)
{
    void *p = calloc(nmemb ? nmemb : 1, size ? size : 1);
    if (p == NULL)
        die_oom(nmemb * size);
    return p;
}

void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL)
        die_oom(n);
    return q;
}

char *xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t n)
{
    char *p = xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

size_t util_strlcpy(char *dst, const char *src, size_t cap)
{
    size_t len = strlen(src);
    size_t n = len < cap - 1 ? len : cap - 1;

    memcpy(dst, src, n);
    dst[n] = '\0';
    return len;
}

int util_snprintf(char *dst, size_t cap, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(dst, cap, fmt, ap);
    va_end(ap);
    return (n < 0 || (size_t)n >= cap) ? -1 : 0;
}

void util_rfc3339(int64_t t, char *buf, size_t cap)
{
    struct tm tm;
    time_t tt = (time_t)t;

    gmtime_r(&tt, &tm);
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int64_t util_now(void)
{
    return (int64_t)time(NULL);
}

uint64_t util_monotonic_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void log_set_level(int level)
{
    log_level = level;
}

void log_set_ident(const char *ident)
{
    util_strlcpy(log_ident, ident, sizeof(log_ident));
}

void log_write(int level, const char *file, int line, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    if (level > log_level)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* One write per line so lines from several processes do not interleave. */
    fprintf(stderr, "<%d>%s[%d]: %s (%s:%d)\n", level, log_ident, (int)getpid(),
            msg, file, line);
}

void util_random_hex(char *out, size_t cap, size_t nbytes)
{
    unsigned char buf[64];

    if (nbytes > sizeof(buf))
        nbytes = sizeof(buf);
    if (cap < 2 * nbytes + 1)
        nbytes = (cap - 1) / 2;
    randombytes_buf(buf, nbytes);
    sodium_bin2hex(out, cap, buf, nbytes);
}
