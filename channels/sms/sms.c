/* sms.c - the SMS channel: Kannel and Twilio-shaped providers.
 *
 * One driver, any number of providers ([sms-provider NAME]), tried in the
 * order [sms] providers gives. The outside contract (config, requests,
 * callbacks, answers) is channels/sms/PROTOCOL.md; this comment is about
 * the inside.
 *
 * Outbound. send() normalises the number, cuts the text into parts
 * (smstext.h: GSM-7 or UCS-2, the parts are the cost) and queues an op on
 * its first provider: the one a reply's conversation names in its "via",
 * else the first provider not marked down. Each provider has a FIFO of ops
 * waiting for a slot (max_inflight) and a token (rate, a token bucket
 * refilled by a timer), and sends over hconn (http://) or httpc (https://).
 * An answer is mapped to OK / TEMPFAIL / PERMFAIL; a TEMPFAIL moves the op
 * to the next provider it has not tried (failover), and only when every
 * provider failed is the send completed TEMPFAIL (with the largest
 * Retry-After seen). A provider that did not answer at all is marked down
 * for SMS_DOWN_MS and skipped by new sends while another is up.
 * Completions never run inside send(): an op refused before any request
 * (bad number, too long) completes from the `kick` timer.
 *
 * Inbound (the webhook op, channel.h): /webhooks/sms/<provider>[/dlr |
 * /status]. The request is authenticated (Kannel: secret + source address;
 * Twilio: X-Twilio-Signature over public_url), parsed, and handed to the
 * store with sb_contact_ingest(); the answer waits for Redis. Opt-out and
 * opt-in words update the customer's preferences and send a confirmation
 * through the same provider. Delivery reports go to sb_notify_report().
 *
 * Everything runs on the loop thread. Secrets (passwords, tokens, the
 * callback secret) are never logged; nor are message texts.
 */
#include "channel.h"

#include <ctype.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api.h"
#include "core.h"
#include "crypto.h"
#include "hconn.h"
#include "http.h"
#include "httpc.h"
#include "list.h"
#include "log.h"
#include "metrics.h"
#include "normalize.h"
#include "notify.h"
#include "smsauth.h"
#include "smsdlr.h"
#include "smstext.h"
#include "store.h"
#include "util.h"

#define SMS_PLACE "chan.sms"
#define SMS_DOWN_MS 5000       /* a silent provider is skipped this long */
#define SMS_MAX_PROV 8
#define SMS_QUEUE_MAX 100000   /* ops waiting in one provider's FIFO */
#define SMS_RESP_MAX (64 * 1024)

enum { SMS_KANNEL, SMS_TWILIO };
static const char *const sms_types[] = {"kannel", "twilio", NULL};

/* ---- configuration ----------------------------------------------------- */

struct sms_conf {
    char **providers;
    char *default_country;
    long long max_parts;
    char **optout_words;
    char **optin_words;
    char *optout_reply_en, *optout_reply_ru;
    char *optin_reply_en, *optin_reply_ru;
};

struct sms_pconf {
    int type;
    char *url;
    char *username;
    char *password;
    char *from;
    char **numbers;
    char *secret;
    char **allow;
    char *public_url;
    long long rate;
    long long max_inflight;
    long long timeout_ms;
    long long dlr_mask;
};

#define C(f) offsetof(struct sms_conf, f)
static const struct sb_conf_key sms_keys[] = {
    {"providers", SB_CONF_LIST, C(providers), NULL, 0, 64, NULL, 0,
     "[sms-provider NAME] sections in failover order (default: all, in "
     "file order)"},
    {"default_country", SB_CONF_STR, C(default_country), NULL, 0, 2, NULL, 0,
     "country of numbers written without + ([core] default_country when "
     "unset)"},
    {"max_parts", SB_CONF_INT, C(max_parts), "6", 1, SB_SMS_MAX_PARTS, NULL,
     0, "longest message in concatenated parts; longer ones fail"},
    {"optout_words", SB_CONF_LIST, C(optout_words),
     "STOP, СТОП, ОТПИСАТЬСЯ, UNSUBSCRIBE", 0, 64, NULL, 0,
     "a message that is just one of these (any case) opts the sender out"},
    {"optin_words", SB_CONF_LIST, C(optin_words), "START, СТАРТ, ПОДПИСАТЬСЯ",
     0, 64, NULL, 0, "a message that is just one of these opts back in"},
    {"optout_reply_en", SB_CONF_STR, C(optout_reply_en),
     "You are unsubscribed from our SMS notifications. Reply START to "
     "subscribe again.",
     0, 480, NULL, 0, "confirmation of an opt-out (English)"},
    {"optout_reply_ru", SB_CONF_STR, C(optout_reply_ru),
     "Вы отписаны от SMS-уведомлений. Чтобы подписаться снова, "
     "ответьте СТАРТ.",
     0, 480, NULL, 0, "confirmation of an opt-out (Russian)"},
    {"optin_reply_en", SB_CONF_STR, C(optin_reply_en),
     "You are subscribed to our SMS notifications again.", 0, 480, NULL, 0,
     "confirmation of an opt-in (English)"},
    {"optin_reply_ru", SB_CONF_STR, C(optin_reply_ru),
     "Вы снова подписаны на SMS-уведомления.", 0, 480, NULL, 0,
     "confirmation of an opt-in (Russian)"},
    {NULL, 0, 0, NULL, 0, 0, NULL, 0, NULL},
};
#undef C

static int http_url(const char *s)
{
    return s && (strncmp(s, "http://", 7) == 0 ||
                 strncmp(s, "https://", 8) == 0);
}

static int has_ctl(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; p && *p; p++)
        if (*p < 0x20 || *p == 0x7f || *p == ' ')
            return 1;
    return 0;
}

static int sms_pconf_check(void *conf, char *err, size_t errlen)
{
    const struct sms_pconf *p = conf;

    if (!http_url(p->url) || has_ctl(p->url)) {
        snprintf(err, errlen, "url must be an http:// or https:// URL");
        return -1;
    }
    if (p->public_url && (!http_url(p->public_url) || has_ctl(p->public_url))) {
        snprintf(err, errlen, "public_url must be an http(s):// URL");
        return -1;
    }
    if (!p->username || !p->password) {
        snprintf(err, errlen, "username and password are required");
        return -1;
    }
    if (p->type == SMS_KANNEL && (!p->secret || strlen(p->secret) < 16)) {
        snprintf(err, errlen,
                 "secret (16 bytes or more) is required for kannel: it "
                 "authenticates Kannel's callbacks");
        return -1;
    }
    if (!p->from) {
        snprintf(err, errlen, "from (the default sender) is required");
        return -1;
    }
    return 0;
}

