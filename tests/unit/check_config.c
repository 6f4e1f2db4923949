/*
 * check_config.c - unit tests for config.c: the key table, every kind of
 * rejection and its message, the shipped etc/astromesh-cloud.yaml, and a
 * replay of tests/corpus/config/ (bad files that must be refused cleanly).
 *
 * Files are written under one mkdtemp() directory, removed at exit. The
 * shipped config and the corpus are found through $ASTROMESH_SRCDIR (set by
 * `make check`), falling back to ".".
 *
 * Run one case: CK_RUN_CASE=rejections ./tests/unit/check_config
 * Under valgrind: CK_FORK=no valgrind --leak-check=full ./tests/unit/check_config
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "state/config.h"
#include "lib/error.h"
#include "lib/util.h"

#define SECRET "0123456789abcdef0123456789abcdef"   /* exactly 32 bytes */
#define AUTH "auth:\n  jwt_secret: " SECRET "\n"
#define SECRET_MSG "auth.jwt_secret: required, at least 32 bytes; " \
    "generate one with: head -c 32 /dev/urandom | base64"
/* No inline secret: the default auth.jwt_secret_file, absent on a build machine. */
#define DEFAULT_SECRET_FILE SYSCONFDIR "/astromesh-cloud/jwt.secret"
#define NO_FILE_MSG " auth.jwt_secret_file: " DEFAULT_SECRET_FILE ": No such file or directory; " \
    "make it: umask 077; head -c 32 /dev/urandom | base64 > FILE"
/* what fits whatever the length of the paths (the rejections compare a prefix) */
#define NO_FILE_START " auth.jwt_secret_file: " DEFAULT_SECRET_FILE ": No such file or directory"

static char tmpdir[PATH_MAX];       /* from mkdtemp, removed by main */

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */

static const char *srcdir(void)
{
    const char *s = getenv("ASTROMESH_SRCDIR");
    return s && *s ? s : ".";
}

/* Write len bytes to tmpdir/name; returns the path in a static buffer. */
static const char *write_file(const char *name, const char *data, size_t len)
{
    static char path[PATH_MAX];
    FILE *fp;

    ck_assert(util_snprintf(path, sizeof(path), "%s/%s", tmpdir, name) == 0);
    fp = fopen(path, "wb");
    ck_assert_msg(fp != NULL, "fopen %s: %s", path, strerror(errno));
    ck_assert(fwrite(data, 1, len, fp) == len);
    ck_assert(fclose(fp) == 0);
    ck_assert(chmod(path, 0600) == 0);  /* most hold jwt_secret inline */
    return path;
}

/* Read a whole file; caller frees. */
static char *read_file(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    char *buf;
    long n;

    ck_assert_msg(fp != NULL, "fopen %s: %s", path, strerror(errno));
    ck_assert(fseek(fp, 0, SEEK_END) == 0);
    n = ftell(fp);
    ck_assert(n >= 0);
    rewind(fp);
    buf = xmalloc((size_t)n + 1);
    ck_assert(fread(buf, 1, (size_t)n, fp) == (size_t)n);
    buf[n] = '\0';
    fclose(fp);
    if (len)
        *len = (size_t)n;
    return buf;
}

static int load_text(const char *name, const char *yaml, struct config *cfg,
                     struct am_error *err, const char **path)
{
    const char *p = write_file(name, yaml, strlen(yaml));
    if (path)
        *path = p;
    return config_load(cfg, p, err);
}

/* The message with its leading "path:" removed, after checking it is there. */
static const char *after_path(const struct am_error *err, const char *path)
{
    size_t n = strlen(path);

    ck_assert_msg(strncmp(err->message, path, n) == 0 && err->message[n] == ':',
                  "message does not start with the file: %s", err->message);
    return err->message + n + 1;
}

/* ------------------------------------------------------------------------ */
/* Rejections: name, file body, and the message after "path:" (a prefix).    */

struct reject_case {
    const char *name;
    const char *yaml;
    const char *want;
};

