/*
 * store.c - the Berkeley DB environment and its databases.
 *
 * Owns: the DB_ENV handle of this process and one DB handle per database
 * in enum store_db. Every handle is opened with DB_THREAD, so a worker's
 * threads share them.
 *
 * Must never: be included by anything but this file's callers through
 * store.h (no other file includes db.h); log; keep a transaction open
 * across a return to the caller except through store_transact.
 *
 * Invariants:
 *  1. Only the process that opens with STORE_OPEN_CREATE runs recovery,
 *     and it does so before any other process joins the environment.
 *  2. Every commit is durable before store_transact returns 0 when
 *     opt->sync is set (the default): a client is never told "done" for a
 *     write that a crash could lose. Commits of concurrent threads share
 *     one log flush (group_flush), which is how that stays affordable.
 *  3. A deadlock victim is aborted and retried from the start; nothing a
 *     failed attempt did is visible.
 *  4. A dead process's locks and transactions are released by failchk,
 *     which the supervisor runs after reaping it (is_alive below).
 *  5. From store_open's return to store_close, the environment and every
 *     database of enum store_db are open.
 *  6. Between calls, no transaction of this handle is open (transact
 *     commits or aborts every one it begins), and group commit never marks
 *     done a commit that was not made.
 * store_check_invariants checks 5 and 6.
 */
#include <db.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "state/store.h"
#include "lib/invariant.h"
#include "lib/util.h"

#define STORE_DEADLOCK_RETRIES 64

struct store {
    DB_ENV *env;
    DB *db[STORE_DB_COUNT];
    int sync;                   /* opt->sync: commits wait for the disk */
    /* Group commit (see group_flush): the threads of this process that
     * commit at about the same time share one log flush. */
    pthread_mutex_t gc_lock;
    pthread_cond_t gc_cond;
    uint64_t gc_next;           /* tickets handed out, one per commit */
    uint64_t gc_done;           /* every ticket up to this one is on disk */
    int gc_flushing;            /* a thread is in log_flush now */
    /* Deferred commits (store_transact_deferred): the flusher thread puts
     * them on disk at most flush_ms after they were written. */
    int flush_ms;               /* 0: deferred commits are synced like any other */
    pthread_t flusher;
    int flusher_running;
    pthread_mutex_t fl_lock;
    pthread_cond_t fl_cond;     /* wakes the flusher to stop */
    int fl_stop;
    uint64_t fl_pending;        /* deferred commits since the last flush; atomic */
    int64_t open_txns;          /* transactions begun and not yet ended (transact); atomic */
    const struct store_rep_options *rep;    /* NULL: no replication group */
};

static int flusher_start(struct store *s);
static void flusher_stop(struct store *s);

enum commit_mode {
    COMMIT_SYNC,                /* on disk before store_transact returns */
    COMMIT_DEFERRED,            /* written now, on disk within flush_ms */
};

struct store_txn {
    DB_TXN *txn;
    int bumped;                 /* the change sequences it advanced (1 << enum store_seq) */
};

static const char *const store_db_files[STORE_DB_COUNT] = {
    [STORE_USERS] = "users.db",
    [STORE_ORGS] = "orgs.db",
    [STORE_MEMBERS] = "members.db",
    [STORE_AGENTS] = "agents.db",
    [STORE_COMPILED] = "compiled.db",
    [STORE_TOKENS] = "tokens.db",
    [STORE_SESSIONS] = "sessions.db",
    [STORE_USAGE] = "usage.db",
    [STORE_RUNLOG] = "runlog.db",
    [STORE_INVITES] = "invites.db",
    [STORE_APIKEYS] = "apikeys.db",
    [STORE_PROVIDER_KEYS] = "provider_keys.db",
    [STORE_VERSIONS] = "versions.db",
    [STORE_SESSION_IDX] = "sessidx.db",
    [STORE_META] = "meta.db",
};

/* Berkeley DB's own diagnostics go here instead of stderr: the store
 * never logs; callers get the text in their error message. */
static __thread char store_last_message[256];

static void store_errcall(const DB_ENV *env, const char *prefix, const char *msg)
{
    (void)env;
    (void)prefix;
    util_strlcpy(store_last_message, msg, sizeof(store_last_message));
}

static void store_msgcall(const DB_ENV *env, const char *msg)
{
    (void)env;
    (void)msg;
}

/* Replication, per thread: whether Berkeley DB told this thread's last
 * commit too few sites acknowledged it (DB_EVENT_REP_PERM_FAILED is
 * delivered in the committing thread), and that commit's token. Per
 * process: whether replication made the database handles unusable. */
static __thread int rep_perm_failed;
static __thread DB_TXN_TOKEN rep_token;
static __thread int rep_have_token;
static int rep_handles_dead;

static int fail_write_countdown;    /* test hook; see store_test_fail_write_after */

