/* api.c - the REST API under /api/v1 and the health and metrics endpoints.
 *
 * Handlers validate the request strictly (json.h: unknown members, types,
 * sizes; normalize.h: e-mail and phone), call the store and turn its status
 * into an HTTP answer. Nothing is answered 2xx before the store's completion
 * says the write is in Redis; a Redis that is away gives 503 + Retry-After.
 * The route table at the bottom is the whole surface: each row names its
 * access rule, deny by default.
 */
#include "api.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "auth.h"
#include "channel.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "normalize.h"
#include "static.h"
#include "store.h"

#define API_PLACE "core.api"

static struct {
    const struct sb_config *conf;
    struct sb_redis *redis;
    int (*ready)(void);
    struct sb_metric *m_ingested, *m_duplicates;
} API;

static const char *default_country(void)
{
    const struct sb_core_conf *cc = sb_config_get(API.conf, "core");

    return cc && cc->default_country && *cc->default_country
               ? cc->default_country
               : NULL;
}

/* ---- helpers --------------------------------------------------------------- */

void sb_api_unavailable(struct sb_http_req *req)
{
    sb_http_add_header(req, "Retry-After", "1");
    sb_http_respond_error(req, 503, "redis unavailable", NULL);
}

int sb_api_limit(struct sb_http_req *req, int def, int max, int *out)
{
    char *l = sb_http_query(req, "limit");
    long long n = def;
    char msg[48];

    if (l && (sb_parse_ll(l, &n) < 0 || n < 1 || n > max)) {
        free(l);
        snprintf(msg, sizeof(msg), "limit must be 1..%d", max);
        sb_http_respond_error(req, 400, msg, "limit");
        return -1;
    }
    free(l);
    *out = (int)n;
    return 0;
}

static void on_json_result(enum sb_store_status st, json_t *result,
                           const char *err, void *arg);

void sb_api_list(struct sb_http_req *req, sb_api_list_fn *fn)
{
    char *before;
    int limit;

    if (sb_api_limit(req, 50, 500, &limit) < 0)
        return;
    before = sb_http_query(req, "before");
    if (fn(before, limit, on_json_result, req) < 0)
        sb_api_unavailable(req);
    free(before);
}


static void bad(struct sb_http_req *req, const struct sb_json_err *e)
{
    sb_http_respond_error(req, 400, e->error, e->field[0] ? e->field : NULL);
}

/* Answer a store completion that carries no data of interest on error. */
void sb_api_store_fail(struct sb_http_req *req, enum sb_store_status st,
                       const char *err, const char *what)
{
    switch (st) {
    case SB_STORE_NOTFOUND:
        sb_http_respond_error(req, 404, err && *err ? err : what, NULL);
        break;
    case SB_STORE_CONFLICT:
        sb_http_respond_error(req, 409, err ? err : "conflict", NULL);
        break;
    case SB_STORE_INVALID:
        sb_http_respond_error(req, 400, err ? err : "invalid", NULL);
        break;
    default:
        sb_api_unavailable(req);
        break;
    }
}

static void on_json_result(enum sb_store_status st, json_t *result,
                           const char *err, void *arg)
{
    struct sb_http_req *req = arg;

    if (st != SB_STORE_OK) {
        sb_api_store_fail(req, st, err, "not found");
        json_decref(result);
        return;
    }
    sb_http_respond_json(req, 200, result);
    json_decref(result);
}

/* Normalise one identity of a JSON member into out. */
static int norm_ident(const char *type, const char *v, char *out,
                      size_t outlen, struct sb_json_err *e, const char *field)
{
    const char *why = NULL;
    int r;

    if (strcmp(type, "email") == 0)
        r = sb_email_normalize(v, out, outlen, &why);
    else
        r = sb_phone_normalize(v, default_country(), out, outlen, &why);
    if (r < 0)
        return sb_json_fail(e, field, "invalid %s: %s", type,
                            why ? why : "rejected");
    return 0;
}

/* ---- health, readiness, metrics ---------------------------------------- */

static void h_healthz(struct sb_http_req *req)
{
    static const char ok[] = "{\"status\":\"ok\"}";

    sb_http_respond(req, 200, NULL, ok, sizeof(ok) - 1);
}

static void h_readyz(struct sb_http_req *req)
{
    static const char ok[] = "{\"status\":\"ready\"}";

    if (API.ready && API.ready()) {
        sb_http_respond(req, 200, NULL, ok, sizeof(ok) - 1);
        return;
    }
    sb_api_unavailable(req);
}

