/* auth.c - API keys, accounts, sessions and per-route access checks.
 *
 * The flow for a request: parse "Authorization: Bearer X". X starting with
 * "sb_" is an API key, checked against config in memory (keyed hash,
 * constant-time compare). Anything else is a session token: its SHA-256 names
 * a Redis hash that auth_session.lua reads and renews atomically. The user's
 * role always comes from the current config, so removing a [user] section or
 * changing its role takes effect on the next request after SIGHUP.
 *
 * Login verifies argon2id on the worker pool (memory-hard: never on the
 * loop), after auth_login.lua says neither the account nor the client address
 * is locked out; unknown users are verified against a dummy hash so timing
 * does not reveal which names exist.
 */
#include "auth.h"

#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "worker.h"

#define AUTH_PLACE "core.auth"

static const char *const scope_names[] = {"contacts", "customers", "notify",
                                          "admin", NULL};
static const unsigned scope_bits[] = {SB_SCOPE_CONTACTS, SB_SCOPE_CUSTOMERS,
                                      SB_SCOPE_NOTIFY, SB_SCOPE_ADMIN};
static const char *const role_names[] = {"agent", "operator", "admin", NULL};

static const struct sb_conf_key auth_keys[] = {
    {"session_idle", SB_CONF_DURATION,
     offsetof(struct sb_auth_conf, session_idle), "30m", 60000, 86400000LL * 7,
     NULL, SB_CONF_RELOAD, "a session unused this long expires"},
    {"session_max", SB_CONF_DURATION,
     offsetof(struct sb_auth_conf, session_max), "12h", 60000,
     86400000LL * 30, NULL, SB_CONF_RELOAD,
     "a session expires this long after login, used or not"},
    {"login_fail_max", SB_CONF_INT,
     offsetof(struct sb_auth_conf, login_fail_max), "5", 1, 1000, NULL,
     SB_CONF_RELOAD, "failed logins per account within the window before 429"},
    {"login_fail_window", SB_CONF_DURATION,
     offsetof(struct sb_auth_conf, login_fail_window), "15m", 1000,
     86400000LL, NULL, SB_CONF_RELOAD,
     "how long failed logins are remembered (and the lockout lasts)"},
    {"login_ip_fail_max", SB_CONF_INT,
     offsetof(struct sb_auth_conf, login_ip_fail_max), "20", 1, 100000, NULL,
     SB_CONF_RELOAD, "failed logins per client address within the window"},
    {NULL, 0, 0, NULL, 0, 0, NULL, 0, NULL},
};

const struct sb_conf_section sb_auth_conf_section = {
    "auth", 0, sizeof(struct sb_auth_conf), auth_keys,
    "Sessions of people (agents, operators, admins) and login limits.", NULL,
};

static int scope_parse(const char *s, unsigned *bit)
{
    for (int i = 0; scope_names[i]; i++)
        if (strcmp(s, scope_names[i]) == 0) {
            *bit = scope_bits[i];
            return 0;
        }
    return -1;
}

static int apikey_check(void *c, char *err, size_t errlen)
{
    struct sb_apikey_conf *k = c;

    if (strlen(k->hash) != SB_HASH_HEX_LEN ||
        strspn(k->hash, "0123456789abcdef") != SB_HASH_HEX_LEN) {
        snprintf(err, errlen, "hash must be 64 lowercase hex digits "
                              "(from switchboard --new-apikey)");
        return -1;
    }
    for (char **s = k->scopes; s && *s; s++) {
        unsigned b;
        if (scope_parse(*s, &b) < 0) {
            snprintf(err, errlen,
                     "unknown scope \"%s\" (contacts, customers, notify, "
                     "admin)", *s);
            return -1;
        }
    }
    return 0;
}

static const struct sb_conf_key apikey_keys[] = {
    {"hash", SB_CONF_STR, offsetof(struct sb_apikey_conf, hash), NULL, 0, 64,
     NULL, SB_CONF_REQUIRED | SB_CONF_SECRET | SB_CONF_RELOAD,
     "keyed hash of the key, printed by switchboard --new-apikey ID"},
    {"scopes", SB_CONF_LIST, offsetof(struct sb_apikey_conf, scopes), "", 0,
     32, NULL, SB_CONF_RELOAD,
     "what the key may do: contacts, customers, notify, admin"},
    {NULL, 0, 0, NULL, 0, 0, NULL, 0, NULL},
};

