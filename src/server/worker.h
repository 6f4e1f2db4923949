/*
 * worker.h - one pre-forked FastCGI worker process.
 */
#ifndef AM_WORKER_H
#define AM_WORKER_H

struct config;
struct registry;
struct quota;
struct auth_state;

/* Run a worker in a freshly forked child: join the Berkeley DB environment
 * (never reusing the parent's handles), use the inherited registry, quota
 * and auth epoch mappings, serve listen_fd with cfg->threads accept threads until SIGTERM, let
 * in-flight requests finish, and exit. Never returns. */
void worker_run(const struct config *cfg, int listen_fd, struct registry *reg,
                struct quota *quota, struct auth_state *auth)
    __attribute__((noreturn));

#endif
