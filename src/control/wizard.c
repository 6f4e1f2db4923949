/*
 * wizard.c - the WizardConfig: validation, step-wise merge, and compilation
 * to the Astromesh agent YAML (apiVersion astromesh/v1, kind Agent).
 *
 * Owns: nothing long-lived. Every function is pure over its json-c inputs;
 * the only allocations are the merged object and the YAML buffer, and both
 * are handed to the caller.
 *
 * Compilation maps the WizardConfig onto a struct agent_yaml_doc (tone
 * sentences, guardrail names such as pii_filter -> pii_detection, defaults)
 * and lets agent_yaml emit it: the format's words and its bytes are that
 * module's, so the wizard validates against agent_yaml's word tables.
 *
 * Must not: do I/O, log, touch the database or the registry, or write a
 * provider secret anywhere. Compile writes key *references* (key_refs) and
 * never looks at cfg->providers[].api_key.
 *
 * Validation is table-driven. Each JSON object in a WizardConfig has a table
 * of fields (wz_top, wz_step1..wz_step5, and one per configurable tool) that
 * gives each field its kind, bounds and allowed values; wz_check_object walks
 * an object against its table and reports every problem it finds, not just
 * the first, as {field, problem} details with a dotted path
 * ("step3.tool_configs.http_request.allowed_hosts[0]").
 *
 * JSON null: in a create body and in a stored config, null means "absent".
 * In a PUT body it means "remove this field" (wizard_merge); `name` can never
 * be removed. Inside tool_configs entries null is always "absent", and
 * wizard_merge strips every null from its result.
 *
 * Strings must be valid UTF-8 without NUL bytes: libyaml refuses anything
 * else, and a config that validates must always compile.
 */
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "control/wizard.h"
#include "runtime/agent_yaml.h"
#include "runtime/tools/tools.h"
#include "lib/buf.h"
#include "lib/key.h"
#include "lib/util.h"

#define WZ_PATH_MAX 128     /* a detail's field path (the detail keeps 96) */
#define WZ_PROBLEM_MAX 160  /* a detail's problem text */
#define WZ_KEY_SHOWN 48     /* bytes of a client-supplied key echoed in a path */
#define WZ_MODEL_MAX 128    /* bytes of the model part of "provider/model" */
#define WZ_PROVIDER_MAX 32  /* bytes of the provider part */

/* ---- the field tables ---------------------------------------------------- */

enum wz_kind {
    WZ_STRING,        /* UTF-8 string, min..max bytes */
    WZ_INT,           /* JSON integer (not bool, not 20.0), min..max */
    WZ_BOOL,          /* JSON true/false */
    WZ_ENUM,          /* one string of values[] */
    WZ_ENUM_SET,      /* array of unique strings of values[], at most max */
    WZ_TOOL_SET,      /* array of unique tool names (tools_name), at most max */
    WZ_STRING_LIST,   /* array of strings, at most max, each item_min..item_max bytes */
    WZ_MODEL,         /* "provider/model" */
    WZ_NAME,          /* the agent name */
    WZ_OBJECT,        /* object checked against fields[] */
    WZ_TOOL_CONFIGS   /* {toolname: object checked against that tool's table} */
};

struct wz_field {
    const char *key;                 /* NULL ends a table */
    enum wz_kind kind;
    int64_t min, max;                /* bytes, value or items, by kind */
    const char *const *values;       /* WZ_ENUM, WZ_ENUM_SET: NULL-terminated */
    const struct wz_field *fields;   /* WZ_OBJECT */
    int64_t item_min, item_max;      /* WZ_STRING_LIST: bytes per item */
};

static const char *const wz_tones[] = {
    "professional", "casual", "technical", "empathetic", NULL };
static const char *const wz_memory_types[] = { "none", "conversational", NULL };
static const char *const wz_input_guardrails[] = {
    "pii_filter", "content_safety", "max_length", NULL };
static const char *const wz_output_guardrails[] = {
    "pii_filter", "content_safety", NULL };

