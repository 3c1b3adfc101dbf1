/* hconn.c - a lean keep-alive HTTP/1.1 client for one origin on the loop.
 *
 * httpc (libcurl) costs tens of microseconds of CPU per request; this is
 * the short road for plain http:// receivers on the hot path (webhooks):
 * a pool per origin, persistent connections, one allocation per request,
 * one writev per request, an incremental response parser working in place.
 *
 * Addresses. A literal IPv4 or IPv6 host is used as is. A name is resolved
 * once, when the pool is created, with uv_getaddrinfo (on the libuv thread
 * pool); requests wait in the queue meanwhile. A failed resolution fails
 * the waiting requests (SB_HCONN_ERESOLVE) and is tried again by the next
 * request. Up to HC_MAX_ADDRS addresses are kept: connections go to the
 * current one, and a failed connect moves to the next one (the same request
 * tries each address once before it fails with SB_HCONN_ECONNECT). To pick
 * up a DNS change, make a new pool (the webhook driver does on reload).
 *
 * Connections. Up to max_conns, TCP_NODELAY, one request in flight on each
 * (no pipelining). A request goes to an idle connection (the most recently
 * used one first, so a light load keeps few connections warm), else opens
 * a new connection bound to it while fewer than max_conns exist, else
 * waits in a FIFO queue (max_queue long; sb_hconn_request() refuses
 * beyond). A connection that finishes a response takes the head of the
 * queue before that response's callback runs, so FIFO order holds even when
 * callbacks submit more. An idle connection is closed after
 * idle_timeout_ms, or at once when the server closes it or sends anything.
 *
 * Reuse. A connection is kept after a response only when the response was
 * complete and framed (Content-Length, chunked, or none for HEAD, 1xx, 204,
 * 304), keep-alive holds (HTTP/1.1 unless "Connection: close"; HTTP/1.0
 * only with "Connection: keep-alive"), nothing followed the response, and
 * the request had been written out in full. A response framed by the end
 * of the connection is read to EOF and the connection closed. Interim 1xx
 * responses are skipped; 101 is malformed (we never ask to upgrade).
 *
 * Stale connections. A server may close an idle keep-alive connection at
 * the moment we send on it. When a request on a reused connection meets
 * EOF, ECONNRESET or EPIPE before any byte of its response, it is sent
 * again, once, on a new connection (not another idle one: those may be
 * just as stale). That is safe in the sense that matters here: nothing
 * came back, and the server closed without answering; the receiver may
 * still have acted on the first copy, which at-least-once delivery allows
 * (webhook receivers dedupe on the attempt id).
 *
 * Timeouts. Each request has one deadline, counted from the request call:
 * queueing, connecting, writing and reading all count. Queued requests are
 * watched by one pool timer armed at the earliest deadline; a request on a
 * connection by that connection's timer (which also bounds the connect with
 * connect_timeout_ms and closes idle connections). A timeout closes the
 * connection: a late response must not be taken for the next request's.
 *
 * Memory. The request struct is the only allocation per request: it holds
 * the request head (request line, Host, Content-Length, the caller's
 * header lines) built once; the body is borrowed from the caller until the
 * callback and written with the head as one uv_write of two buffers. Each
 * connection owns a 16 KiB read buffer and reuses its line and body
 * buffers (the body buffer is reset when the next response starts, so the
 * callback may read it while the connection already carries the next
 * request). Header lines are parsed in place when a read holds them whole.
 * Bounds: a line HC_LINE_MAX, the header block HC_HEAD_MAX, the body
 * max_body (beyond: SB_HCONN_ETOOBIG and the connection is closed).
 *
 * Completion. Every accepted request gets exactly one callback, never
 * inside sb_hconn_request(): errors found during that call (a connect or
 * write refused at once) go to a deferred list run by a zero-delay timer.
 * Before a failed request's callback its connection is closed, so no
 * pending write still points at the caller's body. sb_hconn_pool_close()
 * closes every connection first, then cancels in-flight, queued and
 * deferred requests; the pool struct is freed when the last handle's close
 * callback has run.
 *
 * Logging: connect failures and protocol errors are logged at most once
 * per HC_WARN_EVERY_MS per pool (with how many were not), so a dead
 * receiver at thousands of requests a second does not flood the journal;
 * every outcome still reaches its callback. No path, header or body is
 * ever logged.
 */
#include "hconn.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "list.h"
#include "log.h"
#include "util.h"

#define HC_PLACE "core.hconn"
#define HC_DEF_MAX_CONNS 64
#define HC_DEF_MAX_QUEUE 10000
#define HC_DEF_MAX_BODY (64u << 10)
#define HC_DEF_CONNECT_MS 5000L
#define HC_DEF_IDLE_MS 60000L
#define HC_DEF_TIMEOUT_MS 30000L
#define HC_RBUF 16384
#define HC_LINE_MAX 8192
#define HC_HEAD_MAX (64u << 10)
#define HC_HOST_MAX 256
#define HC_MAX_ADDRS 8
#define HC_WARN_EVERY_MS 10000

enum hc_pool_state { HC_UNRESOLVED, HC_RESOLVING, HC_READY };

enum hc_conn_state { HC_CONNECTING, HC_BUSY, HC_IDLE, HC_CLOSING };

/* Where a request is: which list or connection holds it. */
enum hc_where { HC_NOWHERE, HC_QUEUED, HC_ON_CONN, HC_DEFERRED };

/* Response parser states. */
enum hc_rstate {
    R_START,      /* nothing of the response seen yet */
    R_STATUS,     /* status line */
    R_HEADER,     /* header lines */
    R_BODY_LEN,   /* Content-Length bytes */
    R_BODY_EOF,   /* body up to the end of the connection */
    R_CHUNK_SIZE, /* chunk-size line */
    R_CHUNK_DATA, /* chunk data */
    R_CHUNK_END,  /* CRLF after chunk data */
    R_TRAILER,    /* trailer lines after the last chunk */
    R_DONE
};

/* How a failed request may be sent again. */
enum hc_retry { HC_NO_RETRY, HC_RETRY_STALE, HC_RETRY_NEXT_ADDR };

struct hc_conn;

