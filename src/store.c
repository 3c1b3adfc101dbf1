/* store.c - customers, conversations and the contact log, all in Redis.
 *
 * The C side of store.h: each call builds an argv array (outside data never
 * goes into a format string), runs one Lua script from src/lua/ through
 * sb_redis_script() and turns the reply into the callback's result. All
 * the logic that must be atomic (resolve, create, attach, merge, append) is
 * in the scripts; see docs/redis-layout.md for the keys they touch.
 *
 * Input checks live in the scripts too, so that every accepted call
 * completes asynchronously, INVALID included, and there is one place that
 * knows the rules. Script errors come back as "NOTFOUND ...", "CONFLICT ..."
 * and "INVALID ..." and map to the status codes; anything else Redis says
 * (timeout, disconnect, OOM, BUSY, a script bug) is SB_STORE_UNAVAILABLE.
 *
 * JSON results: strings stored empty come back as null; times (ms) as
 * integers; tags, preferences and a contact's fields parsed. The global log
 * (sb_log_read) comes back as {"entries":[...],"next_after":id|null}, where
 * next_after is the last entry's id, to pass as `after` next time.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "store.h"
#include "util.h"

#define ST_PLACE "core.store"
#define ST_DEDUPE_S (30LL * 24 * 3600) /* default dedupe window, seconds */
#define ST_TL_MAX 200
#define ST_LOG_MAX 1000
#define ST_ARGV_MAX (17 + 2 * SB_IDENT_MAX)

enum st_kind {
    ST_INGEST,
    ST_CUSTOMER,
    ST_PROPOSALS,
    ST_TIMELINE,
    ST_LOG,
    ST_CONVERSATION
};

struct st_req {
    enum st_kind kind;
    const char *script; /* static name, for logs */
    sb_contact_cb *ccb;
    sb_store_json_cb *jcb;
    void *arg;
};

static struct {
    struct sb_redis *redis;
    char *prefix;
    long long dedupe_s; /* 0: ST_DEDUPE_S */
} S;

void sb_store_set_dedupe_window(long long seconds)
{
    S.dedupe_s = seconds;
}

void sb_store_init(struct sb_redis *r, const char *prefix)
{
    free(S.prefix);
    S.redis = r;
    S.prefix = sb_strdup(prefix && *prefix ? prefix : "sb:");
}

/* ---- JSON helpers ---------------------------------------------------- */


/* A JSON string from stored bytes: null when empty; invalid UTF-8 bytes
 * (the log takes what drivers give it) become U+FFFD. */
static json_t *st_str(const char *s, size_t len)
{
    struct sb_buf b;
    json_t *j;
    size_t i, n;

    if (len == 0)
        return json_null();
    j = json_stringn(s, len);
    if (j)
        return j;
    sb_buf_init(&b, 0);
    for (i = 0; i < len; i += n) {
        n = sb_utf8_seq(s + i, len - i, NULL);
        if (n == 0) {
            sb_buf_append(&b, "\xef\xbf\xbd", 3);
            n = 1;
        } else {
            sb_buf_append(&b, s + i, n);
        }
    }
    j = json_stringn(b.data ? b.data : "", b.len);
    sb_buf_free(&b);
    return j ? j : json_null();
}

/* Milliseconds as an integer, null when empty or not a number. */
static json_t *st_ms(const char *s)
{
    long long v;

    if (!s || sb_parse_ll(s, &v) < 0)
        return json_null();
    return json_integer(v);
}

/* Parse stored JSON; when it is not of the wanted type, return def (new
 * reference, consumed otherwise). */
static json_t *st_parse(const char *s, size_t len, json_type want, json_t *def)
{
    json_t *j = json_loadb(s, len, JSON_REJECT_DUPLICATES, NULL);

    if (j && json_typeof(j) == want) {
        json_decref(def);
        return j;
    }
    json_decref(j);
    return def;
}

static int st_is_str(const redisReply *r)
{
    return r &&
           (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS);
}

static int st_is_array(const redisReply *r, size_t min)
{
    return r && r->type == REDIS_REPLY_ARRAY && r->elements >= min;
}

static int st_cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* ---- result builders ------------------------------------------------- */

