/* http.c - the HTTP server: libwebsockets on the foreign libuv loop.
 *
 * One lws context, one vhost per [listener NAME]. Each HTTP transaction gets
 * a struct sb_http_req that is detached from its connection: the per-session
 * data points at the request and the request at the wsi, and whichever goes
 * first clears the link. Handlers answer with sb_http_respond(), possibly
 * long after dispatch; the answer is written from the WRITEABLE callback (the
 * only place lws allows writes), and the transaction is completed for
 * keep-alive. Bodies are collected up to [http] max_body; past it the answer
 * is 413 and the connection is closed, since the rest of the body would
 * otherwise be parsed as the next request.
 */
#include "http.h"

#include <libwebsockets.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "ws.h"

#define HTTP_PLACE "core.http"

#ifndef SB_WWW_DIR
#define SB_WWW_DIR "/usr/local/share/switchboard/www"
#endif

static const struct sb_conf_key http_keys[] = {
    {"max_body", SB_CONF_SIZE, offsetof(struct sb_http_conf, max_body), "1M",
     64, 64LL << 20, NULL, SB_CONF_RELOAD,
     "largest request body accepted; larger ones get 413"},
    {"public_url", SB_CONF_STR, offsetof(struct sb_http_conf, public_url),
     "http://127.0.0.1:8080", 0, 512, NULL, SB_CONF_RELOAD,
     "the URL clients and providers reach us at (webhook signatures, links)"},
    {"keepalive_timeout", SB_CONF_DURATION,
     offsetof(struct sb_http_conf, keepalive_timeout), "5s", 1000, 3600000,
     NULL, 0, "idle time before a keep-alive connection is closed"},
    {"max_connections", SB_CONF_INT,
     offsetof(struct sb_http_conf, max_connections), "10000", 16, 1000000,
     NULL, 0, "file descriptors reserved for client connections"},
    {"www_dir", SB_CONF_STR, offsetof(struct sb_http_conf, www_dir),
     SB_WWW_DIR, 0, 4096, NULL, SB_CONF_RELOAD,
     "directory of the browser pages (read at start and on SIGHUP)"},
    {NULL, 0, 0, NULL, 0, 0, NULL, 0, NULL},
};

const struct sb_conf_section sb_http_conf_section = {
    "http", 0, sizeof(struct sb_http_conf), http_keys,
    "HTTP server limits shared by every listener.", NULL,
};

static int listener_check(void *c, char *err, size_t errlen)
{
    struct sb_listener_conf *l = c;

    if ((l->tls_cert && *l->tls_cert) != (l->tls_key && *l->tls_key)) {
        snprintf(err, errlen, "tls_cert and tls_key go together");
        return -1;
    }
    return 0;
}

static const struct sb_conf_key listener_keys[] = {
    {"address", SB_CONF_STR, offsetof(struct sb_listener_conf, address),
     "127.0.0.1", 0, 255, NULL, 0, "IP address to listen on"},
    {"port", SB_CONF_INT, offsetof(struct sb_listener_conf, port), "8080", 0,
     65535, NULL, 0, "TCP port (0: the kernel picks one, logged at start)"},
    {"tls_cert", SB_CONF_STR, offsetof(struct sb_listener_conf, tls_cert),
     NULL, 0, 4096, NULL, 0, "PEM certificate chain; enables TLS"},
    {"tls_key", SB_CONF_STR, offsetof(struct sb_listener_conf, tls_key), NULL,
     0, 4096, NULL, 0, "PEM private key for tls_cert"},
    {NULL, 0, 0, NULL, 0, 0, NULL, 0, NULL},
};

const struct sb_conf_section sb_listener_conf_section = {
    "listener", 1, sizeof(struct sb_listener_conf), listener_keys,
    "One section per listening socket: [listener NAME]. Bind to loopback\n"
    "unless a reverse proxy or firewall stands in front.",
    listener_check,
};

/* Response buffers keep room for the headers in front of the body, and
 * lws' own LWS_PRE in front of that. */
#define RESP_HEADROOM 2048
#define RESP_BODY (LWS_PRE + RESP_HEADROOM)

