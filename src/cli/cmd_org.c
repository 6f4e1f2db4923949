/*
 * cmd_org.c - the organization commands of the astromesh client: usage
 * (a table and a chart of requests per day), keys, providers, members.
 *
 * Prints on stdout (results) and stderr (errors). A provider key read
 * from standard input never appears in an argument list.
 */
#include <stdio.h>
#include <string.h>
#include "cli/cmd.h"
#include "cli/output.h"
#include "lib/util.h"

#define PATH_CAP 512

/* GET path and print member `key` of the answer as a table (or --json). */
static int list(struct cli *x, const char *what, const char *key, const struct output_col *cols,
                int ncols)
{
    char path[PATH_CAP];
    struct json_object *o = NULL, *rows;
    int rc = cmd_path(x, path, sizeof(path), what, NULL);
    if (rc == 0 && (rc = cmd_request(x, "GET", path, NULL, 200, &o)) == 0 && !cmd_json_out(x, o) &&
        json_object_object_get_ex(o, key, &rows))
        output_table(stdout, cols, ncols, rows);
    json_object_put(o);
    return rc;
}

/* DELETE {what}/{item}, 204. */
static int remove_item(struct cli *x, const char *what, const char *item, const char *done)
{
    char path[PATH_CAP];
    int rc = cmd_path(x, path, sizeof(path), what, item, NULL);
    if (rc == 0 && (rc = cmd_request(x, "DELETE", path, NULL, 204, NULL)) == 0 && !x->a.quiet)
        printf("%s %s\n", done, item);
    return rc;
}

int cmd_org_usage(struct cli *x)
{
    static const struct output_col cols[] = {
        { "AGENT", "agent" }, { "REQUESTS", "requests" }, { "TOKENS", "tokens" } };
    char path[PATH_CAP], q[32] = "";
    struct json_object *o = NULL, *v;
    if (x->a.days)
        util_snprintf(q, sizeof(q), "?days=%.8s", x->a.days);
    int rc = cmd_path(x, path, sizeof(path), "usage", q[0] ? q : NULL, NULL);
    if (rc != 0 || (rc = cmd_request(x, "GET", path, NULL, 200, &o)) != 0 || cmd_json_out(x, o))
        goto out;
    printf("last %s days: %s requests, %s tokens; today %s of %s left\n\n",
           json_object_to_json_string(json_object_object_get(o, "period_days")),
           json_object_to_json_string(json_object_object_get(o, "total_requests")),
           json_object_to_json_string(json_object_object_get(o, "total_tokens")),
           json_object_to_json_string(json_object_object_get(o, "remaining_today")),
           json_object_to_json_string(json_object_object_get(o, "daily_limit")));
    if (json_object_object_get_ex(o, "by_agent", &v))
        output_table(stdout, cols, 3, v);
    if (json_object_object_get_ex(o, "by_day", &v)) {
        printf("\nrequests per day\n");
        output_chart(stdout, v, "date", "requests", 40);
    }
out:
    json_object_put(o);
    return rc;
}

int cmd_org_keys(struct cli *x)
{
    static const struct output_col cols[] = {
        { "ID", "id" }, { "NAME", "name" }, { "PREFIX", "prefix" }, { "SCOPES", "scopes" },
        { "CREATED", "created_at" }, { "LAST USED", "last_used_at" } };
    const char *verb = cmd_word(x, 1), *arg = cmd_word(x, 2);
    char path[PATH_CAP];
    if (verb && strcmp(verb, "list") == 0)
        return list(x, "keys", "keys", cols, 6);
    if (verb && strcmp(verb, "revoke") == 0 && arg)
        return remove_item(x, "keys", arg, "revoked");
    if (!verb || strcmp(verb, "create") != 0 || !arg)
        return cmd_usage("keys list | create NAME [--scope run|manage] | revoke ID");
    struct json_object *body = json_object_new_object(), *scopes = json_object_new_array(), *o = NULL;
    for (int i = 0; i < x->a.nscopes; i++)
        json_object_array_add(scopes, json_object_new_string(x->a.scopes[i]));
    if (x->a.nscopes == 0)
        json_object_array_add(scopes, json_object_new_string("run"));
    json_object_object_add(body, "name", json_object_new_string(arg));
    json_object_object_add(body, "scopes", scopes);
    int rc = cmd_path(x, path, sizeof(path), "keys", NULL);
    if (rc == 0 && (rc = cmd_request(x, "POST", path, body, 201, &o)) == 0 && !cmd_json_out(x, o)) {
        if (x->a.quiet)
            printf("%s\n", cmd_str(o, "secret"));
        else
            printf("created key %s (%s)\nsecret (shown this once): %s\n", cmd_str(o, "id"),
                   cmd_str(o, "name"), cmd_str(o, "secret"));
    }
    json_object_put(body);
    json_object_put(o);
    return rc;
}

