/* mailin.c - one inbound e-mail, from raw bytes to the contact log
 * (mailin.h).
 *
 * A job walks: parse on the worker pool (sb_mime_parse never touches loop
 * state) -> on the loop, the blobs (HTML, attachments) SET NX with an
 * expiry, one command each, in order -> sb_contact_ingest() -> routing,
 * bounce report -> the caller's completion. Any refusal by Redis on the
 * way completes UNAVAILABLE: the caller keeps the message in its mailbox
 * and tries again later; everything written so far is idempotent (blobs
 * are content-addressed, the contact is keyed by Message-ID).
 */
#include "mailin.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "crypto.h"
#include "log.h"
#include "metrics.h"
#include "mime.h"
#include "normalize.h"
#include "notify.h"
#include "util.h"
#include "worker.h"

#define MI_PLACE "core.mailin"
#define MI_MAX_LIST 50   /* To/Cc/References kept in the contact */
#define MI_FIELDS_MAX 60000

static struct {
    struct sb_redis *redis;
    char *prefix;
    struct sb_mime_limits lim;
    char **charsets;
    long long blob_ttl;
    struct sb_metric *m_in, *m_q;
} MI;

struct mi_job {
    char *raw;
    size_t len;
    char *mailbox, *address;
    unsigned long uid, uidvalidity;
    sb_mailin_cb *cb;
    void *arg;
    char *replay_id;            /* replaying this quarantine entry */
    sb_store_json_cb *jcb;      /* replay's caller */
    void *jarg;
    /* parse */
    struct sb_mime_limits lim;
    struct sb_mime_msg msg;
    int parsed;
    char err[256];
    char raw_sha[SB_HASH_HEX_LEN + 1];
    /* blobs left to store */
    size_t next_blob;
    char from[SB_EMAIL_MAX + 1];
};

static void job_free(struct mi_job *j)
{
    if (j->parsed)
        sb_mime_free(&j->msg);
    free(j->raw);
    free(j->mailbox);
    free(j->address);
    free(j->replay_id);
    free(j);
}

static void finish(struct mi_job *j, enum sb_mailin_status st,
                   const char *contact, const char *qid, int dup,
                   const char *reason)
{
    struct sb_mailin_result r;

    memset(&r, 0, sizeof(r));
    r.status = st;
    if (contact)
        snprintf(r.contact_id, sizeof(r.contact_id), "%s", contact);
    if (qid)
        snprintf(r.quarantine_id, sizeof(r.quarantine_id), "%s", qid);
    r.duplicate = dup;
    r.reason = reason;
    if (j->cb)
        j->cb(&r, j->arg);
    job_free(j);
}

/* ---- config ------------------------------------------------------------ */

void sb_mailin_init(struct sb_redis *r, const char *prefix)
{
    MI.redis = r;
    free(MI.prefix);
    MI.prefix = sb_strdup(prefix);
    sb_mime_limits_default(&MI.lim);
    if (!MI.m_in) {
        MI.m_in = sb_metric_counter("sb_mail_received_total",
                                    "Inbound mail taken into the contact log",
                                    "mailbox,kind");
        MI.m_q = sb_metric_counter("sb_mail_quarantined_total",
                                   "Inbound mail put in the quarantine",
                                   "mailbox");
    }
}

static void free_list(char **l)
{
    for (size_t i = 0; l && l[i]; i++)
        free(l[i]);
    free(l);
}

void sb_mailin_config(const struct sb_mailin_conf *c)
{
    size_t n = 0;

    sb_mime_limits_default(&MI.lim);
    MI.lim.max_size = (size_t)c->max_size;
    MI.lim.max_header = (size_t)c->max_header;
    MI.lim.max_depth = (int)c->max_depth;
    MI.lim.max_parts = (int)c->max_parts;
    MI.lim.max_attachment = (size_t)c->max_attachment;
    MI.lim.max_text = (size_t)c->max_text;
    free_list(MI.charsets);
    while (c->fallback_charsets && c->fallback_charsets[n])
        n++;
    MI.charsets = sb_calloc(n + 1, sizeof(char *));
    for (size_t i = 0; i < n; i++)
        MI.charsets[i] = sb_strdup(c->fallback_charsets[i]);
    MI.lim.fallback_charsets =
        n ? (const char *const *)MI.charsets : NULL;
    MI.blob_ttl = c->blob_ttl;
}

/* ---- quarantine -------------------------------------------------------- */

