/* test_store.c - the store against a real redis-server.
 *
 * Starts a private redis-server on a unix socket in a temp dir (killed by
 * PID at teardown), connects through sb_redis on a libuv loop, and drives
 * sb_contact_ingest and friends: customer resolution by identity, open
 * conversations, idempotent re-ingest, exact timeline paging, merge
 * proposals and merges, profile updates, two connections racing on the
 * same new identity, and Redis going away. A plain hiredis connection
 * checks what landed in Redis. Every wait is bounded in time.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <uv.h>

#include "redis.h"
#include "store.h"
#include "util.h"

#define T_PREFIX "t:"
#define T_WAIT_MS 10000

#include "redis_server.h"

static int t_server_start(struct t_server *s)
{
    return t_server_start_named(s, "store");
}

/* ---- the loop and connections ---------------------------------------- */

struct t_env {
    struct t_server srv;
    uv_loop_t loop;
    struct sb_redis *r;
    struct sb_redis *r2;
    redisContext *sync;
};

static struct t_env *E;

/* Run the loop until *flag >= want or ms pass. Returns *flag >= want. */
static int t_run_until(uv_loop_t *loop, const int *flag, int want, int ms)
{
    uint64_t end = sb_mono_ms() + (uint64_t)ms;

    while (*flag < want && sb_mono_ms() < end) {
        uv_run(loop, UV_RUN_NOWAIT);
        if (*flag < want)
            t_sleep_ms(1);
    }
    return *flag >= want;
}

static struct sb_redis *t_connect(uv_loop_t *loop, const char *sock,
                                  long long cmd_timeout)
{
    struct sb_redis_conf conf;
    struct sb_redis *r;
    uint64_t end;

    memset(&conf, 0, sizeof(conf));
    conf.socket = (char *)sock;
    conf.prefix = (char *)T_PREFIX;
    conf.connect_timeout = 2000;
    conf.command_timeout = cmd_timeout;
    conf.backoff_min = 50;
    conf.backoff_max = 200;
    r = sb_redis_new(loop, &conf, "test");
    if (!r)
        return NULL;
    end = sb_mono_ms() + T_WAIT_MS;
    while (!sb_redis_is_up(r) && sb_mono_ms() < end) {
        uv_run(loop, UV_RUN_NOWAIT);
        t_sleep_ms(1);
    }
    return r;
}

static void t_close_loop(uv_loop_t *loop)
{
    uint64_t end = sb_mono_ms() + T_WAIT_MS;

    while (uv_loop_alive(loop) && sb_mono_ms() < end) {
        uv_run(loop, UV_RUN_NOWAIT);
        t_sleep_ms(1);
    }
    uv_loop_close(loop);
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
    e->r = t_connect(&e->loop, e->srv.sock, 5000);
    e->r2 = t_connect(&e->loop, e->srv.sock, 5000);
    e->sync = t_sync_connect(e->srv.sock);
    if (!e->r || !sb_redis_is_up(e->r) || !e->r2 || !sb_redis_is_up(e->r2) ||
        !e->sync) {
        t_server_stop(&e->srv);
        return -1;
    }
    E = e;
    *state = e;
    return 0;
}

static int group_teardown(void **state)
{
    struct t_env *e = *state;

    if (!e)
        return 0;
    if (e->sync)
        redisFree(e->sync);
    if (e->r)
        sb_redis_close(e->r);
    if (e->r2)
        sb_redis_close(e->r2);
    t_close_loop(&e->loop);
    t_server_stop(&e->srv);
    free(e);
    E = NULL;
    return 0;
}

static int test_setup(void **state)
{
    redisReply *r = redisCommand(E->sync, "FLUSHALL");

    freeReplyObject(r);
    sb_store_init(E->r, T_PREFIX);
    return 0;
}

/* ---- sync wrappers ---------------------------------------------------- */

struct t_ing {
    int done;
    enum sb_store_status st;
    struct sb_contact_result res;
    char err[256];
};

static void t_ing_cb(enum sb_store_status st,
                     const struct sb_contact_result *res, const char *err,
                     void *arg)
{
    struct t_ing *t = arg;

    t->done++;
    t->st = st;
    if (res)
        t->res = *res;
    if (err)
        snprintf(t->err, sizeof(t->err), "%s", err);
}

struct t_json {
    int done;
    enum sb_store_status st;
    json_t *j;
    char err[256];
};

static void t_json_cb(enum sb_store_status st, json_t *result, const char *err,
                      void *arg)
{
    struct t_json *t = arg;

    t->done++;
    t->st = st;
    t->j = result;
    if (err)
        snprintf(t->err, sizeof(t->err), "%s", err);
}

/* A contact on channel with one identity (type may be NULL: none). */
static struct sb_contact_in t_in(const char *channel, const char *type,
                                 const char *value)
{
    struct sb_contact_in in;

    memset(&in, 0, sizeof(in));
    in.channel = channel;
    in.direction = "in";
    in.type = "message";
    in.text = "hello";
    in.text_len = 5;
    if (type) {
        in.ids[0].type = type;
        in.ids[0].value = value;
        in.nids = 1;
    }
    return in;
}

static enum sb_store_status t_ingest(const struct sb_contact_in *in,
                                     struct sb_contact_result *out)
{
    struct t_ing t;

    memset(&t, 0, sizeof(t));
    assert_int_equal(sb_contact_ingest(in, t_ing_cb, &t), 0);
    assert_true(t_run_until(&E->loop, &t.done, 1, T_WAIT_MS));
    assert_int_equal(t.done, 1);
    if (out)
        *out = t.res;
    return t.st;
}

