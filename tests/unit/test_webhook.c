/* test_webhook.c - unit tests for the webhook channel driver.
 *
 * The group setup starts tests/integration/httpsink.py (the controllable
 * HTTP sink; SB_HTTPSINK overrides the path) as a child on a free
 * 127.0.0.1 port with --verify-secret, reads its port from its first
 * stdout line, and the teardown stops it by PID (it also dies with us:
 * PR_SET_PDEATHSIG). Each test runs its own libuv loop with httpc and the
 * driver, configured through the real loader (sb_config_parse) with the
 * driver's own table, and talks to the sink's control paths with a small
 * blocking HTTP client.
 *
 * Cases: config checks (and the secret masked in dumps); 200 -> OK with the
 * provider id, the exact JSON body, the headers and a signature that
 * verifies (here and in the sink); optional fields left out; the worked
 * example of PROTOCOL.md (its signature, and the driver renders that
 * message to that body); a table of
 * statuses (500, 429 + Retry-After: 7, 400, 404, 408, 425, 503, 301, 201);
 * a slow sink under a short timeout; a closed port; messages the driver
 * refuses to render (PERMFAIL from a later turn, nothing sent); a 300 KB
 * body, a small one after it, one over the 4 MiB cap;
 * max_inflight; stop() with sends in flight (each CANCELLED exactly once,
 * nothing after, late completions swallowed); httpc shut down under a
 * send to an https:// URL (a local socket that accepts and never answers);
 * which client carries which URL (http:// goes through hconn, https://
 * through httpc); reload of url, secret and user agent, also with sends
 * in flight on the old connection pool; 200 sends in a row, each
 * sent from the previous one's completion, over one or two connections;
 * a 300-send burst over at most 64. Every completion checks it did not run
 * inside send(); every message is poisoned and freed in its completion, so
 * ASan catches a driver that keeps it. Every loop run is bounded in time.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "channel.h"
#include "config.h"
#include "httpc.h"
#include "log.h"
#include "util.h"
#include "testutil.h"

extern const struct sb_channel_ops sb_chan_webhook;

#define SINK_DEFAULT "tests/integration/httpsink.py"
#define SECRET "test-secret-0123456789abcdef"
#define SECRET2 "rotated-secret-fedcba9876543210"
#define NREC 1024

/* ---- the sink ----------------------------------------------------------- */

static struct {
    pid_t pid;
    int port;
} sink;

static void sink_kill(void)
{
    t_stop_child(sink.pid);
    sink.pid = 0;
}

/* Read the port line from fd within 10 s. */
static int read_port(int fd)
{
    char line[32];
    size_t n = 0;
    uint64_t end = sb_mono_ms() + 10000;

    while (n < sizeof(line) - 1 && sb_mono_ms() < end) {
        struct pollfd p = {fd, POLLIN, 0};
        ssize_t r;

        if (poll(&p, 1, 200) <= 0)
            continue;
        r = read(fd, line + n, 1);
        if (r <= 0)
            return -1;
        if (line[n] == '\n')
            break;
        n++;
    }
    line[n] = '\0';
    return atoi(line);
}

static int group_setup(void **state)
{
    const char *path = getenv("SB_HTTPSINK");
    int fds[2];

    if (!path)
        path = SINK_DEFAULT;
    if (access(path, R_OK) != 0) {
        fprintf(stderr,
                "test_webhook: %s not found (run from the repo "
                "root or set SB_HTTPSINK)\n",
                path);
        return -1;
    }
    if (sodium_init() < 0 || pipe(fds) < 0)
        return -1;
    sink.pid = fork();
    if (sink.pid < 0)
        return -1;
    if (sink.pid == 0) {
        /* the sink dies with us even if the test crashes */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(fds[0]);
        dup2(fds[1], 1);
        close(fds[1]);
        execlp("python3", "python3", path, "--port", "0", "--verify-secret",
               SECRET, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    sink.port = read_port(fds[0]);
    close(fds[0]);
    if (sink.port <= 0) {
        fprintf(stderr, "test_webhook: the sink did not start\n");
        sink_kill();
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    sink_kill();
    return 0;
}

/* A blocking request to the sink (Connection: close). Returns the response
 * body (caller frees) and the status through *status, or NULL. */
static char *sink_http(const char *method, const char *path, const char *body,
                       int *status)
{
    struct sockaddr_in a;
    struct timeval tv = {5, 0};
    struct sb_buf b;
    char buf[4096];
    char *req, *resp, *p;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    size_t blen = body ? strlen(body) : 0;
    ssize_t r;

    *status = 0;
    if (fd < 0)
        return NULL;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)sink.port);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        close(fd);
        return NULL;
    }
    req = sb_asprintf("%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      "Connection: close\r\nContent-Length: %zu\r\n\r\n%s",
                      method, path, blen, body ? body : "");
    r = write(fd, req, strlen(req));
    free(req);
    sb_buf_init(&b, 64u << 20);
    while (r > 0 && (r = read(fd, buf, sizeof(buf))) > 0)
        if (sb_buf_append(&b, buf, (size_t)r) < 0)
            break;
    close(fd);
    if (!b.data || sscanf(b.data, "HTTP/1.1 %d", status) != 1 ||
        !(p = strstr(b.data, "\r\n\r\n"))) {
        sb_buf_free(&b);
        return NULL;
    }
    resp = sb_strdup(p + 4);
    sb_buf_free(&b);
    return resp;
}

static json_t *sink_json(const char *method, const char *path, const char *body)
{
    int status;
    char *s = sink_http(method, path, body, &status);
    json_t *j = s && status == 200 ? json_loads(s, 0, NULL) : NULL;

    free(s);
    assert_non_null(j);
    return j;
}

static void sink_control(const char *json)
{
    json_decref(sink_json("POST", "/_control", json));
}