struct http_pss {
    struct sb_http_req *req;
};

static struct {
    uv_loop_t *loop;
    struct lws_context *ctx;
    const struct sb_route *routes;
    long long max_body;
    int draining;
    size_t inflight;
    uint64_t next_id;
    char *kept[128]; /* strings handed to lws, freed in sb_http_free */
    size_t nkept;
    int cb_depth;          /* inside on_http for cb_wsi */
    struct lws *cb_wsi;
    struct sb_metric *m_requests, *m_duration, *m_too_big;
} H;

static int write_response(struct lws *wsi, struct http_pss *pss);

/* ---- requests ---------------------------------------------------------- */

static struct sb_http_req *req_new(struct lws *wsi)
{
    struct sb_http_req *req = sb_calloc(1, sizeof(*req));

    req->id = ++H.next_id;
    req->wsi = wsi;
    req->t_start_us = uv_hrtime() / 1000;
    sb_buf_init(&req->body, (size_t)H.max_body);
    sb_buf_init(&req->resp_hdrs, 4096);
    return req;
}

static void req_free(struct sb_http_req *req)
{
    if (!req)
        return;
    free(req->path);
    for (int i = 0; i < req->nqargs; i++)
        free(req->qargs[i]);
    free(req->qargs);
    free(req->authorization);
    free(req->content_type);
    for (int i = 0; i < SB_HTTP_MAX_PARAMS; i++)
        free(req->params[i]);
    sb_buf_free(&req->body);
    sb_buf_free(&req->resp_hdrs);
    free(req->resp);
    free(req);
}

/* The connection is going away: the request lives on only if a handler
 * still owes it an answer. */
static void pss_detach(struct http_pss *pss)
{
    struct sb_http_req *req = pss->req;

    if (!req)
        return;
    pss->req = NULL;
    req->wsi = NULL;
    if (!req->dispatched || req->responded)
        req_free(req);
}

static char *hdr_dup(struct lws *wsi, enum lws_token_indexes t)
{
    int n = lws_hdr_total_length(wsi, t);
    char *s;

    if (n <= 0)
        return NULL;
    s = sb_malloc((size_t)n + 1);
    if (lws_hdr_copy(wsi, s, n + 1, t) < 0) {
        free(s);
        return NULL;
    }
    return s;
}

static void read_query(struct sb_http_req *req, struct lws *wsi)
{
    char frag[2048];
    int i;

    for (i = 0; i < 64; i++) {
        int n = lws_hdr_copy_fragment(wsi, frag, sizeof(frag),
                                      WSI_TOKEN_HTTP_URI_ARGS, i);
        if (n < 0)
            break;
        req->qargs = sb_realloc(req->qargs,
                                sizeof(char *) * (size_t)(req->nqargs + 1));
        req->qargs[req->nqargs++] = sb_strndup(frag, (size_t)n);
    }
}

char *sb_http_header(const struct sb_http_req *req, const char *name)
{
    char key[128];
    size_t nl = strlen(name);
    int n;
    char *v;

    if (!req->wsi || nl == 0 || nl + 2 > sizeof(key))
        return NULL;
    /* lws keeps unknown header names as lower case, with their colon */
    for (size_t i = 0; i < nl; i++)
        key[i] = (char)tolower((unsigned char)name[i]);
    key[nl] = ':';
    key[nl + 1] = '\0';
    n = lws_hdr_custom_length(req->wsi, key, (int)nl + 1);
    if (n < 0)
        return NULL;
    v = sb_malloc((size_t)n + 1);
    if (lws_hdr_custom_copy(req->wsi, v, n + 1, key, (int)nl + 1) < 0) {
        free(v);
        return NULL;
    }
    return v;
}

char *sb_http_query(const struct sb_http_req *req, const char *name)
{
    size_t nl = strlen(name);

    for (int i = 0; i < req->nqargs; i++) {
        const char *a = req->qargs[i];
        if (strncmp(a, name, nl) == 0 && a[nl] == '=')
            return sb_strdup(a + nl + 1);
    }
    return NULL;
}