static const char *const st_cust_fields[] = {
    "id", "name", "locale", "timezone", "tier", "curator", NULL};

/* {HGETALL cust, SMEMBERS ids} -> the customer object of store.h. */
static json_t *st_customer_json(const redisReply *r)
{
    const redisReply *h, *ids;
    json_t *o, *idents;
    const char **sorted;
    size_t i;
    static const char *const types[] = {"email", "phone", "chat"};

    if (!st_is_array(r, 2) || !st_is_array(r->element[0], 0) ||
        !st_is_array(r->element[1], 0))
        return NULL;
    h = r->element[0];
    ids = r->element[1];
    o = json_object();
    for (i = 0; st_cust_fields[i]; i++)
        json_object_set_new(o, st_cust_fields[i], json_null());
    json_object_set_new(o, "tags", json_array());
    json_object_set_new(o, "preferences",
                        json_pack("{s:[],s:{}}", "order", "opt_out"));
    json_object_set_new(o, "identities", json_object());
    json_object_set_new(o, "created", json_null());
    json_object_set_new(o, "updated", json_null());

    for (i = 0; i + 1 < h->elements; i += 2) {
        const redisReply *k = h->element[i], *v = h->element[i + 1];

        if (!st_is_str(k) || !st_is_str(v))
            continue;
        if (!strcmp(k->str, "tags"))
            json_object_set_new(
                o, "tags", st_parse(v->str, v->len, JSON_ARRAY, json_array()));
        else if (!strcmp(k->str, "prefs"))
            json_object_set_new(
                o, "preferences",
                st_parse(v->str, v->len, JSON_OBJECT,
                         json_pack("{s:[],s:{}}", "order", "opt_out")));
        else if (!strcmp(k->str, "created") || !strcmp(k->str, "updated"))
            json_object_set_new(o, k->str, st_ms(v->str));
        else if (!strcmp(k->str, "merged_into")) {
            if (v->len)
                json_object_set_new(o, k->str, st_str(v->str, v->len));
        } else
            json_object_set_new(o, k->str, st_str(v->str, v->len));
    }

    idents = json_object_get(o, "identities");
    sorted = sb_calloc(ids->elements + 1, sizeof(*sorted));
    for (i = 0; i < ids->elements; i++)
        sorted[i] = st_is_str(ids->element[i]) ? ids->element[i]->str : "";
    qsort(sorted, ids->elements, sizeof(*sorted), st_cmp_str);
    for (i = 0; i < SB_ARRAY_LEN(types); i++)
        json_object_set_new(idents, types[i], json_array());
    for (i = 0; i < ids->elements; i++) {
        const char *colon = strchr(sorted[i], ':');
        json_t *list;
        char type[16];
        size_t tl;

        if (!colon || (tl = (size_t)(colon - sorted[i])) >= sizeof(type))
            continue;
        memcpy(type, sorted[i], tl);
        type[tl] = '\0';
        list = json_object_get(idents, type);
        if (!list) {
            list = json_array();
            json_object_set_new(idents, type, list);
        }
        json_array_append_new(list, st_str(colon + 1, strlen(colon + 1)));
    }
    free(sorted);
    return o;
}

static const char *const st_entry_fields[] = {
    "type",         "channel", "direction", "customer",
    "conversation", "subject", "text",      "source_id",
    "provider_id",  "agent",   NULL};