static void h_metrics(struct sb_http_req *req)
{
    struct sb_buf b;

    sb_buf_init(&b, 0);
    sb_metrics_render(&b);
    sb_http_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8",
                    b.data ? b.data : "", b.len);
    sb_buf_free(&b);
}

/* ---- contacts -------------------------------------------------------------- */

static const char *const channels[] = {"phone", "visit", "event", "api",
                                       "email", "sms",   "chat",  NULL};
static const char *const directions[] = {"in", "out", NULL};
static const char *const locales[] = {"ru", "en", NULL};

struct contact_req {
    struct sb_http_req *req;
    char channel[16];
};

static void on_ingested(enum sb_store_status st,
                        const struct sb_contact_result *res, const char *err,
                        void *arg)
{
    struct contact_req *c = arg;
    struct sb_http_req *req = c->req;
    json_t *j;

    if (st != SB_STORE_OK) {
        sb_api_store_fail(req, st, err, "customer or conversation not found");
        free(c);
        return;
    }
    if (res->duplicate)
        sb_metric_add(API.m_duplicates, 1, c->channel);
    else
        sb_metric_add(API.m_ingested, 1, c->channel);
    sb_api_route_after_ingest(res);
    j = json_pack("{s:s, s:s, s:o, s:b, s:b, s:b, s:b}", "id", res->contact_id,
                  "customer", res->customer_id, "conversation",
                  res->conversation_id[0] ? json_string(res->conversation_id)
                                          : json_null(),
                  "duplicate", res->duplicate, "new_customer",
                  res->new_customer, "new_conversation",
                  res->new_conversation, "merge_proposed",
                  res->merge_proposed);
    sb_http_respond_json(req, res->duplicate ? 200 : 201, j);
    json_decref(j);
    free(c);
}

static const char *default_type(const char *channel)
{
    if (strcmp(channel, "phone") == 0)
        return "call";
    if (strcmp(channel, "visit") == 0)
        return "visit";
    if (strcmp(channel, "event") == 0)
        return "event";
    return "message";
}

static int id_like(const char *s, const char *prefix)
{
    size_t pl = strlen(prefix);

    return strncmp(s, prefix, pl) == 0 && s[pl] &&
           strspn(s + pl, "0123456789") == strlen(s + pl);
}

