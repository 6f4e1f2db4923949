/*
 * error.c - filling struct am_error, and the one table of what each code
 * means to a client (its HTTP status and stable name). Never logs; see error.h.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "lib/error.h"
#include "lib/util.h"

/* Each code's HTTP status and stable snake_case name: the one table. */
static const struct {
    int code;
    int status;
    const char *name;
} error_table[] = {
    { AM_EBADJSON, 400, "invalid_json" },
    { AM_EBADREQ, 400, "bad_request" },
    { AM_EUNAUTH, 401, "unauthorized" },
    { AM_EFORBIDDEN, 403, "forbidden" },
    { AM_ENOTFOUND, 404, "not_found" },
    { AM_EAGENTNOTFOUND, 404, "agent_not_found" },
    { AM_EMETHOD, 405, "method_not_allowed" },
    { AM_EEXISTS, 409, "agent_exists" },
    { AM_EPLANLIMIT, 409, "plan_limit_reached" },
    { AM_EDEPLOYED, 409, "agent_deployed" },
    { AM_EALREADYDEPLOYED, 409, "already_deployed" },
    { AM_EALREADYPAUSED, 409, "already_paused" },
    { AM_ETRANSITION, 409, "invalid_transition" },
    { AM_ETOOLARGE, 413, "payload_too_large" },
    { AM_EMEDIATYPE, 415, "unsupported_media_type" },
    { AM_EVALIDATION, 422, "validation_error" },
    { AM_EINVALIDCONFIG, 422, "invalid_config" },
    { AM_EKEYMISSING, 422, "provider_key_missing" },
    { AM_ENOTDEPLOYED, 400, "agent_not_deployed" },
    { AM_EGUARDRAIL, 400, "guardrail_blocked" },
    { AM_ECONFLICT, 409, "conflict" },
    { AM_EKEYNOTFOUND, 404, "key_not_found" },
    { AM_EMEMBERNOTFOUND, 404, "member_not_found" },
    { AM_EVERSIONNOTFOUND, 404, "version_not_found" },
    { AM_ECANCELLED, 499, "client_closed" },
    { AM_ERATELIMIT, 429, "daily_limit_reached" },
    { AM_ESTREAMLIMIT, 429, "stream_limit_reached" },
    { AM_EPROVIDERREJECT, 422, "provider_rejected_request" },
    { AM_EINFLIGHT, 429, "too_many_in_flight" },
    { AM_ETESTLIMIT, 429, "daily_test_limit_reached" },
    { AM_ENOTIMPL, 501, "not_implemented" },
    { AM_EPROVIDER, 502, "provider_error" },
    { AM_ETIMEOUT, 504, "provider_timeout" },
    { AM_EUNAVAILABLE, 503, "service_unavailable" },
    { AM_EREGISTRYFULL, 503, "registry_full" },
    { AM_EDEADLOCK, 503, "service_unavailable" },
    { AM_EIO, 503, "storage_unavailable" },
    { AM_ENOMASTER, 503, "no_master" },
    { AM_ENOTACKED, 503, "replication_unavailable" },
};

/* The codes whose meaning does not depend on the operation that met them
 * (the replication group's): error_set uses this message, not the caller's. */
static const struct {
    int code;
    const char *message;
} fixed_messages[] = {
    { AM_ENOMASTER, "The replication group has no reachable master at the moment; retry" },
    { AM_ENOTACKED, "Too few hosts of the replication group confirmed this write; it may "
                    "or may not have been kept; retry" },
};

static int error_index(int code)
{
    size_t i;

    for (i = 0; i < sizeof(error_table) / sizeof(error_table[0]); i++)
        if (error_table[i].code == code)
            return (int)i;
    return -1;
}

int error_status(int code)
{
    int i = error_index(code);
    return i < 0 ? 500 : error_table[i].status;
}

const char *error_name(int code)
{
    int i = error_index(code);
    return i < 0 ? "internal_error" : error_table[i].name;
}

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
    size_t i;

    if (err == NULL)
        return code;
    err->code = code;
    for (i = 0; i < sizeof(fixed_messages) / sizeof(fixed_messages[0]); i++)
        if (fixed_messages[i].code == code) {
            util_strlcpy(err->message, fixed_messages[i].message, sizeof(err->message));
            return code;
        }
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
