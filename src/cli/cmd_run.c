/*
 * cmd_run_query.c - run and test (an agent's answer read as Server-Sent Events,
 * each token printed as it arrives), versions and rollback.
 *
 * Prints on stdout (the answer, tables) and stderr (errors, the session).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "cli/cmd.h"
#include "cli/output.h"
#include "lib/buf.h"
#include "lib/util.h"

#define PATH_CAP 512
#define QUERY_MAX (32u * 1024u)

struct run_state {
    const struct cli *x;
    struct json_object *done;    /* the done event (owned) */
    struct json_object *error;   /* an error event (owned) */
    int printed;                 /* a token was printed */
};

static int on_event(void *ctx, const char *event, const char *data)
{
    struct run_state *s = ctx;
    struct json_object *o = json_tokener_parse(data);
    if (o == NULL)
        return 0;
    if (strcmp(event, "token") == 0) {
        if (!s->x->a.json) {
            fputs(cmd_str(o, "content"), stdout);
            fflush(stdout);
            s->printed = 1;
        }
        json_object_put(o);
    } else if (strcmp(event, "done") == 0) {
        json_object_put(s->done);
        s->done = o;
    } else if (strcmp(event, "error") == 0) {
        json_object_put(s->error);
        s->error = o;
    } else {
        json_object_put(o);
    }
    return 0;
}

/* The query: words 2.. joined by spaces, or all of standard input. */
static char *read_query(const struct cli *x)
{
    struct buf b = { 0 };
    char chunk[4096];
    size_t n;
    if (x->a.npos > 2) {
        for (int i = 2; i < x->a.npos; i++) {
            if (i > 2)
                buf_puts(&b, " ");
            buf_puts(&b, x->a.pos[i]);
        }
        return buf_take(&b);
    }
    while ((n = fread(chunk, 1, sizeof(chunk), stdin)) > 0)
        if (buf_put_limited(&b, chunk, n, QUERY_MAX + 2) != 0)
            break;
    while (b.n > 0 && (b.z[b.n - 1] == '\n' || b.z[b.n - 1] == '\r'))
        b.z[--b.n] = '\0';
    return buf_take(&b);
}

/* The answer of a server that did not stream (plain JSON). */
static int run_plain(const struct cli *x, const struct client_resp *r)
{
    struct json_object *o = client_resp_json(r);
    if (!cmd_json_out(x, o))
        printf("%s\n", cmd_str(o, "answer"));
    if (!x->a.quiet && !x->a.json)
        fprintf(stderr, "session: %s\n", cmd_str(o, "session_id"));
    json_object_put(o);
    return 0;
}

int cmd_run_query(struct cli *x)
{
    const char *mode = cmd_word(x, 0), *name = cmd_word(x, 1);
    char path[PATH_CAP];
    struct client_resp r = { 0 };
    struct run_state s = { .x = x };
    struct json_object *body = NULL;
    char *query = NULL;
    int rc;
    if (name == NULL)
        return cmd_usage("%s NAME [QUERY]: which agent?", mode);
    if ((rc = cmd_path(x, path, sizeof(path), "agents", name, mode, NULL)) != 0)
        return rc;
    query = read_query(x);
    body = json_object_new_object();
    json_object_object_add(body, "query", json_object_new_string(query));
    if (x->a.session)
        json_object_object_add(body, "session_id", json_object_new_string(x->a.session));
    if (client_call(&x->c, "POST", path, body, on_event, &s, &r) != 0) {
        fprintf(stderr, "astromesh: %s\n", x->c.neterr);
        rc = ARGS_EXIT_NET;
    } else if (r.status != 200) {
        rc = client_report(&r);
    } else if (!r.streamed) {
        rc = run_plain(x, &r);
    } else {
        if (s.printed)
            fputc('\n', stdout);
        if (s.error) {
            fprintf(stderr, "astromesh: %s (%s)\n", cmd_str(s.error, "message"),
                    cmd_str(s.error, "error"));
            rc = ARGS_EXIT_API;
        } else if (s.done && !cmd_json_out(x, s.done) && !x->a.quiet) {
            fprintf(stderr, "session: %s\n", cmd_str(s.done, "session_id"));
        }
    }
    json_object_put(s.done);
    json_object_put(s.error);
    json_object_put(body);
    client_resp_free(&r);
    free(query);
    return rc;
}

int cmd_run_versions(struct cli *x)
{
    static const struct output_col cols[] = {
        { "VERSION", "version" }, { "CREATED", "created_at" }, { "BY", "created_by" },
        { "HASH", "config_hash" }, { "LIVE", "live" },
    };
    const char *name = cmd_word(x, 1), *n = cmd_word(x, 2);
    char path[PATH_CAP];
    struct json_object *o = NULL, *list;
    int rc;
    if (name == NULL)
        return cmd_usage("versions NAME [N]: which agent?");
    rc = cmd_path(x, path, sizeof(path), "agents", name, "versions", n, NULL);
    if (rc != 0 || (rc = cmd_request(x, "GET", path, NULL, 200, &o)) != 0 || cmd_json_out(x, o))
        goto out;
    if (n == NULL) {
        if (json_object_object_get_ex(o, "versions", &list))
            output_table(stdout, cols, 5, list);
    } else {
        fputs(cmd_str(o, "yaml"), stdout);
    }
out:
    json_object_put(o);
    return rc;
}

int cmd_run_rollback(struct cli *x)
{
    const char *name = cmd_word(x, 1), *n = cmd_word(x, 2);
    char path[PATH_CAP], *end = NULL;
    struct json_object *o = NULL, *body;
    long v = n ? strtol(n, &end, 10) : 0;
    int rc;
    if (name == NULL || n == NULL || *end != '\0' || v < 1)
        return cmd_usage("rollback NAME N: which agent, which version (a number)?");
    if ((rc = cmd_path(x, path, sizeof(path), "agents", name, "rollback", NULL)) != 0)
        return rc;
    body = json_object_new_object();
    json_object_object_add(body, "version", json_object_new_int64(v));
    if ((rc = cmd_request(x, "POST", path, body, 200, &o)) == 0 && !cmd_json_out(x, o) &&
        !x->a.quiet)
        printf("rolled back %s to version %ld (%s)\n", name, v, cmd_str(o, "status"));
    json_object_put(body);
    json_object_put(o);
    return rc;
}
