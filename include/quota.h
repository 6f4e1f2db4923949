/*
 * quota.h - the daily request quota of every org, in memory shared by the
 * supervisor and all its workers.
 *
 * One counter per org: the UTC day it counts and how many runs were
 * accepted that day. Taking a run is one compare-and-swap on that counter,
 * so under any concurrency, across every worker process, no more than the
 * limit are accepted, and accepting a run costs no system call and no
 * database lock. The database stays the durable record (usage.c writes each
 * run's count when it settles); a counter is loaded from it the first time
 * an org runs after the supervisor started, through a caller's function, so
 * this module never touches the database itself.
 */
#ifndef AM_QUOTA_H
#define AM_QUOTA_H

#include <stdint.h>
#include "error.h"

#define QUOTA_ORG_MAX 48        /* org slug incl. NUL (slugs are at most 40) */

struct quota;

/* Load the durable count of runs org had accepted on day (days since the
 * epoch). Returns 0 or a negative AM_* code. */
typedef int (*quota_load_fn)(const char *org, int day, int64_t *count, void *arg);

/* Map a new table for about `orgs` orgs at once (anonymous shared memory:
 * processes forked afterwards share it). Returns 0 or AM_EUNAVAILABLE. */
int quota_create(struct quota **out, int orgs, struct am_error *err);

/* Unmap. NULL is fine. */
void quota_close(struct quota *q);

/* Accept one run of org on *day if fewer than limit were accepted that
 * day; *count gets the count after it. If another process already counts a
 * later day for org (the clock passed midnight between the two), the run
 * is counted on that day and *day says so. Returns 0, AM_ERATELIMIT (the
 * limit is reached; *count is the count), AM_EUNAVAILABLE (the table is
 * full of orgs that ran today) or load's error. */
int quota_take(struct quota *q, const char *org, int *day, int64_t limit, quota_load_fn load,
               void *arg, int64_t *count);

/* Give back a run taken on day (it never reached a provider). Nothing
 * happens if org's counter has moved on to another day. */
void quota_give_back(struct quota *q, const char *org, int day);

/* How many runs org has accepted on day. Returns 0, AM_EUNAVAILABLE or
 * load's error. */
int quota_count(struct quota *q, const char *org, int day, quota_load_fn load, void *arg,
                int64_t *count);

#endif
