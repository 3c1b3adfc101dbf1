/* test_notify_lua.c - the notification scripts against a real redis-server.
 *
 * Starts a private redis-server on a unix socket in a temp dir (stopped by
 * PID at teardown) and runs the embedded notify_*.lua scripts (with the
 * shared lib/ functions in front, as the daemon loads them) through a
 * blocking hiredis connection with EVAL. The clock is the `now` ARGV of
 * each script, so nothing here sleeps. Covered: idempotent accept, a
 * customer made from an inline e-mail and found again, supersession by
 * ref (and what is exempt from it), the schedule moving due entries to the
 * work stream, the take/result cycle (channel choice by preferences, the
 * notification's own list, opt-outs and running drivers; retry, next
 * channel, dead letter; quiet-hour holds), raw business-system entries
 * (redelivery, duplicates by idempotency key), the delivery-count limit,
 * report deadlines, sticky delivery reports and a report that arrives
 * before the result.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>
#include <jansson.h>

#include "lua_scripts.h"
#include "util.h"

#include "redis_server.h"

#define P "sb:"
#define G "switchboard"
#define T0 1795687200000LL /* 2026-11-26T10:00:00Z */
#define WINDOW 60000LL
#define IDEM_TTL "86400"
#define RETENTION "604800"
#define MAX_DEL "5"
#define DEFAULTS "email,sms,chat,"

static struct t_server srv;
static redisContext *C;

/* ---- plumbing --------------------------------------------------------- */

/* Replies not yet freed, so a failed assertion (which leaves the test by
 * longjmp) leaks nothing: the per-test teardown frees what is left. */
static redisReply *live[32];

static redisReply *keep(redisReply *r)
{
    assert_non_null(r);
    for (size_t i = 0; i < SB_ARRAY_LEN(live); i++)
        if (!live[i]) {
            live[i] = r;
            return r;
        }
    fail_msg("more than %zu replies alive", SB_ARRAY_LEN(live));
    return r;
}

static void drop(redisReply *r)
{
    for (size_t i = 0; r && i < SB_ARRAY_LEN(live); i++)
        if (live[i] == r)
            live[i] = NULL;
    freeReplyObject(r);
}

static void drop_all(void)
{
    for (size_t i = 0; i < SB_ARRAY_LEN(live); i++) {
        freeReplyObject(live[i]);
        live[i] = NULL;
    }
}

/* Numbers as script arguments: a ring of small buffers, so a few can be
 * used in one call. */
static const char *N(long long v)
{
    static char ring[64][24];
    static unsigned at;
    char *s = ring[at++ % 64];

    snprintf(s, sizeof(ring[0]), "%lld", v);
    return s;
}

static const char *script_src(const char *name)
{
    for (const struct sb_lua_script *s = sb_lua_scripts; s->name; s++)
        if (!strcmp(s->name, name))
            return s->src;
    fail_msg("no embedded script %s", name);
    return NULL;
}

/* EVAL script `name` with 0 keys and the NULL-terminated ARGV list.
 * Returns the reply (caller frees); never NULL. */
static redisReply *evalv(const char *name, const char *const *args)
{
    const char *argv[128];
    size_t n = 0;

    argv[n++] = "EVAL";
    argv[n++] = script_src(name);
    argv[n++] = "0";
    for (size_t i = 0; args[i]; i++) {
        assert_true(n < SB_ARRAY_LEN(argv));
        argv[n++] = args[i];
    }
    return keep(redisCommandArgv(C, (int)n, argv, NULL));
}

#define EVAL(name, ...) evalv(name, (const char *const[]){__VA_ARGS__, NULL})

static redisReply *cmd(const char *fmt, ...)
{
    va_list ap;
    redisReply *r;

    va_start(ap, fmt);
    r = redisvCommand(C, fmt, ap);
    va_end(ap);
    keep(r);
    assert_int_not_equal(r->type, REDIS_REPLY_ERROR);
    return r;
}

static long long cmd_int(const char *fmt, ...)
{
    va_list ap;
    redisReply *r;
    long long v;

    va_start(ap, fmt);
    r = redisvCommand(C, fmt, ap);
    va_end(ap);
    keep(r);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    v = r->integer;
    drop(r);
    return v;
}

/* A string-or-nil reply as text: a ring again; NULL for nil. */
static const char *cmd_str(const char *fmt, ...)
{
    static char ring[16][512];
    static unsigned at;
    va_list ap;
    redisReply *r;
    char *s;

    va_start(ap, fmt);
    r = redisvCommand(C, fmt, ap);
    va_end(ap);
    keep(r);
    if (r->type == REDIS_REPLY_NIL) {
        drop(r);
        return NULL;
    }
    assert_true(r->type == REDIS_REPLY_STRING ||
                r->type == REDIS_REPLY_STATUS);
    s = ring[at++ % 16];
    snprintf(s, sizeof(ring[0]), "%s", r->str);
    drop(r);
    return s;
}

static const char *ntf_field(const char *id, const char *field)
{
    return cmd_str("HGET " P "ntf:%s %s", id, field);
}

static void assert_state(const char *id, const char *state)
{
    const char *st = ntf_field(id, "state");

    assert_non_null(st);
    assert_string_equal(st, state);
}

/* The score of id on the schedule, or -1 when it is not there. */
static long long due_at(const char *id)
{
    const char *s = cmd_str("ZSCORE " P "ntf:due %s", id);

    return s ? atoll(s) : -1;
}

static long long xpending(void)
{
    redisReply *r = cmd("XPENDING " P "notify " G);
    long long n;

    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->element[0]->type, REDIS_REPLY_INTEGER);
    n = r->element[0]->integer;
    drop(r);
    return n;
}

/* Read at most `count` new work entries as consumer c1; expects exactly
 * `want` (0 or 1) and, for 1, copies the entry id and its ntf field. */
static void read_n(int count, int want, char *eid, size_t eidn, char *ntf,
                   size_t ntfn)
{
    redisReply *r = cmd("XREADGROUP GROUP " G " c1 COUNT %d STREAMS "
                        P "notify >", count);
    redisReply *ents, *e, *f;

    if (want == 0) {
        assert_int_equal(r->type, REDIS_REPLY_NIL);
        drop(r);
        return;
    }
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    ents = r->element[0]->element[1];
    assert_int_equal(ents->elements, (size_t)want);
    e = ents->element[0];
    f = e->element[1];
    assert_int_equal(f->elements, 2);
    assert_string_equal(f->element[0]->str, "ntf");
    snprintf(eid, eidn, "%s", e->element[0]->str);
    snprintf(ntf, ntfn, "%s", f->element[1]->str);
    drop(r);
}

