/* console.c - the agent console's and dashboard's WebSocket (console.h).
 *
 * Every socket is a struct cconn (the ws.c user pointer); every agent with
 * sockets here is a struct agent_state listing their ids. Asynchronous
 * steps carry the socket id, never a pointer, and look the socket up again
 * when the reply comes (it may be gone). Routing events arrive through
 * events.h from every instance and are forwarded to the sockets of the
 * agent they name; the dashboard tables are recomputed at most once a
 * second, only while something changed and somebody watches.
 */
#include "console.h"

#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "crypto.h"
#include "events.h"
#include "log.h"
#include "metrics.h"
#include "outbound.h"
#include "router.h"
#include "store.h"
#include "ws.h"

#define CON_PLACE "core.console"
#define CON_MAX_AGENTS 256
#define CON_MAX_CONNS 16
#define CON_AUTH_MS 10000 /* an unauthenticated socket lives this long */

static const struct sb_conf_key console_keys[] = {
    {"origins", SB_CONF_LIST, offsetof(struct sb_console_conf, origins), "",
     0, 256, NULL, 0,
     "allowed Origin values of console pages; empty: any (the session "
     "token is required either way)"},
    {"offline_grace", SB_CONF_DURATION,
     offsetof(struct sb_console_conf, offline_grace), "60s", 0, 3600000,
     NULL, 0, "an agent whose last console closed is set offline after this"},
    {"idle_timeout", SB_CONF_DURATION,
     offsetof(struct sb_console_conf, idle_timeout), "2m", 10000, 3600000,
     NULL, 0, "a console socket silent this long is closed (pages ping)"},
    {"max_message", SB_CONF_SIZE,
     offsetof(struct sb_console_conf, max_message), "64k", 1024, 1 << 20,
     NULL, 0, "largest message from a console"},
    {NULL, 0, 0, NULL, 0, 0, NULL, 0, NULL},
};

const struct sb_conf_section sb_console_conf_section = {
    "console", 0, sizeof(struct sb_console_conf), console_keys,
    "The agent console and operator dashboard (/console/, /dashboard/).",
    NULL,
};

struct cconn {
    uint64_t id;
    int authed, authing, watch, role, closing;
    int agent; /* counts as the user's console (presence, agent events) */
    char user[64];
    uint64_t opened_ms;
    struct cconn *pnext, *pprev; /* the list of sockets not yet authed */
};

struct agent_state {
    char name[64];
    uint64_t conns[CON_MAX_CONNS];
    int nconns;
    uint64_t gone_ms; /* when the last socket closed; 0 while any is open */
    int checking;     /* asking Redis whether other instances hold one */
};

static struct {
    uv_loop_t *loop;
    struct sb_redis *redis;
    struct sb_ws_proto proto;
    struct agent_state agents[CON_MAX_AGENTS];
    size_t nagents;
    uv_timer_t tick;
    uv_timer_t refresh;       /* the screens, at most once a second */
    int started, dirty, qdirty, refreshing;
    int sla_open;             /* a conversation may still breach an SLA */
    unsigned ticks;
    uint64_t last_refresh;    /* ms */
    struct cconn *pending;    /* sockets not yet authenticated */
    uint64_t offline_grace;
    char prefix[40];
    char instance[20];  /* this daemon's id in the console-holder sets */
    char **origins;
    struct sb_metric *m_actions;
} C;

/* ---- sending ------------------------------------------------------------- */

static void send_json(uint64_t id, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);

    if (s) {
        sb_ws_send(id, s, strlen(s));
        free(s);
    }
    json_decref(j);
}

static void send_error(uint64_t id, const char *code, const char *msg,
                       const char *ref)
{
    json_t *j = json_pack("{s:s, s:s, s:s}", "type", "error", "code", code,
                          "message", msg ? msg : code);

    if (ref)
        json_object_set_new(j, "id", json_string(ref));
    send_json(id, j);
}

static struct cconn *conn_of(uint64_t id)
{
    struct sb_ws_conn *c = sb_ws_find(id);

    return c ? sb_ws_user(c) : NULL;
}

/* ---- agents with sockets here ------------------------------------------- */

static struct agent_state *agent_get(const char *name, int create)
{
    for (size_t i = 0; i < C.nagents; i++)
        if (strcmp(C.agents[i].name, name) == 0)
            return &C.agents[i];
    if (!create || C.nagents == CON_MAX_AGENTS)
        return NULL;
    memset(&C.agents[C.nagents], 0, sizeof(C.agents[0]));
    snprintf(C.agents[C.nagents].name, sizeof(C.agents[0].name), "%s", name);
    return &C.agents[C.nagents++];
}

