/*
 * main.c - astromesh-cloudd's command line. Everything else is in the
 * supervisor.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "state/config.h"
#include "state/vault.h"
#include "server/routes.h"
#include "server/supervisor.h"

#ifndef SYSCONFDIR
#define SYSCONFDIR "/etc"
#endif
#define DEFAULT_CONFIG SYSCONFDIR "/astromesh-cloud/astromesh-cloud.yaml"

static void usage(FILE *f)
{
    fprintf(f, "usage: astromesh-cloudd [-c config.yaml] [-t] [-S] [-R] [-V]\n"
               "  -c FILE  configuration file (default " DEFAULT_CONFIG ")\n"
               "  -t       check the configuration, the JWT secret file and the master key, and exit\n"
               "           (0 good, 1 bad, with one line saying why)\n"
               "  -S       check the configuration, print server.socket and the stream\n"
               "           socket (resolved: stream.sock beside it if unset), one a line\n"
               "  -R       print the route table (who may call what) and exit\n"
               "  -V       print the version and exit\n"
               "Runs in the foreground; stop with SIGTERM, reload with SIGHUP.\n");
}

/*
 * -K (not in the usage: for the build and packagers): the config key table,
 * one key a line, "path<TAB>type<TAB>default<TAB>range<TAB>flags". The man
 * page astromesh-cloud.yaml(5) is generated from it (man/yaml5.sh).
 */
static void print_keys(FILE *f)
{
    struct config_key_info k;

    for (size_t i = 0; config_key_info(i, &k) == 0; i++) {
        fprintf(f, "%s\t%s\t%s\t", k.path, k.type, k.def[0] ? k.def : "\"\"");
        if (strcmp(k.type, "string") == 0)
            fprintf(f, "%lld..%lld bytes", k.min, k.max);
        else if (strcmp(k.type, "mode") == 0)
            fprintf(f, "%04llo..%04llo", k.min, k.max);
        else if (strcmp(k.type, "boolean") == 0)
            fputs("true, false, yes, no, on, off", f);
        else if (strcmp(k.type, "loglevel") == 0)
            fputs("error, warn, info, debug", f);
        else
            fprintf(f, "%lld..%lld", k.min, k.max);
        fprintf(f, "\t%s\n", k.secret ? "secret" : "-");
    }
}

/* -S: load and check the config at path; print the FastCGI socket and the
 * resolved stream socket, one a line, for scripts (scripts/dev-start) that
 * must point a front server at them. Returns the exit code: 0, or 1 with
 * one line on stderr. */
static int print_sockets(const char *path)
{
    struct config cfg;
    struct am_error err;

    config_defaults(&cfg);
    if (config_load(&cfg, path, &err) != 0) {
        fprintf(stderr, "astromesh-cloudd: %s\n", err.message);
        return 1;
    }
    if (strchr(cfg.socket_path, '\n') != NULL || strchr(cfg.stream_socket, '\n') != NULL) {
        fprintf(stderr, "astromesh-cloudd: %s: a socket path with a newline in it\n", path);
        return 1;
    }
    printf("%s\n%s\n", cfg.socket_path, cfg.stream_socket);
    return 0;
}

int main(int argc, char **argv)
{
    const char *path = DEFAULT_CONFIG;
    int opt, check_only = 0, sockets_only = 0;

    while ((opt = getopt(argc, argv, "c:tSRKVh")) != -1) {
        switch (opt) {
        case 'c': path = optarg; break;
        case 't': check_only = 1; break;
        case 'S': sockets_only = 1; break;
        case 'R': routes_print(stdout); return 0;
        case 'K': print_keys(stdout); return 0;
        case 'V': printf("astromesh-cloudd %s\n", PACKAGE_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }
    if (sockets_only)
        return print_sockets(path);
    if (check_only) {
        struct config cfg;
        struct vault *vault = NULL;
        struct am_error err;

        config_defaults(&cfg);
        if (config_load(&cfg, path, &err) != 0 || vault_open(&vault, cfg.master_key_file, &err) != 0) {
            fprintf(stderr, "astromesh-cloudd: %s\n", err.message);
            return 1;
        }
        vault_close(vault);
        printf("astromesh-cloudd: %s: configuration OK\n", path);
        return 0;
    }
    return supervisor_main(path);
}