static void h_contacts_post(struct sb_http_req *req)
{
    static const char *const fields[] = {
        "channel", "direction", "type",     "customer",     "email",
        "phone",   "name",      "locale",   "subject",      "text",
        "source_id", "conversation", "fields", "ts", NULL};
    struct sb_json_err e = {{0}, {0}};
    struct sb_contact_in in;
    char email[SB_EMAIL_MAX + 1], phone[SB_PHONE_MAX + 1];
    const char *em = NULL, *ph = NULL, *type = NULL;
    json_t *extra = NULL;
    char *extra_s = NULL;
    long long ts = 0;
    struct contact_req *c;
    json_t *j = sb_json_parse_body(req->body.data, req->body.len, &e);

    memset(&in, 0, sizeof(in));
    if (!j || sb_json_only(j, fields, &e) < 0 ||
        sb_json_get_enum(j, "channel", 1, channels, &in.channel, &e) < 0 ||
        sb_json_get_enum(j, "direction", 0, directions, &in.direction, &e) <
            0 ||
        sb_json_get_str(j, "type", 0, 32, 0, &type, &e) < 0 ||
        sb_json_get_str(j, "customer", 0, 40, 0, &in.customer_id, &e) < 0 ||
        sb_json_get_str(j, "email", 0, 320, 0, &em, &e) < 0 ||
        sb_json_get_str(j, "phone", 0, 64, 0, &ph, &e) < 0 ||
        sb_json_get_str(j, "name", 0, 200, 0, &in.name, &e) < 0 ||
        sb_json_get_enum(j, "locale", 0, locales, &in.locale, &e) < 0 ||
        sb_json_get_str(j, "subject", 0, 998, 0, &in.subject, &e) < 0 ||
        sb_json_get_str(j, "text", 0, 0, 1, &in.text, &e) < 0 ||
        sb_json_get_str(j, "source_id", 0, 256, 0, &in.source_id, &e) < 0 ||
        sb_json_get_str(j, "conversation", 0, 40, 0, &in.conversation, &e) <
            0 ||
        sb_json_get_obj(j, "fields", 0, &extra, &e) < 0 ||
        sb_json_get_int(j, "ts", 0, 0, 253402300799999LL, &ts, &e) < 0)
        goto bad;
    if (type && strspn(type, "abcdefghijklmnopqrstuvwxyz_") != strlen(type)) {
        sb_json_fail(&e, "type", "type must be lowercase letters and _");
        goto bad;
    }
    if (in.customer_id && !id_like(in.customer_id, "cu_")) {
        sb_json_fail(&e, "customer", "customer must look like cu_123");
        goto bad;
    }
    if (in.conversation && strcmp(in.conversation, "none") != 0 &&
        strcmp(in.conversation, "new") != 0 &&
        !id_like(in.conversation, "cv_")) {
        sb_json_fail(&e, "conversation",
                     "conversation must be none, new or an id like cv_1");
        goto bad;
    }
    if (em) {
        if (norm_ident("email", em, email, sizeof(email), &e, "email") < 0)
            goto bad;
        in.ids[in.nids].type = "email";
        in.ids[in.nids++].value = email;
    }
    if (ph) {
        if (norm_ident("phone", ph, phone, sizeof(phone), &e, "phone") < 0)
            goto bad;
        in.ids[in.nids].type = "phone";
        in.ids[in.nids++].value = phone;
    }
    if (!in.customer_id && in.nids == 0) {
        sb_json_fail(&e, "email",
                     "one of customer, email or phone is required");
        goto bad;
    }
    if (!in.direction)
        in.direction = "in";
    in.type = type ? type : default_type(in.channel);
    in.text_len = in.text ? strlen(in.text) : 0;
    in.ts_ms = ts;
    if (extra)
        extra_s = json_dumps(extra, JSON_COMPACT);
    in.fields_json = extra_s;

    c = sb_calloc(1, sizeof(*c));
    c->req = req;
    snprintf(c->channel, sizeof(c->channel), "%s", in.channel);
    if (sb_contact_ingest(&in, on_ingested, c) < 0) {
        free(c);
        sb_api_unavailable(req);
    }
    free(extra_s);
    json_decref(j);
    return;
bad:
    bad(req, &e);
    json_decref(j);
}

/* ---- customers ------------------------------------------------------------- */

static void h_customers_find(struct sb_http_req *req)
{
    struct sb_json_err e = {{0}, {0}};
    char *email = sb_http_query(req, "email");
    char *phone = sb_http_query(req, "phone");
    char norm[SB_EMAIL_MAX + 1];
    const char *type = email ? "email" : "phone";

    if ((email != NULL) == (phone != NULL)) {
        sb_http_respond_error(req, 400, "give exactly one of email or phone",
                              "email");
        goto out;
    }
    if (norm_ident(type, email ? email : phone, norm, sizeof(norm), &e,
                   type) < 0) {
        bad(req, &e);
        goto out;
    }
    if (sb_customer_find(type, norm, on_json_result, req) < 0)
        sb_api_unavailable(req);
out:
    free(email);
    free(phone);
}

static void h_customer_get(struct sb_http_req *req)
{
    if (sb_customer_get(req->params[0], on_json_result, req) < 0)
        sb_api_unavailable(req);
}

static int user_exists(const char *name)
{
    size_t n = sb_config_count(API.conf, "user");

    for (size_t i = 0; i < n; i++) {
        const char *un;
        sb_config_nth(API.conf, "user", i, &un);
        if (strcmp(un, name) == 0)
            return 1;
    }
    return 0;
}

static int check_timezone(const char *tz, struct sb_json_err *e)
{
    char path[160];
    struct stat st;

    if (strspn(tz, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                   "0123456789_/+-") != strlen(tz) ||
        strstr(tz, "..") || tz[0] == '/')
        return sb_json_fail(e, "timezone", "invalid timezone name");
    /* Check against the tz database when the machine has one. */
    if (stat("/usr/share/zoneinfo", &st) == 0) {
        snprintf(path, sizeof(path), "/usr/share/zoneinfo/%s", tz);
        if (stat(path, &st) < 0 || !S_ISREG(st.st_mode))
            return sb_json_fail(e, "timezone",
                                "unknown timezone (use an IANA name such as "
                                "Europe/Moscow)");
    }
    return 0;
}

static int check_str_array(json_t *a, const char *field, size_t max_items,
                           size_t max_len, const char *const *choices,
                           struct sb_json_err *e)
{
    size_t i;
    json_t *v;

