/*
 * config.c - the server configuration: one YAML file, read strictly.
 *
 * Owns: the key table config_keys[] (one row per key: dotted YAML path,
 * type, bounds, default, offset into struct config), the provider name
 * table, and the translation of YAML text into a struct config. No other
 * module knows a key's name, range or default.
 *
 * Must not: log, exit, or write anywhere but the struct it is handed. A
 * failure is described once in err->message, "file:line:col: key: problem
 * (got X)", and the caller (the supervisor, or `-t`) prints it. A failed
 * load leaves the caller's struct untouched, so a bad SIGHUP reload keeps
 * the running configuration.
 *
 * How it reads. libyaml's event API drives a small recursive walk. A key is
 * valid if it is a row of config_keys[] (a leaf, holding a scalar) or a
 * proper prefix of a row's path (a section, holding a mapping); anything
 * else is an unknown key. Adding a key is adding a row: parsing, range
 * checks, defaults and messages all follow from the table. Scalars are
 * typed by their text, so `workers: "4"` and `socket_mode: 0660` (plain or
 * quoted) both work; YAML's own implicit typing is not consulted.
 *
 * Invariants:
 *  1. Every row's default passes that row's own conversion and range check;
 *     config_defaults() aborts otherwise, and check_config runs it.
 *  2. A value of a CFG_SECRET row never appears in a message, only its length.
 *  3. The walk descends only into sections named by the table and stops at
 *     the first unexpected event, so its depth is bounded by the table (3)
 *     whatever the file contains, and libyaml never reads past that event.
 *  4. Every key read is recorded once; a second occurrence of the same dotted
 *     path, leaf or section, is an error rather than a silent override.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <yaml.h>

#include "state/config.h"
#include "lib/error.h"
#include "lib/util.h"

#ifndef SYSCONFDIR
#define SYSCONFDIR "/etc"
#endif

#define CFG_FILE_MAX (1024 * 1024) /* a config file is a page of text */
#define CFG_PATH_MAX 128           /* longest dotted path worth building */
#define CFG_SHOW_MAX 48            /* longest value echoed in a message */
#define CFG_TOP "(top level)"      /* the key named for root-level problems */

/* sun_path holds the socket path and its NUL (108 bytes on Linux). */
#define CFG_SOCKET_MAX ((long long)sizeof(((struct sockaddr_un *)0)->sun_path) - 1)

enum cfg_type {
    CFG_STRING,   /* char array; min/max bound the length in bytes */
    CFG_INT,      /* int, decimal */
    CFG_BOOL,     /* int 0/1 from true/false, yes/no, on/off */
    CFG_MODE,     /* int permission bits, written in octal (0660) */
    CFG_LOGLEVEL  /* int enum log_level from error/warn/info/debug */
};

#define CFG_SECRET 0x1u /* never echo the value, only its length */

struct cfg_key {
    const char *path;   /* dotted YAML path, e.g. "server.workers" */
    enum cfg_type type;
    long long min;      /* lowest value; for strings the shortest length */
    long long max;      /* highest value; for strings the longest length */
    const char *def;    /* default, in the same text form the file uses */
    size_t off;         /* offsetof() the field in struct config */
    size_t size;        /* sizeof the field */
    unsigned flags;     /* CFG_SECRET */
    const char *hint;   /* appended when a required string is missing */
};

#define FIELD_SIZE(m) sizeof(((struct config *)0)->m)
#define FIELD(m) .off = offsetof(struct config, m), .size = FIELD_SIZE(m)

#define KEY_STR(p, m, lo, hi, d, fl, h) \
    { .path = p, .type = CFG_STRING, .min = lo, .max = hi, .def = d, \
      FIELD(m), .flags = fl, .hint = h }
#define KEY_INT(p, m, lo, hi, d) \
    { .path = p, .type = CFG_INT, .min = lo, .max = hi, .def = d, FIELD(m) }
#define KEY_BOOL(p, m, d) \
    { .path = p, .type = CFG_BOOL, .min = 0, .max = 1, .def = d, FIELD(m) }
#define KEY_MODE(p, m, d) \
    { .path = p, .type = CFG_MODE, .min = 0, .max = 0777, .def = d, FIELD(m) }
#define KEY_LEVEL(p, m, d) \
    { .path = p, .type = CFG_LOGLEVEL, .min = LOG_LVL_ERROR, \
      .max = LOG_LVL_DEBUG, .def = d, FIELD(m) }

/* Longest string a char array field can hold. */
#define STR_MAX(m) ((long long)FIELD_SIZE(m) - 1)

/*
 * The providers, in enum config_provider order: index, name, default
 * base_url. Both the name table and the key rows are generated from this
 * one list, so they cannot drift apart.
 */
#define CFG_PROVIDERS(X) \
    X(PROVIDER_OPENAI, "openai", "https://api.openai.com/v1") \
    X(PROVIDER_ANTHROPIC, "anthropic", "https://api.anthropic.com/v1") \
    X(PROVIDER_GROQ, "groq", "https://api.groq.com/openai/v1") \
    X(PROVIDER_MISTRAL, "mistral", "https://api.mistral.ai/v1") \
    X(PROVIDER_COHERE, "cohere", "https://api.cohere.com/v2") \
    X(PROVIDER_OLLAMA, "ollama", "http://127.0.0.1:11434") \
    X(PROVIDER_ECHO, "echo", "")

#define PROVIDER_NAME(idx, name, url) [idx] = name,
#define PROVIDER_KEYS(idx, name, url) \
    KEY_STR("providers." name ".base_url", providers[idx].base_url, \
            0, STR_MAX(providers[idx].base_url), url, 0, NULL), \
    KEY_STR("providers." name ".api_key", providers[idx].api_key, \
            0, STR_MAX(providers[idx].api_key), "", CFG_SECRET, NULL), \
    KEY_INT("providers." name ".timeout_ms", providers[idx].timeout_ms, \
            100, 600000, "30000"),

static const char *const provider_names[PROVIDER_COUNT] = {
    CFG_PROVIDERS(PROVIDER_NAME)
};

