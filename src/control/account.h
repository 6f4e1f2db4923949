/*
 * account.h - users, organisations and memberships: dev login, the
 * caller's orgs, and the membership check every /orgs/{slug} route makes.
 */
#ifndef AM_ACCOUNT_H
#define AM_ACCOUNT_H

#include <json-c/json.h>
#include <stdint.h>
#include "state/app.h"
#include "state/store.h"
#include "lib/error.h"

enum account_role { ROLE_NONE = 0, ROLE_MEMBER, ROLE_ADMIN, ROLE_OWNER };

/* What an API key may do (a bit set). A key never manages keys, providers
 * or members, whatever its scopes. */
enum account_scope {
    SCOPE_NONE = 0,
    SCOPE_RUN = 1 << 0,     /* list and get agents, run, test, stream */
    SCOPE_MANAGE = 1 << 1,  /* also create, edit, delete, deploy, pause agents; read usage */
};

/* How a request proved who it is. */
enum account_kind {
    PRINCIPAL_USER = 0,     /* a person's access token (Authorization: Bearer) */
    PRINCIPAL_KEY,          /* an org's API key (X-API-Key) */
};

/* Who a request comes from, once its credentials are verified. */
struct account_principal {
    int kind;               /* enum account_kind */
    char email[256];        /* the user (PRINCIPAL_USER) */
    char fam[48];           /* the token's family (logout revokes it) */
    int memo;               /* internal: this thread's memo slot, or -1 */
    char org[48];           /* PRINCIPAL_KEY: the only org the key belongs to */
    char key_id[48];        /* PRINCIPAL_KEY: the key's public id */
    int scopes;             /* PRINCIPAL_KEY: enum account_scope bits */
};

/* Verify an access token (signature, expiry, type) and that its family is
 * not revoked. Each thread remembers a few recent tokens and the role
 * looked up with them until the auth epoch (auth_state.h) moves, so a client
 * that reuses its token costs no database read. Returns 0 or AM_EUNAUTH. */
int account_authenticate(struct app *app, const char *token,
                         struct account_principal *who, struct am_error *err);

/* The principal's role in org (ROLE_NONE if not a member, or no such org),
 * memoised with the token. Anything that changes a membership or revokes
 * a token family must call auth_state_bump(app->auth). */
int account_member_role(struct app *app, struct account_principal *who,
                        const char *org);

/* POST /auth/dev/login: create the user and a personal org on first login,
 * issue an access and a refresh token. body is borrowed (the caller still
 * puts it). On 0, *out is a new answer object (caller puts); on an error
 * *out is NULL. Errors: AM_EVALIDATION (+details), AM_EUNAVAILABLE or
 * AM_EIO (storage), AM_EINTERNAL. */
int account_dev_login(struct app *app, struct json_object *body,
                      struct json_object **out, struct am_error *err);

/* POST /auth/refresh: rotate a refresh token. A refresh token that is not
 * the family's current one revokes the family (401). body is borrowed; on
 * 0, *out is a new answer object (caller puts), else NULL. Errors:
 * AM_EVALIDATION, AM_EUNAUTH, AM_EUNAVAILABLE. */
int account_refresh(struct app *app, struct json_object *body,
                    struct json_object **out, struct am_error *err);

/* POST /auth/logout: revoke the token family fam (access and refresh). */
int account_logout(struct app *app, const char *email, const char *fam,
                   struct am_error *err);

/* 1 if tokens of family fam may still be used, 0 if revoked or unknown;
 * AM_EUNAVAILABLE when the store cannot tell now (a replica that has not
 * yet seen the sign-in, or a storage error). */
int account_token_live(struct app *app, const char *fam);

/* The caller's role in org (ROLE_NONE if not a member or no such org). */
int account_role(struct app *app, const char *org, const char *email);

/* 1 if a user with this e-mail exists (or the store cannot tell). */
int account_user_exists(struct app *app, const char *email);

/* GET /orgs/me (first org) and GET /orgs (all). On 0, *out is a new
 * object (caller puts), else NULL. Errors: AM_EUNAUTH (no such user),
 * AM_EIO, and AM_ENOTFOUND from org_me when the user has no org. */
int account_org_me(struct app *app, const char *email, struct json_object **out,
                   struct am_error *err);
int account_org_list(struct app *app, const char *email, struct json_object **out,
                     struct am_error *err);

/* One org object as GET /orgs shows it, with email's role in it: a new
 * object (caller puts), or NULL if there is no such org. */
struct json_object *account_org_view(struct app *app, const char *slug, const char *email);

/* "owner" -> ROLE_OWNER ...; ROLE_NONE for anything else (NULL too). */
int account_role_from_name(const char *s);

/* ROLE_MEMBER -> "member" ...; "none" for anything out of range. Static. */
const char *account_role_name(int role);

/* Check e (len bytes, not NUL-terminated) is a plausible e-mail address
 * and write it lower-cased, NUL-terminated, into out (cap bytes).
 * Returns 0, or -1 if it is not an address or does not fit. */
int account_email_normalize(const char *e, size_t len, char *out, size_t cap);

/* Inside a transaction t (members.c): */

/* email's role in slug, read with flags (STORE_RMW locks the membership
 * record): an enum account_role, or a negative AM_* code (AM_EDEADLOCK,
 * AM_EIO). */
int account_txn_role(struct store *s, struct store_txn *t, const char *slug,
                     const char *email, int flags);

/* Make the existing user email a member of slug with role (joined now):
 * the membership record and the user's "orgs" list (invariant 1). Returns
 * 0, AM_ENOENT (no such user), AM_EDEADLOCK or AM_EIO. */
int account_txn_join(struct store *s, struct store_txn *t, const char *slug,
                     const char *email, int role, int64_t now);

/* Remove email's membership of slug and slug from the user's "orgs" list.
 * Returns 0, AM_ENOENT (not a member), AM_EDEADLOCK or AM_EIO. */
int account_txn_leave(struct store *s, struct store_txn *t, const char *slug,
                      const char *email);

#endif
