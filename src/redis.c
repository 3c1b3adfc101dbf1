/* redis.c - hiredis async on the libuv loop, with timeouts and reconnection.
 *
 * hiredis 0.14 gives an async connection that pipelines commands and calls
 * every callback exactly once, but it has no connect or command timeouts and
 * never reconnects. This file wraps one redisAsyncContext at a time in a
 * struct sb_redis that keeps itself connected:
 *
 *   down --connect--> connecting --AUTH/SELECT/SCRIPT LOAD/PING--> up
 *     ^                   |  (connect_timer guards the whole handshake)
 *     +---retry_timer-----+<---- link lost, command timeout, error ----+
 *
 * Every command is a struct sb_redis_cmd handed to hiredis as privdata and
 * kept in our own FIFO (the order in which Redis answers), so one timer armed
 * for the head's deadline finds a command that waited too long. A timeout
 * drops the whole link: Redis answers in order, so nothing behind the stuck
 * command can complete either.
 *
 * Re-entrancy rules this file lives by (hiredis 0.14 behaviour):
 * - redisAsyncFree() called from a reply callback only marks the context;
 *   hiredis frees it (running every pending callback with a NULL reply) as
 *   soon as that callback returns. Called from anywhere else it frees at
 *   once, running those callbacks inside the call.
 * - The connect callback and the disconnect callback run without that
 *   protection: never free the context from them. So "up" is only ever
 *   declared from a reply callback (the handshake always ends with a PING).
 * - r->ac is cleared before any call that may run user code, and r->up /
 *   r->closing are re-checked after it: a user callback may issue commands
 *   (refused while not up) or call sb_redis_close (which only marks r and
 *   starts closing the timers; r itself is freed in the last close callback,
 *   on a later loop iteration, after hiredis is done with every record).
 * - hiredis' libuv adapter is used with our own poll hooks (see on_poll):
 *   its own ignores poll errors, which hangs the link when Redis dies.
 */
#include "redis.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "log.h"
#include "lua_scripts.h"
#include "metrics.h"
#include "util.h"

#define PLACE "core.redis"

/* Connect failures while down are logged once, then at most this often. */
#define FAIL_LOG_EVERY_MS 30000

/* Defaults applied by sb_redis_new to zero fields (a struct filled by hand
 * rather than by the config table). Keep in step with the table below. */
#define DEF_HOST "127.0.0.1"
#define DEF_PORT 6379
#define DEF_PREFIX "sb:"
#define DEF_CONNECT_TIMEOUT 2000
#define DEF_COMMAND_TIMEOUT 5000
#define DEF_BACKOFF_MIN 100
#define DEF_BACKOFF_MAX 5000
#define DEF_MAX_PENDING 100000

/* ---- configuration table ---------------------------------------------- */

#define RKEY(name, type, field, def, min, max, flags, doc)                     \
    {                                                                          \
        name, type, offsetof(struct sb_redis_conf, field), def, min, max,      \
            NULL, flags, doc                                                   \
    }

static const struct sb_conf_key redis_keys[] = {
    RKEY("host", SB_CONF_STR, host, DEF_HOST, 0, 253, 0,
         "Redis host name or IP address (ignored when socket is set)"),
    RKEY("port", SB_CONF_INT, port, "6379", 1, 65535, 0, "Redis TCP port"),
    RKEY("socket", SB_CONF_STR, socket, NULL, 0, 107, 0,
         "Unix socket path of Redis; overrides host and port"),
    RKEY("password", SB_CONF_STR, password, NULL, 0, 512, SB_CONF_SECRET,
         "AUTH password (\"@FILE\" reads it from a credential file)"),
    RKEY("db", SB_CONF_INT, db, "0", 0, 15, 0,
         "Database number selected after connecting"),
    RKEY("prefix", SB_CONF_STR, prefix, DEF_PREFIX, 0, 32, 0,
         "Prefix of every key switchboard writes"),
    RKEY("connect_timeout", SB_CONF_DURATION, connect_timeout, "2s", 50, 600000,
         0, "Limit for connecting, AUTH, SELECT and loading scripts"),
    RKEY("command_timeout", SB_CONF_DURATION, command_timeout, "5s", 10, 600000,
         SB_CONF_RELOAD,
         "A reply later than this fails the command and drops the link"),
    RKEY("backoff_min", SB_CONF_DURATION, backoff_min, "100ms", 10, 600000,
         SB_CONF_RELOAD, "First delay before reconnecting (doubles each try)"),
    RKEY("backoff_max", SB_CONF_DURATION, backoff_max, "5s", 10, 600000,
         SB_CONF_RELOAD, "Longest delay between reconnection attempts"),
    RKEY("max_pending", SB_CONF_INT, max_pending, "100000", 1, 100000000,
         SB_CONF_RELOAD, "Commands in flight before new ones are refused"),
    {NULL, 0, 0, NULL, 0, 0, NULL, 0, NULL},
};

