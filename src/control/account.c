/*
 * account.c - users, organisations, memberships, and dev login.
 *
 * Owns the record formats of STORE_USERS (email -> {"email","name",
 * "created_at","orgs":[slug…]}), STORE_ORGS (slug -> {"slug",
 * "display_name","plan","created_at"}) and STORE_MEMBERS
 * ("slug\0email" -> {"role","joined_at"}).
 *
 * Membership changes after the first login (invite, accept, remove) are
 * members.c's rules; it changes these records only through account_txn_join
 * and account_txn_leave, inside its own transactions, and dev login calls
 * members_accept_txn in the login transaction.
 *
 * Invariants:
 *  1. A user's "orgs" list and the membership records name the same orgs;
 *     both are written in the same transaction (account_txn_join/_leave
 *     write both).
 *  2. A slug is never reused: creating an org checks and writes in one
 *     transaction, and a taken slug gets a numeric suffix.
 *
 * Must never: log; tell a caller whether an org it does not belong to
 * exists (the role check answers ROLE_NONE for both).
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "control/account.h"
#include "state/cluster.h"
#include "control/auth.h"
#include "control/auth_state.h"
#include "control/members.h"
#include "state/config.h"
#include "state/store.h"
#include "lib/key.h"
#include "lib/util.h"
#include "control/wizard.h"

static const char *const role_names[] = { "none", "member", "admin", "owner" };

int account_role_from_name(const char *s)
{
    int i;

    for (i = ROLE_MEMBER; i <= ROLE_OWNER; i++)
        if (s != NULL && strcmp(s, role_names[i]) == 0)
            return i;
    return ROLE_NONE;
}

const char *account_role_name(int role)
{
    return role >= ROLE_NONE && role <= ROLE_OWNER ? role_names[role] : "none";
}

static struct json_object *load_json(struct store *s, struct store_txn *t, int db,
                                     const char *key, size_t klen, int flags, int *rc)
{
    char *val = NULL;
    struct json_object *o = NULL;

    *rc = store_get(s, t, db, key, klen, flags, &val, NULL);
    if (*rc == 0 && (o = json_tokener_parse(val)) == NULL)
        *rc = AM_EIO;
    free(val);
    return o;
}

static int save_json(struct store *s, struct store_txn *t, int db, const char *key,
                     size_t klen, struct json_object *o)
{
    size_t len;
    const char *v = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &len);
    return store_put(s, t, db, key, klen, v, len);
}

int account_role(struct app *app, const char *org, const char *email)
{
    char key[320];
    size_t klen = key_pair(key, sizeof(key), org, email);
    struct json_object *m, *r;
    int rc, role = ROLE_NONE;

    if (klen == 0)
        return ROLE_NONE;
    m = load_json(app->store, NULL, STORE_MEMBERS, key, klen, 0, &rc);
    if (m != NULL && json_object_object_get_ex(m, "role", &r))
        role = account_role_from_name(json_object_get_string(r));
    json_object_put(m);
    return role;
}

int account_user_exists(struct app *app, const char *email)
{
    char *val = NULL;
    int rc = store_get(app->store, NULL, STORE_USERS, email, strlen(email), 0, &val, NULL);

    free(val);
    return rc != AM_ENOENT;
}

/* dev@example.com -> dev-example-com: lower-case, runs of anything not
 * [a-z0-9] become one '-', no '-' at either end, at most max bytes. */
static void slug_from_email(const char *email, char *out, size_t max)
{
    size_t n = 0;
    const char *p;

    for (p = email; *p && n < max; p++) {
        int c = tolower((unsigned char)*p);
        if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
            out[n++] = (char)c;
        else if (n > 0 && out[n - 1] != '-')
            out[n++] = '-';
    }
    while (n > 0 && out[n - 1] == '-')
        n--;
    if (n == 0)
        memcpy(out, "org", (n = 3));
    out[n] = '\0';
}

/* ---- dev login ------------------------------------------------------------- */

struct login_ctx {
    const char *email;
    const char *name;
    char slug[WIZARD_SLUG_MAX + 1];   /* OUT: the user's first org, "" if none */
    int accepted;                     /* OUT: invitations turned into memberships */
};

