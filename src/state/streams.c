/*
 * streams.c - the stream connection slots (streams.h): one fixed array in
 * anonymous shared memory, mapped by the supervisor before it forks.
 *
 * Owns: the table's layout and its process-shared robust mutex.
 *
 * Must never: log; touch the database; keep a pointer in shared memory.
 *
 * A slot is { holder pid (0: free), org }. Acquire and release take the
 * mutex for a scan of the array (thousands of slots: microseconds, and a
 * connection is opened once), so counting and claiming are one step and
 * two processes can never both take an org's last slot. A process killed
 * while it holds the mutex leaves at most one slot half-written: its pid
 * is the dead process's, so the supervisor's streams_reclaim frees it; the
 * repair on EOWNERDEAD has nothing to do.
 *
 * Invariants:
 *  1. A free slot (pid 0) counts for no org.
 *  2. An org never has more used slots than the limit in force when the
 *     last of them was taken.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "state/streams.h"
#include "state/quota.h"
#include "lib/shm_lock.h"
#include "lib/util.h"

#define STREAMS_MAGIC 0x5354524du     /* "STRM" */

struct streams_slot {
    int32_t pid;                 /* holder; 0: free */
    char org[QUOTA_ORG_MAX];     /* NUL-terminated slug */
};

struct streams_header {
    uint32_t magic;
    uint32_t version;            /* 1 */
    uint32_t capacity;           /* slots after the header */
    struct shm_lock lock;        /* robust, process-shared: every change */
};

struct streams {
    struct streams_header *hdr;
    struct streams_slot *slot;
    size_t bytes;
    struct shm_guard guard;
};

static void streams_repair(void *arg)
{
    (void)arg;   /* a half-written slot carries its dead holder's pid */
}

int streams_create(struct streams **out, int capacity, struct am_error *err)
{
    struct streams *s;
    size_t bytes = sizeof(struct streams_header) +
                   (size_t)(capacity > 0 ? capacity : 1) * sizeof(struct streams_slot);
    void *p;

    *out = NULL;
    p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return error_set(err, AM_EUNAVAILABLE, "stream slots: mmap of %zu bytes: %s", bytes,
                         strerror(errno));
    s = xcalloc(1, sizeof(*s));
    s->hdr = p;
    s->slot = (struct streams_slot *)(s->hdr + 1);
    s->bytes = bytes;
    s->hdr->magic = STREAMS_MAGIC;
    s->hdr->version = 1;
    s->hdr->capacity = (uint32_t)(capacity > 0 ? capacity : 1);
    s->guard.lock = &s->hdr->lock;
    s->guard.repair = streams_repair;
    s->guard.arg = s;
    if (shm_lock_init(&s->hdr->lock) != 0) {
        int e = errno;
        streams_close(s);
        return error_set(err, AM_EUNAVAILABLE, "stream slots: robust mutex: %s", strerror(e));
    }
    *out = s;
    return 0;
}

void streams_close(struct streams *s)
{
    if (s == NULL)
        return;
    munmap(s->hdr, s->bytes);
    free(s);
}

int streams_acquire(struct streams *s, const char *org, int limit)
{
    uint32_t i;
    int used = 0, free_slot = -1;

    if (strlen(org) >= QUOTA_ORG_MAX)
        return AM_EUNAVAILABLE;
    if (shm_lock_take(&s->guard, 0) != 0)
        return AM_EUNAVAILABLE;
    for (i = 0; i < s->hdr->capacity; i++) {
        if (s->slot[i].pid == 0) {
            if (free_slot < 0)
                free_slot = (int)i;
        } else if (strcmp(s->slot[i].org, org) == 0) {
            used++;
        }
    }
    if (used >= limit || free_slot < 0) {
        shm_lock_release(&s->guard);
        return used >= limit ? AM_ESTREAMLIMIT : AM_EUNAVAILABLE;
    }
    s->slot[free_slot].pid = (int32_t)getpid();
    util_strlcpy(s->slot[free_slot].org, org, sizeof(s->slot[free_slot].org));
    shm_lock_release(&s->guard);
    return free_slot;
}

void streams_release(struct streams *s, int slot)
{
    if (slot < 0 || (uint32_t)slot >= s->hdr->capacity)
        return;
    if (shm_lock_take(&s->guard, 0) != 0)
        return;
    s->slot[slot].pid = 0;
    s->slot[slot].org[0] = '\0';
    shm_lock_release(&s->guard);
}

int streams_count(struct streams *s, const char *org)
{
    uint32_t i;
    int n = 0;

    if (shm_lock_take(&s->guard, 0) != 0)
        return 0;
    for (i = 0; i < s->hdr->capacity; i++)
        n += s->slot[i].pid != 0 && strcmp(s->slot[i].org, org) == 0;
    shm_lock_release(&s->guard);
    return n;
}

int streams_reclaim(struct streams *s, int pid)
{
    uint32_t i;
    int n = 0;

    if (pid <= 0 || shm_lock_take(&s->guard, 0) != 0)
        return 0;
    for (i = 0; i < s->hdr->capacity; i++) {
        if (s->slot[i].pid == (int32_t)pid) {
            s->slot[i].pid = 0;
            s->slot[i].org[0] = '\0';
            n++;
        }
    }
    shm_lock_release(&s->guard);
    return n;
}