/* ---- routing ----------------------------------------------------------- */

static int seg_ok(const char *s, size_t n)
{
    if (n == 0 || n > 128)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.' ||
              c == ':'))
            return 0;
    }
    return 1;
}

/* Match path against pattern; on success fill params (new strings). */
static int route_match(const char *pattern, const char *path,
                       char **params)
{
    const char *p = pattern, *s = path;
    int np = 0;

    while (*p && *s) {
        if (p[0] == '{' && p[1] == '}') {
            size_t n = strcspn(s, "/");
            if (!seg_ok(s, n) || np >= SB_HTTP_MAX_PARAMS)
                goto fail;
            params[np++] = sb_strndup(s, n);
            s += n;
            p += 2;
        } else if (*p == *s) {
            p++;
            s++;
        } else {
            goto fail;
        }
    }
    if (*p == '\0' && *s == '\0')
        return 1;
fail:
    for (int i = 0; i < np; i++) {
        free(params[i]);
        params[i] = NULL;
    }
    return 0;
}

static const char *method_name(enum sb_http_method m)
{
    switch (m) {
    case SB_GET: return "GET";
    case SB_POST: return "POST";
    case SB_PUT: return "PUT";
    case SB_DELETE: return "DELETE";
    case SB_PATCH: return "PATCH";
    case SB_OPTIONS: return "OPTIONS";
    case SB_HEAD: return "HEAD";
    }
    return "OTHER";
}

static void dispatch(struct sb_http_req *req)
{
    const struct sb_route *r;
    unsigned allow = 0;

    req->dispatched = 1;
    H.inflight++;
    if (H.draining) {
        req->close_after = 1;
        sb_http_add_header(req, "Retry-After", "1");
        sb_http_respond_error(req, 503, "shutting down", NULL);
        return;
    }
    if (req->too_big) {
        req->close_after = 1;
        sb_metric_add(H.m_too_big, 1);
        sb_http_respond_error(req, 413, "request body too large", NULL);
        return;
    }
    for (r = H.routes; r->pattern; r++) {
        char *params[SB_HTTP_MAX_PARAMS] = {0};
        if (!route_match(r->pattern, req->path, params))
            continue;
        if (!(r->methods & (unsigned)req->method)) {
            allow |= r->methods;
            for (int i = 0; i < SB_HTTP_MAX_PARAMS; i++)
                free(params[i]);
            continue;
        }
        memcpy(req->params, params, sizeof(params));
        req->route = r;
        if (r->access & SB_ACCESS_PUBLIC)
            r->handler(req);
        else
            sb_auth_check(req, r->handler);
        return;
    }
    if (allow) {
        struct sb_buf a;
        sb_buf_init(&a, 128);
        for (unsigned m = 1; m <= SB_HEAD; m <<= 1)
            if (allow & m)
                sb_buf_printf(&a, "%s%s", a.len ? ", " : "",
                              method_name((enum sb_http_method)m));
        sb_http_add_header(req, "Allow", a.data);
        sb_buf_free(&a);
        sb_http_respond_error(req, 405, "method not allowed", NULL);
        return;
    }
    sb_http_respond_error(req, 404, "not found", NULL);
}

/* ---- responses --------------------------------------------------------- */

void sb_http_add_header(struct sb_http_req *req, const char *name,
                        const char *value)
{
    /* Values are ours, but never let a CR/LF through into the header. */
    if (strpbrk(name, "\r\n:") || strpbrk(value, "\r\n"))
        return;
    sb_buf_printf(&req->resp_hdrs, "%s\n%s\n", name, value);
}