/* Clears the records and counters, mode back to ok. */
static void sink_reset(void)
{
    sink_control("{\"mode\":\"ok\",\"script\":[],\"retry_after\":1}");
    json_decref(sink_json("GET", "/_requests?clear=1", NULL));
}

static long long sink_count(const char *field)
{
    json_t *j = sink_json("GET", "/_count", NULL);
    long long v = json_integer_value(json_object_get(j, field));

    json_decref(j);
    return v;
}

/* ---- the loop and the driver ------------------------------------------- */

struct rec {
    int calls;
    int early;      /* completed inside send() */
    int after_stop; /* completed after stop() returned */
    enum sb_send_status status;
    char reason[64];
    char provider_id[64];
    int has_provider_id;
    long long retry_after_ms;
};

static struct {
    uv_loop_t loop;
    uv_timer_t tick;
    struct sb_channel ch;
    int started;
    int in_send;
    int stopped;
    int ndone;
    struct rec rec[NREC];
    int chain_left; /* sends still to make from completions */
    int chain_next; /* slot of the next chained send */
    int chain_refused;
} T;

static struct sb_outmsg *msg_dup(const struct sb_outmsg *tpl, int slot)
{
    struct sb_outmsg *m = sb_calloc(1, sizeof(*m));

#define DUP(f) m->f = tpl->f ? sb_strdup(tpl->f) : NULL
    DUP(id);
    DUP(to);
    DUP(from);
    DUP(subject);
    DUP(text);
    DUP(html);
    DUP(in_reply_to);
    DUP(references);
    DUP(conversation);
    DUP(customer);
    DUP(meta_json);
#undef DUP
    m->user = &T.rec[slot];
    return m;
}

static void str_poison_free(const char *s)
{
    if (!s)
        return;
    memset((char *)s, 'Z', strlen(s));
    free((char *)s);
}

static void msg_free(struct sb_outmsg *m)
{
    str_poison_free(m->id);
    str_poison_free(m->to);
    str_poison_free(m->from);
    str_poison_free(m->subject);
    str_poison_free(m->text);
    str_poison_free(m->html);
    str_poison_free(m->in_reply_to);
    str_poison_free(m->references);
    str_poison_free(m->conversation);
    str_poison_free(m->customer);
    str_poison_free(m->meta_json);
    memset(m, 0x5a, sizeof(*m));
    free(m);
}

static int send_slot(const struct sb_outmsg *tpl, int slot);

static void on_done(struct sb_outmsg *m, const struct sb_send_result *r)
{
    struct rec *rc = m->user;

    rc->calls++;
    if (T.in_send)
        rc->early++;
    if (T.stopped)
        rc->after_stop++;
    rc->status = r->status;
    snprintf(rc->reason, sizeof(rc->reason), "%s", r->reason ? r->reason : "");
    rc->has_provider_id = r->provider_id != NULL;
    snprintf(rc->provider_id, sizeof(rc->provider_id), "%s",
             r->provider_id ? r->provider_id : "");
    rc->retry_after_ms = r->retry_after_ms;
    T.ndone++;
    msg_free(m);
    if (T.chain_left > 0 && !T.stopped) {
        char id[32];
        struct sb_outmsg tpl = {0};

        T.chain_left--;
        snprintf(id, sizeof(id), "chain-%d", T.chain_next);
        tpl.id = id;
        tpl.text = "next";
        if (send_slot(&tpl, T.chain_next++) < 0)
            T.chain_refused++;
    }
}

/* Send a copy of tpl recorded in slot; returns send()'s result (a refused
 * message is freed here). */
static int send_slot(const struct sb_outmsg *tpl, int slot)
{
    struct sb_outmsg *m = msg_dup(tpl, slot);
    int rc;
    int outer = T.in_send;

    T.in_send = 1;
    rc = T.ch.ops->send(&T.ch, m, on_done);
    T.in_send = outer;
    if (rc < 0)
        msg_free(m);
    return rc;
}

static int send_text(int slot, const char *id, const char *text)
{
    struct sb_outmsg tpl = {0};

    tpl.id = id;
    tpl.text = text;
    return send_slot(&tpl, slot);
}

static void on_tick(uv_timer_t *t)
{
}

/* Run the loop until T.ndone reaches want or ms elapse; 1 when reached. */
static int run_until(int want, int ms)
{
    uint64_t end = sb_mono_ms() + (uint64_t)ms;

    uv_timer_start(&T.tick, on_tick, 20, 20);
    while (T.ndone < want && sb_mono_ms() < end)
        uv_run(&T.loop, UV_RUN_ONCE);
    uv_timer_stop(&T.tick);
    return T.ndone >= want;
}

static void run_for(int ms)
{
    run_until(1 << 30, ms);
}

static int test_setup(void **state)
{
    memset(&T, 0, sizeof(T));
    if (uv_loop_init(&T.loop) < 0)
        return -1;
    uv_timer_init(&T.loop, &T.tick);
    if (sb_httpc_init(&T.loop) < 0)
        return -1;
    sink_reset();
    return 0;
}

static void stop_driver(void)
{
    if (!T.started)
        return;
    T.ch.ops->stop(&T.ch);
    T.started = 0;
    T.stopped = 1;
}

static int test_teardown(void **state)
{
    uint64_t end;

    stop_driver();
    sb_httpc_shutdown();
    uv_close((uv_handle_t *)&T.tick, NULL);
    end = sb_mono_ms() + 5000;
    while (uv_run(&T.loop, UV_RUN_NOWAIT) && sb_mono_ms() < end)
        usleep(1000);
    assert_int_equal(uv_loop_close(&T.loop), 0);
    return 0;
}

static struct sb_config *parse_conf(const char *text, char *err, size_t errlen)
{
    const struct sb_conf_section *secs[] = {sb_chan_webhook.conf, NULL};

