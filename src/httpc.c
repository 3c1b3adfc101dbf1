/* httpc.c - outbound HTTP with libcurl's multi_socket API on the libuv loop.
 *
 * One curl multi handle drives every outbound request (SMS provider APIs,
 * webhooks) from the loop thread. curl tells us which sockets to watch
 * (SOCKETFUNCTION: one uv_poll_t per socket, attached with curl_multi_assign)
 * and when to wake it up (TIMERFUNCTION: one uv_timer_t); we tell curl what
 * happened with curl_multi_socket_action and then collect finished
 * transfers with curl_multi_info_read. We never call back into curl from
 * inside one of its callbacks: a 0 ms timeout from curl just arms the
 * uv_timer, whose own callback then runs the socket action on the next loop
 * pass. Completions are therefore never delivered before
 * sb_httpc_request() returns.
 *
 * Connections live in the multi handle's cache and are reused across
 * requests (keep-alive); at most HTTPC_MAX_HOST_CONNS are opened to one host,
 * further transfers wait for a free one, and up to HTTPC_MAX_CACHED_CONNS
 * idle ones are kept. Every transfer is tracked on our
 * own list (curl 7.88 has no curl_multi_get_handles) so shutdown can complete
 * each exactly once with "cancelled". Response bodies are capped; only
 * http and https are allowed; redirects are not followed.
 *
 * curl_global_init() is not thread-safe: sb_httpc_init() calls it once
 * (guarded by a static flag) and must therefore run before any other thread
 * starts - main() calls it early, before the first uv_queue_work.
 */
#include "httpc.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "log.h"
#include "util.h"

#define HTTPC_MAX_HOST_CONNS 64L
#define HTTPC_MAX_CACHED_CONNS 256L
#define HTTPC_MAX_INFLIGHT 10000
#define HTTPC_DEF_TIMEOUT_MS 30000L
#define HTTPC_DEF_CONNECT_MS 5000L
#define HTTPC_DEF_MAX_BODY (1024 * 1024)
#define HTTPC_TOO_BIG "response body exceeds max_body"

/* One watched socket; freed in its close callback. */
struct httpc_sock {
    uv_poll_t poll;
    curl_socket_t fd;
    struct httpc_sock *prev;
    struct httpc_sock *next;
};

/* One request, from sb_httpc_request() to its completion. */
struct httpc_xfer {
    CURL *easy;
    sb_httpc_cb *cb;
    void *arg;
    struct curl_slist *headers;
    char *body; /* our copy of the request body */
    struct sb_buf resp;
    int too_big;
    long long retry_after;
    uint64_t started_ms;
    char errbuf[CURL_ERROR_SIZE];
    struct httpc_xfer *prev;
    struct httpc_xfer *next;
};

static struct {
    uv_loop_t *loop;
    CURLM *multi;      /* NULL when not initialised */
    uv_timer_t *timer; /* curl's timeout; freed in its close callback */
    struct httpc_xfer *xfers;
    struct httpc_sock *socks;
    size_t inflight;
    int shutting_down;
} H;

static int curl_ready;

/* ---- small helpers --------------------------------------------------- */

#define LIST_LINK(head, e)                                                     \
    do {                                                                       \
        (e)->prev = NULL;                                                      \
        (e)->next = (head);                                                    \
        if (head)                                                              \
            (head)->prev = (e);                                                \
        (head) = (e);                                                          \
    } while (0)

#define LIST_UNLINK(head, e)                                                   \
    do {                                                                       \
        if ((e)->prev)                                                         \
            (e)->prev->next = (e)->next;                                       \
        else                                                                   \
            (head) = (e)->next;                                                \
        if ((e)->next)                                                         \
            (e)->next->prev = (e)->prev;                                       \
        (e)->prev = (e)->next = NULL;                                          \
    } while (0)

static int has_crlf(const char *s)
{
    return s && strpbrk(s, "\r\n") != NULL;
}

