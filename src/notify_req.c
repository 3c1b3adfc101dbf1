/* notify_req.c - notification requests: validation, submit, status, DLQ.
 *
 * Both doors - POST /api/v1/notifications and an entry a business system
 * XADDs to <prefix>notify - end in the same struct sb_ntf_in through the
 * same checks, so the same input is accepted or refused with the same
 * reason either way. The checks that need templates (is the event known,
 * does the data fill every variable its templates use) run here, before
 * anything is written: a notification that could never be rendered is a
 * 400 (or a rejects-stream entry), not a dead letter an hour later.
 *
 * The one-shot Redis calls (submit, get, dead-letter list/retry/drop,
 * delivery reports, queue figures) live here too; the dispatcher that
 * reads the stream is notify.c.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "normalize.h"
#include "notify_int.h"
#include "notify_policy.h"
#include "util.h"

#define NR_PLACE "core.notify"
#define NR_DATA_MAX (64u << 10)
#define NR_NOT_BEFORE_MAX (366LL * 86400 * 1000)

static const char *const nr_channels[] = {"email", "sms", "chat", "webhook",
                                          NULL};

void sb_ntf_in_free(struct sb_ntf_in *in)
{
    free(in->data);
    free(in->channels);
    in->data = in->channels = NULL;
}

/* ---- validation ----------------------------------------------------- */

/* Printable UTF-8 without control characters, at most max bytes. */
static int nr_text_ok(const char *s, size_t len, size_t max)
{
    if (len > max || !sb_utf8_valid(s, len))
        return 0;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return 0;
    return 1;
}

static int nr_copy(char *dst, size_t dstlen, const char *s, size_t len,
                   const char *field, struct sb_json_err *err)
{
    if (!nr_text_ok(s, len, dstlen - 1))
        return sb_json_fail(err, field, "%s must be printable text of at "
                            "most %zu bytes", field, dstlen - 1);
    memcpy(dst, s, len);
    dst[len] = '\0';
    return 0;
}

static int nr_is_channel(const char *s)
{
    for (size_t i = 0; nr_channels[i]; i++)
        if (strcmp(s, nr_channels[i]) == 0)
            return 1;
    return 0;
}

static int nr_locale_ok(const char *s)
{
    size_t n = strlen(s);

    if (n != 2 && n != 5)
        return 0;
    if (!islower((unsigned char)s[0]) || !islower((unsigned char)s[1]))
        return 0;
    return n == 2 || (s[2] == '-' && isupper((unsigned char)s[3]) &&
                      isupper((unsigned char)s[4]));
}

/* Check the fields copied into in (strings), the data object and the
 * channel list (a JSON array of strings, or NULL); fill in->data and
 * in->channels. */
