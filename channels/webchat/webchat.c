/* webchat.c - the customer web chat: WebSocket /chat/ws and its widget.
 *
 * Customers write from a shop's pages through channels/webchat/www/widget.js,
 * which speaks the JSON protocol of channels/webchat/PROTOCOL.md over the
 * WebSocket endpoint /chat/ws (subprotocol switchboard.chat.v1). This driver
 * registers that endpoint with ws.c, which enforces the transport limits
 * (message size, rates, connections per address, Origin, idle time, send
 * queue) from the [chat] section, and mounts the widget's directory under
 * the "chat" static route (/chat/ and /chat/NAME).
 *
 * Visitors. A hello without a known token gets a new random token
 * (crypto.h); the token is the visitor's bearer secret and never leaves
 * memory: neither logs nor Redis see it. What is stored is the visitor id,
 * the first 32 hex digits of SHA-256("switchboard.chat:" token), as the
 * customer identity "chat:<visitor id>", so a reader of Redis or of the
 * customer API cannot take over a visitor's chat. A hello with a token whose
 * identity is known resumes that customer and, when the newest chat
 * conversation of the customer is not resolved, that conversation with its
 * history.
 *
 * Inbound. Every customer message is one sb_contact_ingest() (channel
 * "chat", direction "in", type "message") with source_id "<visitor
 * id>:<client message id>", so a message resent after a reconnect is
 * stored once and two visitors' ids never collide; the e-mail and phone
 * given in hello ride along until one message has been stored. The ack
 * goes out only from the store's OK completion; a refusal or an
 * UNAVAILABLE completion gives an "unavailable" error frame and the widget
 * sends the same message again later. After a stored, non-duplicate
 * message the conversation goes to the router (sb_router_route; a
 * conversation already queued or assigned is left alone); a routing
 * failure is logged and never touches the ack.
 *
 * Live status. The driver listens to the live events of every instance
 * (events.h): queued, positions, assigned, resolved and reopened about a
 * conversation a visitor here has open become "status" frames (queued with
 * the position, assigned with the agent's display name, resolved), sent
 * only when what the visitor was told changes; an agent's typing becomes a
 * "typing" frame. A customer's typing is published (at most once per 2 s
 * per socket) with the conversation's agent, for the agent console.
 *
 * Outbound (channel.h). send() delivers a "message" frame to every open
 * socket of the visitor named by msg->to (the visitor id, "chat:<visitor
 * id>" or the token itself) or, without a recipient, of the visitor whose
 * open conversation is msg->conversation: OK when at least one socket took
 * it, PERMFAIL "no recipient" when neither is given. A visitor with no
 * socket here may be connected to another instance: the reply is relayed
 * as a chat_deliver event and completes OK only when an instance confirms
 * with chat_delivered that a socket took it, TEMPFAIL "not connected" when
 * nobody did within [chat] remote_wait (or at once when relaying is off or
 * refused), so the caller falls back to the customer's next channel. A
 * confirmation lost or later than remote_wait means the customer may get
 * the reply twice (chat and the fallback): at least once, never claimed
 * delivered without a socket. Completions always come from a zero-delay
 * timer or later (rule 1), and stop() completes the pending ones with
 * CANCELLED.
 *
 * Abuse. Transport violations are ws.c's (close codes 1003, 1007, 1008,
 * 1009, 1001); protocol mistakes (bad JSON, unknown type, message before
 * welcome, bad fields) get an error frame, and max_errors of them within a
 * minute close the socket with 1008.
 *
 * Connections are known to ws.c by id; every asynchronous step (Redis
 * replies) carries the id and looks the socket up again when it returns, so
 * a socket that went away meanwhile is simply skipped. After stop() the
 * registered endpoint stays (ws.c keeps it for the process' life) and
 * answers every socket with 1001.
 */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "auth.h"
#include "channel.h"
#include "config.h"
#include "crypto.h"
#include "events.h"
#include "json.h"
#include "list.h"
#include "log.h"
#include "metrics.h"
#include "normalize.h"
#include "router.h"
#include "static.h"
#include "store.h"
#include "util.h"
#include "ws.h"

#define CHAT_PLACE "chan.chat"
#define CHAT_PROTO "switchboard.chat.v1"
#define CHAT_PATH "/chat/ws"
#define CHAT_CHANNEL "chat"
#define CHAT_MOUNT "chat"
#define CHAT_VID_LEN 32          /* hex digits of the visitor id */
#define CHAT_BUCKETS 4096
#define CHAT_MAX_PENDING 100000  /* sends awaiting their completion */
#define CHAT_ID_MAX 64           /* client message id */
#define CHAT_NAME_MAX 128
#define CHAT_PHONE_IN_MAX 32
#define CHAT_PAGE_MAX 2048
#define CHAT_ERR_WINDOW_MS 60000
#define CHAT_CUST_SCAN 200       /* customer timeline entries searched */
#define CHAT_TYPING_MS 2000      /* customer typing passed on per socket */
#define CHAT_AGENT_MAX 64        /* an agent's user name */

#ifndef SB_CHAT_DIR
#define SB_CHAT_DIR "/usr/local/share/switchboard/chat"
#endif

/* ---- configuration ------------------------------------------------------- */

struct chat_conf {
    long long max_message;
    long long max_text;
    long long msgs_per_sec;
    long long ip_msgs_per_sec;
    long long conns_per_ip;
    char **origins;
    long long idle_timeout;
    long long send_queue;
    long long max_errors;
    long long history;
    char *default_country;
    char *www_dir;
    long long remote_wait;
};

static int chat_conf_check(void *conf, char *err, size_t errlen)
{
    const struct chat_conf *c = conf;

    if (c->max_text >= c->max_message) {
        snprintf(err, errlen, "max_text (%lld) must be below max_message "
                              "(%lld): the JSON around the text needs room",
                 c->max_text, c->max_message);
        return -1;
    }
    if (c->send_queue < c->max_message) {
        snprintf(err, errlen, "send_queue must hold at least one "
                              "max_message");
        return -1;
    }
    if (c->default_country && c->default_country[0] &&
        !sb_phone_country_known(c->default_country)) {
        snprintf(err, errlen, "default_country \"%s\" is not a known ISO "
                              "3166 code", c->default_country);
        return -1;
    }
    if (!c->www_dir || !c->www_dir[0]) {
        snprintf(err, errlen, "www_dir must not be empty");
        return -1;
    }
    for (char **o = c->origins; o && *o; o++) {
        if (strncmp(*o, "http://", 7) != 0 && strncmp(*o, "https://", 8)) {
            snprintf(err, errlen, "origins: \"%s\" is not an origin like "
                                  "https://shop.example.com", *o);
            return -1;
        }
    }
    return 0;
}

static const struct sb_conf_key chat_keys[] = {
    {"max_message", SB_CONF_SIZE, offsetof(struct chat_conf, max_message),
     "4k", 512, 1LL << 20, NULL, SB_CONF_RELOAD,
     "largest WebSocket message from a visitor; larger closes with 1009"},
    {"max_text", SB_CONF_SIZE, offsetof(struct chat_conf, max_text), "3000",
     1, 1LL << 20, NULL, SB_CONF_RELOAD,
     "longest message text in bytes of UTF-8 (an error frame above it); "
     "below max_message"},
    {"msgs_per_sec", SB_CONF_INT, offsetof(struct chat_conf, msgs_per_sec),
     "5", 1, 10000, NULL, SB_CONF_RELOAD,
     "messages per second per socket (bursts of 2 s); more closes with 1008"},
    {"ip_msgs_per_sec", SB_CONF_INT,
     offsetof(struct chat_conf, ip_msgs_per_sec), "20", 1, 1000000, NULL, SB_CONF_RELOAD,
     "messages per second from one client address over all its sockets"},
    {"conns_per_ip", SB_CONF_INT, offsetof(struct chat_conf, conns_per_ip),
     "20", 1, 1000000, NULL, SB_CONF_RELOAD,
     "open sockets per client address; more are refused at the upgrade "
     "(behind a proxy every visitor shares its address)"},
    {"origins", SB_CONF_LIST, offsetof(struct chat_conf, origins), "", 0, 256,
     NULL, SB_CONF_RELOAD,
     "pages allowed to open the chat, e.g. https://shop.example.com; empty "
     "allows any site (set it in production)"},
    {"idle_timeout", SB_CONF_DURATION,
     offsetof(struct chat_conf, idle_timeout), "10m", 1000, 86400000LL, NULL,
     0, "a socket silent this long is closed with 1001 (the widget pings)"},
    {"send_queue", SB_CONF_SIZE, offsetof(struct chat_conf, send_queue),
     "256k", 4096, 64LL << 20, NULL, SB_CONF_RELOAD,
     "unsent bytes per socket; a visitor that does not read is closed "
     "with 1008"},
    {"max_errors", SB_CONF_INT, offsetof(struct chat_conf, max_errors), "5",
     1, 1000, NULL, SB_CONF_RELOAD,
     "error frames (bad JSON, unknown type ...) within a minute before the "
     "socket is closed with 1008"},
    {"history", SB_CONF_INT, offsetof(struct chat_conf, history), "50", 0,
     200, NULL, SB_CONF_RELOAD,
     "messages of the open conversation sent in welcome"},
    {"default_country", SB_CONF_STR,
     offsetof(struct chat_conf, default_country), "RU", 0, 2, NULL, SB_CONF_RELOAD,
     "country of phone numbers given without + in hello; empty: only "
     "international numbers"},
    {"www_dir", SB_CONF_STR, offsetof(struct chat_conf, www_dir), SB_CHAT_DIR,
     0, 4096, NULL, SB_CONF_RELOAD,
     "directory of widget.js and the /chat/ demo page (read at start)"},
    {"remote_wait", SB_CONF_DURATION, offsetof(struct chat_conf, remote_wait),
     "2s", 0, 30000, NULL, SB_CONF_RELOAD,
     "how long a reply for a visitor not connected here waits for another "
     "instance to confirm delivery before it fails over (0: no relay)"},
    {NULL, SB_CONF_RELOAD, 0, NULL, SB_CONF_RELOAD, 0, NULL, SB_CONF_RELOAD, NULL},
};

