/* ws.c - WebSocket endpoints with their limits (see ws.h).
 *
 * One lws protocol row per registered endpoint, all served by ws_callback.
 * Each connection is a struct sb_ws_conn in a hash table by id; the lws
 * per-session data holds only the pointer, cleared when lws destroys the
 * wsi. Outgoing frames wait in a per-connection list (bounded in bytes) and
 * leave one per WRITEABLE callback, as lws requires for WebSocket. Closing
 * with a code goes through a 1 µs lws timer: a close reason set and -1
 * returned from WRITEABLE sends no close frame at all in lws 4.1, while from
 * LWS_CALLBACK_TIMER it does.
 */
#include "ws.h"

#include <libwebsockets.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "log.h"
#include "metrics.h"

#define WS_PLACE "core.ws"
#define WS_MAX_PROTOS 8
#define ID_BUCKETS 4096
#define IP_BUCKETS 1024
#define IP_KEEP_MS 60000 /* forget an address this long after its last socket */

struct ws_frame {
    struct ws_frame *next;
    size_t len;
    unsigned char data[]; /* LWS_PRE bytes, then the text */
};

struct ip_entry {
    struct ip_entry *next;
    char addr[64];
    size_t conns;
    double tokens;
    uint64_t refill_ms;
    uint64_t last_ms;
};

struct sb_ws_conn {
    uint64_t id;
    struct lws *wsi;
    struct sb_ws_proto *proto;
    struct sb_ws_conn *hnext;        /* id hash chain */
    struct sb_ws_conn *prev, *next;  /* every connection, for the sweep */
    struct ip_entry *ip;
    char peer[64];
    char origin[256];
    char **qargs;
    int nqargs;
    struct sb_buf rx;
    int rx_dropping;                 /* rest of a refused message */
    struct ws_frame *qhead, *qtail;
    size_t qbytes;
    double tokens;
    uint64_t refill_ms;
    uint64_t last_rx_ms;
    int closing;
    int close_code;
    char close_reason[124];
    void *user;
};

struct ws_pss {
    struct sb_ws_conn *conn;
};

static struct {
    struct sb_ws_proto *protos[WS_MAX_PROTOS];
    size_t nprotos;
    struct sb_ws_conn *byid[ID_BUCKETS];
    struct sb_ws_conn *all;
    size_t count;
    struct ip_entry *ips[IP_BUCKETS];
    uint64_t next_id;
    uv_timer_t sweep;
    int sweeping;
    int stopped;                     /* sb_ws_stop ran: free empty entries */
    struct sb_metric *m_open, *m_closed, *m_refused, *m_rx, *m_tx;
} W;

static uint64_t now_ms(void)
{
    return uv_hrtime() / 1000000;
}

/* ---- registry -------------------------------------------------------------- */

int sb_ws_register(struct sb_ws_proto *proto)
{
    if (W.nprotos == WS_MAX_PROTOS)
        return -1;
    W.protos[W.nprotos++] = proto;
    return 0;
}

static void conn_link(struct sb_ws_conn *c)
{
    size_t b = c->id % ID_BUCKETS;

    c->hnext = W.byid[b];
    W.byid[b] = c;
    c->next = W.all;
    if (W.all)
        W.all->prev = c;
    W.all = c;
    W.count++;
}

static void conn_unlink(struct sb_ws_conn *c)
{
    struct sb_ws_conn **pp = &W.byid[c->id % ID_BUCKETS];

    while (*pp && *pp != c)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = c->hnext;
    if (c->prev)
        c->prev->next = c->next;
    else
        W.all = c->next;
    if (c->next)
        c->next->prev = c->prev;
    W.count--;
}

struct sb_ws_conn *sb_ws_find(uint64_t id)
{
    struct sb_ws_conn *c = W.byid[id % ID_BUCKETS];

    while (c && c->id != id)
        c = c->hnext;
    return c;
}

size_t sb_ws_count(void)
{
    return W.count;
}

/* ---- per-address accounting ---------------------------------------------- */