static int redis_conf_check(void *conf, char *err, size_t errlen)
{
    const struct sb_redis_conf *c = conf;

    if (c->backoff_min > c->backoff_max) {
        snprintf(err, errlen, "backoff_min is larger than backoff_max");
        return -1;
    }
    if ((!c->socket || !*c->socket) && (!c->host || !*c->host)) {
        snprintf(err, errlen, "either host or socket must be set");
        return -1;
    }
    return 0;
}

const struct sb_conf_section sb_redis_conf_section = {
    "redis",
    0,
    sizeof(struct sb_redis_conf),
    redis_keys,
    "Redis: the only store and queue. One connection per role, kept up "
    "with\nexponential backoff; every command has a timeout.",
    redis_conf_check,
};

/* ---- types ------------------------------------------------------------- */

enum cmd_kind {
    CMD_USER,      /* sb_redis_cmdv / sb_redis_cmdf */
    CMD_SCRIPT,    /* sb_redis_script: EVALSHA, then EVAL on NOSCRIPT */
    CMD_HANDSHAKE, /* AUTH, SELECT, SCRIPT LOAD, PING: not in the FIFO */
};

/* Handshake steps; a step >= 0 is SCRIPT LOAD of that script. */
enum { HS_AUTH = -1, HS_SELECT = -2, HS_PING = -3 };

/* One command in flight: hiredis' privdata. Freed right after its callback
 * fired, which happens exactly once. */
struct sb_redis_cmd {
    struct sb_redis_cmd *prev, *next; /* FIFO links (user and script) */
    struct sb_redis *r;
    sb_redis_cb *cb;
    void *arg;
    uint64_t deadline;  /* loop time (ms) */
    uint64_t t0;        /* uv_hrtime() when sent, for the latency metric */
    const char *reason; /* why it failed without reply, when not generic */
    enum cmd_kind kind;
    int step;        /* HANDSHAKE: step; SCRIPT: script index */
    int retried;     /* SCRIPT: EVAL was sent */
    int nkeys, argc; /* SCRIPT: the saved arguments below */
    size_t *lens;
    char *data;
};

struct sb_redis {
    uv_loop_t *loop;
    struct sb_redis_conf conf; /* own copies of the strings */
    char *name;
    char addr[160]; /* for logs: "unix:PATH" or "HOST:PORT" */

    redisAsyncContext *ac; /* NULL while down */
    int up;
    int closing;
    const char *abort_reason; /* set with a 0 ms connect_timer */

    uv_timer_t connect_timer; /* guards connect + handshake */
    uv_timer_t retry_timer;   /* backoff before the next attempt */
    uv_timer_t cmd_timer;     /* armed for the FIFO head's deadline */
    uv_check_t flush;         /* writes queued commands once per pass */
    int flushing;
    int open_handles;

    struct sb_redis_cmd *head, *tail;
    size_t npending;

    sb_redis_state_cb *state_cb;
    void *state_arg;

    uint64_t backoff; /* current upper bound of the jitter */
    uint64_t rng;
    unsigned long fails; /* failed attempts since last up */
    uint64_t last_fail_log;

    size_t nscripts;
    char (*shas)[41];

    /* Subscriber connections only (sb_redis_subscriber). */
    char **sub_channels;
    sb_redis_msg_cb *sub_cb;
    void *sub_arg;
};

static void start_connect(struct sb_redis *r);

/* Shared by every connection; registered with the first one. */
static struct sb_metric *m_roundtrip, *m_errors;

static void metrics_register(void)
{
    static const double buckets[] = {0.0001, 0.00025, 0.0005, 0.001,
                                     0.0025, 0.005,   0.01,   0.025,
                                     0.05,   0.1,     0.25,   1};

    if (m_roundtrip)
        return;
    m_roundtrip = sb_metric_histogram(
        "sb_redis_roundtrip_seconds",
        "Time from sending a Redis command to its reply", "conn", buckets,
        sizeof(buckets) / sizeof(buckets[0]));
    m_errors = sb_metric_counter("sb_redis_errors_total",
                                 "Redis commands that failed, by cause",
                                 "conn,cause");
}
static void on_reply(redisAsyncContext *ac, void *reply, void *privdata);

/* ---- small helpers ----------------------------------------------------- */

static uint64_t next_rand(struct sb_redis *r)
{
    /* xorshift64*: jitter only, not security. */
    r->rng ^= r->rng >> 12;
    r->rng ^= r->rng << 25;
    r->rng ^= r->rng >> 27;
    return r->rng * 2685821657736338717ULL;
}

static const char *errstr_of(const redisAsyncContext *ac)
{
    if (ac->c.err && ac->c.errstr[0])
        return ac->c.errstr;
    return "connection closed";
}

/* An error text (hiredis' or Redis') fit for a quoted log field: spaces
 * stay readable, control characters and quotes cannot forge a line. */
static const char *log_text(const char *s, char *out, size_t outlen)
{
    size_t i = 0;

    for (; s && *s && i + 1 < outlen; s++) {
        unsigned char ch = (unsigned char)*s;
        out[i++] =
            ch < 0x20 || ch == 0x7f || ch == '"' || ch == '\\' ? '_' : (char)ch;
    }
    out[i] = '\0';
    return out;
}

static void notify(struct sb_redis *r, int up)
{
    if (r->state_cb)
        r->state_cb(r, up, r->state_arg);
}

