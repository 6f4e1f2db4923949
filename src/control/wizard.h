/*
 * wizard.h - the WizardConfig: validation, step-wise merge, and compilation
 * to the Astromesh agent YAML (apiVersion astromesh/v1, kind Agent).
 *
 * Pure functions over json-c objects: no I/O, no logging, no database.
 * Validation failures fill err with one detail per bad field
 * ("step1.model" / "required").
 */
#ifndef AM_WIZARD_H
#define AM_WIZARD_H

#include <stddef.h>
#include <stdint.h>
#include <json-c/json.h>
#include "lib/error.h"
#include "state/config.h"

#define WIZARD_NAME_MAX 63     /* agent name, bytes */
#define WIZARD_SLUG_MAX 40     /* org slug, bytes */

/* 1 if s is a valid agent name (^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$, no "__"). */
int wizard_name_valid(const char *s);
/* 1 if s is a valid org slug (^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$, no "__"). */
int wizard_slug_valid(const char *s);

/* Check a WizardConfig as stored in draft: every field present has the
 * right type and an allowed value, no unknown fields anywhere, `name`
 * present and valid. Returns 0 or AM_EVALIDATION with details. */
int wizard_validate(struct json_object *wc, struct am_error *err);

/* The draft rules plus what deploy needs (step1.model, step2.system_prompt).
 * Returns 0 or AM_EINVALIDCONFIG with details. */
int wizard_validate_deploy(struct json_object *wc, struct am_error *err);

/* Check a PUT body: a partial WizardConfig (every field optional, same
 * types and values, no unknown fields; `name`, if present, must equal
 * current_name). Returns 0 or AM_EVALIDATION with details. */
int wizard_validate_patch(struct json_object *patch, const char *current_name,
                          struct am_error *err);

/* Merge patch into base step by step: a field inside a step replaces that
 * one field and keeps the others; top-level scalars replace. A JSON null
 * removes the field. Returns a new object (caller puts it). Inputs are
 * not modified. */
struct json_object *wizard_merge(struct json_object *base, struct json_object *patch);

/* The providers the config uses: primary at out[0], fallback at out[1]
 * (enum config_provider, or -1 when absent). */
void wizard_providers(struct json_object *wc, int out[2]);

/* The inverse of compile's prompts.system: when system starts with a tone
 * sentence (alone, or followed by a blank line and a prompt), returns that
 * tone ("casual") and points *prompt at the rest (NULL when none); else
 * returns NULL and *prompt = system. Borrowed pointers. */
const char *wizard_split_system(const char *system, const char **prompt);

/* Compile a WizardConfig (already validated for deploy) into the runtime
 * YAML for agent id "org__name". key_refs[p] is the api_key_ref to write
 * for provider p ("org:acme/openai", "server:openai") or NULL for none.
 * cfg supplies provider endpoints. Returns 0 and a malloc'd NUL-terminated
 * *yaml_out (caller frees) with *len_out, or an error. */
int wizard_compile(struct json_object *wc, const char *org, uint64_t version,
                   const char *const key_refs[PROVIDER_COUNT],
                   const struct config *cfg, char **yaml_out, size_t *len_out,
                   struct am_error *err);

/* The compiled size check of create and PUT, so that a config they accept
 * always deploys: compile wc for org as a deploy would (the longest key
 * reference of each provider, a ten-digit version) and compare the YAML's
 * size with slot_bytes (registry.slot_kb). Returns 0, or AM_EVALIDATION
 * naming step2.system_prompt (or the config when it has none) with the
 * sizes. A config that does not compile yet (a draft) is not refused here. */
int wizard_check_compiled_size(struct json_object *wc, const char *org,
                               const struct config *cfg, size_t slot_bytes,
                               struct am_error *err);

#endif