/* An HTTP method is a token: letters only is all we ever send. */
static int method_ok(const char *m)
{
    if (!m || !*m || strlen(m) > 16)
        return 0;
    for (const char *p = m; *p; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z')))
            return 0;
    return 1;
}

/* Retry-After is either delay-seconds or an HTTP-date (RFC 9110 10.2.3);
 * a date in the past means 0. Returns -1 when the value is neither. */
static long long parse_retry_after(const char *v, size_t n)
{
    char buf[128];
    long long secs;
    time_t when, now;

    while (n > 0 && (*v == ' ' || *v == '\t'))
        v++, n--;
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t' || v[n - 1] == '\r' ||
                     v[n - 1] == '\n'))
        n--;
    if (n == 0 || n >= sizeof(buf))
        return -1;
    memcpy(buf, v, n);
    buf[n] = '\0';
    if (buf[0] >= '0' && buf[0] <= '9') {
        if (sb_parse_ll(buf, &secs) == 0)
            return secs;
        if (strspn(buf, "0123456789") == n)
            return 1000000000LL; /* absurdly long: clamp, not fail */
        return -1;
    }
    when = curl_getdate(buf, NULL);
    if (when == (time_t)-1)
        return -1;
    now = time(NULL);
    return when > now ? (long long)(when - now) : 0;
}

/* ---- curl callbacks (never call back into curl from here) ----------- */

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    struct httpc_xfer *x = ud;
    size_t len = size * n;
    static const char name[] = "retry-after:";

    /* a new status line starts a new response (after 100 Continue) */
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0)
        x->retry_after = -1;
    else if (len >= sizeof(name) - 1 &&
             strncasecmp(p, name, sizeof(name) - 1) == 0)
        x->retry_after =
            parse_retry_after(p + sizeof(name) - 1, len - (sizeof(name) - 1));
    return len;
}

static size_t on_write(char *p, size_t size, size_t n, void *ud)
{
    struct httpc_xfer *x = ud;
    size_t len = size * n;

    if (sb_buf_append(&x->resp, p, len) < 0) {
        x->too_big = 1;
        return 0; /* curl aborts with CURLE_WRITE_ERROR */
    }
    return len;
}

static void on_sock_close(uv_handle_t *h)
{
    free(h->data);
}

static void sock_close(struct httpc_sock *s)
{
    LIST_UNLINK(H.socks, s);
    uv_poll_stop(&s->poll);
    uv_close((uv_handle_t *)&s->poll, on_sock_close);
}

static void drain(void);

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct httpc_sock *s = h->data;
    int flags = 0;
    int running;

    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    /* s may be closed by curl's socket callback during this call */
    curl_multi_socket_action(H.multi, s->fd, flags, &running);
    drain();
}

static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp,
                     void *socketp)
{
    struct httpc_sock *s = socketp;
    int events = 0;
    int rc;

    if (what == CURL_POLL_REMOVE) {
        /* curl forgets the association itself; it closes fd after we
         * return, so stop watching it now */
        if (s)
            sock_close(s);
        return 0;
    }
    if (!s) {
        s = sb_calloc(1, sizeof(*s));
        s->fd = fd;
        s->poll.data = s;
        rc = uv_poll_init_socket(H.loop, &s->poll, fd);
        if (rc < 0) {
            SB_ERR("core.httpc", "uv_poll_init_socket failed err=%s",
                   uv_strerror(rc));
            free(s);
            return -1;
        }
        LIST_LINK(H.socks, s);
        curl_multi_assign(H.multi, fd, s);
    }
    if (what & CURL_POLL_IN)
        events |= UV_READABLE;
    if (what & CURL_POLL_OUT)
        events |= UV_WRITABLE;
    rc = uv_poll_start(&s->poll, events, on_poll);
    if (rc < 0) {
        SB_ERR("core.httpc", "uv_poll_start failed err=%s", uv_strerror(rc));
        return -1;
    }
    return 0;
}

static void on_timeout(uv_timer_t *t)
{
    int running;

    curl_multi_socket_action(H.multi, CURL_SOCKET_TIMEOUT, 0, &running);
    drain();
}

/* curl's TIMERFUNCTION: only (re)arm or stop our timer. A 0 ms timeout
 * fires on the next loop pass, outside any curl call. */
static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    if (timeout_ms < 0)
        uv_timer_stop(H.timer);
    else
        uv_timer_start(H.timer, on_timeout, (uint64_t)timeout_ms, 0);
    return 0;
}

/* ---- completion ------------------------------------------------------ */

static void xfer_free(struct httpc_xfer *x)
{
    if (x->easy)
        curl_easy_cleanup(x->easy);
    curl_slist_free_all(x->headers);
    free(x->body);
    sb_buf_free(&x->resp);
    free(x);
}

