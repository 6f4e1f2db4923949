/*
 * agent.h - the agent lifecycle: create, edit, deploy, pause, delete, and
 * keeping the runtime registry in step with the database.
 *
 * States and the function that performs each transition:
 *
 *     agent_create ──> [draft] ──agent_deploy──> [deployed] ──agent_pause──> [paused]
 *                                                     ^                           │
 *                                                     └───────agent_deploy────────┘
 *     agent_delete: from any state (unloads from the registry first if deployed)
 *     agent_update: draft and paused only (409 agent_deployed otherwise)
 *     agent_rollback: any state with versions, staying in it (deployed: the
 *                     registry switches to the version's compilation)
 *
 * Versions: agent_deploy of a config that differs from the version the
 * agent is at makes version latest+1 (control/versions.c holds them);
 * GET answers say which version ("version") and whether the config
 * changed since ("draft_changed").
 *
 * Every transition is one Berkeley DB transaction that holds the agent
 * record's write lock while it also changes the registry, so the stored
 * state, the registry and the answer agree under any interleaving.
 */
#ifndef AM_AGENT_H
#define AM_AGENT_H

#include <stddef.h>
#include <stdint.h>
#include <json-c/json.h>
#include "state/app.h"
#include "lib/error.h"

enum agent_status { AGENT_DRAFT = 0, AGENT_DEPLOYED, AGENT_PAUSED };

/* Create a draft from a WizardConfig body (validated here; borrowed: the
 * caller still puts wc). On 0, *out is the agent object (caller puts). Errors: AM_EVALIDATION, AM_EEXISTS,
 * AM_EPLANLIMIT, AM_EIO. */
int agent_create(struct app *app, const char *org, struct json_object *wc,
                 struct json_object **out, struct am_error *err);

/* The agent object for GET (every state). AM_EAGENTNOTFOUND if none. */
int agent_get(struct app *app, const char *org, const char *name,
              struct json_object **out, struct am_error *err);

/* The agent's state (enum agent_status), or AM_EAGENTNOTFOUND. */
int agent_status(struct app *app, const char *org, const char *name);

/* The name of a state: "draft", "deployed", "paused". */
const char *agent_status_name(int status);

/* GET /health: *out = {"status","version","registry":{"agents"},"db"}, set
 * whatever the answer (caller puts). Returns 0 if the database answers a
 * ping, AM_EUNAVAILABLE if not (then "status" and "db" are "unavailable"). */
int agent_health(struct app *app, struct json_object **out);

/* {"agents":[…]} for the org. */
int agent_list(struct app *app, const char *org, struct json_object **out,
               struct am_error *err);

/* Merge a partial WizardConfig into a draft or paused agent (patch is
 * borrowed: the caller still puts it). */
int agent_update(struct app *app, const char *org, const char *name,
                 struct json_object *patch, struct json_object **out,
                 struct am_error *err);

/* Remove the agent from any state. */
int agent_delete(struct app *app, const char *org, const char *name,
                 struct am_error *err);

/* draft|paused -> deployed, at the version the agent is at when its config
 * is unchanged since, else at a new version (by: who deploys, recorded on
 * it; NULL if unknown). *out = {"status","agent_id","deployed_at",
 * "version"} (caller puts). */
int agent_deploy(struct app *app, const char *org, const char *name, const char *by,
                 struct json_object **out, struct am_error *err);

/* POST rollback {"version":n} (body borrowed): the config becomes version
 * n's; a deployed agent's registry entry switches to version n's
 * compilation in the same transaction. *out = the agent object (caller
 * puts). Errors: AM_EVALIDATION (body), AM_EAGENTNOTFOUND,
 * AM_EVERSIONNOTFOUND, AM_EKEYMISSING (nothing changed), AM_EINVALIDCONFIG,
 * AM_EUNAVAILABLE, AM_EIO. */
int agent_rollback(struct app *app, const char *org, const char *name, const char *by,
                   struct json_object *body, struct json_object **out, struct am_error *err);

/* {"versions":[…]} newest first: at most limit (<= 0: all) numbered below
 * before (0: no bound). *out caller puts. */
int agent_versions(struct app *app, const char *org, const char *name, int limit,
                   int64_t before, struct json_object **out, struct am_error *err);

/* Version n (a path segment) of the agent: {"version","wizard_config",
 * "yaml",…}. AM_EVERSIONNOTFOUND when n names none. *out caller puts. */
int agent_version_get(struct app *app, const char *org, const char *name, const char *n,
                      struct json_object **out, struct am_error *err);

/* {"from","to","changes":[{"path","from","to"}]} from version a to b (path
 * segments). AM_EVERSIONNOTFOUND when either names none. */
int agent_version_diff(struct app *app, const char *org, const char *name, const char *a,
                       const char *b, struct json_object **out, struct am_error *err);

/* deployed -> paused. *out = {"status","paused_at"}. */
int agent_pause(struct app *app, const char *org, const char *name,
                struct json_object **out, struct am_error *err);

/* The compiled YAML (stored for deployed/paused, compiled on the fly for a
 * draft). *yaml is malloc'd; caller frees. */
int agent_yaml(struct app *app, const char *org, const char *name, char **yaml,
               size_t *len, struct am_error *err);

/* Make the registry match the database: load every deployed agent that is
 * missing or stale, unload every entry whose agent is not deployed. Run by
 * the supervisor at start and after a worker died. Returns the number of
 * entries changed, or a negative AM_* code. */
int agent_reconcile(struct app *app, struct am_error *err);

/* Runnable invariants (lib/invariant.h): agent.c's invariants 1 and 2,
 * stored records against the registry both ways; on a violation, log it
 * naming the invariant and the agent, and abort(). Only where no
 * transition runs meanwhile (the supervisor's recovery, the unit tests):
 * a transition changes the registry before its commit. */
void agent_check_invariants(struct app *app);

/* Number of agent compilations this process has done (tests, bench). */
uint64_t agent_compile_count(void);

#endif