    return sb_config_parse(text, strlen(text), "test.conf", secs, err, errlen);
}

/* Start the driver on url with extra config lines. */
static void start_driver_url(const char *url, const char *extra)
{
    char err[256] = "";
    char *text = sb_asprintf("[webhook]\nurl = %s\nsecret = %s\n%s", url,
                             SECRET, extra ? extra : "");
    struct sb_config *c = parse_conf(text, err, sizeof(err));

    free(text);
    if (!c)
        fprintf(stderr, "config: %s\n", err);
    assert_non_null(c);
    T.ch.ops = &sb_chan_webhook;
    T.ch.name = "webhook";
    assert_int_equal(
        T.ch.ops->start(&T.ch, &T.loop, sb_config_get(c, "webhook")), 0);
    sb_config_free(c); /* the driver keeps copies */
    T.started = 1;
}

/* Start the driver on the sink's path with extra config lines. */
static void start_driver(const char *path, const char *extra)
{
    char *url = sb_asprintf("http://127.0.0.1:%d%s", sink.port, path);

    start_driver_url(url, extra);
    free(url);
}

/* A 127.0.0.1 socket that accepts connections (the kernel completes the
 * handshake) and never answers; its port through *port. Close the fd. */
static int silent_listener(int *port)
{
    struct sockaddr_in a;
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    if (fd < 0)
        return -1;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 8) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
        close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

/* ---- helpers on recorded requests --------------------------------------- */

static const char *hdr(json_t *req, const char *name)
{
    return json_string_value(
        json_object_get(json_object_get(req, "headers"), name));
}

/* Check the signature of a recorded request against secret. */
static void assert_signed(json_t *req, const char *secret)
{
    const char *ts = hdr(req, "x-switchboard-timestamp");
    const char *sig = hdr(req, "x-switchboard-signature");
    const char *body = json_string_value(json_object_get(req, "body"));
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    char hex[sizeof(mac) * 2 + 1], want[sizeof(hex) + 3];
    crypto_auth_hmacsha256_state st;

    assert_non_null(ts);
    assert_non_null(sig);
    assert_non_null(body);
    crypto_auth_hmacsha256_init(&st, (const unsigned char *)secret,
                                strlen(secret));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)ts, strlen(ts));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)".", 1);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)body,
                                  strlen(body));
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_bin2hex(hex, sizeof(hex), mac, sizeof(mac));
    snprintf(want, sizeof(want), "v1=%s", hex);
    assert_string_equal(sig, want);
}

/* ---- tests -------------------------------------------------------------- */

static void test_config(void **state)
{
    static const struct {
        const char *text;
        int ok;
    } cases[] = {
        {"[webhook]\nurl = https://hooks.example.com/sb\n"
         "secret = 0123456789abcdef\n",
         1},
        {"[webhook]\nurl = HTTP://h:8080/x?y=1\nsecret = 0123456789abcdef\n"
         "timeout = 250ms\nconnect_timeout = 1s\nmax_inflight = 10\n"
         "user_agent = acme bot/1.0\n",
         1},
        {"[webhook]\nsecret = 0123456789abcdef\n", 0}, /* no url */
        {"[webhook]\nurl = https://h/x\n", 0},         /* no secret */
        {"[webhook]\nurl = https://h/x\nsecret = 0123456789abcde\n", 0},
        {"[webhook]\nurl = ftp://h/x\nsecret = 0123456789abcdef\n", 0},
        {"[webhook]\nurl = h/x\nsecret = 0123456789abcdef\n", 0},
        {"[webhook]\nurl = https:///x\nsecret = 0123456789abcdef\n", 0},
        {"[webhook]\nurl = https://h/a b\nsecret = 0123456789abcdef\n", 0},
        {"[webhook]\nurl = https://h/x\nsecret = 0123456789abcdef\n"
         "max_inflight = 0\n",
         0},
        {"[webhook]\nurl = https://h/x\nsecret = 0123456789abcdef\n"
         "bogus = 1\n",
         0},
    };
    char err[256];

    for (size_t i = 0; i < SB_ARRAY_LEN(cases); i++) {
        struct sb_config *c = parse_conf(cases[i].text, err, sizeof(err));

        if ((c != NULL) != cases[i].ok)
            fail_msg("case %zu: expected %s, got %s (%s)", i,
                     cases[i].ok ? "ok" : "error", c ? "ok" : "error", err);
        if (c) {
            char *dump = NULL;
            size_t n = 0;
            FILE *f = open_memstream(&dump, &n);

            sb_config_dump(c, f);
            fclose(f);
            assert_null(strstr(dump, "0123456789abcdef"));
            assert_non_null(strstr(dump, "[webhook]"));
            free(dump);
        }
        sb_config_free(c);
    }
}

