/*
 * key.c - composite key shapes (key.h). Pure; never allocates or logs.
 */
#include <stdio.h>
#include <string.h>

#include "lib/key.h"

size_t key_pair(char *buf, size_t cap, const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);

    if (la + lb + 2 > cap)
        return 0;
    memcpy(buf, a, la + 1);
    memcpy(buf + la + 1, b, lb);
    buf[la + 1 + lb] = '\0';    /* not part of the key; eases debugging */
    return la + 1 + lb;
}

int key_agent_id(char *buf, size_t cap, const char *org, const char *name)
{
    int n = snprintf(buf, cap, "%s__%s", org, name);

    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

int key_agent_id_split(const char *id, size_t *org_len, const char **name)
{
    const char *sep = strstr(id, "__");

    if (sep == NULL)
        return -1;
    *org_len = (size_t)(sep - id);
    *name = sep + 2;
    return 0;
}