static void on_q_added(redisReply *rep, const char *err, void *arg)
{
    struct mi_job *j = arg;

    if (err || !rep || rep->type != REDIS_REPLY_STRING) {
        SB_ERR(MI_PLACE, "quarantine write failed mailbox=%s uid=%lu err=%s",
               j->mailbox, j->uid, err ? err : "unexpected reply");
        finish(j, SB_MAILIN_UNAVAILABLE, NULL, NULL, 0, "redis unavailable");
        return;
    }
    sb_metric_add(MI.m_q, 1, j->mailbox);
    SB_WARN(MI_PLACE, "quarantined id=%s mailbox=%s uid=%lu reason=\"%s\"",
            rep->str, j->mailbox, j->uid, j->err);
    finish(j, SB_MAILIN_QUARANTINED, NULL, rep->str, 0, j->err);
}

/* A replay failed again: its entry has the new reason. */
static void on_q_failed(redisReply *rep, const char *err, void *arg)
{
    struct mi_job *j = arg;

    if (err || !rep || rep->type == REDIS_REPLY_ERROR) {
        finish(j, SB_MAILIN_UNAVAILABLE, NULL, NULL, 0, "redis unavailable");
        return;
    }
    finish(j, SB_MAILIN_QUARANTINED, NULL, j->replay_id, 0, j->err);
}

/* Quarantine j's raw bytes with j->err as the reason (or, for a replay,
 * record the new reason on its entry). */
static void quarantine(struct mi_job *j)
{
    char now[24], uid[24], uidv[24];
    const char *from = j->parsed ? j->msg.from.addr : "";
    const char *subj = j->parsed ? j->msg.subject : "";

    snprintf(now, sizeof(now), "%lld", (long long)sb_now_ms());
    if (j->replay_id) {
        const char *argv[5] = {MI.prefix, "fail", j->replay_id, now, j->err};
        size_t lens[5];
        for (int i = 0; i < 5; i++)
            lens[i] = strlen(argv[i]);
        if (sb_redis_script(MI.redis, "mailq", on_q_failed, j, 0, 5, argv,
                            lens) < 0)
            on_q_failed(NULL, "redis unavailable", j);
        return;
    }
    snprintf(uid, sizeof(uid), "%lu", j->uid);
    snprintf(uidv, sizeof(uidv), "%lu", j->uidvalidity);
    {
        const char *argv[10] = {MI.prefix, "add", now, j->raw, j->err,
                                j->mailbox, uid, uidv, from ? from : "",
                                subj ? subj : ""};
        size_t lens[10];
        for (int i = 0; i < 10; i++)
            lens[i] = strlen(argv[i]);
        lens[3] = j->len;
        if (sb_redis_script(MI.redis, "mailq", on_q_added, j, 0, 10, argv,
                            lens) < 0)
            on_q_added(NULL, "redis unavailable", j);
    }
}

/* ---- ingest ------------------------------------------------------------ */

static void on_ingested(enum sb_store_status st,
                        const struct sb_contact_result *res, const char *err,
                        void *arg);

static int has_cyrillic(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; p && *p; p++)
        if ((*p == 0xd0 || *p == 0xd1) && (p[1] & 0xc0) == 0x80)
            return 1;
    return 0;
}

/* "[#cv_12]" in the subject, or NULL (into buf). */
static const char *subject_tag(const char *subj, char *buf, size_t n)
{
    const char *p = subj ? strstr(subj, "[#cv_") : NULL;
    size_t k = 0;

    if (!p)
        return NULL;
    p += 2;
    while (p[3 + k] >= '0' && p[3 + k] <= '9' && k < 15)
        k++;
    if (k == 0 || p[3 + k] != ']' || 3 + k + 1 > n)
        return NULL;
    memcpy(buf, p, 3 + k);
    buf[3 + k] = '\0';
    return buf;
}

static json_t *addr_json(const struct sb_mime_addr *a)
{
    return json_pack("{s:s, s:s}", "name", a->name ? a->name : "", "addr",
                     a->addr ? a->addr : "");
}

static json_t *addr_list(const struct sb_mime_addr *a, size_t n)
{
    json_t *l = json_array();

    for (size_t i = 0; i < n && i < MI_MAX_LIST; i++)
        json_array_append_new(l, addr_json(&a[i]));
    return l;
}

/* The contact's fields: where it came from, threading, the blobs, what
 * the console shows. */
