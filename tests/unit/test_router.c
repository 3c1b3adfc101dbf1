/* test_router.c - the routing engine against a real redis-server.
 *
 * Starts a private redis-server on a unix socket in a temp dir (killed by
 * PID at teardown), makes customers and conversations with the store, and
 * drives the router with a controlled clock: each strategy, the curator
 * and its fallback hops, capacity (also under two connections racing),
 * offer timeouts, declines, priority, FIFO release, max_wait overflow,
 * transfer, resolve and reopen, queue positions, rules, the views, the
 * published events, and the contact-log entry of every decision. A plain
 * hiredis connection checks what landed in Redis. Every wait is bounded.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <uv.h>

#include "auth.h"
#include "config.h"
#include "metrics.h"
#include "redis.h"
#include "router.h"
#include "store.h"
#include "util.h"

#define T_PREFIX "t:"
#define T_WAIT_MS 10000
#define T_PW "$argon2id$v=19$m=65536,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"

#include "redis_server.h"

static int t_server_start(struct t_server *s)
{
    return t_server_start_named(s, "router");
}

/* ---- environment --------------------------------------------------------- */

struct t_env {
    struct t_server srv;
    uv_loop_t loop;
    struct sb_redis *r, *r2;
    redisContext *sync;
};

static struct t_env *E;
static int64_t T_NOW;
static int64_t T_T0; /* a whole second near the real clock: ingest
                      * stamps `created` with Redis' own */
static json_t *LAST; /* result of the last router call */
static json_t *LOGF; /* fields of the last log entry looked up */
static int CUST_SEQ;

static int64_t t_clock(void *arg)
{
    SB_UNUSED(arg);
    return T_NOW;
}

static int t_run_until(const int *flag, int want, int ms)
{
    uint64_t end = sb_mono_ms() + (uint64_t)ms;

    while (*flag < want && sb_mono_ms() < end) {
        uv_run(&E->loop, UV_RUN_NOWAIT);
        if (*flag < want)
            t_sleep_ms(1);
    }
    return *flag >= want;
}

static struct sb_redis *t_connect(uv_loop_t *loop, const char *sock)
{
    struct sb_redis_conf conf;
    struct sb_redis *r;
    uint64_t end;

    memset(&conf, 0, sizeof(conf));
    conf.socket = (char *)sock;
    conf.prefix = (char *)T_PREFIX;
    conf.connect_timeout = 2000;
    conf.command_timeout = 5000;
    conf.backoff_min = 50;
    conf.backoff_max = 200;
    r = sb_redis_new(loop, &conf, "test");
    end = sb_mono_ms() + T_WAIT_MS;
    while (r && !sb_redis_is_up(r) && sb_mono_ms() < end) {
        uv_run(loop, UV_RUN_NOWAIT);
        t_sleep_ms(1);
    }
    return r;
}

static int group_setup(void **state)
{
    struct t_env *e = sb_calloc(1, sizeof(*e));

    signal(SIGPIPE, SIG_IGN);
    if (t_server_start(&e->srv) < 0) {
        t_server_stop(&e->srv);
        free(e);
        return -1;
    }
    uv_loop_init(&e->loop);
    e->r = t_connect(&e->loop, e->srv.sock);
    e->r2 = t_connect(&e->loop, e->srv.sock);
    e->sync = t_sync_connect(e->srv.sock);
    E = e;
    *state = e;
    if (!e->r || !sb_redis_is_up(e->r) || !e->r2 || !sb_redis_is_up(e->r2) ||
        !e->sync)
        return -1;
    return 0;
}

static int group_teardown(void **state)
{
    struct t_env *e = *state;
    uint64_t end;

    if (!e)
        return 0;
    if (e->sync)
        redisFree(e->sync);
    if (e->r)
        sb_redis_close(e->r);
    if (e->r2)
        sb_redis_close(e->r2);
    end = sb_mono_ms() + T_WAIT_MS;
    while (uv_loop_alive(&e->loop) && sb_mono_ms() < end) {
        uv_run(&e->loop, UV_RUN_NOWAIT);
        t_sleep_ms(1);
    }
    uv_loop_close(&e->loop);
    t_server_stop(&e->srv);
    sb_router_free();
    sb_metrics_free();
    free(e);
    E = NULL;
    return 0;
}

static int test_setup(void **state)
{
    redisReply *r = redisCommand(E->sync, "FLUSHALL");

    SB_UNUSED(state);
    freeReplyObject(r);
    sb_store_init(E->r, T_PREFIX);
    sb_router_init(E->r, T_PREFIX);
    sb_router_set_clock(t_clock, NULL);
    T_T0 = sb_now_ms() / 1000 * 1000;
    T_NOW = T_T0;
    return 0;
}

static int test_teardown(void **state)
{
    SB_UNUSED(state);
    json_decref(LAST);
    json_decref(LOGF);
    LAST = LOGF = NULL;
    return 0;
}

/* ---- config -------------------------------------------------------------- */

static const struct sb_conf_section *const t_sections[] = {
    &sb_user_conf_section,  &sb_routing_conf_section, &sb_queue_conf_section,
    &sb_agent_conf_section, &sb_rule_conf_section,    NULL,
};

/* Parse users a..e plus `text`; 0 or -1 with the reason in err. */
static int t_config_try(const char *text, char *err, size_t errlen)
{
    static const char *const users[] = {"alice", "bob", "carol", "dave",
                                        "erin"};
    struct sb_buf b;
    struct sb_config *c;
    int rc;

    sb_buf_init(&b, 0);
    for (size_t i = 0; i < SB_ARRAY_LEN(users); i++)
        sb_buf_printf(&b, "[user %s]\nrole = agent\npassword = %s\n", users[i],
                      T_PW);
    sb_buf_appends(&b, text);
    c = sb_config_parse(b.data, b.len, "test.conf", t_sections, err, errlen);
    sb_buf_free(&b);
    if (!c)
        return -1;
    rc = sb_router_config(c, err, errlen);
    sb_config_free(c);
    return rc;
}

static void t_config(const char *text)
{
    char err[256] = "";

    if (t_config_try(text, err, sizeof(err)) < 0)
        fail_msg("config: %s", err);
}

/* ---- router calls -------------------------------------------------------- */

struct t_res {
    int done;
    enum sb_store_status st;
    json_t *j;
    char err[256];
};

static void t_cb(enum sb_store_status st, json_t *result, const char *err,
                 void *arg)
{
    struct t_res *t = arg;

    t->done++;
    t->st = st;
    t->j = result;
    if (err)
        snprintf(t->err, sizeof(t->err), "%s", err);
}

/* Wait for a call started with rc; LAST holds its result. */
static enum sb_store_status t_wait(int rc, struct t_res *t)
{
    assert_int_equal(rc, 0);
    assert_true(t_run_until(&t->done, 1, T_WAIT_MS));
    assert_int_equal(t->done, 1);
    json_decref(LAST);
    LAST = t->j;
    if (t->st == SB_STORE_OK)
        assert_non_null(t->j);
    else
        assert_null(t->j);
    return t->st;
}

enum {
    OP_ROUTE,
    OP_REOPEN,
    OP_PRESENCE,
    OP_ACCEPT,
    OP_DECLINE,
    OP_RESOLVE,
    OP_TO_AGENT,
    OP_TO_QUEUE,
    OP_POSITION
};

static enum sb_store_status t_op(int op, const char *a, const char *b,
                                 char *err)
{
    struct t_res t;
    int rc = -1;

    memset(&t, 0, sizeof(t));
    switch (op) {
    case OP_ROUTE:
        rc = sb_router_route(a, t_cb, &t);
        break;
    case OP_REOPEN:
        rc = sb_router_reopen(a, t_cb, &t);
        break;
    case OP_PRESENCE:
        rc = sb_router_presence(a, b, t_cb, &t);
        break;
    case OP_ACCEPT:
        rc = sb_router_accept(a, b, t_cb, &t);
        break;
    case OP_DECLINE:
        rc = sb_router_decline(a, b, t_cb, &t);
        break;
    case OP_RESOLVE:
        rc = sb_router_resolve(a, b, t_cb, &t);
        break;
    case OP_TO_AGENT:
        rc = sb_router_transfer(a, b, NULL, "tester", t_cb, &t);
        break;
    case OP_TO_QUEUE:
        rc = sb_router_transfer(a, NULL, b, "tester", t_cb, &t);
        break;
    case OP_POSITION:
        rc = sb_router_position(a, t_cb, &t);
        break;
    }
    t_wait(rc, &t);
    if (err)
        strcpy(err, t.err);
    return t.st;
}

