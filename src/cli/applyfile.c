/*
 * applyfile.c - reads and validates the WizardConfigs of `astromesh apply`.
 *
 * Owns the libyaml parser of each file while it reads it and the JSON it
 * builds. YAML becomes JSON with a mark (line, column) kept per field
 * path ("step1.model", "step3.tools[0]"), so a problem the wizard names by
 * path is reported where it stands in the file. Never prints, never
 * touches the network.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>
#include "cli/applyfile.h"
#include "control/wizard.h"
#include "lib/util.h"

#define DEPTH_MAX 32
#define PATH_MAX_ 128

struct mark {
    char path[PATH_MAX_];
    int line, col;      /* 1-based */
};

struct conv {
    const char *file;
    yaml_document_t *doc;
    struct mark *marks;     /* xrealloc'd */
    int n, cap;
    struct buf *errs;
    int failed;
};

static void problem(struct conv *cv, yaml_mark_t m, const char *field, const char *what)
{
    char line[1400];
    util_snprintf(line, sizeof(line), "%s:%zu:%zu: %s%s%s\n", cv->file, m.line + 1, m.column + 1,
                  field, field[0] ? ": " : "", what);
    buf_puts(cv->errs, line);
    cv->failed = 1;
}

static void mark_add(struct conv *cv, const char *path, yaml_mark_t m)
{
    if (cv->n == cv->cap) {
        cv->cap = cv->cap ? cv->cap * 2 : 32;
        cv->marks = xrealloc(cv->marks, (size_t)cv->cap * sizeof(*cv->marks));
    }
    util_strlcpy(cv->marks[cv->n].path, path, PATH_MAX_);
    cv->marks[cv->n].line = (int)m.line + 1;
    cv->marks[cv->n].col = (int)m.column + 1;
    cv->n++;
}

/* The mark of the longest recorded prefix of path (the agent's own at worst). */
static const struct mark *mark_find(const struct conv *cv, const char *path)
{
    const struct mark *best = cv->n ? &cv->marks[0] : NULL;
    size_t best_len = 0;
    for (int i = 0; i < cv->n; i++) {
        size_t l = strlen(cv->marks[i].path);
        if (l >= best_len && strncmp(path, cv->marks[i].path, l) == 0 &&
            (path[l] == '\0' || path[l] == '.' || path[l] == '[')) {
            best = &cv->marks[i];
            best_len = l;
        }
    }
    return best;
}

/* A scalar as YAML 1.2's core schema reads it when plain; quoted is a string. */
static struct json_object *scalar_json(const yaml_node_t *n)
{
    const char *s = (const char *)n->data.scalar.value;
    if (n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return json_object_new_string_len(s, (int)n->data.scalar.length);
    if (strcmp(s, "true") == 0 || strcmp(s, "True") == 0)
        return json_object_new_boolean(1);
    if (strcmp(s, "false") == 0 || strcmp(s, "False") == 0)
        return json_object_new_boolean(0);
    if (s[0] == '\0' || strcmp(s, "~") == 0 || strcmp(s, "null") == 0)
        return NULL;
    char *end;
    errno = 0;
    long long i = strtoll(s, &end, 10);
    if (*end == '\0' && errno == 0)
        return json_object_new_int64(i);
    double d = strtod(s, &end);
    if (*end == '\0' && end != s && strspn(s, "0123456789+-.eE") == strlen(s))
        return json_object_new_double(d);      /* not inf, nan, or hex: strings */
    return json_object_new_string(s);
}

static struct json_object *node_json(struct conv *cv, yaml_node_t *n, const char *path, int depth);

static struct json_object *mapping_json(struct conv *cv, yaml_node_t *n, const char *path,
                                        int depth)
{
    struct json_object *o = json_object_new_object();
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(cv->doc, p->key);
        yaml_node_t *v = yaml_document_get_node(cv->doc, p->value);
        char sub[PATH_MAX_];
        if (k == NULL || v == NULL || k->type != YAML_SCALAR_NODE) {
            problem(cv, n->start_mark, path, "keys must be plain words");
            continue;
        }
        const char *key = (const char *)k->data.scalar.value;
        util_snprintf(sub, sizeof(sub), "%s%s%s", path, path[0] ? "." : "", key);
        if (json_object_object_get_ex(o, key, NULL)) {
            problem(cv, k->start_mark, sub, "given twice");
            continue;
        }
        mark_add(cv, sub, k->start_mark);
        json_object_object_add(o, key, node_json(cv, v, sub, depth + 1));
    }
    return o;
}