static const struct sb_conf_section chat_section = {
    "chat",
    0,
    sizeof(struct chat_conf),
    chat_keys,
    "The customer web chat: the widget (<script src=\".../chat/widget.js\">)\n"
    "and its WebSocket /chat/ws (subprotocol switchboard.chat.v1, see\n"
    "channels/webchat/PROTOCOL.md). The driver starts when this section is\n"
    "present. Limits are per socket or per client address.",
    chat_conf_check,
};

/* ---- state --------------------------------------------------------------- */

struct chat_conn;

/* One visitor (one token) with its open sockets on this instance. */
struct chat_visitor {
    struct chat_visitor *tnext;   /* by_vid chain */
    struct chat_visitor *cnext;   /* by_conv chain, when conversation set */
    char vid[CHAT_VID_LEN + 1];
    char customer[48];
    char conversation[48];        /* "" when none is known */
    struct chat_conn *conns;
    /* What the visitor was last told about the conversation (the live
     * status), and who holds it. Reset when the conversation changes. */
    char st[12];                  /* "", queued, assigned, resolved */
    long long pos;                /* queue position sent, 0 when none */
    char agent[CHAT_AGENT_MAX];   /* the assigned agent's user name */
    int agent_known;              /* agent is known (maybe "") */
    uint64_t seq;                 /* bumped by every routing event */
};

enum chat_hello {
    CHAT_HELLO_NONE = 0,  /* waiting for hello */
    CHAT_HELLO_BUSY,      /* hello received, looking the visitor up */
    CHAT_HELLO_DONE,      /* welcome sent */
};

struct chat_conn {
    uint64_t id;
    struct sb_list_node link;      /* in chat_state.conns */
    struct chat_conn *vnext;       /* the visitor's sockets */
    struct chat_visitor *v;        /* set with the welcome */
    enum chat_hello hello;
    char *name, *email, *phone, *page, *lang;
    int ids_stored;                /* a message carried email/phone */
    uint64_t *err_ms;              /* ring of error times (max_errors) */
    size_t err_next;
    uint64_t typing_ms;            /* last customer typing passed on */
};

/* A send waiting for its completion: in the ready list (the kick timer
 * completes it) or in the relay list (waiting for another instance to
 * confirm delivery, until deadline). */
struct chat_send {
    struct chat_send *next;
    struct sb_outmsg *msg;
    sb_send_done *done;
    enum sb_send_status status;
    const char *reason;
    char rid[48];                 /* relay id, "" when not relayed */
    uint64_t deadline;            /* uv_now() ms */
};

struct chat_state {
    uv_loop_t *loop;
    uv_timer_t kick;
    struct chat_visitor *by_vid[CHAT_BUCKETS];
    struct chat_visitor *by_conv[CHAT_BUCKETS];
    struct sb_list conns;         /* every socket */
    size_t nvisitors;
    struct chat_send *ready_head, *ready_tail;
    struct chat_send *relay_head, *relay_tail;
    uv_timer_t relay_timer;
    int closing;                  /* handles still to close at stop */
    size_t pending;
    size_t max_text;
    size_t max_errors;
    int history;
    char *country;
    uint64_t remote_wait;
    char instance[24];            /* random name of this process */
    uint64_t relay_seq;
};

static struct chat_state *CS;
static struct sb_ws_proto chat_proto; /* borrowed by ws.c for good */
static int chat_registered;
static struct sb_metric *m_msgs, *m_errors, *m_relay;

/* ---- small helpers ------------------------------------------------------- */

static size_t chat_hash(const char *s)
{
    size_t h = 5381;

    while (*s)
        h = h * 33 + (unsigned char)*s++;
    return h % CHAT_BUCKETS;
}

/* The visitor id of a token (out holds CHAT_VID_LEN + 1). */
static void chat_vid_of(const char *token, char *out)
{
    char *tagged = sb_asprintf("switchboard.chat:%s", token);
    char hex[SB_HASH_HEX_LEN + 1];

    sb_sha256_hex(tagged, strlen(tagged), hex);
    memcpy(out, hex, CHAT_VID_LEN);
    out[CHAT_VID_LEN] = '\0';
    explicit_bzero(tagged, strlen(tagged));
    free(tagged);
}

static int chat_is_token(const char *s)
{
    size_t n = strlen(s);

    return n == SB_TOKEN_LEN &&
           strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                     "0123456789-_") == n;
}

static int chat_is_vid(const char *s)
{
    return strlen(s) == CHAT_VID_LEN &&
           strspn(s, "0123456789abcdef") == CHAT_VID_LEN;
}

static int chat_id_ok(const char *s)
{
    size_t n = strlen(s);

    return n > 0 && n <= CHAT_ID_MAX &&
           strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                     "0123456789-_.:") == n;
}

/* Serialise o (stolen) and queue it on one socket. 0 or -1. */
static int chat_emit(uint64_t id, json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT);
    int rc = -1;

    json_decref(o);
    if (s) {
        rc = sb_ws_send(id, s, strlen(s));
        free(s);
    }
    return rc;
}

/* The same frame to every socket of a visitor but `skip`. Returns how many
 * sockets took it. */
static size_t chat_emit_visitor(const struct chat_visitor *v, json_t *o,
                                uint64_t skip)
{
    char *s = json_dumps(o, JSON_COMPACT);
    size_t n = 0;

    json_decref(o);
    if (!s)
        return 0;
    for (struct chat_conn *c = v->conns; c; c = c->vnext)
        if (c->id != skip && sb_ws_send(c->id, s, strlen(s)) == 0)
            n++;
    free(s);
    return n;
}

static struct chat_conn *chat_conn_get(uint64_t id)
{
    struct sb_ws_conn *wc;

    if (!CS)
        return NULL;
    wc = sb_ws_find(id);
    return wc ? sb_ws_user(wc) : NULL;
}

/* ---- visitors ------------------------------------------------------------ */

static struct chat_visitor *chat_visitor_find(const char *vid)
{
    struct chat_visitor *v;

    for (v = CS->by_vid[chat_hash(vid)]; v; v = v->tnext)
        if (strcmp(v->vid, vid) == 0)
            return v;
    return NULL;
}

static struct chat_visitor *chat_visitor_by_conv(const char *conv)
{
    struct chat_visitor *v;

    for (v = CS->by_conv[chat_hash(conv)]; v; v = v->cnext)
        if (strcmp(v->conversation, conv) == 0)
            return v;
    return NULL;
}

static void chat_conv_unlink(struct chat_visitor *v)
{
    struct chat_visitor **pp;

    if (!v->conversation[0])
        return;
    pp = &CS->by_conv[chat_hash(v->conversation)];
    while (*pp && *pp != v)
        pp = &(*pp)->cnext;
    if (*pp)
        *pp = v->cnext;
    v->cnext = NULL;
}

/* Point the visitor at a conversation ("" for none). */
static void chat_visitor_set_conv(struct chat_visitor *v, const char *conv)
{
    size_t b;

    if (strcmp(v->conversation, conv) == 0)
        return;
    chat_conv_unlink(v);
    snprintf(v->conversation, sizeof(v->conversation), "%s", conv);
    v->st[0] = v->agent[0] = '\0';
    v->pos = 0;
    v->agent_known = 0;
    if (!v->conversation[0])
        return;
    b = chat_hash(v->conversation);
    v->cnext = CS->by_conv[b];
    CS->by_conv[b] = v;
}

static struct chat_visitor *chat_visitor_get(const char *vid)
{
    struct chat_visitor *v = chat_visitor_find(vid);
    size_t b;

    if (v)
        return v;
    v = sb_calloc(1, sizeof(*v));
    snprintf(v->vid, sizeof(v->vid), "%s", vid);
    b = chat_hash(vid);
    v->tnext = CS->by_vid[b];
    CS->by_vid[b] = v;
    CS->nvisitors++;
    return v;
}