static const struct reject_case rejects[] = {
    {"unknown_key_names_key_and_line",
     "server:\n  wrokers: 4\n",
     "2:3: server.wrokers: unknown key (valid here: socket, socket_mode, "
     "workers, threads, pid_file, shutdown_timeout_ms, stream_socket)"},
    {"unknown_section_lists_sections",
     "serverz:\n  workers: 4\n",
     "1:1: serverz: unknown key (valid here: server, stream, storage, auth, limits, agents, "
     "memory, registry, providers, tools, runtime, log, metrics, replication)"},
    {"unknown_provider_lists_providers",
     "providers:\n  azure:\n    api_key: x\n",
     "2:3: providers.azure: unknown key (valid here: openai, anthropic, groq, "
     "mistral, cohere, ollama, echo)"},
    {"unknown_provider_field_rejected",
     "providers:\n  openai:\n    model: gpt\n",
     "3:5: providers.openai.model: unknown key (valid here: base_url, "
     "api_key, timeout_ms)"},
    {"dotted_key_is_not_a_path",
     "server.workers: 4\n",
     "1:1: server.workers: unknown key"},
    {"empty_key_rejected",
     "\"\": 4\n",
     "1:1: \"\": unknown key"},
    {"control_bytes_in_key_not_echoed_raw",
     "\"a\\nb\": 1\n",
     "1:1: a?b: unknown key"},
    {"long_unknown_key_shortened",
     "server:\n  aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa: 1\n",
     "2:3: server.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...: unknown"},
    {"workers_out_of_range_rejected",
     "server:\n  workers: 65\n",
     "2:12: server.workers: out of range 1..64 (got 65)"},
    {"workers_zero_rejected",
     "server:\n  workers: 0\n",
     "2:12: server.workers: out of range 1..64 (got 0)"},
    {"workers_negative_rejected",
     "server:\n  workers: -1\n",
     "2:12: server.workers: out of range 1..64 (got -1)"},
    {"workers_huge_number_is_out_of_range_not_garbage",
     "server:\n  workers: 99999999999999999999999999\n",
     "2:12: server.workers: out of range 1..64 (got 99999999999999999999999999)"},
    {"workers_word_rejected",
     "server:\n  workers: four\n",
     "2:12: server.workers: expected an integer (got four)"},
    {"workers_float_rejected",
     "server:\n  workers: 4.0\n",
     "2:12: server.workers: expected an integer (got 4.0)"},
    {"workers_hex_rejected",
     "server:\n  workers: 0x10\n",
     "2:12: server.workers: expected an integer (got 0x10)"},
    {"workers_empty_rejected",
     "server:\n  workers:\n",
     "2:11: server.workers: expected an integer (got \"\")"},
    {"threads_above_max_rejected",
     "server:\n  threads: 1025\n",
     "2:12: server.threads: out of range 1..1024 (got 1025)"},
    {"shutdown_timeout_below_min_rejected",
     "server:\n  shutdown_timeout_ms: 99\n",
     "2:24: server.shutdown_timeout_ms: out of range 100..600000 (got 99)"},
    {"cache_mb_above_max_rejected",
     "storage:\n  cache_mb: 4097\n",
     "2:13: storage.cache_mb: out of range 1..4096 (got 4097)"},
    {"access_ttl_below_min_rejected",
     "auth:\n  access_ttl: 59\n",
     "2:15: auth.access_ttl: out of range 60..86400 (got 59)"},
    {"refresh_ttl_above_max_rejected",
     "auth:\n  refresh_ttl: 31536001\n",
     "2:16: auth.refresh_ttl: out of range 300..31536000 (got 31536001)"},
    {"requests_per_day_above_max_rejected",
     "limits:\n  requests_per_day: 100000001\n",
     "2:21: limits.requests_per_day: out of range 1..100000000"},
    {"registry_capacity_below_min_rejected",
     "registry:\n  capacity: 15\n",
     "2:13: registry.capacity: out of range 16..1000000 (got 15)"},
    {"registry_slot_kb_above_max_rejected",
     "registry:\n  slot_kb: 1025\n",
     "2:12: registry.slot_kb: out of range 4..1024 (got 1025)"},
    {"provider_timeout_out_of_range_rejected",
     "providers:\n  ollama:\n    timeout_ms: 600001\n",
     "3:17: providers.ollama.timeout_ms: out of range 100..600000 (got 600001)"},
    {"socket_mode_non_octal_digit_rejected",
     "server:\n  socket_mode: 0869\n",
     "2:16: server.socket_mode: expected an octal mode like 0660 (got 0869)"},
    {"socket_mode_special_bits_rejected",
     "server:\n  socket_mode: 01777\n",
     "2:16: server.socket_mode: out of range 0000..0777 (got 01777)"},
    {"socket_mode_word_rejected",
     "server:\n  socket_mode: rw-rw----\n",
     "2:16: server.socket_mode: expected an octal mode like 0660 (got rw-rw----)"},
    {"bool_unknown_word_rejected",
     "storage:\n  sync: maybe\n",
     "2:9: storage.sync: expected a boolean: true/false, yes/no or on/off "
     "(got maybe)"},
    {"bool_digit_rejected",
     "auth:\n  dev_login: 1\n",
     "2:14: auth.dev_login: expected a boolean: true/false, yes/no or on/off "
     "(got 1)"},
    {"log_level_unknown_rejected",
     "log:\n  level: verbose\n",
     "2:10: log.level: expected one of error, warn, info, debug (got verbose)"},
    {"duplicate_key_rejected",
     "server:\n  workers: 2\n  workers: 3\n",
     "3:3: server.workers: duplicate key (first set on line 2)"},
    {"duplicate_section_rejected",
     "server:\n  workers: 2\nstorage:\n  sync: on\nserver:\n  threads: 3\n",
     "5:1: server: duplicate key (first set on line 1)"},
    {"duplicate_key_in_flow_mapping_rejected",
     "log: {level: info, level: debug}\n",
     "1:20: log.level: duplicate key (first set on line 1)"},
    {"section_given_scalar_rejected",
     "server: 5\n",
     "1:9: server: expected a mapping (got 5)"},
    {"section_given_sequence_rejected",
     "server: [1, 2]\n",
     "1:9: server: expected a mapping (got a sequence)"},
    {"provider_given_string_rejected",
     "providers:\n  openai: https://example.com\n",
     "2:11: providers.openai: expected a mapping (got https://example.com)"},
    {"quoted_empty_section_rejected",
     "server: \"\"\n",
     "1:9: server: expected a mapping (got \"\")"},
    {"leaf_given_mapping_rejected",
     "server:\n  workers: {n: 1}\n",
     "2:12: server.workers: expected an integer (got a mapping)"},
    {"leaf_given_sequence_rejected",
     "server:\n  socket: [a]\n",
     "2:11: server.socket: expected a string (got a sequence)"},
    {"root_sequence_rejected",
     "- server\n- storage\n",
     "1:1: (top level): expected a mapping (got a sequence)"},
    {"root_scalar_rejected",
     "hello\n",
     "1:1: (top level): expected a mapping (got hello)"},
    {"complex_key_rejected",
     "? [a, b]\n: 1\n",
     "1:3: (top level): keys must be plain names (got a sequence)"},
    {"alias_rejected",
     "server: &s\n  workers: 2\nstorage: *s\n",
     "3:10: storage: aliases are not supported"},
    {"second_document_rejected",
     AUTH "---\nserver:\n  workers: 2\n",
     "3:1: (top level): only one YAML document is allowed"},
    {"syntax_error_unclosed_quote_reports_position",
     "server:\n  workers: \"2\n",
     "3:1: server.workers: invalid YAML: found unexpected end of stream"},
    {"syntax_error_bad_indent_reports_position",
     "server:\n  workers: 2\n bad: 3\n",
     "3:2: (top level): invalid YAML: did not find expected key"},
    {"syntax_error_tab_indent_reports_position",
     "server:\n\tworkers: 2\n",
     "2:1: server: invalid YAML: found character that cannot start any token"},
    {"invalid_utf8_reports_line",
     "server:\n  workers: 2\n\xff: 1\n",
     "3:1: (top level): invalid YAML: invalid leading UTF-8 octet at byte 21"},
    {"string_too_long_rejected",
     "storage:\n  data_dir: /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n",
     "2:13: storage.data_dir: too long (max 255 bytes) (got /aaaaaaaaaaaaaaaa"
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...)"},
    {"socket_longer_than_sun_path_rejected",
     "server:\n  socket: /run/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.sock\n",
     "2:11: server.socket: too long (max 107 bytes)"},
    {"socket_empty_rejected",
     AUTH "server:\n  socket: \"\"\n",
     "4:11: server.socket: must not be empty (got \"\")"},
    {"nul_byte_in_string_rejected",
     "server:\n  pid_file: \"/run/a\\0b\"\n",
     "2:13: server.pid_file: contains a NUL byte"},
    {"secret_too_long_not_echoed",
     "auth:\n  jwt_secret: SSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSS"
     "SSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSS"
     "SSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSS"
     "SSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSS\n",
     "2:15: auth.jwt_secret: too long (max 255 bytes) (got 277 bytes)"},
    {"provider_api_key_not_echoed",
     "providers:\n  openai:\n    api_key: [sk-secret]\n",
     "3:14: providers.openai.api_key: expected a string (got a sequence)"},
    {"jwt_secret_missing_rejected",
     "server:\n  workers: 2\n",
     NO_FILE_START},
    {"jwt_secret_short_rejected_at_its_line",
     "server:\n  workers: 2\nauth:\n  jwt_secret: too-short\n",
     "4:15: " SECRET_MSG " (got 9 bytes)"},
    {"jwt_secret_null_is_missing",
     "auth:\n  jwt_secret: ~\n",
     "2:15: " SECRET_MSG " (got 0 bytes)"},
    {"empty_file_needs_secret",
     "",
     NO_FILE_START},
    {"comment_only_file_needs_secret",
     "# nothing here\n",
     NO_FILE_START},
    {"refresh_shorter_than_access_rejected",
     AUTH "  access_ttl: 3600\n  refresh_ttl: 600\n",
     "4:16: auth.refresh_ttl: must be at least auth.access_ttl (3600) (got 600)"},
};

