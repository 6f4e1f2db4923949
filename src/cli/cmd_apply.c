/*
 * cmd_apply.c - `astromesh apply -f FILE|DIR [--prune] [--dry-run]`: reads
 * the desired agents (applyfile.c, refused whole before any call when
 * invalid), reads the org's agents, plans (plan.c) and runs the plan.
 *
 * Prints one line per agent changed (or to change, with --dry-run) on
 * stdout, problems on stderr. Stops at the first failed call: what was
 * done before it stays done and was printed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli/applyfile.h"
#include "cli/cmd.h"
#include "cli/plan.h"
#include "lib/buf.h"
#include "lib/util.h"

#define PATH_CAP 512

/* "pause, edit (step2.system_prompt), redeploy" for it into out. */
static void describe(const struct plan_item *it, char *out, size_t cap)
{
    out[0] = '\0';
    if (it->steps & PLAN_CREATE)
        util_strlcpy(out, "create", cap);
    if (it->steps & PLAN_PAUSE)
        util_snprintf(out + strlen(out), cap - strlen(out), "%spause", out[0] ? ", " : "");
    if (it->steps & PLAN_EDIT)
        util_snprintf(out + strlen(out), cap - strlen(out), "%sedit (%s)", out[0] ? ", " : "",
                      it->fields);
    if (it->steps & PLAN_DEPLOY)
        util_snprintf(out + strlen(out), cap - strlen(out), "%s%s", out[0] ? ", " : "",
                      it->redeploy ? "redeploy" : "deploy");
    if (it->steps & PLAN_DELETE)
        util_strlcpy(out, "delete", cap);
}

/* The org's agents (names and states from the list, each WizardConfig the
 * file names from GET). Fills *cur (ncur) and *held (the answers: put
 * them). Returns 0 or an exit code. */
static int read_current(struct cli *x, const struct applyfile *f, struct plan_current **cur,
                        int *ncur, struct json_object **held)
{
    char path[PATH_CAP];
    struct json_object *list = NULL, *agents;
    int rc = cmd_path(x, path, sizeof(path), "agents", NULL);
    *cur = NULL;
    *ncur = 0;
    *held = json_object_new_array();
    if (rc != 0 || (rc = cmd_request(x, "GET", path, NULL, 200, &list)) != 0)
        return rc;
    json_object_array_add(*held, list);
    if (!json_object_object_get_ex(list, "agents", &agents) ||
        !json_object_is_type(agents, json_type_array))
        return 0;
    size_t n = json_object_array_length(agents);
    *cur = xcalloc(n + 1, sizeof(**cur));
    for (size_t i = 0; i < n; i++) {
        struct json_object *a = json_object_array_get_idx(agents, i), *one = NULL;
        struct plan_current *c = &(*cur)[(*ncur)++];
        c->name = cmd_str(a, "name");
        c->status = cmd_str(a, "status");
        for (int j = 0; j < f->n; j++) {
            if (strcmp(f->agents[j].name, c->name) != 0)
                continue;
            if ((rc = cmd_path(x, path, sizeof(path), "agents", c->name, NULL)) != 0 ||
                (rc = cmd_request(x, "GET", path, NULL, 200, &one)) != 0)
                return rc;
            json_object_array_add(*held, one);
            c->status = cmd_str(one, "status");
            c->wc = json_object_object_get(one, "wizard_config");
        }
    }
    return 0;
}

/* Run the steps of one item. Returns 0 or an exit code (reported). */
static int run_item(struct cli *x, const struct plan_item *it)
{
    char path[PATH_CAP];
    int rc = 0;
    if (it->steps & PLAN_CREATE) {
        if ((rc = cmd_path(x, path, sizeof(path), "agents", NULL)) != 0 ||
            (rc = cmd_request(x, "POST", path, it->body, 201, NULL)) != 0)
            return rc;
    }
    if (it->steps & PLAN_PAUSE) {
        if ((rc = cmd_path(x, path, sizeof(path), "agents", it->name, "pause", NULL)) != 0 ||
            (rc = cmd_request(x, "POST", path, NULL, 200, NULL)) != 0)
            return rc;
    }
    if (it->steps & PLAN_EDIT) {
        if ((rc = cmd_path(x, path, sizeof(path), "agents", it->name, NULL)) != 0 ||
            (rc = cmd_request(x, "PUT", path, it->body, 200, NULL)) != 0)
            return rc;
    }
    if (it->steps & PLAN_DEPLOY) {
        if ((rc = cmd_path(x, path, sizeof(path), "agents", it->name, "deploy", NULL)) != 0 ||
            (rc = cmd_request(x, "POST", path, NULL, 200, NULL)) != 0)
            return rc;
    }
    if (it->steps & PLAN_DELETE) {
        if ((rc = cmd_path(x, path, sizeof(path), "agents", it->name, NULL)) != 0 ||
            (rc = cmd_request(x, "DELETE", path, NULL, 204, NULL)) != 0)
            return rc;
    }
    return 0;
}