static void agent_drop(struct agent_state *a)
{
    size_t i = (size_t)(a - C.agents);

    C.agents[i] = C.agents[--C.nagents];
}

/* Send a copy of j to every socket of agent name; consumes j. */
static void send_agent(const char *name, json_t *j)
{
    struct agent_state *a = name ? agent_get(name, 0) : NULL;

    if (a)
        for (int i = 0; i < a->nconns; i++)
            send_json(a->conns[i], json_incref(j));
    json_decref(j);
}

/* ---- completions of actions -------------------------------------------- */

struct op {
    uint64_t conn;
    char action[16];
    char ref[72];   /* the client's id for the request */
    char conv[48];
    char before[48];
    json_t *conv_obj, *cust_obj;
};

static struct op *op_new(uint64_t conn, const char *action, const char *ref,
                         const char *conv)
{
    struct op *o = sb_calloc(1, sizeof(*o));

    o->conn = conn;
    snprintf(o->action, sizeof(o->action), "%s", action);
    snprintf(o->ref, sizeof(o->ref), "%s", ref ? ref : "");
    snprintf(o->conv, sizeof(o->conv), "%s", conv ? conv : "");
    return o;
}

static void op_free(struct op *o)
{
    json_decref(o->conv_obj);
    json_decref(o->cust_obj);
    free(o);
}

static const char *status_code(enum sb_store_status st)
{
    switch (st) {
    case SB_STORE_NOTFOUND: return "not_found";
    case SB_STORE_CONFLICT: return "conflict";
    case SB_STORE_INVALID: return "invalid";
    default: return "unavailable";
    }
}

/* Router/outbound completion: {"type":"result","action","conversation",
 * "ok":true,"result":{...}} or an error frame. */
static void on_action(enum sb_store_status st, json_t *result,
                      const char *err, void *arg)
{
    struct op *o = arg;
    json_t *j;

    sb_metric_add(C.m_actions, 1, o->action,
                  st == SB_STORE_OK ? "ok" : status_code(st));
    if (st != SB_STORE_OK) {
        send_error(o->conn, status_code(st), err, o->ref[0] ? o->ref : NULL);
        json_decref(result);
        op_free(o);
        return;
    }
    j = json_pack("{s:s, s:s, s:s, s:b, s:o}", "type", "result", "action",
                  o->action, "conversation", o->conv, "ok", 1, "result",
                  result ? result : json_null());
    if (o->ref[0])
        json_object_set_new(j, "id", json_string(o->ref));
    send_json(o->conn, j);
    op_free(o);
}

static void on_note(enum sb_store_status st,
                    const struct sb_contact_result *res, const char *err,
                    void *arg)
{
    json_t *r = NULL;

    if (st == SB_STORE_OK)
        r = json_pack("{s:s}", "contact", res->contact_id);
    on_action(st, r, err, arg);
}

/* "open": the conversation, its customer, the customer's whole timeline. */
static void on_open_timeline(enum sb_store_status st, json_t *tl,
                             const char *err, void *arg)
{
    struct op *o = arg;
    json_t *j;

    if (st != SB_STORE_OK) {
        send_error(o->conn, status_code(st), err, o->ref[0] ? o->ref : NULL);
        json_decref(tl);
        op_free(o);
        return;
    }
    j = json_pack("{s:s, s:O, s:O, s:O, s:O}", "type", "timeline",
                  "conversation", o->conv_obj, "customer", o->cust_obj,
                  "entries", json_object_get(tl, "entries"), "next_before",
                  json_object_get(tl, "next_before"));
    if (o->ref[0])
        json_object_set_new(j, "id", json_string(o->ref));
    send_json(o->conn, j);
    json_decref(tl);
    op_free(o);
}

static void on_open_customer(enum sb_store_status st, json_t *cust,
                             const char *err, void *arg)
{
    struct op *o = arg;
    const char *id = json_string_value(json_object_get(cust, "id"));

    if (st != SB_STORE_OK) {
        on_open_timeline(st, cust, err, o);
        return;
    }
    o->cust_obj = cust;
    if (sb_timeline_customer(id, o->before[0] ? o->before : NULL, 100,
                             on_open_timeline, o) < 0)
        on_open_timeline(SB_STORE_UNAVAILABLE, NULL, "redis unavailable", o);
}

static void on_open_conv(enum sb_store_status st, json_t *conv,
                         const char *err, void *arg)
{
    struct op *o = arg;
    const char *cust = json_string_value(json_object_get(conv, "customer"));

    if (st != SB_STORE_OK) {
        on_open_timeline(st, conv, err, o);
        return;
    }
    o->conv_obj = conv;
    if (sb_customer_get(cust ? cust : "", on_open_customer, o) < 0)
        on_open_timeline(SB_STORE_UNAVAILABLE, NULL, "redis unavailable", o);
}