static const struct wz_field wz_step1[] = {
    { "model", WZ_MODEL, 0, 0, NULL, NULL, 0, 0 },
    { "fallback_model", WZ_MODEL, 0, 0, NULL, NULL, 0, 0 },
    { "routing_strategy", WZ_ENUM, 0, 0, agent_yaml_routings, NULL, 0, 0 },
    { NULL, WZ_STRING, 0, 0, NULL, NULL, 0, 0 }
};
static const struct wz_field wz_step2[] = {
    { "system_prompt", WZ_STRING, 1, 32768, NULL, NULL, 0, 0 },
    { "persona", WZ_STRING, 0, 256, NULL, NULL, 0, 0 },
    { "tone", WZ_ENUM, 0, 0, wz_tones, NULL, 0, 0 },
    { NULL, WZ_STRING, 0, 0, NULL, NULL, 0, 0 }
};
static const struct wz_field wz_step3[] = {
    { "tools", WZ_TOOL_SET, 0, 16, NULL, NULL, 0, 0 },
    { "tool_configs", WZ_TOOL_CONFIGS, 0, 0, NULL, NULL, 0, 0 },
    { NULL, WZ_STRING, 0, 0, NULL, NULL, 0, 0 }
};
static const struct wz_field wz_step4[] = {
    { "memory_type", WZ_ENUM, 0, 0, wz_memory_types, NULL, 0, 0 },
    { "memory_strategy", WZ_ENUM, 0, 0, agent_yaml_memory_strategies, NULL, 0, 0 },
    { "window_size", WZ_INT, 1, 100, NULL, NULL, 0, 0 },
    { "token_budget", WZ_INT, 100, 200000, NULL, NULL, 0, 0 },
    { NULL, WZ_STRING, 0, 0, NULL, NULL, 0, 0 }
};
static const struct wz_field wz_step5[] = {
    { "input_guardrails", WZ_ENUM_SET, 0, 3, wz_input_guardrails, NULL, 0, 0 },
    { "output_guardrails", WZ_ENUM_SET, 0, 2, wz_output_guardrails, NULL, 0, 0 },
    { "max_tokens", WZ_INT, 1, 32768, NULL, NULL, 0, 0 },
    { "max_input_chars", WZ_INT, 1, 32768, NULL, NULL, 0, 0 },
    { "orchestration", WZ_ENUM, 0, 0, agent_yaml_patterns, NULL, 0, 0 },
    { NULL, WZ_STRING, 0, 0, NULL, NULL, 0, 0 }
};
static const struct wz_field wz_top[] = {
    { "name", WZ_NAME, 0, 0, NULL, NULL, 0, 0 },
    { "display_name", WZ_STRING, 1, 128, NULL, NULL, 0, 0 },
    { "step1", WZ_OBJECT, 0, 0, NULL, wz_step1, 0, 0 },
    { "step2", WZ_OBJECT, 0, 0, NULL, wz_step2, 0, 0 },
    { "step3", WZ_OBJECT, 0, 0, NULL, wz_step3, 0, 0 },
    { "step4", WZ_OBJECT, 0, 0, NULL, wz_step4, 0, 0 },
    { "step5", WZ_OBJECT, 0, 0, NULL, wz_step5, 0, 0 },
    { NULL, WZ_STRING, 0, 0, NULL, NULL, 0, 0 }
};

/* Per-tool config schemas; a tool not listed here takes no keys at all. */
static const struct wz_field wz_tool_http_request[] = {
    { "allowed_hosts", WZ_STRING_LIST, 0, 64, NULL, NULL, 1, 253 },
    { "allow_private", WZ_BOOL, 0, 0, NULL, NULL, 0, 0 },
    { "timeout_ms", WZ_INT, 100, 60000, NULL, NULL, 0, 0 },
    { "max_bytes", WZ_INT, 1, 10485760, NULL, NULL, 0, 0 },
    { NULL, WZ_STRING, 0, 0, NULL, NULL, 0, 0 }
};
static const struct wz_field wz_tool_translator[] = {
    { "target_language", WZ_STRING, 0, 64, NULL, NULL, 0, 0 },
    { NULL, WZ_STRING, 0, 0, NULL, NULL, 0, 0 }
};
static const struct wz_field wz_tool_text_summarizer[] = {
    { "max_words", WZ_INT, 10, 2000, NULL, NULL, 0, 0 },
    { NULL, WZ_STRING, 0, 0, NULL, NULL, 0, 0 }
};
static const struct wz_field wz_tool_email_sender[] = {
    { "from", WZ_STRING, 0, 254, NULL, NULL, 0, 0 },
    { "allowed_domains", WZ_STRING_LIST, 0, 64, NULL, NULL, 1, 253 },
    { NULL, WZ_STRING, 0, 0, NULL, NULL, 0, 0 }
};
static const struct wz_field wz_tool_none[] = {
    { NULL, WZ_STRING, 0, 0, NULL, NULL, 0, 0 }
};

static const struct {
    const char *tool;
    const struct wz_field *fields;
} wz_tool_schemas[] = {
    { "http_request", wz_tool_http_request },
    { "translator", wz_tool_translator },
    { "text_summarizer", wz_tool_text_summarizer },
    { "email_sender", wz_tool_email_sender },
};

static const struct wz_field *wz_tool_fields(const char *tool)
{
    size_t i;

    for (i = 0; i < sizeof(wz_tool_schemas) / sizeof(wz_tool_schemas[0]); i++)
        if (strcmp(wz_tool_schemas[i].tool, tool) == 0)
            return wz_tool_schemas[i].fields;
    return wz_tool_none;
}

/* ---- names --------------------------------------------------------------- */

static int wz_is_lower_alnum(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9');
}

/* ^[a-z0-9](?:[a-z0-9-]{0,max-2}[a-z0-9])?$ with no "__" (implied: no '_'). */
static int wz_label_valid(const char *s, size_t max)
{
    size_t i, len;

    if (s == NULL)
        return 0;
    len = strlen(s);
    if (len == 0 || len > max)
        return 0;
    if (!wz_is_lower_alnum(s[0]) || !wz_is_lower_alnum(s[len - 1]))
        return 0;
    for (i = 1; i + 1 < len; i++)
        if (!wz_is_lower_alnum(s[i]) && s[i] != '-')
            return 0;
    return 1;
}

int wizard_name_valid(const char *s)
{
    return wz_label_valid(s, WIZARD_NAME_MAX);
}

int wizard_slug_valid(const char *s)
{
    return wz_label_valid(s, WIZARD_SLUG_MAX);
}

/* ---- small helpers ------------------------------------------------------- */