static size_t ip_hash(const char *s)
{
    size_t h = 5381;

    while (*s)
        h = h * 33 + (unsigned char)*s++;
    return h % IP_BUCKETS;
}

static struct ip_entry *ip_get(const char *addr, int create)
{
    size_t b = ip_hash(addr);
    struct ip_entry *e;

    for (e = W.ips[b]; e; e = e->next)
        if (strcmp(e->addr, addr) == 0)
            return e;
    if (!create)
        return NULL;
    e = sb_calloc(1, sizeof(*e));
    snprintf(e->addr, sizeof(e->addr), "%s", addr);
    e->tokens = -1; /* filled on first use */
    e->next = W.ips[b];
    W.ips[b] = e;
    return e;
}

static void ip_free(struct ip_entry *e)
{
    struct ip_entry **pp = &W.ips[ip_hash(e->addr)];

    while (*pp && *pp != e)
        pp = &(*pp)->next;
    if (*pp)
        *pp = e->next;
    free(e);
}

/* Take one token from a bucket refilled at rate/s with a burst of 2 s. */
static int bucket_take(double *tokens, uint64_t *refill_ms, double rate,
                       uint64_t now)
{
    double burst = rate * 2 > 1 ? rate * 2 : 1;

    if (rate <= 0)
        return 0;
    if (*tokens < 0) {
        *tokens = burst;
    } else {
        *tokens += (double)(now - *refill_ms) * rate / 1000.0;
        if (*tokens > burst)
            *tokens = burst;
    }
    *refill_ms = now;
    if (*tokens < 1)
        return -1;
    *tokens -= 1;
    return 0;
}

/* ---- sending and closing ------------------------------------------------- */

static void frames_free(struct sb_ws_conn *c)
{
    struct ws_frame *f = c->qhead, *n;

    for (; f; f = n) {
        n = f->next;
        free(f);
    }
    c->qhead = c->qtail = NULL;
    c->qbytes = 0;
}

static void start_close(struct sb_ws_conn *c, int code, const char *reason)
{
    char r[16];

    if (c->closing)
        return;
    c->closing = 1;
    c->close_code = code;
    snprintf(c->close_reason, sizeof(c->close_reason), "%s",
             reason ? reason : "");
    snprintf(r, sizeof(r), "%d", code);
    sb_metric_add(W.m_closed, 1, c->proto->name, r);
    if (!c->wsi)
        return;
    /* Drain, then the timer, armed from WRITEABLE: a timer set outside an
     * lws callback (the idle sweep, a Redis reply) is not armed on the
     * loop until lws next services something, which may be never. */
    lws_callback_on_writable(c->wsi);
}

void sb_ws_close(uint64_t id, int code, const char *reason)
{
    struct sb_ws_conn *c = sb_ws_find(id);

    if (c)
        start_close(c, code, reason);
}

void sb_ws_close_all(void)
{
    for (struct sb_ws_conn *c = W.all; c; c = c->next)
        start_close(c, SB_WS_GOING_AWAY, "server going away");
}

int sb_ws_send(uint64_t id, const char *text, size_t len)
{
    struct sb_ws_conn *c = sb_ws_find(id);
    struct ws_frame *f;

    if (!c || c->closing || !c->wsi)
        return -1;
    if (c->qbytes + len > c->proto->limits.max_queue_bytes) {
        SB_NOTICE(WS_PLACE, "slow consumer closed id=%llu queued=%zu",
                  (unsigned long long)c->id, c->qbytes);
        frames_free(c);
        start_close(c, SB_WS_POLICY, "send queue full");
        return -1;
    }
    f = sb_malloc(sizeof(*f) + LWS_PRE + len);
    f->next = NULL;
    f->len = len;
    memcpy(f->data + LWS_PRE, text, len);
    if (c->qtail)
        c->qtail->next = f;
    else
        c->qhead = f;
    c->qtail = f;
    c->qbytes += len;
    lws_callback_on_writable(c->wsi);
    return 0;
}

