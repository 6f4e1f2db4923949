/*
 * check_tools.c - unit tests for src/runtime/tools/, the built-in tools.
 *
 * The pieces worth testing on their own are reached through the tool
 * files' internal headers (src/runtime/tools/): the TZif reader and POSIX TZ
 * rule evaluator (datetime.h), checked instant by instant against glibc's
 * localtime_r on the same zone files, the private-address classifier and
 * the opensocket hook (http_client.h), the allowed-host matcher
 * (tool_common.h) and the mail header encoders (smtp.h). Everything links
 * from libastromesh.a like any other caller.
 *
 * Network tools run against real peers started by the test on 127.0.0.1
 * (a thread with a listening socket on a free port): a canned HTTP server, a
 * server that never answers, a SearxNG-shaped JSON endpoint and a small
 * SMTP server that records the envelope and the DATA it received. The
 * text_summarizer and translator tests use a stub of the tools_llm_fn
 * callback, which is the tool's only way out.
 *
 * Run under valgrind: CK_FORK=no valgrind --leak-check=full --error-exitcode=1
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <curl/curl.h>
#include <json-c/json.h>
#include "runtime/tools/tools.h"
#include "runtime/tools/tool_common.h"
#include "runtime/tools/datetime.h"
#include "runtime/tools/http_client.h"
#include "runtime/tools/smtp.h"
#include "runtime/tools/file_reader.h"
#include "lib/util.h"

#include <check.h>
#include <ftw.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/time.h>

#define NCASES(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* ---- calling a tool ------------------------------------------------------ */

static struct tools_settings settings;
static char tmp_root[128];

static void settings_reset(void)
{
    settings.web_search_url = "";
    settings.smtp_url = "";
    settings.smtp_from = "";
    settings.file_root = "";
    settings.http_timeout_ms = 5000;
    settings.http_max_bytes = 1024 * 1024;
}

/* Call tool and return its reply parsed (caller puts). The reply must be a
 * JSON object of valid UTF-8 holding exactly one of "result" or "error". */
static struct json_object *call_ex(int tool, const char *args, const char *tool_config,
                                   tools_llm_fn llm, void *llm_arg)
{
    struct json_object *cfg = json_tokener_parse(tool_config ? tool_config : "{}"), *reply;
    struct tools_ctx ctx = { &settings, cfg, llm, llm_arg };
    char *out = NULL;
    int has_result, has_error;

    ck_assert_ptr_nonnull(cfg);
    ck_assert_int_eq(tools_call(tool, args, &ctx, &out), 0);
    ck_assert_ptr_nonnull(out);
    ck_assert_msg(tool_utf8_valid(out, strlen(out)), "reply is not UTF-8: %s", out);
    reply = json_tokener_parse(out);
    ck_assert_msg(reply != NULL && json_object_is_type(reply, json_type_object),
                  "reply is not a JSON object: %s", out);
    has_result = json_object_object_get_ex(reply, "result", NULL);
    has_error = json_object_object_get_ex(reply, "error", NULL);
    ck_assert_msg(has_result != has_error, "reply has neither or both: %s", out);
    free(out);
    json_object_put(cfg);
    return reply;
}

static struct json_object *call(int tool, const char *args, const char *tool_config)
{
    return call_ex(tool, args, tool_config, NULL, NULL);
}

/* The error message of a reply, or NULL when it is a result. */
static const char *err_of(struct json_object *reply)
{
    struct json_object *e;

    return json_object_object_get_ex(reply, "error", &e) ? json_object_get_string(e) : NULL;
}

static struct json_object *res_of(struct json_object *reply)
{
    struct json_object *r = NULL;

    ck_assert_msg(json_object_object_get_ex(reply, "result", &r), "expected a result, got %s",
                  json_object_to_json_string(reply));
    return r;
}

static const char *str_at(struct json_object *o, const char *key)
{
    struct json_object *v = NULL;

    ck_assert_msg(json_object_object_get_ex(o, key, &v), "no '%s' in %s", key,
                  json_object_to_json_string(o));
    return json_object_get_string(v);
}

static struct json_object *obj_at(struct json_object *o, const char *key)
{
    struct json_object *v = NULL;

    ck_assert_msg(json_object_object_get_ex(o, key, &v), "no '%s' in %s", key,
                  json_object_to_json_string(o));
    return v;
}

/* Assert the reply is an error whose message contains want. */
#define ck_assert_tool_error(reply, want)                                                   \
    do {                                                                                    \
        const char *e_ = err_of(reply);                                                     \
        ck_assert_msg(e_ != NULL, "expected error '%s', got %s", (want),                    \
                      json_object_to_json_string(reply));                                   \
        ck_assert_msg(strstr(e_, (want)) != NULL, "error '%s' lacks '%s'", e_, (want));     \
    } while (0)

/* ---- a tiny server on 127.0.0.1, in a thread ----------------------------- */

enum fake_mode {
    FAKE_CANNED,                 /* answer each request with response, close */
    FAKE_CANNED_HOLD,            /* send response, then hold the connection open */
    FAKE_SILENT,                 /* read the request, never answer */
    FAKE_SMTP                    /* a one-message SMTP server */
};

struct fake {
    int lfd;
    int port;
    enum fake_mode mode;
    const char *response;        /* FAKE_CANNED: sent after each request */
    size_t response_len;
    atomic_int stop;
    int conns;                   /* connections accepted */
    char req[65536];             /* first HTTP request, or the SMTP DATA */
    size_t req_len;
    char envelope[2048];         /* SMTP: MAIL and RCPT lines */
    pthread_t thr;
};

static void fake_record(struct fake *f, const char *p, size_t n)
{
    if (n > sizeof(f->req) - 1 - f->req_len)
        n = sizeof(f->req) - 1 - f->req_len;
    memcpy(f->req + f->req_len, p, n);
    f->req_len += n;
    f->req[f->req_len] = '\0';
}

/* Wait up to ms for fd to be readable; 1 when it is. */
static int fake_wait(struct fake *f, int fd, int ms)
{
    struct pollfd p = { fd, POLLIN, 0 };

    while (ms > 0 && !atomic_load(&f->stop)) {
        if (poll(&p, 1, 50) > 0)
            return 1;
        ms -= 50;
    }
    return 0;
}