void store_test_fail_write_after(int n)
{
    __atomic_store_n(&fail_write_countdown, n, __ATOMIC_SEQ_CST);
}

static int injected_write_failure(void)
{
    int n = __atomic_load_n(&fail_write_countdown, __ATOMIC_SEQ_CST);

    if (n <= 0)
        return 0;
    return __atomic_sub_fetch(&fail_write_countdown, 1, __ATOMIC_SEQ_CST) == 0;
}

/* Map a Berkeley DB return code to ours. */
static int store_rc(int rc)
{
    switch (rc) {
    case 0:
        return AM_OK;
    case DB_NOTFOUND:
    case DB_KEYEMPTY:
        return AM_ENOENT;
    case DB_LOCK_DEADLOCK:
    case DB_LOCK_NOTGRANTED:
        return AM_EDEADLOCK;
    case DB_REP_HANDLE_DEAD:
        __atomic_store_n(&rep_handles_dead, 1, __ATOMIC_RELAXED);
        return AM_EUNAVAILABLE;
    case DB_REP_LOCKOUT:
    case DB_REP_JOIN_FAILURE:
        return AM_EUNAVAILABLE;
    case EACCES:            /* a write on a replica */
    case DB_REP_UNAVAIL:
        return AM_ENOMASTER;
    default:
        return AM_EIO;
    }
}

/* Berkeley DB's events: only the one a committing thread must see. */
static void store_event(DB_ENV *env, u_int32_t which, void *info)
{
    (void)env;
    (void)info;
    if (which == DB_EVENT_REP_PERM_FAILED)
        rep_perm_failed = 1;
    else if (which == DB_EVENT_PANIC)
        __atomic_store_n(&rep_handles_dead, 1, __ATOMIC_RELAXED);
}

/* failchk asks whether a pid still runs; a reaped child does not. */
static int store_is_alive(DB_ENV *env, pid_t pid, db_threadid_t tid, u_int32_t flags)
{
    (void)env;
    (void)tid;
    (void)flags;
    if (pid == getpid())
        return 1;
    return kill(pid, 0) == 0 || errno != ESRCH;
}

static int store_env_setup(DB_ENV *env, const struct store_options *opt,
                           struct am_error *err)
{
    int rc;
    u_int32_t threads = opt->max_threads > 0 ? (u_int32_t)opt->max_threads : 64;

    env->set_errcall(env, store_errcall);
    env->set_msgcall(env, store_msgcall);
    if ((rc = env->set_cachesize(env, 0, (u_int32_t)opt->cache_mb * 1024u * 1024u, 1)) ||
        (rc = env->set_lk_detect(env, DB_LOCK_DEFAULT)) ||
        (rc = env->set_thread_count(env, threads)) ||
        (rc = env->set_isalive(env, store_is_alive)) ||
        (rc = env->set_lk_max_locks(env, 20000)) ||
        (rc = env->set_lk_max_objects(env, 20000)) ||
        (rc = env->set_lk_max_lockers(env, 4 * threads + 1000)) ||
        (rc = env->set_tx_max(env, 2 * threads + 100)))
        return error_set(err, AM_EIO, "storage: configuring environment: %s",
                         db_strerror(rc));
    if (!opt->sync && (rc = env->set_flags(env, DB_TXN_WRITE_NOSYNC, 1)))
        return error_set(err, AM_EIO, "storage: %s", db_strerror(rc));
    return 0;
}

/* Open every database of enum store_db (not yet open) on s's environment.
 * In a group only the master creates them: a replica that has not caught
 * up yet gets AM_ENOENT. Returns 0, AM_ENOENT or AM_EIO. */
static int open_databases(struct store *s, struct am_error *err)
{
    u_int32_t db_flags = DB_THREAD | DB_AUTO_COMMIT | DB_CREATE;
    int rc, i;

    if (s->rep != NULL && !store_rep_is_master(s))
        db_flags &= ~(u_int32_t)DB_CREATE;
    for (i = 0; i < STORE_DB_COUNT; i++) {
        char name[32];

        if (s->db[i] != NULL)
            continue;
        if (store_db_files[i] != NULL)
            snprintf(name, sizeof(name), "%s", store_db_files[i]);
        else    /* a usage shard past the first */
            snprintf(name, sizeof(name), "usage-%d.db", i - STORE_USAGE);
        if ((rc = db_create(&s->db[i], s->env, 0)) != 0)
            return error_set(err, AM_EIO, "storage: db_create: %s", db_strerror(rc));
        if ((rc = s->db[i]->open(s->db[i], NULL, name, NULL, DB_BTREE, db_flags, 0600)) != 0) {
            s->db[i]->close(s->db[i], 0);
            s->db[i] = NULL;
            /* a replica being synchronised: not there yet, or locked out */
            return error_set(err, s->rep != NULL && (rc == ENOENT || rc == DB_LOCK_DEADLOCK ||
                                                     rc == DB_REP_LOCKOUT) ? AM_ENOENT : AM_EIO,
                             "storage: opening %s: %s", name, db_strerror(rc));
        }
    }
    return 0;
}

