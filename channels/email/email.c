/* email.c - the e-mail channel: IMAP in, SMTP out.
 *
 * Inbound, each [mailbox NAME] has an IMAP poller (imap.c) that hands raw
 * messages to the core's mailin.h (parse, quarantine, threading, the
 * contact log). Outbound, send() builds the message (smtp.h's
 * sb_mail_build: MIME, RFC 2047, header injection refused) and queues it
 * on the SMTP client, whose own threads send several messages per session
 * through the relay.
 *
 * What a message looks like depends on what it is:
 *  - a notification (id "nt_<n>.<k>"): From [email] from, the rendered
 *    subject, text and HTML, Message-ID "<id>.<random>@domain" (a bounce
 *    names it, which is how mailin finds the attempt), List-Unsubscribe
 *    with a one-click link (RFC 8058) that records an e-mail opt-out, and
 *    Auto-Submitted: auto-generated;
 *  - a reply (a conversation's "via", written by mailin: the mailbox, our
 *    address the customer wrote to, their Message-ID, References and
 *    subject): From that address, "Re: subject [#cv_N]", In-Reply-To and
 *    References so the customer's mail program threads it, Message-ID
 *    "reply.<conv>.<random>@domain" (the provider id: ingest remembers it
 *    so the customer's next reply finds the conversation).
 *
 * The unsubscribe link is /webhooks/email/unsubscribe/<customer>.<mac>,
 * mac = the first 32 hex digits of HMAC-SHA256(unsubscribe_secret,
 * customer): GET shows a confirmation form, POST (the form, or a mail
 * program's one-click POST) records the opt-out.
 */
#include "channel.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "email_int.h"
#include "http.h"
#include "list.h"
#include "log.h"
#include "mailin.h"
#include "metrics.h"
#include "normalize.h"
#include "smtp.h"
#include "store.h"
#include "util.h"

#define EM_PLACE "chan.email"
#define EM_MAX_MBOX 16

static const char *const em_tls_names[] = {"none", "try", "require", NULL};

struct em_conf {
    char *from;
    char *from_name;
    char *domain;
    char *unsubscribe_secret;
    char *public_url;
    char *smtp_host;
    long long smtp_port;
    int smtp_tls;
    int smtp_verify;
    char *smtp_ca_file;
    char *smtp_user;
    char *smtp_password;
    char *smtp_helo;
    long long smtp_timeout;
    long long smtp_threads;
    long long smtp_per_session;
    struct sb_mailin_conf in;
};

static int em_check(void *conf, char *err, size_t errlen)
{
    struct em_conf *c = conf;
    char buf[SB_EMAIL_MAX + 1];
    const char *why;

    if (!c->from && !c->smtp_host)
        return 0; /* the section is not written: the driver stays off */
    if (!c->from || sb_email_normalize(c->from, buf, sizeof(buf), &why) < 0) {
        snprintf(err, errlen, "from must be an e-mail address");
        return -1;
    }
    if (!c->smtp_host) {
        snprintf(err, errlen, "smtp_host is required");
        return -1;
    }
    if (!c->unsubscribe_secret || strlen(c->unsubscribe_secret) < 16) {
        snprintf(err, errlen, "unsubscribe_secret (16 bytes or more) is "
                              "required: it signs the unsubscribe links");
        return -1;
    }
    if (c->from_name && strpbrk(c->from_name, "\r\n")) {
        snprintf(err, errlen, "from_name must be one line");
        return -1;
    }
    return 0;
}