static int nr_finish(struct sb_ntf_in *in, json_t *data, const char *raw,
                     size_t rawlen, json_t *channels, struct sb_json_err *err)
{
    const struct sb_tpl_set *tpl = sb_ntf.tpl;
    char missing[128];
    json_t *ctx;
    size_t i;
    int r;

    if (!in->event[0])
        return sb_json_fail(err, "event", "event is required");
    for (const char *p = in->event; *p; p++)
        if (!islower((unsigned char)*p) && !isdigit((unsigned char)*p) &&
            *p != '.' && *p != '_' && *p != '-')
            return sb_json_fail(err, "event", "event must match "
                                "[a-z0-9._-]{1,64}");
    if (!tpl || !sb_tpl_has_event(tpl, in->event))
        return sb_json_fail(err, "event", "unknown event %s: no template",
                            in->event);
    if (!in->customer[0] && !in->email[0] && !in->phone[0])
        return sb_json_fail(err, "customer", "customer, email or phone is "
                            "required");
    if (in->customer[0]) {
        long long v;
        if (strncmp(in->customer, "cu_", 3) != 0 ||
            sb_parse_ll(in->customer + 3, &v) < 0 || v < 1)
            return sb_json_fail(err, "customer", "customer must be a "
                                "customer id (cu_N)");
    }
    if (in->locale[0] && !nr_locale_ok(in->locale))
        return sb_json_fail(err, "locale", "locale must look like en or "
                            "ru-RU");
    if (!in->priority[0])
        strcpy(in->priority, "normal");
    else if (strcmp(in->priority, "normal") && strcmp(in->priority, "urgent"))
        return sb_json_fail(err, "priority", "priority must be normal or "
                            "urgent");
    if (data && !json_is_object(data))
        return sb_json_fail(err, "data", "data must be a JSON object");
    if (channels) {
        if (!json_is_array(channels) || json_array_size(channels) == 0 ||
            json_array_size(channels) > 4)
            return sb_json_fail(err, "channels", "channels must be a list "
                                "of 1 to 4 channels");
        for (i = 0; i < json_array_size(channels); i++) {
            const char *c = json_string_value(json_array_get(channels, i));
            if (!c || !nr_is_channel(c))
                return sb_json_fail(err, "channels", "unknown channel; "
                                    "email, sms, chat or webhook");
            if (!sb_tpl_has_channel(tpl, in->event, c))
                return sb_json_fail(err, "channels", "no template for %s on "
                                    "channel %s", in->event, c);
        }
    }
    ctx = json_pack("{s:O?,s:{s:s,s:s},s:s,s:s,s:{s:s}}", "data", data,
                    "customer", "id", in->customer, "name", in->name,
                    "event", in->event, "ref", in->ref, "notification",
                    "id", "");
    if (!data)
        json_object_set_new(ctx, "data", json_object());
    r = sb_tpl_check(tpl, in->event, ctx, missing, sizeof(missing));
    json_decref(ctx);
    if (r < 0)
        return sb_json_fail(err, missing, "%s is missing: the %s templates "
                            "need it", missing, in->event);
    /* A stream entry's data text was just parsed as an object: keep it
     * as it came rather than writing it out again. */
    if (raw)
        in->data = sb_strndup(raw, rawlen);
    else
        in->data = data ? json_dumps(data, JSON_COMPACT) : sb_strdup("{}");
    if (!in->data || strlen(in->data) > NR_DATA_MAX)
        return sb_json_fail(err, "data", "data is larger than 64 KiB");
    in->channels = channels ? json_dumps(channels, JSON_COMPACT)
                            : sb_strdup("");
    return 0;
}

/* The recipient and time fields, identical for both doors. */
static int nr_field(struct sb_ntf_in *in, const char *k, const char *v,
                    size_t vlen, struct sb_json_err *err)
{
    char tmp[512];
    const char *why = NULL;

    if (!strcmp(k, "event"))
        return nr_copy(in->event, sizeof(in->event), v, vlen, k, err);
    if (!strcmp(k, "customer"))
        return nr_copy(in->customer, sizeof(in->customer), v, vlen, k, err);
    if (!strcmp(k, "name"))
        return nr_copy(in->name, sizeof(in->name), v, vlen, k, err);
    if (!strcmp(k, "locale"))
        return nr_copy(in->locale, sizeof(in->locale), v, vlen, k, err);
    if (!strcmp(k, "priority"))
        return nr_copy(in->priority, sizeof(in->priority), v, vlen, k, err);
    if (!strcmp(k, "ref"))
        return nr_copy(in->ref, sizeof(in->ref), v, vlen, k, err);
    if (!strcmp(k, "idempotency_key"))
        return nr_copy(in->idem, sizeof(in->idem), v, vlen, k, err);
    if (!strcmp(k, "email") || !strcmp(k, "phone")) {
        if (nr_copy(tmp, sizeof(tmp), v, vlen, k, err) < 0)
            return -1;
        if (!tmp[0])
            return 0;
        if (k[0] == 'e' ? sb_email_normalize(tmp, in->email,
                                             sizeof(in->email), &why)
                        : sb_phone_normalize(tmp, sb_ntf.default_country,
                                             in->phone, sizeof(in->phone),
                                             &why))
            return sb_json_fail(err, k, "invalid %s: %s", k,
                                why ? why : "malformed");
        return 0;
    }
    if (!strcmp(k, "not_before")) {
        int64_t ms;
        if (vlen == 0)
            return 0;
        if (nr_copy(tmp, sizeof(tmp), v, vlen, k, err) < 0 ||
            sb_ntf_parse_time(tmp, &ms) < 0)
            return sb_json_fail(err, k, "not_before must be an RFC 3339 "
                                "date-time (2026-12-01T09:00:00+03:00)");
        if (ms > sb_now_ms() + NR_NOT_BEFORE_MAX)
            return sb_json_fail(err, k, "not_before is more than a year "
                                "ahead");
        snprintf(in->not_before, sizeof(in->not_before), "%lld",
                 (long long)ms);
        return 0;
    }
    return sb_json_fail(err, k, "unknown field %s", k);
}

