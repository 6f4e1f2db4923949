/*
 * fuzz_routes - libFuzzer target: the path router. The input is
 * "METHOD PATH" then a byte that picks the caller (a person of some role
 * or an API key of some scope, own org or not). It runs what routes_handle
 * does before a handler: the split into segments, the match against every
 * row of the real route table, the Allow header of a wrong method, the
 * percent-decoding of a captured segment, and routes_decide. Includes
 * routes.c for its static matcher (no seam to export); never calls a
 * handler nor authenticates (app is NULL).
 */
#include "server/routes.c"
#include "fuzz.h"

static void decide(const struct route *r, uint8_t pick)
{
    struct account_principal who;
    const char *why;
    int rc;

    memset(&who, 0, sizeof(who));
    who.kind = (pick & 1) ? PRINCIPAL_KEY : PRINCIPAL_USER;
    who.scopes = (pick >> 1) & 3;
    rc = routes_decide(r->access, r->role, r->scope, &who, (pick >> 3) & 1, (pick >> 4) & 3,
                       &why);
    if ((rc == 0) != (why == NULL))
        __builtin_trap();             /* a refusal always says why */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *in = fuzz_cstr(data, size), *sp, *path, buf[1024], *seg[PATH_SEGMENTS_MAX];
    char decoded[256];
    struct http_response resp;
    struct route_ctx c;
    uint8_t pick = size > 0 ? data[size - 1] : 0;
    int n, known = 0, matched = 0;
    size_t i;

    memset(&resp, 0, sizeof(resp));
    if ((sp = strchr(in, ' ')) == NULL)
        goto out;
    *sp = '\0';
    path = sp + 1;
    if (util_strlcpy(buf, path, sizeof(buf)) >= sizeof(buf) || (n = split_path(buf, seg)) < 0)
        goto out;
    for (i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        memset(&c, 0, sizeof(c));
        if (!pattern_match(routes[i].pattern, seg, n, &c))
            continue;
        known = 1;
        if (strcmp(routes[i].method, in) != 0)
            continue;
        matched = 1;
        decide(&routes[i], pick);
        if (c.item != NULL)
            (void)segment_decode(c.item, decoded, sizeof(decoded));
        if (c.slug != NULL)
            (void)wizard_slug_valid(c.slug);
        if (c.name != NULL)
            (void)wizard_name_valid(c.name);
        break;
    }
    if (known && !matched)
        set_allow(&resp, seg, n);
out:
    http_response_free(&resp);
    free(in);
    return 0;
}
