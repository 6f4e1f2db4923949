/*
 * cluster.h - a replica asking the group's master to do what only the
 * master may: the accounting of a run that executes on the replica (its
 * quota take, its in-flight mark, its settle, its memory turn).
 *
 * A call is one JSON POST to the master's front server at
 * CLUSTER_ACCOUNTING_PATH with the group's secret; the master's worker does
 * the very same thing it does for its own runs (server/internal.c) and
 * answers {"rc": 0 or an AM_* code, "message": ..., ...}.
 */
#ifndef AM_CLUSTER_H
#define AM_CLUSTER_H

#include <json-c/json.h>
#include "lib/error.h"
#include "state/app.h"

#define CLUSTER_ACCOUNTING_PATH "/api/v1/internal/accounting"
#define CLUSTER_SECRET_HEADER "X-Astromesh-Cluster"

/* Which site of the configuration is the master, as this host's
 * replication process knows it: one int in anonymous shared memory that
 * the supervisor maps before it forks (a worker cannot ask Berkeley DB:
 * its Replication Manager site list is per process, and empty in a
 * process that opened the environment before the sites were set). */
struct cluster;

/* Map it (master: none). Returns 0 or AM_EIO. */
int cluster_create(struct cluster **out, struct am_error *err);
void cluster_close(struct cluster *c);

/* The replication process: the master is rep_sites[site] of the
 * configuration, -1 for none known. */
void cluster_set_master(struct cluster *c, int site);

/* The master's index in cfg->rep_sites, or -1. */
int cluster_master_site(const struct app *app);

/* Is a group configured and this host not its master now? Then the
 * accounting goes to the master through cluster_call. */
int cluster_is_replica(struct app *app);

/* The base URL (front server) of the master this host knows; NULL when it
 * knows none. Points into app->cfg. */
const char *cluster_master_url(struct app *app);

/* Ask the master: POST {"op": op, ...args} (args is taken). On 0, *reply
 * is the master's answer object (caller puts it) and the return value is
 * its "rc" (0 or a negative AM_* code, its "message" in err). AM_ENOMASTER
 * when no master could be asked (*reply NULL). */
int cluster_call(struct app *app, const char *op, struct json_object *args,
                 struct json_object **reply, struct am_error *err);

/* The commit token (hex) of this thread's last call that committed at the
 * master, once: copies it into out (STORE_TOKEN_HEX bytes) and forgets it.
 * Returns 1 if there was one. */
int cluster_token_take(char *out);

#endif