static void chat_visitor_free(struct chat_visitor *v)
{
    struct chat_visitor **pp = &CS->by_vid[chat_hash(v->vid)];

    while (*pp && *pp != v)
        pp = &(*pp)->tnext;
    if (*pp)
        *pp = v->tnext;
    chat_conv_unlink(v);
    CS->nvisitors--;
    free(v);
}

static void chat_attach(struct chat_conn *c, struct chat_visitor *v)
{
    c->v = v;
    c->vnext = v->conns;
    v->conns = c;
}

static void chat_detach(struct chat_conn *c)
{
    struct chat_visitor *v = c->v;
    struct chat_conn **pp;

    if (!v)
        return;
    pp = &v->conns;
    while (*pp && *pp != c)
        pp = &(*pp)->vnext;
    if (*pp)
        *pp = c->vnext;
    c->v = NULL;
    c->vnext = NULL;
    if (!v->conns)
        chat_visitor_free(v);
}

/* ---- frames -------------------------------------------------------------- */

/* Error codes that are the visitor's fault count towards max_errors. */
static void chat_error(struct chat_conn *c, const char *code,
                       const char *message, const char *field,
                       const char *client_id)
{
    json_t *o = json_pack("{s:s, s:s, s:s}", "type", "error", "code", code,
                          "message", message);
    uint64_t now = sb_mono_ms();
    size_t recent = 0;

    if (field && *field)
        json_object_set_new(o, "field", json_string(field));
    if (client_id)
        json_object_set_new(o, "id", json_string(client_id));
    sb_metric_add(m_errors, 1, code);
    chat_emit(c->id, o);
    if (strcmp(code, "unavailable") == 0 || strcmp(code, "rejected") == 0)
        return;
    c->err_ms[c->err_next] = now ? now : 1;
    c->err_next = (c->err_next + 1) % CS->max_errors;
    for (size_t i = 0; i < CS->max_errors; i++)
        if (c->err_ms[i] && now - c->err_ms[i] < CHAT_ERR_WINDOW_MS)
            recent++;
    if (recent >= CS->max_errors) {
        SB_INFO(CHAT_PLACE, "closing abusive socket conn=%llu peer=%s",
                (unsigned long long)c->id,
                sb_ws_find(c->id) ? sb_ws_peer(sb_ws_find(c->id)) : "-");
        sb_ws_close(c->id, SB_WS_POLICY, "too many errors");
    }
}

static const char *chat_status_of(const char *state)
{
    if (!state)
        return NULL;
    if (!strcmp(state, "new") || !strcmp(state, "queued"))
        return "queued";
    if (!strcmp(state, "assigned") || !strcmp(state, "waiting"))
        return "assigned";
    if (!strcmp(state, "resolved"))
        return "resolved";
    return NULL;
}

/* {"type":"status", ...} from a conversation object (or a router
 * result), or NULL: position when queued and known, the agent's display
 * name when assigned. */
static json_t *chat_status_frame(json_t *conv)
{
    const char *st = chat_status_of(
        json_string_value(json_object_get(conv, "state")));
    json_t *pos = json_object_get(conv, "position");
    const char *agent = json_string_value(json_object_get(conv, "agent"));
    json_t *o;

    if (!st)
        return NULL;
    o = json_pack("{s:s, s:s}", "type", "status", "state", st);
    if (json_is_integer(pos) && json_integer_value(pos) > 0 &&
        strcmp(st, "queued") == 0)
        json_object_set(o, "position", pos);
    if (agent && *agent && strcmp(st, "assigned") == 0)
        json_object_set_new(o, "name",
                            json_string(sb_auth_display_name(agent)));
    return o;
}

/* ---- live status --------------------------------------------------------- */

/* Record what a visitor should now be shown about its conversation and
 * tell its sockets, only when that changed: state is queued, assigned or
 * resolved (NULL: nothing known, ignored), pos the queue position (0 when
 * unknown; queued only), agent the holder's user name (assigned only). */
static void chat_live_set(struct chat_visitor *v, const char *state,
                          long long pos, const char *agent)
{
    int changed;
    json_t *o;

    if (!state)
        return;
    if (strcmp(state, "queued") != 0 || pos < 0)
        pos = 0;
    if (strcmp(state, "assigned") != 0 || !agent ||
        strlen(agent) >= sizeof(v->agent))
        agent = "";
    changed = strcmp(v->st, state) != 0 || v->pos != pos ||
              strcmp(v->agent, agent) != 0;
    snprintf(v->st, sizeof(v->st), "%s", state);
    v->pos = pos;
    snprintf(v->agent, sizeof(v->agent), "%s", agent);
    v->agent_known = 1;
    if (!changed || !v->conns)
        return;
    o = json_pack("{s:s, s:s}", "type", "status", "state", v->st);
    if (v->pos > 0)
        json_object_set_new(o, "position", json_integer(v->pos));
    if (v->agent[0])
        json_object_set_new(o, "name",
                            json_string(sb_auth_display_name(v->agent)));
    chat_emit_visitor(v, o, 0);
}

/* The same from a conversation object or a router result. */
static void chat_live_from(struct chat_visitor *v, json_t *conv)
{
    json_t *pos = json_object_get(conv, "position");

    chat_live_set(v,
                  chat_status_of(json_string_value(
                      json_object_get(conv, "state"))),
                  json_is_integer(pos) ? json_integer_value(pos) : 0,
                  json_string_value(json_object_get(conv, "agent")));
}

/* One timeline entry as a history item, or NULL when the visitor does not
 * see it (notes, assignments and other internal entries). */
static json_t *chat_history_item(json_t *e, const char *vid)
{
    const char *type = json_string_value(json_object_get(e, "type"));
    const char *dir = json_string_value(json_object_get(e, "direction"));
    const char *text = json_string_value(json_object_get(e, "text"));
    const char *src = json_string_value(json_object_get(e, "source_id"));
    json_t *fields = json_object_get(e, "fields");
    const char *name = json_string_value(json_object_get(fields,
                                                         "agent_name"));
    json_t *o;
    size_t vl = strlen(vid);

    if (!type || !dir)
        return NULL;
    o = json_object();
    json_object_set(o, "id", json_object_get(e, "id"));
    if (!strcmp(type, "message") && !strcmp(dir, "in")) {
        json_object_set_new(o, "from", json_string("customer"));
        if (src && !strncmp(src, vid, vl) && src[vl] == ':')
            json_object_set_new(o, "client_id", json_string(src + vl + 1));
    } else if (!strcmp(type, "message") && !strcmp(dir, "out")) {
        const char *agent = json_string_value(json_object_get(e, "agent"));

        json_object_set_new(o, "from", json_string("agent"));
        if (!name && agent && *agent)
            name = sb_auth_display_name(agent);
        if (name)
            json_object_set_new(o, "name", json_string(name));
    } else if (!strcmp(type, "notification") && !strcmp(dir, "out")) {
        json_object_set_new(o, "from", json_string("system"));
    } else {
        json_decref(o);
        return NULL;
    }
    json_object_set_new(o, "text", json_string(text ? text : ""));
    json_object_set(o, "at", json_object_get(e, "at"));
    return o;
}

/* ---- hello: find the visitor, its conversation and history --------------- */

struct chat_hello_op {
    uint64_t conn_id;
    char token[SB_TOKEN_LEN + 1];
    char vid[CHAT_VID_LEN + 1];
    char customer[48];
    char conversation[48];
    json_t *status;              /* status frame to follow the welcome */
    char agent[CHAT_AGENT_MAX];  /* the conversation's agent, "" none */
};

static void chat_hello_free(struct chat_hello_op *op)
{
    json_decref(op->status);
    memset(op->token, 0, sizeof(op->token));
    free(op);
}

/* The socket of op, still waiting for its welcome, or NULL. */
static struct chat_conn *chat_hello_conn(struct chat_hello_op *op)
{
    struct chat_conn *c = chat_conn_get(op->conn_id);

    return c && c->hello == CHAT_HELLO_BUSY ? c : NULL;
}

static void chat_hello_fail(struct chat_hello_op *op, struct chat_conn *c,
                            enum sb_store_status st, const char *err)
{
    char safe[128];

    if (c) {
        c->hello = CHAT_HELLO_NONE;
        SB_WARN(CHAT_PLACE, "visitor lookup failed conn=%llu status=%d "
                            "err=\"%s\"",
                (unsigned long long)c->id, (int)st,
                sb_log_safe(err ? err : "", safe, sizeof(safe)));
        chat_error(c, "unavailable", "the chat is briefly unavailable; "
                                     "send hello again", NULL, NULL);
    }
    chat_hello_free(op);
}

