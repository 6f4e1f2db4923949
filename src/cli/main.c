/*
 * main.c - the astromesh client: the command table, where the URL, org and
 * credentials come from, login and logout.
 *
 * Owns the process: curl's global state, the exit code. Precedence of
 * settings: --url/--org, then ASTROMESH_URL / ASTROMESH_ORG, then the
 * credentials file; ASTROMESH_TOKEN or ASTROMESH_API_KEY replace the saved
 * credentials (and are never refreshed or saved).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <curl/curl.h>
#include "cli/applyfile.h"
#include "cli/cmd.h"
#include "cli/creds.h"
#include "lib/util.h"

#define DEFAULT_URL "http://localhost:8080"

static const char usage_text[] =
    "usage: astromesh [--url URL] [--org SLUG] [--json] [--quiet] COMMAND ...\n"
    "  login --email EMAIL [--name NAME]      dev login; saves the tokens\n"
    "  login --api-key KEY --org SLUG         use an org API key\n"
    "  logout\n"
    "  agents list | get NAME | create (-f FILE | NAME --model M --prompt P)\n"
    "  agents edit NAME (-f FILE | --model M | --prompt P | --display-name D)\n"
    "  agents delete|deploy|pause NAME        agents yaml NAME [--portable]\n"
    "  run|test NAME [QUERY] [--session ID]   (QUERY from standard input if absent)\n"
    "  usage [--days N]\n"
    "  keys list | create NAME [--scope run|manage]... | revoke ID\n"
    "  providers list | set PROVIDER [KEY] | delete PROVIDER\n"
    "  members list | invite EMAIL [--role member|admin] | remove EMAIL\n"
    "  versions NAME [N]                      rollback NAME N\n"
    "  apply -f FILE|DIR [--prune] [--dry-run]\n"
    "exit status: 0 ok, 1 API error, 2 usage, 3 server unreachable, 4 authentication\n";

static int cmd_login(struct cli *x);
static int cmd_logout(struct cli *x);

static const struct {
    const char *word;
    int (*fn)(struct cli *x);
    int needs_auth;
} commands[] = {
    { "login", cmd_login, 0 },
    { "logout", cmd_logout, 0 },
    { "agents", cmd_agents, 1 },
    { "run", cmd_run_query, 1 },
    { "test", cmd_run_query, 1 },
    { "versions", cmd_run_versions, 1 },
    { "rollback", cmd_run_rollback, 1 },
    { "usage", cmd_org_usage, 1 },
    { "keys", cmd_org_keys, 1 },
    { "providers", cmd_org_providers, 1 },
    { "members", cmd_org_members, 1 },
    { "apply", cmd_apply, 1 },
};

/* Fill x->c from the options, the environment and the credentials file.
 * Returns 0 or an exit code (reported). */
static int settings(struct cli *x)
{
    char err[512];
    const char *env;
    struct client *c = &x->c;
    if (creds_path(c->creds_path, sizeof(c->creds_path)) != 0)
        return cmd_usage("set HOME or XDG_CONFIG_HOME (where the credentials live)");
    if (creds_load(c->creds_path, &c->creds, err, sizeof(err)) < 0)
        fprintf(stderr, "astromesh: warning: %s\n", err);
    util_strlcpy(c->url, c->creds.url[0] ? c->creds.url : DEFAULT_URL, sizeof(c->url));
    if ((env = getenv("ASTROMESH_URL")) && env[0])
        util_strlcpy(c->url, env, sizeof(c->url));
    if (x->a.url)
        util_strlcpy(c->url, x->a.url, sizeof(c->url));
    size_t n = strlen(c->url);
    while (n > 0 && c->url[n - 1] == '/')
        c->url[--n] = '\0';
    util_strlcpy(c->org, c->creds.org, sizeof(c->org));
    if ((env = getenv("ASTROMESH_ORG")) && env[0])
        util_strlcpy(c->org, env, sizeof(c->org));
    if (x->a.org)
        util_strlcpy(c->org, x->a.org, sizeof(c->org));
    if ((env = getenv("ASTROMESH_TOKEN")) && env[0]) {
        util_strlcpy(c->token, env, sizeof(c->token));
    } else if ((env = getenv("ASTROMESH_API_KEY")) && env[0]) {
        util_strlcpy(c->api_key, env, sizeof(c->api_key));
    } else if (c->creds.api_key[0]) {
        util_strlcpy(c->api_key, c->creds.api_key, sizeof(c->api_key));
    } else if (c->creds.access_token[0]) {
        util_strlcpy(c->token, c->creds.access_token, sizeof(c->token));
        c->refreshable = 1;
    }
    return 0;
}