static struct json_object *node_json(struct conv *cv, yaml_node_t *n, const char *path, int depth)
{
    if (depth > DEPTH_MAX) {
        problem(cv, n->start_mark, path, "nested too deeply");
        return NULL;
    }
    if (n->type == YAML_SCALAR_NODE)
        return scalar_json(n);
    if (n->type == YAML_MAPPING_NODE)
        return mapping_json(cv, n, path, depth);
    struct json_object *a = json_object_new_array();
    size_t i = 0;
    for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
         it++, i++) {
        yaml_node_t *v = yaml_document_get_node(cv->doc, *it);
        char sub[PATH_MAX_];
        util_snprintf(sub, sizeof(sub), "%s[%zu]", path, i);
        if (v == NULL)
            continue;
        mark_add(cv, sub, v->start_mark);
        json_object_array_add(a, node_json(cv, v, sub, depth + 1));
    }
    return a;
}

/* The libyaml mark of path (or of its longest recorded prefix), else dflt. */
static yaml_mark_t mark_at(const struct conv *cv, const char *path, yaml_mark_t dflt)
{
    const struct mark *m = mark_find(cv, path);
    if (m) {
        dflt.line = (size_t)m->line - 1;
        dflt.column = (size_t)m->col - 1;
    }
    return dflt;
}

/* Report the wizard's details at the marks of their fields. */
static void report_details(struct conv *cv, const struct am_error *err, yaml_mark_t at)
{
    for (int i = 0; i < err->ndetails; i++)
        problem(cv, mark_at(cv, err->details[i].field, at), err->details[i].field,
                err->details[i].problem);
    if (err->ndetails == 0)
        problem(cv, at, "", err->message);
}

/* One agent's mapping node: convert, take `deployed` out, validate, add to
 * out. Problems go to cv->errs. */
static void agent_add(struct conv *cv, yaml_node_t *n, struct applyfile *out)
{
    struct am_error err;
    struct json_object *wc = NULL, *v;
    int deployed = -1;
    cv->n = 0;
    if (n->type != YAML_MAPPING_NODE) {
        problem(cv, n->start_mark, "", "an agent must be a mapping (a WizardConfig)");
        return;
    }
    mark_add(cv, "", n->start_mark);
    wc = node_json(cv, n, "", 0);
    if (json_object_object_get_ex(wc, "deployed", &v)) {
        if (!json_object_is_type(v, json_type_boolean))
            problem(cv, mark_at(cv, "deployed", n->start_mark), "deployed",
                    "must be true or false");
        else
            deployed = json_object_get_boolean(v);
        json_object_object_del(wc, "deployed");
    }
    error_clear(&err);
    if (wizard_validate(wc, &err) != 0)
        report_details(cv, &err, n->start_mark);
    else if (deployed == 1 && wizard_validate_deploy(wc, &err) != 0)
        report_details(cv, &err, n->start_mark);
    if (cv->failed) {
        json_object_put(wc);
        return;
    }
    const char *name = json_object_get_string(json_object_object_get(wc, "name"));
    for (int i = 0; i < out->n; i++) {
        if (strcmp(out->agents[i].name, name) == 0) {
            char what[1200];
            util_snprintf(what, sizeof(what), "agent '%s' already defined at %s", name,
                          out->agents[i].where);
            problem(cv, n->start_mark, "name", what);
            json_object_put(wc);
            return;
        }
    }
    if (out->n >= APPLYFILE_AGENTS_MAX) {
        problem(cv, n->start_mark, "", "too many agents");
        json_object_put(wc);
        return;
    }
    out->agents = xrealloc(out->agents, (size_t)(out->n + 1) * sizeof(*out->agents));
    struct applyfile_agent *a = &out->agents[out->n++];
    util_strlcpy(a->name, name, sizeof(a->name));
    a->wc = wc;
    a->deployed = deployed;
    util_snprintf(a->where, sizeof(a->where), "%s:%zu:%zu", cv->file, n->start_mark.line + 1,
                  n->start_mark.column + 1);
}

