/*
 * fuzz.h - what every libFuzzer target in tests/fuzz shares: a NUL-
 * terminated copy of the input. Owns nothing else; a target never writes
 * files, never opens sockets and never keeps state between inputs.
 */
#ifndef AM_FUZZ_H
#define AM_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "lib/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* data as a malloc'd C string (caller frees); embedded NULs stay, so a
 * target sees them as the parser would through a length or a strlen. */
static inline char *fuzz_cstr(const uint8_t *data, size_t size)
{
    char *s = xmalloc(size + 1);

    if (size > 0)
        memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

#endif