void sb_http_respond(struct sb_http_req *req, int status, const char *ctype,
                     const char *body, size_t len)
{
    double secs;
    char st[8];

    if (req->responded) {
        SB_ERR(HTTP_PLACE, "double response id=%llu",
               (unsigned long long)req->id);
        return;
    }
    req->responded = 1;
    req->status = status;
    req->resp_ctype = ctype ? ctype : "application/json";
    req->resp = sb_malloc(RESP_BODY + len + 1);
    if (len)
        memcpy(req->resp + RESP_BODY, body, len);
    req->resp_len = len;
    if (req->dispatched && H.inflight > 0)
        H.inflight--;

    snprintf(st, sizeof(st), "%d", status);
    secs = (double)(uv_hrtime() / 1000 - req->t_start_us) / 1e6;
    {
        const char *rn = req->route
                             ? (req->route->name ? req->route->name
                                                 : req->route->pattern)
                             : "other";
        sb_metric_add(H.m_requests, 1, rn, method_name(req->method), st);
        sb_metric_observe(H.m_duration, secs, rn);
    }
    /* 503 is the expected answer while Redis is away or we drain (logged
     * once where that state begins); other 5xx are our failures. */
    if (status >= 500 && status != 503)
        SB_WARN(HTTP_PLACE, "server error status=%d path=%s", status,
                req->route ? req->route->pattern : "-");

    if (!req->wsi) {
        req_free(req);
        return;
    }
    /* Inside this connection's own callback: it writes on its way out. */
    if (H.cb_depth && H.cb_wsi == req->wsi)
        return;
    /* From outside lws (a Redis reply, a worker result) write at once when
     * the socket can take it: waiting for WRITEABLE would cost two
     * epoll_ctl calls and a loop pass per request. lws is single-threaded
     * on our loop, so this cannot race it. */
    if (!H.cb_depth && !lws_send_pipe_choked(req->wsi)) {
        struct lws *wsi = req->wsi;
        if (write_response(wsi, lws_wsi_user(wsi)) < 0)
            lws_set_timeout(wsi, PENDING_TIMEOUT_CLOSE_SEND,
                            LWS_TO_KILL_ASYNC);
        return;
    }
    lws_callback_on_writable(req->wsi);
}

void sb_http_respond_json(struct sb_http_req *req, int status,
                          const json_t *j)
{
    struct sb_buf b;

    sb_buf_init(&b, 0);
    if (sb_json_dump_buf(j, &b) < 0) {
        sb_buf_free(&b);
        sb_http_respond_error(req, 500, "response too large", NULL);
        return;
    }
    sb_http_respond(req, status, NULL, b.data, b.len);
    sb_buf_free(&b);
}

void sb_http_respond_error(struct sb_http_req *req, int status,
                           const char *msg, const char *field)
{
    struct sb_buf b;

    sb_buf_init(&b, 0);
    sb_json_error_body(&b, msg, field);
    sb_http_respond(req, status, NULL, b.data, b.len);
    sb_buf_free(&b);
}

static int add_hdr(struct lws *wsi, const char *name, const char *value,
                   unsigned char **p, unsigned char *end)
{
    return lws_add_http_header_by_name(wsi, (const unsigned char *)name,
                                       (const unsigned char *)value,
                                       (int)strlen(value), p, end);
}

/* Write headers and body of a finished request in one send (h1 only: the
 * vhosts advertise no h2, see sb_http_start). Returns what an lws callback
 * should return: 0 to keep the connection for the next request, -1 to close
 * it. */