struct hc_req {
    struct sb_list_node link; /* in the queue or the deferred list */
    struct hc_conn *conn;     /* when on a connection */
    sb_hconn_cb *cb;
    void *arg;
    const char *body; /* borrowed until the callback */
    size_t body_len;
    uint64_t deadline; /* uv_now() ms */
    enum hc_where where;
    int retried;            /* the stale retry was used */
    int head_method;        /* HEAD: no response body */
    size_t addr_tries;      /* addresses tried for its connection */
    enum sb_hconn_err derr; /* deferred outcome */
    const char *dmsg;
    size_t head_len;
    char head[]; /* the request head, built once */
};

struct hc_conn {
    uv_tcp_t tcp;
    uv_timer_t timer; /* connect, request deadline or idle timeout */
    uv_connect_t connect;
    uv_write_t write;
    struct sb_hconn_pool *pool;
    struct sb_list_node link;      /* pool->conns (not closing) */
    struct sb_list_node idle_link; /* pool->idle */
    struct hc_req *req;
    enum hc_conn_state state;
    int writing;        /* a uv_write is pending */
    int nclose;         /* handles whose close callback is still due */
    unsigned long nreq; /* responses completed on it */
    /* the response being parsed */
    enum hc_rstate rstate;
    int status;
    int http10;
    int conn_close;
    int conn_keepalive;
    int chunked;
    int te_other; /* Transfer-Encoding that does not end in chunked */
    int has_len;
    unsigned long long clen;
    unsigned long long remain;
    long long retry_after;
    size_t resp_bytes;  /* bytes of this response received */
    size_t head_bytes;  /* header bytes of this response */
    struct sb_buf line; /* a line split across reads */
    struct sb_buf body;
    char rbuf[HC_RBUF];
};

struct sb_hconn_pool {
    uv_loop_t *loop;
    uv_timer_t kick;   /* runs the deferred completions */
    uv_timer_t qtimer; /* deadlines of queued requests */
    uv_getaddrinfo_t gai;
    struct sb_hconn_opts o;
    char host[HC_HOST_MAX];
    int port;
    char *hosthdr; /* "Host: ...\r\n" */
    size_t hosthdr_len;
    struct sockaddr_storage addrs[HC_MAX_ADDRS];
    size_t naddrs;
    size_t addr_next;
    enum hc_pool_state state;
    int closed;
    int resolving;
    size_t refs; /* open handles, live connections, a pending resolve */
    struct sb_list conns;    /* struct hc_conn, newest first */
    struct sb_list idle;     /* struct hc_conn, most recently used first */
    struct sb_list queue;    /* struct hc_req, FIFO */
    struct sb_list deferred; /* struct hc_req, FIFO */
    size_t pending;
    uint64_t qdeadline; /* when qtimer fires, 0 = not armed */
    unsigned long long connects, retries, requests;
    uint64_t warn_at; /* next time a warning may be logged */
    unsigned long warn_skipped;
    int connect_ok; /* the last connect succeeded */
};

/* ---- small helpers ------------------------------------------------------ */

/* The request at the head of l (the queue or the deferred list), or NULL;
 * it stays on the list. */
static struct hc_req *req_first(const struct sb_list *l)
{
    return l->head ? sb_container_of(l->head, struct hc_req, link) : NULL;
}

/* The most recently used idle connection, or NULL. */
static struct hc_conn *idle_first(const struct sb_list *l)
{
    return l->head ? sb_container_of(l->head, struct hc_conn, idle_link) : NULL;
}

/* Log a warning unless one was logged less than HC_WARN_EVERY_MS ago. */
static void hc_warn(struct sb_hconn_pool *p, const char *what,
                    const char *detail)
{
    uint64_t now = uv_now(p->loop);
    char host[HC_HOST_MAX];

    if (now < p->warn_at) {
        p->warn_skipped++;
        return;
    }
    SB_WARN(HC_PLACE, "%s host=%s port=%d reason=\"%s\" suppressed=%lu", what,
            sb_log_safe(p->host, host, sizeof(host)), p->port, detail,
            p->warn_skipped);
    p->warn_at = now + HC_WARN_EVERY_MS;
    p->warn_skipped = 0;
}

static int is_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch >= '0' && ch <= '9') || strchr("!#$%&'*+-.^_`|~", ch);
}

/* An HTTP method we send: letters only, like httpc. */
static int method_ok(const char *m)
{
    size_t n = 0;

    if (!m)
        return 0;
    for (; m[n]; n++)
        if (!((m[n] >= 'A' && m[n] <= 'Z') || (m[n] >= 'a' && m[n] <= 'z')))
            return 0;
    return n > 0 && n <= 16;
}

/* Origin-form target: "/" then visible ASCII only. */
static int path_ok(const char *p)
{
    if (!p || p[0] != '/')
        return 0;
    for (const unsigned char *s = (const unsigned char *)p; *s; s++)
        if (*s <= 0x20 || *s >= 0x7f)
            return 0;
    return 1;
}

static int name_is(const char *name, size_t n, const char *want)
{
    return strlen(want) == n && strncasecmp(name, want, n) == 0;
}

/* The caller's header block: lines "Name: value\r\n", token names, no
 * control characters but HTAB in values, none of the headers the pool
 * writes itself. */
static int headers_ok(const char *h)
{
    static const char *const own[] = {
        "host", "content-length", "transfer-encoding", "connection", "expect"};

    if (!h)
        return 1;
    while (*h) {
        const char *colon = h;
        const unsigned char *v;

        while (is_tchar((unsigned char)*colon))
            colon++;
        if (*colon != ':' || colon == h)
            return 0;
        for (size_t i = 0; i < SB_ARRAY_LEN(own); i++)
            if (name_is(h, (size_t)(colon - h), own[i]))
                return 0;
        for (v = (const unsigned char *)colon + 1; *v && *v != '\r'; v++)
            if ((*v < 0x20 && *v != '\t') || *v == 0x7f)
                return 0;
        if (v[0] != '\r' || v[1] != '\n')
            return 0;
        h = (const char *)v + 2;
    }
    return 1;
}

/* Retry-After as an HTTP-date (RFC 9110 5.6.7: IMF-fixdate, RFC 850 or
 * asctime form), in the C locale whatever the process's is. -1 if not. */
