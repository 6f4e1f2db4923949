/*
 * cmd.h - what every command of the astromesh client shares: the parsed
 * line, the client, and one request helper that turns an answer into an
 * exit code (reporting an error envelope on stderr).
 *
 * Each command is int cmd_<file>[_<verb>](struct cli *), defined in
 * cmd_<file>.c and declared at the end of this header, returning an exit
 * code (args.h); main.c's table maps words to them.
 */
#ifndef AM_CLI_CMD_H
#define AM_CLI_CMD_H

#include <stddef.h>
#include <json-c/json.h>
#include "cli/args.h"
#include "cli/client.h"

struct cli {
    struct args a;
    struct client c;
};

/* Build "/api/v1/orgs/{org}" followed by the escaped path segments (NULL
 * ends them) into out. Returns 0, or ARGS_EXIT_USAGE (reported) when no
 * org is known. */
int cmd_path(struct cli *x, char *out, size_t cap, ...);

/* Send a request and expect status ok_status. Returns 0 with the parsed
 * body in *out (may be NULL: caller puts; out may be NULL), or the exit
 * code of the failure (3 unreachable, 4 auth, 1 any other error), already
 * reported on stderr. */
int cmd_request(struct cli *x, const char *method, const char *path, struct json_object *body,
                long ok_status, struct json_object **out);

/* The positional word i (0 is the command), or NULL. */
const char *cmd_word(const struct cli *x, int i);

/* Report a usage problem on stderr; returns ARGS_EXIT_USAGE. */
int cmd_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Print o as JSON on stdout when --json was given; returns 1 if it did. */
int cmd_json_out(const struct cli *x, struct json_object *o);

/* The string member k of o, or "". */
const char *cmd_str(struct json_object *o, const char *k);

/* The commands (main.c's table): each reads x->a, calls the API through
 * x->c, prints, and returns an exit code. */
int cmd_agents(struct cli *x);
int cmd_run_query(struct cli *x);
int cmd_run_versions(struct cli *x);
int cmd_run_rollback(struct cli *x);
int cmd_org_usage(struct cli *x);
int cmd_org_keys(struct cli *x);
int cmd_org_providers(struct cli *x);
int cmd_org_members(struct cli *x);
int cmd_apply(struct cli *x);

#endif