const struct sb_conf_section sb_apikey_conf_section = {
    "apikey", 1, sizeof(struct sb_apikey_conf), apikey_keys,
    "API keys for systems: [apikey ID]; the client sends\n"
    "\"Authorization: Bearer sb_ID_SECRET\".",
    apikey_check,
};

static int user_check(void *c, char *err, size_t errlen)
{
    struct sb_user_conf *u = c;
    int ok = 0;

    for (int i = 0; role_names[i]; i++)
        if (strcmp(u->role, role_names[i]) == 0)
            ok = 1;
    if (!ok) {
        snprintf(err, errlen, "role must be agent, operator or admin");
        return -1;
    }
    if (strncmp(u->password, "$argon2id$", 10) != 0) {
        snprintf(err, errlen, "password must be an $argon2id$ hash "
                              "(from switchboard --hash-password)");
        return -1;
    }
    return 0;
}

static const struct sb_conf_key user_keys[] = {
    {"role", SB_CONF_STR, offsetof(struct sb_user_conf, role), "agent", 0, 16,
     NULL, SB_CONF_RELOAD, "agent, operator or admin"},
    {"password", SB_CONF_STR, offsetof(struct sb_user_conf, password), NULL, 0,
     SB_PWHASH_LEN, NULL, SB_CONF_REQUIRED | SB_CONF_SECRET | SB_CONF_RELOAD,
     "argon2id hash printed by switchboard --hash-password"},
    {"display_name", SB_CONF_STR,
     offsetof(struct sb_user_conf, display_name), "", 0, 128, NULL,
     SB_CONF_RELOAD, "name shown to customers and colleagues"},
    {NULL, 0, 0, NULL, 0, 0, NULL, 0, NULL},
};

const struct sb_conf_section sb_user_conf_section = {
    "user", 1, sizeof(struct sb_user_conf), user_keys,
    "People: [user NAME] logs in as NAME.", user_check,
};

static struct {
    struct sb_redis *redis;
    char prefix[40];
    const struct sb_config *conf;
    struct sb_metric *m_denied, *m_logins;
} A;

void sb_auth_init(struct sb_redis *r, const char *prefix)
{
    A.redis = r;
    snprintf(A.prefix, sizeof(A.prefix), "%s", prefix);
    if (!A.m_denied) {
        A.m_denied = sb_metric_counter("sb_auth_denied_total",
                                       "Requests refused by authentication",
                                       "status");
        A.m_logins = sb_metric_counter("sb_auth_logins_total",
                                       "Login attempts", "result");
    }
}

void sb_auth_config(const struct sb_config *conf)
{
    A.conf = conf;
}

const char *sb_role_name(int role)
{
    if (role >= SB_ROLE_AGENT && role <= SB_ROLE_ADMIN)
        return role_names[role - 1];
    return "none";
}

static const struct sb_user_conf *user_find(const char *name, int *role)
{
    size_t n = sb_config_count(A.conf, "user");

    for (size_t i = 0; i < n; i++) {
        const char *un;
        const struct sb_user_conf *u = sb_config_nth(A.conf, "user", i, &un);
        if (strcmp(un, name) == 0) {
            for (int r = 0; role_names[r]; r++)
                if (strcmp(u->role, role_names[r]) == 0)
                    *role = r + 1;
            return u;
        }
    }
    return NULL;
}

const char *sb_auth_display_name(const char *user)
{
    int role = 0;
    const struct sb_user_conf *u = user_find(user, &role);

    return u && u->display_name && *u->display_name ? u->display_name : user;
}

