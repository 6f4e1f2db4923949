/*
 * datetime.c - the datetime tool and its time-zone reader: TZif files
 * (RFC 8536) under DATETIME_ZONEINFO and the POSIX TZ rule in their footer.
 *
 * Owns nothing that outlives a call (a loaded zone is freed before the tool
 * returns). Must not touch TZ, the locale or the process environment, and
 * must not call localtime_r()/mktime(), which depend on them.
 *
 * Thread safety without touching TZ: setenv("TZ")/tzset() would race with
 * every getenv() in the process (libcurl reads proxy variables) and with
 * localtime_r() in other threads, and a mutex of ours cannot cover them. So
 * the zone file is read and interpreted here: the TZif file gives the
 * transitions; past the last one, the POSIX TZ rule in its footer
 * ("CET-1CEST,M3.5.0,M10.5.0/3") decides. Local time is then
 * gmtime_r(now + utoff), which is re-entrant. Leap-second ("right/") zones
 * are read as if the leap records were absent. UTC works even without a tz
 * database.
 */
#include <ctype.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "runtime/tools/datetime.h"
#include "runtime/tools/tool_common.h"
#include "lib/util.h"

#define TZ_FILE_MAX (256u * 1024)
#define TZ_MAX_TIMES 4096

int64_t datetime_days_from_civil(int64_t y, unsigned m, unsigned d)
{
    int64_t era;
    unsigned yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = (unsigned)(y - era * 400);
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static int64_t year_of_days(int64_t z)
{
    int64_t era, y;
    unsigned doe, yoe, doy, mp;

    z += 719468;
    era = (z >= 0 ? z : z - 146096) / 146097;
    doe = (unsigned)(z - era * 146097);
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    y = (int64_t)yoe + era * 400;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    return y + (mp >= 10);
}

static int64_t floor_div(int64_t a, int64_t b)
{
    return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

static bool is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* Day number (days since 1970-01-01) on which d falls in year y. */
static int64_t tz_date_day(const struct tz_date *d, int64_t y)
{
    static const int mdays[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    int64_t first, day;
    int dow, len;

    if (d->kind == 'J')
        return datetime_days_from_civil(y, 1, 1) + d->n - 1 + (is_leap(y) && d->n >= 60);
    if (d->kind == 'N')
        return datetime_days_from_civil(y, 1, 1) + d->n;
    first = datetime_days_from_civil(y, (unsigned)d->m, 1);
    dow = (int)((first % 7 + 7 + 4) % 7);     /* 1970-01-01 was a Thursday */
    day = (d->d - dow + 7) % 7 + (int64_t)(d->w - 1) * 7;
    len = mdays[d->m - 1] + (d->m == 2 && is_leap(y));
    while (day >= len)
        day -= 7;
    return first + day;
}

/* The type the rule gives at t. */
void datetime_tz_rule_at(const struct tz_rule *r, int64_t t, struct tz_type *out)
{
    int64_t y, start, end;
    bool dst;

    if (!r->has_dst) {
        *out = r->std;
        return;
    }
    y = year_of_days(floor_div(t + r->std.utoff, 86400));
    /* the start is written in standard time, the end in daylight time */
    start = tz_date_day(&r->start, y) * 86400 + r->start.secs - r->std.utoff;
    end = tz_date_day(&r->end, y) * 86400 + r->end.secs - r->dst.utoff;
    if (start < end)
        dst = t >= start && t < end;
    else                                       /* southern hemisphere */
        dst = !(t >= end && t < start);
    *out = dst ? r->dst : r->std;
}

/* Up to maxd decimal digits into *v; -1 when there is none. */
static int tzr_digits(const char **pp, int maxd, int *v)
{
    const char *p = *pp;
    int n = 0;

    *v = 0;
    while (n < maxd && isdigit((unsigned char)*p)) {
        *v = *v * 10 + (*p++ - '0');
        n++;
    }
    if (n == 0)
        return -1;
    *pp = p;
    return 0;
}

/* An abbreviation: 3+ letters, or <...> of letters, digits, '+', '-'. */
static int tzr_name(const char **pp, char *out, size_t cap)
{
    const char *p = *pp;
    size_t n = 0;
    bool quoted = *p == '<';

    if (quoted)
        p++;
    while (quoted ? (isalnum((unsigned char)*p) || *p == '+' || *p == '-')
                  : isalpha((unsigned char)*p)) {
        if (n + 1 < cap)
            out[n++] = *p;
        p++;
    }
    if (quoted && *p++ != '>')
        return -1;
    if (n < 3)
        return -1;
    out[n] = '\0';
    *pp = p;
    return 0;
}

/* [+-]hh[:mm[:ss]] into seconds, hours at most 167 (RFC 8536 extension). */
static int tzr_hms(const char **pp, int32_t *secs)
{
    const char *p = *pp;
    int sign = 1, h, m = 0, s = 0;

    if (*p == '+' || *p == '-')
        sign = *p++ == '-' ? -1 : 1;
    if (tzr_digits(&p, 3, &h) < 0 || h > 167)
        return -1;
    if (*p == ':') {
        p++;
        if (tzr_digits(&p, 2, &m) < 0 || m > 59)
            return -1;
        if (*p == ':') {
            p++;
            if (tzr_digits(&p, 2, &s) < 0 || s > 59)
                return -1;
        }
    }
    *secs = sign * (h * 3600 + m * 60 + s);
    *pp = p;
    return 0;
}

static int tzr_date(const char **pp, struct tz_date *d)
{
    const char *p = *pp;

    memset(d, 0, sizeof(*d));
    d->kind = *p == 'J' || *p == 'M' ? *p++ : 'N';
    if (d->kind == 'M') {
        if (tzr_digits(&p, 2, &d->m) < 0 || d->m < 1 || d->m > 12 || *p++ != '.' ||
            tzr_digits(&p, 1, &d->w) < 0 || d->w < 1 || d->w > 5 || *p++ != '.' ||
            tzr_digits(&p, 1, &d->d) < 0 || d->d > 6)
            return -1;
    } else if (tzr_digits(&p, 3, &d->n) < 0 || d->n > 365 || (d->kind == 'J' && d->n < 1)) {
        return -1;
    }
    d->secs = 7200;
    if (*p == '/') {
        p++;
        if (tzr_hms(&p, &d->secs) < 0)
            return -1;
    }
    *pp = p;
    return 0;
}

/* Parse a POSIX TZ string (offsets there are west-positive). */
int datetime_tz_rule_parse(const char *s, struct tz_rule *r)
{
    const char *p = s;
    int32_t off;

    memset(r, 0, sizeof(*r));
    if (tzr_name(&p, r->std.abbr, sizeof(r->std.abbr)) < 0 || tzr_hms(&p, &off) < 0)
        return -1;
    r->std.utoff = -off;
    if (*p == '\0')
        return 0;
    if (tzr_name(&p, r->dst.abbr, sizeof(r->dst.abbr)) < 0)
        return -1;
    r->has_dst = true;
    r->dst.isdst = true;
    r->dst.utoff = r->std.utoff + 3600;
    if (*p != ',' && *p != '\0') {
        if (tzr_hms(&p, &off) < 0)
            return -1;
        r->dst.utoff = -off;
    }
    if (*p == '\0') {                          /* POSIX default: US rules */
        p = ",M3.2.0,M11.1.0";
    }
    if (*p++ != ',' || tzr_date(&p, &r->start) < 0 || *p++ != ',' || tzr_date(&p, &r->end) < 0)
        return -1;
    return *p == '\0' ? 0 : -1;
}

static int64_t be64(const unsigned char *p)
{
    return (int64_t)((uint64_t)tool_be32(p) << 32 | tool_be32(p + 4));
}

void datetime_tz_free(struct tz_info *z)
{
    if (z == NULL)
        return;
    free(z->times);
    free(z->idx);
    free(z);
}

/* Parse the data block at p (n bytes left) with w-byte times; *used gets its
 * size. The counts come from the header just before it. */
static int tz_parse_block(const unsigned char *p, size_t n, int w, struct tz_info *z,
                          size_t *used)
{
    uint32_t isut = tool_be32(p + 20), isstd = tool_be32(p + 24), leap = tool_be32(p + 28);
    uint32_t timecnt = tool_be32(p + 32), typecnt = tool_be32(p + 36), charcnt = tool_be32(p + 40);
    const unsigned char *q, *types, *chars;
    size_t need, i;

    if (timecnt > TZ_MAX_TIMES || typecnt == 0 || typecnt > TZ_MAX_TYPES || charcnt == 0 ||
        charcnt > 4096 || leap > 4096 || isstd > typecnt || isut > typecnt)
        return -1;
    need = 44 + (size_t)timecnt * (w + 1) + typecnt * 6 + charcnt + leap * (w + 4) + isstd + isut;
    if (need > n)
        return -1;
    q = p + 44;
    types = q + (size_t)timecnt * (w + 1);
    chars = types + typecnt * 6;
    free(z->times);
    free(z->idx);
    z->times = xcalloc(timecnt ? timecnt : 1, sizeof(int64_t));
    z->idx = xcalloc(timecnt ? timecnt : 1, 1);
    for (i = 0; i < timecnt; i++) {
        z->times[i] = w == 8 ? be64(q + i * 8) : (int32_t)tool_be32(q + i * 4);
        z->idx[i] = q[(size_t)timecnt * w + i];
        if (z->idx[i] >= typecnt || (i > 0 && z->times[i] <= z->times[i - 1]))
            return -1;
    }
    for (i = 0; i < typecnt; i++) {
        const unsigned char *t = types + i * 6;
        size_t a = t[5], k = 0;

        z->types[i].utoff = (int32_t)tool_be32(t);
        z->types[i].isdst = t[4] != 0;
        if (a >= charcnt || z->types[i].utoff < -89999 || z->types[i].utoff > 93599)
            return -1;
        while (a + k < charcnt && chars[a + k] != '\0' && k + 1 < sizeof(z->types[i].abbr)) {
            z->types[i].abbr[k] = (char)chars[a + k];
            k++;
        }
        z->types[i].abbr[k] = '\0';
    }
    z->ntimes = timecnt;
    z->ntypes = typecnt;
    *used = need;
    return 0;
}

/* Parse a whole TZif file: the 64-bit block and footer for version 2+, the
 * 32-bit block for version 1. */
int datetime_tz_parse(const unsigned char *p, size_t n, struct tz_info *z)
{
    size_t used, i;
    char footer[128];

    if (n < 44 || memcmp(p, "TZif", 4) != 0 || tz_parse_block(p, n, 4, z, &used) < 0)
        return -1;
    if (p[4] == '\0')
        return 0;
    p += used;
    n -= used;
    if (n < 44 || memcmp(p, "TZif", 4) != 0 || tz_parse_block(p, n, 8, z, &used) < 0)
        return -1;
    p += used;
    n -= used;
    if (n < 2 || p[0] != '\n')
        return 0;
    for (i = 1; i < n && p[i] != '\n' && i < sizeof(footer); i++)
        footer[i - 1] = (char)p[i];
    if (i >= n || p[i] != '\n' || i == 1)
        return 0;
    footer[i - 1] = '\0';
    z->has_rule = datetime_tz_rule_parse(footer, &z->rule) == 0;
    return 0;
}

/* Zone names are relative paths of [A-Za-z0-9_+-] components under the tz
 * database; ".", ".." and empty components are refused. */
static bool tz_name_ok(const char *name)
{
    const char *c = name;
    size_t n = strlen(name);

    if (n == 0 || n > 128 || name[0] == '/' || name[n - 1] == '/')
        return false;
    for (; *c; c++) {
        if (*c == '/') {
            if (c[1] == '/')
                return false;
            continue;
        }
        if (!isalnum((unsigned char)*c) && *c != '_' && *c != '+' && *c != '-' && *c != '.')
            return false;
        if (*c == '.' && (c == name || c[-1] == '/'))
            return false;                      /* ".", "..", ".hidden" */
    }
    return true;
}

/* Load zone name; NULL when it is not a readable TZif file under the tz
 * database. UTC and GMT are built in for systems without one. Caller frees
 * with datetime_tz_free(). */
struct tz_info *datetime_tz_load(const char *name)
{
    struct tz_info *z = NULL;
    unsigned char *buf = NULL;
    char path[256];
    struct stat st;
    size_t got = 0;
    ssize_t r;
    int fd = -1;

    if (!tz_name_ok(name) || util_snprintf(path, sizeof(path), "%s/%s", DATETIME_ZONEINFO, name) < 0)
        return NULL;
    z = xcalloc(1, sizeof(*z));
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        if (strcmp(name, "UTC") != 0 && strcmp(name, "Etc/UTC") != 0 && strcmp(name, "GMT") != 0)
            goto fail;
        z->ntypes = 1;
        util_strlcpy(z->types[0].abbr, name[0] == 'G' ? "GMT" : "UTC", sizeof(z->types[0].abbr));
        return z;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size < 44 || st.st_size > (off_t)TZ_FILE_MAX)
        goto fail;
    buf = xmalloc((size_t)st.st_size);
    while (got < (size_t)st.st_size && (r = read(fd, buf + got, (size_t)st.st_size - got)) > 0)
        got += (size_t)r;
    if (got != (size_t)st.st_size || datetime_tz_parse(buf, got, z) < 0)
        goto fail;
    free(buf);
    close(fd);
    return z;
fail:
    free(buf);
    if (fd >= 0)
        close(fd);
    datetime_tz_free(z);
    return NULL;
}

/* The local time type in effect at t (RFC 8536 section 3.2, and glibc's
 * choice before the first transition: the first standard-time type). */
void datetime_tz_at(const struct tz_info *z, int64_t t, struct tz_type *out)
{
    size_t lo, hi, i;

    if ((z->ntimes == 0 || t >= z->times[z->ntimes - 1]) && z->has_rule) {
        datetime_tz_rule_at(&z->rule, t, out);
        return;
    }
    if (z->ntimes == 0 || t < z->times[0]) {
        for (i = 0; i < z->ntypes && z->types[i].isdst; i++)
            ;
        *out = z->types[i < z->ntypes ? i : 0];
        return;
    }
    lo = 0;
    hi = z->ntimes;                            /* times[lo] <= t < times[hi] */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;

        if (z->times[mid] <= t)
            lo = mid;
        else
            hi = mid;
    }
    *out = z->types[z->idx[lo]];
}

/* 0 when every conversion in f is allowed, else the first one that is not,
 * or -1 for a '%' at the end ('s' is left out: it needs mktime and TZ). */
static int tz_format_check(const char *f)
{
    static const char ok[] = "aAbBcCdDeFgGhHIjklmMnpPrRStTuUVwWxXyYzZ%";

    for (; *f; f++) {
        if (*f != '%')
            continue;
        f++;
        while (*f && strchr("_-0^#", *f))
            f++;
        while (isdigit((unsigned char)*f))
            f++;
        if (*f == 'E' || *f == 'O')
            f++;
        if (*f == '\0')
            return -1;
        if (!strchr(ok, *f))
            return (unsigned char)*f;
    }
    return 0;
}

/* "+09:00" (with ":ss" only for the odd historical offset). */
void datetime_offset_str(int32_t utoff, char *buf, size_t cap)
{
    int32_t a = utoff < 0 ? -utoff : utoff;

    if (a % 60)
        snprintf(buf, cap, "%c%02d:%02d:%02d", utoff < 0 ? '-' : '+', (int)(a / 3600),
                 (int)(a / 60 % 60), (int)(a % 60));
    else
        snprintf(buf, cap, "%c%02d:%02d", utoff < 0 ? '-' : '+', (int)(a / 3600),
                 (int)(a / 60 % 60));
}

struct json_object *datetime_tool(struct json_object *args, const struct tools_ctx *ctx)
{
    static const char *const wday[] = { "Sunday", "Monday", "Tuesday", "Wednesday",
                                        "Thursday", "Friday", "Saturday" };
    struct json_object *err = NULL, *o;
    const char *zone, *fmt;
    struct tz_info *z;
    struct tz_type ty;
    struct tm tm;
    char off[16], iso[64], out[512];
    time_t local;
    int64_t now = util_now();
    int bad;

    (void)ctx;
    zone = tool_arg_str(args, "timezone", false, 128, NULL, &err);
    if (err)
        return err;
    fmt = tool_arg_str(args, "format", false, 128, NULL, &err);
    if (err)
        return err;
    if (zone == NULL || *zone == '\0' || strcasecmp(zone, "UTC") == 0 || strcmp(zone, "Z") == 0)
        zone = "UTC";                          /* models write "utc" too */
    if (fmt && (bad = tz_format_check(fmt)) != 0)
        return bad < 0 ? tool_reply_error("format ends with an incomplete '%%' directive")
                       : bad >= 0x80 || !isprint(bad)
                             ? tool_reply_error("unsupported format directive (byte 0x%02X)", bad)
                             : tool_reply_error("unsupported format directive '%%%c'", bad);
    if ((z = datetime_tz_load(zone)) == NULL)
        return tool_reply_error("unknown time zone '%s'", zone);
    datetime_tz_at(z, now, &ty);
    datetime_tz_free(z);
    local = (time_t)(now + ty.utoff);
    if (gmtime_r(&local, &tm) == NULL)
        return tool_reply_error("time out of range");
    tm.tm_isdst = ty.isdst;
    tm.tm_gmtoff = ty.utoff;
    tm.tm_zone = ty.abbr;
    datetime_offset_str(ty.utoff, off, sizeof(off));
    snprintf(iso, sizeof(iso), "%04d-%02d-%02dT%02d:%02d:%02d%s", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, off);
    o = json_object_new_object();
    json_object_object_add(o, "timezone", json_object_new_string(zone));
    json_object_object_add(o, "iso8601", json_object_new_string(iso));
    json_object_object_add(o, "unix", json_object_new_int64(now));
    json_object_object_add(o, "utc_offset", json_object_new_string(off));
    json_object_object_add(o, "abbreviation", tool_json_str_clean(ty.abbr, strlen(ty.abbr)));
    json_object_object_add(o, "dst", json_object_new_boolean(ty.isdst));
    json_object_object_add(o, "weekday", json_object_new_string(wday[tm.tm_wday]));
    if (fmt && *fmt) {
        size_t n;

        /* fmt is the model's, but tz_format_check() let only plain
         * conversions through, and strftime reads nothing but tm. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
        n = strftime(out, sizeof(out), fmt, &tm);
#pragma GCC diagnostic pop

        if (n == 0) {
            json_object_put(o);
            return tool_reply_error("format produces no output or more than %zu bytes", sizeof(out) - 1);
        }
        json_object_object_add(o, "formatted", tool_json_str_clean(out, n));
    }
    return tool_reply_result(o);
}