int sb_notify_from_json(json_t *body, struct sb_ntf_in *in,
                        struct sb_json_err *err)
{
    const char *k;
    json_t *v, *data = NULL, *channels = NULL;

    memset(in, 0, sizeof(*in));
    if (!json_is_object(body))
        return sb_json_fail(err, "", "the body must be a JSON object");
    json_object_foreach(body, k, v) {
        if (!strcmp(k, "data")) {
            data = json_is_null(v) ? NULL : v;
            continue;
        }
        if (!strcmp(k, "channels")) {
            channels = json_is_null(v) ? NULL : v;
            continue;
        }
        if (json_is_null(v))
            continue;
        if (!json_is_string(v))
            return sb_json_fail(err, k, "%s must be a string", k);
        if (nr_field(in, k, json_string_value(v), json_string_length(v),
                     err) < 0)
            return -1;
    }
    return nr_finish(in, data, NULL, 0, channels, err);
}

int sb_notify_from_fields(const char *const *names, const size_t *nlens,
                          const char *const *values, const size_t *vlens,
                          size_t n, struct sb_ntf_in *in,
                          struct sb_json_err *err)
{
    json_t *data = NULL, *channels = NULL;
    const char *raw = NULL;
    size_t rawlen = 0;
    char name[32];
    int r = -1;

    memset(in, 0, sizeof(*in));
    for (size_t i = 0; i < n; i++) {
        if (nlens[i] == 0 || nlens[i] >= sizeof(name)) {
            sb_json_fail(err, "", "unknown field");
            goto out;
        }
        memcpy(name, names[i], nlens[i]);
        name[nlens[i]] = '\0';
        if (!strcmp(name, "data")) {
            json_decref(data);
            data = json_loadb(values[i], vlens[i], JSON_REJECT_DUPLICATES,
                              NULL);
            if (!data || !json_is_object(data) ||
                !sb_utf8_valid(values[i], vlens[i]) ||
                memchr(values[i], '\0', vlens[i])) {
                sb_json_fail(err, "data", "data must be a JSON object");
                goto out;
            }
            raw = values[i];
            rawlen = vlens[i];
        } else if (!strcmp(name, "channels")) {
            json_decref(channels);
            channels = NULL;
            if (vlens[i] && values[i][0] == '[') {
                channels = json_loadb(values[i], vlens[i], 0, NULL);
            } else if (vlens[i]) {
                /* "email,sms" is accepted too: easy from redis-cli */
                char *s = sb_strndup(values[i], vlens[i]), *save = NULL;
                channels = json_array();
                for (char *t = strtok_r(s, ", ", &save); t;
                     t = strtok_r(NULL, ", ", &save))
                    json_array_append_new(channels, json_string(t));
                free(s);
            }
            if (vlens[i] && !channels) {
                sb_json_fail(err, "channels", "channels must be a JSON "
                             "array or a comma list");
                goto out;
            }
        } else if (nr_field(in, name, values[i], vlens[i], err) < 0) {
            goto out;
        }
    }
    r = nr_finish(in, data, raw, rawlen, channels, err);
out:
    json_decref(data);
    json_decref(channels);
    if (r < 0)
        sb_ntf_in_free(in);
    return r;
}

/* ---- one-shot calls ----------------------------------------------------- */

struct nr_call {
    sb_store_json_cb *cb;
    void *arg;
    const char *script;
    json_t *(*build)(const redisReply *r);
};

static void nr_done(redisReply *r, const char *err, void *arg)
{
    struct nr_call *c = arg;
    const char *msg = "redis unavailable";
    enum sb_store_status st = SB_STORE_UNAVAILABLE;
    json_t *res = NULL;

    if (r && r->type == REDIS_REPLY_ERROR) {
        st = sb_store_map_error(c->script, r->str, &msg);
    } else if (!err && r) {
        res = c->build(r);
        if (res) {
            st = SB_STORE_OK;
            msg = NULL;
        } else {
            SB_WARN(NR_PLACE, "unexpected reply script=%s", c->script);
        }
    }
    if (c->cb)
        c->cb(st, res, msg, c->arg);
    else
        json_decref(res);
    free(c);
}

