/* chatload.c - load generator of the chat benchmark (tests/bench/chat/).
 *
 * One single-threaded libuv process that speaks the customer chat protocol
 * (/chat/ws, switchboard.chat.v1: hello -> welcome, message -> ack) and the
 * agent console protocol (/console/ws, switchboard.agent.v1: auth -> hello,
 * offers, accept, entry, reply) over its own minimal RFC 6455 client, so
 * that the daemon and the Node baseline relay (baseline.js) are measured by
 * the same code. Two modes:
 *
 *   chatload idle --label L --port P --pid PID --conns N
 *     opens N chat sockets (handshake + hello/welcome each), reads the
 *     server's VmRSS from /proc/PID/status before and once all are welcomed
 *     (after a settle pause), prints one IDLE line with bytes per
 *     connection, then closes them.
 *
 *   chatload active --target L,PORT,TOKENS [--target ...] --customers N
 *     connects the agents named by the TOKENS file ("agent TOKEN" lines,
 *     optional "operator TOKEN"), then N customers that each send one first
 *     message; waits for every conversation to be assigned to one of the
 *     agents (offers are accepted; if the server does not route chat by
 *     itself, the conversations are looked up with a second hello and
 *     assigned through POST /api/v1/conversations/{id}/assign with the
 *     operator token). Then, alternating between targets, it runs --runs
 *     paced runs (--rate messages/s in total, round-robin over the
 *     customers, for --duration s) and --runs saturation runs (a closed
 *     loop: every customer keeps --window messages on their way to its
 *     agent and sends the next when one arrives, for --sat-duration s),
 *     each followed by a drain of at most --drain s, and prints one RUN
 *     line per run. A paced run whose undelivered messages exceed 1 s worth
 *     of its rate stops offering (overload_at_s in its line), so that a
 *     server that cannot keep up is not pushed into ever longer queues and
 *     the benchmark stays bounded.
 *     Meanwhile each agent replies --reply-rate times a second to the
 *     conversation of its latest entry.
 *
 * Latency is measured from just before the customer's message frame is
 * handed to the socket (uv_write) to the parsing of the agent's "entry"
 * frame whose entry text carries the message's sequence number, both on
 * this process' monotonic clock. Replies are timed the same way, from the
 * agent's "reply" frame to the customer's "message" frame.
 *
 * Every loop is bounded: connections by count, phases by time limits, and
 * the whole process by --max-secs (it exits 2 when that passes).
 */
#define _GNU_SOURCE
#include <jansson.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <uv.h>

#define CL_MAX_TARGETS 2
#define CL_MAX_AGENTS 64
#define CL_HTTP_CONNS 4
#define CL_MAX_MSGS (8u << 20)  /* messages one process may send */
#define CL_IN_MAX (1u << 22)    /* unparsed input per socket */
#define CL_WS_KEY "dGhlIHNhbXBsZSBub25jZQ=="

enum { K_CUST, K_AGENT, K_PROBE, K_HTTP };
enum { S_CONNECTING, S_HANDSHAKE, S_OPEN, S_CLOSED };
enum { RUN_PACED, RUN_SAT };

/* the phases of a run of chatload, in order */
enum {
    P_IDLE_CONNECT,
    P_IDLE_SETTLE,
    P_IDLE_CLOSE,
    P_AGENTS,
    P_CUSTOMERS,
    P_ASSIGN_WAIT,
    P_PROBE,
    P_HTTP,
    P_RUN_SEND,
    P_RUN_DRAIN,
    P_GAP,
    P_DONE,
};

struct target;

struct conn {
    uv_tcp_t tcp;
    uv_connect_t creq;
    struct target *t;
    int kind, idx, state;
    char *in;
    size_t inlen, incap;
    char *frag;
    size_t fraglen, fragcap;
    int close_code; /* from the server's close frame; -1 for EOF */
};

struct cust {
    struct conn *c, *probe;
    char token[96];
    char conv[48];
    int welcomed, first_acked, inflight, dead;
};

struct agent {
    struct conn *c;
    char name[64];
    char token[256];
    int authed, nassigned;
    char last_conv[48];
};

struct target {
    char label[32];
    int port, pid;
    struct cust *cust;
    int ncust;
    struct agent agents[CL_MAX_AGENTS];
    int nagents;
    char optoken[256];
    /* conversations assigned to our agents: open addressing, conv ids */
    char (*aset)[48];
    int *aset_agent;
    size_t asetcap;
    int nassigned, by_router;
    /* fallback assignment over HTTP */
    struct conn *http[CL_HTTP_CONNS];
    int http_next, http_inflight[CL_HTTP_CONNS], http_ok, http_fail;
    int http_rr;
    /* setup progress */
    int next_cust, connecting, nwelcomed, nfailed, nfirst, nprobed;
    /* counters (reset per run where noted) */
    long chat_errors, console_errors, closes, hs_fail, conn_fail;
    char last_error[96];
};

struct msg {
    uint64_t sent_ns, recv_ns;
    int32_t cust;
    uint8_t delivered, acked;
};

struct run {
    struct target *t;
    int kind, n;
    uint32_t first, last; /* message seq range */
    uint32_t rfirst, rlast;
    uint64_t start_ns, end_ns, drain_end_ns;
    uint64_t sent, delivered, acked, dups, last_recv_ns, lag_max_ns;
    uint64_t overload_ns; /* when a paced run stopped on its backlog */
    long errors0, cerrors0, closes0;
    long cpu0, rcpu0, gcpu0; /* clock ticks of server, Redis, us */
    int rr;
};

static struct {
    uv_loop_t *loop;
    int idle_mode;
    struct target targets[CL_MAX_TARGETS];
    int ntargets;
    int nips;
    int conc;
    /* idle */
    int conns, pid, redis_pid, settle_ms;
    /* active */
    int customers, runs, window, drain_s;
    uint64_t backlog;
    double rate, duration, sat_duration, reply_rate;
    int max_secs;
    uv_timer_t tick, guard, reply;
    int phase, last_total;
    uint64_t phase_ns, progress_ns;
    /* messages */
    struct msg *msgs, *rmsgs;
    uint32_t nmsgs, nrmsgs, msgcap, rmsgcap;
    struct run runs_list[64];
    int nruns, cur;
    int failed;
    uint32_t rnd;
    /* idle results */
    long rss0, rss1;
    uint64_t idle_start_ns, idle_done_ns;
} G;

/* ---- small helpers ------------------------------------------------------ */

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);

    if (!p) {
        fprintf(stderr, "chatload: out of memory\n");
        abort();
    }
    return p;
}

static void *xcalloc(size_t n, size_t m)
{
    void *p = calloc(n ? n : 1, m ? m : 1);

    if (!p) {
        fprintf(stderr, "chatload: out of memory\n");
        abort();
    }
    return p;
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p) {
        fprintf(stderr, "chatload: out of memory\n");
        abort();
    }
    return p;
}