static const struct cfg_key config_keys[] = {
    KEY_STR("server.socket", socket_path, 1, CFG_SOCKET_MAX,
            "/run/astromesh-cloud/fcgi.sock", 0, NULL),
    KEY_MODE("server.socket_mode", socket_mode, "0660"),
    KEY_INT("server.workers", workers, 1, 64, "2"),
    KEY_INT("server.threads", threads, 1, 1024, "128"),
    KEY_STR("server.pid_file", pid_file, 0, STR_MAX(pid_file), "", 0, NULL),
    KEY_INT("server.shutdown_timeout_ms", shutdown_timeout_ms, 100, 600000,
            "10000"),
    KEY_STR("server.stream_socket", stream_socket, 0, CFG_SOCKET_MAX, "", 0, NULL),

    KEY_INT("stream.idle_timeout_ms", stream_idle_timeout_ms, 1000, 86400000, "300000"),
    KEY_INT("stream.ping_interval_ms", stream_ping_interval_ms, 100, 3600000, "30000"),
    KEY_INT("stream.max_connections", stream_max_connections, 1, 1000000, "10000"),
    KEY_INT("stream.max_queries", stream_max_queries, 1, 4096, "128"),

    KEY_STR("storage.data_dir", data_dir, 1, STR_MAX(data_dir),
            "/var/lib/astromesh-cloud", 0, NULL),
    KEY_INT("storage.cache_mb", db_cache_mb, 1, 4096, "16"),
    KEY_BOOL("storage.sync", db_sync, "true"),
    KEY_INT("storage.run_flush_ms", db_run_flush_ms, 0, 10000, "100"),

    /* No default secret, ever: an empty one fails the length rule. Left
     * out, it is read from auth.jwt_secret_file (secret_file_rules). */
    KEY_STR("auth.jwt_secret", jwt_secret, 32, STR_MAX(jwt_secret), "",
            CFG_SECRET,
            "generate one with: head -c 32 /dev/urandom | base64"),
    KEY_STR("auth.jwt_secret_file", jwt_secret_file, 1, STR_MAX(jwt_secret_file),
            SYSCONFDIR "/astromesh-cloud/jwt.secret", 0, NULL),
    KEY_STR("auth.master_key_file", master_key_file, 1, STR_MAX(master_key_file),
            SYSCONFDIR "/astromesh-cloud/master.key", 0,
            "create one with: (umask 077; head -c 32 /dev/urandom > FILE)"),
    KEY_BOOL("auth.dev_login", dev_login, "false"),
    KEY_INT("auth.access_ttl", access_ttl, 60, 86400, "900"),
    KEY_INT("auth.refresh_ttl", refresh_ttl, 300, 31536000, "604800"),

    KEY_INT("limits.max_agents", max_agents, 1, 100000, "5"),
    KEY_INT("limits.requests_per_day", requests_per_day, 1, 100000000, "1000"),
    KEY_INT("limits.tests_per_day", tests_per_day, 1, 100000000, "1000"),
    KEY_INT("limits.max_members", max_members, 1, 100000, "3"),
    KEY_INT("limits.max_streams", max_streams, 1, 100000, "5"),
    KEY_INT("limits.max_in_flight", max_in_flight, 1, 100000, "32"),

    KEY_INT("agents.max_versions", max_versions, 1, 100000, "50"),

    KEY_INT("memory.session_ttl_s", session_ttl_s, 1, 315360000, "604800"),
    KEY_INT("memory.max_sessions_per_agent", max_sessions_per_agent, 1, 100000000, "10000"),
    KEY_INT("memory.max_kb_per_org", max_kb_per_org, 64, 1073741824, "262144"),

    KEY_INT("registry.capacity", registry_capacity, 16, 1000000, "4096"),
    KEY_INT("registry.slot_kb", registry_slot_kb, 4, 1024, "64"),

    CFG_PROVIDERS(PROVIDER_KEYS)

    KEY_STR("tools.web_search_url", web_search_url, 0, STR_MAX(web_search_url), "", 0, NULL),
    KEY_STR("tools.smtp_url", smtp_url, 0, STR_MAX(smtp_url), "", 0, NULL),
    KEY_STR("tools.smtp_from", smtp_from, 0, STR_MAX(smtp_from),
            "astromesh@localhost", 0, NULL),
    KEY_STR("tools.file_root", file_root, 0, STR_MAX(file_root), "", 0, NULL),
    KEY_INT("tools.http_timeout_ms", tool_http_timeout_ms, 100, 600000, "10000"),
    KEY_INT("tools.http_max_bytes", tool_http_max_bytes, 1024, 67108864, "1048576"),

    KEY_INT("runtime.breaker_failures", breaker_failures, 1, 1000, "3"),
    KEY_INT("runtime.breaker_cooldown_ms", breaker_cooldown_ms, 0, 3600000, "60000"),

    KEY_LEVEL("log.level", log_level, "info"),
    KEY_BOOL("log.requests", log_requests, "true"),

    KEY_STR("metrics.token", metrics_token, 0, STR_MAX(metrics_token), "", CFG_SECRET, NULL),

    KEY_STR("replication.site", rep_site, 0, STR_MAX(rep_site), "", 0, NULL),
    KEY_STR("replication.url", rep_url, 0, STR_MAX(rep_url), "", 0, NULL),
    KEY_STR("replication.peers", rep_peers, 0, STR_MAX(rep_peers), "", 0, NULL),
    KEY_INT("replication.priority", rep_priority, 0, 1000000, "100"),
    KEY_STR("replication.ack_policy", rep_ack_policy, 1, STR_MAX(rep_ack_policy),
            "quorum", 0, NULL),
    KEY_INT("replication.ack_timeout_ms", rep_ack_timeout_ms, 10, 600000, "2000"),
    KEY_INT("replication.election_timeout_ms", rep_election_timeout_ms, 100, 600000, "2000"),
    KEY_INT("replication.read_wait_ms", rep_read_wait_ms, 0, 60000, "2000"),
    KEY_STR("replication.secret_file", rep_secret_file, 0, STR_MAX(rep_secret_file),
            "", 0, NULL),
};