/* Every document of one file. */
static void file_load(const char *file, struct applyfile *out, struct buf *errs, int *failed)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    struct conv cv = { .file = file, .errs = errs };
    FILE *f = fopen(file, "rb");
    if (f == NULL) {
        char line[1200];
        util_snprintf(line, sizeof(line), "%s: %s\n", file, strerror(errno));
        buf_puts(errs, line);
        *failed = 1;
        return;
    }
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_file(&parser, f);
    for (int ndocs = 0;; ndocs++) {
        if (!yaml_parser_load(&parser, &doc)) {
            problem(&cv, parser.problem_mark, "", parser.problem ? parser.problem : "invalid YAML");
            break;
        }
        yaml_node_t *root = yaml_document_get_root_node(&doc);
        if (root == NULL) {
            yaml_document_delete(&doc);
            break;
        }
        cv.doc = &doc;
        if (root->type == YAML_SEQUENCE_NODE) {
            for (yaml_node_item_t *it = root->data.sequence.items.start;
                 it < root->data.sequence.items.top; it++)
                agent_add(&cv, yaml_document_get_node(&doc, *it), out);
        } else {
            agent_add(&cv, root, out);
        }
        yaml_document_delete(&doc);
    }
    yaml_parser_delete(&parser);
    fclose(f);
    free(cv.marks);
    if (cv.failed)
        *failed = 1;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int yaml_name(const char *s)
{
    size_t n = strlen(s);
    return s[0] != '.' && ((n > 5 && strcmp(s + n - 5, ".yaml") == 0) ||
                           (n > 4 && strcmp(s + n - 4, ".yml") == 0));
}

/* The .yaml/.yml files of directory dir, sorted (caller frees each and the array). */
static char **dir_files(const char *dir, int *n)
{
    char **names = NULL;
    DIR *d = opendir(dir);
    struct dirent *e;
    *n = 0;
    while (d && (e = readdir(d)) != NULL) {
        if (!yaml_name(e->d_name))
            continue;
        char full[1024];
        if (util_snprintf(full, sizeof(full), "%s/%s", dir, e->d_name) != 0)
            continue;
        names = xrealloc(names, (size_t)(*n + 1) * sizeof(*names));
        names[(*n)++] = xstrdup(full);
    }
    if (d)
        closedir(d);
    if (*n > 1)
        qsort(names, (size_t)*n, sizeof(*names), cmp_str);
    return names;
}

int applyfile_load(const char *path, struct applyfile *out, struct buf *errs)
{
    struct stat st;
    int failed = 0;
    memset(out, 0, sizeof(*out));
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        int n = 0;
        char **files = dir_files(path, &n);
        if (n == 0) {
            buf_puts(errs, path);
            buf_puts(errs, ": no .yaml or .yml file in this directory\n");
            failed = 1;
        }
        for (int i = 0; i < n; i++) {
            file_load(files[i], out, errs, &failed);
            free(files[i]);
        }
        free(files);
    } else {
        file_load(path, out, errs, &failed);
    }
    if (failed) {
        applyfile_free(out);
        return -1;
    }
    return 0;
}

void applyfile_free(struct applyfile *f)
{
    for (int i = 0; i < f->n; i++)
        json_object_put(f->agents[i].wc);
    free(f->agents);
    f->agents = NULL;
    f->n = 0;
}

struct json_object *applyfile_read_doc(const char *path, char *err, size_t cap)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    struct buf errs = { 0 };
    struct conv cv = { .file = path, .errs = &errs };
    struct json_object *o = NULL;
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        util_snprintf(err, cap, "%s: %s", path, strerror(errno));
        return NULL;
    }
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_file(&parser, f);
    if (!yaml_parser_load(&parser, &doc)) {
        problem(&cv, parser.problem_mark, "", parser.problem ? parser.problem : "invalid YAML");
    } else {
        yaml_node_t *root = yaml_document_get_root_node(&doc);
        cv.doc = &doc;
        if (root == NULL || root->type != YAML_MAPPING_NODE)
            util_snprintf(err, cap, "%s: expected one mapping", path);
        else
            o = node_json(&cv, root, "", 0);
        yaml_document_delete(&doc);
    }
    yaml_parser_delete(&parser);
    fclose(f);
    free(cv.marks);
    if (cv.failed) {
        util_strlcpy(err, errs.z, cap);
        json_object_put(o);
        o = NULL;
    }
    buf_free(&errs);
    return o;
}
