/*
 * supervisor.c - astromesh-cloudd's parent process: start-up, the worker
 * pool, crash clean-up, reload and shutdown.
 *
 * Owns: the loaded configuration, the lock file, the registry segment, the
 * metrics segment (mapped before the first fork; a dead process's slot is
 * freed and, if it should have been running, counted as a restart), the
 * FastCGI listening socket, the stream socket, the stream slots, the pid
 * file, the worker pids, the stream process's pid, and the
 * short-lived children that do its Berkeley DB work (recovery, failchk,
 * reconcile, checkpoints and the session sweep; see run_store_task).
 *
 * Must never: serve a request; open the Berkeley DB environment itself (a
 * dead worker can leave a mutex that blocks any call into it for ever);
 * block in a signal handler (there are none: signals are blocked and taken
 * synchronously with sigtimedwait in the main loop).
 *
 * Worker lifecycle (enum worker_state of a struct worker_slot), and the
 * function that performs each transition:
 *
 *   [W_EMPTY] --spawn_worker--> [W_RUNNING]
 *   [W_RUNNING] --reload (SIGHUP): SIGTERM, moved to a retiring slot-->
 *       [W_RETIRING]; its old slot is [W_EMPTY] (SIGKILL instead if no
 *       retiring slot is free)
 *   [W_RUNNING] or [W_RETIRING] --reap, on_worker_exit: if it died
 *       unclean, TASK_AFTER_DEATH (failchk, reconcile, reclaim; on failure
 *       recover_environment); a back-off if it was running--> [W_EMPTY]
 *   any --recover_environment: SIGKILL, waitpid--> [W_EMPTY]
 *
 * The stream process (server/stream.c) is one more slot, kind K_STREAM,
 * with the same lifecycle: spawned, re-forked with the back-off, retired
 * on SIGHUP (it drains: running queries finish, idle connections get
 * 1001), drained on SIGTERM; after its death the stream slots it held are
 * given back (streams_reclaim) besides failchk and the quota reclaim.
 *
 * There is no "dead" state: a slot whose process exited is W_EMPTY again as
 * soon as on_worker_exit has run; spawn_missing re-forks it after its
 * back-off. drain (SIGTERM) signals every worker and leaves the states to
 * reap.
 *
 * Invariants:
 *  1. Recovery (STORE_OPEN_CREATE) runs only while no worker is alive: at
 *     start, holding the lock file, and after every worker was killed.
 *  2. After any worker dies, failchk runs before a replacement is forked,
 *     and the registry is reconciled with the database. If failchk asks
 *     for recovery or stalls, every worker is killed and the environment
 *     recovered before any is forked again.
 *  3. Workers hold the lock file's descriptor too, so a new supervisor
 *     cannot recover the environment while an old worker still runs.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include "control/agent.h"
#include "state/app.h"
#include "control/auth.h"
#include "control/auth_state.h"
#include "state/config.h"
#include "state/metrics.h"
#include "state/quota.h"
#include "state/breakers.h"
#include "state/cluster.h"
#include "runtime/memory.h"
#include "state/registry.h"
#include "state/store.h"
#include "state/streams.h"
#include "server/replication.h"
#include "server/stream.h"
#include "server/supervisor.h"
#include "control/usage.h"
#include "lib/hash.h"
#include "lib/invariant.h"
#include "state/vault.h"
#include "lib/util.h"
#include "server/worker.h"

#define MAX_WORKERS 64
#define CHECKPOINT_EVERY_MS 30000
#define BACKOFF_MAX_MS 30000
#define DIED_YOUNG_MS 2000

enum worker_state { W_EMPTY = 0, W_RUNNING, W_RETIRING };
enum worker_kind { K_FCGI = 0, K_STREAM, K_REPL };

struct worker_slot {
    pid_t pid;
    int state;                 /* enum worker_state */
    int kind;                  /* enum worker_kind */
    uint64_t started_ms;       /* monotonic ms of the fork */
    uint64_t restart_at_ms;    /* monotonic ms before which not to re-fork */
    uint64_t backoff_ms;       /* current back-off for a worker dying young */
};

struct supervisor {
    struct config cfg;                 /* the live configuration */
    const char *config_path;
    int lock_fd;                       /* flock on data_dir/astromesh-cloudd.lock */
    int listen_fd;
    int socket_owned;                  /* we bound it (not socket activation) */
    char listen_path[108];             /* the FastCGI socket actually served */
    int stream_fd;                     /* the stream process's listening socket */
    char shm_name[64];
    struct app app;                    /* cfg, store, reg of this process */
    struct vault *vault;               /* the master key; app.vault borrows it */
    struct worker_slot slots[MAX_WORKERS];
    struct worker_slot stream;         /* the stream process */
    struct worker_slot repl;           /* the replication process (a group only) */
    struct worker_slot retiring[MAX_WORKERS];
    uint64_t last_checkpoint_ms;
    int dead_pid;                      /* TASK_AFTER_DEATH: the worker that died */
};