static uint64_t now_ns(void)
{
    return uv_hrtime();
}

static uint32_t rnd32(void)
{
    G.rnd ^= G.rnd << 13;
    G.rnd ^= G.rnd >> 17;
    G.rnd ^= G.rnd << 5;
    return G.rnd;
}

static void die(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fputs("chatload: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static long read_rss_kb(int pid)
{
    char path[64], line[256];
    long kb = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return kb;
}

/* utime + stime of a process in clock ticks, or -1. */
static long read_cpu_ticks(int pid)
{
    char path[64], buf[1024], *p;
    unsigned long ut = 0, st = 0;
    FILE *f;
    size_t n;

    if (pid <= 0)
        return -1;
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    f = fopen(path, "r");
    if (!f)
        return -1;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    p = strrchr(buf, ')'); /* the command may hold spaces */
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u "
                            "%lu %lu", &ut, &st) != 2)
        return -1;
    return (long)(ut + st);
}

/* Percent of one core used since ticks0 over secs, or -1. */
static double cpu_pct(int pid, long ticks0, double secs)
{
    long t = read_cpu_ticks(pid);

    if (t < 0 || ticks0 < 0 || secs <= 0)
        return -1;
    return (double)(t - ticks0) / (double)sysconf(_SC_CLK_TCK) / secs * 100;
}

static void copy_str(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

/* ---- the assigned-conversation set ----------------------------------- */

static size_t hash_str(const char *s)
{
    size_t h = 1469598103934665603ull;

    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* Returns 1 when conv was added, 0 when it was there already. */
static int aset_add(struct target *t, const char *conv, int agent)
{
    size_t i = hash_str(conv) & (t->asetcap - 1);

    for (size_t n = 0; n < t->asetcap; n++, i = (i + 1) & (t->asetcap - 1)) {
        if (!t->aset[i][0]) {
            copy_str(t->aset[i], sizeof(t->aset[i]), conv);
            t->aset_agent[i] = agent;
            return 1;
        }
        if (strcmp(t->aset[i], conv) == 0) {
            t->aset_agent[i] = agent;
            return 0;
        }
    }
    die("assigned set full");
    return 0;
}

static int aset_has(const struct target *t, const char *conv)
{
    size_t i = hash_str(conv) & (t->asetcap - 1);

    for (size_t n = 0; n < t->asetcap; n++, i = (i + 1) & (t->asetcap - 1)) {
        if (!t->aset[i][0])
            return 0;
        if (strcmp(t->aset[i], conv) == 0)
            return 1;
    }
    return 0;
}

/* ---- sockets -------------------------------------------------------- */

struct wreq {
    uv_write_t req;
    uv_buf_t buf;
    char data[];
};

static void on_written(uv_write_t *r, int status)
{
    (void)status;
    free(r);
}

static void raw_send(struct conn *c, const char *s, size_t n)
{
    struct wreq *w;

    if (c->state == S_CLOSED)
        return;
    w = xmalloc(sizeof(*w) + n);
    memcpy(w->data, s, n);
    w->buf = uv_buf_init(w->data, (unsigned)n);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &w->buf, 1, on_written))
        free(w);
}

/* One masked frame (client to server). */
static void ws_frame(struct conn *c, int op, const char *s, size_t n)
{
    size_t hdr = 2 + (n < 126 ? 0 : n < 65536 ? 2 : 8) + 4, i;
    struct wreq *w;
    unsigned char *p, key[4];
    uint32_t k = rnd32();

    if (c->state != S_OPEN)
        return;
    w = xmalloc(sizeof(*w) + hdr + n);
    p = (unsigned char *)w->data;
    p[0] = (unsigned char)(0x80 | op);
    if (n < 126) {
        p[1] = (unsigned char)(0x80 | n);
        i = 2;
    } else if (n < 65536) {
        p[1] = 0x80 | 126;
        p[2] = (unsigned char)(n >> 8);
        p[3] = (unsigned char)n;
        i = 4;
    } else {
        p[1] = 0x80 | 127;
        for (int b = 0; b < 8; b++)
            p[2 + b] = (unsigned char)((uint64_t)n >> (56 - 8 * b));
        i = 10;
    }
    memcpy(key, &k, 4);
    memcpy(p + i, key, 4);
    i += 4;
    for (size_t j = 0; j < n; j++)
        p[i + j] = (unsigned char)s[j] ^ key[j & 3];
    w->buf = uv_buf_init(w->data, (unsigned)(hdr + n));
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &w->buf, 1, on_written))
        free(w);
}

static void ws_text(struct conn *c, const char *s)
{
    ws_frame(c, 1, s, strlen(s));
}

static void on_closed(uv_handle_t *h)
{
    struct conn *c = h->data;

    free(c->in);
    free(c->frag);
    free(c);
}

static void conn_detach(struct conn *c)
{
    struct target *t = c->t;

    switch (c->kind) {
    case K_CUST:
        if (t->cust[c->idx].c == c)
            t->cust[c->idx].c = NULL;
        t->cust[c->idx].dead = 1;
        if (!t->cust[c->idx].welcomed) {
            t->connecting--;
            t->nfailed++;
        }
        break;
    case K_PROBE:
        if (t->cust[c->idx].probe == c)
            t->cust[c->idx].probe = NULL;
        break;
    case K_AGENT:
        if (t->agents[c->idx].c == c)
            t->agents[c->idx].c = NULL;
        break;
    case K_HTTP:
        if (t->http[c->idx] == c)
            t->http[c->idx] = NULL;
        break;
    }
}

/* by_server: the server closed (close frame, EOF, error) rather than us. */
static void conn_close(struct conn *c, int by_server)
{
    if (c->state == S_CLOSED)
        return;
    if (by_server && c->kind != K_PROBE) {
        c->t->closes++;
        if (c->state != S_CONNECTING)
            snprintf(c->t->last_error, sizeof(c->t->last_error),
                     "%s socket %d closed by the server (code %d)",
                     c->kind == K_AGENT ? "agent" : c->kind == K_HTTP
                                                        ? "http"
                                                        : "customer",
                     c->idx, c->close_code);
    }
    c->state = S_CLOSED;
    conn_detach(c);
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    static char rbuf[1 << 16];

    (void)h;
    (void)hint;
    *buf = uv_buf_init(rbuf, sizeof(rbuf));
}

static void on_ws_open(struct conn *c);
static void on_text(struct conn *c, const char *s, size_t n);
static void on_http_data(struct conn *c);
static void cust_connect_next(struct target *t);