static int nr_script(const char *script, json_t *(*build)(const redisReply *),
                     sb_store_json_cb *cb, void *arg, int argc,
                     const char **argv, const size_t *lens)
{
    struct nr_call *c = sb_calloc(1, sizeof(*c));

    if (!sb_ntf.api) {
        free(c);
        return -1;
    }
    c->cb = cb;
    c->arg = arg;
    c->script = script;
    c->build = build;
    if (sb_redis_script(sb_ntf.api, script, nr_done, c, 0, argc, argv,
                        lens) < 0) {
        free(c);
        return -1;
    }
    return 0;
}

static json_t *nr_str(const redisReply *r)
{
    if (!r || (r->type != REDIS_REPLY_STRING &&
               r->type != REDIS_REPLY_STATUS))
        return json_null();
    if (r->len == 0)
        return json_null();
    return json_stringn(r->str, r->len);
}

static long long nr_int(const redisReply *r)
{
    long long v = 0;

    if (!r)
        return 0;
    if (r->type == REDIS_REPLY_INTEGER)
        return r->integer;
    if (r->type == REDIS_REPLY_STRING && sb_parse_ll(r->str, &v) == 0)
        return v;
    return 0;
}

static json_t *nr_submit_json(const redisReply *r)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 4)
        return NULL;
    return json_pack("{s:o,s:b,s:o,s:o}", "id", nr_str(r->element[0]),
                     "duplicate", (int)nr_int(r->element[1]), "customer",
                     nr_str(r->element[2]), "state", nr_str(r->element[3]));
}

int sb_notify_submit(const struct sb_ntf_in *in, sb_store_json_cb *cb,
                     void *arg)
{
    const struct sb_notify_conf *c = sb_ntf.c;
    char now[SB_NTF_NUM], ttl[SB_NTF_NUM], win[SB_NTF_NUM], ret[SB_NTF_NUM];
    const char *argv[17];

    if (!c)
        return -1;
    snprintf(now, sizeof(now), "%lld", (long long)sb_now_ms());
    snprintf(ttl, sizeof(ttl), "%lld", c->idempotency_window / 1000);
    snprintf(win, sizeof(win), "%lld", c->supersede_window);
    snprintf(ret, sizeof(ret), "%lld", c->retention / 1000);
    argv[0] = sb_ntf.prefix;
    argv[1] = now;
    argv[2] = ttl;
    argv[3] = win;
    argv[4] = ret;
    argv[5] = in->event;
    argv[6] = in->customer;
    argv[7] = in->email;
    argv[8] = in->phone;
    argv[9] = in->name;
    argv[10] = in->data ? in->data : "{}";
    argv[11] = in->channels ? in->channels : "";
    argv[12] = in->locale;
    argv[13] = in->priority;
    argv[14] = in->not_before;
    argv[15] = in->ref;
    argv[16] = in->idem;
    return nr_script("notify_accept", nr_submit_json, cb, arg, 17, argv,
                     NULL);
}

/* Hash field values that are numbers (ms or counts) in the JSON. */
static int nr_numeric(const char *k)
{
    static const char *const nums[] = {
        "created", "updated", "enq", "not_before", "ch_tries",
        "ch_first", "sent_at", "delivered_at", "dropped", "awaiting", NULL};
    for (size_t i = 0; nums[i]; i++)
        if (!strcmp(k, nums[i]))
            return 1;
    return 0;
}

static json_t *nr_get_json(const redisReply *r)
{
    json_t *o, *list = NULL;

    if (r->type != REDIS_REPLY_ARRAY)
        return NULL;
    o = json_object();
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const char *k = r->element[i]->str;
        const redisReply *v = r->element[i + 1];
        json_t *j;

        if (!k || v->type != REDIS_REPLY_STRING || !strcmp(k, "attempts"))
            continue;
        if (!strcmp(k, "att")) {
            json_decref(list);
            list = json_loadb(v->str, v->len, 0, NULL);
            continue;
        }
        if (!strcmp(k, "data") || !strcmp(k, "channels") ||
            !strcmp(k, "tried")) {
            j = json_loadb(v->str, v->len, 0, NULL);
            if (!j)
                j = json_null();
        } else if (nr_numeric(k)) {
            long long n;
            j = v->len && sb_parse_ll(v->str, &n) == 0 ? json_integer(n)
                                                        : json_null();
        } else {
            j = nr_str(v);
        }
        json_object_set_new(o, k, j);
    }
    if (!json_is_array(list)) {
        json_decref(list);
        list = json_array();
    }
    json_object_set_new(o, "attempts", list);
    if (!json_object_get(o, "tried"))
        json_object_set_new(o, "tried", json_array());
    return o;
}