#define P(f) offsetof(struct sms_pconf, f)
static const struct sb_conf_key sms_pkeys[] = {
    {"type", SB_CONF_ENUM, P(type), NULL, 0, 0, sms_types, SB_CONF_REQUIRED,
     "kannel (smsbox sendsms + sms-service + dlr-url) or twilio (the REST "
     "shape)"},
    {"url", SB_CONF_STR, P(url), NULL, 0, 2048, NULL, SB_CONF_REQUIRED,
     "kannel: the sendsms URL; twilio: the API base "
     "(https://api.twilio.com)"},
    {"username", SB_CONF_STR, P(username), NULL, 0, 256, NULL, 0,
     "kannel: sendsms user; twilio: account SID"},
    {"password", SB_CONF_STR, P(password), NULL, 0, 256, NULL, SB_CONF_SECRET,
     "kannel: sendsms password; twilio: auth token (also checks "
     "X-Twilio-Signature)"},
    {"from", SB_CONF_STR, P(from), NULL, 0, 32, NULL, 0,
     "default sender number or name"},
    {"numbers", SB_CONF_LIST, P(numbers), NULL, 0, 32, NULL, 0,
     "our numbers on this provider (documentation and replies)"},
    {"secret", SB_CONF_STR, P(secret), NULL, 0, 256, NULL, SB_CONF_SECRET,
     "kannel: the secret= query argument its callbacks must carry"},
    {"allow", SB_CONF_LIST, P(allow), "127.0.0.1, ::1", 0, 64, NULL, 0,
     "kannel: source addresses allowed to call back"},
    {"public_url", SB_CONF_STR, P(public_url), NULL, 0, 2048, NULL, 0,
     "our URL as the provider reaches it ([http] public_url when unset): "
     "callback URLs and Twilio signatures"},
    {"rate", SB_CONF_INT, P(rate), "0", 0, 100000, NULL, 0,
     "messages per second to this provider (0: no limit)"},
    {"max_inflight", SB_CONF_INT, P(max_inflight), "32", 1, 10000, NULL, 0,
     "requests in flight to this provider"},
    {"timeout", SB_CONF_DURATION, P(timeout_ms), "10s", 100, 600000, NULL, 0,
     "one request, connect included (then the next provider)"},
    {"dlr_mask", SB_CONF_INT, P(dlr_mask), "31", 0, 31, NULL, 0,
     "kannel: dlr-mask (1 delivered, 2 failed, 4 buffered, 8 SMSC, 16 "
     "rejected; 0: no reports)"},
    {NULL, 0, 0, NULL, 0, 0, NULL, 0, NULL},
};
#undef P

static const struct sb_conf_section sms_psection = {
    "sms-provider", 1, sizeof(struct sms_pconf), sms_pkeys,
    "One SMS provider of the sms channel (channels/sms/PROTOCOL.md).",
    sms_pconf_check,
};

static const struct sb_conf_section *const sms_more[] = {&sms_psection,
                                                         NULL};

static const struct sb_conf_section sms_section = {
    "sms", 0, sizeof(struct sms_conf), sms_keys,
    "The SMS channel: [sms-provider NAME] sections are its providers\n"
    "(Kannel, Twilio-shaped); [channels] sms = sms puts it to work.\n"
    "See channels/sms/PROTOCOL.md.",
    NULL,
};

/* ---- state ------------------------------------------------------------- */

struct sms_drv;

struct sms_prov {
    struct sms_drv *d;
    int idx;
    char *name;
    int type;
    char *url;        /* kannel: sendsms URL without query; twilio: base */
    char *user, *pass, *from, *secret, *public_url;
    char **numbers, **allow;
    char *auth_header; /* twilio: "Authorization: Basic ...\r\n" */
    char *userpwd;     /* twilio over httpc */
    char *path;        /* hconn origin-form path (no query) */
    struct sb_hconn_pool *pool; /* http://, else NULL: httpc */
    double rate, tokens;
    uint64_t refill_ms;
    size_t max_inflight, inflight;
    long timeout_ms;
    int dlr_mask;
    uint64_t down_until;
    struct sb_list wait; /* ops waiting for a slot or a token */
};

struct sms_op {
    struct sb_list_node link; /* on a provider's wait list or d->live */
    struct sms_drv *d;        /* NULL once detached (stopped under httpc) */
    struct sb_outmsg *msg;    /* the caller's, or own (confirmations) */
    sb_send_done *done;
    char to[SB_PHONE_MAX + 1];
    char *from;               /* forced sender (a reply's via) or NULL */
    struct sb_sms_info info;
    int prov;                 /* provider it is queued on / sent to */
    unsigned tried;           /* bit per provider index */
    int on_wait, in_flight, finished;
    enum sb_send_status st;   /* a result decided before any request */
    char reason[160];
    long long retry_after_ms;
    char *provider_id;
    char *body;               /* request body (hconn borrows it) */
    char *reqpath;            /* request target */
    struct sb_hconn_pool *pool;
    /* a confirmation owns its message */
    struct sb_outmsg own;
    char *own_text;
};

struct sms_drv {
    uv_loop_t *loop;
    struct sms_prov prov[SMS_MAX_PROV];
    size_t nprov;
    char country[3];
    size_t max_parts;
    char **optout, **optin;
    char *optout_reply[2], *optin_reply[2]; /* [0] en, [1] ru */
    uv_timer_t kick;         /* refused ops' completions, token refills */
    struct sb_list done_q;   /* ops whose completion is due */
    struct sb_list live;     /* ops with a request out */
    int stopping;
    struct sb_metric *m_sent, *m_parts, *m_in, *m_rejected, *m_reports,
        *m_failover;
};

static struct sms_drv *sms_global; /* for the metric gauge only */

/* ---- small helpers ----------------------------------------------------- */

/* Percent-encode s (everything but unreserved characters) onto b. */
static void url_enc(struct sb_buf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";

    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (isalnum(*p) || *p == '-' || *p == '_' || *p == '.' || *p == '~') {
            sb_buf_append(b, p, 1);
        } else {
            char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
            sb_buf_append(b, e, 3);
        }
    }
}

static void arg(struct sb_buf *b, const char *name, const char *val)
{
    if (b->len && b->data[b->len - 1] != '?')
        sb_buf_appends(b, "&");
    sb_buf_appends(b, name);
    sb_buf_appends(b, "=");
    url_enc(b, val);
}

static char *chomp_slash(const char *s)
{
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == '/')
        n--;
    return sb_strndup(s, n);
}

static void free_list(char **l)
{
    for (size_t i = 0; l && l[i]; i++)
        free(l[i]);
    free(l);
}

static char **dup_list(char *const *l)
{
    size_t n = 0;
    char **o;

    while (l && l[n])
        n++;
    o = sb_calloc(n + 1, sizeof(*o));
    for (size_t i = 0; i < n; i++)
        o[i] = sb_strdup(l[i]);
    return o;
}

static struct sms_prov *prov_by_name(struct sms_drv *d, const char *name,
                                     size_t n)
{
    for (size_t i = 0; i < d->nprov; i++)
        if (strlen(d->prov[i].name) == n &&
            strncmp(d->prov[i].name, name, n) == 0)
            return &d->prov[i];
    return NULL;
}

static void kick_cb(uv_timer_t *t);

/* ---- completions ------------------------------------------------------- */

static void op_free(struct sms_op *op)
{
    free(op->from);
    free(op->provider_id);
    free(op->body);
    free(op->reqpath);
    free(op->own_text);
    free(op);
}

/* Tell the caller (once) and free the op. */
static void op_complete(struct sms_op *op)
{
    struct sb_send_result r;
    struct sms_drv *d = op->d;

    memset(&r, 0, sizeof(r));
    r.status = op->st;
    r.reason = op->reason;
    r.provider_id = op->provider_id;
    r.retry_after_ms = op->retry_after_ms;
    r.parts = (int)op->info.parts;
    if (d && op->prov >= 0 && op->st != SB_SEND_CANCELLED) {
        static const char *const names[] = {"ok", "tempfail", "permfail",
                                            "cancelled"};
        sb_metric_add(d->m_sent, 1, d->prov[op->prov].name, names[op->st]);
        if (op->st == SB_SEND_OK)
            sb_metric_add(d->m_parts, (double)op->info.parts,
                          d->prov[op->prov].name);
    }
    if (op->done)
        op->done(op->msg, &r);
    op_free(op);
}