/* Commands hiredis 0.14 would treat as pub/sub or monitor: their callback
 * fires many times, which this API cannot express. */
static int is_multi_reply(const char *cmd, size_t len)
{
    static const char *const names[] = {
        "subscribe",    "psubscribe",   "ssubscribe", "unsubscribe",
        "punsubscribe", "sunsubscribe", "monitor",
    };

    for (size_t i = 0; i < SB_ARRAY_LEN(names); i++)
        if (strlen(names[i]) == len && strncasecmp(cmd, names[i], len) == 0)
            return 1;
    return 0;
}

static int find_script(const char *name)
{
    for (int i = 0; sb_lua_scripts[i].name; i++)
        if (strcmp(sb_lua_scripts[i].name, name) == 0)
            return i;
    return -1;
}

/* ---- the FIFO of user commands ----------------------------------------- */

static void on_cmd_timer(uv_timer_t *t);

static void fifo_push(struct sb_redis *r, struct sb_redis_cmd *c)
{
    uint64_t now = uv_now(r->loop);

    c->deadline = now + (uint64_t)r->conf.command_timeout;
    c->t0 = uv_hrtime();
    c->next = NULL;
    c->prev = r->tail;
    if (r->tail)
        r->tail->next = c;
    else
        r->head = c;
    r->tail = c;
    r->npending++;
    if (!uv_is_active((uv_handle_t *)&r->cmd_timer))
        uv_timer_start(&r->cmd_timer, on_cmd_timer,
                       (uint64_t)r->conf.command_timeout, 0);
}

static void fifo_unlink(struct sb_redis *r, struct sb_redis_cmd *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        r->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        r->tail = c->prev;
    c->prev = c->next = NULL;
    r->npending--;
}

static struct sb_redis_cmd *cmd_new(struct sb_redis *r, enum cmd_kind kind,
                                    sb_redis_cb *cb, void *arg, size_t extra)
{
    struct sb_redis_cmd *c = sb_malloc(sizeof(*c) + extra);

    memset(c, 0, sizeof(*c));
    c->r = r;
    c->cb = cb;
    c->arg = arg;
    c->kind = kind;
    return c;
}

/* ---- connection life --------------------------------------------------- */

static void on_retry_timer(uv_timer_t *t)
{
    struct sb_redis *r = t->data;

    if (!r->closing && !r->ac)
        start_connect(r);
}

/* Full jitter: a random delay in [0, backoff], but never below half of
 * backoff_min, so a dead Redis is not hammered; the bound doubles up to
 * backoff_max and is reset once a connection is up. */
static void schedule_retry(struct sb_redis *r)
{
    uint64_t lo = (uint64_t)r->conf.backoff_min;
    uint64_t hi = (uint64_t)r->conf.backoff_max;
    uint64_t cur = r->backoff ? r->backoff : lo;
    uint64_t floor = lo / 2 ? lo / 2 : 1;
    uint64_t delay;

    if (cur > hi)
        cur = hi;
    delay = next_rand(r) % (cur + 1);
    if (delay < floor)
        delay = floor;
    r->backoff = cur * 2 > hi ? hi : cur * 2;
    uv_timer_start(&r->retry_timer, on_retry_timer, delay, 0);
}

/* An attempt failed before the link was up: log (rate-limited), retry. */
static void connect_failed(struct sb_redis *r, const char *why)
{
    uint64_t now = uv_now(r->loop);
    char safe[200];

    r->fails++;
    if (r->fails == 1 || now - r->last_fail_log >= FAIL_LOG_EVERY_MS) {
        SB_WARN(PLACE, "connect failed name=%s addr=%s attempts=%lu err=\"%s\"",
                r->name, r->addr, r->fails, log_text(why, safe, sizeof(safe)));
        r->last_fail_log = now;
    }
    schedule_retry(r);
}

/* Give up the current attempt from a reply callback (hiredis defers the
 * free until the callback returns). */
static void abort_attempt(struct sb_redis *r, const char *why)
{
    redisAsyncContext *ac = r->ac;

    r->ac = NULL;
    uv_timer_stop(&r->connect_timer);
    connect_failed(r, why);
    redisAsyncFree(ac);
}

/* hiredis itself dropped the link (server closed it, read or write error,
 * failed handshake): it frees ac; we only forget it. */
static void link_gone(struct sb_redis *r, const redisAsyncContext *ac)
{
    char safe[200];
    int was_up = r->up;

    r->ac = NULL;
    r->up = 0;
    uv_timer_stop(&r->connect_timer);
    if (r->closing)
        return;
    if (!was_up) {
        connect_failed(r, errstr_of(ac));
        return;
    }
    SB_WARN(PLACE, "connection lost name=%s addr=%s pending=%zu err=\"%s\"",
            r->name, r->addr, r->npending,
            log_text(errstr_of(ac), safe, sizeof(safe)));
    schedule_retry(r);
    notify(r, 0); /* last: the callback may close r */
}

/* Subscriber connections: every published message, once per message. A
 * NULL reply (the link is going) is ignored: on_disconnect handles it. */
