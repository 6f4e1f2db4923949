/*
 * creds.c - loads and saves the astromesh client's credentials file.
 *
 * Owns the file and its directory; writes only through a temporary file
 * and rename(2), so a crash leaves the old file or the new one. Never
 * prints and never sends anything anywhere.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <json-c/json.h>
#include "cli/creds.h"
#include "lib/util.h"

int creds_path(char *out, size_t cap)
{
    const char *xdg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
    if (xdg && xdg[0] == '/')
        return util_snprintf(out, cap, "%s/astromesh/credentials", xdg);
    if (home && home[0])
        return util_snprintf(out, cap, "%s/.config/astromesh/credentials", home);
    return -1;
}

static void field(struct json_object *o, const char *k, char *dst, size_t cap)
{
    struct json_object *v;
    if (json_object_object_get_ex(o, k, &v) && json_object_is_type(v, json_type_string))
        util_strlcpy(dst, json_object_get_string(v), cap);
}

int creds_load(const char *path, struct creds *c, char *err, size_t cap)
{
    memset(c, 0, sizeof(*c));
    if (access(path, F_OK) != 0 && errno == ENOENT)
        return 1;
    struct json_object *o = json_object_from_file(path);
    if (o == NULL || !json_object_is_type(o, json_type_object)) {
        util_snprintf(err, cap, "%s: unreadable credentials (log in again)", path);
        json_object_put(o);
        return -1;
    }
    field(o, "url", c->url, sizeof(c->url));
    field(o, "org", c->org, sizeof(c->org));
    field(o, "access_token", c->access_token, sizeof(c->access_token));
    field(o, "refresh_token", c->refresh_token, sizeof(c->refresh_token));
    field(o, "api_key", c->api_key, sizeof(c->api_key));
    json_object_put(o);
    return 0;
}

/* mkdir -p of path's parent directories, the last one 0700. */
static int make_dir(const char *path, char *err, size_t cap)
{
    char dir[CREDS_PATH_MAX];
    util_strlcpy(dir, path, sizeof(dir));
    char *slash = strrchr(dir, '/');
    if (slash == NULL || slash == dir)
        return 0;
    *slash = '\0';
    for (char *p = dir + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(dir, 0755) != 0 && errno != EEXIST)
            goto fail;
        *p = '/';
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        goto fail;
    if (chmod(dir, 0700) != 0)
        goto fail;
    return 0;
fail:
    util_snprintf(err, cap, "%s: %s", dir, strerror(errno));
    return -1;
}

static void put(struct json_object *o, const char *k, const char *v)
{
    if (v[0])
        json_object_object_add(o, k, json_object_new_string(v));
}

int creds_save(const char *path, const struct creds *c, char *err, size_t cap)
{
    char tmp[CREDS_PATH_MAX + 16];
    struct json_object *o = json_object_new_object();
    int fd = -1, rc = -1;
    if (make_dir(path, err, cap) != 0)
        goto out;
    put(o, "url", c->url);
    put(o, "org", c->org);
    put(o, "access_token", c->access_token);
    put(o, "refresh_token", c->refresh_token);
    put(o, "api_key", c->api_key);
    const char *text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY);
    if (util_snprintf(tmp, sizeof(tmp), "%s.%d.tmp", path, (int)getpid()) != 0)
        goto fail;
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        goto fail;
    size_t n = strlen(text);
    if (fchmod(fd, 0600) != 0 || write(fd, text, n) != (ssize_t)n || write(fd, "\n", 1) != 1 ||
        fsync(fd) != 0)
        goto fail;
    if (close(fd) != 0) {
        fd = -1;
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) != 0)
        goto fail;
    rc = 0;
    goto out;
fail:
    util_snprintf(err, cap, "%s: %s", path, strerror(errno));
    unlink(tmp);
out:
    if (fd >= 0)
        close(fd);
    json_object_put(o);
    return rc;
}

int creds_lock(const char *path)
{
    char lock[CREDS_PATH_MAX + 8], err[256];
    if (util_snprintf(lock, sizeof(lock), "%s.lock", path) != 0 ||
        make_dir(path, err, sizeof(err)) != 0)
        return -1;
    int fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    while (flock(fd, LOCK_EX) != 0) {
        if (errno != EINTR) {
            close(fd);
            return -1;
        }
    }
    return fd;
}

void creds_unlock(int fd)
{
    if (fd >= 0)
        close(fd);   /* closing the last descriptor releases the flock */
}

int creds_remove(const char *path, char *err, size_t cap)
{
    if (unlink(path) != 0 && errno != ENOENT) {
        util_snprintf(err, cap, "%s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}
