/*
 * datetime.h - the datetime tool, and its time-zone reader exposed for the
 * tool table and the unit test (which checks it against glibc). Only
 * datetime.c and the test use the tz_* structures.
 */
#ifndef AM_DATETIME_H
#define AM_DATETIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <json-c/json.h>
#include "runtime/tools/tools.h"

#define DATETIME_ZONEINFO "/usr/share/zoneinfo"
#define TZ_MAX_TYPES 256

struct tz_type {
    int32_t utoff;        /* seconds east of UTC */
    bool isdst;
    char abbr[16];
};

struct tz_date {          /* one end of a POSIX DST rule */
    char kind;            /* 'J' (1..365, no Feb 29), 'N' (0..365), 'M' (month.week.day) */
    int n, m, w, d;
    int32_t secs;         /* local time of day of the change, may exceed 24 h */
};

struct tz_rule {          /* "STDoffset[DST[offset][,start[/time],end[/time]]]" */
    struct tz_type std, dst;
    bool has_dst;
    struct tz_date start, end;
};

struct tz_info {
    int64_t *times;       /* transitions, ascending (malloc) */
    unsigned char *idx;   /* type index of each transition (malloc) */
    size_t ntimes;
    struct tz_type types[TZ_MAX_TYPES];
    size_t ntypes;
    bool has_rule;        /* footer rule, used at and after the last transition */
    struct tz_rule rule;
};

/* Days since 1970-01-01 of the civil date y-m-d (proleptic Gregorian). */
int64_t datetime_days_from_civil(int64_t y, unsigned m, unsigned d);

/* Parse a POSIX TZ string (offsets there are west-positive): 0, or -1. */
int datetime_tz_rule_parse(const char *s, struct tz_rule *r);

/* The type rule r gives at instant t (seconds since the epoch). */
void datetime_tz_rule_at(const struct tz_rule *r, int64_t t, struct tz_type *out);

/* Parse a whole TZif file p[0..n) into z (the 64-bit block and footer for
 * version 2+, the 32-bit block for version 1): 0, or -1 when malformed. z's
 * arrays are replaced, so z must be zeroed or from an earlier parse. */
int datetime_tz_parse(const unsigned char *p, size_t n, struct tz_info *z);

/* Load zone name; NULL when it is not a readable TZif file under the tz
 * database. UTC and GMT are built in for systems without one. Caller frees
 * with datetime_tz_free(). */
struct tz_info *datetime_tz_load(const char *name);

/* Free z and its arrays; NULL is allowed. */
void datetime_tz_free(struct tz_info *z);

/* The local time type in effect at instant t. */
void datetime_tz_at(const struct tz_info *z, int64_t t, struct tz_type *out);

/* "+09:00" into buf (with ":ss" only for the odd historical offset). */
void datetime_offset_str(int32_t utoff, char *buf, size_t cap);

/* The current time in args "timezone" (default UTC), optionally strftime'd
 * with args "format". Returns a new reply (caller puts). */
struct json_object *datetime_tool(struct json_object *args, const struct tools_ctx *ctx);

#endif