static void test_ok_exact(void **state)
{
    static const char meta[] =
        "{ \"notification\": \"n-1\", \"event\": \"order.shipped\",\n"
        "  \"ref\": \"SO-17\", \"locale\": \"ru\", \"data\": {\"n\": 1, "
        "\"items\": [\"a\", null, true]} }";
    struct sb_outmsg tpl = {0};
    json_t *reqs, *req, *body;
    const char *sent_at;
    char *want;
    long long ts;
    int64_t now = sb_now_ms() / 1000;

    start_driver("/hook?k=1", NULL);
    tpl.id = "att-1";
    tpl.to = "cust-42";
    tpl.from = "ignored";
    tpl.customer = "c-42";
    tpl.conversation = "conv-7";
    tpl.subject = "Order shipped";
    tpl.text = "\xd0\x92\xd0\xb0\xd1\x88 \"order\"\n\tshipped \\ </script>";
    tpl.html = "<p>shipped</p>";
    tpl.meta_json = meta;
    assert_int_equal(send_slot(&tpl, 0), 0);
    assert_int_equal(T.rec[0].calls, 0);
    assert_true(run_until(1, 5000));

    assert_int_equal(T.rec[0].calls, 1);
    assert_int_equal(T.rec[0].early, 0);
    assert_int_equal(T.rec[0].status, SB_SEND_OK);
    assert_string_equal(T.rec[0].reason, "http 200");
    assert_true(T.rec[0].has_provider_id);
    assert_string_equal(T.rec[0].provider_id, "sink-1");
    assert_int_equal(T.rec[0].retry_after_ms, -1);

    reqs = sink_json("GET", "/_requests", NULL);
    assert_int_equal(json_array_size(reqs), 1);
    req = json_array_get(reqs, 0);
    assert_string_equal(json_string_value(json_object_get(req, "method")),
                        "POST");
    assert_string_equal(json_string_value(json_object_get(req, "path")),
                        "/hook?k=1");
    assert_string_equal(hdr(req, "content-type"), "application/json");
    assert_string_equal(hdr(req, "x-switchboard-id"), "att-1");
    assert_string_equal(hdr(req, "user-agent"), "switchboard");
    assert_int_equal(sb_parse_ll(hdr(req, "x-switchboard-timestamp"), &ts), 0);
    assert_true(ts >= now - 5 && ts <= now + 5);
    assert_signed(req, SECRET);
    assert_true(json_is_true(json_object_get(req, "signature_ok")));

    /* the exact bytes: compact, fields in order, meta re-serialised */
    body = json_loads(json_string_value(json_object_get(req, "body")), 0, NULL);
    assert_non_null(body);
    sent_at = json_string_value(json_object_get(body, "sent_at"));
    assert_non_null(sent_at);
    assert_int_equal(strlen(sent_at), 24); /* 2024-01-02T03:04:05.678Z */
    assert_true(sent_at[10] == 'T' && sent_at[19] == '.' && sent_at[23] == 'Z');
    {
        struct tm tm;
        time_t t = (time_t)ts;
        char sec[32];

        gmtime_r(&t, &tm);
        strftime(sec, sizeof(sec), "%Y-%m-%dT%H:%M:%S", &tm);
        assert_memory_equal(sent_at, sec, 19);
    }
    want = sb_asprintf(
        "{\"id\":\"att-1\",\"to\":\"cust-42\",\"customer\":\"c-42\","
        "\"conversation\":\"conv-7\",\"subject\":\"Order shipped\","
        "\"text\":\"\xd0\x92\xd0\xb0\xd1\x88 \\\"order\\\"\\n\\tshipped "
        "\\\\ </script>\",\"html\":\"<p>shipped</p>\","
        "\"notification\":{\"notification\":\"n-1\","
        "\"event\":\"order.shipped\",\"ref\":\"SO-17\",\"locale\":\"ru\","
        "\"data\":{\"n\":1,\"items\":[\"a\",null,true]}},"
        "\"sent_at\":\"%s\"}",
        sent_at);
    assert_string_equal(json_string_value(json_object_get(req, "body")), want);
    free(want);
    json_decref(body);
    json_decref(reqs);
    assert_int_equal(sink_count("bad_signatures"), 0);
    assert_int_equal(sink_count("count"), 1);
}

/* The worked example of channels/webhook/PROTOCOL.md: the documented
 * signature is right, and the driver renders that message to the
 * documented body (sent_at aside). */
static void test_protocol_example(void **state)
{
    static const char secret[] = "whsec_3a7f9c1e5b2d8f4a";
    static const char body_fmt[] =
        "{\"id\":\"nt_1042.1\",\"to\":\"cust-77\",\"customer\":\"cust-77\","
        "\"subject\":\"Order SO-2024-0117 shipped\","
        "\"text\":\"Your order SO-2024-0117 is on its way.\","
        "\"notification\":{\"notification\":\"nt_1042\","
        "\"event\":\"order.shipped\",\"ref\":\"SO-2024-0117\","
        "\"locale\":\"en\",\"data\":{\"carrier\":\"DHL\"}},"
        "\"sent_at\":\"%s\"}";
    char *doc_body = sb_asprintf(body_fmt, "2024-05-31T16:08:37.512Z");
    char *signed_str = sb_asprintf("1717171717.%s", doc_body);
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    char hex[sizeof(mac) * 2 + 1];
    struct sb_outmsg tpl = {0};
    crypto_auth_hmacsha256_state st;
    json_t *reqs, *body;
    char *want;

    assert_int_equal(strlen(doc_body), 304);
    crypto_auth_hmacsha256_init(&st, (const unsigned char *)secret,
                                strlen(secret));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)signed_str,
                                  strlen(signed_str));
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_bin2hex(hex, sizeof(hex), mac, sizeof(mac));
    assert_string_equal(hex, "5d579f7ca6eae6329ed4fb9736b293662725c4441c2a"
                             "b0fe2c161a302ae88f6e");
    free(signed_str);
    free(doc_body);

    start_driver("/hook", NULL);
    tpl.id = "nt_1042.1";
    tpl.to = "cust-77";
    tpl.customer = "cust-77";
    tpl.subject = "Order SO-2024-0117 shipped";
    tpl.text = "Your order SO-2024-0117 is on its way.";
    tpl.meta_json = "{\"notification\": \"nt_1042\", \"event\": "
                    "\"order.shipped\", \"ref\": \"SO-2024-0117\", "
                    "\"locale\": \"en\", \"data\": {\"carrier\": \"DHL\"}}";
    assert_int_equal(send_slot(&tpl, 0), 0);
    assert_true(run_until(1, 5000));
    assert_int_equal(T.rec[0].status, SB_SEND_OK);
    reqs = sink_json("GET", "/_requests", NULL);
    assert_int_equal(json_array_size(reqs), 1);
    body = json_loads(
        json_string_value(json_object_get(json_array_get(reqs, 0), "body")), 0,
        NULL);
    assert_non_null(body);
    want = sb_asprintf(body_fmt,
                       json_string_value(json_object_get(body, "sent_at")));
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(reqs, 0), "body")),
        want);
    free(want);
    json_decref(body);
    json_decref(reqs);
}