/* Find a free slug for base (suffix -2, -3 … when taken) and claim it. */
static int claim_slug(struct store *s, struct store_txn *t, const char *base,
                      char *out, size_t cap)
{
    char *val = NULL;
    int i, rc;

    for (i = 1; i < 10000; i++) {
        if (i == 1) {
            util_strlcpy(out, base, cap);
        } else {
            char suffix[16];
            int sl = snprintf(suffix, sizeof(suffix), "-%d", i);
            size_t keep = strlen(base);
            if (keep + (size_t)sl > WIZARD_SLUG_MAX)
                keep = WIZARD_SLUG_MAX - (size_t)sl;
            while (keep > 0 && base[keep - 1] == '-')
                keep--;
            snprintf(out, cap, "%.*s%s", (int)keep, base, suffix);
        }
        rc = store_get(s, t, STORE_ORGS, out, strlen(out), STORE_RMW, &val, NULL);
        free(val);
        val = NULL;
        if (rc == AM_ENOENT)
            return 0;
        if (rc != 0)
            return rc;
    }
    return AM_EUNAVAILABLE;
}

/* A new user with a personal org (first login); c->slug gets the org. */
static int create_user(struct store *s, struct store_txn *t, struct login_ctx *c)
{
    struct json_object *user, *org, *member, *orgs;
    char base[WIZARD_SLUG_MAX + 1], key[320];
    int64_t now = util_now();
    int rc;

    slug_from_email(c->email, base, WIZARD_SLUG_MAX);
    if ((rc = claim_slug(s, t, base, c->slug, sizeof(c->slug))) != 0)
        return rc;
    org = json_object_new_object();
    json_object_object_add(org, "slug", json_object_new_string(c->slug));
    json_object_object_add(org, "display_name", json_object_new_string(c->name));
    json_object_object_add(org, "plan", json_object_new_string("free"));
    json_object_object_add(org, "created_at", json_object_new_int64(now));
    member = json_object_new_object();
    json_object_object_add(member, "role", json_object_new_string("owner"));
    json_object_object_add(member, "joined_at", json_object_new_int64(now));
    user = json_object_new_object();
    json_object_object_add(user, "email", json_object_new_string(c->email));
    json_object_object_add(user, "name", json_object_new_string(c->name));
    json_object_object_add(user, "created_at", json_object_new_int64(now));
    orgs = json_object_new_array();
    json_object_array_add(orgs, json_object_new_string(c->slug));
    json_object_object_add(user, "orgs", orgs);
    if ((rc = save_json(s, t, STORE_ORGS, c->slug, strlen(c->slug), org)) == 0 &&
        (rc = save_json(s, t, STORE_MEMBERS, key,
                        key_pair(key, sizeof(key), c->slug, c->email), member)) == 0)
        rc = save_json(s, t, STORE_USERS, c->email, strlen(c->email), user);
    json_object_put(user);
    json_object_put(org);
    json_object_put(member);
    return rc;
}

/* The user's first org into c->slug ("" if none). */
static int first_org_txn(struct store *s, struct store_txn *t, struct login_ctx *c)
{
    struct json_object *user, *orgs, *first;
    int rc;

    c->slug[0] = '\0';
    user = load_json(s, t, STORE_USERS, c->email, strlen(c->email), 0, &rc);
    if (user != NULL && json_object_object_get_ex(user, "orgs", &orgs) &&
        (first = json_object_array_get_idx(orgs, 0)) != NULL)
        util_strlcpy(c->slug, json_object_get_string(first), sizeof(c->slug));
    json_object_put(user);
    return rc;
}

/* Create the user on first login, then turn every pending invitation for
 * the e-mail into a membership (members.c), all in this transaction. */
static int login_txn(struct store *s, struct store_txn *t, void *arg)
{
    struct login_ctx *c = arg;
    char *val = NULL;
    int rc;

    c->accepted = 0;
    rc = store_get(s, t, STORE_USERS, c->email, strlen(c->email), STORE_RMW, &val, NULL);
    free(val);
    if (rc == AM_ENOENT)
        rc = create_user(s, t, c);
    if (rc != 0)
        return rc;
    if ((rc = members_accept_txn(s, t, c->email, &c->accepted)) != 0)
        return rc;
    return first_org_txn(s, t, c);
}