static void on_sub_reply(redisAsyncContext *ac, void *reply_, void *privdata)
{
    struct sb_redis *r = privdata;
    redisReply *reply = reply_;

    if (!reply || r->ac != ac || reply->type != REDIS_REPLY_ARRAY ||
        reply->elements != 3 || reply->element[0]->type != REDIS_REPLY_STRING ||
        strcmp(reply->element[0]->str, "message") != 0 ||
        reply->element[2]->type != REDIS_REPLY_STRING)
        return;
    r->sub_cb(reply->element[1]->str, reply->element[2]->str,
              reply->element[2]->len, r->sub_arg);
}

static int subscribe(struct sb_redis *r)
{
    const char *argv[17];
    size_t n = 0;

    argv[n++] = "SUBSCRIBE";
    for (char **c = r->sub_channels; *c && n < SB_ARRAY_LEN(argv); c++)
        argv[n++] = *c;
    return redisAsyncCommandArgv(r->ac, on_sub_reply, r, (int)n, argv,
                                 NULL) == REDIS_OK
               ? 0
               : -1;
}

static void became_up(struct sb_redis *r)
{
    uv_timer_stop(&r->connect_timer);
    r->up = 1;
    r->backoff = 0;
    if (r->fails)
        SB_INFO(PLACE,
                "connected name=%s addr=%s db=%lld scripts=%zu "
                "failed_attempts=%lu",
                r->name, r->addr, r->conf.db, r->nscripts, r->fails);
    else
        SB_INFO(PLACE, "connected name=%s addr=%s db=%lld scripts=%zu", r->name,
                r->addr, r->conf.db, r->nscripts);
    r->fails = 0;
    if (r->sub_cb && subscribe(r) < 0) {
        abort_attempt(r, "SUBSCRIBE failed");
        return;
    }
    notify(r, 1);
}

static void handshake_reply(struct sb_redis *r, redisAsyncContext *ac,
                            struct sb_redis_cmd *c, redisReply *reply)
{
    char why[256];
    const char *what;

    /* A NULL reply: the attempt was abandoned (r->ac differs) or hiredis is
     * dropping the link, and on_disconnect will report it. */
    if (r->ac != ac || !reply || r->closing)
        return;
    what = c->step == HS_AUTH     ? "AUTH"
           : c->step == HS_SELECT ? "SELECT"
           : c->step == HS_PING   ? "PING"
                                  : sb_lua_scripts[c->step].name;
    if (reply->type == REDIS_REPLY_ERROR) {
        snprintf(why, sizeof(why), "%s: %s", what, reply->str);
        abort_attempt(r, why);
        return;
    }
    if (c->step >= 0) {
        if (reply->type != REDIS_REPLY_STRING || reply->len != 40) {
            snprintf(why, sizeof(why), "SCRIPT LOAD %s: unexpected reply",
                     what);
            abort_attempt(r, why);
            return;
        }
        memcpy(r->shas[c->step], reply->str, 40);
        r->shas[c->step][40] = '\0';
    } else if (c->step == HS_PING) {
        became_up(r); /* every earlier step succeeded: replies are ordered */
    }
}

static int send_handshake_step(struct sb_redis *r, int step, int argc,
                               const char **argv, const size_t *lens)
{
    struct sb_redis_cmd *c = cmd_new(r, CMD_HANDSHAKE, NULL, NULL, 0);

    c->step = step;
    if (redisAsyncCommandArgv(r->ac, on_reply, c, argc, argv, lens) !=
        REDIS_OK) {
        free(c);
        return -1;
    }
    return 0;
}

static int send_handshake(struct sb_redis *r)
{
    const char *argv[3];
    size_t lens[3];
    char db[24];

    if (r->conf.password && *r->conf.password) {
        argv[0] = "AUTH";
        argv[1] = r->conf.password;
        lens[0] = 4;
        lens[1] = strlen(r->conf.password);
        if (send_handshake_step(r, HS_AUTH, 2, argv, lens) < 0)
            return -1;
    }
    if (r->conf.db) {
        snprintf(db, sizeof(db), "%lld", r->conf.db);
        argv[0] = "SELECT";
        argv[1] = db;
        lens[0] = 6;
        lens[1] = strlen(db);
        if (send_handshake_step(r, HS_SELECT, 2, argv, lens) < 0)
            return -1;
    }
    for (size_t i = 0; i < r->nscripts; i++) {
        argv[0] = "SCRIPT";
        argv[1] = "LOAD";
        argv[2] = sb_lua_scripts[i].src;
        lens[0] = 6;
        lens[1] = 4;
        lens[2] = strlen(sb_lua_scripts[i].src);
        if (send_handshake_step(r, (int)i, 3, argv, lens) < 0)
            return -1;
    }
    argv[0] = "PING";
    lens[0] = 4;
    return send_handshake_step(r, HS_PING, 1, argv, lens);
}

static void on_connect_timer(uv_timer_t *t)
{
    struct sb_redis *r = t->data;
    redisAsyncContext *ac = r->ac;
    const char *why = r->abort_reason ? r->abort_reason : "connect timeout";

    r->abort_reason = NULL;
    if (!ac || r->up || r->closing)
        return;
    r->ac = NULL;
    /* Only handshake records can be pending: nothing of the user runs. */
    redisAsyncFree(ac);
    connect_failed(r, why);
}