static char *make_fields(struct mi_job *j, const char *kind)
{
    struct sb_mime_msg *m = &j->msg;
    json_t *f = json_object(), *refs = json_array(), *trefs = json_array();
    json_t *atts = json_array(), *th, *via;
    size_t nrefs = 0;
    char tagbuf[32], uidbuf[24];
    const char *tag = subject_tag(m->subject, tagbuf, sizeof(tagbuf));
    const char *our = j->address;
    char *out, *vs;

    while (m->references && m->references[nrefs])
        nrefs++;
    /* References kept: the newest MI_MAX_LIST */
    for (size_t i = nrefs > MI_MAX_LIST ? nrefs - MI_MAX_LIST : 0; i < nrefs;
         i++)
        json_array_append_new(refs, json_string(m->references[i]));
    /* Threading looks at In-Reply-To, then References newest first */
    if (m->in_reply_to)
        json_array_append_new(trefs, json_string(m->in_reply_to));
    for (size_t i = nrefs; i > 0 && json_array_size(trefs) < MI_MAX_LIST;
         i--)
        json_array_append_new(trefs, json_string(m->references[i - 1]));
    th = json_pack("{s:o}", "refs", trefs);
    if (tag)
        json_object_set_new(th, "tag", json_string(tag));
    json_object_set_new(f, "thread", th);
    json_object_set_new(f, "mailbox", json_string(j->mailbox));
    if (j->uid) {
        snprintf(uidbuf, sizeof(uidbuf), "%lu", j->uid);
        json_object_set_new(f, "uid", json_string(uidbuf));
    }
    if (m->message_id)
        json_object_set_new(f, "message_id", json_string(m->message_id));
    if (m->in_reply_to)
        json_object_set_new(f, "in_reply_to", json_string(m->in_reply_to));
    json_object_set_new(f, "references", refs);
    json_object_set_new(f, "from", addr_json(&m->from));
    json_object_set_new(f, "to", addr_list(m->to, m->nto));
    if (m->ncc)
        json_object_set_new(f, "cc", addr_list(m->cc, m->ncc));
    if (m->reply_to.addr && *m->reply_to.addr)
        json_object_set_new(f, "reply_to", addr_json(&m->reply_to));
    if (m->date_ms)
        json_object_set_new(f, "date", json_integer(m->date_ms));
    json_object_set_new(f, "kind", json_string(kind));
    if (m->text_from_html)
        json_object_set_new(f, "text_from_html", json_true());
    if (m->text_truncated)
        json_object_set_new(f, "text_truncated", json_true());
    if (m->quote_offset >= 0)
        json_object_set_new(f, "quote_offset", json_integer(m->quote_offset));
    if (m->html) {
        char sha[SB_HASH_HEX_LEN + 1];
        sb_sha256_hex(m->html, strlen(m->html), sha);
        json_object_set_new(f, "html", json_pack("{s:s, s:I}", "sha256", sha,
                                                 "size",
                                                 (json_int_t)strlen(m->html)));
    }
    for (size_t i = 0; i < m->natts; i++) {
        const struct sb_mime_att *a = &m->atts[i];
        json_array_append_new(
            atts, json_pack("{s:s, s:s, s:I, s:s, s:b, s:b}", "filename",
                            a->filename ? a->filename : "", "content_type",
                            a->content_type ? a->content_type : "",
                            "size", (json_int_t)a->size, "sha256", a->sha256,
                            "stored", a->data != NULL, "inline",
                            a->is_inline));
    }
    json_object_set_new(f, "attachments", atts);
    if (m->auto_reason)
        json_object_set_new(f, "auto_reason", json_string(m->auto_reason));
    if (m->is_dsn)
        json_object_set_new(
            f, "dsn",
            json_pack("{s:s?, s:s?, s:s?, s:s?, s:s?}", "original_message_id",
                      m->dsn.original_message_id, "recipient",
                      m->dsn.recipient, "action", m->dsn.action, "status",
                      m->dsn.status, "diagnostic", m->dsn.diagnostic));
    if (m->charsets && m->charsets[0]) {
        json_t *cs = json_array();
        for (size_t i = 0; m->charsets[i] && i < 16; i++)
            json_array_append_new(cs, json_string(m->charsets[i]));
        json_object_set_new(f, "charsets", cs);
    }
    /* How a reply goes out: from the address the customer wrote to, in
     * the thread of this message (the e-mail driver reads it back). */
    if (!our || !*our)
        our = m->nto ? m->to[0].addr : "";
    {
        struct sb_buf rb;
        sb_buf_init(&rb, 0);
        for (size_t i = nrefs > 10 ? nrefs - 10 : 0; i < nrefs; i++)
            sb_buf_printf(&rb, "%s%s", rb.len ? " " : "", m->references[i]);
        via = json_pack("{s:s, s:s, s:s?, s:s, s:s}", "mailbox", j->mailbox,
                        "from", our ? our : "", "msgid", m->message_id,
                        "refs", rb.data ? rb.data : "", "subject",
                        m->subject ? m->subject : "");
        sb_buf_free(&rb);
    }
    vs = json_dumps(via, JSON_COMPACT);
    json_decref(via);
    if (vs && strlen(vs) <= 4096)
        json_object_set_new(f, "via", json_string(vs));
    free(vs);
    out = json_dumps(f, JSON_COMPACT);
    json_decref(f);
    if (out && strlen(out) > MI_FIELDS_MAX) {
        /* the lists made it too big: keep what threading needs */
        json_t *g = json_pack("{s:s, s:s}", "mailbox", j->mailbox, "kind",
                              kind);
        free(out);
        out = json_dumps(g, JSON_COMPACT);
        json_decref(g);
    }
    return out;
}

