/*
 * buf.c - the growable byte buffer (buf.h). Owns nothing beyond the bytes of
 * each struct buf; never logs.
 */
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/util.h"

/* Make room for `more` bytes and the NUL. */
static void buf_reserve(struct buf *b, size_t more)
{
    size_t cap = b->cap ? b->cap : 64;

    if (b->n + more + 1 <= b->cap)
        return;
    while (cap < b->n + more + 1)
        cap *= 2;
    b->z = xrealloc(b->z, cap);
    b->cap = cap;
}

void buf_init(struct buf *b, size_t hint)
{
    b->z = NULL;
    b->n = b->cap = 0;
    buf_reserve(b, hint);
    b->z[0] = '\0';
}

void buf_put(struct buf *b, const void *p, size_t n)
{
    buf_reserve(b, n);
    if (n > 0)
        memcpy(b->z + b->n, p, n);
    b->n += n;
    b->z[b->n] = '\0';
}

void buf_puts(struct buf *b, const char *s)
{
    buf_put(b, s, strlen(s));
}

int buf_put_limited(struct buf *b, const void *p, size_t n, size_t limit)
{
    if (b->n > limit || n > limit - b->n)
        return -1;
    buf_put(b, p, n);
    return 0;
}

char *buf_take(struct buf *b)
{
    char *z = b->z;

    if (z == NULL)
        z = xstrdup("");
    b->z = NULL;
    b->n = b->cap = 0;
    return z;
}

void buf_free(struct buf *b)
{
    free(b->z);
    b->z = NULL;
    b->n = b->cap = 0;
}
