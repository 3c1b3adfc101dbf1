/* test_httpc.c - unit tests for outbound HTTP against a real nginx.
 *
 * The group setup starts nginx (single process, no daemon) on a free
 * 127.0.0.1 port with a private config in a temp dir, and the teardown stops
 * it by PID. Cases: GET, POST/PUT/HEAD with headers and basic auth, 429 with
 * Retry-After (seconds and HTTP-date), 404, connection refused, a request
 * timeout against a socket that listens but never answers, 200 concurrent
 * requests each completing once over reused connections, shutdown with
 * requests in flight, the response body cap, refused requests, and a
 * shutdown from inside a completion. Every loop is bounded in time.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "httpc.h"
#include "util.h"
#include "testutil.h"

#define NGINX "/usr/sbin/nginx"
#define BIG_LEN 200000

static struct {
    char dir[64];
    pid_t pid;
    int port;
    long long retry_future; /* Retry-After date of /retrydate, epoch s */
} ngx;

/* ---- nginx ------------------------------------------------------------ */

static int port_open(int port)
{
    struct sockaddr_in a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int ok;

    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)port);
    ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

static int write_file(const char *path, const char *data, size_t len)
{
    FILE *f = fopen(path, "w");

    if (!f)
        return -1;
    if (fwrite(data, 1, len, f) != len) {
        fclose(f);
        return -1;
    }
    return fclose(f);
}

/* Expand @DIR@, @PORT@ and @DATE@ in the config template. */
static char *expand(const char *t, const char *date)
{
    struct sb_buf b;
    char port[16];

    snprintf(port, sizeof(port), "%d", ngx.port);
    sb_buf_init(&b, 0);
    while (*t) {
        if (strncmp(t, "@DIR@", 5) == 0) {
            sb_buf_appends(&b, ngx.dir);
            t += 5;
        } else if (strncmp(t, "@PORT@", 6) == 0) {
            sb_buf_appends(&b, port);
            t += 6;
        } else if (strncmp(t, "@DATE@", 6) == 0) {
            sb_buf_appends(&b, date);
            t += 6;
        } else {
            sb_buf_append(&b, t++, 1);
        }
    }
    return sb_buf_steal(&b, NULL);
}

static const char conf_template[] =
    "daemon off;\n"
    "master_process off;\n"
    "worker_processes 1;\n"
    "pid @DIR@/nginx.pid;\n"
    "error_log @DIR@/error.log warn;\n"
    "events { worker_connections 1024; }\n"
    "http {\n"
    "  access_log off;\n"
    "  client_body_temp_path @DIR@/tmp_body;\n"
    "  proxy_temp_path @DIR@/tmp_proxy;\n"
    "  fastcgi_temp_path @DIR@/tmp_fastcgi;\n"
    "  uwsgi_temp_path @DIR@/tmp_uwsgi;\n"
    "  scgi_temp_path @DIR@/tmp_scgi;\n"
    "  default_type text/plain;\n"
    "  keepalive_requests 100000;\n"
    "  server {\n"
    "    listen 127.0.0.1:@PORT@;\n"
    "    location = /ok { return 200 \"hello\"; }\n"
    "    location = /echo { return 200 \"m=$request_method "
    "len=$content_length x=$http_x_test ct=$content_type "
    "u=$remote_user\"; }\n"
    "    location = /retry { add_header Retry-After 7 always; "
    "return 429 \"slow down\"; }\n"
    "    location = /retrydate { add_header Retry-After \"@DATE@\" always; "
    "return 503; }\n"
    "    location = /retrypast { add_header Retry-After "
    "\"Sun, 06 Nov 1994 08:49:37 GMT\" always; return 503; }\n"
    "    location = /retrybad { add_header Retry-After soon always; "
    "return 503; }\n"
    "    location = /missing { return 404; }\n"
    "    location = /big { alias @DIR@/big.bin; }\n"
    "    location = /chunked { ssi on; ssi_types *; "
    "alias @DIR@/big.bin; }\n"
    "    location = /slow { limit_rate 1k; alias @DIR@/big.bin; }\n"
    "    location = /status { stub_status; }\n"
    "  }\n"
    "}\n";

