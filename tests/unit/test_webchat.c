/* test_webchat.c - the web chat driver's send() against real sockets.
 *
 * The integration suite cannot reach send() until the router replies
 * through it, so this binary runs the chat driver with the real HTTP and
 * WebSocket server (http.c, ws.c) on a loopback port, in this process, and
 * plays the browser itself: a minimal RFC 6455 client on a plain socket,
 * pumped from the same thread as the loop (the loop runs a pass, the
 * client polls its socket, and so on), so nothing races.
 *
 * No Redis is configured: a hello without a token is answered without the
 * store, and a customer message gets the "unavailable" error frame the
 * widget retries on — the Redis-outage path.
 *
 * Checked: a visitor's socket gets an agent message addressed by token, by
 * "chat:<visitor id>" or by visitor id, with the agent's name and the text
 * byte for byte; every socket of one visitor gets it; the completion is OK
 * and never comes before send() returns; an unknown visitor is TEMPFAIL
 * "not connected", no recipient PERMFAIL; send() refuses after stop();
 * stop() completes queued sends with CANCELLED exactly once and nothing
 * completes after; a stopped driver answers its sockets with 1001; the
 * loop ends with nothing left on it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "channel.h"
#include "config.h"
#include "core.h"
#include "crypto.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "static.h"
#include "testutil.h"
#include "util.h"
#include "ws.h"

extern const struct sb_channel_ops sb_chan_webchat;

static const char cyr[] = "Здравствуйте! Заказ №42 отправлен 🚚 <b>x</b>";

static struct {
    uv_loop_t loop;
    struct sb_config *conf;
    struct sb_route routes[1];
    int port;
    struct sb_channel *ch;
} T;

/* ---- pumping the loop ------------------------------------------------- */

/* One short pass of the loop. */
static void pump(void)
{
    uv_run(&T.loop, UV_RUN_NOWAIT);
}

/* ---- a minimal WebSocket client ------------------------------------------ */

struct client {
    int fd;
    unsigned char buf[65536];
    size_t len;
};

static void cl_write(struct client *c, const void *p, size_t n)
{
    const char *s = p;

    while (n > 0) {
        ssize_t w = write(c->fd, s, n);
        if (w < 0 && errno == EINTR)
            continue;
        assert_true(w > 0);
        s += w;
        n -= (size_t)w;
        pump();
    }
}

/* Read what the server has sent, running the loop meanwhile, until
 * want bytes are buffered or ms pass. Returns 0 when they are. */
static int cl_fill(struct client *c, size_t want, unsigned ms)
{
    uint64_t end = sb_mono_ms() + ms;

    while (c->len < want) {
        struct pollfd p = {c->fd, POLLIN, 0};
        ssize_t r;

        if (sb_mono_ms() > end)
            return -1;
        pump();
        if (poll(&p, 1, 5) <= 0)
            continue;
        r = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
        if (r <= 0)
            return -1;
        c->len += (size_t)r;
    }
    return 0;
}

