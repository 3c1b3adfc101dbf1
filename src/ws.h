/* ws.h - WebSocket endpoints on the HTTP server, with limits built in.
 *
 * A user of this module (the web chat driver, the agent console) registers
 * a struct sb_ws_proto before sb_http_start(): a subprotocol name, the path
 * it is served on, its limits and three callbacks. The layer does the rest:
 * it refuses the upgrade when the path, the Origin or the per-address
 * connection count is wrong; reassembles fragmented messages up to max_msg
 * (beyond it: close 1009 before buffering); rate-limits messages per
 * connection and per client address (close 1008); closes idle connections
 * (1001); queues outgoing text frames up to a byte cap (a consumer that does
 * not read is closed with 1008 rather than growing memory); and sends real
 * close frames with codes (lws needs the timer detour STACK-NOTES describes).
 * Invalid UTF-8 in a text message is closed with 1007 (RFC 6455 8.1).
 *
 * Connections are named by a 64-bit id, never by pointer, so a Redis reply
 * or a worker result that arrives after the socket went away finds nothing
 * and does no harm (sb_ws_send returns -1).
 *
 * All calls on the loop thread. Callbacks never run re-entrantly from
 * sb_ws_send or sb_ws_close.
 */
#ifndef SB_WS_H
#define SB_WS_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

/* RFC 6455 close codes we send. */
enum {
    SB_WS_NORMAL = 1000,
    SB_WS_GOING_AWAY = 1001,
    SB_WS_PROTOCOL_ERROR = 1002,
    SB_WS_INVALID_DATA = 1007,
    SB_WS_POLICY = 1008,
    SB_WS_TOO_BIG = 1009,
    SB_WS_SERVER_ERROR = 1011,
};

struct sb_ws_conn;

struct sb_ws_limits {
    size_t max_msg;          /* largest reassembled message, bytes */
    double msgs_per_sec;     /* per connection (burst = 2 s worth) */
    double ip_msgs_per_sec;  /* per client address, all its connections */
    size_t max_conns_per_ip;
    size_t max_queue_bytes;  /* unsent outgoing bytes per connection */
    uint64_t idle_ms;        /* no message from the client this long */
    char **origins;          /* allowed Origin values; NULL/empty: any */
};

struct sb_ws_proto {
    const char *name;        /* subprotocol, e.g. "switchboard.chat.v1" */
    const char *path;        /* "/chat/ws" */
    struct sb_ws_limits limits;
    /* A connection is open. Return 0 to keep it, or a close code. */
    int (*on_open)(struct sb_ws_conn *c);
    /* One complete text message, valid UTF-8, len <= max_msg. data is
     * borrowed for the call and NUL-terminated. */
    void (*on_message)(struct sb_ws_conn *c, const char *data, size_t len);
    /* The connection is gone (any reason). c is freed after this returns. */
    void (*on_close)(struct sb_ws_conn *c);
};

/* Register before sb_http_start (the table is built then). proto is
 * borrowed for the process' life; its limits may be changed in place on
 * reload. 0, or -1 when full. */
int sb_ws_register(struct sb_ws_proto *proto);

/* Queue a text message (copied). 0, or -1 when the connection is gone or
 * closing. A full queue closes the connection with 1008 and returns -1. */
int sb_ws_send(uint64_t id, const char *text, size_t len);

/* Close with a code and a short reason (<= 123 bytes), after the frames
 * already queued. Safe to call twice; unknown ids are ignored. */
void sb_ws_close(uint64_t id, int code, const char *reason);

/* Close every connection with 1001 (server going away). */
void sb_ws_close_all(void);

uint64_t sb_ws_id(const struct sb_ws_conn *c);
const char *sb_ws_peer(const struct sb_ws_conn *c);   /* client address */
const char *sb_ws_origin(const struct sb_ws_conn *c); /* "" when none */
void *sb_ws_user(const struct sb_ws_conn *c);
void sb_ws_set_user(struct sb_ws_conn *c, void *user);
/* A query parameter of the upgrade request (new string) or NULL. */
char *sb_ws_query(const struct sb_ws_conn *c, const char *name);
/* A connection by id (borrowed, valid until the next loop pass) or NULL. */
struct sb_ws_conn *sb_ws_find(uint64_t id);

size_t sb_ws_count(void);

/* Internal to http.c: the lws protocol rows of the registered endpoints
 * and the sweep timer for idle connections. */
struct lws_protocols;
size_t sb_ws_lws_protocols(struct lws_protocols *out, size_t max);
void sb_ws_start(void *loop);
void sb_ws_stop(void);

#endif