static time_t http_date(const char *s)
{
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    struct tm tm;
    char mon[4];
    int day, year, hh, mm, ss, used = -1;
    size_t n = strlen(s);
    const char *m;

    memset(&tm, 0, sizeof(tm));
    if (sscanf(s, "%*[A-Za-z], %2d %3[A-Za-z] %4d %2d:%2d:%2d GMT%n", &day, mon,
               &year, &hh, &mm, &ss, &used) == 6 &&
        (size_t)used == n) {
        /* IMF-fixdate */
    } else if (sscanf(s, "%*[A-Za-z], %2d-%3[A-Za-z]-%2d %2d:%2d:%2d GMT%n",
                      &day, mon, &year, &hh, &mm, &ss, &used) == 6 &&
               (size_t)used == n) {
        year += year < 70 ? 2000 : 1900; /* RFC 850's two-digit year */
    } else if (sscanf(s, "%*[A-Za-z] %3[A-Za-z] %2d %2d:%2d:%2d %4d%n", mon,
                      &day, &hh, &mm, &ss, &year, &used) == 6 &&
               (size_t)used == n) {
        /* asctime */
    } else {
        return -1;
    }
    if (strlen(mon) != 3 || !(m = strstr(months, mon)) ||
        (m - months) % 3 != 0 || day < 1 || day > 31 || year < 1970 ||
        hh > 23 || mm > 59 || ss > 60 || hh < 0 || mm < 0 || ss < 0)
        return -1;
    tm.tm_mday = day;
    tm.tm_mon = (int)((m - months) / 3);
    tm.tm_year = year - 1900;
    tm.tm_hour = hh;
    tm.tm_min = mm;
    tm.tm_sec = ss;
    return timegm(&tm);
}

/* Retry-After: delay-seconds or an HTTP-date (a past date is 0); -1 when
 * it is neither. v is trimmed. */
static long long parse_retry_after(const char *v, size_t n)
{
    char buf[64];
    long long secs;
    time_t when, now;

    if (n == 0 || n >= sizeof(buf))
        return -1;
    memcpy(buf, v, n);
    buf[n] = '\0';
    if (buf[0] >= '0' && buf[0] <= '9') {
        if (strspn(buf, "0123456789") != n)
            return -1;
        if (sb_parse_ll(buf, &secs) == 0)
            return secs;
        return 1000000000LL; /* absurdly long: clamp, not fail */
    }
    when = http_date(buf);
    if (when == (time_t)-1)
        return -1;
    now = time(NULL);
    return when > now ? (long long)(when - now) : 0;
}

/* ---- completion --------------------------------------------------------- */

static void hc_complete(struct sb_hconn_pool *p, struct hc_req *r,
                        const struct sb_hconn_resp *resp)
{
    p->pending--;
    r->cb(resp, r->arg);
    free(r);
}

static void hc_fail(struct sb_hconn_pool *p, struct hc_req *r,
                    enum sb_hconn_err err, const char *msg)
{
    struct sb_hconn_resp resp = {0, "", 0, -1, err, msg};

    hc_complete(p, r, &resp);
}

static void on_kick(uv_timer_t *t);

/* Complete r with err from a later loop pass (msg must be static). */
static void hc_defer(struct sb_hconn_pool *p, struct hc_req *r,
                     enum sb_hconn_err err, const char *msg)
{
    r->where = HC_DEFERRED;
    r->derr = err;
    r->dmsg = msg;
    sb_list_push_back(&p->deferred, &r->link);
    if (!p->closed && !uv_is_active((uv_handle_t *)&p->kick))
        uv_timer_start(&p->kick, on_kick, 0, 0);
}

/* Callbacks may close the pool, which empties the list. */
static void hc_run_deferred(struct sb_hconn_pool *p)
{
    struct hc_req *r;

    while (!p->closed && (r = req_first(&p->deferred)) != NULL) {
        sb_list_remove(&p->deferred, &r->link);
        r->where = HC_NOWHERE;
        hc_fail(p, r, r->derr, r->dmsg);
    }
}

static void on_kick(uv_timer_t *t)
{
    hc_run_deferred(t->data);
}

/* ---- pool references ---------------------------------------------------- */

static void hc_pool_unref(struct sb_hconn_pool *p)
{
    if (--p->refs == 0 && p->closed) {
        free(p->hosthdr);
        free(p);
    }
}

static void on_pool_handle_closed(uv_handle_t *h)
{
    hc_pool_unref(h->data);
}

/* ---- connections -------------------------------------------------------- */

static void hc_dispatch(struct sb_hconn_pool *p);

static void on_conn_closed(uv_handle_t *h)
{
    struct hc_conn *c = h->data;
    struct sb_hconn_pool *p = c->pool;

    if (--c->nclose > 0)
        return;
    sb_buf_free(&c->line);
    sb_buf_free(&c->body);
    free(c);
    hc_pool_unref(p);
}

static void idle_remove(struct sb_hconn_pool *p, struct hc_conn *c)
{
    sb_list_remove(&p->idle, &c->idle_link);
}

/* Close c (its request, if any, must have been detached). Its memory goes
 * in the last close callback; libuv cancels a pending connect or write
 * before that. */
static void hc_conn_close(struct hc_conn *c)
{
    struct sb_hconn_pool *p = c->pool;

    if (c->state == HC_CLOSING)
        return;
    if (c->state == HC_IDLE)
        idle_remove(p, c);
    sb_list_remove(&p->conns, &c->link);
    c->state = HC_CLOSING;
    c->nclose = 2;
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
    uv_close((uv_handle_t *)&c->timer, on_conn_closed);
}

static void hc_detach(struct hc_conn *c)
{
    if (c->req) {
        c->req->conn = NULL;
        c->req->where = HC_NOWHERE;
        c->req = NULL;
    }
}

static uint64_t hc_left(struct sb_hconn_pool *p, uint64_t deadline)
{
    uint64_t now = uv_now(p->loop);

    return deadline > now ? deadline - now : 0;
}

static void on_conn_timer(uv_timer_t *t);
static void on_connect(uv_connect_t *cr, int status);
static void on_write(uv_write_t *w, int status);