#define NKEYS (sizeof(config_keys) / sizeof(config_keys[0]))

/* Words accepted for the enum-like types; matched case-insensitively. */
struct cfg_word {
    const char *word;
    int value;
};

static const struct cfg_word bool_words[] = {
    {"true", 1}, {"false", 0}, {"yes", 1}, {"no", 0}, {"on", 1}, {"off", 0},
    {NULL, 0}
};

static const struct cfg_word level_words[] = {
    {"error", LOG_LVL_ERROR}, {"warn", LOG_LVL_WARN},
    {"info", LOG_LVL_INFO}, {"debug", LOG_LVL_DEBUG},
    {NULL, 0}
};

/* A key already read, for duplicate detection. */
struct cfg_seen {
    char *path;         /* from xstrdup */
    size_t line;        /* libyaml mark, 0-based */
};

/* One load in progress. Heap-allocated: it holds a whole struct config. */
struct cfg_parser {
    yaml_parser_t yaml;
    const char *file;             /* borrowed; the path, for messages */
    FILE *fp;                     /* borrowed; the open file, for rereading */
    struct am_error *err;         /* borrowed; may be NULL */
    struct config cfg;            /* filled here, copied out on success */
    struct cfg_seen *seen;        /* from xrealloc; nseen used */
    size_t nseen, seen_cap;
    unsigned char set[NKEYS];     /* 1 if the file gave this row a value */
    yaml_mark_t mark[NKEYS];      /* where that value was */
    char where[CFG_PATH_MAX];     /* the key being read, for syntax errors */
};

/* ------------------------------------------------------------------------ */
/* Table lookups                                                            */

static int key_find(const char *path)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(config_keys[i].path, path) == 0)
            return (int)i;
    return -1;
}

/* Does row i's path start with section prefix `path.`? "" is the root. */
static int key_under(size_t i, const char *path, size_t plen)
{
    if (plen == 0)
        return 1;
    return strncmp(config_keys[i].path, path, plen) == 0 &&
           config_keys[i].path[plen] == '.';
}

/* A section is a proper prefix of some row's path. */
static int key_is_section(const char *path)
{
    size_t plen = strlen(path);

    if (plen == 0)
        return 0;           /* the root is not a key */
    for (size_t i = 0; i < NKEYS; i++)
        if (key_under(i, path, plen))
            return 1;
    return 0;
}

/*
 * Write the names valid directly under section `path` ("" = root) into buf
 * as "a, b, c", in table order, each once. For the unknown-key message.
 */
static void key_children(const char *path, char *buf, size_t cap)
{
    size_t plen = strlen(path), used = 0;
    size_t skip = plen ? plen + 1 : 0;

    buf[0] = '\0';
    for (size_t i = 0; i < NKEYS; i++) {
        const char *seg, *end;
        size_t n, j;
        int dup = 0;

        if (!key_under(i, path, plen))
            continue;
        seg = config_keys[i].path + skip;
        end = strchr(seg, '.');
        n = end ? (size_t)(end - seg) : strlen(seg);
        for (j = 0; j < i && !dup; j++)
            dup = key_under(j, path, plen) &&
                  strncmp(config_keys[j].path + skip, seg, n) == 0 &&
                  (config_keys[j].path[skip + n] == '.' ||
                   config_keys[j].path[skip + n] == '\0');
        if (dup)
            continue;
        if (used + n + 3 >= cap)
            break;
        if (used > 0) {
            memcpy(buf + used, ", ", 2);
            used += 2;
        }
        memcpy(buf + used, seg, n);
        used += n;
        buf[used] = '\0';
    }
}

/* ------------------------------------------------------------------------ */
/* Scalar conversion                                                        */

/* YAML's spellings of null; a plain one of these means "empty". */
static int is_null_word(const char *s, size_t len)
{
    return len == 0 || (len == 1 && s[0] == '~') ||
           (len == 4 && (memcmp(s, "null", 4) == 0 ||
                         memcmp(s, "Null", 4) == 0 ||
                         memcmp(s, "NULL", 4) == 0));
}

static int word_find(const struct cfg_word *w, const char *s, size_t len,
                     long long *out)
{
    for (; w->word != NULL; w++) {
        if (strlen(w->word) == len && strncasecmp(w->word, s, len) == 0) {
            *out = w->value;
            return 0;
        }
    }
    return -1;
}

/*
 * Parse [+-]digits in `base` (8 or 10). Too many digits saturate to
 * LLONG_MAX so that the caller reports "out of range", not "not a number".
 * Returns 0, or -1 if s is not a number at all.
 */
static int parse_number(const char *s, size_t len, int base, long long *out)
{
    long long v = 0;
    size_t i = 0;
    int neg = 0;

    if (len > 0 && (s[0] == '-' || s[0] == '+')) {
        neg = s[0] == '-';
        i = 1;
    }
    if (i == len)
        return -1;
    for (; i < len; i++) {
        int d = s[i] - '0';

        if (d < 0 || d >= base)
            return -1;
        v = v > (LLONG_MAX - d) / base ? LLONG_MAX : v * base + d;
    }
    *out = neg ? -v : v;
    return 0;
}

/*
 * Convert text (len bytes, may hold NULs) for row k and store it in cfg.
 * `plain` says the scalar was unquoted, so that a plain ~ or null means an
 * empty string. Returns 0, or -1 with the problem written into problem.
 */