static void ingest(struct mi_job *j)
{
    struct sb_mime_msg *m = &j->msg;
    struct sb_contact_in in;
    const char *kind = m->is_dsn ? "bounce" : m->automatic ? "auto"
                                                          : "message";
    char src[1100];
    char *fields = make_fields(j, kind);

    memset(&in, 0, sizeof(in));
    in.channel = "email";
    in.direction = "in";
    in.type = kind;
    in.ids[0].type = "email";
    in.ids[0].value = j->from;
    in.nids = 1;
    in.name = m->from.name;
    in.locale = has_cyrillic(m->subject) || has_cyrillic(m->text) ? "ru"
                                                                   : "en";
    /* automatic mail is logged, never a conversation (no mail loops) */
    in.conversation = m->automatic || m->is_dsn ? "none" : "thread";
    in.subject = m->subject;
    in.text = m->text;
    in.text_len = strlen(m->text);
    if (m->message_id)
        snprintf(src, sizeof(src), "msgid:%s", m->message_id);
    else
        snprintf(src, sizeof(src), "sha:%s", j->raw_sha);
    in.source_id = src;
    in.provider_id = m->message_id;
    in.fields_json = fields;
    in.ts_ms = 0;
    if (sb_contact_ingest(&in, on_ingested, j) < 0) {
        free(fields);
        finish(j, SB_MAILIN_UNAVAILABLE, NULL, NULL, 0, "redis unavailable");
        return;
    }
    free(fields);
}

static void on_reported(enum sb_store_status st, json_t *res, const char *err,
                        void *arg)
{
    char *att = arg;

    SB_INFO(MI_PLACE, "bounce applied attempt=%s result=%s", att,
            st == SB_STORE_OK
                ? json_string_value(json_object_get(res, "result"))
                : err ? err : "-");
    json_decref(res);
    free(att);
}

/* A bounce of one of our notifications ("nt_5.1.<random>@domain"): the
 * attempt failed. */
static void report_bounce(const struct sb_mime_msg *m)
{
    const char *id = m->dsn.original_message_id;
    const char *act = m->dsn.action;
    const char *status = m->dsn.status;
    char att[64], reason[200];
    size_t n = 0;
    int dots = 0;

    if (!id || strncmp(id, "nt_", 3) != 0)
        return;
    if (act && strcmp(act, "failed") != 0)
        return; /* delayed, relayed...: not a failure yet */
    while (id[n] && n + 1 < sizeof(att)) {
        if (id[n] == '.' && ++dots == 2)
            break;
        att[n] = id[n];
        n++;
    }
    att[n] = '\0';
    if (dots < 1)
        return;
    snprintf(reason, sizeof(reason), "bounce %s%s%.120s",
             status ? status : "", m->dsn.diagnostic ? " " : "",
             m->dsn.diagnostic ? m->dsn.diagnostic : "");
    /* 5.x.x is permanent; 4.x.x with action failed is given up too */
    {
        char *a = sb_strdup(att);
        if (sb_notify_report(a, "failed", reason, on_reported, a) < 0) {
            SB_WARN(MI_PLACE, "bounce not applied attempt=%s: redis "
                              "unavailable",
                    a);
            free(a);
        }
    }
}