int store_open_databases(struct store *s, struct am_error *err)
{
    return open_databases(s, err);
}

int store_reopen_databases(struct store *s, struct am_error *err)
{
    int i;

    for (i = 0; i < STORE_DB_COUNT; i++)
        if (s->db[i] != NULL) {
            s->db[i]->close(s->db[i], 0);
            s->db[i] = NULL;
        }
    __atomic_store_n(&rep_handles_dead, 0, __ATOMIC_RELAXED);
    return open_databases(s, err);
}

int store_open(struct store **out, const struct store_options *opt, int flags,
               struct am_error *err)
{
    struct store *s = xcalloc(1, sizeof(*s));
    u_int32_t env_flags = DB_CREATE | DB_INIT_LOCK | DB_INIT_LOG | DB_INIT_MPOOL |
                          DB_INIT_TXN | DB_THREAD;
    int rc;

    *out = NULL;
    s->sync = opt->sync;
    s->rep = opt->rep;
    pthread_mutex_init(&s->gc_lock, NULL);
    pthread_cond_init(&s->gc_cond, NULL);
    if (flags & STORE_OPEN_CREATE)
        env_flags |= DB_RECOVER;
    if (opt->rep != NULL)
        env_flags |= DB_INIT_REP;
    if ((rc = db_env_create(&s->env, 0)) != 0) {
        error_set(err, AM_EIO, "storage: db_env_create: %s", db_strerror(rc));
        goto fail;
    }
    if (store_env_setup(s->env, opt, err) != 0)
        goto fail;
    if (opt->rep != NULL && (rc = s->env->set_event_notify(s->env, store_event)) != 0) {
        error_set(err, AM_EIO, "storage: %s", db_strerror(rc));
        goto fail;
    }
    if ((rc = s->env->open(s->env, opt->home, env_flags, 0600)) != 0) {
        error_set(err, AM_EIO, "storage: opening environment %s: %s (%s)", opt->home,
                  db_strerror(rc), store_last_message);
        goto fail;
    }
    if (!(flags & STORE_OPEN_ENV_ONLY) && open_databases(s, err) != 0)
        goto fail;
    if (s->sync && opt->flush_ms > 0) {
        s->flush_ms = opt->flush_ms;
        if ((rc = flusher_start(s)) != 0) {
            error_set(err, AM_EIO, "storage: starting the log flusher: %s", strerror(rc));
            goto fail;
        }
    }
    *out = s;
    return 0;
fail:
    store_close(s);
    return err->code == AM_ENOENT ? AM_ENOENT : AM_EIO;
}

void store_close(struct store *s)
{
    int i;

    if (s == NULL)
        return;
    flusher_stop(s);
    for (i = 0; i < STORE_DB_COUNT; i++)
        if (s->db[i] != NULL)
            s->db[i]->close(s->db[i], 0);
    if (s->env != NULL)
        s->env->close(s->env, 0);
    pthread_cond_destroy(&s->gc_cond);
    pthread_mutex_destroy(&s->gc_lock);
    free(s);
}

int store_failchk(struct store *s, struct am_error *err)
{
    int rc, attempt;

    /* Berkeley DB 5.3 can answer EBUSY after it did abort the dead
     * process's transaction (it destroys a mutex it still holds while
     * cleaning up the dead process's file registrations) and stops before
     * clearing the rest; a second pass finishes the job. DB_RUNRECOVERY is
     * final. */
    for (attempt = 0; attempt < 4; attempt++) {
        rc = s->env->failchk(s->env, 0);
        if (rc != EBUSY)
            break;
    }
    if (rc != 0)
        return error_set(err, AM_EIO, "storage: failchk: %s (%s)", db_strerror(rc),
                         store_last_message);
    return 0;
}

/* Log files are removed here, after a checkpoint, and not by
 * DB_LOG_AUTO_REMOVE: Berkeley DB 5.3 removes them automatically even while
 * db_hotbackup copies the environment (it sets DB_HOTBACKUP_IN_PROGRESS,
 * which the automatic removal ignores), and a log file removed between the
 * copy of the databases and the copy of the logs would leave the backup
 * without changes its database pages lack. So no log file is removed while
 * any process has that flag set. */
int store_checkpoint(struct store *s)
{
    u_int32_t flags = 0;

    if (s->env->txn_checkpoint(s->env, 0, 0, 0) != 0)
        return AM_EIO;
    if (s->env->get_flags(s->env, &flags) != 0)
        return AM_EIO;
    if ((flags & DB_HOTBACKUP_IN_PROGRESS) == 0 &&
        s->env->log_archive(s->env, NULL, DB_ARCH_REMOVE) != 0)
        return AM_EIO;
    return 0;
}

