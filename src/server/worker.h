/*
 * worker.h - one pre-forked FastCGI worker process.
 */
#ifndef AM_WORKER_H
#define AM_WORKER_H

#include <signal.h>

struct app;

/* Run a worker in a freshly forked child: join the Berkeley DB environment
 * (never reusing the parent's handles; shared->store is ignored), use the
 * inherited config, registry, quota, auth epoch and vault of shared, serve
 * listen_fd with cfg->threads accept threads until SIGTERM, let in-flight
 * requests finish, and exit. Never returns. */
/* In a freshly forked child (a worker or the stream process): every signal
 * handler the supervisor set back to its default, SIGPIPE ignored, and
 * SIGTERM, SIGINT and SIGHUP (the supervisor's stop, and its reload, which
 * replaces the child) blocked in this thread and put in *stopset, for
 * sigwait or a signalfd. */
void worker_child_signals(sigset_t *stopset);

/* Open this child's store handle with so (so->rep from the config). In a
 * group, a replica that has not caught up has no databases yet: wait for
 * them, 200 ms at a time, and exit 0 if a stop signal of stopset comes
 * first. Exits 1 on any other failure (logged). */
struct store;
struct store_options;
void worker_store_open(struct store **out, const struct store_options *so,
                       const sigset_t *stopset);

void worker_run(const struct app *shared, int listen_fd)
    __attribute__((noreturn));

#endif