static int key_convert(struct config *cfg, const struct cfg_key *k,
                       const char *text, size_t len, int plain,
                       char *problem, size_t cap)
{
    char *field = (char *)cfg + k->off;
    long long v = 0;

    switch (k->type) {
    case CFG_STRING:
        if (memchr(text, '\0', len) != NULL) {
            util_strlcpy(problem, "contains a NUL byte", cap);
            return -1;
        }
        if (plain && is_null_word(text, len))
            len = 0;
        if ((long long)len > k->max) {
            util_snprintf(problem, cap, "too long (max %lld bytes)", k->max);
            return -1;
        }
        memcpy(field, text, len);
        field[len] = '\0';
        return 0;
    case CFG_INT:
        if (parse_number(text, len, 10, &v) != 0) {
            util_strlcpy(problem, "expected an integer", cap);
            return -1;
        }
        break;
    case CFG_MODE:
        if (len > 2 && text[0] == '0' && (text[1] == 'o' || text[1] == 'O')) {
            text += 2;
            len -= 2;
        }
        if (parse_number(text, len, 8, &v) != 0) {
            util_strlcpy(problem, "expected an octal mode like 0660", cap);
            return -1;
        }
        if (v < k->min || v > k->max) {
            util_snprintf(problem, cap, "out of range %04llo..%04llo",
                          k->min, k->max);
            return -1;
        }
        break;
    case CFG_BOOL:
        if (word_find(bool_words, text, len, &v) != 0) {
            util_strlcpy(problem,
                         "expected a boolean: true/false, yes/no or on/off",
                         cap);
            return -1;
        }
        break;
    case CFG_LOGLEVEL:
        if (word_find(level_words, text, len, &v) != 0) {
            util_strlcpy(problem, "expected one of error, warn, info, debug",
                         cap);
            return -1;
        }
        break;
    }
    if (v < k->min || v > k->max) {
        util_snprintf(problem, cap, "out of range %lld..%lld", k->min, k->max);
        return -1;
    }
    *(int *)(void *)field = (int)v;
    return 0;
}

/*
 * How a value appears after "got": the text cut to CFG_SHOW_MAX bytes on a
 * UTF-8 boundary with control bytes (NUL included) as '?', "" for empty, or
 * only the length for a secret. cap must exceed 4.
 */
static void show_value(const struct cfg_key *k, const char *text, size_t len,
                       char *buf, size_t cap)
{
    size_t n = len;

    if (k != NULL && (k->flags & CFG_SECRET)) {
        util_snprintf(buf, cap, "%zu bytes", len);
        return;
    }
    if (len == 0) {
        util_strlcpy(buf, "\"\"", cap);
        return;
    }
    if (n > CFG_SHOW_MAX) {
        n = CFG_SHOW_MAX;
        while (n > 0 && ((unsigned char)text[n] & 0xC0) == 0x80)
            n--;
    }
    if (n + 4 > cap)
        n = cap - 4;        /* callers size buf for CFG_SHOW_MAX; be safe */
    for (size_t i = 0; i < n; i++)
        buf[i] = (unsigned char)text[i] < 0x20 ? '?' : text[i];
    util_strlcpy(buf + n, n < len ? "..." : "", cap - n);
}

/* "got" for an event that is not the scalar we wanted. */
static void show_event(const yaml_event_t *ev, char *buf, size_t cap)
{
    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        show_value(NULL, (const char *)ev->data.scalar.value,
                   ev->data.scalar.length, buf, cap);
        break;
    case YAML_MAPPING_START_EVENT:
        util_strlcpy(buf, "a mapping", cap);
        break;
    case YAML_SEQUENCE_START_EVENT:
        util_strlcpy(buf, "a sequence", cap);
        break;
    default:
        util_strlcpy(buf, "something else", cap);
        break;
    }
}

static const char *type_expected(enum cfg_type t)
{
    switch (t) {
    case CFG_STRING: return "expected a string";
    case CFG_INT: return "expected an integer";
    case CFG_BOOL: return "expected a boolean";
    case CFG_MODE: return "expected an octal mode like 0660";
    case CFG_LOGLEVEL: return "expected one of error, warn, info, debug";
    }
    return "expected a scalar";
}

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */

/*
 * Make err->message safe to print on one line: control bytes (from a quoted
 * key or value) become '?', and a UTF-8 sequence cut by truncation is dropped.
 */
static void tidy_message(struct am_error *err)
{
    size_t n, i;

    if (err == NULL)
        return;
    n = strlen(err->message);
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)err->message[i];
        if (c < 0x20 || c == 0x7f)
            err->message[i] = '?';
    }
    if (n + 1 < sizeof(err->message))
        return;
    /* Truncated: walk back over a trailing partial multi-byte sequence. */
    i = n;
    while (i > 0 && ((unsigned char)err->message[i - 1] & 0xC0) == 0x80)
        i--;
    if (i > 0 && ((unsigned char)err->message[i - 1] & 0x80))
        err->message[i - 1] = '\0';
}

/* Fail at a position: "file:line:col: key: problem (got X)". got may be NULL. */
static int cfg_fail(struct cfg_parser *p, yaml_mark_t mark, const char *key,
                    const char *problem, const char *got)
{
    error_set(p->err, AM_ECONFIG, "%s:%zu:%zu: %s: %s%s%s%s", p->file,
              mark.line + 1, mark.column + 1, key, problem,
              got ? " (got " : "", got ? got : "", got ? ")" : "");
    tidy_message(p->err);
    return AM_ECONFIG;
}

/*
 * Line and column of byte `offset`, by rereading the file. libyaml's reader
 * reports encoding errors by offset only, and we promise a line:col.
 */
static yaml_mark_t offset_mark(struct cfg_parser *p, size_t offset)
{
    yaml_mark_t m = {0, 0, 0};
    int c;

    m.index = offset;
    if (p->fp == NULL || fseek(p->fp, 0, SEEK_SET) != 0)
        return m;
    for (size_t i = 0; i < offset && (c = getc(p->fp)) != EOF; i++) {
        if (c == '\n') {
            m.line++;
            m.column = 0;
        } else if ((c & 0xC0) != 0x80) {
            m.column++;     /* count characters, not continuation bytes */
        }
    }
    return m;
}