int store_ping(struct store *s)
{
    DBT k, v;
    int rc;

    memset(&k, 0, sizeof(k));
    memset(&v, 0, sizeof(v));
    k.data = (void *)"";
    k.size = 1;
    v.flags = DB_DBT_MALLOC;
    rc = s->db[STORE_ORGS]->get(s->db[STORE_ORGS], NULL, &k, &v, 0);
    if (rc == 0)
        free(v.data);
    rc = store_rc(rc);
    return (rc == AM_OK || rc == AM_ENOENT || rc == AM_EDEADLOCK) ? 0 : AM_EIO;
}

int store_stats(struct store *s, struct store_stats *out)
{
    DB_MPOOL_STAT *mp = NULL;
    DB_LOCK_STAT *lk = NULL;
    int rc = AM_EIO;

    memset(out, 0, sizeof(*out));
    if (s->env->memp_stat(s->env, &mp, NULL, 0) != 0 ||
        s->env->lock_stat(s->env, &lk, 0) != 0)
        goto out;
    out->cache_hit = mp->st_cache_hit;
    out->cache_miss = mp->st_cache_miss;
    out->deadlocks = lk->st_ndeadlocks;
    out->lock_timeouts = lk->st_nlocktimeouts;
    rc = 0;
out:
    free(mp);       /* Berkeley DB allocates both with malloc */
    free(lk);
    return rc;
}

/* Make every commit this thread has made durable. Commits are written with
 * DB_TXN_NOSYNC; each then takes a ticket here. A log flush started after a
 * ticket was taken covers that commit (log_flush(NULL) writes and syncs all
 * of the log there is), so one thread flushes for every ticket handed out
 * when it starts, and the others wait for it instead of queueing fsyncs of
 * their own on the log mutex. Returns 0 or AM_EIO. */
static int group_flush(struct store *s)
{
    uint64_t mine, upto;
    int rc = 0;

    pthread_mutex_lock(&s->gc_lock);
    mine = ++s->gc_next;
    while (s->gc_done < mine) {
        if (s->gc_flushing) {
            pthread_cond_wait(&s->gc_cond, &s->gc_lock);
            continue;
        }
        s->gc_flushing = 1;
        upto = s->gc_next;
        pthread_mutex_unlock(&s->gc_lock);
        rc = s->env->log_flush(s->env, NULL);
        pthread_mutex_lock(&s->gc_lock);
        s->gc_flushing = 0;
        if (rc == 0 && upto > s->gc_done)
            s->gc_done = upto;
        pthread_cond_broadcast(&s->gc_cond);
        if (rc != 0)
            break;
    }
    pthread_mutex_unlock(&s->gc_lock);
    return rc == 0 ? 0 : AM_EIO;
}

static int transact(struct store *s, store_txn_fn fn, void *arg, enum commit_mode mode)
{
    u_int32_t flags;

    struct store_txn t;
    int attempt, rc = AM_EDEADLOCK;

    for (attempt = 0; attempt < STORE_DEADLOCK_RETRIES; attempt++) {
        if (attempt > 0) {
            /* Back off a little so the winner can finish. */
            struct timespec ts = { 0, (long)(attempt < 10 ? attempt : 10) * 200000L };
            nanosleep(&ts, NULL);
        }
        t.bumped = 0;
        if ((rc = s->env->txn_begin(s->env, NULL, &t.txn, 0)) != 0)
            return store_rc(rc) == AM_ENOMASTER ? AM_ENOMASTER : AM_EIO;
        __atomic_add_fetch(&s->open_txns, 1, __ATOMIC_RELAXED);
        rc = fn(s, &t, arg);
        if (rc != 0) {
            t.bumped = 0;
            t.txn->abort(t.txn);
            __atomic_sub_fetch(&s->open_txns, 1, __ATOMIC_RELAXED);
            if (rc == AM_EDEADLOCK)
                continue;
            return rc;
        }
        /* sync: write nothing at commit, then flush in a group; deferred:
         * write the log to the OS (it outlives this process) and leave
         * the fsync to the flusher; sync off: the environment's
         * DB_TXN_WRITE_NOSYNC (to the OS, no fsync). */
        if (mode == COMMIT_DEFERRED && s->sync && s->flush_ms == 0)
            mode = COMMIT_SYNC;
        flags = !s->sync ? 0 : mode == COMMIT_DEFERRED ? DB_TXN_WRITE_NOSYNC : DB_TXN_NOSYNC;
        if (s->rep != NULL) {
            rep_have_token = t.txn->set_commit_token(t.txn, &rep_token) == 0;
            rep_perm_failed = 0;
        }
        rc = store_rc(t.txn->commit(t.txn, flags));
        __atomic_sub_fetch(&s->open_txns, 1, __ATOMIC_RELAXED);
        if (s->rep != NULL && rc != 0)
            rep_have_token = 0;
        /* Committed here, but fewer sites than the acknowledgement policy
         * asks for have it: the client must not be told it is safe. */
        if (s->rep != NULL && rc == 0 && rep_perm_failed)
            rc = AM_ENOTACKED;
        if (rc == 0 && mode == COMMIT_SYNC && s->sync)
            rc = group_flush(s);
        if (rc == 0 && mode == COMMIT_DEFERRED && s->sync)
            __atomic_add_fetch(&s->fl_pending, 1, __ATOMIC_RELAXED);
        if (rc != AM_EDEADLOCK)
            return rc;
    }
    return AM_EUNAVAILABLE;
}