/* "step1.model, display_name" as a JSON array of strings. Caller puts. */
static struct json_object *fields_json(const char *fields)
{
    struct json_object *arr = json_object_new_array();
    while (*fields) {
        size_t n = strcspn(fields, ",");
        json_object_array_add(arr, json_object_new_string_len(fields, (int)n));
        fields += n;
        while (*fields == ',' || *fields == ' ')
            fields++;
    }
    return arr;
}

/* The plan as JSON for --json. Caller puts. */
static struct json_object *plan_json(const struct plan *p, int dry_run)
{
    static const char *const names[] = { "create", "pause", "edit", "deploy", "delete" };
    struct json_object *o = json_object_new_object(), *arr = json_object_new_array();
    for (int i = 0; i < p->n; i++) {
        const struct plan_item *it = &p->items[i];
        struct json_object *a = json_object_new_object(), *steps = json_object_new_array();
        for (int b = 0; b < 5; b++)
            if (it->steps & (1 << b))
                json_object_array_add(steps, json_object_new_string(names[b]));
        json_object_object_add(a, "name", json_object_new_string(it->name));
        json_object_object_add(a, "steps", steps);
        json_object_object_add(a, "fields", fields_json(it->fields));
        json_object_array_add(arr, a);
    }
    json_object_object_add(o, "dry_run", json_object_new_boolean(dry_run));
    json_object_object_add(o, "changes", json_object_new_int(p->changes));
    json_object_object_add(o, "agents", arr);
    return o;
}

/* Print (and unless dry, run) the plan. Returns 0 or an exit code. */
static int run_plan(struct cli *x, const struct plan *p)
{
    char line[1024];
    int rc = 0, done = 0;
    const char *failed = "";
    for (int i = 0; i < p->n && rc == 0; i++) {
        const struct plan_item *it = &p->items[i];
        if (it->steps == 0)
            continue;
        if (!x->a.dry_run && (rc = run_item(x, it)) != 0) {
            failed = it->name;
            break;
        }
        done++;
        describe(it, line, sizeof(line));
        if (!x->a.json && !x->a.quiet)
            printf("%s%s: %s\n", x->a.dry_run ? "would " : "", it->name, line);
    }
    if (rc != 0) {
        fprintf(stderr, "astromesh: apply stopped at agent '%s' after %d change(s)\n",
                failed, done);
        return rc;
    }
    struct json_object *j = plan_json(p, x->a.dry_run);
    if (!cmd_json_out(x, j) && !x->a.quiet) {
        if (p->changes == 0)
            printf("no changes: %d agent(s) up to date\n", p->n);
        else if (x->a.dry_run)
            printf("dry run: %d agent(s) would change; nothing was changed\n", p->changes);
        else
            printf("applied: %d agent(s) changed, %d up to date\n", p->changes, p->n - p->changes);
    }
    json_object_put(j);
    return 0;
}

int cmd_apply(struct cli *x)
{
    struct applyfile f = { 0 };
    struct buf errs = { 0 };
    struct plan p = { 0 };
    struct plan_current *cur = NULL;
    struct json_object *held = NULL;
    int ncur = 0, rc;
    if (x->a.file == NULL)
        return cmd_usage("apply -f FILE|DIR: which file?");
    if (applyfile_load(x->a.file, &f, &errs) != 0) {
        fputs(errs.z ? errs.z : "", stderr);
        fprintf(stderr, "astromesh: %s: invalid; nothing was applied\n", x->a.file);
        rc = ARGS_EXIT_USAGE;
        goto out;
    }
    if ((rc = read_current(x, &f, &cur, &ncur, &held)) != 0)
        goto out;
    plan_make(&f, cur, ncur, x->a.prune, &p);
    rc = run_plan(x, &p);
out:
    plan_free(&p);
    free(cur);
    json_object_put(held);
    applyfile_free(&f);
    buf_free(&errs);
    return rc;
}