/* Turn a libyaml failure into our message, at libyaml's best position. */
static int cfg_fail_yaml(struct cfg_parser *p)
{
    const yaml_parser_t *y = &p->yaml;
    char problem[160];

    switch (y->error) {
    case YAML_MEMORY_ERROR:
        return cfg_fail(p, y->mark, p->where, "out of memory reading YAML",
                        NULL);
    case YAML_READER_ERROR:
        /* The reader knows only a byte offset, not a line. */
        util_snprintf(problem, sizeof(problem),
                      "invalid YAML: %s at byte %zu",
                      y->problem ? y->problem : "unreadable input",
                      y->problem_offset);
        return cfg_fail(p, offset_mark(p, y->problem_offset), p->where,
                        problem, NULL);
    default:
        util_snprintf(problem, sizeof(problem), "invalid YAML: %s%s%s%s",
                      y->problem ? y->problem : "syntax error",
                      y->context ? " (" : "", y->context ? y->context : "",
                      y->context ? ")" : "");
        return cfg_fail(p, y->problem_mark, p->where, problem, NULL);
    }
}

/* ------------------------------------------------------------------------ */
/* The walk                                                                 */

static void set_where(struct cfg_parser *p, const char *path)
{
    util_strlcpy(p->where, *path ? path : CFG_TOP, sizeof(p->where));
}

/*
 * Next event into ev (which the caller deletes). Syntax errors and aliases
 * fail here, so the walk sees only plain structure.
 */
static int next_event(struct cfg_parser *p, yaml_event_t *ev)
{
    if (!yaml_parser_parse(&p->yaml, ev))
        return cfg_fail_yaml(p);
    if (ev->type == YAML_ALIAS_EVENT)
        return cfg_fail(p, ev->start_mark, p->where,
                        "aliases are not supported", NULL);
    return 0;
}

/*
 * Build "parent.key" into out. Returns 0, or -1 if the key cannot be one of
 * ours (holds a dot or NUL, or is too long); out then holds a printable
 * approximation for the message.
 */
static int join_path(const char *parent, const char *key, size_t len,
                     char *out, size_t cap)
{
    int bad = memchr(key, '.', len) != NULL || memchr(key, '\0', len) != NULL;
    size_t n = len > CFG_SHOW_MAX ? CFG_SHOW_MAX : len;

    while (n < len && n > 0 && ((unsigned char)key[n] & 0xC0) == 0x80)
        n--;                /* cut on a UTF-8 character boundary */
    if (len == 0) {
        util_snprintf(out, cap, "%s%s\"\"", parent, *parent ? "." : "");
        return -1;
    }
    if (util_snprintf(out, cap, "%s%s%.*s%s", parent, *parent ? "." : "",
                      (int)n, key, n < len ? "..." : "") != 0)
        return -1;
    return bad || n < len ? -1 : 0;
}

/* Record path as read; fails if it was read before. */
static int remember(struct cfg_parser *p, const char *path, yaml_mark_t mark)
{
    char problem[64];

    for (size_t i = 0; i < p->nseen; i++) {
        if (strcmp(p->seen[i].path, path) == 0) {
            util_snprintf(problem, sizeof(problem),
                          "duplicate key (first set on line %zu)",
                          p->seen[i].line + 1);
            return cfg_fail(p, mark, path, problem, NULL);
        }
    }
    if (p->nseen == p->seen_cap) {
        p->seen_cap = p->seen_cap ? p->seen_cap * 2 : 32;
        p->seen = xrealloc(p->seen, p->seen_cap * sizeof(*p->seen));
    }
    p->seen[p->nseen].path = xstrdup(path);
    p->seen[p->nseen].line = mark.line;
    p->nseen++;
    return 0;
}

/* Read the scalar value of row idx. */
static int parse_leaf(struct cfg_parser *p, const char *path, size_t idx)
{
    const struct cfg_key *k = &config_keys[idx];
    char problem[160], got[CFG_SHOW_MAX + 16];
    yaml_event_t ev;
    int rc;

    memset(&ev, 0, sizeof(ev));
    rc = next_event(p, &ev);
    if (rc != 0)
        goto out;
    if (ev.type != YAML_SCALAR_EVENT) {
        show_event(&ev, got, sizeof(got));
        rc = cfg_fail(p, ev.start_mark, path, type_expected(k->type), got);
        goto out;
    }
    if (key_convert(&p->cfg, k, (const char *)ev.data.scalar.value,
                    ev.data.scalar.length,
                    ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE,
                    problem, sizeof(problem)) != 0) {
        show_value(k, (const char *)ev.data.scalar.value,
                   ev.data.scalar.length, got, sizeof(got));
        rc = cfg_fail(p, ev.start_mark, path, problem, got);
        goto out;
    }
    p->set[idx] = 1;
    p->mark[idx] = ev.start_mark;
out:
    yaml_event_delete(&ev);
    return rc;
}

static int parse_mapping(struct cfg_parser *p, const char *path);

/*
 * Read the value of a section: a mapping, or an empty (null) value meaning
 * "nothing set here", so a section whose keys are all commented out loads.
 */
static int parse_section(struct cfg_parser *p, const char *path)
{
    char got[CFG_SHOW_MAX + 16];
    yaml_event_t ev;
    int rc;

    memset(&ev, 0, sizeof(ev));
    rc = next_event(p, &ev);
    if (rc != 0)
        goto out;
    if (ev.type == YAML_MAPPING_START_EVENT) {
        rc = parse_mapping(p, path);
    } else if (ev.type == YAML_SCALAR_EVENT &&
               ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
               is_null_word((const char *)ev.data.scalar.value,
                            ev.data.scalar.length)) {
        rc = 0;
    } else {
        show_event(&ev, got, sizeof(got));
        rc = cfg_fail(p, ev.start_mark, *path ? path : CFG_TOP,
                      "expected a mapping", got);
    }
out:
    yaml_event_delete(&ev);
    return rc;
}