static int write_conf(void)
{
    char date[64];
    time_t t = time(NULL) + 3600;
    struct tm tm;
    char *conf, *path;
    int rc;

    ngx.retry_future = (long long)t;
    gmtime_r(&t, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    conf = expand(conf_template, date);
    path = sb_asprintf("%s/nginx.conf", ngx.dir);
    rc = write_file(path, conf, strlen(conf));
    free(path);
    free(conf);
    return rc;
}

static void nginx_kill(void)
{
    t_stop_child(ngx.pid);
    ngx.pid = 0;
}

static pid_t nginx_spawn(void)
{
    char *conf = sb_asprintf("%s/nginx.conf", ngx.dir);
    char *errlog = sb_asprintf("%s/error.log", ngx.dir);
    char *out = sb_asprintf("%s/nginx.out", ngx.dir);
    char *prefix = sb_asprintf("%s/", ngx.dir);
    pid_t pid = fork();

    if (pid == 0) {
        int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        /* nginx dies with us even if the test crashes */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execl(NGINX, "nginx", "-p", prefix, "-e", errlog, "-c", conf,
              (char *)NULL);
        _exit(127);
    }
    free(conf);
    free(errlog);
    free(out);
    free(prefix);
    return pid;
}

static int rm_entry(const char *path, const struct stat *st, int flag,
                    struct FTW *ftw)
{
    return remove(path);
}

static int group_setup(void **state)
{
    char *big, *path;
    int st;

    if (access(NGINX, X_OK) != 0) {
        fprintf(stderr,
                "test_httpc: %s missing (apt-get install "
                "nginx-light)\n",
                NGINX);
        return -1;
    }
    snprintf(ngx.dir, sizeof(ngx.dir), "/tmp/sb-httpc-XXXXXX");
    if (!mkdtemp(ngx.dir))
        return -1;
    big = sb_malloc(BIG_LEN);
    memset(big, 'x', BIG_LEN);
    path = sb_asprintf("%s/big.bin", ngx.dir);
    st = write_file(path, big, BIG_LEN);
    free(path);
    free(big);
    if (st < 0)
        return -1;
    /* the port may be taken between our probe and nginx's bind: retry */
    for (int attempt = 0; attempt < 5; attempt++) {
        ngx.port = t_free_port();
        if (ngx.port <= 0 || write_conf() < 0)
            return -1;
        ngx.pid = nginx_spawn();
        if (ngx.pid < 0)
            return -1;
        for (int i = 0; i < 250; i++) {
            if (port_open(ngx.port))
                return 0;
            if (waitpid(ngx.pid, &st, WNOHANG) == ngx.pid) {
                ngx.pid = 0;
                break;
            }
            usleep(20000);
        }
        nginx_kill();
    }
    fprintf(stderr, "test_httpc: nginx did not start, see %s/error.log\n",
            ngx.dir);
    return -1;
}

static int group_teardown(void **state)
{
    nginx_kill();
    if (ngx.dir[0])
        nftw(ngx.dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

/* ---- loop helpers ----------------------------------------------------- */

struct result {
    int calls;
    long status;
    char body[256];
    size_t body_len;
    long long retry_after;
    char error[256];
    int has_error;
    double total_s;
    int refused_inside; /* a request submitted from the callback */
    int *done;
};

static void on_done(const struct sb_httpc_resp *r, void *arg)
{
    struct result *res = arg;

    res->calls++;
    res->status = r->status;
    res->body_len = r->body_len;
    snprintf(res->body, sizeof(res->body), "%s", r->body);
    res->retry_after = r->retry_after;
    res->has_error = r->error != NULL;
    snprintf(res->error, sizeof(res->error), "%s", r->error ? r->error : "");
    res->total_s = r->total_s;
    if (res->done)
        (*res->done)++;
}

static void on_tick(uv_timer_t *t)
{
}

/* Run the loop until *done reaches want or ms elapse. */
static void run_until(uv_loop_t *loop, int *done, int want, int ms)
{
    uv_timer_t tick;
    uint64_t end = sb_mono_ms() + (uint64_t)ms;

    uv_timer_init(loop, &tick);
    uv_timer_start(&tick, on_tick, 20, 20);
    while ((!done || *done < want) && sb_mono_ms() < end)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
}

static char *url(const char *path)
{
    return sb_asprintf("http://127.0.0.1:%d%s", ngx.port, path);
}

/* Each test gets a fresh loop; the teardown shuts the module down and
 * checks that no handle is left behind, even after a failed assertion. */
static uv_loop_t L;

static int test_setup(void **state)
{
    return uv_loop_init(&L) == 0 ? 0 : -1;
}

static int test_teardown(void **state)
{
    sb_httpc_shutdown();
    if (sb_httpc_inflight() != 0)
        return -1;
    uv_run(&L, UV_RUN_DEFAULT);
    if (uv_loop_close(&L) != 0) {
        fprintf(stderr, "test_httpc: handles left on the loop\n");
        return -1;
    }
    return 0;
}

static void start(void)
{
    assert_int_equal(sb_httpc_init(&L), 0);
}

/* One request, run to completion. */
static void fetch(uv_loop_t *loop, const struct sb_httpc_req *req,
                  struct result *res)
{
    int done = 0;

    memset(res, 0, sizeof(*res));
    res->done = &done;
    assert_int_equal(sb_httpc_request(req, on_done, res), 0);
    /* never completes inside the call */
    assert_int_equal(res->calls, 0);
    run_until(loop, &done, 1, 10000);
    assert_int_equal(res->calls, 1);
    res->done = NULL;
}

/* ---- cases ------------------------------------------------------------ */

static void test_get(void **state)
{
    struct result res;
    struct sb_httpc_req req = {0};
    char *u = url("/ok");

    start();
    req.url = u;
    fetch(&L, &req, &res);
    assert_int_equal(res.status, 200);
    assert_false(res.has_error);
    assert_string_equal(res.body, "hello");
    assert_int_equal(res.body_len, 5);
    assert_int_equal(res.retry_after, -1);
    assert_true(res.total_s > 0 && res.total_s < 5);

    req.method = "HEAD";
    fetch(&L, &req, &res);
    assert_int_equal(res.status, 200);
    assert_int_equal(res.body_len, 0);
    free(u);

    u = url("/missing");
    req.method = "GET";
    req.url = u;
    fetch(&L, &req, &res);
    assert_int_equal(res.status, 404);
    assert_false(res.has_error);
    free(u);
}

static void test_post_headers_auth(void **state)
{
    static const char *const headers[] = {
        "X-Test: abc", "Content-Type: application/x-test", NULL};
    struct result res;
    struct sb_httpc_req req = {0};
    char *u = url("/echo");
    char *body = sb_malloc(5000);

    start();
    req.method = "POST";
    req.url = u;
    req.headers = headers;
    req.body = "hello=world";
    req.body_len = 11;
    req.userpwd = "alice:s3cret";
    fetch(&L, &req, &res);
    assert_int_equal(res.status, 200);
    assert_string_equal(res.body, "m=POST len=11 x=abc "
                                  "ct=application/x-test u=alice");

    /* a body over 1 KiB goes without a 100-continue round trip */
    memset(body, 'b', 5000);
    req.body = body;
    req.body_len = 5000;
    req.userpwd = NULL;
    fetch(&L, &req, &res);
    assert_int_equal(res.status, 200);
    assert_string_equal(res.body, "m=POST len=5000 x=abc "
                                  "ct=application/x-test u=");
    assert_true(res.total_s < 0.9);

    req.method = "PUT";
    req.body = "abc";
    req.body_len = 3;
    req.headers = NULL;
    fetch(&L, &req, &res);
    assert_int_equal(res.status, 200);
    assert_non_null(strstr(res.body, "m=PUT len=3 "));

    /* POST without a body */
    req.method = "POST";
    req.body = NULL;
    req.body_len = 0;
    fetch(&L, &req, &res);
    assert_int_equal(res.status, 200);
    assert_non_null(strstr(res.body, "m=POST len=0 "));
    free(body);
    free(u);
}

static void test_retry_after(void **state)
{
    static const struct {
        const char *path;
        long status;
        long long min, max;
    } cases[] = {
        {"/retry", 429, 7, 7},     {"/retrydate", 503, 3300, 3600},
        {"/retrypast", 503, 0, 0}, {"/retrybad", 503, -1, -1},
        {"/ok", 200, -1, -1},
    };
    struct result res;
    struct sb_httpc_req req = {0};

    start();
    for (size_t i = 0; i < SB_ARRAY_LEN(cases); i++) {
        char *u = url(cases[i].path);
        req.url = u;
        fetch(&L, &req, &res);
        free(u);
        assert_int_equal(res.status, cases[i].status);
        assert_false(res.has_error);
        if (res.retry_after < cases[i].min || res.retry_after > cases[i].max)
            print_error("%s: retry_after=%lld\n", cases[i].path,
                        res.retry_after);
        assert_true(res.retry_after >= cases[i].min &&
                    res.retry_after <= cases[i].max);
    }
}

static void test_connection_refused(void **state)
{
    struct result res;
    struct sb_httpc_req req = {0};
    int port = t_free_port(); /* bound, then closed: nobody listens */
    char *u = sb_asprintf("http://127.0.0.1:%d/x", port);

    start();
    req.url = u;
    fetch(&L, &req, &res);
    assert_int_equal(res.status, 0);
    assert_true(res.has_error);
    assert_true(strlen(res.error) > 0);
    assert_string_equal(res.body, "");
    assert_true(res.total_s < 3);
    free(u);
}

/* A socket that listens but never accepts: connect succeeds (the kernel
 * completes the handshake), the request is never answered. */
static int blackhole(int *port)
{
    struct sockaddr_in a;
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 8), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

static void test_timeout(void **state)
{
    struct result res;
    struct sb_httpc_req req = {0};
    int port, fd = blackhole(&port);
    char *u = sb_asprintf("http://127.0.0.1:%d/never", port);
    uint64_t t0;

    start();
    req.url = u;
    req.timeout_ms = 400;
    t0 = sb_mono_ms();
    fetch(&L, &req, &res);
    assert_int_equal(res.status, 0);
    assert_true(res.has_error);
    assert_non_null(strcasestr(res.error, "timed out"));
    assert_true(sb_mono_ms() - t0 >= 390);
    assert_true(sb_mono_ms() - t0 < 3000);
    assert_true(res.total_s >= 0.39 && res.total_s < 3);
    close(fd);
    free(u);
}

/* nginx's count of accepted connections, from stub_status. */
static long accepted(uv_loop_t *loop)
{
    struct result res;
    struct sb_httpc_req req = {0};
    char *u = url("/status");
    long a = -1, h, r;
    const char *p;

    req.url = u;
    fetch(loop, &req, &res);
    free(u);
    assert_int_equal(res.status, 200);
    p = strstr(res.body, "requests\n");
    assert_non_null(p);
    assert_int_equal(sscanf(p + 9, " %ld %ld %ld", &a, &h, &r), 3);
    return a;
}

static void test_concurrent_reuse(void **state)
{
    enum { N = 200 };
    static struct result res[N];
    struct sb_httpc_req req = {0};
    char *u = url("/ok");
    long first, before, after = 0;
    int done = 0;

    start();
    first = before = accepted(&L);
    req.url = u;
    for (int round = 0; round < 2; round++) {
        done = 0;
        memset(res, 0, sizeof(res));
        for (int i = 0; i < N; i++) {
            res[i].done = &done;
            assert_int_equal(sb_httpc_request(&req, on_done, &res[i]), 0);
        }
        assert_int_equal(sb_httpc_inflight(), N);
        run_until(&L, &done, N, 20000);
        assert_int_equal(done, N);
        assert_int_equal(sb_httpc_inflight(), 0);
        for (int i = 0; i < N; i++) {
            assert_int_equal(res[i].calls, 1);
            assert_int_equal(res[i].status, 200);
            assert_string_equal(res[i].body, "hello");
        }
        after = accepted(&L);
        print_message("round %d: %ld new connections for %d requests\n", round,
                      after - before, N);
        before = after;
    }
    /* at most 64 connections to one host, all kept and reused: 400
     * requests (plus the status probes) never need more */
    assert_true(after - first <= 64);
    free(u);
}

static void on_done_resubmit(const struct sb_httpc_resp *r, void *arg)
{
    struct result *res = arg;
    struct sb_httpc_req req = {0};

    req.url = "http://127.0.0.1:1/";
    on_done(r, arg);
    if (sb_httpc_request(&req, on_done, arg) < 0)
        res->refused_inside = 1;
}

static void test_shutdown_in_flight(void **state)
{
    enum { SLOW = 5, HOLES = 2 };
    static struct result res[SLOW + HOLES];
    struct sb_httpc_req req = {0};
    char *u = url("/slow");
    int port, fd = blackhole(&port);
    char *hole = sb_asprintf("http://127.0.0.1:%d/never", port);

    start();
    memset(res, 0, sizeof(res));
    for (int i = 0; i < SLOW + HOLES; i++) {
        req.url = i < SLOW ? u : hole;
        assert_int_equal(sb_httpc_request(&req, on_done_resubmit, &res[i]), 0);
    }
    /* let them connect and start receiving */
    run_until(&L, NULL, 0, 300);
    assert_int_equal(sb_httpc_inflight(), SLOW + HOLES);
    for (int i = 0; i < SLOW + HOLES; i++)
        assert_int_equal(res[i].calls, 0);

    sb_httpc_shutdown();
    assert_int_equal(sb_httpc_inflight(), 0);
    for (int i = 0; i < SLOW + HOLES; i++) {
        assert_int_equal(res[i].calls, 1);
        assert_int_equal(res[i].status, 0);
        assert_string_equal(res[i].error, "cancelled");
        assert_int_equal(res[i].refused_inside, 1);
        assert_true(res[i].total_s >= 0.25);
    }
    /* refused after shutdown, no callback */
    assert_int_equal(sb_httpc_request(&req, on_done, &res[0]), -1);
    sb_httpc_shutdown(); /* idempotent */
    assert_int_equal(uv_run(&L, UV_RUN_DEFAULT), 0);
    for (int i = 0; i < SLOW + HOLES; i++)
        assert_int_equal(res[i].calls, 1);
    close(fd);
    free(hole);
    free(u);
}

static void test_max_body(void **state)
{
    static const struct {
        const char *path;
        size_t max_body;
        long status;
        size_t len;
    } cases[] = {
        {"/big", 1000, 0, 0},      /* Content-Length over the cap */
        {"/chunked", 1000, 0, 0},  /* no length: cut while reading */
        {"/big", 0, 200, BIG_LEN}, /* default cap 1 MiB */
        {"/chunked", 0, 200, BIG_LEN},
        {"/big", BIG_LEN, 200, BIG_LEN}, /* exactly at the cap */
        {"/chunked", BIG_LEN, 200, BIG_LEN},
        {"/chunked", BIG_LEN - 1, 0, 0},
    };
    struct result res;
    struct sb_httpc_req req = {0};

    start();
    for (size_t i = 0; i < SB_ARRAY_LEN(cases); i++) {
        char *u = url(cases[i].path);
        req.url = u;
        req.max_body = cases[i].max_body;
        fetch(&L, &req, &res);
        free(u);
        if (res.status != cases[i].status)
            print_error("case %zu: status=%ld error=%s\n", i, res.status,
                        res.error);
        assert_int_equal(res.status, cases[i].status);
        assert_int_equal(res.body_len, cases[i].len);
        if (cases[i].status == 0)
            assert_string_equal(res.error, "response body exceeds max_body");
        else
            assert_false(res.has_error);
    }
    /* the connection cut mid-body does not poison the next request */
    req.max_body = 0;
    req.url = url("/ok");
    fetch(&L, &req, &res);
    free((char *)req.url);
    assert_int_equal(res.status, 200);
    assert_string_equal(res.body, "hello");
}

static void test_refused_requests(void **state)
{
    static const char *const crlf[] = {"X-A: b\r\nX-Injected: 1", NULL};
    struct result res = {0};
    struct sb_httpc_req req = {0};
    char *u = url("/ok");

    /* before init */
    req.url = u;
    assert_int_equal(sb_httpc_request(&req, on_done, &res), -1);
    start();
    assert_int_equal(sb_httpc_init(&L), 0); /* twice is fine */
    assert_int_equal(sb_httpc_request(&req, NULL, &res), -1);
    req.headers = crlf;
    assert_int_equal(sb_httpc_request(&req, on_done, &res), -1);
    req.headers = NULL;
    req.method = "GE T";
    assert_int_equal(sb_httpc_request(&req, on_done, &res), -1);
    req.method = NULL;
    req.url = NULL;
    assert_int_equal(sb_httpc_request(&req, on_done, &res), -1);
    req.url = "http://127.0.0.1/\r\nX: y";
    assert_int_equal(sb_httpc_request(&req, on_done, &res), -1);
    assert_int_equal(sb_httpc_inflight(), 0);
    assert_int_equal(res.calls, 0);

    /* accepted, but only http and https are spoken */
    req.url = "file:///etc/passwd";
    fetch(&L, &req, &res);
    assert_int_equal(res.status, 0);
    assert_true(res.has_error);
    assert_int_equal(res.body_len, 0);
    req.url = "ftp://127.0.0.1/";
    fetch(&L, &req, &res);
    assert_int_equal(res.status, 0);
    assert_true(res.has_error);
    req.url = "not a url";
    fetch(&L, &req, &res);
    assert_int_equal(res.status, 0);
    assert_true(res.has_error);
    free(u);
}

static void on_done_shutdown(const struct sb_httpc_resp *r, void *arg)
{
    on_done(r, arg);
    sb_httpc_shutdown();
}

static void test_shutdown_from_callback(void **state)
{
    enum { N = 3 };
    static struct result res[N];
    struct sb_httpc_req req = {0};
    char *u = url("/ok");
    int done = 0;

    start();
    memset(res, 0, sizeof(res));
    req.url = u;
    for (int i = 0; i < N; i++) {
        res[i].done = &done;
        assert_int_equal(sb_httpc_request(&req, on_done_shutdown, &res[i]), 0);
    }
    run_until(&L, &done, N, 10000);
    assert_int_equal(done, N);
    for (int i = 0; i < N; i++)
        assert_int_equal(res[i].calls, 1);
    assert_int_equal(sb_httpc_inflight(), 0);
    assert_int_equal(uv_run(&L, UV_RUN_DEFAULT), 0);
    free(u);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_get, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_post_headers_auth, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_retry_after, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_connection_refused, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_timeout, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_reuse, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_shutdown_in_flight, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_max_body, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_refused_requests, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_shutdown_from_callback, test_setup,
                                        test_teardown),
    };

    signal(SIGPIPE, SIG_IGN);
    alarm(300);
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