static int is_supervisor(int role)
{
    return role >= SB_ROLE_OPERATOR;
}

static void run_guarded(struct op *o, const char *user, const char *text,
                        json_t *msg);

/* ---- the state snapshot -------------------------------------------------- */

static void on_state_agents(enum sb_store_status st, json_t *res,
                            const char *err, void *arg)
{
    struct op *o = arg;
    struct cconn *cc = conn_of(o->conn);
    json_t *me = json_null(), *a;
    size_t i;

    if (st != SB_STORE_OK || !cc) {
        if (cc)
            send_error(o->conn, status_code(st), err, NULL);
        json_decref(res);
        op_free(o);
        return;
    }
    json_array_foreach(json_object_get(res, "agents"), i, a)
    {
        const char *n = json_string_value(json_object_get(a, "name"));
        if (n && strcmp(n, cc->user) == 0)
            me = a;
    }
    send_json(o->conn, json_pack("{s:s, s:O}", "type", "state", "me", me));
    json_decref(res);
    op_free(o);
}

static void on_state_queues(enum sb_store_status st, json_t *res,
                            const char *err, void *arg)
{
    struct op *o = arg;

    if (st == SB_STORE_OK)
        send_json(o->conn, json_pack("{s:s, s:O}", "type", "queues",
                                     "queues",
                                     json_object_get(res, "queues")));
    json_decref(res);
    op_free(o);
}

static void send_state(uint64_t id)
{
    struct op *a = op_new(id, "state", NULL, NULL);
    struct op *q = op_new(id, "queues", NULL, NULL);

    if (sb_router_agents(on_state_agents, a) < 0)
        op_free(a);
    if (sb_router_queues(on_state_queues, q) < 0)
        op_free(q);
}

/* ---- the dashboard ------------------------------------------------------- */

#define CON_MAX_WATCHERS 64

static uint64_t watchers[CON_MAX_WATCHERS];
static size_t nwatchers;
static json_t *dash_queues;

static void watcher_remove(uint64_t id)
{
    for (size_t i = 0; i < nwatchers; i++)
        if (watchers[i] == id) {
            watchers[i] = watchers[--nwatchers];
            return;
        }
}

static void on_dash_agents(enum sb_store_status st, json_t *res,
                           const char *err, void *arg)
{
    json_t *j;

    C.refreshing = 0;
    if (st != SB_STORE_OK || !dash_queues) {
        json_decref(res);
        json_decref(dash_queues);
        dash_queues = NULL;
        C.dirty = 1;
        return;
    }
    j = json_pack("{s:s, s:O, s:O, s:I}", "type", "dashboard", "queues",
                  json_object_get(dash_queues, "queues"), "agents",
                  json_object_get(res, "agents"), "at",
                  (json_int_t)sb_now_ms());
    /* A breach happens with time, not with an event: while one may still
     * happen, the tick refreshes the dashboard every few seconds. */
    C.sla_open = 0;
    {
        json_t *q;
        size_t i;
        json_array_foreach(json_object_get(dash_queues, "queues"), i, q)
        {
            json_int_t sla = json_integer_value(json_object_get(q, "sla"));
            json_int_t open = json_integer_value(json_object_get(q, "open"));
            json_int_t br =
                json_integer_value(json_object_get(q, "sla_breaches"));
            if (sla > 0 && open > br)
                C.sla_open = 1;
        }
    }
    for (size_t i = 0; i < nwatchers; i++)
        send_json(watchers[i], json_incref(j));
    json_decref(j);
    json_decref(res);
    json_decref(dash_queues);
    dash_queues = NULL;
}

static void on_dash_queues(enum sb_store_status st, json_t *res,
                           const char *err, void *arg)
{
    if (st != SB_STORE_OK) {
        C.refreshing = 0;
        C.dirty = 1;
        json_decref(res);
        return;
    }
    dash_queues = res;
    if (sb_router_agents(on_dash_agents, NULL) < 0) {
        C.refreshing = 0;
        C.dirty = 1;
        json_decref(dash_queues);
        dash_queues = NULL;
    }
}

static void dashboard_refresh(void)
{
    if (!nwatchers || C.refreshing)
        return;
    C.dirty = 0;
    C.refreshing = 1;
    if (sb_router_queues(on_dash_queues, NULL) < 0) {
        C.refreshing = 0;
        C.dirty = 1;
    }
}

static int any_console(void)
{
    for (size_t i = 0; i < C.nagents; i++)
        if (C.agents[i].nconns)
            return 1;
    return 0;
}