    if (!json_is_array(a) || json_array_size(a) > max_items)
        return sb_json_fail(e, field, "%s must be an array of at most %zu "
                                      "strings", field, max_items);
    json_array_foreach(a, i, v)
    {
        const char *s = json_string_value(v);
        int ok = s && *s && strlen(s) <= max_len;
        if (ok && choices) {
            ok = 0;
            for (int k = 0; choices[k]; k++)
                if (strcmp(s, choices[k]) == 0)
                    ok = 1;
        }
        if (!ok)
            return sb_json_fail(e, field, "invalid item in %s", field);
    }
    return 0;
}

static const char *const pref_channels[] = {"email", "sms", "chat",
                                            "webhook", NULL};

static int check_preferences(json_t *p, struct sb_json_err *e)
{
    static const char *const fields[] = {"order", "opt_out", "opt_in",
                                         "quiet_hours", NULL};
    json_t *v;

    if (sb_json_only(p, fields, e) < 0)
        return -1;
    if ((v = json_object_get(p, "order")) &&
        check_str_array(v, "preferences.order", 4, 8, pref_channels, e) < 0)
        return -1;
    if ((v = json_object_get(p, "opt_out")) && !json_is_object(v))
        return sb_json_fail(e, "preferences.opt_out", "must be an object");
    if ((v = json_object_get(p, "opt_in")) && !json_is_object(v))
        return sb_json_fail(e, "preferences.opt_in", "must be an object");
    if ((v = json_object_get(p, "quiet_hours")) && !json_is_object(v) &&
        !json_is_null(v))
        return sb_json_fail(e, "preferences.quiet_hours",
                            "must be {\"from\":\"HH:MM\",\"to\":\"HH:MM\"} "
                            "or null");
    return 0;
}

static void h_customer_put(struct sb_http_req *req)
{
    static const char *const fields[] = {
        "name",    "locale",      "timezone",       "tier", "tags",
        "curator", "preferences", "add_identities", NULL};
    struct sb_json_err e = {{0}, {0}};
    const char *s = NULL;
    json_t *v, *patch = json_object();
    json_t *j = sb_json_parse_body(req->body.data, req->body.len, &e);

    if (!j || sb_json_only(j, fields, &e) < 0 ||
        sb_json_get_str(j, "name", 0, 200, 0, &s, &e) < 0)
        goto bad;
    if (s)
        json_object_set_new(patch, "name", json_string(s));
    s = NULL;
    if (sb_json_get_enum(j, "locale", 0, locales, &s, &e) < 0)
        goto bad;
    if (s)
        json_object_set_new(patch, "locale", json_string(s));
    s = NULL;
    if (sb_json_get_str(j, "timezone", 0, 64, 0, &s, &e) < 0 ||
        (s && check_timezone(s, &e) < 0))
        goto bad;
    if (s)
        json_object_set_new(patch, "timezone", json_string(s));
    s = NULL;
    if (sb_json_get_str(j, "tier", 0, 32, 0, &s, &e) < 0)
        goto bad;
    if (s)
        json_object_set_new(patch, "tier", json_string(s));
    s = NULL;
    if (sb_json_get_str(j, "curator", 0, 64, 0, &s, &e) < 0)
        goto bad;
    if (s) {
        if (!user_exists(s)) {
            sb_json_fail(&e, "curator", "curator must be a configured user");
            goto bad;
        }
        json_object_set_new(patch, "curator", json_string(s));
    }
    if ((v = json_object_get(j, "tags"))) {
        if (check_str_array(v, "tags", 32, 64, NULL, &e) < 0)
            goto bad;
        json_object_set(patch, "tags", v);
    }
    if ((v = json_object_get(j, "preferences"))) {
        if (!json_is_object(v)) {
            sb_json_fail(&e, "preferences", "preferences must be an object");
            goto bad;
        }
        if (check_preferences(v, &e) < 0)
            goto bad;
        json_object_set(patch, "preferences", v);
    }
    if ((v = json_object_get(j, "add_identities"))) {
        static const char *const kinds[] = {"email", "phone", NULL};
        json_t *ids = json_object();
        json_object_set_new(patch, "identities", ids);
        if (!json_is_object(v) || sb_json_only(v, kinds, &e) < 0) {
            if (!e.error[0])
                sb_json_fail(&e, "add_identities", "must be an object");
            goto bad;
        }
        for (int k = 0; kinds[k]; k++) {
            json_t *a = json_object_get(v, kinds[k]), *out, *item;
            size_t i;
            char norm[SB_EMAIL_MAX + 1];
            if (!a)
                continue;
            if (check_str_array(a, kinds[k], 16, 320, NULL, &e) < 0)
                goto bad;
            out = json_array();
            json_object_set_new(ids, kinds[k], out);
            json_array_foreach(a, i, item)
            {
                if (norm_ident(kinds[k], json_string_value(item), norm,
                               sizeof(norm), &e, kinds[k]) < 0)
                    goto bad;
                json_array_append_new(out, json_string(norm));
            }
        }
    }
    if (json_object_size(patch) == 0) {
        sb_http_respond_error(req, 400, "nothing to update", NULL);
        goto out;
    }
    if (sb_customer_update(req->params[0], patch, on_json_result, req) < 0)
        sb_api_unavailable(req);
    goto out;
bad:
    bad(req, &e);
out:
    json_decref(patch);
    json_decref(j);
}

