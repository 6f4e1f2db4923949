/*
 * worker.c - a pre-forked worker: a few accept threads over the shared
 * FastCGI socket, and a main thread that waits for the stop signal.
 *
 * Owns: its own Berkeley DB environment handle (opened after the fork; a
 * handle must never cross fork), its accept threads, and a wake-up pipe
 * that tells them to stop.
 *
 * Must never: touch the pid file, the listening socket's options, or the
 * registry segment's lifetime (the supervisor owns those); keep state
 * between requests.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>
#include "state/app.h"
#include "control/auth.h"
#include "state/config.h"
#include "state/metrics.h"
#include "server/http.h"
#include "server/routes.h"
#include "state/store.h"
#include "lib/util.h"
#include "server/replication.h"
#include "server/worker.h"

#define WORKER_STACK_SIZE (256 * 1024)

struct worker_thread_arg {
    int listen_fd;
    int wake_fd;
    struct app *app;
};

static void *accept_thread(void *p)
{
    struct worker_thread_arg *a = p;

    http_serve_loop(a->listen_fd, a->wake_fd, routes_handle, a->app);
    return NULL;
}

void worker_child_signals(sigset_t *stopset)
{
    struct sigaction sa;
    int sigs[] = { SIGTERM, SIGINT, SIGHUP, SIGCHLD, SIGUSR1, SIGUSR2 };
    size_t i;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_DFL;
    for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        sigaction(sigs[i], &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sigemptyset(stopset);
    sigaddset(stopset, SIGTERM);
    sigaddset(stopset, SIGINT);
    sigaddset(stopset, SIGHUP);   /* the supervisor reloads by replacing us */
    pthread_sigmask(SIG_SETMASK, stopset, NULL);
}

void worker_store_open(struct store **out, const struct store_options *so,
                       const sigset_t *stopset)
{
    struct timespec wait = { 0, 200 * 1000000L };
    struct am_error err;
    int rc, said = 0;

    for (;;) {
        error_clear(&err);
        if ((rc = store_open(out, so, 0, &err)) == 0)
            return;
        if (rc != AM_ENOENT) {
            log_error("%s", err.message);
            _exit(1);
        }
        if (!said++)
            log_info("waiting for the databases from the group's master");
        if (sigtimedwait(stopset, NULL, &wait) > 0)
            _exit(0);
    }
}

void worker_run(const struct app *shared, int listen_fd)
{
    const struct config *cfg = shared->cfg;
    struct store_options so = { cfg->data_dir, cfg->db_cache_mb, cfg->db_sync,
                                cfg->workers * cfg->threads * 2 + 64, cfg->db_run_flush_ms,
                                replication_options(cfg) };
    struct worker_thread_arg arg;
    struct app app = *shared;
    pthread_t *threads;
    pthread_attr_t attr;
    sigset_t stopset;
    int wake[2], i, started = 0, sig = 0;
    pid_t parent = getppid();

    app.store = NULL;
    log_set_ident("astromesh-cloudd/worker");
    worker_child_signals(&stopset);
    /* Die with the supervisor: never serve from an environment that a new
     * supervisor is about to recover. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    prctl(PR_SET_NAME, "am-worker");
    if (getppid() != parent)
        _exit(1);
    http_set_request_log(cfg->log_requests);
    if (auth_init() != 0 || http_init() != 0 || pipe(wake) != 0) {
        log_error("worker start-up failed");
        _exit(1);
    }
    worker_store_open(&app.store, &so, &stopset);
    arg.listen_fd = listen_fd;
    arg.wake_fd = wake[0];
    arg.app = &app;
    threads = xcalloc((size_t)cfg->threads, sizeof(*threads));
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, WORKER_STACK_SIZE);
    for (i = 0; i < cfg->threads; i++)
        if (pthread_create(&threads[i], &attr, accept_thread, &arg) == 0)
            started++;
        else
            break;
    pthread_attr_destroy(&attr);
    if (started == 0) {
        log_error("worker could not start any accept thread");
        _exit(1);
    }
    metrics_set_self(started);
    log_debug("worker ready with %d threads", started);
    /* Wait for the stop signal; in a group, also stop when replication
     * made the database handles unusable (this host was rolled back or
     * re-initialised from the master): a replacement opens them afresh. */
    for (;;) {
        struct timespec tick = { 0, 200 * 1000000L };

        sig = sigtimedwait(&stopset, NULL, &tick);
        if (sig > 0)
            break;
        if (store_handles_dead(app.store)) {
            log_info("the databases were replaced by replication: restarting this worker");
            break;
        }
    }
    /* Stop accepting; every thread finishes the request it is in. */
    if (write(wake[1], "x", 1) < 0)
        log_warn("wake-up write failed: %s", strerror(errno));
    for (i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    store_close(app.store);
    free(threads);
    _exit(0);
}
