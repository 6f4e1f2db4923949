/*
 * plan.c - decides what `astromesh apply` does to each agent.
 *
 * Owns the plan items and their JSON bodies. Pure: never prints, never
 * calls the API (cmd_apply.c runs the plan).
 */
#include <stdlib.h>
#include <string.h>
#include "cli/plan.h"
#include "lib/util.h"

static void field_add(char *fields, size_t cap, const char *path)
{
    size_t n = strlen(fields);
    util_snprintf(fields + n, cap - n, "%s%s", n ? ", " : "", path);
}

/* Diff one level: objects at depth 0 (the steps) are compared field by
 * field, everything else whole. */
static struct json_object *diff_level(struct json_object *want, struct json_object *have,
                                      const char *prefix, int depth, char *fields, size_t cap)
{
    struct json_object *patch = NULL;
    json_object_object_foreach(want, k, w) {
        struct json_object *h = NULL, *sub;
        char path[128];
        if (depth == 0 && strcmp(k, "name") == 0)
            continue;
        if (have && json_object_is_type(have, json_type_object))
            json_object_object_get_ex(have, k, &h);
        util_snprintf(path, sizeof(path), "%s%s%s", prefix, prefix[0] ? "." : "", k);
        if (depth == 0 && w && json_object_is_type(w, json_type_object)) {
            sub = diff_level(w, h, path, depth + 1, fields, cap);
        } else if (json_object_equal(w, h)) {
            continue;
        } else {
            field_add(fields, cap, path);
            sub = json_object_get(w);
            if (sub == NULL)
                sub = json_object_new_null();
        }
        if (sub == NULL)
            continue;
        if (patch == NULL)
            patch = json_object_new_object();
        json_object_object_add(patch, k, sub);
    }
    return patch;
}

struct json_object *plan_diff(struct json_object *want, struct json_object *have, char *fields,
                              size_t cap)
{
    fields[0] = '\0';
    return diff_level(want, have, "", 0, fields, cap);
}

static const struct plan_current *cur_find(const struct plan_current *cur, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(cur[i].name, name) == 0)
            return &cur[i];
    return NULL;
}

/* The steps for one desired agent a, given what the server has (or NULL). */
static void plan_one(const struct applyfile_agent *a, const struct plan_current *c,
                     struct plan_item *it)
{
    util_strlcpy(it->name, a->name, sizeof(it->name));
    if (c == NULL) {
        it->steps = PLAN_CREATE | (a->deployed == 1 ? PLAN_DEPLOY : 0);
        it->body = json_object_get(a->wc);
        return;
    }
    int deployed = strcmp(c->status, "deployed") == 0;
    it->body = plan_diff(a->wc, c->wc, it->fields, sizeof(it->fields));
    if (it->body) {
        it->steps |= PLAN_EDIT;
        if (deployed) {
            it->steps |= PLAN_PAUSE;
            if (a->deployed != 0) {
                it->steps |= PLAN_DEPLOY;
                it->redeploy = 1;
            }
        } else if (a->deployed == 1) {
            it->steps |= PLAN_DEPLOY;
        }
    } else if (a->deployed == 1 && !deployed) {
        it->steps |= PLAN_DEPLOY;
    } else if (a->deployed == 0 && deployed) {
        it->steps |= PLAN_PAUSE;
    }
}

int plan_make(const struct applyfile *desired, const struct plan_current *cur, int ncur,
              int prune, struct plan *out)
{
    memset(out, 0, sizeof(*out));
    out->items = xcalloc((size_t)(desired->n + ncur + 1), sizeof(*out->items));
    for (int i = 0; prune && i < ncur; i++) {     /* first: frees room under max_agents */
        int named = 0;
        for (int j = 0; j < desired->n && !named; j++)
            named = strcmp(desired->agents[j].name, cur[i].name) == 0;
        if (named)
            continue;
        struct plan_item *it = &out->items[out->n++];
        util_strlcpy(it->name, cur[i].name, sizeof(it->name));
        it->steps = PLAN_DELETE;
    }
    for (int i = 0; i < desired->n; i++) {
        struct plan_item *it = &out->items[out->n++];
        plan_one(&desired->agents[i], cur_find(cur, ncur, desired->agents[i].name), it);
    }
    for (int i = 0; i < out->n; i++)
        out->changes += out->items[i].steps != 0;
    return 0;
}

void plan_free(struct plan *p)
{
    for (int i = 0; i < p->n; i++)
        json_object_put(p->items[i].body);
    free(p->items);
    memset(p, 0, sizeof(*p));
}