/* Complete on a later loop turn (send() may never complete inline). */
static void op_defer(struct sms_op *op, enum sb_send_status st,
                     const char *reason)
{
    struct sms_drv *d = op->d;

    op->st = st;
    snprintf(op->reason, sizeof(op->reason), "%s", reason);
    sb_list_push_back(&d->done_q, &op->link);
    uv_timer_start(&d->kick, kick_cb, 0, 0);
}

/* ---- sending ----------------------------------------------------------- */

static void pump(struct sms_prov *p);
static void issue(struct sms_op *op);

/* Provider p may send now: a slot and a token. */
static int prov_ready(struct sms_prov *p)
{
    if (p->inflight >= p->max_inflight)
        return 0;
    if (p->rate <= 0)
        return 1;
    {
        uint64_t now = sb_mono_ms();
        double add = (double)(now - p->refill_ms) * p->rate / 1000.0;
        p->refill_ms = now;
        p->tokens += add;
        if (p->tokens > p->rate)
            p->tokens = p->rate < 1 ? 1 : p->rate;
    }
    return p->tokens >= 1.0;
}

static void pump(struct sms_prov *p)
{
    struct sms_drv *d = p->d;

    while (p->wait.head && prov_ready(p)) {
        struct sms_op *op =
            sb_container_of(sb_list_pop_front(&p->wait), struct sms_op, link);
        op->on_wait = 0;
        if (p->rate > 0)
            p->tokens -= 1.0;
        issue(op);
    }
    if (p->wait.head && p->inflight < p->max_inflight && p->rate > 0) {
        /* waiting for a token: come back when one is due */
        uint64_t ms = (uint64_t)((1.0 - p->tokens) * 1000.0 / p->rate) + 1;
        if (!uv_is_active((uv_handle_t *)&d->kick) ||
            uv_timer_get_due_in(&d->kick) > ms)
            uv_timer_start(&d->kick, kick_cb, ms, 0);
    }
}

static void kick_cb(uv_timer_t *t)
{
    struct sms_drv *d = t->data;
    struct sb_list_node *n;

    while ((n = sb_list_pop_front(&d->done_q)))
        op_complete(sb_container_of(n, struct sms_op, link));
    for (size_t i = 0; i < d->nprov; i++)
        pump(&d->prov[i]);
}

/* Queue op on provider i. */
static void enqueue(struct sms_op *op, int i)
{
    struct sms_prov *p = &op->d->prov[i];

    op->prov = i;
    op->tried |= 1u << i;
    sb_list_push_back(&p->wait, &op->link);
    op->on_wait = 1;
    pump(p);
}

/* The next provider op has not tried, preferring ones that are up; -1
 * when none is left. */
static int next_prov(struct sms_op *op)
{
    struct sms_drv *d = op->d;
    uint64_t now = sb_mono_ms();
    int down = -1;

    for (size_t i = 0; i < d->nprov; i++) {
        if (op->tried & (1u << i))
            continue;
        if (d->prov[i].down_until > now) {
            if (down < 0)
                down = (int)i;
            continue;
        }
        return (int)i;
    }
    return down;
}

/* A failed try: the next provider, or the end. */
static void op_failed(struct sms_op *op, enum sb_send_status st)
{
    int next;

    if (st == SB_SEND_TEMPFAIL && !op->d->stopping &&
        (next = next_prov(op)) >= 0) {
        sb_metric_add(op->d->m_failover, 1, op->d->prov[op->prov].name);
        SB_INFO(SMS_PLACE, "failover id=%s from=%s to=%s reason=%s",
                op->msg->id, op->d->prov[op->prov].name,
                op->d->prov[next].name, op->reason);
        free(op->from);
        op->from = NULL; /* the other provider's own sender */
        enqueue(op, next);
        return;
    }
    op->st = st;
    op_complete(op);
}

/* Map an HTTP answer (status 0: none) and finish or fail over. */
static void on_answer(struct sms_op *op, int status, const char *body,
                      long long retry_after, const char *error)
{
    struct sms_drv *d = op->d;
    struct sms_prov *p;

    if (!d) { /* detached at stop: the caller has been told */
        op_free(op);
        return;
    }
    p = &d->prov[op->prov];
    p->inflight--;
    op->in_flight = 0;
    sb_list_remove(&d->live, &op->link);
    free(op->body);
    op->body = NULL;
    if (retry_after >= 0 && retry_after * 1000 > op->retry_after_ms)
        op->retry_after_ms = retry_after * 1000;
    if (status == 0) {
        snprintf(op->reason, sizeof(op->reason), "%s: %s", p->name,
                 error ? error : "no answer");
        p->down_until = sb_mono_ms() + SMS_DOWN_MS;
        op_failed(op, d->stopping ? SB_SEND_CANCELLED : SB_SEND_TEMPFAIL);
    } else if (p->type == SMS_KANNEL && status >= 200 && status < 300) {
        if (strncmp(body, "0:", 2) == 0 || strncmp(body, "3:", 2) == 0) {
            snprintf(op->reason, sizeof(op->reason), "%s: %.100s", p->name,
                     body);
            op->st = SB_SEND_OK;
            op_complete(op);
        } else {
            snprintf(op->reason, sizeof(op->reason),
                     "%s: unexpected answer %d %.80s", p->name, status, body);
            op_failed(op, SB_SEND_TEMPFAIL);
        }
    } else if (status >= 200 && status < 300) {
        json_error_t je;
        json_t *j = json_loads(body, 0, &je);
        const char *sid = json_string_value(json_object_get(j, "sid"));
        if (sid && *sid) {
            op->provider_id = sb_strdup(sid);
            snprintf(op->reason, sizeof(op->reason), "%s: %s", p->name,
                     json_string_value(json_object_get(j, "status"))
                         ? json_string_value(json_object_get(j, "status"))
                         : "accepted");
            op->st = SB_SEND_OK;
            op_complete(op);
        } else {
            snprintf(op->reason, sizeof(op->reason),
                     "%s: %d without a message sid", p->name, status);
            op_failed(op, SB_SEND_TEMPFAIL);
        }
        json_decref(j);
    } else {
        const char *msg = body;
        json_t *j = NULL;
        int temp = status == 429 || status == 408 || status >= 500;

        if (p->type == SMS_TWILIO) {
            json_error_t je;
            j = json_loads(body, 0, &je);
            if (json_string_value(json_object_get(j, "message")))
                msg = json_string_value(json_object_get(j, "message"));
        }
        snprintf(op->reason, sizeof(op->reason), "%s: %d %.100s", p->name,
                 status, msg);
        json_decref(j);
        op_failed(op, temp ? SB_SEND_TEMPFAIL : SB_SEND_PERMFAIL);
    }
    pump(p);
}

static void on_hconn(const struct sb_hconn_resp *r, void *arg)
{
    on_answer(arg, r->status, r->body, r->retry_after, r->error);
}

static void on_httpc(const struct sb_httpc_resp *r, void *arg)
{
    on_answer(arg, (int)r->status, r->body ? r->body : "", r->retry_after,
              r->error);
}

