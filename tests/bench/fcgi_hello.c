/*
 * fcgi_hello.c - the baseline of `make bench`: the smallest useful libfcgi
 * responder, answering every request with {"hello":"world"}.
 *
 *   fcgi_hello SOCKET [PROCESSES [THREADS]]
 *
 * It binds SOCKET itself (FCGX_OpenSocket), then forks PROCESSES children
 * (default 2) that each run THREADS accept threads (default 8) over the
 * one listening socket: the same shape as astromesh-cloudd's pre-forked
 * workers, so that what tests/bench/bench.sh compares is the per-request
 * work and not the process model. Give it the daemon's server.workers and
 * server.threads.
 *
 * Owns: the listening socket and its path (unlinked on exit), and the child
 * pids. The parent only waits: on SIGTERM or SIGINT it stops the children
 * and exits 0; if a child dies on its own it stops the others and exits 1,
 * so the benchmark never measures a half-dead baseline.
 *
 * Must never: do per-request work beyond reading the request and writing a
 * fixed answer; this is the ceiling the daemon is measured against.
 */
#include <errno.h>
#include <fcgiapp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define HELLO_BACKLOG 1024
#define HELLO_MAX_PROCS 64
#define HELLO_MAX_THREADS 1024

/* Headers as close as possible to what the daemon sends for a 200, so the
 * bytes through lighttpd are comparable. */
static const char hello_response[] =
    "Status: 200 OK\r\n"
    "Content-Type: application/json; charset=utf-8\r\n"
    "Content-Length: 17\r\n"
    "Cache-Control: no-store\r\n"
    "\r\n"
    "{\"hello\":\"world\"}";

/* One accept thread: accept, answer, finish, forever. Returns only if the
 * request cannot be set up. */
static void *hello_thread(void *arg)
{
    int listen_fd = *(const int *)arg;
    FCGX_Request fr;

    if (FCGX_InitRequest(&fr, listen_fd, 0) != 0)
        return NULL;
    while (FCGX_Accept_r(&fr) >= 0) {
        FCGX_PutStr(hello_response, (int)sizeof(hello_response) - 1, fr.out);
        FCGX_Finish_r(&fr);
    }
    return NULL;
}

/* The body of one child process: nthreads - 1 extra threads plus this one.
 * Never returns. */
static void hello_child(int listen_fd, int nthreads)
{
    pthread_attr_t attr;
    pthread_t tid;
    int i;

    /* FCGX_Init installed a SIGTERM handler that only sets a flag, which
     * the one thread the signal lands on notices; the others would stay in
     * accept(). A child simply dies on SIGTERM, and with its parent. */
    signal(SIGTERM, SIG_DFL);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    for (i = 1; i < nthreads; i++) {
        if (pthread_create(&tid, &attr, hello_thread, &listen_fd) != 0) {
            fprintf(stderr, "fcgi_hello: pthread_create failed\n");
            _exit(1);
        }
    }
    pthread_attr_destroy(&attr);
    hello_thread(&listen_fd);
    _exit(1);
}

static int parse_count(const char *s, int max, const char *what)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < 1 || v > max) {
        fprintf(stderr, "fcgi_hello: %s: expected 1..%d (got %s)\n", what, max, s);
        exit(2);
    }
    return (int)v;
}

/* Stop every live child with SIGTERM and reap them all. */
static void stop_children(const pid_t *pids, int n)
{
    int i;

    for (i = 0; i < n; i++)
        if (pids[i] > 0)
            kill(pids[i], SIGTERM);
    for (i = 0; i < n; i++)
        if (pids[i] > 0)
            waitpid(pids[i], NULL, 0);
}

int main(int argc, char **argv)
{
    pid_t pids[HELLO_MAX_PROCS];
    sigset_t set;
    int nprocs = 2, nthreads = 8, listen_fd, i, sig = 0, rc = 0;
    const char *path;

    if (argc < 2 || argc > 4) {
        fprintf(stderr, "usage: fcgi_hello SOCKET [PROCESSES [THREADS]]\n");
        return 2;
    }
    path = argv[1];
    if (argc > 2)
        nprocs = parse_count(argv[2], HELLO_MAX_PROCS, "PROCESSES");
    if (argc > 3)
        nthreads = parse_count(argv[3], HELLO_MAX_THREADS, "THREADS");

    if (FCGX_Init() != 0) {
        fprintf(stderr, "fcgi_hello: FCGX_Init failed\n");
        return 1;
    }
    unlink(path);
    /* FCGX_OpenSocket treats a path starting with ':' as a TCP port. */
    listen_fd = FCGX_OpenSocket(path, HELLO_BACKLOG);
    if (listen_fd < 0) {
        fprintf(stderr, "fcgi_hello: cannot listen on %s\n", path);
        return 1;
    }
    chmod(path, 0660);

    /* Block the stop signals before forking: the parent takes them with
     * sigwait; the children unblock them and keep the default action. */
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, NULL);
    for (i = 0; i < nprocs; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            sigprocmask(SIG_UNBLOCK, &set, NULL);
            hello_child(listen_fd, nthreads);
        }
        if (pids[i] < 0) {
            fprintf(stderr, "fcgi_hello: fork: %s\n", strerror(errno));
            stop_children(pids, i);
            unlink(path);
            return 1;
        }
    }
    close(listen_fd);

    sigwait(&set, &sig);
    if (sig == SIGCHLD) {
        fprintf(stderr, "fcgi_hello: a child died; stopping\n");
        rc = 1;
    }
    stop_children(pids, nprocs);
    unlink(path);
    return rc;
}