/* The queues table for every console here (their waiting counts). */
static void on_push_queues(enum sb_store_status st, json_t *res,
                           const char *err, void *arg)
{
    json_t *j;

    (void)err;
    (void)arg;
    if (st != SB_STORE_OK) {
        C.qdirty = 1;
        json_decref(res);
        return;
    }
    j = json_pack("{s:s, s:O}", "type", "queues", "queues",
                  json_object_get(res, "queues"));
    for (size_t i = 0; j && i < C.nagents; i++)
        for (int k = 0; k < C.agents[i].nconns; k++)
            send_json(C.agents[i].conns[k], json_incref(j));
    json_decref(j);
    json_decref(res);
}

static void on_refresh(uv_timer_t *t)
{
    (void)t;
    C.last_refresh = sb_mono_ms();
    if (C.dirty)
        dashboard_refresh();
    if (C.qdirty) {
        C.qdirty = 0;
        if (any_console() && sb_router_queues(on_push_queues, NULL) < 0)
            C.qdirty = 1;
    }
}

/* Something changed: refresh the screens almost at once (the events of
 * one step, e.g. a contact and its routing, come within milliseconds: wait
 * CON_COALESCE_MS for them), and at most once a second, so that a change
 * shows within a second and a burst of changes costs one read a second. */
#define CON_COALESCE_MS 50

static void schedule_refresh(void)
{
    uint64_t now = sb_mono_ms(), delay = CON_COALESCE_MS;

    if (!C.started || uv_is_active((uv_handle_t *)&C.refresh))
        return;
    if ((C.dirty && nwatchers) || (C.qdirty && any_console())) {
        if (C.last_refresh && now + delay < C.last_refresh + 1000)
            delay = C.last_refresh + 1000 - now;
        uv_timer_start(&C.refresh, on_refresh, delay, 0);
    }
}

/* ---- sockets waiting for their auth message ----------------------------- */

static void pending_add(struct cconn *cc)
{
    cc->pprev = NULL;
    cc->pnext = C.pending;
    if (C.pending)
        C.pending->pprev = cc;
    C.pending = cc;
}

static void pending_remove(struct cconn *cc)
{
    if (cc->pprev)
        cc->pprev->pnext = cc->pnext;
    else if (C.pending == cc)
        C.pending = cc->pnext;
    if (cc->pnext)
        cc->pnext->pprev = cc->pprev;
    cc->pnext = cc->pprev = NULL;
}

/* ---- routing events from every instance --------------------------------- */

/* The newest entries of the conversation: send the one of the event's
 * contact (o->before holds its id; contacts may arrive in a burst). */
/* The contact an event named, read by id (sb_contact_get): in a burst the
 * newest entries of the conversation are not necessarily this one. */
static void on_entry(enum sb_store_status st, json_t *tl, const char *err,
                     void *arg)
{
    struct op *o = arg;
    json_t *e, *found = NULL;
    size_t i;

    (void)err;
    json_array_foreach(json_object_get(tl, "entries"), i, e)
    {
        const char *id = json_string_value(json_object_get(e, "id"));
        if (id && strcmp(id, o->before) == 0)
            found = e;
    }
    if (st == SB_STORE_OK && found)
        send_agent(o->ref, json_pack("{s:s, s:s, s:O}", "type", "entry",
                                     "conversation", o->conv, "entry",
                                     found));
    json_decref(tl);
    op_free(o);
}

static void on_event(const json_t *ev, void *arg)
{
    const char *type = json_string_value(json_object_get(ev, "type"));
    const char *agent = json_string_value(json_object_get(ev, "agent"));
    const char *conv =
        json_string_value(json_object_get(ev, "conversation"));
    const char *cid = json_string_value(json_object_get(ev, "id"));

    if (strcmp(type, "typing") != 0) {
        C.dirty = 1;
        if (strcmp(type, "contact") != 0)
            C.qdirty = 1;
        schedule_refresh();
    }
    if (!agent || !*agent || !agent_get(agent, 0))
        return;
    if (strcmp(type, "offer") == 0 || strcmp(type, "withdrawn") == 0 ||
        strcmp(type, "assigned") == 0 || strcmp(type, "resolved") == 0 ||
        strcmp(type, "presence") == 0) {
        json_t *j = json_deep_copy(ev);
        send_agent(agent, j);
    } else if (strcmp(type, "contact") == 0 && conv && *conv && cid &&
               strlen(cid) < sizeof(((struct op *)0)->before)) {
        /* A new entry in a conversation this agent holds: send it. The
         * agent's own outbound reply comes back this way too, so every
         * open tab shows it. */
        struct op *o = op_new(0, "entry", agent, conv);
        snprintf(o->before, sizeof(o->before), "%s", cid);
        if (sb_contact_get(cid, on_entry, o) < 0)
            op_free(o);
    } else if (strcmp(type, "typing") == 0) {
        const char *from = json_string_value(json_object_get(ev, "from"));
        if (from && strcmp(from, "customer") == 0)
            send_agent(agent, json_deep_copy(ev));
    }
}