static void on_ingested(enum sb_store_status st,
                        const struct sb_contact_result *res, const char *err,
                        void *arg)
{
    struct mi_job *j = arg;

    if (st == SB_STORE_INVALID) {
        snprintf(j->err, sizeof(j->err), "refused by the store: %s",
                 err ? err : "invalid");
        quarantine(j);
        return;
    }
    if (st != SB_STORE_OK) {
        finish(j, SB_MAILIN_UNAVAILABLE, NULL, NULL, 0,
               err ? err : "store unavailable");
        return;
    }
    if (!res->duplicate) {
        sb_metric_add(MI.m_in, 1, j->mailbox,
                      j->msg.is_dsn ? "bounce"
                                    : j->msg.automatic ? "auto" : "message");
        sb_api_route_after_ingest(res);
        if (j->msg.is_dsn)
            report_bounce(&j->msg);
    }
    finish(j, SB_MAILIN_OK, res->contact_id, NULL, res->duplicate, NULL);
}

/* ---- blobs ------------------------------------------------------------- */

static void store_blobs(struct mi_job *j);

static void on_blob(redisReply *rep, const char *err, void *arg)
{
    struct mi_job *j = arg;

    if (err || (rep && rep->type == REDIS_REPLY_ERROR)) {
        finish(j, SB_MAILIN_UNAVAILABLE, NULL, NULL, 0,
               err ? err : rep->str);
        return;
    }
    store_blobs(j);
}

/* Blob 0 is the HTML, then the attachments kept; SET NX PX one by one. */
static void store_blobs(struct mi_job *j)
{
    struct sb_mime_msg *m = &j->msg;

    while (j->next_blob <= m->natts) {
        size_t i = j->next_blob++;
        const char *data;
        size_t len;
        char sha[SB_HASH_HEX_LEN + 1], key[128], ttl[24];

        if (i == 0) {
            if (!m->html)
                continue;
            data = m->html;
            len = strlen(m->html);
            sb_sha256_hex(data, len, sha);
        } else {
            const struct sb_mime_att *a = &m->atts[i - 1];
            if (!a->data)
                continue;
            data = (const char *)a->data;
            len = a->size;
            memcpy(sha, a->sha256, sizeof(sha));
        }
        snprintf(key, sizeof(key), "%sblob:%s", MI.prefix, sha);
        snprintf(ttl, sizeof(ttl), "%lld",
                 MI.blob_ttl > 0 ? MI.blob_ttl : 90LL * 86400000);
        {
            const char *argv[6] = {"SET", key, data, "NX", "PX", ttl};
            size_t lens[6] = {3, strlen(key), len, 2, 2, strlen(ttl)};
            if (sb_redis_cmdv(MI.redis, on_blob, j, 6, argv, lens) < 0)
                finish(j, SB_MAILIN_UNAVAILABLE, NULL, NULL, 0,
                       "redis unavailable");
        }
        return;
    }
    ingest(j);
}

/* ---- parse ------------------------------------------------------------- */

static void parse_work(void *arg)
{
    struct mi_job *j = arg;

    sb_sha256_hex(j->raw, j->len, j->raw_sha);
    if (sb_mime_parse(j->raw, j->len, &j->lim, &j->msg, j->err,
                      sizeof(j->err)) == 0)
        j->parsed = 1;
}

static void parse_after(void *arg, int cancelled)
{
    struct mi_job *j = arg;
    const char *why = NULL;

    if (cancelled) {
        finish(j, SB_MAILIN_UNAVAILABLE, NULL, NULL, 0, "shutting down");
        return;
    }
    if (!j->parsed) {
        quarantine(j);
        return;
    }
    if (sb_email_normalize(j->msg.from.addr, j->from, sizeof(j->from),
                           &why) < 0) {
        snprintf(j->err, sizeof(j->err), "no usable sender address (%s)",
                 why ? why : "invalid");
        quarantine(j);
        return;
    }
    j->next_blob = 0;
    store_blobs(j);
}

