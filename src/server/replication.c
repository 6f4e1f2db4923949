/*
 * replication.c - the replication process of a host in a group.
 *
 * Owns: the Replication Manager of this host (started once in this process,
 * which never forks), the log lines of the host's role changes, and the
 * followers: on a replica, every FOLLOW_MS it reads the change sequences
 * (store_change_seq): when the registry's moved, it reconciles the
 * registry with the store, so a deploy, pause or rollback made at the
 * master is served here within about FOLLOW_MS plus the replication delay;
 * when authorisation's moved, it bumps the host's authorisation epoch, so
 * no worker goes on trusting a memo of a deleted key or a removed member.
 * It also reconciles once when this host becomes master or first catches
 * up.
 *
 * Must never: write to the store (a replica cannot; the master's workers
 * do); fork; serve a request.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>
#include "control/agent.h"
#include "control/auth_state.h"
#include "state/app.h"
#include "state/cluster.h"
#include "state/config.h"
#include "state/quota.h"
#include "state/store.h"
#include "lib/util.h"
#include "server/replication.h"
#include "server/worker.h"

#define FOLLOW_MS 50

const struct store_rep_options *replication_options(const struct config *cfg)
{
    static struct store_rep_options o;
    int i;

    if (cfg->rep_nsites == 0)
        return NULL;
    memset(&o, 0, sizeof(o));
    o.nsites = cfg->rep_nsites;
    for (i = 0; i < cfg->rep_nsites && i < STORE_REP_SITES_MAX; i++) {
        o.sites[i].host = cfg->rep_sites[i].host;
        o.sites[i].port = cfg->rep_sites[i].port;
    }
    o.priority = cfg->rep_priority;
    o.ack_policy = cfg->rep_ack;       /* enum config_ack matches enum store_ack */
    o.ack_timeout_ms = cfg->rep_ack_timeout_ms;
    o.election_timeout_ms = cfg->rep_election_timeout_ms;
    return &o;
}

static const char *role_name(int role)
{
    return role == STORE_ROLE_MASTER ? "master" : role == STORE_ROLE_REPLICA ? "replica"
                                                                              : "none";
}

/* The index in cfg->rep_sites of "host:port", -1 if none is. */
static int site_index(const struct config *cfg, const char *addr)
{
    char site[80];
    int i;

    for (i = 0; addr[0] != '\0' && i < cfg->rep_nsites; i++) {
        snprintf(site, sizeof(site), "%s:%d", cfg->rep_sites[i].host, cfg->rep_sites[i].port);
        if (strcmp(site, addr) == 0)
            return i;
    }
    return -1;
}

/* Rebuild what the registry serves from the store; logs what it did. */
static void follow_reconcile(struct app *app, const char *why)
{
    struct am_error err;
    int n;

    error_clear(&err);
    n = agent_reconcile(app, &err);
    if (n < 0)
        log_error("replication: %s: %s", why, err.message);
    else if (n > 0)
        log_info("replication: %s: registry updated (%d entries)", why, n);
}

void replication_run(const struct app *shared)
{
    const struct config *cfg = shared->cfg;
    struct store_options so = { cfg->data_dir, cfg->db_cache_mb, cfg->db_sync, 64, 0,
                                replication_options(cfg) };
    struct store_rep_status st, last;
    struct app app = *shared;
    struct am_error err;
    struct timespec tick = { 0, FOLLOW_MS * 1000000L };
    sigset_t stopset;
    uint64_t seq = 0, seen = 0, auth_seen = 0;
    int have_dbs = 0, sig, reconcile = 1;
    pid_t parent = getppid();

    app.store = NULL;
    log_set_ident("astromesh-cloudd/replication");
    worker_child_signals(&stopset);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    prctl(PR_SET_NAME, "am-replication");
    if (getppid() != parent || so.rep == NULL)
        _exit(1);
    error_clear(&err);
    if (store_open(&app.store, &so, STORE_OPEN_ENV_ONLY, &err) != 0 ||
        store_rep_start(app.store, &err) != 0) {
        log_error("%s", err.message);
        _exit(1);
    }
    log_info("replication: site %s:%d started, %d sites in the group, acknowledgements: %s",
             cfg->rep_sites[0].host, cfg->rep_sites[0].port, cfg->rep_nsites,
             cfg->rep_ack_policy);
    memset(&last, 0, sizeof(last));
    for (;;) {
        sig = sigtimedwait(&stopset, NULL, &tick);
        if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP)
            break;
        if (have_dbs && store_handles_dead(app.store)) {
            log_info("replication: this host's copy was rolled back or replaced from the "
                     "master; reopening the databases");
            have_dbs = 0;
            error_clear(&err);
            if (store_reopen_databases(app.store, &err) == 0)
                have_dbs = 1;
            reconcile = 1;
        }
        if (store_rep_status(app.store, &st) != 0)
            continue;
        if (st.role != last.role || strcmp(st.master, last.master) != 0) {
            log_info("replication: this host is %s; master %s", role_name(st.role),
                     st.master[0] ? st.master : "(none)");
            cluster_set_master(app.cluster, site_index(cfg, st.master));
            /* Only the master counts the daily quota. A host that becomes
             * master (again, the same day) may hold counts of an earlier
             * term while another master counted: forget them all, so each
             * org's next run loads its count from the store. */
            if (st.role != last.role && st.role == STORE_ROLE_MASTER) {
                quota_invalidate(app.quota);
                if (app.test_quota != NULL)
                    quota_invalidate(app.test_quota);
            }
            reconcile = 1;
        }
        last = st;
        if (!have_dbs) {
            error_clear(&err);
            if (store_open_databases(app.store, &err) != 0)
                continue;       /* a replica that has not caught up yet */
            have_dbs = 1;
            reconcile = 1;
        }
        if (st.role == STORE_ROLE_REPLICA && store_change_seq(app.store, STORE_SEQ_REGISTRY,
                                                              &seq) == 0 && seq != seen) {
            seen = seq;
            reconcile = 1;
        }
        /* a key deleted, a member removed, a token revoked at the master:
         * this host's workers must not go on trusting what they memoised */
        if (st.role == STORE_ROLE_REPLICA && store_change_seq(app.store, STORE_SEQ_AUTH,
                                                              &seq) == 0 && seq != auth_seen) {
            auth_seen = seq;
            auth_state_bump(app.auth);
        }
        if (reconcile && st.role != STORE_ROLE_NONE) {
            follow_reconcile(&app, st.role == STORE_ROLE_MASTER ? "became master"
                                                                 : "following the master");
            reconcile = 0;
        }
    }
    cluster_set_master(app.cluster, -1);
    store_close(app.store);
    _exit(0);
}
