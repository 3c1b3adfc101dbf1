/* webhook.c - the webhook channel driver: signed JSON POSTs to one URL.
 *
 * Every message becomes one HTTP POST of a compact JSON object to the
 * configured `[webhook] url` - a customer's messenger bot, a CRM, any
 * integration that wants our notifications (PROTOCOL.md in this directory
 * is the receiver's side of it). The object carries the attempt id, the
 * optional to/customer/conversation/subject/text/html fields (each only
 * when set), the message's meta_json under "notification" (parsed, so it
 * must be a JSON object) and "sent_at" (RFC 3339 UTC with milliseconds).
 * It is signed: X-Switchboard-Signature is "v1=" and the lowercase hex of
 * HMAC-SHA256(secret, "<X-Switchboard-Timestamp>.<body>"). The keyed HMAC
 * state is computed once (start, reload) and copied per message, so the
 * secret itself is not kept and never logged; neither is any body.
 *
 * Transport. A plain http:// URL (without userinfo) goes through hconn,
 * the lean keep-alive client: one pool for the URL's origin, up to
 * WH_CONNS persistent connections, the host resolved when the pool is
 * made - at start and again at every reload, so a SIGHUP picks up a DNS
 * change. Anything else (https://, user:password@) goes through httpc
 * (curl multi on the loop, keep-alive). Per send the driver allocates one
 * op: the body is rendered into one buffer owned by the channel and reused
 * (one grown past 256 KiB for a big message is given back after it); for
 * hconn, which borrows the body until its callback instead of copying it,
 * the op carries a copy of the body in the same allocation (httpc makes
 * its own copy). The header lines are built on the stack.
 *
 * Outcomes: 2xx is OK, with the response's JSON "id" string (when the body
 * is an object that has one) as the provider id; 408, 425, 429 and 5xx are
 * TEMPFAIL "http N" with retry_after_ms from Retry-After (-1 without);
 * other 3xx and 4xx are PERMFAIL "http N" (redirects are not followed);
 * any other status is TEMPFAIL. No response is TEMPFAIL "timeout" or
 * "connect failed" (resolve failures included) or "network error" (a
 * reset, an early close, a malformed response or one over 64 KiB; hconn
 * and httpc log the details). If the client itself is shut down under a
 * send (httpc at daemon exit), the send ends CANCELLED. A message the
 * driver cannot render - no id, an id with control characters or over 256
 * bytes, text that is not UTF-8, meta_json that is not a JSON object, a
 * body over 4 MiB - is accepted and ends PERMFAIL from a later loop turn
 * (a zero-delay timer), so no completion ever runs inside send(). send()
 * refuses (-1, no completion) only when the driver is stopped, max_inflight
 * sends are unfinished, or the HTTP client refuses the request.
 *
 * Reload: every key may change on SIGHUP (url and secret included, so a
 * secret can be rotated; receivers then accept both for a while). Sends in
 * flight finish with what they were sent with: the previous hconn pool is
 * kept, retired, until its last request has completed, then closed.
 *
 * Cancellation: stop() completes every unfinished send with CANCELLED
 * before it returns, then closes the hconn pools (their requests end at
 * once; the receiver may still have got them, which at-least-once allows)
 * and detaches the ones waiting for httpc, which has no way to abort one
 * request: that request runs on and its late completion only frees the
 * detached op. The driver's state is freed in the close callback of its
 * timer.
 */
#include <jansson.h>
#include <sodium.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <uv.h>

#include "channel.h"
#include "config.h"
#include "hconn.h"
#include "httpc.h"
#include "list.h"
#include "log.h"
#include "util.h"