static int apikey_lookup(const char *key, struct sb_principal *who)
{
    char id[40], hash[SB_HASH_HEX_LEN + 1];
    size_t n = sb_config_count(A.conf, "apikey");

    if (sb_apikey_parse(key, id, sizeof(id)) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        const char *kn;
        const struct sb_apikey_conf *k =
            sb_config_nth(A.conf, "apikey", i, &kn);
        if (strcmp(kn, id) != 0)
            continue;
        sb_apikey_hash(key, hash);
        if (!sb_secret_eq(hash, k->hash))
            return -1;
        who->kind = SB_PRINCIPAL_APIKEY;
        snprintf(who->name, sizeof(who->name), "%s", id);
        who->scopes = 0;
        for (char **s = k->scopes; s && *s; s++) {
            unsigned b;
            if (scope_parse(*s, &b) == 0)
                who->scopes |= b;
        }
        return 0;
    }
    return -1;
}

static int allowed(const struct sb_principal *who, unsigned access)
{
    if (access & SB_ACCESS_ANY)
        return 1;
    if (who->kind == SB_PRINCIPAL_APIKEY) {
        if (who->scopes & SB_SCOPE_ADMIN)
            return (access & 0xffu) != 0;
        return (access & who->scopes & 0xffu) != 0;
    }
    if (who->kind == SB_PRINCIPAL_USER) {
        if ((access & SB_ACCESS_AGENT) && who->role >= SB_ROLE_AGENT)
            return 1;
        if ((access & SB_ACCESS_OPERATOR) && who->role >= SB_ROLE_OPERATOR)
            return 1;
        if ((access & SB_ACCESS_ADMIN) && who->role >= SB_ROLE_ADMIN)
            return 1;
    }
    return 0;
}

static void deny(struct sb_http_req *req, int status, const char *msg)
{
    char st[8];

    snprintf(st, sizeof(st), "%d", status);
    sb_metric_add(A.m_denied, 1, st);
    if (status == 401)
        sb_http_add_header(req, "WWW-Authenticate", "Bearer");
    sb_http_respond_error(req, status, msg, NULL);
}

static void unavailable(struct sb_http_req *req)
{
    sb_http_add_header(req, "Retry-After", "1");
    sb_http_respond_error(req, 503, "redis unavailable", NULL);
}

static const char *bearer(const struct sb_http_req *req)
{
    const char *a = req->authorization;

    if (!a || strncasecmp(a, "Bearer ", 7) != 0)
        return NULL;
    a += 7;
    while (*a == ' ')
        a++;
    return *a ? a : NULL;
}

static void session_key(const char *hash, char *out, size_t outlen)
{
    snprintf(out, outlen, "%ssession:%s", A.prefix, hash);
}

struct auth_ctx {
    struct sb_http_req *req;
    sb_http_handler *next;
};

static void on_session(redisReply *reply, const char *err, void *arg)
{
    struct auth_ctx *c = arg;
    struct sb_http_req *req = c->req;
    sb_http_handler *next = c->next;
    int role = 0;

    free(c);
    if (!reply || reply->type == REDIS_REPLY_ERROR) {
        if (reply)
            SB_ERR(AUTH_PLACE, "session lookup failed err=%s", err);
        unavailable(req);
        return;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[0]->type != REDIS_REPLY_STRING) {
        deny(req, 401, "session expired or invalid");
        return;
    }
    if (!user_find(reply->element[0]->str, &role) || role == 0) {
        deny(req, 401, "session expired or invalid");
        return;
    }
    req->who.kind = SB_PRINCIPAL_USER;
    req->who.role = role;
    snprintf(req->who.name, sizeof(req->who.name), "%s",
             reply->element[0]->str);
    if (!allowed(&req->who, req->route ? req->route->access : 0)) {
        deny(req, 403, "not allowed for this role");
        return;
    }
    next(req);
}

/* ---- session tokens outside HTTP (the console's WebSocket) ---------- */

struct token_ctx {
    sb_auth_token_cb *cb;
    void *arg;
};

static void on_token(redisReply *reply, const char *err, void *arg)
{
    struct token_ctx *t = arg;
    int role = 0;

    if (!reply || reply->type == REDIS_REPLY_ERROR)
        t->cb(-1, NULL, 0, t->arg);
    else if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
             reply->element[0]->type != REDIS_REPLY_STRING ||
             !user_find(reply->element[0]->str, &role) || role == 0)
        t->cb(1, NULL, 0, t->arg);
    else
        t->cb(0, reply->element[0]->str, role, t->arg);
    free(t);
}

