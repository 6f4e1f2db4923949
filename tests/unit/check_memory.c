/*
 * check_memory.c - unit tests for memory.c, conversational memory, run
 * against a real Berkeley DB environment (fresh mkdtemp directory per test)
 * and, for the agent-deletion case, a real shared-memory registry
 * ("/am-test-<pid>-<n>", unlinked at teardown).
 *
 * What is asserted: turns come back in order; sliding_window and
 * token_budget trimming; run and test sessions live apart; one agent's (or
 * org's) sessions are never visible to another, even when one agent id is
 * a prefix of another; deleting an agent deletes its conversations and
 * only its; a corrupt record is AM_EIO from memory_load and memory_append,
 * never a crash and never a half-read history. Bounds (issue 15): past
 * an agent's session cap or an org's byte cap the least recently used
 * sessions go, run and test apart, other orgs untouched; the sweep
 * expires idle sessions, at most its maximum a pass.
 */
#include <check.h>
#include <dirent.h>
#include <ftw.h>
#include <sys/mman.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <json-c/json.h>
#include "control/agent.h"
#include "runtime/memory.h"
#include "state/app.h"
#include "state/config.h"
#include "state/registry.h"
#include "state/store.h"
#include "lib/util.h"

#define NCASES(a) ((int)(sizeof(a) / sizeof((a)[0])))

static char base[64];          /* per-run parent of every test's home; main() removes it */
static pid_t runner_pid;
static char home[96];
static char reg_name[64];
static int reg_seq;
static struct config cfg;
static struct app app;

/* ---- fixture ------------------------------------------------------------- */

static void setup(void)
{
    struct store_options o = { home, 8, 1, 64, 0, NULL };
    struct am_error err;

    snprintf(home, sizeof home, "%s/env-XXXXXX", base);
    ck_assert_ptr_nonnull(mkdtemp(home));
    config_defaults(&cfg);
    util_strlcpy(cfg.jwt_secret, "check-memory-jwt-secret-0123456789abcdef", sizeof cfg.jwt_secret);
    memset(&app, 0, sizeof app);
    app.cfg = &cfg;
    error_clear(&err);
    ck_assert_msg(store_open(&app.store, &o, STORE_OPEN_CREATE, &err) == 0, "%s", err.message);
    snprintf(reg_name, sizeof reg_name, "/am-test-%d-%d-%d", (int)runner_pid, (int)getpid(),
             ++reg_seq);
    ck_assert_msg(registry_create(&app.reg, reg_name, 8, 64 * 1024, &err) == 0, "%s", err.message);
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb; (void)flag; (void)ftw;
    return remove(path);
}