int store_transact(struct store *s, store_txn_fn fn, void *arg)
{
    return transact(s, fn, arg, COMMIT_SYNC);
}

int store_transact_deferred(struct store *s, store_txn_fn fn, void *arg)
{
    return transact(s, fn, arg, COMMIT_DEFERRED);
}

/* The flusher: every flush_ms, put the deferred commits on disk (through
 * group_flush, so a synced commit waiting at the same time shares it). */
static void *flusher_main(void *arg)
{
    struct store *s = arg;
    struct timespec at;
    int stop = 0;

    while (!stop) {
        pthread_mutex_lock(&s->fl_lock);
        clock_gettime(CLOCK_MONOTONIC, &at);
        at.tv_nsec += (long)(s->flush_ms % 1000) * 1000000L;
        at.tv_sec += s->flush_ms / 1000 + at.tv_nsec / 1000000000L;
        at.tv_nsec %= 1000000000L;
        while (!s->fl_stop && pthread_cond_timedwait(&s->fl_cond, &s->fl_lock, &at) == 0)
            ;
        stop = s->fl_stop;
        pthread_mutex_unlock(&s->fl_lock);
        if (__atomic_exchange_n(&s->fl_pending, 0, __ATOMIC_RELAXED) != 0 && group_flush(s) != 0)
            __atomic_add_fetch(&s->fl_pending, 1, __ATOMIC_RELAXED);   /* try again */
    }
    return NULL;
}

static int flusher_start(struct store *s)
{
    pthread_condattr_t ca;
    int e;

    pthread_mutex_init(&s->fl_lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->fl_cond, &ca);
    pthread_condattr_destroy(&ca);
    if ((e = pthread_create(&s->flusher, NULL, flusher_main, s)) != 0)
        return e;
    s->flusher_running = 1;
    return 0;
}

/* Stop the flusher after one last flush of what is pending. */
static void flusher_stop(struct store *s)
{
    if (!s->flusher_running)
        return;
    pthread_mutex_lock(&s->fl_lock);
    s->fl_stop = 1;
    pthread_cond_signal(&s->fl_cond);
    pthread_mutex_unlock(&s->fl_lock);
    pthread_join(s->flusher, NULL);
    s->flusher_running = 0;
    pthread_cond_destroy(&s->fl_cond);
    pthread_mutex_destroy(&s->fl_lock);
}

static DB_TXN *txn_of(struct store_txn *t)
{
    return t != NULL ? t->txn : NULL;
}

static void dbt_init(DBT *d, const void *data, size_t len)
{
    memset(d, 0, sizeof(*d));
    d->data = (void *)data;
    d->size = (u_int32_t)len;
}

int store_get(struct store *s, struct store_txn *t, int db, const void *key,
              size_t klen, int flags, char **val, size_t *vlen)
{
    DBT k, v;
    int rc;

    *val = NULL;
    dbt_init(&k, key, klen);
    dbt_init(&v, NULL, 0);
    v.flags = DB_DBT_MALLOC;
    rc = s->db[db]->get(s->db[db], txn_of(t), &k, &v,
                        (t != NULL && (flags & STORE_RMW)) ? DB_RMW : 0);
    if (rc != 0)
        return store_rc(rc);
    *val = xmalloc(v.size + 1);
    memcpy(*val, v.data, v.size);
    (*val)[v.size] = '\0';
    if (vlen != NULL)
        *vlen = v.size;
    free(v.data);
    return 0;
}

/* In a group: which change sequence (STORE_META) a write to db advances,
 * -1 for none. A replica's replication process watches them. */
static int seq_of(int db)
{
    switch (db) {
    case STORE_AGENTS:
    case STORE_COMPILED:
        return STORE_SEQ_REGISTRY;
    case STORE_APIKEYS:
    case STORE_MEMBERS:
    case STORE_TOKENS:
    case STORE_USERS:
    case STORE_ORGS:
        return STORE_SEQ_AUTH;
    default:
        return -1;
    }
}

