/*
 * members.c - an org's members beyond its creator: invitations, their
 * acceptance at dev login, removal, the member list, and the org's own
 * settings (PATCH display_name). A file of its own because account.c
 * (users, tokens, the auth memo) would otherwise pass ~900 lines.
 *
 * Owns the record format of STORE_INVITES. One pending invitation is two
 * records, written and deleted in one transaction:
 *   "slug\0email" -> {"role","invited_at","invited_by"}  (prefix "slug\0":
 *                                                         an org's invitations)
 *   "email\0slug" -> {"role"}                            (prefix "email\0":
 *                                                         an e-mail's invitations)
 * An e-mail always contains '@' and a slug never does, so the two shapes
 * never share a prefix. Membership records and a user's "orgs" list are
 * account.c's; this file changes them only through account_txn_join and
 * account_txn_leave, inside its own transactions.
 *
 * Invariants:
 *  1. Both records of an invitation exist, or neither.
 *  2. An e-mail is never both a member of an org and invited to it.
 *  3. Adding an invitation never takes members + pending past
 *     limits.max_members: every transaction that adds one or removes a
 *     member first write-locks the org record (lock_org), so they run one
 *     at a time per org and count what is committed.
 *  4. An org keeps at least one owner: removals count owners under that
 *     lock and refuse the last one. No route makes an owner but login.
 *  5. A committed membership change is followed by auth_state_bump (here
 *     for removals, in account_dev_login for acceptances), so no worker's
 *     memo keeps a role that is gone.
 *
 * Must never: log; decide who may call a route (routes.c's table does).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "control/account.h"
#include "control/auth_state.h"
#include "control/members.h"
#include "state/config.h"
#include "lib/key.h"
#include "lib/util.h"

#define KEY_MAX 320

static int storage_error(struct am_error *err, int rc)
{
    (void)rc;
    return error_set(err, AM_EUNAVAILABLE, "Storage unavailable, retry");
}

/* Write-lock the org record (invariant 3); AM_ENOTFOUND if there is none. */
static int lock_org(struct store *s, struct store_txn *t, const char *slug,
                    struct json_object **org)
{
    char *val = NULL;
    int rc = store_get(s, t, STORE_ORGS, slug, strlen(slug), STORE_RMW, &val, NULL);

    if (org != NULL)
        *org = NULL;
    if (rc == 0 && org != NULL && (*org = json_tokener_parse(val)) == NULL)
        rc = AM_EIO;
    free(val);
    return rc == AM_ENOENT ? AM_ENOTFOUND : rc;
}

/* ---- PATCH /orgs/{slug} ------------------------------------------------------ */

/* 1 to 128 UTF-8 characters (json-c has checked the encoding), none of
 * them a control character (C0, DEL, C1) or NUL. */
static int display_name_valid(const char *p, size_t len)
{
    size_t i, chars = 0;

    for (i = 0; i < len; i++) {
        unsigned char b = (unsigned char)p[i];
        if (b < 0x20 || b == 0x7f)
            return 0;
        if (b == 0xc2 && i + 1 < len && (unsigned char)p[i + 1] < 0xa0)
            return 0;                       /* U+0080..U+009F */
        if ((b & 0xc0) != 0x80)
            chars++;
    }
    return chars >= 1 && chars <= 128;
}

struct rename_ctx {
    const char *slug;
    const char *display_name;
};

static int rename_txn(struct store *s, struct store_txn *t, void *arg)
{
    struct rename_ctx *c = arg;
    struct json_object *org;
    size_t len;
    const char *v;
    int rc;

    if ((rc = lock_org(s, t, c->slug, &org)) != 0)
        return rc;
    json_object_object_add(org, "display_name", json_object_new_string(c->display_name));
    v = json_object_to_json_string_length(org, JSON_C_TO_STRING_PLAIN, &len);
    rc = store_put(s, t, STORE_ORGS, c->slug, strlen(c->slug), v, len);
    json_object_put(org);
    return rc;
}