static void cl_consume(struct client *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

static struct client *cl_connect(void)
{
    struct client *c = sb_calloc(1, sizeof(*c));
    struct sockaddr_in a;
    char req[512];
    char *end;
    int n;

    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(c->fd >= 0);
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)T.port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(c->fd, (struct sockaddr *)&a, sizeof(a)), 0);
    n = snprintf(req, sizeof(req),
                 "GET /chat/ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                 "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 "Sec-WebSocket-Version: 13\r\n"
                 "Sec-WebSocket-Protocol: switchboard.chat.v1\r\n"
                 "Origin: http://127.0.0.1\r\n\r\n",
                 T.port);
    cl_write(c, req, (size_t)n);
    for (int i = 0; i < 400; i++) {
        assert_int_equal(cl_fill(c, c->len + 1, 5000), 0);
        c->buf[c->len] = '\0';
        end = strstr((char *)c->buf, "\r\n\r\n");
        if (end)
            break;
    }
    assert_non_null(end);
    assert_memory_equal(c->buf, "HTTP/1.1 101", 12);
    /* RFC 6455's own example key: its accept value is fixed. */
    assert_non_null(strstr((char *)c->buf, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
    cl_consume(c, (size_t)(end + 4 - (char *)c->buf));
    return c;
}

static void cl_close(struct client *c)
{
    close(c->fd);
    free(c);
    for (int i = 0; i < 20; i++)
        pump();
}

static void cl_send(struct client *c, const char *text)
{
    size_t n = strlen(text), h = 0;
    unsigned char *f = sb_malloc(n + 14);
    const unsigned char key[4] = {0x12, 0x34, 0x56, 0x78};

    f[h++] = 0x81;
    if (n < 126) {
        f[h++] = (unsigned char)(0x80 | n);
    } else {
        f[h++] = 0x80 | 126;
        f[h++] = (unsigned char)(n >> 8);
        f[h++] = (unsigned char)n;
    }
    memcpy(f + h, key, 4);
    h += 4;
    for (size_t i = 0; i < n; i++)
        f[h + i] = (unsigned char)text[i] ^ key[i % 4];
    cl_write(c, f, h + n);
    free(f);
}

/* The next frame: opcode returned, payload (NUL-terminated) in out. -1 on
 * timeout or a dropped connection. */
static int cl_frame(struct client *c, char *out, size_t outlen, unsigned ms)
{
    size_t n, hl = 2;
    int op;

    if (cl_fill(c, 2, ms) < 0)
        return -1;
    op = c->buf[0] & 0x0f;
    n = c->buf[1] & 0x7f;
    if (n == 126) {
        if (cl_fill(c, 4, ms) < 0)
            return -1;
        n = ((size_t)c->buf[2] << 8) | c->buf[3];
        hl = 4;
    }
    assert_true(n != 127 && n + 1 <= outlen);
    if (cl_fill(c, hl + n, ms) < 0)
        return -1;
    memcpy(out, c->buf + hl, n);
    out[n] = '\0';
    cl_consume(c, hl + n);
    return op;
}

/* The next text frame as JSON (new reference), skipping other types
 * than want when want is not NULL. */
static json_t *cl_json(struct client *c, const char *want)
{
    static char text[65536];

    for (int i = 0; i < 20; i++) {
        json_t *j;
        const char *t;
        int op = cl_frame(c, text, sizeof(text), 5000);

        assert_int_equal(op, 1);
        j = json_loads(text, 0, NULL);
        assert_non_null(j);
        t = json_string_value(json_object_get(j, "type"));
        assert_non_null(t);
        if (!want || strcmp(t, want) == 0)
            return j;
        json_decref(j);
    }
    fail_msg("no %s frame", want);
    return NULL;
}

/* hello, welcome: returns the token (new string). */
static char *cl_hello(struct client *c, const char *token)
{
    char msg[256];
    json_t *w;
    char *tok;

    if (token)
        snprintf(msg, sizeof(msg), "{\"type\":\"hello\",\"token\":\"%s\"}",
                 token);
    else
        snprintf(msg, sizeof(msg), "{\"type\":\"hello\",\"lang\":\"ru\"}");
    cl_send(c, msg);
    w = cl_json(c, "welcome");
    assert_non_null(json_string_value(json_object_get(w, "token")));
    tok = sb_strdup(json_string_value(json_object_get(w, "token")));
    assert_int_equal(strlen(tok), SB_TOKEN_LEN);
    json_decref(w);
    return tok;
}

/* ---- completions --------------------------------------------------------- */

struct rec {
    struct sb_outmsg msg;
    int count, early, late;
    enum sb_send_status status;
    char reason[64];
};

static int in_send, stop_returned;

static void on_done(struct sb_outmsg *m, const struct sb_send_result *r)
{
    struct rec *rec = m->user;

    rec->count++;
    if (in_send)
        rec->early++;
    if (stop_returned)
        rec->late++;
    rec->status = r->status;
    snprintf(rec->reason, sizeof(rec->reason), "%s",
             r->reason ? r->reason : "");
    /* The caller's to change once completed (channel.h rule 2). */
    memset(&rec->msg, 0, sizeof(rec->msg));
}

static int do_send(struct rec *r, const char *to, const char *conv,
                   const char *from, const char *text)
{
    int rc;

    memset(r, 0, sizeof(*r));
    r->msg.id = "att-1";
    r->msg.to = to;
    r->msg.conversation = conv;
    r->msg.from = from;
    r->msg.text = text;
    r->msg.user = r;
    in_send = 1;
    rc = T.ch->ops->send(T.ch, &r->msg, on_done);
    in_send = 0;
    return rc;
}

static void wait_done(struct rec *r)
{
    uint64_t end = sb_mono_ms() + 5000;

    while (r->count == 0 && sb_mono_ms() < end) {
        pump();
        usleep(1000);
    }
    assert_int_equal(r->count, 1);
    assert_int_equal(r->early, 0);
}

static void vid_of(const char *token, char *out)
{
    char *tagged = sb_asprintf("switchboard.chat:%s", token);
    char hex[SB_HASH_HEX_LEN + 1];

    sb_sha256_hex(tagged, strlen(tagged), hex);
    memcpy(out, hex, 32);
    out[32] = '\0';
    free(tagged);
}

/* ---- set-up -------------------------------------------------------------- */

static int group_setup(void **state)
{
    char err[512], *text;

    sb_log_level = LOG_WARNING;
    if (sb_crypto_init() < 0 || uv_loop_init(&T.loop) != 0)
        return -1;
    T.port = t_free_port();
    text = sb_asprintf("[listener main]\naddress = 127.0.0.1\nport = %d\n"
                       "[chat]\nwww_dir = channels/webchat/www\n"
                       "max_errors = 5\n",
                       T.port);
    T.conf = sb_config_parse(text, strlen(text), "test.conf",
                             sb_core_sections(), err, sizeof(err));
    free(text);
    if (!T.conf) {
        fprintf(stderr, "config: %s\n", err);
        return -1;
    }
    if (sb_channels_start(&T.loop, T.conf) < 0)
        return -1;
    T.ch = sb_channel_get("chat");
    if (!T.ch || sb_http_start(&T.loop, T.conf, T.routes) < 0)
        return -1;
    for (int i = 0; i < 20; i++)
        pump();
    return 0;
}

static int group_teardown(void **state)
{
    sb_channels_stop();
    sb_http_stop();
    for (int i = 0; i < 50; i++)
        pump();
    sb_http_free();
    uv_run(&T.loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&T.loop) != 0) {
        fprintf(stderr, "loop still has handles\n");
        return -1;
    }
    sb_config_free(T.conf);
    sb_static_free();
    sb_metrics_free();
    return 0;
}