/* ---- memberships inside a transaction (members.c calls these) ------------- */

int account_txn_role(struct store *s, struct store_txn *t, const char *slug,
                     const char *email, int flags)
{
    char key[320];
    size_t klen = key_pair(key, sizeof(key), slug, email);
    struct json_object *m, *r;
    int rc, role = ROLE_NONE;

    if (klen == 0)
        return ROLE_NONE;
    m = load_json(s, t, STORE_MEMBERS, key, klen, flags, &rc);
    if (rc != 0 && rc != AM_ENOENT)
        return rc;
    if (m != NULL && json_object_object_get_ex(m, "role", &r))
        role = account_role_from_name(json_object_get_string(r));
    json_object_put(m);
    return role;
}

/* Add slug to (add != 0) or drop it from the user's "orgs" list. A missing
 * user is AM_ENOENT when adding, nothing to do when dropping. */
static int user_orgs_edit(struct store *s, struct store_txn *t, const char *email,
                          const char *slug, int add)
{
    struct json_object *user, *orgs, *kept;
    size_t i;
    int rc;

    user = load_json(s, t, STORE_USERS, email, strlen(email), STORE_RMW, &rc);
    if (rc != 0)
        return rc == AM_ENOENT && !add ? 0 : rc;
    if (!json_object_object_get_ex(user, "orgs", &orgs)) {
        orgs = json_object_new_array();
        json_object_object_add(user, "orgs", orgs);
    }
    kept = json_object_new_array();
    for (i = 0; i < json_object_array_length(orgs); i++) {
        struct json_object *o = json_object_array_get_idx(orgs, i);
        if (strcmp(json_object_get_string(o), slug) != 0)
            json_object_array_add(kept, json_object_get(o));
    }
    if (add)
        json_object_array_add(kept, json_object_new_string(slug));
    json_object_object_add(user, "orgs", kept);
    rc = save_json(s, t, STORE_USERS, email, strlen(email), user);
    json_object_put(user);
    return rc;
}

int account_txn_join(struct store *s, struct store_txn *t, const char *slug,
                     const char *email, int role, int64_t now)
{
    struct json_object *m;
    char key[320];
    size_t klen = key_pair(key, sizeof(key), slug, email);
    int rc;

    if (klen == 0 || role <= ROLE_NONE || role > ROLE_OWNER)
        return AM_EINTERNAL;
    if ((rc = user_orgs_edit(s, t, email, slug, 1)) != 0)
        return rc;
    m = json_object_new_object();
    json_object_object_add(m, "role", json_object_new_string(role_names[role]));
    json_object_object_add(m, "joined_at", json_object_new_int64(now));
    rc = save_json(s, t, STORE_MEMBERS, key, klen, m);
    json_object_put(m);
    return rc;
}

int account_txn_leave(struct store *s, struct store_txn *t, const char *slug,
                      const char *email)
{
    char key[320];
    size_t klen = key_pair(key, sizeof(key), slug, email);
    int rc;

    if (klen == 0)
        return AM_ENOENT;
    if ((rc = store_del(s, t, STORE_MEMBERS, key, klen)) != 0)
        return rc;
    return user_orgs_edit(s, t, email, slug, 0);
}

/* A plausible e-mail address: local@domain, printable, no spaces. */
static int email_valid(const char *e, size_t len)
{
    const char *at = memchr(e, '@', len);
    size_t i;

    if (len < 3 || len > 254 || at == NULL || at == e || at == e + len - 1 ||
        memchr(at + 1, '@', len - (size_t)(at + 1 - e)) != NULL)
        return 0;
    for (i = 0; i < len; i++)
        if ((unsigned char)e[i] <= ' ' || e[i] == 0x7f)
            return 0;
    return 1;
}

int account_email_normalize(const char *e, size_t len, char *out, size_t cap)
{
    size_t i;

    if (!email_valid(e, len) || len >= cap)
        return -1;
    for (i = 0; i < len; i++)
        out[i] = (char)tolower((unsigned char)e[i]);
    out[len] = '\0';
    return 0;
}