#define WH_PLACE "chan.webhook"
#define WH_SECRET_MIN 16
#define WH_ID_MAX 256             /* attempt id bytes, header-safe */
#define WH_PROVIDER_ID_MAX 256    /* longer response ids are dropped */
#define WH_MAX_BODY (4u << 20)    /* one request body */
#define WH_BODY_INIT 4096         /* first size of the body buffer */
#define WH_BODY_KEEP (256u << 10) /* a bigger body buffer is given back */
#define WH_RESP_MAX (64u << 10)   /* response bodies we read */
#define WH_CONNS 64               /* hconn connections per pool */
#define WH_QUEUE_MAX 100000       /* hconn queue: max_inflight's bound */

struct wh_conf {
    char *url;
    char *secret;
    long long timeout_ms;
    long long connect_timeout_ms;
    long long max_inflight;
    char *user_agent;
};

/* Bytes that may not appear in a URL or header value we send. */
static int wh_has_ctl(const char *s, int space_ok)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f || (!space_ok && *p == ' '))
            return 1;
    return 0;
}

/* Length of "http://" or "https://" at the start of url, else 0. */
static size_t wh_scheme_len(const char *url)
{
    if (strncasecmp(url, "http://", 7) == 0)
        return 7;
    if (strncasecmp(url, "https://", 8) == 0)
        return 8;
    return 0;
}

static int wh_conf_check(void *conf, char *err, size_t errlen)
{
    const struct wh_conf *c = conf;
    size_t k;

    /* The loader checks [webhook] even when the file has no such section
     * (a singleton keeps its defaults): with neither key set it is simply
     * off, and start() refuses it. */
    if (!c->url && !c->secret)
        return 0;
    if (!c->url || !(k = wh_scheme_len(c->url))) {
        snprintf(err, errlen, "url must start with http:// or https://");
        return -1;
    }
    if (!c->url[k] || c->url[k] == '/' || c->url[k] == '?' ||
        c->url[k] == '#') {
        snprintf(err, errlen, "url has no host");
        return -1;
    }
    if (wh_has_ctl(c->url, 0)) {
        snprintf(err, errlen, "url must not contain spaces or controls");
        return -1;
    }
    if (!c->secret || strlen(c->secret) < WH_SECRET_MIN) {
        snprintf(err, errlen, "secret must be at least %d bytes",
                 WH_SECRET_MIN);
        return -1;
    }
    if (c->user_agent && wh_has_ctl(c->user_agent, 1)) {
        snprintf(err, errlen, "user_agent must not contain controls");
        return -1;
    }
    return 0;
}

static const struct sb_conf_key wh_keys[] = {
    {"url", SB_CONF_STR, offsetof(struct wh_conf, url), NULL, 0, 2048, NULL,
     SB_CONF_RELOAD,
     "receiver the messages are POSTed to (http:// or https://); required "
     "when the section is written"},
    {"secret", SB_CONF_STR, offsetof(struct wh_conf, secret), NULL, 0, 1024,
     NULL, SB_CONF_SECRET | SB_CONF_RELOAD,
     "HMAC-SHA256 key of X-Switchboard-Signature, 16 bytes or more; "
     "required when the section is written"},
    {"timeout", SB_CONF_DURATION, offsetof(struct wh_conf, timeout_ms), "10s",
     1, 600000, NULL, SB_CONF_RELOAD,
     "whole request, connect included; then TEMPFAIL \"timeout\""},
    {"connect_timeout", SB_CONF_DURATION,
     offsetof(struct wh_conf, connect_timeout_ms), "3s", 1, 600000, NULL,
     SB_CONF_RELOAD, "TCP and TLS connect"},
    {"max_inflight", SB_CONF_INT, offsetof(struct wh_conf, max_inflight), "512",
     1, 100000, NULL, SB_CONF_RELOAD, "unfinished sends before send() refuses"},
    {"user_agent", SB_CONF_STR, offsetof(struct wh_conf, user_agent),
     "switchboard", 0, 200, NULL, SB_CONF_RELOAD,
     "User-Agent header of the requests"},
    {NULL, 0, 0, NULL, 0, 0, NULL, 0, NULL},
};

