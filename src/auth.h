/* auth.h - who may call what: API keys for systems, sessions for people.
 *
 * API keys ("sb_<id>_<secret>") live in config as [apikey ID] with a keyed
 * hash and scopes; checking one needs no Redis round trip. People are
 * [user NAME] sections with a role and an argon2id password; logging in
 * (hashing on the worker pool) creates a session whose token is returned
 * once and stored in Redis only as its SHA-256, with an idle expiry (Redis
 * TTL, renewed on use) and an absolute one. Failed logins are counted in
 * Redis per account and per client address; past the limit the answer is
 * 429 with Retry-After until the window passes.
 *
 * Every route declares its access rule; the default is deny.
 */
#ifndef SB_AUTH_H
#define SB_AUTH_H

#include "config.h"
#include "http.h"
#include "redis.h"

enum {
    SB_PRINCIPAL_NONE = 0,
    SB_PRINCIPAL_APIKEY,
    SB_PRINCIPAL_USER,
};

enum { SB_ROLE_AGENT = 1, SB_ROLE_OPERATOR = 2, SB_ROLE_ADMIN = 3 };

/* API key scopes. */
#define SB_SCOPE_CONTACTS 0x01u
#define SB_SCOPE_CUSTOMERS 0x02u
#define SB_SCOPE_NOTIFY 0x04u
#define SB_SCOPE_ADMIN 0x80u /* implies every scope */

/* Route access rules: scopes an API key may hold (any one suffices) and
 * roles a user may hold, OR'ed together. */
#define SB_ACCESS_PUBLIC 0x10000u   /* no credentials needed */
#define SB_ACCESS_ANY 0x20000u      /* any valid principal */
#define SB_ACCESS_AGENT 0x00100u    /* role agent or above */
#define SB_ACCESS_OPERATOR 0x00200u /* role operator or above */
#define SB_ACCESS_ADMIN 0x00400u    /* role admin */

struct sb_auth_conf {
    long long session_idle;
    long long session_max;
    long long login_fail_max;
    long long login_fail_window;
    long long login_ip_fail_max;
};

struct sb_apikey_conf {
    char *hash;
    char **scopes;
};

struct sb_user_conf {
    char *role;
    char *password;
    char *display_name;
};

extern const struct sb_conf_section sb_auth_conf_section;   /* [auth] */
extern const struct sb_conf_section sb_apikey_conf_section; /* [apikey] */
extern const struct sb_conf_section sb_user_conf_section;   /* [user] */

/* Bind to the Redis connection and the current config (borrowed; call
 * again after a reload). */
void sb_auth_init(struct sb_redis *r, const char *prefix);
void sb_auth_config(const struct sb_config *conf);

/* Resolve the request's Authorization into req->who, check route access,
 * then call next(req) — or answer 401/403/503 itself. */
void sb_auth_check(struct sb_http_req *req, sb_http_handler *next);

/* Handlers for /api/v1/login, /logout, /me. */
void sb_auth_login(struct sb_http_req *req);
void sb_auth_logout(struct sb_http_req *req);
void sb_auth_me(struct sb_http_req *req);

const char *sb_role_name(int role);

/* Check a session token outside HTTP (the console's first message).
 * Returns 0 when accepted: cb fires once with status 0 (valid: user and
 * role, borrowed for the call), 1 (invalid or expired) or -1 (Redis
 * unavailable). Returns 1 for a malformed token and -1 when refused; no
 * callback then. The session's idle expiry is renewed as for HTTP. */
typedef void sb_auth_token_cb(int status, const char *user, int role,
                              void *arg);
int sb_auth_token(const char *token, sb_auth_token_cb *cb, void *arg);

/* A user's display name from config (borrowed until the next reload), or
 * the name itself. */
const char *sb_auth_display_name(const char *user);

#endif