static int login_body(struct json_object *body, char *email, size_t cap,
                      const char **name, struct am_error *err)
{
    struct json_object *v;
    *name = NULL;
    error_set(err, AM_EVALIDATION, "Invalid login request");
    json_object_object_foreach(body, key, val) {
        (void)val;
        if (strcmp(key, "email") != 0 && strcmp(key, "name") != 0)
            error_add_detail(err, key, "unknown field");
    }
    if (!json_object_object_get_ex(body, "email", &v))
        error_add_detail(err, "email", "required");
    else if (!json_object_is_type(v, json_type_string))
        error_add_detail(err, "email", "must be a string");
    else if (account_email_normalize(json_object_get_string(v),
                                     (size_t)json_object_get_string_len(v), email, cap) != 0)
        error_add_detail(err, "email", "must be an e-mail address");
    if (json_object_object_get_ex(body, "name", &v)) {
        if (!json_object_is_type(v, json_type_string) || json_object_get_string_len(v) < 1 ||
            json_object_get_string_len(v) > 128)
            error_add_detail(err, "name", "must be a string of 1 to 128 bytes");
        else
            *name = json_object_get_string(v);
    }
    if (err->ndetails > 0)
        return AM_EVALIDATION;
    error_clear(err);
    return 0;
}

/* ---- token families ---------------------------------------------------------
 *
 * Every login starts a family: STORE_TOKENS "fam:<id>" -> {"sub","current",
 * "revoked"}. "current" is the jti of the one live refresh token; refresh
 * rotates it. Presenting any other refresh token of the family is a reuse
 * (a stolen token, or a replay), and revokes the whole family. Access
 * tokens carry the family id too, so logout ends them at once.
 */

struct family_ctx {
    const char *email;
    const char *fam;
    const char *presented;      /* refresh: the jti presented; NULL otherwise */
    const char *next;           /* the jti to make current; NULL = revoke */
    int reused;                 /* OUT: presented was not current: family revoked */
};

static size_t family_key(char *buf, size_t cap, const char *fam)
{
    snprintf(buf, cap, "fam:%s", fam);
    return strlen(buf);
}

static int family_txn(struct store *s, struct store_txn *t, void *arg)
{
    struct family_ctx *c = arg;
    struct json_object *f = NULL, *v;
    char key[64];
    size_t klen = family_key(key, sizeof(key), c->fam);
    int rc;

    c->reused = 0;
    if (c->presented != NULL) {
        f = load_json(s, t, STORE_TOKENS, key, klen, STORE_RMW, &rc);
        if (rc != 0)
            return rc == AM_ENOENT ? AM_EUNAUTH : rc;
        if (json_object_object_get_ex(f, "revoked", &v) && json_object_get_boolean(v)) {
            json_object_put(f);
            return AM_EUNAUTH;
        }
        json_object_object_get_ex(f, "current", &v);
        if (strcmp(json_object_get_string(v), c->presented) != 0) {
            c->reused = 1;
            c->next = NULL;       /* commit the revocation, then refuse */
        }
        json_object_put(f);
    }
    f = json_object_new_object();
    json_object_object_add(f, "sub", json_object_new_string(c->email));
    json_object_object_add(f, "current", json_object_new_string(c->next ? c->next : ""));
    json_object_object_add(f, "revoked", json_object_new_boolean(c->next == NULL));
    rc = save_json(s, t, STORE_TOKENS, key, klen, f);
    json_object_put(f);
    return rc;
}

int account_token_live(struct app *app, const char *fam)
{
    struct json_object *f, *v;
    char key[64];
    int rc, live = 0;

    if (fam[0] == '\0')
        return 0;
    f = load_json(app->store, NULL, STORE_TOKENS, key, family_key(key, sizeof(key), fam), 0, &rc);
    if (f != NULL)
        live = !(json_object_object_get_ex(f, "revoked", &v) && json_object_get_boolean(v));
    json_object_put(f);
    /* Families are revoked, never removed: on a replica a missing one is a
     * sign-in that has not arrived yet, and a storage error (a role change
     * locks readers out for a moment) is no proof of revocation either. */
    if (f == NULL && (rc != AM_ENOENT || cluster_is_replica(app)))
        return AM_EUNAVAILABLE;
    return live;
}

