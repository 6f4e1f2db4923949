/*
 * calculator.c - the calculator tool: a recursive-descent evaluator over
 * doubles (tools_calc_eval, public for tests) and the tool around it.
 *
 * Owns nothing beyond one call's stack. Must not recurse without counting
 * depth, must not produce inf or NaN as a result, and must not depend on the
 * locale (the daemon never calls setlocale()).
 *
 * The grammar:
 *      expr    := term (('+' | '-') term)*
 *      term    := unary (('*' | '/' | '%') unary)*
 *      unary   := ('-' | '+') unary | power
 *      power   := primary (('^' | '**') unary)?       right-associative
 *      primary := number | name | name '(' args ')' | '(' expr ')'
 *    Unary minus binds looser than '^', as in written mathematics (and
 *    Python): -2^2 = -(2^2) = -4, while 2^-2 = 0.25. '%' is fmod (the sign
 *    follows the dividend). Every intermediate value must be finite, so
 *    1e308*10 is "result is not a finite number", never inf. Positions in
 *    messages count characters from 1. Nesting is capped at CALC_MAX_DEPTH
 *    and the input at CALC_MAX_LEN, so no input can exhaust the stack.
 *    Numbers go through strtod(): the daemon never calls setlocale(), so the
 *    decimal point is '.'.
 */
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "runtime/tools/calculator.h"
#include "runtime/tools/tool_common.h"

#define CALC_MAX_LEN 1024                  /* characters of an expression */
#define CALC_MAX_DEPTH 64                  /* nesting of (), unary signs, ^ */
#define CALC_MAX_ARGS 64                   /* arguments of min()/max() */

struct calc {
    const char *s;        /* the expression, NUL-terminated */
    size_t pos;           /* offset of the next unread byte */
    int depth;            /* current nesting, <= CALC_MAX_DEPTH */
    char *err;            /* OUT: first error message */
    size_t errcap;
};