/* All new entries: exactly want of them. */
static void read_work(int want, char *eid, size_t eidn, char *ntf,
                      size_t ntfn)
{
    read_n(10, want, eid, eidn, ntf, ntfn);
}

/* The oldest new entry of several. */
static void read_first(char *eid, size_t eidn, char *ntf, size_t ntfn)
{
    read_n(1, 1, eid, eidn, ntf, ntfn);
}

/* ---- the scripts ------------------------------------------------------ */

struct acc {
    const char *event, *customer, *email, *phone, *name, *data, *channels;
    const char *locale, *priority, *not_before, *ref, *idem;
};

struct accepted {
    char id[32];
    long long dup;
    char cust[32];
    char state[32];
};

#define S0(s) ((s) ? (s) : "")

static redisReply *accept_raw(long long now, long long window,
                              const struct acc *a)
{
    return EVAL("notify_accept", P, N(now), IDEM_TTL, N(window), RETENTION,
                a->event ? a->event : "order.created", S0(a->customer),
                S0(a->email), S0(a->phone), S0(a->name),
                a->data ? a->data : "{\"order\":\"A-1\"}", S0(a->channels),
                a->locale ? a->locale : "en",
                a->priority ? a->priority : "normal", S0(a->not_before),
                S0(a->ref), S0(a->idem));
}

static struct accepted accept_ok(long long now, long long window,
                                 const struct acc *a)
{
    redisReply *r = accept_raw(now, window, a);
    struct accepted out;

    if (r->type == REDIS_REPLY_ERROR)
        fail_msg("notify_accept: %s", r->str);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->elements, 4);
    memset(&out, 0, sizeof(out));
    snprintf(out.id, sizeof(out.id), "%s", r->element[0]->str);
    assert_int_equal(r->element[1]->type, REDIS_REPLY_INTEGER);
    out.dup = r->element[1]->integer;
    snprintf(out.cust, sizeof(out.cust), "%s", r->element[2]->str);
    snprintf(out.state, sizeof(out.state), "%s", r->element[3]->str);
    drop(r);
    return out;
}

static redisReply *take_check(redisReply *r, size_t n)
{
    if (r->type == REDIS_REPLY_ERROR)
        fail_msg("notify_take: %s", r->str);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->elements, n);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(r->element[i]->type, REDIS_REPLY_ARRAY);
    return r;
}

/* notify_take for one work entry {ntf=id}, read anew (claimed 0) or
 * claimed (1). Returns the reply (one item). */
static redisReply *take_c(long long now, const char *avail, const char *eid,
                          const char *ntf, const char *claimed)
{
    return take_check(EVAL("notify_take", P, G, N(now), IDEM_TTL, N(WINDOW),
                           DEFAULTS, avail, MAX_DEL, RETENTION, "1",
                           eid, "ntf", claimed, ntf, "", "", "", "", "",
                           "", "", "", "", "", "", ""), 1);
}

static redisReply *take(long long now, const char *avail, const char *eid,
                        const char *ntf)
{
    return take_c(now, avail, eid, ntf, "0");
}

/* A raw entry of a business system, as notify.c passes it after its own
 * validation. */
struct raw {
    const char *eid, *claimed, *email, *ref, *idem, *not_before;
};

#define RAW_SLOTS(x) (x).eid, "raw", (x).claimed ? (x).claimed : "0", "", \
    "order.shipped", "", S0((x).email), "", "", "{\"order\":\"B-2\"}", \
    "", "en", "normal", S0((x).not_before), S0((x).ref), S0((x).idem)

static redisReply *take_raw(long long now, const struct raw *x)
{
    return take_check(EVAL("notify_take", P, G, N(now), IDEM_TTL, N(WINDOW),
                           DEFAULTS, "email,sms", MAX_DEL, RETENTION, "1",
                           RAW_SLOTS(*x)), 1);
}

static redisReply *take_raw2(long long now, const struct raw *x,
                             const struct raw *y)
{
    return take_check(EVAL("notify_take", P, G, N(now), IDEM_TTL, N(WINDOW),
                           DEFAULTS, "email,sms", MAX_DEL, RETENTION, "2",
                           RAW_SLOTS(*x), RAW_SLOTS(*y)), 2);
}

/* Take one entry and expect "send" on channel ch to addr as attempt n;
 * tries_before: tries on this channel before this one. */
static void take_send(long long now, const char *avail, const char *eid,
                      const char *ntf, long long n, const char *ch,
                      const char *addr, long long tries_before)
{
    redisReply *r = take(now, avail, eid, ntf);
    redisReply *it = r->element[0];

    assert_true(it->elements >= 2);
    if (strcmp(it->element[1]->str, "send") != 0)
        fail_msg("take %s: %s %s (want send on %s)", ntf,
                 it->element[1]->str,
                 it->elements > 2 ? it->element[2]->str : "", ch);
    assert_int_equal(it->elements, 18);
    assert_string_equal(it->element[0]->str, eid);
    assert_string_equal(it->element[2]->str, ntf);
    assert_int_equal(it->element[3]->integer, n);
    assert_string_equal(it->element[4]->str, ch);
    assert_string_equal(it->element[5]->str, addr);
    assert_int_equal(it->element[15]->integer, tries_before);
    drop(r);
    assert_state(ntf, "sending");
    assert_string_equal(ntf_field(ntf, "cur"), ch);
}

static void take_skip(long long now, const char *avail, const char *eid,
                      const char *ntf)
{
    redisReply *r = take(now, avail, eid, ntf);
    redisReply *it = r->element[0];

    assert_int_equal(it->elements, 2);
    assert_string_equal(it->element[0]->str, eid);
    assert_string_equal(it->element[1]->str, "skip");
    drop(r);
}

static void result(long long now, const char *eid, const char *ntf,
                   long long n, const char *outcome, const char *ch,
                   const char *to, const char *reason, long long next,
                   long long deadline)
{
    char aid[48];
    redisReply *r;

    snprintf(aid, sizeof(aid), "%s.%lld", ntf, n);
    r = EVAL("notify_result", P, G, N(now), RETENTION, "1", eid, ntf, N(n),
             outcome, ch, to, reason, "prov-1", "1", "42", N(next),
             "Subject", "Body text", N(deadline), aid);
    if (r->type == REDIS_REPLY_ERROR)
        fail_msg("notify_result: %s", r->str);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    assert_int_equal(r->integer, 1);
    drop(r);
}