/* providers set PROVIDER [KEY]: the key from the word, or standard input. */
static int providers_set(struct cli *x, const char *provider, const char *key)
{
    char path[PATH_CAP], line[1024];
    struct json_object *body, *o = NULL;
    if (key == NULL) {
        if (fgets(line, sizeof(line), stdin) == NULL)
            return cmd_usage("providers set %s: give the key, or pipe it on standard input", provider);
        line[strcspn(line, "\r\n")] = '\0';
        key = line;
    }
    body = json_object_new_object();
    json_object_object_add(body, "provider", json_object_new_string(provider));
    json_object_object_add(body, "api_key", json_object_new_string(key));
    int rc = cmd_path(x, path, sizeof(path), "providers", NULL);
    if (rc == 0 && (rc = cmd_request(x, "POST", path, body, 200, &o)) == 0 && !cmd_json_out(x, o) &&
        !x->a.quiet)
        printf("%s key %s\n", provider, cmd_str(o, "status"));
    json_object_put(body);
    json_object_put(o);
    return rc;
}

int cmd_org_providers(struct cli *x)
{
    static const struct output_col cols[] = {
        { "PROVIDER", "provider" }, { "KEY", "masked_key" }, { "ADDED", "added_at" } };
    const char *verb = cmd_word(x, 1), *arg = cmd_word(x, 2);
    if (verb && strcmp(verb, "list") == 0)
        return list(x, "providers", "providers", cols, 3);
    if (verb && strcmp(verb, "set") == 0 && arg)
        return providers_set(x, arg, cmd_word(x, 3));
    if (verb && strcmp(verb, "delete") == 0 && arg)
        return remove_item(x, "providers", arg, "deleted the key of");
    return cmd_usage("providers list | set PROVIDER [KEY] | delete PROVIDER");
}

int cmd_org_members(struct cli *x)
{
    static const struct output_col cols[] = {
        { "EMAIL", "email" }, { "NAME", "name" }, { "ROLE", "role" }, { "STATUS", "status" },
        { "JOINED", "joined_at" } };
    const char *verb = cmd_word(x, 1), *arg = cmd_word(x, 2);
    char path[PATH_CAP];
    if (verb && strcmp(verb, "list") == 0)
        return list(x, "members", "members", cols, 5);
    if (verb && strcmp(verb, "remove") == 0 && arg)
        return remove_item(x, "members", arg, "removed");
    if (!verb || strcmp(verb, "invite") != 0 || !arg)
        return cmd_usage("members list | invite EMAIL [--role member|admin] | remove EMAIL");
    struct json_object *body = json_object_new_object(), *o = NULL;
    json_object_object_add(body, "email", json_object_new_string(arg));
    json_object_object_add(body, "role", json_object_new_string(x->a.role ? x->a.role : "member"));
    int rc = cmd_path(x, path, sizeof(path), "members", "invite", NULL);
    if (rc == 0 && (rc = cmd_request(x, "POST", path, body, 201, &o)) == 0 && !cmd_json_out(x, o) &&
        !x->a.quiet)
        printf("invited %s as %s\n", cmd_str(o, "email"), cmd_str(o, "role"));
    json_object_put(body);
    json_object_put(o);
    return rc;
}