/* Read key/value pairs up to the end of the mapping at section `path`. */
static int parse_mapping(struct cfg_parser *p, const char *path)
{
    char child[CFG_PATH_MAX], problem[200], names[160];
    yaml_event_t ev;
    int rc = 0, idx, known;

    memset(&ev, 0, sizeof(ev));
    for (;;) {
        yaml_event_delete(&ev);
        set_where(p, path);
        rc = next_event(p, &ev);
        if (rc != 0 || ev.type == YAML_MAPPING_END_EVENT)
            break;
        if (ev.type != YAML_SCALAR_EVENT) {
            show_event(&ev, problem, sizeof(problem));
            rc = cfg_fail(p, ev.start_mark, *path ? path : CFG_TOP,
                          "keys must be plain names", problem);
            break;
        }
        idx = -1;
        known = join_path(path, (const char *)ev.data.scalar.value,
                          ev.data.scalar.length, child, sizeof(child)) == 0;
        if (known) {
            idx = key_find(child);
            known = idx >= 0 || key_is_section(child);
        }
        if (!known) {
            key_children(path, names, sizeof(names));
            util_snprintf(problem, sizeof(problem),
                          "unknown key (valid here: %s)", names);
            rc = cfg_fail(p, ev.start_mark, child, problem, NULL);
            break;
        }
        rc = remember(p, child, ev.start_mark);
        if (rc != 0)
            break;
        set_where(p, child);
        rc = idx >= 0 ? parse_leaf(p, child, (size_t)idx)
                      : parse_section(p, child);
        if (rc != 0)
            break;
    }
    yaml_event_delete(&ev);
    return rc;
}