/* Build and send op's request to its provider. */
static void issue(struct sms_op *op)
{
    struct sms_drv *d = op->d;
    struct sms_prov *p = &d->prov[op->prov];
    const char *from = op->from ? op->from : p->from;
    const char *text = op->msg->text ? op->msg->text : "";
    struct sb_buf q, cb;
    int rc;

    /* a failover builds the request anew for the next provider */
    free(op->reqpath);
    free(op->body);
    op->reqpath = op->body = NULL;
    sb_buf_init(&q, 0);
    sb_buf_init(&cb, 0);
    if (p->type == SMS_KANNEL) {
        sb_buf_appends(&q, p->pool ? p->path : p->url);
        sb_buf_appends(&q, strchr(p->pool ? p->path : p->url, '?') ? "&"
                                                                    : "?");
        arg(&q, "username", p->user);
        arg(&q, "password", p->pass);
        arg(&q, "from", from);
        arg(&q, "to", op->to);
        arg(&q, "text", text);
        arg(&q, "charset", "UTF-8");
        arg(&q, "coding", op->info.coding == SB_SMS_UCS2 ? "2" : "0");
        if (p->dlr_mask > 0 && op->msg->id) {
            char m[16];
            snprintf(m, sizeof(m), "%d", p->dlr_mask);
            arg(&q, "dlr-mask", m);
            sb_buf_printf(&cb, "%s/webhooks/sms/%s/dlr?secret=", p->public_url,
                          p->name);
            url_enc(&cb, p->secret);
            sb_buf_appends(&cb, "&a=");
            url_enc(&cb, op->msg->id);
            sb_buf_appends(&cb, "&d=%d&A=%A&F=%F");
            arg(&q, "dlr-url", cb.data);
        }
        op->reqpath = sb_buf_steal(&q, NULL);
    } else {
        sb_buf_printf(&q, "%s/2010-04-01/Accounts/", p->pool ? p->path
                                                              : p->url);
        url_enc(&q, p->user);
        sb_buf_appends(&q, "/Messages.json");
        op->reqpath = sb_buf_steal(&q, NULL);
        sb_buf_init(&q, 0);
        arg(&q, "To", op->to);
        arg(&q, "From", from);
        arg(&q, "Body", text);
        if (op->msg->id) {
            sb_buf_printf(&cb, "%s/webhooks/sms/%s/status?a=", p->public_url,
                          p->name);
            url_enc(&cb, op->msg->id);
            arg(&q, "StatusCallback", cb.data);
        }
        op->body = sb_buf_steal(&q, NULL);
    }
    sb_buf_free(&cb);
    op->in_flight = 1;
    p->inflight++;
    sb_list_push_back(&d->live, &op->link);
    if (p->pool) {
        struct sb_hconn_req r;
        memset(&r, 0, sizeof(r));
        r.method = p->type == SMS_KANNEL ? "GET" : "POST";
        r.path = op->reqpath;
        if (p->type == SMS_TWILIO) {
            r.headers = p->auth_header;
            r.body = op->body;
            r.body_len = strlen(op->body);
        }
        r.timeout_ms = p->timeout_ms;
        op->pool = p->pool;
        rc = sb_hconn_request(p->pool, &r, on_hconn, op);
    } else {
        static const char *const form_hdr[] = {
            "Content-Type: application/x-www-form-urlencoded", NULL};
        struct sb_httpc_req r;
        memset(&r, 0, sizeof(r));
        r.method = p->type == SMS_KANNEL ? "GET" : "POST";
        r.url = op->reqpath;
        if (p->type == SMS_TWILIO) {
            r.headers = form_hdr;
            r.body = op->body;
            r.body_len = strlen(op->body);
            r.userpwd = p->userpwd;
        }
        r.timeout_ms = p->timeout_ms;
        r.max_body = SMS_RESP_MAX;
        rc = sb_httpc_request(&r, on_httpc, op);
    }
    if (rc < 0) {
        p->inflight--;
        op->in_flight = 0;
        sb_list_remove(&d->live, &op->link);
        snprintf(op->reason, sizeof(op->reason), "%s: request refused",
                 p->name);
        /* not inline: issue() can run inside send() */
        op->st = SB_SEND_TEMPFAIL;
        sb_list_push_back(&d->done_q, &op->link);
        uv_timer_start(&d->kick, kick_cb, 0, 0);
    }
}

/* Start a send of msg; via "provider|number" pins the provider and sender.
 * 0, or -1 (no completion). */
static int sms_submit(struct sms_drv *d, struct sb_outmsg *msg,
                      sb_send_done *done, struct sms_op *op)
{
    const char *why = NULL;
    const char *text = msg->text ? msg->text : "";
    int first = -1;

    if (d->stopping || d->nprov == 0) {
        op_free(op);
        return -1;
    }
    op->d = d;
    op->msg = msg;
    op->done = done;
    op->prov = -1;
    op->retry_after_ms = -1;
    if (!msg->to ||
        sb_phone_normalize(msg->to, d->country, op->to, sizeof(op->to),
                           &why) < 0) {
        op_defer(op, SB_SEND_PERMFAIL, "not a phone number");
        return 0;
    }
    if (sb_sms_split(text, strlen(text), d->max_parts, &op->info, NULL,
                     &why) < 0) {
        char r[128];
        snprintf(r, sizeof(r), "%s (%zu parts, max %zu)", why,
                 op->info.parts, d->max_parts);
        op_defer(op, SB_SEND_PERMFAIL, r);
        return 0;
    }
    if (msg->via) {
        const char *bar = strchr(msg->via, '|');
        struct sms_prov *p =
            prov_by_name(d, msg->via, bar ? (size_t)(bar - msg->via)
                                          : strlen(msg->via));
        if (p) {
            first = p->idx;
            if (bar && bar[1])
                op->from = sb_strdup(bar + 1);
        }
    }
    if (first < 0)
        first = next_prov(op);
    if (d->prov[first].wait.count >= SMS_QUEUE_MAX) {
        op_free(op);
        return -1;
    }
    enqueue(op, first);
    return 0;
}

static int sms_send(struct sb_channel *ch, struct sb_outmsg *msg,
                    sb_send_done *done)
{
    return sms_submit(ch->priv, msg, done, sb_calloc(1, sizeof(struct sms_op)));
}

/* A confirmation (opt-out/opt-in) through provider p from `from`. */
static void sms_confirm(struct sms_drv *d, struct sms_prov *p,
                        const char *to, const char *from, const char *text)
{
    struct sms_op *op = sb_calloc(1, sizeof(*op));
    char via[192];

    snprintf(via, sizeof(via), "%s|%s", p->name, from ? from : "");
    op->own_text = sb_asprintf("%s%c%s%c%s", text, 0, to, 0, via);
    op->own.text = op->own_text;
    op->own.to = op->own_text + strlen(text) + 1;
    op->own.via = op->own.to + strlen(op->own.to) + 1;
    op->own.id = NULL; /* no delivery report wanted */
    if (sms_submit(d, &op->own, NULL, op) < 0)
        SB_WARN(SMS_PLACE, "confirmation not sent provider=%s", p->name);
}

/* ---- start / stop ------------------------------------------------------ */

static double live_ops(void *arg)
{
    (void)arg;
    return sms_global ? (double)sms_global->live.count : 0;
}