/* ---- messages from a console ------------------------------------------- */

static void on_authed(int status, const char *user, int role, void *arg)
{
    uint64_t id = (uint64_t)(uintptr_t)arg;
    struct cconn *cc = conn_of(id);
    struct agent_state *a;
    int first;

    if (!cc)
        return;
    cc->authing = 0;
    if (status != 0) {
        sb_ws_close(id, status < 0 ? SB_WS_SERVER_ERROR : SB_WS_POLICY,
                    status < 0 ? "redis unavailable" : "invalid session");
        return;
    }
    if (cc->agent) {
        a = agent_get(user, 1);
        if (!a || a->nconns == CON_MAX_CONNS) {
            sb_ws_close(id, SB_WS_POLICY, "too many consoles");
            return;
        }
        first = a->nconns == 0 && a->gone_ms == 0;
        a->conns[a->nconns++] = id;
        a->gone_ms = 0;
    } else {
        first = 0; /* a dashboard: no presence, no agent events */
    }
    pending_remove(cc);
    cc->authed = 1;
    cc->role = role;
    snprintf(cc->user, sizeof(cc->user), "%s", user);
    send_json(id, json_pack("{s:s, s:s, s:s, s:s}", "type", "hello", "user",
                            user, "role", sb_role_name(role), "name",
                            sb_auth_display_name(user)));
    if (first) {
        /* The first console of an agent that had none: online. */
        struct op *o = op_new(id, "presence", NULL, NULL);
        if (sb_router_presence(user, "online", on_action, o) < 0)
            op_free(o);
    }
    send_state(id);
}

static const char *str_of(json_t *m, const char *k, size_t max)
{
    const char *v = json_string_value(json_object_get(m, k));

    if (!v || !*v || strlen(v) > max)
        return NULL;
    return v;
}

static void on_guard_conv(enum sb_store_status st, json_t *conv,
                          const char *err, void *arg);

static void handle(struct sb_ws_conn *c, struct cconn *cc, json_t *m)
{
    const char *type = json_string_value(json_object_get(m, "type"));
    const char *ref = str_of(m, "id", 64);
    const char *conv = str_of(m, "conversation", 40);
    uint64_t id = cc->id;
    struct op *o;
    int r = 0;

    if (!type) {
        if (!cc->authed)
            sb_ws_close(id, SB_WS_POLICY, "auth first");
        else
            send_error(id, "invalid", "a message needs a type", ref);
        return;
    }
    if (strcmp(type, "ping") == 0) {
        send_json(id, json_pack("{s:s}", "type", "pong"));
        return;
    }
    if (!cc->authed) {
        const char *tok = str_of(m, "token", 64);
        int rc;
        if (strcmp(type, "auth") != 0 || !tok) {
            sb_ws_close(id, SB_WS_POLICY, "auth first");
            return;
        }
        if (cc->authing)
            return;
        cc->authing = 1;
        cc->agent = !json_is_false(json_object_get(m, "presence"));
        rc = sb_auth_token(tok, on_authed, (void *)(uintptr_t)id);
        if (rc != 0)
            sb_ws_close(id, rc < 0 ? SB_WS_SERVER_ERROR : SB_WS_POLICY,
                        rc < 0 ? "redis unavailable" : "invalid session");
        return;
    }
    if (strcmp(type, "state") == 0) {
        send_state(id);
        return;
    }
    if (strcmp(type, "watch") == 0) {
        if (!is_supervisor(cc->role)) {
            send_error(id, "forbidden", "the dashboard is for operators",
                       ref);
            return;
        }
        if (!cc->watch && nwatchers < CON_MAX_WATCHERS) {
            cc->watch = 1;
            watchers[nwatchers++] = id;
        }
        C.dirty = 1;
        dashboard_refresh();
        return;
    }
    if (strcmp(type, "presence") == 0) {
        const char *st = str_of(m, "state", 16);
        if (!st || (strcmp(st, "online") && strcmp(st, "away") &&
                    strcmp(st, "offline"))) {
            send_error(id, "invalid", "state: online, away or offline", ref);
            return;
        }
        o = op_new(id, "presence", ref, NULL);
        r = sb_router_presence(cc->user, st, on_action, o);
    } else if (strcmp(type, "typing") == 0) {
        json_t *ev;
        if (!conv)
            return;
        ev = json_pack("{s:s, s:s, s:s, s:s, s:s}", "type", "typing", "from",
                       "agent", "conversation", conv, "agent", cc->user,
                       "name", sb_auth_display_name(cc->user));
        sb_events_publish(C.redis, ev);
        json_decref(ev);
        return;
    } else if (!conv) {
        send_error(id, "invalid", "conversation is required", ref);
        return;
    } else if (strcmp(type, "open") == 0) {
        const char *before = str_of(m, "before", 40);
        o = op_new(id, "open", ref, conv);
        if (before)
            snprintf(o->before, sizeof(o->before), "%s", before);
        r = sb_conversation_get(conv, on_open_conv, o);
    } else if (strcmp(type, "accept") == 0) {
        o = op_new(id, "accept", ref, conv);
        r = sb_router_accept(conv, cc->user, on_action, o);
    } else if (strcmp(type, "decline") == 0) {
        o = op_new(id, "decline", ref, conv);
        r = sb_router_decline(conv, cc->user, on_action, o);
    } else if (strcmp(type, "reply") == 0 || strcmp(type, "note") == 0 ||
               strcmp(type, "resolve") == 0 ||
               strcmp(type, "transfer") == 0) {
        const char *text = json_string_value(json_object_get(m, "text"));
        if ((strcmp(type, "reply") == 0 || strcmp(type, "note") == 0) &&
            (!text || !*text || strlen(text) > 16384)) {
            send_error(id, "invalid", "text: 1..16384 bytes", ref);
            return;
        }
        o = op_new(id, type, ref, conv);
        run_guarded(o, cc->user, text, m);
        (void)c;
        return;
    } else {
        send_error(id, "invalid", "unknown message type", ref);
        return;
    }
    if (r < 0) {
        send_error(id, "unavailable", "redis unavailable", ref);
        op_free(o);
    }
}