/* Send the welcome (history stolen, may be NULL) and attach the socket. */
static void chat_welcome(struct chat_hello_op *op, struct chat_conn *c,
                         json_t *history)
{
    struct chat_visitor *v = chat_visitor_get(op->vid);
    json_t *o;

    if (op->customer[0])
        snprintf(v->customer, sizeof(v->customer), "%s", op->customer);
    chat_visitor_set_conv(v, op->conversation);
    chat_attach(c, v);
    c->hello = CHAT_HELLO_DONE;
    o = json_pack("{s:s, s:s, s:o, s:o, s:I}", "type", "welcome", "token",
                  op->token, "conversation",
                  op->conversation[0] ? json_string(op->conversation)
                                      : json_null(),
                  "history", history ? history : json_array(), "max_text",
                  (json_int_t)CS->max_text);
    chat_emit(c->id, o);
    if (op->status && !v->st[0]) {
        /* The first news of this conversation here: it becomes the live
         * state the routing events are compared with. */
        json_t *pos = json_object_get(op->status, "position");
        chat_live_set(v,
                      json_string_value(json_object_get(op->status,
                                                        "state")),
                      json_is_integer(pos) ? json_integer_value(pos) : 0,
                      op->agent);
    } else if (op->status) {
        chat_emit(c->id, op->status);
        op->status = NULL;
    }
    SB_DEBUG(CHAT_PLACE, "welcome conn=%llu customer=%s conversation=%s",
             (unsigned long long)c->id,
             op->customer[0] ? op->customer : "-",
             op->conversation[0] ? op->conversation : "-");
    chat_hello_free(op);
}

static void chat_new_visitor(struct chat_hello_op *op, struct chat_conn *c)
{
    sb_token_new(op->token);
    chat_vid_of(op->token, op->vid);
    op->customer[0] = op->conversation[0] = '\0';
    chat_welcome(op, c, NULL);
}

static void on_hello_history(enum sb_store_status st, json_t *res,
                             const char *err, void *arg)
{
    struct chat_hello_op *op = arg;
    struct chat_conn *c = chat_hello_conn(op);
    json_t *entries = json_object_get(res, "entries"), *hist;
    size_t i;

    if (!c || st != SB_STORE_OK) {
        json_decref(res);
        if (c && st == SB_STORE_NOTFOUND) {
            op->conversation[0] = '\0';
            chat_welcome(op, c, NULL);
            return;
        }
        chat_hello_fail(op, c, st, err);
        return;
    }
    hist = json_array();
    for (i = json_array_size(entries); i-- > 0;) {
        json_t *item = chat_history_item(json_array_get(entries, i), op->vid);
        if (item)
            json_array_append_new(hist, item);
    }
    json_decref(res);
    chat_welcome(op, c, hist);
}

static void chat_hello_history(struct chat_hello_op *op,
                               struct chat_conn *c)
{
    if (CS->history == 0) {
        chat_welcome(op, c, NULL);
        return;
    }
    if (sb_timeline_conversation(op->conversation, NULL, CS->history,
                                 on_hello_history, op) < 0)
        chat_hello_fail(op, c, SB_STORE_UNAVAILABLE, "refused");
}

/* The queue position for the welcome's status; without it the status
 * goes out without a position (the next routing event brings it). */
static void on_hello_pos(enum sb_store_status st, json_t *res,
                         const char *err, void *arg)
{
    struct chat_hello_op *op = arg;
    struct chat_conn *c = chat_hello_conn(op);
    json_t *pos = json_object_get(res, "position");
    const char *state = chat_status_of(
        json_string_value(json_object_get(res, "state")));

    if (st == SB_STORE_OK && state && !strcmp(state, "queued") &&
        json_is_integer(pos) && json_integer_value(pos) > 0)
        json_object_set(op->status, "position", pos);
    json_decref(res);
    if (!c) {
        chat_hello_free(op);
        return;
    }
    chat_hello_history(op, c);
}

static void on_hello_conv(enum sb_store_status st, json_t *res,
                          const char *err, void *arg)
{
    struct chat_hello_op *op = arg;
    struct chat_conn *c = chat_hello_conn(op);
    const char *state = json_string_value(json_object_get(res, "state"));

    if (!c || (st != SB_STORE_OK && st != SB_STORE_NOTFOUND)) {
        json_decref(res);
        chat_hello_fail(op, c, st, err);
        return;
    }
    if (st == SB_STORE_NOTFOUND || !state || !strcmp(state, "resolved")) {
        json_decref(res);
        op->conversation[0] = '\0';
        chat_welcome(op, c, NULL);
        return;
    }
    op->status = chat_status_frame(res);
    snprintf(op->agent, sizeof(op->agent), "%s",
             json_string_value(json_object_get(res, "agent"))
                 ? json_string_value(json_object_get(res, "agent"))
                 : "");
    json_decref(res);
    /* A waiting customer is told the place in the queue at once. */
    if (op->status &&
        !strcmp(json_string_value(json_object_get(op->status, "state")),
                "queued") &&
        sb_router_position(op->conversation, on_hello_pos, op) == 0)
        return;
    chat_hello_history(op, c);
}

static void on_hello_timeline(enum sb_store_status st, json_t *res,
                              const char *err, void *arg)
{
    struct chat_hello_op *op = arg;
    struct chat_conn *c = chat_hello_conn(op);
    json_t *entries = json_object_get(res, "entries");
    const char *conv = NULL;
    size_t i;

    if (!c || (st != SB_STORE_OK && st != SB_STORE_NOTFOUND)) {
        json_decref(res);
        chat_hello_fail(op, c, st, err);
        return;
    }
    /* The newest chat contact names the conversation to resume. */
    for (i = 0; i < json_array_size(entries); i++) {
        json_t *e = json_array_get(entries, i);
        const char *ch = json_string_value(json_object_get(e, "channel"));
        const char *cv = json_string_value(json_object_get(e,
                                                           "conversation"));
        if (ch && cv && *cv && strcmp(ch, CHAT_CHANNEL) == 0) {
            conv = cv;
            break;
        }
    }
    snprintf(op->conversation, sizeof(op->conversation), "%s",
             conv ? conv : "");
    json_decref(res);
    if (!op->conversation[0]) {
        chat_welcome(op, c, NULL);
        return;
    }
    if (sb_conversation_get(op->conversation, on_hello_conv, op) < 0)
        chat_hello_fail(op, c, SB_STORE_UNAVAILABLE, "refused");
}

static void on_hello_customer(enum sb_store_status st, json_t *res,
                              const char *err, void *arg)
{
    struct chat_hello_op *op = arg;
    struct chat_conn *c = chat_hello_conn(op);
    const char *cu = json_string_value(json_object_get(res, "id"));

    if (c && st == SB_STORE_NOTFOUND) {
        /* A token we never stored (no message was sent with it): the
         * visitor starts afresh with a token of our making. */
        json_decref(res);
        chat_new_visitor(op, c);
        return;
    }
    if (!c || st != SB_STORE_OK || !cu) {
        json_decref(res);
        chat_hello_fail(op, c, st == SB_STORE_OK ? SB_STORE_INVALID : st,
                        err);
        return;
    }
    snprintf(op->customer, sizeof(op->customer), "%s", cu);
    json_decref(res);
    if (sb_timeline_customer(op->customer, NULL, CHAT_CUST_SCAN,
                             on_hello_timeline, op) < 0)
        chat_hello_fail(op, c, SB_STORE_UNAVAILABLE, "refused");
}

static void chat_set_str(char **dst, const char *src)
{
    free(*dst);
    *dst = src ? sb_strdup(src) : NULL;
}

/* The visitor's own details from hello or profile: a bad one is reported
 * in an error frame and left out, the rest is kept. Returns 1 when an
 * e-mail or phone was accepted. */
static int chat_read_profile(struct chat_conn *c, json_t *j)
{
    struct sb_json_err je;
    const char *name = NULL, *email = NULL, *phone = NULL;
    char norm[SB_EMAIL_MAX + 1];
    const char *why;
    int got = 0;

    if (sb_json_get_str(j, "name", 0, CHAT_NAME_MAX, 0, &name, &je) < 0)
        chat_error(c, "invalid", je.error, je.field, NULL);
    else if (name)
        chat_set_str(&c->name, name);
    if (sb_json_get_str(j, "email", 0, 320, 0, &email, &je) < 0) {
        chat_error(c, "invalid", je.error, je.field, NULL);
    } else if (email) {
        if (sb_email_normalize(email, norm, sizeof(norm), &why) < 0) {
            chat_error(c, "invalid", why, "email", NULL);
        } else {
            chat_set_str(&c->email, norm);
            got = 1;
        }
    }
    if (sb_json_get_str(j, "phone", 0, CHAT_PHONE_IN_MAX, 0, &phone, &je) <
        0) {
        chat_error(c, "invalid", je.error, je.field, NULL);
    } else if (phone) {
        if (sb_phone_normalize(phone, CS->country[0] ? CS->country : NULL,
                               norm, sizeof(norm), &why) < 0) {
            chat_error(c, "invalid", why, "phone", NULL);
        } else {
            chat_set_str(&c->phone, norm);
            got = 1;
        }
    }
    if (got)
        c->ids_stored = 0; /* the next message carries them */
    return got;
}

/* profile {name?, email?, phone?} after the welcome: answered with the
 * values as stored (normalised). */