/* Sign a new access + refresh pair in family fam (a new family if NULL),
 * record it, and build the answer. */
static int issue_tokens(struct app *app, const char *email, const char *slug,
                        const char *fam, const char *presented,
                        struct json_object **out, struct am_error *err)
{
    struct auth_claims c;
    char access[AUTH_TOKEN_MAX], refresh[AUTH_TOKEN_MAX], famid[sizeof(c.fam)];
    struct family_ctx fc;
    int64_t now = util_now();
    int rc;

    *out = NULL;
    auth_claims_new(&c, email, AUTH_ACCESS, now, app->cfg->access_ttl, fam);
    if (auth_jwt_sign(app->cfg->jwt_secret, &c, access, sizeof(access)) != 0)
        return error_set(err, AM_EINTERNAL, "Could not sign token");
    memcpy(famid, c.fam, sizeof(famid));
    auth_claims_new(&c, email, AUTH_REFRESH, now, app->cfg->refresh_ttl, famid);
    if (auth_jwt_sign(app->cfg->jwt_secret, &c, refresh, sizeof(refresh)) != 0)
        return error_set(err, AM_EINTERNAL, "Could not sign token");
    fc = (struct family_ctx){ email, famid, presented, c.jti, 0 };
    if ((rc = store_transact(app->store, family_txn, &fc)) != 0)
        return rc == AM_EUNAUTH ? error_set(err, rc, "Refresh token is no longer valid")
                                : error_set(err, AM_EUNAVAILABLE, "Storage unavailable");
    if (fc.reused) {
        auth_state_bump(app->auth);
        return error_set(err, AM_EUNAUTH,
                         "Refresh token was already used; every token of this session is revoked");
    }
    *out = json_object_new_object();
    json_object_object_add(*out, "access_token", json_object_new_string(access));
    json_object_object_add(*out, "refresh_token", json_object_new_string(refresh));
    json_object_object_add(*out, "token_type", json_object_new_string("bearer"));
    json_object_object_add(*out, "expires_in", json_object_new_int(app->cfg->access_ttl));
    json_object_object_add(*out, "org_slug", json_object_new_string(slug));
    return 0;
}

int account_dev_login(struct app *app, struct json_object *body,
                      struct json_object **out, struct am_error *err)
{
    struct login_ctx c;
    char email[256];
    int rc;

    *out = NULL;
    memset(&c, 0, sizeof(c));
    if ((rc = login_body(body, email, sizeof(email), &c.name, err)) != 0)
        return rc;
    c.email = email;
    if (c.name == NULL)
        c.name = email;
    if ((rc = store_transact(app->store, login_txn, &c)) != 0)
        return error_set(err, rc == AM_EDEADLOCK ? AM_EUNAVAILABLE : rc, "Storage unavailable");
    if (c.accepted > 0)     /* a memo may hold "not a member" for these orgs */
        auth_state_bump(app->auth);
    return issue_tokens(app, email, c.slug, NULL, NULL, out, err);
}

static int first_org(struct app *app, const char *email, char *slug, size_t cap);

int account_refresh(struct app *app, struct json_object *body,
                    struct json_object **out, struct am_error *err)
{
    struct auth_claims claims;
    struct json_object *v;
    char slug[WIZARD_SLUG_MAX + 1];
    int n = 0;

    *out = NULL;
    json_object_object_foreach(body, key, val) {
        (void)val;
        n++;
        if (strcmp(key, "refresh_token") != 0) {
            error_set(err, AM_EVALIDATION, "Invalid refresh request");
            error_add_detail(err, key, "unknown field");
            return AM_EVALIDATION;
        }
    }
    if (n == 0 || !json_object_object_get_ex(body, "refresh_token", &v) ||
        !json_object_is_type(v, json_type_string)) {
        error_set(err, AM_EVALIDATION, "Invalid refresh request");
        error_add_detail(err, "refresh_token", n ? "must be a string" : "required");
        return AM_EVALIDATION;
    }
    if (auth_jwt_verify(app->cfg->jwt_secret, json_object_get_string(v), util_now(),
                        &claims, err) != 0)
        return AM_EUNAUTH;
    if (claims.typ != AUTH_REFRESH)
        return error_set(err, AM_EUNAUTH, "Not a refresh token");
    if (first_org(app, claims.sub, slug, sizeof(slug)) != 0)
        return error_set(err, AM_EUNAUTH, "Unknown user");
    return issue_tokens(app, claims.sub, slug, claims.fam, claims.jti, out, err);
}

