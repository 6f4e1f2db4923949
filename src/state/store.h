/*
 * store.h - the Berkeley DB environment and every database in it.
 *
 * The store is a small transactional key/value layer: the databases are
 * B-trees of opaque keys and values (the modules above keep JSON records in
 * them). This is the only module that includes db.h. It never logs: errors
 * come back as AM_* codes with a message in struct am_error.
 *
 * Transactions go through store_transact(), which begins a transaction,
 * runs the caller's function, commits (or aborts on any error) and retries
 * the whole function when Berkeley DB picks it as a deadlock victim.
 */
#ifndef AM_STORE_H
#define AM_STORE_H

#include <stddef.h>
#include <stdint.h>
#include "lib/error.h"

/* The usage counters are spread over this many databases (usage.db,
 * usage-1.db, ...): Berkeley DB locks B-tree pages, so counters that every
 * run updates would otherwise queue on one page. */
#define STORE_USAGE_SHARDS 4

/* The databases of the environment; each is one B-tree file. */
enum store_db {
    STORE_USERS = 0,   /* email -> user JSON */
    STORE_ORGS,        /* slug -> org JSON */
    STORE_MEMBERS,     /* slug \0 email -> membership JSON */
    STORE_AGENTS,      /* slug \0 name -> agent record JSON */
    STORE_COMPILED,    /* slug \0 name -> compiled runtime YAML and what it was built from */
    STORE_TOKENS,      /* token id -> revocation / refresh family JSON */
    STORE_SESSIONS,    /* org__agent \0 r|t \0 session -> conversation JSON */
    STORE_USAGE,       /* the first of STORE_USAGE_SHARDS databases, each
                          org \0 date \0 agent -> {"r":requests,"t":tokens} */
    STORE_RUNLOG = STORE_USAGE + STORE_USAGE_SHARDS,  /* trace id -> run record JSON */
    STORE_INVITES,     /* pending invitations (account.c owns the format) */
    STORE_APIKEYS,     /* API keys, by keyed hash and by org (apikey.c owns the format) */
    STORE_PROVIDER_KEYS, /* org provider keys, sealed (vault.c owns the format) */
    STORE_VERSIONS,    /* slug \0 name \0 <n, 10 digits> -> an agent version (versions.c owns the format) */
    STORE_SESSION_IDX, /* the sessions' last use, sizes and counts (memory.c owns the format) */
    STORE_META,        /* the change sequences of a group (store.c owns them; see
                          store_change_seq) */
    STORE_DB_COUNT
};

enum store_open_flags {
    STORE_OPEN_CREATE = 1 << 0,  /* create the environment and run recovery (supervisor) */
    STORE_OPEN_ENV_ONLY = 1 << 1,/* the environment, no database (store_open_databases) */
};

enum store_get_flags {
    STORE_RMW = 1 << 0,          /* take the write lock now (read-modify-write) */
};

struct store;
struct store_txn;

/* A replication group (see store_rep_start): the sites, this one first. */
#define STORE_REP_SITES_MAX 8
enum store_ack { STORE_ACK_QUORUM, STORE_ACK_ALL, STORE_ACK_ONE, STORE_ACK_NONE,
                 STORE_ACK_ALL_AVAILABLE };

struct store_rep_options {
    int nsites;                     /* sites[0] is this one */
    struct { const char *host; int port; } sites[STORE_REP_SITES_MAX];
    int priority;                   /* election priority; 0: never master */
    int ack_policy;                 /* enum store_ack */
    int ack_timeout_ms;             /* a commit waits this long for acknowledgements */
    int election_timeout_ms;
};

struct store_options {
    const char *home;        /* environment directory (must exist) */
    int cache_mb;            /* cache size */
    int sync;                /* 1 = fsync at commit; 0 = write, no fsync */
    int max_threads;         /* threads of control that may use the env at once */
    int flush_ms;            /* > 0 (with sync): a thread puts deferred commits on
                                disk at most this long after they were written */
    const struct store_rep_options *rep;   /* NULL: one host; else the group (the
                                environment is opened with replication on) */
};