/* Parse complete frames from c->in; 0, or -1 when c was closed. */
static int parse_frames(struct conn *c)
{
    size_t off = 0;

    while (c->state == S_OPEN) {
        unsigned char *p = (unsigned char *)c->in + off;
        size_t avail = c->inlen - off, hdr = 2;
        uint64_t len;
        int fin, op, masked;

        if (avail < 2)
            break;
        fin = p[0] & 0x80;
        op = p[0] & 0x0f;
        masked = p[1] & 0x80;
        len = p[1] & 0x7f;
        if (len == 126) {
            if (avail < 4)
                break;
            len = ((uint64_t)p[2] << 8) | p[3];
            hdr = 4;
        } else if (len == 127) {
            if (avail < 10)
                break;
            len = 0;
            for (int b = 0; b < 8; b++)
                len = (len << 8) | p[2 + b];
            hdr = 10;
        }
        if (masked)
            hdr += 4;
        if (len > CL_IN_MAX) {
            conn_close(c, 1);
            return -1;
        }
        if (avail < hdr + len)
            break;
        if (masked)
            for (uint64_t j = 0; j < len; j++)
                p[hdr + j] ^= p[hdr - 4 + (j & 3)];
        off += hdr + (size_t)len;
        if (op == 0x8) {
            c->close_code = len >= 2 ? (p[hdr] << 8 | p[hdr + 1]) : 1005;
            conn_close(c, 1);
            return -1;
        } else if (op == 0x9) {
            ws_frame(c, 0xA, (char *)p + hdr, (size_t)len);
        } else if (op == 0x1 || op == 0x2 || op == 0x0) {
            if (op != 0)
                c->fraglen = 0;
            if (c->fraglen + len + 1 > c->fragcap) {
                c->fragcap = c->fraglen + (size_t)len + 1;
                c->frag = xrealloc(c->frag, c->fragcap);
            }
            memcpy(c->frag + c->fraglen, p + hdr, (size_t)len);
            c->fraglen += (size_t)len;
            if (fin) {
                c->frag[c->fraglen] = '\0';
                on_text(c, c->frag, c->fraglen);
                c->fraglen = 0;
                if (c->state != S_OPEN)
                    return -1;
            }
        }
    }
    if (off) {
        memmove(c->in, c->in + off, c->inlen - off);
        c->inlen -= off;
    }
    return 0;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = s->data;

    if (nread < 0) {
        c->close_code = -1;
        if (c->state == S_HANDSHAKE)
            c->t->hs_fail++;
        conn_close(c, 1);
        return;
    }
    if (nread == 0)
        return;
    if (c->inlen + (size_t)nread > CL_IN_MAX) {
        conn_close(c, 1);
        return;
    }
    if (c->inlen + (size_t)nread > c->incap) {
        c->incap = c->inlen + (size_t)nread + 4096;
        c->in = xrealloc(c->in, c->incap);
    }
    memcpy(c->in + c->inlen, buf->base, (size_t)nread);
    c->inlen += (size_t)nread;
    if (c->kind == K_HTTP) {
        on_http_data(c);
        return;
    }
    if (c->state == S_HANDSHAKE) {
        char *end = memmem(c->in, c->inlen, "\r\n\r\n", 4);
        size_t hl;

        if (!end)
            return;
        hl = (size_t)(end - c->in) + 4;
        if (c->inlen < 13 || memcmp(c->in, "HTTP/1.1 101", 12) != 0) {
            c->t->hs_fail++;
            snprintf(c->t->last_error, sizeof(c->t->last_error),
                     "handshake refused: %.40s", c->in);
            conn_close(c, 0);
            return;
        }
        memmove(c->in, c->in + hl, c->inlen - hl);
        c->inlen -= hl;
        c->state = S_OPEN;
        on_ws_open(c);
    }
    if (c->state == S_OPEN)
        parse_frames(c);
    if (c->state != S_CLOSED && c->inlen == 0 && c->incap > 65536) {
        free(c->in);
        c->in = NULL;
        c->incap = 0;
    }
}

static void on_connect(uv_connect_t *r, int status)
{
    struct conn *c = r->data;
    struct target *t = c->t;
    char req[512];
    int chat = c->kind == K_CUST || c->kind == K_PROBE;

    if (c->state == S_CLOSED)
        return;
    if (status < 0) {
        t->conn_fail++;
        snprintf(t->last_error, sizeof(t->last_error), "connect: %s",
                 uv_strerror(status));
        conn_close(c, 0);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (c->kind == K_HTTP) {
        c->state = S_OPEN;
        on_http_data(c);
        return;
    }
    c->state = S_HANDSHAKE;
    snprintf(req, sizeof(req),
             "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
             "Upgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: " CL_WS_KEY "\r\n"
             "Sec-WebSocket-Version: 13\r\n"
             "Sec-WebSocket-Protocol: %s\r\n\r\n",
             chat ? "/chat/ws" : "/console/ws", t->port,
             chat ? "switchboard.chat.v1" : "switchboard.agent.v1");
    raw_send(c, req, strlen(req));
}

static struct conn *conn_start(struct target *t, int kind, int idx)
{
    struct conn *c = xcalloc(1, sizeof(*c));
    struct sockaddr_in dst;

    c->t = t;
    c->kind = kind;
    c->idx = idx;
    c->state = S_CONNECTING;
    uv_tcp_init(G.loop, &c->tcp);
    c->tcp.data = c;
    c->creq.data = c;
    if (G.nips > 0) {
        /* Spread the sockets over 127.0.0.2.. so that neither per-address
         * limits nor one address' ephemeral ports get in the way. */
        struct sockaddr_in src;
        char ip[32];
        snprintf(ip, sizeof(ip), "127.0.0.%d", 2 + idx % G.nips);
        uv_ip4_addr(ip, 0, &src);
        uv_tcp_bind(&c->tcp, (const struct sockaddr *)&src, 0);
    }
    uv_ip4_addr("127.0.0.1", t->port, &dst);
    if (uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&dst,
                       on_connect) < 0) {
        t->conn_fail++;
        c->state = S_CLOSED;
        uv_close((uv_handle_t *)&c->tcp, on_closed);
        return NULL;
    }
    return c;
}

/* ---- messages ----------------------------------------------------------- */

static uint32_t msg_new(struct msg **tab, uint32_t *n, uint32_t *cap)
{
    if (*n == *cap) {
        if (*cap >= CL_MAX_MSGS)
            return UINT32_MAX;
        *cap = *cap ? *cap * 2 : 65536;
        *tab = xrealloc(*tab, *cap * sizeof(**tab));
    }
    memset(&(*tab)[*n], 0, sizeof(**tab));
    return (*n)++;
}

static struct run *cur_run(void)
{
    return G.cur >= 0 && G.cur < G.nruns ? &G.runs_list[G.cur] : NULL;
}

