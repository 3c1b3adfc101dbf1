/* test_hconn.c - unit tests for the keep-alive HTTP/1.1 client (hconn).
 *
 * The peer is a small HTTP server written here on libuv, on the same loop
 * as the client, bound to 127.0.0.1 on a port the kernel picks, so each
 * test controls the bytes: a handler per test looks at every request and
 * answers it at once, byte by byte (one byte per 1 ms timer tick, so the
 * client sees one byte per read), never, or by closing or resetting the
 * connection. The server counts accepted connections and requests and
 * keeps the last request head and body.
 *
 * Cases: URL parsing; refused requests (bad method, path, headers, a
 * header the pool writes itself, full queue, closed pool); keep-alive
 * reuse (a burst and a chain over few connections, exact request bytes);
 * FIFO order over one connection; chunked bodies with extensions and
 * trailers; responses split byte by byte (Content-Length, chunked, an
 * interim 100 first); Content-Length bodies (empty, binary, HEAD, 204);
 * Connection: close, HTTP/1.0 with and without keep-alive, bodies ended by
 * EOF, bytes after a response; a server closing an idle connection (seen
 * while idle; met by the next request: EOF and RST, retried once on a new
 * connection, not twice); an early close inside a response; timeouts in
 * flight and in the queue; connect refused; a host name (localhost) and
 * one that does not resolve;
 * malformed responses; oversized bodies; 429 with Retry-After (seconds
 * and dates); closing the pool with requests in flight and queued, also
 * from inside a callback. Every callback checks that it did not run inside
 * sb_hconn_request(); every loop run is bounded in time.
 *
 * test_throughput (print only, no assertion on speed) starts nginx, when
 * installed, with a private config on a free 127.0.0.1 port, and measures
 * POSTs per second over 64 connections through hconn and through httpc;
 * SB_HCONN_BENCH_MS sets each run's length (default 1500; 0 skips).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "hconn.h"
#include "httpc.h"
#include "log.h"
#include "util.h"
#include "testutil.h"

#define NREC 512

/* ---- the test server ---------------------------------------------------- */

enum s_act {
    A_RESPOND, /* write resp (then close when close_after) */
    A_DRIBBLE, /* write resp one byte per ms (then close if close_after) */
    A_SILENT,  /* never answer */
    A_CLOSE,   /* close the connection without answering */
    A_RESET    /* reset the connection without answering */
};

struct sreq {
    const char *method;
    const char *path;
    const char *body;
    size_t body_len;
};

struct action {
    enum s_act act;
    char *resp; /* malloc'd, owned by the server after the handler */
    size_t len; /* 0: strlen(resp) */
    int close_after;
};

struct sconn;
typedef void handler_fn(struct sconn *c, const struct sreq *q,
                        struct action *a);

struct sconn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    struct sconn *next;
    struct sb_buf in;
    int nreq; /* requests seen on this connection */
    int closing;
    int nclose;
    char *drip;
    size_t drip_len, drip_pos;
    int drip_close;
};

struct swrite {
    uv_write_t w;
    struct sconn *c;
    char *data;
    int close_after;
};

static struct {
    uv_tcp_t lst;
    int listening;
    int port;
    int accepted;
    int requests;
    int client_eofs; /* connections the client closed */
    handler_fn *handler;
    struct sconn *conns;
    char last_head[4096];
    char last_body[2048];
    size_t last_body_len;
    int closed_idle; /* for h_close_idle */
} S;

static uv_loop_t loop;

static void s_conn_closed(uv_handle_t *h)
{
    struct sconn *c = h->data;

    if (--c->nclose > 0)
        return;
    sb_buf_free(&c->in);
    free(c->drip);
    free(c);
}

static void s_close(struct sconn *c, int reset)
{
    struct sconn **pp;

    if (c->closing)
        return;
    c->closing = 1;
    for (pp = &S.conns; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    uv_timer_stop(&c->timer);
    c->nclose = 2;
    if (!reset || uv_tcp_close_reset(&c->tcp, s_conn_closed) != 0)
        uv_close((uv_handle_t *)&c->tcp, s_conn_closed);
    uv_close((uv_handle_t *)&c->timer, s_conn_closed);
}

static void s_on_write(uv_write_t *w, int status)
{
    struct swrite *sw = (struct swrite *)w;

    if (sw->close_after && !sw->c->closing)
        s_close(sw->c, 0);
    free(sw->data);
    free(sw);
}

static void s_write(struct sconn *c, const char *p, size_t n, int close_after)
{
    struct swrite *sw = sb_calloc(1, sizeof(*sw));
    uv_buf_t b;

    sw->c = c;
    sw->data = sb_malloc(n ? n : 1);
    memcpy(sw->data, p, n);
    sw->close_after = close_after;
    b = uv_buf_init(sw->data, (unsigned)n);
    if (uv_write(&sw->w, (uv_stream_t *)&c->tcp, &b, 1, s_on_write) < 0) {
        free(sw->data);
        free(sw);
    }
}

static void s_on_drip(uv_timer_t *t)
{
    struct sconn *c = t->data;

    if (c->drip_pos >= c->drip_len) {
        uv_timer_stop(&c->timer);
        if (c->drip_close)
            s_close(c, 0);
        return;
    }
    s_write(c, c->drip + c->drip_pos, 1, 0);
    c->drip_pos++;
}

/* Find the end of a request in c->in; handle every complete one. */
static void s_handle(struct sconn *c)
{
    for (int guard = 0; guard < 64 && !c->closing; guard++) {
        char *end = c->in.data ? strstr(c->in.data, "\r\n\r\n") : NULL;
        size_t head_len, clen = 0, total;
        char method[16] = "", path[1024] = "", *cl, *body;
        struct sreq q;
        struct action a;

        if (!end)
            return;
        head_len = (size_t)(end - c->in.data) + 4;
        *end = '\0';
        cl = strcasestr(c->in.data, "\r\ncontent-length:");
        if (cl)
            clen = strtoul(cl + 17, NULL, 10);
        *end = '\r';
        total = head_len + clen;
        if (c->in.len < total)
            return;
        snprintf(S.last_head, sizeof(S.last_head), "%.*s", (int)head_len,
                 c->in.data);
        S.last_body_len = clen < sizeof(S.last_body) ? clen : 0;
        memcpy(S.last_body, c->in.data + head_len, S.last_body_len);
        sscanf(c->in.data, "%15s %1023s", method, path);
        body = sb_malloc(clen + 1);
        memcpy(body, c->in.data + head_len, clen);
        body[clen] = '\0';
        memmove(c->in.data, c->in.data + total, c->in.len - total);
        c->in.len -= total;
        c->in.data[c->in.len] = '\0';

        q.method = method;
        q.path = path;
        q.body = body;
        q.body_len = clen;
        memset(&a, 0, sizeof(a));
        S.requests++;
        S.handler(c, &q, &a);
        c->nreq++;
        free(body);
        switch (a.act) {
        case A_RESPOND:
            s_write(c, a.resp, a.len ? a.len : strlen(a.resp), a.close_after);
            free(a.resp);
            break;
        case A_DRIBBLE:
            free(c->drip);
            c->drip = a.resp;
            c->drip_len = a.len ? a.len : strlen(a.resp);
            c->drip_pos = 0;
            c->drip_close = a.close_after;
            uv_timer_start(&c->timer, s_on_drip, 1, 1);
            break;
        case A_SILENT:
            free(a.resp);
            break;
        case A_CLOSE:
        case A_RESET:
            free(a.resp);
            s_close(c, a.act == A_RESET);
            return;
        }
    }
}

static void s_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    static char buf[65536];

    *b = uv_buf_init(buf, sizeof(buf));
}