/* Open the environment and every database. With STORE_OPEN_CREATE the
 * environment is created if missing and recovered (only one process may
 * do that, before any other opens it). Returns 0 or AM_EIO. */
int store_open(struct store **out, const struct store_options *opt, int flags,
               struct am_error *err);

/* With opt->rep, the databases exist only once this host has been master
 * or has caught up with one: store_open then answers AM_ENOENT while
 * they are missing (nothing is created on a replica), with the environment
 * closed again; call it again later. */

/* Open the databases after STORE_OPEN_ENV_ONLY (those not open yet).
 * Returns 0, AM_ENOENT (a replica that has not caught up) or AM_EIO. */
int store_open_databases(struct store *s, struct am_error *err);

/* Close every database handle and open them again: after replication made
 * them unusable (store_handles_dead). Only where no other thread uses the
 * store. Returns as store_open_databases. */
int store_reopen_databases(struct store *s, struct am_error *err);

/* Change sequences. In a group, every transaction that writes to the
 * databases the registry is built from (agents, compiled) advances
 * STORE_SEQ_REGISTRY, and every one that writes to what authorisation
 * memoises (users, orgs, members, tokens, API keys) STORE_SEQ_AUTH, in
 * STORE_META: a replica sees with one read that its registry or its
 * memos may be stale. *seq gets the sequence (0 if never advanced).
 * Returns 0 or an AM_* code. */
enum store_seq { STORE_SEQ_REGISTRY, STORE_SEQ_AUTH };
int store_change_seq(struct store *s, int which, uint64_t *seq);

/* Close every handle. NULL is fine. */
void store_close(struct store *s);

/* Release the locks and abort the transactions of processes that died
 * (DB_ENV->failchk). Returns 0, or AM_EIO when the environment must be
 * recovered (every process has to close it and the supervisor reopen it
 * with STORE_OPEN_CREATE). */
int store_failchk(struct store *s, struct am_error *err);

/* Write a checkpoint (keeps recovery short), then remove the log files it
 * made unnecessary, unless a hot backup (db5.3_hotbackup) is copying the
 * environment: then every log file is kept. Returns 0 or AM_EIO. */
int store_checkpoint(struct store *s);

/* Cheap health check: 0 when the environment answers, AM_EIO if not. */
int store_ping(struct store *s);

/* The environment's figures since it was created (all processes). */
struct store_stats {
    uint64_t cache_hit;         /* pages found in the cache */
    uint64_t cache_miss;        /* pages read into the cache */
    uint64_t deadlocks;         /* deadlocks the detector broke */
    uint64_t lock_timeouts;     /* lock requests that timed out */
};

/* Read them (memp_stat, lock_stat) into *out. Returns 0 or AM_EIO (then
 * *out is zero). */
int store_stats(struct store *s, struct store_stats *out);

/* Run fn inside a transaction. fn returns 0 to commit, a negative AM_*
 * code to abort (returned to the caller). AM_EDEADLOCK from fn makes the
 * whole function run again (bounded). fn must therefore be re-runnable:
 * it must not keep side effects of a failed attempt. */
typedef int (*store_txn_fn)(struct store *s, struct store_txn *t, void *arg);
int store_transact(struct store *s, store_txn_fn fn, void *arg);

/* store_transact for what a run leaves behind (its memory turn, its count,
 * its log line), which the client does not wait to be on disk: with
 * opt->flush_ms > 0 the commit is written to the log file (so it outlives
 * the death of any process) and the flusher thread fsyncs it within
 * flush_ms; a power failure can lose that last interval, never corrupt.
 * With flush_ms == 0 it is store_transact. */
int store_transact_deferred(struct store *s, store_txn_fn fn, void *arg);

/* Read key from db. With t == NULL the read is outside any transaction
 * (read-committed). On 0, *val is a malloc'd copy with a NUL appended
 * (caller frees) and *vlen its length without the NUL; vlen may be NULL.
 * Returns 0, AM_ENOENT, AM_EDEADLOCK or AM_EIO. */