int sb_auth_token(const char *token, sb_auth_token_cb *cb, void *arg)
{
    const struct sb_auth_conf *ac = sb_config_get(A.conf, "auth");
    char hash[SB_HASH_HEX_LEN + 1], key[128], now[24], idle[24];
    const char *argv[3];
    struct token_ctx *t;

    if (!token || strlen(token) != SB_TOKEN_LEN)
        return 1;
    sb_sha256_hex(token, strlen(token), hash);
    session_key(hash, key, sizeof(key));
    snprintf(now, sizeof(now), "%lld", (long long)sb_now_ms());
    snprintf(idle, sizeof(idle), "%lld", ac->session_idle);
    argv[0] = key;
    argv[1] = now;
    argv[2] = idle;
    t = sb_malloc(sizeof(*t));
    t->cb = cb;
    t->arg = arg;
    if (sb_redis_script(A.redis, "auth_session", on_token, t, 1, 3, argv,
                        NULL) < 0) {
        free(t);
        return -1;
    }
    return 0;
}

void sb_auth_check(struct sb_http_req *req, sb_http_handler *next)
{
    const char *tok = bearer(req);
    const struct sb_auth_conf *ac = sb_config_get(A.conf, "auth");
    unsigned access = req->route ? req->route->access : 0;

    if (!tok) {
        deny(req, 401, "missing bearer token");
        return;
    }
    /* A session token is exactly SB_TOKEN_LEN characters of base64url and
     * may itself begin with "sb_"; an API key is always longer. */
    if (strlen(tok) != SB_TOKEN_LEN && strncmp(tok, "sb_", 3) == 0) {
        if (apikey_lookup(tok, &req->who) < 0) {
            deny(req, 401, "invalid API key");
            return;
        }
        if (!allowed(&req->who, access)) {
            deny(req, 403, "API key lacks the scope for this route");
            return;
        }
        next(req);
        return;
    }
    if (strlen(tok) != SB_TOKEN_LEN) {
        deny(req, 401, "invalid token");
        return;
    }
    {
        char key[128], now[24], idle[24];
        const char *argv[3];
        struct auth_ctx *c = sb_malloc(sizeof(*c));

        sb_sha256_hex(tok, strlen(tok), req->who.session);
        session_key(req->who.session, key, sizeof(key));
        snprintf(now, sizeof(now), "%lld", (long long)sb_now_ms());
        snprintf(idle, sizeof(idle), "%lld", ac->session_idle);
        argv[0] = key;
        argv[1] = now;
        argv[2] = idle;
        c->req = req;
        c->next = next;
        if (sb_redis_script(A.redis, "auth_session", on_session, c, 1, 3, argv,
                            NULL) < 0) {
            free(c);
            unavailable(req);
        }
    }
}

/* ---- login --------------------------------------------------------------- */

struct login {
    struct sb_http_req *req;
    char user[65];
    char *password;
    char *hash;       /* the user's argon2id string, or NULL: unknown user */
    int role;
    int ok;           /* worker result */
    char ukey[128], ipkey[128];
    char token[SB_TOKEN_LEN + 1]; /* the new session's, once verified */
};

static void login_free(struct login *l)
{
    if (l->password) {
        sodium_memzero(l->password, strlen(l->password));
        free(l->password);
    }
    sodium_memzero(l->token, sizeof(l->token));
    free(l->hash);
    free(l);
}

static int login_script(struct login *l, const char *mode,
                        sb_redis_cb *cb, int extra, const char **xargv)
{
    const struct sb_auth_conf *ac = sb_config_get(A.conf, "auth");
    char window[24], skey[128];
    const char *argv[10];
    int argc = 0;

    snprintf(window, sizeof(window), "%lld", ac->login_fail_window);
    argv[argc++] = l->ukey;
    argv[argc++] = l->ipkey;
    if (extra) {
        session_key(xargv[0], skey, sizeof(skey));
        argv[argc++] = skey;
    } else {
        argv[argc++] = l->ukey; /* unused third key keeps the shape */
    }
    argv[argc++] = mode;
    argv[argc++] = window;
    for (int i = 1; i < extra; i++)
        argv[argc++] = xargv[i];
    return sb_redis_script(A.redis, "auth_login", cb, l, 3, argc, argv, NULL);
}