/* ---- accessors ----------------------------------------------------------- */

uint64_t sb_ws_id(const struct sb_ws_conn *c)
{
    return c->id;
}

const char *sb_ws_peer(const struct sb_ws_conn *c)
{
    return c->peer;
}

const char *sb_ws_origin(const struct sb_ws_conn *c)
{
    return c->origin;
}

void *sb_ws_user(const struct sb_ws_conn *c)
{
    return c->user;
}

void sb_ws_set_user(struct sb_ws_conn *c, void *user)
{
    c->user = user;
}

char *sb_ws_query(const struct sb_ws_conn *c, const char *name)
{
    size_t nl = strlen(name);

    for (int i = 0; i < c->nqargs; i++)
        if (strncmp(c->qargs[i], name, nl) == 0 && c->qargs[i][nl] == '=')
            return sb_strdup(c->qargs[i] + nl + 1);
    return NULL;
}

/* ---- the lws callback ------------------------------------------------------ */

static int origin_allowed(const struct sb_ws_proto *p, const char *origin)
{
    char **o = p->limits.origins;

    if (!o || !*o)
        return 1;
    for (; *o; o++)
        if (strcmp(*o, origin) == 0)
            return 1;
    return 0;
}

static int hdr_copy(struct lws *wsi, enum lws_token_indexes t, char *out,
                    size_t outlen)
{
    int n = lws_hdr_total_length(wsi, t);

    out[0] = '\0';
    if (n <= 0 || (size_t)n >= outlen)
        return n <= 0 ? 0 : -1;
    return lws_hdr_copy(wsi, out, (int)outlen, t) < 0 ? -1 : 0;
}

/* Decide at the upgrade: right path, allowed Origin, not too many sockets
 * from this address. Nonzero refuses (lws closes the connection). */
static int filter(struct lws *wsi, struct sb_ws_proto *p)
{
    char uri[256], origin[256], peer[64];
    struct ip_entry *e;

    if (hdr_copy(wsi, WSI_TOKEN_GET_URI, uri, sizeof(uri)) < 0 ||
        strcmp(uri, p->path) != 0) {
        sb_metric_add(W.m_refused, 1, p->name, "path");
        return 1;
    }
    if (hdr_copy(wsi, WSI_TOKEN_ORIGIN, origin, sizeof(origin)) < 0 ||
        !origin_allowed(p, origin)) {
        sb_metric_add(W.m_refused, 1, p->name, "origin");
        return 1;
    }
    if (!lws_get_peer_simple(wsi, peer, sizeof(peer)))
        snprintf(peer, sizeof(peer), "unknown");
    e = ip_get(peer, 0);
    if (e && p->limits.max_conns_per_ip &&
        e->conns >= p->limits.max_conns_per_ip) {
        sb_metric_add(W.m_refused, 1, p->name, "per_ip");
        return 1;
    }
    return 0;
}

static void established(struct lws *wsi, struct ws_pss *pss,
                        struct sb_ws_proto *p)
{
    struct sb_ws_conn *c = sb_calloc(1, sizeof(*c));
    char frag[1024];
    int code;

    c->id = ++W.next_id;
    c->wsi = wsi;
    c->proto = p;
    c->tokens = -1;
    c->last_rx_ms = now_ms();
    sb_buf_init(&c->rx, p->limits.max_msg);
    if (!lws_get_peer_simple(wsi, c->peer, sizeof(c->peer)))
        snprintf(c->peer, sizeof(c->peer), "unknown");
    hdr_copy(wsi, WSI_TOKEN_ORIGIN, c->origin, sizeof(c->origin));
    for (int i = 0; i < 32; i++) {
        int n = lws_hdr_copy_fragment(wsi, frag, sizeof(frag),
                                      WSI_TOKEN_HTTP_URI_ARGS, i);
        if (n < 0)
            break;
        c->qargs = sb_realloc(c->qargs, sizeof(char *) * (size_t)(i + 1));
        c->qargs[c->nqargs++] = sb_strndup(frag, (size_t)n);
    }
    c->ip = ip_get(c->peer, 1);
    c->ip->conns++;
    c->ip->last_ms = c->last_rx_ms;
    pss->conn = c;
    conn_link(c);
    sb_metric_add(W.m_open, 1, p->name);
    code = p->on_open ? p->on_open(c) : 0;
    if (code)
        start_close(c, code, "refused");
}