static void chat_on_profile(struct chat_conn *c, json_t *j)
{
    json_t *o;

    if (c->hello != CHAT_HELLO_DONE) {
        chat_error(c, "no_hello", "send hello and wait for welcome first",
                   NULL, NULL);
        return;
    }
    chat_read_profile(c, j);
    o = json_pack("{s:s}", "type", "profile");
    if (c->name)
        json_object_set_new(o, "name", json_string(c->name));
    if (c->email)
        json_object_set_new(o, "email", json_string(c->email));
    if (c->phone)
        json_object_set_new(o, "phone", json_string(c->phone));
    chat_emit(c->id, o);
}

static void chat_on_hello(struct chat_conn *c, json_t *j)
{
    struct sb_json_err je;
    const char *token = NULL, *page = NULL, *lang = NULL;
    static const char *const langs[] = {"ru", "en", NULL};
    struct chat_hello_op *op;
    struct chat_visitor *v;

    if (c->hello != CHAT_HELLO_NONE) {
        chat_error(c, "bad_state", "hello was already sent", NULL, NULL);
        return;
    }
    /* A bad optional field is reported and left out; hello goes on. */
    if (sb_json_get_str(j, "token", 0, 128, 0, &token, &je) < 0)
        token = NULL;
    if (sb_json_get_str(j, "page", 0, CHAT_PAGE_MAX, 0, &page, &je) < 0) {
        chat_error(c, "invalid", je.error, je.field, NULL);
        page = NULL;
    }
    if (sb_json_get_enum(j, "lang", 0, langs, &lang, &je) < 0) {
        chat_error(c, "invalid", je.error, je.field, NULL);
        lang = NULL;
    }
    chat_set_str(&c->name, NULL);
    chat_set_str(&c->email, NULL);
    chat_set_str(&c->phone, NULL);
    chat_read_profile(c, j);
    chat_set_str(&c->page, page);
    chat_set_str(&c->lang, lang);
    c->ids_stored = 0;

    op = sb_calloc(1, sizeof(*op));
    op->conn_id = c->id;
    c->hello = CHAT_HELLO_BUSY;
    if (!token || !chat_is_token(token)) {
        chat_new_visitor(op, c);
        return;
    }
    snprintf(op->token, sizeof(op->token), "%s", token);
    chat_vid_of(token, op->vid);
    v = chat_visitor_find(op->vid);
    if (v) {
        /* Another socket of this visitor is open here, so the token is one
         * we issued: resume it without asking who it is. */
        snprintf(op->customer, sizeof(op->customer), "%s", v->customer);
        snprintf(op->conversation, sizeof(op->conversation), "%s",
                 v->conversation);
        if (!op->conversation[0])
            chat_welcome(op, c, NULL);
        else if (sb_conversation_get(op->conversation, on_hello_conv, op) <
                 0)
            chat_hello_fail(op, c, SB_STORE_UNAVAILABLE, "refused");
        return;
    }
    if (sb_customer_find("chat", op->vid, on_hello_customer, op) < 0)
        chat_hello_fail(op, c, SB_STORE_UNAVAILABLE, "refused");
}

/* ---- customer messages --------------------------------------------------- */

struct chat_msg_op {
    uint64_t conn_id;
    char vid[CHAT_VID_LEN + 1];
    char client_id[CHAT_ID_MAX + 1];
    int carried_ids;
    char *text;
    int64_t at;
};

/* A lookup of a conversation's state on behalf of a visitor: its
 * answer is news only when no routing event reached the visitor since
 * it was asked (seq), as events are never older than the answer. */
struct chat_status_op {
    char vid[CHAT_VID_LEN + 1];
    char conversation[48];
    uint64_t seq;
    int changed;                  /* a new conversation: tell the visitor */
};

static struct chat_status_op *chat_status_op_new(const char *vid,
                                                 const char *conv)
{
    struct chat_status_op *op = sb_calloc(1, sizeof(*op));
    struct chat_visitor *v = chat_visitor_find(vid);

    snprintf(op->vid, sizeof(op->vid), "%s", vid);
    snprintf(op->conversation, sizeof(op->conversation), "%s", conv);
    op->seq = v ? v->seq : 0;
    return op;
}

/* The visitor of op, still on its conversation with no event since. */
static struct chat_visitor *chat_status_visitor(struct chat_status_op *op)
{
    struct chat_visitor *v = CS ? chat_visitor_find(op->vid) : NULL;

    if (!v || strcmp(v->conversation, op->conversation) != 0 ||
        v->seq != op->seq)
        return NULL;
    return v;
}

static void on_status_conv(enum sb_store_status st, json_t *res,
                           const char *err, void *arg)
{
    struct chat_status_op *op = arg;
    struct chat_visitor *v = chat_status_visitor(op);

    if (v && st == SB_STORE_OK)
        chat_live_from(v, res);
    json_decref(res);
    free(op);
}

/* Tell the visitor's sockets the state of its (new) conversation. */
static void chat_push_status(const char *vid, const char *conv)
{
    struct chat_status_op *op = chat_status_op_new(vid, conv);

    if (sb_conversation_get(op->conversation, on_status_conv, op) < 0)
        free(op);
}

/* The router's answer: the conversation as it is now (queued with its
 * position, or assigned). A failure is logged and the visitor is told the
 * stored state; the customer's message is stored either way. */
static void on_routed(enum sb_store_status st, json_t *res, const char *err,
                      void *arg)
{
    struct chat_status_op *op = arg;
    struct chat_visitor *v = chat_status_visitor(op);
    char safe[128];

    if (st == SB_STORE_OK) {
        if (v)
            chat_live_from(v, res);
    } else {
        SB_WARN(CHAT_PLACE, "routing failed conversation=%s status=%d "
                            "err=\"%s\"",
                op->conversation, (int)st,
                sb_log_safe(err ? err : "", safe, sizeof(safe)));
        if (v && op->changed)
            chat_push_status(op->vid, op->conversation);
    }
    json_decref(res);
    free(op);
}

/* A customer message that left its conversation new or resolved goes to
 * the router (safe to repeat: a queued or assigned one is left alone). */
static void chat_route(const char *vid, const char *conv, int changed)
{
    struct chat_status_op *op = chat_status_op_new(vid, conv);

    op->changed = changed;
    if (sb_router_route(conv, on_routed, op) == 0)
        return;
    SB_WARN(CHAT_PLACE, "routing refused conversation=%s", conv);
    if (changed)
        chat_push_status(vid, conv);
    free(op);
}

static void on_ingested(enum sb_store_status st,
                        const struct sb_contact_result *res, const char *err,
                        void *arg)
{
    struct chat_msg_op *op = arg;
    struct chat_conn *c = chat_conn_get(op->conn_id);
    struct chat_visitor *v = CS ? chat_visitor_find(op->vid) : NULL;
    char safe[128];

    if (st != SB_STORE_OK) {
        if (st != SB_STORE_UNAVAILABLE)
            SB_WARN(CHAT_PLACE, "message refused by the store conn=%llu "
                                "status=%d err=\"%s\"",
                    (unsigned long long)op->conn_id, (int)st,
                    sb_log_safe(err ? err : "", safe, sizeof(safe)));
        if (c)
            chat_error(c, st == SB_STORE_UNAVAILABLE ? "unavailable"
                                                      : "rejected",
                       st == SB_STORE_UNAVAILABLE
                           ? "not stored; send it again later"
                           : "the message was not accepted",
                       NULL, op->client_id);
        goto done;
    }
    if (!res->duplicate)
        sb_metric_add(m_msgs, 1, "in");
    if (c) {
        if (op->carried_ids)
            c->ids_stored = 1;
        chat_emit(c->id, json_pack("{s:s, s:s, s:s}", "type", "ack", "id",
                                   op->client_id, "contact",
                                   res->contact_id));
    }
    if (v) {
        if (!v->customer[0] || strcmp(v->customer, res->customer_id))
            snprintf(v->customer, sizeof(v->customer), "%s",
                     res->customer_id);
        chat_visitor_set_conv(v, res->conversation_id);
        /* The visitor's other tabs show what this one wrote. */
        if (!res->duplicate && v->conns)
            chat_emit_visitor(
                v,
                json_pack("{s:s, s:s, s:s, s:s, s:s, s:I}", "type", "message",
                          "id", res->contact_id, "client_id", op->client_id,
                          "from", "customer", "text", op->text, "at",
                          (json_int_t)op->at),
                op->conn_id);
    }
    /* Route after the ack, never before: a routing failure is logged and
     * does not make the stored message fail. A visitor that knows nothing
     * of the conversation yet is told its state. */
    if (CS && res->conversation_id[0]) {
        int untold = v && !v->st[0] &&
                     strcmp(v->conversation, res->conversation_id) == 0;

        /* Only a new or resolved conversation needs the router (the
         * route script is heavy; ingest tells us). */
        if (!res->duplicate && res->needs_route)
            chat_route(op->vid, res->conversation_id, untold);
        else if (untold)
            chat_push_status(op->vid, res->conversation_id);
    }
done:
    free(op->text);
    free(op);
}

