/*
 * replication.h - the host's place in a replication group: the store
 * options of the group, and the replication process.
 *
 * With replication.site set, one process per host (spawned and restarted by
 * the supervisor, like the stream process) runs Berkeley DB's Replication
 * Manager: its listening socket, its threads, the elections. Berkeley DB
 * does not support a process running the Replication Manager forking
 * children, so it is not the supervisor itself. Workers open the same
 * environment; their commits at the master reach the replicas through
 * Berkeley DB's own connections. On a replica the process also keeps the
 * host's registry following the replicated store.
 */
#ifndef AM_REPLICATION_H
#define AM_REPLICATION_H

struct app;
struct config;
struct store_rep_options;

/* The group of cfg as store options (this process's static copy, pointing
 * into cfg), or NULL when no group is configured. */
const struct store_rep_options *replication_options(const struct config *cfg);

/* The replication process. Never returns: exits 0 on SIGTERM, non-zero
 * when it cannot go on (the supervisor restarts it). */
void replication_run(const struct app *shared) __attribute__((noreturn));

#endif