/* hiredis: the socket connected (or failed to). Runs outside hiredis'
 * callback protection: must not free ac here. */
static void on_connect(const redisAsyncContext *cac, int status)
{
    struct sb_redis *r = cac->data;
    redisAsyncContext *ac = (redisAsyncContext *)cac;

    if (r->ac != ac)
        return;
    if (status != REDIS_OK) {
        /* hiredis frees ac after we return. */
        r->ac = NULL;
        uv_timer_stop(&r->connect_timer);
        connect_failed(r, errstr_of(ac));
        return;
    }
    if (send_handshake(r) < 0) {
        r->abort_reason = "cannot queue the handshake";
        uv_timer_start(&r->connect_timer, on_connect_timer, 0, 0);
    }
}

/* hiredis: the context is being freed after having been connected. */
static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct sb_redis *r = ac->data;

    SB_UNUSED(status);
    if (r->ac == ac) /* not one we let go of ourselves */
        link_gone(r, ac);
}

/* hiredis 0.14's libuv adapter drops a poll error (status < 0) on the
 * floor, and libuv has stopped the handle by then: a Redis that dies with
 * our commands still unread makes the kernel report ECONNRESET as POLLERR,
 * and the link would hang until the command timeout. We keep the adapter
 * (redisLibuvAttach: its allocation and uv_close cleanup) but install our
 * own read/write hooks and poll callback, which on an error let hiredis
 * read the error itself (hiredis 1.0's adapter does the same). The hooks
 * also skip uv_poll_start when the interest set did not change: hiredis
 * asks for write interest on every command. */
static void on_poll(uv_poll_t *h, int status, int events)
{
    redisLibuvEvents *p = h->data;
    int ev = status < 0 ? p->events : events;

    if (p->context && (ev & UV_READABLE))
        redisAsyncHandleRead(p->context);
    if (p->context && (ev & UV_WRITABLE))
        redisAsyncHandleWrite(p->context);
    /* Still alive after an error: poll again, the error comes back. */
    if (status < 0 && p->context && p->events &&
        !uv_is_active((uv_handle_t *)h))
        uv_poll_start(h, p->events, on_poll);
}

static void poll_set(void *privdata, int add, int what)
{
    redisLibuvEvents *p = privdata;
    int events = add ? p->events | what : p->events & ~what;

    if (events == p->events && uv_is_active((uv_handle_t *)&p->handle))
        return;
    p->events = events;
    if (events)
        uv_poll_start(&p->handle, events, on_poll);
    else
        uv_poll_stop(&p->handle);
}

static void ev_add_read(void *privdata)
{
    poll_set(privdata, 1, UV_READABLE);
}

static void ev_del_read(void *privdata)
{
    poll_set(privdata, 0, UV_READABLE);
}

/* Commands are written at the end of the loop pass that queued them (a
 * uv_check), not after a poll for writability: one write carries every
 * command of the pass, and the request saves a loop pass and the epoll_ctl
 * calls of turning UV_WRITABLE on and off. While connecting, and when the
 * socket was full, writability is polled as hiredis expects. */
static void on_flush(uv_check_t *h)
{
    struct sb_redis *r = h->data;

    uv_check_stop(h);
    if (!r->ac)
        return;
    r->flushing = 1;
    redisAsyncHandleWrite(r->ac);
    r->flushing = 0;
}

static void ev_add_write(void *privdata)
{
    redisLibuvEvents *p = privdata;
    redisAsyncContext *ac = p->context;
    struct sb_redis *r = ac ? ac->data : NULL;

    if (r && r->ac == ac && !r->flushing && (ac->c.flags & REDIS_CONNECTED)) {
        uv_check_start(&r->flush, on_flush);
        return;
    }
    poll_set(privdata, 1, UV_WRITABLE);
}

static void ev_del_write(void *privdata)
{
    poll_set(privdata, 0, UV_WRITABLE);
}

static void start_connect(struct sb_redis *r)
{
    redisAsyncContext *ac;

    if (r->conf.socket && *r->conf.socket)
        ac = redisAsyncConnectUnix(r->conf.socket);
    else
        ac = redisAsyncConnect(r->conf.host, (int)r->conf.port);
    if (!ac) {
        connect_failed(r, "out of memory");
        return;
    }
    if (ac->err) {
        connect_failed(r, errstr_of(ac));
        redisAsyncFree(ac);
        return;
    }
    ac->data = r;
    if (redisLibuvAttach(ac, r->loop) != REDIS_OK) {
        /* The adapter may have set hooks without its data: drop them. */
        memset(&ac->ev, 0, sizeof(ac->ev));
        redisAsyncFree(ac);
        connect_failed(r, "cannot attach to the loop");
        return;
    }
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    r->ac = ac;
    uv_timer_start(&r->connect_timer, on_connect_timer,
                   (uint64_t)r->conf.connect_timeout, 0);
}

/* ---- replies and timeouts ---------------------------------------------- */