/* notify_report; returns "applied", "stale", "early" (static) or fails. */
static const char *report(long long now, const char *ntf, long long n,
                          const char *status)
{
    static char out[32];
    char aid[48];
    redisReply *r;

    snprintf(aid, sizeof(aid), "%s.%lld", ntf, n);
    r = EVAL("notify_report", P, N(now), aid, status, "", RETENTION);
    if (r->type == REDIS_REPLY_ERROR)
        fail_msg("notify_report: %s", r->str);
    assert_true(r->type == REDIS_REPLY_STRING ||
                r->type == REDIS_REPLY_STATUS);
    snprintf(out, sizeof(out), "%s", r->str);
    drop(r);
    return out;
}

/* notify_due at now (at most 100): the count moved; *wait the ms until
 * the next entry or -1. */
static long long due(long long now, long long *wait)
{
    redisReply *r = EVAL("notify_due", P, N(now), "100");
    long long moved;

    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->elements, 2);
    moved = r->element[0]->integer;
    if (wait)
        *wait = r->element[1]->integer;
    drop(r);
    return moved;
}

/* Attempt i (from 0) of a notification, decoded (caller decrefs). */
/* Attempt i of a notification (from the end when negative): its record's
 * "att" field holds them as a JSON array, in order. */
static json_t *attempt(const char *ntf, int i)
{
    const char *raw = ntf_field(ntf, "att");
    json_t *all, *j;

    assert_non_null(raw);
    all = json_loads(raw, 0, NULL);
    assert_true(json_is_array(all));
    if (i < 0)
        i += (int)json_array_size(all);
    j = json_incref(json_array_get(all, (size_t)i));
    json_decref(all);
    assert_non_null(j);
    return j;
}

/* How many attempts a notification has recorded. */
static int attempts(const char *ntf)
{
    const char *raw = ntf_field(ntf, "att");
    json_t *all;
    int n;

    if (!raw)
        return 0;
    all = json_loads(raw, 0, NULL);
    n = (int)json_array_size(all);
    json_decref(all);
    return n;
}

static const char *jstr(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));

    return s ? s : "";
}

/* The channels tried so far, as JSON text (the field is written with the
 * first channel tried; absent means none). */
static const char *tried(const char *ntf)
{
    const char *s = ntf_field(ntf, "tried");

    return s ? s : "[]";
}

/* How many timeline entries of customer cust have type `type` and, in
 * their fields, notification == ntf and key == val. */
static int timeline_count(const char *cust, const char *type,
                          const char *ntf, const char *key, const char *val)
{
    redisReply *ids = cmd("ZRANGE " P "cust:%s:tl 0 -1", cust);
    int found = 0;

    for (size_t i = 0; i < ids->elements; i++) {
        const char *id = ids->element[i]->str;
        redisReply *x = cmd("XRANGE " P "log %s %s", id, id);
        redisReply *f;
        const char *t = NULL, *fields = NULL;

        assert_int_equal(x->elements, 1);
        f = x->element[0]->element[1];
        for (size_t k = 0; k + 1 < f->elements; k += 2) {
            if (!strcmp(f->element[k]->str, "type"))
                t = f->element[k + 1]->str;
            else if (!strcmp(f->element[k]->str, "fields"))
                fields = f->element[k + 1]->str;
        }
        if (t && fields && !strcmp(t, type)) {
            json_t *j = json_loads(fields, 0, NULL);

            if (j && !strcmp(jstr(j, "notification"), ntf) &&
                !strcmp(jstr(j, key), val))
                found++;
            json_decref(j);
        }
        drop(x);
    }
    drop(ids);
    return found;
}

/* ---- fixtures --------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    if (t_server_start_named(&srv, "notify") < 0) {
        t_server_stop(&srv);
        return -1;
    }
    C = t_sync_connect(srv.sock);
    if (!C) {
        t_server_stop(&srv);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    drop_all();
    if (C)
        redisFree(C);
    C = NULL;
    t_server_stop(&srv);
    return 0;
}

static int test_setup(void **state)
{
    redisReply *r;

    (void)state;
    r = redisCommand(C, "FLUSHALL");
    if (!r)
        return -1;
    drop(r);
    r = redisCommand(C, "XGROUP CREATE " P "notify " G " 0 MKSTREAM");
    if (!r || r->type == REDIS_REPLY_ERROR) {
        drop(r);
        return -1;
    }
    drop(r);
    return 0;
}

static int test_teardown(void **state)
{
    (void)state;
    drop_all();
    return 0;
}

/* ---- accept ----------------------------------------------------------- */

static void test_accept_idempotent(void **state)
{
    struct acc a = {.email = "ann@example.com", .idem = "order-7-created"};
    struct accepted x, y, z;

    (void)state;
    x = accept_ok(T0, WINDOW, &a);
    assert_string_equal(x.id, "nt_1");
    assert_int_equal(x.dup, 0);
    assert_string_equal(x.state, "accepted");
    assert_int_equal(cmd_int("XLEN " P "notify"), 1);

    /* same key later: the same notification, nothing new queued */
    a.data = "{\"order\":\"changed\"}";
    y = accept_ok(T0 + 5000, WINDOW, &a);
    assert_string_equal(y.id, x.id);
    assert_int_equal(y.dup, 1);
    assert_string_equal(y.cust, x.cust);
    assert_int_equal(cmd_int("XLEN " P "notify"), 1);
    assert_string_equal(ntf_field(x.id, "data"), "{\"order\":\"A-1\"}");
    assert_string_equal(cmd_str("GET " P "seq:ntf"), "1");

    /* another key: a new one */
    a.idem = "order-7-paid";
    z = accept_ok(T0 + 6000, WINDOW, &a);
    assert_string_equal(z.id, "nt_2");
    assert_int_equal(z.dup, 0);
    assert_int_equal(cmd_int("XLEN " P "notify"), 2);

    /* no key: never a duplicate */
    a.idem = NULL;
    assert_int_equal(accept_ok(T0 + 7000, WINDOW, &a).dup, 0);
    assert_int_equal(accept_ok(T0 + 7000, WINDOW, &a).dup, 0);
    assert_int_equal(cmd_int("XLEN " P "notify"), 4);
}