#define E(f) offsetof(struct em_conf, f)
static const struct sb_conf_key em_keys[] = {
    {"from", SB_CONF_STR, E(from), NULL, 0, 254, NULL, 0,
     "sender address of notifications (and of replies when a mailbox has "
     "no address)"},
    {"from_name", SB_CONF_STR, E(from_name), NULL, 0, 200, NULL, 0,
     "display name with it"},
    {"domain", SB_CONF_STR, E(domain), NULL, 0, 253, NULL, 0,
     "right-hand side of our Message-IDs (default: from's domain)"},
    {"unsubscribe_secret", SB_CONF_STR, E(unsubscribe_secret), NULL, 0, 256,
     NULL, SB_CONF_SECRET, "HMAC key of the List-Unsubscribe links"},
    {"public_url", SB_CONF_STR, E(public_url), NULL, 0, 2048, NULL, 0,
     "base of the unsubscribe links ([http] public_url when unset)"},
    {"smtp_host", SB_CONF_STR, E(smtp_host), NULL, 0, 253, NULL, 0,
     "the relay"},
    {"smtp_port", SB_CONF_INT, E(smtp_port), "587", 1, 65535, NULL, 0,
     "its port"},
    {"smtp_tls", SB_CONF_ENUM, E(smtp_tls), "require", 0, 0, em_tls_names, 0,
     "STARTTLS: none, try (when offered) or require"},
    {"smtp_verify", SB_CONF_BOOL, E(smtp_verify), "yes", 0, 0, NULL, 0,
     "verify the relay's certificate and name"},
    {"smtp_ca_file", SB_CONF_STR, E(smtp_ca_file), NULL, 0, 4096, NULL, 0,
     "PEM bundle to verify with (default: the system store)"},
    {"smtp_user", SB_CONF_STR, E(smtp_user), NULL, 0, 256, NULL, 0,
     "AUTH user (none when unset)"},
    {"smtp_password", SB_CONF_STR, E(smtp_password), NULL, 0, 256, NULL,
     SB_CONF_SECRET, "AUTH password"},
    {"smtp_helo", SB_CONF_STR, E(smtp_helo), NULL, 0, 253, NULL, 0,
     "EHLO name (default: the host name)"},
    {"smtp_timeout", SB_CONF_DURATION, E(smtp_timeout), "30s", 100, 600000,
     NULL, 0, "each SMTP command (libesmtp's RFC minimums overridden)"},
    {"smtp_threads", SB_CONF_INT, E(smtp_threads), "2", 1, 64, NULL, 0,
     "SMTP sessions at once (threads of their own)"},
    {"smtp_per_session", SB_CONF_INT, E(smtp_per_session), "100", 1, 10000,
     NULL, 0, "messages sent in one SMTP session"},
    {"max_size", SB_CONF_SIZE, E(in.max_size), "25M", 1024, 1LL << 30, NULL,
     0, "inbound: larger messages are quarantined without being fetched"},
    {"max_header", SB_CONF_SIZE, E(in.max_header), "64k", 1024, 16 << 20,
     NULL, 0, "inbound: one header field"},
    {"max_depth", SB_CONF_INT, E(in.max_depth), "20", 1, 100, NULL, 0,
     "inbound: MIME nesting"},
    {"max_parts", SB_CONF_INT, E(in.max_parts), "500", 1, 100000, NULL, 0,
     "inbound: MIME parts"},
    {"max_attachment", SB_CONF_SIZE, E(in.max_attachment), "10M", 0,
     1LL << 30, NULL, 0,
     "inbound: attachment content kept in Redis (larger: metadata only)"},
    {"max_text", SB_CONF_SIZE, E(in.max_text), "1M", 1024, 64 << 20, NULL, 0,
     "inbound: text kept in the contact log"},
    {"fallback_charsets", SB_CONF_LIST, E(in.fallback_charsets),
     "utf-8, windows-1251, koi8-r", 0, 64, NULL, 0,
     "inbound: tried in order for undeclared 8-bit text"},
    {"blob_ttl", SB_CONF_DURATION, E(in.blob_ttl), "90d", 60000,
     3650LL * 86400000, NULL, 0,
     "inbound: how long HTML bodies and attachments are kept"},
    {NULL, 0, 0, NULL, 0, 0, NULL, 0, NULL},
};
#undef E

static const struct sb_conf_section em_section = {
    "email", 0, sizeof(struct em_conf), em_keys,
    "The e-mail channel: [mailbox NAME] sections are polled over IMAP,\n"
    "mail goes out through smtp_host. See docs/email.md.",
    em_check,
};

static const struct sb_conf_section *const em_more[] = {&em_mbox_section,
                                                        NULL};