/* The guarded actions: a plain agent must hold the conversation (notes
 * too: a note is about one's own work; supervisors may note anything). */
struct guard {
    struct op *op;
    char user[64];
    int role;
    char *text;
    char to_agent[64], to_queue[64];
};

static void guard_free(struct guard *g)
{
    free(g->text);
    free(g);
}

static void guard_run(struct guard *g)
{
    struct op *o = g->op;
    int r = 0;

    if (strcmp(o->action, "reply") == 0) {
        r = sb_outbound_reply(o->conv, g->user, sb_auth_display_name(g->user),
                              g->text, o->ref[0] ? o->ref : NULL, on_action,
                              o);
    } else if (strcmp(o->action, "note") == 0) {
        struct sb_contact_in in;
        memset(&in, 0, sizeof(in));
        in.channel = "note";
        in.direction = "internal";
        in.type = "note";
        in.conversation = o->conv;
        in.text = g->text;
        in.text_len = strlen(g->text);
        in.agent = g->user;
        r = sb_contact_ingest(&in, on_note, o);
    } else if (strcmp(o->action, "resolve") == 0) {
        r = sb_router_resolve(o->conv, g->user, on_action, o);
    } else {
        r = sb_router_transfer(o->conv, g->to_agent[0] ? g->to_agent : NULL,
                               g->to_queue[0] ? g->to_queue : NULL, g->user,
                               on_action, o);
    }
    if (r < 0) {
        send_error(o->conn, "unavailable", "redis unavailable",
                   o->ref[0] ? o->ref : NULL);
        op_free(o);
    }
    guard_free(g);
}

static void on_guard_conv(enum sb_store_status st, json_t *conv,
                          const char *err, void *arg)
{
    struct guard *g = arg;
    const char *holder = json_string_value(json_object_get(conv, "agent"));

    if (st != SB_STORE_OK) {
        send_error(g->op->conn, status_code(st), err,
                   g->op->ref[0] ? g->op->ref : NULL);
        op_free(g->op);
        guard_free(g);
    } else if (!is_supervisor(g->role) &&
               (!holder || strcmp(holder, g->user) != 0)) {
        send_error(g->op->conn, "forbidden",
                   "the conversation is not assigned to you",
                   g->op->ref[0] ? g->op->ref : NULL);
        op_free(g->op);
        guard_free(g);
    } else {
        guard_run(g);
    }
    json_decref(conv);
}