static void chat_on_message(struct chat_conn *c, json_t *j)
{
    struct sb_json_err je;
    const char *id = NULL, *text = NULL;
    struct sb_contact_in in;
    struct chat_msg_op *op;
    json_t *fields = NULL;
    char *fields_s = NULL;
    size_t len, k;
    int rc;

    if (c->hello != CHAT_HELLO_DONE) {
        chat_error(c, "no_hello", "send hello and wait for welcome first",
                   NULL, NULL);
        return;
    }
    if (sb_json_get_str(j, "id", 1, CHAT_ID_MAX, 0, &id, &je) < 0 ||
        !chat_id_ok(id)) {
        chat_error(c, "invalid", "id must be 1..64 of [A-Za-z0-9._:-]", "id",
                   NULL);
        return;
    }
    text = json_string_value(json_object_get(j, "text"));
    if (!json_is_string(json_object_get(j, "text"))) {
        chat_error(c, "invalid", "text must be a string", "text", id);
        return;
    }
    len = json_string_length(json_object_get(j, "text"));
    for (k = 0; k < len && strchr(" \t\r\n", text[k]); k++)
        ;
    if (k == len) {
        chat_error(c, "empty", "the message is empty", "text", id);
        return;
    }
    if (len > CS->max_text) {
        chat_error(c, "too_long", "the message is too long", "text", id);
        return;
    }
    if (sb_json_get_str(j, "text", 1, 0, 1, &text, &je) < 0) {
        chat_error(c, "invalid", je.error, "text", id);
        return;
    }

    op = sb_calloc(1, sizeof(*op));
    op->conn_id = c->id;
    snprintf(op->vid, sizeof(op->vid), "%s", c->v->vid);
    snprintf(op->client_id, sizeof(op->client_id), "%s", id);
    op->text = sb_strndup(text, len);
    op->at = sb_now_ms();

    memset(&in, 0, sizeof(in));
    in.channel = CHAT_CHANNEL;
    in.direction = "in";
    in.type = "message";
    in.ids[in.nids].type = "chat";
    in.ids[in.nids++].value = op->vid;
    if (!c->ids_stored) {
        if (c->email) {
            in.ids[in.nids].type = "email";
            in.ids[in.nids++].value = c->email;
            op->carried_ids = 1;
        }
        if (c->phone) {
            in.ids[in.nids].type = "phone";
            in.ids[in.nids++].value = c->phone;
            op->carried_ids = 1;
        }
    }
    in.name = c->name;
    in.locale = c->lang;
    in.text = op->text;
    in.text_len = len;
    {
        char *sid = sb_asprintf("%s:%s", op->vid, id);
        in.source_id = sid;
        if (c->page) {
            fields = json_pack("{s:s}", "page", c->page);
            fields_s = json_dumps(fields, JSON_COMPACT);
            json_decref(fields);
        }
        in.fields_json = fields_s;
        rc = sb_contact_ingest(&in, on_ingested, op);
        free(sid);
        free(fields_s);
    }
    if (rc < 0) {
        chat_error(c, "unavailable", "not stored; send it again later", NULL,
                   op->client_id);
        free(op->text);
        free(op);
    }
}

/* ---- customer typing ----------------------------------------------------- */

/* {"type":"typing","from":"customer","conversation","agent"} for the agent
 * console of whichever instance holds the agent ("" when none is). */
static void chat_publish_typing(const char *conv, const char *agent)
{
    json_t *ev = json_pack("{s:s, s:s, s:s, s:s, s:I}", "type", "typing",
                           "from", "customer", "conversation", conv, "agent",
                           agent ? agent : "", "at",
                           (json_int_t)sb_now_ms());

    if (!ev || sb_events_publish(NULL, ev) < 0)
        SB_DEBUG(CHAT_PLACE, "typing not published conversation=%s", conv);
    json_decref(ev);
}

static void on_typing_conv(enum sb_store_status st, json_t *res,
                           const char *err, void *arg)
{
    struct chat_status_op *op = arg;
    struct chat_visitor *v = chat_status_visitor(op);
    const char *state = chat_status_of(
        json_string_value(json_object_get(res, "state")));
    const char *agent = json_string_value(json_object_get(res, "agent"));

    if (st == SB_STORE_OK) {
        if (v)
            chat_live_from(v, res);
        chat_publish_typing(op->conversation,
                            state && !strcmp(state, "assigned") ? agent
                                                                : NULL);
    }
    json_decref(res);
    free(op);
}

/* At most one typing event per socket every CHAT_TYPING_MS. The agent is
 * the one the routing events named; when no event said, the conversation
 * is read first. */
static void chat_on_typing(struct chat_conn *c)
{
    struct chat_visitor *v = c->v;
    uint64_t now = sb_mono_ms();
    struct chat_status_op *op;

    if (c->hello != CHAT_HELLO_DONE || !v || !v->conversation[0])
        return;
    if (c->typing_ms && now - c->typing_ms < CHAT_TYPING_MS)
        return;
    c->typing_ms = now ? now : 1;
    if (v->agent_known) {
        chat_publish_typing(v->conversation, v->agent);
        return;
    }
    op = chat_status_op_new(v->vid, v->conversation);
    if (sb_conversation_get(op->conversation, on_typing_conv, op) < 0)
        free(op);
}

/* ---- the WebSocket endpoint ---------------------------------------------- */

static int chat_ws_open(struct sb_ws_conn *wc)
{
    struct chat_conn *c;

    if (!CS)
        return SB_WS_GOING_AWAY;
    c = sb_calloc(1, sizeof(*c));
    c->id = sb_ws_id(wc);
    c->err_ms = sb_calloc(CS->max_errors, sizeof(*c->err_ms));
    sb_list_push_front(&CS->conns, &c->link);
    sb_ws_set_user(wc, c);
    return 0;
}

static void chat_conn_free(struct chat_conn *c)
{
    free(c->name);
    free(c->email);
    free(c->phone);
    free(c->page);
    free(c->lang);
    free(c->err_ms);
    free(c);
}

static void chat_ws_close(struct sb_ws_conn *wc)
{
    struct chat_conn *c = sb_ws_user(wc);

    if (!c)
        return;
    sb_ws_set_user(wc, NULL);
    if (CS) {
        chat_detach(c);
        sb_list_remove(&CS->conns, &c->link);
    }
    chat_conn_free(c);
}

static void chat_ws_message(struct sb_ws_conn *wc, const char *data,
                            size_t len)
{
    struct chat_conn *c = sb_ws_user(wc);
    struct sb_json_err je;
    const char *type;
    json_t *j;

    if (!c || !CS) {
        sb_ws_close(sb_ws_id(wc), SB_WS_GOING_AWAY, "chat stopped");
        return;
    }
    j = sb_json_parse_body(data, len, &je);
    if (!j) {
        chat_error(c, "bad_json", "a message must be one JSON object", NULL,
                   NULL);
        return;
    }
    type = json_string_value(json_object_get(j, "type"));
    if (!type)
        chat_error(c, "bad_json", "a message needs a \"type\" string",
                   "type", NULL);
    else if (!strcmp(type, "hello"))
        chat_on_hello(c, j);
    else if (!strcmp(type, "message"))
        chat_on_message(c, j);
    else if (!strcmp(type, "profile"))
        chat_on_profile(c, j);
    else if (!strcmp(type, "typing"))
        chat_on_typing(c);
    else if (!strcmp(type, "read"))
        ; /* accepted; no consumer on the agent side yet */
    else if (!strcmp(type, "ping"))
        chat_emit(c->id, json_pack("{s:s}", "type", "pong"));
    else
        chat_error(c, "unknown_type", "unknown message type", "type", NULL);
    json_decref(j);
}

/* ---- outbound: send() ---------------------------------------------------- */


/* Complete the sends queued before this turn (those queued from a
 * completion callback wait for the next one). */
static void on_kick(uv_timer_t *t)
{
    struct chat_state *s = t->data;
    size_t n = 0;
    struct chat_send *op;

    for (op = s->ready_head; op; op = op->next)
        n++;
    while (n-- > 0 && CS == s && (op = s->ready_head) != NULL) {
        struct sb_send_result r = {op->status, op->reason, NULL, -1, 0};

        s->ready_head = op->next;
        if (!s->ready_head)
            s->ready_tail = NULL;
        s->pending--;
        op->done(op->msg, &r);
        free(op);
    }
    if (CS == s && s->ready_head)
        uv_timer_start(&s->kick, on_kick, 0, 0);
}

/* The visitor a message is for, or NULL. */
static struct chat_visitor *chat_recipient(const struct sb_outmsg *msg)
{
    char vid[CHAT_VID_LEN + 1];
    const char *to = msg->to;

    if (to && *to) {
        if (!strncmp(to, "chat:", 5))
            to += 5;
        if (chat_is_token(to)) {
            chat_vid_of(to, vid);
            return chat_visitor_find(vid);
        }
        return chat_is_vid(to) ? chat_visitor_find(to) : NULL;
    }
    if (msg->conversation && *msg->conversation)
        return chat_visitor_by_conv(msg->conversation);
    return NULL;
}