/* One log entry {id, {field, value, ...}} -> the timeline entry object. */
static json_t *st_entry_json(const redisReply *e)
{
    const redisReply *id, *f;
    json_t *o;
    size_t i;
    long long at;
    char ms[24];
    const char *dash;

    if (!st_is_array(e, 2) || !st_is_str(e->element[0]) ||
        e->element[1]->type != REDIS_REPLY_ARRAY)
        return NULL;
    id = e->element[0];
    f = e->element[1];
    o = json_object();
    json_object_set_new(o, "id", st_str(id->str, id->len));
    for (i = 0; st_entry_fields[i]; i++)
        json_object_set_new(o, st_entry_fields[i], json_null());
    json_object_set_new(o, "fields", json_object());
    json_object_set_new(o, "ts", json_null());
    dash = strchr(id->str, '-');
    if (dash && (size_t)(dash - id->str) < sizeof(ms)) {
        memcpy(ms, id->str, (size_t)(dash - id->str));
        ms[dash - id->str] = '\0';
        if (sb_parse_ll(ms, &at) == 0)
            json_object_set_new(o, "at", json_integer(at));
    }
    if (!json_object_get(o, "at"))
        json_object_set_new(o, "at", json_null());

    for (i = 0; i + 1 < f->elements; i += 2) {
        const redisReply *k = f->element[i], *v = f->element[i + 1];

        if (!st_is_str(k) || !st_is_str(v) || !strcmp(k->str, "id") ||
            !strcmp(k->str, "at"))
            continue;
        if (!strcmp(k->str, "fields"))
            json_object_set_new(
                o, "fields",
                st_parse(v->str, v->len, JSON_OBJECT, json_object()));
        else if (!strcmp(k->str, "ts"))
            json_object_set_new(o, "ts", st_ms(v->str));
        else
            json_object_set_new(o, k->str, st_str(v->str, v->len));
    }
    return o;
}

/* {next_before or "", entry, ...} -> {"entries":[...],"next_before":..}. */
static json_t *st_timeline_json(const redisReply *r)
{
    json_t *o, *entries;
    size_t i;

    if (!st_is_array(r, 1) || !st_is_str(r->element[0]))
        return NULL;
    entries = json_array();
    for (i = 1; i < r->elements; i++) {
        json_t *e = st_entry_json(r->element[i]);

        if (!e) {
            json_decref(entries);
            return NULL;
        }
        json_array_append_new(entries, e);
    }
    o = json_object();
    json_object_set_new(o, "entries", entries);
    json_object_set_new(o, "next_before",
                        st_str(r->element[0]->str, r->element[0]->len));
    return o;
}

/* XRANGE reply -> {"entries":[...],"next_after":last id or null}. */
static json_t *st_log_json(const redisReply *r)
{
    json_t *o, *entries, *e = NULL;
    size_t i;

    if (!st_is_array(r, 0))
        return NULL;
    entries = json_array();
    for (i = 0; i < r->elements; i++) {
        e = st_entry_json(r->element[i]);
        if (!e) {
            json_decref(entries);
            return NULL;
        }
        json_array_append_new(entries, e);
    }
    o = json_object();
    json_object_set_new(o, "entries", entries);
    json_object_set_new(o, "next_after",
                        e ? json_incref(json_object_get(e, "id"))
                          : json_null());
    return o;
}

static const char *const st_conv_fields[] = {
    "id",      "customer", "channel",        "state",    "queue",   "agent",
    "subject", "created",  "first_response", "resolved", "updated", NULL};

static int st_conv_is_time(const char *k)
{
    return !strcmp(k, "created") || !strcmp(k, "first_response") ||
           !strcmp(k, "resolved") || !strcmp(k, "updated");
}

/* HGETALL conv -> the conversation object (extra fields kept as strings). */
static json_t *st_conversation_json(const redisReply *r)
{
    json_t *o;
    size_t i;

    if (!st_is_array(r, 0))
        return NULL;
    o = json_object();
    for (i = 0; st_conv_fields[i]; i++)
        json_object_set_new(o, st_conv_fields[i], json_null());
    for (i = 0; i + 1 < r->elements; i += 2) {
        const redisReply *k = r->element[i], *v = r->element[i + 1];

        if (!st_is_str(k) || !st_is_str(v))
            continue;
        if (st_conv_is_time(k->str))
            json_object_set_new(o, k->str, st_ms(v->str));
        else
            json_object_set_new(o, k->str, st_str(v->str, v->len));
    }
    return o;
}

static int st_cmp_at(const void *a, const void *b)
{
    json_int_t x =
        json_integer_value(json_object_get(*(json_t *const *)a, "at"));
    json_int_t y =
        json_integer_value(json_object_get(*(json_t *const *)b, "at"));

    return x < y ? -1 : x > y;
}