static const struct sb_conf_section wh_section = {
    "webhook",
    0,
    sizeof(struct wh_conf),
    wh_keys,
    "The webhook channel: every message is POSTed as a JSON object to url,\n"
    "signed with X-Switchboard-Signature: v1=hex(HMAC-SHA256(secret,\n"
    "\"<X-Switchboard-Timestamp>.<body>\")). 2xx is delivered; 408, 425,\n"
    "429 and 5xx are retried; other 4xx fail. See\n"
    "channels/webhook/PROTOCOL.md for the receiver's side.",
    wh_conf_check,
};

struct wh_op;

struct wh_chan {
    uv_loop_t *loop;
    uv_timer_t kick; /* completes the sends refused at render */
    char *url;
    char *ua_header;                   /* "User-Agent: ..." */
    crypto_auth_hmacsha256_state mac0; /* keyed, nothing absorbed yet */
    long timeout_ms;
    long connect_timeout_ms;
    size_t max_inflight;
    struct sb_list ops;       /* every accepted, unfinished send; its
                               * count is the number in flight */
    struct wh_op *ready_head; /* outcome known, completion queued */
    struct wh_op *ready_tail;
    size_t nready;
    char *body; /* the reused request body buffer */
    size_t body_alloc;
    struct sb_hconn_pool *pool; /* http:// origin, or NULL: httpc */
    char *path;                 /* the pool's request target */
    struct wh_retired *retired; /* older pools, draining */
};

/* A pool replaced at reload, closed when its last request is done. */
struct wh_retired {
    struct wh_retired *next;
    struct sb_hconn_pool *pool;
};

struct wh_op {
    struct sb_list_node link; /* in wh_chan.ops */
    struct wh_op *next_ready;
    struct wh_chan *wc;    /* NULL once completed or detached */
    struct sb_outmsg *msg; /* borrowed until the completion */
    sb_send_done *done;
    int queued;                 /* 1: on the ready queue, no request */
    const char *reason;         /* queued PERMFAIL reason (static) */
    struct sb_hconn_pool *pool; /* the pool it went to, NULL for httpc */
    char body[];                /* the request body, for hconn only */
};

/* ---- settings ---------------------------------------------------------- */

/* Copy the host part of url (no userinfo, path or query: those may carry
 * tokens) into out, for logs. */
static const char *wh_url_host(const char *url, char *out, size_t outlen)
{
    const char *h = url + wh_scheme_len(url);
    size_t n = strcspn(h, "/?#");
    const char *at = memchr(h, '@', n);
    char tmp[256];

    if (at) {
        n -= (size_t)(at + 1 - h);
        h = at + 1;
    }
    if (n >= sizeof(tmp))
        n = sizeof(tmp) - 1;
    memcpy(tmp, h, n);
    tmp[n] = '\0';
    return sb_log_safe(tmp, out, outlen);
}

/* Close a pool now if nothing is in flight on it, else keep it on the
 * retired list until its last completion. */
static void wh_retire(struct wh_chan *wc, struct sb_hconn_pool *pool)
{
    struct wh_retired *r;

    if (!pool)
        return;
    if (sb_hconn_pending(pool) == 0) {
        sb_hconn_pool_close(pool);
        return;
    }
    r = sb_calloc(1, sizeof(*r));
    r->pool = pool;
    r->next = wc->retired;
    wc->retired = r;
}

/* After a completion on a retired pool: close it once drained. */
static void wh_retired_check(struct wh_chan *wc, struct sb_hconn_pool *pool)
{
    struct wh_retired **pp, *r;

    for (pp = &wc->retired; (r = *pp) != NULL; pp = &r->next) {
        if (r->pool != pool)
            continue;
        if (sb_hconn_pending(pool) > 0)
            return;
        *pp = r->next;
        free(r);
        sb_hconn_pool_close(pool);
        return;
    }
}

/* Choose the transport for wc->url: a fresh hconn pool for http:// URLs
 * it takes (the old pool retires), else httpc. */