/* ---- state ------------------------------------------------------------- */

struct em_op {
    struct sb_list_node link;
    struct em_drv *d;         /* NULL once detached at stop */
    struct sb_outmsg *msg;
    sb_send_done *done;
    char msgid[256];
    enum sb_send_status st;
    char reason[256];
};

struct em_drv {
    uv_loop_t *loop;
    struct sb_smtp *smtp;
    struct em_mbox *mbox[EM_MAX_MBOX];
    size_t nmbox;
    char *from, *from_name, *domain, *public_url;
    unsigned char unsub_key[crypto_auth_hmacsha256_KEYBYTES];
    uv_timer_t kick;
    struct sb_list done_q; /* refused before SMTP: completed from kick */
    struct sb_list live;   /* with the SMTP client */
    struct sb_metric *m_sent, *m_unsub;
};

/* ---- helpers ----------------------------------------------------------- */

static void em_token(struct em_drv *d, const char *cust, char out[33])
{
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    static const char hex[] = "0123456789abcdef";

    crypto_auth_hmacsha256(mac, (const unsigned char *)cust, strlen(cust),
                           d->unsub_key);
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hex[mac[i] >> 4];
        out[2 * i + 1] = hex[mac[i] & 15];
    }
    out[32] = '\0';
}

static void em_random(char out[17])
{
    static const char al[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    for (int i = 0; i < 16; i++)
        out[i] = al[randombytes_uniform(sizeof(al) - 1)];
    out[16] = '\0';
}

static void kick_cb(uv_timer_t *t)
{
    struct em_drv *d = t->data;
    struct sb_list_node *n;

    while ((n = sb_list_pop_front(&d->done_q))) {
        struct em_op *op = sb_container_of(n, struct em_op, link);
        struct sb_send_result r;
        memset(&r, 0, sizeof(r));
        r.status = op->st;
        r.reason = op->reason;
        r.retry_after_ms = -1;
        op->done(op->msg, &r);
        free(op);
    }
}

static void op_defer(struct em_op *op, enum sb_send_status st,
                     const char *reason)
{
    op->st = st;
    snprintf(op->reason, sizeof(op->reason), "%s", reason);
    sb_list_push_back(&op->d->done_q, &op->link);
    uv_timer_start(&op->d->kick, kick_cb, 0, 0);
}

static void on_smtp(const struct sb_smtp_result *r, void *arg)
{
    struct em_op *op = arg;
    struct sb_send_result res;
    static const char *const names[] = {"ok", "tempfail", "permfail",
                                        "cancelled"};

    if (!op->d) { /* stopped meanwhile: the caller was told */
        free(op);
        return;
    }
    sb_list_remove(&op->d->live, &op->link);
    memset(&res, 0, sizeof(res));
    res.status = r->status == SB_SMTP_OK         ? SB_SEND_OK
                 : r->status == SB_SMTP_TEMPFAIL ? SB_SEND_TEMPFAIL
                 : r->status == SB_SMTP_PERMFAIL ? SB_SEND_PERMFAIL
                                                 : SB_SEND_CANCELLED;
    if (r->code && !(r->reason && r->reason[0] >= '0' && r->reason[0] <= '9'))
        snprintf(op->reason, sizeof(op->reason), "smtp %d %s", r->code,
                 r->reason ? r->reason : "");
    else
        snprintf(op->reason, sizeof(op->reason), "smtp: %s",
                 r->reason ? r->reason : "-");
    res.reason = op->reason;
    res.provider_id = op->msgid;
    res.retry_after_ms = -1;
    sb_metric_add(op->d->m_sent, 1, names[res.status]);
    op->done(op->msg, &res);
    free(op);
}

/* ---- send -------------------------------------------------------------- */

/* A reply's subject: "Re: " once, and the conversation's tag once. */
static char *reply_subject(const char *subj, const char *conv)
{
    const char *s = subj ? subj : "";
    char tag[64];

    while (*s == ' ')
        s++;
    snprintf(tag, sizeof(tag), "[#%s]", conv ? conv : "");
    return sb_asprintf("%s%s%s%s",
                       strncasecmp(s, "re:", 3) == 0 ? "" : "Re: ", s,
                       conv && !strstr(s, tag) ? " " : "",
                       conv && !strstr(s, tag) ? tag : "");
}

static int em_send(struct sb_channel *ch, struct sb_outmsg *msg,
                   sb_send_done *done)
{
    struct em_drv *d = ch->priv;
    struct em_op *op;
    struct sb_mail m;
    struct sb_buf out;
    json_t *via = NULL;
    char rnd[17], to[SB_EMAIL_MAX + 1], unsub[512], tok[33];
    char *subject = NULL, *refs = NULL;
    const char *why = NULL;
    int notification;

    if (!d || !d->smtp)
        return -1;
    op = sb_calloc(1, sizeof(*op));
    op->d = d;
    op->msg = msg;
    op->done = done;
    if (!msg->to || sb_email_normalize(msg->to, to, sizeof(to), &why) < 0) {
        op_defer(op, SB_SEND_PERMFAIL, "not an e-mail address");
        return 0;
    }
    notification = msg->id && strncmp(msg->id, "nt_", 3) == 0;
    em_random(rnd);
    memset(&m, 0, sizeof(m));
    m.from_addr = d->from;
    m.from_name = d->from_name;
    m.to_addr = to;
    m.text = msg->text ? msg->text : "";
    m.html = msg->html;
    if (notification) {
        snprintf(op->msgid, sizeof(op->msgid), "%s.%s@%s", msg->id, rnd,
                 d->domain);
        m.subject = msg->subject;
        m.auto_submitted = "auto-generated";
        if (msg->customer && *msg->customer && d->public_url) {
            em_token(d, msg->customer, tok);
            snprintf(unsub, sizeof(unsub),
                     "%s/webhooks/email/unsubscribe/%s.%s", d->public_url,
                     msg->customer, tok);
            m.list_unsubscribe = unsub;
            /* RFC 8058: one-click only over https */
            m.list_unsubscribe_post = strncmp(unsub, "https://", 8) == 0;
        }
    } else {
        snprintf(op->msgid, sizeof(op->msgid), "reply.%s.%s@%s",
                 msg->conversation ? msg->conversation : "x", rnd, d->domain);
        if (msg->via) {
            json_error_t je;
            via = json_loads(msg->via, 0, &je);
        }
        {
            const char *vfrom = json_string_value(json_object_get(via, "from"));
            const char *vid = json_string_value(json_object_get(via, "msgid"));
            const char *vrefs = json_string_value(json_object_get(via, "refs"));
            const char *vsubj =
                json_string_value(json_object_get(via, "subject"));
            char buf[SB_EMAIL_MAX + 1];
            if (vfrom && sb_email_normalize(vfrom, buf, sizeof(buf), &why) == 0)
                m.from_addr = vfrom;
            subject = reply_subject(vsubj ? vsubj : msg->subject,
                                    msg->conversation);
            m.subject = subject;
            if (vid && *vid) {
                m.in_reply_to = vid;
                refs = sb_asprintf("%s%s%s", vrefs ? vrefs : "",
                                   vrefs && *vrefs ? " " : "", vid);
                m.references = refs;
            }
        }
    }
    m.message_id = op->msgid;
    sb_buf_init(&out, 0);
    if (sb_mail_build(&m, &out, &why) < 0) {
        char r[160];
        snprintf(r, sizeof(r), "refused: %s", why ? why : "invalid");
        op_defer(op, SB_SEND_PERMFAIL, r);
    } else if (sb_smtp_submit(d->smtp, m.from_addr, to, out.data, out.len,
                              on_smtp, op) < 0) {
        free(op);
        op = NULL;
    } else {
        sb_list_push_back(&d->live, &op->link);
    }
    sb_buf_free(&out);
    json_decref(via);
    free(subject);
    free(refs);
    return op ? 0 : -1;
}

/* ---- unsubscribe ------------------------------------------------------- */

struct em_unsub {
    struct em_drv *d;
    struct sb_http_req *req;
};

static void on_unsubscribed(enum sb_store_status st, json_t *res,
                            const char *err, void *arg)
{
    struct em_unsub *u = arg;
    static const char page[] =
        "<!doctype html><meta charset=utf-8><title>Unsubscribed</title>"
        "<p>You will get no more e-mail notifications from us. / "
        "Вы отписаны от уведомлений по e-mail.</p>";

    json_decref(res);
    if (st == SB_STORE_OK) {
        sb_metric_add(u->d->m_unsub, 1);
        sb_http_respond(u->req, 200, "text/html; charset=utf-8", page,
                        sizeof(page) - 1);
    } else if (st == SB_STORE_NOTFOUND) {
        sb_http_respond_error(u->req, 404, "no such customer", NULL);
    } else {
        sb_http_add_header(u->req, "Retry-After", "5");
        sb_http_respond_error(u->req, 503, err ? err : "try again", NULL);
    }
    free(u);
}

static void em_unsubscribe(struct em_drv *d, struct sb_http_req *req,
                           const char *token)
{
    const char *dot = strrchr(token, '.');
    char cust[64], want[33];
    struct em_unsub *u;
    json_t *patch;
    size_t n;

    if (!dot || (n = (size_t)(dot - token)) == 0 || n >= sizeof(cust)) {
        sb_http_respond_error(req, 404, "no such link", NULL);
        return;
    }
    memcpy(cust, token, n);
    cust[n] = '\0';
    em_token(d, cust, want);
    if (!sb_secret_eq(dot + 1, want)) {
        sb_http_respond_error(req, 403, "bad link", NULL);
        return;
    }
    if (req->method == SB_GET) {
        /* a link scanner must not unsubscribe anybody: a form does */
        struct sb_buf b;
        sb_buf_init(&b, 0);
        sb_buf_printf(&b,
                      "<!doctype html><meta charset=utf-8><title>Unsubscribe"
                      "</title><form method=post action=\"%s\"><p>Stop "
                      "e-mail notifications? / Отписаться от уведомлений по "
                      "e-mail?</p><button>Unsubscribe / Отписаться</button>"
                      "</form>",
                      req->path);
        sb_http_respond(req, 200, "text/html; charset=utf-8", b.data, b.len);
        sb_buf_free(&b);
        return;
    }
    u = sb_calloc(1, sizeof(*u));
    u->d = d;
    u->req = req;
    patch = json_pack("{s:{s:{s:{s:s}}}}", "preferences", "opt_out", "email",
                      "source", "list-unsubscribe");
    if (sb_customer_update(cust, patch, on_unsubscribed, u) < 0) {
        free(u);
        sb_http_add_header(req, "Retry-After", "5");
        sb_http_respond_error(req, 503, "store unavailable", NULL);
    }
    json_decref(patch);
}

static void em_webhook(struct sb_channel *ch, struct sb_http_req *req)
{
    struct em_drv *d = ch->priv;

    if (d && req->params[2] && strcmp(req->params[1], "unsubscribe") == 0) {
        em_unsubscribe(d, req, req->params[2]);
        return;
    }
    sb_http_respond_error(req, 404, "no such webhook", NULL);
}

/* ---- start / stop ------------------------------------------------------ */

static void kick_closed(uv_handle_t *h)
{
    struct em_drv *d = h->data;

    free(d->from);
    free(d->from_name);
    free(d->domain);
    free(d->public_url);
    sodium_memzero(d->unsub_key, sizeof(d->unsub_key));
    free(d);
}

static void em_stop(struct sb_channel *ch);

static int em_start(struct sb_channel *ch, uv_loop_t *loop, const void *conf)
{
    const struct em_conf *c = conf;
    const struct sb_config *all = ch->config;
    const struct sb_http_conf *http = sb_config_get(all, "http");
    struct em_drv *d;
    struct sb_smtp_conf sc;
    size_t n = sb_config_count(all, "mailbox");
    const char *at;

    if (!c->from || !c->smtp_host) {
        SB_ERR(EM_PLACE, "[email] needs from and smtp_host");
        return -1;
    }
    d = sb_calloc(1, sizeof(*d));
    d->loop = loop;
    d->from = sb_strdup(c->from);
    d->from_name = c->from_name ? sb_strdup(c->from_name) : NULL;
    at = strrchr(c->from, '@');
    d->domain = sb_strdup(c->domain ? c->domain : at ? at + 1 : "localhost");
    if (c->public_url || (http && http->public_url)) {
        const char *u = c->public_url ? c->public_url : http->public_url;
        size_t k = strlen(u);
        while (k && u[k - 1] == '/')
            k--;
        d->public_url = sb_strndup(u, k);
    }
    crypto_auth_hmacsha256(d->unsub_key,
                           (const unsigned char *)c->unsubscribe_secret,
                           strlen(c->unsubscribe_secret),
                           (const unsigned char *)"switchboard-unsubscribe-key"
                                                  "-0123456");
    uv_timer_init(loop, &d->kick);
    d->kick.data = d;
    ch->priv = d;

    memset(&sc, 0, sizeof(sc));
    sc.host = c->smtp_host;
    sc.port = (int)c->smtp_port;
    sc.tls = (enum sb_smtp_tls)c->smtp_tls;
    sc.verify_cert = c->smtp_verify;
    sc.ca_file = c->smtp_ca_file;
    sc.user = c->smtp_user;
    sc.password = c->smtp_password;
    sc.helo = c->smtp_helo;
    sc.timeout_ms = (long)c->smtp_timeout;
    sc.threads = (size_t)c->smtp_threads;
    sc.max_per_session = (size_t)c->smtp_per_session;
    d->smtp = sb_smtp_new(loop, &sc);
    if (!d->smtp) {
        SB_ERR(EM_PLACE, "SMTP client not started");
        ch->priv = NULL;
        uv_close((uv_handle_t *)&d->kick, kick_closed);
        return -1;
    }
    sb_mailin_config(&c->in);
    for (size_t i = 0; i < n && d->nmbox < EM_MAX_MBOX; i++) {
        const char *name;
        const struct em_mbox_conf *mc =
            sb_config_nth(all, "mailbox", i, &name);
        struct em_mbox *m =
            em_mbox_start(loop, name, mc, (size_t)c->in.max_size);
        if (!m) {
            em_stop(ch);
            return -1;
        }
        d->mbox[d->nmbox++] = m;
    }
    d->m_sent = sb_metric_counter("sb_email_sent_total",
                                  "Outbound mail by result", "result");
    d->m_unsub = sb_metric_counter("sb_email_unsubscribed_total",
                                   "One-click unsubscribes recorded", NULL);
    SB_NOTICE(EM_PLACE, "relay=%s:%lld tls=%s mailboxes=%zu", c->smtp_host,
              c->smtp_port, em_tls_names[c->smtp_tls], d->nmbox);
    return 0;
}

static void em_stop(struct sb_channel *ch)
{
    struct em_drv *d = ch->priv;
    struct sb_list_node *n;

    if (!d)
        return;
    for (size_t i = 0; i < d->nmbox; i++)
        em_mbox_stop(d->mbox[i]);
    kick_cb(&d->kick);
    /* tell the callers now; the SMTP client's later completions are
     * dropped (rule 5: nothing fires after stop) */
    while ((n = sb_list_pop_front(&d->live))) {
        struct em_op *op = sb_container_of(n, struct em_op, link);
        struct sb_send_result r;
        memset(&r, 0, sizeof(r));
        r.status = SB_SEND_CANCELLED;
        r.reason = "stopped";
        r.retry_after_ms = -1;
        op->done(op->msg, &r);
        op->d = NULL;
    }
    sb_smtp_close(d->smtp);
    ch->priv = NULL;
    uv_close((uv_handle_t *)&d->kick, kick_closed);
}

const struct sb_channel_ops sb_chan_email = {
    .name = "email",
    .conf = &em_section,
    .more_conf = em_more,
    .start = em_start,
    .send = em_send,
    .stop = em_stop,
    .reload = NULL,
    .flags = 0, /* bounces arrive as mail: mailin reports them */
    .webhook = em_webhook,
};