static void gone(struct ws_pss *pss)
{
    struct sb_ws_conn *c = pss->conn;

    if (!c)
        return;
    pss->conn = NULL;
    c->wsi = NULL;
    if (c->proto->on_close)
        c->proto->on_close(c);
    conn_unlink(c);
    c->ip->conns--;
    c->ip->last_ms = now_ms();
    if (W.stopped && c->ip->conns == 0)
        ip_free(c->ip);
    frames_free(c);
    sb_buf_free(&c->rx);
    for (int i = 0; i < c->nqargs; i++)
        free(c->qargs[i]);
    free(c->qargs);
    free(c);
}


static void receive(struct lws *wsi, struct sb_ws_conn *c, const void *in,
                    size_t len)
{
    size_t remaining = lws_remaining_packet_payload(wsi);
    int final = lws_is_final_fragment(wsi) && remaining == 0;
    uint64_t now = now_ms();

    c->last_rx_ms = now;
    c->ip->last_ms = now;
    if (c->closing)
        return;
    if (c->rx_dropping) {
        if (final)
            c->rx_dropping = 0;
        return;
    }
    if (lws_frame_is_binary(wsi)) {
        start_close(c, 1003, "text frames only");
        return;
    }
    /* Refuse before buffering: what is here plus what is announced. */
    if (c->rx.len + len + remaining > c->proto->limits.max_msg ||
        sb_buf_append(&c->rx, in, len) < 0) {
        sb_buf_reset(&c->rx);
        start_close(c, SB_WS_TOO_BIG, "message too big");
        return;
    }
    if (!final)
        return;
    if (bucket_take(&c->tokens, &c->refill_ms,
                    c->proto->limits.msgs_per_sec, now) < 0 ||
        bucket_take(&c->ip->tokens, &c->ip->refill_ms,
                    c->proto->limits.ip_msgs_per_sec, now) < 0) {
        sb_buf_reset(&c->rx);
        start_close(c, SB_WS_POLICY, "rate limit");
        return;
    }
    if (!sb_utf8_valid(c->rx.data, c->rx.len)) {
        sb_buf_reset(&c->rx);
        start_close(c, SB_WS_INVALID_DATA, "invalid UTF-8");
        return;
    }
    sb_metric_add(W.m_rx, 1, c->proto->name);
    c->proto->on_message(c, c->rx.data ? c->rx.data : "", c->rx.len);
    sb_buf_reset(&c->rx);
}

static int writeable(struct lws *wsi, struct sb_ws_conn *c)
{
    struct ws_frame *f = c->qhead;

    if (!f && c->closing)
        lws_set_timer_usecs(wsi, 1);
    if (f) {
        int n = lws_write(wsi, f->data + LWS_PRE, f->len, LWS_WRITE_TEXT);
        c->qhead = f->next;
        if (!c->qhead)
            c->qtail = NULL;
        c->qbytes -= f->len;
        free(f);
        if (n < 0)
            return -1;
        sb_metric_add(W.m_tx, 1, c->proto->name);
        if (c->qhead)
            lws_callback_on_writable(wsi);
        else if (c->closing)
            lws_set_timer_usecs(wsi, 1);
    }
    return 0;
}