START_TEST(rejections)
{
    const struct reject_case *c = &rejects[_i];
    struct config cfg;
    struct am_error err;
    const char *path, *rest;
    char name[96];
    int rc;

    ck_assert(util_snprintf(name, sizeof(name), "%s.yaml", c->name) == 0);
    rc = load_text(name, c->yaml, &cfg, &err, &path);
    ck_assert_msg(rc == AM_ECONFIG, "%s: rc %d, want AM_ECONFIG", c->name, rc);
    ck_assert_int_eq(err.code, AM_ECONFIG);
    rest = after_path(&err, path);
    ck_assert_msg(strncmp(rest, c->want, strlen(c->want)) == 0,
                  "%s:\n  got  %s\n  want %s", c->name, rest, c->want);
    ck_assert_msg(strstr(err.message, "SSSS") == NULL &&
                  strstr(err.message, "sk-secret") == NULL,
                  "%s: a secret leaked into %s", c->name, err.message);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Successful loads                                                         */

START_TEST(defaults_when_file_sets_only_secret)
{
    static const char *const urls[PROVIDER_COUNT] = {
        "https://api.openai.com/v1", "https://api.anthropic.com/v1",
        "https://api.groq.com/openai/v1", "https://api.mistral.ai/v1",
        "https://api.cohere.com/v2", "http://127.0.0.1:11434", "",
    };
    struct config cfg;
    struct am_error err;
    const char *path;

    ck_assert_int_eq(load_text("only_secret.yaml", AUTH, &cfg, &err, &path), 0);
    ck_assert_str_eq(cfg.path, path);
    ck_assert_str_eq(cfg.socket_path, "/run/astromesh-cloud/fcgi.sock");
    ck_assert_int_eq(cfg.socket_mode, 0660);
    ck_assert_int_eq(cfg.workers, 2);
    ck_assert_int_eq(cfg.threads, 128);
    ck_assert_str_eq(cfg.pid_file, "");
    ck_assert_int_eq(cfg.shutdown_timeout_ms, 10000);
    ck_assert_str_eq(cfg.data_dir, "/var/lib/astromesh-cloud");
    ck_assert_int_eq(cfg.db_cache_mb, 16);
    ck_assert_int_eq(cfg.db_sync, 1);
    ck_assert_str_eq(cfg.jwt_secret, SECRET);
    ck_assert_int_eq(cfg.dev_login, 0);
    ck_assert_int_eq(cfg.access_ttl, 900);
    ck_assert_int_eq(cfg.refresh_ttl, 604800);
    ck_assert_int_eq(cfg.max_agents, 5);
    ck_assert_int_eq(cfg.requests_per_day, 1000);
    ck_assert_int_eq(cfg.max_members, 3);
    ck_assert_int_eq(cfg.max_streams, 5);
    ck_assert_int_eq(cfg.registry_capacity, 4096);
    ck_assert_int_eq(cfg.registry_slot_kb, 64);
    for (int i = 0; i < PROVIDER_COUNT; i++) {
        ck_assert_str_eq(cfg.providers[i].base_url, urls[i]);
        ck_assert_str_eq(cfg.providers[i].api_key, "");
        ck_assert_int_eq(cfg.providers[i].timeout_ms, 30000);
    }
    ck_assert_int_eq(cfg.log_level, LOG_LVL_INFO);
    ck_assert_int_eq(cfg.log_requests, 1);
    ck_assert_str_eq(cfg.metrics_token, "");
}
END_TEST

START_TEST(config_defaults_has_no_secret_and_no_path)
{
    struct config a, b;

    memset(&a, 0xAB, sizeof(a));
    config_defaults(&a);
    ck_assert_str_eq(a.jwt_secret, "");
    ck_assert_str_eq(a.path, "");
    ck_assert_int_eq(a.workers, 2);
    ck_assert_int_eq(a.log_level, LOG_LVL_INFO);
    config_defaults(&b);
    ck_assert(memcmp(&a, &b, sizeof(a)) == 0);   /* no leftover bytes */
}
END_TEST

/* Every key set to a non-default value lands in its own field. */
START_TEST(every_key_overrides_its_field)
{
    static const char yaml[] =
        "server:\n"
        "  socket: /tmp/am.sock\n"
        "  socket_mode: 0600\n"
        "  workers: 64\n"
        "  threads: 1\n"
        "  pid_file: /run/am.pid\n"
        "  shutdown_timeout_ms: 600000\n"
        "storage:\n"
        "  data_dir: /srv/am\n"
        "  cache_mb: 4096\n"
        "  sync: off\n"
        "auth:\n"
        "  jwt_secret: \"" SECRET "-and-more\"\n"
        "  dev_login: yes\n"
        "  access_ttl: 60\n"
        "  refresh_ttl: 31536000\n"
        "limits:\n"
        "  max_agents: 100000\n"
        "  requests_per_day: 100000000\n"
        "  max_members: 1\n"
        "  max_streams: 7\n"
        "registry:\n"
        "  capacity: 16\n"
        "  slot_kb: 4\n"
        "providers:\n"
        "  openai: {base_url: \"http://127.0.0.1:9/oa\", api_key: k0, timeout_ms: 100}\n"
        "  anthropic: {base_url: \"http://127.0.0.1:9/an\", api_key: k1, timeout_ms: 101}\n"
        "  groq: {base_url: \"http://127.0.0.1:9/gr\", api_key: k2, timeout_ms: 102}\n"
        "  mistral: {base_url: \"http://127.0.0.1:9/mi\", api_key: k3, timeout_ms: 103}\n"
        "  cohere: {base_url: \"http://127.0.0.1:9/co\", api_key: k4, timeout_ms: 104}\n"
        "  ollama: {base_url: \"http://127.0.0.1:9/ol\", api_key: k5, timeout_ms: 105}\n"
        "  echo: {base_url: \"http://127.0.0.1:9/ec\", api_key: k6, timeout_ms: 106}\n"
        "log:\n"
        "  level: debug\n"
        "  requests: off\n"
        "metrics:\n"
        "  token: \"t0k3n\"\n";
    static const char *const tails[PROVIDER_COUNT] = {
        "oa", "an", "gr", "mi", "co", "ol", "ec"
    };
    struct config cfg;
    struct am_error err;
    char want[64];

    ck_assert_msg(load_text("every_key.yaml", yaml, &cfg, &err, NULL) == 0,
                  "%s", err.message);
    ck_assert_str_eq(cfg.socket_path, "/tmp/am.sock");
    ck_assert_int_eq(cfg.socket_mode, 0600);
    ck_assert_int_eq(cfg.workers, 64);
    ck_assert_int_eq(cfg.threads, 1);
    ck_assert_str_eq(cfg.pid_file, "/run/am.pid");
    ck_assert_int_eq(cfg.shutdown_timeout_ms, 600000);
    ck_assert_str_eq(cfg.data_dir, "/srv/am");
    ck_assert_int_eq(cfg.db_cache_mb, 4096);
    ck_assert_int_eq(cfg.db_sync, 0);
    ck_assert_str_eq(cfg.jwt_secret, SECRET "-and-more");
    ck_assert_int_eq(cfg.dev_login, 1);
    ck_assert_int_eq(cfg.access_ttl, 60);
    ck_assert_int_eq(cfg.refresh_ttl, 31536000);
    ck_assert_int_eq(cfg.max_agents, 100000);
    ck_assert_int_eq(cfg.requests_per_day, 100000000);
    ck_assert_int_eq(cfg.max_members, 1);
    ck_assert_int_eq(cfg.max_streams, 7);
    ck_assert_int_eq(cfg.registry_capacity, 16);
    ck_assert_int_eq(cfg.registry_slot_kb, 4);
    for (int i = 0; i < PROVIDER_COUNT; i++) {
        util_snprintf(want, sizeof(want), "http://127.0.0.1:9/%s", tails[i]);
        ck_assert_str_eq(cfg.providers[i].base_url, want);
        util_snprintf(want, sizeof(want), "k%d", i);
        ck_assert_str_eq(cfg.providers[i].api_key, want);
        ck_assert_int_eq(cfg.providers[i].timeout_ms, 100 + i);
    }
    ck_assert_int_eq(cfg.log_level, LOG_LVL_DEBUG);
    ck_assert_int_eq(cfg.log_requests, 0);
    ck_assert_str_eq(cfg.metrics_token, "t0k3n");
}
END_TEST

/* server.stream_socket: beside server.socket unless set (issue 10). */
START_TEST(stream_socket_defaults_beside_the_fastcgi_socket)
{
    static const struct { const char *server; const char *want; } cases[] = {
        { "  socket: /tmp/x/fcgi.sock\n", "/tmp/x/stream.sock" },
        { "  socket: /tmp/x/fcgi.sock\n  stream_socket: \"\"\n", "/tmp/x/stream.sock" },
        { "  socket: /tmp/x/fcgi.sock\n  stream_socket: /srv/ws.sock\n", "/srv/ws.sock" },
        { "  socket: fcgi.sock\n", "stream.sock" },
        { "  workers: 2\n", "/run/astromesh-cloud/stream.sock" },
    };
    char yaml[512];
    struct config cfg;
    struct am_error err;
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        util_snprintf(yaml, sizeof(yaml),
                      "server:\n%sstream:\n  idle_timeout_ms: 1000\n  ping_interval_ms: 100\n"
                      "  max_connections: 1\n  max_queries: 1\nauth:\n  jwt_secret: \"" SECRET
                      "\"\n", cases[i].server);
        ck_assert_msg(load_text("stream.yaml", yaml, &cfg, &err, NULL) == 0, "%s", err.message);
        ck_assert_str_eq(cfg.stream_socket, cases[i].want);
        ck_assert_int_eq(cfg.stream_idle_timeout_ms, 1000);
        ck_assert_int_eq(cfg.stream_ping_interval_ms, 100);
        ck_assert_int_eq(cfg.stream_max_connections, 1);
        ck_assert_int_eq(cfg.stream_max_queries, 1);
    }
}
END_TEST

