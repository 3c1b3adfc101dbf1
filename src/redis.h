/* redis.h - hiredis async on the libuv loop, with the timeouts and
 * reconnection hiredis 0.14 lacks.
 *
 * One struct sb_redis is one logical connection that keeps itself connected:
 * connect with a timeout, AUTH and SELECT when configured, then "up"; on any
 * failure it is "down" and reconnects from a timer with exponential backoff
 * and full jitter. Commands are pipelined (many in flight).
 *
 * Contract (hiredis' own, kept): every accepted command's callback fires
 * EXACTLY ONCE, on the loop thread: with the reply on success (which may be a
 * REDIS_REPLY_ERROR reply: err then points at its text), or with reply NULL
 * and err set ("timeout", "disconnected", "closing") when no reply will come.
 * The reply is valid only inside the callback.
 *
 * A command whose reply does not arrive within command_timeout fails with
 * "timeout"; since a Redis connection answers in order, the connection is then
 * dropped (every other pending command fails with "disconnected") and
 * re-established. Nothing is retried here: the caller decides.
 *
 * Never put outside data in a format string: use sb_redis_cmdv (argv/lens).
 */
#ifndef SB_REDIS_H
#define SB_REDIS_H

#include <stddef.h>
#include <uv.h>
#include <hiredis/hiredis.h>

#include "config.h"

struct sb_redis_conf {
    char *host;                  /* default 127.0.0.1 */
    long long port;              /* default 6379 */
    char *socket;                /* unix socket path; overrides host/port */
    char *password;              /* SECRET; AUTH when set */
    long long db;                /* SELECT when non-zero */
    char *prefix;                /* key prefix, default "sb:" */
    long long connect_timeout;   /* ms */
    long long command_timeout;   /* ms */
    long long backoff_min;       /* ms */
    long long backoff_max;       /* ms */
    long long max_pending;       /* commands in flight before refusing */
};

extern const struct sb_conf_section sb_redis_conf_section; /* [redis] */

struct sb_redis;

typedef void sb_redis_cb(redisReply *reply, const char *err, void *arg);
/* Called on every transition: up = 1 after connect (+AUTH/SELECT/script
 * load) succeeded, up = 0 when the link is lost. */
typedef void sb_redis_state_cb(struct sb_redis *r, int up, void *arg);

/* Returns a new connection object and starts connecting. conf is copied.
 * name appears in logs and metrics ("main", "pubsub"). */
struct sb_redis *sb_redis_new(uv_loop_t *loop, const struct sb_redis_conf *conf,
                              const char *name);

void sb_redis_on_state(struct sb_redis *r, sb_redis_state_cb *cb, void *arg);

/* 1 when connected and ready for commands. */
int sb_redis_is_up(const struct sb_redis *r);

/* Send a command. argv/lens are borrowed only for the call (hiredis copies
 * them into its output buffer). Returns 0 when accepted: the callback will
 * fire exactly once. Returns -1 when refused (down, closing, or max_pending
 * reached): the callback will NOT fire. */
int sb_redis_cmdv(struct sb_redis *r, sb_redis_cb *cb, void *arg, int argc,
                  const char **argv, const size_t *lens);

/* Same with a printf-like hiredis format; only for constant formats with
 * %s/%b/%d arguments of our own making. */
int sb_redis_cmdf(struct sb_redis *r, sb_redis_cb *cb, void *arg,
                  const char *fmt, ...);

/* Run an embedded Lua script (src/lua/NAME.lua, see lua_scripts.h) with
 * EVALSHA, falling back to EVAL on NOSCRIPT. argv holds nkeys keys then the
 * arguments. Same acceptance and callback rules as sb_redis_cmdv. */
int sb_redis_script(struct sb_redis *r, const char *name, sb_redis_cb *cb,
                    void *arg, int nkeys, int argc, const char **argv,
                    const size_t *lens);

/* Pending (in-flight) command count. */
size_t sb_redis_pending(const struct sb_redis *r);

/* Update timeouts/backoff from a reloaded config (connection target changes
 * need a restart). */
void sb_redis_reconfigure(struct sb_redis *r, const struct sb_redis_conf *conf);

/* A connection that only listens: SUBSCRIBE to channels (at most 16,
 * copied) after every (re)connect, and cb for each message published on
 * them (channel and payload borrowed for the call; the payload may hold any
 * bytes). It refuses commands; publish through a normal connection. Pub/sub
 * is fire-and-forget: messages published while it is reconnecting are lost,
 * so use it for live screens, never for work that must not be lost. */
typedef void sb_redis_msg_cb(const char *channel, const char *payload,
                             size_t len, void *arg);
struct sb_redis *sb_redis_subscriber(uv_loop_t *loop,
                                     const struct sb_redis_conf *conf,
                                     const char *name,
                                     const char *const *channels,
                                     sb_redis_msg_cb *cb, void *arg);

/* Stop: fail pending commands with "closing", close handles, free the object
 * once every handle is closed. r may not be used after this call. */
void sb_redis_close(struct sb_redis *r);

#endif