static void test_minimal(void **state)
{
    json_t *reqs;
    const char *body;

    start_driver("/hook", NULL);
    assert_int_equal(send_text(0, "m-1", "hi"), 0);
    assert_true(run_until(1, 5000));
    assert_int_equal(T.rec[0].status, SB_SEND_OK);
    reqs = sink_json("GET", "/_requests", NULL);
    assert_int_equal(json_array_size(reqs), 1);
    body = json_string_value(json_object_get(json_array_get(reqs, 0), "body"));
    assert_non_null(body);
    assert_int_equal(strncmp(body,
                             "{\"id\":\"m-1\",\"text\":\"hi\","
                             "\"sent_at\":\"",
                             35),
                     0);
    assert_int_equal(strlen(body), 35 + 24 + 2);
    assert_signed(json_array_get(reqs, 0), SECRET);
    json_decref(reqs);
}

static void test_statuses(void **state)
{
    static const struct {
        const char *control;
        enum sb_send_status status;
        const char *reason;
        long long retry_after_ms;
    } cases[] = {
        {"{\"mode\":\"fail500\"}", SB_SEND_TEMPFAIL, "http 500", -1},
        {"{\"mode\":\"ratelimit\",\"retry_after\":7}", SB_SEND_TEMPFAIL,
         "http 429", 7000},
        {"{\"mode\":\"fail400\"}", SB_SEND_PERMFAIL, "http 400", -1},
        {"{\"mode\":\"script\",\"script\":[404]}", SB_SEND_PERMFAIL, "http 404",
         -1},
        {"{\"mode\":\"script\",\"script\":[408]}", SB_SEND_TEMPFAIL, "http 408",
         -1},
        {"{\"mode\":\"script\",\"script\":[425]}", SB_SEND_TEMPFAIL, "http 425",
         -1},
        {"{\"mode\":\"script\",\"script\":[503]}", SB_SEND_TEMPFAIL, "http 503",
         -1},
        {"{\"mode\":\"script\",\"script\":[429],\"retry_after\":0}",
         SB_SEND_TEMPFAIL, "http 429", 0},
        {"{\"mode\":\"script\",\"script\":[301]}", SB_SEND_PERMFAIL, "http 301",
         -1},
        {"{\"mode\":\"script\",\"script\":[201]}", SB_SEND_OK, "http 201", -1},
        {"{\"mode\":\"script\",\"script\":[]}", SB_SEND_OK, "http 200", -1},
    };

    start_driver("/hook", NULL);
    for (size_t i = 0; i < SB_ARRAY_LEN(cases); i++) {
        char id[32];

        sink_control(cases[i].control);
        snprintf(id, sizeof(id), "st-%zu", i);
        assert_int_equal(send_text((int)i, id, "x"), 0);
        assert_true(run_until((int)i + 1, 5000));
        if (T.rec[i].calls != 1 || T.rec[i].status != cases[i].status ||
            strcmp(T.rec[i].reason, cases[i].reason) != 0 ||
            T.rec[i].retry_after_ms != cases[i].retry_after_ms)
            fail_msg("case %zu (%s): calls %d status %d reason \"%s\" "
                     "retry %lld",
                     i, cases[i].control, T.rec[i].calls, (int)T.rec[i].status,
                     T.rec[i].reason, T.rec[i].retry_after_ms);
        assert_int_equal(T.rec[i].has_provider_id,
                         cases[i].status == SB_SEND_OK);
        assert_int_equal(T.rec[i].early, 0);
    }
    assert_int_equal(sink_count("count"), (long long)SB_ARRAY_LEN(cases));
    assert_int_equal(sink_count("bad_signatures"), 0);
}

static void test_timeout(void **state)
{
    uint64_t t0;

    sink_control("{\"mode\":\"slow\",\"delay_ms\":3000}");
    start_driver("/hook", "timeout = 300ms\n");
    t0 = sb_mono_ms();
    assert_int_equal(send_text(0, "slow-1", "x"), 0);
    assert_true(run_until(1, 5000));
    assert_true(sb_mono_ms() - t0 < 2500);
    assert_int_equal(T.rec[0].status, SB_SEND_TEMPFAIL);
    assert_string_equal(T.rec[0].reason, "timeout");
    assert_int_equal(T.rec[0].retry_after_ms, -1);
    assert_int_equal(T.rec[0].has_provider_id, 0);
}

static void test_refused(void **state)
{
    char err[256];
    char *text;
    struct sb_config *c;
    int port = t_free_port();

    assert_true(port > 0);
    text = sb_asprintf("[webhook]\nurl = http://127.0.0.1:%d/hook\n"
                       "secret = %s\n",
                       port, SECRET);
    c = parse_conf(text, err, sizeof(err));
    free(text);
    assert_non_null(c);
    T.ch.ops = &sb_chan_webhook;
    assert_int_equal(
        T.ch.ops->start(&T.ch, &T.loop, sb_config_get(c, "webhook")), 0);
    sb_config_free(c);
    T.started = 1;
    assert_int_equal(send_text(0, "ref-1", "x"), 0);
    assert_true(run_until(1, 5000));
    assert_int_equal(T.rec[0].calls, 1);
    assert_int_equal(T.rec[0].status, SB_SEND_TEMPFAIL);
    assert_string_equal(T.rec[0].reason, "connect failed");
    assert_int_equal(T.rec[0].retry_after_ms, -1);
}