/* {survivor id, proposal JSON, ...} -> [{"a","b","identity","at"}] by at. */
static json_t *st_proposals_json(const redisReply *r)
{
    json_t **items, *out;
    size_t i, n = 0;

    if (!st_is_array(r, 1))
        return NULL;
    items = sb_calloc(r->elements, sizeof(*items));
    for (i = 1; i < r->elements; i++) {
        json_t *p;

        if (!st_is_str(r->element[i]))
            continue;
        p = json_loadb(r->element[i]->str, r->element[i]->len, 0, NULL);
        if (p && json_is_object(p))
            items[n++] = p;
        else
            json_decref(p);
    }
    qsort(items, n, sizeof(*items), st_cmp_at);
    out = json_array();
    for (i = 0; i < n; i++)
        json_array_append_new(out, items[i]);
    free(items);
    return out;
}

/* ---- replies --------------------------------------------------------- */

static const struct {
    const char *prefix;
    enum sb_store_status st;
} st_errors[] = {
    {"NOTFOUND", SB_STORE_NOTFOUND},
    {"CONFLICT", SB_STORE_CONFLICT},
    {"INVALID", SB_STORE_INVALID},
};

enum sb_store_status sb_store_map_error(const char *script, const char *text,
                                       const char **msg)
{
    size_t i, n;
    char safe[160];

    for (i = 0; i < SB_ARRAY_LEN(st_errors); i++) {
        n = strlen(st_errors[i].prefix);
        if (!strncmp(text, st_errors[i].prefix, n) &&
            (text[n] == ' ' || text[n] == '\0')) {
            *msg = text[n] ? text + n + 1 : text;
            return st_errors[i].st;
        }
    }
    SB_WARN(ST_PLACE, "redis error script=%s err=\"%s\"", script,
            sb_log_safe(text, safe, sizeof(safe)));
    *msg = text;
    return SB_STORE_UNAVAILABLE;
}

static enum sb_store_status st_map_error(const struct st_req *q,
                                         const char *text, const char **msg)
{
    return sb_store_map_error(q->script, text, msg);
}

static void st_ingest_done(const struct st_req *q, const redisReply *r)
{
    struct sb_contact_result res;
    char *dst[3];
    size_t sz[3];
    long long flags[5];
    size_t i;

    memset(&res, 0, sizeof(res));
    dst[0] = res.contact_id;
    dst[1] = res.customer_id;
    dst[2] = res.conversation_id;
    sz[0] = sizeof(res.contact_id);
    sz[1] = sizeof(res.customer_id);
    sz[2] = sizeof(res.conversation_id);
    if (!st_is_array(r, 8))
        goto bad;
    for (i = 0; i < 3; i++) {
        if (!st_is_str(r->element[i]) || r->element[i]->len >= sz[i])
            goto bad;
        memcpy(dst[i], r->element[i]->str, r->element[i]->len + 1);
    }
    for (i = 0; i < 5; i++) {
        if (r->element[3 + i]->type != REDIS_REPLY_INTEGER)
            goto bad;
        flags[i] = r->element[3 + i]->integer;
    }
    res.duplicate = flags[0] != 0;
    res.new_customer = flags[1] != 0;
    res.new_conversation = flags[2] != 0;
    res.merge_proposed = flags[3] != 0;
    res.needs_route = flags[4] != 0;
    q->ccb(SB_STORE_OK, &res, NULL, q->arg);
    return;
bad:
    SB_ERR(ST_PLACE, "unexpected reply script=%s", q->script);
    q->ccb(SB_STORE_UNAVAILABLE, NULL, "unexpected reply", q->arg);
}

static void st_on_reply(redisReply *reply, const char *err, void *arg)
{
    struct st_req *q = arg;
    enum sb_store_status st;
    const char *msg = NULL;
    json_t *j = NULL;

    if (!reply) {
        st = SB_STORE_UNAVAILABLE;
        msg = err ? err : "disconnected";
    } else if (reply->type == REDIS_REPLY_ERROR) {
        st = st_map_error(q, reply->str, &msg);
    } else if (q->kind == ST_INGEST) {
        st_ingest_done(q, reply);
        free(q);
        return;
    } else {
        switch (q->kind) {
        case ST_CUSTOMER:
            j = st_customer_json(reply);
            break;
        case ST_PROPOSALS:
            j = st_proposals_json(reply);
            break;
        case ST_TIMELINE:
            j = st_timeline_json(reply);
            break;
        case ST_LOG:
            j = st_log_json(reply);
            break;
        case ST_CONVERSATION:
            j = st_conversation_json(reply);
            break;
        default:
            break;
        }
        if (j) {
            st = SB_STORE_OK;
        } else {
            SB_ERR(ST_PLACE, "unexpected reply script=%s", q->script);
            st = SB_STORE_UNAVAILABLE;
            msg = "unexpected reply";
        }
    }
    if (q->kind == ST_INGEST)
        q->ccb(st, NULL, msg, q->arg);
    else
        q->jcb(st, j, msg, q->arg);
    free(q);
}

