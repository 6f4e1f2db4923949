/*
 * shm_lock.c - the process-shared robust mutex and the seqlock of the
 * shared-memory tables (see shm_lock.h).
 *
 * Owns: nothing but the protocol: the memory is the caller's (inside its
 * mapping), and so is the repair of a table a dead writer left half-done.
 *
 * Must never: log; allocate; block a reader behind a live writer (readers
 * only ever trylock); mark a mutex consistent before the table's repair
 * has run.
 *
 * The seqlock counter is 32 bits, like the kernel's seqcount: a reader is
 * fooled only if it sleeps through exactly 2^31 writes in one copy.
 */
#include <errno.h>
#include <sched.h>
#include <time.h>
#include "lib/shm_lock.h"
#include "lib/error.h"

int shm_lock_init(struct shm_lock *l)
{
    pthread_mutexattr_t a;
    int e;

    e = pthread_mutexattr_init(&a);
    if (e == 0) {
        e = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
        if (e == 0)
            e = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
        if (e == 0)
            e = pthread_mutex_init(&l->mutex, &a);
        pthread_mutexattr_destroy(&a);
    }
    if (e != 0) {
        errno = e;
        return AM_EUNAVAILABLE;
    }
    return 0;
}

int shm_lock_take(const struct shm_guard *g, int try_only)
{
    pthread_mutex_t *m = &g->lock->mutex;
    int e = try_only ? pthread_mutex_trylock(m) : pthread_mutex_lock(m);

    if (e == 0)
        return 0;
    if (e == EBUSY && try_only)
        return 1;
    if (e != EOWNERDEAD)
        return AM_EUNAVAILABLE;
    g->repair(g->arg);
    if (pthread_mutex_consistent(m) != 0) {
        pthread_mutex_unlock(m);
        return AM_EUNAVAILABLE;
    }
    return 0;
}

void shm_lock_release(const struct shm_guard *g)
{
    pthread_mutex_unlock(&g->lock->mutex);
}

void shm_seq_write_begin(uint32_t *seq)
{
    uint32_t s = __atomic_load_n(seq, __ATOMIC_RELAXED);

    __atomic_store_n(seq, s | 1u, __ATOMIC_RELAXED);
    /* odd becomes visible before any change that follows */
    __atomic_thread_fence(__ATOMIC_RELEASE);
}

void shm_seq_write_end(uint32_t *seq)
{
    uint32_t s = __atomic_load_n(seq, __ATOMIC_RELAXED);

    /* release: every change since write_begin lands before this */
    __atomic_store_n(seq, s + 1u, __ATOMIC_RELEASE);
}

static void reader_pause(const struct shm_guard *g, struct shm_reader *rd)
{
    rd->spins++;
    if (rd->spins > g->spin_limit) {
        struct timespec ts = { 0, g->nap_ns };

        nanosleep(&ts, NULL);
    } else if (rd->spins > g->spin_busy) {
        sched_yield();
    }
}

int shm_seq_read_begin(const struct shm_guard *g, const uint32_t *seq, struct shm_reader *rd)
{
    for (;;) {
        uint32_t s;

        if (rd->spins >= g->spin_limit) {
            int rc = shm_lock_take(g, 1);

            if (rc == 0) {
                rd->locked = 1;
                rd->seq = __atomic_load_n(seq, __ATOMIC_RELAXED);
                return 0;
            }
            if (rc < 0)
                return rc;
        }
        s = __atomic_load_n(seq, __ATOMIC_ACQUIRE);
        if ((s & 1u) == 0) {
            rd->seq = s;
            return 0;
        }
        reader_pause(g, rd);
    }
}

int shm_seq_read_end(const struct shm_guard *g, const uint32_t *seq, struct shm_reader *rd)
{
    if (rd->locked) {
        rd->locked = 0;
        shm_lock_release(g);
        return 1;
    }
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (__atomic_load_n(seq, __ATOMIC_RELAXED) == rd->seq)
        return 1;
    reader_pause(g, rd);
    return 0;
}