int members_org_update(struct app *app, const char *slug, const char *email,
                       struct json_object *body, struct json_object **out,
                       struct am_error *err)
{
    struct rename_ctx c = { slug, NULL };
    struct json_object *v;
    int rc;

    *out = NULL;
    error_set(err, AM_EVALIDATION, "Invalid organization update");
    json_object_object_foreach(body, key, val) {
        (void)val;
        if (strcmp(key, "display_name") != 0)
            error_add_detail(err, key, "unknown field");
    }
    if (!json_object_object_get_ex(body, "display_name", &v))
        error_add_detail(err, "display_name", "required");
    else if (!json_object_is_type(v, json_type_string) ||
             !display_name_valid(json_object_get_string(v),
                                 (size_t)json_object_get_string_len(v)))
        error_add_detail(err, "display_name",
                         "must be a string of 1 to 128 characters, no control characters");
    else
        c.display_name = json_object_get_string(v);
    if (err->ndetails > 0)
        return AM_EVALIDATION;
    error_clear(err);
    if ((rc = store_transact(app->store, rename_txn, &c)) != 0)
        return rc == AM_ENOTFOUND ? error_set(err, rc, "No such organization")
                                  : storage_error(err, rc);
    if ((*out = account_org_view(app, slug, email)) == NULL)
        return error_set(err, AM_EUNAVAILABLE, "Storage unavailable, retry");
    return 0;
}

/* ---- scanning one org's records ------------------------------------------ */

/* What a scan over "slug\0" collects: each record's second key part and
 * its parsed value, as {"email": ..., "rec": {...}} in key order. */
struct collect {
    size_t plen;
    struct json_object *items;   /* array, owned */
    int owners;                  /* records whose "role" is "owner" */
};

static int collect_fn(const char *key, size_t klen, const char *val, size_t vlen, void *arg)
{
    struct collect *c = arg;
    struct json_object *rec = json_tokener_parse(val), *item, *r;

    (void)vlen;
    if (rec == NULL)
        return AM_EIO;
    if (json_object_object_get_ex(rec, "role", &r) &&
        account_role_from_name(json_object_get_string(r)) == ROLE_OWNER)
        c->owners++;
    item = json_object_new_object();
    json_object_object_add(item, "key", json_object_new_string_len(key + c->plen,
                                                                   (int)(klen - c->plen)));
    json_object_object_add(item, "rec", rec);
    json_object_array_add(c->items, item);
    return 0;
}

/* Collect db's records under "first\0" into c (c->items is new: the
 * caller puts it). */
static int collect(struct store *s, struct store_txn *t, int db, const char *first,
                   struct collect *c)
{
    char prefix[KEY_MAX];
    size_t plen = key_pair(prefix, sizeof(prefix), first, "");

    c->plen = plen;
    c->items = json_object_new_array();
    c->owners = 0;
    if (plen == 0)
        return AM_EINTERNAL;
    return store_scan(s, t, db, prefix, plen, collect_fn, c);
}

/* ---- GET /orgs/{slug}/members ---------------------------------------------- */

static const char *item_str(struct json_object *item, const char *field)
{
    struct json_object *rec, *v;

    if (strcmp(field, "key") == 0)
        return json_object_object_get_ex(item, "key", &v) ? json_object_get_string(v) : "";
    json_object_object_get_ex(item, "rec", &rec);
    return json_object_object_get_ex(rec, field, &v) ? json_object_get_string(v) : "";
}

static struct json_object *when(struct json_object *item, const char *field)
{
    struct json_object *rec, *v;
    char buf[32];

    json_object_object_get_ex(item, "rec", &rec);
    util_rfc3339(json_object_object_get_ex(rec, field, &v) ? json_object_get_int64(v) : 0,
                 buf, sizeof(buf));
    return json_object_new_string(buf);
}

/* The user's display name, or the e-mail if the record cannot be read. */
static struct json_object *user_name(struct app *app, const char *email)
{
    struct json_object *u = NULL, *v, *name;
    char *val = NULL;

