/*
 * hash.h - FNV-1a, the one non-cryptographic hash of this project: slots of
 * the shared-memory tables (registry, quota) and names derived from paths.
 * Never for anything an attacker may choose to collide against a secret.
 */
#ifndef AM_HASH_H
#define AM_HASH_H

#include <stddef.h>
#include <stdint.h>

/* 64-bit FNV-1a of n bytes of p. */
static inline uint64_t hash_fnv1a64(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = 14695981039346656037ULL;

    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 1099511628211ULL;
    return h;
}

/* 32-bit FNV-1a of n bytes of p. */
static inline uint32_t hash_fnv1a32(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint32_t h = 2166136261u;

    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 16777619u;
    return h;
}

#endif