/* ---- tests --------------------------------------------------------------- */

static void send_reaches_socket(void **state)
{
    struct client *c = cl_connect();
    char *token = cl_hello(c, NULL);
    char vid[40], chat_vid[48];
    struct rec r;
    json_t *m;

    assert_int_equal(do_send(&r, token, NULL, "Анна Менеджер", cyr), 0);
    assert_int_equal(r.count, 0); /* never before send() returns */
    m = cl_json(c, "message");
    assert_string_equal(json_string_value(json_object_get(m, "from")),
                        "agent");
    assert_string_equal(json_string_value(json_object_get(m, "name")),
                        "Анна Менеджер");
    assert_string_equal(json_string_value(json_object_get(m, "text")), cyr);
    assert_string_equal(json_string_value(json_object_get(m, "id")),
                        "att-1");
    assert_true(json_is_integer(json_object_get(m, "at")));
    json_decref(m);
    wait_done(&r);
    assert_int_equal(r.status, SB_SEND_OK);

    /* The visitor id and the identity form name the same socket. */
    vid_of(token, vid);
    snprintf(chat_vid, sizeof(chat_vid), "chat:%s", vid);
    assert_int_equal(do_send(&r, vid, NULL, NULL, "by id"), 0);
    m = cl_json(c, "message");
    assert_string_equal(json_string_value(json_object_get(m, "text")),
                        "by id");
    assert_null(json_object_get(m, "name"));
    json_decref(m);
    wait_done(&r);
    assert_int_equal(r.status, SB_SEND_OK);
    assert_int_equal(do_send(&r, chat_vid, NULL, NULL, "by identity"), 0);
    m = cl_json(c, "message");
    assert_string_equal(json_string_value(json_object_get(m, "text")),
                        "by identity");
    json_decref(m);
    wait_done(&r);
    assert_int_equal(r.status, SB_SEND_OK);

    free(token);
    cl_close(c);
}

static void every_socket_of_visitor(void **state)
{
    struct client *a = cl_connect(), *b, *other;
    char *token = cl_hello(a, NULL), *t2, *t3;
    struct rec r;
    json_t *m;

    /* A second tab resumes the same visitor (no store needed: the first
     * socket vouches for the token). */
    b = cl_connect();
    t2 = cl_hello(b, token);
    assert_string_equal(t2, token);
    other = cl_connect();
    t3 = cl_hello(other, NULL);
    assert_string_not_equal(t3, token);

    assert_int_equal(do_send(&r, token, NULL, "A", "to both"), 0);
    m = cl_json(a, "message");
    assert_string_equal(json_string_value(json_object_get(m, "text")),
                        "to both");
    json_decref(m);
    m = cl_json(b, "message");
    assert_string_equal(json_string_value(json_object_get(m, "text")),
                        "to both");
    json_decref(m);
    wait_done(&r);
    assert_int_equal(r.status, SB_SEND_OK);
    /* The other visitor got nothing. */
    {
        char buf[256];
        assert_int_equal(cl_frame(other, buf, sizeof(buf), 300), -1);
    }

    /* One tab gone: still delivered to the other. */
    cl_close(a);
    assert_int_equal(do_send(&r, token, NULL, "A", "to b"), 0);
    m = cl_json(b, "message");
    assert_string_equal(json_string_value(json_object_get(m, "text")),
                        "to b");
    json_decref(m);
    wait_done(&r);
    assert_int_equal(r.status, SB_SEND_OK);

    /* Both gone: not connected. */
    cl_close(b);
    assert_int_equal(do_send(&r, token, NULL, "A", "nobody"), 0);
    wait_done(&r);
    assert_int_equal(r.status, SB_SEND_TEMPFAIL);
    assert_string_equal(r.reason, "not connected");

    free(token);
    free(t2);
    free(t3);
    cl_close(other);
}

