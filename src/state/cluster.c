/*
 * cluster.c - the replica's side of the accounting calls (see cluster.h).
 *
 * Owns: one libcurl easy handle per thread (its connection to the master is
 * kept between calls), the thread's last commit token from the master.
 *
 * Must never: call the master for anything but the accounting operations;
 * log; send the secret anywhere but a configured site's URL.
 */
#include <curl/curl.h>
#include <errno.h>
#include <sys/mman.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "lib/buf.h"
#include "lib/util.h"
#include "state/cluster.h"
#include "state/config.h"
#include "state/store.h"

#define CLUSTER_REPLY_MAX (64 * 1024)
#define CLUSTER_TIMEOUT_MS 10000L

static __thread CURL *cluster_curl;
static __thread char cluster_token[STORE_TOKEN_HEX];

int cluster_is_replica(struct app *app)
{
    return app->cfg != NULL && app->cfg->rep_nsites > 0 && !store_rep_is_master(app->store);
}

struct cluster {
    int master;                 /* index into cfg->rep_sites, -1: none; atomic */
};

int cluster_create(struct cluster **out, struct am_error *err)
{
    void *p = mmap(NULL, sizeof(struct cluster), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);

    *out = NULL;
    if (p == MAP_FAILED)
        return error_set(err, AM_EIO, "replication: mapping its shared state: %s",
                         strerror(errno));
    *out = p;
    (*out)->master = -1;
    return 0;
}

void cluster_close(struct cluster *c)
{
    if (c != NULL)
        munmap(c, sizeof(*c));
}

void cluster_set_master(struct cluster *c, int site)
{
    if (c != NULL)
        __atomic_store_n(&c->master, site, __ATOMIC_RELEASE);
}

int cluster_master_site(const struct app *app)
{
    int site;

    if (app->cluster == NULL || app->cfg == NULL)
        return -1;
    site = __atomic_load_n(&app->cluster->master, __ATOMIC_ACQUIRE);
    return site >= 0 && site < app->cfg->rep_nsites ? site : -1;
}

const char *cluster_master_url(struct app *app)
{
    int site = cluster_master_site(app);

    return site >= 0 ? app->cfg->rep_sites[site].url : NULL;
}

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    return buf_put_limited(arg, data, size * n, CLUSTER_REPLY_MAX) == 0 ? size * n : 0;
}

static size_t on_header(char *data, size_t size, size_t n, void *arg)
{
    static const char name[] = "X-Astromesh-Commit:";
    size_t len = size * n, v;

    (void)arg;
    if (len > sizeof(name) && strncasecmp(data, name, sizeof(name) - 1) == 0) {
        data += sizeof(name) - 1;
        len -= sizeof(name) - 1;
        while (len > 0 && *data == ' ') {
            data++;
            len--;
        }
        for (v = 0; v < len && v < STORE_TOKEN_HEX - 1 && data[v] != '\r' && data[v] != '\n'; v++)
            cluster_token[v] = data[v];
        cluster_token[v] = '\0';
    }
    return size * n;
}

int cluster_call(struct app *app, const char *op, struct json_object *args,
                 struct json_object **reply, struct am_error *err)
{
    const char *base = cluster_master_url(app), *body;
    struct curl_slist *h = NULL;
    struct buf url, answer;
    struct json_object *rcobj, *msg;
    char secret[300];
    long status = 0;
    int rc = AM_ENOMASTER;

    *reply = NULL;
    buf_init(&url, 128);
    buf_init(&answer, 256);
    json_object_object_add(args, "op", json_object_new_string(op));
    if (base == NULL || (cluster_curl == NULL && (cluster_curl = curl_easy_init()) == NULL))
        goto out;
    curl_easy_reset(cluster_curl);
    buf_puts(&url, base);
    buf_puts(&url, CLUSTER_ACCOUNTING_PATH);
    snprintf(secret, sizeof(secret), CLUSTER_SECRET_HEADER ": %s", app->cfg->rep_secret);
    h = curl_slist_append(h, secret);
    h = curl_slist_append(h, "Content-Type: application/json");
    h = curl_slist_append(h, "Expect:");
    body = json_object_to_json_string_ext(args, JSON_C_TO_STRING_PLAIN);
    curl_easy_setopt(cluster_curl, CURLOPT_URL, url.z);
    curl_easy_setopt(cluster_curl, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(cluster_curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(cluster_curl, CURLOPT_TIMEOUT_MS, CLUSTER_TIMEOUT_MS);
    curl_easy_setopt(cluster_curl, CURLOPT_CONNECTTIMEOUT_MS, 2000L);
    curl_easy_setopt(cluster_curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(cluster_curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(cluster_curl, CURLOPT_WRITEDATA, &answer);
    curl_easy_setopt(cluster_curl, CURLOPT_HEADERFUNCTION, on_header);
    cluster_token[0] = '\0';
    if (curl_easy_perform(cluster_curl) != CURLE_OK)
        goto out;
    curl_easy_getinfo(cluster_curl, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200 || answer.z == NULL || (*reply = json_tokener_parse(answer.z)) == NULL ||
        !json_object_object_get_ex(*reply, "rc", &rcobj)) {
        json_object_put(*reply);
        *reply = NULL;
        goto out;
    }
    rc = json_object_get_int(rcobj);
    if (rc > 0 || rc <= AM_ERR_LAST)
        rc = AM_EINTERNAL;
    if (rc != 0) {
        json_object_object_get_ex(*reply, "message", &msg);
        error_set(err, rc, "%s", msg != NULL ? json_object_get_string(msg) : "refused");
    }
out:
    if (rc == AM_ENOMASTER && *reply == NULL)
        error_set(err, AM_ENOMASTER, "no master");
    curl_slist_free_all(h);
    buf_free(&url);
    buf_free(&answer);
    explicit_bzero(secret, sizeof(secret));
    json_object_put(args);
    return rc;
}

int cluster_token_take(char *out)
{
    if (cluster_token[0] == '\0')
        return 0;
    memcpy(out, cluster_token, STORE_TOKEN_HEX);
    cluster_token[0] = '\0';
    return 1;
}