static void test_accept_inline_customer(void **state)
{
    struct acc a = {.email = "bob@example.com", .name = "Bob"};
    struct accepted x, y, z;

    (void)state;
    x = accept_ok(T0, WINDOW, &a);
    assert_string_equal(x.cust, "cu_1");
    assert_string_equal(cmd_str("HGET " P "identity email:bob@example.com"),
                        "cu_1");
    assert_string_equal(cmd_str("HGET " P "cust:cu_1 name"), "Bob");
    assert_int_equal(cmd_int("SISMEMBER " P "cust:cu_1:ids "
                             "email:bob@example.com"), 1);
    assert_string_equal(ntf_field(x.id, "customer"), "cu_1");
    assert_string_equal(ntf_field(x.id, "to_email"), "bob@example.com");

    /* the same e-mail again: the same customer, no new one */
    y = accept_ok(T0 + 1000, WINDOW, &a);
    assert_string_equal(y.cust, "cu_1");
    assert_string_equal(cmd_str("GET " P "seq:customer"), "1");

    /* another address: another customer */
    a.email = "carol@example.com";
    z = accept_ok(T0 + 2000, WINDOW, &a);
    assert_string_equal(z.cust, "cu_2");

    /* by customer id */
    a.email = NULL;
    a.customer = "cu_1";
    assert_string_equal(accept_ok(T0 + 3000, WINDOW, &a).cust, "cu_1");
}

static void test_accept_bad_recipient(void **state)
{
    struct acc a = {.customer = "cu_99"};
    redisReply *r;

    (void)state;
    r = accept_raw(T0, WINDOW, &a);
    assert_int_equal(r->type, REDIS_REPLY_ERROR);
    assert_non_null(strstr(r->str, "NOTFOUND"));
    drop(r);

    memset(&a, 0, sizeof(a));
    r = accept_raw(T0, WINDOW, &a);
    assert_int_equal(r->type, REDIS_REPLY_ERROR);
    assert_non_null(strstr(r->str, "INVALID"));
    drop(r);

    /* nothing was written */
    assert_int_equal(cmd_int("XLEN " P "notify"), 0);
    assert_null(cmd_str("GET " P "seq:ntf"));
    assert_null(cmd_str("GET " P "seq:customer"));
}

/* ---- supersession ----------------------------------------------------- */

static void test_supersede(void **state)
{
    struct acc a = {.email = "dan@example.com", .ref = "order-R",
                    .event = "order.created"};
    struct accepted x, y, z;

    (void)state;
    x = accept_ok(T0, WINDOW, &a);
    assert_string_equal(x.state, "scheduled");
    assert_int_equal(due_at(x.id), T0 + WINDOW);
    assert_int_equal(cmd_int("XLEN " P "notify"), 0);

    a.event = "order.paid";
    y = accept_ok(T0 + 1000, WINDOW, &a);
    assert_string_equal(y.cust, x.cust);
    assert_int_equal(y.dup, 0);
    assert_state(x.id, "superseded");
    assert_string_equal(ntf_field(x.id, "superseded_by"), y.id);
    assert_int_equal(due_at(x.id), -1);
    assert_int_equal(timeline_count(x.cust, "notification", x.id, "state",
                                    "superseded"), 1);
    assert_int_equal(timeline_count(x.cust, "notification", x.id,
                                    "superseded_by", y.id), 1);

    assert_string_equal(y.state, "scheduled");
    assert_state(y.id, "scheduled");
    assert_int_equal(due_at(y.id), T0 + 1000 + WINDOW);
    assert_int_equal(cmd_int("XLEN " P "notify"), 0);
    assert_int_equal(cmd_int("ZCARD " P "ntf:due"), 1);

    /* the same ref on another customer is independent */
    a.email = "eve@example.com";
    z = accept_ok(T0 + 2000, WINDOW, &a);
    assert_string_not_equal(z.cust, y.cust);
    assert_string_equal(z.state, "scheduled");
    assert_int_equal(due_at(z.id), T0 + 2000 + WINDOW);
    assert_state(y.id, "scheduled");
    assert_int_equal(due_at(y.id), T0 + 1000 + WINDOW);

    /* when the wait is over, only the newest goes out */
    assert_int_equal(due(T0 + 1000 + WINDOW, NULL), 1);
    {
        char eid[64], ntf[32];

        read_work(1, eid, sizeof(eid), ntf, sizeof(ntf));
        assert_string_equal(ntf, y.id);
    }
}

static void test_supersede_exempt(void **state)
{
    struct acc a = {.email = "fay@example.com", .ref = "svc-9",
                    .priority = "urgent"};
    struct accepted u, w, s1, s2;
    char eid[64], ntf[32];

    (void)state;
    /* urgent with a ref: not held */
    u = accept_ok(T0, WINDOW, &a);
    assert_string_equal(u.state, "accepted");
    assert_int_equal(due_at(u.id), -1);
    assert_int_equal(cmd_int("XLEN " P "notify"), 1);

    /* window 0: no hold either */
    a.priority = "normal";
    a.ref = "svc-10";
    w = accept_ok(T0, 0, &a);
    assert_string_equal(w.state, "accepted");
    assert_int_equal(due_at(w.id), -1);
    assert_int_equal(cmd_int("XLEN " P "notify"), 2);

    /* one being sent is not superseded; the newer one still waits */
    read_first(eid, sizeof(eid), ntf, sizeof(ntf));
    assert_string_equal(ntf, u.id);
    take_send(T0 + 10, "email", eid, u.id, 1, "email", "fay@example.com", 0);
    a.ref = "svc-9";
    s1 = accept_ok(T0 + 20, WINDOW, &a);
    assert_state(u.id, "sending");
    assert_null(ntf_field(u.id, "superseded_by"));
    assert_string_equal(s1.state, "scheduled");

    /* nor one already sent */
    result(T0 + 30, eid, u.id, 1, "sent", "email", "fay@example.com", "", 0,
           0);
    assert_state(u.id, "sent");
    a.ref = "svc-10";
    read_work(1, eid, sizeof(eid), ntf, sizeof(ntf));
    assert_string_equal(ntf, w.id);
    take_send(T0 + 40, "email", eid, w.id, 1, "email", "fay@example.com", 0);
    result(T0 + 50, eid, w.id, 1, "sent", "email", "fay@example.com", "", 0,
           0);
    s2 = accept_ok(T0 + 60, WINDOW, &a);
    assert_state(w.id, "sent");
    assert_string_equal(s2.state, "scheduled");
    assert_int_equal(xpending(), 0);
}

/* ---- the schedule ----------------------------------------------------- */