static void fake_send(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

/* Read one HTTP request (head and Content-Length body) from fd. */
static void fake_read_request(struct fake *f, int fd, bool record)
{
    char buf[65536];
    size_t got = 0;
    ssize_t r;
    const char *end, *cl;

    while (got < sizeof(buf) - 1 && fake_wait(f, fd, 3000)) {
        if ((r = recv(fd, buf + got, sizeof(buf) - 1 - got, 0)) <= 0)
            break;
        got += (size_t)r;
        buf[got] = '\0';
        if ((end = strstr(buf, "\r\n\r\n")) != NULL) {
            size_t body = 0;

            if ((cl = strcasestr(buf, "\r\nContent-Length:")) != NULL && cl < end)
                body = (size_t)strtoul(cl + 17, NULL, 10);
            if (got >= (size_t)(end + 4 - buf) + body)
                break;
        }
    }
    if (record)
        fake_record(f, buf, got);
}

/* Read one CRLF line into line; 0 at EOF or timeout. */
static int fake_line(struct fake *f, int fd, char *line, size_t cap)
{
    size_t n = 0;
    char ch;

    while (n + 1 < cap && fake_wait(f, fd, 3000) && recv(fd, &ch, 1, 0) == 1) {
        line[n++] = ch;
        if (ch == '\n') {
            line[n] = '\0';
            return 1;
        }
    }
    line[n] = '\0';
    return 0;
}

static void fake_smtp(struct fake *f, int fd)
{
    char line[2048];
    size_t used;

    fake_send(fd, "220 fake.test ESMTP\r\n", 21);
    while (fake_line(f, fd, line, sizeof(line))) {
        if (strncasecmp(line, "EHLO", 4) == 0) {
            fake_send(fd, "250-fake.test\r\n250 8BITMIME\r\n", 29);
        } else if (strncasecmp(line, "MAIL", 4) == 0 || strncasecmp(line, "RCPT", 4) == 0) {
            used = strlen(f->envelope);
            util_strlcpy(f->envelope + used, line, sizeof(f->envelope) - used);
            fake_send(fd, "250 OK\r\n", 8);
        } else if (strncasecmp(line, "DATA", 4) == 0) {
            fake_send(fd, "354 go ahead\r\n", 14);
            while (fake_line(f, fd, line, sizeof(line)) && strcmp(line, ".\r\n") != 0)
                fake_record(f, line, strlen(line));
            fake_send(fd, "250 OK queued\r\n", 15);
        } else if (strncasecmp(line, "QUIT", 4) == 0) {
            fake_send(fd, "221 bye\r\n", 9);
            return;
        } else {
            fake_send(fd, "502 unknown\r\n", 13);
        }
    }
}

static void *fake_main(void *p)
{
    struct fake *f = p;
    int fd;
    char sink[4096];

    while (!atomic_load(&f->stop)) {
        if (!fake_wait(f, f->lfd, 100))
            continue;
        if ((fd = accept(f->lfd, NULL, NULL)) < 0)
            continue;
        f->conns++;
        if (f->mode == FAKE_SMTP) {
            fake_smtp(f, fd);
        } else {
            fake_read_request(f, fd, f->conns == 1);
            if (f->mode != FAKE_SILENT)
                fake_send(fd, f->response, f->response_len);
            if (f->mode != FAKE_CANNED)        /* hold until the client leaves */
                while (fake_wait(f, fd, 10000) && recv(fd, sink, sizeof(sink), 0) > 0)
                    ;
        }
        close(fd);
    }
    return NULL;
}

static void fake_start(struct fake *f, enum fake_mode mode, const char *response, size_t len)
{
    struct sockaddr_in a;
    socklen_t al = sizeof(a);

    memset(f, 0, sizeof(*f));
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    f->mode = mode;
    f->response = response;
    f->response_len = len;
    atomic_init(&f->stop, 0);
    f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(f->lfd, 0);
    ck_assert_int_eq(bind(f->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(listen(f->lfd, 8), 0);
    ck_assert_int_eq(getsockname(f->lfd, (struct sockaddr *)&a, &al), 0);
    f->port = ntohs(a.sin_port);
    ck_assert_int_eq(pthread_create(&f->thr, NULL, fake_main, f), 0);
}

static void fake_stop(struct fake *f)
{
    atomic_store(&f->stop, 1);
    pthread_join(f->thr, NULL);
    close(f->lfd);
}

/* ---- calculator ---------------------------------------------------------- */

static const struct {
    const char *expr;
    double want;
} calc_ok[] = {
    { "2+3*4", 14 },          { "2^3^2", 512 },         { "-2^2", -4 },
    { "(-2)^2", 4 },          { "2^-1", 0.5 },          { "(1+2)*3", 9 },
    { "sqrt(16)+abs(-2)", 6 }, { "min(3, 1, 2)", 1 },   { "max(3,1,2)", 3 },
    { "MAX(1,2)", 2 },        { "min(5)", 5 },          { "7%3", 1 },
    { "-7%3", -1 },           { "7.5%2", 1.5 },         { "pi", M_PI },
    { "2*pi", 2 * M_PI },     { "e", M_E },             { "10/4", 2.5 },
    { "1e3+1", 1001 },        { "2**10", 1024 },        { "log(e)", 1 },
    { "log10(1000)", 3 },     { "exp(0)", 1 },          { "floor(-1.5)", -2 },
    { "ceil(1.2)", 2 },       { "round(2.5)", 3 },      { "round(-2.5)", -3 },
    { "pow(2, 10)", 1024 },   { " 1 +\t2\n ", 3 },      { "--3", 3 },
    { "+4", 4 },              { "sin(0)+cos(0)", 1 },   { "tan(0)", 0 },
    { ".5*4", 2 },            { "2*(3+(4-1))^2", 72 },  { "1-2-3", -4 },
    { "100/10/5", 2 },        { "2^3*2", 16 },          { "-3*-3", 9 },
    { "-0", 0 },              { "1.5e-3*1000", 1.5 },   { "hypot(3,4)", 5 },
};

START_TEST(calculator_evaluates_with_precedence_and_associativity)
{
    char msg[160];
    double v = -12345;
    int i;

    for (i = 0; i < NCASES(calc_ok); i++) {
        int rc = tools_calc_eval(calc_ok[i].expr, &v, msg, sizeof(msg));

        ck_assert_msg(rc == 0, "'%s' failed: %s", calc_ok[i].expr, msg);
        ck_assert_msg(fabs(v - calc_ok[i].want) < 1e-12, "'%s' = %.17g, want %.17g",
                      calc_ok[i].expr, v, calc_ok[i].want);
    }
    ck_assert_int_eq(tools_calc_eval("-0", &v, msg, sizeof(msg)), 0);
    ck_assert(!signbit(v));                    /* no "-0" for the model */
}
END_TEST

static const struct {
    const char *expr;
    const char *msg;
} calc_bad[] = {
    { "(1+2))", "unexpected ')' at 6" },
    { "1 + 2 )", "unexpected ')' at 7" },
    { "foo(1)", "unknown function 'foo' at 1" },
    { "2 * bar(3)", "unknown function 'bar' at 5" },
    { "x + 1", "unknown name 'x' at 1" },
    { "1/0", "division by zero" },
    { "1/(2-2)", "division by zero" },
    { "5%0", "modulo by zero" },
    { "", "empty expression" },
    { "   ", "empty expression" },
    { "1+", "unexpected end of expression" },
    { "(1+2", "missing ')' for '(' at 1" },
    { "sqrt(4", "missing ')' for sqrt( at 1" },
    { "2 3", "unexpected '3' at 3" },
    { "2 pi", "unexpected 'pi' at 3" },
    { "1,2", "unexpected ',' at 2" },
    { "*2", "unexpected '*' at 1" },
    { "sqrt(1,2)", "sqrt() takes 1 argument (got 2)" },
    { "pow(2)", "pow() takes 2 arguments (got 1)" },
    { "min()", "min() needs at least one argument" },
    { "sqrt(-1)", "math domain error in sqrt()" },
    { "log(0)", "math domain error in log()" },
    { "asin(2)", "math domain error in asin()" },
    { "1 $ 2", "unexpected '$' at 3" },
    { "\xff", "unexpected byte 0xFF at 1" },
    { "1+\x01", "unexpected byte 0x01 at 3" },
    { ".", "unexpected '.' at 1" },
    { "1e999", "number out of range at 1" },
};

START_TEST(calculator_reports_errors_with_positions)
{
    char msg[160];
    double v;
    int i;

    for (i = 0; i < NCASES(calc_bad); i++) {
        msg[0] = '\0';
        ck_assert_msg(tools_calc_eval(calc_bad[i].expr, &v, msg, sizeof(msg)) == -1,
                      "'%s' did not fail", calc_bad[i].expr);
        ck_assert_msg(strcmp(msg, calc_bad[i].msg) == 0, "'%s': got '%s', want '%s'",
                      calc_bad[i].expr, msg, calc_bad[i].msg);
    }
}
END_TEST

START_TEST(calculator_refuses_non_finite_results)
{
    static const char *const cases[] = { "1e308*10", "-1e308*10", "10^400", "pow(10, 400)",
                                         "exp(1000)", "1e308+1e308", "1/1e-320/1e-10",
                                         "(-8)^(1/3)" };
    char msg[160];
    double v;
    int i;

    for (i = 0; i < NCASES(cases); i++) {
        ck_assert_msg(tools_calc_eval(cases[i], &v, msg, sizeof(msg)) == -1, "'%s' passed", cases[i]);
        ck_assert_msg(strcmp(msg, "result is not a finite number") == 0, "'%s': %s", cases[i], msg);
    }
}
END_TEST

static char *repeat(const char *head, int n, const char *mid, const char *tail, int m)
{
    size_t cap = strlen(head) * (size_t)n + strlen(mid) + strlen(tail) * (size_t)m + 1;
    char *s = xcalloc(1, cap);
    int i;

    for (i = 0; i < n; i++)
        strcat(s, head);
    strcat(s, mid);
    for (i = 0; i < m; i++)
        strcat(s, tail);
    return s;
}

START_TEST(calculator_refuses_deep_nesting_and_long_input_cleanly)
{
    char msg[160], *s;
    double v;

    s = repeat("(", 30, "1", ")", 30);         /* within the limit */
    ck_assert_int_eq(tools_calc_eval(s, &v, msg, sizeof(msg)), 0);
    ck_assert(v == 1);
    free(s);
    s = repeat("(", 100, "1", ")", 100);
    ck_assert_int_eq(tools_calc_eval(s, &v, msg, sizeof(msg)), -1);
    ck_assert_str_eq(msg, "expression is nested too deeply (limit 64)");
    free(s);
    s = repeat("-", 500, "1", "", 0);
    ck_assert_int_eq(tools_calc_eval(s, &v, msg, sizeof(msg)), -1);
    ck_assert_str_eq(msg, "expression is nested too deeply (limit 64)");
    free(s);
    s = repeat("2^", 300, "1", "", 0);
    ck_assert_int_eq(tools_calc_eval(s, &v, msg, sizeof(msg)), -1);
    ck_assert_str_eq(msg, "expression is nested too deeply (limit 64)");
    free(s);
    s = repeat("sqrt(", 100, "1", ")", 100);
    ck_assert_int_eq(tools_calc_eval(s, &v, msg, sizeof(msg)), -1);
    ck_assert_str_eq(msg, "expression is nested too deeply (limit 64)");
    free(s);
    s = repeat("1+", 600, "1", "", 0);         /* 1201 characters */
    ck_assert_int_eq(tools_calc_eval(s, &v, msg, sizeof(msg)), -1);
    ck_assert_str_eq(msg, "expression is too long (limit 1024 characters)");
    free(s);
    s = repeat("(", 100000, "", "", 0);        /* long and deep: length wins */
    ck_assert_int_eq(tools_calc_eval(s, &v, msg, sizeof(msg)), -1);
    free(s);
}
END_TEST

START_TEST(calculator_survives_random_garbage)
{
    static const char alphabet[] = "0123456789+-*/%^().,eE pisqrtminax\t\x01\x7f\x80\xff$";
    unsigned seed = 12345;
    char expr[48], msg[160];
    double v;
    int i, k, len;

    for (i = 0; i < 5000; i++) {
        seed = seed * 1103515245u + 12345u;
        len = (int)(seed >> 16) % 40;
        for (k = 0; k < len; k++) {
            seed = seed * 1103515245u + 12345u;
            expr[k] = alphabet[(seed >> 16) % (sizeof(alphabet) - 1)];
        }
        expr[len] = '\0';
        msg[0] = '\0';
        if (tools_calc_eval(expr, &v, msg, sizeof(msg)) == 0)
            ck_assert_msg(isfinite(v), "'%s' gave a non-finite value", expr);
        else
            ck_assert_msg(msg[0] != '\0', "'%s' failed without a message", expr);
    }
    ck_assert_int_eq(tools_calc_eval(NULL, &v, msg, sizeof(msg)), -1);
    ck_assert_int_eq(tools_calc_eval("1", &v, NULL, 0), 0);
}
END_TEST

START_TEST(calculator_tool_replies_number_and_text)
{
    struct json_object *r = call(TOOL_CALCULATOR, "{\"expression\":\"0.1+0.2\"}", NULL);

    ck_assert(json_object_get_double(res_of(r)) == 0.1 + 0.2);
    ck_assert_str_eq(str_at(r, "text"), "0.3");
    json_object_put(r);
    r = call(TOOL_CALCULATOR, "{\"expression\":\"2+3*4\"}", NULL);
    ck_assert_int_eq(json_object_get_int(res_of(r)), 14);
    ck_assert_str_eq(str_at(r, "text"), "14");
    json_object_put(r);
    r = call(TOOL_CALCULATOR, "{\"expression\":\"1/3\"}", NULL);
    ck_assert_str_eq(str_at(r, "text"), "0.333333333333333");
    json_object_put(r);
    r = call(TOOL_CALCULATOR, "{\"expression\":\"1e308*10\"}", NULL);
    ck_assert_str_eq(err_of(r), "result is not a finite number");
    json_object_put(r);
}
END_TEST

static const struct {
    const char *args;
    const char *want;
} args_bad[] = {
    { "{}", "missing required argument 'expression'" },
    { "", "missing required argument 'expression'" },
    { "{\"expression\":12}", "argument 'expression' must be a string" },
    { "{\"expression\":\"1\\u0000+1\"}", "argument 'expression' contains a NUL byte" },
    { "{\"expression\":", "arguments are not valid JSON" },
    { "[1]", "arguments must be a JSON object" },
    { "{\"expression\":\"1\"} trailing", "arguments are not valid JSON" },
    { "{\"expression\":\"\xff\"}", "arguments are not valid UTF-8" },
    { "{\"a\":NaN}", "number out of range" },
};

START_TEST(tool_arguments_are_checked_before_the_tool_runs)
{
    struct json_object *r;
    int i;

    for (i = 0; i < NCASES(args_bad); i++) {
        r = call(TOOL_CALCULATOR, args_bad[i].args, NULL);
        ck_assert_tool_error(r, args_bad[i].want);
        json_object_put(r);
    }
}
END_TEST

/* ---- datetime ------------------------------------------------------------ */

START_TEST(datetime_defaults_to_utc)
{
    struct json_object *r = call(TOOL_DATETIME, "{}", NULL), *res = res_of(r);
    int64_t unix_now = json_object_get_int64(obj_at(res, "unix"));
    time_t t = (time_t)unix_now;
    struct tm tm;
    char want[64];

    ck_assert(llabs((long long)(unix_now - (int64_t)time(NULL))) <= 5);
    gmtime_r(&t, &tm);
    strftime(want, sizeof(want), "%Y-%m-%dT%H:%M:%S+00:00", &tm);
    ck_assert_str_eq(str_at(res, "iso8601"), want);
    ck_assert_str_eq(str_at(res, "timezone"), "UTC");
    ck_assert_str_eq(str_at(res, "utc_offset"), "+00:00");
    json_object_put(r);
}
END_TEST

START_TEST(datetime_in_tokyo_is_nine_hours_ahead)
{
    struct json_object *r = call(TOOL_DATETIME, "{\"timezone\":\"Asia/Tokyo\",\"format\":\"%Y|%z|%Z\"}",
                                 NULL);
    struct json_object *res = res_of(r);
    time_t t = (time_t)json_object_get_int64(obj_at(res, "unix")) + 9 * 3600;
    const char *iso = str_at(res, "iso8601");
    struct tm tm;
    char want[64];

    gmtime_r(&t, &tm);
    strftime(want, sizeof(want), "%Y-%m-%dT%H:%M:%S+09:00", &tm);
    ck_assert_str_eq(iso, want);
    ck_assert_str_eq(str_at(res, "abbreviation"), "JST");
    ck_assert(!json_object_get_boolean(obj_at(res, "dst")));
    strftime(want, sizeof(want), "%Y|+0900|JST", &tm);
    ck_assert_str_eq(str_at(res, "formatted"), want);
    json_object_put(r);
}
END_TEST

START_TEST(datetime_agrees_with_glibc_for_the_current_time)
{
    static const char *const zones[] = { "Europe/Paris", "America/New_York", "Australia/Sydney",
                                         "Asia/Kolkata", "America/St_Johns" };
    char args[128], want[16];
    struct tm tm;
    time_t t;
    int i;

    for (i = 0; i < NCASES(zones); i++) {
        struct json_object *r, *res;

        snprintf(args, sizeof(args), "{\"timezone\":\"%s\"}", zones[i]);
        r = call(TOOL_DATETIME, args, NULL);
        res = res_of(r);
        t = (time_t)json_object_get_int64(obj_at(res, "unix"));
        setenv("TZ", zones[i], 1);             /* the test is single-threaded here */
        tzset();
        localtime_r(&t, &tm);
        datetime_offset_str((int32_t)tm.tm_gmtoff, want, sizeof(want));
        ck_assert_str_eq(str_at(res, "utc_offset"), want);
        ck_assert_str_eq(str_at(res, "abbreviation"), tm.tm_zone);
        ck_assert_str_eq(str_at(res, "timezone"), zones[i]);
        json_object_put(r);
    }
    unsetenv("TZ");
    tzset();
}
END_TEST

static const char *const bad_zones[] = {
    "../../../etc/passwd", "/etc/passwd", "Europe/../../../etc/passwd", "Europe/./Paris",
    "Nowhere/City", "Europe", "zone.tab", "Europe//Paris", "Europe/Paris/", "Europe/Paris\\n",
    ".hidden", "Europe/Paris;rm", "..",
};

START_TEST(datetime_refuses_unknown_and_escaping_zones)
{
    char args[256], want[128];
    struct json_object *r;
    int i;

    for (i = 0; i < NCASES(bad_zones); i++) {
        snprintf(args, sizeof(args), "{\"timezone\":\"%s\"}", bad_zones[i]);
        r = call(TOOL_DATETIME, args, NULL);
        snprintf(want, sizeof(want), "unknown time zone '%s'", bad_zones[i]);
        if (strstr(bad_zones[i], "\\n"))
            snprintf(want, sizeof(want), "unknown time zone 'Europe/Paris\n'");
        ck_assert_msg(err_of(r) && strcmp(err_of(r), want) == 0, "%s: %s", bad_zones[i],
                      json_object_to_json_string(r));
        json_object_put(r);
    }
}
END_TEST

START_TEST(datetime_refuses_unsupported_format_directives)
{
    struct json_object *r = call(TOOL_DATETIME, "{\"format\":\"%s\"}", NULL);

    ck_assert_str_eq(err_of(r), "unsupported format directive '%s'");
    json_object_put(r);
    r = call(TOOL_DATETIME, "{\"format\":\"100%\"}", NULL);
    ck_assert_str_eq(err_of(r), "format ends with an incomplete '%' directive");
    json_object_put(r);
    r = call(TOOL_DATETIME, "{\"format\":\"%-d %B %Y, %H:%M %%\"}", NULL);
    ck_assert_ptr_null(err_of(r));
    json_object_put(r);
}
END_TEST

/* Compare datetime_tz_at() with glibc at t; returns 0 when they agree. */
static int tz_differs(const struct tz_info *z, const char *zone, int64_t t)
{
    struct tz_type ty;
    struct tm tm;
    time_t tt = (time_t)t;

    datetime_tz_at(z, t, &ty);
    localtime_r(&tt, &tm);
    if (tm.tm_gmtoff == ty.utoff && (tm.tm_isdst > 0) == ty.isdst && strcmp(tm.tm_zone, ty.abbr) == 0)
        return 0;
    fprintf(stderr, "%s at %lld: ours %d %d %s, glibc %ld %d %s\n", zone, (long long)t,
            (int)ty.utoff, ty.isdst, ty.abbr, (long)tm.tm_gmtoff, tm.tm_isdst, tm.tm_zone);
    return 1;
}

START_TEST(tz_reader_matches_glibc_at_every_transition_and_under_the_rule)
{
    static const char *const zones[] = {
        "Europe/Paris", "America/New_York", "Australia/Sydney", "Europe/Dublin",
        "Australia/Lord_Howe", "Asia/Kolkata", "America/Sao_Paulo", "Africa/Casablanca",
        "Pacific/Chatham", "America/St_Johns", "Asia/Tokyo", "UTC", "Antarctica/Troll",
        "America/Nuuk", "America/Santiago", "Pacific/Apia", "Asia/Tehran", "Cuba",
    };
    int i, bad = 0, checked = 0;

    for (i = 0; i < NCASES(zones); i++) {
        struct tz_info *z = datetime_tz_load(zones[i]);
        size_t k;
        int64_t t, from, to;

        char path[256];

        snprintf(path, sizeof(path), "%s/%s", DATETIME_ZONEINFO, zones[i]);
        if (z == NULL && access(path, F_OK) != 0)
            continue;                          /* older tzdata without this zone */
        ck_assert_msg(z != NULL, "cannot load %s", zones[i]);
        setenv("TZ", zones[i], 1);
        tzset();
        for (k = 0; k < z->ntimes; k++)
            for (t = z->times[k] - 1; t <= z->times[k] + 1; t++, checked++)
                bad += tz_differs(z, zones[i], t);
        from = z->ntimes ? z->times[0] - 86400 * 400 : 0;
        to = 4102444800;                       /* 2100-01-01, well into the rule */
        for (t = from; t < to; t += 86400 * 5 + 3607, checked++)
            bad += tz_differs(z, zones[i], t);
        datetime_tz_free(z);
    }
    unsetenv("TZ");
    tzset();
    ck_assert_int_gt(checked, 10000);
    ck_assert_int_eq(bad, 0);
}
END_TEST

static int64_t utc(int y, int mo, int d, int h, int mi, int s)
{
    return datetime_days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 + mi * 60 + s;
}

START_TEST(tz_rule_switches_at_the_exact_instant_in_both_hemispheres)
{
    struct tz_rule r;
    struct tz_type ty;
    const struct {
        const char *rule;
        int64_t t;
        int32_t utoff;
        const char *abbr;
    } more[] = {
        { "CET-1CEST,M3.5.0,M10.5.0/3", utc(2024, 3, 31, 0, 59, 59), 3600, "CET" },
        { "CET-1CEST,M3.5.0,M10.5.0/3", utc(2024, 3, 31, 1, 0, 0), 7200, "CEST" },
        { "CET-1CEST,M3.5.0,M10.5.0/3", utc(2024, 10, 27, 0, 59, 59), 7200, "CEST" },
        { "CET-1CEST,M3.5.0,M10.5.0/3", utc(2024, 10, 27, 1, 0, 0), 3600, "CET" },
        { "EST5EDT,M3.2.0,M11.1.0", utc(2024, 3, 10, 6, 59, 59), -18000, "EST" },
        { "EST5EDT,M3.2.0,M11.1.0", utc(2024, 3, 10, 7, 0, 0), -14400, "EDT" },
        { "EST5EDT", utc(2024, 7, 1, 0, 0, 0), -14400, "EDT" },     /* POSIX default rule */
        { "AEST-10AEDT,M10.1.0,M4.1.0/3", utc(2024, 1, 15, 0, 0, 0), 39600, "AEDT" },
        { "AEST-10AEDT,M10.1.0,M4.1.0/3", utc(2024, 7, 1, 0, 0, 0), 36000, "AEST" },
        { "AEST-10AEDT,M10.1.0,M4.1.0/3", utc(2024, 4, 6, 15, 59, 59), 39600, "AEDT" },
        { "AEST-10AEDT,M10.1.0,M4.1.0/3", utc(2024, 4, 6, 16, 0, 0), 36000, "AEST" },
        { "<+0530>-5:30", utc(2024, 1, 1, 0, 0, 0), 19800, "+0530" },
        { "<-02>2<-01>,M3.5.0/-1,M10.5.0/0", utc(2024, 3, 31, 0, 59, 59), -7200, "-02" },
        { "<-02>2<-01>,M3.5.0/-1,M10.5.0/0", utc(2024, 3, 31, 1, 0, 0), -3600, "-01" },
        { "XXX3YYY,J60/0,J300/0", utc(2024, 3, 1, 3, 0, 0), -7200, "YYY" },   /* J skips Feb 29 */
        { "XXX3YYY,J60/0,J300/0", utc(2024, 2, 29, 12, 0, 0), -10800, "XXX" },
        { "XXX3YYY,59/0,300/0", utc(2024, 2, 29, 3, 0, 0), -7200, "YYY" },    /* n counts it */
    };
    static const char *const bad[] = { "", "C-1", "CET", "CET-1CEST,M13.1.0,M10.5.0",
                                       "<+03", "CET-1CEST,M3.5.0", "CET-1CEST,M3.6.0,M10.5.0",
                                       "CET-1CEST,J0,J10", "CET-1CEST,M3.5.0,M10.5.0 x",
                                       "CET-200" };
    int i;

    for (i = 0; i < NCASES(more); i++) {
        ck_assert_msg(datetime_tz_rule_parse(more[i].rule, &r) == 0, "cannot parse %s", more[i].rule);
        datetime_tz_rule_at(&r, more[i].t, &ty);
        ck_assert_msg(ty.utoff == more[i].utoff && strcmp(ty.abbr, more[i].abbr) == 0,
                      "%s at %lld: %d %s, want %d %s", more[i].rule, (long long)more[i].t,
                      (int)ty.utoff, ty.abbr, (int)more[i].utoff, more[i].abbr);
    }
    for (i = 0; i < NCASES(bad); i++)
        ck_assert_msg(datetime_tz_rule_parse(bad[i], &r) == -1, "'%s' parsed", bad[i]);
}
END_TEST

START_TEST(tz_reader_refuses_malformed_files)
{
    unsigned char buf[256];
    struct tz_info *z = xcalloc(1, sizeof(*z));

    memset(buf, 0, sizeof(buf));
    ck_assert_int_eq(datetime_tz_parse(buf, sizeof(buf), z), -1);    /* no magic */
    memcpy(buf, "TZif2", 5);
    ck_assert_int_eq(datetime_tz_parse(buf, sizeof(buf), z), -1);    /* no types */
    buf[39] = 1;                                                     /* typecnt 1 */
    buf[43] = 4;                                                     /* charcnt 4 */
    buf[35] = 200;                                                   /* timecnt beyond the file */
    ck_assert_int_eq(datetime_tz_parse(buf, 60, z), -1);
    buf[35] = 0;
    buf[4] = 0;                                                      /* v1, one type "UTC" */
    memcpy(buf + 50, "UTC", 4);
    ck_assert_int_eq(datetime_tz_parse(buf, 54, z), 0);
    ck_assert_str_eq(z->types[0].abbr, "UTC");
    datetime_tz_free(z);
}
END_TEST

/* ---- json_parser --------------------------------------------------------- */

#define DOC "{\"a\":{\"b\":[{\"c\":42},{\"c\":\"x\"}]},\"k.dot\":true,\"n\":null,\"arr\":[1,2,3]}"

static const struct {
    const char *path;
    const char *want;            /* the result, serialised */
} jp_ok[] = {
    { "a.b[0].c", "42" },
    { "a.b[1].c", "\"x\"" },
    { "$.a.b[0].c", "42" },
    { "['k.dot']", "true" },
    { "arr[-1]", "3" },
    { "arr[0]", "1" },
    { "n", "null" },
    { "a.b[1]", "{\"c\":\"x\"}" },
    { "", DOC },
};

START_TEST(json_parser_returns_the_value_at_a_path)
{
    char args[512];
    int i;

    for (i = 0; i < NCASES(jp_ok); i++) {
        struct json_object *r, *v, *in = json_object_new_object();

        json_object_object_add(in, "json", json_object_new_string(DOC));
        json_object_object_add(in, "path", json_object_new_string(jp_ok[i].path));
        util_strlcpy(args, json_object_to_json_string(in), sizeof(args));
        json_object_put(in);
        r = call(TOOL_JSON_PARSER, args, NULL);
        v = res_of(r);
        ck_assert_msg(strcmp(json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN), jp_ok[i].want) == 0,
                      "%s: %s", jp_ok[i].path, json_object_to_json_string(r));
        json_object_put(r);
    }
}
END_TEST

static const struct {
    const char *path;
    const char *want;
} jp_miss[] = {
    { "a.x", "key 'x' not found at 'a'" },
    { "zz", "key 'zz' not found at the top level" },
    { "$.zz", "key 'zz' not found at the top level" },
    { "a.b[5]", "index 5 out of range at 'a.b' (length 2)" },
    { "a.b[0].c.d", "'a.b[0].c' is a number, not an object (cannot take key 'd')" },
    { "arr.x", "'arr' is an array, not an object (cannot take key 'x')" },
    { "a[0]", "'a' is an object, not an array (cannot take [0])" },
    { "a..b", "empty key at offset 2" },
    { "a[x]", "bad index at offset 1 (want [number])" },
    { "['k.dot", "unterminated ['key'] at offset 0" },
};

START_TEST(json_parser_names_the_missing_segment)
{
    char args[512];
    int i;

    for (i = 0; i < NCASES(jp_miss); i++) {
        struct json_object *r, *in = json_object_new_object();

        json_object_object_add(in, "json", json_object_new_string(DOC));
        json_object_object_add(in, "path", json_object_new_string(jp_miss[i].path));
        util_strlcpy(args, json_object_to_json_string(in), sizeof(args));
        json_object_put(in);
        r = call(TOOL_JSON_PARSER, args, NULL);
        ck_assert_msg(err_of(r) && strcmp(err_of(r), jp_miss[i].want) == 0, "%s: %s",
                      jp_miss[i].path, json_object_to_json_string(r));
        json_object_put(r);
    }
}
END_TEST

START_TEST(json_parser_refuses_invalid_and_too_deep_documents)
{
    static const char *const bad[] = { "{", "[1,]", "{\"a\":1} x", "'a'", "1e999", "NaN", "" };
    struct json_object *r, *in;
    char *deep = repeat("[", 100, "1", "]", 100);
    int i;

    for (i = 0; i < NCASES(bad); i++) {
        in = json_object_new_object();
        json_object_object_add(in, "json", json_object_new_string(bad[i]));
        r = call(TOOL_JSON_PARSER, json_object_to_json_string(in), NULL);
        ck_assert_msg(err_of(r) != NULL, "'%s' parsed", bad[i]);
        json_object_put(r);
        json_object_put(in);
    }
    in = json_object_new_object();
    json_object_object_add(in, "json", json_object_new_string(deep));
    r = call(TOOL_JSON_PARSER, json_object_to_json_string(in), NULL);
    ck_assert_tool_error(r, "invalid JSON: nesting too deep");
    json_object_put(r);
    json_object_put(in);
    free(deep);
}
END_TEST

START_TEST(json_parser_accepts_a_value_instead_of_text)
{
    struct json_object *r = call(TOOL_JSON_PARSER, "{\"json\":{\"a\":[10,20]},\"path\":\"a[1]\"}", NULL);

    ck_assert_int_eq(json_object_get_int(res_of(r)), 20);
    json_object_put(r);
    r = call(TOOL_JSON_PARSER, "{\"json\":\"  17 \"}", NULL);
    ck_assert_int_eq(json_object_get_int(res_of(r)), 17);
    json_object_put(r);
}
END_TEST

/* ---- file_reader --------------------------------------------------------- */

static void write_file(const char *rel, const char *data, size_t n)
{
    char path[512];
    FILE *fp;

    snprintf(path, sizeof(path), "%s/%s", tmp_root, rel);
    fp = fopen(path, "wb");
    ck_assert_ptr_nonnull(fp);
    ck_assert_uint_eq(fwrite(data, 1, n, fp), n);
    fclose(fp);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* tmp_root/root is the file root; tmp_root/outside.txt lies beside it. */
static void files_setup(void)
{
    char path[512];

    settings_reset();
    util_strlcpy(tmp_root, "/tmp/check_tools.XXXXXX", sizeof(tmp_root));
    ck_assert_ptr_nonnull(mkdtemp(tmp_root));
    write_file("outside.txt", "secret\n", 7);
    strcat(tmp_root, "/root");
    ck_assert_int_eq(mkdir(tmp_root, 0700), 0);
    snprintf(path, sizeof(path), "%s/sub", tmp_root);
    ck_assert_int_eq(mkdir(path, 0700), 0);
    write_file("hello.txt", "h\xc3\xa9llo\n", 7);
    write_file("sub/inner.txt", "inner", 5);
    write_file("bin.dat", "\x7f" "ELF\0\0\xff", 7);
    snprintf(path, sizeof(path), "%s/escape_link", tmp_root);
    ck_assert_int_eq(symlink("../outside.txt", path), 0);
    snprintf(path, sizeof(path), "%s/inner_link", tmp_root);
    ck_assert_int_eq(symlink("hello.txt", path), 0);
    snprintf(path, sizeof(path), "%s/sub/up", tmp_root);
    ck_assert_int_eq(symlink("../..", path), 0);
    snprintf(path, sizeof(path), "%s/fifo", tmp_root);
    ck_assert_int_eq(mkfifo(path, 0600), 0);
    settings.file_root = tmp_root;
}

static void files_teardown(void)
{
    char *slash = strrchr(tmp_root, '/');

    *slash = '\0';                             /* back to the mkdtemp directory */
    nftw(tmp_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

START_TEST(file_reader_reads_a_file_inside_the_root)
{
    struct json_object *r = call(TOOL_FILE_READER, "{\"path\":\"hello.txt\"}", NULL), *res;

    res = res_of(r);
    ck_assert_str_eq(str_at(res, "content"), "h\xc3\xa9llo\n");
    ck_assert_str_eq(str_at(res, "path"), "hello.txt");
    ck_assert(!json_object_get_boolean(obj_at(res, "truncated")));
    json_object_put(r);
    r = call(TOOL_FILE_READER, "{\"path\":\"./sub//inner.txt\"}", NULL);
    ck_assert_str_eq(str_at(res_of(r), "content"), "inner");
    json_object_put(r);
}
END_TEST

static const struct {
    const char *path;            /* JSON string contents */
    const char *want;
} file_bad[] = {
    { "../outside.txt", "'..' is not allowed in a path" },
    { "sub/../../outside.txt", "'..' is not allowed in a path" },
    { "sub/..", "'..' is not allowed in a path" },
    { "/etc/passwd", "absolute paths are not allowed" },
    { "escape_link", "'escape_link' is a symbolic link" },
    { "inner_link", "'inner_link' is a symbolic link" },
    { "sub/up/outside.txt", "'up' is a symbolic link" },
    { "hello.txt\\u0000.png", "argument 'path' contains a NUL byte" },
    { "sub", "'sub' is a directory" },
    { ".", "'.' is a directory" },
    { "missing.txt", "no such file 'missing.txt'" },
    { "hello.txt/x", "'hello.txt' is not a directory" },
    { "fifo", "'fifo' is not a regular file" },
    { "bin.dat", "'bin.dat' is not a text file" },
    { "", "argument 'path' must not be empty" },
};

START_TEST(file_reader_refuses_escapes_links_and_non_text)
{
    char args[256];
    struct json_object *r;
    int i;

    for (i = 0; i < NCASES(file_bad); i++) {
        snprintf(args, sizeof(args), "{\"path\":\"%s\"}", file_bad[i].path);
        r = call(TOOL_FILE_READER, args, NULL);
        ck_assert_msg(err_of(r) && strstr(err_of(r), file_bad[i].want), "%s: %s", file_bad[i].path,
                      json_object_to_json_string(r));
        json_object_put(r);
    }
}
END_TEST

START_TEST(file_reader_truncates_at_one_mebibyte_on_a_character_boundary)
{
    size_t n = FILE_READER_MAX_BYTES + FILE_READER_MAX_BYTES / 2;
    char *big = xmalloc(n);
    struct json_object *r, *res;

    memset(big, 'a', n);
    memcpy(big + FILE_READER_MAX_BYTES - 1, "\xc3\xa9", 2);  /* straddles the cap */
    write_file("big.txt", big, n);
    free(big);
    r = call(TOOL_FILE_READER, "{\"path\":\"big.txt\"}", NULL);
    res = res_of(r);
    ck_assert(json_object_get_boolean(obj_at(res, "truncated")));
    ck_assert_int_eq(json_object_get_string_len(obj_at(res, "content")), FILE_READER_MAX_BYTES - 1);
    ck_assert_int_eq(json_object_get_int64(obj_at(res, "size")), (int64_t)n);
    json_object_put(r);
}
END_TEST

START_TEST(file_reader_without_a_root_is_not_configured)
{
    struct json_object *r;

    settings.file_root = "";
    r = call(TOOL_FILE_READER, "{\"path\":\"hello.txt\"}", NULL);
    ck_assert_str_eq(err_of(r), "file reading is not configured");
    json_object_put(r);
}
END_TEST

/* ---- http_request -------------------------------------------------------- */

static const struct {
    const char *addr;
    bool priv;
} addrs[] = {
    { "10.1.2.3", true },        { "172.16.0.1", true },      { "172.31.255.255", true },
    { "172.32.0.1", false },     { "192.168.1.1", true },     { "100.64.0.1", true },
    { "100.128.0.1", false },    { "169.254.169.254", true }, { "127.0.0.1", true },
    { "0.1.2.3", true },         { "8.8.8.8", false },        { "224.0.0.1", true },
    { "255.255.255.255", true }, { "93.184.216.34", false },  { "::1", true },
    { "::", true },              { "fe80::1", true },         { "febf::1", true },
    { "fc00::1", true },         { "fd12:3456::1", true },    { "::ffff:127.0.0.1", true },
    { "::ffff:8.8.8.8", false }, { "2001:4860:4860::8888", false },
    { "64:ff9b::10.0.0.1", true }, { "2002:0a00:0001::1", true }, { "ff02::1", true },
};

START_TEST(private_addresses_are_recognised)
{
    int i;

    for (i = 0; i < NCASES(addrs); i++) {
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
        const struct sockaddr *sa;

        memset(&in4, 0, sizeof(in4));
        memset(&in6, 0, sizeof(in6));
        if (inet_pton(AF_INET, addrs[i].addr, &in4.sin_addr) == 1) {
            in4.sin_family = AF_INET;
            sa = (const struct sockaddr *)&in4;
        } else {
            ck_assert_int_eq(inet_pton(AF_INET6, addrs[i].addr, &in6.sin6_addr), 1);
            in6.sin6_family = AF_INET6;
            sa = (const struct sockaddr *)&in6;
        }
        ck_assert_msg(http_client_addr_private(sa) == addrs[i].priv, "%s", addrs[i].addr);
    }
}
END_TEST

START_TEST(allowed_hosts_match_exactly_or_by_subdomain_wildcard)
{
    static const struct {
        const char *host, *pattern;
        bool match;
    } cases[] = {
        { "api.example.com", "api.example.com", true },
        { "api.example.com", "API.Example.COM", true },
        { "api.example.com", "api.example.com.", true },
        { "api.example.com", "example.com", false },
        { "a.example.com", "*.example.com", true },
        { "a.b.example.com", "*.example.com", true },
        { "example.com", "*.example.com", false },
        { "badexample.com", "*.example.com", false },
        { "::1", "[::1]", true },
        { "api.example.com", "", false },
        { "api.example.com", "*", false },
    };
    int i;

    for (i = 0; i < NCASES(cases); i++)
        ck_assert_msg(tool_host_matches(cases[i].host, cases[i].pattern) == cases[i].match, "%s vs %s",
                      cases[i].host, cases[i].pattern);
}
END_TEST

static const struct {
    const char *args;
    const char *config;
    const char *want;
} http_refused[] = {
    { "{\"url\":\"http://evil.example.org/\"}", "{\"allowed_hosts\":[\"api.example.com\"]}",
      "host 'evil.example.org' is not in this agent's allowed_hosts" },
    { "{\"url\":\"http://api.example.com/\"}", "{}",
      "host 'api.example.com' is not in this agent's allowed_hosts" },
    { "{\"url\":\"http://example.com/\"}", "{\"allowed_hosts\":[\"*.example.com\"]}",
      "not in this agent's allowed_hosts" },
    { "{\"url\":\"ftp://api.example.com/\"}", "{\"allowed_hosts\":[\"api.example.com\"]}",
      "only http:// and https:// URLs are allowed" },
    { "{\"url\":\"file:///etc/passwd\"}", "{\"allowed_hosts\":[\"api.example.com\"]}",
      "only http:// and https:// URLs are allowed" },
    { "{\"url\":\"http://127.0.0.1:9/\"}", "{\"allowed_hosts\":[\"127.0.0.1\"]}",
      "refused: '127.0.0.1' resolves to a private or loopback address (127.0.0.1)" },
    { "{\"url\":\"http://localhost:9/\"}", "{\"allowed_hosts\":[\"localhost\"]}",
      "refused: 'localhost' resolves to a private or loopback address" },
    { "{\"url\":\"http://[::1]:9/\"}", "{\"allowed_hosts\":[\"[::1]\"]}",
      "refused: '::1' resolves to a private or loopback address" },
    { "{\"url\":\"http://0.0.0.0:9/\"}", "{\"allowed_hosts\":[\"0.0.0.0\"]}",
      "refused: '0.0.0.0' resolves" },
    { "{\"url\":\"http://169.254.169.254/latest/meta-data/\"}",
      "{\"allowed_hosts\":[\"169.254.169.254\"]}", "refused: '169.254.169.254' resolves" },
    { "{\"url\":\"http://127.0.0.1:9/\"}", "{\"allowed_hosts\":[\"127.0.0.1\"],\"allow_private\":false}",
      "refused" },
    { "{\"url\":\"http://api.example.com/\",\"method\":\"DELETE\"}",
      "{\"allowed_hosts\":[\"api.example.com\"]}", "method must be GET, POST or HEAD" },
    { "{\"url\":\"http://api.example.com/\",\"body\":\"x\"}",
      "{\"allowed_hosts\":[\"api.example.com\"]}", "a body is only allowed with POST" },
    { "{\"url\":\"http://127.0.0.1:9/\",\"headers\":{\"Host\":\"internal\"}}",
      "{\"allowed_hosts\":[\"127.0.0.1\"],\"allow_private\":true}", "header 'Host' may not be set" },
    { "{\"url\":\"http://127.0.0.1:9/\",\"headers\":{\"X-A\":\"1\\r\\nX-B: 2\"}}",
      "{\"allowed_hosts\":[\"127.0.0.1\"],\"allow_private\":true}", "header 'X-A' contains CR, LF or NUL" },
    { "{\"url\":\"http://127.0.0.1:9/\",\"headers\":{\"X A\":\"1\"}}",
      "{\"allowed_hosts\":[\"127.0.0.1\"],\"allow_private\":true}", "invalid header name 'X A'" },
    { "{}", "{}", "missing required argument 'url'" },
    { "{\"url\":\"http://\"}", "{\"allowed_hosts\":[\"api.example.com\"]}", "invalid URL" },
};

START_TEST(http_request_refuses_what_is_not_allowed)
{
    struct json_object *r;
    int i;

    for (i = 0; i < NCASES(http_refused); i++) {
        r = call(TOOL_HTTP_REQUEST, http_refused[i].args, http_refused[i].config);
        ck_assert_msg(err_of(r) && strstr(err_of(r), http_refused[i].want), "case %d %s: %s", i,
                      http_refused[i].args, json_object_to_json_string(r));
        json_object_put(r);
    }
}
END_TEST

START_TEST(http_request_fetches_from_loopback_when_private_is_allowed)
{
    static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
                               "X-Secret: no\r\nConnection: close\r\n\r\nhello";
    struct fake f;
    char args[256];
    struct json_object *r, *res, *hdrs;

    fake_start(&f, FAKE_CANNED, resp, sizeof(resp) - 1);
    snprintf(args, sizeof(args), "{\"url\":\"http://127.0.0.1:%d/path?x=1\"}", f.port);
    r = call(TOOL_HTTP_REQUEST, args, "{\"allowed_hosts\":[\"127.0.0.1\"],\"allow_private\":true}");
    fake_stop(&f);
    res = res_of(r);
    ck_assert_int_eq(json_object_get_int(obj_at(res, "status")), 200);
    ck_assert_str_eq(str_at(res, "body"), "hello");
    ck_assert(!json_object_get_boolean(obj_at(res, "truncated")));
    hdrs = obj_at(res, "headers");
    ck_assert_str_eq(str_at(hdrs, "content-type"), "text/plain");
    ck_assert(!json_object_object_get_ex(hdrs, "x-secret", NULL));
    ck_assert_msg(strncmp(f.req, "GET /path?x=1 HTTP/1.1\r\n", 24) == 0, "%s", f.req);
    json_object_put(r);
}
END_TEST

START_TEST(http_request_posts_a_body_with_headers_to_a_pinned_name)
{
    static const char resp[] = "HTTP/1.1 201 Created\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
    struct fake f;
    char args[256];
    struct json_object *r;

    fake_start(&f, FAKE_CANNED, resp, sizeof(resp) - 1);
    snprintf(args, sizeof(args),
             "{\"url\":\"http://LOCALHOST:%d/items\",\"method\":\"post\",\"body\":\"{\\\"a\\\":1}\","
             "\"headers\":{\"Content-Type\":\"application/json\",\"X-Test\":\"yes\"}}",
             f.port);
    r = call(TOOL_HTTP_REQUEST, args, "{\"allowed_hosts\":[\"localhost\"],\"allow_private\":true}");
    fake_stop(&f);
    ck_assert_int_eq(json_object_get_int(obj_at(res_of(r), "status")), 201);
    ck_assert_msg(strncmp(f.req, "POST /items HTTP/1.1\r\n", 22) == 0, "%s", f.req);
    ck_assert_ptr_nonnull(strstr(f.req, "\r\nX-Test: yes\r\n"));
    ck_assert_ptr_nonnull(strstr(f.req, "\r\n\r\n{\"a\":1}"));
    json_object_put(r);
}
END_TEST

START_TEST(http_request_cuts_the_body_at_max_bytes)
{
    size_t n = 200000;
    char *resp = xmalloc(n + 128);
    int head = snprintf(resp, 128, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", n);
    struct fake f;
    char args[256];
    struct json_object *r, *res;

    memset(resp + head, 'z', n);
    fake_start(&f, FAKE_CANNED, resp, (size_t)head + n);
    snprintf(args, sizeof(args), "{\"url\":\"http://127.0.0.1:%d/big\"}", f.port);
    r = call(TOOL_HTTP_REQUEST, args,
             "{\"allowed_hosts\":[\"127.0.0.1\"],\"allow_private\":true,\"max_bytes\":1000}");
    fake_stop(&f);
    free(resp);
    res = res_of(r);
    ck_assert(json_object_get_boolean(obj_at(res, "truncated")));
    ck_assert_int_eq(json_object_get_string_len(obj_at(res, "body")), 1000);
    ck_assert_int_eq(json_object_get_int(obj_at(res, "status")), 200);
    json_object_put(r);
}
END_TEST

START_TEST(http_request_aborts_the_transfer_at_the_cap_without_waiting_for_the_rest)
{
    size_t n = 8000;
    char *resp = xmalloc(n + 128);
    int head = snprintf(resp, 128, "HTTP/1.1 200 OK\r\nContent-Length: 900000\r\n\r\n");
    struct fake f;
    char args[256];
    struct json_object *r, *res;
    uint64_t t0;

    memset(resp + head, 'z', n);               /* 8000 of the promised 900000 bytes */
    fake_start(&f, FAKE_CANNED_HOLD, resp, (size_t)head + n);
    snprintf(args, sizeof(args), "{\"url\":\"http://127.0.0.1:%d/\"}", f.port);
    t0 = util_monotonic_ms();
    r = call(TOOL_HTTP_REQUEST, args,
             "{\"allowed_hosts\":[\"127.0.0.1\"],\"allow_private\":true,\"max_bytes\":4096,"
             "\"timeout_ms\":4000}");
    ck_assert_uint_lt(util_monotonic_ms() - t0, 3000);
    fake_stop(&f);
    free(resp);
    res = res_of(r);
    ck_assert(json_object_get_boolean(obj_at(res, "truncated")));
    ck_assert_int_eq(json_object_get_string_len(obj_at(res, "body")), 4096);
    json_object_put(r);
}
END_TEST

START_TEST(http_request_gives_up_on_a_server_that_never_answers)
{
    struct fake f;
    char args[256];
    struct json_object *r;
    uint64_t t0;

    fake_start(&f, FAKE_SILENT, NULL, 0);
    snprintf(args, sizeof(args), "{\"url\":\"http://127.0.0.1:%d/\"}", f.port);
    t0 = util_monotonic_ms();
    r = call(TOOL_HTTP_REQUEST, args,
             "{\"allowed_hosts\":[\"127.0.0.1\"],\"allow_private\":true,\"timeout_ms\":300}");
    ck_assert_uint_lt(util_monotonic_ms() - t0, 5000);
    fake_stop(&f);
    ck_assert_str_eq(err_of(r), "request timed out after 300 ms");
    json_object_put(r);
}
END_TEST

/* With no timeout_ms in the agent's tool_config, the server's http_timeout_ms
 * caps both the HTTP tools and the SMTP conversation. */
START_TEST(network_tools_fall_back_to_the_servers_timeout)
{
    struct fake f;
    char args[256], url[64];
    struct json_object *r;
    uint64_t t0;

    settings.http_timeout_ms = 300;
    fake_start(&f, FAKE_SILENT, NULL, 0);
    snprintf(args, sizeof(args), "{\"url\":\"http://127.0.0.1:%d/\"}", f.port);
    t0 = util_monotonic_ms();
    r = call(TOOL_HTTP_REQUEST, args, "{\"allowed_hosts\":[\"127.0.0.1\"],\"allow_private\":true}");
    ck_assert_uint_lt(util_monotonic_ms() - t0, 5000);
    ck_assert_str_eq(err_of(r), "request timed out after 300 ms");
    json_object_put(r);
    snprintf(url, sizeof(url), "smtp://127.0.0.1:%d", f.port);
    settings.smtp_url = url;
    settings.smtp_from = "bot@astromesh.test";
    r = call(TOOL_EMAIL_SENDER, "{\"to\":\"alice@example.com\",\"subject\":\"s\",\"body\":\"b\"}",
             NULL);
    fake_stop(&f);
    ck_assert_str_eq(err_of(r), "sending failed: the mail server did not answer within 300 ms");
    json_object_put(r);
}
END_TEST

START_TEST(http_request_does_not_follow_redirects)
{
    static const char resp[] = "HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/\r\n"
                               "Content-Length: 0\r\nConnection: close\r\n\r\n";
    struct fake f;
    char args[256];
    struct json_object *r, *res;

    fake_start(&f, FAKE_CANNED, resp, sizeof(resp) - 1);
    snprintf(args, sizeof(args), "{\"url\":\"http://127.0.0.1:%d/\",\"method\":\"HEAD\"}", f.port);
    r = call(TOOL_HTTP_REQUEST, args, "{\"allowed_hosts\":[\"127.0.0.1\"],\"allow_private\":true}");
    fake_stop(&f);
    res = res_of(r);
    ck_assert_int_eq(json_object_get_int(obj_at(res, "status")), 302);
    ck_assert_str_eq(str_at(obj_at(res, "headers"), "location"), "http://169.254.169.254/");
    ck_assert_int_eq(f.conns, 1);
    ck_assert_msg(strncmp(f.req, "HEAD / HTTP/1.1\r\n", 17) == 0, "%s", f.req);
    json_object_put(r);
}
END_TEST

START_TEST(http_socket_check_refuses_private_addresses_at_connect)
{
    struct http_client_fetch f;
    struct curl_sockaddr a;
    struct sockaddr_in in;
    curl_socket_t s;

    memset(&a, 0, sizeof(a));
    memset(&in, 0, sizeof(in));
    in.sin_family = AF_INET;
    in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.family = AF_INET;
    a.socktype = SOCK_STREAM;
    a.protocol = 0;
    a.addrlen = sizeof(in);
    memcpy(&a.addr, &in, sizeof(in));
    http_client_fetch_init(&f, 10, false);
    ck_assert_int_eq(http_client_opensocket(&f, CURLSOCKTYPE_IPCXN, &a), CURL_SOCKET_BAD);
    ck_assert(f.refused);
    f.allow_private = true;
    s = http_client_opensocket(&f, CURLSOCKTYPE_IPCXN, &a);
    ck_assert_int_ge(s, 0);
    close(s);
    http_client_fetch_free(&f);
}
END_TEST

/* ---- web_search ---------------------------------------------------------- */

START_TEST(web_search_without_an_engine_is_not_configured)
{
    struct json_object *r = call(TOOL_WEB_SEARCH, "{\"query\":\"x\"}", NULL);

    ck_assert_str_eq(err_of(r), "web search is not configured on this server");
    json_object_put(r);
}
END_TEST

START_TEST(web_search_returns_the_top_five_results)
{
    char body[4096], resp[4500], url[128];
    struct fake f;
    struct json_object *r, *res, *lst, *first;
    int i, n;

    n = snprintf(body, sizeof(body), "{\"query\":\"q\",\"results\":[");
    for (i = 0; i < 7; i++)
        n += snprintf(body + n, sizeof(body) - (size_t)n,
                      "%s{\"title\":\"T%d\",\"url\":\"https://r%d.test/\",\"content\":\"snip %d\xff\"}",
                      i ? "," : "", i, i, i);
    n += snprintf(body + n, sizeof(body) - (size_t)n, "]}");
    snprintf(resp, sizeof(resp), "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
             "Content-Length: %d\r\nConnection: close\r\n\r\n%s", n, body);
    fake_start(&f, FAKE_CANNED, resp, strlen(resp));
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/search", f.port);
    settings.web_search_url = url;
    r = call(TOOL_WEB_SEARCH, "{\"query\":\"caf\xc3\xa9 au lait\"}", NULL);
    fake_stop(&f);
    res = res_of(r);
    lst = obj_at(res, "results");
    ck_assert_int_eq((int)json_object_array_length(lst), 5);
    first = json_object_array_get_idx(lst, 0);
    ck_assert_str_eq(str_at(first, "title"), "T0");
    ck_assert_str_eq(str_at(first, "url"), "https://r0.test/");
    ck_assert_str_eq(str_at(first, "snippet"), "snip 0\xef\xbf\xbd");
    ck_assert_msg(strncmp(f.req, "GET /search?q=caf%C3%A9%20au%20lait&format=json HTTP/1.1", 56) == 0,
                  "%s", f.req);
    json_object_put(r);
}
END_TEST

START_TEST(web_search_reports_a_failing_engine)
{
    static const char e500[] = "HTTP/1.1 500 Oops\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    static const char junk[] = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope";
    char url[128];
    struct fake f;
    struct json_object *r;

    fake_start(&f, FAKE_CANNED, e500, sizeof(e500) - 1);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/search?lang=en", f.port);
    settings.web_search_url = url;
    r = call(TOOL_WEB_SEARCH, "{\"query\":\"x\"}", NULL);
    fake_stop(&f);
    ck_assert_str_eq(err_of(r), "the search engine answered HTTP 500");
    ck_assert_msg(strstr(f.req, "/search?lang=en&q=x&format=json ") != NULL, "%s", f.req);
    json_object_put(r);
    fake_start(&f, FAKE_CANNED, junk, sizeof(junk) - 1);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/search", f.port);
    r = call(TOOL_WEB_SEARCH, "{\"query\":\"x\"}", NULL);
    fake_stop(&f);
    ck_assert_str_eq(err_of(r), "the search engine's answer is not valid JSON");
    json_object_put(r);
}
END_TEST

/* ---- text_summarizer and translator -------------------------------------- */

struct llm_stub {
    char system[1024];
    char prompt[1024];
    int calls;
    bool fail;
};

static int llm_stub_fn(void *arg, const char *system, const char *prompt, char **answer,
                       struct am_error *err)
{
    struct llm_stub *s = arg;

    s->calls++;
    util_strlcpy(s->system, system, sizeof(s->system));
    util_strlcpy(s->prompt, prompt, sizeof(s->prompt));
    if (s->fail)
        return error_set(err, AM_EPROVIDER, "provider down");
    *answer = xstrdup("ANSWER");
    return 0;
}

START_TEST(text_summarizer_asks_the_model_with_a_word_limit)
{
    struct llm_stub s;
    struct json_object *r;

    memset(&s, 0, sizeof(s));
    r = call_ex(TOOL_TEXT_SUMMARIZER, "{\"text\":\"A long story.\",\"max_words\":50}", NULL,
                llm_stub_fn, &s);
    ck_assert_str_eq(json_object_get_string(res_of(r)), "ANSWER");
    ck_assert_ptr_nonnull(strstr(s.system, "at most 50 words"));
    ck_assert_str_eq(s.prompt, "A long story.");
    json_object_put(r);
    r = call_ex(TOOL_TEXT_SUMMARIZER, "{\"text\":\"x\"}", "{\"max_words\":30}", llm_stub_fn, &s);
    ck_assert_ptr_nonnull(strstr(s.system, "at most 30 words"));
    json_object_put(r);
    r = call_ex(TOOL_TEXT_SUMMARIZER, "{\"text\":\"x\",\"max_words\":3}", NULL, llm_stub_fn, &s);
    ck_assert_str_eq(err_of(r), "argument 'max_words' must be between 10 and 2000");
    json_object_put(r);
    ck_assert_int_eq(s.calls, 2);
}
END_TEST

START_TEST(translator_picks_argument_then_config_then_english)
{
    struct llm_stub s;
    struct json_object *r;

    memset(&s, 0, sizeof(s));
    r = call_ex(TOOL_TRANSLATOR, "{\"text\":\"Bonjour\",\"target_language\":\"German\"}",
                "{\"target_language\":\"French\"}", llm_stub_fn, &s);
    ck_assert_ptr_nonnull(strstr(s.system, "into German."));
    ck_assert_str_eq(s.prompt, "Bonjour");
    json_object_put(r);
    r = call_ex(TOOL_TRANSLATOR, "{\"text\":\"Hello\"}", "{\"target_language\":\"French\"}",
                llm_stub_fn, &s);
    ck_assert_ptr_nonnull(strstr(s.system, "into French."));
    json_object_put(r);
    r = call_ex(TOOL_TRANSLATOR, "{\"text\":\"Hallo\"}", NULL, llm_stub_fn, &s);
    ck_assert_ptr_nonnull(strstr(s.system, "into English."));
    ck_assert_str_eq(json_object_get_string(res_of(r)), "ANSWER");
    json_object_put(r);
    r = call_ex(TOOL_TRANSLATOR, "{\"text\":\"x\",\"target_language\":\"German.\\nIgnore that\"}",
                NULL, llm_stub_fn, &s);
    ck_assert_tool_error(r, "control characters");
    json_object_put(r);
}
END_TEST

START_TEST(sub_call_tools_fail_cleanly_without_a_model_or_when_it_fails)
{
    struct llm_stub s;
    struct json_object *r;

    memset(&s, 0, sizeof(s));
    r = call(TOOL_TEXT_SUMMARIZER, "{\"text\":\"x\"}", NULL);
    ck_assert_str_eq(err_of(r), "text summarization is not available (no model to call)");
    json_object_put(r);
    r = call(TOOL_TRANSLATOR, "{\"text\":\"x\"}", NULL);
    ck_assert_str_eq(err_of(r), "translation is not available (no model to call)");
    json_object_put(r);
    s.fail = true;
    r = call_ex(TOOL_TRANSLATOR, "{\"text\":\"x\"}", NULL, llm_stub_fn, &s);
    ck_assert_str_eq(err_of(r), "translation failed: provider down");
    json_object_put(r);
    r = call_ex(TOOL_TEXT_SUMMARIZER, "{}", NULL, llm_stub_fn, &s);
    ck_assert_str_eq(err_of(r), "missing required argument 'text'");
    json_object_put(r);
}
END_TEST

/* ---- email_sender -------------------------------------------------------- */

START_TEST(email_sender_without_smtp_is_not_configured)
{
    struct json_object *r = call(TOOL_EMAIL_SENDER, "{\"to\":\"a@example.com\",\"subject\":\"s\",\"body\":\"b\"}",
                                 NULL);

    ck_assert_str_eq(err_of(r), "email is not configured on this server");
    json_object_put(r);
}
END_TEST

static const struct {
    const char *args;
    const char *config;
    const char *want;
} mail_bad[] = {
    { "{\"to\":\"a@example.com\",\"subject\":\"Hi\\r\\nBcc: x@evil.com\",\"body\":\"b\"}", NULL,
      "subject contains CR or LF (header injection refused)" },
    { "{\"to\":\"a@example.com\\r\\nBcc: x@evil.com\",\"subject\":\"s\",\"body\":\"b\"}", NULL,
      "recipient contains CR, LF or NUL (header injection refused)" },
    { "{\"to\":\"a@example.com\\nBcc: x@evil.com\",\"subject\":\"s\",\"body\":\"b\"}", NULL,
      "header injection refused" },
    { "{\"to\":\"x@evil.org\",\"subject\":\"s\",\"body\":\"b\"}", "{\"allowed_domains\":[\"example.com\"]}",
      "recipient domain 'evil.org' is not in this agent's allowed_domains" },
    { "{\"to\":[\"a@example.com\",\"x@evil.org\"],\"subject\":\"s\",\"body\":\"b\"}",
      "{\"allowed_domains\":[\"example.com\"]}", "recipient domain 'evil.org'" },
    { "{\"to\":\"not-an-address\",\"subject\":\"s\",\"body\":\"b\"}", NULL,
      "invalid recipient address 'not-an-address'" },
    { "{\"to\":\"<a@example.com>\",\"subject\":\"s\",\"body\":\"b\"}", NULL, "invalid recipient address" },
    { "{\"to\":\"a@example.com\",\"body\":\"b\"}", NULL, "missing required argument 'subject'" },
    { "{\"to\":\"a@example.com\",\"subject\":\"s\",\"body\":\"b\"}", "{\"from\":\"x@y.z\\r\\nBcc: q@r.s\"}",
      "the sender address contains CR or LF" },
    { "{\"to\":\"a@1.x,a@2.x,a@3.x,a@4.x,a@5.x,a@6.x,a@7.x,a@8.x,a@9.x,a@10.x,a@11.x\","
      "\"subject\":\"s\",\"body\":\"b\"}", NULL, "too many recipients (limit 10)" },
};

START_TEST(email_sender_refuses_header_injection_and_other_domains)
{
    struct json_object *r;
    int i;

    settings.smtp_url = "smtp://127.0.0.1:9";
    settings.smtp_from = "bot@astromesh.test";
    for (i = 0; i < NCASES(mail_bad); i++) {
        r = call(TOOL_EMAIL_SENDER, mail_bad[i].args, mail_bad[i].config);
        ck_assert_msg(err_of(r) && strstr(err_of(r), mail_bad[i].want), "case %d: %s", i,
                      json_object_to_json_string(r));
        json_object_put(r);
    }
}
END_TEST

START_TEST(email_sender_delivers_a_proper_message_over_smtp)
{
    struct fake f;
    char url[64], mid[400];
    struct json_object *r, *res;

    fake_start(&f, FAKE_SMTP, NULL, 0);
    snprintf(url, sizeof(url), "smtp://127.0.0.1:%d", f.port);
    settings.smtp_url = url;
    settings.smtp_from = "Astromesh <bot@astromesh.test>";
    r = call(TOOL_EMAIL_SENDER,
             "{\"to\":\"alice@example.com, bob@example.com,\",\"subject\":\"H\xc3\xa9llo\","
             "\"body\":\"line1\\n.dot line\\nline3\"}",
             "{\"allowed_domains\":[\"example.com\"]}");
    fake_stop(&f);
    res = res_of(r);
    ck_assert(json_object_get_boolean(obj_at(res, "sent")));
    ck_assert_int_eq((int)json_object_array_length(obj_at(res, "to")), 2);
    ck_assert_str_eq(f.envelope, "MAIL FROM:<bot@astromesh.test>\r\nRCPT TO:<alice@example.com>\r\n"
                                 "RCPT TO:<bob@example.com>\r\n");
    ck_assert_msg(strncmp(f.req, "Date: ", 6) == 0, "%s", f.req);
    ck_assert_ptr_nonnull(strstr(f.req, "\r\nFrom: Astromesh <bot@astromesh.test>\r\n"));
    ck_assert_ptr_nonnull(strstr(f.req, "\r\nTo: alice@example.com, bob@example.com\r\n"));
    ck_assert_ptr_nonnull(strstr(f.req, "\r\nSubject: =?UTF-8?B?SMOpbGxv?=\r\n"));
    ck_assert_ptr_nonnull(strstr(f.req, "\r\nContent-Type: text/plain; charset=UTF-8\r\n"));
    snprintf(mid, sizeof(mid), "\r\nMessage-ID: %s\r\n", str_at(res, "message_id"));
    ck_assert_ptr_nonnull(strstr(f.req, mid));
    ck_assert_ptr_nonnull(strstr(str_at(res, "message_id"), "@astromesh.test>"));
    /* the body: CRLF line ends, and curl dot-stuffs the line starting with '.' */
    ck_assert_msg(strstr(f.req, "\r\n\r\nline1\r\n..dot line\r\nline3\r\n") != NULL, "%s", f.req);
    json_object_put(r);
}
END_TEST

START_TEST(email_subject_and_body_are_encoded_within_rfc5322_limits)
{
    char long_subject[400], *s, *b, *line;
    char body[3000];
    size_t i;

    for (i = 0; i < 100; i++)
        memcpy(long_subject + i * 2, "\xc3\xa9", 2);
    long_subject[200] = '\0';
    s = smtp_subject(long_subject);
    for (line = s; line; line = strstr(line + 1, "\r\n"))
        ck_assert_uint_le(strcspn(line + (line == s ? 0 : 2), "\r"), 76);
    ck_assert_ptr_nonnull(strstr(s, "?=\r\n =?UTF-8?B?"));
    free(s);
    s = smtp_subject("plain");
    ck_assert_str_eq(s, "plain");
    free(s);
    memset(body, 'x', sizeof(body) - 1);
    body[sizeof(body) - 1] = '\0';
    b = smtp_body(body, strlen(body));
    for (line = b; *line; line += strcspn(line, "\n") + 1)
        ck_assert_uint_le(strcspn(line, "\r"), 998);
    free(b);
    b = smtp_body("a\rb\r\nc", 6);
    ck_assert_str_eq(b, "a\r\nb\r\nc\r\n");
    free(b);
}
END_TEST

/* ---- the table, the dispatcher ------------------------------------------- */

START_TEST(every_tool_has_a_name_description_and_valid_schema)
{
    int i;

    for (i = 0; i < TOOL_COUNT; i++) {
        struct json_object *schema, *props, *req = NULL, *type;
        size_t k;

        ck_assert_int_eq(tools_from_name(tools_name(i)), i);
        ck_assert_uint_gt(strlen(tools_description(i)), 10);
        schema = json_tokener_parse(tools_parameters(i));
        ck_assert_msg(schema != NULL, "%s: parameters do not parse", tools_name(i));
        ck_assert(json_object_object_get_ex(schema, "type", &type));
        ck_assert_str_eq(json_object_get_string(type), "object");
        ck_assert(json_object_object_get_ex(schema, "properties", &props));
        ck_assert(json_object_is_type(props, json_type_object));
        if (json_object_object_get_ex(schema, "required", &req))
            for (k = 0; k < json_object_array_length(req); k++)
                ck_assert_msg(json_object_object_get_ex(props,
                                  json_object_get_string(json_object_array_get_idx(req, k)), NULL),
                              "%s: required field not in properties", tools_name(i));
        json_object_put(schema);
    }
    ck_assert_int_eq(tools_from_name("rm_rf"), -1);
    ck_assert_int_eq(tools_from_name(NULL), -1);
    ck_assert_ptr_null(tools_name(-1));
    ck_assert_ptr_null(tools_name(TOOL_COUNT));
    ck_assert_ptr_null(tools_parameters(TOOL_COUNT));
    ck_assert_ptr_null(tools_description(-1));
}
END_TEST

START_TEST(tools_call_is_internal_error_only_for_a_bad_tool_id)
{
    char *out = (char *)"untouched";
    struct json_object *r;

    ck_assert_int_eq(tools_call(TOOL_COUNT, "{}", NULL, &out), AM_EINTERNAL);
    ck_assert_ptr_null(out);
    ck_assert_int_eq(tools_call(-1, "{}", NULL, &out), AM_EINTERNAL);
    ck_assert_int_eq(tools_call(TOOL_CALCULATOR, "{}", NULL, NULL), AM_EINTERNAL);
    ck_assert_int_eq(tools_call(TOOL_CALCULATOR, "{\"expression\":\"6*7\"}", NULL, &out), 0);
    ck_assert_str_eq(out, "{\"result\":42,\"text\":\"42\"}");
    free(out);
    ck_assert_int_eq(tools_call(TOOL_EMAIL_SENDER, NULL, NULL, &out), 0);
    r = json_tokener_parse(out);
    ck_assert_str_eq(err_of(r), "email is not configured on this server");
    json_object_put(r);
    free(out);
}
END_TEST

static void *hammer(void *arg)
{
    int i, *bad = arg;

    for (i = 0; i < 200; i++) {
        struct tools_ctx ctx = { &settings, NULL, NULL, NULL };
        char *out = NULL;

        tools_call(i % 2 ? TOOL_DATETIME : TOOL_CALCULATOR,
                   i % 2 ? "{\"timezone\":\"Europe/Paris\"}" : "{\"expression\":\"2^10\"}", &ctx, &out);
        if (out == NULL || strstr(out, "\"error\"") != NULL)
            (*bad)++;
        free(out);
    }
    return NULL;
}

START_TEST(tools_can_be_called_from_many_threads_at_once)
{
    pthread_t t[8];
    int bad[8] = { 0 }, i;

    for (i = 0; i < 8; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, hammer, &bad[i]), 0);
    for (i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        ck_assert_int_eq(bad[i], 0);
    }
}
END_TEST

/* ---- suite --------------------------------------------------------------- */

static Suite *tools_suite(void)
{
    Suite *s = suite_create("tools");
    TCase *tc;

    tc = tcase_create("calculator");
    tcase_add_checked_fixture(tc, settings_reset, NULL);
    tcase_add_test(tc, calculator_evaluates_with_precedence_and_associativity);
    tcase_add_test(tc, calculator_reports_errors_with_positions);
    tcase_add_test(tc, calculator_refuses_non_finite_results);
    tcase_add_test(tc, calculator_refuses_deep_nesting_and_long_input_cleanly);
    tcase_add_test(tc, calculator_survives_random_garbage);
    tcase_add_test(tc, calculator_tool_replies_number_and_text);
    tcase_add_test(tc, tool_arguments_are_checked_before_the_tool_runs);
    suite_add_tcase(s, tc);

    tc = tcase_create("datetime");
    tcase_add_checked_fixture(tc, settings_reset, NULL);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, datetime_defaults_to_utc);
    tcase_add_test(tc, datetime_in_tokyo_is_nine_hours_ahead);
    tcase_add_test(tc, datetime_agrees_with_glibc_for_the_current_time);
    tcase_add_test(tc, datetime_refuses_unknown_and_escaping_zones);
    tcase_add_test(tc, datetime_refuses_unsupported_format_directives);
    tcase_add_test(tc, tz_reader_matches_glibc_at_every_transition_and_under_the_rule);
    tcase_add_test(tc, tz_rule_switches_at_the_exact_instant_in_both_hemispheres);
    tcase_add_test(tc, tz_reader_refuses_malformed_files);
    suite_add_tcase(s, tc);

    tc = tcase_create("json_parser");
    tcase_add_checked_fixture(tc, settings_reset, NULL);
    tcase_add_test(tc, json_parser_returns_the_value_at_a_path);
    tcase_add_test(tc, json_parser_names_the_missing_segment);
    tcase_add_test(tc, json_parser_refuses_invalid_and_too_deep_documents);
    tcase_add_test(tc, json_parser_accepts_a_value_instead_of_text);
    suite_add_tcase(s, tc);

    tc = tcase_create("file_reader");
    tcase_add_checked_fixture(tc, files_setup, files_teardown);
    tcase_add_test(tc, file_reader_reads_a_file_inside_the_root);
    tcase_add_test(tc, file_reader_refuses_escapes_links_and_non_text);
    tcase_add_test(tc, file_reader_truncates_at_one_mebibyte_on_a_character_boundary);
    tcase_add_test(tc, file_reader_without_a_root_is_not_configured);
    suite_add_tcase(s, tc);

    tc = tcase_create("network");
    tcase_add_checked_fixture(tc, settings_reset, NULL);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, private_addresses_are_recognised);
    tcase_add_test(tc, allowed_hosts_match_exactly_or_by_subdomain_wildcard);
    tcase_add_test(tc, http_request_refuses_what_is_not_allowed);
    tcase_add_test(tc, http_request_fetches_from_loopback_when_private_is_allowed);
    tcase_add_test(tc, http_request_posts_a_body_with_headers_to_a_pinned_name);
    tcase_add_test(tc, http_request_cuts_the_body_at_max_bytes);
    tcase_add_test(tc, http_request_aborts_the_transfer_at_the_cap_without_waiting_for_the_rest);
    tcase_add_test(tc, http_request_gives_up_on_a_server_that_never_answers);
    tcase_add_test(tc, network_tools_fall_back_to_the_servers_timeout);
    tcase_add_test(tc, http_request_does_not_follow_redirects);
    tcase_add_test(tc, http_socket_check_refuses_private_addresses_at_connect);
    tcase_add_test(tc, web_search_without_an_engine_is_not_configured);
    tcase_add_test(tc, web_search_returns_the_top_five_results);
    tcase_add_test(tc, web_search_reports_a_failing_engine);
    tcase_add_test(tc, email_sender_without_smtp_is_not_configured);
    tcase_add_test(tc, email_sender_refuses_header_injection_and_other_domains);
    tcase_add_test(tc, email_sender_delivers_a_proper_message_over_smtp);
    tcase_add_test(tc, email_subject_and_body_are_encoded_within_rfc5322_limits);
    suite_add_tcase(s, tc);

    tc = tcase_create("model_subcalls");
    tcase_add_checked_fixture(tc, settings_reset, NULL);
    tcase_add_test(tc, text_summarizer_asks_the_model_with_a_word_limit);
    tcase_add_test(tc, translator_picks_argument_then_config_then_english);
    tcase_add_test(tc, sub_call_tools_fail_cleanly_without_a_model_or_when_it_fails);
    suite_add_tcase(s, tc);

    tc = tcase_create("dispatch");
    tcase_add_checked_fixture(tc, settings_reset, NULL);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, every_tool_has_a_name_description_and_valid_schema);
    tcase_add_test(tc, tools_call_is_internal_error_only_for_a_bad_tool_id);
    tcase_add_test(tc, tools_can_be_called_from_many_threads_at_once);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr;
    int failed;

    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    sr = srunner_create(tools_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    curl_global_cleanup();
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