static const char *const seq_keys[] = { [STORE_SEQ_REGISTRY] = "registry",
                                        [STORE_SEQ_AUTH] = "auth" };

/* The first write of a transaction to a database a sequence covers
 * advances that sequence, in the same transaction. */
static int seq_bump(struct store *s, struct store_txn *t, int db)
{
    int which = seq_of(db);
    const char *key;
    DBT k, v;
    char buf[24];
    uint64_t seq = 0;
    int rc;

    if (s->rep == NULL || t == NULL || which < 0 || (t->bumped & (1 << which)))
        return 0;
    key = seq_keys[which];
    dbt_init(&k, key, strlen(key));
    dbt_init(&v, NULL, 0);
    v.flags = DB_DBT_MALLOC;
    rc = s->db[STORE_META]->get(s->db[STORE_META], t->txn, &k, &v, DB_RMW);
    if (rc == 0) {
        size_t n = v.size < sizeof(buf) - 1 ? v.size : sizeof(buf) - 1;

        memcpy(buf, v.data, n);
        buf[n] = '\0';
        seq = strtoull(buf, NULL, 10);
        free(v.data);
    } else if (rc != DB_NOTFOUND) {
        return store_rc(rc);
    }
    snprintf(buf, sizeof(buf), "%llu", (unsigned long long)seq + 1);
    dbt_init(&v, buf, strlen(buf));
    if ((rc = s->db[STORE_META]->put(s->db[STORE_META], t->txn, &k, &v, 0)) != 0)
        return store_rc(rc);
    t->bumped |= 1 << which;
    return 0;
}

int store_change_seq(struct store *s, int which, uint64_t *seq)
{
    char *val = NULL;
    int rc;

    if (which < 0 || which > STORE_SEQ_AUTH)
        return AM_EINTERNAL;
    rc = store_get(s, NULL, STORE_META, seq_keys[which], strlen(seq_keys[which]), 0, &val,
                   NULL);
    *seq = rc == 0 ? strtoull(val, NULL, 10) : 0;
    free(val);
    return rc == AM_ENOENT ? 0 : rc;
}

int store_put(struct store *s, struct store_txn *t, int db, const void *key,
              size_t klen, const void *val, size_t vlen)
{
    DBT k, v;

    int rc;

    if (injected_write_failure())
        return AM_EIO;
    if ((rc = seq_bump(s, t, db)) != 0)
        return rc;
    dbt_init(&k, key, klen);
    dbt_init(&v, val, vlen);
    return store_rc(s->db[db]->put(s->db[db], txn_of(t), &k, &v, 0));
}

int store_del(struct store *s, struct store_txn *t, int db, const void *key,
              size_t klen)
{
    DBT k;

    int rc;

    if (injected_write_failure())
        return AM_EIO;
    if ((rc = seq_bump(s, t, db)) != 0)
        return rc;
    dbt_init(&k, key, klen);
    return store_rc(s->db[db]->del(s->db[db], txn_of(t), &k, 0));
}

int store_scan(struct store *s, struct store_txn *t, int db, const void *prefix,
               size_t plen, store_scan_fn fn, void *arg)
{
    DBC *c = NULL;
    DBT k, v;
    char *copy = NULL;
    int rc, step = DB_SET_RANGE;

    if ((rc = s->db[db]->cursor(s->db[db], txn_of(t), &c, 0)) != 0)
        return store_rc(rc);
    dbt_init(&k, prefix, plen);
    k.flags = DB_DBT_REALLOC;
    /* DB_SET_RANGE writes the found key into k: start from a private copy. */
    copy = xmalloc(plen + 1);
    memcpy(copy, prefix, plen);
    k.data = copy;
    dbt_init(&v, NULL, 0);
    v.flags = DB_DBT_REALLOC;
    for (;;) {
        rc = c->get(c, &k, &v, (u_int32_t)step);
        step = DB_NEXT;
        if (rc != 0) {
            rc = store_rc(rc);
            if (rc == AM_ENOENT)
                rc = 0;
            break;
        }
        if (k.size < plen || memcmp(k.data, prefix, plen) != 0)
            break;
        {
            char *vz = xmalloc(v.size + 1);
            memcpy(vz, v.data, v.size);
            vz[v.size] = '\0';
            rc = fn(k.data, k.size, vz, v.size, arg);
            free(vz);
        }
        if (rc != 0) {
            if (rc > 0)
                rc = 0;
            break;
        }
    }
    c->close(c);
    free(k.data);
    free(v.data);
    return rc;
}