int store_get(struct store *s, struct store_txn *t, int db, const void *key,
              size_t klen, int flags, char **val, size_t *vlen);

/* Write key -> val. Returns 0, AM_EDEADLOCK or AM_EIO. */
int store_put(struct store *s, struct store_txn *t, int db, const void *key,
              size_t klen, const void *val, size_t vlen);

/* Delete key. Returns 0, AM_ENOENT, AM_EDEADLOCK or AM_EIO. */
int store_del(struct store *s, struct store_txn *t, int db, const void *key,
              size_t klen);

/* Delete every record whose key starts with prefix. Returns 0,
 * AM_EDEADLOCK or AM_EIO. */
int store_del_prefix(struct store *s, struct store_txn *t, int db, const void *prefix,
                     size_t plen);

/* Call fn for every record whose key starts with prefix, in key order.
 * fn returns 0 to go on, 1 to stop, negative to stop with that error.
 * Returns 0 or the error. */
typedef int (*store_scan_fn)(const char *key, size_t klen, const char *val,
                             size_t vlen, void *arg);
int store_scan(struct store *s, struct store_txn *t, int db, const void *prefix,
               size_t plen, store_scan_fn fn, void *arg);

/* ---- replication (with opt->rep) ------------------------------------------ */

/* Start the Replication Manager in this process (the replication process:
 * one per host; it must not fork afterwards): this site, the others, the
 * acknowledgement policy and timeouts from opt->rep, then an election.
 * Berkeley DB's own threads do the rest. Events are counted in the store
 * (store_rep_status). Returns 0 or AM_EIO. */
int store_rep_start(struct store *s, struct am_error *err);

enum store_role { STORE_ROLE_NONE, STORE_ROLE_MASTER, STORE_ROLE_REPLICA };

struct store_rep_status {
    int role;                   /* enum store_role; NONE: no group, or not yet started */
    char master[80];            /* the master's "host:port", "" if none is known */
    uint64_t elections;         /* elections this site took part in (environment) */
    uint64_t lag_bytes;         /* replica: log bytes it knows it has not applied */
    uint64_t not_acked;         /* commits too few sites acknowledged (environment) */
    int startup_done;           /* replica: has caught up with a master once */
};

/* What the environment's replication state says now (shared memory; any
 * process of the host may ask). Returns 0 or AM_EIO. */
int store_rep_status(struct store *s, struct store_rep_status *out);

/* Is this host the master now? 1 or 0 (0 without a group: then every
 * process writes, as before, and callers do not ask). */
int store_rep_is_master(struct store *s);

/* Commit tokens. Every commit this thread makes with a group configured
 * leaves its token; store_token_take copies the last one as hex into out
 * (STORE_TOKEN_HEX bytes) and forgets it. Returns 1 if there was one. */
#define STORE_TOKEN_HEX 49
int store_token_take(char *out);

/* Wait at most timeout_ms until the commit of token (hex, from
 * store_token_take on any host of the group) has been applied here.
 * Returns 0 (applied, or will never be: rolled back by a failover),
 * AM_EBADREQ (not a token) or AM_EUNAVAILABLE (not yet). */
int store_wait_applied(struct store *s, const char *hex, int timeout_ms);

/* Did replication make this process's database handles unusable (a
 * replica that was re-initialised from the master, or rolled back)? Then
 * every call fails with AM_EUNAVAILABLE until the process reopens the
 * store: a worker exits and is replaced. */
int store_handles_dead(struct store *s);

/* Runnable invariants (lib/invariant.h): every handle open, no transaction
 * of this handle open, group commit's marks in order (store.c, 5-6); on a
 * violation, log it and abort(). Only where no other thread of this
 * process is inside a store call. */
void store_check_invariants(struct store *s);

/* Test hook: make the Nth following write (put/del) fail with AM_EIO
 * (0 = off). Used by fault-injection tests; process-wide. */
void store_test_fail_write_after(int n);

#endif
