/*
 * auth_state.c - the authorisation epoch in anonymous shared memory (see
 * auth_state.h).
 *
 * Owns: one MAP_SHARED|MAP_ANONYMOUS page holding struct auth_state_shm,
 * mapped by the supervisor before it forks.
 *
 * Must never: log; take a lock (the epoch is one atomic counter); store
 * the epoch (only atomic adds of 1 move it, so it only grows).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include "control/auth_state.h"
#include "lib/util.h"

#define AUTH_STATE_MAGIC   UINT64_C(0x414d415554484550) /* "AMAUTHEP" */
#define AUTH_STATE_VERSION 1u

/* The shared page: no pointers. */
struct auth_state_shm {
    uint64_t magic;             /* AUTH_STATE_MAGIC */
    uint32_t version;           /* AUTH_STATE_VERSION */
    uint32_t pad;               /* zero */
    _Alignas(64) uint64_t epoch; /* counter: bumps so far (atomic, lock-free) */
};

struct auth_state {
    struct auth_state_shm *shm;  /* the mapping */
};

int auth_state_create(struct auth_state **out, struct am_error *err)
{
    void *p = mmap(NULL, sizeof(struct auth_state_shm), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    struct auth_state *a;

    *out = NULL;
    if (p == MAP_FAILED)
        return error_set(err, AM_EUNAVAILABLE, "auth epoch: mmap: %s", strerror(errno));
    a = xcalloc(1, sizeof(*a));
    a->shm = p;
    a->shm->magic = AUTH_STATE_MAGIC;
    a->shm->version = AUTH_STATE_VERSION;
    *out = a;
    return 0;
}

void auth_state_close(struct auth_state *a)
{
    if (a == NULL)
        return;
    munmap(a->shm, sizeof(struct auth_state_shm));
    free(a);
}

uint64_t auth_state_epoch(const struct auth_state *a)
{
    return __atomic_load_n(&a->shm->epoch, __ATOMIC_ACQUIRE);
}

void auth_state_bump(struct auth_state *a)
{
    __atomic_add_fetch(&a->shm->epoch, 1, __ATOMIC_ACQ_REL);
}