/* Log a failure with the host only: URLs may carry tokens in the query. */
static void log_failure(struct httpc_xfer *x, const char *reason)
{
    char *url = NULL, *host = NULL;
    char safe_host[128], safe_reason[256];
    CURLU *u;

    curl_easy_getinfo(x->easy, CURLINFO_EFFECTIVE_URL, &url);
    u = curl_url();
    if (u && url && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK)
        curl_url_get(u, CURLUPART_HOST, &host, 0);
    SB_WARN("core.httpc", "request failed host=%s reason=%s",
            sb_log_safe(host ? host : "-", safe_host, sizeof(safe_host)),
            sb_log_safe(reason, safe_reason, sizeof(safe_reason)));
    curl_free(host);
    curl_url_cleanup(u);
}

/* Detach a finished transfer, deliver its completion, free it. The callback
 * may submit new requests or even shut the module down. */
static void xfer_done(struct httpc_xfer *x, CURLcode result)
{
    struct sb_httpc_resp r;

    curl_multi_remove_handle(H.multi, x->easy);
    LIST_UNLINK(H.xfers, x);
    H.inflight--;
    memset(&r, 0, sizeof(r));
    r.retry_after = -1;
    r.body = "";
    curl_easy_getinfo(x->easy, CURLINFO_TOTAL_TIME, &r.total_s);
    if (result == CURLE_OK) {
        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &r.status);
        r.body = x->resp.data ? x->resp.data : "";
        r.body_len = x->resp.len;
        r.retry_after = x->retry_after;
    } else {
        if (x->too_big || result == CURLE_FILESIZE_EXCEEDED)
            r.error = HTTPC_TOO_BIG;
        else if (x->errbuf[0])
            r.error = x->errbuf;
        else
            r.error = curl_easy_strerror(result);
        log_failure(x, r.error);
    }
    x->cb(&r, x->arg);
    xfer_free(x);
}

/* Collect finished transfers after each socket action. */
static void drain(void)
{
    CURLMsg *msg;
    int left;

    while (H.multi && (msg = curl_multi_info_read(H.multi, &left))) {
        if (msg->msg == CURLMSG_DONE) {
            CURLcode result = msg->data.result;
            char *priv = NULL;

            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
            xfer_done((struct httpc_xfer *)priv, result);
        }
    }
}

/* ---- public ---------------------------------------------------------- */

static void free_timer(uv_handle_t *h)
{
    free(h);
}