int account_logout(struct app *app, const char *email, const char *fam,
                   struct am_error *err)
{
    struct family_ctx fc = { email, fam, NULL, NULL, 0 };

    if (store_transact(app->store, family_txn, &fc) != 0)
        return error_set(err, AM_EUNAVAILABLE, "Storage unavailable");
    auth_state_bump(app->auth);
    return 0;
}

/* ---- per-thread memo of verified tokens ---------------------------------------
 *
 * Verifying a token costs an HMAC, a JSON parse and a database read (is
 * the family revoked?), and the membership check another read. Clients
 * reuse one token for many requests, so each thread keeps the last few it
 * verified. An entry is trusted only while its token has not expired and
 * the auth epoch (auth_state.c) is the one it was filled at: every revocation
 * and membership change bumps that epoch in shared memory, so no process
 * serves a stale answer.
 */
#define MEMO_SLOTS 4

struct auth_memo {
    char token[AUTH_TOKEN_MAX];  /* the exact token string; "" = empty slot */
    uint64_t epoch;              /* auth_state_epoch when filled */
    int64_t exp;                 /* the token's expiry, epoch seconds */
    char email[256];
    char fam[48];
    char org[WIZARD_SLUG_MAX + 1];  /* last org looked up with this token, "" = none */
    int role;                    /* its enum account_role */
};

static __thread struct auth_memo memo[MEMO_SLOTS];
static __thread unsigned memo_next;

int account_authenticate(struct app *app, const char *token,
                         struct account_principal *who, struct am_error *err)
{
    uint64_t epoch = auth_state_epoch(app->auth);
    int64_t now = util_now();
    struct auth_claims claims;
    struct auth_memo *m;
    int i, rc;

    for (i = 0; i < MEMO_SLOTS; i++) {
        m = &memo[i];
        if (m->epoch == epoch && m->exp > now && strcmp(m->token, token) == 0) {
            util_strlcpy(who->email, m->email, sizeof(who->email));
            util_strlcpy(who->fam, m->fam, sizeof(who->fam));
            who->memo = i;
            return 0;
        }
    }
    who->memo = -1;
    if (auth_jwt_verify(app->cfg->jwt_secret, token, now, &claims, err) != 0)
        return AM_EUNAUTH;
    if (claims.typ != AUTH_ACCESS)
        return error_set(err, AM_EUNAUTH, "A refresh token cannot be used as an access token");
    if ((rc = account_token_live(app, claims.fam)) < 0)
        return error_set(err, AM_EUNAVAILABLE, "This host cannot check the token now; retry");
    if (rc == 0)
        return error_set(err, AM_EUNAUTH, "Token has been revoked");
    util_strlcpy(who->email, claims.sub, sizeof(who->email));
    util_strlcpy(who->fam, claims.fam, sizeof(who->fam));
    if (strlen(token) < sizeof(m->token)) {
        i = (int)(memo_next++ % MEMO_SLOTS);
        m = &memo[i];
        util_strlcpy(m->token, token, sizeof(m->token));
        m->epoch = epoch;
        m->exp = claims.exp;
        util_strlcpy(m->email, claims.sub, sizeof(m->email));
        util_strlcpy(m->fam, claims.fam, sizeof(m->fam));
        m->org[0] = '\0';
        who->memo = i;
    }
    return 0;
}

int account_member_role(struct app *app, struct account_principal *who, const char *org)
{
    struct auth_memo *m = who->memo >= 0 ? &memo[who->memo] : NULL;
    int role;

    if (m != NULL && strcmp(m->org, org) == 0)
        return m->role;
    role = account_role(app, org, who->email);
    if (m != NULL && util_strlcpy(m->org, org, sizeof(m->org)) < sizeof(m->org))
        m->role = role;
    else if (m != NULL)
        m->org[0] = '\0';
    return role;
}