static int prov_init(struct sms_drv *d, struct sms_prov *p, const char *name,
                     const struct sms_pconf *c, const char *public_default)
{
    char host[256];
    int port;
    char *path = NULL;

    p->d = d;
    p->name = sb_strdup(name);
    p->type = c->type;
    p->url = chomp_slash(c->url);
    p->user = sb_strdup(c->username);
    p->pass = sb_strdup(c->password);
    p->from = sb_strdup(c->from);
    p->secret = c->secret ? sb_strdup(c->secret) : NULL;
    p->public_url = chomp_slash(c->public_url ? c->public_url
                                              : public_default ? public_default
                                                               : "");
    p->numbers = dup_list(c->numbers);
    p->allow = dup_list(c->allow);
    p->rate = (double)c->rate;
    p->tokens = p->rate;
    p->refill_ms = sb_mono_ms();
    p->max_inflight = (size_t)c->max_inflight;
    p->timeout_ms = (long)c->timeout_ms;
    p->dlr_mask = (int)c->dlr_mask;
    if (!*p->public_url && (p->type == SMS_TWILIO || p->dlr_mask > 0)) {
        SB_ERR(SMS_PLACE,
               "provider %s: no public_url (nor [http] public_url) for its "
               "callbacks",
               name);
        return -1;
    }
    if (p->type == SMS_TWILIO) {
        char *up = sb_asprintf("%s:%s", p->user, p->pass);
        size_t n = sodium_base64_ENCODED_LEN(strlen(up),
                                             sodium_base64_VARIANT_ORIGINAL);
        char *b64 = sb_malloc(n);
        sodium_bin2base64(b64, n, (const unsigned char *)up, strlen(up),
                          sodium_base64_VARIANT_ORIGINAL);
        p->auth_header = sb_asprintf(
            "Authorization: Basic %s\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n",
            b64);
        p->userpwd = up;
        sodium_memzero(b64, strlen(b64));
        free(b64);
    }
    if (sb_hconn_parse_url(p->url, host, sizeof(host), &port, &path) == 0) {
        struct sb_hconn_opts o;
        memset(&o, 0, sizeof(o));
        o.max_conns = p->max_inflight;
        o.max_queue = SMS_QUEUE_MAX;
        o.max_body = SMS_RESP_MAX;
        o.connect_timeout_ms = p->timeout_ms;
        p->pool = sb_hconn_pool_new(d->loop, host, port, &o);
        if (!p->pool) {
            free(path);
            SB_ERR(SMS_PLACE, "provider %s: bad url", name);
            return -1;
        }
        /* hconn wants the origin-form; "/" alone means none for Twilio */
        if (p->type == SMS_TWILIO && strcmp(path, "/") == 0)
            path[0] = '\0';
        p->path = path;
    }
    return 0;
}

static void prov_free(struct sms_prov *p)
{
    free(p->name);
    free(p->url);
    free(p->user);
    if (p->pass)
        sodium_memzero(p->pass, strlen(p->pass));
    free(p->pass);
    free(p->from);
    if (p->secret)
        sodium_memzero(p->secret, strlen(p->secret));
    free(p->secret);
    free(p->public_url);
    free_list(p->numbers);
    free_list(p->allow);
    if (p->auth_header)
        sodium_memzero(p->auth_header, strlen(p->auth_header));
    free(p->auth_header);
    if (p->userpwd)
        sodium_memzero(p->userpwd, strlen(p->userpwd));
    free(p->userpwd);
    free(p->path);
}

static void kick_closed(uv_handle_t *h)
{
    struct sms_drv *d = h->data;

    for (size_t i = 0; i < d->nprov; i++)
        prov_free(&d->prov[i]);
    free_list(d->optout);
    free_list(d->optin);
    for (int i = 0; i < 2; i++) {
        free(d->optout_reply[i]);
        free(d->optin_reply[i]);
    }
    free(d);
}

static int sms_start(struct sb_channel *ch, uv_loop_t *loop, const void *conf)
{
    const struct sms_conf *c = conf;
    const struct sb_config *all = ch->config;
    const struct sb_core_conf *core = sb_config_get(all, "core");
    const struct sb_http_conf *http = sb_config_get(all, "http");
    struct sms_drv *d = sb_calloc(1, sizeof(*d));
    size_t n = sb_config_count(all, "sms-provider");
    const char *country = c->default_country && *c->default_country
                              ? c->default_country
                              : core ? core->default_country : NULL;

    d->loop = loop;
    d->max_parts = (size_t)c->max_parts;
    if (country)
        snprintf(d->country, sizeof(d->country), "%s", country);
    d->optout = dup_list(c->optout_words);
    d->optin = dup_list(c->optin_words);
    d->optout_reply[0] = sb_strdup(c->optout_reply_en);
    d->optout_reply[1] = sb_strdup(c->optout_reply_ru);
    d->optin_reply[0] = sb_strdup(c->optin_reply_en);
    d->optin_reply[1] = sb_strdup(c->optin_reply_ru);
    uv_timer_init(loop, &d->kick);
    d->kick.data = d;
    ch->priv = d;

    /* providers in the order [sms] providers names them */
    int listed = c->providers && c->providers[0];

    for (size_t k = 0; listed ? c->providers[k] != NULL : k < n; k++) {
        const char *want = listed ? c->providers[k] : NULL;
        const struct sms_pconf *pc = NULL;
        const char *name = NULL;

        for (size_t i = 0; i < n; i++) {
            const char *nm;
            const void *v = sb_config_nth(all, "sms-provider", i, &nm);
            if (want ? strcmp(nm, want) == 0 : i == k) {
                pc = v;
                name = nm;
                break;
            }
        }
        if (!pc) {
            SB_ERR(SMS_PLACE, "[sms] providers names %s: no such "
                              "[sms-provider] section",
                   want);
            goto fail;
        }
        if (d->nprov == SMS_MAX_PROV) {
            SB_ERR(SMS_PLACE, "more than %d providers", SMS_MAX_PROV);
            goto fail;
        }
        d->prov[d->nprov].idx = (int)d->nprov;
        if (prov_init(d, &d->prov[d->nprov], name, pc,
                      http ? http->public_url : NULL) < 0) {
            d->nprov++;
            goto fail;
        }
        d->nprov++;
    }
    if (d->nprov == 0) {
        SB_ERR(SMS_PLACE, "[sms] without any [sms-provider NAME] section");
        goto fail;
    }
    d->m_sent = sb_metric_counter("sb_sms_sent_total",
                                  "SMS send outcomes by provider",
                                  "provider,result");
    d->m_parts = sb_metric_counter("sb_sms_parts_total",
                                   "SMS parts accepted by each provider (the "
                                   "cost)",
                                   "provider");
    d->m_in = sb_metric_counter("sb_sms_received_total",
                                "Inbound SMS by provider and kind",
                                "provider,kind");
    d->m_rejected = sb_metric_counter(
        "sb_sms_webhook_rejected_total",
        "Provider callbacks refused (authentication or bad input)",
        "provider,reason");
    d->m_reports = sb_metric_counter("sb_sms_reports_total",
                                     "Delivery reports by provider and state",
                                     "provider,state");
    d->m_failover = sb_metric_counter(
        "sb_sms_failover_total",
        "Sends moved to the next provider after a temporary failure",
        "provider");
    if (!sms_global)
        sb_metric_gauge_fn("sb_sms_inflight", "SMS requests in flight",
                           live_ops, NULL);
    sms_global = d;
    for (size_t i = 0; i < d->nprov; i++)
        SB_NOTICE(SMS_PLACE, "provider %s type=%s transport=%s rate=%g "
                             "max_inflight=%zu",
                  d->prov[i].name, sms_types[d->prov[i].type],
                  d->prov[i].pool ? "hconn" : "httpc", d->prov[i].rate,
                  d->prov[i].max_inflight);
    return 0;
fail:
    for (size_t i = 0; i < d->nprov; i++)
        sb_hconn_pool_close(d->prov[i].pool);
    ch->priv = NULL;
    uv_close((uv_handle_t *)&d->kick, kick_closed);
    return -1;
}