START_TEST(socket_mode_parsed_as_octal)
{
    static const struct { const char *text; int mode; } modes[] = {
        {"0660", 0660}, {"\"0640\"", 0640}, {"'0600'", 0600}, {"600", 0600},
        {"0o750", 0750}, {"0", 0}, {"0777", 0777}, {"00660", 0660},
    };
    struct config cfg;
    struct am_error err;
    char yaml[128];

    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        util_snprintf(yaml, sizeof(yaml), AUTH "server:\n  socket_mode: %s\n",
                      modes[i].text);
        ck_assert_msg(load_text("mode.yaml", yaml, &cfg, &err, NULL) == 0,
                      "%s: %s", modes[i].text, err.message);
        ck_assert_msg(cfg.socket_mode == modes[i].mode, "%s gave %o",
                      modes[i].text, (unsigned)cfg.socket_mode);
    }
}
END_TEST

START_TEST(bool_words_accepted)
{
    static const struct { const char *word; int value; } words[] = {
        {"true", 1}, {"yes", 1}, {"on", 1}, {"True", 1}, {"YES", 1},
        {"\"on\"", 1}, {"false", 0}, {"no", 0}, {"off", 0}, {"FALSE", 0},
        {"Off", 0}, {"'no'", 0},
    };
    struct config cfg;
    struct am_error err;
    char yaml[160];

    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
        util_snprintf(yaml, sizeof(yaml),
                      AUTH "  dev_login: %s\nstorage:\n  sync: %s\n",
                      words[i].word, words[i].word);
        ck_assert_msg(load_text("bool.yaml", yaml, &cfg, &err, NULL) == 0,
                      "%s: %s", words[i].word, err.message);
        ck_assert_int_eq(cfg.dev_login, words[i].value);
        ck_assert_int_eq(cfg.db_sync, words[i].value);
    }
}
END_TEST

START_TEST(log_level_words_map_to_enum)
{
    static const struct { const char *word; int level; } levels[] = {
        {"error", LOG_LVL_ERROR}, {"warn", LOG_LVL_WARN},
        {"info", LOG_LVL_INFO}, {"debug", LOG_LVL_DEBUG}, {"DEBUG", LOG_LVL_DEBUG},
    };
    struct config cfg;
    struct am_error err;
    char yaml[128];

    for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
        util_snprintf(yaml, sizeof(yaml), AUTH "log:\n  level: %s\n",
                      levels[i].word);
        ck_assert_msg(load_text("level.yaml", yaml, &cfg, &err, NULL) == 0,
                      "%s: %s", levels[i].word, err.message);
        ck_assert_int_eq(cfg.log_level, levels[i].level);
    }
}
END_TEST

START_TEST(range_bounds_are_inclusive)
{
    struct config cfg;
    struct am_error err;

    ck_assert_msg(load_text("bounds.yaml", AUTH
                            "server:\n  workers: 1\n  threads: 1024\n"
                            "  shutdown_timeout_ms: 100\n"
                            "registry:\n  capacity: 1000000\n  slot_kb: 1024\n",
                            &cfg, &err, NULL) == 0, "%s", err.message);
    ck_assert_int_eq(cfg.workers, 1);
    ck_assert_int_eq(cfg.threads, 1024);
    ck_assert_int_eq(cfg.shutdown_timeout_ms, 100);
    ck_assert_int_eq(cfg.registry_capacity, 1000000);
    ck_assert_int_eq(cfg.registry_slot_kb, 1024);
}
END_TEST

START_TEST(quoted_and_signed_integers_accepted)
{
    struct config cfg;
    struct am_error err;

    ck_assert_msg(load_text("quoted.yaml", AUTH
                            "server:\n  workers: \"4\"\n  threads: +8\n"
                            "  pid_file: 42\n",
                            &cfg, &err, NULL) == 0, "%s", err.message);
    ck_assert_int_eq(cfg.workers, 4);
    ck_assert_int_eq(cfg.threads, 8);
    ck_assert_str_eq(cfg.pid_file, "42");
}
END_TEST

/* A plain empty/~/null string is "", a quoted one is literal; an empty
 * section is allowed so a section with every key commented out loads. */