static int ws_callback(struct lws *wsi, enum lws_callback_reasons reason,
                       void *user, void *in, size_t len)
{
    struct ws_pss *pss = user;
    const struct lws_protocols *lp = lws_get_protocol(wsi);
    struct sb_ws_proto *p = lp ? lp->user : NULL;

    switch (reason) {
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        return p ? filter(wsi, p) : 1;
    case LWS_CALLBACK_ESTABLISHED:
        if (!p)
            return -1;
        established(wsi, pss, p);
        return 0;
    case LWS_CALLBACK_RECEIVE:
        if (pss && pss->conn)
            receive(wsi, pss->conn, in, len);
        return 0;
    case LWS_CALLBACK_SERVER_WRITEABLE:
        if (pss && pss->conn)
            return writeable(wsi, pss->conn);
        return 0;
    case LWS_CALLBACK_TIMER:
        if (pss && pss->conn && pss->conn->closing) {
            struct sb_ws_conn *c = pss->conn;
            lws_close_reason(wsi, (enum lws_close_status)c->close_code,
                             (unsigned char *)c->close_reason,
                             strlen(c->close_reason));
            return -1;
        }
        return 0;
    case LWS_CALLBACK_CLOSED:
    case LWS_CALLBACK_WSI_DESTROY:
        if (pss)
            gone(pss);
        return 0;
    default:
        return 0;
    }
}

size_t sb_ws_lws_protocols(struct lws_protocols *out, size_t max)
{
    size_t n = 0;

    for (size_t i = 0; i < W.nprotos && n < max; i++, n++) {
        memset(&out[n], 0, sizeof(out[n]));
        out[n].name = W.protos[i]->name;
        out[n].callback = ws_callback;
        out[n].per_session_data_size = sizeof(struct ws_pss);
        out[n].rx_buffer_size = 4096;
        out[n].user = W.protos[i];
    }
    return n;
}

/* ---- the idle sweep --------------------------------------------------------- */

static void on_sweep(uv_timer_t *t)
{
    uint64_t now = now_ms();

    for (struct sb_ws_conn *c = W.all; c; c = c->next)
        if (!c->closing && c->proto->limits.idle_ms &&
            now - c->last_rx_ms > c->proto->limits.idle_ms)
            start_close(c, SB_WS_GOING_AWAY, "idle timeout");
    for (size_t b = 0; b < IP_BUCKETS; b++) {
        struct ip_entry **pp = &W.ips[b];
        while (*pp) {
            struct ip_entry *e = *pp;
            if (e->conns == 0 && now - e->last_ms > IP_KEEP_MS) {
                *pp = e->next;
                free(e);
            } else {
                pp = &e->next;
            }
        }
    }
}

static double count_fn(void *arg)
{
    return (double)W.count;
}

void sb_ws_start(void *loop)
{
    W.m_open = sb_metric_counter("sb_ws_connections_total",
                                 "WebSocket connections opened", "proto");
    W.m_closed = sb_metric_counter("sb_ws_closed_total",
                                   "WebSocket connections closed by us, by "
                                   "close code",
                                   "proto,code");
    W.m_refused = sb_metric_counter("sb_ws_refused_total",
                                    "WebSocket upgrades refused", "proto,why");
    W.m_rx = sb_metric_counter("sb_ws_messages_received_total",
                               "WebSocket messages received", "proto");
    W.m_tx = sb_metric_counter("sb_ws_messages_sent_total",
                               "WebSocket messages sent", "proto");
    sb_metric_gauge_fn("sb_ws_open_connections", "WebSocket connections open",
                       count_fn, NULL);
    uv_timer_init(loop, &W.sweep);
    uv_timer_start(&W.sweep, on_sweep, 1000, 1000);
    W.sweeping = 1;
}

void sb_ws_stop(void)
{
    if (W.sweeping) {
        uv_close((uv_handle_t *)&W.sweep, NULL);
        W.sweeping = 0;
    }
    /* Entries of connections still open are freed as those go (lws
     * destroys them after this, in sb_http_stop). */
    W.stopped = 1;
    for (size_t b = 0; b < IP_BUCKETS; b++) {
        struct ip_entry **pp = &W.ips[b];
        while (*pp) {
            struct ip_entry *e = *pp;
            if (e->conns == 0) {
                *pp = e->next;
                free(e);
            } else {
                pp = &e->next;
            }
        }
    }
}