static void sms_stop(struct sb_channel *ch)
{
    struct sms_drv *d = ch->priv;
    struct sb_list_node *n;

    if (!d)
        return;
    d->stopping = 1;
    while ((n = sb_list_pop_front(&d->done_q)))
        op_complete(sb_container_of(n, struct sms_op, link));
    for (size_t i = 0; i < d->nprov; i++) {
        struct sms_prov *p = &d->prov[i];
        while ((n = sb_list_pop_front(&p->wait))) {
            struct sms_op *op = sb_container_of(n, struct sms_op, link);
            op->st = SB_SEND_CANCELLED;
            snprintf(op->reason, sizeof(op->reason), "stopped");
            op_complete(op);
        }
    }
    /* hconn requests end now with ECANCELLED (completing CANCELLED) */
    for (size_t i = 0; i < d->nprov; i++) {
        sb_hconn_pool_close(d->prov[i].pool);
        d->prov[i].pool = NULL;
    }
    /* httpc ones cannot be aborted: tell the caller, detach the op */
    while ((n = sb_list_pop_front(&d->live))) {
        struct sms_op *op = sb_container_of(n, struct sms_op, link);
        struct sb_send_result r;
        memset(&r, 0, sizeof(r));
        r.status = SB_SEND_CANCELLED;
        r.reason = "stopped";
        r.retry_after_ms = -1;
        if (op->done)
            op->done(op->msg, &r);
        op->done = NULL;
        op->d = NULL;
    }
    if (sms_global == d)
        sms_global = NULL;
    ch->priv = NULL;
    uv_close((uv_handle_t *)&d->kick, kick_closed);
}

/* ---- inbound ----------------------------------------------------------- */

struct sms_in {
    struct sms_drv *d;
    struct sms_prov *p;
    struct sb_http_req *req;
    char from[SB_PHONE_MAX + 1];
    char *to;       /* our number as the provider gave it */
    int word;       /* 0 message, 1 opt-out, 2 opt-in */
    int ru;         /* the word was Cyrillic */
    char *locale;
};

static void in_free(struct sms_in *in)
{
    free(in->to);
    free(in->locale);
    free(in);
}

static void reject(struct sms_drv *d, struct sms_prov *p,
                   struct sb_http_req *req, int status, const char *reason,
                   const char *msg)
{
    sb_metric_add(d->m_rejected, 1, p ? p->name : "-", reason);
    SB_WARN(SMS_PLACE, "callback refused provider=%s peer=%s status=%d "
                       "reason=%s",
            p ? p->name : "-", req->peer, status, reason);
    sb_http_respond_error(req, status, msg, NULL);
}

static void answer_ok(struct sms_prov *p, struct sb_http_req *req)
{
    if (p->type == SMS_TWILIO) {
        static const char twiml[] =
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>";
        sb_http_respond(req, 200, "text/xml", twiml, sizeof(twiml) - 1);
    } else {
        sb_http_respond(req, 200, "text/plain", "", 0);
    }
}

/* Strip "::ffff:" from an IPv4-mapped address. */
static const char *peer_addr(const char *peer)
{
    if (strncmp(peer, "::ffff:", 7) == 0 && strchr(peer + 7, '.'))
        return peer + 7;
    return peer;
}

/* Kannel: the secret and the source address. 0 ok, else responded. */
static int auth_kannel(struct sms_drv *d, struct sms_prov *p,
                       struct sb_http_req *req)
{
    char *s = sb_http_query(req, "secret");
    const char *peer = peer_addr(req->peer);
    int ok = 0;

    for (size_t i = 0; p->allow && p->allow[i]; i++)
        if (strcmp(p->allow[i], peer) == 0)
            ok = 1;
    if (!ok) {
        free(s);
        reject(d, p, req, 403, "address", "source address not allowed");
        return -1;
    }
    if (!s || !sb_secret_eq(s, p->secret)) {
        free(s);
        reject(d, p, req, 403, "secret", "bad or missing secret");
        return -1;
    }
    free(s);
    return 0;
}

/* Twilio: X-Twilio-Signature over public_url + path (+ query) and the
 * POST fields. 0 ok, else responded. */
static int auth_twilio(struct sms_drv *d, struct sms_prov *p,
                       struct sb_http_req *req, const struct sb_form *f)
{
    char *sig = sb_http_header(req, "X-Twilio-Signature");
    struct sb_buf url;
    int ok;

    sb_buf_init(&url, 0);
    sb_buf_appends(&url, p->public_url);
    sb_buf_appends(&url, req->path);
    for (int i = 0; i < req->nqargs; i++) {
        const char *a = req->qargs[i], *eq = strchr(a, '=');
        char *name = eq ? sb_strndup(a, (size_t)(eq - a)) : sb_strdup(a);
        sb_buf_appends(&url, i == 0 ? "?" : "&");
        url_enc(&url, name);
        if (eq) {
            sb_buf_appends(&url, "=");
            url_enc(&url, eq + 1);
        }
        free(name);
    }
    ok = sb_twilio_verify(p->pass, url.data ? url.data : "",
                          (const char *const *)f->names,
                          (const char *const *)f->values, f->n, sig);
    sb_buf_free(&url);
    if (!ok) {
        reject(d, p, req, 403, sig ? "signature" : "no_signature",
               sig ? "bad signature" : "missing X-Twilio-Signature");
        free(sig);
        return -1;
    }
    free(sig);
    return 0;
}

/* Lower-case one code point (ASCII and Cyrillic). */
static uint32_t fold(uint32_t c)
{
    if (c >= 'A' && c <= 'Z')
        return c + 32;
    if (c >= 0x410 && c <= 0x42F)
        return c + 0x20;
    if (c >= 0x400 && c <= 0x40F)
        return c + 0x50;
    return c;
}

/* 1 when a and b (UTF-8) are the same word ignoring case and, in a, the
 * surrounding spaces and a final '.' or '!'. */
static int word_eq(const char *a, size_t an, const char *b)
{
    size_t bn = strlen(b), i = 0, j = 0;

    while (an && (isspace((unsigned char)*a))) {
        a++;
        an--;
    }
    while (an && (isspace((unsigned char)a[an - 1]) || a[an - 1] == '.' ||
                  a[an - 1] == '!'))
        an--;
    if (an == 0)
        return 0;
    while (i < an && j < bn) {
        uint32_t x, y;
        size_t k = sb_utf8_seq(a + i, an - i, &x);
        size_t l = sb_utf8_seq(b + j, bn - j, &y);
        if (!k || !l || fold(x) != fold(y))
            return 0;
        i += k;
        j += l;
    }
    return i == an && j == bn;
}

static int word_match(char **words, const char *text, size_t len)
{
    for (size_t i = 0; words && words[i]; i++)
        if (word_eq(text, len, words[i]))
            return 1;
    return 0;
}

static int has_cyrillic(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        uint32_t c;
        size_t k = sb_utf8_seq(s + i, n - i, &c);
        if (!k)
            return 0;
        if (c >= 0x400 && c <= 0x4FF)
            return 1;
        i += k;
    }
    return 0;
}

static void on_prefs(enum sb_store_status st, json_t *res, const char *err,
                     void *arg)
{
    struct sms_in *in = arg;
    struct sms_drv *d = in->d;

    json_decref(res);
    if (st != SB_STORE_OK) {
        SB_ERR(SMS_PLACE, "opt-%s not recorded provider=%s err=%s",
               in->word == 1 ? "out" : "in", in->p->name, err ? err : "-");
        if (st == SB_STORE_UNAVAILABLE)
            sb_http_add_header(in->req, "Retry-After", "5");
        sb_http_respond_error(in->req, 503, "not recorded, try again", NULL);
        in_free(in);
        return;
    }
    answer_ok(in->p, in->req);
    if (!d->stopping) {
        int ru = in->ru || (in->locale && strcmp(in->locale, "ru") == 0);
        const char *t = in->word == 1 ? d->optout_reply[ru]
                                      : d->optin_reply[ru];
        if (t && *t)
            sms_confirm(d, in->p, in->from, in->to, t);
    }
    in_free(in);
}