static void on_login_fail_recorded(redisReply *reply, const char *err,
                                   void *arg)
{
    struct login *l = arg;

    if (!reply)
        SB_WARN(AUTH_PLACE, "failed login not recorded err=%s", err);
    sb_metric_add(A.m_logins, 1, "failed");
    deny(l->req, 401, "invalid credentials");
    login_free(l);
}

static void on_login_ok_recorded(redisReply *reply, const char *err,
                                 void *arg)
{
    struct login *l = arg;
    json_t *j;

    if (!reply || reply->type == REDIS_REPLY_ERROR) {
        unavailable(l->req);
        login_free(l);
        return;
    }
    j = json_object();
    json_object_set_new(j, "token", json_string(l->token));
    json_object_set_new(j, "user", json_string(l->user));
    json_object_set_new(j, "role", json_string(sb_role_name(l->role)));
    {
        const struct sb_auth_conf *ac = sb_config_get(A.conf, "auth");
        json_object_set_new(j, "expires_at",
                            json_integer(sb_now_ms() + ac->session_max));
    }
    sb_metric_add(A.m_logins, 1, "ok");
    SB_INFO(AUTH_PLACE, "login user=%s role=%s", l->user,
            sb_role_name(l->role));
    sb_http_respond_json(l->req, 200, j);
    json_decref(j);
    login_free(l);
}

static pthread_once_t dummy_once = PTHREAD_ONCE_INIT;
static char dummy_hash[SB_PWHASH_LEN];

static void make_dummy(void)
{
    if (sb_password_hash("switchboard-dummy-password", dummy_hash,
                         sizeof(dummy_hash)) < 0)
        dummy_hash[0] = '\0';
}

static void login_work(void *arg)
{
    struct login *l = arg;

    if (l->hash) {
        l->ok = sb_password_verify(l->hash, l->password);
    } else {
        /* Spend the same time on unknown names. */
        pthread_once(&dummy_once, make_dummy);
        (void)sb_password_verify(dummy_hash, l->password);
        l->ok = 0;
    }
}

static void login_after(void *arg, int cancelled)
{
    struct login *l = arg;

    if (cancelled) {
        unavailable(l->req);
        login_free(l);
        return;
    }
    if (!l->ok) {
        if (login_script(l, "fail", on_login_fail_recorded, 0, NULL) < 0) {
            deny(l->req, 401, "invalid credentials");
            login_free(l);
        }
        return;
    }
    {
        const struct sb_auth_conf *ac = sb_config_get(A.conf, "auth");
        char hash[SB_HASH_HEX_LEN + 1];
        char now[24], abs[24], idle[24];
        const char *x[5];
        int64_t t = sb_now_ms();

        sb_token_new(l->token);
        sb_sha256_hex(l->token, strlen(l->token), hash);
        snprintf(now, sizeof(now), "%lld", (long long)t);
        snprintf(abs, sizeof(abs), "%lld", (long long)(t + ac->session_max));
        snprintf(idle, sizeof(idle), "%lld", ac->session_idle);
        x[0] = hash;
        x[1] = l->user;
        x[2] = now;
        x[3] = abs;
        x[4] = idle;
        if (login_script(l, "ok", on_login_ok_recorded, 5, x) < 0) {
            unavailable(l->req);
            login_free(l);
        }
    }
}

static void on_login_checked(redisReply *reply, const char *err, void *arg)
{
    struct login *l = arg;
    const struct sb_auth_conf *ac = sb_config_get(A.conf, "auth");
    long long uf, ut, ipf, ipt;

    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 4) {
        if (reply)
            SB_ERR(AUTH_PLACE, "login check failed err=%s", err ? err : "-");
        unavailable(l->req);
        login_free(l);
        return;
    }
    uf = reply->element[0]->integer;
    ut = reply->element[1]->integer;
    ipf = reply->element[2]->integer;
    ipt = reply->element[3]->integer;
    if (uf >= ac->login_fail_max || ipf >= ac->login_ip_fail_max) {
        long long ms = uf >= ac->login_fail_max ? ut : ipt;
        char ra[24];
        snprintf(ra, sizeof(ra), "%lld", ms > 0 ? (ms + 999) / 1000 : 1);
        sb_http_add_header(l->req, "Retry-After", ra);
        sb_metric_add(A.m_logins, 1, "locked");
        SB_NOTICE(AUTH_PLACE, "login locked out user=%s", l->user);
        sb_http_respond_error(l->req, 429, "too many failed logins", NULL);
        login_free(l);
        return;
    }
    if (sb_worker_submit(login_work, login_after, l) < 0) {
        sb_http_add_header(l->req, "Retry-After", "1");
        sb_http_respond_error(l->req, 503, "too many logins in progress",
                              NULL);
        login_free(l);
    }
}

