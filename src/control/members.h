/*
 * members.h - an org's members and invitations (SPEC sections 3 and 4):
 * invite, accept at dev login, list, remove; and the org's own settings
 * (PATCH /orgs/{slug}).
 *
 * Who may call these is routes.c's table (owner/admin, or any member for
 * the list); these functions trust it, except for the rules that depend
 * on the target (an admin cannot remove an owner, the last owner stays).
 */
#ifndef AM_MEMBERS_H
#define AM_MEMBERS_H

#include <json-c/json.h>
#include "state/app.h"
#include "state/store.h"
#include "lib/error.h"

/* Longest e-mail address with its NUL. */
#define MEMBERS_EMAIL_MAX 256

/* PATCH /orgs/{slug} {"display_name"}: 1 to 128 characters, no control
 * characters, no other field. body is borrowed. On 0, *out is the org
 * object with email's role (caller puts), else NULL. Errors:
 * AM_EVALIDATION (+details), AM_ENOTFOUND, AM_EUNAVAILABLE. */
int members_org_update(struct app *app, const char *slug, const char *email,
                       struct json_object *body, struct json_object **out,
                       struct am_error *err);

/* GET /orgs/{slug}/members: {"members":[members (status "active") in
 * e-mail order, then pending invitations (status "invited")]}. On 0, *out
 * is new (caller puts), else NULL. Errors: AM_EUNAVAILABLE. */
int members_list(struct app *app, const char *slug, struct json_object **out,
                 struct am_error *err);

/* POST /orgs/{slug}/members/invite {"email","role"}: record a pending
 * invitation (role "member" by default, or "admin"). inviter is recorded
 * with it. body is borrowed. On 0, *out is {"email","role","status"}
 * (caller puts), else NULL. Errors: AM_EVALIDATION (+details), AM_ECONFLICT
 * (already a member or invited), AM_EPLANLIMIT (members + pending would
 * pass limits.max_members), AM_ENOTFOUND, AM_EUNAVAILABLE. */
int members_invite(struct app *app, const char *slug, const char *inviter,
                   struct json_object *body, struct json_object **out,
                   struct am_error *err);

/* DELETE /orgs/{slug}/members/{email}: remove a member (and slug from the
 * user's orgs) or withdraw an invitation, as actor. target is the decoded
 * path segment, compared case-insensitively. A removed membership bumps
 * the auth epoch after the commit. Returns 0, or AM_EMEMBERNOTFOUND,
 * AM_EFORBIDDEN (an admin removing an owner, or actor no longer an admin),
 * AM_ECONFLICT (the last owner), AM_EUNAVAILABLE. */
int members_remove(struct app *app, const char *slug, const char *actor,
                   const char *target, struct am_error *err);

/* Inside the dev-login transaction t (account.c): turn every pending
 * invitation for email (an existing user) into a membership with the
 * invited role, and delete the invitation. *accepted counts them; the
 * caller bumps the auth epoch after the commit if it is not 0. Returns 0,
 * AM_EDEADLOCK or AM_EIO. */
int members_accept_txn(struct store *s, struct store_txn *t, const char *email,
                       int *accepted);

#endif