/* Open a connection bound to r. 0, or a uv error (r left detached). */
static int hc_conn_open(struct sb_hconn_pool *p, struct hc_req *r)
{
    struct hc_conn *c = sb_calloc(1, sizeof(*c));
    const struct sockaddr *sa;
    uint64_t left;
    int rc;

    rc = uv_tcp_init(p->loop, &c->tcp);
    if (rc < 0) {
        free(c);
        return rc;
    }
    uv_timer_init(p->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->pool = p;
    sb_buf_init(&c->line, HC_LINE_MAX);
    sb_buf_init(&c->body, p->o.max_body);
    sb_list_push_front(&p->conns, &c->link);
    p->refs++;
    p->connects++;
    c->state = HC_CONNECTING;
    c->req = r;
    r->conn = c;
    r->where = HC_ON_CONN;
    uv_tcp_nodelay(&c->tcp, 1); /* applied when the socket is made */
    sa = (const struct sockaddr *)&p->addrs[p->addr_next % p->naddrs];
    rc = uv_tcp_connect(&c->connect, &c->tcp, sa, on_connect);
    if (rc < 0) {
        hc_detach(c);
        hc_conn_close(c);
        return rc;
    }
    left = hc_left(p, r->deadline);
    if ((uint64_t)p->o.connect_timeout_ms < left)
        left = (uint64_t)p->o.connect_timeout_ms;
    uv_timer_start(&c->timer, on_conn_timer, left, 0);
    return 0;
}

/* Write c's request. 0, or a uv error (nothing written, state unchanged
 * but for the request staying attached). */
static int hc_conn_send(struct hc_conn *c)
{
    struct hc_req *r = c->req;
    uv_buf_t bufs[2];
    int rc;

    bufs[0] = uv_buf_init(r->head, (unsigned)r->head_len);
    bufs[1] = uv_buf_init((char *)r->body, (unsigned)r->body_len);
    rc = uv_write(&c->write, (uv_stream_t *)&c->tcp, bufs, r->body_len ? 2 : 1,
                  on_write);
    if (rc < 0)
        return rc;
    c->writing = 1;
    c->state = HC_BUSY;
    c->rstate = R_START;
    c->resp_bytes = 0;
    uv_timer_start(&c->timer, on_conn_timer, hc_left(c->pool, r->deadline), 0);
    return 0;
}

static void hc_conn_idle(struct hc_conn *c)
{
    struct sb_hconn_pool *p = c->pool;

    c->state = HC_IDLE;
    sb_list_push_front(&p->idle, &c->idle_link);
    uv_timer_start(&c->timer, on_conn_timer, (uint64_t)p->o.idle_timeout_ms, 0);
}

/* The request on c failed: close c, then send the request again when the
 * failure allows it, else complete it with err. Runs in loop callbacks
 * only (never inside sb_hconn_request), so it may complete directly. */
static void hc_conn_fail(struct hc_conn *c, enum sb_hconn_err err,
                         const char *msg, enum hc_retry retry)
{
    struct sb_hconn_pool *p = c->pool;
    struct hc_req *r = c->req;
    int reused = c->nreq > 0;

    hc_detach(c);
    hc_conn_close(c);
    if (r && retry == HC_RETRY_STALE && reused && !r->retried) {
        r->retried = 1;
        p->retries++;
        SB_DEBUG(HC_PLACE, "stale connection, sending again port=%d", p->port);
        if (hc_conn_open(p, r) == 0) {
            hc_dispatch(p);
            return;
        }
        err = SB_HCONN_ECONNECT;
        msg = "connect failed";
    } else if (r && retry == HC_RETRY_NEXT_ADDR &&
               r->addr_tries + 1 < p->naddrs && hc_left(p, r->deadline) > 0) {
        r->addr_tries++;
        if (hc_conn_open(p, r) == 0) {
            hc_dispatch(p);
            return;
        }
    }
    hc_dispatch(p);
    if (r)
        hc_fail(p, r, err, msg);
}

static void on_conn_timer(uv_timer_t *t)
{
    struct hc_conn *c = t->data;
    struct sb_hconn_pool *p = c->pool;

    switch (c->state) {
    case HC_IDLE:
        SB_DEBUG(HC_PLACE, "idle connection closed port=%d", p->port);
        hc_conn_close(c);
        break;
    case HC_CONNECTING:
        if (hc_left(p, c->req->deadline) == 0) {
            hc_conn_fail(c, SB_HCONN_ETIMEOUT, "timeout", HC_NO_RETRY);
        } else {
            hc_warn(p, "connect failed", "connect timed out");
            p->connect_ok = 0;
            p->addr_next++;
            hc_conn_fail(c, SB_HCONN_ECONNECT, "connect timed out",
                         HC_RETRY_NEXT_ADDR);
        }
        break;
    case HC_BUSY:
        hc_conn_fail(c, SB_HCONN_ETIMEOUT, "timeout", HC_NO_RETRY);
        break;
    case HC_CLOSING:
        break;
    }
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct hc_conn *c = h->data;

    *buf = uv_buf_init(c->rbuf, sizeof(c->rbuf));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void on_connect(uv_connect_t *cr, int status)
{
    struct hc_conn *c = cr->handle->data;
    struct sb_hconn_pool *p = c->pool;
    char why[96];
    int rc;

    if (c->state == HC_CLOSING)
        return; /* closed under the connect (UV_ECANCELED) */
    if (status < 0) {
        snprintf(why, sizeof(why), "connect failed: %s", uv_strerror(status));
        hc_warn(p, "connect failed", uv_strerror(status));
        p->connect_ok = 0;
        p->addr_next++;
        hc_conn_fail(c, SB_HCONN_ECONNECT, why, HC_RETRY_NEXT_ADDR);
        return;
    }
    if (!p->connect_ok) {
        p->connect_ok = 1;
        SB_INFO(HC_PLACE, "connected port=%d", p->port);
    }
    rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (rc == 0)
        rc = hc_conn_send(c);
    if (rc < 0) {
        snprintf(why, sizeof(why), "network error: %s", uv_strerror(rc));
        hc_conn_fail(c, SB_HCONN_ENETWORK, why, HC_NO_RETRY);
    }
}

static void on_write(uv_write_t *w, int status)
{
    struct hc_conn *c = w->handle->data;
    char why[96];

    if (c->state == HC_CLOSING)
        return;
    c->writing = 0;
    if (status >= 0 || c->state != HC_BUSY)
        return;
    if (c->resp_bytes > 0) {
        /* the server answered early and stopped reading: take the
         * answer, then close (hc_conn_done sees writing was cut short) */
        c->conn_close = 1;
        return;
    }
    snprintf(why, sizeof(why), "network error: %s", uv_strerror(status));
    hc_conn_fail(c, SB_HCONN_ENETWORK, why,
                 status == UV_EPIPE || status == UV_ECONNRESET ? HC_RETRY_STALE
                                                               : HC_NO_RETRY);
}

/* ---- the response parser ------------------------------------------------ */

/* Trim spaces and tabs around [*s, *s + *n). */
static void trim(const char **s, size_t *n)
{
    while (*n > 0 && (**s == ' ' || **s == '\t'))
        (*s)++, (*n)--;
    while (*n > 0 && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t'))
        (*n)--;
}

/* Does the comma-separated list v contain token tok? */
static int has_token(const char *v, size_t n, const char *tok)
{
    while (n > 0) {
        const char *comma = memchr(v, ',', n);
        size_t k = comma ? (size_t)(comma - v) : n;
        const char *t = v;
        size_t tn = k;

        trim(&t, &tn);
        if (name_is(t, tn, tok))
            return 1;
        if (!comma)
            break;
        v += k + 1;
        n -= k + 1;
    }
    return 0;
}

static enum sb_hconn_err hc_status_line(struct hc_conn *c, const char *l,
                                        size_t n)
{
    if (n < 12 || memcmp(l, "HTTP/1.", 7) != 0 ||
        (l[7] != '0' && l[7] != '1') || l[8] != ' ' || l[9] < '1' ||
        l[9] > '9' || l[10] < '0' || l[10] > '9' || l[11] < '0' ||
        l[11] > '9' || (n > 12 && l[12] != ' '))
        return SB_HCONN_EPROTO;
    c->http10 = l[7] == '0';
    c->status = (l[9] - '0') * 100 + (l[10] - '0') * 10 + (l[11] - '0');
    c->conn_close = c->conn_keepalive = 0;
    c->chunked = c->te_other = c->has_len = 0;
    c->clen = 0;
    c->retry_after = -1;
    c->rstate = R_HEADER;
    return SB_HCONN_OK;
}

static enum sb_hconn_err hc_header_line(struct hc_conn *c, const char *l,
                                        size_t n)
{
    const char *colon = memchr(l, ':', n);
    const char *v;
    size_t nn, vn;

    if (!colon || colon == l)
        return SB_HCONN_EPROTO; /* also obs-fold: never sent by servers
                                   worth keeping a connection to */
    nn = (size_t)(colon - l);
    for (size_t i = 0; i < nn; i++)
        if (!is_tchar((unsigned char)l[i]))
            return SB_HCONN_EPROTO;
    v = colon + 1;
    vn = n - nn - 1;
    trim(&v, &vn);
    if (name_is(l, nn, "content-length")) {
        unsigned long long len = 0;

        if (vn == 0 || vn > 18)
            return SB_HCONN_EPROTO;
        for (size_t i = 0; i < vn; i++) {
            if (v[i] < '0' || v[i] > '9')
                return SB_HCONN_EPROTO;
            len = len * 10 + (unsigned)(v[i] - '0');
        }
        if (c->has_len && c->clen != len)
            return SB_HCONN_EPROTO;
        c->has_len = 1;
        c->clen = len;
    } else if (name_is(l, nn, "transfer-encoding")) {
        const char *last = v;
        size_t ln = vn;

        for (size_t i = vn; i > 0; i--)
            if (v[i - 1] == ',') {
                last = v + i;
                ln = vn - i;
                break;
            }
        trim(&last, &ln);
        c->chunked = name_is(last, ln, "chunked");
        c->te_other = !c->chunked;
    } else if (name_is(l, nn, "connection")) {
        if (has_token(v, vn, "close"))
            c->conn_close = 1;
        if (has_token(v, vn, "keep-alive"))
            c->conn_keepalive = 1;
    } else if (name_is(l, nn, "retry-after")) {
        c->retry_after = parse_retry_after(v, vn);
    }
    return SB_HCONN_OK;
}

/* The empty line after the headers: choose how the body is framed. */
static enum sb_hconn_err hc_headers_done(struct hc_conn *c)
{
    size_t cap = c->pool->o.max_body;

    if (c->status < 200) {
        if (c->status == 101)
            return SB_HCONN_EPROTO;
        c->rstate = R_STATUS; /* interim: the real response follows */
        return SB_HCONN_OK;
    }
    if (c->http10 && !c->conn_keepalive)
        c->conn_close = 1;
    if (c->req->head_method || c->status == 204 || c->status == 304) {
        c->rstate = R_DONE;
    } else if (c->chunked) {
        if (c->has_len)
            c->conn_close = 1; /* RFC 9112 6.3: do not trust the framing */
        c->rstate = R_CHUNK_SIZE;
    } else if (c->te_other || !c->has_len) {
        c->conn_close = 1;
        c->rstate = R_BODY_EOF;
    } else if (c->clen > cap) {
        return SB_HCONN_ETOOBIG;
    } else {
        c->remain = c->clen;
        c->rstate = c->clen ? R_BODY_LEN : R_DONE;
    }
    return SB_HCONN_OK;
}

static enum sb_hconn_err hc_chunk_size(struct hc_conn *c, const char *l,
                                       size_t n)
{
    unsigned long long size = 0;
    size_t i = 0;

    for (; i < n; i++) {
        char ch = l[i];
        int d;

        if (ch >= '0' && ch <= '9')
            d = ch - '0';
        else if (ch >= 'a' && ch <= 'f')
            d = ch - 'a' + 10;
        else if (ch >= 'A' && ch <= 'F')
            d = ch - 'A' + 10;
        else
            break;
        if (i >= 15)
            return SB_HCONN_EPROTO;
        size = size * 16 + (unsigned)d;
    }
    if (i == 0 || (i < n && l[i] != ';' && l[i] != ' ' && l[i] != '\t'))
        return SB_HCONN_EPROTO;
    if (size == 0) {
        c->rstate = R_TRAILER;
        return SB_HCONN_OK;
    }
    if (size > c->pool->o.max_body - c->body.len)
        return SB_HCONN_ETOOBIG;
    c->remain = size;
    c->rstate = R_CHUNK_DATA;
    return SB_HCONN_OK;
}

/* One complete line (CRLF or LF removed) in a line state. */
static enum sb_hconn_err hc_line(struct hc_conn *c, const char *l, size_t n)
{
    switch (c->rstate) {
    case R_STATUS:
        if (n == 0 && c->head_bytes <= 2)
            return SB_HCONN_OK; /* RFC 9112 2.2: a stray CRLF first */
        return hc_status_line(c, l, n);
    case R_HEADER:
        return n == 0 ? hc_headers_done(c) : hc_header_line(c, l, n);
    case R_CHUNK_SIZE:
        return hc_chunk_size(c, l, n);
    case R_CHUNK_END:
        if (n != 0)
            return SB_HCONN_EPROTO;
        c->rstate = R_CHUNK_SIZE;
        return SB_HCONN_OK;
    case R_TRAILER:
        if (n == 0)
            c->rstate = R_DONE;
        return SB_HCONN_OK;
    default:
        return SB_HCONN_EPROTO;
    }
}

/* Feed n bytes of the response. Stops at R_DONE; *used says how many bytes
 * were taken. */
static enum sb_hconn_err hc_parse(struct hc_conn *c, const char *p, size_t n,
                                  size_t *used)
{
    const char *s = p, *end = p + n;
    enum sb_hconn_err err = SB_HCONN_OK;

    while (s < end && c->rstate != R_DONE && err == SB_HCONN_OK) {
        size_t avail = (size_t)(end - s);

        switch (c->rstate) {
        case R_BODY_LEN:
        case R_CHUNK_DATA: {
            size_t take = avail < c->remain ? avail : (size_t)c->remain;

            if (sb_buf_append(&c->body, s, take) < 0)
                return SB_HCONN_ETOOBIG;
            s += take;
            c->remain -= take;
            if (c->remain == 0)
                c->rstate = c->rstate == R_BODY_LEN ? R_DONE : R_CHUNK_END;
            break;
        }
        case R_BODY_EOF:
            if (sb_buf_append(&c->body, s, avail) < 0)
                return SB_HCONN_ETOOBIG;
            s = end;
            break;
        default: { /* a line state */
            const char *nl = memchr(s, '\n', avail);
            size_t take = nl ? (size_t)(nl - s) + 1 : avail;
            const char *l;
            size_t ln;

            if (c->rstate == R_STATUS || c->rstate == R_HEADER ||
                c->rstate == R_TRAILER) {
                c->head_bytes += take;
                if (c->head_bytes > HC_HEAD_MAX)
                    return SB_HCONN_EPROTO;
            }
            if (!nl || c->line.len > 0) {
                if (sb_buf_append(&c->line, s, take) < 0)
                    return SB_HCONN_EPROTO;
                s += take;
                if (!nl)
                    break;
                l = c->line.data;
                ln = c->line.len;
            } else {
                l = s; /* the whole line is here: parse it in place */
                ln = take;
                s += take;
            }
            ln--; /* the LF */
            if (ln > 0 && l[ln - 1] == '\r')
                ln--;
            err = hc_line(c, l, ln);
            sb_buf_reset(&c->line);
            break;
        }
        }
    }
    *used = (size_t)(s - p);
    return err;
}

/* c's response is complete: keep or close c, hand queued work on, then
 * the callback (the body stays in c until its next response starts). */
static void hc_conn_done(struct hc_conn *c, int trailing)
{
    struct sb_hconn_pool *p = c->pool;
    struct hc_req *r = c->req;
    struct sb_hconn_resp resp;

    hc_detach(c);
    c->nreq++;
    p->requests++;
    resp.status = c->status;
    resp.body = c->body.len ? c->body.data : "";
    resp.body_len = c->body.len;
    resp.retry_after = c->retry_after;
    resp.err = SB_HCONN_OK;
    resp.error = NULL;
    if (c->conn_close || c->writing || trailing)
        hc_conn_close(c);
    else
        hc_conn_idle(c);
    hc_dispatch(p);
    hc_complete(p, r, &resp);
}

/* EOF or a read error on c. */
static void hc_conn_eof(struct hc_conn *c, ssize_t nread)
{
    struct sb_hconn_pool *p = c->pool;
    char why[96];

    if (c->state != HC_BUSY) {
        SB_DEBUG(HC_PLACE, "idle connection closed by peer port=%d", p->port);
        hc_conn_close(c);
        return;
    }
    if (nread == UV_EOF && c->rstate == R_BODY_EOF) {
        c->conn_close = 1;
        hc_conn_done(c, 0);
        return;
    }
    if (c->resp_bytes == 0 &&
        (nread == UV_EOF || nread == UV_ECONNRESET || nread == UV_EPIPE)) {
        hc_conn_fail(c, SB_HCONN_ENETWORK,
                     nread == UV_EOF ? "connection closed" : "connection reset",
                     HC_RETRY_STALE);
        return;
    }
    if (nread == UV_EOF)
        snprintf(why, sizeof(why), "connection closed in the response");
    else
        snprintf(why, sizeof(why), "network error: %s",
                 uv_strerror((int)nread));
    hc_conn_fail(c, SB_HCONN_ENETWORK, why, HC_NO_RETRY);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct hc_conn *c = s->data;
    enum sb_hconn_err err;
    size_t used = 0;

    if (c->state == HC_CLOSING || nread == 0)
        return;
    if (nread < 0) {
        hc_conn_eof(c, nread);
        return;
    }
    if (c->state != HC_BUSY) {
        SB_DEBUG(HC_PLACE, "unexpected bytes on an idle connection port=%d",
                 c->pool->port);
        hc_conn_close(c);
        return;
    }
    if (c->rstate == R_START) {
        sb_buf_reset(&c->line);
        sb_buf_reset(&c->body);
        c->head_bytes = 0;
        c->rstate = R_STATUS;
    }
    c->resp_bytes += (size_t)nread;
    err = hc_parse(c, buf->base, (size_t)nread, &used);
    if (err == SB_HCONN_EPROTO) {
        hc_warn(c->pool, "malformed response", "bad status line or header");
        hc_conn_fail(c, err, "malformed response", HC_NO_RETRY);
    } else if (err == SB_HCONN_ETOOBIG) {
        hc_conn_fail(c, err, "response body too large", HC_NO_RETRY);
    } else if (c->rstate == R_DONE) {
        hc_conn_done(c, used < (size_t)nread);
    }
}

/* ---- the queue ---------------------------------------------------------- */

static void on_qtimer(uv_timer_t *t);

static void hc_qtimer_arm(struct sb_hconn_pool *p, uint64_t deadline)
{
    if (p->closed || (p->qdeadline && p->qdeadline <= deadline))
        return;
    p->qdeadline = deadline;
    uv_timer_start(&p->qtimer, on_qtimer, hc_left(p, deadline), 0);
}

/* Fail the queued requests whose deadline passed, re-arm for the rest. */
static void on_qtimer(uv_timer_t *t)
{
    struct sb_hconn_pool *p = t->data;
    uint64_t now = uv_now(p->loop), next = 0;
    struct sb_list_node *n, *nx;

    p->qdeadline = 0;
    for (n = p->queue.head; n; n = nx) {
        struct hc_req *r = sb_container_of(n, struct hc_req, link);

        nx = n->next;
        if (r->deadline <= now) {
            sb_list_remove(&p->queue, &r->link);
            hc_defer(p, r, SB_HCONN_ETIMEOUT, "timeout");
        } else if (!next || r->deadline < next) {
            next = r->deadline;
        }
    }
    if (next)
        hc_qtimer_arm(p, next);
    hc_run_deferred(p);
}

/* Give queued requests to idle connections, or open new ones. Never
 * completes a request itself: failures are deferred. */
static void hc_dispatch(struct sb_hconn_pool *p)
{
    struct hc_req *r;

    if (p->closed || p->state != HC_READY)
        return;
    while ((r = req_first(&p->queue)) != NULL) {
        struct hc_conn *c = idle_first(&p->idle);

        if (c) {
            idle_remove(p, c);
            c->state = HC_BUSY;
            sb_list_remove(&p->queue, &r->link);
            c->req = r;
            r->conn = c;
            r->where = HC_ON_CONN;
            if (hc_conn_send(c) < 0) {
                hc_detach(c);
                hc_conn_close(c);
                hc_defer(p, r, SB_HCONN_ENETWORK, "network error");
            }
        } else if (p->conns.count < p->o.max_conns) {
            sb_list_remove(&p->queue, &r->link);
            if (hc_conn_open(p, r) < 0) {
                hc_warn(p, "connect failed", "cannot open a socket");
                hc_defer(p, r, SB_HCONN_ECONNECT, "connect failed");
            }
        } else {
            break;
        }
    }
    if (!p->queue.head && p->qdeadline) {
        uv_timer_stop(&p->qtimer);
        p->qdeadline = 0;
    }
}

/* ---- resolving ---------------------------------------------------------- */

static void on_resolved(uv_getaddrinfo_t *g, int status, struct addrinfo *res)
{
    struct sb_hconn_pool *p = g->data;
    char host[HC_HOST_MAX];
    struct hc_req *r;

    p->resolving = 0;
    if (!p->closed && status == 0) {
        p->naddrs = 0;
        for (struct addrinfo *a = res; a && p->naddrs < HC_MAX_ADDRS;
             a = a->ai_next)
            if ((a->ai_family == AF_INET || a->ai_family == AF_INET6) &&
                a->ai_addrlen <= sizeof(p->addrs[0]))
                memcpy(&p->addrs[p->naddrs++], a->ai_addr, a->ai_addrlen);
    }
    uv_freeaddrinfo(res);
    if (p->closed) {
        hc_pool_unref(p); /* may free p */
        return;
    }
    hc_pool_unref(p); /* not the last reference: the timers hold two */
    if (status < 0 || p->naddrs == 0) {
        p->state = HC_UNRESOLVED;
        SB_WARN(HC_PLACE, "resolve failed host=%s err=%s",
                sb_log_safe(p->host, host, sizeof(host)),
                status < 0 ? uv_strerror(status) : "no address");
        while ((r = req_first(&p->queue)) != NULL) {
            sb_list_remove(&p->queue, &r->link);
            hc_defer(p, r, SB_HCONN_ERESOLVE, "resolve failed");
        }
        hc_run_deferred(p);
        return;
    }
    p->state = HC_READY;
    p->addr_next = 0;
    hc_dispatch(p);
}

/* Start resolving p->host; 0 or a uv error. */
static int hc_resolve(struct sb_hconn_pool *p)
{
    struct addrinfo hints;
    char port[8];
    int rc;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    snprintf(port, sizeof(port), "%d", p->port);
    p->gai.data = p;
    rc = uv_getaddrinfo(p->loop, &p->gai, on_resolved, p->host, port, &hints);
    if (rc < 0)
        return rc;
    p->state = HC_RESOLVING;
    p->resolving = 1;
    p->refs++;
    return 0;
}

/* ---- public ------------------------------------------------------------- */

int sb_hconn_parse_url(const char *url, char *host, size_t hostlen, int *port,
                       char **path)
{
    const char *h, *e, *ps;
    size_t hn;
    long pn = 80;

    if (!url || !host || !port || !path || strncasecmp(url, "http://", 7))
        return -1;
    for (const unsigned char *s = (const unsigned char *)url; *s; s++)
        if (*s <= 0x20 || *s >= 0x7f)
            return -1;
    h = url + 7;
    e = h + strcspn(h, "/?#");
    if (memchr(h, '@', (size_t)(e - h)))
        return -1; /* userinfo: not ours */
    if (*h == '[') {
        const char *rb = memchr(h, ']', (size_t)(e - h));

        if (!rb || rb == h + 1)
            return -1;
        hn = (size_t)(rb - h - 1);
        h++;
        ps = rb + 1;
        if (memchr(h, ':', hn) == NULL)
            return -1; /* brackets hold IPv6 only */
    } else {
        ps = memchr(h, ':', (size_t)(e - h));
        if (!ps)
            ps = e;
        hn = (size_t)(ps - h);
    }
    if (hn == 0 || hn >= hostlen)
        return -1;
    if (ps < e) {
        char *end;

        if (*ps != ':' || ps + 1 == e || ps[1] < '0' || ps[1] > '9')
            return -1;
        pn = strtol(ps + 1, &end, 10);
        if (end != e || pn < 1 || pn > 65535)
            return -1;
    }
    memcpy(host, h, hn);
    host[hn] = '\0';
    *port = (int)pn;
    hn = strcspn(e, "#");
    *path = sb_asprintf("%s%.*s", *e == '/' ? "" : "/", (int)hn, e);
    return 0;
}

struct sb_hconn_pool *sb_hconn_pool_new(uv_loop_t *loop, const char *host,
                                        int port,
                                        const struct sb_hconn_opts *opts)
{
    struct sb_hconn_pool *p;
    size_t hn = host ? strlen(host) : 0;
    int v6 = host && strchr(host, ':') != NULL;

    if (!loop || hn == 0 || hn >= HC_HOST_MAX || port < 1 || port > 65535)
        return NULL;
    for (size_t i = 0; i < hn; i++)
        if ((unsigned char)host[i] <= 0x20 || host[i] == 0x7f ||
            strchr("/?#@[]", host[i]))
            return NULL;
    p = sb_calloc(1, sizeof(*p));
    p->loop = loop;
    if (opts)
        p->o = *opts;
    if (!p->o.max_conns)
        p->o.max_conns = HC_DEF_MAX_CONNS;
    if (!p->o.max_queue)
        p->o.max_queue = HC_DEF_MAX_QUEUE;
    if (!p->o.max_body)
        p->o.max_body = HC_DEF_MAX_BODY;
    if (p->o.connect_timeout_ms <= 0)
        p->o.connect_timeout_ms = HC_DEF_CONNECT_MS;
    if (p->o.idle_timeout_ms <= 0)
        p->o.idle_timeout_ms = HC_DEF_IDLE_MS;
    memcpy(p->host, host, hn + 1);
    p->port = port;
    if (port == 80)
        p->hosthdr = sb_asprintf(v6 ? "Host: [%s]\r\n" : "Host: %s\r\n", host);
    else
        p->hosthdr = sb_asprintf(v6 ? "Host: [%s]:%d\r\n" : "Host: %s:%d\r\n",
                                 host, port);
    p->hosthdr_len = strlen(p->hosthdr);
    uv_timer_init(loop, &p->kick);
    uv_timer_init(loop, &p->qtimer);
    p->kick.data = p;
    p->qtimer.data = p;
    p->refs = 2;
    p->connect_ok = 1;
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&p->addrs[0]) == 0 ||
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&p->addrs[0]) == 0) {
        p->naddrs = 1;
        p->state = HC_READY;
    } else if (hc_resolve(p) < 0) {
        p->state = HC_UNRESOLVED; /* the first request tries again */
    }
    return p;
}