    if (store_get(app->store, NULL, STORE_USERS, email, strlen(email), 0, &val, NULL) == 0)
        u = json_tokener_parse(val);
    free(val);
    if (u != NULL && json_object_object_get_ex(u, "name", &v))
        name = json_object_get(v);
    else
        name = json_object_new_string(email);
    json_object_put(u);
    return name;
}

int members_list(struct app *app, const char *slug, struct json_object **out,
                 struct am_error *err)
{
    struct collect m = { 0, NULL, 0 }, inv = { 0, NULL, 0 };
    struct json_object *arr = NULL;
    size_t i;
    int rc;

    *out = NULL;
    if ((rc = collect(app->store, NULL, STORE_MEMBERS, slug, &m)) != 0 ||
        (rc = collect(app->store, NULL, STORE_INVITES, slug, &inv)) != 0) {
        rc = storage_error(err, rc);
        goto out;
    }
    arr = json_object_new_array();
    for (i = 0; i < json_object_array_length(m.items); i++) {
        struct json_object *it = json_object_array_get_idx(m.items, i), *o;
        const char *email = item_str(it, "key");

        o = json_object_new_object();
        json_object_object_add(o, "email", json_object_new_string(email));
        json_object_object_add(o, "name", user_name(app, email));
        json_object_object_add(o, "role", json_object_new_string(item_str(it, "role")));
        json_object_object_add(o, "status", json_object_new_string("active"));
        json_object_object_add(o, "joined_at", when(it, "joined_at"));
        json_object_array_add(arr, o);
    }
    for (i = 0; i < json_object_array_length(inv.items); i++) {
        struct json_object *it = json_object_array_get_idx(inv.items, i), *o;

        o = json_object_new_object();
        json_object_object_add(o, "email", json_object_new_string(item_str(it, "key")));
        json_object_object_add(o, "role", json_object_new_string(item_str(it, "role")));
        json_object_object_add(o, "status", json_object_new_string("invited"));
        json_object_object_add(o, "invited_at", when(it, "invited_at"));
        json_object_array_add(arr, o);
    }
    *out = json_object_new_object();
    json_object_object_add(*out, "members", arr);
out:
    json_object_put(m.items);
    json_object_put(inv.items);
    return rc;
}

/* ---- POST /orgs/{slug}/members/invite --------------------------------------- */

struct invite_ctx {
    const char *slug;
    const char *email;
    const char *inviter;
    int role;
    int max_members;
};

static int invite_body(struct json_object *body, char *email, size_t cap, int *role,
                       struct am_error *err)
{
    struct json_object *v;

    *role = ROLE_MEMBER;
    error_set(err, AM_EVALIDATION, "Invalid invitation");
    json_object_object_foreach(body, key, val) {
        (void)val;
        if (strcmp(key, "email") != 0 && strcmp(key, "role") != 0)
            error_add_detail(err, key, "unknown field");
    }
    if (!json_object_object_get_ex(body, "email", &v))
        error_add_detail(err, "email", "required");
    else if (!json_object_is_type(v, json_type_string) ||
             account_email_normalize(json_object_get_string(v),
                                     (size_t)json_object_get_string_len(v), email, cap) != 0)
        error_add_detail(err, "email", "must be an e-mail address");
    if (json_object_object_get_ex(body, "role", &v)) {
        const char *r = json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "";
        *role = account_role_from_name(r);
        if (*role == ROLE_OWNER)
            error_add_detail(err, "role", "an owner cannot be invited; invite an admin");
        else if (*role == ROLE_NONE || strlen(r) != (size_t)json_object_get_string_len(v))
            error_add_detail(err, "role", "must be \"member\" or \"admin\"");
    }
    if (err->ndetails > 0)
        return AM_EVALIDATION;
    error_clear(err);
    return 0;
}