void sb_auth_login(struct sb_http_req *req)
{
    static const char *const fields[] = {"username", "password", NULL};
    struct sb_json_err e = {{0}, {0}};
    const char *user = NULL, *pw = NULL;
    struct login *l;
    const struct sb_user_conf *u;
    char uhash[SB_HASH_HEX_LEN + 1], safe_ip[64];
    json_t *j = sb_json_parse_body(req->body.data, req->body.len, &e);

    if (!j || sb_json_only(j, fields, &e) < 0 ||
        sb_json_get_str(j, "username", 1, 64, 0, &user, &e) < 0 ||
        sb_json_get_str(j, "password", 1, SB_PASSWORD_MAX, 1, &pw, &e) < 0) {
        sb_http_respond_error(req, 400, e.error, e.field[0] ? e.field : NULL);
        json_decref(j);
        return;
    }
    l = sb_calloc(1, sizeof(*l));
    l->req = req;
    snprintf(l->user, sizeof(l->user), "%s", user);
    l->password = sb_strdup(pw);
    u = user_find(user, &l->role);
    l->hash = u ? sb_strdup(u->password) : NULL;
    json_decref(j);
    /* Outside strings never become key names as they are. */
    sb_sha256_hex(l->user, strlen(l->user), uhash);
    uhash[32] = '\0';
    snprintf(l->ukey, sizeof(l->ukey), "%sloginfail:u:%s", A.prefix, uhash);
    sb_log_safe(req->peer, safe_ip, sizeof(safe_ip));
    snprintf(l->ipkey, sizeof(l->ipkey), "%sloginfail:ip:%s", A.prefix,
             safe_ip);
    if (login_script(l, "check", on_login_checked, 0, NULL) < 0) {
        unavailable(req);
        login_free(l);
    }
}

static void on_logout(redisReply *reply, const char *err, void *arg)
{
    struct sb_http_req *req = arg;

    if (!reply || reply->type == REDIS_REPLY_ERROR) {
        unavailable(req);
        return;
    }
    sb_http_respond(req, 204, NULL, "", 0);
}

void sb_auth_logout(struct sb_http_req *req)
{
    char key[128];
    const char *argv[2];

    if (req->who.kind != SB_PRINCIPAL_USER) {
        sb_http_respond_error(req, 400, "only sessions can log out", NULL);
        return;
    }
    session_key(req->who.session, key, sizeof(key));
    argv[0] = "DEL";
    argv[1] = key;
    if (sb_redis_cmdv(A.redis, on_logout, req, 2, argv, NULL) < 0)
        unavailable(req);
}

void sb_auth_me(struct sb_http_req *req)
{
    json_t *j = json_object();

    json_object_set_new(j, "user", json_string(req->who.name));
    if (req->who.kind == SB_PRINCIPAL_USER) {
        int role = 0;
        const struct sb_user_conf *u = user_find(req->who.name, &role);
        json_object_set_new(j, "kind", json_string("user"));
        json_object_set_new(j, "role", json_string(sb_role_name(role)));
        json_object_set_new(j, "display_name",
                            json_string(u && u->display_name
                                            ? u->display_name
                                            : req->who.name));
    } else {
        json_t *s = json_array();
        json_object_set_new(j, "kind", json_string("apikey"));
        for (int i = 0; scope_names[i]; i++)
            if (req->who.scopes & scope_bits[i])
                json_array_append_new(s, json_string(scope_names[i]));
        json_object_set_new(j, "scopes", s);
    }
    sb_http_respond_json(req, 200, j);
    json_decref(j);
}
