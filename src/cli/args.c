/*
 * args.c - splits the astromesh client's argv into options and words.
 *
 * Owns nothing: every string it hands back is borrowed from argv. Never
 * prints, never reads the environment; one table lists every option.
 */
#include <stddef.h>
#include <string.h>
#include "cli/args.h"
#include "lib/util.h"

enum opt_kind { OPT_FLAG, OPT_VALUE, OPT_SCOPE };

struct opt {
    const char *longname;   /* "--json" */
    const char *shortname;  /* "-q", or NULL */
    enum opt_kind kind;
    size_t off;             /* offset of the int or const char * in struct args */
};

#define FLAG(l, s, f) { l, s, OPT_FLAG, offsetof(struct args, f) }
#define VALUE(l, s, f) { l, s, OPT_VALUE, offsetof(struct args, f) }

static const struct opt opts[] = {
    FLAG("--json", NULL, json),
    FLAG("--quiet", "-q", quiet),
    FLAG("--dry-run", NULL, dry_run),
    FLAG("--prune", NULL, prune),
    FLAG("--portable", NULL, portable),
    FLAG("--help", "-h", help),
    VALUE("--org", NULL, org),
    VALUE("--url", NULL, url),
    VALUE("--email", NULL, email),
    VALUE("--name", NULL, name),
    VALUE("--api-key", NULL, api_key),
    VALUE("--file", "-f", file),
    VALUE("--session", NULL, session),
    VALUE("--role", NULL, role),
    VALUE("--model", NULL, model),
    VALUE("--prompt", NULL, prompt),
    VALUE("--display-name", NULL, display_name),
    VALUE("--days", NULL, days),
    { "--scope", NULL, OPT_SCOPE, 0 },
};

/* The row for word w (its "--x=" part only when eq is set), or NULL. */
static const struct opt *opt_find(const char *w, size_t len)
{
    for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
        const struct opt *o = &opts[i];
        if ((strlen(o->longname) == len && strncmp(o->longname, w, len) == 0) ||
            (o->shortname && strlen(o->shortname) == len && strncmp(o->shortname, w, len) == 0))
            return o;
    }
    return NULL;
}

/* Store value v for option o into a. Returns 0 or -1 (err filled). */
static int opt_store(const struct opt *o, struct args *a, const char *v, char *err, size_t cap)
{
    if (o->kind == OPT_FLAG) {
        *(int *)(void *)((char *)a + o->off) = 1;
        return 0;
    }
    if (o->kind == OPT_SCOPE) {
        if (a->nscopes >= ARGS_SCOPES_MAX) {
            util_snprintf(err, cap, "too many --scope options");
            return -1;
        }
        a->scopes[a->nscopes++] = v;
        return 0;
    }
    *(const char **)(void *)((char *)a + o->off) = v;
    return 0;
}

int args_parse(int argc, char **argv, struct args *a, char *err, size_t cap)
{
    int only_words = 0;
    memset(a, 0, sizeof(*a));
    for (int i = 1; i < argc; i++) {
        const char *w = argv[i];
        if (only_words || w[0] != '-' || strcmp(w, "-") == 0) {
            if (a->npos >= ARGS_POS_MAX) {
                util_snprintf(err, cap, "too many arguments (at '%s')", w);
                return -1;
            }
            a->pos[a->npos++] = w;
            continue;
        }
        if (strcmp(w, "--") == 0) {
            only_words = 1;
            continue;
        }
        const char *eq = strncmp(w, "--", 2) == 0 ? strchr(w, '=') : NULL;
        const struct opt *o = opt_find(w, eq ? (size_t)(eq - w) : strlen(w));
        if (o == NULL) {
            util_snprintf(err, cap, "unknown option '%s'", w);
            return -1;
        }
        const char *v = NULL;
        if (o->kind == OPT_FLAG) {
            if (eq) {
                util_snprintf(err, cap, "option '%.*s' takes no value", (int)(eq - w), w);
                return -1;
            }
        } else if (eq) {
            v = eq + 1;
        } else if (i + 1 < argc) {
            v = argv[++i];
        } else {
            util_snprintf(err, cap, "option '%s' needs a value", w);
            return -1;
        }
        if (opt_store(o, a, v, err, cap) != 0)
            return -1;
    }
    return 0;
}