/* The op must succeed; returns LAST (borrowed). */
static json_t *t_ok(int op, const char *a, const char *b)
{
    char err[256];
    enum sb_store_status st = t_op(op, a, b, err);

    if (st != SB_STORE_OK)
        fail_msg("op %d %s %s: status %d %s", op, a, b ? b : "", (int)st, err);
    return LAST;
}

/* The op must fail with st and an error containing sub. */
static void t_fails(int op, const char *a, const char *b,
                    enum sb_store_status want, const char *sub)
{
    char err[256];
    enum sb_store_status st = t_op(op, a, b, err);

    if (st != want || !strstr(err, sub))
        fail_msg("op %d %s: got %d \"%s\", want %d \"%s\"", op, a, (int)st, err,
                 (int)want, sub);
}

static json_t *t_tick(int64_t now)
{
    struct t_res t;

    memset(&t, 0, sizeof(t));
    T_NOW = now;
    assert_int_equal(t_wait(sb_router_tick(now, t_cb, &t), &t), SB_STORE_OK);
    return LAST;
}

static json_t *t_view(int which, const struct sb_router_filter *f)
{
    struct t_res t;
    int rc;

    memset(&t, 0, sizeof(t));
    rc = which == 0   ? sb_router_queues(t_cb, &t)
         : which == 1 ? sb_router_agents(t_cb, &t)
                      : sb_router_conversations(f, t_cb, &t);
    assert_int_equal(t_wait(rc, &t), SB_STORE_OK);
    return LAST;
}

static const char *js(const json_t *j, const char *key)
{
    const char *s = json_string_value(json_object_get(j, key));

    return s ? s : "";
}

static long long ji(const json_t *j, const char *key)
{
    return (long long)json_integer_value(json_object_get(j, key));
}

/* The offers of a result as "a,b,c". */
static const char *t_offers(const json_t *j)
{
    static char buf[256];
    json_t *o = json_object_get(j, "offers");

    buf[0] = '\0';
    for (size_t i = 0; i < json_array_size(o); i++) {
        if (i)
            strcat(buf, ",");
        strncat(buf, json_string_value(json_array_get(o, i)), 32);
    }
    return buf;
}

/* ---- data ---------------------------------------------------------------- */

struct t_conv {
    char id[48];
    char cust[48];
};

static void t_on_ingest(enum sb_store_status st,
                        const struct sb_contact_result *res, const char *err,
                        void *arg)
{
    struct t_conv *c = arg;

    SB_UNUSED(err);
    if (st == SB_STORE_OK && res) {
        snprintf(c->id, sizeof(c->id), "%s", res->conversation_id);
        snprintf(c->cust, sizeof(c->cust), "%s", res->customer_id);
    } else {
        strcpy(c->id, "error");
    }
}

/* A new customer writing on channel; returns its new conversation. */
static struct t_conv t_new(const char *channel, const char *subject,
                           const char *text)
{
    struct sb_contact_in in;
    struct t_conv c;
    char email[64];
    int done = 0;

    memset(&in, 0, sizeof(in));
    memset(&c, 0, sizeof(c));
    snprintf(email, sizeof(email), "c%d@example.com", ++CUST_SEQ);
    in.channel = channel;
    in.direction = "in";
    in.type = "message";
    in.subject = subject;
    in.text = text;
    in.text_len = strlen(text);
    in.ids[0].type = "email";
    in.ids[0].value = email;
    in.nids = 1;
    assert_int_equal(sb_contact_ingest(&in, t_on_ingest, &c), 0);
    /* the callback fills c; wait for c.id */
    for (uint64_t end = sb_mono_ms() + T_WAIT_MS;
         !c.id[0] && sb_mono_ms() < end;) {
        uv_run(&E->loop, UV_RUN_NOWAIT);
        if (!c.id[0])
            t_sleep_ms(1);
    }
    done = c.id[0] && strcmp(c.id, "error") != 0;
    assert_true(done);
    return c;
}

static struct t_conv t_chat(void)
{
    return t_new("chat", "", "hello");
}

static void t_cust_set(const struct t_conv *c, const char *field,
                       const char *value)
{
    redisReply *r = redisCommand(E->sync, "HSET " T_PREFIX "cust:%s %s %s",
                                 c->cust, field, value);

    assert_non_null(r);
    freeReplyObject(r);
}

static long long t_scard(const char *fmt, const char *arg)
{
    char key[128];
    redisReply *r;
    long long n;

    snprintf(key, sizeof(key), fmt, arg);
    r = redisCommand(E->sync, "SCARD %s", key);
    assert_non_null(r);
    n = r->integer;
    freeReplyObject(r);
    return n;
}

static const char *t_hget(const char *key, const char *field)
{
    static char buf[256];
    redisReply *r = redisCommand(E->sync, "HGET %s %s", key, field);

    assert_non_null(r);
    snprintf(buf, sizeof(buf), "%s",
             r->type == REDIS_REPLY_STRING ? r->str : "");
    freeReplyObject(r);
    return buf;
}

static const char *t_conv_field(const struct t_conv *c, const char *field)
{
    char key[96];

    snprintf(key, sizeof(key), T_PREFIX "conv:%s", c->id);
    return t_hget(key, field);
}

/* Actions of the conversation's internal log entries, "queued,offer,...";
 * checks each entry's shape and that both timelines hold it. */
static const char *t_actions(const struct t_conv *c)
{
    static char buf[1024];
    redisReply *r = redisCommand(E->sync, "XRANGE " T_PREFIX "log - +");

    assert_non_null(r);
    buf[0] = '\0';
    for (size_t i = 0; i < r->elements; i++) {
        redisReply *e = r->element[i], *f = e->element[1];
        const char *conv = "", *dir = "", *type = "", *fields = "", *cust = "";
        json_t *fj;
        redisReply *z;

        for (size_t k = 0; k + 1 < f->elements; k += 2) {
            const char *n = f->element[k]->str, *v = f->element[k + 1]->str;

            if (!strcmp(n, "conversation"))
                conv = v;
            else if (!strcmp(n, "direction"))
                dir = v;
            else if (!strcmp(n, "type"))
                type = v;
            else if (!strcmp(n, "fields"))
                fields = v;
            else if (!strcmp(n, "customer"))
                cust = v;
        }
        if (strcmp(conv, c->id) != 0 || strcmp(dir, "internal") != 0)
            continue;
        assert_true(!strcmp(type, "assignment") || !strcmp(type, "status"));
        assert_string_equal(cust, c->cust);
        fj = json_loads(fields, 0, NULL);
        assert_non_null(fj);
        assert_true(json_is_string(json_object_get(fj, "action")));
        if (buf[0])
            strcat(buf, ",");
        strncat(buf, js(fj, "action"), 40);
        json_decref(fj);
        z = redisCommand(E->sync, "ZSCORE " T_PREFIX "conv:%s:tl %s", c->id,
                         e->element[0]->str);
        assert_true(z && z->type == REDIS_REPLY_STRING);
        freeReplyObject(z);
        z = redisCommand(E->sync, "ZSCORE " T_PREFIX "cust:%s:tl %s", c->cust,
                         e->element[0]->str);
        assert_true(z && z->type == REDIS_REPLY_STRING);
        freeReplyObject(z);
    }
    freeReplyObject(r);
    return buf;
}

/* Fields of the nth (0-based) internal log entry of c with this action;
 * LOGF holds it. */
static json_t *t_logf(const struct t_conv *c, const char *action, int nth)
{
    redisReply *r = redisCommand(E->sync, "XRANGE " T_PREFIX "log - +");

    json_decref(LOGF);
    LOGF = NULL;
    assert_non_null(r);
    for (size_t i = 0; i < r->elements && !LOGF; i++) {
        redisReply *f = r->element[i]->element[1];
        const char *conv = "", *fields = "{}";

        for (size_t k = 0; k + 1 < f->elements; k += 2) {
            if (!strcmp(f->element[k]->str, "conversation"))
                conv = f->element[k + 1]->str;
            if (!strcmp(f->element[k]->str, "fields"))
                fields = f->element[k + 1]->str;
        }
        if (!strcmp(conv, c->id)) {
            json_t *fj = json_loads(fields, 0, NULL);

            if (fj && !strcmp(js(fj, "action"), action) && nth-- == 0)
                LOGF = fj;
            else
                json_decref(fj);
        }
    }
    freeReplyObject(r);
    if (!LOGF)
        fail_msg("no log entry %s for %s", action, c->id);
    return LOGF;
}