static void on_customer(enum sb_store_status st, json_t *cust,
                        const char *err, void *arg);

static void on_ingested(enum sb_store_status st,
                        const struct sb_contact_result *res, const char *err,
                        void *arg)
{
    struct sms_in *in = arg;

    if (st != SB_STORE_OK) {
        if (st == SB_STORE_INVALID) {
            sb_metric_add(in->d->m_rejected, 1, in->p->name, "invalid");
            sb_http_respond_error(in->req, 400, err ? err : "invalid", NULL);
        } else {
            sb_http_add_header(in->req, "Retry-After", "5");
            sb_http_respond_error(in->req, 503, "store unavailable", NULL);
        }
        in_free(in);
        return;
    }
    sb_api_route_after_ingest(res);
    if (in->word && !res->duplicate) {
        /* the customer's locale picks the confirmation's language */
        if (sb_customer_get(res->customer_id, on_customer, in) == 0)
            return;
        sb_http_add_header(in->req, "Retry-After", "5");
        sb_http_respond_error(in->req, 503, "store unavailable", NULL);
        in_free(in);
        return;
    }
    answer_ok(in->p, in->req);
    in_free(in);
}

static void on_customer(enum sb_store_status st, json_t *cust,
                        const char *err, void *arg)
{
    struct sms_in *in = arg;
    const char *id = json_string_value(json_object_get(cust, "id"));
    const char *loc = json_string_value(json_object_get(cust, "locale"));
    json_t *patch;
    char src[64];
    int rc;

    if (st != SB_STORE_OK || !id) {
        json_decref(cust);
        on_prefs(st == SB_STORE_OK ? SB_STORE_UNAVAILABLE : st, NULL, err,
                 in);
        return;
    }
    in->locale = loc ? sb_strdup(loc) : NULL;
    snprintf(src, sizeof(src), "sms:%s", in->from);
    if (in->word == 1)
        patch = json_pack("{s:{s:{s:{s:s, s:s}}}}", "preferences", "opt_out",
                          "sms", "source", src, "provider", in->p->name);
    else
        patch = json_pack("{s:{s:{s:b}}}", "preferences", "opt_in", "sms", 1);
    rc = sb_customer_update(id, patch, on_prefs, in);
    json_decref(patch);
    json_decref(cust);
    if (rc < 0)
        on_prefs(SB_STORE_UNAVAILABLE, NULL, "redis unavailable", in);
}

/* Hand one inbound message to the store. text is UTF-8 (len bytes).
 * source_id: the dedupe key. ts_ms 0 = now. */
static void ingest(struct sms_drv *d, struct sms_prov *p,
                   struct sb_http_req *req, const char *from_raw,
                   const char *to, const char *text, size_t len,
                   const char *source_id, const char *provider_id,
                   int64_t ts_ms)
{
    struct sms_in *in;
    struct sb_contact_in c;
    const char *why = NULL;
    char fields[512];
    struct sb_buf vb;
    json_t *f;
    char *fj;

    in = sb_calloc(1, sizeof(*in));
    if (!from_raw || sb_phone_normalize(from_raw, d->country, in->from,
                                        sizeof(in->from), &why) < 0) {
        free(in);
        reject(d, p, req, 400, "sender", "sender is not a phone number");
        return;
    }
    in->d = d;
    in->p = p;
    in->req = req;
    in->to = sb_strdup(to && *to ? to : p->from);
    if (word_match(d->optout, text, len))
        in->word = 1;
    else if (word_match(d->optin, text, len))
        in->word = 2;
    in->ru = in->word && has_cyrillic(text, len);
    sb_buf_init(&vb, 0);
    sb_buf_printf(&vb, "%s|%s", p->name, in->to);
    f = json_pack("{s:s, s:s, s:s}", "via", vb.data, "provider", p->name,
                  "to", in->to);
    sb_buf_free(&vb);
    fj = json_dumps(f, JSON_COMPACT);
    json_decref(f);
    snprintf(fields, sizeof(fields), "%s", fj ? fj : "{}");
    free(fj);

    memset(&c, 0, sizeof(c));
    c.channel = "sms";
    c.direction = "in";
    c.type = in->word == 1 ? "opt_out" : in->word == 2 ? "opt_in" : "message";
    c.ids[0].type = "phone";
    c.ids[0].value = in->from;
    c.nids = 1;
    c.conversation = in->word ? "none" : NULL;
    c.text = text;
    c.text_len = len;
    c.source_id = source_id;
    c.provider_id = provider_id;
    c.fields_json = fields;
    c.ts_ms = ts_ms;
    sb_metric_add(d->m_in, 1, p->name, c.type);
    if (sb_contact_ingest(&c, on_ingested, in) < 0) {
        sb_http_add_header(req, "Retry-After", "5");
        sb_http_respond_error(req, 503, "store unavailable", NULL);
        in_free(in);
    }
}

/* "YYYY-MM-DD HH:MM:SS" (UTC, Kannel's %t) or unix seconds -> ms; 0. */
static int64_t kannel_time(const char *t, const char *ts)
{
    long long v;
    struct tm tm;

    if (ts && sb_parse_ll(ts, &v) == 0 && v > 0 && v < 100000000000LL)
        return (int64_t)v * 1000;
    memset(&tm, 0, sizeof(tm));
    if (t && sscanf(t, "%d-%d-%d %d:%d:%d", &tm.tm_year, &tm.tm_mon,
                    &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec) == 6) {
        time_t s;
        tm.tm_year -= 1900;
        tm.tm_mon -= 1;
        s = timegm(&tm);
        if (s > 0)
            return (int64_t)s * 1000;
    }
    return 0;
}

/* The charset= parameter of a Content-Type, copied into out. */
static void ctype_charset(const char *ct, char *out, size_t outlen)
{
    const char *c = ct ? strcasestr(ct, "charset=") : NULL;
    size_t n = 0;

    out[0] = '\0';
    if (!c)
        return;
    c += 8;
    if (*c == '"')
        c++;
    while (c[n] && c[n] != '"' && c[n] != ';' && c[n] != ' ' &&
           n + 1 < outlen)
        n++;
    memcpy(out, c, n);
    out[n] = '\0';
}

static void kannel_mo(struct sms_drv *d, struct sms_prov *p,
                      struct sb_http_req *req)
{
    char *from = sb_http_query(req, "from"), *to = sb_http_query(req, "to");
    char *time_s = sb_http_query(req, "time"), *ts = sb_http_query(req, "ts");
    char *coding_s = sb_http_query(req, "coding");
    char *charset = sb_http_query(req, "charset");
    char *qtext = NULL, *text = NULL;
    const char *body = req->body.data;
    size_t blen = req->body.len, tlen = 0;
    char cs[40];
    long long coding = -1;
    const char *why = NULL;
    struct sb_form form = {0};
    int is_form = req->content_type &&
                  strncasecmp(req->content_type,
                              "application/x-www-form-urlencoded", 33) == 0;