static int calc_fail(struct calc *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Record the first error; always returns -1. */
static int calc_fail(struct calc *c, const char *fmt, ...)
{
    va_list ap;

    if (c->err[0] == '\0') {
        va_start(ap, fmt);
        vsnprintf(c->err, c->errcap, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static bool calc_ident_char(int ch, bool first)
{
    return isalpha(ch) || ch == '_' || (!first && isdigit(ch));
}

/* "unexpected <token> at N" for whatever starts at pos. */
static int calc_unexpected(struct calc *c)
{
    const char *p = c->s + c->pos;
    unsigned char ch = (unsigned char)*p;
    size_t n = 1;

    if (ch == '\0')
        return calc_fail(c, "unexpected end of expression");
    if (ch >= 0x80 || !isprint(ch))
        return calc_fail(c, "unexpected byte 0x%02X at %zu", ch, c->pos + 1);
    if (calc_ident_char(ch, true))
        while (n < 32 && calc_ident_char((unsigned char)p[n], false))
            n++;
    else if (isdigit(ch) || ch == '.')
        while (n < 32 && (isdigit((unsigned char)p[n]) || p[n] == '.'))
            n++;
    return calc_fail(c, "unexpected '%.*s' at %zu", (int)n, p, c->pos + 1);
}

static void calc_ws(struct calc *c)
{
    while (c->s[c->pos] == ' ' || c->s[c->pos] == '\t' || c->s[c->pos] == '\n' ||
           c->s[c->pos] == '\r')
        c->pos++;
}

static int calc_finite(struct calc *c, double v)
{
    return isfinite(v) ? 0 : calc_fail(c, "result is not a finite number");
}

static int calc_expr(struct calc *c, double *out);
static int calc_unary(struct calc *c, double *out);

/* number := digits ['.' digits] [('e'|'E') ['+'|'-'] digits], or '.' digits */
static int calc_number(struct calc *c, double *out)
{
    const char *p = c->s + c->pos;
    size_t n = 0, digits = 0;
    char buf[64];

    while (isdigit((unsigned char)p[n])) {
        n++;
        digits++;
    }
    if (p[n] == '.') {
        n++;
        while (isdigit((unsigned char)p[n])) {
            n++;
            digits++;
        }
    }
    if (digits == 0)
        return calc_unexpected(c);
    if (p[n] == 'e' || p[n] == 'E') {
        size_t k = n + 1;

        if (p[k] == '+' || p[k] == '-')
            k++;
        if (isdigit((unsigned char)p[k])) {
            while (isdigit((unsigned char)p[k]))
                k++;
            n = k;
        }
    }
    if (n >= sizeof(buf))
        return calc_fail(c, "number too long at %zu", c->pos + 1);
    memcpy(buf, p, n);
    buf[n] = '\0';
    *out = strtod(buf, NULL);
    if (!isfinite(*out))
        return calc_fail(c, "number out of range at %zu", c->pos + 1);
    c->pos += n;
    return 0;
}

enum calc_kind { CF_1, CF_2, CF_MIN, CF_MAX };

static const struct calc_fn {
    const char *name;
    enum calc_kind kind;
    double (*f1)(double);
    double (*f2)(double, double);
} calc_fns[] = {
    { "sqrt", CF_1, sqrt, NULL },   { "abs", CF_1, fabs, NULL },
    { "sin", CF_1, sin, NULL },     { "cos", CF_1, cos, NULL },
    { "tan", CF_1, tan, NULL },     { "asin", CF_1, asin, NULL },
    { "acos", CF_1, acos, NULL },   { "atan", CF_1, atan, NULL },
    { "log", CF_1, log, NULL },     { "ln", CF_1, log, NULL },
    { "log10", CF_1, log10, NULL }, { "log2", CF_1, log2, NULL },
    { "exp", CF_1, exp, NULL },     { "floor", CF_1, floor, NULL },
    { "ceil", CF_1, ceil, NULL },   { "round", CF_1, round, NULL },
    { "trunc", CF_1, trunc, NULL }, { "pow", CF_2, NULL, pow },
    { "atan2", CF_2, NULL, atan2 }, { "hypot", CF_2, NULL, hypot },
    { "min", CF_MIN, NULL, NULL },  { "max", CF_MAX, NULL, NULL },
};

static const struct calc_fn *calc_find_fn(const char *name, size_t n)
{
    size_t i;

    for (i = 0; i < sizeof(calc_fns) / sizeof(calc_fns[0]); i++)
        if (strlen(calc_fns[i].name) == n && strncasecmp(calc_fns[i].name, name, n) == 0)
            return &calc_fns[i];
    return NULL;
}

/* Apply fn to args; domain errors (sqrt(-1), log(0)) are reported by name. */
static int calc_apply(struct calc *c, const struct calc_fn *fn, const double *a, int n,
                      double *out)
{
    int want = fn->kind == CF_1 ? 1 : fn->kind == CF_2 ? 2 : -1;
    int i;

    if (want > 0 && n != want)
        return calc_fail(c, "%s() takes %d argument%s (got %d)", fn->name, want,
                         want == 1 ? "" : "s", n);
    if (want < 0 && n == 0)
        return calc_fail(c, "%s() needs at least one argument", fn->name);
    switch (fn->kind) {
    case CF_1:
        *out = fn->f1(a[0]);
        break;
    case CF_2:
        *out = fn->f2(a[0], a[1]);
        break;
    case CF_MIN:
    case CF_MAX:
        *out = a[0];
        for (i = 1; i < n; i++)
            *out = fn->kind == CF_MIN ? fmin(*out, a[i]) : fmax(*out, a[i]);
        break;
    }
    if (isnan(*out) || (isinf(*out) && fn->f1 != exp && fn->f2 != pow && fn->f2 != hypot))
        return calc_fail(c, "math domain error in %s()", fn->name);
    return calc_finite(c, *out);
}

/* name '(' [expr (',' expr)*] ')', pos at the '('. */
static int calc_call(struct calc *c, const char *name, size_t nlen, size_t at, double *out)
{
    const struct calc_fn *fn = calc_find_fn(name, nlen);
    double args[CALC_MAX_ARGS];
    int n = 0;

    if (fn == NULL)
        return calc_fail(c, "unknown function '%.*s' at %zu", (int)nlen, name, at + 1);
    c->pos++;
    calc_ws(c);
    if (c->s[c->pos] != ')') {
        for (;;) {
            if (n == CALC_MAX_ARGS)
                return calc_fail(c, "too many arguments to %s() (limit %d)", fn->name,
                                 CALC_MAX_ARGS);
            if (calc_expr(c, &args[n]) < 0)
                return -1;
            n++;
            calc_ws(c);
            if (c->s[c->pos] != ',')
                break;
            c->pos++;
        }
        if (c->s[c->pos] != ')') {
            if (c->s[c->pos] == '\0')
                return calc_fail(c, "missing ')' for %s( at %zu", fn->name, at + 1);
            return calc_unexpected(c);
        }
    }
    c->pos++;
    return calc_apply(c, fn, args, n, out);
}

/* primary := number | name | name '(' args ')' | '(' expr ')' */
static int calc_primary(struct calc *c, double *out)
{
    const char *p;
    size_t at, n = 0;

    calc_ws(c);
    at = c->pos;
    p = c->s + at;
    if (*p == '(') {
        c->pos++;
        if (calc_expr(c, out) < 0)
            return -1;
        calc_ws(c);
        if (c->s[c->pos] == ')') {
            c->pos++;
            return 0;
        }
        if (c->s[c->pos] == '\0')
            return calc_fail(c, "missing ')' for '(' at %zu", at + 1);
        return calc_unexpected(c);
    }
    if (isdigit((unsigned char)*p) || *p == '.')
        return calc_number(c, out);
    if (!calc_ident_char((unsigned char)*p, true))
        return calc_unexpected(c);
    while (calc_ident_char((unsigned char)p[n], false))
        n++;
    c->pos += n;
    calc_ws(c);
    if (c->s[c->pos] == '(')
        return calc_call(c, p, n, at, out);
    if (n == 2 && strncasecmp(p, "pi", 2) == 0)
        *out = M_PI;
    else if (n == 1 && (*p == 'e' || *p == 'E'))
        *out = M_E;
    else if (n == 3 && strncasecmp(p, "tau", 3) == 0)
        *out = 2 * M_PI;
    else
        return calc_fail(c, "unknown name '%.*s' at %zu", (int)(n > 32 ? 32 : n), p, at + 1);
    return 0;
}

/* power := primary (('^' | '**') unary)? — the exponent may carry a sign and
 * is itself a power, which makes '^' right-associative. */
static int calc_power(struct calc *c, double *out)
{
    double rhs;

    if (calc_primary(c, out) < 0)
        return -1;
    calc_ws(c);
    if (c->s[c->pos] == '^')
        c->pos++;
    else if (c->s[c->pos] == '*' && c->s[c->pos + 1] == '*')
        c->pos += 2;
    else
        return 0;
    if (calc_unary(c, &rhs) < 0)
        return -1;
    *out = pow(*out, rhs);
    return calc_finite(c, *out);
}

/* unary := ('-' | '+') unary | power; the one place depth is counted, since
 * every recursion (parentheses, signs, exponents) passes through here. */
static int calc_unary(struct calc *c, double *out)
{
    int rc;

    if (++c->depth > CALC_MAX_DEPTH) {
        c->depth--;
        return calc_fail(c, "expression is nested too deeply (limit %d)", CALC_MAX_DEPTH);
    }
    calc_ws(c);
    if (c->s[c->pos] == '-' || c->s[c->pos] == '+') {
        bool neg = c->s[c->pos] == '-';

        c->pos++;
        rc = calc_unary(c, out);
        if (rc == 0 && neg)
            *out = -*out;
    } else {
        rc = calc_power(c, out);
    }
    c->depth--;
    return rc;
}

/* term := unary (('*' | '/' | '%') unary)* */
static int calc_term(struct calc *c, double *out)
{
    double rhs;
    char op;

    if (calc_unary(c, out) < 0)
        return -1;
    for (;;) {
        calc_ws(c);
        op = c->s[c->pos];
        if ((op != '*' && op != '/' && op != '%') || (op == '*' && c->s[c->pos + 1] == '*'))
            return 0;
        c->pos++;
        if (calc_unary(c, &rhs) < 0)
            return -1;
        if (op != '*' && rhs == 0)
            return calc_fail(c, op == '/' ? "division by zero" : "modulo by zero");
        *out = op == '*' ? *out * rhs : op == '/' ? *out / rhs : fmod(*out, rhs);
        if (calc_finite(c, *out) < 0)
            return -1;
    }
}

/* expr := term (('+' | '-') term)* */
static int calc_expr(struct calc *c, double *out)
{
    double rhs;
    char op;

    if (calc_term(c, out) < 0)
        return -1;
    for (;;) {
        calc_ws(c);
        op = c->s[c->pos];
        if (op != '+' && op != '-')
            return 0;
        c->pos++;
        if (calc_term(c, &rhs) < 0)
            return -1;
        *out = op == '+' ? *out + rhs : *out - rhs;
        if (calc_finite(c, *out) < 0)
            return -1;
    }
}

/* Declared in tools.h: 0 and *out, or -1 with the first error in errbuf. */
int tools_calc_eval(const char *expr, double *out, char *errbuf, size_t cap)
{
    char dummy[8];
    struct calc c = { expr, 0, 0, cap ? errbuf : dummy, cap ? cap : sizeof(dummy) };
    double v;

    c.err[0] = '\0';
    if (expr == NULL || out == NULL)
        return calc_fail(&c, "no expression");
    if (strlen(expr) > CALC_MAX_LEN)
        return calc_fail(&c, "expression is too long (limit %d characters)", CALC_MAX_LEN);
    calc_ws(&c);
    if (expr[c.pos] == '\0')
        return calc_fail(&c, "empty expression");
    if (calc_expr(&c, &v) < 0)
        return -1;
    calc_ws(&c);
    if (expr[c.pos] != '\0')
        return calc_unexpected(&c);
    *out = v == 0 ? 0 : v;   /* no "-0" */
    return 0;
}

/* The shortest of %.15g..%.17g that reads back as v. */
static void calc_format(double v, char *buf, size_t cap)
{
    int prec;

    for (prec = 15; prec <= 17; prec++) {
        snprintf(buf, cap, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

struct json_object *calculator_tool(struct json_object *args, const struct tools_ctx *ctx)
{
    struct json_object *err = NULL, *o;
    const char *expr;
    char msg[160], num[40], text[40];
    size_t len;
    double v;

    (void)ctx;
    expr = tool_arg_str(args, "expression", true, CALC_MAX_LEN, &len, &err);
    if (expr == NULL)
        return err;
    if (tools_calc_eval(expr, &v, msg, sizeof(msg)) < 0)
        return tool_reply_error("%s", msg);
    calc_format(v, num, sizeof(num));
    snprintf(text, sizeof(text), "%.15g", v);
    o = tool_reply_result(json_object_new_double_s(v, num));
    json_object_object_add(o, "text", json_object_new_string(text));
    return o;
}