static void wh_transport(struct wh_chan *wc)
{
    struct sb_hconn_opts o;
    char host[256];
    char *path = NULL;
    int port;

    wh_retire(wc, wc->pool);
    wc->pool = NULL;
    free(wc->path);
    wc->path = NULL;
    if (sb_hconn_parse_url(wc->url, host, sizeof(host), &port, &path) < 0)
        return;
    memset(&o, 0, sizeof(o));
    o.max_conns = WH_CONNS;
    o.max_queue = WH_QUEUE_MAX;
    o.max_body = WH_RESP_MAX;
    o.connect_timeout_ms = wc->connect_timeout_ms;
    wc->pool = sb_hconn_pool_new(wc->loop, host, port, &o);
    if (wc->pool)
        wc->path = path;
    else
        free(path);
}

/* Adopt a checked config into wc (start and reload). */
static void wh_apply(struct wh_chan *wc, const struct wh_conf *c)
{
    free(wc->url);
    wc->url = sb_strdup(c->url);
    free(wc->ua_header);
    wc->ua_header = c->user_agent && c->user_agent[0]
                        ? sb_asprintf("User-Agent: %s", c->user_agent)
                        : NULL;
    crypto_auth_hmacsha256_init(&wc->mac0, (const unsigned char *)c->secret,
                                strlen(c->secret));
    wc->timeout_ms = (long)c->timeout_ms;
    wc->connect_timeout_ms = (long)c->connect_timeout_ms;
    wc->max_inflight = (size_t)c->max_inflight;
    wh_transport(wc);
}

static int wh_start(struct sb_channel *ch, uv_loop_t *loop, const void *conf)
{
    const struct wh_conf *c = conf;
    struct wh_chan *wc;
    char err[128], host[128];
    int rc;

    if (!ch || !loop || !c)
        return -1;
    if (!c->url || wh_conf_check((void *)c, err, sizeof(err)) < 0) {
        SB_ERR(WH_PLACE, "bad config reason=\"%s\"",
               c->url ? err : "url and secret are required");
        return -1;
    }
    if (sodium_init() < 0) {
        SB_ERR(WH_PLACE, "sodium_init failed");
        return -1;
    }
    wc = sb_calloc(1, sizeof(*wc));
    wc->loop = loop;
    rc = uv_timer_init(loop, &wc->kick);
    if (rc < 0) {
        SB_ERR(WH_PLACE, "uv_timer_init failed err=%s", uv_strerror(rc));
        free(wc);
        return -1;
    }
    wc->kick.data = wc;
    wh_apply(wc, c);
    wc->body_alloc = WH_BODY_INIT;
    wc->body = sb_malloc(wc->body_alloc);
    ch->priv = wc;
    SB_INFO(WH_PLACE,
            "started host=%s client=%s timeout_ms=%ld max_inflight=%zu",
            wh_url_host(wc->url, host, sizeof(host)),
            wc->pool ? "hconn" : "httpc", wc->timeout_ms, wc->max_inflight);
    return 0;
}

static int wh_reload(struct sb_channel *ch, const void *conf)
{
    struct wh_chan *wc = ch ? ch->priv : NULL;
    const struct wh_conf *c = conf;
    char err[128], host[128];

    if (!wc || !c)
        return -1;
    if (!c->url || wh_conf_check((void *)c, err, sizeof(err)) < 0) {
        SB_WARN(WH_PLACE, "reload refused reason=\"%s\"",
                c->url ? err : "url and secret are required");
        return -1;
    }
    wh_apply(wc, c);
    SB_INFO(WH_PLACE,
            "reloaded host=%s client=%s timeout_ms=%ld max_inflight=%zu",
            wh_url_host(wc->url, host, sizeof(host)),
            wc->pool ? "hconn" : "httpc", wc->timeout_ms, wc->max_inflight);
    return 0;
}

