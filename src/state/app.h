/*
 * app.h - what one process serves with: its configuration, its store
 * handle, its registry mapping, the quota table, the authorisation epoch
 * and the vault. Built by the worker (or a test), passed down to the route
 * handlers and the modules they call. Holds no state of its own.
 */
#ifndef AM_APP_H
#define AM_APP_H

struct config;
struct store;
struct registry;
struct quota;
struct auth_state;
struct vault;
struct streams;
struct breakers;
struct cluster;

struct app {
    const struct config *cfg;   /* borrowed; lives as long as the process */
    struct store *store;        /* this process's environment handle */
    struct registry *reg;       /* this process's mapping of the registry */
    struct quota *quota;        /* the daily quota counters, shared by all processes */
    struct quota *test_quota;   /* the daily test allowance counters, likewise (NULL: unmetered) */
    struct auth_state *auth;    /* the authorisation epoch, shared by all processes */
    const struct vault *vault;  /* the master key, read once by the supervisor */
    struct streams *streams;    /* open stream connections per org, shared by all processes */
    struct breakers *breakers;  /* circuit breakers per org/provider/model, shared likewise */
    struct streams *inflight;   /* runs in flight per org (a streams table), shared likewise */
    struct cluster *cluster;    /* a group's master as the replication process knows it,
                                   shared likewise (NULL: no group) */
};

#endif