/* login: a dev login (--email) or an API key (--api-key with --org),
 * checked against the server, then saved. */
static int cmd_login(struct cli *x)
{
    struct creds nc;
    struct json_object *ans = NULL, *req = NULL;
    char err[512], path[256];
    int rc;
    memset(&nc, 0, sizeof(nc));
    util_strlcpy(nc.url, x->c.url, sizeof(nc.url));
    x->c.token[0] = x->c.api_key[0] = '\0';
    x->c.refreshable = 0;
    if (x->a.api_key) {
        if (!x->a.org)
            return cmd_usage("login --api-key needs --org SLUG (the key's organization)");
        util_strlcpy(x->c.api_key, x->a.api_key, sizeof(x->c.api_key));
        if ((rc = cmd_path(x, path, sizeof(path), "agents", NULL)) != 0 ||
            (rc = cmd_request(x, "GET", path, NULL, 200, NULL)) != 0)
            return rc;
        util_strlcpy(nc.api_key, x->a.api_key, sizeof(nc.api_key));
        util_strlcpy(nc.org, x->a.org, sizeof(nc.org));
    } else if (x->a.email) {
        req = json_object_new_object();
        json_object_object_add(req, "email", json_object_new_string(x->a.email));
        json_object_object_add(req, "name", json_object_new_string(x->a.name ? x->a.name : x->a.email));
        rc = cmd_request(x, "POST", "/api/v1/auth/dev/login", req, 200, &ans);
        json_object_put(req);
        if (rc != 0)
            return rc;
        util_strlcpy(nc.access_token, cmd_str(ans, "access_token"), sizeof(nc.access_token));
        util_strlcpy(nc.refresh_token, cmd_str(ans, "refresh_token"), sizeof(nc.refresh_token));
        util_strlcpy(nc.org, x->a.org ? x->a.org : cmd_str(ans, "org_slug"), sizeof(nc.org));
        json_object_put(ans);
    } else {
        return cmd_usage("login needs --email EMAIL or --api-key KEY --org SLUG");
    }
    if (creds_save(x->c.creds_path, &nc, err, sizeof(err)) != 0) {
        fprintf(stderr, "astromesh: %s\n", err);
        return ARGS_EXIT_API;
    }
    if (!x->a.quiet)
        printf("logged in to %s, organization %s\n", nc.url, nc.org);
    return 0;
}

/* logout: end the session on the server (best effort) and forget it here. */
static int cmd_logout(struct cli *x)
{
    char err[512];
    if (x->c.token[0] && x->c.refreshable) {
        struct client_resp r = { 0 };
        x->c.refreshable = 0;
        (void)client_call(&x->c, "POST", "/api/v1/auth/logout", NULL, NULL, NULL, &r);
        client_resp_free(&r);
    }
    if (creds_remove(x->c.creds_path, err, sizeof(err)) != 0) {
        fprintf(stderr, "astromesh: %s\n", err);
        return ARGS_EXIT_API;
    }
    if (!x->a.quiet)
        printf("logged out\n");
    return 0;
}

int main(int argc, char **argv)
{
    struct cli x;
    char err[256];
    int rc;
    memset(&x, 0, sizeof(x));
    if (args_parse(argc, argv, &x.a, err, sizeof(err)) != 0) {
        fprintf(stderr, "astromesh: %s\n%s", err, usage_text);
        return ARGS_EXIT_USAGE;
    }
    if (x.a.help || x.a.npos == 0) {
        fputs(usage_text, x.a.help ? stdout : stderr);
        return x.a.help ? 0 : ARGS_EXIT_USAGE;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(commands[i].word, x.a.pos[0]) != 0)
            continue;
        if ((rc = settings(&x)) != 0)
            return rc;
        if (commands[i].needs_auth && !x.c.token[0] && !x.c.api_key[0]) {
            fprintf(stderr, "astromesh: not logged in: run 'astromesh login', or set "
                            "ASTROMESH_TOKEN or ASTROMESH_API_KEY\n");
            return ARGS_EXIT_AUTH;
        }
        curl_global_init(CURL_GLOBAL_DEFAULT);
        rc = commands[i].fn(&x);
        curl_global_cleanup();
        return rc;
    }
    fprintf(stderr, "astromesh: unknown command '%s'\n%s", x.a.pos[0], usage_text);
    return ARGS_EXIT_USAGE;
}