/* Decimal digits of v into out (at least 21 bytes); returns the length. */
static size_t fmt_size(char *out, size_t v)
{
    char tmp[24];
    size_t n = 0, k = 0;

    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        out[k++] = tmp[--n];
    return k;
}

int sb_hconn_request(struct sb_hconn_pool *p, const struct sb_hconn_req *req,
                     sb_hconn_cb *cb, void *arg)
{
    static const char cl_name[] = "Content-Length: ";
    size_t mlen, plen, hlen, cl_len = 0, len;
    char cl[24];
    struct hc_req *r;
    char *w;
    int head_method;
    long timeout;

    if (!p || p->closed || !req || !cb || !method_ok(req->method) ||
        !path_ok(req->path) || !headers_ok(req->headers) ||
        (req->body_len && !req->body) || req->body_len > UINT_MAX)
        return -1;
    if (p->queue.count >= p->o.max_queue)
        return -1;
    if (p->state == HC_UNRESOLVED && hc_resolve(p) < 0)
        return -1;
    head_method = strcasecmp(req->method, "HEAD") == 0;
    if (req->body_len || (strcasecmp(req->method, "GET") && !head_method))
        cl_len = fmt_size(cl, req->body_len);
    mlen = strlen(req->method);
    plen = strlen(req->path);
    hlen = req->headers ? strlen(req->headers) : 0;
    len = mlen + 1 + plen + 11 + p->hosthdr_len + hlen + 2;
    if (cl_len)
        len += sizeof(cl_name) - 1 + cl_len + 2;

    r = sb_malloc(sizeof(*r) + len);
    memset(r, 0, sizeof(*r));
    w = r->head;
    memcpy(w, req->method, mlen);
    w += mlen;
    *w++ = ' ';
    memcpy(w, req->path, plen);
    w += plen;
    memcpy(w, " HTTP/1.1\r\n", 11);
    w += 11;
    memcpy(w, p->hosthdr, p->hosthdr_len);
    w += p->hosthdr_len;
    if (cl_len) {
        memcpy(w, cl_name, sizeof(cl_name) - 1);
        w += sizeof(cl_name) - 1;
        memcpy(w, cl, cl_len);
        w += cl_len;
        *w++ = '\r';
        *w++ = '\n';
    }
    if (hlen) {
        memcpy(w, req->headers, hlen);
        w += hlen;
    }
    *w++ = '\r';
    *w++ = '\n';
    r->head_len = (size_t)(w - r->head);
    r->cb = cb;
    r->arg = arg;
    r->body = req->body;
    r->body_len = req->body_len;
    r->head_method = head_method;
    timeout = req->timeout_ms > 0 ? req->timeout_ms : HC_DEF_TIMEOUT_MS;
    r->deadline = uv_now(p->loop) + (uint64_t)timeout;
    r->where = HC_QUEUED;
    p->pending++;
    sb_list_push_back(&p->queue, &r->link);
    hc_dispatch(p);
    if (r->where == HC_QUEUED)
        hc_qtimer_arm(p, r->deadline);
    return 0;
}