static int valid_stream_id(const char *s)
{
    size_t a = strspn(s, "0123456789");

    return a > 0 && a < 21 && s[a] == '-' &&
           strspn(s + a + 1, "0123456789") == strlen(s + a + 1) &&
           s[a + 1] && strlen(s + a + 1) < 21;
}

static int timeline_args(struct sb_http_req *req, char **before, int *limit)
{
    *before = sb_http_query(req, "before");
    if (*before && !valid_stream_id(*before)) {
        sb_http_respond_error(req, 400, "before must be a contact id",
                              "before");
        goto fail;
    }
    if (sb_api_limit(req, 50, 200, limit) < 0)
        goto fail;
    return 0;
fail:
    free(*before);
    *before = NULL;
    return -1;
}

static void h_customer_timeline(struct sb_http_req *req)
{
    char *before;
    int limit;

    if (timeline_args(req, &before, &limit) < 0)
        return;
    if (sb_timeline_customer(req->params[0], before, limit, on_json_result,
                             req) < 0)
        sb_api_unavailable(req);
    free(before);
}

static void h_conversation_timeline(struct sb_http_req *req)
{
    char *before;
    int limit;

    if (timeline_args(req, &before, &limit) < 0)
        return;
    if (sb_timeline_conversation(req->params[0], before, limit,
                                 on_json_result, req) < 0)
        sb_api_unavailable(req);
    free(before);
}

static void h_customer_merge(struct sb_http_req *req)
{
    static const char *const fields[] = {"from", NULL};
    struct sb_json_err e = {{0}, {0}};
    const char *from = NULL;
    json_t *j = sb_json_parse_body(req->body.data, req->body.len, &e);

    if (!j || sb_json_only(j, fields, &e) < 0 ||
        sb_json_get_str(j, "from", 1, 40, 0, &from, &e) < 0) {
        bad(req, &e);
        json_decref(j);
        return;
    }
    if (!id_like(from, "cu_")) {
        sb_http_respond_error(req, 400, "from must look like cu_123", "from");
        json_decref(j);
        return;
    }
    SB_INFO(API_PLACE, "merge into=%s from=%s by=%s", req->params[0], from,
            req->who.name);
    if (sb_customer_merge(req->params[0], from, on_json_result, req) < 0)
        sb_api_unavailable(req);
    json_decref(j);
}

static void on_proposals(enum sb_store_status st, json_t *result,
                         const char *err, void *arg)
{
    struct sb_http_req *req = arg;
    json_t *j;

    if (st != SB_STORE_OK) {
        sb_api_store_fail(req, st, err, "no such customer");
        json_decref(result);
        return;
    }
    j = json_pack("{s:o}", "proposals", result);
    sb_http_respond_json(req, 200, j);
    json_decref(j);
}

/* The global contact log, oldest first after a contact id: what
 * `sbctl tail` polls. */
static void h_log(struct sb_http_req *req)
{
    char *after = sb_http_query(req, "after");
    int n;

    /* A contact id, or a bare time in ms: everything after it. */
    if (after && !valid_stream_id(after) &&
        !(after[0] && strlen(after) < 16 &&
          strspn(after, "0123456789") == strlen(after))) {
        sb_http_respond_error(req, 400,
                              "after must be a contact id or a time in ms",
                              "after");
    } else if (sb_api_limit(req, 100, 1000, &n) == 0 &&
               sb_log_read(after, n, on_json_result, req) < 0) {
        sb_api_unavailable(req);
    }
    free(after);
}