static void test_due(void **state)
{
    struct acc a = {.email = "gus@example.com",
                    .not_before = N(T0 + 5000)};
    struct accepted x, y;
    long long wait = 0;
    char eid[64], ntf[32];

    (void)state;
    x = accept_ok(T0, WINDOW, &a);
    assert_string_equal(x.state, "scheduled");
    assert_int_equal(due_at(x.id), T0 + 5000);
    a.not_before = N(T0 + 9000);
    y = accept_ok(T0, WINDOW, &a);
    assert_int_equal(due_at(y.id), T0 + 9000);

    /* before: nothing moves */
    assert_int_equal(due(T0 + 4999, &wait), 0);
    assert_int_equal(wait, 1);
    assert_int_equal(cmd_int("XLEN " P "notify"), 0);
    assert_int_equal(due_at(x.id), T0 + 5000);

    /* at the time: the first moves to the stream as {ntf=id} */
    assert_int_equal(due(T0 + 5000, &wait), 1);
    assert_int_equal(wait, 4000);
    assert_int_equal(due_at(x.id), -1);
    assert_int_equal(due_at(y.id), T0 + 9000);
    read_work(1, eid, sizeof(eid), ntf, sizeof(ntf));
    assert_string_equal(ntf, x.id);

    /* again at the same time: nothing twice */
    assert_int_equal(due(T0 + 5000, NULL), 0);
    read_work(0, NULL, 0, NULL, 0);

    /* later than due: moves too; the schedule is then empty */
    assert_int_equal(due(T0 + 60000, &wait), 1);
    assert_int_equal(wait, -1);
    read_work(1, eid, sizeof(eid), ntf, sizeof(ntf));
    assert_string_equal(ntf, y.id);
    assert_int_equal(cmd_int("ZCARD " P "ntf:due"), 0);
}

/* ---- take and result -------------------------------------------------- */

static void set_prefs(const char *cust, const char *prefs)
{
    drop(cmd("HSET " P "cust:%s prefs %s", cust, prefs));
}

/* Accept one for email+phone (window 0), read its work entry. */
static struct accepted accept_and_read(long long now, struct acc *a,
                                       char *eid, size_t eidn)
{
    struct accepted x = accept_ok(now, 0, a);
    char ntf[32];

    read_work(1, eid, eidn, ntf, sizeof(ntf));
    assert_string_equal(ntf, x.id);
    return x;
}

static void test_choose_channel(void **state)
{
    struct acc a = {.email = "hal@example.com", .phone = "+79991234567",
                    .name = "Hal"};
    struct accepted x;
    char eid[64];
    redisReply *r;

    (void)state;
    /* no preferences: the default order */
    x = accept_and_read(T0, &a, eid, sizeof(eid));
    take_send(T0, "email,sms,chat", eid, x.id, 1, "email", "hal@example.com",
              0);
    assert_string_equal(ntf_field(x.id, "to"), "hal@example.com");

    /* the customer's order first; time zone and quiet hours passed on */
    set_prefs(x.cust, "{\"order\":[\"sms\",\"email\"],\"opt_out\":{},"
              "\"quiet_hours\":{\"from\":\"22:00\",\"to\":\"08:00\"}}");
    drop(cmd("HSET " P "cust:%s timezone Europe/Moscow", x.cust));
    x = accept_and_read(T0, &a, eid, sizeof(eid));
    r = take(T0, "email,sms,chat", eid, x.id);
    {
        redisReply *it = r->element[0];
        json_t *q;

        assert_int_equal(it->elements, 18);
        assert_string_equal(it->element[1]->str, "send");
        assert_string_equal(it->element[4]->str, "sms");
        assert_string_equal(it->element[5]->str, "+79991234567");
        assert_string_equal(it->element[6]->str, "order.created");
        assert_string_equal(it->element[7]->str, "en");
        assert_string_equal(it->element[8]->str, "Europe/Moscow");
        q = json_loads(it->element[9]->str, 0, NULL);
        assert_non_null(q);
        assert_string_equal(jstr(q, "from"), "22:00");
        assert_string_equal(jstr(q, "to"), "08:00");
        json_decref(q);
        assert_string_equal(it->element[13]->str, x.cust);
        assert_string_equal(it->element[14]->str, "Hal");
        assert_int_equal(it->element[16]->integer, T0);
        assert_string_equal(it->element[17]->str, N(T0));
    }
    drop(r);

    /* ...unless sms has no running driver */
    x = accept_and_read(T0, &a, eid, sizeof(eid));
    take_send(T0, "email,chat", eid, x.id, 1, "email", "hal@example.com", 0);

    /* opted out of sms: e-mail */
    set_prefs(x.cust, "{\"order\":[\"sms\",\"email\"],"
              "\"opt_out\":{\"sms\":{\"at\":1700000000000}}}");
    x = accept_and_read(T0, &a, eid, sizeof(eid));
    take_send(T0, "email,sms,chat", eid, x.id, 1, "email", "hal@example.com",
              0);

    /* the notification's own list wins over the preferences; chat has no
     * address (no chat identity), webhook always has one */
    set_prefs(x.cust, "{\"order\":[\"email\"],\"opt_out\":{}}");
    a.channels = "[\"chat\",\"sms\",\"email\"]";
    x = accept_and_read(T0, &a, eid, sizeof(eid));
    take_send(T0, "email,sms,chat", eid, x.id, 1, "sms", "+79991234567", 0);
    a.channels = "[\"chat\",\"webhook\"]";
    x = accept_and_read(T0, &a, eid, sizeof(eid));
    take_send(T0, "email,sms,chat,webhook", eid, x.id, 1, "webhook", x.cust,
              0);

    /* nothing reachable at all: dead at once */
    a.channels = "[\"chat\"]";
    x = accept_and_read(T0, &a, eid, sizeof(eid));
    take_skip(T0, "email,sms,chat", eid, x.id);
    assert_state(x.id, "dead");
    assert_non_null(strstr(ntf_field(x.id, "reason"), "no reachable"));
}