int store_del_prefix(struct store *s, struct store_txn *t, int db, const void *prefix,
                     size_t plen)
{
    DBC *c = NULL;
    DBT k, v;
    int rc, step = DB_SET_RANGE;

    if (injected_write_failure())
        return AM_EIO;
    if ((rc = seq_bump(s, t, db)) != 0)
        return rc;
    if ((rc = s->db[db]->cursor(s->db[db], txn_of(t), &c, 0)) != 0)
        return store_rc(rc);
    dbt_init(&k, NULL, 0);
    k.flags = DB_DBT_REALLOC;
    k.data = xmalloc(plen + 1);
    memcpy(k.data, prefix, plen);
    k.size = (u_int32_t)plen;
    dbt_init(&v, NULL, 0);
    v.flags = DB_DBT_REALLOC | DB_DBT_PARTIAL;   /* keys only: read no value bytes */
    for (;;) {
        rc = c->get(c, &k, &v, (u_int32_t)step | DB_RMW);
        step = DB_NEXT;
        if (rc != 0)
            break;
        if (k.size < plen || memcmp(k.data, prefix, plen) != 0)
            break;
        if ((rc = c->del(c, 0)) != 0)
            break;
    }
    rc = (rc == DB_NOTFOUND || rc == 0) ? 0 : store_rc(rc);
    c->close(c);
    free(k.data);
    free(v.data);
    return rc;
}

/* ---- replication -------------------------------------------------------- */

static const u_int32_t ack_policies[] = {
    [STORE_ACK_QUORUM] = DB_REPMGR_ACKS_QUORUM, [STORE_ACK_ALL] = DB_REPMGR_ACKS_ALL,
    [STORE_ACK_ONE] = DB_REPMGR_ACKS_ONE, [STORE_ACK_NONE] = DB_REPMGR_ACKS_NONE,
    [STORE_ACK_ALL_AVAILABLE] = DB_REPMGR_ACKS_ALL_AVAILABLE,
};

/* One site of the group: the local one, or a peer. Every site is listed
 * with DB_LEGACY on every host: the group is the static list of the
 * configuration (no join protocol, no helper site to reach first). */
static int rep_add_site(DB_ENV *env, const char *host, int port, int local)
{
    DB_SITE *site = NULL;
    int rc;

    if ((rc = env->repmgr_site(env, host, (u_int)port, &site, 0)) != 0)
        return rc;
    if (local)
        rc = site->set_config(site, DB_LOCAL_SITE, 1);
    if (rc == 0)
        rc = site->set_config(site, DB_LEGACY, 1);
    site->close(site);
    return rc;
}

int store_rep_start(struct store *s, struct am_error *err)
{
    const struct store_rep_options *r = s->rep;
    DB_ENV *env = s->env;
    int rc = EINVAL, i;

    if (r == NULL || r->nsites < 2 || r->ack_policy < 0 ||
        r->ack_policy > STORE_ACK_ALL_AVAILABLE)
        goto fail;
    for (i = 0; i < r->nsites; i++)
        if ((rc = rep_add_site(env, r->sites[i].host, r->sites[i].port, i == 0)) != 0)
            goto fail;
    /* Heartbeats find a master that went silent (a partition sends no
     * FIN); lost connections are retried every second, not every 30. */
    /* Bulk: a transaction's log records leave in one message at its commit.
     * The Replication Manager does not set TCP_NODELAY, so a commit sent
     * as several small writes waited for the replica's delayed ACK (40 ms
     * a write on Linux). */
    if ((rc = env->rep_set_config(env, DB_REP_CONF_BULK, 1)) != 0 ||
        (rc = env->rep_set_priority(env, (u_int32_t)r->priority)) != 0 ||
        (rc = env->repmgr_set_ack_policy(env, (int)ack_policies[r->ack_policy])) != 0 ||
        (rc = env->rep_set_timeout(env, DB_REP_ACK_TIMEOUT,
                                   (db_timeout_t)r->ack_timeout_ms * 1000)) != 0 ||
        (rc = env->rep_set_timeout(env, DB_REP_ELECTION_TIMEOUT,
                                   (db_timeout_t)r->election_timeout_ms * 1000)) != 0 ||
        (rc = env->rep_set_timeout(env, DB_REP_ELECTION_RETRY, 1000000)) != 0 ||
        (rc = env->rep_set_timeout(env, DB_REP_CONNECTION_RETRY, 1000000)) != 0 ||
        (rc = env->rep_set_timeout(env, DB_REP_HEARTBEAT_SEND, 250000)) != 0 ||
        (rc = env->rep_set_timeout(env, DB_REP_HEARTBEAT_MONITOR, 1500000)) != 0)
        goto fail;
    if ((rc = env->repmgr_start(env, 3, DB_REP_ELECTION)) != 0 && rc != DB_REP_IGNORE)
        goto fail;
    return 0;
fail:
    return error_set(err, AM_EIO, "replication: starting the Replication Manager: %s (%s)",
                     db_strerror(rc), store_last_message);
}