static int write_response(struct lws *wsi, struct http_pss *pss)
{
    struct sb_http_req *req = pss->req;
    unsigned char hbuf[LWS_PRE + 4096];
    unsigned char *start = hbuf + LWS_PRE, *p = start;
    unsigned char *end = hbuf + sizeof(hbuf) - 1;
    int head = req->method == SB_HEAD, close_after = req->close_after;
    size_t body_len = head ? 0 : req->resp_len, hlen;
    char num[24], *h, *v;
    int r = -1;

    pss->req = NULL;
    snprintf(num, sizeof(num), "%zu", req->resp_len);
    if (lws_add_http_header_status(wsi, (unsigned)req->status, &p, end) ||
        add_hdr(wsi, "content-type:", req->resp_ctype, &p, end) ||
        add_hdr(wsi, "content-length:", num, &p, end) ||
        add_hdr(wsi, "x-content-type-options:", "nosniff", &p, end) ||
        add_hdr(wsi, "cache-control:", "no-store", &p, end) ||
        (close_after && add_hdr(wsi, "connection:", "close", &p, end)))
        goto out;
    /* Extra headers are stored as "name\nvalue\n" pairs. */
    for (h = req->resp_hdrs.data; h && *h; h = v + strlen(v) + 1) {
        char name[96];
        size_t nl;
        v = strchr(h, '\n');
        if (!v)
            break;
        nl = (size_t)(v - h);
        if (nl + 2 > sizeof(name))
            goto out;
        memcpy(name, h, nl);
        name[nl] = ':';
        name[nl + 1] = '\0';
        v++;
        *strchr(v, '\n') = '\0';
        if (add_hdr(wsi, name, v, &p, end))
            goto out;
    }
    if (lws_finalize_http_header(wsi, &p, end))
        goto out;
    hlen = (size_t)(p - start);
    /* The body sits behind RESP_HEADROOM spare bytes (sb_http_respond):
     * put the headers right before it so one send carries both. */
    if (hlen <= RESP_HEADROOM) {
        unsigned char *body = (unsigned char *)req->resp + RESP_BODY;
        memcpy(body - hlen, start, hlen);
        if (lws_write(wsi, body - hlen, hlen + body_len,
                      LWS_WRITE_HTTP_HEADERS) != (int)(hlen + body_len))
            goto out;
    } else {
        if (lws_write(wsi, start, hlen, LWS_WRITE_HTTP_HEADERS) != (int)hlen)
            goto out;
        if (body_len &&
            lws_write(wsi, (unsigned char *)req->resp + RESP_BODY, body_len,
                      LWS_WRITE_HTTP_HEADERS) != (int)body_len)
            goto out;
    }
    r = close_after ? -1 : 0;
out:
    req_free(req);
    if (r < 0)
        return -1;
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

/* ---- the lws protocol callback ----------------------------------------- */

static enum sb_http_method lws_method(int m)
{
    switch (m) {
    case LWSHUMETH_GET: return SB_GET;
    case LWSHUMETH_POST: return SB_POST;
    case LWSHUMETH_PUT: return SB_PUT;
    case LWSHUMETH_PATCH: return SB_PATCH;
    case LWSHUMETH_DELETE: return SB_DELETE;
    case LWSHUMETH_OPTIONS: return SB_OPTIONS;
    case LWSHUMETH_HEAD: return SB_HEAD;
    default: return 0;
    }
}

static int on_http_request(struct lws *wsi, struct http_pss *pss)
{
    struct sb_http_req *req;
    char *uri = NULL, *cl;
    int ulen = 0, m;
    long long clen = 0;

    pss_detach(pss);
    req = req_new(wsi);
    pss->req = req;
    m = lws_http_get_uri_and_method(wsi, &uri, &ulen);
    req->method = lws_method(m);
    req->path = sb_strndup(uri ? uri : "/", uri ? (size_t)ulen : 1);
    read_query(req, wsi);
    req->authorization = hdr_dup(wsi, WSI_TOKEN_HTTP_AUTHORIZATION);
    req->content_type = hdr_dup(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE);
    if (lws_get_peer_simple(wsi, req->peer, sizeof(req->peer)) == NULL)
        snprintf(req->peer, sizeof(req->peer), "unknown");

    if (!req->method) {
        req->close_after = 1;
        req->dispatched = 1;
        H.inflight++;
        sb_http_respond_error(req, 405, "method not allowed", NULL);
        return 0;
    }
    if (!(req->method & (SB_POST | SB_PUT | SB_PATCH))) {
        dispatch(req);
        return 0;
    }
    cl = hdr_dup(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH);
    if (!cl && lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) >
                   0) {
        /* A chunked body: we need its length up front (the cap). */
        req->close_after = 1;
        req->dispatched = 1;
        H.inflight++;
        sb_http_respond_error(req, 411, "Content-Length required", NULL);
        return 0;
    }
    /* No Content-Length and no Transfer-Encoding: no body (RFC 9112 6.3). */
    if (cl && (sb_parse_ll(cl, &clen) < 0 || clen < 0)) {
        free(cl);
        req->close_after = 1;
        req->dispatched = 1;
        H.inflight++;
        sb_http_respond_error(req, 400, "invalid Content-Length", NULL);
        return 0;
    }
    free(cl);
    if (clen > H.max_body) {
        req->too_big = 1;
        dispatch(req);
        return 0;
    }
    if (clen == 0)
        dispatch(req);
    /* else wait for LWS_CALLBACK_HTTP_BODY_COMPLETION */
    return 0;
}