static void test_round_trip(void **state)
{
    struct acc a = {.email = "ivy@example.com", .phone = "+79990000001"};
    struct accepted x;
    char eid[64], ntf[32];
    const long long t = T0;
    json_t *att;
    redisReply *r;

    (void)state;
    x = accept_and_read(t, &a, eid, sizeof(eid));
    assert_int_equal(xpending(), 1);
    take_send(t, "email,sms", eid, x.id, 1, "email", "ivy@example.com", 0);

    /* a temporary failure: retry later on the same channel */
    result(t + 100, eid, x.id, 1, "temp", "email", "ivy@example.com",
           "421 try later", t + 5000, 0);
    assert_state(x.id, "failed");
    assert_int_equal(due_at(x.id), t + 5000);
    assert_int_equal(xpending(), 0);
    assert_string_equal(tried(x.id), "[]");
    att = attempt(x.id, 0);
    assert_string_equal(jstr(att, "result"), "tempfail");
    assert_string_equal(jstr(att, "channel"), "email");
    assert_string_equal(jstr(att, "id"), "nt_1.1");
    assert_string_equal(jstr(att, "reason"), "421 try later");
    assert_int_equal(json_integer_value(json_object_get(att, "retry_at")),
                     t + 5000);
    assert_int_equal(json_integer_value(json_object_get(att, "n")), 1);
    json_decref(att);
    read_work(0, NULL, 0, NULL, 0);

    /* the retry: same channel, second try on it */
    assert_int_equal(due(t + 4999, NULL), 0);
    assert_int_equal(due(t + 5000, NULL), 1);
    read_work(1, eid, sizeof(eid), ntf, sizeof(ntf));
    assert_string_equal(ntf, x.id);
    r = take(t + 5000, "email,sms", eid, x.id);
    assert_string_equal(r->element[0]->element[1]->str, "send");
    assert_int_equal(r->element[0]->element[3]->integer, 2);
    assert_string_equal(r->element[0]->element[4]->str, "email");
    assert_int_equal(r->element[0]->element[15]->integer, 1);
    assert_int_equal(r->element[0]->element[16]->integer, t);
    drop(r);

    /* a permanent failure: the channel is tried, a new work entry */
    result(t + 5100, eid, x.id, 2, "perm", "email", "ivy@example.com",
           "550 no such user", 0, 0);
    assert_state(x.id, "failed");
    assert_string_equal(tried(x.id), "[\"email\"]");
    assert_int_equal(due_at(x.id), -1);
    assert_int_equal(xpending(), 0);
    assert_int_equal(attempts(x.id), 2);
    read_work(1, eid, sizeof(eid), ntf, sizeof(ntf));
    assert_string_equal(ntf, x.id);

    /* the next channel, its first try */
    take_send(t + 5200, "email,sms", eid, x.id, 3, "sms", "+79990000001", 0);
    assert_string_equal(ntf_field(x.id, "ch_first"), N(t + 5200));
    result(t + 5300, eid, x.id, 3, "perm", "sms", "+79990000001",
           "unknown number", 0, 0);
    assert_string_equal(tried(x.id), "[\"email\",\"sms\"]");
    read_work(1, eid, sizeof(eid), ntf, sizeof(ntf));

    /* nothing left (chat has no driver): dead, with the reason */
    take_skip(t + 5400, "email,sms", eid, x.id);
    assert_state(x.id, "dead");
    assert_int_equal(xpending(), 0);
    assert_int_equal(due_at(x.id), -1);
    r = cmd("XRANGE " P "notify:dead - +");
    assert_int_equal(r->elements, 1);
    {
        redisReply *f = r->element[0]->element[1];
        const char *got_ntf = NULL, *reason = NULL, *at = NULL;

        for (size_t k = 0; k + 1 < f->elements; k += 2) {
            if (!strcmp(f->element[k]->str, "ntf"))
                got_ntf = f->element[k + 1]->str;
            else if (!strcmp(f->element[k]->str, "reason"))
                reason = f->element[k + 1]->str;
            else if (!strcmp(f->element[k]->str, "at"))
                at = f->element[k + 1]->str;
        }
        assert_non_null(got_ntf);
        assert_string_equal(got_ntf, x.id);
        /* the last failure first (what the operator must see) */
        assert_non_null(reason);
        assert_int_equal(strncmp(reason, "sms: unknown number", 19), 0);
        assert_string_equal(ntf_field(x.id, "reason"), reason);
        assert_non_null(at);
        assert_string_equal(at, N(t + 5400));
        assert_string_equal(ntf_field(x.id, "dlq"),
                            r->element[0]->element[0]->str);
    }
    drop(r);
    assert_int_equal(timeline_count(x.cust, "notification", x.id, "state",
                                    "dead"), 1);
    read_work(0, NULL, 0, NULL, 0);
}

static void test_hold(void **state)
{
    struct acc a = {.email = "jon@example.com"};
    struct accepted x;
    char eid[64], ntf[32];

    (void)state;
    x = accept_and_read(T0, &a, eid, sizeof(eid));
    take_send(T0, "email", eid, x.id, 1, "email", "jon@example.com", 0);
    result(T0 + 10, eid, x.id, 1, "hold", "email", "jon@example.com", "",
           T0 + 8 * 3600000LL, 0);
    assert_state(x.id, "held");
    assert_int_equal(due_at(x.id), T0 + 8 * 3600000LL);
    assert_int_equal(attempts(x.id), 0);
    assert_int_equal(xpending(), 0);
    assert_int_equal(due(T0 + 8 * 3600000LL, NULL), 1);
    read_work(1, eid, sizeof(eid), ntf, sizeof(ntf));
    assert_string_equal(ntf, x.id);
}

/* A quiet-hours hold is not a try: after it, the channel's try count and
 * age (max_attempts, max_age) start from the real first try, else one
 * notification held overnight has an exhausted channel at its first
 * temporary failure (max_age defaults to 1 h). */
static void test_hold_not_a_try(void **state)
{
    struct acc a = {.email = "jon@example.com"};
    struct accepted x;
    char eid[64], ntf[32];
    const long long later = T0 + 8 * 3600000LL;
    redisReply *r;

    (void)state;
    x = accept_and_read(T0, &a, eid, sizeof(eid));
    take_send(T0, "email", eid, x.id, 1, "email", "jon@example.com", 0);
    result(T0 + 10, eid, x.id, 1, "hold", "email", "jon@example.com", "",
           later, 0);
    assert_int_equal(due(later, NULL), 1);
    read_work(1, eid, sizeof(eid), ntf, sizeof(ntf));
    r = take(later, "email", eid, x.id);
    assert_string_equal(r->element[0]->element[1]->str, "send");
    /* the attempt number: no attempt was made before */
    assert_int_equal(r->element[0]->element[3]->integer, 1);
    /* tries on this channel before, and the first try's time */
    assert_int_equal(r->element[0]->element[15]->integer, 0);
    assert_int_equal(r->element[0]->element[16]->integer, later);
    drop(r);
}

static void test_temp_exhausted(void **state)
{
    struct acc a = {.email = "ned@example.com", .phone = "+79990000005"};
    struct accepted x;
    char eid[64], ntf[32];
    json_t *att;

    (void)state;
    x = accept_and_read(T0, &a, eid, sizeof(eid));
    take_send(T0, "email,sms", eid, x.id, 1, "email", "ned@example.com", 0);
    /* a temporary failure with no retry time: the channel is done */
    result(T0 + 100, eid, x.id, 1, "temp", "email", "ned@example.com",
           "451 busy", 0, 0);
    assert_state(x.id, "failed");
    assert_string_equal(tried(x.id), "[\"email\"]");
    assert_int_equal(due_at(x.id), -1);
    att = attempt(x.id, 0);
    assert_string_equal(jstr(att, "result"), "tempfail");
    assert_null(json_object_get(att, "retry_at"));
    json_decref(att);
    read_work(1, eid, sizeof(eid), ntf, sizeof(ntf));
    assert_string_equal(ntf, x.id);
    take_send(T0 + 200, "email,sms", eid, x.id, 2, "sms", "+79990000005", 0);
}