/* Run a script with argv (prefix first); takes q. -1 when refused. */
static int st_run(struct st_req *q, int argc, const char **argv,
                  const size_t *lens)
{
    if (!S.redis || sb_redis_script(S.redis, q->script, st_on_reply, q, 0, argc,
                                    argv, lens) < 0) {
        free(q);
        return -1;
    }
    return 0;
}

static struct st_req *st_req_json(enum st_kind kind, const char *script,
                                  sb_store_json_cb *cb, void *arg)
{
    struct st_req *q = sb_calloc(1, sizeof(*q));

    q->kind = kind;
    q->script = script;
    q->jcb = cb;
    q->arg = arg;
    return q;
}

/* Fill lens from argv (all NUL-terminated strings). */
static void st_lens(int argc, const char **argv, size_t *lens)
{
    int i;

    for (i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
}

#define ST_S(s) ((s) ? (s) : "")

/* ---- public calls ---------------------------------------------------- */

int sb_contact_ingest(const struct sb_contact_in *in, sb_contact_cb *cb,
                      void *arg)
{
    const char *argv[ST_ARGV_MAX];
    size_t lens[ST_ARGV_MAX];
    char window[24], ts[24], nids[16];
    struct st_req *q;
    int argc, i, n;

    if (!S.redis)
        return -1;
    snprintf(window, sizeof(window), "%lld",
             S.dedupe_s > 0 ? S.dedupe_s : ST_DEDUPE_S);
    snprintf(ts, sizeof(ts), "%lld", (long long)in->ts_ms);
    snprintf(nids, sizeof(nids), "%d", in->nids);
    argv[0] = S.prefix;
    argv[1] = window;
    argv[2] = ST_S(in->channel);
    argv[3] = ST_S(in->direction);
    argv[4] = ST_S(in->type);
    argv[5] = ST_S(in->customer_id);
    argv[6] = ST_S(in->name);
    argv[7] = ST_S(in->locale);
    argv[8] = ST_S(in->conversation);
    argv[9] = ST_S(in->subject);
    argv[10] = ST_S(in->text);
    argv[11] = ST_S(in->source_id);
    argv[12] = ST_S(in->provider_id);
    argv[13] = ST_S(in->agent);
    argv[14] = ST_S(in->fields_json);
    argv[15] = ts;
    argv[16] = nids;
    argc = 17;
    /* An out-of-range count is sent as is, without pairs: the script
     * answers INVALID. */
    n = in->nids >= 0 && in->nids <= SB_IDENT_MAX ? in->nids : 0;
    for (i = 0; i < n; i++) {
        argv[argc++] = ST_S(in->ids[i].type);
        argv[argc++] = ST_S(in->ids[i].value);
    }
    st_lens(argc, argv, lens);
    lens[10] = in->text ? in->text_len : 0;

    q = sb_calloc(1, sizeof(*q));
    q->kind = ST_INGEST;
    q->script = "ingest";
    q->ccb = cb;
    q->arg = arg;
    return st_run(q, argc, argv, lens);
}

static int st_customer_get(const char *mode, const char *key,
                           sb_store_json_cb *cb, void *arg)
{
    const char *argv[3] = {S.prefix, mode, key};
    size_t lens[3];

    if (!S.redis)
        return -1;
    st_lens(3, argv, lens);
    return st_run(st_req_json(ST_CUSTOMER, "customer_get", cb, arg), 3, argv,
                  lens);
}

int sb_customer_get(const char *id, sb_store_json_cb *cb, void *arg)
{
    return st_customer_get("id", ST_S(id), cb, arg);
}

int sb_customer_find(const char *type, const char *value, sb_store_json_cb *cb,
                     void *arg)
{
    char *ident = sb_asprintf("%s:%s", ST_S(type), ST_S(value));
    int rc = st_customer_get("identity", ident, cb, arg);

    free(ident);
    return rc;
}

int sb_customer_update(const char *id, json_t *patch, sb_store_json_cb *cb,
                       void *arg)
{
    const char *argv[3];
    size_t lens[3];
    char *body = NULL;
    int rc;

    if (!S.redis)
        return -1;
    if (patch && json_is_object(patch))
        body = json_dumps(patch, JSON_COMPACT);
    argv[0] = S.prefix;
    argv[1] = ST_S(id);
    argv[2] = body ? body : "";
    st_lens(3, argv, lens);
    rc = st_run(st_req_json(ST_CUSTOMER, "customer_update", cb, arg), 3, argv,
                lens);
    free(body);
    return rc;
}

int sb_customer_merge(const char *into, const char *from, sb_store_json_cb *cb,
                      void *arg)
{
    const char *argv[3] = {S.prefix, ST_S(into), ST_S(from)};
    size_t lens[3];

    if (!S.redis)
        return -1;
    st_lens(3, argv, lens);
    return st_run(st_req_json(ST_CUSTOMER, "customer_merge", cb, arg), 3, argv,
                  lens);
}

int sb_merge_proposals(const char *id, sb_store_json_cb *cb, void *arg)
{
    const char *argv[2] = {S.prefix, ST_S(id)};
    size_t lens[2];

    if (!S.redis)
        return -1;
    st_lens(2, argv, lens);
    return st_run(st_req_json(ST_PROPOSALS, "merge_proposals", cb, arg), 2,
                  argv, lens);
}

static int st_timeline(const char *kind, const char *id, const char *before,
                       int limit, sb_store_json_cb *cb, void *arg)
{
    const char *argv[5];
    size_t lens[5];
    char lim[16];

    if (!S.redis)
        return -1;
    if (limit < 1)
        limit = 1;
    if (limit > ST_TL_MAX)
        limit = ST_TL_MAX;
    snprintf(lim, sizeof(lim), "%d", limit);
    argv[0] = S.prefix;
    argv[1] = kind;
    argv[2] = ST_S(id);
    argv[3] = ST_S(before);
    argv[4] = lim;
    st_lens(5, argv, lens);
    return st_run(st_req_json(ST_TIMELINE, "timeline", cb, arg), 5, argv, lens);
}

int sb_timeline_customer(const char *id, const char *before, int limit,
                         sb_store_json_cb *cb, void *arg)
{
    return st_timeline("customer", id, before, limit, cb, arg);
}

int sb_timeline_conversation(const char *id, const char *before, int limit,
                             sb_store_json_cb *cb, void *arg)
{
    return st_timeline("conversation", id, before, limit, cb, arg);
}

int sb_log_read(const char *after, int limit, sb_store_json_cb *cb, void *arg)
{
    const char *argv[3];
    size_t lens[3];
    char lim[16];

    if (!S.redis)
        return -1;
    if (limit < 1)
        limit = 1;
    if (limit > ST_LOG_MAX)
        limit = ST_LOG_MAX;
    snprintf(lim, sizeof(lim), "%d", limit);
    argv[0] = S.prefix;
    argv[1] = ST_S(after);
    argv[2] = lim;
    st_lens(3, argv, lens);
    return st_run(st_req_json(ST_LOG, "log_read", cb, arg), 3, argv, lens);
}

int sb_contact_get(const char *id, sb_store_json_cb *cb, void *arg)
{
    const char *argv[2] = {S.prefix, ST_S(id)};
    size_t lens[2];

    if (!S.redis)
        return -1;
    st_lens(2, argv, lens);
    return st_run(st_req_json(ST_LOG, "contact_get", cb, arg), 2, argv,
                  lens);
}

int sb_conversation_get(const char *id, sb_store_json_cb *cb, void *arg)
{
    const char *argv[2] = {S.prefix, ST_S(id)};
    size_t lens[2];

    if (!S.redis)
        return -1;
    st_lens(2, argv, lens);
    return st_run(st_req_json(ST_CONVERSATION, "conversation_get", cb, arg), 2,
                  argv, lens);
}