int store_rep_status(struct store *s, struct store_rep_status *out)
{
    DB_REPMGR_STAT *ms = NULL;
    DB_REP_STAT *st = NULL;
    DB_SITE *site = NULL;
    const char *host;
    u_int port;

    memset(out, 0, sizeof(*out));
    if (s->rep == NULL)
        return 0;
    if (s->env->rep_stat(s->env, &st, 0) != 0)
        return AM_EIO;
    out->role = st->st_status == DB_REP_MASTER ? STORE_ROLE_MASTER
              : st->st_status == DB_REP_CLIENT ? STORE_ROLE_REPLICA : STORE_ROLE_NONE;
    out->elections = st->st_elections;
    if (s->env->repmgr_stat(s->env, &ms, 0) == 0) {
        out->not_acked = ms->st_perm_failed;
        free(ms);
    }
    out->startup_done = st->st_startup_complete != 0;
    if (out->role == STORE_ROLE_REPLICA && st->st_waiting_lsn.file != 0) {
        /* a gap: what arrived after it waits for what is missing */
        if (st->st_waiting_lsn.file == st->st_next_lsn.file)
            out->lag_bytes = st->st_waiting_lsn.offset > st->st_next_lsn.offset
                           ? st->st_waiting_lsn.offset - st->st_next_lsn.offset : 0;
        else
            out->lag_bytes = (uint64_t)(st->st_waiting_lsn.file - st->st_next_lsn.file) *
                             10485760u;
    }
    if (st->st_master != DB_EID_INVALID &&
        s->env->repmgr_site_by_eid(s->env, st->st_master, &site) == 0) {
        if (site->get_address(site, &host, &port) == 0)
            snprintf(out->master, sizeof(out->master), "%s:%u", host, port);
        site->close(site);
    }
    free(st);       /* Berkeley DB allocates it with malloc */
    return 0;
}

int store_rep_is_master(struct store *s)
{
    DB_REP_STAT *st = NULL;
    int master;

    if (s->rep == NULL || s->env->rep_stat(s->env, &st, 0) != 0)
        return 0;
    master = st->st_status == DB_REP_MASTER;
    free(st);
    return master;
}

int store_token_take(char *out)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *b = rep_token.buf;
    int i;

    if (!rep_have_token)
        return 0;
    for (i = 0; i < DB_TXN_TOKEN_SIZE; i++) {
        out[2 * i] = hex[b[i] >> 4];
        out[2 * i + 1] = hex[b[i] & 15];
    }
    out[2 * DB_TXN_TOKEN_SIZE] = '\0';
    rep_have_token = 0;
    return 1;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int store_wait_applied(struct store *s, const char *text, int timeout_ms)
{
    DB_TXN_TOKEN tok;
    uint64_t deadline = util_monotonic_ms() + (uint64_t)timeout_ms;
    int i, rc;

    if (strlen(text) != 2 * DB_TXN_TOKEN_SIZE)
        return AM_EBADREQ;
    for (i = 0; i < DB_TXN_TOKEN_SIZE; i++) {
        int hi = hex_value(text[2 * i]), lo = hex_value(text[2 * i + 1]);

        if (hi < 0 || lo < 0)
            return AM_EBADREQ;
        tok.buf[i] = (u_int8_t)(hi << 4 | lo);
    }
    if (s->rep == NULL)
        return 0;
    for (;;) {
        uint64_t now = util_monotonic_ms();
        db_timeout_t left = now < deadline ? (db_timeout_t)(deadline - now) * 1000 : 0;

        rc = s->env->txn_applied(s->env, &tok, left, 0);
        if (rc == 0 || rc == DB_NOTFOUND || rc == DB_KEYEMPTY)
            return 0;
        if (rc == EINVAL)
            return AM_EBADREQ;
        if (rc != DB_LOCK_DEADLOCK || util_monotonic_ms() >= deadline)
            return AM_EUNAVAILABLE;
        usleep(10000);      /* locked out by a role change: try again */
    }
}

int store_handles_dead(struct store *s)
{
    (void)s;
    return __atomic_load_n(&rep_handles_dead, __ATOMIC_RELAXED);
}

/* Invariants 5 and 6 (see the top); aborts naming the one broken. */
void store_check_invariants(struct store *s)
{
    int64_t open;
    int i;

    if (s->env == NULL)
        invariant_fail("store 5: no environment handle");
    for (i = 0; i < STORE_DB_COUNT; i++)
        if (s->db[i] == NULL)
            invariant_fail("store 5: database %s is not open", store_db_files[i]);
    if ((open = __atomic_load_n(&s->open_txns, __ATOMIC_RELAXED)) != 0)
        invariant_fail("store 6: %lld transactions of this handle left open", (long long)open);
    pthread_mutex_lock(&s->gc_lock);
    i = s->gc_done <= s->gc_next;
    pthread_mutex_unlock(&s->gc_lock);
    if (!i)
        invariant_fail("store 6: group commit marks more commits done than were made");
}
