/*
 * plan.h - the planner of `astromesh apply`: from the desired agents (the
 * file) and the org's current agents, the steps that make the org match.
 *
 * Pure: no I/O. The rules (astromesh(1), APPLY):
 *   missing            -> create, then deploy if the file says deployed: true
 *   differs            -> edit with a partial WizardConfig of the differing
 *                         fields (pause first if deployed, and redeploy after
 *                         unless the file says deployed: false)
 *   deployed: true     -> deploy when draft or paused
 *   deployed: false    -> pause when deployed (a draft stays a draft)
 *   deployed absent    -> the state is left as it is
 *   --prune            -> delete the org's agents the file does not name,
 *                         before anything else (an org at its max_agents
 *                         can swap an agent for another)
 * Only fields the file gives are compared: a field the file leaves out
 * keeps the server's value (PUT merges the same way). Inside a step each
 * field is compared whole (tool_configs, tools lists).
 */
#ifndef AM_CLI_PLAN_H
#define AM_CLI_PLAN_H

#include <stddef.h>
#include <json-c/json.h>
#include "cli/applyfile.h"

/* The steps of one agent, run in this order. */
enum plan_step {
    PLAN_CREATE = 1,
    PLAN_PAUSE = 2,
    PLAN_EDIT = 4,
    PLAN_DEPLOY = 8,
    PLAN_DELETE = 16
};

struct plan_item {
    char name[64];
    int steps;                   /* enum plan_step bits; 0: up to date */
    int redeploy;                /* PLAN_DEPLOY after a PLAN_PAUSE of a deployed agent */
    struct json_object *body;    /* create: the WizardConfig; edit: the patch (owned) */
    char fields[512];            /* the changed fields, "step1.model, display_name" */
};

/* What the server has: from GET /agents and GET /agents/{name}. */
struct plan_current {
    const char *name;
    const char *status;          /* "draft" | "deployed" | "paused" */
    struct json_object *wc;      /* its wizard_config (borrowed; NULL if not read) */
};

struct plan {
    struct plan_item *items;     /* one per pruned agent, then one per desired */
    int n;
    int changes;                 /* items with steps != 0 */
};

/* Plan desired against cur (ncur entries). Returns 0; out is filled
 * (free with plan_free). */
int plan_make(const struct applyfile *desired, const struct plan_current *cur, int ncur,
              int prune, struct plan *out);

/* Free what plan_make filled. */
void plan_free(struct plan *p);

/* The partial WizardConfig of want's fields that differ from have (NULL
 * when none; caller puts), their paths comma-separated into fields (cap
 * bytes). `name` is never part of it. */
struct json_object *plan_diff(struct json_object *want, struct json_object *have, char *fields,
                              size_t cap);

#endif
