/*
 * agent_import.h - an Astromesh agent YAML (ours or upstream's) back into a
 * WizardConfig, the import route's create, and the portable export.
 */
#ifndef AM_AGENT_IMPORT_H
#define AM_AGENT_IMPORT_H

#include <stddef.h>
#include <json-c/json.h>
#include "lib/error.h"
#include "state/app.h"

/* Map the YAML text (len bytes; our internal document or the portable one
 * or a hand-written upstream agent) onto a new WizardConfig in *wc (caller
 * puts). Returns 0; AM_EBADREQ when the text is not YAML (line and column
 * in the message); AM_EVALIDATION with one {field: YAML path, problem}
 * detail per construct the WizardConfig cannot express
 * ("spec.orchestration.pattern"). The result is not yet validated (create
 * does that). */
int agent_import_wizard(const char *yaml, size_t len, struct json_object **wc,
                        struct am_error *err);

/* POST /agents/import: agent_import_wizard, then the same create as POST
 * /agents (every create rule applies). On 0, *out is the agent object
 * (caller puts). */
int agent_import(struct app *app, const char *org, const char *yaml, size_t len,
                 struct json_object **out, struct am_error *err);

/* GET /yaml?portable=true: what agent_yaml answers, re-emitted as the
 * portable variant (agent_yaml_emit_portable). *yaml malloc'd; caller
 * frees. AM_EINVALIDCONFIG when a model has no upstream equivalent. */
int agent_export_portable(struct app *app, const char *org, const char *name, char **yaml,
                          size_t *len, struct am_error *err);

#endif