static void s_on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct sconn *c = s->data;

    if (n < 0) {
        S.client_eofs++;
        s_close(c, 0);
        return;
    }
    if (n > 0 && sb_buf_append(&c->in, b->base, (size_t)n) == 0)
        s_handle(c);
}

static void s_on_conn(uv_stream_t *l, int status)
{
    struct sconn *c;

    if (status < 0)
        return;
    c = sb_calloc(1, sizeof(*c));
    uv_tcp_init(&loop, &c->tcp);
    uv_timer_init(&loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    sb_buf_init(&c->in, 1 << 20);
    if (uv_accept(l, (uv_stream_t *)&c->tcp) < 0) {
        c->nclose = 2;
        c->closing = 1;
        uv_close((uv_handle_t *)&c->tcp, s_conn_closed);
        uv_close((uv_handle_t *)&c->timer, s_conn_closed);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    c->next = S.conns;
    S.conns = c;
    S.accepted++;
    uv_read_start((uv_stream_t *)&c->tcp, s_alloc, s_on_read);
}

static int s_start(handler_fn *h)
{
    struct sockaddr_in a;
    struct sockaddr_storage got;
    int len = sizeof(got);

    S.handler = h;
    uv_ip4_addr("127.0.0.1", 0, &a);
    if (uv_tcp_init(&loop, &S.lst) < 0 ||
        uv_tcp_bind(&S.lst, (const struct sockaddr *)&a, 0) < 0 ||
        uv_listen((uv_stream_t *)&S.lst, 128, s_on_conn) < 0 ||
        uv_tcp_getsockname(&S.lst, (struct sockaddr *)&got, &len) < 0)
        return -1;
    S.listening = 1;
    S.port = ntohs(((struct sockaddr_in *)&got)->sin_port);
    return 0;
}

static void s_stop(void)
{
    while (S.conns)
        s_close(S.conns, 0);
    if (S.listening) {
        uv_close((uv_handle_t *)&S.lst, NULL);
        S.listening = 0;
    }
}

/* ---- handlers ----------------------------------------------------------- */

/* 200 with "<path>|<body>", keep-alive. */
static void h_echo(struct sconn *c, const struct sreq *q, struct action *a)
{
    size_t n = strlen(q->path) + 1 + q->body_len;
    char *b = sb_malloc(n + 1);

    snprintf(b, n + 1, "%s|%s", q->path, q->body);
    a->resp = sb_asprintf("HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n"
                          "Content-Type: text/plain\r\n\r\n%s",
                          strlen(b), b);
    free(b);
}

/* The response is the request path's table entry: tests that need a
 * fixed answer put it in T_RESP (and T_ACT / T_CLOSE). */
static const char *T_RESP;
static size_t T_RESP_LEN;
static enum s_act T_ACT;
static int T_CLOSE;

static void h_fixed(struct sconn *c, const struct sreq *q, struct action *a)
{
    size_t n = T_RESP_LEN ? T_RESP_LEN : strlen(T_RESP);

    a->act = T_ACT;
    a->resp = sb_malloc(n + 1);
    memcpy(a->resp, T_RESP, n);
    a->resp[n] = '\0';
    a->len = n;
    a->close_after = T_CLOSE;
}

/* ---- the client side ---------------------------------------------------- */

struct rec {
    int calls;
    int early; /* completed inside sb_hconn_request() */
    int after_close;
    int status;
    enum sb_hconn_err err;
    char error[96];
    char body[512];
    size_t body_len;
    long long retry_after;
    int order; /* completion sequence number */
};

static struct {
    uv_timer_t tick;
    struct sb_hconn_pool *pool;
    int in_request;
    int closed; /* the pool was closed */
    int ndone;
    struct rec rec[NREC];
    int chain_left;
    int chain_next;
    int close_in_cb; /* close the pool from this slot's callback */
    char *bodies[NREC];
} T;

static void on_resp(const struct sb_hconn_resp *r, void *arg);

static int submit_ex(int slot, const char *method, const char *path,
                     const char *body, size_t body_len, long timeout_ms)
{
    struct sb_hconn_req q;
    char hdr[64];
    int rc;
    int outer = T.in_request;

    snprintf(hdr, sizeof(hdr), "X-Slot: %d\r\nUser-Agent: t\r\n", slot);
    free(T.bodies[slot]);
    T.bodies[slot] = NULL;
    if (body) { /* borrowed until the callback: keep our own copy */
        T.bodies[slot] = sb_malloc(body_len + 1);
        memcpy(T.bodies[slot], body, body_len);
    }
    memset(&q, 0, sizeof(q));
    q.method = method;
    q.path = path;
    q.headers = hdr;
    q.body = T.bodies[slot];
    q.body_len = body_len;
    q.timeout_ms = timeout_ms;
    T.in_request = 1;
    rc = sb_hconn_request(T.pool, &q, on_resp, &T.rec[slot]);
    T.in_request = outer;
    return rc;
}

static int submit(int slot, const char *path, const char *body)
{
    return submit_ex(slot, "POST", path, body, body ? strlen(body) : 0, 5000);
}

static void on_resp(const struct sb_hconn_resp *r, void *arg)
{
    struct rec *rc = arg;
    int slot = (int)(rc - T.rec);

    rc->calls++;
    if (T.in_request)
        rc->early++;
    if (T.closed)
        rc->after_close++;
    rc->status = r->status;
    rc->err = r->err;
    snprintf(rc->error, sizeof(rc->error), "%s", r->error ? r->error : "");
    rc->body_len = r->body_len;
    snprintf(rc->body, sizeof(rc->body), "%s", r->body);
    rc->retry_after = r->retry_after;
    rc->order = T.ndone++;
    /* the body was borrowed until now: poison and free it */
    if (T.bodies[slot]) {
        memset(T.bodies[slot], 'Z', 1);
        free(T.bodies[slot]);
        T.bodies[slot] = NULL;
    }
    if (T.close_in_cb == slot + 1 && !T.closed) {
        T.closed = 1;
        sb_hconn_pool_close(T.pool);
    }
    if (T.chain_left > 0 && !T.closed) {
        char path[32];

        T.chain_left--;
        snprintf(path, sizeof(path), "/chain/%d", T.chain_next);
        if (submit(T.chain_next++, path, "next") < 0)
            T.chain_left = -1000;
    }
}

static void on_tick(uv_timer_t *t)
{
}

/* Run the loop until T.ndone reaches want or ms pass; 1 when reached. */
static int run_until(int want, int ms)
{
    uint64_t end = sb_mono_ms() + (uint64_t)ms;

    uv_timer_start(&T.tick, on_tick, 10, 10);
    while (T.ndone < want && sb_mono_ms() < end)
        uv_run(&loop, UV_RUN_ONCE);
    uv_timer_stop(&T.tick);
    return T.ndone >= want;
}

static void run_for(int ms)
{
    run_until(1 << 30, ms);
}

static void pool_open(const struct sb_hconn_opts *o)
{
    char host[] = "127.0.0.1";

    T.pool = sb_hconn_pool_new(&loop, host, S.port, o);
    assert_non_null(T.pool);
}

static int setup(void **state)
{
    memset(&T, 0, sizeof(T));
    memset(&S, 0, sizeof(S));
    T_RESP = NULL;
    T_RESP_LEN = 0;
    T_ACT = A_RESPOND;
    T_CLOSE = 0;
    if (uv_loop_init(&loop) < 0)
        return -1;
    uv_timer_init(&loop, &T.tick);
    return 0;
}

static int teardown(void **state)
{
    uint64_t end;
    int rc;

    if (!T.closed) {
        T.closed = 1;
        sb_hconn_pool_close(T.pool);
    }
    s_stop();
    uv_close((uv_handle_t *)&T.tick, NULL);
    end = sb_mono_ms() + 5000;
    while (uv_run(&loop, UV_RUN_NOWAIT) && sb_mono_ms() < end)
        usleep(1000);
    for (int i = 0; i < NREC; i++) {
        free(T.bodies[i]);
        T.bodies[i] = NULL;
    }
    rc = uv_loop_close(&loop);
    assert_int_equal(rc, 0);
    return 0;
}

/* Every record up to n: exactly one call, none inside the request call. */
static void assert_once(int n)
{
    for (int i = 0; i < n; i++) {
        if (T.rec[i].calls != 1 || T.rec[i].early != 0 ||
            T.rec[i].after_close != 0)
            fail_msg("slot %d: calls %d early %d after_close %d", i,
                     T.rec[i].calls, T.rec[i].early, T.rec[i].after_close);
    }
}

static void assert_ok(int slot, int status, const char *body)
{
    struct rec *r = &T.rec[slot];

    if (r->calls != 1 || r->status != status || r->err != SB_HCONN_OK ||
        (body && strcmp(r->body, body) != 0))
        fail_msg("slot %d: calls %d status %d err %d (%s) body \"%s\", "
                 "wanted %d \"%s\"",
                 slot, r->calls, r->status, (int)r->err, r->error, r->body,
                 status, body ? body : "(any)");
}

static void assert_err(int slot, enum sb_hconn_err err)
{
    struct rec *r = &T.rec[slot];

    if (r->calls != 1 || r->status != 0 || r->err != err || !r->error[0])
        fail_msg("slot %d: calls %d status %d err %d (%s), wanted err %d", slot,
                 r->calls, r->status, (int)r->err, r->error, (int)err);
}

static void use_fixed(const char *resp, enum s_act act, int close_after)
{
    T_RESP = resp;
    T_RESP_LEN = 0;
    T_ACT = act;
    T_CLOSE = close_after;
}

/* ---- tests -------------------------------------------------------------- */

static void test_parse_url(void **state)
{
    static const struct {
        const char *url;
        int ok;
        const char *host;
        int port;
        const char *path;
    } cases[] = {
        {"http://127.0.0.1:8080/hook?k=1", 1, "127.0.0.1", 8080, "/hook?k=1"},
        {"HTTP://example.com/x", 1, "example.com", 80, "/x"},
        {"http://h", 1, "h", 80, "/"},
        {"http://h:81", 1, "h", 81, "/"},
        {"http://h?q=1", 1, "h", 80, "/?q=1"},
        {"http://h/p?a=b#frag", 1, "h", 80, "/p?a=b"},
        {"http://h#frag", 1, "h", 80, "/"},
        {"http://[::1]:9000/v6", 1, "::1", 9000, "/v6"},
        {"http://[::1]/", 1, "::1", 80, "/"},
        {"https://h/x", 0, NULL, 0, NULL},
        {"http://user:pw@h/x", 0, NULL, 0, NULL},
        {"http://h:0/", 0, NULL, 0, NULL},
        {"http://h:65536/", 0, NULL, 0, NULL},
        {"http://h:80x/", 0, NULL, 0, NULL},
        {"http://h:/", 0, NULL, 0, NULL},
        {"http:///x", 0, NULL, 0, NULL},
        {"http://h/a b", 0, NULL, 0, NULL},
        {"http://h/a\r\nX: 1", 0, NULL, 0, NULL},
        {"http://[::1/", 0, NULL, 0, NULL},
        {"http://[h]/", 0, NULL, 0, NULL},
        {"http://::1/", 0, NULL, 0, NULL},
        {"ftp://h/", 0, NULL, 0, NULL},
        {"http://h/\xd0\xb9", 0, NULL, 0, NULL},
    };
    char host[64];
    char *path;
    int port;

    for (size_t i = 0; i < SB_ARRAY_LEN(cases); i++) {
        int rc =
            sb_hconn_parse_url(cases[i].url, host, sizeof(host), &port, &path);

        if ((rc == 0) != cases[i].ok)
            fail_msg("case %zu (%s): rc %d", i, cases[i].url, rc);
        if (rc == 0) {
            assert_string_equal(host, cases[i].host);
            assert_int_equal(port, cases[i].port);
            assert_string_equal(path, cases[i].path);
            free(path);
        }
    }
    /* a host longer than the buffer */
    assert_int_equal(
        sb_hconn_parse_url("http://abcdefgh/", host, 8, &port, &path), -1);
}

static void test_refuse(void **state)
{
    struct sb_hconn_opts o = {1, 2, 0, 0, 0};
    struct sb_hconn_req q;
    static const char *const bad_headers[] = {
        "X-A: 1",                /* no CRLF */
        "X-A: 1\n",              /* bare LF */
        "X-A: 1\r\nX-B: 2",      /* last line unterminated */
        "X-A: 1\r\n\r\n",        /* an empty line */
        "X A: 1\r\n",            /* not a token */
        ": 1\r\n",               /* no name */
        "X-A: a\x01b\r\n",       /* control character */
        "X-A: a\rb\r\n",         /* bare CR */
        "Content-Length: 5\r\n", /* the pool's own */
        "host: x\r\n",
        "Transfer-Encoding: chunked\r\n",
        "Connection: close\r\n",
        "Expect: 100-continue\r\n",
    };

    assert_int_equal(s_start(h_fixed), 0);
    use_fixed("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", A_SILENT, 0);
    assert_null(sb_hconn_pool_new(&loop, "127.0.0.1", 0, NULL));
    assert_null(sb_hconn_pool_new(&loop, "", 80, NULL));
    assert_null(sb_hconn_pool_new(&loop, "a/b", 80, NULL));
    assert_null(sb_hconn_pool_new(NULL, "127.0.0.1", 80, NULL));
    pool_open(&o);

    memset(&q, 0, sizeof(q));
    q.method = "POST";
    q.path = "/x";
    assert_int_equal(sb_hconn_request(T.pool, &q, NULL, NULL), -1);
    assert_int_equal(sb_hconn_request(NULL, &q, on_resp, &T.rec[0]), -1);
    q.method = "PO ST";
    assert_int_equal(sb_hconn_request(T.pool, &q, on_resp, &T.rec[0]), -1);
    q.method = "";
    assert_int_equal(sb_hconn_request(T.pool, &q, on_resp, &T.rec[0]), -1);
    q.method = "POST";
    q.path = "x";
    assert_int_equal(sb_hconn_request(T.pool, &q, on_resp, &T.rec[0]), -1);
    q.path = "/a b";
    assert_int_equal(sb_hconn_request(T.pool, &q, on_resp, &T.rec[0]), -1);
    q.path = "/a\r\nX: 1";
    assert_int_equal(sb_hconn_request(T.pool, &q, on_resp, &T.rec[0]), -1);
    q.path = "/x";
    q.body_len = 3; /* and no body */
    assert_int_equal(sb_hconn_request(T.pool, &q, on_resp, &T.rec[0]), -1);
    q.body_len = 0;
    for (size_t i = 0; i < SB_ARRAY_LEN(bad_headers); i++) {
        q.headers = bad_headers[i];
        if (sb_hconn_request(T.pool, &q, on_resp, &T.rec[0]) != -1)
            fail_msg("header case %zu accepted", i);
    }
    q.headers = "X-Ok: tab\tand spaces\r\nX-Two: 2\r\n";
    /* max_conns 1 and max_queue 2: one on the connection, two waiting */
    assert_int_equal(sb_hconn_request(T.pool, &q, on_resp, &T.rec[0]), 0);
    assert_int_equal(sb_hconn_request(T.pool, &q, on_resp, &T.rec[1]), 0);
    assert_int_equal(sb_hconn_request(T.pool, &q, on_resp, &T.rec[2]), 0);
    assert_int_equal(sb_hconn_request(T.pool, &q, on_resp, &T.rec[3]), -1);
    assert_int_equal(sb_hconn_pending(T.pool), 3);
    assert_int_equal(T.ndone, 0);
    T.closed = 1;
    sb_hconn_pool_close(T.pool);
    assert_int_equal(T.ndone, 3);
    assert_int_equal(T.rec[3].calls, 0);
}

static void test_keepalive_reuse(void **state)
{
    struct sb_hconn_opts o = {4, 0, 0, 0, 0};
    struct sb_hconn_stats st;
    const int n = 200;

    assert_int_equal(s_start(h_echo), 0);
    pool_open(&o);
    for (int i = 0; i < n; i++) {
        char path[32], body[32];

        snprintf(path, sizeof(path), "/b/%d", i);
        snprintf(body, sizeof(body), "body-%d", i);
        assert_int_equal(submit(i, path, body), 0);
    }
    assert_int_equal(T.ndone, 0);
    assert_true(run_until(n, 10000));
    assert_once(n);
    for (int i = 0; i < n; i++) {
        char want[64];

        snprintf(want, sizeof(want), "/b/%d|body-%d", i, i);
        assert_ok(i, 200, want);
    }
    assert_true(S.accepted >= 1 && S.accepted <= 4);
    assert_int_equal(S.requests, n);
    sb_hconn_stats(T.pool, &st);
    assert_int_equal(st.connects, (unsigned long long)S.accepted);
    assert_int_equal(st.requests, (unsigned long long)n);
    assert_int_equal(st.pending, 0);
    assert_int_equal(st.queued, 0);
    assert_int_equal(st.idle, st.conns);

    /* the exact request bytes of the last one */
    assert_non_null(strstr(S.last_head, " HTTP/1.1\r\nHost: 127.0.0.1:"));
    assert_non_null(strstr(S.last_head, "\r\nContent-Length: 8\r\n"));
    assert_non_null(strstr(S.last_head, "\r\nX-Slot: "));
    assert_non_null(strstr(S.last_head, "\r\nUser-Agent: t\r\n\r\n"));
    assert_int_equal(strncmp(S.last_head, "POST /b/", 8), 0);

    /* a chain: each request sent from the previous one's callback reuses
     * the connection that just answered */
    {
        int before = S.accepted;

        T.chain_left = 99;
        T.chain_next = n + 1;
        assert_int_equal(submit(n, "/chain/first", "first"), 0);
        assert_true(run_until(n + 100, 10000));
        assert_int_equal(T.chain_left, 0);
        for (int i = n; i < n + 100; i++)
            assert_int_equal(T.rec[i].status, 200);
        assert_int_equal(S.accepted, before);
    }
    assert_int_equal(S.client_eofs, 0);
}

static void test_fifo(void **state)
{
    struct sb_hconn_opts o = {1, 0, 0, 0, 0};
    const int n = 30;

    assert_int_equal(s_start(h_echo), 0);
    pool_open(&o);
    for (int i = 0; i < n; i++)
        assert_int_equal(submit(i, "/f", NULL), 0);
    assert_true(run_until(n, 10000));
    assert_once(n);
    for (int i = 0; i < n; i++) {
        assert_ok(i, 200, "/f|");
        assert_int_equal(T.rec[i].order, i);
    }
    assert_int_equal(S.accepted, 1);
    /* GET without a body: no Content-Length */
    assert_int_equal(submit_ex(n, "GET", "/g", NULL, 0, 5000), 0);
    assert_true(run_until(n + 1, 5000));
    assert_ok(n, 200, "/g|");
    assert_null(strcasestr(S.last_head, "content-length"));
}

static const char chunked_resp[] =
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
    "Content-Type: text/plain\r\n\r\n"
    "5;name=value\r\nhello\r\n6\r\n world\r\nA \r\n, chunked!\r\n"
    "0\r\nX-Trailer: yes\r\n\r\n";

static void test_chunked(void **state)
{
    assert_int_equal(s_start(h_fixed), 0);
    use_fixed(chunked_resp, A_RESPOND, 0);
    pool_open(NULL);
    assert_int_equal(submit(0, "/c", "x"), 0);
    assert_true(run_until(1, 5000));
    assert_ok(0, 200, "hello world, chunked!");
    assert_int_equal(T.rec[0].body_len, 21);
    /* reused after a chunked body */
    assert_int_equal(submit(1, "/c", "x"), 0);
    assert_true(run_until(2, 5000));
    assert_ok(1, 200, "hello world, chunked!");
    assert_int_equal(S.accepted, 1);
    /* upper-case hex, an empty trailer section */
    use_fixed("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, Chunked\r\n\r\n"
              "1F\r\n0123456789abcdef0123456789abcde\r\n0\r\n\r\n",
              A_RESPOND, 0);
    assert_int_equal(submit(2, "/c", "x"), 0);
    assert_true(run_until(3, 5000));
    assert_ok(2, 200, "0123456789abcdef0123456789abcde");
    assert_int_equal(S.accepted, 1);
    assert_once(3);
}

/* One byte per read: the parser must resume at every byte. */
static void test_split_bytes(void **state)
{
    static const struct {
        const char *resp;
        const char *body;
        int status;
    } cases[] = {
        {"HTTP/1.1 201 Created\r\nContent-Length: 11\r\nX-A: b\r\n\r\n"
         "hello there",
         "hello there", 201},
        {chunked_resp, "hello world, chunked!", 200},
        {"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\n"
         "Content-Length: 2\r\n\r\nok",
         "ok", 202},
        {"\r\nHTTP/1.1 429 Too Many\r\nRetry-After:  7 \r\n"
         "Content-Length: 0\r\n\r\n",
         "", 429},
        {"HTTP/1.1 200 OK\nContent-Length: 3\n\nabc", "abc", 200},
    };

    assert_int_equal(s_start(h_fixed), 0);
    pool_open(NULL);
    for (size_t i = 0; i < SB_ARRAY_LEN(cases); i++) {
        use_fixed(cases[i].resp, A_DRIBBLE, 0);
        assert_int_equal(submit((int)i, "/s", "x"), 0);
        assert_true(run_until((int)i + 1, 10000));
        assert_ok((int)i, cases[i].status, cases[i].body);
    }
    assert_int_equal(T.rec[3].retry_after, 7);
    assert_int_equal(T.rec[0].retry_after, -1);
    assert_int_equal(S.accepted, 1); /* every response reused the socket */
    assert_once((int)SB_ARRAY_LEN(cases));
}

static void test_content_length(void **state)
{
    static const char bin[] = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
                              "a\0b\0c";

    assert_int_equal(s_start(h_fixed), 0);
    pool_open(NULL);
    use_fixed("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", A_RESPOND, 0);
    assert_int_equal(submit(0, "/z", NULL), 0);
    assert_true(run_until(1, 5000));
    assert_ok(0, 200, "");
    assert_int_equal(T.rec[0].body_len, 0);
    assert_non_null(strstr(S.last_head, "\r\nContent-Length: 0\r\n"));

    T_RESP = bin;
    T_RESP_LEN = sizeof(bin) - 1;
    assert_int_equal(submit(1, "/bin", "y"), 0);
    assert_true(run_until(2, 5000));
    assert_ok(1, 200, "a");
    assert_int_equal(T.rec[1].body_len, 5);

    /* HEAD: Content-Length describes a body that is not sent */
    use_fixed("HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", A_RESPOND, 0);
    assert_int_equal(submit_ex(2, "HEAD", "/h", NULL, 0, 5000), 0);
    assert_true(run_until(3, 5000));
    assert_ok(2, 200, "");
    /* 204 and 304 carry no body either */
    use_fixed("HTTP/1.1 204 No Content\r\n\r\n", A_RESPOND, 0);
    assert_int_equal(submit(3, "/n", "x"), 0);
    assert_true(run_until(4, 5000));
    assert_ok(3, 204, "");
    use_fixed("HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
              A_RESPOND, 0);
    assert_int_equal(submit(4, "/n", "x"), 0);
    assert_true(run_until(5, 5000));
    assert_ok(4, 304, "");
    /* a body of 64 KiB exactly (the default cap) */
    {
        size_t n = 64u << 10;
        char *r = sb_malloc(n + 100);
        int k = snprintf(r, 100,
                         "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", n);

        memset(r + k, 'q', n);
        r[k + (int)n] = '\0';
        use_fixed(r, A_RESPOND, 0);
        assert_int_equal(submit(5, "/big", "x"), 0);
        assert_true(run_until(6, 5000));
        free(r);
        assert_int_equal(T.rec[5].status, 200);
        assert_int_equal(T.rec[5].body_len, n);
    }
    assert_int_equal(S.accepted, 1);
    assert_once(6);
}

static void test_conn_close(void **state)
{
    static const struct {
        const char *resp;
        int close_after;
        int reused;
        const char *body;
    } cases[] = {
        {"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
         1, 0, "ok"},
        {"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, CLOSE\r\n"
         "Content-Length: 2\r\n\r\nok",
         1, 0, "ok"},
        {"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 1, 0, "ok"},
        {"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n"
         "\r\nok",
         0, 1, "ok"},
        /* no framing: the body ends with the connection */
        {"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil eof", 1, 0,
         "until eof"},
        {"HTTP/1.0 200 OK\r\n\r\nold style", 1, 0, "old style"},
        /* both framings: chunked wins, the connection is not trusted */
        {"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: "
         "chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
         0, 0, "ok"},
        /* bytes after the response: taken, then the socket is dropped */
        {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA", 0, 0, "ok"},
        {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 0, 1, "ok"},
    };

    assert_int_equal(s_start(h_fixed), 0);
    pool_open(NULL);
    for (size_t i = 0; i < SB_ARRAY_LEN(cases); i++) {
        int before;

        use_fixed(cases[i].resp, A_RESPOND, cases[i].close_after);
        assert_int_equal(submit((int)(2 * i), "/a", "x"), 0);
        assert_true(run_until((int)(2 * i) + 1, 5000));
        assert_ok((int)(2 * i), 200, cases[i].body);
        before = S.accepted;
        use_fixed("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext", A_RESPOND,
                  0);
        assert_int_equal(submit((int)(2 * i + 1), "/b", "x"), 0);
        assert_true(run_until((int)(2 * i) + 2, 5000));
        assert_ok((int)(2 * i + 1), 200, "next");
        if ((S.accepted == before) != cases[i].reused)
            fail_msg("case %zu: reused %d, wanted %d", i, S.accepted == before,
                     cases[i].reused);
    }
    assert_once(2 * (int)SB_ARRAY_LEN(cases));
    {
        struct sb_hconn_stats st;

        sb_hconn_stats(T.pool, &st);
        assert_int_equal(st.retries, 0);
    }
}

/* The server drops the connection on its second request, before any
 * answer (as when an idle keep-alive connection is closed just as the
 * request goes out): the request is sent again on a new connection. */
static enum s_act stale_act;
static int stale_every; /* drop every request after the first on a conn */

static void h_stale(struct sconn *c, const struct sreq *q, struct action *a)
{
    if (c->nreq >= 1 && (stale_every || strcmp(q->path, "/second") == 0)) {
        a->act = stale_act;
        return;
    }
    if (stale_every && c->nreq == 0 && strcmp(q->path, "/first") != 0) {
        a->act = stale_act; /* the fresh retry dies too */
        return;
    }
    h_echo(c, q, a);
}

static void run_stale(enum s_act act)
{
    struct sb_hconn_stats st;

    stale_act = act;
    stale_every = 0;
    assert_int_equal(s_start(h_stale), 0);
    pool_open(NULL);
    assert_int_equal(submit(0, "/first", "a"), 0);
    assert_true(run_until(1, 5000));
    assert_ok(0, 200, "/first|a");
    assert_int_equal(submit(1, "/second", "b"), 0);
    assert_true(run_until(2, 5000));
    assert_ok(1, 200, "/second|b");
    assert_once(2);
    assert_int_equal(S.accepted, 2);
    assert_int_equal(S.requests, 3); /* the second request went twice */
    sb_hconn_stats(T.pool, &st);
    assert_int_equal(st.retries, 1);
    assert_int_equal(st.connects, 2);
}

static void test_stale_eof(void **state)
{
    run_stale(A_CLOSE);
}

static void test_stale_reset(void **state)
{
    run_stale(A_RESET);
}

/* Retried once only; a fresh connection that dies is not retried. */
static void test_stale_twice(void **state)
{
    struct sb_hconn_stats st;

    stale_act = A_CLOSE;
    stale_every = 1;
    assert_int_equal(s_start(h_stale), 0);
    pool_open(NULL);
    assert_int_equal(submit(0, "/first", "a"), 0);
    assert_true(run_until(1, 5000));
    assert_ok(0, 200, "/first|a");
    assert_int_equal(submit(1, "/again", "b"), 0);
    assert_true(run_until(2, 5000));
    assert_err(1, SB_HCONN_ENETWORK);
    assert_int_equal(S.requests, 3);
    /* a request on a fresh connection that is dropped: no retry */
    assert_int_equal(submit(2, "/fresh", "c"), 0);
    assert_true(run_until(3, 5000));
    assert_err(2, SB_HCONN_ENETWORK);
    assert_int_equal(S.requests, 4);
    sb_hconn_stats(T.pool, &st);
    assert_int_equal(st.retries, 1);
    assert_once(3);
}

/* The server closes a keep-alive connection right after answering (no
 * "Connection: close"), and the next request goes from the callback: it
 * meets the closed connection or a fresh one; either way it succeeds. */
static void h_close_idle(struct sconn *c, const struct sreq *q,
                         struct action *a)
{
    h_echo(c, q, a);
    a->close_after = 1;
}

static void test_idle_closed_by_server(void **state)
{
    struct sb_hconn_stats st;

    assert_int_equal(s_start(h_close_idle), 0);
    pool_open(NULL);
    T.chain_left = 9;
    T.chain_next = 1;
    assert_int_equal(submit(0, "/chain/0", "next"), 0);
    assert_true(run_until(10, 10000));
    assert_once(10);
    for (int i = 0; i < 10; i++) {
        char want[64];

        snprintf(want, sizeof(want), "/chain/%d|next", i);
        assert_ok(i, 200, want);
    }
    sb_hconn_stats(T.pool, &st);
    assert_true(st.retries <= 10);
    /* a retried request had gone to a closed socket: never received */
    assert_int_equal(S.requests, 10);

    /* closed while idle, noticed before the next request: no retry */
    {
        unsigned long long r0;

        run_for(50);
        sb_hconn_stats(T.pool, &st);
        assert_int_equal(st.conns, 0);
        r0 = st.retries;
        assert_int_equal(submit(10, "/x", "y"), 0);
        assert_true(run_until(11, 5000));
        assert_ok(10, 200, "/x|y");
        sb_hconn_stats(T.pool, &st);
        assert_int_equal(st.retries, r0);
    }
}

static void test_early_close(void **state)
{
    static const char *const partial[] = {
        "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        "HTTP/1.1 200 OK\r\nContent-Le",
        "HTTP/1.",
    };

    assert_int_equal(s_start(h_fixed), 0);
    pool_open(NULL);
    for (size_t i = 0; i < SB_ARRAY_LEN(partial); i++) {
        use_fixed(partial[i], i % 2 ? A_DRIBBLE : A_RESPOND, 1);
        assert_int_equal(submit((int)i, "/e", "x"), 0);
        assert_true(run_until((int)i + 1, 5000));
        assert_err((int)i, SB_HCONN_ENETWORK);
    }
    assert_int_equal(S.requests, (int)SB_ARRAY_LEN(partial)); /* no retry */
    assert_once((int)SB_ARRAY_LEN(partial));
}

static void test_timeout(void **state)
{
    struct sb_hconn_opts o = {1, 0, 0, 0, 0};
    uint64_t t0;

    assert_int_equal(s_start(h_fixed), 0);
    use_fixed("", A_SILENT, 0);
    pool_open(&o);
    t0 = sb_mono_ms();
    assert_int_equal(submit_ex(0, "POST", "/slow", "x", 1, 1500), 0);
    /* waits in the queue behind it, with a shorter deadline */
    assert_int_equal(submit_ex(1, "POST", "/q", "x", 1, 200), 0);
    assert_true(run_until(1, 5000));
    assert_err(1, SB_HCONN_ETIMEOUT);
    assert_int_equal(T.rec[0].calls, 0);
    assert_true(sb_mono_ms() - t0 >= 150 && sb_mono_ms() - t0 < 1200);
    assert_true(run_until(2, 5000));
    assert_err(0, SB_HCONN_ETIMEOUT);
    assert_true(sb_mono_ms() - t0 >= 1400 && sb_mono_ms() - t0 < 3000);
    assert_int_equal(S.requests, 1);
    run_for(50);
    assert_int_equal(S.client_eofs, 1); /* the connection was closed */

    /* the next request works on a new connection */
    use_fixed("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", A_RESPOND, 0);
    assert_int_equal(submit(2, "/after", "x"), 0);
    assert_true(run_until(3, 5000));
    assert_ok(2, 200, "ok");
    assert_int_equal(S.accepted, 2);
    /* a response that stops half way times out too */
    use_fixed("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", A_RESPOND, 0);
    assert_int_equal(submit_ex(3, "POST", "/half", "x", 1, 300), 0);
    assert_true(run_until(4, 5000));
    assert_err(3, SB_HCONN_ETIMEOUT);
    assert_once(4);
}

static void test_connect_refused(void **state)
{
    int port = t_free_port();
    uint64_t t0 = sb_mono_ms();

    assert_true(port > 0);
    T.pool = sb_hconn_pool_new(&loop, "127.0.0.1", port, NULL);
    assert_non_null(T.pool);
    for (int i = 0; i < 5; i++)
        assert_int_equal(submit(i, "/r", "x"), 0);
    assert_true(run_until(5, 5000));
    assert_true(sb_mono_ms() - t0 < 2000);
    for (int i = 0; i < 5; i++) {
        assert_err(i, SB_HCONN_ECONNECT);
        assert_non_null(strstr(T.rec[i].error, "connect"));
    }
    assert_once(5);
    assert_int_equal(sb_hconn_pending(T.pool), 0);
}

static void test_localhost(void **state)
{
    assert_int_equal(s_start(h_echo), 0);
    /* resolved through uv_getaddrinfo; if ::1 comes first it is refused
     * and the request moves on to 127.0.0.1 */
    T.pool = sb_hconn_pool_new(&loop, "localhost", S.port, NULL);
    assert_non_null(T.pool);
    assert_int_equal(submit(0, "/l", "x"), 0);
    assert_int_equal(submit(1, "/m", "y"), 0);
    assert_true(run_until(2, 5000));
    assert_ok(0, 200, "/l|x");
    assert_ok(1, 200, "/m|y");
    assert_non_null(strstr(S.last_head, "\r\nHost: localhost:"));
    assert_once(2);
}

/* A name that cannot resolve (a 64-byte label: refused by the resolver
 * itself, no DNS traffic): ERESOLVE, and the next request tries again. */
static void test_resolve_failed(void **state)
{
    char host[80];

    memset(host, 'a', 64);
    strcpy(host + 64, ".invalid");
    T.pool = sb_hconn_pool_new(&loop, host, 80, NULL);
    assert_non_null(T.pool);
    assert_int_equal(submit(0, "/r", "x"), 0);
    assert_int_equal(submit(1, "/r", "x"), 0);
    assert_true(run_until(2, 10000));
    assert_err(0, SB_HCONN_ERESOLVE);
    assert_err(1, SB_HCONN_ERESOLVE);
    assert_int_equal(submit(2, "/r", "x"), 0);
    assert_true(run_until(3, 10000));
    assert_err(2, SB_HCONN_ERESOLVE);
    assert_once(3);
}

static void test_malformed(void **state)
{
    static const char *const bad[] = {
        "HTTX/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        "HTTP/2 200 OK\r\n\r\n",
        "HTTP/1.1 20 OK\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",
        "HTTP/1.1 099 Low\r\n\r\n",
        "HTTP/1.1 200OK\r\n\r\n",
        "garbage\r\n\r\n",
        "HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
        "HTTP/1.1 200 OK\r\n folded: x\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 12a\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        "1000000000000000\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
    };

    assert_int_equal(s_start(h_fixed), 0);
    pool_open(NULL);
    for (size_t i = 0; i < SB_ARRAY_LEN(bad); i++) {
        use_fixed(bad[i], A_RESPOND, 0);
        assert_int_equal(submit((int)i, "/m", "x"), 0);
        if (!run_until((int)i + 1, 5000))
            fail_msg("case %zu: no callback", i);
        if (T.rec[i].err != SB_HCONN_EPROTO)
            fail_msg("case %zu: err %d status %d (%s)", i, (int)T.rec[i].err,
                     T.rec[i].status, T.rec[i].error);
        assert_err((int)i, SB_HCONN_EPROTO);
    }
    /* each malformed response cost its connection */
    assert_int_equal(S.accepted, (int)SB_ARRAY_LEN(bad));
    /* a header block over the bound */
    {
        size_t n = 70000;
        char *r = sb_malloc(n + 64);
        size_t k = (size_t)sprintf(r, "HTTP/1.1 200 OK\r\n");
        int slot = (int)SB_ARRAY_LEN(bad);

        while (k + 20 < n)
            k += (size_t)sprintf(r + k, "X-Pad: 0123456789\r\n");
        sprintf(r + k, "\r\n");
        use_fixed(r, A_RESPOND, 0);
        assert_int_equal(submit(slot, "/m", "x"), 0);
        assert_true(run_until(slot + 1, 5000));
        free(r);
        assert_err(slot, SB_HCONN_EPROTO);
    }
    assert_once((int)SB_ARRAY_LEN(bad) + 1);
}

static void test_too_big(void **state)
{
    struct sb_hconn_opts o = {0, 0, 1000, 0, 0};
    char *big = sb_malloc(4000);
    char *resp[3];

    memset(big, 'b', 1500);
    big[1500] = '\0';
    resp[0] =
        sb_asprintf("HTTP/1.1 200 OK\r\nContent-Length: 1500\r\n\r\n%s", big);
    resp[1] = sb_asprintf("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                          "\r\n300\r\n%.768s\r\n300\r\n%.768s\r\n0\r\n\r\n",
                          big, big);
    resp[2] =
        sb_asprintf("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n%s", big);
    assert_int_equal(s_start(h_fixed), 0);
    pool_open(&o);
    for (int i = 0; i < 3; i++) {
        use_fixed(resp[i], A_RESPOND, i == 2);
        assert_int_equal(submit(i, "/big", "x"), 0);
        assert_true(run_until(i + 1, 5000));
        assert_err(i, SB_HCONN_ETOOBIG);
    }
    /* at the cap exactly: fine */
    big[1000] = '\0';
    free(resp[0]);
    resp[0] =
        sb_asprintf("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n%s", big);
    use_fixed(resp[0], A_RESPOND, 0);
    assert_int_equal(submit(3, "/big", "x"), 0);
    assert_true(run_until(4, 5000));
    assert_int_equal(T.rec[3].status, 200);
    assert_int_equal(T.rec[3].body_len, 1000);
    assert_int_equal(S.accepted, 4); /* the failures closed theirs */
    assert_once(4);
    for (int i = 0; i < 3; i++)
        free(resp[i]);
    free(big);
}

static void test_retry_after(void **state)
{
    char future[64], past[64], rfc850[64], asc[64];
    time_t now = time(NULL), f = now + 120, p = now - 3600;
    struct tm tm;
    const struct {
        const char *value; /* NULL: no header */
        long long lo, hi;
    } cases[] = {
        {"7", 7, 7},
        {"0", 0, 0},
        {NULL, -1, -1},
        {"99999999999999999999", 1000000000LL, 1000000000LL},
        {"soon", -1, -1},
        {"12s", -1, -1},
        {future, 110, 121},
        {past, 0, 0},
        {rfc850, 110, 121},
        {asc, 110, 121},
    };

    gmtime_r(&f, &tm);
    strftime(future, sizeof(future), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    strftime(rfc850, sizeof(rfc850), "%A, %d-%b-%y %H:%M:%S GMT", &tm);
    snprintf(asc, sizeof(asc), "%.3s %.3s %2d %02d:%02d:%02d %d",
             "SunMonTueWedThuFriSat" + 3 * tm.tm_wday,
             "JanFebMarAprMayJunJulAugSepOctNovDec" + 3 * tm.tm_mon, tm.tm_mday,
             tm.tm_hour, tm.tm_min, tm.tm_sec, tm.tm_year + 1900);
    gmtime_r(&p, &tm);
    strftime(past, sizeof(past), "%a, %d %b %Y %H:%M:%S GMT", &tm);

    assert_int_equal(s_start(h_fixed), 0);
    pool_open(NULL);
    for (size_t i = 0; i < SB_ARRAY_LEN(cases); i++) {
        char *r;

        if (cases[i].value)
            r = sb_asprintf("HTTP/1.1 429 Too Many Requests\r\n"
                            "Retry-After: %s\r\nContent-Length: 4\r\n\r\nslow",
                            cases[i].value);
        else
            r = sb_asprintf("HTTP/1.1 429 Too Many Requests\r\n"
                            "Content-Length: 4\r\n\r\nslow");
        use_fixed(r, A_RESPOND, 0);
        assert_int_equal(submit((int)i, "/ra", "x"), 0);
        assert_true(run_until((int)i + 1, 5000));
        free(r);
        assert_ok((int)i, 429, "slow");
        if (T.rec[i].retry_after < cases[i].lo ||
            T.rec[i].retry_after > cases[i].hi)
            fail_msg("case %zu (%s): retry_after %lld", i,
                     cases[i].value ? cases[i].value : "none",
                     T.rec[i].retry_after);
    }
    assert_int_equal(S.accepted, 1);
    assert_once((int)SB_ARRAY_LEN(cases));
}

static void test_close_pool(void **state)
{
    struct sb_hconn_opts o = {2, 0, 0, 0, 0};
    struct sb_hconn_stats st;
    uint64_t end;

    assert_int_equal(s_start(h_fixed), 0);
    use_fixed("", A_SILENT, 0);
    pool_open(&o);
    for (int i = 0; i < 6; i++)
        assert_int_equal(submit(i, "/never", "x"), 0);
    end = sb_mono_ms() + 3000;
    while (S.requests < 2 && sb_mono_ms() < end)
        run_for(10);
    assert_int_equal(S.requests, 2);
    sb_hconn_stats(T.pool, &st);
    assert_int_equal(st.conns, 2);
    assert_int_equal(st.queued, 4);
    assert_int_equal(st.pending, 6);
    assert_int_equal(T.ndone, 0);
    sb_hconn_pool_close(T.pool);
    assert_int_equal(T.ndone, 6);
    T.closed = 1;
    for (int i = 0; i < 6; i++) {
        assert_err(i, SB_HCONN_ECANCELLED);
        assert_string_equal(T.rec[i].error, "cancelled");
    }
    run_for(100);
    assert_int_equal(T.ndone, 6);
    assert_int_equal(S.client_eofs, 2);
    assert_once(6);
}

/* Closing the pool from a callback cancels the rest, once each. */
static void test_close_in_callback(void **state)
{
    struct sb_hconn_opts o = {2, 0, 0, 0, 0};

    assert_int_equal(s_start(h_fixed), 0);
    use_fixed("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", A_RESPOND, 0);
    pool_open(&o);
    T.close_in_cb = 3; /* slot 2 */
    for (int i = 0; i < 8; i++)
        assert_int_equal(submit(i, "/c", "x"), 0);
    assert_true(run_until(8, 5000));
    run_for(50);
    assert_int_equal(T.ndone, 8);
    assert_ok(0, 200, "ok");
    assert_ok(1, 200, "ok");
    assert_ok(2, 200, "ok");
    for (int i = 3; i < 8; i++) {
        assert_int_equal(T.rec[i].calls, 1);
        assert_int_equal(T.rec[i].early, 0);
    }
    /* those completed from inside close ran after T.closed was set */
    for (int i = 3; i < 8; i++)
        if (T.rec[i].err != SB_HCONN_OK)
            assert_int_equal(T.rec[i].err, SB_HCONN_ECANCELLED);
}

/* ---- throughput against nginx (print only) ------------------------------ */

static struct {
    pid_t pid;
    char dir[64];
    int port;
} N;

static void nginx_stop(void)
{
    int st;

    if (N.pid > 0) {
        kill(N.pid, SIGTERM);
        for (int i = 0; i < 250; i++) {
            if (waitpid(N.pid, &st, WNOHANG) == N.pid) {
                N.pid = 0;
                break;
            }
            usleep(20000);
        }
        if (N.pid > 0) {
            kill(N.pid, SIGKILL);
            waitpid(N.pid, &st, 0);
            N.pid = 0;
        }
    }
    if (N.dir[0]) {
        char *cmd = sb_asprintf("rm -rf '%s'", N.dir);

        if (system(cmd) != 0)
            fprintf(stderr, "test_hconn: could not remove %s\n", N.dir);
        free(cmd);
        N.dir[0] = '\0';
    }
}

/* Start nginx on a free port; 0, or -1 (then the bench is skipped). */
static int nginx_start(void)
{
    char *conf, *path;
    FILE *f;

    if (access("/usr/sbin/nginx", X_OK) != 0)
        return -1;
    snprintf(N.dir, sizeof(N.dir), "/tmp/sb-test-hconn-XXXXXX");
    if (!mkdtemp(N.dir)) {
        N.dir[0] = '\0';
        return -1;
    }
    N.port = t_free_port();
    conf = sb_asprintf(
        "daemon off;\nmaster_process off;\nworker_processes 1;\n"
        "pid %s/nginx.pid;\nerror_log %s/error.log;\n"
        "events { worker_connections 1024; }\n"
        "http {\n access_log off;\n client_body_temp_path %s/body;\n"
        " proxy_temp_path %s/proxy;\n fastcgi_temp_path %s/fcgi;\n"
        " uwsgi_temp_path %s/uwsgi;\n scgi_temp_path %s/scgi;\n"
        " keepalive_requests 1000000;\n"
        " server {\n  listen 127.0.0.1:%d;\n  location / {\n"
        "   default_type application/json;\n"
        "   return 200 '{\"id\":\"ok\"}';\n  }\n }\n}\n",
        N.dir, N.dir, N.dir, N.dir, N.dir, N.dir, N.dir, N.port);
    path = sb_asprintf("%s/nginx.conf", N.dir);
    f = fopen(path, "w");
    if (!f) {
        free(conf);
        free(path);
        return -1;
    }
    fputs(conf, f);
    fclose(f);
    free(conf);
    N.pid = fork();
    if (N.pid == 0) {
        char *err = sb_asprintf("%s/error.log", N.dir);
        int devnull = open("/dev/null", 1);

        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (devnull >= 0) {
            dup2(devnull, 1);
            dup2(devnull, 2);
        }
        execl("/usr/sbin/nginx", "nginx", "-p", N.dir, "-e", err, "-c", path,
              (char *)NULL);
        _exit(127);
    }
    free(path);
    if (N.pid < 0)
        return -1;
    /* wait until it accepts (bounded) */
    for (int i = 0; i < 100; i++) {
        struct sockaddr_in a;
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        int ok;

        memset(&a, 0, sizeof(a));
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a.sin_port = htons((uint16_t)N.port);
        ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
        if (fd >= 0)
            close(fd);
        if (ok)
            return 0;
        usleep(50000);
    }
    return -1;
}

static struct {
    uint64_t end;
    long done, ok, bad;
    double cpu_us; /* our process's CPU per request */
    int inflight;
    int use_httpc;
    char url[64];
    char body[300];
} B;

static void b_send(void);

static void b_on_hconn(const struct sb_hconn_resp *r, void *arg)
{
    B.inflight--;
    B.done++;
    if (r->status == 200)
        B.ok++;
    else
        B.bad++;
    if (sb_mono_ms() < B.end)
        b_send();
}

static void b_on_httpc(const struct sb_httpc_resp *r, void *arg)
{
    B.inflight--;
    B.done++;
    if (r->status == 200)
        B.ok++;
    else
        B.bad++;
    if (sb_mono_ms() < B.end)
        b_send();
}

static void b_send(void)
{
    static const char hdrs[] = "Content-Type: application/json\r\n"
                               "X-Switchboard-Id: bench\r\n";
    int rc;

    if (B.use_httpc) {
        const char *h[] = {"Content-Type: application/json",
                           "X-Switchboard-Id: bench", NULL};
        struct sb_httpc_req q;

        memset(&q, 0, sizeof(q));
        q.method = "POST";
        q.url = B.url;
        q.headers = h;
        q.body = B.body;
        q.body_len = sizeof(B.body);
        q.timeout_ms = 10000;
        q.max_body = 65536;
        rc = sb_httpc_request(&q, b_on_httpc, NULL);
    } else {
        struct sb_hconn_req q;

        memset(&q, 0, sizeof(q));
        q.method = "POST";
        q.path = "/hook";
        q.headers = hdrs;
        q.body = B.body;
        q.body_len = sizeof(B.body);
        q.timeout_ms = 10000;
        rc = sb_hconn_request(T.pool, &q, b_on_hconn, NULL);
    }
    if (rc == 0)
        B.inflight++;
}

/* Keep `window` requests in flight for ms; returns requests per second. */
static double b_run(int use_httpc, int window, int ms)
{
    uint64_t t0, hard;
    double el, cpu0, cpu1;
    struct rusage ru;

    memset(&B, 0, sizeof(B));
    memset(B.body, 'j', sizeof(B.body));
    B.use_httpc = use_httpc;
    snprintf(B.url, sizeof(B.url), "http://127.0.0.1:%d/hook", N.port);
    getrusage(RUSAGE_SELF, &ru);
    cpu0 = (double)ru.ru_utime.tv_sec * 1e6 + (double)ru.ru_utime.tv_usec +
           (double)ru.ru_stime.tv_sec * 1e6 + (double)ru.ru_stime.tv_usec;
    t0 = sb_mono_ms();
    B.end = t0 + (uint64_t)ms;
    hard = B.end + 10000;
    for (int i = 0; i < window; i++)
        b_send();
    while (B.inflight > 0 && sb_mono_ms() < hard)
        uv_run(&loop, UV_RUN_ONCE);
    el = (double)(sb_mono_ms() - t0) / 1000.0;
    getrusage(RUSAGE_SELF, &ru);
    cpu1 = (double)ru.ru_utime.tv_sec * 1e6 + (double)ru.ru_utime.tv_usec +
           (double)ru.ru_stime.tv_sec * 1e6 + (double)ru.ru_stime.tv_usec;
    B.cpu_us = B.done ? (cpu1 - cpu0) / (double)B.done : 0;
    return el > 0 ? (double)B.done / el : 0;
}

static void test_throughput(void **state)
{
    const char *env = getenv("SB_HCONN_BENCH_MS");
    int ms = env ? atoi(env) : 1500;
    struct sb_hconn_opts o = {64, 0, 0, 0, 0};
    double rh, rc, cpuh;
    long okh, badh;

    if (ms <= 0 || nginx_start() < 0) {
        nginx_stop();
        fprintf(stderr, "test_hconn: throughput skipped (no nginx or "
                        "SB_HCONN_BENCH_MS=0)\n");
        return;
    }
    T.pool = sb_hconn_pool_new(&loop, "127.0.0.1", N.port, &o);
    assert_non_null(T.pool);
    rh = b_run(0, 512, ms);
    okh = B.ok;
    badh = B.bad;
    cpuh = B.cpu_us;
    T.closed = 1;
    sb_hconn_pool_close(T.pool);
    if (sb_httpc_init(&loop) == 0) {
        rc = b_run(1, 512, ms);
        sb_httpc_shutdown();
    } else {
        rc = 0;
    }
    fprintf(stderr,
            "test_hconn: POST 300 B to nginx, 64 connections, 512 in "
            "flight, %d ms each: hconn %.0f req/s (%ld ok, %ld bad, "
            "%.1f us CPU/req), httpc %.0f req/s (%ld ok, %ld bad, "
            "%.1f us CPU/req)\n",
            ms, rh, okh, badh, cpuh, rc, B.ok, B.bad, B.cpu_us);
    nginx_stop();
    assert_int_equal(badh, 0);
    assert_true(okh > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_url),
#define T_(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
        T_(test_refuse),
        T_(test_keepalive_reuse),
        T_(test_fifo),
        T_(test_chunked),
        T_(test_split_bytes),
        T_(test_content_length),
        T_(test_conn_close),
        T_(test_stale_eof),
        T_(test_stale_reset),
        T_(test_stale_twice),
        T_(test_idle_closed_by_server),
        T_(test_early_close),
        T_(test_timeout),
        T_(test_connect_refused),
        T_(test_localhost),
        T_(test_resolve_failed),
        T_(test_malformed),
        T_(test_too_big),
        T_(test_retry_after),
        T_(test_close_pool),
        T_(test_close_in_callback),
        T_(test_throughput),
#undef T_
    };
    int rc;

    signal(SIGPIPE, SIG_IGN);
    sb_log_level = LOG_ERR;
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    nginx_stop();
    return rc;
}