    if (is_form) {
        /* get-url style fields in a form body */
        if (sb_form_parse(body ? body : "", blen, 0, 0, &form, &why) < 0) {
            reject(d, p, req, 400, "form", why);
            goto out;
        }
#define FORM_OR(v, name)                                                     \
    if (!v && sb_form_get(&form, name, NULL))                                \
        v = sb_strdup(sb_form_get(&form, name, NULL));
        FORM_OR(from, "from")
        FORM_OR(to, "to")
        FORM_OR(time_s, "time")
        FORM_OR(ts, "ts")
        FORM_OR(coding_s, "coding")
        FORM_OR(charset, "charset")
#undef FORM_OR
        body = sb_form_get(&form, "text", &blen);
        if (!body)
            blen = 0;
    }
    if (coding_s && sb_parse_ll(coding_s, &coding) < 0)
        coding = -1;
    ctype_charset(is_form ? NULL : req->content_type, cs, sizeof(cs));
    if (!cs[0] && charset)
        snprintf(cs, sizeof(cs), "%s", charset);
    if (req->method == SB_GET || !body || blen == 0) {
        /* get-url: the text is a query argument */
        qtext = sb_http_query(req, "text");
        body = qtext ? qtext : "";
        blen = strlen(body);
    }
    if (sb_sms_decode((int)coding, cs, body, blen, &text, &tlen, &why) < 0) {
        reject(d, p, req, 400, "text", why);
        goto out;
    }
    {
        /* Kannel gives no stable id: the same from/to/text/time is the
         * same message (a retried post-url) */
        unsigned char h[SB_SHA1_LEN];
        char src[64];
        struct sb_buf k;
        sb_buf_init(&k, 0);
        sb_buf_printf(&k, "%s", from ? from : "");
        sb_buf_append(&k, "\0", 1);
        sb_buf_printf(&k, "%s", to ? to : "");
        sb_buf_append(&k, "\0", 1);
        sb_buf_append(&k, text, tlen);
        sb_buf_append(&k, "\0", 1);
        sb_buf_printf(&k, "%s", time_s ? time_s : ts ? ts : "");
        sb_sha1(k.data, k.len, h);
        sb_buf_free(&k);
        snprintf(src, sizeof(src), "%s:", p->name);
        for (int i = 0; i < 12; i++)
            snprintf(src + strlen(src), 3, "%02x", h[i]);
        ingest(d, p, req, from, to, text, tlen, src, NULL,
               kannel_time(time_s, ts));
    }
out:
    sb_form_free(&form);
    free(from);
    free(to);
    free(time_s);
    free(ts);
    free(coding_s);
    free(charset);
    free(qtext);
    free(text);
}

struct sms_rep {
    struct sms_drv *d;
    struct sms_prov *p;
    struct sb_http_req *req;
    char *attempt;
};

static void on_reported(enum sb_store_status st, json_t *res, const char *err,
                        void *arg)
{
    struct sms_rep *r = arg;

    json_decref(res);
    if (st == SB_STORE_UNAVAILABLE) {
        sb_http_add_header(r->req, "Retry-After", "5");
        sb_http_respond_error(r->req, 503, "store unavailable", NULL);
    } else {
        if (st != SB_STORE_OK)
            SB_INFO(SMS_PLACE, "report for no known attempt provider=%s "
                               "attempt=%s err=%s",
                    r->p->name, r->attempt, err ? err : "-");
        answer_ok(r->p, r->req);
    }
    free(r->attempt);
    free(r);
}

/* A delivery report for attempt a in state s (reason may be NULL). */
static void report(struct sms_drv *d, struct sms_prov *p,
                   struct sb_http_req *req, const char *a,
                   enum sb_dlr_state s, const char *reason)
{
    struct sms_rep *r;

    sb_metric_add(d->m_reports, 1, p->name, sb_dlr_name(s));
    /* replies' ids are not notification attempts: nothing to update */
    if (s == SB_DLR_NONE || !a || strncmp(a, "nt_", 3) != 0) {
        answer_ok(p, req);
        return;
    }
    r = sb_calloc(1, sizeof(*r));
    r->d = d;
    r->p = p;
    r->req = req;
    r->attempt = sb_strdup(a);
    if (sb_notify_report(a, sb_dlr_name(s), reason, on_reported, r) < 0) {
        free(r->attempt);
        free(r);
        sb_http_add_header(req, "Retry-After", "5");
        sb_http_respond_error(req, 503, "store unavailable", NULL);
    }
}

static void kannel_dlr(struct sms_drv *d, struct sms_prov *p,
                       struct sb_http_req *req)
{
    char *a = sb_http_query(req, "a"), *st = sb_http_query(req, "d");
    char *reply = sb_http_query(req, "A");
    char reason[160];

    snprintf(reason, sizeof(reason), "kannel %s%s%.120s", st ? st : "?",
             reply && *reply ? " " : "", reply ? reply : "");
    report(d, p, req, a, sb_dlr_from_kannel(st), reason);
    free(a);
    free(st);
    free(reply);
}

static void twilio_in(struct sms_drv *d, struct sms_prov *p,
                      struct sb_http_req *req, const char *what)
{
    struct sb_form f = {0};
    const char *why = NULL;

    if (req->method != SB_POST) {
        reject(d, p, req, 405, "method", "POST only");
        return;
    }
    if (sb_form_parse(req->body.data ? req->body.data : "", req->body.len, 0,
                      0, &f, &why) < 0) {
        reject(d, p, req, 400, "form", why);
        return;
    }
    if (auth_twilio(d, p, req, &f) < 0) {
        sb_form_free(&f);
        return;
    }
    if (what) { /* status callback */
        char *a = sb_http_query(req, "a");
        const char *status = sb_form_get(&f, "MessageStatus", NULL);
        const char *code = sb_form_get(&f, "ErrorCode", NULL);
        char reason[128];
        if (!status)
            status = sb_form_get(&f, "SmsStatus", NULL);
        snprintf(reason, sizeof(reason), "twilio %s%s%s",
                 status ? status : "?", code && *code ? " error " : "",
                 code ? code : "");
        report(d, p, req, a, sb_dlr_from_twilio(status), reason);
        free(a);
    } else {
        size_t blen = 0;
        const char *body = sb_form_get(&f, "Body", &blen);
        const char *sid = sb_form_get(&f, "MessageSid", NULL);
        char src[96];
        if (!sid || !*sid)
            sid = sb_form_get(&f, "SmsSid", NULL);
        if (!sid || !*sid || strlen(sid) > 64) {
            reject(d, p, req, 400, "sid", "MessageSid is missing");
        } else if (!body || !sb_utf8_valid(body, blen) ||
                   memchr(body, 0, blen)) {
            reject(d, p, req, 400, "text", "Body is missing or not UTF-8");
        } else {
            snprintf(src, sizeof(src), "%s:%s", p->name, sid);
            ingest(d, p, req, sb_form_get(&f, "From", NULL),
                   sb_form_get(&f, "To", NULL), body, blen, src, sid, 0);
        }
    }
    sb_form_free(&f);
}

static void sms_webhook(struct sb_channel *ch, struct sb_http_req *req)
{
    struct sms_drv *d = ch->priv;
    const char *name = req->params[1], *what = req->params[2];
    struct sms_prov *p = d ? prov_by_name(d, name, strlen(name)) : NULL;

    if (!p) {
        sb_http_respond_error(req, 404, "no such SMS provider", NULL);
        return;
    }
    if (p->type == SMS_KANNEL) {
        if (what && strcmp(what, "dlr") != 0) {
            sb_http_respond_error(req, 404, "no such callback", NULL);
            return;
        }
        if (auth_kannel(d, p, req) < 0)
            return;
        if (what)
            kannel_dlr(d, p, req);
        else
            kannel_mo(d, p, req);
        return;
    }
    if (what && strcmp(what, "status") != 0) {
        sb_http_respond_error(req, 404, "no such callback", NULL);
        return;
    }
    twilio_in(d, p, req, what);
}

const struct sb_channel_ops sb_chan_sms = {
    .name = "sms",
    .conf = &sms_section,
    .more_conf = sms_more,
    .start = sms_start,
    .send = sms_send,
    .stop = sms_stop,
    .reload = NULL,
    .flags = SB_CHAN_REPORTS,
    .webhook = sms_webhook,
};
