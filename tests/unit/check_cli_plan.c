/*
 * check_cli_plan.c - unit tests for the planner of `astromesh apply`
 * (src/cli/plan.c) and the apply file reader (src/cli/applyfile.c).
 *
 * What is asserted: the diff names only fields the file gives and that
 * differ (steps field by field, values inside a step whole, `name` never);
 * a missing agent is created (and deployed when the file says so); an
 * edit of a deployed agent pauses, edits and redeploys (or stays paused
 * with deployed: false); deployed: true/false alone deploys or pauses; an
 * equal agent has no steps; --prune deletes only agents the file does not
 * name; the reader takes a sequence, a multi-document stream and a
 * directory, and refuses a bad file whole with file:line:column.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "cli/applyfile.h"
#include "cli/plan.h"
#include "lib/buf.h"

static struct json_object *J(const char *s)
{
    struct json_object *o = json_tokener_parse(s);
    ck_assert_ptr_nonnull(o);
    return o;
}

START_TEST(diff_names_only_given_fields_that_differ)
{
    struct json_object *want = J("{\"name\":\"a\",\"display_name\":\"A\",\"step1\":{\"model\":\"echo/x\"},"
                                 "\"step3\":{\"tools\":[\"calculator\"]}}");
    struct json_object *have = J("{\"name\":\"a\",\"display_name\":\"A\",\"step1\":{\"model\":\"echo/y\","
                                 "\"routing_strategy\":\"cost_optimized\"},\"step3\":{\"tools\":[\"calculator\",\"datetime\"]}}");
    char fields[256];
    struct json_object *patch = plan_diff(want, have, fields, sizeof(fields));
    ck_assert_ptr_nonnull(patch);
    ck_assert_str_eq(fields, "step1.model, step3.tools");
    ck_assert_str_eq(json_object_to_json_string_ext(patch, JSON_C_TO_STRING_NOSLASHESCAPE),
                     "{\"step1\":{\"model\":\"echo/x\"},\"step3\":{\"tools\":[\"calculator\"]}}");
    json_object_put(patch);
    ck_assert_ptr_null(plan_diff(want, want, fields, sizeof(fields)));
    ck_assert_str_eq(fields, "");
    json_object_put(want);
    json_object_put(have);
}
END_TEST

static void agent(struct applyfile *f, const char *name, const char *wc, int deployed)
{
    f->agents = realloc(f->agents, (size_t)(f->n + 1) * sizeof(*f->agents));
    struct applyfile_agent *a = &f->agents[f->n++];
    memset(a, 0, sizeof(*a));
    strcpy(a->name, name);
    a->wc = J(wc);
    a->deployed = deployed;
}

static const struct {
    const char *status;          /* NULL: the server does not have it */
    const char *have;
    const char *want;
    int deployed;
    int steps;
    int redeploy;
} cases[] = {
    { NULL, NULL, "{\"name\":\"a\"}", -1, PLAN_CREATE, 0 },
    { NULL, NULL, "{\"name\":\"a\"}", 1, PLAN_CREATE | PLAN_DEPLOY, 0 },
    { "deployed", "{\"name\":\"a\",\"display_name\":\"x\"}", "{\"name\":\"a\",\"display_name\":\"y\"}", -1,
      PLAN_PAUSE | PLAN_EDIT | PLAN_DEPLOY, 1 },
    { "deployed", "{\"name\":\"a\",\"display_name\":\"x\"}", "{\"name\":\"a\",\"display_name\":\"y\"}", 1,
      PLAN_PAUSE | PLAN_EDIT | PLAN_DEPLOY, 1 },
    { "deployed", "{\"name\":\"a\",\"display_name\":\"x\"}", "{\"name\":\"a\",\"display_name\":\"y\"}", 0,
      PLAN_PAUSE | PLAN_EDIT, 0 },
    { "draft", "{\"name\":\"a\",\"display_name\":\"x\"}", "{\"name\":\"a\",\"display_name\":\"y\"}", -1,
      PLAN_EDIT, 0 },
    { "paused", "{\"name\":\"a\",\"display_name\":\"x\"}", "{\"name\":\"a\",\"display_name\":\"y\"}", 1,
      PLAN_EDIT | PLAN_DEPLOY, 0 },
    { "draft", "{\"name\":\"a\"}", "{\"name\":\"a\"}", 1, PLAN_DEPLOY, 0 },
    { "paused", "{\"name\":\"a\"}", "{\"name\":\"a\"}", 1, PLAN_DEPLOY, 0 },
    { "deployed", "{\"name\":\"a\"}", "{\"name\":\"a\"}", 0, PLAN_PAUSE, 0 },
    { "deployed", "{\"name\":\"a\"}", "{\"name\":\"a\"}", 1, 0, 0 },
    { "draft", "{\"name\":\"a\"}", "{\"name\":\"a\"}", 0, 0, 0 },
    { "paused", "{\"name\":\"a\",\"step2\":{\"system_prompt\":\"p\",\"tone\":\"casual\"}}",
      "{\"name\":\"a\",\"step2\":{\"system_prompt\":\"p\"}}", -1, 0, 0 },
};

START_TEST(steps_for_each_state_and_wish)
{
    struct applyfile f = { 0 };
    struct plan p;
    struct plan_current cur = { "a", cases[_i].status, NULL };
    agent(&f, "a", cases[_i].want, cases[_i].deployed);
    if (cases[_i].have)
        cur.wc = J(cases[_i].have);
    plan_make(&f, &cur, cases[_i].status ? 1 : 0, 0, &p);
    ck_assert_int_eq(p.n, 1);
    ck_assert_int_eq(p.items[0].steps, cases[_i].steps);
    ck_assert_int_eq(p.items[0].redeploy, cases[_i].redeploy);
    ck_assert_int_eq(p.changes, cases[_i].steps != 0);
    plan_free(&p);
    json_object_put(cur.wc);
    applyfile_free(&f);
}
END_TEST