static int invite_txn(struct store *s, struct store_txn *t, void *arg)
{
    struct invite_ctx *c = arg;
    struct collect m = { 0, NULL, 0 }, inv = { 0, NULL, 0 };
    struct json_object *rec = NULL;
    char key[KEY_MAX], *val = NULL;
    size_t klen = key_pair(key, sizeof(key), c->slug, c->email), vlen;
    const char *v;
    int rc;

    if (klen == 0)
        return AM_EINTERNAL;
    if ((rc = lock_org(s, t, c->slug, NULL)) != 0)
        return rc;
    if ((rc = account_txn_role(s, t, c->slug, c->email, 0)) != ROLE_NONE)
        return rc < 0 ? rc : AM_ECONFLICT;
    rc = store_get(s, t, STORE_INVITES, key, klen, STORE_RMW, &val, NULL);
    free(val);
    if (rc != AM_ENOENT)
        return rc == 0 ? AM_ECONFLICT : rc;
    if ((rc = collect(s, t, STORE_MEMBERS, c->slug, &m)) != 0 ||
        (rc = collect(s, t, STORE_INVITES, c->slug, &inv)) != 0)
        goto out;
    if ((int)(json_object_array_length(m.items) + json_object_array_length(inv.items)) >=
        c->max_members) {
        rc = AM_EPLANLIMIT;
        goto out;
    }
    rec = json_object_new_object();
    json_object_object_add(rec, "role", json_object_new_string(account_role_name(c->role)));
    v = json_object_to_json_string_length(rec, JSON_C_TO_STRING_PLAIN, &vlen);
    if ((rc = store_put(s, t, STORE_INVITES, key,
                        key_pair(key, sizeof(key), c->email, c->slug), v, vlen)) != 0)
        goto out;
    json_object_object_add(rec, "invited_at", json_object_new_int64(util_now()));
    json_object_object_add(rec, "invited_by", json_object_new_string(c->inviter));
    v = json_object_to_json_string_length(rec, JSON_C_TO_STRING_PLAIN, &vlen);
    rc = store_put(s, t, STORE_INVITES, key, key_pair(key, sizeof(key), c->slug, c->email),
                   v, vlen);
out:
    json_object_put(rec);
    json_object_put(m.items);
    json_object_put(inv.items);
    return rc;
}

int members_invite(struct app *app, const char *slug, const char *inviter,
                   struct json_object *body, struct json_object **out,
                   struct am_error *err)
{
    char email[MEMBERS_EMAIL_MAX];
    struct invite_ctx c = { slug, email, inviter, ROLE_MEMBER, app->cfg->max_members };
    int rc;

    *out = NULL;
    if ((rc = invite_body(body, email, sizeof(email), &c.role, err)) != 0)
        return rc;
    rc = store_transact(app->store, invite_txn, &c);
    if (rc == AM_ECONFLICT)
        return error_set(err, rc, "'%s' is already a member of or invited to '%s'", email, slug);
    if (rc == AM_EPLANLIMIT)
        return error_set(err, rc, "Organization '%s' has reached its limit of %d members "
                         "(pending invitations count)", slug, c.max_members);
    if (rc == AM_ENOTFOUND)
        return error_set(err, rc, "No such organization");
    if (rc != 0)
        return storage_error(err, rc);
    *out = json_object_new_object();
    json_object_object_add(*out, "email", json_object_new_string(email));
    json_object_object_add(*out, "role", json_object_new_string(account_role_name(c.role)));
    json_object_object_add(*out, "status", json_object_new_string("invited"));
    return 0;
}

/* ---- DELETE /orgs/{slug}/members/{email} ------------------------------------- */

struct remove_ctx {
    const char *slug;
    const char *actor;
    const char *target;
    int was_member;     /* OUT: a membership (not an invitation) was removed */
    int why;            /* OUT: on AM_EFORBIDDEN/AM_ECONFLICT, which rule */
};

/* Delete both records of an invitation; AM_ENOENT if there is none. */
static int invite_delete(struct store *s, struct store_txn *t, const char *slug,
                         const char *email)
{
    char key[KEY_MAX];
    int rc = store_del(s, t, STORE_INVITES, key, key_pair(key, sizeof(key), slug, email));

    if (rc != 0)
        return rc;
    rc = store_del(s, t, STORE_INVITES, key, key_pair(key, sizeof(key), email, slug));
    return rc == AM_ENOENT ? AM_EIO : rc;       /* invariant 1 broken */
}