static void run_guarded(struct op *o, const char *user, const char *text,
                        json_t *msg)
{
    struct cconn *cc = conn_of(o->conn);
    struct guard *g = sb_calloc(1, sizeof(*g));
    const char *ta = str_of(msg, "agent", 63), *tq = str_of(msg, "queue", 63);

    g->op = o;
    snprintf(g->user, sizeof(g->user), "%s", user);
    g->role = cc ? cc->role : 0;
    g->text = text ? sb_strdup(text) : NULL;
    if (strcmp(o->action, "transfer") == 0) {
        if ((ta != NULL) == (tq != NULL)) {
            send_error(o->conn, "invalid", "transfer takes an agent or a queue",
                       o->ref[0] ? o->ref : NULL);
            op_free(o);
            guard_free(g);
            return;
        }
        snprintf(g->to_agent, sizeof(g->to_agent), "%s", ta ? ta : "");
        snprintf(g->to_queue, sizeof(g->to_queue), "%s", tq ? tq : "");
    }
    if (sb_conversation_get(o->conv, on_guard_conv, g) < 0) {
        send_error(o->conn, "unavailable", "redis unavailable",
                   o->ref[0] ? o->ref : NULL);
        op_free(o);
        guard_free(g);
    }
}

/* ---- the WebSocket endpoint -------------------------------------------- */

static int on_open(struct sb_ws_conn *c)
{
    struct cconn *cc = sb_calloc(1, sizeof(*cc));

    cc->id = sb_ws_id(c);
    cc->opened_ms = sb_mono_ms();
    sb_ws_set_user(c, cc);
    pending_add(cc);
    return 0;
}

static void on_message(struct sb_ws_conn *c, const char *data, size_t len)
{
    struct cconn *cc = sb_ws_user(c);
    json_error_t jerr;
    json_t *m = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);

    if (!m || !json_is_object(m)) {
        if (!cc->authed)
            sb_ws_close(cc->id, SB_WS_POLICY, "auth first");
        else
            send_error(cc->id, "bad_json", "messages are JSON objects",
                       NULL);
        json_decref(m);
        return;
    }
    handle(c, cc, m);
    json_decref(m);
}

/* ---- consoles on other instances ----------------------------------------
 *
 * An agent may have consoles on several daemons. Each instance keeps
 * "<prefix>console:<agent>" (a sorted set: instance id scored by an expiry
 * 15 s ahead) fresh every second while it holds a console of that agent,
 * and removes itself when its last one closes. Offline after the grace
 * happens only when no other live instance is listed, so closing a tab on
 * one instance does not set an agent offline who still works on another;
 * a crashed instance's entry simply expires. */

#define HOLDER_TTL_MS 15000

static void holder_key(const char *agent, char *out, size_t outlen)
{
    snprintf(out, outlen, "%sconsole:%s", C.prefix, agent);
}

static void on_holder_cmd(redisReply *reply, const char *err, void *arg)
{
    (void)reply;
    (void)err;
    (void)arg;
}

static void holder_touch(const char *agent, int present)
{
    char key[128], score[24];
    const char *argv[4];

    holder_key(agent, key, sizeof(key));
    argv[1] = key;
    if (present) {
        snprintf(score, sizeof(score), "%lld",
                 (long long)(sb_now_ms() + HOLDER_TTL_MS));
        argv[0] = "ZADD";
        argv[2] = score;
        argv[3] = C.instance;
        sb_redis_cmdv(C.redis, on_holder_cmd, NULL, 4, argv, NULL);
        argv[0] = "PEXPIRE";
        argv[2] = "60000";
        sb_redis_cmdv(C.redis, on_holder_cmd, NULL, 3, argv, NULL);
    } else {
        argv[0] = "ZREM";
        argv[2] = C.instance;
        sb_redis_cmdv(C.redis, on_holder_cmd, NULL, 3, argv, NULL);
    }
}

static void on_holders(redisReply *reply, const char *err, void *arg)
{
    char *name = arg;
    struct agent_state *a = agent_get(name, 0);

    if (a)
        a->checking = 0;
    if (a && a->nconns == 0 && reply && reply->type == REDIS_REPLY_INTEGER) {
        if (reply->integer > 0) {
            /* Another instance holds a console: look again after another
             * grace (that instance may crash: its entry then expires). */
            SB_DEBUG(CON_PLACE, "agent still online elsewhere agent=%s",
                     name);
            a->gone_ms = sb_now_ms();
        } else {
            struct op *o = op_new(0, "presence", NULL, NULL);
            SB_INFO(CON_PLACE, "agent offline after grace agent=%s", name);
            if (sb_router_presence(name, "offline", on_action, o) < 0)
                op_free(o); /* a is kept: tried again next second */
            else
                agent_drop(a);
        }
    }
    free(name);
}

/* Count the other live instances holding a console of a. */
static void holders_check(struct agent_state *a)
{
    char key[128], now[24];
    const char *rm[4], *cnt[4];
    char *name = sb_strdup(a->name);

    holder_key(a->name, key, sizeof(key));
    snprintf(now, sizeof(now), "%lld", (long long)sb_now_ms());
    rm[0] = "ZREMRANGEBYSCORE";
    rm[1] = key;
    rm[2] = "-inf";
    rm[3] = now;
    cnt[0] = "ZCARD";
    cnt[1] = key;
    a->checking = 1;
    sb_redis_cmdv(C.redis, on_holder_cmd, NULL, 4, rm, NULL);
    if (sb_redis_cmdv(C.redis, on_holders, name, 2, cnt, NULL) < 0) {
        a->checking = 0;
        free(name);
    }
}