START_TEST(null_values_and_empty_sections_accepted)
{
    struct config cfg;
    struct am_error err;

    ck_assert_msg(load_text("nulls.yaml", AUTH
                            "server:\n  pid_file: ~\n"
                            "providers:\n  openai:\n    base_url: null\n"
                            "    api_key: \"~\"\n  echo:\n"
                            "storage:\nlimits: {}\n",
                            &cfg, &err, NULL) == 0, "%s", err.message);
    ck_assert_str_eq(cfg.pid_file, "");
    ck_assert_str_eq(cfg.providers[PROVIDER_OPENAI].base_url, "");
    ck_assert_str_eq(cfg.providers[PROVIDER_OPENAI].api_key, "~");
    ck_assert_str_eq(cfg.data_dir, "/var/lib/astromesh-cloud");
}
END_TEST

START_TEST(secret_of_exactly_32_bytes_accepted)
{
    struct config cfg;
    struct am_error err;

    ck_assert_int_eq(strlen(SECRET), 32);
    ck_assert_msg(load_text("s32.yaml", AUTH, &cfg, &err, NULL) == 0, "%s",
                  err.message);
    ck_assert_int_eq(load_text("s31.yaml",
                               "auth:\n  jwt_secret: 0123456789abcdef0123456789abcde\n",
                               &cfg, &err, NULL), AM_ECONFIG);
}
END_TEST

START_TEST(failed_load_leaves_config_untouched)
{
    struct config cfg, before;
    struct am_error err;

    ck_assert_int_eq(load_text("good.yaml", AUTH "server:\n  workers: 9\n",
                               &cfg, &err, NULL), 0);
    before = cfg;
    /* fails after workers was already parsed into the working copy */
    ck_assert_int_eq(load_text("bad.yaml", AUTH "server:\n  workers: 3\n"
                               "  threads: 0\n", &cfg, &err, NULL), AM_ECONFIG);
    ck_assert(memcmp(&cfg, &before, sizeof(cfg)) == 0);
    ck_assert_int_eq(load_text("bad2.yaml", "server:\n  workers: 3\n",
                               &cfg, &err, NULL), AM_ECONFIG);
    ck_assert(memcmp(&cfg, &before, sizeof(cfg)) == 0);
}
END_TEST

START_TEST(success_clears_previous_error)
{
    struct config cfg;
    struct am_error err;

    ck_assert_int_eq(load_text("e1.yaml", "x: 1\n", &cfg, &err, NULL), AM_ECONFIG);
    ck_assert_int_eq(load_text("e2.yaml", AUTH, &cfg, &err, NULL), 0);
    ck_assert_int_eq(err.code, AM_OK);
    ck_assert_str_eq(err.message, "");
    /* err may be NULL */
    ck_assert_int_eq(load_text("e3.yaml", "x: 1\n", &cfg, NULL, NULL), AM_ECONFIG);
}
END_TEST

START_TEST(missing_file_rejected)
{
    struct config cfg;
    struct am_error err;
    char path[PATH_MAX];

    util_snprintf(path, sizeof(path), "%s/does-not-exist.yaml", tmpdir);
    ck_assert_int_eq(config_load(&cfg, path, &err), AM_ECONFIG);
    ck_assert_str_eq(after_path(&err, path), " cannot open: No such file or directory");
    ck_assert_int_eq(config_load(&cfg, "", &err), AM_ECONFIG);
    ck_assert_int_eq(config_load(&cfg, NULL, &err), AM_ECONFIG);
}
END_TEST

START_TEST(directory_rejected)
{
    struct config cfg;
    struct am_error err;

    ck_assert_int_eq(config_load(&cfg, tmpdir, &err), AM_ECONFIG);
    ck_assert_str_eq(after_path(&err, tmpdir), " not a regular file");
}
END_TEST

START_TEST(oversized_file_rejected_before_parsing)
{
    size_t n = 1024 * 1024 + 1;
    char *big = xmalloc(n);
    struct config cfg;
    struct am_error err;
    const char *path;

    memset(big, '#', n);
    path = write_file("big.yaml", big, n);
    free(big);
    ck_assert_int_eq(config_load(&cfg, path, &err), AM_ECONFIG);
    ck_assert_str_eq(after_path(&err, path),
                     " file too large (max 1048576 bytes) (got 1048577 bytes)");
}
END_TEST

START_TEST(provider_names_round_trip)
{
    static const char *const names[PROVIDER_COUNT] = {
        "openai", "anthropic", "groq", "mistral", "cohere", "ollama", "echo"
    };
    struct config cfg;
    struct am_error err;
    char yaml[256];

    for (int i = 0; i < PROVIDER_COUNT; i++) {
        ck_assert_str_eq(config_provider_name(i), names[i]);
        ck_assert_int_eq(config_provider_from_name(names[i]), i);
        /* and the same name is a section of the config file */
        util_snprintf(yaml, sizeof(yaml),
                      AUTH "providers:\n  %s:\n    base_url: http://x/%d\n",
                      names[i], i);
        ck_assert_msg(load_text("prov.yaml", yaml, &cfg, &err, NULL) == 0,
                      "%s: %s", names[i], err.message);
        util_snprintf(yaml, sizeof(yaml), "http://x/%d", i);
        ck_assert_str_eq(cfg.providers[i].base_url, yaml);
    }
    ck_assert_int_eq(config_provider_from_name("azure"), -1);
    ck_assert_int_eq(config_provider_from_name("OpenAI"), -1);
    ck_assert_int_eq(config_provider_from_name(""), -1);
    ck_assert_int_eq(config_provider_from_name(NULL), -1);
    ck_assert_ptr_null(config_provider_name(-1));
    ck_assert_ptr_null(config_provider_name(PROVIDER_COUNT));
}
END_TEST

/* ------------------------------------------------------------------------ */
/* The secret's own file, and who may read the files                        */

/* Write the secret file tmpdir/name with mode; returns its path (static,
 * apart from write_file's). */
static const char *secret_file(const char *name, const char *data, mode_t mode)
{
    static char path[PATH_MAX];

    util_strlcpy(path, write_file(name, data, strlen(data)), sizeof(path));
    ck_assert(chmod(path, mode) == 0);
    return path;
}

/* A config naming file as auth.jwt_secret_file, written mode 0600. */
static int load_with_secret_file(const char *file, struct config *cfg,
                                 struct am_error *err)
{
    char yaml[PATH_MAX + 64];

    ck_assert(util_snprintf(yaml, sizeof(yaml), "auth:\n  jwt_secret_file: %s\n",
                            file) == 0);
    return load_text("sf.yaml", yaml, cfg, err, NULL);
}

/* A replication group: this site first, then the peers in order; URLs
 * lose a trailing slash; the ack policy word; the secret from its file
 * (issue 16). A group secret file open to others is refused. */
