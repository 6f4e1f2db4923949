/*
 * file_reader.c - the file_reader tool: read a text file beneath the
 * server's file_root.
 *
 * Owns nothing beyond one call (its descriptors are closed before it
 * returns). Must not open anything outside file_root, must not follow a
 * symbolic link (inside or outside the root), and must not return bytes
 * that are not UTF-8 text.
 *
 * It walks the relative path one component at a time with
 * openat(O_NOFOLLOW) from a descriptor on file_root, so "..", absolute paths
 * and symbolic links are refused and no component can be swapped between
 * check and use.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "runtime/tools/file_reader.h"
#include "runtime/tools/tool_common.h"
#include "lib/util.h"

#define FILE_PATH_MAX 4096

/* Open rel beneath the directory root, one component at a time, never
 * following a symbolic link. *fd and 0, or -1 with the reason in msg. */
static int file_open_beneath(const char *root, const char *rel, int *fd, struct stat *st,
                             char *msg, size_t cap)
{
    char buf[FILE_PATH_MAX + 1], *comp, *next, *save = NULL;
    int dir, sub;

    util_strlcpy(buf, rel, sizeof(buf));
    if ((dir = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
        return tool_fail_msg(msg, cap, "the file root is not accessible");
    comp = strtok_r(buf, "/", &save);
    while (comp && strcmp(comp, ".") == 0)
        comp = strtok_r(NULL, "/", &save);
    if (comp == NULL) {
        close(dir);
        return tool_fail_msg(msg, cap, "'%s' is a directory", rel);
    }
    for (; comp; comp = next) {
        next = strtok_r(NULL, "/", &save);
        while (next && strcmp(next, ".") == 0)
            next = strtok_r(NULL, "/", &save);
        if (fstatat(dir, comp, st, AT_SYMLINK_NOFOLLOW) < 0) {
            close(dir);
            return tool_fail_msg(msg, cap, errno == ENOENT ? "no such file '%s'" : "cannot read '%s'",
                                 rel);
        }
        if (S_ISLNK(st->st_mode)) {
            close(dir);
            return tool_fail_msg(msg, cap, "'%s' is a symbolic link: links are not followed", comp);
        }
        if (next && !S_ISDIR(st->st_mode)) {
            close(dir);
            return tool_fail_msg(msg, cap, "'%s' is not a directory", comp);
        }
        if (!next && !S_ISREG(st->st_mode)) {
            close(dir);
            return tool_fail_msg(msg, cap, S_ISDIR(st->st_mode) ? "'%s' is a directory"
                                                                 : "'%s' is not a regular file", rel);
        }
        sub = openat(dir, comp, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK |
                                    (next ? O_DIRECTORY : 0));
        close(dir);
        if (sub < 0)
            return tool_fail_msg(msg, cap, "cannot open '%s'", rel);
        dir = sub;
    }
    if (fstat(dir, st) < 0 || !S_ISREG(st->st_mode)) {   /* swapped since fstatat */
        close(dir);
        return tool_fail_msg(msg, cap, "'%s' is not a regular file", rel);
    }
    *fd = dir;
    return 0;
}

struct json_object *file_reader_tool(struct json_object *args, const struct tools_ctx *ctx)
{
    const char *root = ctx->settings->file_root, *path, *c;
    struct json_object *err = NULL, *o;
    struct stat st;
    char msg[FILE_PATH_MAX + 128], *buf;
    size_t len, got = 0, want;
    ssize_t r;
    int fd;

    if (root == NULL || *root == '\0')
        return tool_reply_error("file reading is not configured");
    if ((path = tool_arg_str(args, "path", true, FILE_PATH_MAX, &len, &err)) == NULL)
        return err;
    if (path[0] == '/')
        return tool_reply_error("absolute paths are not allowed: give a path relative to the file root");
    for (c = path; (c = strstr(c, "..")) != NULL; c += 2)
        if ((c == path || c[-1] == '/') && (c[2] == '/' || c[2] == '\0'))
            return tool_reply_error("'..' is not allowed in a path");
    if (file_open_beneath(root, path, &fd, &st, msg, sizeof(msg)) < 0)
        return tool_reply_error("%s", msg);
    want = st.st_size > (off_t)FILE_READER_MAX_BYTES ? FILE_READER_MAX_BYTES + 1 : (size_t)st.st_size + 1;
    buf = xmalloc(want + 1);
    while (got < want && (r = read(fd, buf + got, want - got)) != 0) {
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    len = got > FILE_READER_MAX_BYTES ? tool_utf8_trim_partial(buf, FILE_READER_MAX_BYTES) : got;
    if (memchr(buf, '\0', len) || !tool_utf8_valid(buf, len)) {
        free(buf);
        return tool_reply_error("'%s' is not a text file", path);
    }
    o = json_object_new_object();
    json_object_object_add(o, "path", json_object_new_string(path));
    json_object_object_add(o, "size", json_object_new_int64((int64_t)st.st_size));
    json_object_object_add(o, "content", json_object_new_string_len(buf, (int)len));
    json_object_object_add(o, "truncated", json_object_new_boolean(got > FILE_READER_MAX_BYTES));
    free(buf);
    return tool_reply_result(o);
}