/* The reason logged for agent in a "skipped" list, or "". */
static const char *t_skip(const json_t *f, const char *agent)
{
    json_t *s = json_object_get(f, "skipped");

    for (size_t i = 0; i < json_array_size(s); i++)
        if (!strcmp(js(json_array_get(s, i), "agent"), agent))
            return js(json_array_get(s, i), "reason");
    return "";
}

static void t_online(const char *agent)
{
    t_ok(OP_PRESENCE, agent, "online");
}

/* ---- config checks ------------------------------------------------------- */

static void test_config_checks(void **state)
{
    static const struct {
        const char *text, *want;
    } bad[] = {
        {"[queue q]\nmembers = zed\n", "member zed: no [user zed]"},
        {"[queue q]\nmembers = alice, alice\n", "listed twice"},
        {"[queue q]\nmembers = alice/\n", "NAME/skill+skill"},
        {"[queue q]\nmembers = alice\n[rule r]\nqueue = nope\n",
         "[rule r] queue nope: no such [queue]"},
        {"[queue a]\noverflow = b\n[queue b]\noverflow = a\n", "circle"},
        {"[queue a]\noverflow = a\n", "circle"},
        {"[queue a]\noverflow = zz\n", "overflow zz: no such [queue]"},
        {"[queue a]\n[agent zed]\n", "[agent zed]: no [user zed]"},
        {"[queue a]\n[agent bob]\nteam = zz\n", "team zz: no such [queue]"},
        {"[routing]\ndefault_queue = zz\n[queue a]\n",
         "default_queue zz: no such [queue]"},
        {"[queue a]\nstrategy = random\n", "strategy"},
        {"[queue a]\nskills = r u\n", "skill"},
    };
    char err[256];

    SB_UNUSED(state);
    for (size_t i = 0; i < SB_ARRAY_LEN(bad); i++) {
        err[0] = '\0';
        assert_int_equal(t_config_try(bad[i].text, err, sizeof(err)), -1);
        if (!strstr(err, bad[i].want))
            fail_msg("case %zu: \"%s\" lacks \"%s\"", i, err, bad[i].want);
    }
    t_config("[routing]\ntick = 250ms\n[queue a]\nmembers = alice/ru+EN\n");
    assert_int_equal(sb_router_tick_interval(), 250);
}

/* Routing off: no queues, nothing changes. */
static void test_unconfigured(void **state)
{
    struct t_conv c;

    SB_UNUSED(state);
    t_config("");
    c = t_chat();
    t_ok(OP_ROUTE, c.id, NULL);
    assert_false(json_is_true(json_object_get(LAST, "routed")));
    assert_string_equal(js(LAST, "state"), "new");
    assert_string_equal(t_actions(&c), "");
}

/* ---- strategies ---------------------------------------------------------- */


/* A conversation ingest marked as needing an agent, that nobody routed
 * (the caller died between ingest and route), is routed by the tick once
 * it is older than the grace; one routed normally is not routed twice. */
static void test_unrouted_swept(void **state)
{
    struct t_conv lost, fine;
    json_t *t;

    SB_UNUSED(state);
    t_config("[routing]\ncapacity = 5\n[queue sales]\nmembers = alice\n");
    t_online("alice");
    lost = t_chat();
    fine = t_chat();
    t_ok(OP_ROUTE, fine.id, NULL);
    assert_string_equal(t_conv_field(&lost, "state"), "new");
    t = t_tick(sb_now_ms() + 60000); /* owned by the fixture (LAST) */
    assert_non_null(t);
    assert_string_equal(t_conv_field(&lost, "state"), "queued");
    assert_string_equal(t_conv_field(&lost, "queue"), "sales");
    {
        const char *a = t_actions(&fine), *q = strstr(a, "queued");
        assert_non_null(q);
        assert_null(strstr(q + 1, "queued")); /* routed once, not twice */
    }
}

static void test_round_robin(void **state)
{
    static const char *const want[] = {"alice", "bob", "carol", "alice", "bob"};
    struct t_conv c;

    SB_UNUSED(state);
    t_config("[routing]\ncapacity = 5\n"
             "[queue sales]\nmembers = alice, bob, carol\n");
    t_online("alice");
    t_online("bob");
    t_online("carol");
    for (size_t i = 0; i < SB_ARRAY_LEN(want); i++) {
        c = t_chat();
        t_ok(OP_ROUTE, c.id, NULL);
        assert_string_equal(js(LAST, "state"), "queued");
        assert_string_equal(js(LAST, "queue"), "sales");
        assert_string_equal(t_offers(LAST), want[i]);
    }
    /* bob away: the rotation skips him */
    t_ok(OP_PRESENCE, "bob", "away");
    c = t_chat();
    t_ok(OP_ROUTE, c.id, NULL);
    assert_string_equal(t_offers(LAST), "carol");
    t_logf(&c, "offer", 0);
    assert_string_equal(js(LOGF, "strategy"), "round_robin");
    assert_string_equal(t_skip(LOGF, "bob"), "away");
    assert_string_equal(js(LOGF, "hop"), "queue");
}

static void test_least_busy(void **state)
{
    struct t_conv x[3], c;

    SB_UNUSED(state);
    t_config("[routing]\ncapacity = 5\n"
             "[queue q]\nmembers = alice, bob, carol\nstrategy = least_busy\n"
             "[queue hold]\n");
    T_NOW = T_T0 + 1000;
    t_online("alice");
    T_NOW = T_T0 + 2000;
    t_online("bob");
    T_NOW = T_T0 + 3000;
    t_online("carol");
    /* alice holds two (got work at 4000), bob one (at 5000), carol none */
    for (int i = 0; i < 3; i++) {
        T_NOW = T_T0 + (i < 2 ? 4000 : 5000);
        x[i] = t_new("email", "hi", "x");
        t_ok(OP_TO_AGENT, x[i].id, i < 2 ? "alice" : "bob");
        assert_string_equal(js(LAST, "state"), "assigned");
    }
    T_NOW = T_T0 + 6000;
    c = t_chat();
    t_ok(OP_ROUTE, c.id, NULL);
    assert_string_equal(t_offers(LAST), "carol");
    t_ok(OP_ACCEPT, c.id, "carol");
    /* bob and carol hold one each (alice, who waited longest, holds two):
     * bob got his longer ago */
    T_NOW = T_T0 + 7000;
    c = t_chat();
    t_ok(OP_ROUTE, c.id, NULL);
    assert_string_equal(t_offers(LAST), "bob");
    /* bob now has 1 + an offer: carol is lighter */
    T_NOW = T_T0 + 8000;
    c = t_chat();
    t_ok(OP_ROUTE, c.id, NULL);
    assert_string_equal(t_offers(LAST), "carol");
    t_logf(&c, "offer", 0);
    assert_string_equal(js(LOGF, "strategy"), "least_busy");
}