/* XADD a raw business-system entry and read it; returns its id. */
static void add_raw(char *eid, size_t eidn)
{
    redisReply *r = cmd("XADD " P "notify * event order.shipped "
                        "email ola@example.com");

    drop(r);
    r = cmd("XREADGROUP GROUP " G " c1 COUNT 1 STREAMS " P "notify >");
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    snprintf(eid, eidn, "%s", r->element[0]->element[1]->element[0]->
             element[0]->str);
    drop(r);
}

static void test_raw_entry(void **state)
{
    char e1[64], e2[64];
    struct raw x = {.email = "ola@example.com"};
    redisReply *r;
    char id[32];

    (void)state;
    /* a raw entry is accepted and sent; its id is recorded */
    add_raw(e1, sizeof(e1));
    x.eid = e1;
    r = take_raw(T0, &x);
    assert_string_equal(r->element[0]->element[1]->str, "send");
    snprintf(id, sizeof(id), "%s", r->element[0]->element[2]->str);
    assert_string_equal(r->element[0]->element[4]->str, "email");
    drop(r);
    assert_string_equal(ntf_field(id, "event"), "order.shipped");
    assert_int_equal(xpending(), 1); /* acked by the result, not here */

    /* the same entry again after a crash (claimed): the same
     * notification, sent again (at least once), not a second one */
    x.claimed = "1";
    r = take_raw(T0 + 60000, &x);
    assert_string_equal(r->element[0]->element[1]->str, "send");
    assert_string_equal(r->element[0]->element[2]->str, id);
    drop(r);
    assert_string_equal(cmd_str("GET " P "seq:ntf"), "1");
    result(T0 + 60100, e1, id, 1, "sent", "email", "ola@example.com", "", 0,
           0);
    assert_state(id, "sent");
    assert_int_equal(xpending(), 0);

    /* with a ref: waits out the supersession window, acked at once */
    add_raw(e2, sizeof(e2));
    x.eid = e2;
    x.claimed = "0";
    x.ref = "B-2";
    r = take_raw(T0 + 70000, &x);
    assert_string_equal(r->element[0]->element[1]->str, "skip");
    drop(r);
    assert_state("nt_2", "scheduled");
    assert_int_equal(due_at("nt_2"), T0 + 70000 + WINDOW);
    assert_int_equal(xpending(), 0);
}

/* A business system that XADDs the same notification twice (the same
 * idempotency key) gets one notification, sent once. */
static void test_raw_duplicate(void **state)
{
    char e1[64], e2[64];
    struct raw x = {.email = "ola@example.com", .idem = "erp-77"};
    struct raw y = x;
    redisReply *r;

    (void)state;
    /* both in one batch */
    add_raw(e1, sizeof(e1));
    add_raw(e2, sizeof(e2));
    x.eid = e1;
    y.eid = e2;
    r = take_raw2(T0, &x, &y);
    assert_string_equal(r->element[0]->element[1]->str, "send");
    assert_string_equal(r->element[1]->element[0]->str, e2);
    assert_string_equal(r->element[1]->element[1]->str, "skip");
    drop(r);
    assert_string_equal(cmd_str("GET " P "seq:ntf"), "1");
    assert_state("nt_1", "sending");
    assert_int_equal(xpending(), 1); /* the first, until its result */
}

/* The same while the first waits for its not_before time: the duplicate
 * must not send it early. */
static void test_raw_duplicate_scheduled(void **state)
{
    char e1[64], e2[64];
    struct raw x = {.email = "ola@example.com", .idem = "erp-78",
                    .not_before = N(T0 + 3600000)};
    redisReply *r;

    (void)state;
    add_raw(e1, sizeof(e1));
    x.eid = e1;
    r = take_raw(T0, &x);
    assert_string_equal(r->element[0]->element[1]->str, "skip");
    drop(r);
    assert_state("nt_1", "scheduled");
    add_raw(e2, sizeof(e2));
    x.eid = e2;
    r = take_raw(T0 + 1000, &x);
    assert_string_equal(r->element[0]->element[1]->str, "skip");
    drop(r);
    assert_state("nt_1", "scheduled");
    assert_int_equal(due_at("nt_1"), T0 + 3600000);
    assert_int_equal(xpending(), 0);
}

static void test_max_deliveries(void **state)
{
    struct acc a = {.email = "pat@example.com"};
    struct accepted x;
    char eid[64];
    redisReply *r;

    (void)state;
    x = accept_and_read(T0, &a, eid, sizeof(eid));
    take_send(T0, "email", eid, x.id, 1, "email", "pat@example.com", 0);
    /* the daemon died mid-send, again and again: the entry comes back
     * claimed with a delivery count above the limit (5) */
    drop(cmd("XCLAIM " P "notify " G " c2 0 %s RETRYCOUNT 6",
                        eid));
    r = take_c(T0 + 1000, "email", eid, x.id, "1");
    assert_string_equal(r->element[0]->element[1]->str, "skip");
    drop(r);
    assert_state(x.id, "dead");
    assert_non_null(strstr(ntf_field(x.id, "reason"), "without an outcome"));
    assert_int_equal(xpending(), 0);
    r = cmd("XLEN " P "notify:dead");
    assert_int_equal(r->integer, 1);
    drop(r);
}

/* ---- reports ---------------------------------------------------------- */