/* ---- organisations --------------------------------------------------------- */

struct json_object *account_org_view(struct app *app, const char *slug, const char *email)
{
    struct json_object *org, *o, *limits, *v;
    char when[32];
    int rc, role;

    org = load_json(app->store, NULL, STORE_ORGS, slug, strlen(slug), 0, &rc);
    if (org == NULL)
        return NULL;
    role = account_role(app, slug, email);
    o = json_object_new_object();
    json_object_object_add(o, "slug", json_object_new_string(slug));
    json_object_object_get_ex(org, "display_name", &v);
    json_object_object_add(o, "display_name", json_object_get(v));
    json_object_object_get_ex(org, "plan", &v);
    json_object_object_add(o, "plan", json_object_get(v));
    json_object_object_add(o, "role", json_object_new_string(role_names[role]));
    limits = json_object_new_object();
    json_object_object_add(limits, "max_agents", json_object_new_int(app->cfg->max_agents));
    json_object_object_add(limits, "requests_per_day",
                           json_object_new_int(app->cfg->requests_per_day));
    json_object_object_add(limits, "max_members", json_object_new_int(app->cfg->max_members));
    json_object_object_add(limits, "max_streams", json_object_new_int(app->cfg->max_streams));
    json_object_object_add(o, "limits", limits);
    json_object_object_get_ex(org, "created_at", &v);
    util_rfc3339(json_object_get_int64(v), when, sizeof(when));
    json_object_object_add(o, "created_at", json_object_new_string(when));
    json_object_put(org);
    return o;
}

/* The user's org slugs (owned array), or NULL with *rc set. */
static struct json_object *user_orgs(struct app *app, const char *email, int *rc)
{
    struct json_object *user, *orgs = NULL;

    user = load_json(app->store, NULL, STORE_USERS, email, strlen(email), 0, rc);
    if (user != NULL && json_object_object_get_ex(user, "orgs", &orgs))
        json_object_get(orgs);
    json_object_put(user);
    return orgs;
}

int account_org_list(struct app *app, const char *email, struct json_object **out,
                     struct am_error *err)
{
    struct json_object *orgs, *arr;
    size_t i;
    int rc;

    *out = NULL;
    if ((orgs = user_orgs(app, email, &rc)) == NULL)
        return rc == AM_ENOENT ? error_set(err, AM_EUNAUTH, "Unknown user")
                               : error_set(err, AM_EIO, "Storage unavailable");
    arr = json_object_new_array();
    for (i = 0; i < json_object_array_length(orgs); i++) {
        struct json_object *o = account_org_view(app, json_object_get_string(
                                                  json_object_array_get_idx(orgs, i)), email);
        if (o != NULL)
            json_object_array_add(arr, o);
    }
    json_object_put(orgs);
    *out = json_object_new_object();
    json_object_object_add(*out, "orgs", arr);
    return 0;
}

static int first_org(struct app *app, const char *email, char *slug, size_t cap)
{
    struct json_object *orgs, *first;
    int rc;

    if ((orgs = user_orgs(app, email, &rc)) == NULL)
        return rc;
    first = json_object_array_get_idx(orgs, 0);
    rc = first != NULL ? 0 : AM_ENOENT;
    if (first != NULL)
        util_strlcpy(slug, json_object_get_string(first), cap);
    json_object_put(orgs);
    return rc;
}

int account_org_me(struct app *app, const char *email, struct json_object **out,
                   struct am_error *err)
{
    struct json_object *list, *orgs, *first;
    int rc;

    *out = NULL;
    if ((rc = account_org_list(app, email, &list, err)) != 0)
        return rc;
    json_object_object_get_ex(list, "orgs", &orgs);
    first = json_object_array_get_idx(orgs, 0);
    if (first == NULL) {
        json_object_put(list);
        return error_set(err, AM_ENOTFOUND, "You belong to no organization");
    }
    *out = json_object_get(first);
    json_object_put(list);
    return 0;
}
