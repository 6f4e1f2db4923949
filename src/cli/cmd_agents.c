/*
 * cmd_agents.c - the agent commands of the astromesh client: agents
 * list|get|create|edit|delete|deploy|pause|yaml, run and test (read as
 * Server-Sent Events, tokens printed as they arrive), versions, rollback.
 *
 * Maps words to API calls and answers to text; prints on stdout (results)
 * and stderr (errors). Owns nothing across calls.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli/applyfile.h"
#include "cli/cmd.h"
#include "cli/output.h"
#include "lib/buf.h"
#include "lib/util.h"

#define PATH_CAP 512
#define QUERY_MAX (32u * 1024u)

static int agents_list(struct cli *x)
{
    static const struct output_col cols[] = {
        { "NAME", "name" }, { "STATUS", "status" }, { "MODEL", "model" },
        { "VERSION", "version" }, { "UPDATED", "updated_at" },
    };
    char path[PATH_CAP];
    struct json_object *o = NULL, *agents;
    int rc = cmd_path(x, path, sizeof(path), "agents", NULL);
    if (rc == 0 && (rc = cmd_request(x, "GET", path, NULL, 200, &o)) == 0 && !cmd_json_out(x, o) &&
        json_object_object_get_ex(o, "agents", &agents))
        output_table(stdout, cols, 5, agents);
    json_object_put(o);
    return rc;
}

static int agents_get(struct cli *x, const char *name)
{
    static const char *const keys[] = { "name", "display_name", "status", "agent_id", "version",
                                        "draft_changed", "created_at", "updated_at",
                                        "deployed_at", "paused_at" };
    char path[PATH_CAP], cell[256];
    struct json_object *o = NULL, *wc;
    int rc = cmd_path(x, path, sizeof(path), "agents", name, NULL);
    if (rc != 0 || (rc = cmd_request(x, "GET", path, NULL, 200, &o)) != 0 || cmd_json_out(x, o))
        goto out;
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        output_cell(o, keys[i], cell, sizeof(cell));
        printf("%-14s %s\n", keys[i], cell);
    }
    if (json_object_object_get_ex(o, "wizard_config", &wc)) {
        printf("wizard_config:\n");
        output_json(stdout, wc);
    }
out:
    json_object_put(o);
    return rc;
}

/* The body of create/edit: -f FILE, or the flags. NULL if neither (reported). */
static struct json_object *agent_body(struct cli *x, const char *name, int *rc)
{
    char err[1400];
    struct json_object *o, *step;
    if (x->a.file) {
        if ((o = applyfile_read_doc(x->a.file, err, sizeof(err))) == NULL)
            *rc = cmd_usage("%s", err);
        return o;
    }
    if (!x->a.model && !x->a.prompt && !x->a.display_name && !name) {
        *rc = cmd_usage("give -f FILE, or --model, --prompt, --display-name");
        return NULL;
    }
    o = json_object_new_object();
    if (name)
        json_object_object_add(o, "name", json_object_new_string(name));
    if (x->a.display_name)
        json_object_object_add(o, "display_name", json_object_new_string(x->a.display_name));
    if (x->a.model) {
        step = json_object_new_object();
        json_object_object_add(step, "model", json_object_new_string(x->a.model));
        json_object_object_add(o, "step1", step);
    }
    if (x->a.prompt) {
        step = json_object_new_object();
        json_object_object_add(step, "system_prompt", json_object_new_string(x->a.prompt));
        json_object_object_add(o, "step2", step);
    }
    return o;
}

static int agents_write(struct cli *x, const char *verb, const char *name)
{
    char path[PATH_CAP];
    int create = strcmp(verb, "create") == 0, rc = 0;
    struct json_object *body = NULL, *o = NULL;
    if (!create && !name)
        return cmd_usage("agents edit NAME: which agent?");
    if ((body = agent_body(x, create && !x->a.file ? name : NULL, &rc)) == NULL)
        return rc;
    if (create && name && !json_object_object_get_ex(body, "name", NULL))
        json_object_object_add(body, "name", json_object_new_string(name));
    if ((rc = cmd_path(x, path, sizeof(path), "agents", create ? NULL : name, NULL)) == 0 &&
        (rc = cmd_request(x, create ? "POST" : "PUT", path, body, create ? 201 : 200, &o)) == 0 &&
        !cmd_json_out(x, o) && !x->a.quiet)
        printf("%s %s (%s)\n", create ? "created" : "edited", cmd_str(o, "name"),
               cmd_str(o, "status"));
    json_object_put(body);
    json_object_put(o);
    return rc;
}

/* delete, deploy, pause: one call on one agent. */
static int agents_action(struct cli *x, const char *verb, const char *name)
{
    char path[PATH_CAP];
    struct json_object *o = NULL;
    int del = strcmp(verb, "delete") == 0;
    int rc = cmd_path(x, path, sizeof(path), "agents", name, del ? NULL : verb, NULL);
    if (rc != 0 || (rc = cmd_request(x, del ? "DELETE" : "POST", path, NULL, del ? 204 : 200, &o)))
        goto out;
    if (o && cmd_json_out(x, o))
        goto out;
    if (x->a.quiet)
        goto out;
    if (del)
        printf("deleted %s\n", name);
    else if (strcmp(verb, "deploy") == 0)
        printf("deployed %s as %s (version %s)\n", name, cmd_str(o, "agent_id"),
               json_object_to_json_string(json_object_object_get(o, "version")));
    else
        printf("paused %s\n", name);
out:
    json_object_put(o);
    return rc;
}

static int agents_yaml(struct cli *x, const char *name)
{
    char path[PATH_CAP];
    struct json_object *o = NULL;
    int rc = cmd_path(x, path, sizeof(path), "agents", name, "yaml",
                          x->a.portable ? "?portable=true" : NULL, NULL);
    if (rc == 0 && (rc = cmd_request(x, "GET", path, NULL, 200, &o)) == 0) {
        const char *s = json_object_is_type(o, json_type_string) ? json_object_get_string(o)
                        : json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY);
        fputs(s, stdout);
        if (s[0] && s[strlen(s) - 1] != '\n')
            fputc('\n', stdout);
    }
    json_object_put(o);
    return rc;
}

int cmd_agents(struct cli *x)
{
    const char *verb = cmd_word(x, 1), *name = cmd_word(x, 2);
    if (verb == NULL)
        return cmd_usage("agents: give list, get, create, edit, delete, deploy, pause or yaml");
    if (strcmp(verb, "list") == 0)
        return agents_list(x);
    if (strcmp(verb, "create") == 0 || strcmp(verb, "edit") == 0)
        return agents_write(x, verb, name);
    if (name == NULL)
        return cmd_usage("agents %s NAME: which agent?", verb);
    if (strcmp(verb, "get") == 0)
        return agents_get(x, name);
    if (strcmp(verb, "yaml") == 0)
        return agents_yaml(x, name);
    if (strcmp(verb, "delete") == 0 || strcmp(verb, "deploy") == 0 || strcmp(verb, "pause") == 0)
        return agents_action(x, verb, name);
    return cmd_usage("agents: unknown command '%s'", verb);
}