static int remove_txn(struct store *s, struct store_txn *t, void *arg)
{
    struct remove_ctx *c = arg;
    struct collect m = { 0, NULL, 0 };
    int actor, target, rc;

    c->was_member = 0;
    if ((rc = lock_org(s, t, c->slug, NULL)) != 0)
        return rc;
    if ((actor = account_txn_role(s, t, c->slug, c->actor, 0)) < 0)
        return actor;
    if (actor < ROLE_ADMIN)
        return (c->why = 0, AM_EFORBIDDEN);
    if ((target = account_txn_role(s, t, c->slug, c->target, STORE_RMW)) < 0)
        return target;
    if (target == ROLE_NONE) {
        rc = invite_delete(s, t, c->slug, c->target);
        return rc == AM_ENOENT ? AM_EMEMBERNOTFOUND : rc;
    }
    if (target == ROLE_OWNER) {
        if (actor < ROLE_OWNER)
            return (c->why = 1, AM_EFORBIDDEN);
        rc = collect(s, t, STORE_MEMBERS, c->slug, &m);
        json_object_put(m.items);
        if (rc != 0)
            return rc;
        if (m.owners <= 1)
            return AM_ECONFLICT;
    }
    if ((rc = account_txn_leave(s, t, c->slug, c->target)) == 0)
        c->was_member = 1;
    return rc == AM_ENOENT ? AM_EMEMBERNOTFOUND : rc;
}

int members_remove(struct app *app, const char *slug, const char *actor,
                   const char *target, struct am_error *err)
{
    char email[MEMBERS_EMAIL_MAX];
    struct remove_ctx c = { slug, actor, email, 0, 0 };
    int rc;

    if (account_email_normalize(target, strlen(target), email, sizeof(email)) != 0)
        return error_set(err, AM_EMEMBERNOTFOUND, "No member or invitation for that address");
    rc = store_transact(app->store, remove_txn, &c);
    if (c.was_member && rc == 0)
        auth_state_bump(app->auth);     /* invariant 5: after the commit */
    switch (rc) {
    case 0:
        return 0;
    case AM_EMEMBERNOTFOUND:
        return error_set(err, rc, "'%s' is neither a member of nor invited to '%s'", email, slug);
    case AM_EFORBIDDEN:
        return error_set(err, rc, c.why ? "Only an owner may remove an owner"
                                        : "Only an owner or an admin of this organization "
                                          "may do this");
    case AM_ECONFLICT:
        return error_set(err, rc, "'%s' is the last owner of '%s' and cannot be removed",
                         email, slug);
    case AM_ENOTFOUND:
        return error_set(err, rc, "No such organization");
    default:
        return storage_error(err, rc);
    }
}

/* ---- acceptance at dev login ------------------------------------------------ */

int members_accept_txn(struct store *s, struct store_txn *t, const char *email,
                       int *accepted)
{
    struct collect inv = { 0, NULL, 0 };
    int64_t now = util_now();
    size_t i;
    int rc;

    *accepted = 0;
    if ((rc = collect(s, t, STORE_INVITES, email, &inv)) != 0)
        goto out;
    for (i = 0; i < json_object_array_length(inv.items); i++) {
        struct json_object *it = json_object_array_get_idx(inv.items, i);
        const char *slug = item_str(it, "key");
        int role = account_role_from_name(item_str(it, "role"));

        if ((rc = invite_delete(s, t, slug, email)) != 0)
            goto out;
        if ((rc = account_txn_role(s, t, slug, email, STORE_RMW)) < 0)
            goto out;
        if (rc != ROLE_NONE || role == ROLE_NONE || role == ROLE_OWNER) {
            rc = 0;                     /* already in (invariant 2), or unreadable */
            continue;
        }
        if ((rc = account_txn_join(s, t, slug, email, role, now)) != 0)
            goto out;
        (*accepted)++;
    }
out:
    json_object_put(inv.items);
    return rc;
}