static void on_close(struct sb_ws_conn *c)
{
    struct cconn *cc = sb_ws_user(c);
    struct agent_state *a;

    if (!cc)
        return;
    pending_remove(cc);
    if (cc->watch)
        watcher_remove(cc->id);
    if (cc->authed && cc->agent && (a = agent_get(cc->user, 0))) {
        for (int i = 0; i < a->nconns; i++)
            if (a->conns[i] == cc->id) {
                a->conns[i] = a->conns[--a->nconns];
                break;
            }
        if (a->nconns == 0) {
            a->gone_ms = sb_now_ms();
            holder_touch(a->name, 0);
        }
    }
    free(cc);
}

/* Once a second: agents gone past the grace go offline; sockets that never
 * authenticated are closed; the dashboard is refreshed when dirty. */
static void on_tick(uv_timer_t *t)
{
    uint64_t now = sb_now_ms(), mono = sb_mono_ms();

    for (struct cconn *p = C.pending; p; p = p->pnext)
        if (!p->closing && mono - p->opened_ms >= CON_AUTH_MS) {
            p->closing = 1;
            sb_ws_close(p->id, SB_WS_POLICY, "auth timeout");
        }
    for (size_t i = 0; i < C.nagents; i++) {
        struct agent_state *a = &C.agents[i];
        if (a->nconns > 0)
            holder_touch(a->name, 1);
        else if (a->gone_ms && !a->checking &&
                 now - a->gone_ms >= C.offline_grace)
            holders_check(a); /* offline unless held elsewhere */
    }
    if (nwatchers && C.sla_open && ++C.ticks % 5 == 0)
        C.dirty = 1;
    schedule_refresh(); /* a refresh that failed is tried again */
}

int sb_console_init(uv_loop_t *loop, struct sb_redis *r,
                    const struct sb_config *conf)
{
    const struct sb_console_conf *cc = sb_config_get(conf, "console");

    C.loop = loop;
    C.redis = r;
    C.offline_grace = (uint64_t)cc->offline_grace;
    snprintf(C.prefix, sizeof(C.prefix), "%s",
             ((const struct sb_redis_conf *)sb_config_get(conf, "redis"))
                 ->prefix);
    {
        char tok[SB_TOKEN_LEN + 1];
        sb_token_new(tok);
        snprintf(C.instance, sizeof(C.instance), "%.16s", tok);
    }
    C.proto.name = "switchboard.agent.v1";
    C.proto.path = "/console/ws";
    C.proto.limits.max_msg = (size_t)cc->max_message;
    C.proto.limits.msgs_per_sec = 20;
    C.proto.limits.ip_msgs_per_sec = 200;
    C.proto.limits.max_conns_per_ip = 64;
    C.proto.limits.max_queue_bytes = 4u << 20;
    C.proto.limits.idle_ms = (uint64_t)cc->idle_timeout;
    /* ws.c reads the list on every upgrade and the config is freed on
     * reload: keep our own copy (origins need a restart to change). */
    if (cc->origins && *cc->origins) {
        size_t n = 0;
        while (cc->origins[n])
            n++;
        C.origins = sb_calloc(n + 1, sizeof(char *));
        for (size_t i = 0; i < n; i++)
            C.origins[i] = sb_strdup(cc->origins[i]);
    }
    C.proto.limits.origins = C.origins;
    C.proto.on_open = on_open;
    C.proto.on_message = on_message;
    C.proto.on_close = on_close;
    C.m_actions = sb_metric_counter("sb_console_actions_total",
                                    "Console actions by result",
                                    "action,result");
    if (sb_ws_register(&C.proto) < 0 || sb_events_listen(on_event, NULL) < 0)
        return -1;
    uv_timer_init(loop, &C.tick);
    uv_timer_init(loop, &C.refresh);
    uv_timer_start(&C.tick, on_tick, 1000, 1000);
    C.started = 1;
    return 0;
}

void sb_console_stop(void)
{
    if (C.started) {
        uv_close((uv_handle_t *)&C.tick, NULL);
        uv_close((uv_handle_t *)&C.refresh, NULL);
    }
    C.started = 0;
    json_decref(dash_queues);
    dash_queues = NULL;
    for (char **o = C.origins; o && *o; o++)
        free(*o);
    free(C.origins);
    C.origins = NULL;
}