static void test_longest_idle(void **state)
{
    struct t_conv c1, c2, c3, c4, c5, c6, y;

    SB_UNUSED(state);
    t_config("[routing]\ncapacity = 3\n"
             "[queue q]\nmembers = carol, bob, alice\n"
             "strategy = longest_idle\n[queue hold]\n");
    T_NOW = T_T0 + 1000;
    t_online("alice");
    T_NOW = T_T0 + 2000;
    t_online("bob");
    T_NOW = T_T0 + 3000;
    t_online("carol");
    T_NOW = T_T0 + 4000;
    c1 = t_chat();
    t_ok(OP_ROUTE, c1.id, NULL);
    assert_string_equal(t_offers(LAST), "alice");
    t_ok(OP_ACCEPT, c1.id, "alice");
    c2 = t_chat();
    t_ok(OP_ROUTE, c2.id, NULL);
    assert_string_equal(t_offers(LAST), "bob");
    t_ok(OP_ACCEPT, c2.id, "bob");
    T_NOW = T_T0 + 5000;
    t_ok(OP_RESOLVE, c1.id, "alice"); /* alice idle since 5000 */
    c3 = t_chat();
    t_ok(OP_ROUTE, c3.id, NULL);
    assert_string_equal(t_offers(LAST), "carol"); /* idle since 3000 */
    t_ok(OP_ACCEPT, c3.id, "carol");
    y = t_chat();
    t_ok(OP_TO_AGENT, y.id, "carol"); /* carol: two, got work at 5000 */
    T_NOW = T_T0 + 6000;
    t_ok(OP_RESOLVE, c2.id, "bob"); /* bob idle since 6000 */
    c4 = t_chat();
    t_ok(OP_ROUTE, c4.id, NULL);
    assert_string_equal(t_offers(LAST), "alice");
    t_ok(OP_ACCEPT, c4.id, "alice");
    T_NOW = T_T0 + 7000;
    c5 = t_chat();
    t_ok(OP_ROUTE, c5.id, NULL);
    assert_string_equal(t_offers(LAST), "bob"); /* the only idle one */
    t_ok(OP_ACCEPT, c5.id, "bob");
    /* nobody idle: the one who got work least recently, whatever the load
     * (least_busy would pick alice or bob, who hold one each) */
    T_NOW = T_T0 + 8000;
    c6 = t_chat();
    t_ok(OP_ROUTE, c6.id, NULL);
    assert_string_equal(t_offers(LAST), "carol");
    t_logf(&c6, "offer", 0);
    assert_string_equal(js(LOGF, "strategy"), "longest_idle");
}

/* A capacity lowered by a reload after an offer went out: accepting it
 * would exceed the new capacity. */
static void test_capacity_lowered(void **state)
{
    struct t_conv y, c;

    SB_UNUSED(state);
    t_config("[queue q]\nmembers = alice\n[agent alice]\ncapacity = 2\n");
    t_online("alice");
    y = t_chat();
    t_ok(OP_TO_AGENT, y.id, "alice");
    c = t_chat();
    t_ok(OP_ROUTE, c.id, NULL);
    assert_string_equal(t_offers(LAST), "alice");
    t_config("[queue q]\nmembers = alice\n[agent alice]\ncapacity = 1\n");
    t_fails(OP_ACCEPT, c.id, "alice", SB_STORE_CONFLICT, "at capacity");
    t_ok(OP_RESOLVE, y.id, "alice");
    t_ok(OP_ACCEPT, c.id, "alice");
    assert_int_equal(t_scard(T_PREFIX "rt:agent:%s:convs", "alice"), 1);
}

/* Reads pub/sub messages for up to ms into "type:agent;..." form. */
static void t_events(redisContext *sub, char *out, size_t outlen, int ms)
{
    struct timeval tv = {0, 100000};
    uint64_t end = sb_mono_ms() + (uint64_t)ms;

    out[0] = '\0';
    redisSetTimeout(sub, tv);
    while (sb_mono_ms() < end) {
        redisReply *r = NULL;
        json_t *ev;

        if (redisGetReply(sub, (void **)&r) != REDIS_OK || !r) {
            if (sub->err) { /* a timeout: nothing more */
                break;
            }
            continue;
        }
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
            r->element[2]->type == REDIS_REPLY_STRING) {
            ev = json_loads(r->element[2]->str, 0, NULL);
            assert_non_null(ev);
            assert_true(json_is_integer(json_object_get(ev, "at")));
            if (strlen(out) + 64 < outlen) {
                strcat(out, js(ev, "type"));
                if (json_object_get(ev, "agent")) {
                    strcat(out, ":");
                    strcat(out, js(ev, "agent"));
                }
                if (json_is_integer(json_object_get(ev, "position")))
                    sprintf(out + strlen(out), "@%lld", ji(ev, "position"));
                strcat(out, ";");
            }
            json_decref(ev);
        }
        freeReplyObject(r);
    }
}

static void test_ring_all(void **state)
{
    struct t_conv c;
    redisContext *sub;
    redisReply *r;
    char ev[1024];

    SB_UNUSED(state);
    t_config("[queue q]\nmembers = alice, bob, carol\nstrategy = ring_all\n");
    t_online("alice");
    t_online("bob");
    t_online("carol");
    c = t_chat();
    sub = t_sync_connect(E->srv.sock);
    assert_non_null(sub);
    r = redisCommand(sub, "SUBSCRIBE " T_PREFIX "events");
    assert_non_null(r);
    freeReplyObject(r);

    t_ok(OP_ROUTE, c.id, NULL);
    assert_string_equal(t_offers(LAST), "alice,bob,carol");
    t_ok(OP_ACCEPT, c.id, "bob");
    assert_string_equal(js(LAST, "state"), "assigned");
    assert_string_equal(js(LAST, "agent"), "bob");
    assert_string_equal(t_offers(LAST), "");
    t_fails(OP_ACCEPT, c.id, "alice", SB_STORE_CONFLICT, "no pending offer");
    t_fails(OP_DECLINE, c.id, "carol", SB_STORE_CONFLICT, "no pending offer");
    assert_int_equal(t_scard(T_PREFIX "rt:agent:%s:offers", "alice"), 0);
    assert_int_equal(t_scard(T_PREFIX "rt:agent:%s:offers", "carol"), 0);
    assert_int_equal(t_scard(T_PREFIX "rt:agent:%s:convs", "bob"), 1);
    assert_string_equal(t_conv_field(&c, "state"), "assigned");
    assert_string_equal(t_conv_field(&c, "agent"), "bob");
    assert_string_equal(t_conv_field(&c, "queue"), "q");
    t_logf(&c, "assigned", 0);
    assert_string_equal(js(LOGF, "reason"), "accepted");
    assert_int_equal(json_array_size(json_object_get(LOGF, "withdrawn")), 2);
    assert_string_equal(t_actions(&c), "queued,offer,assigned");

    t_events(sub, ev, sizeof(ev), 1000);
    assert_non_null(strstr(ev, "queued@1;"));
    assert_non_null(strstr(ev, "offer:alice;offer:bob;offer:carol;"));
    assert_non_null(strstr(ev, "withdrawn:alice;withdrawn:carol;"
                               "assigned:bob;"));
    assert_non_null(strstr(ev, "positions;"));
    redisFree(sub);
}

/* ---- atomicity across connections ---------------------------------------- */

static void test_race_accept(void **state)
{
    SB_UNUSED(state);
    t_config("[queue q]\nmembers = alice, bob\nstrategy = ring_all\n");
    t_online("alice");
    t_online("bob");
    for (int round = 0; round < 10; round++) {
        struct t_conv c = t_chat();
        struct t_res a, b;
        int ok;

        t_ok(OP_ROUTE, c.id, NULL);
        assert_string_equal(t_offers(LAST), "alice,bob");
        memset(&a, 0, sizeof(a));
        memset(&b, 0, sizeof(b));
        sb_router_init(round % 2 ? E->r2 : E->r, T_PREFIX);
        assert_int_equal(sb_router_accept(c.id, "alice", t_cb, &a), 0);
        sb_router_init(round % 2 ? E->r : E->r2, T_PREFIX);
        assert_int_equal(sb_router_accept(c.id, "bob", t_cb, &b), 0);
        sb_router_init(E->r, T_PREFIX);
        assert_true(t_run_until(&a.done, 1, T_WAIT_MS));
        assert_true(t_run_until(&b.done, 1, T_WAIT_MS));
        ok = (a.st == SB_STORE_OK) + (b.st == SB_STORE_OK);
        assert_int_equal(ok, 1);
        assert_int_equal(a.st == SB_STORE_OK ? b.st : a.st, SB_STORE_CONFLICT);
        json_decref(a.j);
        json_decref(b.j);
        assert_int_equal(t_scard(T_PREFIX "rt:agent:%s:convs", "alice") +
                             t_scard(T_PREFIX "rt:agent:%s:convs", "bob"),
                         1);
        t_ok(OP_RESOLVE, c.id, NULL);
    }
}

