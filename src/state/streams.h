/*
 * streams.h - the open stream (WebSocket) connections of every org, in
 * memory shared by the supervisor and its processes, so that every process
 * agrees on the per-org limit (limits.max_streams) and the supervisor can
 * give back the slots of a stream process that died.
 */
#ifndef AM_STREAMS_H
#define AM_STREAMS_H

#include "lib/error.h"

struct streams;

/* Map a table of `capacity` slots (anonymous shared memory: processes
 * forked afterwards share it). Returns 0 or AM_EUNAVAILABLE. */
int streams_create(struct streams **out, int capacity, struct am_error *err);

/* Unmap. NULL is fine. */
void streams_close(struct streams *s);

/* Take a slot for one connection of org, held by the calling process, if
 * org has fewer than limit open. Returns the slot (>= 0), AM_ESTREAMLIMIT
 * (org has limit open), AM_EUNAVAILABLE (every slot is in use, or the
 * mutex is unrecoverable). */
int streams_acquire(struct streams *s, const char *org, int limit);

/* Give a slot back (the connection closed). -1 is fine. */
void streams_release(struct streams *s, int slot);

/* How many connections org has open. */
int streams_count(struct streams *s, const char *org);

/* Give back every slot held by process pid (it died). Returns how many. */
int streams_reclaim(struct streams *s, int pid);

#endif