/* The stream: at most one document, whose root is a mapping (or empty). */
static int parse_stream(struct cfg_parser *p)
{
    yaml_event_t ev;
    int rc, ndocs = 0;

    memset(&ev, 0, sizeof(ev));
    set_where(p, "");
    rc = next_event(p, &ev);                   /* STREAM-START */
    while (rc == 0) {
        yaml_event_delete(&ev);
        set_where(p, "");
        rc = next_event(p, &ev);
        if (rc != 0 || ev.type == YAML_STREAM_END_EVENT)
            break;
        if (ev.type == YAML_DOCUMENT_END_EVENT)
            continue;
        if (ev.type != YAML_DOCUMENT_START_EVENT || ndocs++ > 0) {
            rc = cfg_fail(p, ev.start_mark, CFG_TOP,
                          "only one YAML document is allowed", NULL);
            break;
        }
        rc = parse_section(p, "");
    }
    yaml_event_delete(&ev);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Rules that need the whole file                                           */

static int check_rules(struct cfg_parser *p)
{
    const struct config *c = &p->cfg;
    char problem[200], got[CFG_SHOW_MAX + 16];

    /* Required strings: shorter than min means missing or too short. */
    for (size_t i = 0; i < NKEYS; i++) {
        const struct cfg_key *k = &config_keys[i];
        const char *s = (const char *)c + k->off;
        size_t len;

        if (k->type != CFG_STRING || k->min == 0)
            continue;
        len = strlen(s);
        if ((long long)len >= k->min)
            continue;
        if (k->min == 1)
            util_strlcpy(problem, "must not be empty", sizeof(problem));
        else
            util_snprintf(problem, sizeof(problem),
                          "required, at least %lld bytes%s%s", k->min,
                          k->hint ? "; " : "", k->hint ? k->hint : "");
        if (p->set[i]) {
            show_value(k, s, len, got, sizeof(got));
            return cfg_fail(p, p->mark[i], k->path, problem, got);
        }
        error_set(p->err, AM_ECONFIG, "%s: %s: %s", p->file, k->path, problem);
        tidy_message(p->err);
        return AM_ECONFIG;
    }

    /* A refresh token that dies before its access token is a typo. */
    if (c->refresh_ttl < c->access_ttl) {
        int r = key_find("auth.refresh_ttl"), a = key_find("auth.access_ttl");
        yaml_mark_t m;

        if (r < 0 || a < 0)
            abort();        /* the rule names rows that left the table */
        m = p->set[r] ? p->mark[r] : p->mark[a];
        util_snprintf(problem, sizeof(problem),
                      "must be at least auth.access_ttl (%d)", c->access_ttl);
        util_snprintf(got, sizeof(got), "%d", c->refresh_ttl);
        return cfg_fail(p, m, "auth.refresh_ttl", problem, got);
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Secrets: the JWT secret's own file, and who may read the files           */

#define SECRET_FIX "umask 077; head -c 32 /dev/urandom | base64 > FILE"

/*
 * Read a secret (key names the row) from file into out (cap bytes): a regular file, mode
 * 0600 or stricter, 32..cap-1 bytes once one trailing newline is dropped.
 * Returns 0, or AM_ECONFIG with one line naming the secret file (after the
 * config file conf when it is missing) and the fix, short enough for an
 * am_error with long paths.
 */
static int read_secret_file(const char *conf, const char *key, const char *file, char *out,
                            size_t cap, struct am_error *err)
{
    char buf[512];
    struct stat st;
    ssize_t n;
    int fd, rc = 0;

    if (file[0] == '\0')
        return error_set(err, AM_ECONFIG, "%s: %s: must not be empty", conf, key);
    fd = open(file, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return error_set(err, AM_ECONFIG, "%s: %s: %s: %s; make it: "
                         SECRET_FIX, conf, key, file, strerror(errno));
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        rc = error_set(err, AM_ECONFIG, "%s: %s: not a regular file", file, key);
        goto out;
    }
    if ((st.st_mode & 077) != 0) {
        rc = error_set(err, AM_ECONFIG, "%s: %s: group or others may read "
                       "or write it (mode %04o); fix: chmod 600 that file",
                       file, key, (unsigned)(st.st_mode & 07777));
        goto out;
    }
    n = read(fd, buf, sizeof(buf));
    if (n < 0) {
        rc = error_set(err, AM_ECONFIG, "%s: %s: cannot read: %s",
                       file, key, strerror(errno));
        goto out;
    }
    if (n > 0 && buf[n - 1] == '\n')
        n--;
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    if (memchr(buf, '\0', (size_t)n) != NULL || memchr(buf, '\n', (size_t)n) != NULL ||
        n < 32 || (size_t)n >= cap) {
        rc = error_set(err, AM_ECONFIG, "%s: %s: must hold one line of 32 "
                       "to %zu bytes (got %zd bytes); make one: head -c 32 /dev/urandom | base64",
                       file, key, cap - 1, n);
        goto out;
    }
    memcpy(out, buf, (size_t)n);
    out[n] = '\0';
out:
    explicit_bzero(buf, sizeof(buf));
    close(fd);
    return rc;
}

/*
 * The secret is inline (auth.jwt_secret) or in its file, never both.
 */
static int secret_file_rules(struct cfg_parser *p)
{
    int js = key_find("auth.jwt_secret"), jf = key_find("auth.jwt_secret_file");

    if (js < 0 || jf < 0)
        abort();            /* the rule names rows that left the table */
    if (p->set[js] && p->set[jf])
        return cfg_fail(p, p->mark[jf], "auth.jwt_secret_file",
                        "set together with auth.jwt_secret; keep one of them", NULL);
    if (p->set[js])
        return 0;           /* check_rules checks its length */
    return read_secret_file(p->file, "auth.jwt_secret_file", p->cfg.jwt_secret_file,
                            p->cfg.jwt_secret, sizeof(p->cfg.jwt_secret), p->err);
}

/* Checked last, once the content is known good: a file readable by others
 * (mode) must not hold a secret inline. */
static int secret_mode_rule(struct cfg_parser *p, mode_t mode)
{
    for (size_t i = 0; i < NKEYS && (mode & S_IROTH); i++) {
        const char *v = (const char *)&p->cfg + config_keys[i].off;

        if ((config_keys[i].flags & CFG_SECRET) && p->set[i] && v[0] != '\0')
            return error_set(p->err, AM_ECONFIG, "%s: holds a secret (%s) and is readable "
                             "by others (mode %04o); fix: chmod o-rwx on it, or move the "
                             "secret to its own file", p->file, config_keys[i].path,
                             (unsigned)(mode & 07777));
    }
    return 0;
}

/* stream.sock in server.socket's directory; "" if that does not fit. */
static void stream_socket_beside(struct config *c)
{
    const char *slash = strrchr(c->socket_path, '/');
    size_t dir = slash != NULL ? (size_t)(slash - c->socket_path) + 1 : 0;

    memset(c->stream_socket, 0, sizeof(c->stream_socket));
    if (dir + sizeof("stream.sock") > (size_t)CFG_SOCKET_MAX + 1)
        return;
    memcpy(c->stream_socket, c->socket_path, dir);
    memcpy(c->stream_socket + dir, "stream.sock", sizeof("stream.sock"));
}

/* server.stream_socket absent or "" means stream.sock beside server.socket. */
static int stream_socket_default(struct cfg_parser *p)
{
    struct config *c = &p->cfg;
    int k = key_find("server.stream_socket");

    if (k >= 0 && p->set[k] && c->stream_socket[0] != '\0')
        return 0;
    stream_socket_beside(c);
    if (c->stream_socket[0] == '\0')
        return error_set(p->err, AM_ECONFIG, "%s: server.stream_socket: the default beside "
                         "server.socket is too long for a unix socket; set it", p->file);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Replication: the group's sites                                          */

static const struct cfg_word ack_words[] = {
    {"quorum", CFG_ACK_QUORUM}, {"all", CFG_ACK_ALL}, {"one", CFG_ACK_ONE},
    {"none", CFG_ACK_NONE}, {"all_available", CFG_ACK_ALL_AVAILABLE}, {NULL, 0}
};

/* "host:port" of len bytes into site; 0 or -1. The host is a name or an
 * IPv4 address (no brackets: Berkeley DB takes a host name). */
static int parse_site(const char *s, size_t len, struct config_site *site)
{
    const char *colon = memrchr(s, ':', len);
    long long port;
    size_t hl;

    if (colon == NULL || (hl = (size_t)(colon - s)) == 0 || hl >= sizeof(site->host) ||
        parse_number(colon + 1, len - hl - 1, 10, &port) != 0 || port < 1 || port > 65535)
        return -1;
    for (size_t i = 0; i < hl; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '.' || s[i] == '-'))
            return -1;
    memcpy(site->host, s, hl);
    site->host[hl] = '\0';
    site->port = (int)port;
    return 0;
}

/* An http:// or https:// URL without spaces, at most cap-1 bytes. */
static int parse_site_url(const char *s, size_t len, char *out, size_t cap)
{
    if (len >= cap || !((len > 7 && strncmp(s, "http://", 7) == 0) ||
                        (len > 8 && strncmp(s, "https://", 8) == 0)))
        return -1;
    memcpy(out, s, len);
    out[len] = '\0';
    while (len > 0 && out[len - 1] == '/')      /* the base: paths are appended */
        out[--len] = '\0';
    return 0;
}

static int rep_fail(struct cfg_parser *p, const char *key, const char *problem)
{
    int k = key_find(key);

    if (k < 0)
        abort();            /* the rule names rows that left the table */
    if (p->set[k])
        return cfg_fail(p, p->mark[k], key, problem, NULL);
    error_set(p->err, AM_ECONFIG, "%s: %s: %s", p->file, key, problem);
    return AM_ECONFIG;
}

/*
 * replication.site empty: no group, and no other replication key may say
 * otherwise. Else: this site, its url, one to CFG_REP_SITES_MAX-1 peers
 * ("host:port=url", separated by spaces or commas), a known ack policy and
 * the shared secret's file; rep_sites[0] is this host.
 */
static int replication_rules(struct cfg_parser *p)
{
    struct config *c = &p->cfg;
    const char *s = c->rep_peers;
    long long w;

    c->rep_nsites = 0;
    if (c->rep_site[0] == '\0') {
        if (c->rep_peers[0] != '\0' || c->rep_url[0] != '\0')
            return rep_fail(p, c->rep_peers[0] ? "replication.peers" : "replication.url",
                            "set without replication.site (this host's address)");
        return 0;
    }
    if (parse_site(c->rep_site, strlen(c->rep_site), &c->rep_sites[0]) != 0)
        return rep_fail(p, "replication.site", "must be host:port");
    if (parse_site_url(c->rep_url, strlen(c->rep_url), c->rep_sites[0].url,
                       sizeof(c->rep_sites[0].url)) != 0)
        return rep_fail(p, "replication.url", "must be this host's http:// or https:// "
                        "address as the other hosts reach it");
    c->rep_nsites = 1;
    while (*s != '\0') {
        size_t len, eq;
        struct config_site *site;

        s += strspn(s, " ,");
        len = strcspn(s, " ,");
        if (len == 0)
            break;
        if (c->rep_nsites == CFG_REP_SITES_MAX)
            return rep_fail(p, "replication.peers", "too many sites (at most 8 in a group)");
        site = &c->rep_sites[c->rep_nsites];
        eq = strcspn(s, "=");
        if (eq >= len || parse_site(s, eq, site) != 0 ||
            parse_site_url(s + eq + 1, len - eq - 1, site->url, sizeof(site->url)) != 0)
            return rep_fail(p, "replication.peers", "each peer must be host:port=http://address");
        for (int i = 0; i < c->rep_nsites; i++)
            if (strcmp(c->rep_sites[i].host, site->host) == 0 &&
                c->rep_sites[i].port == site->port)
                return rep_fail(p, "replication.peers", "names a site twice (or this one)");
        c->rep_nsites++;
        s += len;
    }
    if (c->rep_nsites < 2)
        return rep_fail(p, "replication.peers", "a group needs at least one other site");
    if (word_find(ack_words, c->rep_ack_policy, strlen(c->rep_ack_policy), &w) != 0)
        return rep_fail(p, "replication.ack_policy",
                        "must be quorum, all, one, none or all_available");
    c->rep_ack = (int)w;
    return read_secret_file(p->file, "replication.secret_file", c->rep_secret_file,
                            c->rep_secret, sizeof(c->rep_secret), p->err);
}

/* ------------------------------------------------------------------------ */
/* Public API                                                               */

/* Fill cfg with every row's default. Aborts if the table contradicts itself
 * (a default outside its own range): that is a bug, not an input error. */
void config_defaults(struct config *cfg)
{
    char problem[160];

    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < NKEYS; i++) {
        const struct cfg_key *k = &config_keys[i];

        if ((k->type != CFG_STRING && k->size != sizeof(int)) ||
            key_convert(cfg, k, k->def, strlen(k->def), 1, problem,
                        sizeof(problem)) != 0)
            abort();
    }
    stream_socket_beside(cfg);
}

/*
 * Load path over the defaults into cfg. Returns 0, or AM_ECONFIG with
 * err->message set; on failure *cfg is left exactly as it was. Never logs.
 */
int config_load(struct config *cfg, const char *path, struct am_error *err)
{
    struct cfg_parser *p = NULL;
    FILE *fp = NULL;
    struct stat st;
    int rc = 0, yaml_ready = 0;

    error_clear(err);
    if (path == NULL || *path == '\0')
        return error_set(err, AM_ECONFIG, "config: no file name given");

    p = xcalloc(1, sizeof(*p));
    p->file = path;
    p->err = err;
    config_defaults(&p->cfg);
    if (util_strlcpy(p->cfg.path, path, sizeof(p->cfg.path)) >=
        sizeof(p->cfg.path)) {
        rc = error_set(err, AM_ECONFIG, "%.64s...: file name too long",
                       path);
        goto out;
    }
    fp = fopen(path, "re");
    if (fp == NULL) {
        rc = error_set(err, AM_ECONFIG, "%s: cannot open: %s", path,
                       strerror(errno));
        goto out;
    }
    if (fstat(fileno(fp), &st) != 0 || !S_ISREG(st.st_mode)) {
        rc = error_set(err, AM_ECONFIG, "%s: not a regular file", path);
        goto out;
    }
    if (st.st_size > CFG_FILE_MAX) {
        rc = error_set(err, AM_ECONFIG,
                       "%s: file too large (max %d bytes) (got %lld bytes)",
                       path, CFG_FILE_MAX, (long long)st.st_size);
        goto out;
    }
    if (!yaml_parser_initialize(&p->yaml)) {
        rc = error_set(err, AM_ECONFIG, "%s: out of memory", path);
        goto out;
    }
    yaml_ready = 1;
    yaml_parser_set_input_file(&p->yaml, fp);
    p->fp = fp;

    rc = parse_stream(p);
    if (rc == 0)
        rc = secret_file_rules(p);
    if (rc == 0)
        rc = check_rules(p);
    if (rc == 0)
        rc = stream_socket_default(p);
    if (rc == 0)
        rc = replication_rules(p);
    if (rc == 0)
        rc = secret_mode_rule(p, st.st_mode);
    if (rc == 0)
        *cfg = p->cfg;
out:
    if (rc != 0)
        tidy_message(err);
    if (yaml_ready)
        yaml_parser_delete(&p->yaml);
    if (fp != NULL)
        fclose(fp);
    for (size_t i = 0; i < p->nseen; i++)
        free(p->seen[i].path);
    free(p->seen);
    explicit_bzero(&p->cfg, sizeof(p->cfg));   /* it held the secret */
    free(p);
    return rc;
}

static const char *const type_names[] = {
    [CFG_STRING] = "string", [CFG_INT] = "integer", [CFG_BOOL] = "boolean",
    [CFG_MODE] = "mode", [CFG_LOGLEVEL] = "loglevel",
};

/* Row i of the table, for -K and the man page. Returns 0, or -1 past the end. */
int config_key_info(size_t i, struct config_key_info *out)
{
    if (i >= NKEYS)
        return -1;
    out->path = config_keys[i].path;
    out->type = type_names[config_keys[i].type];
    out->def = config_keys[i].def;
    out->min = config_keys[i].min;
    out->max = config_keys[i].max;
    out->secret = (config_keys[i].flags & CFG_SECRET) != 0;
    return 0;
}

int config_provider_from_name(const char *name)
{
    if (name == NULL)
        return -1;
    for (int i = 0; i < PROVIDER_COUNT; i++)
        if (strcmp(provider_names[i], name) == 0)
            return i;
    return -1;
}

const char *config_provider_name(int provider)
{
    if (provider < 0 || provider >= PROVIDER_COUNT)
        return NULL;
    return provider_names[provider];
}