static void test_race_capacity(void **state)
{
    SB_UNUSED(state);
    t_config("[queue q]\n[agent alice]\ncapacity = 1\n");
    t_online("alice");
    for (int round = 0; round < 10; round++) {
        struct t_conv c1 = t_chat(), c2 = t_chat();
        struct t_res a, b;

        memset(&a, 0, sizeof(a));
        memset(&b, 0, sizeof(b));
        assert_int_equal(
            sb_router_transfer(c1.id, "alice", NULL, NULL, t_cb, &a), 0);
        sb_router_init(E->r2, T_PREFIX);
        assert_int_equal(
            sb_router_transfer(c2.id, "alice", NULL, NULL, t_cb, &b), 0);
        sb_router_init(E->r, T_PREFIX);
        assert_true(t_run_until(&a.done, 1, T_WAIT_MS));
        assert_true(t_run_until(&b.done, 1, T_WAIT_MS));
        assert_int_equal((a.st == SB_STORE_OK) + (b.st == SB_STORE_OK), 1);
        assert_string_equal(a.st == SB_STORE_OK ? b.err : a.err, "at capacity");
        json_decref(a.j);
        json_decref(b.j);
        assert_int_equal(t_scard(T_PREFIX "rt:agent:%s:convs", "alice"), 1);
        t_ok(OP_RESOLVE, a.st == SB_STORE_OK ? c1.id : c2.id, "alice");
    }
    /* an offer reserves the slot: with one offer pending, nothing more */
    {
        struct t_conv c1 = t_chat(), c2 = t_chat();

        t_config("[queue q]\nmembers = alice\n[agent alice]\ncapacity = 1\n");
        t_ok(OP_ROUTE, c1.id, NULL);
        assert_string_equal(t_offers(LAST), "alice");
        t_ok(OP_ROUTE, c2.id, NULL);
        assert_string_equal(t_offers(LAST), "");
        t_logf(&c2, "queued", 0);
        assert_string_equal(t_skip(LOGF, "alice"), "at_capacity");
        t_fails(OP_TO_AGENT, c2.id, "alice", SB_STORE_CONFLICT, "at capacity");
    }
}

/* ---- the curator and its fallbacks --------------------------------------- */

static const char *const CURATOR_CONF =
    "[routing]\ndefault_queue = general\ncurator_timeout = 20s\n"
    "offer_timeout = 10s\n"
    "[queue general]\nmembers = dave\n"
    "[queue team_a]\nmembers = alice, bob\nteam = yes\nmax_wait = 2m\n"
    "[agent alice]\ncapacity = 1\n";

static struct t_conv t_curated(const char *curator)
{
    struct t_conv c = t_chat();

    t_cust_set(&c, "curator", curator);
    return c;
}

static void test_curator_accepts(void **state)
{
    struct t_conv c;

    SB_UNUSED(state);
    t_config(CURATOR_CONF);
    t_online("alice");
    t_online("bob");
    c = t_curated("alice");
    t_ok(OP_ROUTE, c.id, NULL);
    assert_string_equal(js(LAST, "hop"), "curator");
    assert_string_equal(t_offers(LAST), "alice");
    assert_true(json_is_null(json_object_get(LAST, "queue")));
    t_logf(&c, "offer", 0);
    assert_string_equal(js(LOGF, "hop"), "curator");
    assert_int_equal(ji(LOGF, "expires"), T_T0 + 20000);
    t_ok(OP_ACCEPT, c.id, "alice");
    assert_string_equal(js(LAST, "agent"), "alice");
    assert_string_equal(js(LAST, "hop"), "curator");
    assert_string_equal(t_actions(&c), "offer,assigned");
}

static void test_curator_offline(void **state)
{
    struct t_conv c;

    SB_UNUSED(state);
    t_config(CURATOR_CONF);
    t_online("bob");
    t_online("dave");
    c = t_curated("alice");
    t_ok(OP_ROUTE, c.id, NULL);
    assert_string_equal(js(LAST, "hop"), "team");
    assert_string_equal(js(LAST, "queue"), "team_a");
    assert_string_equal(t_offers(LAST), "bob");
    t_logf(&c, "queued", 0);
    assert_string_equal(js(LOGF, "curator"), "alice");
    assert_string_equal(js(LOGF, "curator_reason"), "offline");
    assert_string_equal(t_skip(LOGF, "alice"), "offline");
}

static void test_curator_at_capacity(void **state)
{
    struct t_conv busy, c;

    SB_UNUSED(state);
    t_config(CURATOR_CONF);
    t_online("alice");
    t_online("bob");
    busy = t_chat();
    t_ok(OP_TO_AGENT, busy.id, "alice");
    c = t_curated("alice");
    t_ok(OP_ROUTE, c.id, NULL);
    assert_string_equal(js(LAST, "hop"), "team");
    assert_string_equal(t_offers(LAST), "bob");
    t_logf(&c, "queued", 0);
    assert_string_equal(js(LOGF, "curator_reason"), "at_capacity");
}

static void test_curator_declines(void **state)
{
    struct t_conv c;

    SB_UNUSED(state);
    t_config(CURATOR_CONF);
    t_online("alice");
    t_online("bob");
    c = t_curated("alice");
    t_ok(OP_ROUTE, c.id, NULL);
    assert_string_equal(t_offers(LAST), "alice");
    t_ok(OP_DECLINE, c.id, "alice");
    assert_string_equal(js(LAST, "hop"), "team");
    assert_string_equal(js(LAST, "queue"), "team_a");
    assert_string_equal(t_offers(LAST), "bob"); /* alice is not asked again */
    t_logf(&c, "offer", 1);
    assert_string_equal(t_skip(LOGF, "alice"), "declined");
    assert_string_equal(t_actions(&c), "offer,declined,queued,offer");
}

/* Team empty (nobody online): straight to the default queue. */
static void test_curator_team_unavailable(void **state)
{
    struct t_conv c, d;

    SB_UNUSED(state);
    t_config(CURATOR_CONF);
    t_online("alice");
    t_online("dave");
    c = t_curated("alice");
    t_ok(OP_ROUTE, c.id, NULL);
    t_ok(OP_DECLINE, c.id, "alice");
    assert_string_equal(js(LAST, "hop"), "queue");
    assert_string_equal(js(LAST, "queue"), "general");
    assert_string_equal(t_offers(LAST), "dave");
    t_logf(&c, "queued", 0);
    assert_string_equal(js(LOGF, "team"), "team_a");
    assert_string_equal(js(LOGF, "team_reason"), "team_unavailable");
    assert_string_equal(js(LOGF, "curator_reason"), "declined");
    assert_string_equal(js(LOGF, "rule"), "default");
    /* a curator with no team at all */
    d = t_curated("erin");
    t_ok(OP_ROUTE, d.id, NULL);
    assert_string_equal(js(LAST, "queue"), "general");
    t_logf(&d, "queued", 0);
    assert_string_equal(js(LOGF, "team_reason"), "no_team");
    assert_string_equal(js(LOGF, "curator_reason"), "offline");
}

/* Curator times out -> team; team member times out -> team waits; team
 * max_wait -> default queue. Each hop in the log. */
static void test_curator_timeout_chain(void **state)
{
    struct t_conv c;

    SB_UNUSED(state);
    t_config(CURATOR_CONF);
    t_online("alice");
    t_online("bob");
    t_online("dave");
    c = t_curated("alice");
    t_ok(OP_ROUTE, c.id, NULL);
    assert_string_equal(t_offers(LAST), "alice");
    t_tick(T_T0 + 19999);
    assert_int_equal(ji(LAST, "timeouts"), 0);
    t_tick(T_T0 + 20000);
    assert_int_equal(ji(LAST, "timeouts"), 1);
    t_ok(OP_POSITION, c.id, NULL);
    assert_string_equal(js(LAST, "queue"), "team_a");
    t_fails(OP_ACCEPT, c.id, "alice", SB_STORE_CONFLICT, "no pending offer");
    /* bob has it now, for 10 s */
    t_tick(T_T0 + 29999);
    t_fails(OP_ACCEPT, c.id, "dave", SB_STORE_CONFLICT, "no pending offer");
    t_tick(T_T0 + 30000);
    assert_int_equal(ji(LAST, "timeouts"), 1);
    t_ok(OP_POSITION, c.id, NULL);
    assert_string_equal(js(LAST, "queue"), "team_a");
    assert_int_equal(ji(LAST, "position"), 1);
    /* max_wait 2m in the team queue, counted from 20000 */
    t_tick(T_T0 + 20000 + 119999);
    assert_int_equal(ji(LAST, "overflows"), 0);
    t_tick(T_T0 + 20000 + 120000);
    assert_int_equal(ji(LAST, "overflows"), 1);
    t_ok(OP_POSITION, c.id, NULL);
    assert_string_equal(js(LAST, "queue"), "general");
    assert_string_equal(t_actions(&c),
                        "offer,timed_out,queued,offer,timed_out,queued,offer");
    t_logf(&c, "queued", 1);
    assert_string_equal(js(LOGF, "hop"), "overflow");
    assert_string_equal(js(LOGF, "from"), "team_a");
    t_ok(OP_ACCEPT, c.id, "dave");
    assert_string_equal(js(LAST, "hop"), "overflow");
}