/* Send one benchmark message from customer i; 0 or -1. */
static int cust_send(struct target *t, int i, struct run *r)
{
    struct cust *cu = &t->cust[i];
    char buf[192];
    uint32_t seq;

    if (!cu->c || cu->c->state != S_OPEN || !cu->first_acked)
        return -1;
    seq = msg_new(&G.msgs, &G.nmsgs, &G.msgcap);
    if (seq == UINT32_MAX)
        return -1;
    snprintf(buf, sizeof(buf),
             "{\"type\":\"message\",\"id\":\"m%u\",\"text\":\"b%u hello, "
             "where is my order? customer %d\"}", seq, seq, i);
    G.msgs[seq].sent_ns = now_ns();
    G.msgs[seq].cust = i;
    ws_text(cu->c, buf);
    cu->inflight++;
    r->sent++;
    r->last = seq + 1;
    return 0;
}

/* ---- frames from the servers -------------------------------------------- */

static const char *jstr(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static void note_error(struct target *t, const char *who, json_t *m)
{
    snprintf(t->last_error, sizeof(t->last_error), "%s error %s: %s", who,
             jstr(m, "code") ? jstr(m, "code") : "?",
             jstr(m, "message") ? jstr(m, "message") : "");
}

static void on_ws_open(struct conn *c)
{
    struct target *t = c->t;
    char buf[400];

    if (c->kind == K_AGENT) {
        snprintf(buf, sizeof(buf), "{\"type\":\"auth\",\"token\":\"%s\"}",
                 t->agents[c->idx].token);
        ws_text(c, buf);
    } else if (c->kind == K_PROBE) {
        snprintf(buf, sizeof(buf), "{\"type\":\"hello\",\"token\":\"%s\"}",
                 t->cust[c->idx].token);
        ws_text(c, buf);
    } else {
        ws_text(c, "{\"type\":\"hello\",\"lang\":\"en\"}");
    }
}

static void cust_frame(struct conn *c, json_t *m, const char *type)
{
    struct target *t = c->t;
    struct cust *cu = &t->cust[c->idx];
    struct run *r = cur_run();

    if (strcmp(type, "welcome") == 0) {
        if (cu->welcomed)
            return;
        cu->welcomed = 1;
        t->nwelcomed++;
        t->connecting--;
        copy_str(cu->token, sizeof(cu->token), jstr(m, "token"));
        if (G.idle_mode) {
            cust_connect_next(t);
            return;
        }
        /* The first message opens the customer's conversation. */
        char buf[160];
        snprintf(buf, sizeof(buf),
                 "{\"type\":\"message\",\"id\":\"w%d\",\"text\":\"hello "
                 "from bench customer %d\"}", c->idx, c->idx);
        ws_text(c, buf);
        cust_connect_next(t);
    } else if (strcmp(type, "ack") == 0) {
        const char *id = jstr(m, "id");
        if (!id)
            return;
        if (id[0] == 'w') {
            if (!cu->first_acked)
                t->nfirst++;
            cu->first_acked = 1;
        } else if (id[0] == 'm') {
            uint32_t seq = (uint32_t)strtoul(id + 1, NULL, 10);
            if (seq < G.nmsgs && !G.msgs[seq].acked) {
                G.msgs[seq].acked = 1;
                if (cu->inflight > 0)
                    cu->inflight--;
                if (r && seq >= r->first && seq < r->last)
                    r->acked++;
            }
        }
    } else if (strcmp(type, "message") == 0) {
        const char *text = jstr(m, "text");
        if (text && text[0] == 'r') {
            uint32_t rs = (uint32_t)strtoul(text + 1, NULL, 10);
            if (rs < G.nrmsgs && !G.rmsgs[rs].delivered) {
                G.rmsgs[rs].delivered = 1;
                G.rmsgs[rs].recv_ns = now_ns();
            }
        }
    } else if (strcmp(type, "error") == 0) {
        const char *id = jstr(m, "id");
        t->chat_errors++;
        note_error(t, "chat", m);
        if (id && id[0] == 'm' && cu->inflight > 0) {
            cu->inflight--;
            if (r && r->kind == RUN_SAT && r->t == t && now_ns() < r->end_ns)
                cust_send(t, c->idx, r);
        }
    }
}

static void probe_frame(struct conn *c, json_t *m, const char *type)
{
    struct target *t = c->t;
    struct cust *cu = &t->cust[c->idx];

    if (strcmp(type, "welcome") == 0) {
        copy_str(cu->conv, sizeof(cu->conv), jstr(m, "conversation"));
        t->nprobed++;
        conn_close(c, 0);
    }
}

static void agent_frame(struct conn *c, json_t *m, const char *type)
{
    struct target *t = c->t;
    struct agent *a = &t->agents[c->idx];
    struct run *r = cur_run();

    if (strcmp(type, "entry") == 0) {
        json_t *e = json_object_get(m, "entry");
        const char *text = jstr(e, "text");
        if (text && text[0] == 'b') {
            uint32_t seq = (uint32_t)strtoul(text + 1, NULL, 10);
            uint64_t now = now_ns();
            copy_str(a->last_conv, sizeof(a->last_conv),
                     jstr(m, "conversation"));
            if (seq >= G.nmsgs)
                return;
            if (G.msgs[seq].delivered) {
                if (r && seq >= r->first && seq < r->last)
                    r->dups++;
                return;
            }
            G.msgs[seq].delivered = 1;
            G.msgs[seq].recv_ns = now;
            if (r && seq >= r->first && seq < r->last) {
                r->delivered++;
                r->last_recv_ns = now;
                /* Saturation is a closed loop on delivery: the customer
                 * whose message reached its agent sends the next one. */
                if (r->kind == RUN_SAT && r->t == t && now < r->end_ns)
                    cust_send(t, G.msgs[seq].cust, r);
            }
        }
    } else if (strcmp(type, "assigned") == 0) {
        const char *conv = jstr(m, "conversation");
        const char *who = jstr(m, "agent");
        if (conv && who && strcmp(who, a->name) == 0 &&
            aset_add(t, conv, c->idx)) {
            t->nassigned++;
            a->nassigned++;
            if (G.phase < P_PROBE)
                t->by_router++;
        }
    } else if (strcmp(type, "offer") == 0) {
        const char *conv = jstr(m, "conversation");
        char buf[160];
        if (conv && strlen(conv) < 48) {
            snprintf(buf, sizeof(buf),
                     "{\"type\":\"accept\",\"conversation\":\"%s\"}", conv);
            ws_text(c, buf);
        }
    } else if (strcmp(type, "hello") == 0) {
        if (!a->authed) {
            a->authed = 1;
            copy_str(a->name, sizeof(a->name), jstr(m, "user"));
        }
    } else if (strcmp(type, "error") == 0) {
        t->console_errors++;
        note_error(t, "console", m);
    }
}

static void on_text(struct conn *c, const char *s, size_t n)
{
    json_error_t je;
    json_t *m = json_loadb(s, n, 0, &je);
    const char *type = jstr(m, "type");

    if (type) {
        if (c->kind == K_CUST)
            cust_frame(c, m, type);
        else if (c->kind == K_PROBE)
            probe_frame(c, m, type);
        else if (c->kind == K_AGENT)
            agent_frame(c, m, type);
    }
    json_decref(m);
}

/* ---- fallback assignment over HTTP -------------------------------------- */

static void http_send_next(struct conn *c)
{
    struct target *t = c->t;
    char body[160], req[1024];

    while (t->http_next < t->ncust) {
        struct cust *cu = &t->cust[t->http_next++];
        struct agent *a;
        if (!cu->conv[0] || aset_has(t, cu->conv))
            continue;
        a = &t->agents[t->http_rr++ % t->nagents];
        snprintf(body, sizeof(body), "{\"agent\":\"%s\"}", a->name);
        snprintf(req, sizeof(req),
                 "POST /api/v1/conversations/%s/assign HTTP/1.1\r\n"
                 "Host: 127.0.0.1:%d\r\nAuthorization: Bearer %s\r\n"
                 "Content-Type: application/json\r\n"
                 "Content-Length: %zu\r\n\r\n%s",
                 cu->conv, t->port, t->optoken, strlen(body), body);
        raw_send(c, req, strlen(req));
        t->http_inflight[c->idx] = 1;
        return;
    }
    t->http_inflight[c->idx] = 0;
}

/* Answers arrive one at a time (no pipelining). */
static void on_http_data(struct conn *c)
{
    struct target *t = c->t;

    for (int guard = 0; guard < 64 && c->state == S_OPEN; guard++) {
        char *end, *cl;
        size_t hl, blen = 0, total;
        int status;

        if (!t->http_inflight[c->idx]) {
            http_send_next(c);
            return;
        }
        end = c->inlen ? memmem(c->in, c->inlen, "\r\n\r\n", 4) : NULL;
        if (!end)
            return;
        hl = (size_t)(end - c->in) + 4;
        *end = '\0';
        cl = strcasestr(c->in, "\r\ncontent-length:");
        if (cl)
            blen = strtoul(cl + 17, NULL, 10);
        total = hl + blen;
        if (c->inlen < total) {
            *end = '\r';
            return;
        }
        status = c->inlen > 12 ? atoi(c->in + 9) : 0;
        if (status >= 200 && status < 300) {
            t->http_ok++;
        } else {
            t->http_fail++;
            snprintf(t->last_error, sizeof(t->last_error),
                     "assign: HTTP %d %.*s", status,
                     (int)(blen < 60 ? blen : 60), c->in + hl);
        }
        memmove(c->in, c->in + total, c->inlen - total);
        c->inlen -= total;
        t->http_inflight[c->idx] = 0;
    }
}

/* ---- setup -------------------------------------------------------------- */

static void cust_connect_next(struct target *t)
{
    int want = G.idle_mode ? G.conns : t->ncust;

    while (t->connecting < G.conc && t->next_cust < want) {
        int i = t->next_cust++;
        t->cust[i].c = conn_start(t, K_CUST, i);
        if (t->cust[i].c)
            t->connecting++;
    }
}

static int target_alive_custs(const struct target *t)
{
    int n = 0;

    for (int i = 0; i < t->ncust; i++)
        n += t->cust[i].c && t->cust[i].c->state == S_OPEN;
    return n;
}

static void close_all(struct target *t)
{
    for (int i = 0; i < t->ncust; i++) {
        if (t->cust[i].c)
            conn_close(t->cust[i].c, 0);
        if (t->cust[i].probe)
            conn_close(t->cust[i].probe, 0);
    }
    for (int i = 0; i < t->nagents; i++)
        if (t->agents[i].c)
            conn_close(t->agents[i].c, 0);
    for (int i = 0; i < CL_HTTP_CONNS; i++)
        if (t->http[i])
            conn_close(t->http[i], 0);
}

static void finish(int failed)
{
    G.failed = failed;
    for (int i = 0; i < G.ntargets; i++)
        close_all(&G.targets[i]);
    uv_timer_stop(&G.tick);
    uv_timer_stop(&G.guard);
    uv_timer_stop(&G.reply);
    uv_close((uv_handle_t *)&G.tick, NULL);
    uv_close((uv_handle_t *)&G.guard, NULL);
    uv_close((uv_handle_t *)&G.reply, NULL);
}

/* ---- idle mode ---------------------------------------------------------- */

static void set_phase(int p)
{
    G.phase = p;
    G.phase_ns = G.progress_ns = now_ns();
}

static double secs_since(uint64_t t)
{
    return (double)(now_ns() - t) / 1e9;
}

static void idle_step(void)
{
    struct target *t = &G.targets[0];
    int done = t->nwelcomed + t->nfailed;

    switch (G.phase) {
    case P_IDLE_CONNECT:
        cust_connect_next(t);
        if (done >= G.conns || secs_since(G.phase_ns) > 90) {
            G.idle_done_ns = now_ns();
            set_phase(P_IDLE_SETTLE);
        }
        break;
    case P_IDLE_SETTLE:
        if (secs_since(G.phase_ns) * 1000 >= G.settle_ms) {
            int open = target_alive_custs(t);
            long rss1 = read_rss_kb(G.pid);
            printf("IDLE label=%s conns=%d welcomed=%d open=%d failed=%ld "
                   "closed=%ld rss_before_kb=%ld rss_after_kb=%ld "
                   "bytes_per_conn=%.0f connect_s=%.2f\n",
                   t->label, G.conns, t->nwelcomed, open,
                   (long)t->nfailed, t->closes, G.rss0, rss1,
                   open > 0 ? (double)(rss1 - G.rss0) * 1024.0 / open : 0.0,
                   (double)(G.idle_done_ns - G.idle_start_ns) / 1e9);
            if (t->last_error[0])
                printf("NOTE label=%s last_error=\"%s\"\n", t->label,
                       t->last_error);
            fflush(stdout);
            close_all(t);
            G.failed = open < G.conns;
            set_phase(P_IDLE_CLOSE);
        }
        break;
    case P_IDLE_CLOSE:
        if (secs_since(G.phase_ns) > 0.2) {
            set_phase(P_DONE);
            finish(G.failed);
        }
        break;
    }
}

/* ---- active mode -------------------------------------------------------- */

static int all_targets(int (*pred)(const struct target *))
{
    for (int i = 0; i < G.ntargets; i++)
        if (!pred(&G.targets[i]))
            return 0;
    return 1;
}

static int agents_ready(const struct target *t)
{
    for (int i = 0; i < t->nagents; i++)
        if (!t->agents[i].authed)
            return 0;
    return 1;
}

static int custs_ready(const struct target *t)
{
    return t->nfirst >= t->ncust;
}

static int assigned_all(const struct target *t)
{
    return t->nassigned >= t->ncust;
}

static int probed_all(const struct target *t)
{
    return assigned_all(t) || t->nprobed >= t->ncust;
}

static void setup_failed(const char *what)
{
    for (int i = 0; i < G.ntargets; i++) {
        struct target *t = &G.targets[i];
        int authed = 0;
        for (int k = 0; k < t->nagents; k++)
            authed += t->agents[k].authed;
        printf("SETUP FAILED label=%s step=%s agents=%d/%d welcomed=%d "
               "first_acked=%d/%d assigned=%d probed=%d http_ok=%d "
               "http_fail=%d hs_fail=%ld conn_fail=%ld closes=%ld "
               "chat_errors=%ld console_errors=%ld last_error=\"%s\"\n",
               t->label, what, authed, t->nagents, t->nwelcomed, t->nfirst,
               t->ncust, t->nassigned, t->nprobed, t->http_ok, t->http_fail,
               t->hs_fail, t->conn_fail, t->closes, t->chat_errors,
               t->console_errors, t->last_error);
    }
    fflush(stdout);
    set_phase(P_DONE);
    finish(1);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static double pct(const double *v, size_t n, double p)
{
    size_t k;

    if (!n)
        return 0;
    k = (size_t)(p * (double)n + 0.999999);
    if (k < 1)
        k = 1;
    if (k > n)
        k = n;
    return v[k - 1];
}

static void run_report(struct run *r)
{
    struct target *t = r->t;
    size_t n = 0, rn = 0;
    double *lat = xmalloc((r->last - r->first + 1) * sizeof(double));
    double *rl = xmalloc((r->rlast - r->rfirst + 1) * sizeof(double));
    double span, rate, wall = (double)(now_ns() - r->start_ns) / 1e9;

    for (uint32_t s = r->first; s < r->last; s++)
        if (G.msgs[s].delivered && G.msgs[s].recv_ns >= G.msgs[s].sent_ns)
            lat[n++] = (double)(G.msgs[s].recv_ns - G.msgs[s].sent_ns) / 1e6;
    for (uint32_t s = r->rfirst; s < r->rlast; s++)
        if (G.rmsgs[s].delivered)
            rl[rn++] = (double)(G.rmsgs[s].recv_ns - G.rmsgs[s].sent_ns) /
                       1e6;
    qsort(lat, n, sizeof(double), cmp_double);
    qsort(rl, rn, sizeof(double), cmp_double);
    span = r->last_recv_ns > r->start_ns
               ? (double)(r->last_recv_ns - r->start_ns) / 1e9
               : 0;
    rate = span > 0 ? (double)r->delivered / span : 0;
    printf("RUN label=%s kind=%s n=%d offered=%.0f secs=%.2f sent=%llu "
           "acked=%llu delivered=%llu lost=%llu dup=%llu msgs_per_s=%.0f "
           "p50_ms=%.3f p99_ms=%.3f max_ms=%.3f gen_lag_max_ms=%.1f "
           "replies=%u replies_delivered=%zu reply_p50_ms=%.3f "
           "reply_p99_ms=%.3f chat_errors=%ld console_errors=%ld "
           "closes=%ld alive=%d cpu_server=%.0f cpu_redis=%.0f "
           "cpu_load=%.0f overload_at_s=%.2f\n",
           t->label, r->kind == RUN_PACED ? "paced" : "sat", r->n,
           r->kind == RUN_PACED ? G.rate : 0.0, span,
           (unsigned long long)r->sent, (unsigned long long)r->acked,
           (unsigned long long)r->delivered,
           (unsigned long long)(r->sent - r->delivered),
           (unsigned long long)r->dups, rate, pct(lat, n, 0.50),
           pct(lat, n, 0.99), n ? lat[n - 1] : 0.0,
           (double)r->lag_max_ns / 1e6, r->rlast - r->rfirst, rn,
           pct(rl, rn, 0.50), pct(rl, rn, 0.99),
           t->chat_errors - r->errors0, t->console_errors - r->cerrors0,
           t->closes - r->closes0, target_alive_custs(t),
           cpu_pct(t->pid, r->cpu0, wall),
           cpu_pct(G.redis_pid, r->rcpu0, wall),
           cpu_pct(getpid(), r->gcpu0, wall),
           r->overload_ns ? (double)(r->overload_ns - r->start_ns) / 1e9
                          : 0.0);
    if (t->last_error[0] && (t->chat_errors > r->errors0 ||
                             t->console_errors > r->cerrors0 ||
                             t->closes > r->closes0))
        printf("NOTE label=%s last_error=\"%s\"\n", t->label, t->last_error);
    fflush(stdout);
    free(lat);
    free(rl);
}

static void run_start(struct run *r)
{
    struct target *t = r->t;

    r->first = r->last = G.nmsgs;
    r->rfirst = r->rlast = G.nrmsgs;
    r->errors0 = t->chat_errors;
    r->cerrors0 = t->console_errors;
    r->closes0 = t->closes;
    r->cpu0 = read_cpu_ticks(t->pid);
    r->rcpu0 = read_cpu_ticks(G.redis_pid);
    r->gcpu0 = read_cpu_ticks(getpid());
    r->start_ns = now_ns();
    r->end_ns = r->start_ns +
                (uint64_t)((r->kind == RUN_PACED ? G.duration
                                                  : G.sat_duration) * 1e9);
    for (int i = 0; i < t->ncust; i++)
        t->cust[i].inflight = 0;
    if (r->kind == RUN_SAT)
        for (int w = 0; w < G.window; w++)
            for (int i = 0; i < t->ncust; i++)
                cust_send(t, i, r);
    set_phase(P_RUN_SEND);
}

static void paced_step(struct run *r)
{
    struct target *t = r->t;
    uint64_t now = now_ns(), total;
    double el = (double)(now - r->start_ns) / 1e9;
    uint64_t due;

    total = (uint64_t)(G.rate * G.duration);
    if (r->sent - r->delivered > G.backlog) {
        /* The server is not keeping up: stop offering more (the drain
         * and the next runs stay bounded) and say so. */
        r->overload_ns = now;
        r->end_ns = now;
        return;
    }
    due = (uint64_t)(el * G.rate) + 1;
    if (due > total)
        due = total;
    for (int guard = 0; r->sent < due && guard < 100000; guard++) {
        /* the intended time of message r->sent */
        uint64_t want = r->start_ns + (uint64_t)((double)r->sent / G.rate *
                                                 1e9);
        int i = r->rr++ % t->ncust;
        if (now > want && now - want > r->lag_max_ns)
            r->lag_max_ns = now - want;
        if (cust_send(t, i, r) < 0 && target_alive_custs(t) == 0)
            break;
    }
}

/* Each agent replies to the conversation of its latest entry. */
static void on_reply_tick(uv_timer_t *tm)
{
    struct run *r = cur_run();
    char buf[256];

    (void)tm;
    if (!r || G.phase != P_RUN_SEND || G.reply_rate <= 0)
        return;
    for (int i = 0; i < r->t->nagents; i++) {
        struct agent *a = &r->t->agents[i];
        uint32_t rs;
        if (!a->c || a->c->state != S_OPEN || !a->last_conv[0])
            continue;
        rs = msg_new(&G.rmsgs, &G.nrmsgs, &G.rmsgcap);
        if (rs == UINT32_MAX)
            return;
        snprintf(buf, sizeof(buf),
                 "{\"type\":\"reply\",\"conversation\":\"%s\","
                 "\"id\":\"q%u\",\"text\":\"r%u thanks, we are on it\"}",
                 a->last_conv, rs, rs);
        G.rmsgs[rs].sent_ns = now_ns();
        ws_text(a->c, buf);
        r->rlast = rs + 1;
    }
}

static void active_step(void)
{
    struct run *r = cur_run();
    int i;

    switch (G.phase) {
    case P_AGENTS:
        if (all_targets(agents_ready)) {
            for (i = 0; i < G.ntargets; i++)
                cust_connect_next(&G.targets[i]);
            set_phase(P_CUSTOMERS);
        } else if (secs_since(G.phase_ns) > 20) {
            setup_failed("agents");
        }
        break;
    case P_CUSTOMERS:
        for (i = 0; i < G.ntargets; i++)
            cust_connect_next(&G.targets[i]);
        if (all_targets(custs_ready))
            set_phase(P_ASSIGN_WAIT);
        else if (secs_since(G.phase_ns) > 90)
            setup_failed("customers");
        break;
    case P_ASSIGN_WAIT: {
        int total = 0;
        for (i = 0; i < G.ntargets; i++)
            total += G.targets[i].nassigned;
        if (total != G.last_total) {
            G.last_total = total;
            G.progress_ns = now_ns();
        }
        if (all_targets(assigned_all)) {
            goto setup_done;
        } else if (secs_since(G.progress_ns) > 3 ||
                   secs_since(G.phase_ns) > 30) {
            /* Not routed by the server (or not fully): find the
             * conversations with a second hello. */
            for (i = 0; i < G.ntargets; i++) {
                struct target *t = &G.targets[i];
                if (assigned_all(t))
                    continue;
                if (!t->optoken[0]) {
                    setup_failed("assign (no operator token)");
                    return;
                }
                for (int k = 0; k < t->ncust; k++)
                    t->cust[k].probe = conn_start(t, K_PROBE, k);
            }
            set_phase(P_PROBE);
        }
        break;
    }
    case P_PROBE:
        if (all_targets(probed_all)) {
            for (i = 0; i < G.ntargets; i++) {
                struct target *t = &G.targets[i];
                if (assigned_all(t))
                    continue;
                for (int k = 0; k < CL_HTTP_CONNS; k++) {
                    t->http[k] = conn_start(t, K_HTTP, k);
                    t->http_inflight[k] = 0;
                }
            }
            set_phase(P_HTTP);
        } else if (secs_since(G.phase_ns) > 30) {
            setup_failed("probe");
        }
        break;
    case P_HTTP:
        if (all_targets(assigned_all)) {
            for (i = 0; i < G.ntargets; i++)
                for (int k = 0; k < CL_HTTP_CONNS; k++)
                    if (G.targets[i].http[k])
                        conn_close(G.targets[i].http[k], 0);
            goto setup_done;
        } else if (secs_since(G.phase_ns) > 30) {
            setup_failed("assign");
        }
        break;
    case P_RUN_SEND:
        if (r->kind == RUN_PACED)
            paced_step(r);
        if (now_ns() >= r->end_ns) {
            r->drain_end_ns = now_ns() + (uint64_t)G.drain_s * 1000000000ull;
            set_phase(P_RUN_DRAIN);
        }
        break;
    case P_RUN_DRAIN:
        if ((r->delivered >= r->sent && r->acked >= r->sent) ||
            now_ns() >= r->drain_end_ns) {
            run_report(r);
            set_phase(P_GAP);
        }
        break;
    case P_GAP:
        if (secs_since(G.phase_ns) >= 1.0) {
            if (++G.cur >= G.nruns) {
                printf("END ok\n");
                fflush(stdout);
                set_phase(P_DONE);
                finish(0);
            } else {
                run_start(cur_run());
            }
        }
        break;
    }
    return;
setup_done:
    for (i = 0; i < G.ntargets; i++) {
        struct target *t = &G.targets[i];
        printf("SETUP label=%s agents=%d customers=%d assigned=%d "
               "by_router=%d by_bench=%d http_fail=%d secs=%.1f\n",
               t->label, t->nagents, t->ncust, t->nassigned, t->by_router,
               t->nassigned - t->by_router, t->http_fail,
               secs_since(G.idle_start_ns));
    }
    fflush(stdout);
    G.cur = -1;
    set_phase(P_GAP);
    G.phase_ns -= 500000000ull; /* half a second's pause before the first */
}

static void on_tick(uv_timer_t *tm)
{
    (void)tm;
    if (G.phase == P_DONE)
        return;
    if (G.idle_mode)
        idle_step();
    else
        active_step();
}

static void on_guard(uv_timer_t *tm)
{
    (void)tm;
    printf("TIMEOUT after %d s (phase %d)\n", G.max_secs, G.phase);
    fflush(stdout);
    exit(2);
}

/* ---- command line ------------------------------------------------------- */

static void load_tokens(struct target *t, const char *path)
{
    FILE *f = fopen(path, "r");
    char line[512];

    if (!f)
        die("cannot open %s", path);
    for (int guard = 0; guard < 1000 && fgets(line, sizeof(line), f);
         guard++) {
        char kind[32], tok[256];
        if (sscanf(line, "%31s %255s", kind, tok) != 2)
            continue;
        if (strcmp(kind, "agent") == 0 && t->nagents < CL_MAX_AGENTS)
            copy_str(t->agents[t->nagents++].token,
                     sizeof(t->agents[0].token), tok);
        else if (strcmp(kind, "operator") == 0)
            copy_str(t->optoken, sizeof(t->optoken), tok);
    }
    fclose(f);
    if (!t->nagents)
        die("%s: no agent tokens", path);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: chatload idle --label L --port P --pid PID --conns N\n"
            "         [--ips K] [--conc C] [--settle-ms MS] [--max-secs S]\n"
            "       chatload active --target LABEL,PORT,TOKENFILE[,PID] ...\n"
            "         [--customers N] [--rate R] [--duration S] [--runs N]\n"
            "         [--sat-duration S] [--window W] [--reply-rate R]\n"
            "         [--drain S] [--ips K] [--conc C] [--max-secs S]\n"
            "         [--redis-pid PID]\n");
    exit(1);
}

int main(int argc, char **argv)
{
    const char *label = "target";
    int port = 0;

    if (argc < 2)
        usage();
    G.idle_mode = strcmp(argv[1], "idle") == 0;
    if (!G.idle_mode && strcmp(argv[1], "active") != 0)
        usage();
    G.nips = 8;
    G.conc = 256;
    G.conns = 10000;
    G.settle_ms = 2000;
    G.customers = 1000;
    G.rate = 5000;
    G.duration = 10;
    G.sat_duration = 5;
    G.runs = 3;
    G.window = 2;
    G.reply_rate = 10;
    G.drain_s = 15;
    G.max_secs = 0;
    G.rnd = 2463534242u;
    for (int i = 2; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            usage();
        i++;
        if (strcmp(o, "--label") == 0)
            label = v;
        else if (strcmp(o, "--port") == 0)
            port = atoi(v);
        else if (strcmp(o, "--pid") == 0)
            G.pid = atoi(v);
        else if (strcmp(o, "--conns") == 0)
            G.conns = atoi(v);
        else if (strcmp(o, "--ips") == 0)
            G.nips = atoi(v);
        else if (strcmp(o, "--conc") == 0)
            G.conc = atoi(v);
        else if (strcmp(o, "--settle-ms") == 0)
            G.settle_ms = atoi(v);
        else if (strcmp(o, "--customers") == 0)
            G.customers = atoi(v);
        else if (strcmp(o, "--rate") == 0)
            G.rate = atof(v);
        else if (strcmp(o, "--duration") == 0)
            G.duration = atof(v);
        else if (strcmp(o, "--sat-duration") == 0)
            G.sat_duration = atof(v);
        else if (strcmp(o, "--runs") == 0)
            G.runs = atoi(v);
        else if (strcmp(o, "--window") == 0)
            G.window = atoi(v);
        else if (strcmp(o, "--reply-rate") == 0)
            G.reply_rate = atof(v);
        else if (strcmp(o, "--drain") == 0)
            G.drain_s = atoi(v);
        else if (strcmp(o, "--redis-pid") == 0)
            G.redis_pid = atoi(v);
        else if (strcmp(o, "--max-secs") == 0)
            G.max_secs = atoi(v);
        else if (strcmp(o, "--target") == 0) {
            struct target *t;
            char lab[32], file[4096];
            int p, pid = 0;
            if (G.ntargets == CL_MAX_TARGETS)
                die("at most %d targets", CL_MAX_TARGETS);
            if (sscanf(v, "%31[^,],%d,%4095[^,],%d", lab, &p, file, &pid) <
                3)
                die("--target LABEL,PORT,TOKENFILE[,PID]");
            t = &G.targets[G.ntargets++];
            copy_str(t->label, sizeof(t->label), lab);
            t->port = p;
            t->pid = pid;
            load_tokens(t, file);
        } else
            usage();
    }
    if (G.nips < 0 || G.nips > 250 || G.conc < 1 || G.runs < 0 ||
        G.runs > 10 || G.window < 1 || G.rate <= 0 || G.duration <= 0)
        usage();
    G.loop = uv_default_loop();
    if (G.idle_mode) {
        struct target *t = &G.targets[0];
        if (!port || !G.pid || G.conns < 1)
            usage();
        G.ntargets = 1;
        copy_str(t->label, sizeof(t->label), label);
        t->port = port;
        t->ncust = G.conns;
        t->cust = xcalloc((size_t)G.conns, sizeof(struct cust));
        if (!G.max_secs)
            G.max_secs = 150;
        G.rss0 = read_rss_kb(G.pid);
        if (G.rss0 < 0)
            die("cannot read /proc/%d/status", G.pid);
        G.idle_start_ns = now_ns();
        set_phase(P_IDLE_CONNECT);
        cust_connect_next(t);
    } else {
        if (!G.ntargets || G.customers < 1)
            usage();
        for (int i = 0; i < G.ntargets; i++) {
            struct target *t = &G.targets[i];
            t->ncust = G.customers;
            t->cust = xcalloc((size_t)G.customers, sizeof(struct cust));
            t->asetcap = 1024;
            while (t->asetcap < (size_t)G.customers * 4)
                t->asetcap *= 2;
            t->aset = xcalloc(t->asetcap, sizeof(*t->aset));
            t->aset_agent = xcalloc(t->asetcap, sizeof(int));
            for (int k = 0; k < t->nagents; k++)
                t->agents[k].c = conn_start(t, K_AGENT, k);
        }
        /* paced runs, then saturation runs, alternating the targets */
        for (int k = 0; k < 2; k++)
            for (int n = 1; n <= G.runs; n++)
                for (int i = 0; i < G.ntargets; i++) {
                    struct run *r = &G.runs_list[G.nruns++];
                    r->t = &G.targets[i];
                    r->kind = k == 0 ? RUN_PACED : RUN_SAT;
                    r->n = n;
                }
        if (G.sat_duration <= 0) {
            int w = 0;
            for (int i = 0; i < G.nruns; i++)
                if (G.runs_list[i].kind == RUN_PACED)
                    G.runs_list[w++] = G.runs_list[i];
            G.nruns = w;
        }
        if (!G.max_secs)
            G.max_secs = 600;
        G.backlog = (uint64_t)G.rate;
        if (G.backlog < 500)
            G.backlog = 500;
        G.cur = -1;
        G.idle_start_ns = now_ns();
        set_phase(P_AGENTS);
    }
    uv_timer_init(G.loop, &G.tick);
    uv_timer_start(&G.tick, on_tick, 1, 1);
    uv_timer_init(G.loop, &G.guard);
    uv_timer_start(&G.guard, on_guard, (uint64_t)G.max_secs * 1000, 0);
    uv_timer_init(G.loop, &G.reply);
    if (!G.idle_mode && G.reply_rate > 0) {
        uint64_t ms = (uint64_t)(1000.0 / G.reply_rate);
        uv_timer_start(&G.reply, on_reply_tick, ms ? ms : 1, ms ? ms : 1);
    }
    uv_run(G.loop, UV_RUN_DEFAULT);
    uv_loop_close(G.loop);
    free(G.msgs);
    free(G.rmsgs);
    for (int i = 0; i < G.ntargets; i++) {
        free(G.targets[i].cust);
        free(G.targets[i].aset);
        free(G.targets[i].aset_agent);
    }
    return G.failed ? 1 : 0;
}