/* ---- ops --------------------------------------------------------------- */

static void wh_op_link(struct wh_chan *wc, struct wh_op *op)
{
    sb_list_push_front(&wc->ops, &op->link);
}

static void wh_op_unlink(struct wh_chan *wc, struct wh_op *op)
{
    sb_list_remove(&wc->ops, &op->link);
    op->wc = NULL;
}

/* Complete the queued sends of this turn (those queued from a completion
 * callback wait for the next one). stop() from a callback empties the
 * queue, which ends the loop; wc lives until the timer is closed. */
static void wh_on_kick(uv_timer_t *t)
{
    struct wh_chan *wc = t->data;
    size_t n = wc->nready;
    struct wh_op *op;

    while (n-- > 0 && (op = wc->ready_head) != NULL) {
        struct sb_send_result r = {SB_SEND_PERMFAIL, op->reason, NULL, -1, 0};

        wc->ready_head = op->next_ready;
        if (!wc->ready_head)
            wc->ready_tail = NULL;
        wc->nready--;
        wh_op_unlink(wc, op);
        op->done(op->msg, &r);
        free(op);
    }
    if (wc->ready_head && !uv_is_closing((uv_handle_t *)&wc->kick))
        uv_timer_start(&wc->kick, wh_on_kick, 0, 0);
}

/* Accept a send that fails PERMFAIL; it completes on a later turn. */
static void wh_op_queue(struct wh_chan *wc, struct wh_op *op,
                        const char *reason)
{
    op->queued = 1;
    op->reason = reason;
    op->next_ready = NULL;
    if (wc->ready_tail)
        wc->ready_tail->next_ready = op;
    else
        wc->ready_head = op;
    wc->ready_tail = op;
    wc->nready++;
    wh_op_link(wc, op);
    if (!uv_is_active((uv_handle_t *)&wc->kick))
        uv_timer_start(&wc->kick, wh_on_kick, 0, 0);
}

/* ---- rendering --------------------------------------------------------- */

static void wh_rfc3339(int64_t ms, char *out, size_t outlen)
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    size_t k;

    gmtime_r(&s, &tm);
    k = strftime(out, outlen, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + k, outlen - k, ".%03dZ", (int)(ms % 1000));
}

/* Add key: v when v is set. 0, or -1 when v is not UTF-8. */
static int wh_add(json_t *o, const char *key, const char *v)
{
    json_t *s;

    if (!v)
        return 0;
    s = json_string(v);
    if (!s)
        return -1;
    return json_object_set_new_nocheck(o, key, s);
}

static size_t wh_slen(const char *s)
{
    return s ? strlen(s) : 0;
}

/* Render msg's body into wc->body. Returns NULL and the length through
 * *len, or the PERMFAIL reason (static). */
static const char *wh_render(struct wh_chan *wc, const struct sb_outmsg *m,
                             int64_t now_ms, size_t *len)
{
    json_t *o;
    char sent_at[48];
    const char *why = NULL;
    size_t n;

    if (wh_slen(m->text) + wh_slen(m->html) + wh_slen(m->subject) +
            wh_slen(m->meta_json) >
        WH_MAX_BODY)
        return "message too large";
    o = json_object();
    if (!o)
        abort(); /* jansson only fails on OOM */
    if (wh_add(o, "id", m->id) || wh_add(o, "to", m->to) ||
        wh_add(o, "customer", m->customer) ||
        wh_add(o, "conversation", m->conversation) ||
        wh_add(o, "subject", m->subject) || wh_add(o, "text", m->text) ||
        wh_add(o, "html", m->html)) {
        why = "invalid utf-8";
        goto out;
    }
    if (m->meta_json) {
        json_t *meta = json_loads(m->meta_json, JSON_REJECT_DUPLICATES, NULL);

        if (!json_is_object(meta)) {
            json_decref(meta);
            why = "invalid meta_json";
            goto out;
        }
        json_object_set_new_nocheck(o, "notification", meta);
    }
    wh_rfc3339(now_ms, sent_at, sizeof(sent_at));
    wh_add(o, "sent_at", sent_at);
    n = json_dumpb(o, wc->body, wc->body_alloc, JSON_COMPACT);
    if (n > WH_MAX_BODY) {
        why = "message too large";
        goto out;
    }
    if (n > wc->body_alloc) {
        size_t a = wc->body_alloc;

        while (a < n)
            a *= 2;
        free(wc->body);
        wc->body = sb_malloc(a);
        wc->body_alloc = a;
        n = json_dumpb(o, wc->body, wc->body_alloc, JSON_COMPACT);
    }
    if (n == 0)
        why = "cannot encode"; /* jansson found nothing it could write */
    *len = n;
out:
    json_decref(o);
    return why;
}