/* ---- offers -------------------------------------------------------------- */

static void test_offer_timeout_next(void **state)
{
    struct t_conv c;

    SB_UNUSED(state);
    t_config("[routing]\noffer_timeout = 30s\n"
             "[queue q]\nmembers = alice, bob, carol\noffer_timeout = 15s\n");
    t_online("alice");
    t_online("bob");
    c = t_chat();
    t_ok(OP_ROUTE, c.id, NULL);
    assert_string_equal(t_offers(LAST), "alice");
    t_tick(T_T0 + 15000);
    t_ok(OP_POSITION, c.id, NULL);
    t_logf(&c, "offer", 1);
    assert_string_equal(t_skip(LOGF, "alice"), "timed_out");
    assert_string_equal(t_skip(LOGF, "carol"), "offline");
    assert_string_equal(
        json_string_value(json_array_get(json_object_get(LOGF, "agents"), 0)),
        "bob");
    t_fails(OP_ACCEPT, c.id, "alice", SB_STORE_CONFLICT, "no pending offer");
    /* the expired offer cannot be accepted even before the tick sees it */
    T_NOW = T_T0 + 30001;
    t_fails(OP_ACCEPT, c.id, "bob", SB_STORE_CONFLICT, "offer expired");
    t_tick(T_T0 + 30001);
    /* nobody left: waits; carol comes online and gets it */
    T_NOW = T_T0 + 40000;
    t_online("carol");
    t_ok(OP_ACCEPT, c.id, "carol");
    assert_string_equal(t_actions(&c),
                        "queued,offer,timed_out,offer,timed_out,offer,"
                        "assigned");
}

static void test_declines_remembered(void **state)
{
    struct t_conv c, other;

    SB_UNUSED(state);
    t_config("[queue q]\nmembers = alice, bob, carol\n");
    t_online("alice");
    t_online("bob");
    c = t_chat();
    t_ok(OP_ROUTE, c.id, NULL);
    assert_string_equal(t_offers(LAST), "alice");
    t_ok(OP_DECLINE, c.id, "alice");
    assert_string_equal(t_offers(LAST), "bob");
    t_ok(OP_DECLINE, c.id, "bob");
    assert_string_equal(t_offers(LAST), "");
    assert_string_equal(js(LAST, "state"), "queued");
    /* presence changes and ticks do not bring it back to them */
    t_ok(OP_PRESENCE, "alice", "away");
    t_online("alice");
    t_tick(T_T0 + 1000);
    t_ok(OP_POSITION, c.id, NULL);
    assert_int_equal(ji(LAST, "position"), 1);
    other = t_chat();
    t_ok(OP_ROUTE, other.id, NULL);
    assert_string_equal(t_offers(LAST), "alice"); /* others still go */
    t_online("carol");
    t_ok(OP_ACCEPT, c.id, "carol");
    t_logf(&c, "offer", 2);
    assert_string_equal(t_skip(LOGF, "alice"), "declined");
    assert_string_equal(t_skip(LOGF, "bob"), "declined");
}

/* ---- queue order --------------------------------------------------------- */

static void test_priority(void **state)
{
    struct t_conv n1, v1, n2, v2, g1;

    SB_UNUSED(state);
    t_config("[routing]\nvip_tiers = platinum, VIP\n"
             "[queue q]\nmembers = alice\n[agent alice]\ncapacity = 1\n");
    n1 = t_chat();
    v1 = t_chat();
    t_cust_set(&v1, "tier", "vip");
    n2 = t_chat();
    v2 = t_chat();
    t_cust_set(&v2, "tier", "vip");
    g1 = t_chat();
    t_cust_set(&g1, "tier", "platinum");
    t_ok(OP_ROUTE, n1.id, NULL);
    assert_int_equal(ji(LAST, "position"), 1);
    t_ok(OP_ROUTE, v1.id, NULL);
    assert_int_equal(ji(LAST, "position"), 1);
    t_ok(OP_ROUTE, n2.id, NULL);
    assert_int_equal(ji(LAST, "position"), 3);
    t_ok(OP_ROUTE, v2.id, NULL);
    assert_int_equal(ji(LAST, "position"), 2);
    t_ok(OP_ROUTE, g1.id, NULL);
    assert_int_equal(ji(LAST, "position"), 1);
    t_ok(OP_POSITION, n1.id, NULL);
    assert_int_equal(ji(LAST, "position"), 4);
    assert_int_equal(ji(LAST, "waiting"), 5);
    /* alice, one at a time (capacity 1, an offer holds the slot):
     * platinum, vip, vip, then FIFO; the head is offered, the rest wait */
    {
        const struct t_conv *order[] = {&g1, &v1, &v2, &n1, &n2};

        t_online("alice");
        for (size_t i = 0; i < SB_ARRAY_LEN(order); i++) {
            t_ok(OP_POSITION, order[i]->id, NULL);
            assert_int_equal(ji(LAST, "position"), 1);
            t_ok(OP_ACCEPT, order[i]->id, "alice");
            t_ok(OP_RESOLVE, order[i]->id, "alice");
        }
    }
}

static void test_fifo_release(void **state)
{
    struct t_conv c1, c2, c3;

    SB_UNUSED(state);
    t_config("[queue q]\nmembers = alice\nauto_assign = yes\n"
             "[agent alice]\ncapacity = 1\n");
    t_online("alice");
    c1 = t_chat();
    t_ok(OP_ROUTE, c1.id, NULL);
    assert_string_equal(js(LAST, "state"), "assigned");
    assert_string_equal(js(LAST, "agent"), "alice");
    c2 = t_chat();
    t_ok(OP_ROUTE, c2.id, NULL);
    assert_string_equal(js(LAST, "state"), "queued");
    assert_int_equal(ji(LAST, "position"), 1);
    c3 = t_chat();
    t_ok(OP_ROUTE, c3.id, NULL);
    assert_int_equal(ji(LAST, "position"), 2);
    t_ok(OP_RESOLVE, c1.id, "alice");
    assert_string_equal(t_conv_field(&c2, "state"), "assigned");
    assert_string_equal(t_conv_field(&c2, "agent"), "alice");
    assert_string_equal(t_conv_field(&c3, "state"), "queued");
    t_ok(OP_POSITION, c3.id, NULL);
    assert_int_equal(ji(LAST, "position"), 1);
    t_logf(&c2, "assigned", 0);
    assert_string_equal(js(LOGF, "reason"), "auto");
    /* capacity raised by a reload: the next tick assigns c3 */
    t_config("[queue q]\nmembers = alice\nauto_assign = yes\n"
             "[agent alice]\ncapacity = 2\n");
    t_tick(T_T0 + 100);
    assert_string_equal(t_conv_field(&c3, "state"), "assigned");
    /* going offline keeps what is assigned */
    t_ok(OP_PRESENCE, "alice", "offline");
    assert_int_equal(ji(LAST, "active"), 2);
    assert_string_equal(js(LAST, "presence"), "offline");
}