START_TEST(replication_group_parsed)
{
    struct config cfg;
    struct am_error err;
    char yaml[PATH_MAX + 512];
    const char *f = secret_file("cluster.secret", SECRET "-cluster\n", 0600);

    ck_assert(util_snprintf(yaml, sizeof(yaml),
                            "auth:\n  jwt_secret: \"" SECRET "\"\n"
                            "replication:\n"
                            "  site: \"10.9.0.1:7001\"\n"
                            "  url: \"http://10.9.0.1:8080/\"\n"
                            "  peers: \"h2.example:7002=https://h2.example, "
                            "10.9.0.3:7003=http://10.9.0.3:8080\"\n"
                            "  ack_policy: ALL\n"
                            "  priority: 0\n"
                            "  secret_file: %s\n", f) == 0);
    ck_assert_msg(load_text("rep.yaml", yaml, &cfg, &err, NULL) == 0, "%s", err.message);
    ck_assert_int_eq(cfg.rep_nsites, 3);
    ck_assert_str_eq(cfg.rep_sites[0].host, "10.9.0.1");
    ck_assert_int_eq(cfg.rep_sites[0].port, 7001);
    ck_assert_str_eq(cfg.rep_sites[0].url, "http://10.9.0.1:8080");
    ck_assert_str_eq(cfg.rep_sites[1].host, "h2.example");
    ck_assert_int_eq(cfg.rep_sites[1].port, 7002);
    ck_assert_str_eq(cfg.rep_sites[1].url, "https://h2.example");
    ck_assert_str_eq(cfg.rep_sites[2].url, "http://10.9.0.3:8080");
    ck_assert_int_eq(cfg.rep_ack, CFG_ACK_ALL);
    ck_assert_int_eq(cfg.rep_priority, 0);
    ck_assert_str_eq(cfg.rep_secret, SECRET "-cluster");
    f = secret_file("cluster.secret", SECRET "-cluster\n", 0640);
    ck_assert(load_text("rep.yaml", yaml, &cfg, &err, NULL) == AM_ECONFIG);
    ck_assert_msg(strstr(err.message, "replication.secret_file: group or others") != NULL,
                  "%s", err.message);
    /* no site: no group */
    ck_assert(load_text("norep.yaml", "auth:\n  jwt_secret: \"" SECRET "\"\n", &cfg, &err,
                        NULL) == 0);
    ck_assert_int_eq(cfg.rep_nsites, 0);
}
END_TEST

START_TEST(secret_read_from_its_file)
{
    struct config cfg;
    struct am_error err;
    const char *f = secret_file("jwt.secret", SECRET "\n", 0600);

    ck_assert_msg(load_with_secret_file(f, &cfg, &err) == 0, "%s", err.message);
    ck_assert_str_eq(cfg.jwt_secret, SECRET);      /* the newline dropped */
    ck_assert_str_eq(cfg.jwt_secret_file, f);
    f = secret_file("jwt.secret", SECRET, 0400);    /* no newline, read-only */
    ck_assert_msg(load_with_secret_file(f, &cfg, &err) == 0, "%s", err.message);
    ck_assert_str_eq(cfg.jwt_secret, SECRET);
}
END_TEST

START_TEST(secret_file_open_to_others_refused)
{
    static const mode_t modes[] = { 0640, 0604, 0620, 0602, 0660 };
    struct config cfg;
    struct am_error err;

    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        const char *f = secret_file("open.secret", SECRET, modes[i]);

        ck_assert_int_eq(load_with_secret_file(f, &cfg, &err), AM_ECONFIG);
        ck_assert_msg(strstr(err.message, f) != NULL && strstr(err.message, "chmod 600") &&
                      strstr(err.message, "group or others"), "%s", err.message);
        ck_assert_ptr_null(strstr(err.message, SECRET));
    }
}
END_TEST

START_TEST(secret_file_short_empty_or_missing_refused)
{
    struct config cfg;
    struct am_error err;
    const char *f = secret_file("short.secret", "0123456789abcdef0123456789abcde\n", 0600);

    ck_assert_int_eq(load_with_secret_file(f, &cfg, &err), AM_ECONFIG);
    ck_assert_msg(strstr(err.message, "(got 31 bytes)") && strstr(err.message, f),
                  "%s", err.message);
    f = secret_file("empty.secret", "", 0600);
    ck_assert_int_eq(load_with_secret_file(f, &cfg, &err), AM_ECONFIG);
    f = secret_file("two-lines.secret", SECRET "\n" SECRET "\n", 0600);
    ck_assert_int_eq(load_with_secret_file(f, &cfg, &err), AM_ECONFIG);
    ck_assert_int_eq(load_with_secret_file("\"\"", &cfg, &err), AM_ECONFIG);
    ck_assert_msg(strstr(err.message, "auth.jwt_secret_file: must not be empty") != NULL,
                  "%s", err.message);
    ck_assert_int_eq(load_with_secret_file("/nonexistent/jwt.secret", &cfg, &err), AM_ECONFIG);
    ck_assert_msg(strstr(err.message, "/nonexistent/jwt.secret: No such file") != NULL,
                  "%s", err.message);
}
END_TEST

START_TEST(secret_inline_and_file_both_refused)
{
    struct config cfg;
    struct am_error err;
    const char *path;

    ck_assert_int_eq(load_text("both.yaml", AUTH "  jwt_secret_file: /x/jwt.secret\n",
                               &cfg, &err, &path), AM_ECONFIG);
    ck_assert_str_eq(after_path(&err, path), "3:20: auth.jwt_secret_file: set together "
                     "with auth.jwt_secret; keep one of them");
}
END_TEST

/* Readable by others: refused while it holds a secret inline, else fine. */
START_TEST(config_readable_by_others_with_inline_secret_refused)
{
    struct config cfg;
    struct am_error err;
    const char *f = secret_file("jwt.secret", SECRET, 0600);
    const char *path = write_file("world.yaml", AUTH, strlen(AUTH));
    char yaml[PATH_MAX + 128];

    ck_assert(chmod(path, 0644) == 0);
    ck_assert_int_eq(config_load(&cfg, path, &err), AM_ECONFIG);
    ck_assert_msg(strstr(err.message, "holds a secret (auth.jwt_secret) and is readable by "
                         "others (mode 0644)") != NULL, "%s", err.message);
    ck_assert(chmod(path, 0640) == 0);              /* root:astromesh 0640 */
    ck_assert_msg(config_load(&cfg, path, &err) == 0, "%s", err.message);
    /* a provider key inline counts too; an empty one does not */
    ck_assert(util_snprintf(yaml, sizeof(yaml), "auth:\n  jwt_secret_file: %s\n"
                            "providers:\n  groq:\n    api_key: \"\"\n", f) == 0);
    path = write_file("world2.yaml", yaml, strlen(yaml));
    ck_assert(chmod(path, 0644) == 0);
    ck_assert_msg(config_load(&cfg, path, &err) == 0, "%s", err.message);
    ck_assert(util_snprintf(yaml, sizeof(yaml), "auth:\n  jwt_secret_file: %s\n"
                            "providers:\n  groq:\n    api_key: gsk-abc\n", f) == 0);
    path = write_file("world3.yaml", yaml, strlen(yaml));
    ck_assert(chmod(path, 0604) == 0);
    ck_assert_int_eq(config_load(&cfg, path, &err), AM_ECONFIG);
    ck_assert_msg(strstr(err.message, "(providers.groq.api_key)") != NULL &&
                  strstr(err.message, "gsk-abc") == NULL, "%s", err.message);
}
END_TEST

