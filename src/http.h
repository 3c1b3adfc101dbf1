/* http.h - the HTTP/1.1 (and later WebSocket) server: libwebsockets on the
 * foreign libuv loop, one vhost per [listener NAME], a route table, request
 * bodies with a hard cap, asynchronous responses.
 *
 * A request object outlives its connection: handlers may answer long after
 * the dispatch (a Redis reply, a worker job) and never hold a struct lws.
 * If the client went away meanwhile, sb_http_respond() simply frees the
 * request. Every dispatched request must be answered exactly once.
 *
 * Routing: patterns are paths whose "{}" segments match one path segment of
 * [A-Za-z0-9_.:-]+ (captured into req->params). Unknown path → 404, known
 * path with another method → 405 with Allow. Before the handler runs, the
 * route's access rule is checked (auth.h): 401 without valid credentials,
 * 403 without the scope or role.
 */
#ifndef SB_HTTP_H
#define SB_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include <uv.h>

#include "config.h"
#include "util.h"

enum sb_http_method {
    SB_GET = 1 << 0,
    SB_POST = 1 << 1,
    SB_PUT = 1 << 2,
    SB_DELETE = 1 << 3,
    SB_PATCH = 1 << 4,
    SB_OPTIONS = 1 << 5,
    SB_HEAD = 1 << 6,
};

#define SB_HTTP_MAX_PARAMS 4

/* Who is calling, filled by auth before the handler runs. */
struct sb_principal {
    int kind;          /* SB_PRINCIPAL_NONE, _APIKEY, _USER */
    char name[64];     /* API key id or user name */
    unsigned scopes;   /* API keys: SB_SCOPE_* bits */
    int role;          /* users: SB_ROLE_* */
    char session[72];  /* users: the session's hash (for logout) */
};

struct sb_http_req;
typedef void sb_http_handler(struct sb_http_req *req);

struct sb_route {
    unsigned methods;        /* SB_GET | ... */
    const char *pattern;     /* "/api/v1/customers/{}/timeline" */
    sb_http_handler *handler;
    unsigned access;         /* auth.h: SB_ACCESS_* rule */
    const char *name;        /* metrics label; defaults to pattern */
};

struct sb_http_req {
    uint64_t id;
    enum sb_http_method method;
    char *path;              /* decoded path, no query */
    char **qargs;            /* decoded "name=value" query pairs */
    int nqargs;
    char *authorization;     /* header value or NULL */
    char *content_type;
    char peer[64];           /* client address */
    struct sb_buf body;      /* request body (capped by [http] max_body) */
    const struct sb_route *route;
    char *params[SB_HTTP_MAX_PARAMS];
    struct sb_principal who;
    void *user;              /* the handler's own state */
    /* internal */
    struct lws *wsi;         /* NULL once the connection is gone */
    uint64_t t_start_us;
    int too_big, dispatched, responded, close_after;
    int status;
    char *resp;              /* headroom (see http.c), then the body */
    size_t resp_len;
    const char *resp_ctype;
    struct sb_buf resp_hdrs; /* extra "Name: value\r\n" headers */
};

struct sb_http_conf {
    long long max_body;
    char *public_url;
    long long keepalive_timeout;
    long long max_connections;
    char *www_dir;
};

struct sb_listener_conf {
    char *address;
    long long port;
    char *tls_cert;
    char *tls_key;
};

extern const struct sb_conf_section sb_http_conf_section;     /* [http] */
extern const struct sb_conf_section sb_listener_conf_section; /* [listener] */

/* Start the server on loop with the listeners of conf and routes
 * (NULL-terminated by a row with pattern NULL; borrowed for the process'
 * life). 0 or -1 (logged). */
int sb_http_start(uv_loop_t *loop, const struct sb_config *conf,
                  const struct sb_route *routes);

/* New request-level limits after SIGHUP. */
void sb_http_reconfigure(const struct sb_config *conf);

/* Stop taking new requests: from now on new requests get 503 and the
 * connection is closed after the answer. */
void sb_http_drain(void);

/* Requests dispatched but not yet answered. */
size_t sb_http_inflight(void);

/* Destroy the lws context (twice, around a uv_run, as STACK-NOTES says:
 * the caller runs the loop in between; see main.c). */
void sb_http_stop(void);
void sb_http_free(void);

/* Answer. status + body (copied). ctype NULL = application/json. */
void sb_http_respond(struct sb_http_req *req, int status, const char *ctype,
                     const char *body, size_t len);
/* Serialise j (borrowed) as the body. */
void sb_http_respond_json(struct sb_http_req *req, int status,
                          const json_t *j);
/* {"error": msg, "field": field} (field may be NULL). */
void sb_http_respond_error(struct sb_http_req *req, int status,
                           const char *msg, const char *field);
/* Add a response header before responding ("Retry-After", "5"). */
void sb_http_add_header(struct sb_http_req *req, const char *name,
                        const char *value);

/* A request header lws does not parse itself ("X-Twilio-Signature"), as a
 * new string the caller frees, or NULL when absent. Only while the
 * connection is there: call it from the handler before it returns (public
 * routes are dispatched on the connection's own callback). */
char *sb_http_header(const struct sb_http_req *req, const char *name);

/* Query parameter value (URL-decoded, new string the caller frees) or NULL. */
char *sb_http_query(const struct sb_http_req *req, const char *name);

#endif