static void test_max_wait_overflow(void **state)
{
    struct t_conv c, d;

    SB_UNUSED(state);
    t_config("[queue front]\nmembers = alice\nmax_wait = 60s\n"
             "overflow = back\n"
             "[queue back]\nmembers = bob\n"
             "[queue last]\nmembers = carol\nmax_wait = 10s\n");
    t_online("bob");
    c = t_chat();
    t_ok(OP_ROUTE, c.id, NULL);
    assert_string_equal(js(LAST, "queue"), "front");
    t_tick(T_T0 + 59999);
    assert_string_equal(t_conv_field(&c, "queue"), "front");
    t_tick(T_T0 + 60000);
    assert_string_equal(t_conv_field(&c, "queue"), "back");
    t_ok(OP_POSITION, c.id, NULL);
    t_logf(&c, "queued", 1);
    assert_string_equal(js(LOGF, "hop"), "overflow");
    assert_string_equal(js(LOGF, "from"), "front");
    assert_int_equal(ji(LOGF, "waited"), 60000);
    t_ok(OP_ACCEPT, c.id, "bob");
    assert_string_equal(js(LAST, "hop"), "overflow");
    /* no overflow queue: logged, stays */
    d = t_chat();
    T_NOW = T_T0 + 61000;
    t_ok(OP_TO_QUEUE, d.id, "last");
    t_tick(T_T0 + 71000);
    assert_string_equal(t_conv_field(&d, "queue"), "last");
    assert_string_equal(t_actions(&d), "queued,max_wait");
}

/* ---- transfer, resolve, reopen ------------------------------------------- */

static void test_transfer(void **state)
{
    struct t_conv c;
    char key[96];

    SB_UNUSED(state);
    t_config("[queue one]\nmembers = alice\nauto_assign = yes\n"
             "[queue two]\nmembers = alice, bob\n");
    t_online("alice");
    t_online("bob");
    c = t_chat();
    t_ok(OP_ROUTE, c.id, NULL);
    assert_string_equal(js(LAST, "agent"), "alice");
    t_ok(OP_TO_QUEUE, c.id, "two");
    /* alice gave it away: bob gets the offer */
    assert_string_equal(js(LAST, "queue"), "two");
    assert_string_equal(js(LAST, "hop"), "transfer");
    assert_string_equal(t_offers(LAST), "bob");
    assert_int_equal(t_scard(T_PREFIX "rt:agent:%s:convs", "alice"), 0);
    t_logf(&c, "queued", 1);
    assert_string_equal(js(LOGF, "from"), "alice");
    assert_string_equal(js(LOGF, "by"), "tester");
    assert_string_equal(t_skip(LOGF, "alice"), "transferred");
    t_ok(OP_ACCEPT, c.id, "bob");
    t_fails(OP_TO_AGENT, c.id, "carol", SB_STORE_CONFLICT, "offline");
    t_fails(OP_TO_AGENT, c.id, "bob", SB_STORE_CONFLICT, "already assigned");
    t_fails(OP_TO_AGENT, c.id, "zed", SB_STORE_NOTFOUND, "no such agent");
    t_fails(OP_TO_QUEUE, c.id, "nope", SB_STORE_NOTFOUND, "no such queue");
    t_online("carol");
    t_ok(OP_TO_AGENT, c.id, "carol");
    assert_string_equal(js(LAST, "agent"), "carol");
    assert_int_equal(t_scard(T_PREFIX "rt:agent:%s:convs", "bob"), 0);
    assert_int_equal(t_scard(T_PREFIX "rt:agent:%s:convs", "carol"), 1);
    snprintf(key, sizeof(key), T_PREFIX "conv:%s", c.id);
    assert_string_equal(t_hget(key, "agent"), "carol");
    t_logf(&c, "assigned", 2);
    assert_string_equal(js(LOGF, "reason"), "transfer");
    assert_string_equal(js(LOGF, "from"), "bob");
}

static void test_resolve_reopen(void **state)
{
    struct t_conv c;
    char key[96];

    SB_UNUSED(state);
    t_config("[queue q]\nmembers = alice\nauto_assign = yes\n");
    t_online("alice");
    c = t_chat();
    snprintf(key, sizeof(key), T_PREFIX "cust:%s:open", c.cust);
    assert_string_equal(t_hget(key, "chat"), c.id);
    t_ok(OP_ROUTE, c.id, NULL);
    T_NOW = T_T0 + 5000;
    t_ok(OP_RESOLVE, c.id, "alice");
    assert_string_equal(js(LAST, "state"), "resolved");
    snprintf(key, sizeof(key), "%lld", (long long)T_T0 + 5000);
    assert_string_equal(t_conv_field(&c, "resolved"), key);
    snprintf(key, sizeof(key), T_PREFIX "cust:%s:open", c.cust);
    assert_string_equal(t_hget(key, "chat"), "");
    assert_int_equal(t_scard(T_PREFIX "rt:agent:%s:convs", "alice"), 0);
    t_fails(OP_RESOLVE, c.id, "alice", SB_STORE_CONFLICT, "already resolved");
    t_fails(OP_ACCEPT, c.id, "alice", SB_STORE_CONFLICT, "resolved");
    t_ok(OP_REOPEN, c.id, NULL);
    assert_string_equal(js(LAST, "state"), "assigned");
    assert_string_equal(t_hget(key, "chat"), c.id);
    assert_string_equal(t_conv_field(&c, "resolved"), "");
    t_fails(OP_REOPEN, c.id, NULL, SB_STORE_CONFLICT, "not resolved");
    /* route on an open one changes nothing; on a resolved one, reopens */
    t_ok(OP_ROUTE, c.id, NULL);
    assert_string_equal(js(LAST, "state"), "assigned");
    t_ok(OP_RESOLVE, c.id, "alice");
    t_ok(OP_ROUTE, c.id, NULL);
    assert_string_equal(js(LAST, "state"), "assigned");
    assert_string_equal(t_actions(&c),
                        "queued,assigned,resolved,reopened,queued,assigned,"
                        "resolved,reopened,queued,assigned");
    t_logf(&c, "resolved", 0);
    assert_string_equal(js(LOGF, "by"), "alice");
    assert_string_equal(js(LOGF, "agent"), "alice");
    t_fails(OP_ROUTE, "cv_999", NULL, SB_STORE_NOTFOUND, "conversation");
    t_fails(OP_ROUTE, "x:y", NULL, SB_STORE_NOTFOUND, "conversation");
    t_fails(OP_PRESENCE, "alice", "busy", SB_STORE_INVALID, "presence");
    t_fails(OP_PRESENCE, "zed", "online", SB_STORE_NOTFOUND, "agent");
}

/* ---- rules --------------------------------------------------------------- */

static void test_rules(void **state)
{
    static const char conf[] =
        "[routing]\ndefault_queue = general\n"
        "[queue general]\n[queue sms]\n[queue b2b]\n[queue gold]\n"
        "[queue english]\n[queue returns]\n[queue billing]\n"
        "[rule by_channel]\nchannel = sms\nqueue = sms\n"
        "[rule by_tag]\ntag = Wholesale, dealer\nqueue = b2b\n"
        "[rule by_tier]\ntier = gold\nqueue = gold\n"
        "[rule by_locale]\nlocale = en\nqueue = english\n"
        "[rule refunds]\nkeywords = возврат, refund\nqueue = returns\n"
        "[rule invoices]\nchannel = email\nkeywords = invoice\n"
        "queue = billing\n";
    struct t_conv c;

    SB_UNUSED(state);
    t_config(conf);

    c = t_new("sms", "", "refund please"); /* first rule wins */
    t_ok(OP_ROUTE, c.id, NULL);
    assert_string_equal(js(LAST, "queue"), "sms");
    t_logf(&c, "queued", 0);
    assert_string_equal(js(LOGF, "rule"), "by_channel");

    c = t_chat();
    t_cust_set(&c, "tags", "[\"vip\",\"WHOLESALE\"]");
    t_ok(OP_ROUTE, c.id, NULL);
    assert_string_equal(js(LAST, "queue"), "b2b");

    c = t_chat();
    t_cust_set(&c, "tier", "Gold");
    t_ok(OP_ROUTE, c.id, NULL);
    assert_string_equal(js(LAST, "queue"), "gold");

    c = t_chat();
    t_cust_set(&c, "locale", "en-GB");
    t_ok(OP_ROUTE, c.id, NULL);
    assert_string_equal(js(LAST, "queue"), "english");

    c = t_new("chat", "", "Здравствуйте! Хочу оформить ВОЗВРАТ товара");
    t_ok(OP_ROUTE, c.id, NULL);
    assert_string_equal(js(LAST, "queue"), "returns");
    t_logf(&c, "queued", 0);
    assert_string_equal(js(LOGF, "rule"), "refunds");

    c = t_new("chat", "", "Возвратить нельзя?"); /* a longer word matches */
    t_ok(OP_ROUTE, c.id, NULL);
    assert_string_equal(js(LAST, "queue"), "returns");

    c = t_new("chat", "", "вызов мастера"); /* no keyword */
    t_ok(OP_ROUTE, c.id, NULL);
    assert_string_equal(js(LAST, "queue"), "general");
    t_logf(&c, "queued", 0);
    assert_string_equal(js(LOGF, "rule"), "default");

    c = t_new("email", "Your INVOICE 42", "see subject");
    t_ok(OP_ROUTE, c.id, NULL);
    assert_string_equal(js(LAST, "queue"), "billing");

    c = t_new("chat", "", "my invoice"); /* email only */
    t_ok(OP_ROUTE, c.id, NULL);
    assert_string_equal(js(LAST, "queue"), "general");

    c = t_new("chat", "", "A REFUND!");
    t_ok(OP_ROUTE, c.id, NULL);
    assert_string_equal(js(LAST, "queue"), "returns");

    /* an unknown curator does not stop the rules */
    c = t_new("sms", "", "x");
    t_cust_set(&c, "curator", "nobody");
    t_ok(OP_ROUTE, c.id, NULL);
    assert_string_equal(js(LAST, "queue"), "sms");
    t_logf(&c, "queued", 0);
    assert_string_equal(js(LOGF, "curator_reason"), "unknown_agent");
}