static void h_merge_proposals(struct sb_http_req *req)
{
    if (sb_merge_proposals(req->params[0], on_proposals, req) < 0)
        sb_api_unavailable(req);
}

static void h_conversation_get(struct sb_http_req *req)
{
    if (sb_conversation_get(req->params[0], on_json_result, req) < 0)
        sb_api_unavailable(req);
}

/* A provider's callback: /webhooks/<driver>/<a>[/<b>] goes to the running
 * driver's webhook op (channel.h), which authenticates and answers. */
static void h_webhook(struct sb_http_req *req)
{
    struct sb_channel *ch = sb_channel_get(req->params[0]);

    if (!ch || !ch->ops->webhook) {
        sb_http_respond_error(req, 404, "no such webhook", NULL);
        return;
    }
    ch->ops->webhook(ch, req);
}

/* ---- the route table ------------------------------------------------------- */

#define READ_CUSTOMERS (SB_SCOPE_CUSTOMERS | SB_ACCESS_AGENT)
#define WRITE_CONTACTS (SB_SCOPE_CONTACTS | SB_ACCESS_AGENT)

static const struct sb_route routes[] = {
    {SB_GET | SB_HEAD, "/healthz", h_healthz, SB_ACCESS_PUBLIC, NULL},
    {SB_GET | SB_HEAD, "/readyz", h_readyz, SB_ACCESS_PUBLIC, NULL},
    {SB_GET, "/metrics", h_metrics, SB_ACCESS_PUBLIC, NULL},
    {SB_GET | SB_HEAD, "/", sb_static_serve, SB_ACCESS_PUBLIC, "static"},
    {SB_GET | SB_HEAD, "/static/{}", sb_static_serve, SB_ACCESS_PUBLIC,
     "static"},
    {SB_GET | SB_HEAD, "/console/", sb_static_serve, SB_ACCESS_PUBLIC,
     "console"},
    {SB_GET | SB_HEAD, "/console/{}", sb_static_serve, SB_ACCESS_PUBLIC,
     "console"},
    {SB_GET | SB_HEAD, "/dashboard/", sb_static_serve, SB_ACCESS_PUBLIC,
     "dashboard"},
    {SB_GET | SB_HEAD, "/dashboard/{}", sb_static_serve, SB_ACCESS_PUBLIC,
     "dashboard"},
    {SB_GET | SB_HEAD, "/chat/", sb_static_serve, SB_ACCESS_PUBLIC, "chat"},
    {SB_GET | SB_HEAD, "/chat/{}", sb_static_serve, SB_ACCESS_PUBLIC, "chat"},
    {SB_POST, "/api/v1/login", sb_auth_login, SB_ACCESS_PUBLIC, NULL},
    {SB_POST, "/api/v1/logout", sb_auth_logout, SB_ACCESS_ANY, NULL},
    {SB_GET, "/api/v1/me", sb_auth_me, SB_ACCESS_ANY, NULL},
    {SB_POST, "/api/v1/contacts", h_contacts_post, WRITE_CONTACTS, NULL},
    {SB_GET, "/api/v1/customers", h_customers_find, READ_CUSTOMERS, NULL},
    {SB_GET, "/api/v1/customers/{}", h_customer_get, READ_CUSTOMERS, NULL},
    {SB_PUT, "/api/v1/customers/{}", h_customer_put, READ_CUSTOMERS, NULL},
    {SB_GET, "/api/v1/customers/{}/timeline", h_customer_timeline,
     READ_CUSTOMERS, NULL},
    {SB_GET, "/api/v1/customers/{}/merge-proposals", h_merge_proposals,
     READ_CUSTOMERS, NULL},
    {SB_POST, "/api/v1/customers/{}/merge", h_customer_merge,
     SB_SCOPE_CUSTOMERS | SB_ACCESS_OPERATOR, NULL},
    {SB_GET, "/api/v1/conversations/{}", h_conversation_get, READ_CUSTOMERS,
     NULL},
    {SB_GET, "/api/v1/conversations/{}/timeline", h_conversation_timeline,
     READ_CUSTOMERS, NULL},
    {SB_GET, "/api/v1/conversations", sb_api_conversations, READ_CUSTOMERS,
     NULL},
    {SB_POST, "/api/v1/conversations/{}/accept", sb_api_accept,
     SB_ACCESS_AGENT, NULL},
    {SB_POST, "/api/v1/conversations/{}/decline", sb_api_decline,
     SB_ACCESS_AGENT, NULL},
    {SB_POST, "/api/v1/conversations/{}/assign", sb_api_assign,
     SB_ACCESS_AGENT | SB_SCOPE_ADMIN, NULL},
    {SB_POST, "/api/v1/conversations/{}/transfer", sb_api_transfer,
     SB_ACCESS_AGENT | SB_SCOPE_ADMIN, NULL},
    {SB_POST, "/api/v1/conversations/{}/resolve", sb_api_resolve,
     SB_ACCESS_AGENT | SB_SCOPE_ADMIN, NULL},
    {SB_POST, "/api/v1/conversations/{}/messages", sb_api_reply,
     SB_ACCESS_AGENT, NULL},
    {SB_POST, "/api/v1/conversations/{}/notes", sb_api_note,
     SB_ACCESS_AGENT | SB_SCOPE_ADMIN, NULL},
    {SB_GET, "/api/v1/queues", sb_api_queues, READ_CUSTOMERS, NULL},
    {SB_GET, "/api/v1/log", h_log, SB_ACCESS_OPERATOR | SB_SCOPE_ADMIN, NULL},
    {SB_GET, "/api/v1/agents", sb_api_agents, READ_CUSTOMERS, NULL},
    {SB_PUT, "/api/v1/agents/{}/presence", sb_api_presence,
     SB_ACCESS_AGENT | SB_SCOPE_ADMIN, NULL},
    {SB_POST, "/api/v1/notifications", sb_api_notify_post,
     SB_SCOPE_NOTIFY | SB_ACCESS_OPERATOR, NULL},
    {SB_GET, "/api/v1/notifications/{}", sb_api_notify_get,
     SB_SCOPE_NOTIFY | SB_ACCESS_AGENT, NULL},
    {SB_GET, "/api/v1/notify/queues", sb_api_notify_queues,
     SB_SCOPE_NOTIFY | SB_ACCESS_OPERATOR, NULL},
    {SB_GET, "/api/v1/dlq", sb_api_dlq_list,
     SB_SCOPE_NOTIFY | SB_ACCESS_OPERATOR, NULL},
    {SB_POST, "/api/v1/dlq/{}/retry", sb_api_dlq_retry,
     SB_SCOPE_NOTIFY | SB_ACCESS_OPERATOR, NULL},
    {SB_DELETE, "/api/v1/dlq/{}", sb_api_dlq_drop,
     SB_SCOPE_NOTIFY | SB_ACCESS_OPERATOR, NULL},
    {SB_GET, "/api/v1/quarantine", sb_api_quarantine_list,
     SB_ACCESS_OPERATOR | SB_SCOPE_ADMIN, NULL},
    {SB_GET, "/api/v1/quarantine/{}", sb_api_quarantine_show,
     SB_ACCESS_OPERATOR | SB_SCOPE_ADMIN, NULL},
    {SB_POST, "/api/v1/quarantine/{}/replay", sb_api_quarantine_replay,
     SB_ACCESS_OPERATOR | SB_SCOPE_ADMIN, NULL},
    {SB_GET, "/api/v1/contacts/{}/html", sb_api_contact_html, READ_CUSTOMERS,
     NULL},
    {SB_GET, "/api/v1/contacts/{}/attachments/{}", sb_api_contact_attachment,
     READ_CUSTOMERS, NULL},
    {SB_GET | SB_POST, "/webhooks/{}/{}", h_webhook, SB_ACCESS_PUBLIC,
     "webhook"},
    {SB_GET | SB_POST, "/webhooks/{}/{}/{}", h_webhook, SB_ACCESS_PUBLIC,
     "webhook"},
    {0, NULL, NULL, 0, NULL},
};

const struct sb_route *sb_api_routes(void)
{
    return routes;
}

void sb_api_init(struct sb_redis *r, int (*ready)(void))
{
    API.redis = r;
    API.ready = ready;
    API.m_ingested = sb_metric_counter("sb_contacts_ingested_total",
                                       "Contacts written to the contact log",
                                       "channel");
    API.m_duplicates = sb_metric_counter(
        "sb_contacts_duplicate_total",
        "Contacts recognised as already ingested (same source id)",
        "channel");
}

void sb_api_config(const struct sb_config *conf)
{
    API.conf = conf;
}