static void test_bad_messages(void **state)
{
    static const struct {
        const char *id;
        const char *text;
        const char *meta;
        const char *reason;
    } cases[] = {
        {"b-0", "x", "not json", "invalid meta_json"},
        {"b-1", "x", "[1,2]", "invalid meta_json"},
        {"b-2", "x", "{\"a\":1,\"a\":2}", "invalid meta_json"},
        {"b-3", "x", "{\"a\":1} {}", "invalid meta_json"},
        {"b-4", "bad \xff utf-8", NULL, "invalid utf-8"},
        {"b-5", "\xc0\xaf", NULL, "invalid utf-8"},
        {"b-6\r\nX-Evil: 1", "x", NULL, "invalid id"},
        {NULL, "x", NULL, "no id"},
        {"", "x", NULL, "no id"},
    };
    size_t n = SB_ARRAY_LEN(cases);

    start_driver("/hook", NULL);
    for (size_t i = 0; i < n; i++) {
        struct sb_outmsg tpl = {0};

        tpl.id = cases[i].id;
        tpl.text = cases[i].text;
        tpl.meta_json = cases[i].meta;
        assert_int_equal(send_slot(&tpl, (int)i), 0);
        assert_int_equal(T.rec[i].calls, 0); /* not inside send() */
    }
    assert_true(run_until((int)n, 5000));
    run_for(50);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(T.rec[i].calls, 1);
        assert_int_equal(T.rec[i].early, 0);
        assert_int_equal(T.rec[i].status, SB_SEND_PERMFAIL);
        assert_string_equal(T.rec[i].reason, cases[i].reason);
    }
    assert_int_equal(sink_count("count"), 0);
}

static void test_big_messages(void **state)
{
    const size_t big = 300000, huge = (4u << 20) + 1;
    char *text = sb_malloc(huge + 1);
    json_t *reqs;

    start_driver("/hook", NULL);
    memset(text, 'a', huge);
    text[big] = '\0';
    assert_int_equal(send_text(0, "big-0", text), 0);
    assert_int_equal(send_text(1, "big-1", "small after big"), 0);
    text[big] = 'a';
    text[huge] = '\0';
    assert_int_equal(send_text(2, "big-2", text), 0);
    free(text);
    assert_true(run_until(3, 10000));
    assert_int_equal(T.rec[0].status, SB_SEND_OK);
    assert_int_equal(T.rec[1].status, SB_SEND_OK);
    assert_int_equal(T.rec[2].status, SB_SEND_PERMFAIL);
    assert_string_equal(T.rec[2].reason, "message too large");
    reqs = sink_json("GET", "/_requests", NULL);
    assert_int_equal(json_array_size(reqs), 2);
    for (size_t i = 0; i < 2; i++) {
        json_t *r = json_array_get(reqs, i);
        const char *id = hdr(r, "x-switchboard-id");
        json_int_t len = json_integer_value(json_object_get(r, "body_len"));

        assert_non_null(id);
        if (strcmp(id, "big-0") == 0)
            assert_true(len > (json_int_t)big && len < (json_int_t)big + 100);
        else
            assert_true(len < 100);
        assert_signed(r, SECRET);
    }
    json_decref(reqs);
    assert_int_equal(sink_count("bad_signatures"), 0);
}

static void test_max_inflight(void **state)
{
    sink_control("{\"mode\":\"slow\",\"delay_ms\":300}");
    start_driver("/hook", "max_inflight = 3\n");
    assert_int_equal(send_text(0, "mi-0", "x"), 0);
    assert_int_equal(send_text(1, "mi-1", "x"), 0);
    assert_int_equal(send_text(2, "mi-2", "x"), 0);
    assert_int_equal(send_text(3, "mi-3", "x"), -1);
    /* a message the driver cannot render counts too, and is refused */
    {
        struct sb_outmsg tpl = {0};

        tpl.id = "mi-4";
        tpl.meta_json = "bad";
        assert_int_equal(send_slot(&tpl, 4), -1);
    }
    assert_true(run_until(3, 5000));
    run_for(100);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(T.rec[i].calls, 1);
        assert_int_equal(T.rec[i].status, SB_SEND_OK);
    }
    assert_int_equal(T.rec[3].calls, 0);
    assert_int_equal(T.rec[4].calls, 0);
    assert_int_equal(sink_count("count"), 3);
    /* room again */
    sink_control("{\"mode\":\"ok\"}");
    assert_int_equal(send_text(5, "mi-5", "x"), 0);
    assert_true(run_until(4, 5000));
    assert_int_equal(T.rec[5].status, SB_SEND_OK);
}

static void test_stop_inflight(void **state)
{
    struct sb_outmsg tpl = {0};
    uint64_t end;

    sink_control("{\"mode\":\"slow\",\"delay_ms\":700}");
    start_driver("/hook", NULL);
    for (int i = 0; i < 5; i++) {
        char id[32];

        snprintf(id, sizeof(id), "so-%d", i);
        assert_int_equal(send_text(i, id, "x"), 0);
    }
    /* let the requests reach the sink (bounded) */
    end = sb_mono_ms() + 3000;
    while (sink_count("count") < 5 && sb_mono_ms() < end)
        run_for(20);
    assert_int_equal(sink_count("count"), 5);
    assert_int_equal(T.ndone, 0);
    tpl.id = "so-5";
    tpl.meta_json = "[]"; /* queued PERMFAIL, not yet completed */
    assert_int_equal(send_slot(&tpl, 5), 0);

    stop_driver();
    assert_int_equal(T.ndone, 6);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(T.rec[i].calls, 1);
        assert_int_equal(T.rec[i].status, SB_SEND_CANCELLED);
        assert_string_equal(T.rec[i].reason, "channel stopped");
        assert_int_equal(T.rec[i].after_stop, 0);
    }
    /* the sink answers later: those completions are swallowed */
    end = sb_mono_ms() + 3000;
    while (sb_httpc_inflight() > 0 && sb_mono_ms() < end)
        run_for(20);
    assert_int_equal(T.ndone, 6);
    assert_int_equal(sb_httpc_inflight(), 0);
    for (int i = 0; i < 6; i++)
        assert_int_equal(T.rec[i].calls, 1);
}