static void test_skills(void **state)
{
    struct t_conv c;

    SB_UNUSED(state);
    t_config("[queue ru]\nmembers = alice, bob/ru, carol\nskills = ru\n"
             "[agent carol]\nskills = RU, billing\n");
    t_online("alice");
    t_online("bob");
    t_online("carol");
    c = t_chat();
    t_ok(OP_ROUTE, c.id, NULL);
    assert_string_equal(t_offers(LAST), "bob");
    t_logf(&c, "offer", 0);
    assert_string_equal(t_skip(LOGF, "alice"), "missing_skill");
    c = t_chat();
    t_ok(OP_ROUTE, c.id, NULL);
    assert_string_equal(t_offers(LAST), "carol");
}

/* ---- views --------------------------------------------------------------- */

static void test_views(void **state)
{
    struct t_conv a, b, c;
    struct sb_router_filter f;
    json_t *q, *list;

    SB_UNUSED(state);
    t_config("[queue q]\nmembers = alice, bob\nsla = 1m\n"
             "[queue idle]\nmembers = carol\n[agent alice]\ncapacity = 1\n");
    t_online("alice");
    T_NOW = T_T0 + 1000;
    a = t_chat();
    t_ok(OP_ROUTE, a.id, NULL);
    t_ok(OP_ACCEPT, a.id, "alice");
    T_NOW = T_T0 + 2000;
    b = t_chat();
    t_ok(OP_ROUTE, b.id, NULL);
    T_NOW = T_T0 + 3000;
    c = t_chat();
    t_ok(OP_ROUTE, c.id, NULL);

    T_NOW = T_T0 + 200000;
    t_view(0, NULL);
    q = json_array_get(json_object_get(LAST, "queues"), 0);
    assert_string_equal(js(q, "name"), "q");
    assert_int_equal(ji(q, "waiting"), 2);
    assert_int_equal(ji(q, "longest_wait"), 198000);
    assert_int_equal(ji(q, "online"), 1);
    assert_int_equal(ji(q, "offline"), 1);
    assert_int_equal(ji(q, "busy"), 1);
    assert_int_equal(ji(q, "available"), 0);
    assert_int_equal(ji(q, "open"), 3);
    assert_true(ji(q, "sla_breaches") >= 2); /* nobody answered */
    q = json_array_get(json_object_get(LAST, "queues"), 1);
    assert_string_equal(js(q, "name"), "idle");
    assert_int_equal(ji(q, "waiting"), 0);

    t_view(1, NULL);
    list = json_object_get(LAST, "agents");
    assert_int_equal(json_array_size(list), 5);
    q = json_array_get(list, 0);
    assert_string_equal(js(q, "name"), "alice");
    assert_string_equal(js(q, "presence"), "online");
    assert_int_equal(ji(q, "active"), 1);
    assert_int_equal(ji(q, "capacity"), 1);
    assert_string_equal(
        json_string_value(json_array_get(json_object_get(q, "queues"), 0)),
        "q");

    memset(&f, 0, sizeof(f));
    f.state = "queued";
    f.queue = "q";
    t_view(2, &f);
    list = json_object_get(LAST, "conversations");
    assert_int_equal(json_array_size(list), 2);
    assert_string_equal(js(json_array_get(list, 0), "id"), c.id); /* newest */
    assert_int_equal(ji(json_array_get(list, 0), "position"), 2);
    assert_int_equal(ji(json_array_get(list, 1), "waiting_since"), T_T0 + 2000);
    f.state = NULL;
    f.queue = NULL;
    f.agent = "alice";
    t_view(2, &f);
    list = json_object_get(LAST, "conversations");
    assert_int_equal(json_array_size(list), 1);
    assert_string_equal(js(json_array_get(list, 0), "id"), a.id);
    assert_string_equal(js(json_array_get(list, 0), "state"), "assigned");
    f.agent = NULL;
    f.limit = 2;
    t_view(2, &f);
    assert_int_equal(json_array_size(json_object_get(LAST, "conversations")),
                     2);
    f.state = "bogus";
    {
        struct t_res t;

        memset(&t, 0, sizeof(t));
        assert_int_equal(t_wait(sb_router_conversations(&f, t_cb, &t), &t),
                         SB_STORE_INVALID);
    }
}

static void test_refused_without_redis(void **state)
{
    struct t_res t;

    SB_UNUSED(state);
    memset(&t, 0, sizeof(t));
    sb_router_init(NULL, T_PREFIX);
    assert_int_equal(sb_router_route("cv_1", t_cb, &t), -1);
    assert_int_equal(sb_router_tick(1, t_cb, &t), -1);
    sb_router_init(E->r, T_PREFIX);
    assert_int_equal(t.done, 0);
}

/* The earlier tests' decisions are in the counters (run last). */
static void test_metrics(void **state)
{
    static const char *const series[] = {
        "sb_router_offers_total{hop=\"curator\"} ",
        "sb_router_offers_total{hop=\"queue\"} ",
        "sb_router_offers_total{hop=\"team\"} ",
        "sb_router_assignments_total{reason=\"accepted\"} ",
        "sb_router_assignments_total{reason=\"auto\"} ",
        "sb_router_assignments_total{reason=\"transfer\"} ",
        "sb_router_queued_total{hop=\"overflow\"} ",
        "sb_router_offer_timeouts_total ",
        "sb_router_declines_total ",
        "sb_router_overflows_total ",
        "sb_router_max_wait_exceeded_total ",
        "sb_router_resolved_total ",
        "sb_router_reopened_total ",
    };
    struct sb_buf b;

    SB_UNUSED(state);
    sb_buf_init(&b, 0);
    sb_metrics_render(&b);
    for (size_t i = 0; i < SB_ARRAY_LEN(series); i++) {
        char line[128];
        const char *p;

        snprintf(line, sizeof(line), "\n%s", series[i]);
        p = strstr(b.data, line);
        if (!p || atof(p + strlen(line)) < 1)
            fail_msg("no count for %s", series[i]);
    }
    sb_buf_free(&b);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, test_setup, test_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_config_checks),
        T(test_unconfigured),
        T(test_round_robin),
        T(test_unrouted_swept),
        T(test_least_busy),
        T(test_longest_idle),
        T(test_ring_all),
        T(test_race_accept),
        T(test_race_capacity),
        T(test_capacity_lowered),
        T(test_curator_accepts),
        T(test_curator_offline),
        T(test_curator_at_capacity),
        T(test_curator_declines),
        T(test_curator_team_unavailable),
        T(test_curator_timeout_chain),
        T(test_offer_timeout_next),
        T(test_declines_remembered),
        T(test_priority),
        T(test_fifo_release),
        T(test_max_wait_overflow),
        T(test_transfer),
        T(test_resolve_reopen),
        T(test_rules),
        T(test_skills),
        T(test_views),
        T(test_refused_without_redis),
        T(test_metrics),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
