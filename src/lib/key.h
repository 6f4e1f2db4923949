/*
 * key.h - the shapes of composite keys, written in one place:
 *   - database keys of two parts, "a\0b" (an agent record "org\0name", a
 *     membership "org\0email"); the NUL cannot occur in either part, so the
 *     split is unambiguous and a prefix scan over "org\0" finds one org's;
 *   - the agent id "org__name": the registry key, the compiled YAML's
 *     metadata.name and the prefix of conversation keys. Slugs and agent
 *     names never contain "__" (wizard_name_valid), so the first "__" splits.
 * Pure functions over caller buffers; nothing here allocates or logs.
 */
#ifndef AM_KEY_H
#define AM_KEY_H

#include <stddef.h>

/* Longest agent id with its NUL: slug (40) + "__" + name (63) + NUL, with
 * room to spare; equal to REGISTRY_KEY_MAX. */
#define KEY_AGENT_ID_MAX 112

/* "a\0b" into buf (no trailing NUL counted). Returns the key's length, or
 * 0 if it does not fit in cap bytes. */
size_t key_pair(char *buf, size_t cap, const char *a, const char *b);

/* "org__name" into buf, NUL-terminated. Returns 0, or -1 if it does not
 * fit (buf then holds a truncated, unusable id). */
int key_agent_id(char *buf, size_t cap, const char *org, const char *name);

/* Split the agent id `id` at its first "__": *org_len is the length of the
 * org part, *name the start of the name. Returns 0, or -1 if id has no
 * "__". */
int key_agent_id_split(const char *id, size_t *org_len, const char **name);

#endif
