/*
 * args.h - the astromesh client's command line: global options (anywhere on
 * the line), each command's options, and the positional words.
 *
 * Pure: no I/O, no environment. main.c reads the environment and decides
 * what the parsed options mean; this module only splits argv.
 */
#ifndef AM_CLI_ARGS_H
#define AM_CLI_ARGS_H

#include <stddef.h>

#define ARGS_POS_MAX 8      /* positional words after the options */
#define ARGS_SCOPES_MAX 4   /* --scope given more than once */

/* Exit codes scripts rely on (astromesh(1), EXIT STATUS). */
enum args_exit {
    ARGS_EXIT_OK = 0,
    ARGS_EXIT_API = 1,      /* the server answered an error envelope */
    ARGS_EXIT_USAGE = 2,    /* bad command line or invalid apply file */
    ARGS_EXIT_NET = 3,      /* the server could not be reached */
    ARGS_EXIT_AUTH = 4      /* no credentials, or 401/403 */
};

struct args {
    int json, quiet, dry_run, prune, portable, help;
    const char *org, *url, *email, *name, *api_key, *file, *session;
    const char *role, *model, *prompt, *display_name, *days;
    const char *scopes[ARGS_SCOPES_MAX];
    int nscopes;
    const char *pos[ARGS_POS_MAX];   /* borrowed from argv */
    int npos;
};

/* Split argv[1..argc-1] into a: options (long "--x v", "--x=v", short
 * "-f v", "-q", "-h"; "--" ends options) and positional words in order.
 * Returns 0, or -1 with a one-line reason in err (cap bytes) for an
 * unknown option, a missing value, or too many words. Strings in a are
 * borrowed from argv. */
int args_parse(int argc, char **argv, struct args *a, char *err, size_t cap);

#endif