int sb_httpc_init(uv_loop_t *loop)
{
    CURLMcode mc = CURLM_OK;
    int rc;

    if (H.multi)
        return H.loop == loop ? 0 : -1;
    if (!curl_ready) {
        CURLcode cc = curl_global_init(CURL_GLOBAL_DEFAULT);
        if (cc != CURLE_OK) {
            SB_ERR("core.httpc", "curl_global_init failed err=%s",
                   curl_easy_strerror(cc));
            return -1;
        }
        curl_ready = 1;
    }
    H.loop = loop;
    H.timer = sb_malloc(sizeof(*H.timer));
    rc = uv_timer_init(loop, H.timer);
    if (rc < 0) {
        SB_ERR("core.httpc", "uv_timer_init failed err=%s", uv_strerror(rc));
        free(H.timer);
        H.timer = NULL;
        return -1;
    }
    H.timer->data = NULL;
    H.multi = curl_multi_init();
    if (!H.multi) {
        SB_ERR("core.httpc", "curl_multi_init failed");
        goto fail;
    }
    mc = curl_multi_setopt(H.multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    if (!mc)
        mc = curl_multi_setopt(H.multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    if (!mc)
        mc = curl_multi_setopt(H.multi, CURLMOPT_MAX_HOST_CONNECTIONS,
                               HTTPC_MAX_HOST_CONNS);
    /* curl's default cache size follows the number of transfers, so a
     * burst's connections would be closed as it drains */
    if (!mc)
        mc = curl_multi_setopt(H.multi, CURLMOPT_MAXCONNECTS,
                               HTTPC_MAX_CACHED_CONNS);
    if (mc) {
        SB_ERR("core.httpc", "curl_multi_setopt failed err=%s",
               curl_multi_strerror(mc));
        goto fail;
    }
    H.shutting_down = 0;
    return 0;
fail:
    if (H.multi)
        curl_multi_cleanup(H.multi);
    H.multi = NULL;
    uv_close((uv_handle_t *)H.timer, free_timer);
    H.timer = NULL;
    return -1;
}

static CURLcode xfer_setup(struct httpc_xfer *x, const struct sb_httpc_req *req,
                           const char *method)
{
    CURL *e = x->easy;
    CURLcode rc = CURLE_OK;
    int has_body = req->body != NULL || strcmp(method, "POST") == 0;
    int has_expect = 0;
    size_t max_body = req->max_body ? req->max_body : HTTPC_DEF_MAX_BODY;

#define SETOPT(opt, val)                                                       \
    do {                                                                       \
        if (rc == CURLE_OK)                                                    \
            rc = curl_easy_setopt(e, opt, val);                                \
    } while (0)

    SETOPT(CURLOPT_URL, req->url);
    SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
    SETOPT(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    SETOPT(CURLOPT_NOSIGNAL, 1L);
    SETOPT(CURLOPT_PRIVATE, (void *)x);
    SETOPT(CURLOPT_ERRORBUFFER, x->errbuf);
    SETOPT(CURLOPT_USERAGENT, "switchboard");
    SETOPT(CURLOPT_TIMEOUT_MS,
           req->timeout_ms > 0 ? req->timeout_ms : HTTPC_DEF_TIMEOUT_MS);
    SETOPT(CURLOPT_CONNECTTIMEOUT_MS, req->connect_timeout_ms > 0
                                          ? req->connect_timeout_ms
                                          : HTTPC_DEF_CONNECT_MS);
    SETOPT(CURLOPT_WRITEFUNCTION, on_write);
    SETOPT(CURLOPT_WRITEDATA, (void *)x);
    SETOPT(CURLOPT_HEADERFUNCTION, on_header);
    SETOPT(CURLOPT_HEADERDATA, (void *)x);
    SETOPT(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)max_body);
    sb_buf_init(&x->resp, max_body);

    if (has_body) {
        size_t n = req->body ? req->body_len : 0;
        x->body = sb_malloc(n);
        if (n)
            memcpy(x->body, req->body, n);
        SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)n);
        SETOPT(CURLOPT_POSTFIELDS, x->body);
    }
    if (strcmp(method, "HEAD") == 0)
        SETOPT(CURLOPT_NOBODY, 1L);
    else if (strcmp(method, "GET") == 0 && !has_body)
        SETOPT(CURLOPT_HTTPGET, 1L);
    if (strcmp(method, "POST") != 0 && strcmp(method, "HEAD") != 0 &&
        !(strcmp(method, "GET") == 0 && !has_body))
        SETOPT(CURLOPT_CUSTOMREQUEST, method);
    if (req->userpwd) {
        SETOPT(CURLOPT_USERPWD, req->userpwd);
        SETOPT(CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
    }

    for (size_t i = 0; req->headers && req->headers[i]; i++) {
        struct curl_slist *l = curl_slist_append(x->headers, req->headers[i]);
        if (!l)
            return CURLE_OUT_OF_MEMORY;
        x->headers = l;
        if (strncasecmp(req->headers[i], "Expect:", 7) == 0)
            has_expect = 1;
    }
    /* no 100-continue round trip for bodies over 1 KiB */
    if (has_body && !has_expect) {
        struct curl_slist *l = curl_slist_append(x->headers, "Expect:");
        if (!l)
            return CURLE_OUT_OF_MEMORY;
        x->headers = l;
    }
    if (x->headers)
        SETOPT(CURLOPT_HTTPHEADER, x->headers);
#undef SETOPT
    return rc;
}

int sb_httpc_request(const struct sb_httpc_req *req, sb_httpc_cb *cb, void *arg)
{
    struct httpc_xfer *x;
    const char *method;
    CURLcode rc;
    CURLMcode mc;

    if (!H.multi || H.shutting_down || !req || !req->url || !cb)
        return -1;
    if (H.inflight >= HTTPC_MAX_INFLIGHT) {
        SB_WARN("core.httpc", "too many requests in flight n=%zu", H.inflight);
        return -1;
    }
    method = req->method ? req->method : (req->body ? "POST" : "GET");
    if (!method_ok(method) || has_crlf(req->url) || has_crlf(req->userpwd))
        return -1;
    for (size_t i = 0; req->headers && req->headers[i]; i++)
        if (has_crlf(req->headers[i]))
            return -1;

    x = sb_calloc(1, sizeof(*x));
    x->cb = cb;
    x->arg = arg;
    x->retry_after = -1;
    x->started_ms = sb_mono_ms();
    x->easy = curl_easy_init();
    if (!x->easy) {
        SB_ERR("core.httpc", "curl_easy_init failed");
        xfer_free(x);
        return -1;
    }
    rc = xfer_setup(x, req, method);
    if (rc != CURLE_OK) {
        SB_WARN("core.httpc", "request refused err=%s", curl_easy_strerror(rc));
        xfer_free(x);
        return -1;
    }
    /* adding calls our timer function with 0: the transfer starts on the
     * next loop pass */
    mc = curl_multi_add_handle(H.multi, x->easy);
    if (mc != CURLM_OK) {
        SB_ERR("core.httpc", "curl_multi_add_handle failed err=%s",
               curl_multi_strerror(mc));
        xfer_free(x);
        return -1;
    }
    LIST_LINK(H.xfers, x);
    H.inflight++;
    return 0;
}

/* The header stream as the body: for IMAP everything the server says. */
static size_t on_header_capture(char *p, size_t size, size_t n, void *ud)
{
    return on_write(p, size, n, ud);
}

static size_t on_discard(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return size * n;
}

int sb_httpc_easy(void *easy, int capture_headers, size_t max_body,
                  sb_httpc_cb *cb, void *arg)
{
    struct httpc_xfer *x;
    CURLcode rc = CURLE_OK;
    CURL *e = easy;

    if (!e)
        return -1;
    if (!H.multi || H.shutting_down || !cb ||
        H.inflight >= HTTPC_MAX_INFLIGHT) {
        curl_easy_cleanup(e);
        return -1;
    }
    x = sb_calloc(1, sizeof(*x));
    x->cb = cb;
    x->arg = arg;
    x->retry_after = -1;
    x->started_ms = sb_mono_ms();
    x->easy = e;
    max_body = max_body ? max_body : HTTPC_DEF_MAX_BODY;
    sb_buf_init(&x->resp, max_body);
#define SETOPT(opt, val)                                                       \
    do {                                                                       \
        if (rc == CURLE_OK)                                                    \
            rc = curl_easy_setopt(e, opt, val);                                \
    } while (0)
    SETOPT(CURLOPT_NOSIGNAL, 1L);
    SETOPT(CURLOPT_PRIVATE, (void *)x);
    SETOPT(CURLOPT_ERRORBUFFER, x->errbuf);
    if (capture_headers) {
        SETOPT(CURLOPT_HEADERFUNCTION, on_header_capture);
        SETOPT(CURLOPT_HEADERDATA, (void *)x);
        SETOPT(CURLOPT_WRITEFUNCTION, on_discard);
    } else {
        SETOPT(CURLOPT_WRITEFUNCTION, on_write);
        SETOPT(CURLOPT_WRITEDATA, (void *)x);
    }
#undef SETOPT
    if (rc != CURLE_OK ||
        curl_multi_add_handle(H.multi, x->easy) != CURLM_OK) {
        SB_WARN("core.httpc", "transfer refused err=%s",
                curl_easy_strerror(rc));
        xfer_free(x);
        return -1;
    }
    LIST_LINK(H.xfers, x);
    H.inflight++;
    return 0;
}

size_t sb_httpc_inflight(void)
{
    return H.inflight;
}

void sb_httpc_shutdown(void)
{
    struct httpc_xfer *x;
    size_t n = 0;

    if (!H.multi || H.shutting_down)
        return;
    H.shutting_down = 1;
    while ((x = H.xfers)) {
        struct sb_httpc_resp r;

        curl_multi_remove_handle(H.multi, x->easy);
        LIST_UNLINK(H.xfers, x);
        H.inflight--;
        memset(&r, 0, sizeof(r));
        r.body = "";
        r.retry_after = -1;
        r.error = "cancelled";
        r.total_s = (double)(sb_mono_ms() - x->started_ms) / 1000.0;
        x->cb(&r, x->arg); /* a new request from here is refused */
        xfer_free(x);
        n++;
    }
    if (n)
        SB_INFO("core.httpc", "shutdown cancelled=%zu", n);
    /* closes the cached connections (socket callbacks may still run) */
    curl_multi_cleanup(H.multi);
    H.multi = NULL;
    while (H.socks)
        sock_close(H.socks);
    uv_timer_stop(H.timer);
    uv_close((uv_handle_t *)H.timer, free_timer);
    H.timer = NULL;
    H.shutting_down = 0;
}
