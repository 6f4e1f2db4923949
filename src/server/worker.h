/*
 * worker.h - one pre-forked FastCGI worker process.
 */
#ifndef AM_WORKER_H
#define AM_WORKER_H

struct app;

/* Run a worker in a freshly forked child: join the Berkeley DB environment
 * (never reusing the parent's handles; shared->store is ignored), use the
 * inherited config, registry, quota, auth epoch and vault of shared, serve
 * listen_fd with cfg->threads accept threads until SIGTERM, let in-flight
 * requests finish, and exit. Never returns. */
void worker_run(const struct app *shared, int listen_fd)
    __attribute__((noreturn));

#endif
