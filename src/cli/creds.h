/*
 * creds.h - the astromesh client's saved credentials:
 * $XDG_CONFIG_HOME/astromesh/credentials (default ~/.config/astromesh/),
 * a small JSON object, file mode 0600 in a 0700 directory.
 *
 * Never prints; fills err text for the caller (main.c) to report.
 */
#ifndef AM_CLI_CREDS_H
#define AM_CLI_CREDS_H

#include <stddef.h>

#define CREDS_PATH_MAX 1024
#define CREDS_TOKEN_MAX 2048

struct creds {
    char url[512];                    /* the API root, "http://host:port" */
    char org[64];                     /* org slug used when --org is absent */
    char access_token[CREDS_TOKEN_MAX];
    char refresh_token[CREDS_TOKEN_MAX];
    char api_key[256];                /* set instead of the tokens by login --api-key */
};

/* The credentials file's path into out (cap bytes), from XDG_CONFIG_HOME
 * or HOME. Returns 0, or -1 when neither is set or it does not fit. */
int creds_path(char *out, size_t cap);

/* Read path into c (zeroed first). Returns 0, 1 if the file does not
 * exist (c left empty), or -1 with a reason in err (unreadable, not JSON). */
int creds_load(const char *path, struct creds *c, char *err, size_t cap);

/* Write c to path atomically: the directory is created 0700 if missing, a
 * temporary file 0600 beside it is written, synced and renamed over path.
 * Returns 0 or -1 with a reason in err. */
int creds_save(const char *path, const struct creds *c, char *err, size_t cap);

/* Take an exclusive lock beside path ("<path>.lock", created 0600), so
 * that two clients refreshing the same credentials do it one after the
 * other (a refresh token is single-use: a second use revokes the family).
 * Blocks. Returns the descriptor to pass to creds_unlock, or -1. */
int creds_lock(const char *path);

/* Release a lock from creds_lock (fd may be -1). */
void creds_unlock(int fd);

/* Remove path. Returns 0 (also when it did not exist) or -1 with err. */
int creds_remove(const char *path, char *err, size_t cap);

#endif
