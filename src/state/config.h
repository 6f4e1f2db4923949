/*
 * config.h - the server configuration: one YAML file, read strictly.
 *
 * The parser is table-driven (one row per key in config.c). An unknown key,
 * a wrong type or an out-of-range value fails the load with
 * "file:line:col: key: problem (got X)". The loader never logs; the caller
 * prints the error.
 */
#ifndef AM_CONFIG_H
#define AM_CONFIG_H

#include "lib/error.h"

/* The providers the model router knows; index into config.providers. */
enum config_provider {
    PROVIDER_OPENAI = 0,
    PROVIDER_ANTHROPIC,
    PROVIDER_GROQ,
    PROVIDER_MISTRAL,
    PROVIDER_COHERE,
    PROVIDER_OLLAMA,
    PROVIDER_ECHO,
    PROVIDER_COUNT
};

struct config_provider_conf {
    char base_url[256];     /* e.g. "https://api.openai.com/v1" */
    char api_key[256];      /* server-wide key; "" = none */
    int timeout_ms;         /* per call */
};

/* Replication Manager acknowledgement policies (replication.ack_policy). */
enum config_ack { CFG_ACK_QUORUM, CFG_ACK_ALL, CFG_ACK_ONE, CFG_ACK_NONE,
                  CFG_ACK_ALL_AVAILABLE };

#define CFG_REP_SITES_MAX 8

/* One site of a replication group: its Replication Manager address and the
 * base URL of its front server (where writes are forwarded). */
struct config_site {
    char host[64];
    int port;
    char url[256];
};

struct config {
    char path[512];         /* the file this was loaded from ("" = defaults) */

    /* server */
    char socket_path[256];  /* FastCGI unix socket the front server connects to */
    int socket_mode;        /* permission bits of the socket, e.g. 0660 */
    int workers;            /* pre-forked worker processes, 1..64 */
    int threads;            /* accept threads per worker, 1..1024 */
    char pid_file[256];     /* "" = none */
    int shutdown_timeout_ms;/* drain deadline on SIGTERM before SIGKILL */
    char stream_socket[256];/* the stream process's unix socket (HTTP/1.1 + WebSocket);
                             * "" in the file: stream.sock beside server.socket */

    /* storage */
    char data_dir[256];     /* Berkeley DB environment home */
    int db_cache_mb;        /* BDB cache size in MiB */
    int db_sync;            /* 1 = fsync on every commit (default), 0 = write-no-sync */
    int db_run_flush_ms;    /* what runs write is fsynced within this (0: before the answer) */

    /* auth */
    char jwt_secret[256];   /* HS256 secret, >= 32 bytes, required: inline, or
                             * read from jwt_secret_file at load */
    char jwt_secret_file[256]; /* mode 0600 file holding the secret, when not inline */
    char master_key_file[256]; /* 32 random bytes, mode 0600: seals org secrets (vault.c) */
    int dev_login;          /* 1 = POST /auth/dev/login enabled */
    int access_ttl;         /* seconds, default 900 */
    int refresh_ttl;        /* seconds, default 604800 */

    /* limits (per org) */
    int max_agents;         /* default 5 */
    int requests_per_day;   /* default 1000 */
    int tests_per_day;      /* `test` calls per org per UTC day, default 1000 */
    int max_members;        /* default 3 */
    int max_streams;        /* default 5 */
    int max_in_flight;      /* runs and tests running at once, default 32 */

    /* agents */
    int max_versions;       /* versions kept per agent besides the live one, default 50 */

    /* memory (conversation sessions; run and test sessions are counted apart) */
    int session_ttl_s;          /* a session unused this long is swept, seconds */
    int max_sessions_per_agent; /* live sessions per agent and mode; the oldest go */
    int max_kb_per_org;         /* stored session bytes per org and mode, KiB; the oldest go */

    /* stream (the WebSocket process) */
    int stream_idle_timeout_ms;  /* a connection with no query for this long is closed */
    int stream_ping_interval_ms; /* a ping is sent after this long without one */
    int stream_max_connections;  /* open connections of the whole daemon (shared slots) */
    int stream_max_queries;      /* queries running at once in the stream process */
    /* registry */
    int registry_capacity;  /* max deployed agents, default 4096 */
    int registry_slot_kb;   /* bytes reserved per agent's compiled YAML, KiB */

    /* providers */
    struct config_provider_conf providers[PROVIDER_COUNT];

    /* tools (server-side settings; agents choose tools, operators choose where they reach) */
    char web_search_url[256];   /* SearxNG-style JSON endpoint; "" = web_search disabled */
    char smtp_url[256];         /* "smtp://host:port"; "" = email_sender disabled */
    char smtp_from[256];        /* default sender address */
    char file_root[256];        /* file_reader's directory; "" = file_reader disabled */
    int tool_http_timeout_ms;   /* default cap for http_request and web_search */
    int tool_http_max_bytes;    /* default response cap */

    /* runtime */
    int breaker_failures;       /* consecutive failures that open a provider's circuit */
    int breaker_cooldown_ms;    /* how long an open circuit skips the provider */

    /* log */
    int log_level;          /* enum log_level */
    int log_requests;       /* 1 = one info line per answered request (default) */

    /* metrics */
    char metrics_token[256];/* Bearer token for GET /api/v1/metrics; "" = loopback only */

    /* replication (a group of hosts; rep_site "" = one host, no group) */
    char rep_site[72];          /* this host's Replication Manager host:port */
    char rep_url[256];          /* this host's front server, as the others reach it */
    char rep_peers[2048];       /* "host:port=url ..." of the other sites */
    int rep_priority;           /* election priority; 0: never master */
    char rep_ack_policy[16];    /* the text; rep_ack is the parsed value */
    int rep_ack_timeout_ms;     /* a commit waits this long for its acknowledgements */
    int rep_election_timeout_ms;
    int rep_read_wait_ms;       /* a read with X-Astromesh-After waits at most this long */
    char rep_secret_file[256];  /* the group's shared secret (0600 file) */
    /* derived at load: */
    char rep_secret[256];       /* read from rep_secret_file */
    int rep_ack;                /* enum config_ack */
    int rep_nsites;             /* 0: no group; else rep_sites[0] is this host */
    struct config_site rep_sites[CFG_REP_SITES_MAX];
};

/* Fill cfg with every default. */
void config_defaults(struct config *cfg);

/* Load path over the defaults. Returns 0 or AM_ECONFIG with err->message
 * "path:line:col: key: problem (got X)". Also checks cross-key rules
 * (jwt_secret present and long enough), reads auth.jwt_secret_file when
 * the secret is not inline, and refuses a secret file readable or writable
 * by group or others, or this file readable by others while it holds an
 * inline secret (auth.jwt_secret, providers.*.api_key). */
int config_load(struct config *cfg, const char *path, struct am_error *err);

/* One row of the key table, for `astromesh-cloudd -K` and the generated
 * astromesh-cloud.yaml(5). Strings are static; nothing to free. */
struct config_key_info {
    const char *path;       /* dotted, e.g. "server.workers" */
    const char *type;       /* string, integer, boolean, mode, loglevel */
    const char *def;        /* the default in the file's text form */
    long long min, max;     /* range; for strings the length in bytes */
    int secret;             /* 1: never echoed, and the file must not be
                             * readable by others when it holds one */
};

/* Row i of the key table into *out. Returns 0, or -1 past the last row. */
int config_key_info(size_t i, struct config_key_info *out);

/* Provider name <-> index. Returns -1 / NULL if unknown. */
int config_provider_from_name(const char *name);
const char *config_provider_name(int provider);

#endif