static void teardown(void)
{
    registry_close(app.reg, 1);
    store_close(app.store);
    memset(&app, 0, sizeof app);
    if (home[0] != '\0')
        nftw(home, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    home[0] = '\0';
}

/* ---- helpers ---------------------------------------------------------------- */

static void append(const char *agent, int mode, const char *session, const char *user,
                   const char *assistant, int strategy, int limit)
{
    ck_assert_int_eq(memory_append(&app, agent, mode, session, user, assistant, strategy, limit),
                     0);
}

/* The session's messages as one string "role:content|role:content|…". */
static void history(const char *agent, int mode, const char *session, char *out, size_t cap)
{
    struct json_object *a = NULL;
    size_t i, used = 0;

    out[0] = '\0';
    ck_assert_int_eq(memory_load(&app, agent, mode, session, &a), 0);
    ck_assert_ptr_nonnull(a);
    for (i = 0; i < json_object_array_length(a); i++) {
        struct json_object *m = json_object_array_get_idx(a, i), *r, *c;
        ck_assert(json_object_object_get_ex(m, "role", &r));
        ck_assert(json_object_object_get_ex(m, "content", &c));
        used += (size_t)snprintf(out + used, cap - used, "%s%s:%s", i ? "|" : "",
                                 json_object_get_string(r), json_object_get_string(c));
        ck_assert_uint_lt(used, cap);
    }
    json_object_put(a);
}

/* The raw STORE_SESSIONS key memory.c uses: "agent\0r|t\0session". */
static size_t raw_key(char *k, size_t cap, const char *agent, char mode, const char *session)
{
    int n = snprintf(k, cap, "%s%c%c%c%s", agent, 0, mode, 0, session);

    ck_assert(n > 0 && (size_t)n < cap);
    return (size_t)n;
}

/* ---- order and trimming -------------------------------------------------- */

START_TEST(turns_come_back_in_the_order_they_were_appended)
{
    char h[512];

    append("acme__bot", MEMORY_RUN, "s1", "q1", "a1", MEMORY_SLIDING_WINDOW, 20);
    append("acme__bot", MEMORY_RUN, "s1", "q2", "a2", MEMORY_SLIDING_WINDOW, 20);
    append("acme__bot", MEMORY_RUN, "s1", "q3", "a3", MEMORY_SLIDING_WINDOW, 20);
    history("acme__bot", MEMORY_RUN, "s1", h, sizeof h);
    ck_assert_str_eq(h, "user:q1|assistant:a1|user:q2|assistant:a2|user:q3|assistant:a3");
}
END_TEST

START_TEST(unknown_session_loads_as_empty_history)
{
    char h[64];

    history("acme__bot", MEMORY_RUN, "never-used", h, sizeof h);
    ck_assert_str_eq(h, "");
}
END_TEST

/* sliding_window keeps the last `limit` messages (window_size turns are
 * 2 * window_size messages, as runtime.c passes them). */
static const struct {
    int turns, limit;
    const char *kept;
} window_cases[] = {
    { 3, 20, "user:q1|assistant:a1|user:q2|assistant:a2|user:q3|assistant:a3" },
    { 3, 6, "user:q1|assistant:a1|user:q2|assistant:a2|user:q3|assistant:a3" },
    { 3, 4, "user:q2|assistant:a2|user:q3|assistant:a3" },
    { 3, 3, "assistant:a2|user:q3|assistant:a3" },
    { 3, 2, "user:q3|assistant:a3" },
    { 3, 1, "assistant:a3" },
    { 3, 0, "assistant:a3" },      /* a limit under 1 counts as 1 */
    { 3, -5, "assistant:a3" },
};

START_TEST(sliding_window_keeps_the_last_limit_messages)
{
    char h[512], q[16], a[16];
    int i;

    for (i = 1; i <= window_cases[_i].turns; i++) {
        snprintf(q, sizeof q, "q%d", i);
        snprintf(a, sizeof a, "a%d", i);
        append("acme__bot", MEMORY_RUN, "s", q, a, MEMORY_SLIDING_WINDOW, window_cases[_i].limit);
    }
    history("acme__bot", MEMORY_RUN, "s", h, sizeof h);
    ck_assert_msg(strcmp(h, window_cases[_i].kept) == 0, "limit %d: got %s",
                  window_cases[_i].limit, h);
}
END_TEST

/* token_budget keeps the newest messages whose estimates (4 bytes a
 * token, rounded up) fit in the limit. Each message here is 8 bytes = 2
 * tokens. */
static const struct {
    int limit;
    const char *kept;
} budget_cases[] = {
    { 100, "user:qqqqqqq1|assistant:aaaaaaa1|user:qqqqqqq2|assistant:aaaaaaa2" },
    { 8, "user:qqqqqqq1|assistant:aaaaaaa1|user:qqqqqqq2|assistant:aaaaaaa2" },
    { 7, "assistant:aaaaaaa1|user:qqqqqqq2|assistant:aaaaaaa2" },
    { 4, "user:qqqqqqq2|assistant:aaaaaaa2" },
    { 2, "assistant:aaaaaaa2" },
    { 1, "" },                     /* even the newest message is over budget */
};

START_TEST(token_budget_keeps_the_newest_messages_that_fit)
{
    char h[512];

    append("acme__bot", MEMORY_RUN, "s", "qqqqqqq1", "aaaaaaa1", MEMORY_TOKEN_BUDGET, 1000);
    append("acme__bot", MEMORY_RUN, "s", "qqqqqqq2", "aaaaaaa2", MEMORY_TOKEN_BUDGET,
           budget_cases[_i].limit);
    history("acme__bot", MEMORY_RUN, "s", h, sizeof h);
    ck_assert_msg(strcmp(h, budget_cases[_i].kept) == 0, "limit %d: got %s",
                  budget_cases[_i].limit, h);
}
END_TEST

START_TEST(token_estimate_is_four_bytes_a_token_rounded_up)
{
    ck_assert_int_eq(memory_estimate_tokens(""), 0);
    ck_assert_int_eq(memory_estimate_tokens("a"), 1);
    ck_assert_int_eq(memory_estimate_tokens("abcd"), 1);
    ck_assert_int_eq(memory_estimate_tokens("abcde"), 2);
}
END_TEST

/* ---- isolation ------------------------------------------------------------ */

START_TEST(run_and_test_sessions_of_one_id_are_kept_apart)
{
    char h[256];

    append("acme__bot", MEMORY_RUN, "s", "run-q", "run-a", MEMORY_SLIDING_WINDOW, 20);
    append("acme__bot", MEMORY_TEST, "s", "test-q", "test-a", MEMORY_SLIDING_WINDOW, 20);
    history("acme__bot", MEMORY_RUN, "s", h, sizeof h);
    ck_assert_str_eq(h, "user:run-q|assistant:run-a");
    history("acme__bot", MEMORY_TEST, "s", h, sizeof h);
    ck_assert_str_eq(h, "user:test-q|assistant:test-a");
    memory_delete(&app, "acme__bot", MEMORY_TEST, "s");
    history("acme__bot", MEMORY_TEST, "s", h, sizeof h);
    ck_assert_str_eq(h, "");
    history("acme__bot", MEMORY_RUN, "s", h, sizeof h);
    ck_assert_str_eq(h, "user:run-q|assistant:run-a");
}
END_TEST

/* Agent ids that share a prefix, or the name with another org. */
static const char *const neighbours[] = { "acme__bo", "acme__bot2", "acme__botx", "other__bot",
                                          "acme_bot", "acme" };

START_TEST(one_agents_session_is_invisible_to_every_other_agent_and_org)
{
    char h[256];

    append("acme__bot", MEMORY_RUN, "shared", "secret-q", "secret-a", MEMORY_SLIDING_WINDOW, 20);
    history(neighbours[_i], MEMORY_RUN, "shared", h, sizeof h);
    ck_assert_msg(strcmp(h, "") == 0, "%s sees %s", neighbours[_i], h);
    history(neighbours[_i], MEMORY_TEST, "shared", h, sizeof h);
    ck_assert_str_eq(h, "");
    /* and writing there does not touch acme__bot's session */
    append(neighbours[_i], MEMORY_RUN, "shared", "nq", "na", MEMORY_SLIDING_WINDOW, 20);
    history("acme__bot", MEMORY_RUN, "shared", h, sizeof h);
    ck_assert_str_eq(h, "user:secret-q|assistant:secret-a");
}
END_TEST

#define BOT_JSON(name) \
    "{\"name\":\"" name "\",\"display_name\":\"Bot\"," \
    "\"step1\":{\"model\":\"openai/gpt-4o-mini\",\"routing_strategy\":\"cost_optimized\"}," \
    "\"step2\":{\"system_prompt\":\"You help.\",\"persona\":\"Helper\",\"tone\":\"professional\"}," \
    "\"step4\":{\"memory_type\":\"conversational\",\"window_size\":20}}"

static void create_agent(const char *json)
{
    struct json_object *wc = json_tokener_parse(json), *out = NULL;
    struct am_error err;

    ck_assert_ptr_nonnull(wc);
    error_clear(&err);
    ck_assert_msg(agent_create(&app, "acme", wc, &out, &err) == 0, "%s", err.message);
    json_object_put(out);
    json_object_put(wc);
}

START_TEST(deleting_an_agent_deletes_its_conversations_and_only_its)
{
    const char org[] = "{\"slug\":\"acme\",\"display_name\":\"Acme\",\"plan\":\"free\","
                       "\"created_at\":1}";
    struct am_error err;
    char h[256];

    ck_assert_int_eq(store_put(app.store, NULL, STORE_ORGS, "acme", 4, org, strlen(org)), 0);
    create_agent(BOT_JSON("bot"));
    create_agent(BOT_JSON("bot2"));
    append("acme__bot", MEMORY_RUN, "s1", "q", "a", MEMORY_SLIDING_WINDOW, 20);
    append("acme__bot", MEMORY_TEST, "s2", "q", "a", MEMORY_SLIDING_WINDOW, 20);
    append("acme__bot2", MEMORY_RUN, "s1", "q2", "a2", MEMORY_SLIDING_WINDOW, 20);
    append("other__bot", MEMORY_RUN, "s1", "q3", "a3", MEMORY_SLIDING_WINDOW, 20);
    error_clear(&err);
    ck_assert_msg(agent_delete(&app, "acme", "bot", &err) == 0, "%s", err.message);
    history("acme__bot", MEMORY_RUN, "s1", h, sizeof h);
    ck_assert_str_eq(h, "");
    history("acme__bot", MEMORY_TEST, "s2", h, sizeof h);
    ck_assert_str_eq(h, "");
    history("acme__bot2", MEMORY_RUN, "s1", h, sizeof h);
    ck_assert_str_eq(h, "user:q2|assistant:a2");
    history("other__bot", MEMORY_RUN, "s1", h, sizeof h);
    ck_assert_str_eq(h, "user:q3|assistant:a3");
}
END_TEST

/* ---- bad input and corrupt records ---------------------------------------- */

START_TEST(ids_too_long_for_a_key_are_bad_request)
{
    char agent[600];
    struct json_object *a = (struct json_object *)&a;

    memset(agent, 'x', sizeof agent - 1);
    agent[sizeof agent - 1] = '\0';
    ck_assert_int_eq(memory_append(&app, agent, MEMORY_RUN, "s", "q", "a",
                                   MEMORY_SLIDING_WINDOW, 20), AM_EBADREQ);
    ck_assert_int_eq(memory_load(&app, agent, MEMORY_RUN, "s", &a), AM_EBADREQ);
    ck_assert_ptr_null(a);
}
END_TEST

static const struct {
    const char *session_id;
    int valid;
} session_cases[] = {
    { "s", 1 },
    { "user-42:chat_1.a", 1 },
    { "", 0 },
    { "has space", 0 },
    { "slash/no", 0 },
    { "nul\x01", 0 },
    { "ünicode", 0 },
};

START_TEST(session_ids_are_1_to_128_bytes_of_the_allowed_set)
{
    char s[130];

    ck_assert_int_eq(memory_session_valid(session_cases[_i].session_id), session_cases[_i].valid);
    memset(s, 'a', 128);
    s[128] = '\0';
    ck_assert_int_eq(memory_session_valid(s), 1);
    s[128] = 'a';
    s[129] = '\0';
    ck_assert_int_eq(memory_session_valid(s), 0);
}
END_TEST

/* Records memory.c would never write. */
static const char *const corrupt_records[] = {
    "not json at all",
    "{\"role\":\"user\",\"content\":\"x\"}",
    "\"a string\"",
    "[1,2]",
    "[{\"role\":\"user\"}]",
    "[{\"content\":\"x\"}]",
    "[{\"role\":null,\"content\":\"x\"}]",
    "[{\"role\":\"user\",\"content\":7}]",
    "[{\"role\":\"user\",\"content\":\"ok\"},\"junk\"]",
    "[",
};

START_TEST(corrupt_record_is_an_error_not_a_crash)
{
    const char *rec = corrupt_records[_i];
    struct json_object *a = (struct json_object *)&a;
    char k[64], *val = NULL;
    size_t klen = raw_key(k, sizeof k, "acme__bot", 'r', "s"), vlen = 0;

    ck_assert_int_eq(store_put(app.store, NULL, STORE_SESSIONS, k, klen, rec, strlen(rec)), 0);
    ck_assert_int_eq(memory_load(&app, "acme__bot", MEMORY_RUN, "s", &a), AM_EIO);
    ck_assert_ptr_null(a);
    /* both strategies: token_budget reads every message's content */
    ck_assert_int_eq(memory_append(&app, "acme__bot", MEMORY_RUN, "s", "q", "a",
                                   MEMORY_TOKEN_BUDGET, 100), AM_EUNAVAILABLE);
    ck_assert_int_eq(memory_append(&app, "acme__bot", MEMORY_RUN, "s", "q", "a",
                                   MEMORY_SLIDING_WINDOW, 20), AM_EUNAVAILABLE);
    /* the record is left as it was, for whoever looks into it */
    ck_assert_int_eq(store_get(app.store, NULL, STORE_SESSIONS, k, klen, 0, &val, &vlen), 0);
    ck_assert_str_eq(val, rec);
    free(val);
}
END_TEST

START_TEST(record_written_by_memory_loads_back_through_the_raw_key)
{
    const char rec[] = "[{\"role\":\"user\",\"content\":\"hi\"},"
                       "{\"role\":\"assistant\",\"content\":\"hello\"}]";
    char k[64], h[128];
    size_t klen = raw_key(k, sizeof k, "acme__bot", 't', "s");

    ck_assert_int_eq(store_put(app.store, NULL, STORE_SESSIONS, k, klen, rec, strlen(rec)), 0);
    history("acme__bot", MEMORY_TEST, "s", h, sizeof h);
    ck_assert_str_eq(h, "user:hi|assistant:hello");
    history("acme__bot", MEMORY_RUN, "s", h, sizeof h);
    ck_assert_str_eq(h, "");
}
END_TEST

/* ---- bounds (issue 15: `test` filled the disk) ----------------------------- */

/* Bytes stored in STORE_SESSIONS under prefix (keys and values), and how
 * many sessions. */
struct stored {
    size_t bytes;
    int n;
};

static int stored_one(const char *k, size_t kl, const char *v, size_t vl, void *arg)
{
    struct stored *st = arg;

    (void)k;
    (void)v;
    st->bytes += kl + vl;
    st->n++;
    return 0;
}

static struct stored stored_under(const char *prefix, size_t plen)
{
    struct stored st = { 0, 0 };

    ck_assert_int_eq(store_scan(app.store, NULL, STORE_SESSIONS, prefix, plen, stored_one, &st),
                     0);
    return st;
}

static int has_session(const char *agent, int mode, const char *session)
{
    char h[64 * 1024];

    history(agent, mode, session, h, sizeof h);
    return h[0] != '\0';
}

START_TEST(past_the_agent_cap_the_least_recently_used_session_goes)
{
    cfg.max_sessions_per_agent = 3;
    append("acme__bot", MEMORY_RUN, "s1", "q", "a", MEMORY_SLIDING_WINDOW, 20);
    append("acme__bot", MEMORY_RUN, "s2", "q", "a", MEMORY_SLIDING_WINDOW, 20);
    append("acme__bot", MEMORY_RUN, "s3", "q", "a", MEMORY_SLIDING_WINDOW, 20);
    usleep(5000);
    append("acme__bot", MEMORY_RUN, "s1", "q", "a", MEMORY_SLIDING_WINDOW, 20); /* s2 is now LRU */
    usleep(5000);
    append("acme__bot", MEMORY_RUN, "s4", "q", "a", MEMORY_SLIDING_WINDOW, 20);
    ck_assert(has_session("acme__bot", MEMORY_RUN, "s1"));
    ck_assert(!has_session("acme__bot", MEMORY_RUN, "s2"));
    ck_assert(has_session("acme__bot", MEMORY_RUN, "s3"));
    ck_assert(has_session("acme__bot", MEMORY_RUN, "s4"));
    /* test sessions have their own count: three of them push out no run */
    append("acme__bot", MEMORY_TEST, "t1", "q", "a", MEMORY_SLIDING_WINDOW, 20);
    append("acme__bot", MEMORY_TEST, "t2", "q", "a", MEMORY_SLIDING_WINDOW, 20);
    append("acme__bot", MEMORY_TEST, "t3", "q", "a", MEMORY_SLIDING_WINDOW, 20);
    append("acme__bot", MEMORY_TEST, "t4", "q", "a", MEMORY_SLIDING_WINDOW, 20);
    ck_assert(!has_session("acme__bot", MEMORY_TEST, "t1"));
    ck_assert(has_session("acme__bot", MEMORY_TEST, "t4"));
    ck_assert_int_eq(stored_under("acme__bot\0r", 11).n, 3);
    ck_assert_int_eq(stored_under("acme__bot\0t", 11).n, 3);
    /* another agent of the org has its own cap */
    append("acme__bot2", MEMORY_RUN, "s1", "q", "a", MEMORY_SLIDING_WINDOW, 20);
    ck_assert(has_session("acme__bot", MEMORY_RUN, "s3"));
}
END_TEST

START_TEST(thousands_of_fresh_sessions_stay_under_the_org_byte_cap)
{
    char *big = xmalloc(8193), sid[32];
    struct stored st;
    int i;

    memset(big, 'x', 8192);
    big[8192] = '\0';
    cfg.max_kb_per_org = 64;
    for (i = 0; i < 400; i++) {
        snprintf(sid, sizeof sid, "hostile-%d", i);
        append(i % 2 ? "acme__bot" : "acme__bot2", MEMORY_TEST, sid, big, "a",
               MEMORY_SLIDING_WINDOW, 20);
        st = stored_under("acme__", 6);
        /* the cap, plus the session just written */
        ck_assert_msg(st.bytes <= 64 * 1024 + 8192 + 256, "%zu bytes after %d", st.bytes, i);
    }
    ck_assert(has_session(i % 2 ? "acme__bot2" : "acme__bot", MEMORY_TEST, "hostile-399"));
    ck_assert(!has_session("acme__bot2", MEMORY_TEST, "hostile-0"));
    /* another org's sessions were never touched */
    append("other__bot", MEMORY_TEST, "mine", big, "a", MEMORY_SLIDING_WINDOW, 20);
    for (i = 0; i < 20; i++) {
        snprintf(sid, sizeof sid, "more-%d", i);
        append("acme__bot", MEMORY_TEST, sid, big, "a", MEMORY_SLIDING_WINDOW, 20);
    }
    ck_assert(has_session("other__bot", MEMORY_TEST, "mine"));
    free(big);
}
END_TEST

START_TEST(the_sweep_expires_idle_sessions_and_keeps_the_others)
{
    int swept = -1;

    append("acme__bot", MEMORY_RUN, "old", "q", "a", MEMORY_SLIDING_WINDOW, 20);
    append("other__bot", MEMORY_TEST, "old", "q", "a", MEMORY_SLIDING_WINDOW, 20);
    usleep(1200 * 1000);
    append("acme__bot", MEMORY_RUN, "new", "q", "a", MEMORY_SLIDING_WINDOW, 20);
    ck_assert_int_eq(memory_sweep(app.store, memory_now_ms(), 1, 1000, &swept), 0);
    ck_assert_int_eq(swept, 2);
    ck_assert(!has_session("acme__bot", MEMORY_RUN, "old"));
    ck_assert(!has_session("other__bot", MEMORY_TEST, "old"));
    ck_assert(has_session("acme__bot", MEMORY_RUN, "new"));
    /* the counts went with them: a cap of 2 keeps "new" and one more */
    cfg.max_sessions_per_agent = 2;
    append("acme__bot", MEMORY_RUN, "again", "q", "a", MEMORY_SLIDING_WINDOW, 20);
    ck_assert(has_session("acme__bot", MEMORY_RUN, "new"));
    ck_assert(has_session("acme__bot", MEMORY_RUN, "again"));
    ck_assert_int_eq(memory_sweep(app.store, memory_now_ms(), 3600, 1000, &swept), 0);
    ck_assert_int_eq(swept, 0);
}
END_TEST

START_TEST(the_sweep_stops_at_its_maximum_and_the_next_pass_goes_on)
{
    char sid[32];
    int i, swept = 0, first;

    for (i = 0; i < 300; i++) {
        snprintf(sid, sizeof sid, "s%d", i);
        append("acme__bot", MEMORY_TEST, sid, "q", "a", MEMORY_SLIDING_WINDOW, 20);
    }
    ck_assert_int_eq(memory_sweep(app.store, memory_now_ms() + 10000, 1, 200, &swept), 0);
    ck_assert_int_ge(swept, 200);
    ck_assert_int_lt(swept, 300);
    first = swept;
    ck_assert_int_eq(memory_sweep(app.store, memory_now_ms() + 10000, 1, 1000, &swept), 0);
    ck_assert_int_eq(swept, 300 - first);
    ck_assert_int_eq(stored_under("acme__bot\0t", 11).n, 0);
}
END_TEST

/* ---- runner ----------------------------------------------------------------- */

static Suite *memory_suite(void)
{
    Suite *s = suite_create("memory");
    TCase *order = tcase_create("order_and_trimming");
    TCase *iso = tcase_create("isolation");
    TCase *bad = tcase_create("bad_input");
    TCase *bounds = tcase_create("bounds");
    TCase *all[] = { order, iso, bad, bounds };
    int i;

    tcase_add_test(order, turns_come_back_in_the_order_they_were_appended);
    tcase_add_test(order, unknown_session_loads_as_empty_history);
    tcase_add_loop_test(order, sliding_window_keeps_the_last_limit_messages, 0,
                        NCASES(window_cases));
    tcase_add_loop_test(order, token_budget_keeps_the_newest_messages_that_fit, 0,
                        NCASES(budget_cases));
    tcase_add_test(order, token_estimate_is_four_bytes_a_token_rounded_up);
    tcase_add_test(iso, run_and_test_sessions_of_one_id_are_kept_apart);
    tcase_add_loop_test(iso, one_agents_session_is_invisible_to_every_other_agent_and_org, 0,
                        NCASES(neighbours));
    tcase_add_test(iso, deleting_an_agent_deletes_its_conversations_and_only_its);
    tcase_add_test(bad, ids_too_long_for_a_key_are_bad_request);
    tcase_add_loop_test(bad, session_ids_are_1_to_128_bytes_of_the_allowed_set, 0,
                        NCASES(session_cases));
    tcase_add_loop_test(bad, corrupt_record_is_an_error_not_a_crash, 0, NCASES(corrupt_records));
    tcase_add_test(bad, record_written_by_memory_loads_back_through_the_raw_key);
    tcase_add_test(bounds, past_the_agent_cap_the_least_recently_used_session_goes);
    tcase_add_test(bounds, thousands_of_fresh_sessions_stay_under_the_org_byte_cap);
    tcase_add_test(bounds, the_sweep_expires_idle_sessions_and_keeps_the_others);
    tcase_add_test(bounds, the_sweep_stops_at_its_maximum_and_the_next_pass_goes_on);
    for (i = 0; i < NCASES(all); i++) {
        tcase_add_checked_fixture(all[i], setup, teardown);
        tcase_set_timeout(all[i], 60);
        suite_add_tcase(s, all[i]);
    }
    return s;
}

static void remove_leftovers(void)
{
    char prefix[48], name[300];
    DIR *d = opendir("/dev/shm");
    struct dirent *de;

    snprintf(prefix, sizeof prefix, "am-test-%d-", (int)runner_pid);
    while (d != NULL && (de = readdir(d)) != NULL)
        if (strncmp(de->d_name, prefix, strlen(prefix)) == 0 &&
            util_snprintf(name, sizeof name, "/%s", de->d_name) == 0)
            shm_unlink(name);
    if (d != NULL)
        closedir(d);
    nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int main(void)
{
    SRunner *sr;
    int failed;

    runner_pid = getpid();
    util_strlcpy(base, "/tmp/am-check-memory-XXXXXX", sizeof base);
    if (mkdtemp(base) == NULL) {
        perror("mkdtemp");
        return EXIT_FAILURE;
    }
    sr = srunner_create(memory_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    remove_leftovers();
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
