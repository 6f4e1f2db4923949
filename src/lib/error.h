/*
 * error.h - the project-wide error codes and the error struct that carries
 * a failure from an inner module to the boundary that reports it.
 *
 * Inner modules (store, wizard, config, registry, auth) never log: they fill
 * a struct am_error and return its negative code. The HTTP layer maps each
 * code to a status and a stable snake_case name (one table, in http.c);
 * the supervisor and the config loader log it.
 */
#ifndef AM_ERROR_H
#define AM_ERROR_H

#include <stddef.h>

enum am_err {
    AM_OK = 0,
    AM_EBADJSON = -1,         /* 400 invalid_json */
    AM_EBADREQ = -2,          /* 400 bad_request */
    AM_EUNAUTH = -3,          /* 401 unauthorized */
    AM_EFORBIDDEN = -4,       /* 403 forbidden */
    AM_ENOTFOUND = -5,        /* 404 not_found */
    AM_EAGENTNOTFOUND = -6,   /* 404 agent_not_found */
    AM_EMETHOD = -7,          /* 405 method_not_allowed */
    AM_EEXISTS = -8,          /* 409 agent_exists */
    AM_EPLANLIMIT = -9,       /* 409 plan_limit_reached */
    AM_EDEPLOYED = -10,       /* 409 agent_deployed (edit while deployed) */
    AM_EALREADYDEPLOYED = -11,/* 409 already_deployed */
    AM_EALREADYPAUSED = -12,  /* 409 already_paused */
    AM_ETRANSITION = -13,     /* 409 invalid_transition */
    AM_ETOOLARGE = -14,       /* 413 payload_too_large */
    AM_EMEDIATYPE = -15,      /* 415 unsupported_media_type */
    AM_EVALIDATION = -16,     /* 422 validation_error (+details) */
    AM_EINVALIDCONFIG = -17,  /* 422 invalid_config (+details) */
    AM_EKEYMISSING = -18,     /* 422 provider_key_missing */
    AM_ENOTDEPLOYED = -19,    /* 400 agent_not_deployed */
    AM_ERATELIMIT = -20,      /* 429 daily_limit_reached */
    AM_ENOTIMPL = -21,        /* 501 not_implemented */
    AM_EPROVIDER = -22,       /* 502 provider_error */
    AM_ETIMEOUT = -23,        /* 504 provider_timeout */
    AM_EUNAVAILABLE = -24,    /* 503 service_unavailable */
    AM_EREGISTRYFULL = -25,   /* 503 registry_full */
    AM_EDEADLOCK = -26,       /* internal: retry the transaction */
    AM_EIO = -27,             /* 503 storage_unavailable (database unusable) */
    AM_EINTERNAL = -28,       /* 500 internal_error: a bug, never client input */
    AM_ECONFIG = -29,         /* config file error (never reaches HTTP) */
    AM_ENOENT = -30,          /* internal: key not found in a store lookup */
    AM_EGUARDRAIL = -31,      /* 400 guardrail_blocked */
    AM_ECONFLICT = -32,       /* 409 conflict (a member already there, the last owner, ...) */
    AM_EKEYNOTFOUND = -33,    /* 404 key_not_found (an API key or a provider key) */
    AM_EMEMBERNOTFOUND = -34, /* 404 member_not_found */
    AM_ECANCELLED = -35,      /* 499 client_closed: the client went away mid-run (never sent) */
    AM_EVERSIONNOTFOUND = -36,/* 404 version_not_found */
    AM_ESTREAMLIMIT = -37,    /* 429 stream_limit_reached: the org's max_streams are open */
    AM_EPROVIDERREJECT = -38, /* 422 provider_rejected_request: the provider refused the request itself */
    AM_EINFLIGHT = -39,       /* 429 too_many_in_flight: the org's limits.max_in_flight runs are running */
    AM_ETESTLIMIT = -40,      /* 429 daily_test_limit_reached: the org's tests_per_day */
    AM_ENOMASTER = -41,       /* 503 no_master: a write, and the group has no master now */
    AM_ENOTACKED = -42,       /* 503 replication_unavailable: too few hosts confirmed a write */
    AM_ERR_LAST = -43
};

#define AM_ERROR_MSG_MAX 256
#define AM_ERROR_DETAILS_MAX 32

struct am_error_detail {
    char field[96];
    char problem[160];
};

struct am_error {
    int code;                                  /* enum am_err, AM_OK if none */
    char message[AM_ERROR_MSG_MAX];            /* for humans */
    int ndetails;                              /* used entries of details */
    struct am_error_detail details[AM_ERROR_DETAILS_MAX];
};

/* The HTTP status of code (500 if the code has none: a bug) and its stable
 * snake_case name ("internal_error" if none). The one table; http.c sends
 * them, the run log records the name. */
int error_status(int code);
const char *error_name(int code);

/* Reset err to "no error". err may be NULL. */
void error_clear(struct am_error *err);

/* Set code and a printf-formatted message; returns code so callers can
 * write `return error_set(err, AM_EBADREQ, "...")`. err may be NULL. The
 * replication group's codes (AM_ENOMASTER, AM_ENOTACKED) get error.c's own
 * message whatever fmt says: they mean the same for every operation. */
int error_set(struct am_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Append one validation detail (silently dropped past the maximum). */
void error_add_detail(struct am_error *err, const char *field,
                      const char *problem);

#endif