/* Tell systemd (Type=notify) about state changes, if it is listening. */
static void notify_systemd(const char *msg)
{
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sa;
    socklen_t len;
    int fd;

    if (path == NULL || (path[0] != '/' && path[0] != '@') || strlen(path) >= sizeof(sa.sun_path))
        return;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, strlen(path));
    if (sa.sun_path[0] == '@')
        sa.sun_path[0] = '\0';
    len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path));
    if ((fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0)
        return;
    if (sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa, len) < 0)
        log_debug("sd_notify failed: %s", strerror(errno));
    close(fd);
}

/* A segment name per data directory, so instances side by side differ. */
static void shm_name_for(const char *dir, char *out, size_t cap)
{
    char real[4096];
    const char *p = realpath(dir, real) ? real : dir;
    uint64_t h = hash_fnv1a64(p, strlen(p));

    snprintf(out, cap, "/astromesh-cloud-%016llx", (unsigned long long)h);
}

static int take_lock(struct supervisor *sv)
{
    char path[512];
    int i;

    snprintf(path, sizeof(path), "%s/astromesh-cloudd.lock", sv->cfg.data_dir);
    if ((sv->lock_fd = open(path, O_RDWR | O_CREAT, 0600)) < 0) {
        log_error("cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    /* Workers of a supervisor that was just killed may take a moment to die. */
    for (i = 0; i < 50; i++) {
        if (flock(sv->lock_fd, LOCK_EX | LOCK_NB) == 0)
            return 0;
        usleep(100000);
    }
    log_error("another astromesh-cloudd is using %s", sv->cfg.data_dir);
    return -1;
}

/* Bind and listen on the unix socket path (key: its config key, for the
 * message). Returns the descriptor or -1 (logged). */
static int bind_unix(const char *path, int mode, const char *key)
{
    struct sockaddr_un sa;
    int fd;

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    if (util_strlcpy(sa.sun_path, path, sizeof(sa.sun_path)) >= sizeof(sa.sun_path)) {
        log_error("%s: path too long for a unix socket", key);
        return -1;
    }
    if ((fd = socket(AF_UNIX, SOCK_STREAM, 0)) < 0)
        return -1;
    unlink(path);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        chmod(path, (mode_t)mode) != 0 || listen(fd, 4096) != 0) {
        log_error("cannot listen on %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* The listening sockets: FastCGI from systemd socket activation or bound
 * here; the stream socket always bound here. */
static int open_listener(struct supervisor *sv)
{
    const char *lp = getenv("LISTEN_PID"), *lf = getenv("LISTEN_FDS");

    if (lp != NULL && lf != NULL && atoi(lp) == (int)getpid() && atoi(lf) >= 1) {
        struct sockaddr_un sa;
        socklen_t len = sizeof(sa);

        sv->listen_fd = 3;
        sv->socket_owned = 0;
        /* Say which socket is served: the one systemd passed, whatever
         * server.socket says (which is then ignored). */
        memset(&sa, 0, sizeof(sa));
        if (getsockname(3, (struct sockaddr *)&sa, &len) != 0 || sa.sun_family != AF_UNIX) {
            log_error("LISTEN_FDS: descriptor 3 is not a unix socket");
            return -1;
        }
        sa.sun_path[sizeof(sa.sun_path) - 1] = '\0';
        util_strlcpy(sv->listen_path, sa.sun_path, sizeof(sv->listen_path));
        log_info("socket activation: serving FastCGI on %s (fd 3 from systemd; "
                 "server.socket ignored)", sv->listen_path);
    } else {
        if ((sv->listen_fd = bind_unix(sv->cfg.socket_path, sv->cfg.socket_mode,
                                       "server.socket")) < 0)
            return -1;
        sv->socket_owned = 1;
        util_strlcpy(sv->listen_path, sv->cfg.socket_path, sizeof(sv->listen_path));
    }
    if ((sv->stream_fd = bind_unix(sv->cfg.stream_socket, sv->cfg.socket_mode,
                                   "server.stream_socket")) < 0)
        return -1;
    /* Non-blocking: each accept thread polls, and a lost race is EAGAIN;
     * the stream loop accepts until EAGAIN. */
    fcntl(sv->listen_fd, F_SETFL, fcntl(sv->listen_fd, F_GETFL) | O_NONBLOCK);
    fcntl(sv->stream_fd, F_SETFL, fcntl(sv->stream_fd, F_GETFL) | O_NONBLOCK);
    return 0;
}

/* ---- Berkeley DB work, always in a child ---------------------------------------
 *
 * A process killed inside Berkeley DB can leave a mutex held for ever:
 * failchk then answers DB_RUNRECOVERY, and closing or even failchk-ing a
 * handle can block on that mutex. So the supervisor never opens the
 * environment itself. Every database job (recovery at start, failchk and
 * registry reconcile after a worker died, checkpoints) runs in a short-lived
 * child with a deadline; a child that overruns is killed and the
 * environment recovered (invariant 1).
 */
enum store_task { TASK_RECOVER, TASK_AFTER_DEATH, TASK_CHECKPOINT };
enum task_result { TASK_OK = 0, TASK_FAILED = 1, TASK_NEEDS_RECOVERY = 2 };

#define TASK_TIMEOUT_MS 60000     /* a whole task: recovery, reconcile, checkpoint */
#define FAILCHK_TIMEOUT_MS 1000   /* failchk alone takes milliseconds, or hangs */
#define SWEEP_MAX 20000           /* sessions one checkpoint task expires at most */

/* Returns agent_reconcile's result (< 0: some agent could not be loaded). */
static int reconcile(struct supervisor *sv, const char *why)
{
    struct am_error err;
    int n;

    error_clear(&err);
    n = agent_reconcile(&sv->app, &err);
    if (n < 0)
        log_error("%s: %s", why, err.message);
    else if (n > 0)
        log_info("%s: registry repaired (%d entries)", why, n);
    return n;
}

/* Runnable invariants after a recovery or a reconcile (invariant builds
 * only). The registry's and the store's hold with workers running; the
 * ones across modules only with none (a recovery), and the agents' only
 * if the reconcile loaded every deployed agent. */
static void check_invariants(struct supervisor *sv, int task, int reconciled)
{
    (void)sv;   /* used only in invariant builds */
    CHECK_INVARIANTS(store_check_invariants(sv->app.store));
    CHECK_INVARIANTS(registry_check_invariants(sv->app.reg));
    CHECK_INVARIANTS(breakers_check_invariants(sv->app.breakers));
    if (task != TASK_RECOVER)
        return;
    if (reconciled >= 0)
        CHECK_INVARIANTS(agent_check_invariants(&sv->app));
    CHECK_INVARIANTS(quota_check_invariants(sv->app.quota));
    CHECK_INVARIANTS(quota_check_invariants(sv->app.test_quota));
    CHECK_INVARIANTS(usage_check_invariants(&sv->app));
}

/* Body of the child: returns its exit status (enum task_result). After
 * failchk it writes one byte to progress_fd, so the parent can tell a
 * hung failchk (seconds of silence) from a long reconcile. */
static int store_task_child(struct supervisor *sv, int task, int progress_fd)
{
    struct store_options so = { sv->cfg.data_dir, sv->cfg.db_cache_mb, sv->cfg.db_sync,
                                sv->cfg.workers * sv->cfg.threads * 2 +
                                    sv->cfg.stream_max_queries + 72, 0,
                                replication_options(&sv->cfg) };
    struct am_error err;
    int reconciled = 0, rc;

    error_clear(&err);
    if (store_open(&sv->app.store, &so, (task == TASK_RECOVER ? STORE_OPEN_CREATE : 0) |
                   (so.rep != NULL ? STORE_OPEN_ENV_ONLY : 0), &err) != 0) {
        log_error("%s", err.message);
        return task == TASK_RECOVER ? TASK_FAILED : TASK_NEEDS_RECOVERY;
    }
    if (task == TASK_AFTER_DEATH && store_failchk(sv->app.store, &err) != 0) {
        log_error("%s", err.message);
        return TASK_NEEDS_RECOVERY;      /* no close: it could block */
    }
    if (write(progress_fd, "f", 1) != 1)
        log_warn("progress write failed");
    if (so.rep != NULL) {
        /* In a group: a replica that has not caught up has no databases
         * yet, and only the master writes (the sweep, the reclaim, the
         * checkpoint record; a replica's checkpoint only removes logs). */
        if ((rc = store_open_databases(sv->app.store, &err)) != 0) {
            store_close(sv->app.store);
            if (rc == AM_ENOENT)
                return TASK_OK;
            log_error("%s", err.message);
            return TASK_FAILED;
        }
        if (!store_rep_is_master(sv->app.store)) {
            if (task != TASK_CHECKPOINT)
                reconcile(sv, task == TASK_RECOVER ? "start-up" : "after worker death");
            if (store_checkpoint(sv->app.store) != 0)
                log_warn("checkpoint failed");
            store_close(sv->app.store);
            return TASK_OK;
        }
    }
    if (task == TASK_RECOVER)
        reconciled = reconcile(sv, "start-up");
    else if (task == TASK_AFTER_DEATH)
        reconciled = reconcile(sv, "after worker death");
    if (task != TASK_CHECKPOINT) {
        /* with its transactions aborted, what the dead process (at a
         * recovery: every worker, all dead) accepted and never settled */
        int n = usage_reclaim(&sv->app, task == TASK_RECOVER ? 0 : sv->dead_pid);
        if (n > 0)
            log_info("%d accepted runs that never settled given back to their orgs' "
                     "daily quota", n);
        check_invariants(sv, task, reconciled);
    }
    if (task == TASK_CHECKPOINT) {
        /* Sessions idle past memory.session_ttl_s, in batches, at most
         * SWEEP_MAX a task: the rest wait for the next one. */
        int swept = 0;
        if (memory_sweep(sv->app.store, memory_now_ms(), sv->cfg.session_ttl_s, SWEEP_MAX,
                         &swept) != 0)
            log_warn("session sweep failed after %d sessions", swept);
        else if (swept > 0)
            log_info("%d sessions idle for more than %d s expired", swept,
                     sv->cfg.session_ttl_s);
    }
    if (store_checkpoint(sv->app.store) != 0)
        log_warn("checkpoint failed");
    store_close(sv->app.store);
    return TASK_OK;
}

/* Run a store task in a child and wait for it, at most TASK_TIMEOUT_MS. */
static int run_store_task(struct supervisor *sv, int task)
{
    uint64_t start = util_monotonic_ms();
    int status, progress[2], opened = 0;
    char byte;
    pid_t pid, got;

    if (pipe2(progress, O_CLOEXEC | O_NONBLOCK) != 0 || (pid = fork()) < 0) {
        log_error("starting a storage task: %s", strerror(errno));
        return TASK_FAILED;
    }
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        prctl(PR_SET_NAME, "am-store-task");
        log_set_ident("astromesh-cloudd/store");
        close(progress[0]);
        _exit(store_task_child(sv, task, progress[1]));
    }
    close(progress[1]);
    for (;;) {
        uint64_t waited = util_monotonic_ms() - start;

        got = waitpid(pid, &status, WNOHANG);
        if (got == pid || (got < 0 && errno != EINTR))
            break;
        if (!opened && read(progress[0], &byte, 1) == 1)
            opened = 1;
        if (waited >= TASK_TIMEOUT_MS || (!opened && waited >= FAILCHK_TIMEOUT_MS &&
                                          task == TASK_AFTER_DEATH)) {
            log_error("storage task %d stalled after %llu ms: the environment is wedged",
                      task, (unsigned long long)waited);
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            close(progress[0]);
            return TASK_NEEDS_RECOVERY;
        }
        usleep(2000);
    }
    close(progress[0]);
    if (got != pid)
        return TASK_FAILED;
    if (WIFEXITED(status) && WEXITSTATUS(status) <= TASK_NEEDS_RECOVERY)
        return WEXITSTATUS(status);
    log_error("storage task %d ended by signal %d", task,
              WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    return task == TASK_RECOVER ? TASK_FAILED : TASK_NEEDS_RECOVERY;
}

static void spawn_worker(struct supervisor *sv, struct worker_slot *w)
{
    pid_t pid = fork();

    if (pid < 0) {
        log_error("fork: %s", strerror(errno));
        w->restart_at_ms = util_monotonic_ms() + 1000;
        return;
    }
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        /* The child keeps the lock fd (invariant 3) and its listener. */
        if (w->kind == K_STREAM) {
            metrics_set_self(0);    /* no accept threads; its breakers show */
            close(sv->listen_fd);
            stream_run(&sv->app, sv->stream_fd);
        }
        if (w->kind == K_REPL) {
            metrics_set_self(0);
            close(sv->listen_fd);
            close(sv->stream_fd);
            replication_run(&sv->app);
        }
        close(sv->stream_fd);
        worker_run(&sv->app, sv->listen_fd);
    }
    w->pid = pid;
    w->state = W_RUNNING;
    w->started_ms = util_monotonic_ms();
}

static void spawn_missing(struct supervisor *sv)
{
    uint64_t now = util_monotonic_ms();
    int i;

    /* The replication process first: the Replication Manager listens
     * there, never in a worker that writes before it starts. */
    sv->repl.kind = K_REPL;
    if (sv->cfg.rep_nsites > 0 && sv->repl.state == W_EMPTY && now >= sv->repl.restart_at_ms)
        spawn_worker(sv, &sv->repl);
    for (i = 0; i < sv->cfg.workers; i++)
        if (sv->slots[i].state == W_EMPTY && now >= sv->slots[i].restart_at_ms)
            spawn_worker(sv, &sv->slots[i]);
    sv->stream.kind = K_STREAM;
    if (sv->stream.state == W_EMPTY && now >= sv->stream.restart_at_ms)
        spawn_worker(sv, &sv->stream);
}

static void kill_all(struct supervisor *sv, int sig)
{
    int i;

    for (i = 0; i < MAX_WORKERS; i++) {
        if (sv->slots[i].state != W_EMPTY)
            kill(sv->slots[i].pid, sig);
        if (sv->retiring[i].state != W_EMPTY)
            kill(sv->retiring[i].pid, sig);
    }
    if (sv->stream.state != W_EMPTY)
        kill(sv->stream.pid, sig);
    if (sv->repl.state != W_EMPTY)
        kill(sv->repl.pid, sig);
}

static int workers_alive(struct supervisor *sv)
{
    int i, n = 0;

    for (i = 0; i < MAX_WORKERS; i++)
        n += (sv->slots[i].state != W_EMPTY) + (sv->retiring[i].state != W_EMPTY);
    return n + (sv->stream.state != W_EMPTY) + (sv->repl.state != W_EMPTY);
}

static struct worker_slot *slot_of(struct supervisor *sv, pid_t pid)
{
    int i;

    for (i = 0; i < MAX_WORKERS; i++) {
        if (sv->slots[i].state != W_EMPTY && sv->slots[i].pid == pid)
            return &sv->slots[i];
        if (sv->retiring[i].state != W_EMPTY && sv->retiring[i].pid == pid)
            return &sv->retiring[i];
    }
    if (sv->stream.state != W_EMPTY && sv->stream.pid == pid)
        return &sv->stream;
    if (sv->repl.state != W_EMPTY && sv->repl.pid == pid)
        return &sv->repl;
    return NULL;
}

/* The environment cannot be used any more (a process died inside it):
 * stop every worker, recover, and start again (invariant 1). */
static int recover_environment(struct supervisor *sv)
{
    int i;

    log_error("storage needs recovery: restarting every worker");
    kill_all(sv, SIGKILL);
    for (i = 0; i < MAX_WORKERS; i++) {
        if (sv->slots[i].state != W_EMPTY) {
            waitpid(sv->slots[i].pid, NULL, 0);
            streams_reclaim(sv->app.inflight, (int)sv->slots[i].pid);
        }
        if (sv->retiring[i].state != W_EMPTY) {
            waitpid(sv->retiring[i].pid, NULL, 0);
            streams_reclaim(sv->app.streams, (int)sv->retiring[i].pid);
            streams_reclaim(sv->app.inflight, (int)sv->retiring[i].pid);
        }
        sv->slots[i].state = sv->retiring[i].state = W_EMPTY;
        sv->slots[i].restart_at_ms = 0;
    }
    if (sv->stream.state != W_EMPTY) {
        waitpid(sv->stream.pid, NULL, 0);
        streams_reclaim(sv->app.streams, (int)sv->stream.pid);
        streams_reclaim(sv->app.inflight, (int)sv->stream.pid);
    }
    sv->stream.state = W_EMPTY;
    sv->stream.restart_at_ms = 0;
    if (sv->repl.state != W_EMPTY)
        waitpid(sv->repl.pid, NULL, 0);
    sv->repl.state = W_EMPTY;
    sv->repl.restart_at_ms = 0;
    {
        uint64_t t0 = util_monotonic_ms();
        if (run_store_task(sv, TASK_RECOVER) != TASK_OK) {
            log_error("storage recovery failed");
            return -1;
        }
        log_info("recovery took %llu ms", (unsigned long long)(util_monotonic_ms() - t0));
    }
    log_info("storage recovered: %d deployed agents", registry_count(sv->app.reg));
    return 0;
}

/* A worker exited: release what it held, repair the registry, and plan
 * its replacement (with back-off if it keeps dying young). */
static int on_worker_exit(struct supervisor *sv, pid_t pid, int status)
{
    struct worker_slot *w = slot_of(sv, pid);
    uint64_t now = util_monotonic_ms();
    int clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;

    if (w == NULL)
        return 0;
    if (w->state == W_RUNNING && !clean) {
        const char *what = w->kind == K_STREAM ? "stream process"
                         : w->kind == K_REPL ? "replication process" : "worker";
        if (WIFSIGNALED(status))
            log_warn("%s %d killed by signal %d", what, (int)pid, WTERMSIG(status));
        else
            log_warn("%s %d exited with status %d", what, (int)pid, WEXITSTATUS(status));
    }
    /* Its per-process figures go; a running one that died is a restart. */
    metrics_worker_gone((int)pid, w->state == W_RUNNING && !clean);
    if (w->kind == K_STREAM) {
        int n = streams_reclaim(sv->app.streams, (int)pid);
        if (n > 0 && !clean)
            log_info("%d stream connections of the dead stream process given back", n);
    }
    /* the runs in flight it held: the org may start as many again */
    if (streams_reclaim(sv->app.inflight, (int)pid) > 0 && !clean)
        log_info("the runs in flight of the dead %d were given back to their orgs' caps",
                 (int)pid);
    sv->dead_pid = (int)pid;
    if (!clean && run_store_task(sv, TASK_AFTER_DEATH) != TASK_OK) {
        w->state = W_EMPTY;
        return recover_environment(sv);
    }
    if (w->state == W_RUNNING) {
        w->backoff_ms = (now - w->started_ms < DIED_YOUNG_MS)
                            ? (w->backoff_ms ? w->backoff_ms * 2 : 100) : 0;
        if (w->backoff_ms > BACKOFF_MAX_MS)
            w->backoff_ms = BACKOFF_MAX_MS;
        w->restart_at_ms = now + w->backoff_ms;
    }
    w->state = W_EMPTY;
    return 0;
}

static int reap(struct supervisor *sv)
{
    pid_t pid;
    int status;

    while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
        if (on_worker_exit(sv, pid, status) != 0)
            return -1;
    return 0;
}

/* SIGHUP: load the file again; if it is good, replace every worker. */
static void reload(struct supervisor *sv)
{
    struct config next;
    struct am_error err;
    int i, j;

    error_clear(&err);
    config_defaults(&next);
    if (config_load(&next, sv->config_path, &err) != 0) {
        log_error("reload refused, keeping the running config: %s", err.message);
        return;
    }
    if (strcmp(next.data_dir, sv->cfg.data_dir) != 0 ||
        strcmp(next.socket_path, sv->cfg.socket_path) != 0 ||
        strcmp(next.stream_socket, sv->cfg.stream_socket) != 0)
        log_warn("storage.data_dir, server.socket and server.stream_socket change only at "
                 "restart");
    util_strlcpy(next.data_dir, sv->cfg.data_dir, sizeof(next.data_dir));
    util_strlcpy(next.socket_path, sv->cfg.socket_path, sizeof(next.socket_path));
    util_strlcpy(next.stream_socket, sv->cfg.stream_socket, sizeof(next.stream_socket));
    next.stream_max_connections = sv->cfg.stream_max_connections;
    next.stream_max_queries = sv->cfg.stream_max_queries;
    next.registry_capacity = sv->cfg.registry_capacity;
    next.registry_slot_kb = sv->cfg.registry_slot_kb;
    /* Retire the old generation; new workers start with the new config. */
    for (i = 0; i <= MAX_WORKERS; i++) {
        struct worker_slot *w = i < MAX_WORKERS ? &sv->slots[i] : &sv->stream;
        int kind = w->kind;

        if (w->state != W_RUNNING)
            continue;
        for (j = 0; j < MAX_WORKERS && sv->retiring[j].state != W_EMPTY; j++)
            ;
        if (j < MAX_WORKERS) {
            sv->retiring[j] = *w;
            sv->retiring[j].state = W_RETIRING;
            kill(w->pid, SIGTERM);
        } else {
            kill(w->pid, SIGKILL);
        }
        memset(w, 0, sizeof(*w));
        w->kind = kind;
    }
    sv->cfg = next;
    log_set_level(sv->cfg.log_level);
    log_info("configuration reloaded from %s", sv->config_path);
}

/* SIGTERM: workers stop accepting and finish what they serve; after the
 * deadline the rest are killed. */
static void drain(struct supervisor *sv)
{
    uint64_t deadline = util_monotonic_ms() + (uint64_t)sv->cfg.shutdown_timeout_ms;
    int killed = 0;

    notify_systemd("STOPPING=1");
    /* New connections now fail at connect() (the front server answers 503)
     * while the workers drain what is already queued. */
    if (sv->socket_owned && unlink(sv->cfg.socket_path) == 0)
        sv->socket_owned = 0;
    unlink(sv->cfg.stream_socket);
    kill_all(sv, SIGTERM);
    while (workers_alive(sv) > 0) {
        if (!killed && util_monotonic_ms() >= deadline) {
            log_warn("workers still busy after %d ms: killing them", sv->cfg.shutdown_timeout_ms);
            kill_all(sv, SIGKILL);
            killed = 1;
        }
        if (reap(sv) != 0)
            break;
        usleep(10000);
    }
}

static void write_pid_file(const struct supervisor *sv)
{
    FILE *f;

    if (sv->cfg.pid_file[0] == '\0')
        return;
    if ((f = fopen(sv->cfg.pid_file, "w")) == NULL) {
        log_warn("cannot write pid file %s: %s", sv->cfg.pid_file, strerror(errno));
        return;
    }
    fprintf(f, "%d\n", (int)getpid());
    fclose(f);
}

static int serve(struct supervisor *sv)
{
    sigset_t set;
    siginfo_t si;
    struct timespec tick = { 0, 200 * 1000 * 1000 };
    int sig;

    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGCHLD);
    for (;;) {
        if (reap(sv) != 0)
            return 1;
        spawn_missing(sv);
        if (util_monotonic_ms() - sv->last_checkpoint_ms >= CHECKPOINT_EVERY_MS) {
            if (run_store_task(sv, TASK_CHECKPOINT) != TASK_OK &&
                recover_environment(sv) != 0)
                return 1;
            sv->last_checkpoint_ms = util_monotonic_ms();
            notify_systemd("WATCHDOG=1");
        }
        sig = sigtimedwait(&set, &si, &tick);
        if (sig == SIGTERM || sig == SIGINT) {
            log_info("stopping (signal %d)", sig);
            drain(sv);
            return 0;
        }
        if (sig == SIGHUP) {
            notify_systemd("RELOADING=1");
            reload(sv);
            notify_systemd("READY=1");
        }
    }
}

/* Registry fairness: every org may deploy limits.max_agents agents, and
 * the registry holds registry.capacity. Say at start how many orgs' full
 * limits that covers; registry_full (503) can only happen past them, and
 * with dev login on the number of orgs is not bounded, so warn then. */
static void plan_capacity_log(const struct config *cfg)
{
    int orgs = cfg->registry_capacity / cfg->max_agents;

    log_info("registry: capacity %d holds the deployed agents of %d orgs at limits.max_agents "
             "%d", cfg->registry_capacity, orgs, cfg->max_agents);
    if (cfg->dev_login)
        log_warn("registry: auth.dev_login lets anyone create orgs; more than %d orgs at "
                 "limits.max_agents %d need more than registry.capacity %d, and their "
                 "deploys then get 503 registry_full", orgs, cfg->max_agents,
                 cfg->registry_capacity);
}

static int start(struct supervisor *sv)
{
    struct am_error err;
    size_t slot = (size_t)sv->cfg.registry_slot_kb * 1024;

    error_clear(&err);
    if (mkdir(sv->cfg.data_dir, 0700) != 0 && errno != EEXIST) {
        log_error("cannot create storage.data_dir %s: %s", sv->cfg.data_dir, strerror(errno));
        return -1;
    }
    if (take_lock(sv) != 0)
        return -1;
    shm_name_for(sv->cfg.data_dir, sv->shm_name, sizeof(sv->shm_name));
    if (registry_create(&sv->app.reg, sv->shm_name, sv->cfg.registry_capacity, slot, &err) != 0) {
        log_error("%s", err.message);
        return -1;
    }
    /* An org can run only with a deployed agent: room for four times the
     * registry's capacity leaves space for the orgs that ran earlier today.
     * Holds for twice the runs the threads can have in flight (a reload may
     * add threads; a run without a hold is only left counted if its worker
     * dies). */
    if (quota_create(&sv->app.quota, sv->cfg.registry_capacity * 4,
                     2 * (sv->cfg.workers * sv->cfg.threads + sv->cfg.stream_max_queries),
                     &err) != 0) {
        log_error("%s", err.message);
        return -1;
    }
    /* The daily test allowance: the same table again, counting tests. */
    if (quota_create(&sv->app.test_quota, sv->cfg.registry_capacity * 4,
                     2 * (sv->cfg.workers * sv->cfg.threads + sv->cfg.stream_max_queries),
                     &err) != 0) {
        log_error("%s", err.message);
        return -1;
    }
    /* The open stream connections of every org, one slot each. */
    if (streams_create(&sv->app.streams, sv->cfg.stream_max_connections, &err) != 0) {
        log_error("%s", err.message);
        return -1;
    }
    /* The counters every process updates (GET /api/v1/metrics). */
    if (metrics_create(&err) != 0) {
        log_error("%s", err.message);
        return -1;
    }
    /* Fairness between tenants: the breakers of every org's models (two
     * models an agent), and the runs in flight per org: a slot per thread
     * or stream query that can run one, twice over like the quota holds (a
     * run finding none is not held: the cap does not hold it back). */
    if (breakers_create(&sv->app.breakers, sv->cfg.registry_capacity * 2, &err) != 0 ||
        streams_create(&sv->app.inflight, 2 * (sv->cfg.workers * sv->cfg.threads +
                       sv->cfg.stream_max_queries), &err) != 0) {
        log_error("%s", err.message);
        return -1;
    }
    if (sv->cfg.rep_nsites > 0 && cluster_create(&sv->app.cluster, &err) != 0) {
        log_error("%s", err.message);
        return -1;
    }
    plan_capacity_log(&sv->cfg);
    /* The master key: refuse to start without a good one. */
    if (vault_open(&sv->vault, sv->cfg.master_key_file, &err) != 0) {
        log_error("%s", err.message);
        return -1;
    }
    sv->app.vault = sv->vault;
    /* The authorisation epoch, shared like the quota table. */
    if (auth_state_create(&sv->app.auth, &err) != 0) {
        log_error("%s", err.message);
        return -1;
    }
    /* Recover the environment and rebuild the registry from it. */
    if (run_store_task(sv, TASK_RECOVER) != TASK_OK)
        return -1;
    log_info("registry rebuilt: %d deployed agents", registry_count(sv->app.reg));
    if (open_listener(sv) != 0)
        return -1;
    write_pid_file(sv);
    return 0;
}

static void finish(struct supervisor *sv)
{
    if (sv->listen_fd >= 0)
        close(sv->listen_fd);
    if (sv->socket_owned)
        unlink(sv->cfg.socket_path);
    if (sv->stream_fd >= 0) {
        close(sv->stream_fd);
        unlink(sv->cfg.stream_socket);
    }
    /* A last checkpoint keeps the next start's recovery short. Not in a
     * group: with the replication process gone, the task's own Replication
     * Manager threads (started by its first write) never let it close. */
    if (sv->app.reg != NULL && workers_alive(sv) == 0 && sv->cfg.rep_nsites == 0)
        run_store_task(sv, TASK_CHECKPOINT);
    if (sv->app.reg != NULL)
        registry_close(sv->app.reg, 1);
    quota_close(sv->app.quota);
    quota_close(sv->app.test_quota);
    streams_close(sv->app.streams);
    metrics_close();
    streams_close(sv->app.inflight);
    breakers_close(sv->app.breakers);
    cluster_close(sv->app.cluster);
    auth_state_close(sv->app.auth);
    vault_close(sv->vault);
    if (sv->cfg.pid_file[0] != '\0')
        unlink(sv->cfg.pid_file);
    if (sv->lock_fd >= 0)
        close(sv->lock_fd);
}

int supervisor_main(const char *config_path)
{
    static struct supervisor sv;
    struct am_error err;
    sigset_t set;
    int rc = 1;

    memset(&sv, 0, sizeof(sv));
    sv.lock_fd = sv.listen_fd = sv.stream_fd = -1;
    sv.config_path = config_path;
    sv.app.cfg = &sv.cfg;
    error_clear(&err);
    config_defaults(&sv.cfg);
    if (config_load(&sv.cfg, config_path, &err) != 0) {
        fprintf(stderr, "astromesh-cloudd: %s\n", err.message);
        return 1;
    }
    log_set_level(sv.cfg.log_level);
    if (auth_init() != 0) {
        log_error("libsodium failed to initialise");
        return 1;
    }
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (start(&sv) == 0) {
        sv.last_checkpoint_ms = util_monotonic_ms();
        spawn_missing(&sv);
        notify_systemd("READY=1");
        log_info("serving on %s with %d workers x %d threads, streams on %s",
                 sv.listen_path, sv.cfg.workers, sv.cfg.threads, sv.cfg.stream_socket);
        rc = serve(&sv);
    }
    finish(&sv);
    if (rc == 0)
        log_info("stopped");
    return rc;
}