/* Queue op for its completion on the next turn of the loop. */
static void chat_ready(struct chat_state *s, struct chat_send *op)
{
    op->next = NULL;
    if (s->ready_tail)
        s->ready_tail->next = op;
    else
        s->ready_head = op;
    s->ready_tail = op;
    if (!uv_is_active((uv_handle_t *)&s->kick))
        uv_timer_start(&s->kick, on_kick, 0, 0);
}

/* Relayed sends whose time is up: nobody confirmed, TEMPFAIL. */
static void on_relay_timer(uv_timer_t *t)
{
    struct chat_state *s = t->data;
    uint64_t now = uv_now(s->loop);
    struct chat_send *op;

    while ((op = s->relay_head) != NULL && op->deadline <= now) {
        s->relay_head = op->next;
        if (!s->relay_head)
            s->relay_tail = NULL;
        op->status = SB_SEND_TEMPFAIL;
        op->reason = "not connected";
        sb_metric_add(m_relay, 1, "timeout");
        chat_ready(s, op);
    }
    if (s->relay_head)
        uv_timer_start(&s->relay_timer, on_relay_timer,
                       s->relay_head->deadline - now, 0);
}

/* Ask the other instances to deliver msg (its visitor has no socket
 * here): a chat_deliver event, answered with chat_delivered by each
 * instance that had a socket to put it on. The token never leaves: the
 * event names the visitor id or the conversation. 0 when op now waits in
 * the relay list, -1 when it cannot be relayed. */
static int chat_relay(struct chat_state *s, struct chat_send *op,
                      const struct sb_outmsg *msg)
{
    char vid[CHAT_VID_LEN + 1] = "";
    const char *to = msg->to;
    json_t *ev;
    int rc;

    if (!s->remote_wait)
        return -1;
    if (to && *to) {
        if (!strncmp(to, "chat:", 5))
            to += 5;
        if (chat_is_token(to))
            chat_vid_of(to, vid);
        else if (chat_is_vid(to))
            snprintf(vid, sizeof(vid), "%s", to);
        else
            return -1;
    }
    snprintf(op->rid, sizeof(op->rid), "%s-%llu", s->instance,
             (unsigned long long)++s->relay_seq);
    ev = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I}", "type", "chat_deliver",
                   "id", op->rid, "origin", s->instance, "msg_id",
                   msg->id ? msg->id : "", "text",
                   msg->text ? msg->text : "", "at",
                   (json_int_t)sb_now_ms());
    if (!ev)
        return -1;
    if (vid[0])
        json_object_set_new(ev, "visitor", json_string(vid));
    else
        json_object_set_new(ev, "conversation",
                            json_string(msg->conversation));
    if (msg->from && *msg->from)
        json_object_set_new(ev, "name", json_string(msg->from));
    rc = sb_events_publish(NULL, ev);
    json_decref(ev);
    if (rc < 0) {
        sb_metric_add(m_relay, 1, "refused");
        return -1;
    }
    op->deadline = uv_now(s->loop) + s->remote_wait;
    op->next = NULL;
    if (s->relay_tail)
        s->relay_tail->next = op;
    else
        s->relay_head = op;
    s->relay_tail = op;
    if (!uv_is_active((uv_handle_t *)&s->relay_timer))
        uv_timer_start(&s->relay_timer, on_relay_timer, s->remote_wait, 0);
    return 0;
}

static int chat_send(struct sb_channel *ch, struct sb_outmsg *msg,
                     sb_send_done *done)
{
    struct chat_state *s = ch ? ch->priv : NULL;
    struct chat_visitor *v;
    struct chat_send *op;
    size_t n = 0;

    if (!s || s != CS || !msg || !done || s->pending >= CHAT_MAX_PENDING)
        return -1;
    op = sb_calloc(1, sizeof(*op));
    op->msg = msg;
    op->done = done;
    if ((!msg->to || !*msg->to) &&
        (!msg->conversation || !*msg->conversation)) {
        op->status = SB_SEND_PERMFAIL;
        op->reason = "no recipient";
    } else if ((v = chat_recipient(msg)) != NULL) {
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:I}", "type", "message",
                              "id", msg->id ? msg->id : "", "from", "agent",
                              "text", msg->text ? msg->text : "", "at",
                              (json_int_t)sb_now_ms());
        if (msg->from && *msg->from)
            json_object_set_new(o, "name", json_string(msg->from));
        if (o)
            n = chat_emit_visitor(v, o, 0);
    }
    s->pending++;
    if (op->reason) {
        /* PERMFAIL set above */
    } else if (n > 0) {
        op->status = SB_SEND_OK;
        op->reason = "delivered";
        sb_metric_add(m_msgs, 1, "out");
    } else if (chat_relay(s, op, msg) == 0) {
        return 0; /* completed by chat_delivered or the relay timer */
    } else {
        op->status = SB_SEND_TEMPFAIL;
        op->reason = "not connected";
    }
    chat_ready(s, op);
    return 0;
}

/* ---- live events from every instance ------------------------------------- */

/* A routing event or an agent's typing about v's conversation. */
static void chat_ev_visitor(struct chat_visitor *v, const char *type,
                            const json_t *ev)
{
    json_t *pos = json_object_get(ev, "position");
    const char *agent = json_string_value(json_object_get(ev, "agent"));

    if (!strcmp(type, "queued")) {
        v->seq++;
        chat_live_set(v, "queued",
                      json_is_integer(pos) ? json_integer_value(pos) : 0,
                      NULL);
    } else if (!strcmp(type, "assigned")) {
        v->seq++;
        chat_live_set(v, "assigned", 0, agent);
    } else if (!strcmp(type, "resolved")) {
        v->seq++;
        chat_live_set(v, "resolved", 0, NULL);
    } else if (!strcmp(type, "reopened") || !strcmp(type, "offer")) {
        /* Waiting again (the routing's own queued or assigned follows in
         * the same step) or offered (to the curator: no queued event). An
         * offered conversation keeps its place: a visitor already told
         * "queued" (by the router's answer, say) hears nothing new. */
        v->seq++;
        if (strcmp(v->st, "queued") != 0 && strcmp(v->st, "assigned") != 0)
            chat_live_set(v, "queued", 0, NULL);
    } else if (!strcmp(type, "typing")) {
        const char *from = json_string_value(json_object_get(ev, "from"));
        const char *name = json_string_value(json_object_get(ev, "name"));
        json_t *o;

        if (!from || strcmp(from, "agent") != 0 || !v->conns)
            return;
        if ((!name || !*name) && agent && *agent)
            name = sb_auth_display_name(agent);
        o = json_pack("{s:s, s:s}", "type", "typing", "from", "agent");
        if (name && *name)
            json_object_set_new(o, "name", json_string(name));
        chat_emit_visitor(v, o, 0);
    }
}

/* positions: the first 50 waiting conversations of a queue, in order. */
static void chat_ev_positions(const json_t *ev)
{
    json_t *list = json_object_get(ev, "conversations");
    size_t n = json_array_size(list);

    for (size_t i = 0; i < n; i++) {
        const char *conv = json_string_value(json_array_get(list, i));
        struct chat_visitor *v;

        if (!conv || !*conv)
            continue;
        for (v = CS->by_conv[chat_hash(conv)]; v; v = v->cnext) {
            if (strcmp(v->conversation, conv) != 0)
                continue;
            v->seq++;
            chat_live_set(v, "queued", (long long)i + 1, NULL);
        }
    }
}

/* Another instance's reply for a visitor that may be connected here. */
static void chat_ev_deliver(const json_t *ev)
{
    const char *rid = json_string_value(json_object_get(ev, "id"));
    const char *origin = json_string_value(json_object_get(ev, "origin"));
    const char *vid = json_string_value(json_object_get(ev, "visitor"));
    const char *conv = json_string_value(json_object_get(ev,
                                                         "conversation"));
    const char *name = json_string_value(json_object_get(ev, "name"));
    const char *text = json_string_value(json_object_get(ev, "text"));
    const char *mid = json_string_value(json_object_get(ev, "msg_id"));
    struct chat_visitor *v = NULL;
    json_t *o;
    size_t n;

    if (!rid || !origin || !text)
        return;
    if (vid && chat_is_vid(vid))
        v = chat_visitor_find(vid);
    else if (!vid && conv && *conv)
        v = chat_visitor_by_conv(conv);
    if (!v || !v->conns)
        return;
    o = json_pack("{s:s, s:s, s:s, s:s, s:I}", "type", "message", "id",
                  mid ? mid : "", "from", "agent", "text", text, "at",
                  (json_int_t)sb_now_ms());
    if (name && *name)
        json_object_set_new(o, "name", json_string(name));
    n = o ? chat_emit_visitor(v, o, 0) : 0;
    if (n == 0)
        return;
    sb_metric_add(m_msgs, 1, "out");
    o = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I}", "type", "chat_delivered",
                  "id", rid, "origin", origin, "by", CS->instance, "sockets",
                  (json_int_t)n, "at", (json_int_t)sb_now_ms());
    if (!o || sb_events_publish(NULL, o) < 0)
        SB_WARN(CHAT_PLACE, "delivery not confirmed to origin=%s",
                origin);
    json_decref(o);
}