static struct mi_job *job_new(const char *raw, size_t len,
                              const struct sb_mailin_src *src)
{
    struct mi_job *j = sb_calloc(1, sizeof(*j));

    j->raw = sb_malloc(len + 1);
    memcpy(j->raw, raw, len);
    j->raw[len] = '\0';
    j->len = len;
    j->mailbox = sb_strdup(src && src->mailbox ? src->mailbox : "-");
    j->address = src && src->address ? sb_strdup(src->address) : NULL;
    j->uid = src ? src->uid : 0;
    j->uidvalidity = src ? src->uidvalidity : 0;
    j->lim = MI.lim;
    return j;
}

int sb_mailin_ingest(const char *raw, size_t len,
                     const struct sb_mailin_src *src, sb_mailin_cb *cb,
                     void *arg)
{
    struct mi_job *j;

    if (!MI.redis || !sb_redis_is_up(MI.redis))
        return -1;
    j = job_new(raw, len, src);
    j->cb = cb;
    j->arg = arg;
    if (sb_worker_submit(parse_work, parse_after, j) < 0) {
        job_free(j);
        return -1;
    }
    return 0;
}

int sb_mailin_quarantine(const char *raw, size_t len, const char *reason,
                         const struct sb_mailin_src *src, sb_mailin_cb *cb,
                         void *arg)
{
    struct mi_job *j;

    if (!MI.redis || !sb_redis_is_up(MI.redis))
        return -1;
    j = job_new(raw, len, src);
    j->cb = cb;
    j->arg = arg;
    snprintf(j->err, sizeof(j->err), "%s", reason);
    quarantine(j);
    return 0;
}

/* ---- operators --------------------------------------------------------- */

static int is_str(const redisReply *r)
{
    return r && (r->type == REDIS_REPLY_STRING ||
                 r->type == REDIS_REPLY_STATUS);
}

static json_t *entry_json(const char *id, const redisReply *f, int with_raw)
{
    json_t *o = json_object();

    json_object_set_new(o, "id", json_string(id));
    for (size_t i = 0; f && i + 1 < f->elements; i += 2) {
        const redisReply *k = f->element[i], *v = f->element[i + 1];
        if (!is_str(k) || !is_str(v))
            continue;
        if (strcmp(k->str, "raw") == 0) {
            if (!with_raw)
                continue;
            if (sb_utf8_valid(v->str, v->len) &&
                !memchr(v->str, 0, v->len)) {
                json_object_set_new(o, "raw",
                                    json_stringn(v->str, v->len));
            } else {
                size_t n = sodium_base64_ENCODED_LEN(
                    v->len, sodium_base64_VARIANT_ORIGINAL);
                char *b = sb_malloc(n);
                sodium_bin2base64(b, n, (const unsigned char *)v->str, v->len,
                                  sodium_base64_VARIANT_ORIGINAL);
                json_object_set_new(o, "raw_base64", json_string(b));
                free(b);
            }
        } else if (strcmp(k->str, "at") == 0 || strcmp(k->str, "size") == 0 ||
                   strcmp(k->str, "tries") == 0) {
            long long x = 0;
            sb_parse_ll(v->str, &x);
            json_object_set_new(o, k->str, json_integer(x));
        } else if (sb_utf8_valid(v->str, v->len)) {
            json_object_set_new(o, k->str, json_stringn(v->str, v->len));
        }
    }
    return o;
}

struct mi_op;
static int mailq(struct mi_op *op, sb_redis_cb *rcb, int argc,
                 const char **argv);

struct mi_op {
    sb_store_json_cb *cb;
    void *arg;
    char *id;
    char contact[48]; /* replay: the contact made */
};

static void op_free(struct mi_op *op)
{
    free(op->id);
    free(op);
}

static void op_fail(struct mi_op *op, const char *script, const char *text)
{
    const char *msg = NULL;
    enum sb_store_status st = sb_store_map_error(script, text, &msg);

    op->cb(st, NULL, msg, op->arg);
    op_free(op);
}

static void on_list(redisReply *rep, const char *err, void *arg)
{
    struct mi_op *op = arg;
    json_t *entries, *o;

    if (err || !rep || rep->type == REDIS_REPLY_ERROR ||
        rep->type != REDIS_REPLY_ARRAY || rep->elements != 2) {
        op_fail(op, "mailq", err ? err : rep && rep->str ? rep->str : "?");
        return;
    }
    entries = json_array();
    for (size_t i = 0; i < rep->element[1]->elements; i++) {
        const redisReply *e = rep->element[1]->element[i];
        if (e->type == REDIS_REPLY_ARRAY && e->elements == 2 &&
            is_str(e->element[0]))
            json_array_append_new(entries,
                                  entry_json(e->element[0]->str,
                                             e->element[1], 0));
    }
    o = json_pack("{s:o}", "entries", entries);
    json_object_set_new(o, "next_before",
                        is_str(rep->element[0]) && rep->element[0]->len
                            ? json_string(rep->element[0]->str)
                            : json_null());
    op->cb(SB_STORE_OK, o, NULL, op->arg);
    op_free(op);
}