static void test_stop_detached_at_shutdown(void **state)
{
    /* stop() with requests in flight, then httpc shut down before they
     * answer: the detached ops are freed without a completion */
    sink_control("{\"mode\":\"slow\",\"delay_ms\":2000}");
    start_driver("/hook", NULL);
    for (int i = 0; i < 3; i++)
        assert_int_equal(send_text(i, "sd", "x"), 0);
    run_for(100);
    stop_driver();
    assert_int_equal(T.ndone, 3);
    sb_httpc_shutdown();
    run_for(50);
    assert_int_equal(T.ndone, 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(T.rec[i].calls, 1);
}

/* https:// stays on httpc: shut down under a send, the send ends
 * CANCELLED and later sends are refused. */
static void test_httpc_shutdown(void **state)
{
    int port = 0;
    int fd = silent_listener(&port);
    char *url;

    assert_true(fd >= 0);
    url = sb_asprintf("https://127.0.0.1:%d/hook", port);
    start_driver_url(url, NULL);
    free(url);
    assert_int_equal(send_text(0, "hs-0", "x"), 0);
    run_for(100);
    assert_int_equal(sb_httpc_inflight(), 1);
    assert_int_equal(T.rec[0].calls, 0);
    sb_httpc_shutdown();
    assert_int_equal(T.rec[0].calls, 1);
    assert_int_equal(T.rec[0].status, SB_SEND_CANCELLED);
    assert_string_equal(T.rec[0].reason, "http client stopped");
    /* with httpc gone, send() refuses */
    assert_int_equal(send_text(1, "hs-1", "x"), -1);
    stop_driver();
    run_for(50);
    assert_int_equal(T.ndone, 1);
    close(fd);
}

/* http:// goes through hconn (httpc sees nothing), https:// and URLs with
 * userinfo through httpc; both deliver the same request. */
static void test_transport(void **state)
{
    int port = 0;
    int fd;
    char *url;
    json_t *reqs, *req;

    sink_control("{\"mode\":\"slow\",\"delay_ms\":300}");
    start_driver("/t?x=1#frag", NULL);
    assert_int_equal(send_text(0, "tr-0", "x"), 0);
    run_for(100);
    assert_int_equal(T.ndone, 0);
    assert_int_equal(sb_httpc_inflight(), 0);
    assert_true(run_until(1, 5000));
    assert_int_equal(T.rec[0].status, SB_SEND_OK);
    assert_string_equal(T.rec[0].provider_id, "sink-1");
    stop_driver();
    T.stopped = 0;

    /* user:password@ is not hconn's: httpc sends it (basic auth) */
    sink_control("{\"mode\":\"ok\"}");
    url = sb_asprintf("http://u:p@127.0.0.1:%d/t2", sink.port);
    start_driver_url(url, NULL);
    free(url);
    assert_int_equal(send_text(1, "tr-1", "x"), 0);
    assert_int_equal(sb_httpc_inflight(), 1);
    assert_true(run_until(2, 5000));
    assert_int_equal(T.rec[1].status, SB_SEND_OK);
    stop_driver();
    T.stopped = 0;

    reqs = sink_json("GET", "/_requests", NULL);
    assert_int_equal(json_array_size(reqs), 2);
    req = json_array_get(reqs, 0);
    assert_string_equal(json_string_value(json_object_get(req, "path")),
                        "/t?x=1");
    assert_string_equal(hdr(req, "x-switchboard-id"), "tr-0");
    assert_string_equal(hdr(req, "content-type"), "application/json");
    assert_string_equal(hdr(req, "user-agent"), "switchboard");
    assert_non_null(hdr(req, "host"));
    assert_signed(req, SECRET);
    req = json_array_get(reqs, 1);
    assert_string_equal(json_string_value(json_object_get(req, "path")), "/t2");
    assert_non_null(hdr(req, "authorization"));
    json_decref(reqs);
    assert_int_equal(sink_count("bad_signatures"), 0);

    /* https:// to a socket that never answers: httpc carries it */
    fd = silent_listener(&port);
    assert_true(fd >= 0);
    url = sb_asprintf("https://127.0.0.1:%d/hook", port);
    start_driver_url(url, "timeout = 300ms\n");
    free(url);
    assert_int_equal(send_text(2, "tr-2", "x"), 0);
    assert_int_equal(sb_httpc_inflight(), 1);
    assert_true(run_until(3, 5000));
    assert_int_equal(T.rec[2].status, SB_SEND_TEMPFAIL);
    assert_string_equal(T.rec[2].reason, "timeout");
    close(fd);
}

/* A reload while sends are in flight: they finish on the old pool, new
 * sends take the new URL, and the old pool goes once drained. */
static void test_reload_inflight(void **state)
{
    char err[256];
    char *text;
    struct sb_config *c;
    json_t *reqs;
    int n_a = 0, n_b = 0;

    sink_control("{\"mode\":\"slow\",\"delay_ms\":300}");
    start_driver("/a", NULL);
    for (int i = 0; i < 3; i++)
        assert_int_equal(send_text(i, "ri-a", "x"), 0);
    run_for(50);
    text = sb_asprintf("[webhook]\nurl = http://127.0.0.1:%d/b\n"
                       "secret = %s\n",
                       sink.port, SECRET);
    c = parse_conf(text, err, sizeof(err));
    free(text);
    assert_non_null(c);
    assert_int_equal(T.ch.ops->reload(&T.ch, sb_config_get(c, "webhook")), 0);
    sb_config_free(c);
    assert_int_equal(T.ndone, 0);
    assert_int_equal(send_text(3, "ri-b", "x"), 0);
    assert_true(run_until(4, 5000));
    for (int i = 0; i < 4; i++) {
        assert_int_equal(T.rec[i].calls, 1);
        assert_int_equal(T.rec[i].status, SB_SEND_OK);
    }
    /* a second reload with one in flight, then stop before it answers:
     * cancelled once, the retired pool closed by stop() */
    assert_int_equal(send_text(4, "ri-c", "x"), 0);
    run_for(50);
    c = parse_conf(text = sb_asprintf("[webhook]\nurl = http://127.0.0.1:%d/c"
                                      "\nsecret = %s\n",
                                      sink.port, SECRET),
                   err, sizeof(err));
    free(text);
    assert_non_null(c);
    assert_int_equal(T.ch.ops->reload(&T.ch, sb_config_get(c, "webhook")), 0);
    sb_config_free(c);
    stop_driver();
    assert_int_equal(T.rec[4].calls, 1);
    assert_int_equal(T.rec[4].status, SB_SEND_CANCELLED);
    run_for(400);
    assert_int_equal(T.ndone, 5);

    reqs = sink_json("GET", "/_requests", NULL);
    for (size_t i = 0; i < json_array_size(reqs); i++) {
        const char *p =
            json_string_value(json_object_get(json_array_get(reqs, i), "path"));

        n_a += p && strcmp(p, "/a") == 0;
        n_b += p && strcmp(p, "/b") == 0;
    }
    json_decref(reqs);
    assert_int_equal(n_a, 3);
    assert_int_equal(n_b, 2);
}

static void test_reload(void **state)
{
    char err[256];
    char *text;
    struct sb_config *c;
    json_t *reqs, *r0, *r1;

    start_driver("/a", "user_agent = sb-test/1\n");
    assert_int_equal(send_text(0, "rl-0", "x"), 0);
    assert_true(run_until(1, 5000));

    text = sb_asprintf("[webhook]\nurl = http://127.0.0.1:%d/b\n"
                       "secret = %s\nuser_agent = sb-test/2\n"
                       "max_inflight = 1\n",
                       sink.port, SECRET2);
    c = parse_conf(text, err, sizeof(err));
    free(text);
    assert_non_null(c);
    assert_int_equal(T.ch.ops->reload(&T.ch, sb_config_get(c, "webhook")), 0);
    sb_config_free(c);
    assert_int_equal(send_text(1, "rl-1", "x"), 0);
    assert_int_equal(send_text(2, "rl-2", "x"), -1); /* max_inflight 1 */
    assert_true(run_until(2, 5000));
    assert_int_equal(T.rec[1].status, SB_SEND_OK);

    reqs = sink_json("GET", "/_requests", NULL);
    assert_int_equal(json_array_size(reqs), 2);
    r0 = json_array_get(reqs, 0);
    r1 = json_array_get(reqs, 1);
    assert_string_equal(json_string_value(json_object_get(r0, "path")), "/a");
    assert_string_equal(json_string_value(json_object_get(r1, "path")), "/b");
    assert_string_equal(hdr(r0, "user-agent"), "sb-test/1");
    assert_string_equal(hdr(r1, "user-agent"), "sb-test/2");
    assert_signed(r0, SECRET);
    assert_signed(r1, SECRET2);
    json_decref(reqs);
    /* the sink verifies with the first secret only */
    assert_int_equal(sink_count("bad_signatures"), 1);
}

static void test_keepalive_chain(void **state)
{
    start_driver("/hook", NULL);
    /* 200 in a row: each sent from the previous one's completion */
    T.chain_left = 199;
    T.chain_next = 1;
    assert_int_equal(send_text(0, "chain-0", "first"), 0);
    assert_true(run_until(200, 20000));
    run_for(50);
    assert_int_equal(T.ndone, 200);
    assert_int_equal(T.chain_refused, 0);
    for (int i = 0; i < 200; i++) {
        assert_int_equal(T.rec[i].calls, 1);
        assert_int_equal(T.rec[i].early, 0);
        assert_int_equal(T.rec[i].status, SB_SEND_OK);
    }
    assert_int_equal(sink_count("count"), 200);
    assert_int_equal(sink_count("bad_signatures"), 0);
    assert_true(sink_count("connections") <= 2);
}

static void test_burst(void **state)
{
    const int n = 300;

    start_driver("/hook", NULL);
    for (int i = 0; i < n; i++) {
        char id[32];

        snprintf(id, sizeof(id), "burst-%d", i);
        assert_int_equal(send_text(i, id, "burst"), 0);
    }
    assert_true(run_until(n, 30000));
    run_for(50);
    assert_int_equal(T.ndone, n);
    for (int i = 0; i < n; i++) {
        assert_int_equal(T.rec[i].calls, 1);
        assert_int_equal(T.rec[i].status, SB_SEND_OK);
    }
    assert_int_equal(sink_count("count"), n);
    assert_int_equal(sink_count("bad_signatures"), 0);
    assert_true(sink_count("connections") <= 64);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config),
#define T_(f) cmocka_unit_test_setup_teardown(f, test_setup, test_teardown)
        T_(test_ok_exact),
        T_(test_minimal),
        T_(test_protocol_example),
        T_(test_statuses),
        T_(test_timeout),
        T_(test_refused),
        T_(test_bad_messages),
        T_(test_big_messages),
        T_(test_max_inflight),
        T_(test_stop_inflight),
        T_(test_stop_detached_at_shutdown),
        T_(test_httpc_shutdown),
        T_(test_transport),
        T_(test_reload_inflight),
        T_(test_reload),
        T_(test_keepalive_chain),
        T_(test_burst),
#undef T_
    };

    signal(SIGPIPE, SIG_IGN);
    sb_log_level = LOG_WARNING;
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