static void not_connected_and_no_recipient(void **state)
{
    char tok[SB_TOKEN_LEN + 1];
    struct rec r;

    sb_token_new(tok);
    assert_int_equal(do_send(&r, tok, NULL, NULL, "x"), 0);
    wait_done(&r);
    assert_int_equal(r.status, SB_SEND_TEMPFAIL);
    assert_string_equal(r.reason, "not connected");

    assert_int_equal(do_send(&r, NULL, "cv_999", NULL, "x"), 0);
    wait_done(&r);
    assert_int_equal(r.status, SB_SEND_TEMPFAIL);

    assert_int_equal(do_send(&r, "not-a-visitor", NULL, NULL, "x"), 0);
    wait_done(&r);
    assert_int_equal(r.status, SB_SEND_TEMPFAIL);

    assert_int_equal(do_send(&r, NULL, NULL, NULL, "x"), 0);
    wait_done(&r);
    assert_int_equal(r.status, SB_SEND_PERMFAIL);
    assert_string_equal(r.reason, "no recipient");
}

static void store_down_is_unavailable(void **state)
{
    struct client *c = cl_connect();
    char *token;
    json_t *e;

    /* Before hello: an error frame, the socket stays. */
    cl_send(c, "{\"type\":\"message\",\"id\":\"m0\",\"text\":\"hi\"}");
    e = cl_json(c, "error");
    assert_string_equal(json_string_value(json_object_get(e, "code")),
                        "no_hello");
    json_decref(e);
    token = cl_hello(c, NULL);
    /* No Redis here: the message is not acknowledged, the widget keeps it
     * and sends it again. */
    cl_send(c, "{\"type\":\"message\",\"id\":\"m1\",\"text\":\"Привет\"}");
    e = cl_json(c, NULL);
    assert_string_equal(json_string_value(json_object_get(e, "type")),
                        "error");
    assert_string_equal(json_string_value(json_object_get(e, "code")),
                        "unavailable");
    assert_string_equal(json_string_value(json_object_get(e, "id")), "m1");
    json_decref(e);
    /* A resume hello that needs the store: unavailable, hello again
     * later. */
    {
        struct client *d = cl_connect();
        char tok[SB_TOKEN_LEN + 1];

        sb_token_new(tok);
        {
            char msg[128];
            snprintf(msg, sizeof(msg),
                     "{\"type\":\"hello\",\"token\":\"%s\"}", tok);
            cl_send(d, msg);
        }
        e = cl_json(d, "error");
        assert_string_equal(json_string_value(json_object_get(e, "code")),
                            "unavailable");
        json_decref(e);
        cl_close(d);
    }
    free(token);
    cl_close(c);
}

static void stop_cancels(void **state)
{
    struct client *c = cl_connect();
    char *token = cl_hello(c, NULL);
    struct rec r[3];
    char buf[256];
    int op;

    for (int i = 0; i < 3; i++)
        assert_int_equal(do_send(&r[i], token, NULL, NULL, "late"), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(r[i].count, 0);
    T.ch->ops->stop(T.ch);
    stop_returned = 1;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(r[i].count, 1);
        assert_int_equal(r[i].status, SB_SEND_CANCELLED);
    }
    for (int i = 0; i < 50; i++)
        pump();
    for (int i = 0; i < 3; i++) {
        assert_int_equal(r[i].count, 1);
        assert_int_equal(r[i].late, 0);
    }
    /* Refused after stop: no completion follows. */
    assert_int_equal(do_send(&r[0], token, NULL, NULL, "after"), -1);
    for (int i = 0; i < 20; i++)
        pump();
    assert_int_equal(r[0].count, 0);
    /* The stopped driver answers its socket with 1001. */
    cl_send(c, "{\"type\":\"ping\"}");
    for (int i = 0; i < 10; i++) {
        op = cl_frame(c, buf, sizeof(buf), 3000);
        if (op != 1)
            break;
    }
    assert_int_equal(op, 8);
    assert_int_equal(((unsigned char)buf[0] << 8) | (unsigned char)buf[1],
                     1001);
    free(token);
    cl_close(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(send_reaches_socket),
        cmocka_unit_test(every_socket_of_visitor),
        cmocka_unit_test(not_connected_and_no_recipient),
        cmocka_unit_test(store_down_is_unavailable),
        cmocka_unit_test(stop_cancels),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