START_TEST(prune_deletes_only_agents_the_file_does_not_name)
{
    struct applyfile f = { 0 };
    struct plan p;
    struct plan_current cur[] = { { "a", "draft", NULL }, { "b", "deployed", NULL } };
    agent(&f, "a", "{\"name\":\"a\"}", -1);
    cur[0].wc = J("{\"name\":\"a\"}");
    plan_make(&f, cur, 2, 0, &p);
    ck_assert_int_eq(p.changes, 0);
    plan_free(&p);
    plan_make(&f, cur, 2, 1, &p);
    ck_assert_int_eq(p.n, 2);
    ck_assert_str_eq(p.items[0].name, "b");       /* deletions first */
    ck_assert_int_eq(p.items[0].steps, PLAN_DELETE);
    ck_assert_str_eq(p.items[1].name, "a");
    ck_assert_int_eq(p.items[1].steps, 0);
    plan_free(&p);
    json_object_put(cur[0].wc);
    applyfile_free(&f);
}
END_TEST

static char dir[64];

static void write_file(const char *name, const char *text, char *path, size_t cap)
{
    snprintf(path, cap, "%s/%s", dir, name);
    FILE *fp = fopen(path, "w");
    ck_assert_ptr_nonnull(fp);
    fputs(text, fp);
    fclose(fp);
}

static void setup(void)
{
    strcpy(dir, "/tmp/check_cli_plan.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}

START_TEST(reader_takes_sequences_streams_and_directories)
{
    char path[128];
    struct applyfile f;
    struct buf errs = { 0 };
    write_file("a.yaml", "- name: one\n  deployed: true\n  step1: {model: echo/echo-1}\n"
                         "  step2: {system_prompt: hi}\n- name: two\n", path, sizeof(path));
    write_file("b.yml", "name: three\ndeployed: false\n---\nname: four\nstep4: {window_size: 5}\n"
               "step2: {system_prompt: nan, persona: '12'}\n",
               path, sizeof(path));
    write_file("ignored.txt", "not: [yaml\n", path, sizeof(path));
    ck_assert_int_eq(applyfile_load(dir, &f, &errs), 0);
    ck_assert_int_eq(f.n, 4);
    ck_assert_str_eq(f.agents[0].name, "one");
    ck_assert_int_eq(f.agents[0].deployed, 1);
    ck_assert_int_eq(f.agents[1].deployed, -1);
    ck_assert_int_eq(f.agents[2].deployed, 0);
    ck_assert_ptr_null(json_object_object_get(f.agents[0].wc, "deployed"));
    ck_assert_int_eq(json_object_get_int(json_object_object_get(
                         json_object_object_get(f.agents[3].wc, "step4"), "window_size")), 5);
    struct json_object *step2 = json_object_object_get(f.agents[3].wc, "step2");
    ck_assert_str_eq(json_object_get_string(json_object_object_get(step2, "system_prompt")), "nan");
    ck_assert(json_object_is_type(json_object_object_get(step2, "persona"), json_type_string));
    applyfile_free(&f);
    buf_free(&errs);
}
END_TEST

static const struct {
    const char *text;
    const char *expect;   /* a line of the errors, after "<dir>/bad.yaml:" */
} bad_files[] = {
    { "- name: ok\n- name: two\n  step1:\n    model: nope\n", "4:5: step1.model:" },
    { "name: x\nstep9: {}\n", "2:1: step9:" },
    { "name: x\ndeployed: maybe\n", "2:1: deployed: must be true or false" },
    { "name: x\nname: y\n", "2:1: name: given twice" },
    { "name: [unclosed\n", "2:1: " },
    { "- name: a\n- name: a\n", "2:3: name: agent 'a' already defined" },
    { "name: x\ndeployed: true\n", "1:1: step1.model:" },
    { "- just a string\n", "1:3: an agent must be a mapping" },
};

START_TEST(a_bad_file_is_refused_whole_with_line_and_column)
{
    char path[128], want[256];
    struct applyfile f;
    struct buf errs = { 0 };
    write_file("bad.yaml", bad_files[_i].text, path, sizeof(path));
    ck_assert_int_eq(applyfile_load(path, &f, &errs), -1);
    ck_assert_int_eq(f.n, 0);
    snprintf(want, sizeof(want), "%s:%s", path, bad_files[_i].expect);
    ck_assert_msg(errs.z && strstr(errs.z, want), "wanted '%s' in '%s'", want, errs.z);
    applyfile_free(&f);
    buf_free(&errs);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cli_plan");
    TCase *tc = tcase_create("plan");
    tcase_add_test(tc, diff_names_only_given_fields_that_differ);
    tcase_add_loop_test(tc, steps_for_each_state_and_wish, 0, (int)(sizeof(cases) / sizeof(cases[0])));
    tcase_add_test(tc, prune_deletes_only_agents_the_file_does_not_name);
    suite_add_tcase(s, tc);
    TCase *tf = tcase_create("file");
    tcase_add_checked_fixture(tf, setup, teardown);
    tcase_add_test(tf, reader_takes_sequences_streams_and_directories);
    tcase_add_loop_test(tf, a_bad_file_is_refused_whole_with_line_and_column, 0,
                        (int)(sizeof(bad_files) / sizeof(bad_files[0])));
    suite_add_tcase(s, tf);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
