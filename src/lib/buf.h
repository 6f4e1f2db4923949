/*
 * buf.h - a growable, NUL-terminated byte buffer: the one way this project
 * builds a string of unknown length (rendered text, an HTTP body read from a
 * peer, an e-mail message).
 *
 * A struct buf is a plain value: zero-initialise it (or buf_init with a size
 * hint), put bytes, then either buf_take() the string or buf_free() it.
 * Growth goes through xrealloc, so running out of memory aborts (util.h);
 * the only failure a caller sees is its own limit (buf_put_limited).
 */
#ifndef AM_BUF_H
#define AM_BUF_H

#include <stddef.h>

struct buf {
    char *z;        /* from xmalloc/xrealloc; NUL-terminated once cap > 0; NULL while empty */
    size_t n;       /* bytes used, not counting the NUL */
    size_t cap;     /* bytes allocated */
};

/* Start b empty with room for at least hint bytes (allocates, so b->z is
 * "" and never NULL afterwards). */
void buf_init(struct buf *b, size_t hint);

/* Append n bytes of p (which may hold NULs). */
void buf_put(struct buf *b, const void *p, size_t n);

/* Append the string s. */
void buf_puts(struct buf *b, const char *s);

/* Append n bytes of p unless the buffer would then hold more than limit
 * bytes: returns 0, or -1 with b unchanged. */
int buf_put_limited(struct buf *b, const void *p, size_t n, size_t limit);

/* Hand the string over: returns b->z ("" if nothing was ever put; caller
 * frees with free()) and leaves b empty, as if zero-initialised. */
char *buf_take(struct buf *b);

/* Free the bytes and leave b empty. b->z may be NULL. */
void buf_free(struct buf *b);

#endif