static int mailq(struct mi_op *op, sb_redis_cb *rcb, int argc,
                 const char **argv)
{
    size_t lens[8];

    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    if (sb_redis_script(MI.redis, "mailq", rcb, op, 0, argc, argv, lens) < 0) {
        op_free(op);
        return -1;
    }
    return 0;
}

int sb_mailin_q_list(const char *before, int limit, sb_store_json_cb *cb,
                     void *arg)
{
    struct mi_op *op = sb_calloc(1, sizeof(*op));
    char lim[16];
    const char *argv[4];

    op->cb = cb;
    op->arg = arg;
    snprintf(lim, sizeof(lim), "%d", limit);
    argv[0] = MI.prefix;
    argv[1] = "list";
    argv[2] = before ? before : "";
    argv[3] = lim;
    return mailq(op, on_list, 4, argv);
}

static void on_show(redisReply *rep, const char *err, void *arg)
{
    struct mi_op *op = arg;

    if (err || !rep || rep->type != REDIS_REPLY_ARRAY) {
        op_fail(op, "mailq", err ? err : rep && rep->str ? rep->str : "?");
        return;
    }
    op->cb(SB_STORE_OK, entry_json(op->id, rep, 1), NULL, op->arg);
    op_free(op);
}

/* Read quarantine entry id, then rcb with an op carrying cb, arg, id. */
static int q_show_then(const char *id, sb_redis_cb *rcb, sb_store_json_cb *cb,
                       void *arg)
{
    struct mi_op *op = sb_calloc(1, sizeof(*op));
    const char *argv[3] = {MI.prefix, "show", id};

    op->cb = cb;
    op->arg = arg;
    op->id = sb_strdup(id);
    return mailq(op, rcb, 3, argv);
}

int sb_mailin_q_show(const char *id, sb_store_json_cb *cb, void *arg)
{
    return q_show_then(id, on_show, cb, arg);
}

/* Replay: show -> ingest (a job carrying the entry's id) -> del. */
static void on_q_deleted(redisReply *rep, const char *err, void *arg)
{
    struct mi_op *op = arg;
    json_t *o = json_pack("{s:s, s:s}", "result", "ingested", "contact",
                          op->contact);

    if (err || (rep && rep->type == REDIS_REPLY_ERROR))
        SB_WARN(MI_PLACE, "replayed entry not removed id=%s", op->id);
    op->cb(SB_STORE_OK, o, NULL, op->arg);
    op_free(op);
}

static void on_replayed(const struct sb_mailin_result *r, void *arg)
{
    struct mi_op *op = arg;

    if (r->status == SB_MAILIN_OK) {
        const char *argv[3] = {MI.prefix, "del", op->id};
        snprintf(op->contact, sizeof(op->contact), "%s", r->contact_id);
        if (mailq(op, on_q_deleted, 3, argv) < 0)
            SB_WARN(MI_PLACE, "replayed entry not removed: redis "
                              "unavailable");
        return;
    }
    if (r->status == SB_MAILIN_QUARANTINED) {
        json_t *o = json_pack("{s:s, s:s}", "result", "quarantined",
                              "reason", r->reason ? r->reason : "");
        op->cb(SB_STORE_OK, o, NULL, op->arg);
    } else {
        op->cb(SB_STORE_UNAVAILABLE, NULL,
               r->reason ? r->reason : "unavailable", op->arg);
    }
    op_free(op);
}

