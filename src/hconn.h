/* hconn.h - a lean keep-alive HTTP/1.1 client for one origin on the loop.
 *
 * For the hot path where libcurl's per-request machinery costs too much
 * (webhooks to a plain http:// receiver): one pool per origin (host:port),
 * up to max_conns persistent connections, one request in flight on each,
 * and a bounded FIFO of waiting requests. No TLS (https stays on httpc.h),
 * no proxies, no redirects, no request pipelining, no compression.
 *
 * Rules (hiredis' exactly-once callbacks are the model):
 *
 *  1. sb_hconn_request() either refuses (-1, no callback) or accepts (0):
 *     then the callback fires exactly once, on the loop thread, never
 *     inside sb_hconn_request() itself.
 *  2. The request description is borrowed for the call, except the body,
 *     which is borrowed until the callback: the caller MAY NOT change or
 *     free it before then (the pool writes it without a copy).
 *  3. The response (body included) is borrowed for the callback only.
 *  4. An error - resolve or connect failure, reset, early close, timeout,
 *     malformed or oversized response - gives status 0, an error code and
 *     a short reason; the connection it happened on is closed.
 *  5. sb_hconn_pool_close() completes every unfinished request with
 *     SB_HCONN_ECANCELLED before it returns; nothing fires after it. It
 *     may be called from inside a callback.
 *
 * The details (addresses, retry of a request that met a stale
 * connection, timeouts, what makes a connection reusable) are in the
 * header comment of hconn.c.
 */
#ifndef SB_HCONN_H
#define SB_HCONN_H

#include <stddef.h>
#include <uv.h>

/* What went wrong; SB_HCONN_OK with a response. */
enum sb_hconn_err {
    SB_HCONN_OK = 0,
    SB_HCONN_ERESOLVE,  /* the host name did not resolve */
    SB_HCONN_ECONNECT,  /* connect refused, unreachable or timed out */
    SB_HCONN_ETIMEOUT,  /* the request's timeout passed */
    SB_HCONN_ENETWORK,  /* reset or closed before the response ended */
    SB_HCONN_EPROTO,    /* malformed response */
    SB_HCONN_ETOOBIG,   /* response body over max_body */
    SB_HCONN_ECANCELLED /* sb_hconn_pool_close() */
};

struct sb_hconn_resp {
    int status;       /* HTTP status, 0 on error */
    const char *body; /* NUL-terminated, "" when none; borrowed */
    size_t body_len;
    long long retry_after; /* seconds from Retry-After, -1 when absent */
    enum sb_hconn_err err;
    const char *error; /* NULL on a response, else a short reason */
};

typedef void sb_hconn_cb(const struct sb_hconn_resp *resp, void *arg);

struct sb_hconn_opts {
    size_t max_conns;        /* persistent connections; 0 = 64 */
    size_t max_queue;        /* waiting requests before refusing; 0 = 10000 */
    size_t max_body;         /* response body cap; 0 = 64 KiB */
    long connect_timeout_ms; /* 0 = 5000 */
    long idle_timeout_ms;    /* close a connection idle this long; 0 = 60000 */
};

struct sb_hconn_req {
    const char *method; /* token, e.g. "POST" */
    const char *path;   /* origin-form: "/" then path and query */
    /* Extra header lines, each "Name: value\r\n", or NULL. Host and
     * Content-Length are added by the pool; a Content-Length, Host,
     * Transfer-Encoding, Connection or Expect line here is refused. */
    const char *headers;
    const char *body; /* borrowed until the callback; may be NULL */
    size_t body_len;
    long timeout_ms; /* from the call to the end of the response,
                        queueing and connecting included; 0 = 30000 */
};

struct sb_hconn_stats {
    size_t conns;                /* open or connecting */
    size_t idle;                 /* open, no request */
    size_t queued;               /* waiting for a connection */
    size_t pending;              /* accepted, callback not yet fired */
    unsigned long long connects; /* connections opened so far */
    unsigned long long retries;  /* requests retried after a stale close */
    unsigned long long requests; /* responses completed */
};

struct sb_hconn_pool;

/* Split "http://host[:port][/path][?query][#fragment]" into host (copied
 * into host, hostlen bytes; an IPv6 literal without its brackets), port
 * (80 by default) and *path: returns new (caller frees) the origin-form
 * target to send - "/" when the URL has none, the fragment dropped.
 * Returns 0, or -1 when url is not such a URL (https, userinfo, bad port,
 * host too long, spaces, controls or non-ASCII bytes). */
int sb_hconn_parse_url(const char *url, char *host, size_t hostlen, int *port,
                       char **path);

/* Returns a new pool for host:port (host borrowed: a literal IPv4/IPv6
 * address, or a name resolved once with uv_getaddrinfo), or NULL on bad
 * arguments. opts may be NULL for the defaults. Free with
 * sb_hconn_pool_close(). */
struct sb_hconn_pool *sb_hconn_pool_new(uv_loop_t *loop, const char *host,
                                        int port,
                                        const struct sb_hconn_opts *opts);

/* Send one request (borrowed, body until the callback). 0 accepted: cb
 * fires exactly once with arg; -1 refused (closed pool, queue full, bad
 * method, path or headers), no callback. */
int sb_hconn_request(struct sb_hconn_pool *pool, const struct sb_hconn_req *req,
                     sb_hconn_cb *cb, void *arg);

/* Requests accepted whose callback has not fired yet (0 for NULL). */
size_t sb_hconn_pending(const struct sb_hconn_pool *pool);

void sb_hconn_stats(const struct sb_hconn_pool *pool,
                    struct sb_hconn_stats *out);

/* Cancel every unfinished request (each callback fires with
 * SB_HCONN_ECANCELLED before this returns), close the connections; the
 * memory is freed once libuv has closed the handles. Accepts NULL. The
 * pool MAY NOT be used after this call. */
void sb_hconn_pool_close(struct sb_hconn_pool *pool);

#endif