/* On NOSCRIPT, send the same call as EVAL with the source; the record moves
 * to the tail of the FIFO with a fresh deadline. 0 when re-sent. Note that
 * commands pipelined after the script then run before it: this only happens
 * when the script cache was flushed under a live connection (every script
 * is loaded on connect), and EVAL caches the script again. */
static int script_fallback(struct sb_redis *r, redisAsyncContext *ac,
                           struct sb_redis_cmd *c)
{
    const char *small[32];
    size_t small_lens[32];
    const char **argv = small;
    size_t *lens = small_lens;
    int n = c->argc + 3, rc;
    char nkeys[24];
    const char *p = c->data;

    if (r->ac != ac || !r->up || r->closing)
        return -1;
    if ((size_t)n > SB_ARRAY_LEN(small)) {
        argv = sb_malloc((size_t)n * sizeof(*argv));
        lens = sb_malloc((size_t)n * sizeof(*lens));
    }
    snprintf(nkeys, sizeof(nkeys), "%d", c->nkeys);
    argv[0] = "EVAL";
    lens[0] = 4;
    argv[1] = sb_lua_scripts[c->step].src;
    lens[1] = strlen(argv[1]);
    argv[2] = nkeys;
    lens[2] = strlen(nkeys);
    for (int i = 0; i < c->argc; i++) {
        argv[3 + i] = p;
        lens[3 + i] = c->lens[i];
        p += c->lens[i];
    }
    rc = redisAsyncCommandArgv(ac, on_reply, c, n, argv, lens);
    if (argv != small) {
        free(argv);
        free(lens);
    }
    if (rc != REDIS_OK)
        return -1;
    c->retried = 1;
    fifo_push(r, c);
    return 0;
}

/* hiredis' callback for every command, exactly once per record. */
static void on_reply(redisAsyncContext *ac, void *reply_, void *privdata)
{
    struct sb_redis_cmd *c = privdata;
    struct sb_redis *r = c->r;
    redisReply *reply = reply_;
    const char *err = NULL;

    if (c->kind == CMD_HANDSHAKE) {
        handshake_reply(r, ac, c, reply);
        free(c);
        return;
    }
    /* A NULL reply on the current link: hiredis is failing everything on
     * a link it dropped itself. */
    if (!reply && r->ac == ac)
        link_gone(r, ac);
    fifo_unlink(r, c);
    if (!reply) {
        err = c->reason ? c->reason : r->closing ? "closing" : "disconnected";
    } else if (reply->type == REDIS_REPLY_ERROR) {
        if (c->kind == CMD_SCRIPT && !c->retried &&
            strncmp(reply->str, "NOSCRIPT", 8) == 0 &&
            script_fallback(r, ac, c) == 0)
            return;
        err = reply->str;
    }
    if (!reply)
        sb_metric_add(m_errors, 1, r->name,
                      c->reason ? c->reason : "disconnected");
    else if (reply->type == REDIS_REPLY_ERROR)
        sb_metric_add(m_errors, 1, r->name, "reply");
    else
        sb_metric_observe(m_roundtrip, (double)(uv_hrtime() - c->t0) / 1e9,
                          r->name);
    c->cb(reply, err, c->arg);
    free(c);
}

static void on_cmd_timer(uv_timer_t *t)
{
    struct sb_redis *r = t->data;
    struct sb_redis_cmd *head = r->head;
    uint64_t now = uv_now(r->loop);
    redisAsyncContext *ac = r->ac;
    int was_up = r->up;

    if (!head || !ac)
        return;
    if (head->deadline > now) {
        uv_timer_start(&r->cmd_timer, on_cmd_timer, head->deadline - now, 0);
        return;
    }
    SB_WARN(PLACE,
            "command timeout, dropping the connection name=%s addr=%s "
            "timeout_ms=%lld pending=%zu",
            r->name, r->addr, r->conf.command_timeout, r->npending);
    head->reason = "timeout";
    r->ac = NULL;
    r->up = 0;
    redisAsyncFree(ac); /* every record fails now; user code runs */
    if (r->closing)
        return;
    schedule_retry(r);
    if (was_up)
        notify(r, 0);
}

/* ---- public API -------------------------------------------------------- */

static char *dup_or(const char *s, const char *def)
{
    if (s)
        return sb_strdup(s);
    return def ? sb_strdup(def) : NULL;
}

static void apply_timing(struct sb_redis *r, const struct sb_redis_conf *c)
{
    r->conf.connect_timeout =
        c->connect_timeout > 0 ? c->connect_timeout : DEF_CONNECT_TIMEOUT;
    r->conf.command_timeout =
        c->command_timeout > 0 ? c->command_timeout : DEF_COMMAND_TIMEOUT;
    r->conf.backoff_min = c->backoff_min > 0 ? c->backoff_min : DEF_BACKOFF_MIN;
    r->conf.backoff_max = c->backoff_max > 0 ? c->backoff_max : DEF_BACKOFF_MAX;
    if (r->conf.backoff_max < r->conf.backoff_min)
        r->conf.backoff_max = r->conf.backoff_min;
    r->conf.max_pending = c->max_pending > 0 ? c->max_pending : DEF_MAX_PENDING;
}