static int on_http_cb(struct lws *wsi, enum lws_callback_reasons reason,
                      void *user, void *in, size_t len)
{
    struct http_pss *pss = user;

    switch (reason) {
    case LWS_CALLBACK_HTTP:
        return on_http_request(wsi, pss);

    case LWS_CALLBACK_HTTP_BODY:
        if (pss->req && !pss->req->dispatched && !pss->req->too_big &&
            sb_buf_append(&pss->req->body, in, len) < 0)
            pss->req->too_big = 1;
        return 0;

    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        if (pss->req && !pss->req->dispatched)
            dispatch(pss->req);
        return 0;

    case LWS_CALLBACK_HTTP_WRITEABLE:
        if (!pss->req || !pss->req->responded)
            return 0;
        return write_response(wsi, pss);

    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
    case LWS_CALLBACK_ESTABLISHED:
        /* An upgrade that named none of our subprotocols lands here. */
        return -1;

    case LWS_CALLBACK_CLOSED_HTTP:
    case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
        if (pss)
            pss_detach(pss);
        return 0;

    default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

/* Track that we are inside lws' callback for wsi, so a handler answering
 * synchronously leaves the write to the callback's way out. */
static int on_http(struct lws *wsi, enum lws_callback_reasons reason,
                   void *user, void *in, size_t len)
{
    struct http_pss *pss = user;
    struct lws *outer = H.cb_wsi;
    int r;

    H.cb_depth++;
    H.cb_wsi = wsi;
    r = on_http_cb(wsi, reason, user, in, len);
    H.cb_depth--;
    H.cb_wsi = outer;
    /* Only these reasons carry our per-session data and allow writes. */
    if (r == 0 &&
        (reason == LWS_CALLBACK_HTTP ||
         reason == LWS_CALLBACK_HTTP_BODY_COMPLETION ||
         reason == LWS_CALLBACK_HTTP_BODY) &&
        pss && pss->req && pss->req->responded)
        r = write_response(wsi, pss);
    return r;
}

/* Row 0 serves HTTP; then one row per WebSocket endpoint (ws.c); then the
 * all-zero terminator lws 4.1 expects. Built in sb_http_start. */
static struct lws_protocols protocols[2 + 8];

/* ---- lifecycle ----------------------------------------------------------- */

static void on_lws_log(int level, const char *line)
{
    char safe[512];
    size_t n;

    sb_log_safe(line, safe, sizeof(safe));
    n = strlen(safe);
    while (n && safe[n - 1] == '_')
        safe[--n] = '\0';
    /* lws' own errors are about single connections: a warning for us. */
    SB_WARN("core.lws", "level=%d msg=\"%s\"", level, safe);
}

static const char *keep(const char *s)
{
    char *k = sb_strdup(s ? s : "");

    H.kept[H.nkept++] = k;
    return k;
}

static void apply_conf(const struct sb_config *conf)
{
    const struct sb_http_conf *hc = sb_config_get(conf, "http");

    H.max_body = hc->max_body;
}

int sb_http_start(uv_loop_t *loop, const struct sb_config *conf,
                  const struct sb_route *routes)
{
    static void *foreign[1];
    struct lws_context_creation_info info;
    const struct sb_http_conf *hc = sb_config_get(conf, "http");
    size_t n = sb_config_count(conf, "listener");

    H.loop = loop;
    H.routes = routes;
    apply_conf(conf);
    H.m_requests = sb_metric_counter("sb_http_requests_total",
                                     "HTTP requests answered",
                                     "route,method,status");
    H.m_duration = sb_metric_histogram(
        "sb_http_request_duration_seconds",
        "Time from request to answer", "route", sb_metric_latency_buckets,
        sb_metric_latency_nbuckets);
    H.m_too_big = sb_metric_counter("sb_http_body_too_large_total",
                                    "Requests refused with 413", NULL);

    memset(protocols, 0, sizeof(protocols));
    protocols[0].name = "http";
    protocols[0].callback = on_http;
    protocols[0].per_session_data_size = sizeof(struct http_pss);
    sb_ws_lws_protocols(protocols + 1, SB_ARRAY_LEN(protocols) - 2);
    sb_ws_start(loop);

    lws_set_log_level(LLL_ERR, on_lws_log);
    memset(&info, 0, sizeof(info));
    foreign[0] = loop;
    info.foreign_loops = foreign;
    info.options = LWS_SERVER_OPTION_LIBUV |
                   LWS_SERVER_OPTION_UV_NO_SIGSEGV_SIGFPE_SPIN |
                   LWS_SERVER_OPTION_EXPLICIT_VHOSTS |
                   LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.server_string = "switchboard";
    info.max_http_header_data = 8192;
    info.fd_limit_per_thread = (unsigned)hc->max_connections + 64;
    info.pt_serv_buf_size = 16384;
    H.ctx = lws_create_context(&info);
    if (!H.ctx) {
        SB_ERR(HTTP_PLACE, "lws_create_context failed (is "
                           "libwebsockets-evlib-uv installed?)");
        return -1;
    }
    if (n == 0 || n > SB_ARRAY_LEN(H.kept) / 4) {
        SB_ERR(HTTP_PLACE, "configure 1 to %zu [listener] sections",
               SB_ARRAY_LEN(H.kept) / 4);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        const char *name;
        const struct sb_listener_conf *l =
            sb_config_nth(conf, "listener", i, &name);
        struct lws_context_creation_info vi;
        struct lws_vhost *vh;
        int tls = l->tls_cert && *l->tls_cert;

        memset(&vi, 0, sizeof(vi));
        /* lws keeps these pointers (the name is read on every request):
         * our own copies, since the config is freed on reload. */
        vi.vhost_name = keep(name);
        vi.port = (int)l->port;
        vi.iface = keep(l->address);
        vi.protocols = protocols;
        vi.keepalive_timeout = (int)(hc->keepalive_timeout / 1000);
        vi.timeout_secs = 30;
        vi.server_string = "switchboard";
        vi.alpn = "http/1.1"; /* write_response speaks h1 only */
        /* lws reads DO_SSL_GLOBAL_INIT from each vhost's own options: without
         * it a listener with a certificate silently serves plain HTTP. */
        vi.options = LWS_SERVER_OPTION_LIBUV |
                     LWS_SERVER_OPTION_UV_NO_SIGSEGV_SIGFPE_SPIN |
                     (tls ? LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT : 0);
        if (tls) {
            vi.ssl_cert_filepath = keep(l->tls_cert);
            vi.ssl_private_key_filepath = keep(l->tls_key);
        }
        vh = lws_create_vhost(H.ctx, &vi);
        if (!vh) {
            SB_ERR(HTTP_PLACE, "cannot listen listener=%s address=%s port=%lld",
                   name, l->address, l->port);
            return -1;
        }
        SB_NOTICE(HTTP_PLACE, "listening listener=%s address=%s port=%d tls=%s",
                  name, l->address, lws_get_vhost_listen_port(vh),
                  tls ? "yes" : "no");
    }
    return 0;
}

void sb_http_reconfigure(const struct sb_config *conf)
{
    apply_conf(conf);
}

void sb_http_drain(void)
{
    H.draining = 1;
    sb_ws_close_all();
}

size_t sb_http_inflight(void)
{
    return H.inflight;
}

void sb_http_stop(void)
{
    sb_ws_stop();
    if (H.ctx)
        lws_context_destroy(H.ctx);
}

void sb_http_free(void)
{
    if (H.ctx)
        lws_context_destroy(H.ctx);
    H.ctx = NULL;
    for (size_t i = 0; i < H.nkept; i++)
        free(H.kept[i]);
    H.nkept = 0;
}