static struct sb_contact_result t_ingest_ok(const struct sb_contact_in *in)
{
    struct sb_contact_result res;

    assert_int_equal(t_ingest(in, &res), SB_STORE_OK);
    return res;
}

/* Wait for a JSON call started with rc; returns the status, *j new ref. */
static enum sb_store_status t_wait_json(int rc, struct t_json *t, json_t **j)
{
    assert_int_equal(rc, 0);
    assert_true(t_run_until(&E->loop, &t->done, 1, T_WAIT_MS));
    assert_int_equal(t->done, 1);
    if (t->st == SB_STORE_OK)
        assert_non_null(t->j);
    else
        assert_null(t->j);
    *j = t->j;
    return t->st;
}

static json_t *t_customer(const char *id)
{
    struct t_json t = {0};
    json_t *j;

    assert_int_equal(t_wait_json(sb_customer_get(id, t_json_cb, &t), &t, &j),
                     SB_STORE_OK);
    return j;
}

static enum sb_store_status t_find(const char *type, const char *value,
                                   char *id_out, size_t outlen)
{
    struct t_json t = {0};
    json_t *j;
    enum sb_store_status st;

    st = t_wait_json(sb_customer_find(type, value, t_json_cb, &t), &t, &j);
    if (j) {
        snprintf(id_out, outlen, "%s",
                 json_string_value(json_object_get(j, "id")));
        json_decref(j);
    }
    return st;
}

static json_t *t_conversation(const char *id)
{
    struct t_json t = {0};
    json_t *j;

    assert_int_equal(
        t_wait_json(sb_conversation_get(id, t_json_cb, &t), &t, &j),
        SB_STORE_OK);
    return j;
}

static json_t *t_timeline(int conv, const char *id, const char *before,
                          int limit)
{
    struct t_json t = {0};
    json_t *j;
    int rc = conv ? sb_timeline_conversation(id, before, limit, t_json_cb, &t)
                  : sb_timeline_customer(id, before, limit, t_json_cb, &t);

    assert_int_equal(t_wait_json(rc, &t, &j), SB_STORE_OK);
    return j;
}

static long long t_redis_int(const char *fmt, const char *arg)
{
    redisReply *r = redisCommand(E->sync, fmt, arg);
    long long v = -1;

    assert_non_null(r);
    if (r->type == REDIS_REPLY_INTEGER)
        v = r->integer;
    else if (r->type == REDIS_REPLY_NIL)
        v = 0;
    else if (r->type == REDIS_REPLY_STRING)
        v = atoll(r->str);
    freeReplyObject(r);
    return v;
}

