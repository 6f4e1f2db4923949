/*
 * invariant.h - runnable invariants, after sqlite's assert_pager_state
 * habit: each module's *_check_invariants() walks its own state and, at the
 * first violation, reports it with invariant_fail: one log line naming the
 * invariant and the key it broke on, then abort(). A violated invariant is
 * a bug, never an input error, so nothing is returned to recover from.
 *
 * The checks are compiled in every build (so they keep compiling); their
 * calls go through CHECK_INVARIANTS, which runs them in builds configured
 * with --enable-invariants or --enable-sanitizers (AM_INVARIANTS=1) and
 * compiles to nothing otherwise.
 *
 * Must never: change state (a check only reads); be called where another
 * thread or process may be half-way through what it checks (each check's
 * comment says where it may run).
 */
#ifndef AM_INVARIANT_H
#define AM_INVARIANT_H

#include <stdlib.h>
#include "lib/util.h"

#if defined(AM_INVARIANTS) && AM_INVARIANTS
#define CHECK_INVARIANTS(expr) (expr)
#else
#define CHECK_INVARIANTS(expr) ((void)0)
#endif

/* Log "invariant violated: <what>" (printf-style, a literal first) at the
 * caller's file and line, then abort(). */
#define invariant_fail(...) \
    (log_write(LOG_LVL_ERROR, __FILE__, __LINE__, "invariant violated: " __VA_ARGS__), abort())

#endif