/* The confirmation of one of our relayed sends. */
static void chat_ev_delivered(const json_t *ev)
{
    const char *rid = json_string_value(json_object_get(ev, "id"));
    const char *origin = json_string_value(json_object_get(ev, "origin"));
    struct chat_send **pp, *op, *prev = NULL;

    if (!rid || !origin || strcmp(origin, CS->instance) != 0)
        return;
    for (pp = &CS->relay_head; (op = *pp) != NULL; pp = &op->next) {
        if (strcmp(op->rid, rid) == 0)
            break;
        prev = op;
    }
    if (!op)
        return; /* timed out already, or confirmed by another instance */
    *pp = op->next;
    if (CS->relay_tail == op)
        CS->relay_tail = prev;
    op->status = SB_SEND_OK;
    op->reason = "delivered";
    sb_metric_add(m_relay, 1, "delivered");
    chat_ready(CS, op);
}

static void chat_on_event(const json_t *ev, void *arg)
{
    const char *type = json_string_value(json_object_get(ev, "type"));
    const char *conv = json_string_value(json_object_get(ev,
                                                         "conversation"));
    struct chat_visitor *v;

    if (!CS || !type)
        return;
    if (!strcmp(type, "positions")) {
        chat_ev_positions(ev);
        return;
    }
    if (!strcmp(type, "chat_deliver")) {
        chat_ev_deliver(ev);
        return;
    }
    if (!strcmp(type, "chat_delivered")) {
        chat_ev_delivered(ev);
        return;
    }
    if (!conv || !*conv)
        return;
    for (v = CS->by_conv[chat_hash(conv)]; v; v = v->cnext)
        if (strcmp(v->conversation, conv) == 0)
            chat_ev_visitor(v, type, ev);
}

/* ---- start and stop ------------------------------------------------------ */

static double chat_sockets_fn(void *arg)
{
    return CS ? (double)CS->conns.count : 0;
}

/* The [chat] limits, applied at start and again on SIGHUP: ws.c reads
 * them for every new socket and message, so a change applies at once. */
static void chat_apply_limits(const struct chat_conf *c)
{
    chat_proto.name = CHAT_PROTO;
    chat_proto.path = CHAT_PATH;
    chat_proto.limits.max_msg = (size_t)c->max_message;
    chat_proto.limits.msgs_per_sec = (double)c->msgs_per_sec;
    chat_proto.limits.ip_msgs_per_sec = (double)c->ip_msgs_per_sec;
    chat_proto.limits.max_conns_per_ip = (size_t)c->conns_per_ip;
    chat_proto.limits.max_queue_bytes = (size_t)c->send_queue;
    chat_proto.limits.idle_ms = (uint64_t)c->idle_timeout;
    /* The list is ours, kept for the process' life (ws.c borrows it). */
    if (chat_proto.limits.origins) {
        for (char **o = chat_proto.limits.origins; *o; o++)
            free(*o);
        free(chat_proto.limits.origins);
        chat_proto.limits.origins = NULL;
    }
    if (c->origins && c->origins[0]) {
        size_t n = 0;
        while (c->origins[n])
            n++;
        chat_proto.limits.origins = sb_calloc(n + 1, sizeof(char *));
        for (size_t i = 0; i < n; i++)
            chat_proto.limits.origins[i] = sb_strdup(c->origins[i]);
    }
}

static int chat_start(struct sb_channel *ch, uv_loop_t *loop,
                      const void *conf)
{
    const struct chat_conf *c = conf;
    struct chat_state *s;

    if (!ch || !loop || !c || CS)
        return -1;
    if (sb_static_mount(CHAT_MOUNT, c->www_dir) < 0) {
        SB_ERR(CHAT_PLACE, "cannot read the widget's pages dir=%s",
               c->www_dir);
        return -1;
    }
    chat_proto.on_open = chat_ws_open;
    chat_proto.on_message = chat_ws_message;
    chat_proto.on_close = chat_ws_close;
    chat_apply_limits(c);
    if (!chat_registered) {
        if (sb_ws_register(&chat_proto) < 0) {
            SB_ERR(CHAT_PLACE, "cannot register the WebSocket endpoint");
            return -1;
        }
        m_msgs = sb_metric_counter("sb_chat_messages_total",
                                   "Chat messages: in = stored from "
                                   "visitors, out = delivered to visitors",
                                   "direction");
        m_errors = sb_metric_counter("sb_chat_errors_total",
                                     "Error frames sent to visitors, by code",
                                     "code");
        sb_metric_gauge_fn("sb_chat_sockets", "Chat sockets open",
                           chat_sockets_fn, NULL);
        m_relay = sb_metric_counter("sb_chat_relay_total",
                                    "Replies for visitors connected to "
                                    "another instance, by outcome",
                                    "result");
        /* Routing events, agent typing and relayed replies from every
         * instance; the listener stays for the process' life and does
         * nothing while the driver is stopped. */
        if (sb_events_listen(chat_on_event, NULL) < 0) {
            SB_ERR(CHAT_PLACE, "cannot listen to live events");
            return -1;
        }
        chat_registered = 1;
    }
    s = sb_calloc(1, sizeof(*s));
    s->loop = loop;
    s->max_text = (size_t)c->max_text;
    s->max_errors = (size_t)c->max_errors;
    s->history = (int)c->history;
    s->country = sb_strdup(c->default_country ? c->default_country : "");
    s->remote_wait = (uint64_t)c->remote_wait;
    {
        char tok[SB_TOKEN_LEN + 1];

        sb_token_new(tok);
        snprintf(s->instance, sizeof(s->instance), "%.16s", tok);
    }
    uv_timer_init(loop, &s->kick);
    s->kick.data = s;
    uv_timer_init(loop, &s->relay_timer);
    s->relay_timer.data = s;
    ch->priv = s;
    CS = s;
    SB_INFO(CHAT_PLACE, "started path=%s dir=%s origins=%s max_message=%lld",
            CHAT_PATH, c->www_dir,
            chat_proto.limits.origins ? "restricted" : "any",
            c->max_message);
    return 0;
}

/* SIGHUP: new limits, Origins, texts and pages. */
static int chat_reload(struct sb_channel *ch, const void *conf)
{
    const struct chat_conf *c = conf;
    struct chat_state *s = ch ? ch->priv : NULL;

    if (!s || !c)
        return -1;
    if (sb_static_mount(CHAT_MOUNT, c->www_dir) < 0)
        SB_WARN(CHAT_PLACE, "reload: cannot read the widget's pages dir=%s",
                c->www_dir);
    chat_apply_limits(c);
    s->max_text = (size_t)c->max_text;
    s->max_errors = (size_t)c->max_errors;
    s->history = (int)c->history;
    free(s->country);
    s->country = sb_strdup(c->default_country ? c->default_country : "");
    s->remote_wait = (uint64_t)c->remote_wait;
    SB_INFO(CHAT_PLACE, "reloaded origins=%s max_message=%lld",
            chat_proto.limits.origins ? "restricted" : "any",
            c->max_message);
    return 0;
}

static void on_timer_closed(uv_handle_t *h)
{
    struct chat_state *s = h->data;

    if (--s->closing > 0)
        return;
    free(s->country);
    free(s);
}

static void chat_stop(struct sb_channel *ch)
{
    struct chat_state *s = ch ? ch->priv : NULL;
    const struct sb_send_result r = {SB_SEND_CANCELLED, "channel stopped",
                                     NULL, -1, 0};
    struct chat_send *op;
    struct sb_list_node *node;
    size_t n = 0;

    if (!s || s != CS)
        return;
    ch->priv = NULL;
    uv_timer_stop(&s->kick);
    uv_timer_stop(&s->relay_timer);
    /* Sockets stay with ws.c; they answer 1001 from now on. */
    while ((node = sb_list_pop_front(&s->conns)) != NULL) {
        struct chat_conn *c = sb_container_of(node, struct chat_conn, link);
        struct sb_ws_conn *wc = sb_ws_find(c->id);

        if (wc)
            sb_ws_set_user(wc, NULL);
        chat_detach(c);
        chat_conn_free(c);
    }
    CS = NULL; /* from here a send() or a late store reply finds nothing */
    while ((op = s->ready_head) != NULL) {
        s->ready_head = op->next;
        n++;
        op->done(op->msg, &r);
        free(op);
    }
    s->ready_tail = NULL;
    while ((op = s->relay_head) != NULL) {
        s->relay_head = op->next;
        n++;
        op->done(op->msg, &r);
        free(op);
    }
    s->relay_tail = NULL;
    s->pending = 0;
    s->closing = 2;
    uv_close((uv_handle_t *)&s->kick, on_timer_closed);
    uv_close((uv_handle_t *)&s->relay_timer, on_timer_closed);
    SB_INFO(CHAT_PLACE, "stopped cancelled=%zu", n);
}

const struct sb_channel_ops sb_chan_webchat = {
    .name = "chat",
    .conf = &chat_section,
    .start = chat_start,
    .send = chat_send,
    .stop = chat_stop,
    .reload = chat_reload,
    .flags = 0, /* no delivery reports */
};
