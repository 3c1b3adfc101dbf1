/* httpc.h - outbound HTTP with libcurl's multi_socket API on the libuv loop.
 *
 * One multi handle for the process; connections are kept alive and reused.
 * A request is described by struct sb_httpc_req (borrowed for the call: every
 * string and the body are copied). The completion fires exactly once on the
 * loop thread, with the status, the response body (capped at max_body) and
 * the Retry-After value when present; curl errors (connect, timeout) give
 * status 0 and a reason. sb_httpc_shutdown() completes the in-flight
 * requests with status 0 / "cancelled".
 */
#ifndef SB_HTTPC_H
#define SB_HTTPC_H

#include <stddef.h>
#include <uv.h>

struct sb_httpc_resp {
    long status;          /* HTTP status, 0 when no response */
    const char *body;     /* NUL-terminated, borrowed for the callback */
    size_t body_len;
    long long retry_after; /* seconds from Retry-After, -1 when absent */
    const char *error;    /* NULL on a response, else curl's reason */
    double total_s;       /* elapsed time */
};

typedef void sb_httpc_cb(const struct sb_httpc_resp *resp, void *arg);

struct sb_httpc_req {
    const char *method;      /* "GET", "POST", ... */
    const char *url;
    const char *const *headers; /* "Name: value", NULL-terminated, or NULL */
    const char *body;
    size_t body_len;
    const char *userpwd;     /* "user:password" for basic auth, or NULL */
    long timeout_ms;         /* whole request; 0 = 30000 */
    long connect_timeout_ms; /* 0 = 5000 */
    size_t max_body;         /* response cap; 0 = 1 MiB */
};

int sb_httpc_init(uv_loop_t *loop);

/* 0 accepted (cb fires exactly once), -1 refused (no callback). */
int sb_httpc_request(const struct sb_httpc_req *req, sb_httpc_cb *cb,
                     void *arg);

/* A transfer the caller set up itself on a curl easy handle (passed as
 * void * so callers need not include curl): any protocol this libcurl
 * has, e.g. the IMAP poller's commands. httpc adds NOSIGNAL, PRIVATE, its
 * error buffer, and the response capture: with capture_headers 0 the
 * write callback fills resp->body (an HTTP body; an IMAP custom command's
 * untagged lines); with 1 everything the server sent on the control
 * connection does (for IMAP: every response line and every literal byte,
 * in order - what a FETCH of a message body needs), capped at max_body
 * (0 = 1 MiB; over it the transfer fails "response body exceeds
 * max_body"). resp->status is CURLINFO_RESPONSE_CODE. The handle belongs
 * to httpc from this call on, accepted or not. 0 accepted (cb exactly
 * once, never inside this call), -1 refused (no callback). */
int sb_httpc_easy(void *easy, int capture_headers, size_t max_body,
                  sb_httpc_cb *cb, void *arg);

size_t sb_httpc_inflight(void);

/* Cancel everything in flight (each gets its completion with error
 * "cancelled"), close the loop handles. */
void sb_httpc_shutdown(void);

#endif