size_t sb_hconn_pending(const struct sb_hconn_pool *p)
{
    return p ? p->pending : 0;
}

void sb_hconn_stats(const struct sb_hconn_pool *p, struct sb_hconn_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (!p)
        return;
    out->conns = p->conns.count;
    out->idle = p->idle.count;
    out->queued = p->queue.count;
    out->pending = p->pending;
    out->connects = p->connects;
    out->retries = p->retries;
    out->requests = p->requests;
}

void sb_hconn_pool_close(struct sb_hconn_pool *p)
{
    struct hc_conn *c;
    struct hc_req *r;
    size_t n = 0;

    if (!p || p->closed)
        return;
    p->closed = 1;
    uv_timer_stop(&p->kick);
    uv_timer_stop(&p->qtimer);
    uv_close((uv_handle_t *)&p->kick, on_pool_handle_closed);
    uv_close((uv_handle_t *)&p->qtimer, on_pool_handle_closed);
    if (p->resolving)
        uv_cancel((uv_req_t *)&p->gai); /* on_resolved still runs */
    /* connections first: once closed, no write points at a body */
    while (p->conns.head) {
        c = sb_container_of(p->conns.head, struct hc_conn, link);
        r = c->req;
        hc_detach(c);
        hc_conn_close(c);
        if (r) {
            r->where = HC_DEFERRED;
            sb_list_push_back(&p->deferred, &r->link);
        }
    }
    while ((r = req_first(&p->queue)) != NULL) {
        sb_list_remove(&p->queue, &r->link);
        r->where = HC_DEFERRED;
        sb_list_push_back(&p->deferred, &r->link);
    }
    while ((r = req_first(&p->deferred)) != NULL) {
        sb_list_remove(&p->deferred, &r->link);
        r->where = HC_NOWHERE;
        n++;
        hc_fail(p, r, SB_HCONN_ECANCELLED, "cancelled");
    }
    if (n)
        SB_DEBUG(HC_PLACE, "pool closed port=%d cancelled=%zu", p->port, n);
}