struct sb_redis *sb_redis_new(uv_loop_t *loop, const struct sb_redis_conf *conf,
                              const char *name)
{
    struct sb_redis *r = sb_calloc(1, sizeof(*r));
    size_t n = 0;

    metrics_register();
    /* Every cause shows from the start, at 0, so alerts can rate() it. */
    sb_metric_add(m_errors, 0, name ? name : "redis", "timeout");
    sb_metric_add(m_errors, 0, name ? name : "redis", "disconnected");
    sb_metric_add(m_errors, 0, name ? name : "redis", "reply");
    sb_metric_add(m_errors, 0, name ? name : "redis", "overload");
    r->loop = loop;
    r->name = sb_strdup(name ? name : "redis");
    r->conf.host = dup_or(conf->host, DEF_HOST);
    r->conf.port = conf->port > 0 ? conf->port : DEF_PORT;
    r->conf.socket = dup_or(conf->socket, NULL);
    r->conf.password = dup_or(conf->password, NULL);
    r->conf.db = conf->db;
    r->conf.prefix = dup_or(conf->prefix, DEF_PREFIX);
    apply_timing(r, conf);
    if (r->conf.socket && *r->conf.socket)
        snprintf(r->addr, sizeof(r->addr), "unix:%s", r->conf.socket);
    else
        snprintf(r->addr, sizeof(r->addr), "%s:%lld", r->conf.host,
                 r->conf.port);

    while (sb_lua_scripts[n].name)
        n++;
    r->nscripts = n;
    r->shas = sb_calloc(n ? n : 1, sizeof(*r->shas));
    r->rng = uv_hrtime() ^ ((uint64_t)(uintptr_t)r << 16) ^ (uint64_t)getpid();
    if (!r->rng)
        r->rng = 0x9e3779b97f4a7c15ULL;

    uv_timer_init(loop, &r->connect_timer);
    uv_timer_init(loop, &r->retry_timer);
    uv_timer_init(loop, &r->cmd_timer);
    uv_check_init(loop, &r->flush);
    r->connect_timer.data = r->retry_timer.data = r->cmd_timer.data = r;
    r->flush.data = r;
    r->open_handles = 4;

    start_connect(r);
    return r;
}

void sb_redis_on_state(struct sb_redis *r, sb_redis_state_cb *cb, void *arg)
{
    r->state_cb = cb;
    r->state_arg = arg;
}

int sb_redis_is_up(const struct sb_redis *r)
{
    return r->up && r->ac && !r->closing;
}

size_t sb_redis_pending(const struct sb_redis *r)
{
    return r->npending;
}

/* Shed load before a timeout does it for us: when the oldest command in
 * flight has waited half the command timeout, Redis is not keeping up, and
 * more commands would only make every one of them time out (and the
 * timeout drops the connection with all of them). Refuse new ones; the
 * callers answer 503 / "unavailable" and clients retry. */
static int overloaded(const struct sb_redis *r)
{
    uint64_t now, waited;

    if (!r->head)
        return 0;
    now = uv_now(r->loop);
    waited = now + (uint64_t)r->conf.command_timeout > r->head->deadline
                 ? now + (uint64_t)r->conf.command_timeout - r->head->deadline
                 : 0;
    if (waited * 2 < (uint64_t)r->conf.command_timeout)
        return 0;
    sb_metric_add(m_errors, 1, r->name, "overload");
    return 1;
}

static int can_send(const struct sb_redis *r)
{
    if (r->sub_cb)
        return 0; /* a subscribed connection takes no commands */
    return r->up && r->ac && !r->closing &&
           r->npending < (size_t)r->conf.max_pending && !overloaded(r);
}

int sb_redis_cmdv(struct sb_redis *r, sb_redis_cb *cb, void *arg, int argc,
                  const char **argv, const size_t *lens)
{
    struct sb_redis_cmd *c;

    if (!can_send(r) || argc < 1 || !cb)
        return -1;
    if (is_multi_reply(argv[0], lens ? lens[0] : strlen(argv[0])))
        return -1;
    c = cmd_new(r, CMD_USER, cb, arg, 0);
    if (redisAsyncCommandArgv(r->ac, on_reply, c, argc, argv, lens) !=
        REDIS_OK) {
        free(c);
        return -1;
    }
    fifo_push(r, c);
    return 0;
}

int sb_redis_cmdf(struct sb_redis *r, sb_redis_cb *cb, void *arg,
                  const char *fmt, ...)
{
    struct sb_redis_cmd *c;
    va_list ap;
    int rc;

    if (!can_send(r) || !cb || !fmt)
        return -1;
    if (is_multi_reply(fmt, strcspn(fmt, " ")))
        return -1;
    c = cmd_new(r, CMD_USER, cb, arg, 0);
    va_start(ap, fmt);
    rc = redisvAsyncCommand(r->ac, on_reply, c, fmt, ap);
    va_end(ap);
    if (rc != REDIS_OK) {
        free(c);
        return -1;
    }
    fifo_push(r, c);
    return 0;
}