static void on_replay_show(redisReply *rep, const char *err, void *arg)
{
    struct mi_op *op = arg;
    const char *raw = NULL, *mailbox = "replay";
    size_t rawlen = 0;
    struct sb_mailin_src src;
    struct mi_job *j;

    if (err || !rep || rep->type != REDIS_REPLY_ARRAY) {
        op_fail(op, "mailq", err ? err : rep && rep->str ? rep->str : "?");
        return;
    }
    for (size_t i = 0; i + 1 < rep->elements; i += 2) {
        const redisReply *k = rep->element[i], *v = rep->element[i + 1];
        if (!is_str(k) || !is_str(v))
            continue;
        if (strcmp(k->str, "raw") == 0) {
            raw = v->str;
            rawlen = v->len;
        } else if (strcmp(k->str, "mailbox") == 0 && v->len) {
            mailbox = v->str;
        }
    }
    memset(&src, 0, sizeof(src));
    src.mailbox = mailbox;
    j = job_new(raw ? raw : "", rawlen, &src);
    j->replay_id = sb_strdup(op->id);
    j->cb = on_replayed;
    j->arg = op;
    if (sb_worker_submit(parse_work, parse_after, j) < 0) {
        job_free(j);
        op->cb(SB_STORE_UNAVAILABLE, NULL, "worker pool full", op->arg);
        op_free(op);
    }
}

int sb_mailin_q_replay(const char *id, sb_store_json_cb *cb, void *arg)
{
    return q_show_then(id, on_replay_show, cb, arg);
}

/* ---- blobs for the API ------------------------------------------------- */

struct mi_blob {
    sb_mailin_blob_cb *cb;
    void *arg;
};

static void on_blob_get(redisReply *rep, const char *err, void *arg)
{
    struct mi_blob *b = arg;

    if (err || !rep || rep->type == REDIS_REPLY_ERROR)
        b->cb(SB_STORE_UNAVAILABLE, NULL, 0, b->arg);
    else if (rep->type != REDIS_REPLY_STRING)
        b->cb(SB_STORE_NOTFOUND, NULL, 0, b->arg);
    else
        b->cb(SB_STORE_OK, rep->str, rep->len, b->arg);
    free(b);
}

int sb_mailin_blob(const char *sha256, sb_mailin_blob_cb *cb, void *arg)
{
    struct mi_blob *b;
    char key[128];

    if (strlen(sha256) != SB_HASH_HEX_LEN ||
        strspn(sha256, "0123456789abcdef") != SB_HASH_HEX_LEN)
        return -2;
    b = sb_calloc(1, sizeof(*b));
    b->cb = cb;
    b->arg = arg;
    snprintf(key, sizeof(key), "%sblob:%s", MI.prefix, sha256);
    if (sb_redis_cmdf(MI.redis, on_blob_get, b, "GET %s", key) < 0) {
        free(b);
        return -1;
    }
    return 0;
}

/* ---- mailbox positions ------------------------------------------------- */

struct mi_pos {
    sb_mailin_pos_cb *cb;
    void *arg;
};

static void on_pos(redisReply *rep, const char *err, void *arg)
{
    struct mi_pos *p = arg;
    unsigned long v = 0, last = 0;

    if (err || !rep || rep->type == REDIS_REPLY_ERROR) {
        p->cb(SB_STORE_UNAVAILABLE, 0, 0, p->arg);
        free(p);
        return;
    }
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 2) {
        if (rep->element[0]->type == REDIS_REPLY_STRING)
            v = strtoul(rep->element[0]->str, NULL, 10);
        if (rep->element[1]->type == REDIS_REPLY_STRING)
            last = strtoul(rep->element[1]->str, NULL, 10);
    }
    p->cb(SB_STORE_OK, v, last, p->arg);
    free(p);
}

int sb_mailin_pos_get(const char *mailbox, sb_mailin_pos_cb *cb, void *arg)
{
    struct mi_pos *p = sb_calloc(1, sizeof(*p));
    char key[256];

    p->cb = cb;
    p->arg = arg;
    snprintf(key, sizeof(key), "%simap:%s", MI.prefix, mailbox);
    if (sb_redis_cmdf(MI.redis, on_pos, p, "HMGET %s uidvalidity last_uid",
                      key) < 0) {
        free(p);
        return -1;
    }
    return 0;
}

int sb_mailin_pos_set(const char *mailbox, unsigned long uidvalidity,
                      unsigned long last_uid, sb_mailin_pos_cb *cb, void *arg)
{
    struct mi_pos *p = sb_calloc(1, sizeof(*p));
    char key[256];

    p->cb = cb;
    p->arg = arg;
    snprintf(key, sizeof(key), "%simap:%s", MI.prefix, mailbox);
    if (sb_redis_cmdf(MI.redis, on_pos, p,
                      "HSET %s uidvalidity %lu last_uid %lu", key, uidvalidity,
                      last_uid) < 0) {
        free(p);
        return -1;
    }
    return 0;
}