/* RFC 3629 UTF-8, no NUL, no overlongs, no surrogates (what libyaml takes). */
static int wz_utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0, j, k;
    uint32_t cp, min;

    while (i < n) {
        if (s[i] == 0)
            return 0;
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        if ((s[i] & 0xE0) == 0xC0) {
            k = 1; cp = s[i] & 0x1F; min = 0x80;
        } else if ((s[i] & 0xF0) == 0xE0) {
            k = 2; cp = s[i] & 0x0F; min = 0x800;
        } else if ((s[i] & 0xF8) == 0xF0) {
            k = 3; cp = s[i] & 0x07; min = 0x10000;
        } else {
            return 0;
        }
        if (n - i <= k)
            return 0;
        for (j = 1; j <= k; j++) {
            if ((s[i + j] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + j] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += k + 1;
    }
    return 1;
}

/* Index of the n-byte string s in the NULL-terminated values, or -1. */
static int wz_enum_index(const char *const *values, const char *s, size_t n)
{
    int i;

    for (i = 0; values[i] != NULL; i++)
        if (strlen(values[i]) == n && memcmp(values[i], s, n) == 0)
            return i;
    return -1;
}

/* Provider index of the n-byte name at s, or -1. */
static int wz_provider_index(const char *s, size_t n)
{
    char buf[WZ_PROVIDER_MAX];

    if (n == 0 || n >= sizeof(buf) || memchr(s, '\0', n) != NULL)
        return -1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    return config_provider_from_name(buf);
}

/* obj[key] if obj is an object and the member is present and not null. */
static struct json_object *wz_get(struct json_object *obj, const char *key)
{
    struct json_object *v = NULL;

    if (obj == NULL || !json_object_is_type(obj, json_type_object))
        return NULL;
    if (!json_object_object_get_ex(obj, key, &v))
        return NULL;
    return v;
}

static const char *wz_get_str(struct json_object *obj, const char *key)
{
    struct json_object *v = wz_get(obj, key);

    return json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

static int64_t wz_get_int(struct json_object *obj, const char *key, int64_t def)
{
    struct json_object *v = wz_get(obj, key);

    return json_object_is_type(v, json_type_int) ? json_object_get_int64(v) : def;
}

/* ---- problems and paths -------------------------------------------------- */

struct wz_ctx {
    struct am_error *err;      /* may be NULL */
    int nproblems;             /* counted even when err is NULL or full */
    int patch;                 /* 1: a PUT body, null means "remove" */
    const char *current_name;  /* patch: the agent's name, or NULL */
};

static void wz_problem(struct wz_ctx *c, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void wz_problem(struct wz_ctx *c, const char *path, const char *fmt, ...)
{
    char problem[WZ_PROBLEM_MAX];
    va_list ap;

    c->nproblems++;
    va_start(ap, fmt);
    vsnprintf(problem, sizeof(problem), fmt, ap);
    va_end(ap);
    error_add_detail(c->err, path, problem);
}

/* "must be one of: a, b, c" */
static void wz_problem_enum(struct wz_ctx *c, const char *path,
                            const char *prefix, const char *const *values)
{
    char list[WZ_PROBLEM_MAX];
    size_t n = 0;
    int i;

    list[0] = '\0';
    for (i = 0; values[i] != NULL && n < sizeof(list); i++) {
        size_t left = sizeof(list) - n;
        int w = snprintf(list + n, left, "%s%s", i ? ", " : "", values[i]);
        if (w < 0 || (size_t)w >= left)
            break;
        n += (size_t)w;
    }
    wz_problem(c, path, "%s%s", prefix, list);
}

/* dst = parent "." key, with key made printable ASCII and cut to
 * WZ_KEY_SHOWN bytes, because it is client input echoed in a response. */
static void wz_path_key(char *dst, size_t cap, const char *parent, const char *key)
{
    size_t n = util_strlcpy(dst, parent, cap);
    size_t i;

    if (n >= cap)
        return;
    if (n > 0 && n + 1 < cap)
        dst[n++] = '.';
    for (i = 0; key[i] != '\0' && n + 1 < cap; i++) {
        if (i == WZ_KEY_SHOWN) {
            while (n + 1 < cap && i < WZ_KEY_SHOWN + 3) {
                dst[n++] = '.';
                i++;
            }
            break;
        }
        dst[n++] = (key[i] >= 0x20 && key[i] <= 0x7e) ? key[i] : '?';
    }
    dst[n] = '\0';
}

static void wz_path_index(char *dst, size_t cap, const char *parent, size_t i)
{
    (void)util_snprintf(dst, cap, "%s[%zu]", parent, i);
}

/* ---- value checks -------------------------------------------------------- */

static void wz_check_object(struct wz_ctx *c, const char *path,
                            struct json_object *obj, const struct wz_field *table);

/* A string of min..max bytes of UTF-8. Returns 1 if it is a string at all. */
static int wz_check_string(struct wz_ctx *c, const char *path,
                           struct json_object *v, int64_t min, int64_t max)
{
    size_t len;

    if (!json_object_is_type(v, json_type_string)) {
        wz_problem(c, path, "must be a string");
        return 0;
    }
    len = (size_t)json_object_get_string_len(v);
    if (!wz_utf8_valid((const unsigned char *)json_object_get_string(v), len))
        wz_problem(c, path, "must be valid UTF-8 text");
    else if ((int64_t)len < min || (int64_t)len > max) {
        if (min == 0)
            wz_problem(c, path, "must be at most %" PRId64 " bytes", max);
        else
            wz_problem(c, path, "must be between %" PRId64 " and %" PRId64 " bytes",
                       min, max);
    }
    return 1;
}

static void wz_check_int(struct wz_ctx *c, const char *path,
                         struct json_object *v, int64_t min, int64_t max)
{
    int64_t n;

    if (!json_object_is_type(v, json_type_int)) {
        wz_problem(c, path, "must be an integer");
        return;
    }
    n = json_object_get_int64(v);
    if (n < min || n > max)
        wz_problem(c, path, "must be between %" PRId64 " and %" PRId64, min, max);
}

static void wz_check_enum(struct wz_ctx *c, const char *path,
                          struct json_object *v, const char *const *values)
{
    if (!json_object_is_type(v, json_type_string)) {
        wz_problem(c, path, "must be a string");
        return;
    }
    if (wz_enum_index(values, json_object_get_string(v),
                      (size_t)json_object_get_string_len(v)) < 0)
        wz_problem_enum(c, path, "must be one of: ", values);
}

/* WZ_ENUM_SET, WZ_TOOL_SET and WZ_STRING_LIST: an array of strings. */
static void wz_check_list(struct wz_ctx *c, const char *path,
                          struct json_object *v, const struct wz_field *f)
{
    char sub[WZ_PATH_MAX];
    unsigned long seen = 0;   /* WZ_ENUM_SET: bit i = values[i] seen */
    const char *tool_names[TOOL_COUNT + 1];
    const char *const *values = f->values;
    size_t i, n;

    if (!json_object_is_type(v, json_type_array)) {
        wz_problem(c, path, "must be an array of strings");
        return;
    }
    if (f->kind == WZ_TOOL_SET) {
        for (i = 0; i <= TOOL_COUNT; i++)
            tool_names[i] = tools_name((int)i);   /* NULL at TOOL_COUNT */
        values = tool_names;
    }
    n = json_object_array_length(v);
    if ((int64_t)n > f->max)
        wz_problem(c, path, "must have at most %" PRId64 " items", f->max);
    for (i = 0; i < n; i++) {
        struct json_object *item = json_object_array_get_idx(v, i);
        int idx;

        wz_path_index(sub, sizeof(sub), path, i);
        if (f->kind == WZ_STRING_LIST) {
            wz_check_string(c, sub, item, f->item_min, f->item_max);
            continue;
        }
        if (!json_object_is_type(item, json_type_string)) {
            wz_problem(c, sub, "must be a string");
            continue;
        }
        idx = wz_enum_index(values, json_object_get_string(item),
                            (size_t)json_object_get_string_len(item));
        if (idx < 0)
            wz_problem_enum(c, sub, "must be one of: ", values);
        else if (seen & (1UL << idx))
            wz_problem(c, sub, "duplicate value");
        else
            seen |= 1UL << idx;
    }
}

/* "provider/model": provider known to config, model 1..128 bytes of
 * [A-Za-z0-9._:/-]. */
static void wz_check_model(struct wz_ctx *c, const char *path, struct json_object *v)
{
    static const char *const no_values[] = { NULL };
    const char *s, *slash, *m;
    const char *names[PROVIDER_COUNT + 1];
    size_t len, plen, mlen, i;
    int p, nnames = 0;

    if (!json_object_is_type(v, json_type_string)) {
        wz_problem(c, path, "must be a string");
        return;
    }
    s = json_object_get_string(v);
    len = (size_t)json_object_get_string_len(v);
    slash = memchr(s, '/', len);
    if (slash == NULL || slash == s) {
        wz_problem(c, path, "must be \"provider/model\"");
        return;
    }
    plen = (size_t)(slash - s);
    if (wz_provider_index(s, plen) < 0) {
        for (p = 0; p < PROVIDER_COUNT; p++)
            if (config_provider_name(p) != NULL)
                names[nnames++] = config_provider_name(p);
        names[nnames] = NULL;
        wz_problem_enum(c, path, "provider must be one of: ", nnames ? names : no_values);
    }
    m = slash + 1;
    mlen = len - plen - 1;
    for (i = 0; i < mlen; i++)
        if (!((m[i] >= 'A' && m[i] <= 'Z') || (m[i] >= 'a' && m[i] <= 'z') ||
              (m[i] >= '0' && m[i] <= '9') || strchr("._:-/", m[i]) != NULL) ||
            m[i] == '\0')
            break;
    if (mlen < 1 || mlen > WZ_MODEL_MAX || i < mlen)
        wz_problem(c, path, "model must be 1 to 128 characters of A-Z a-z 0-9 . _ : - /");
}

static void wz_check_name(struct wz_ctx *c, const char *path, struct json_object *v)
{
    const char *s;
    size_t len;

    if (!json_object_is_type(v, json_type_string)) {
        wz_problem(c, path, "must be a string");
        return;
    }
    s = json_object_get_string(v);
    len = (size_t)json_object_get_string_len(v);
    if (c->patch && c->current_name != NULL) {
        if (len != strlen(c->current_name) || memcmp(s, c->current_name, len) != 0)
            wz_problem(c, path, "cannot be changed");
        return;
    }
    if (len != strlen(s) || !wizard_name_valid(s))
        wz_problem(c, path, "must be 1 to 63 characters of a-z, 0-9 and '-', "
                   "starting and ending with a letter or digit");
}

static void wz_check_tool_configs(struct wz_ctx *c, const char *path,
                                  struct json_object *v)
{
    char sub[WZ_PATH_MAX];

    if (!json_object_is_type(v, json_type_object)) {
        wz_problem(c, path, "must be an object");
        return;
    }
    json_object_object_foreach(v, tool, conf) {
        wz_path_key(sub, sizeof(sub), path, tool);
        if (tools_from_name(tool) < 0) {
            wz_problem(c, sub, "unknown tool");
            continue;
        }
        if (conf == NULL)
            continue;
        if (!json_object_is_type(conf, json_type_object)) {
            wz_problem(c, sub, "must be an object");
            continue;
        }
        wz_check_object(c, sub, conf, wz_tool_fields(tool));
    }
}

static void wz_check_value(struct wz_ctx *c, const char *path,
                           struct json_object *v, const struct wz_field *f)
{
    switch (f->kind) {
    case WZ_STRING:
        wz_check_string(c, path, v, f->min, f->max);
        break;
    case WZ_INT:
        wz_check_int(c, path, v, f->min, f->max);
        break;
    case WZ_BOOL:
        if (!json_object_is_type(v, json_type_boolean))
            wz_problem(c, path, "must be a boolean");
        break;
    case WZ_ENUM:
        wz_check_enum(c, path, v, f->values);
        break;
    case WZ_ENUM_SET:
    case WZ_TOOL_SET:
    case WZ_STRING_LIST:
        wz_check_list(c, path, v, f);
        break;
    case WZ_MODEL:
        wz_check_model(c, path, v);
        break;
    case WZ_NAME:
        wz_check_name(c, path, v);
        break;
    case WZ_OBJECT:
        if (!json_object_is_type(v, json_type_object))
            wz_problem(c, path, "must be an object");
        else
            wz_check_object(c, path, v, f->fields);
        break;
    case WZ_TOOL_CONFIGS:
        wz_check_tool_configs(c, path, v);
        break;
    }
}

/* Check every member of obj against table: unknown keys, types, values. */
static void wz_check_object(struct wz_ctx *c, const char *path,
                            struct json_object *obj, const struct wz_field *table)
{
    char sub[WZ_PATH_MAX];
    const struct wz_field *f;

    json_object_object_foreach(obj, key, val) {
        wz_path_key(sub, sizeof(sub), path, key);
        for (f = table; f->key != NULL; f++)
            if (strcmp(f->key, key) == 0)
                break;
        if (f->key == NULL) {
            wz_problem(c, sub, "unknown field");
            continue;
        }
        if (val == NULL) {    /* absent, or "remove" in a patch */
            if (c->patch && f->kind == WZ_NAME)
                wz_problem(c, sub, "cannot be changed");
            continue;
        }
        wz_check_value(c, sub, val, f);
    }
}

/* ---- validation entry points --------------------------------------------- */

/* The draft rules: root is an object, every field present is good.
 * Returns 0 if the root is an object (so required checks make sense). */
static int wz_check_root(struct wz_ctx *c, struct json_object *wc)
{
    if (wc == NULL || !json_object_is_type(wc, json_type_object)) {
        wz_problem(c, "", "must be an object");
        return -1;
    }
    wz_check_object(c, "", wc, wz_top);
    return 0;
}

/* Report path as "required" if wc.step.key is absent or null; a step that
 * is present but not an object has already been reported. */
static void wz_require(struct wz_ctx *c, struct json_object *wc, const char *step,
                       const char *key, const char *path)
{
    struct json_object *s = wz_get(wc, step);

    if (s != NULL && !json_object_is_type(s, json_type_object))
        return;
    if (wz_get(s, key) == NULL)
        wz_problem(c, path, "required");
}

static int wz_finish(struct wz_ctx *c, int code, const char *message)
{
    if (c->nproblems == 0)
        return 0;
    return error_set(c->err, code, "%s", message);
}

/* Draft rules plus a name; shared by validate, validate_deploy and compile. */
static void wz_check_draft(struct wz_ctx *c, struct json_object *wc, int deploy)
{
    if (wz_check_root(c, wc) != 0)
        return;
    if (wz_get(wc, "name") == NULL)
        wz_problem(c, "name", "required");
    if (!deploy)
        return;
    wz_require(c, wc, "step1", "model", "step1.model");
    wz_require(c, wc, "step2", "system_prompt", "step2.system_prompt");
}

int wizard_validate(struct json_object *wc, struct am_error *err)
{
    struct wz_ctx c = { err, 0, 0, NULL };

    error_clear(err);
    wz_check_draft(&c, wc, 0);
    return wz_finish(&c, AM_EVALIDATION, "Invalid WizardConfig");
}

int wizard_validate_deploy(struct json_object *wc, struct am_error *err)
{
    struct wz_ctx c = { err, 0, 0, NULL };

    error_clear(err);
    wz_check_draft(&c, wc, 1);
    return wz_finish(&c, AM_EINVALIDCONFIG, "Agent config is not deployable");
}

int wizard_validate_patch(struct json_object *patch, const char *current_name,
                          struct am_error *err)
{
    struct wz_ctx c = { err, 0, 1, current_name };

    error_clear(err);
    wz_check_root(&c, patch);
    return wz_finish(&c, AM_EVALIDATION, "Invalid WizardConfig");
}

/* ---- merge --------------------------------------------------------------- */

/* Allocation failure is not an error path in this project (util.h). */
static struct json_object *wz_copy(struct json_object *v)
{
    struct json_object *dst = NULL;

    if (json_object_deep_copy(v, &dst, NULL) != 0)
        abort();
    return dst;
}

/* Set obj[key] = v, taking v (obj now owns it, and it replaces and puts
 * whatever was there). */
static void wz_put(struct json_object *obj, const char *key, struct json_object *v)
{
    if (json_object_object_add(obj, key, v) != 0)
        abort();
}

/* Remove every null member of every object under v. Deleting the current
 * entry inside json_object_object_foreach is safe: the macro has already
 * read the next entry. */
static void wz_strip_nulls(struct json_object *v)
{
    size_t i, n;

    if (json_object_is_type(v, json_type_array)) {
        n = json_object_array_length(v);
        for (i = 0; i < n; i++)
            wz_strip_nulls(json_object_array_get_idx(v, i));
        return;
    }
    if (!json_object_is_type(v, json_type_object))
        return;
    json_object_object_foreach(v, key, val) {
        if (val == NULL)
            json_object_object_del(v, key);
        else
            wz_strip_nulls(val);
    }
}

static int wz_is_step(const char *key)
{
    const struct wz_field *f;

    for (f = wz_top; f->key != NULL; f++)
        if (f->kind == WZ_OBJECT && strcmp(f->key, key) == 0)
            return 1;
    return 0;
}

/* Apply one top-level patch member to out. */
static void wz_merge_member(struct json_object *out, const char *key,
                            struct json_object *val)
{
    struct json_object *cur = wz_get(out, key);

    if (val == NULL) {
        json_object_object_del(out, key);
        return;
    }
    if (wz_is_step(key) && json_object_is_type(val, json_type_object) &&
        json_object_is_type(cur, json_type_object)) {
        json_object_object_foreach(val, field, fval) {
            if (fval == NULL)
                json_object_object_del(cur, field);
            else
                wz_put(cur, field, wz_copy(fval));
        }
        return;
    }
    wz_put(out, key, wz_copy(val));
}

struct json_object *wizard_merge(struct json_object *base, struct json_object *patch)
{
    struct json_object *out;

    if (json_object_is_type(base, json_type_object))
        out = wz_copy(base);
    else if ((out = json_object_new_object()) == NULL)
        abort();
    if (json_object_is_type(patch, json_type_object)) {
        json_object_object_foreach(patch, key, val)
            wz_merge_member(out, key, val);
    }
    wz_strip_nulls(out);
    return out;
}

/* ---- providers ----------------------------------------------------------- */

static int wz_model_provider(const char *model)
{
    const char *slash;

    if (model == NULL || (slash = strchr(model, '/')) == NULL)
        return -1;
    return wz_provider_index(model, (size_t)(slash - model));
}

void wizard_providers(struct json_object *wc, int out[2])
{
    struct json_object *step1 = wz_get(wc, "step1");

    out[0] = wz_model_provider(wz_get_str(step1, "model"));
    out[1] = wz_model_provider(wz_get_str(step1, "fallback_model"));
}

/* ---- compile: WizardConfig -> the agent document ------------------------- */

/* What every section mapper needs. */
struct wz_src {
    struct json_object *wc;
    const char *org;
    uint64_t version;
    const char *const *key_refs;     /* [PROVIDER_COUNT] or NULL */
    const struct config *cfg;        /* may be NULL */
};

static void wz_doc_identity(struct agent_yaml_doc *d, const struct wz_src *src)
{
    const char *name = wz_get_str(src->wc, "name");
    const char *display = wz_get_str(src->wc, "display_name");
    const char *persona = wz_get_str(wz_get(src->wc, "step2"), "persona");

    (void)key_agent_id(d->name, sizeof(d->name), src->org, name);
    util_strlcpy(d->namespace_, src->org, sizeof(d->namespace_));
    d->version = src->version;
    d->display_name = xstrdup(display ? display : name);
    if (persona != NULL && persona[0] != '\0')
        d->description = xstrdup(persona);
}

/* "provider/model" -> one of model.primary / model.fallback. */
static void wz_doc_model(struct agent_yaml_model *m, const struct wz_src *src,
                         const char *model)
{
    int p = wz_model_provider(model);
    struct json_object *max_tokens = wz_get(wz_get(src->wc, "step5"), "max_tokens");
    const char *base_url;

    if (p < 0 || config_provider_name(p) == NULL)
        return;
    m->present = 1;
    m->provider = p;
    util_strlcpy(m->model, strchr(model, '/') + 1, sizeof(m->model));
    if (p == PROVIDER_OLLAMA && src->cfg != NULL) {
        base_url = src->cfg->providers[p].base_url;
        if (memchr(base_url, '\0', sizeof(src->cfg->providers[p].base_url)) != NULL)
            util_strlcpy(m->endpoint, base_url, sizeof(m->endpoint));
    }
    if (src->key_refs != NULL && src->key_refs[p] != NULL)
        util_strlcpy(m->key_ref, src->key_refs[p], sizeof(m->key_ref));
    if (json_object_is_type(max_tokens, json_type_int))
        m->max_tokens = (int)json_object_get_int64(max_tokens);
}

static const struct {
    const char *tone;
    const char *sentence;
} wz_tone_sentences[] = {
    { "professional", "Respond in a professional, clear tone." },
    { "casual", "Respond in a casual, friendly tone." },
    { "technical", "Respond in a precise, technical tone." },
    { "empathetic", "Respond in a warm, empathetic tone." },
};

static const char *wz_tone_sentence(const char *tone)
{
    size_t i;

    for (i = 0; tone != NULL && i < sizeof(wz_tone_sentences) / sizeof(wz_tone_sentences[0]); i++)
        if (strcmp(wz_tone_sentences[i].tone, tone) == 0)
            return wz_tone_sentences[i].sentence;
    return NULL;
}

const char *wizard_split_system(const char *system, const char **prompt)
{
    size_t i, n;

    *prompt = system;
    for (i = 0; system != NULL && i < sizeof(wz_tone_sentences) / sizeof(wz_tone_sentences[0]);
         i++) {
        n = strlen(wz_tone_sentences[i].sentence);
        if (strncmp(system, wz_tone_sentences[i].sentence, n) != 0)
            continue;
        if (system[n] == '\0') {
            *prompt = NULL;
            return wz_tone_sentences[i].tone;
        }
        if (strncmp(system + n, "\n\n", 2) == 0 && system[n + 2] != '\0') {
            *prompt = system + n + 2;
            return wz_tone_sentences[i].tone;
        }
    }
    return NULL;
}

/* prompts.system = tone sentence, blank line, system prompt (either part
 * may be missing in a draft). */
static char *wz_system_prompt(const struct wz_src *src)
{
    struct json_object *step2 = wz_get(src->wc, "step2");
    const char *prompt = wz_get_str(step2, "system_prompt");
    const char *sentence = wz_tone_sentence(wz_get_str(step2, "tone"));
    struct buf b = { NULL, 0, 0 };

    if (sentence == NULL && prompt == NULL)
        return NULL;
    if (sentence != NULL)
        buf_puts(&b, sentence);
    if (sentence != NULL && prompt != NULL)
        buf_puts(&b, "\n\n");
    if (prompt != NULL)
        buf_puts(&b, prompt);
    return buf_take(&b);
}

/* A tool's config: the schema's keys, in schema order, that are present. */
static struct json_object *wz_doc_tool_config(const char *tool, struct json_object *conf)
{
    struct json_object *out = json_object_new_object(), *v;
    const struct wz_field *f;

    for (f = wz_tool_fields(tool); f->key != NULL; f++)
        if ((v = wz_get(conf, f->key)) != NULL)
            json_object_object_add(out, f->key, json_object_get(v));
    return out;
}

static void wz_doc_tools(struct agent_yaml_doc *d, const struct wz_src *src)
{
    struct json_object *step3 = wz_get(src->wc, "step3");
    struct json_object *tools = wz_get(step3, "tools");
    struct json_object *configs = wz_get(step3, "tool_configs");
    size_t i, n = json_object_is_type(tools, json_type_array) ?
                  json_object_array_length(tools) : 0;

    for (i = 0; i < n && d->ntools < TOOL_COUNT; i++) {
        const char *name = json_object_get_string(json_object_array_get_idx(tools, i));
        int id = tools_from_name(name);

        if (id < 0 || d->tool_config[id] != NULL)
            continue;
        d->tools[d->ntools++] = id;
        d->tool_config[id] = wz_doc_tool_config(name, wz_get(configs, name));
    }
}

static void wz_doc_memory(struct agent_yaml_doc *d, const struct wz_src *src)
{
    struct json_object *step4 = wz_get(src->wc, "step4");
    const char *type = wz_get_str(step4, "memory_type");
    const char *strategy = wz_get_str(step4, "memory_strategy");

    if (type == NULL || strcmp(type, "conversational") != 0)
        return;
    d->memory_on = 1;
    d->memory_strategy = strategy != NULL ? wz_enum_index(agent_yaml_memory_strategies,
                                                          strategy, strlen(strategy))
                                          : MEMORY_SLIDING_WINDOW;
    if (d->memory_strategy == MEMORY_TOKEN_BUDGET)
        d->memory_limit = (int)wz_get_int(step4, "token_budget", 4000);
    else    /* the runtime schema counts messages; a turn is two of them */
        d->memory_limit = (int)(2 * wz_get_int(step4, "window_size", 20));
}

/* WizardConfig guardrail name -> runtime guardrail type. */
static const struct {
    const char *name;
    int type;       /* enum agent_yaml_guardrail_type */
} wz_guardrail_map[] = {
    { "pii_filter", AGENT_YAML_PII_DETECTION },
    { "content_safety", AGENT_YAML_CONTENT_FILTER },
    { "max_length", AGENT_YAML_MAX_LENGTH },
};

/* The entries for list, plus a cost_limit when asked; returns the count. */
static int wz_doc_guardrail_list(struct agent_yaml_guardrail *out, struct json_object *list,
                                 struct json_object *step5, int cost_limit)
{
    size_t i, j, n = json_object_is_type(list, json_type_array) ?
                     json_object_array_length(list) : 0;
    int count = 0;

    for (i = 0; i < n; i++) {
        const char *name = json_object_get_string(json_object_array_get_idx(list, i));

        for (j = 0; j < sizeof(wz_guardrail_map) / sizeof(wz_guardrail_map[0]); j++) {
            if (name == NULL || strcmp(name, wz_guardrail_map[j].name) != 0 ||
                count == AGENT_YAML_GUARDRAILS_MAX)
                continue;
            out[count].type = wz_guardrail_map[j].type;
            if (out[count].type == AGENT_YAML_MAX_LENGTH)
                out[count].limit = (int)wz_get_int(step5, "max_input_chars", 4000);
            count++;
        }
    }
    if (cost_limit && count < AGENT_YAML_GUARDRAILS_MAX) {
        out[count].type = AGENT_YAML_COST_LIMIT;
        out[count].limit = (int)wz_get_int(step5, "max_tokens", 0);
        count++;
    }
    return count;
}

/* The document for a WizardConfig that passes the draft rules. */
static void wz_doc(struct agent_yaml_doc *d, const struct wz_src *src)
{
    struct json_object *step1 = wz_get(src->wc, "step1");
    struct json_object *step5 = wz_get(src->wc, "step5");
    const char *primary = wz_get_str(step1, "model");
    const char *fallback = wz_get_str(step1, "fallback_model");
    const char *routing = wz_get_str(step1, "routing_strategy");
    const char *pattern = wz_get_str(step5, "orchestration");

    wz_doc_identity(d, src);
    if (primary != NULL)
        wz_doc_model(&d->primary, src, primary);
    if (fallback != NULL)
        wz_doc_model(&d->fallback, src, fallback);
    d->routing = routing != NULL ? wz_enum_index(agent_yaml_routings, routing, strlen(routing))
                                 : AGENT_YAML_ROUTE_COST;
    d->system = wz_system_prompt(src);
    d->pattern = pattern != NULL ? wz_enum_index(agent_yaml_patterns, pattern, strlen(pattern))
                                 : AGENT_YAML_PATTERN_SINGLE;
    d->max_iterations = 10;
    wz_doc_tools(d, src);
    wz_doc_memory(d, src);
    d->ninput = wz_doc_guardrail_list(d->input, wz_get(step5, "input_guardrails"), step5, 0);
    d->noutput = wz_doc_guardrail_list(d->output, wz_get(step5, "output_guardrails"), step5,
                                       json_object_is_type(wz_get(step5, "max_tokens"),
                                                           json_type_int));
}

/* Compile accepts anything that passes the draft rules (GET /yaml compiles
 * drafts on the fly): a missing model or prompt is simply left out. */
int wizard_compile(struct json_object *wc, const char *org, uint64_t version,
                   const char *const key_refs[PROVIDER_COUNT],
                   const struct config *cfg, char **yaml_out, size_t *len_out,
                   struct am_error *err)
{
    struct wz_ctx c = { err, 0, 0, NULL };
    struct wz_src src = { wc, org, version, key_refs, cfg };
    struct agent_yaml_doc doc;
    int rc;

    *yaml_out = NULL;
    *len_out = 0;
    error_clear(err);
    if (!wizard_slug_valid(org))
        return error_set(err, AM_EINTERNAL, "invalid org slug for compile");
    wz_check_draft(&c, wc, 0);
    if (c.nproblems != 0)
        return error_set(err, AM_EINVALIDCONFIG, "Agent config cannot be compiled");
    memset(&doc, 0, sizeof(doc));
    wz_doc(&doc, &src);
    rc = agent_yaml_emit(&doc, yaml_out, len_out, err);
    agent_yaml_doc_clear(&doc);
    return rc;
}

int wizard_check_compiled_size(struct json_object *wc, const char *org,
                               const struct config *cfg, size_t slot_bytes,
                               struct am_error *err)
{
    char bufs[PROVIDER_COUNT][32], field[32] = "wizard_config", problem[160];
    const char *refs[PROVIDER_COUNT];
    struct json_object *step2, *prompt;
    struct am_error cerr;
    char *yaml = NULL;
    size_t len = 0;
    int p;

    for (p = 0; p < PROVIDER_COUNT; p++) {
        (void)util_snprintf(bufs[p], sizeof(bufs[p]), "server:%s", config_provider_name(p));
        refs[p] = bufs[p];
    }
    error_clear(&cerr);
    if (wizard_compile(wc, org, 9999999999ULL, refs, cfg, &yaml, &len, &cerr) != 0)
        return 0;                       /* not compilable yet: deploy says why */
    free(yaml);
    if (len <= slot_bytes)
        return 0;
    if (json_object_object_get_ex(wc, "step2", &step2) &&
        json_object_object_get_ex(step2, "system_prompt", &prompt) &&
        json_object_get_string_len(prompt) > 0)
        util_strlcpy(field, "step2.system_prompt", sizeof(field));
    (void)util_snprintf(problem, sizeof(problem), "compiles to %zu bytes of agent YAML; "
                        "the registry slot holds %zu (registry.slot_kb)", len, slot_bytes);
    error_set(err, AM_EVALIDATION, "Agent config is too large to deploy");
    error_add_detail(err, field, problem);
    return AM_EVALIDATION;
}
