/*
 * stream.h - the stream process: WS /api/v1/orgs/{slug}/agents/{name}/stream.
 */
#ifndef AM_STREAM_H
#define AM_STREAM_H

struct app;

/* Run the stream process in a freshly forked child: join the Berkeley DB
 * environment (never reusing the parent's handles), use the inherited
 * config, registry, quota, auth epoch, vault and stream slots of shared,
 * and serve listen_fd (the stream socket: HTTP/1.1, upgraded to WebSocket)
 * from one epoll loop, each query on a thread of a pool of
 * stream.max_queries, until SIGTERM; then drain (stop accepting, let
 * running queries finish, close every connection with 1001) and exit.
 * Never returns. */
void stream_run(const struct app *shared, int listen_fd) __attribute__((noreturn));

#endif