/* NULL when id can go into a header, else the PERMFAIL reason. */
static const char *wh_check_id(const char *id)
{
    size_t n;

    if (!id || !id[0])
        return "no id";
    n = strlen(id);
    if (n > WH_ID_MAX || wh_has_ctl(id, 1))
        return "invalid id";
    return NULL;
}

/* ---- completion -------------------------------------------------------- */

static int wh_is_tempfail(long status)
{
    return status == 408 || status == 425 || status == 429 ||
           (status >= 500 && status <= 599);
}

/* The JSON "id" string of a 2xx body, or NULL. *doc holds what to free. */
static const char *wh_provider_id(const char *p, size_t n, json_t **doc)
{
    const char *id;

    *doc = NULL;
    while (n > 0 && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
        p++, n--;
    if (n == 0 || *p != '{')
        return NULL;
    *doc = json_loadb(p, n, 0, NULL);
    id = json_string_value(json_object_get(*doc, "id"));
    if (!id || !id[0] || strlen(id) > WH_PROVIDER_ID_MAX)
        return NULL;
    return id;
}

/* What either client answered, in one shape. */
struct wh_answer {
    long status; /* 0: no response, see fail */
    const char *body;
    size_t body_len;
    long long retry_after;
    const char *fail; /* the TEMPFAIL reason without a response */
    int cancelled;    /* the client was shut down under the send */
};

/* Complete an attached op with what came back. */
static void wh_finish(struct wh_chan *wc, struct wh_op *op,
                      const struct wh_answer *a)
{
    struct sb_send_result r = {SB_SEND_TEMPFAIL, NULL, NULL, -1, 0};
    char reason[32], id[80];
    json_t *doc = NULL;

    if (a->status == 0) {
        r.reason = a->fail;
        if (a->cancelled) {
            r.status = SB_SEND_CANCELLED;
            r.reason = "http client stopped";
        }
    } else {
        snprintf(reason, sizeof(reason), "http %ld", a->status);
        r.reason = reason;
        if (a->status >= 200 && a->status <= 299) {
            r.status = SB_SEND_OK;
            r.provider_id = wh_provider_id(a->body, a->body_len, &doc);
        } else if (wh_is_tempfail(a->status)) {
            if (a->retry_after >= 0)
                r.retry_after_ms = a->retry_after * 1000;
        } else if (a->status >= 300 && a->status <= 499) {
            r.status = SB_SEND_PERMFAIL;
        }
    }
    SB_DEBUG(WH_PLACE, "done id=%s status=%ld result=%s",
             sb_log_safe(op->msg->id, id, sizeof(id)), a->status, r.reason);
    wh_op_unlink(wc, op);
    op->done(op->msg, &r);
    json_decref(doc);
}

static void wh_on_httpc(const struct sb_httpc_resp *resp, void *arg)
{
    struct wh_op *op = arg;
    struct wh_answer a = {resp->status,      resp->body, resp->body_len,
                          resp->retry_after, NULL,       0};

    if (!op->wc) { /* stop() already cancelled it */
        free(op);
        return;
    }
    if (resp->status == 0) {
        const char *e = resp->error ? resp->error : "";

        if (strcmp(e, "cancelled") == 0)
            a.cancelled = 1;
        else if (strstr(e, "timed out") || strstr(e, "Timeout"))
            a.fail = "timeout";
        else if (strstr(e, "connect to") || strstr(e, "t connect") ||
                 strstr(e, "resolve"))
            a.fail = "connect failed";
        else
            a.fail = "network error";
    }
    wh_finish(op->wc, op, &a);
    free(op);
}

static void wh_on_hconn(const struct sb_hconn_resp *resp, void *arg)
{
    struct wh_op *op = arg;
    struct wh_chan *wc = op->wc;
    struct sb_hconn_pool *pool = op->pool;
    struct wh_answer a = {resp->status,      resp->body, resp->body_len,
                          resp->retry_after, NULL,       0};

    if (!wc) { /* stop() already cancelled it */
        free(op);
        return;
    }
    switch (resp->err) {
    case SB_HCONN_OK:
        break;
    case SB_HCONN_ETIMEOUT:
        a.fail = "timeout";
        break;
    case SB_HCONN_ERESOLVE:
    case SB_HCONN_ECONNECT:
        a.fail = "connect failed";
        break;
    case SB_HCONN_ECANCELLED:
        a.cancelled = 1;
        break;
    default: /* reset, early close, malformed, over 64 KiB */
        a.fail = "network error";
        break;
    }
    wh_finish(wc, op, &a);
    free(op);
    /* the completion may have stopped the driver: stop() empties the
     * retired list, so this finds nothing then */
    if (pool != wc->pool)
        wh_retired_check(wc, pool);
}

/* ---- send / stop ------------------------------------------------------- */

static int wh_send(struct sb_channel *ch, struct sb_outmsg *msg,
                   sb_send_done *done)
{
    struct wh_chan *wc = ch ? ch->priv : NULL;
    struct wh_op *op;
    const char *why;
    int64_t now;
    size_t len = 0;
    char ts[24], h_id[WH_ID_MAX + 32], h_ts[64], h_sig[128];
    char hex[crypto_auth_hmacsha256_BYTES * 2 + 1];
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_state st;
    int rc;

    if (!wc || !msg || !done || wc->ops.count >= wc->max_inflight)
        return -1;

    now = sb_now_ms();
    why = wh_check_id(msg->id);
    if (!why)
        why = wh_render(wc, msg, now, &len);
    if (why) {
        op = sb_calloc(1, sizeof(*op));
        op->wc = wc;
        op->msg = msg;
        op->done = done;
        wh_op_queue(wc, op, why);
        return 0;
    }
    /* hconn borrows the body until its callback: the op keeps a copy */
    op = sb_malloc(sizeof(*op) + (wc->pool ? len : 0));
    memset(op, 0, sizeof(*op));
    op->wc = wc;
    op->msg = msg;
    op->done = done;

    snprintf(ts, sizeof(ts), "%lld", (long long)(now / 1000));
    st = wc->mac0;
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)ts, strlen(ts));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)".", 1);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)wc->body, len);
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_memzero(&st, sizeof(st));
    sodium_bin2hex(hex, sizeof(hex), mac, sizeof(mac));

    if (wc->pool) {
        char hdrs[WH_ID_MAX + 640];
        struct sb_hconn_req req;

        snprintf(hdrs, sizeof(hdrs),
                 "Content-Type: application/json\r\n"
                 "X-Switchboard-Id: %s\r\n"
                 "X-Switchboard-Timestamp: %s\r\n"
                 "X-Switchboard-Signature: v1=%s\r\n%s%s",
                 msg->id, ts, hex, wc->ua_header ? wc->ua_header : "",
                 wc->ua_header ? "\r\n" : "");
        memcpy(op->body, wc->body, len);
        memset(&req, 0, sizeof(req));
        req.method = "POST";
        req.path = wc->path;
        req.headers = hdrs;
        req.body = op->body;
        req.body_len = len;
        req.timeout_ms = wc->timeout_ms;
        op->pool = wc->pool;
        rc = sb_hconn_request(wc->pool, &req, wh_on_hconn, op);
    } else {
        const char *headers[6];
        struct sb_httpc_req req;
        size_t k = 0;

        snprintf(h_id, sizeof(h_id), "X-Switchboard-Id: %s", msg->id);
        snprintf(h_ts, sizeof(h_ts), "X-Switchboard-Timestamp: %s", ts);
        snprintf(h_sig, sizeof(h_sig), "X-Switchboard-Signature: v1=%s", hex);
        headers[k++] = "Content-Type: application/json";
        headers[k++] = h_id;
        headers[k++] = h_ts;
        headers[k++] = h_sig;
        if (wc->ua_header)
            headers[k++] = wc->ua_header;
        headers[k] = NULL;

        memset(&req, 0, sizeof(req));
        req.method = "POST";
        req.url = wc->url;
        req.headers = headers;
        req.body = wc->body;
        req.body_len = len;
        req.timeout_ms = wc->timeout_ms;
        req.connect_timeout_ms = wc->connect_timeout_ms;
        req.max_body = WH_RESP_MAX;
        rc = sb_httpc_request(&req, wh_on_httpc, op);
    }
    if (wc->body_alloc > WH_BODY_KEEP) { /* the request has its own copy */
        free(wc->body);
        wc->body_alloc = WH_BODY_INIT;
        wc->body = sb_malloc(wc->body_alloc);
    }
    if (rc < 0) {
        free(op);
        return -1;
    }
    wh_op_link(wc, op);
    return 0;
}