int sb_notify_get(const char *id, sb_store_json_cb *cb, void *arg)
{
    const char *argv[2] = {sb_ntf.prefix, id};

    return nr_script("notify_get", nr_get_json, cb, arg, 2, argv, NULL);
}

static json_t *nr_dlq_entry(const redisReply *e)
{
    json_t *o;

    if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 ||
        e->element[1]->type != REDIS_REPLY_ARRAY)
        return NULL;
    o = json_pack("{s:o}", "entry", nr_str(e->element[0]));
    for (size_t i = 0; i + 1 < e->element[1]->elements; i += 2) {
        const redisReply *k = e->element[1]->element[i];
        const redisReply *v = e->element[1]->element[i + 1];
        if (k->type != REDIS_REPLY_STRING)
            continue;
        if (!strcmp(k->str, "ntf"))
            json_object_set_new(o, "id", nr_str(v));
        else if (!strcmp(k->str, "at"))
            json_object_set_new(o, "at", json_integer(nr_int(v)));
        else
            json_object_set_new(o, k->str, nr_str(v));
    }
    return o;
}

static json_t *nr_dlq_list_json(const redisReply *r)
{
    json_t *list;

    if (r->type != REDIS_REPLY_ARRAY || r->elements < 2 ||
        r->element[1]->type != REDIS_REPLY_ARRAY)
        return NULL;
    list = json_array();
    for (size_t i = 0; i < r->element[1]->elements; i++) {
        json_t *e = nr_dlq_entry(r->element[1]->element[i]);
        if (e)
            json_array_append_new(list, e);
    }
    return json_pack("{s:o,s:o}", "entries", list, "next_before",
                     nr_str(r->element[0]));
}

int sb_notify_dlq_list(const char *before, int limit, sb_store_json_cb *cb,
                       void *arg)
{
    char lim[SB_NTF_NUM];
    const char *argv[4] = {sb_ntf.prefix, "list", before ? before : "", lim};

    snprintf(lim, sizeof(lim), "%d", limit);
    return nr_script("notify_dlq", nr_dlq_list_json, cb, arg, 4, argv, NULL);
}

static json_t *nr_ok_json(const redisReply *r)
{
    return json_pack("{s:b}", "ok", 1);
}

static int nr_dlq_op(const char *op, const char *id, sb_store_json_cb *cb,
                     void *arg)
{
    char now[SB_NTF_NUM], ret[SB_NTF_NUM];
    const char *argv[5] = {sb_ntf.prefix, op, id, now, ret};

    snprintf(now, sizeof(now), "%lld", (long long)sb_now_ms());
    snprintf(ret, sizeof(ret), "%lld",
             sb_ntf.c ? sb_ntf.c->retention / 1000 : 0);
    return nr_script("notify_dlq", nr_ok_json, cb, arg, 5, argv, NULL);
}

int sb_notify_dlq_retry(const char *id, sb_store_json_cb *cb, void *arg)
{
    return nr_dlq_op("retry", id, cb, arg);
}

int sb_notify_dlq_drop(const char *id, sb_store_json_cb *cb, void *arg)
{
    return nr_dlq_op("drop", id, cb, arg);
}

static json_t *nr_report_json(const redisReply *r)
{
    return json_pack("{s:o}", "result", nr_str(r));
}

int sb_notify_report(const char *attempt_id, const char *status,
                     const char *reason, sb_store_json_cb *cb, void *arg)
{
    char now[SB_NTF_NUM], ret[SB_NTF_NUM];
    const char *argv[6] = {sb_ntf.prefix, now, attempt_id, status,
                           reason ? reason : "", ret};

    snprintf(now, sizeof(now), "%lld", (long long)sb_now_ms());
    snprintf(ret, sizeof(ret), "%lld",
             sb_ntf.c ? sb_ntf.c->retention / 1000 : 0);
    return nr_script("notify_report", nr_report_json, cb, arg, 6, argv,
                     NULL);
}