int sb_redis_script(struct sb_redis *r, const char *name, sb_redis_cb *cb,
                    void *arg, int nkeys, int argc, const char **argv,
                    const size_t *lens)
{
    const char *small[32];
    size_t small_lens[32];
    const char **av = small;
    size_t *al = small_lens;
    struct sb_redis_cmd *c;
    size_t total = 0;
    char nk[24];
    char *p;
    int idx, n, rc;

    if (!can_send(r) || !cb || !name || argc < 0 || nkeys < 0 || nkeys > argc ||
        (argc > 0 && !argv))
        return -1;
    idx = find_script(name);
    if (idx < 0) {
        SB_ERR(PLACE, "unknown script name=%s", name);
        return -1;
    }
    for (int i = 0; i < argc; i++)
        total += lens ? lens[i] : strlen(argv[i]);

    /* Keep a copy of the arguments for the EVAL fallback, in the same
     * allocation as the record. */
    c = cmd_new(r, CMD_SCRIPT, cb, arg, (size_t)argc * sizeof(size_t) + total);
    c->step = idx;
    c->nkeys = nkeys;
    c->argc = argc;
    c->lens = (size_t *)(c + 1);
    c->data = (char *)(c->lens + argc);
    p = c->data;
    for (int i = 0; i < argc; i++) {
        c->lens[i] = lens ? lens[i] : strlen(argv[i]);
        memcpy(p, argv[i], c->lens[i]);
        p += c->lens[i];
    }

    n = argc + 3;
    if ((size_t)n > SB_ARRAY_LEN(small)) {
        av = sb_malloc((size_t)n * sizeof(*av));
        al = sb_malloc((size_t)n * sizeof(*al));
    }
    snprintf(nk, sizeof(nk), "%d", nkeys);
    av[0] = "EVALSHA";
    al[0] = 7;
    av[1] = r->shas[idx];
    al[1] = 40;
    av[2] = nk;
    al[2] = strlen(nk);
    for (int i = 0; i < argc; i++) {
        av[3 + i] = argv[i];
        al[3 + i] = c->lens[i];
    }
    rc = redisAsyncCommandArgv(r->ac, on_reply, c, n, av, al);
    if (av != small) {
        free(av);
        free(al);
    }
    if (rc != REDIS_OK) {
        free(c);
        return -1;
    }
    fifo_push(r, c);
    return 0;
}

void sb_redis_reconfigure(struct sb_redis *r, const struct sb_redis_conf *conf)
{
    long long connect_timeout = r->conf.connect_timeout;

    /* Only the RELOAD keys change: the target, AUTH, SELECT and
     * connect_timeout need a restart. Deadlines already given stay. */
    apply_timing(r, conf);
    r->conf.connect_timeout = connect_timeout;
    if (r->head && !r->closing) /* re-arm for the head's deadline */
        uv_timer_start(&r->cmd_timer, on_cmd_timer, 0, 0);
}

static void free_conf(struct sb_redis_conf *c)
{
    free(c->host);
    free(c->socket);
    if (c->password) {
        explicit_bzero(c->password, strlen(c->password));
        free(c->password);
    }
    free(c->prefix);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct sb_redis *r = h->data;

    if (--r->open_handles > 0)
        return;
    for (char **c = r->sub_channels; c && *c; c++)
        free(*c);
    free(r->sub_channels);
    free_conf(&r->conf);
    free(r->shas);
    free(r->name);
    free(r);
}

void sb_redis_close(struct sb_redis *r)
{
    redisAsyncContext *ac;

    if (!r || r->closing)
        return;
    r->closing = 1;
    r->up = 0;
    uv_timer_stop(&r->connect_timer);
    uv_timer_stop(&r->retry_timer);
    uv_timer_stop(&r->cmd_timer);
    ac = r->ac;
    r->ac = NULL;
    /* Pending commands fail with "closing": now, or, when called from a
     * reply callback, as soon as that callback returns. Either way before
     * the close callbacks below can free r. */
    if (ac)
        redisAsyncFree(ac);
    uv_close((uv_handle_t *)&r->connect_timer, on_handle_closed);
    uv_close((uv_handle_t *)&r->flush, on_handle_closed);
    uv_close((uv_handle_t *)&r->retry_timer, on_handle_closed);
    uv_close((uv_handle_t *)&r->cmd_timer, on_handle_closed);
}

struct sb_redis *sb_redis_subscriber(uv_loop_t *loop,
                                     const struct sb_redis_conf *conf,
                                     const char *name,
                                     const char *const *channels,
                                     sb_redis_msg_cb *cb, void *arg)
{
    struct sb_redis *r;
    size_t n = 0;

    while (channels[n] && n < 16)
        n++;
    r = sb_redis_new(loop, conf, name);
    /* Not connected yet: sb_redis_new only scheduled the attempt, so the
     * subscription is in place before the first became_up(). */
    r->sub_channels = sb_calloc(n + 1, sizeof(char *));
    for (size_t i = 0; i < n; i++)
        r->sub_channels[i] = sb_strdup(channels[i]);
    r->sub_cb = cb;
    r->sub_arg = arg;
    return r;
}