static void wh_on_kick_closed(uv_handle_t *h)
{
    struct wh_chan *wc = h->data;

    sodium_memzero(&wc->mac0, sizeof(wc->mac0));
    free(wc->url);
    free(wc->ua_header);
    free(wc->body);
    free(wc->path);
    free(wc);
}

static void wh_stop(struct sb_channel *ch)
{
    struct wh_chan *wc = ch ? ch->priv : NULL;
    const struct sb_send_result r = {SB_SEND_CANCELLED, "channel stopped", NULL,
                                     -1, 0};
    struct wh_retired *ret;
    struct sb_hconn_pool *pool;
    size_t n = 0;

    if (!wc)
        return;
    ch->priv = NULL; /* a send() or stop() from a callback below is refused */
    uv_timer_stop(&wc->kick);
    wc->ready_head = wc->ready_tail = NULL;
    wc->nready = 0;
    while (wc->ops.head) {
        struct wh_op *op = sb_container_of(wc->ops.head, struct wh_op, link);
        struct sb_outmsg *msg = op->msg;
        sb_send_done *done = op->done;

        wh_op_unlink(wc, op); /* detached: its client's completion frees it */
        op->msg = NULL;
        op->done = NULL;
        if (op->queued)
            free(op); /* no request in flight */
        n++;
        done(msg, &r);
    }
    /* the pools cancel their requests now: those callbacks free the
     * detached ops */
    pool = wc->pool;
    wc->pool = NULL;
    sb_hconn_pool_close(pool);
    while ((ret = wc->retired) != NULL) {
        wc->retired = ret->next;
        sb_hconn_pool_close(ret->pool);
        free(ret);
    }
    uv_close((uv_handle_t *)&wc->kick, wh_on_kick_closed);
    SB_INFO(WH_PLACE, "stopped cancelled=%zu", n);
}

const struct sb_channel_ops sb_chan_webhook = {
    .name = "webhook",
    .conf = &wh_section,
    .start = wh_start,
    .send = wh_send,
    .stop = wh_stop,
    .reload = wh_reload,
    .flags = 0, /* a 2xx is final: no delivery reports */
};