/* The table -K prints (and the man page is generated from). */
START_TEST(key_info_walks_the_whole_table)
{
    struct config_key_info k;
    size_t n = 0, secrets = 0, files = 0;

    for (; config_key_info(n, &k) == 0; n++) {
        ck_assert(k.path && k.type && k.def && k.min <= k.max);
        secrets += (size_t)k.secret;
        files += strcmp(k.path, "auth.jwt_secret_file") == 0;
    }
    ck_assert_uint_gt(n, 40);
    ck_assert_uint_eq(secrets, 2 + PROVIDER_COUNT);  /* jwt_secret, metrics.token, each api_key */
    ck_assert_uint_eq(files, 1);
    ck_assert_int_eq(config_key_info(n, &k), -1);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* The shipped etc/astromesh-cloud.yaml                                     */

static char *shipped_text(size_t *len)
{
    char path[PATH_MAX];

    ck_assert(util_snprintf(path, sizeof(path), "%s/etc/astromesh-cloud.yaml",
                            srcdir()) == 0);
    return read_file(path, len);
}

START_TEST(shipped_config_fails_only_for_missing_secret)
{
    char path[PATH_MAX];
    struct config cfg;
    struct am_error err;

    util_snprintf(path, sizeof(path), "%s/etc/astromesh-cloud.yaml", srcdir());
    ck_assert_int_eq(config_load(&cfg, path, &err), AM_ECONFIG);
    if (strlen(err.message) + 1 < sizeof(err.message))   /* not cut by long paths */
        ck_assert_str_eq(after_path(&err, path), NO_FILE_MSG);
    else
        ck_assert(strncmp(after_path(&err, path), NO_FILE_START, strlen(NO_FILE_START)) == 0);
}
END_TEST

/* What the install step does: append the secret under the last section. */
START_TEST(shipped_config_with_secret_appended_loads_defaults)
{
    size_t len;
    char *text = shipped_text(&len);
    static const char line[] = "  jwt_secret: \"" SECRET "\"\n";
    char *full = xmalloc(len + sizeof(line));
    struct config cfg, def;
    struct am_error err;
    const char *path;

    memcpy(full, text, len);
    memcpy(full + len, line, sizeof(line));
    path = write_file("shipped.yaml", full, strlen(full));
    free(text);
    free(full);
    ck_assert_msg(config_load(&cfg, path, &err) == 0, "%s", err.message);
    ck_assert_str_eq(cfg.jwt_secret, SECRET);
    ck_assert_int_eq(cfg.dev_login, 0);
    /* The file documents the defaults, so it must load as exactly them. */
    config_defaults(&def);
    util_strlcpy(def.path, cfg.path, sizeof(def.path));
    util_strlcpy(def.jwt_secret, SECRET, sizeof(def.jwt_secret));
    ck_assert_msg(memcmp(&cfg, &def, sizeof(cfg)) == 0,
                  "shipped config differs from the built-in defaults");
}
END_TEST

/* The installed style: the config names no secret, and its file holds it. */
START_TEST(shipped_config_with_secret_file_loads)
{
    size_t len;
    char *text = shipped_text(&len);
    char line[PATH_MAX + 64];
    char *full;
    struct config cfg;
    struct am_error err;
    const char *path;

    ck_assert(util_snprintf(line, sizeof(line), "  jwt_secret_file: %s\n",
                            secret_file("jwt.secret", SECRET "\n", 0600)) == 0);
    full = xmalloc(len + strlen(line) + 1);
    memcpy(full, text, len);
    memcpy(full + len, line, strlen(line) + 1);     /* under auth, the last section */
    path = write_file("shipped-file.yaml", full, strlen(full));
    free(text);
    free(full);
    ck_assert(chmod(path, 0644) == 0);              /* no secret in it: may be 0644 */
    ck_assert_msg(config_load(&cfg, path, &err) == 0, "%s", err.message);
    ck_assert_str_eq(cfg.jwt_secret, SECRET);
}
END_TEST

/*
 * Is dotted key `dotted` written, uncommented, in text? Each segment must
 * be a line "<2*depth spaces>seg:" inside the block of the previous one.
 */
static int text_has_key(const char *text, const char *dotted)
{
    const char *from = text, *end = text + strlen(text);
    char seg[64];
    int depth = 0;

    while (*dotted) {
        const char *dot = strchr(dotted, '.');
        size_t n = dot ? (size_t)(dot - dotted) : strlen(dotted);
        const char *line = from, *hit = NULL;

        if (n >= sizeof(seg))
            return 0;
        memcpy(seg, dotted, n);
        seg[n] = '\0';
        for (; line < end; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : end) {
            int indent = 0;
            while (line[indent] == ' ')
                indent++;
            if (line[indent] == '#' || line[indent] == '\n')
                continue;
            if (line != from && indent < 2 * depth)
                break;                      /* left the parent's block */
            if (indent == 2 * depth && strncmp(line + indent, seg, n) == 0 &&
                line[indent + n] == ':') {
                hit = line;
                break;
            }
        }
        if (hit == NULL)
            return 0;
        from = strchr(hit, '\n') ? strchr(hit, '\n') + 1 : end;
        dotted += n + (dot ? 1 : 0);
        depth++;
    }
    return 1;
}

START_TEST(shipped_config_lists_every_key_with_its_default)
{
    static const char *const keys[] = {
        "server.socket", "server.socket_mode", "server.workers",
        "server.threads", "server.pid_file", "server.shutdown_timeout_ms",
        "storage.data_dir", "storage.cache_mb", "storage.sync",
        "auth.dev_login", "auth.access_ttl", "auth.refresh_ttl",
        "limits.max_agents", "limits.requests_per_day", "limits.max_members",
        "limits.max_streams", "registry.capacity", "registry.slot_kb",
        "log.level",
    };
    static const char *const fields[] = { "base_url", "api_key", "timeout_ms" };
    char *text = shipped_text(NULL);
    char key[96];

    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        ck_assert_msg(text_has_key(text, keys[i]), "shipped config lacks %s",
                      keys[i]);
    for (int p = 0; p < PROVIDER_COUNT; p++) {
        for (size_t f = 0; f < 3; f++) {
            util_snprintf(key, sizeof(key), "providers.%s.%s",
                          config_provider_name(p), fields[f]);
            ck_assert_msg(text_has_key(text, key), "shipped config lacks %s", key);
        }
    }
    /* the secret is shipped commented out, and dev login is off */
    ck_assert(!text_has_key(text, "auth.jwt_secret"));
    ck_assert_ptr_nonnull(strstr(text, "generated at install"));
    ck_assert_ptr_nonnull(strstr(text, "dev_login: false"));
    free(text);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Robustness: the corpus, truncations and byte mutations                   */

static int yaml_name(const struct dirent *d)
{
    size_t n = strlen(d->d_name);
    return n > 5 && strcmp(d->d_name + n - 5, ".yaml") == 0;
}

/*
 * Each corpus file must be refused with AM_ECONFIG and a message naming the
 * file. If its first line is "# expect: TEXT", the message must contain TEXT.
 */
START_TEST(corpus_files_rejected_cleanly)
{
    char dir[PATH_MAX], path[PATH_MAX * 2];
    struct dirent **list = NULL;
    struct config cfg;
    struct am_error err;
    int n;

    util_snprintf(dir, sizeof(dir), "%s/tests/corpus/config", srcdir());
    n = scandir(dir, &list, yaml_name, alphasort);
    ck_assert_msg(n >= 20, "corpus %s: %d files (%s)", dir, n,
                  n < 0 ? strerror(errno) : "too few");
    for (int i = 0; i < n; i++) {
        char *text, *expect, *nl;
        int rc;

        util_snprintf(path, sizeof(path), "%s/%s", dir, list[i]->d_name);
        rc = config_load(&cfg, path, &err);
        ck_assert_msg(rc == AM_ECONFIG, "%s: rc %d (%s)", list[i]->d_name, rc,
                      rc ? err.message : "loaded");
        ck_assert_msg(strncmp(err.message, path, strlen(path)) == 0 &&
                      strlen(err.message) > strlen(path) + 2,
                      "%s: bad message %s", list[i]->d_name, err.message);
        text = read_file(path, NULL);
        if (strncmp(text, "# expect: ", 10) == 0) {
            expect = text + 10;
            nl = strchr(expect, '\n');
            if (nl)
                *nl = '\0';
            ck_assert_msg(strstr(err.message, expect) != NULL,
                          "%s:\n  got  %s\n  want ...%s...", list[i]->d_name,
                          err.message, expect);
        }
        free(text);
        free(list[i]);
    }
    free(list);
}
END_TEST

/* A valid file to mutate: every section, flow and block style, quoting. */
static const char fuzz_seed[] =
    "server:\n  socket: \"/run/x.sock\"\n  socket_mode: 0660\n  workers: 4\n"
    "storage: {data_dir: /srv, cache_mb: 8, sync: yes}\n"
    "providers:\n  openai:\n    base_url: 'http://127.0.0.1:1'\n"
    "    timeout_ms: 500\n"
    "log:\n  level: warn\n"
    AUTH "  refresh_ttl: 3600\n";

static void load_must_be_clean(const char *text, size_t len, const char *what)
{
    const char *path = write_file("fuzz.yaml", text, len);
    struct config cfg;
    struct am_error err;
    int rc = config_load(&cfg, path, &err);

    ck_assert_msg(rc == 0 || rc == AM_ECONFIG, "%s: rc %d", what, rc);
    if (rc != 0)
        ck_assert_msg(strncmp(err.message, path, strlen(path)) == 0 &&
                      strlen(err.message) > strlen(path) + 2,
                      "%s: bad message %s", what, err.message);
}

START_TEST(every_truncation_loads_or_fails_cleanly)
{
    struct config cfg;
    struct am_error err;

    ck_assert_msg(load_text("seed.yaml", fuzz_seed, &cfg, &err, NULL) == 0,
                  "%s", err.message);
    for (size_t n = 0; n < sizeof(fuzz_seed) - 1; n++)
        load_must_be_clean(fuzz_seed, n, "truncation");
}
END_TEST

START_TEST(byte_mutations_load_or_fail_cleanly)
{
    static const char bytes[] = ":-{}[],&*!|>'\"%@`#?\t\n \\0\x01\x80\xc3\xff~.\0";
    char buf[sizeof(fuzz_seed)];
    unsigned state = 12345u;

    for (int round = 0; round < 3000; round++) {
        memcpy(buf, fuzz_seed, sizeof(buf));
        for (int k = 0; k < 1 + round % 3; k++) {
            size_t at, b;
            state = state * 1103515245u + 12345u;
            at = (state >> 8) % (sizeof(buf) - 1);
            state = state * 1103515245u + 12345u;
            b = (state >> 8) % (sizeof(bytes) - 1);
            buf[at] = bytes[b];
        }
        load_must_be_clean(buf, sizeof(buf) - 1, "mutation");
    }
}
END_TEST

/* ------------------------------------------------------------------------ */

static Suite *config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc;

    tc = tcase_create("rejections");
    tcase_add_loop_test(tc, rejections, 0,
                        (int)(sizeof(rejects) / sizeof(rejects[0])));
    suite_add_tcase(s, tc);

    tc = tcase_create("loads");
    tcase_add_test(tc, defaults_when_file_sets_only_secret);
    tcase_add_test(tc, replication_group_parsed);
    tcase_add_test(tc, config_defaults_has_no_secret_and_no_path);
    tcase_add_test(tc, every_key_overrides_its_field);
    tcase_add_test(tc, stream_socket_defaults_beside_the_fastcgi_socket);
    tcase_add_test(tc, socket_mode_parsed_as_octal);
    tcase_add_test(tc, bool_words_accepted);
    tcase_add_test(tc, log_level_words_map_to_enum);
    tcase_add_test(tc, range_bounds_are_inclusive);
    tcase_add_test(tc, quoted_and_signed_integers_accepted);
    tcase_add_test(tc, null_values_and_empty_sections_accepted);
    tcase_add_test(tc, secret_of_exactly_32_bytes_accepted);
    tcase_add_test(tc, failed_load_leaves_config_untouched);
    tcase_add_test(tc, success_clears_previous_error);
    tcase_add_test(tc, missing_file_rejected);
    tcase_add_test(tc, directory_rejected);
    tcase_add_test(tc, oversized_file_rejected_before_parsing);
    tcase_add_test(tc, provider_names_round_trip);
    tcase_add_test(tc, secret_read_from_its_file);
    tcase_add_test(tc, secret_file_open_to_others_refused);
    tcase_add_test(tc, secret_file_short_empty_or_missing_refused);
    tcase_add_test(tc, secret_inline_and_file_both_refused);
    tcase_add_test(tc, config_readable_by_others_with_inline_secret_refused);
    tcase_add_test(tc, key_info_walks_the_whole_table);
    suite_add_tcase(s, tc);

    tc = tcase_create("shipped");
    tcase_add_test(tc, shipped_config_fails_only_for_missing_secret);
    tcase_add_test(tc, shipped_config_with_secret_appended_loads_defaults);
    tcase_add_test(tc, shipped_config_with_secret_file_loads);
    tcase_add_test(tc, shipped_config_lists_every_key_with_its_default);
    suite_add_tcase(s, tc);

    tc = tcase_create("robustness");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, corpus_files_rejected_cleanly);
    tcase_add_test(tc, every_truncation_loads_or_fails_cleanly);
    tcase_add_test(tc, byte_mutations_load_or_fail_cleanly);
    suite_add_tcase(s, tc);
    return s;
}

static int rm_entry(const char *path, const struct stat *st, int flag,
                    struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int main(void)
{
    SRunner *sr;
    int failed;
    const char *base = getenv("TMPDIR");

    if (util_snprintf(tmpdir, sizeof(tmpdir), "%s/check_config.XXXXXX",
                      base && *base ? base : "/tmp") != 0 ||
        mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    sr = srunner_create(config_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    nftw(tmpdir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    return failed == 0 ? 0 : 1;
}