static const char *t_jstr(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* ---- tests ------------------------------------------------------------ */

static void test_new_customer_by_email(void **state)
{
    struct sb_contact_in in = t_in("email", "email", "ivan@example.com");
    struct sb_contact_result res;
    json_t *c, *v;
    char id[48];

    in.name = "Ivan Petrov";
    in.locale = "ru";
    in.subject = "Order 17";
    in.source_id = "<m1@example.com>";
    res = t_ingest_ok(&in);
    assert_int_equal(res.duplicate, 0);
    assert_int_equal(res.new_customer, 1);
    assert_int_equal(res.new_conversation, 1);
    assert_int_equal(res.merge_proposed, 0);
    assert_string_equal(res.customer_id, "cu_1");
    assert_string_equal(res.conversation_id, "cv_1");
    assert_non_null(strchr(res.contact_id, '-'));

    c = t_customer(res.customer_id);
    assert_string_equal(t_jstr(c, "id"), "cu_1");
    assert_string_equal(t_jstr(c, "name"), "Ivan Petrov");
    assert_string_equal(t_jstr(c, "locale"), "ru");
    assert_true(json_is_null(json_object_get(c, "curator")));
    assert_true(json_is_array(json_object_get(c, "tags")));
    assert_true(json_is_array(
        json_object_get(json_object_get(c, "preferences"), "order")));
    assert_true(json_is_object(
        json_object_get(json_object_get(c, "preferences"), "opt_out")));
    v = json_object_get(json_object_get(c, "identities"), "email");
    assert_int_equal(json_array_size(v), 1);
    assert_string_equal(json_string_value(json_array_get(v, 0)),
                        "ivan@example.com");
    assert_int_equal(json_array_size(json_object_get(
                         json_object_get(c, "identities"), "phone")),
                     0);
    assert_true(json_integer_value(json_object_get(c, "created")) > 0);
    assert_null(json_object_get(c, "merged_into"));
    json_decref(c);

    assert_int_equal(t_find("email", "ivan@example.com", id, sizeof(id)),
                     SB_STORE_OK);
    assert_string_equal(id, "cu_1");
    assert_int_equal(t_find("email", "nobody@example.com", id, sizeof(id)),
                     SB_STORE_NOTFOUND);

    c = t_conversation(res.conversation_id);
    assert_string_equal(t_jstr(c, "customer"), "cu_1");
    assert_string_equal(t_jstr(c, "channel"), "email");
    assert_string_equal(t_jstr(c, "state"), "new");
    assert_string_equal(t_jstr(c, "subject"), "Order 17");
    assert_true(json_is_null(json_object_get(c, "agent")));
    assert_true(json_is_null(json_object_get(c, "first_response")));
    assert_true(json_integer_value(json_object_get(c, "created")) > 0);
    json_decref(c);

    assert_int_equal(t_redis_int("XLEN %s", T_PREFIX "log"), 1);
    assert_int_equal(t_redis_int("GET %s", T_PREFIX "stats:contacts:email"), 1);
}

static void test_phone_after_attach(void **state)
{
    struct sb_contact_in in = t_in("email", "email", "anna@example.com");
    struct sb_contact_result a, b, c;
    char id[48];
    json_t *cu;

    a = t_ingest_ok(&in);
    assert_int_equal(t_find("phone", "+79161234567", id, sizeof(id)),
                     SB_STORE_NOTFOUND);
    in.ids[1].type = "phone";
    in.ids[1].value = "+79161234567";
    in.nids = 2;
    b = t_ingest_ok(&in);
    assert_string_equal(b.customer_id, a.customer_id);
    assert_int_equal(b.new_customer, 0);
    assert_int_equal(b.merge_proposed, 0);
    assert_int_equal(t_find("phone", "+79161234567", id, sizeof(id)),
                     SB_STORE_OK);
    assert_string_equal(id, a.customer_id);

    /* An SMS from the phone alone: same customer, its own conversation. */
    in = t_in("sms", "phone", "+79161234567");
    c = t_ingest_ok(&in);
    assert_string_equal(c.customer_id, a.customer_id);
    assert_int_equal(c.new_customer, 0);
    assert_int_equal(c.new_conversation, 1);
    assert_string_not_equal(c.conversation_id, a.conversation_id);

    cu = t_customer(a.customer_id);
    assert_int_equal(json_array_size(json_object_get(
                         json_object_get(cu, "identities"), "phone")),
                     1);
    json_decref(cu);
}

static void test_same_email_same_conversation(void **state)
{
    struct sb_contact_in in = t_in("email", "email", "olga@example.com");
    struct sb_contact_result a, b, c;
    redisReply *r;

    a = t_ingest_ok(&in);
    b = t_ingest_ok(&in);
    assert_string_equal(a.customer_id, b.customer_id);
    assert_string_equal(a.conversation_id, b.conversation_id);
    assert_int_equal(b.new_customer, 0);
    assert_int_equal(b.new_conversation, 0);
    assert_string_not_equal(a.contact_id, b.contact_id);

    /* Once resolved, the next contact opens a new conversation. */
    r = redisCommand(E->sync, "HSET %s state resolved", T_PREFIX "conv:cv_1");
    freeReplyObject(r);
    assert_string_equal(a.conversation_id, "cv_1");
    c = t_ingest_ok(&in);
    assert_string_equal(c.customer_id, a.customer_id);
    assert_int_equal(c.new_conversation, 1);
    assert_string_equal(c.conversation_id, "cv_2");
    assert_int_equal(t_redis_int("ZCARD %s", T_PREFIX "cust:cu_1:convs"), 2);
}

static void test_idempotent_reingest(void **state)
{
    struct sb_contact_in in = t_in("sms", "phone", "+4915112345678");
    struct sb_contact_result a, b;
    json_t *tl;

    in.source_id = "SM123";
    in.provider_id = "prov-1";
    a = t_ingest_ok(&in);
    assert_int_equal(t_redis_int("XLEN %s", T_PREFIX "log"), 1);
    b = t_ingest_ok(&in);
    assert_int_equal(b.duplicate, 1);
    assert_int_equal(b.new_customer, 0);
    assert_int_equal(b.new_conversation, 0);
    assert_string_equal(b.contact_id, a.contact_id);
    assert_string_equal(b.customer_id, a.customer_id);
    assert_string_equal(b.conversation_id, a.conversation_id);
    assert_int_equal(t_redis_int("XLEN %s", T_PREFIX "log"), 1);
    assert_int_equal(t_redis_int("GET %s", T_PREFIX "stats:contacts:sms"), 1);

    /* The same source id on another channel is another contact. */
    in.channel = "chat";
    b = t_ingest_ok(&in);
    assert_int_equal(b.duplicate, 0);
    assert_int_equal(t_redis_int("XLEN %s", T_PREFIX "log"), 2);

    tl = t_timeline(0, a.customer_id, NULL, 10);
    assert_int_equal(json_array_size(json_object_get(tl, "entries")), 2);
    json_decref(tl);
}

#define T_MANY 250

struct t_many {
    int done;
    int failed;
    char ids[T_MANY][48];
};

static void t_many_cb(enum sb_store_status st,
                      const struct sb_contact_result *res, const char *err,
                      void *arg)
{
    struct t_many *m = arg;

    if (st != SB_STORE_OK || m->done >= T_MANY)
        m->failed++;
    else
        snprintf(m->ids[m->done], sizeof(m->ids[0]), "%s", res->contact_id);
    m->done++;
}

/* Page through a timeline with `limit`, checking it against want
 * (newest first). */
static void t_check_pages(int conv, const char *id, char (*want)[48], int n,
                          int limit)
{
    char before[48] = "";
    int got = 0, pages = 0;

    while (pages++ < n + 2) {
        json_t *tl = t_timeline(conv, id, before[0] ? before : NULL, limit);
        json_t *entries = json_object_get(tl, "entries");
        json_t *next = json_object_get(tl, "next_before");
        size_t i;

        for (i = 0; i < json_array_size(entries); i++) {
            json_t *e = json_array_get(entries, i);

            assert_true(got < n);
            assert_string_equal(t_jstr(e, "id"), want[got]);
            got++;
        }
        if (got < n) {
            assert_int_equal(json_array_size(entries), (size_t)limit);
            assert_true(json_is_string(next));
            assert_string_equal(json_string_value(next), want[got - 1]);
            snprintf(before, sizeof(before), "%s", json_string_value(next));
        } else {
            assert_true(json_is_null(next));
        }
        json_decref(tl);
        if (got == n)
            break;
    }
    assert_int_equal(got, n);
}

static void test_timeline_paging(void **state)
{
    static struct t_many m;
    static char want[T_MANY][48];
    struct sb_contact_in in = t_in("chat", "chat", "visitor-token-1");
    struct sb_contact_result first;
    redisReply *r;
    json_t *tl, *e;
    int i;

    memset(&m, 0, sizeof(m));
    in.fields_json = "{\"page\":\"/pricing\",\"n\":1}";
    in.ts_ms = 1700000000123LL;
    first = t_ingest_ok(&in);
    snprintf(m.ids[0], sizeof(m.ids[0]), "%s", first.contact_id);
    m.done = 1;
    /* The rest all in flight at once: many land in the same millisecond. */
    for (i = 1; i < T_MANY; i++)
        assert_int_equal(sb_contact_ingest(&in, t_many_cb, &m), 0);
    assert_true(t_run_until(&E->loop, &m.done, T_MANY, T_WAIT_MS));
    assert_int_equal(m.failed, 0);

    /* The log's own order is the truth; replies come in the same order. */
    r = redisCommand(E->sync, "XRANGE %s - +", T_PREFIX "log");
    assert_non_null(r);
    assert_int_equal(r->elements, T_MANY);
    for (i = 0; i < T_MANY; i++) {
        assert_string_equal(r->element[i]->element[0]->str, m.ids[i]);
        snprintf(want[T_MANY - 1 - i], sizeof(want[0]), "%s", m.ids[i]);
    }
    freeReplyObject(r);

    t_check_pages(0, first.customer_id, want, T_MANY, 100);
    t_check_pages(0, first.customer_id, want, T_MANY, 7);
    t_check_pages(1, first.conversation_id, want, T_MANY, 200);

    /* Limits are clamped to 1..200. */
    tl = t_timeline(0, first.customer_id, NULL, 5000);
    assert_int_equal(json_array_size(json_object_get(tl, "entries")), 200);
    json_decref(tl);
    tl = t_timeline(0, first.customer_id, NULL, 0);
    assert_int_equal(json_array_size(json_object_get(tl, "entries")), 1);
    e = json_array_get(json_object_get(tl, "entries"), 0);
    assert_string_equal(t_jstr(e, "type"), "message");
    assert_string_equal(t_jstr(e, "channel"), "chat");
    assert_string_equal(t_jstr(e, "direction"), "in");
    assert_string_equal(t_jstr(e, "customer"), first.customer_id);
    assert_string_equal(t_jstr(e, "conversation"), first.conversation_id);
    assert_string_equal(t_jstr(e, "text"), "hello");
    assert_true(json_is_null(json_object_get(e, "subject")));
    assert_int_equal(json_integer_value(json_object_get(e, "ts")),
                     1700000000123LL);
    assert_true(json_integer_value(json_object_get(e, "at")) > 1700000000000);
    assert_string_equal(t_jstr(json_object_get(e, "fields"), "page"),
                        "/pricing");
    json_decref(tl);

    /* A `before` that is not on the timeline pages by time. */
    tl = t_timeline(0, first.customer_id, "9999999999999-0", 3);
    e = json_object_get(tl, "entries");
    assert_int_equal(json_array_size(e), 3);
    assert_string_equal(t_jstr(json_array_get(e, 0), "id"), want[0]);
    json_decref(tl);
}

static void test_log_read(void **state)
{
    struct sb_contact_in in = t_in("email", "email", "log@example.com");
    struct sb_contact_result a[3];
    struct t_json t = {0};
    json_t *j, *e;
    char next[48];
    int i;

    for (i = 0; i < 3; i++)
        a[i] = t_ingest_ok(&in);
    assert_int_equal(t_wait_json(sb_log_read(NULL, 2, t_json_cb, &t), &t, &j),
                     SB_STORE_OK);
    e = json_object_get(j, "entries");
    assert_int_equal(json_array_size(e), 2);
    assert_string_equal(t_jstr(json_array_get(e, 0), "id"), a[0].contact_id);
    assert_string_equal(t_jstr(j, "next_after"), a[1].contact_id);
    snprintf(next, sizeof(next), "%s", t_jstr(j, "next_after"));
    json_decref(j);

    memset(&t, 0, sizeof(t));
    assert_int_equal(t_wait_json(sb_log_read(next, 10, t_json_cb, &t), &t, &j),
                     SB_STORE_OK);
    e = json_object_get(j, "entries");
    assert_int_equal(json_array_size(e), 1);
    assert_string_equal(t_jstr(json_array_get(e, 0), "id"), a[2].contact_id);
    json_decref(j);

    memset(&t, 0, sizeof(t));
    assert_int_equal(
        t_wait_json(sb_log_read("bogus", 10, t_json_cb, &t), &t, &j),
        SB_STORE_INVALID);
}

static void test_conversation_modes(void **state)
{
    struct sb_contact_in in = t_in("email", "email", "a@example.com");
    struct sb_contact_result a, b, r;
    struct sb_contact_in other = t_in("email", "email", "b@example.com");
    json_t *tl, *e;

    a = t_ingest_ok(&in);
    b = t_ingest_ok(&other);
    assert_string_not_equal(a.customer_id, b.customer_id);

    in.conversation = "none";
    r = t_ingest_ok(&in);
    assert_string_equal(r.conversation_id, "");
    assert_int_equal(r.new_conversation, 0);
    tl = t_timeline(0, a.customer_id, NULL, 1);
    e = json_array_get(json_object_get(tl, "entries"), 0);
    assert_string_equal(t_jstr(e, "id"), r.contact_id);
    assert_true(json_is_null(json_object_get(e, "conversation")));
    json_decref(tl);

    in.conversation = "new";
    r = t_ingest_ok(&in);
    assert_int_equal(r.new_conversation, 1);
    assert_string_not_equal(r.conversation_id, a.conversation_id);
    /* ... and it is now the open one on the channel. */
    in.conversation = NULL;
    assert_string_equal(t_ingest_ok(&in).conversation_id, r.conversation_id);

    in.conversation = a.conversation_id;
    r = t_ingest_ok(&in);
    assert_string_equal(r.conversation_id, a.conversation_id);
    assert_int_equal(r.new_conversation, 0);

    /* An agent's reply by conversation id alone finds the customer. */
    in = t_in("email", NULL, NULL);
    in.direction = "out";
    in.agent = "ag_1";
    in.conversation = a.conversation_id;
    r = t_ingest_ok(&in);
    assert_string_equal(r.customer_id, a.customer_id);
    e = t_conversation(a.conversation_id);
    assert_true(json_integer_value(json_object_get(e, "first_response")) > 0);
    json_decref(e);

    in = t_in("email", "email", "a@example.com");
    in.conversation = b.conversation_id;
    assert_int_equal(t_ingest(&in, NULL), SB_STORE_CONFLICT);
    in.conversation = "cv_999";
    assert_int_equal(t_ingest(&in, NULL), SB_STORE_NOTFOUND);
    in.conversation = "../../x";
    assert_int_equal(t_ingest(&in, NULL), SB_STORE_NOTFOUND);
    in.conversation = NULL;
    in.customer_id = "cu_999";
    assert_int_equal(t_ingest(&in, NULL), SB_STORE_NOTFOUND);
}

static void test_invalid_ingest(void **state)
{
    struct sb_contact_in in = t_in("email", "email", "x@example.com");
    struct sb_contact_in bad;
    struct t_ing t;

    bad = in;
    bad.channel = "E Mail";
    assert_int_equal(t_ingest(&bad, NULL), SB_STORE_INVALID);
    bad = in;
    bad.channel = NULL;
    assert_int_equal(t_ingest(&bad, NULL), SB_STORE_INVALID);
    bad = in;
    bad.direction = "sideways";
    assert_int_equal(t_ingest(&bad, NULL), SB_STORE_INVALID);
    bad = in;
    bad.ids[0].type = "fax";
    assert_int_equal(t_ingest(&bad, NULL), SB_STORE_INVALID);
    bad = in;
    bad.nids = SB_IDENT_MAX + 1;
    assert_int_equal(t_ingest(&bad, NULL), SB_STORE_INVALID);
    bad = in;
    bad.nids = -1;
    assert_int_equal(t_ingest(&bad, NULL), SB_STORE_INVALID);
    bad = in;
    bad.nids = 0;
    assert_int_equal(t_ingest(&bad, NULL), SB_STORE_INVALID);
    bad = in;
    bad.fields_json = "[1,2]";
    memset(&t, 0, sizeof(t));
    assert_int_equal(sb_contact_ingest(&bad, t_ing_cb, &t), 0);
    assert_true(t_run_until(&E->loop, &t.done, 1, T_WAIT_MS));
    assert_int_equal(t.st, SB_STORE_INVALID);
    assert_string_equal(t.err, "fields must be a JSON object");
    bad = in;
    bad.ts_ms = -5;
    assert_int_equal(t_ingest(&bad, NULL), SB_STORE_INVALID);

    /* Nothing was written by any of them. */
    assert_int_equal(t_redis_int("DBSIZE%s", ""), 0);

    /* Binary-safe text: NUL bytes and bad UTF-8 survive the trip. */
    in.text = "a\0b\xff";
    in.text_len = 4;
    {
        struct sb_contact_result r = t_ingest_ok(&in);
        json_t *tl = t_timeline(0, r.customer_id, NULL, 1);
        json_t *e = json_array_get(json_object_get(tl, "entries"), 0);
        json_t *text = json_object_get(e, "text");

        assert_int_equal(json_string_length(text), 6);
        assert_memory_equal(json_string_value(text), "a\0b\xef\xbf\xbd", 6);
        json_decref(tl);
    }
}

static void test_merge_proposal(void **state)
{
    struct sb_contact_in in = t_in("email", "email", "a@example.com");
    struct sb_contact_result a, b, r;
    struct t_json t = {0};
    json_t *j, *p;
    char id[48];

    a = t_ingest_ok(&in);
    in = t_in("sms", "phone", "+79990001122");
    b = t_ingest_ok(&in);
    assert_string_not_equal(a.customer_id, b.customer_id);

    in = t_in("email", "email", "a@example.com");
    in.ids[1].type = "phone";
    in.ids[1].value = "+79990001122";
    in.nids = 2;
    r = t_ingest_ok(&in);
    assert_string_equal(r.customer_id, a.customer_id);
    assert_int_equal(r.merge_proposed, 1);
    assert_int_equal(r.new_customer, 0);
    /* The phone was not moved. */
    assert_int_equal(t_find("phone", "+79990001122", id, sizeof(id)),
                     SB_STORE_OK);
    assert_string_equal(id, b.customer_id);
    /* Meeting again records nothing new. */
    r = t_ingest_ok(&in);
    assert_int_equal(r.merge_proposed, 1);
    assert_int_equal(t_redis_int("ZCARD %s", T_PREFIX "merge:proposals"), 1);

    assert_int_equal(
        t_wait_json(sb_merge_proposals(b.customer_id, t_json_cb, &t), &t, &j),
        SB_STORE_OK);
    assert_int_equal(json_array_size(j), 1);
    p = json_array_get(j, 0);
    assert_string_equal(t_jstr(p, "a"), a.customer_id);
    assert_string_equal(t_jstr(p, "b"), b.customer_id);
    assert_string_equal(t_jstr(p, "identity"), "phone:+79990001122");
    assert_true(json_integer_value(json_object_get(p, "at")) > 0);
    json_decref(j);

    memset(&t, 0, sizeof(t));
    assert_int_equal(
        t_wait_json(sb_merge_proposals("cu_404", t_json_cb, &t), &t, &j),
        SB_STORE_NOTFOUND);
}

static enum sb_store_status t_merge(const char *into, const char *from,
                                    json_t **j)
{
    struct t_json t = {0};

    return t_wait_json(sb_customer_merge(into, from, t_json_cb, &t), &t, j);
}

static void test_merge(void **state)
{
    struct sb_contact_in ia = t_in("email", "email", "a@example.com");
    struct sb_contact_in ib = t_in("sms", "phone", "+79990001122");
    struct sb_contact_result a = {0}, b = {0}, r;
    char order[12][48];
    char id[48];
    json_t *j, *ids;
    struct t_json t = {0};
    int i;

    for (i = 0; i < 6; i++) {
        a = t_ingest_ok(&ia);
        snprintf(order[11 - 2 * i], sizeof(order[0]), "%s", a.contact_id);
        b = t_ingest_ok(&ib);
        snprintf(order[10 - 2 * i], sizeof(order[0]), "%s", b.contact_id);
    }
    ib.ids[1].type = "email";
    ib.ids[1].value = "a@example.com";
    ib.nids = 2;
    assert_int_equal(t_ingest_ok(&ib).merge_proposed, 1);
    ib.nids = 1;
    /* That contact went to B's timeline: newest first now. */
    assert_int_equal(t_redis_int("ZCARD %s", T_PREFIX "cust:cu_2:tl"), 7);

    assert_int_equal(t_merge(a.customer_id, b.customer_id, &j), SB_STORE_OK);
    assert_string_equal(t_jstr(j, "id"), a.customer_id);
    ids = json_object_get(j, "identities");
    assert_int_equal(json_array_size(json_object_get(ids, "email")), 1);
    assert_int_equal(json_array_size(json_object_get(ids, "phone")), 1);
    json_decref(j);

    /* Identities and the old id resolve to the survivor. */
    assert_int_equal(t_find("phone", "+79990001122", id, sizeof(id)),
                     SB_STORE_OK);
    assert_string_equal(id, a.customer_id);
    j = t_customer(b.customer_id);
    assert_string_equal(t_jstr(j, "id"), a.customer_id);
    json_decref(j);
    j = t_conversation(b.conversation_id);
    assert_string_equal(t_jstr(j, "customer"), a.customer_id);
    json_decref(j);

    /* The timeline interleaves exactly. */
    j = t_timeline(0, a.customer_id, NULL, 200);
    ids = json_object_get(j, "entries");
    assert_int_equal(json_array_size(ids), 13);
    for (i = 0; i < 12; i++)
        assert_string_equal(t_jstr(json_array_get(ids, i + 1), "id"), order[i]);
    json_decref(j);
    /* ... also read through the merged-away id. */
    j = t_timeline(0, b.customer_id, NULL, 200);
    assert_int_equal(json_array_size(json_object_get(j, "entries")), 13);
    json_decref(j);
    assert_int_equal(t_redis_int("EXISTS %s", T_PREFIX "cust:cu_2:tl"), 0);

    /* Proposals between them are gone. */
    assert_int_equal(
        t_wait_json(sb_merge_proposals(a.customer_id, t_json_cb, &t), &t, &j),
        SB_STORE_OK);
    assert_int_equal(json_array_size(j), 0);
    json_decref(j);
    assert_int_equal(t_redis_int("ZCARD %s", T_PREFIX "merge:proposals"), 0);

    /* B's open SMS conversation continues under A. */
    r = t_ingest_ok(&ib);
    assert_string_equal(r.customer_id, a.customer_id);
    assert_string_equal(r.conversation_id, b.conversation_id);
    assert_int_equal(r.new_conversation, 0);

    assert_int_equal(t_merge(a.customer_id, a.customer_id, &j),
                     SB_STORE_CONFLICT);
    assert_int_equal(t_merge(b.customer_id, a.customer_id, &j),
                     SB_STORE_CONFLICT);
    assert_int_equal(t_merge(a.customer_id, b.customer_id, &j),
                     SB_STORE_CONFLICT);
    assert_int_equal(t_merge(a.customer_id, "cu_404", &j), SB_STORE_NOTFOUND);

    /* A third customer merged into A after B: chains stay one hop. */
    ia = t_in("chat", "chat", "tok-c");
    r = t_ingest_ok(&ia);
    assert_int_equal(t_merge(r.customer_id, a.customer_id, &j), SB_STORE_OK);
    json_decref(j);
    j = t_customer(b.customer_id);
    assert_string_equal(t_jstr(j, "id"), r.customer_id);
    json_decref(j);
    redisReply *rr =
        redisCommand(E->sync, "HGET %s merged_into", T_PREFIX "cust:cu_2");
    assert_string_equal(rr->str, r.customer_id);
    freeReplyObject(rr);
}

static enum sb_store_status t_update(const char *id, const char *patch,
                                     json_t **j)
{
    struct t_json t = {0};
    json_t *p = json_loads(patch, 0, NULL);
    int rc;

    assert_non_null(p);
    rc = sb_customer_update(id, p, t_json_cb, &t);
    json_decref(p);
    return t_wait_json(rc, &t, j);
}

static void test_customer_update(void **state)
{
    struct sb_contact_in in = t_in("email", "email", "u@example.com");
    struct sb_contact_result a, b;
    json_t *j, *prefs;

    a = t_ingest_ok(&in);
    in = t_in("sms", "phone", "+79995550000");
    b = t_ingest_ok(&in);

    assert_int_equal(
        t_update(a.customer_id,
                 "{\"name\":\"Юлия\",\"tier\":\"gold\",\"curator\":\"ag_7\","
                 "\"tags\":[\"vip\",\"dealer\",\"vip\"],"
                 "\"preferences\":{\"order\":[\"sms\",\"email\"],"
                 "\"opt_out\":{\"chat\":true}},"
                 "\"identities\":{\"chat\":[\"tok-u\"]}}",
                 &j),
        SB_STORE_OK);
    assert_string_equal(t_jstr(j, "name"), "Юлия");
    assert_string_equal(t_jstr(j, "tier"), "gold");
    assert_string_equal(t_jstr(j, "curator"), "ag_7");
    assert_int_equal(json_array_size(json_object_get(j, "tags")), 2);
    prefs = json_object_get(j, "preferences");
    assert_string_equal(
        json_string_value(json_array_get(json_object_get(prefs, "order"), 0)),
        "sms");
    assert_true(json_integer_value(json_object_get(
                    json_object_get(json_object_get(prefs, "opt_out"), "chat"),
                    "at")) > 0);
    assert_int_equal(json_array_size(json_object_get(
                         json_object_get(j, "identities"), "chat")),
                     1);
    json_decref(j);

    /* Remove the opt-out, keep the order; clear the tier. */
    assert_int_equal(t_update(a.customer_id,
                              "{\"preferences\":{\"opt_out\":{\"chat\":null}},"
                              "\"tier\":null}",
                              &j),
                     SB_STORE_OK);
    prefs = json_object_get(j, "preferences");
    assert_int_equal(json_object_size(json_object_get(prefs, "opt_out")), 0);
    assert_int_equal(json_array_size(json_object_get(prefs, "order")), 2);
    assert_true(json_is_null(json_object_get(j, "tier")));
    json_decref(j);

    /* B's phone: conflict, and nothing of the patch is applied. */
    assert_int_equal(t_update(a.customer_id,
                              "{\"name\":\"Other\",\"identities\":"
                              "{\"phone\":[\"+79995550000\"]}}",
                              &j),
                     SB_STORE_CONFLICT);
    j = t_customer(a.customer_id);
    assert_string_equal(t_jstr(j, "name"), "Юлия");
    json_decref(j);

    assert_int_equal(t_update(a.customer_id, "{\"shoe_size\":42}", &j),
                     SB_STORE_INVALID);
    assert_int_equal(t_update(a.customer_id, "{\"tags\":\"vip\"}", &j),
                     SB_STORE_INVALID);
    assert_int_equal(t_update("cu_404", "{\"name\":\"x\"}", &j),
                     SB_STORE_NOTFOUND);
    assert_int_equal(t_update(b.customer_id, "{}", &j), SB_STORE_OK);
    json_decref(j);

    {
        struct t_json t = {0};

        assert_int_equal(
            t_wait_json(sb_customer_update(a.customer_id, NULL, t_json_cb, &t),
                        &t, &j),
            SB_STORE_INVALID);
    }
}

#define T_RACE 30

struct t_race {
    int done;
    struct t_ing a[T_RACE], b[T_RACE];
};

static void test_concurrent_new_identity(void **state)
{
    static struct t_race race;
    char addr[T_RACE][64];
    struct sb_contact_in in;
    int i, done;

    memset(&race, 0, sizeof(race));
    /* Two connections, the same new e-mail on each, all in flight. */
    for (i = 0; i < T_RACE; i++) {
        snprintf(addr[i], sizeof(addr[i]), "race%d@example.com", i);
        in = t_in("email", "email", addr[i]);
        sb_store_init(E->r, T_PREFIX);
        assert_int_equal(sb_contact_ingest(&in, t_ing_cb, &race.a[i]), 0);
        sb_store_init(E->r2, T_PREFIX);
        assert_int_equal(sb_contact_ingest(&in, t_ing_cb, &race.b[i]), 0);
    }
    sb_store_init(E->r, T_PREFIX);
    done = 0;
    {
        uint64_t end = sb_mono_ms() + T_WAIT_MS;

        while (sb_mono_ms() < end) {
            done = 0;
            for (i = 0; i < T_RACE; i++)
                done += race.a[i].done + race.b[i].done;
            if (done == 2 * T_RACE)
                break;
            uv_run(&E->loop, UV_RUN_NOWAIT);
            t_sleep_ms(1);
        }
    }
    assert_int_equal(done, 2 * T_RACE);
    for (i = 0; i < T_RACE; i++) {
        assert_int_equal(race.a[i].st, SB_STORE_OK);
        assert_int_equal(race.b[i].st, SB_STORE_OK);
        assert_string_equal(race.a[i].res.customer_id,
                            race.b[i].res.customer_id);
        assert_string_equal(race.a[i].res.conversation_id,
                            race.b[i].res.conversation_id);
        assert_int_equal(
            race.a[i].res.new_customer + race.b[i].res.new_customer, 1);
    }
    assert_int_equal(t_redis_int("GET %s", T_PREFIX "seq:customer"), T_RACE);
    assert_int_equal(t_redis_int("HLEN %s", T_PREFIX "identity"), T_RACE);
}

static void test_not_found(void **state)
{
    struct t_json t = {0};
    json_t *j;

    assert_int_equal(
        t_wait_json(sb_customer_get("cu_1", t_json_cb, &t), &t, &j),
        SB_STORE_NOTFOUND);
    memset(&t, 0, sizeof(t));
    assert_int_equal(
        t_wait_json(sb_customer_get("x}{:*", t_json_cb, &t), &t, &j),
        SB_STORE_NOTFOUND);
    memset(&t, 0, sizeof(t));
    assert_int_equal(
        t_wait_json(sb_conversation_get("cv_1", t_json_cb, &t), &t, &j),
        SB_STORE_NOTFOUND);
    memset(&t, 0, sizeof(t));
    assert_int_equal(
        t_wait_json(sb_timeline_conversation("cv_1", NULL, 10, t_json_cb, &t),
                    &t, &j),
        SB_STORE_NOTFOUND);
    memset(&t, 0, sizeof(t));
    assert_int_equal(
        t_wait_json(sb_timeline_customer("cu_1", NULL, 10, t_json_cb, &t), &t,
                    &j),
        SB_STORE_NOTFOUND);
}

/* Redis stops answering (SIGSTOP): the in-flight call times out; then it
 * is gone: calls are refused or complete UNAVAILABLE. */
static struct t_server T_SRV2;

static int t_stop_srv2(void **state)
{
    t_server_stop(&T_SRV2);
    sb_store_init(E->r, T_PREFIX);
    return 0;
}

static void test_unavailable(void **state)
{
    struct t_server *srv = &T_SRV2;
    uv_loop_t loop;
    struct sb_redis *r;
    struct sb_contact_in in = t_in("email", "email", "down@example.com");
    struct t_ing t;
    uint64_t end;
    int rc;

    assert_int_equal(t_server_start(srv), 0);
    uv_loop_init(&loop);
    r = t_connect(&loop, srv->sock, 300);
    assert_non_null(r);
    assert_true(sb_redis_is_up(r));
    sb_store_init(r, T_PREFIX);

    memset(&t, 0, sizeof(t));
    assert_int_equal(sb_contact_ingest(&in, t_ing_cb, &t), 0);
    assert_true(t_run_until(&loop, &t.done, 1, T_WAIT_MS));
    assert_int_equal(t.st, SB_STORE_OK);

    kill(srv->pid, SIGSTOP);
    memset(&t, 0, sizeof(t));
    rc = sb_contact_ingest(&in, t_ing_cb, &t);
    if (rc == 0) {
        assert_true(t_run_until(&loop, &t.done, 1, T_WAIT_MS));
        assert_int_equal(t.st, SB_STORE_UNAVAILABLE);
    }

    t_server_stop(srv);
    end = sb_mono_ms() + T_WAIT_MS;
    while (sb_redis_is_up(r) && sb_mono_ms() < end) {
        uv_run(&loop, UV_RUN_NOWAIT);
        t_sleep_ms(1);
    }
    memset(&t, 0, sizeof(t));
    rc = sb_contact_ingest(&in, t_ing_cb, &t);
    if (rc == 0) {
        assert_true(t_run_until(&loop, &t.done, 1, T_WAIT_MS));
        assert_int_equal(t.st, SB_STORE_UNAVAILABLE);
    } else {
        assert_int_equal(rc, -1);
        assert_int_equal(t.done, 0);
    }

    sb_redis_close(r);
    t_close_loop(&loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_new_customer_by_email, test_setup),
        cmocka_unit_test_setup(test_phone_after_attach, test_setup),
        cmocka_unit_test_setup(test_same_email_same_conversation, test_setup),
        cmocka_unit_test_setup(test_idempotent_reingest, test_setup),
        cmocka_unit_test_setup(test_timeline_paging, test_setup),
        cmocka_unit_test_setup(test_log_read, test_setup),
        cmocka_unit_test_setup(test_conversation_modes, test_setup),
        cmocka_unit_test_setup(test_invalid_ingest, test_setup),
        cmocka_unit_test_setup(test_merge_proposal, test_setup),
        cmocka_unit_test_setup(test_merge, test_setup),
        cmocka_unit_test_setup(test_customer_update, test_setup),
        cmocka_unit_test_setup(test_concurrent_new_identity, test_setup),
        cmocka_unit_test_setup(test_not_found, test_setup),
        cmocka_unit_test_setup_teardown(test_unavailable, test_setup,
                                        t_stop_srv2),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
