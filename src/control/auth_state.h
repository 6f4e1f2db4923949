/*
 * auth_state.h - the authorisation epoch: one counter, in memory shared by
 * the supervisor and all its workers, bumped whenever something a worker
 * may have cached about authorisation changes (a token family revoked, a
 * membership changed). account.c bumps it and compares it with the value
 * its per-thread memo was filled at.
 *
 * The supervisor maps it (auth_state_create) before it forks, like the
 * quota table; workers inherit the mapping through struct app.
 */
#ifndef AM_AUTH_STATE_H
#define AM_AUTH_STATE_H

#include <stdint.h>
#include "lib/error.h"

struct auth_state;

/* Map a new epoch, 0 (anonymous shared memory: processes forked afterwards
 * share it). Returns 0 with *out set (unmap with auth_state_close), or
 * AM_EUNAVAILABLE. */
int auth_state_create(struct auth_state **out, struct am_error *err);

/* Unmap. NULL is fine. */
void auth_state_close(struct auth_state *a);

/* The epoch, as last bumped by any process. Lock-free; the acquire pairs
 * with the bump's release, so whatever the bumping process wrote before
 * bumping is visible once the new value is seen. */
uint64_t auth_state_epoch(const struct auth_state *a);

/* Add 1 (atomic: concurrent bumps from any processes all count). */
void auth_state_bump(struct auth_state *a);

#endif
