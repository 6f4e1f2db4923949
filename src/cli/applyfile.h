/*
 * applyfile.h - the desired state of `astromesh apply`: a YAML file (or a
 * directory of .yaml/.yml files) holding WizardConfigs, each with an
 * optional `deployed: true|false`.
 *
 * A file is a YAML stream of one or more documents; each document is a
 * mapping (one agent) or a sequence of mappings (several). Everything is
 * read and validated before anything is sent: a bad file fails as a whole,
 * each problem reported as "file:line:column: field: problem" from
 * libyaml's marks. Validation reuses src/control/wizard.c (the server's
 * own rules), which links cleanly as pure functions over json-c objects.
 *
 * Never prints, never calls the API.
 */
#ifndef AM_CLI_APPLYFILE_H
#define AM_CLI_APPLYFILE_H

#include <json-c/json.h>
#include "lib/buf.h"

#define APPLYFILE_AGENTS_MAX 1000

struct applyfile_agent {
    char name[64];
    struct json_object *wc;      /* the WizardConfig without `deployed` (owned) */
    int deployed;                /* 1 true, 0 false, -1 absent */
    char where[1100];            /* "file:line:column" of the agent's mapping */
};

struct applyfile {
    struct applyfile_agent *agents;   /* n entries, xmalloc'd */
    int n;
};

/* Read path (a file, or every *.yaml and *.yml of a directory in name
 * order) into out. Returns 0, or -1 with one line per problem appended to
 * errs (and out left empty). Free out with applyfile_free either way. */
int applyfile_load(const char *path, struct applyfile *out, struct buf *errs);

/* Free what applyfile_load filled. */
void applyfile_free(struct applyfile *f);

/* Read one YAML (or JSON) document of path as JSON: for `agents create -f`
 * and `agents edit -f`. Returns the object (caller puts), or NULL with
 * "file:line:column: problem" in err (cap bytes). */
struct json_object *applyfile_read_doc(const char *path, char *err, size_t cap);

#endif