static void test_report_deadline(void **state)
{
    struct acc a = {.email = "kim@example.com", .phone = "+79990000002"};
    struct accepted x;
    char eid[64];
    json_t *att;

    (void)state;
    x = accept_and_read(T0, &a, eid, sizeof(eid));
    take_send(T0, "email,sms", eid, x.id, 1, "email", "kim@example.com", 0);
    result(T0 + 100, eid, x.id, 1, "sent", "email", "kim@example.com", "", 0,
           T0 + 10000);
    assert_state(x.id, "sent");
    assert_string_equal(ntf_field(x.id, "awaiting"), "1");
    assert_string_equal(ntf_field(x.id, "sent_at"), N(T0 + 100));
    assert_int_equal(due_at(x.id), T0 + 10000);
    assert_int_equal(xpending(), 0);
    assert_int_equal(timeline_count(x.cust, "notification", x.id, "state",
                                    "sent"), 1);

    assert_string_equal(report(T0 + 2000, x.id, 1, "delivered"), "applied");
    assert_state(x.id, "delivered");
    assert_null(ntf_field(x.id, "awaiting"));
    assert_int_equal(due_at(x.id), -1);
    att = attempt(x.id, 0);
    assert_string_equal(jstr(att, "report"), "delivered");
    json_decref(att);
    assert_int_equal(timeline_count(x.cust, "status", x.id, "report",
                                    "delivered"), 1);

    /* sticky: a later contrary or repeated report changes nothing */
    assert_string_equal(report(T0 + 3000, x.id, 1, "undelivered"), "stale");
    assert_string_equal(report(T0 + 3000, x.id, 1, "delivered"), "stale");
    assert_string_equal(report(T0 + 3000, x.id, 1, "sent"), "stale");
    assert_state(x.id, "delivered");
    att = attempt(x.id, 0);
    assert_string_equal(jstr(att, "report"), "delivered");
    json_decref(att);
    read_work(0, NULL, 0, NULL, 0);
    assert_int_equal(timeline_count(x.cust, "status", x.id, "report",
                                    "undelivered"), 0);
}

static void test_report_missed(void **state)
{
    struct acc a = {.email = "lea@example.com", .phone = "+79990000003"};
    struct accepted x;
    char eid[64], ntf[32];
    json_t *att;

    (void)state;
    x = accept_and_read(T0, &a, eid, sizeof(eid));
    take_send(T0, "email,sms", eid, x.id, 1, "email", "lea@example.com", 0);
    result(T0 + 100, eid, x.id, 1, "sent", "email", "lea@example.com", "", 0,
           T0 + 10000);

    /* no report; the deadline wakes it */
    assert_int_equal(due(T0 + 9999, NULL), 0);
    assert_int_equal(due(T0 + 10000, NULL), 1);
    read_work(1, eid, sizeof(eid), ntf, sizeof(ntf));
    assert_string_equal(ntf, x.id);
    take_send(T0 + 10000, "email,sms", eid, x.id, 2, "sms", "+79990000003",
              0);
    att = attempt(x.id, 0);
    assert_string_equal(jstr(att, "report"), "unknown");
    assert_int_equal(json_integer_value(json_object_get(att, "report_at")),
                     T0 + 10000);
    json_decref(att);
    assert_string_equal(tried(x.id), "[\"email\"]");
    assert_null(ntf_field(x.id, "awaiting"));

    /* a report for the old attempt, too late, does not stop the new one */
    assert_string_equal(report(T0 + 10500, x.id, 1, "delivered"), "applied");
    assert_state(x.id, "sending");
    result(T0 + 11000, eid, x.id, 2, "sent", "sms", "+79990000003", "", 0, 0);
    assert_state(x.id, "sent");
    assert_int_equal(xpending(), 0);
}

static void test_report_early(void **state)
{
    struct acc a = {.email = "max@example.com", .phone = "+79990000004"};
    struct accepted x, y;
    char eid[64], ntf[32];
    json_t *att;

    (void)state;
    /* delivered before our result is written */
    x = accept_and_read(T0, &a, eid, sizeof(eid));
    take_send(T0, "email,sms", eid, x.id, 1, "email", "max@example.com", 0);
    assert_string_equal(report(T0 + 50, x.id, 1, "delivered"), "early");
    assert_state(x.id, "sending");
    result(T0 + 100, eid, x.id, 1, "sent", "email", "max@example.com", "", 0,
           T0 + 10000);
    assert_state(x.id, "delivered");
    assert_int_equal(due_at(x.id), -1);
    assert_null(ntf_field(x.id, "awaiting"));
    att = attempt(x.id, 0);
    assert_string_equal(jstr(att, "result"), "sent");
    assert_string_equal(jstr(att, "report"), "delivered");
    json_decref(att);
    assert_int_equal(cmd_int("EXISTS " P "ntf:%s:early", x.id), 0);

    /* undelivered before the result: the next channel */
    y = accept_and_read(T0, &a, eid, sizeof(eid));
    take_send(T0, "email,sms", eid, y.id, 1, "email", "max@example.com", 0);
    assert_string_equal(report(T0 + 50, y.id, 1, "undelivered"), "early");
    result(T0 + 100, eid, y.id, 1, "sent", "email", "max@example.com", "", 0,
           T0 + 10000);
    assert_state(y.id, "failed");
    assert_string_equal(tried(y.id), "[\"email\"]");
    assert_int_equal(due_at(y.id), -1);
    read_work(1, eid, sizeof(eid), ntf, sizeof(ntf));
    assert_string_equal(ntf, y.id);
    take_send(T0 + 200, "email,sms", eid, y.id, 2, "sms", "+79990000004", 0);
    assert_int_equal(xpending(), 1);
}

/* notify_stats: a consumer idle past the limit with nothing pending is
 * removed; one holding an entry stays, however idle. */
static void test_stats_forgets_gone_consumers(void **state)
{
    redisReply *r;

    (void)state;
    /* the group may exist already: BUSYGROUP is fine */
    freeReplyObject(redisCommand(C, "XGROUP CREATE " P "notify " G
                                    " 0 MKSTREAM"));
    freeReplyObject(redisCommand(C, "XREADGROUP GROUP " G " idle COUNT 1 "
                                    "STREAMS " P "notify >"));
    freeReplyObject(redisCommand(C, "XADD " P "notify * ntf nt_9"));
    freeReplyObject(redisCommand(C, "XREADGROUP GROUP " G " holder COUNT 1 "
                                    "STREAMS " P "notify >"));
    usleep(60 * 1000);
    r = EVAL("notify_stats", P, G, "0", "40");
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->element[6]->elements, 3); /* holder only */
    assert_string_equal(r->element[6]->element[0]->str, "holder");
    r = EVAL("notify_stats", P, G, "0", "86400000");
    assert_int_equal(r->element[6]->elements, 3);
}

#define T(f) cmocka_unit_test_setup_teardown(f, test_setup, test_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_accept_idempotent),
        T(test_accept_inline_customer),
        T(test_accept_bad_recipient),
        T(test_supersede),
        T(test_supersede_exempt),
        T(test_due),
        T(test_choose_channel),
        T(test_round_trip),
        T(test_hold),
        T(test_hold_not_a_try),
        T(test_temp_exhausted),
        T(test_raw_entry),
        T(test_raw_duplicate),
        T(test_raw_duplicate_scheduled),
        T(test_max_deliveries),
        T(test_report_deadline),
        T(test_report_missed),
        T(test_report_early),
        T(test_stats_forgets_gone_consumers),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
