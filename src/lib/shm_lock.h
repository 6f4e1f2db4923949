/*
 * shm_lock.h - the two synchronisation primitives the shared-memory tables
 * (state/registry.c, state/quota.c) are built on, written once:
 *
 *  - struct shm_lock, a process-shared robust mutex: a process killed while
 *    holding it does not wedge the others; the next locker gets EOWNERDEAD,
 *    runs the table's own repair function and marks the mutex consistent;
 *  - a seqlock counter (a uint32_t the table keeps where it likes): writers,
 *    holding the mutex, make it odd before a change and even after it;
 *    readers copy without the mutex and retry if it moved, and after too
 *    many retries try the mutex, so a writer that died with the counter odd
 *    never makes them wait forever.
 *
 * What lives in shared memory (struct shm_lock and the uint32_t counters)
 * is plain data with no pointers: processes map it at different addresses.
 * struct shm_guard and struct shm_reader hold pointers and live in private
 * memory only (a process's handle on a table; one read's stack frame).
 *
 * This module knows nothing of the tables: what "repair" means stays in the
 * table's own file. It never logs.
 */
#ifndef AM_SHM_LOCK_H
#define AM_SHM_LOCK_H

#include <pthread.h>
#include <stdint.h>

struct shm_lock {
    pthread_mutex_t mutex;      /* opaque: process-shared, robust */
};

/* Called with the mutex held after its holder died, before it is marked
 * consistent: put the table back in order (seqlock counters even). */
typedef void (*shm_repair_fn)(void *arg);

/* How one process locks and reads one table. Private memory only. */
struct shm_guard {
    struct shm_lock *lock;      /* borrowed: inside the table's mapping */
    shm_repair_fn repair;       /* the table's repair; never NULL */
    void *arg;                  /* handed to repair */
    unsigned spin_busy;         /* reader attempts before sched_yield */
    unsigned spin_limit;        /* reader attempts before trying the mutex */
    long nap_ns;                /* ns: reader nap per attempt past spin_limit */
};

/* One seqlock read in progress. Private (the reader's stack); start it
 * zeroed: struct shm_reader rd = { 0 }. */
struct shm_reader {
    uint32_t seq;               /* the even counter seen at the start of this attempt */
    unsigned spins;             /* attempts so far */
    int locked;                 /* 1 if this attempt holds the mutex */
};

/* Initialise a process-shared robust mutex in place (in shared memory,
 * before any other process uses it). Returns 0, or AM_EUNAVAILABLE with
 * errno saying why. */
int shm_lock_init(struct shm_lock *l);

/* Take g's mutex; with try_only, give up if a live thread holds it. A dead
 * holder's mess is repaired (g->repair) before this returns. Returns 0
 * (held), 1 (busy; try_only only) or AM_EUNAVAILABLE (the mutex is
 * unrecoverable: only if someone unlocked it after EOWNERDEAD without
 * repairing, a bug). */
int shm_lock_take(const struct shm_guard *g, int try_only);

/* Release what shm_lock_take took. */
void shm_lock_release(const struct shm_guard *g);

/* Writer side, g's mutex held: make *seq odd before changing what it
 * guards (the change is ordered after it), and even again after (every
 * change is ordered before it). */
void shm_seq_write_begin(uint32_t *seq);
void shm_seq_write_end(uint32_t *seq);

/*
 * Start (or restart) a read of what *seq guards. Returns 0 when the caller
 * may copy: rd->seq holds the even counter, and rd->locked says whether
 * g's mutex is held for this attempt (after rd->spins reached spin_limit;
 * a dead writer has then been repaired). Returns AM_EUNAVAILABLE, holding
 * nothing, if the mutex is unrecoverable. Never blocks behind a live writer.
 */
int shm_seq_read_begin(const struct shm_guard *g, const uint32_t *seq, struct shm_reader *rd);

/* Finish a read. Returns 1 if what was copied since shm_seq_read_begin is
 * consistent (releasing the mutex if held), 0 if the caller must retry
 * (after a pause that grows with rd->spins). */
int shm_seq_read_end(const struct shm_guard *g, const uint32_t *seq, struct shm_reader *rd);

#endif
