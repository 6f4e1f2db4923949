/*
 * error.c - filling struct am_error. Never logs; see error.h.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "lib/error.h"
#include "lib/util.h"

void error_clear(struct am_error *err)
{
    if (err == NULL)
        return;
    err->code = AM_OK;
    err->message[0] = '\0';
    err->ndetails = 0;
}

int error_set(struct am_error *err, int code, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL)
        return code;
    err->code = code;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
    return code;
}

void error_add_detail(struct am_error *err, const char *field, const char *problem)
{
    struct am_error_detail *d;

    if (err == NULL || err->ndetails >= AM_ERROR_DETAILS_MAX)
        return;
    d = &err->details[err->ndetails++];
    util_strlcpy(d->field, field, sizeof(d->field));
    util_strlcpy(d->problem, problem, sizeof(d->problem));
}
