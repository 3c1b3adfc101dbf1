/* notify.c - the notification dispatcher.
 *
 * One pipeline per process, on the loop thread:
 *
 *   XREADGROUP (batch, BLOCK, own connection "notify-read")
 *     -> validate raw entries (notify_req.c)
 *     -> notify_take.lua: accept, choose the channel, state "sending"
 *     -> quiet hours? hold : render the template -> throttle -> driver
 *     -> completions collected and written by notify_result.lua, which
 *        records the attempt, schedules a retry or the next channel, and
 *        XACKs - one script call per loop pass, not per message.
 *
 * Work that must wait (retries, quiet hours, not_before, supersession
 * windows, report deadlines) sits in the zset <prefix>ntf:due; a timer
 * moves what is due back onto the stream (notify_due.lua), so every path
 * goes through the stream and its consumer group, and a crash anywhere
 * leaves the entry pending: at start-up this consumer re-reads its own
 * pending entries, and XAUTOCLAIM hands entries of a consumer that died to
 * a live one after [notify] claim_idle. Entries held here longer than half
 * of claim_idle (a slow, rate-limited channel) are re-claimed by us with
 * XCLAIM JUSTID so no other instance takes them while we work.
 *
 * How many entries are in hand at once is bounded ([notify] max_inflight);
 * the reader waits when the bound is reached. Per-channel rate (token
 * bucket) and concurrency limits come from [throttle CHANNEL] sections.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "channel.h"
#include "core.h"
#include "http.h"
#include "list.h"
#include "log.h"
#include "metrics.h"
#include "notify_int.h"
#include "notify_policy.h"
#include "outbound.h"
#include "util.h"

#define NT_PLACE "core.notify"
#define NT_TAKE_SLOTS 16
#define NT_RESULT_SLOTS 15
#define NT_RESULT_MAX 256    /* results per notify_result call */
#define NT_DUE_LIMIT 1000
#define NT_CLAIM_COUNT 100
#define NT_RETRY_MS 500      /* a failed record is written again after */

struct sb_notify_shared sb_ntf;

/* ---- config ------------------------------------------------------------- */

static const struct sb_conf_key notify_keys[] = {
#define K(f) offsetof(struct sb_notify_conf, f)
    {"enabled", SB_CONF_BOOL, K(enabled), "yes", 0, 0, NULL, 0,
     "run the dispatcher (no: this instance accepts but never sends)"},
    {"templates", SB_CONF_STR, K(templates), "/etc/switchboard/templates",
     0, 4096, NULL, SB_CONF_RELOAD,
     "template directory: <event>/<channel>.<locale> (docs/templates.md)"},
    {"group", SB_CONF_STR, K(group), "switchboard", 0, 64, NULL, 0,
     "consumer group on the stream <prefix>notify"},
    {"consumer", SB_CONF_STR, K(consumer), "", 0, 64, NULL, 0,
     "this instance's consumer name, unique per instance and stable across "
     "restarts (empty: <hostname>-<first listener port>)"},
    {"channels", SB_CONF_LIST, K(channels), "email, sms, chat", 0, 32, NULL,
     SB_CONF_RELOAD,
     "channel order for customers without a preference of their own"},
    {"urgent_ignores_opt_out", SB_CONF_LIST, K(urgent_opt_out), "", 0, 32,
     NULL, SB_CONF_RELOAD,
     "channels where an urgent notification goes even to a customer who "
     "opted out of them (e.g. sms for a safety alert; empty: none)"},
    {"default_locale", SB_CONF_STR, K(default_locale), "en", 0, 16, NULL,
     SB_CONF_RELOAD, "template locale when the customer's has none"},
    {"default_timezone", SB_CONF_STR, K(default_timezone), "UTC", 0, 64,
     NULL, SB_CONF_RELOAD,
     "time zone for customers without one (dates, quiet hours)"},
    {"quiet_hours", SB_CONF_STR, K(quiet_hours), "", 0, 11, NULL,
     SB_CONF_RELOAD,
     "HH:MM-HH:MM local time when normal notifications wait (customers' "
     "own setting wins; empty: none)"},
    {"batch", SB_CONF_INT, K(batch), "200", 1, 1000, NULL, SB_CONF_RELOAD,
     "stream entries read per XREADGROUP"},
    {"max_inflight", SB_CONF_INT, K(max_inflight), "5000", 1, 100000, NULL,
     SB_CONF_RELOAD, "entries in hand at once (read, not yet recorded)"},
    {"max_attempts", SB_CONF_INT, K(max_attempts), "5", 1, 100, NULL,
     SB_CONF_RELOAD,
     "tries on one channel before a temporary failure moves on"},
    {"max_age", SB_CONF_DURATION, K(max_age), "1h", 1000, 30 * 86400000LL, NULL,
     SB_CONF_RELOAD, "retrying one channel stops after this long"},
    {"backoff_min", SB_CONF_DURATION, K(backoff_min), "2s", 1, 86400000LL, NULL,
     SB_CONF_RELOAD, "first retry delay (doubles per try, with jitter)"},
    {"backoff_max", SB_CONF_DURATION, K(backoff_max), "10m", 1, 86400000LL, NULL,
     SB_CONF_RELOAD, "longest retry delay"},
    {"supersede_window", SB_CONF_DURATION, K(supersede_window), "60s", 0, 0,
     NULL, SB_CONF_RELOAD,
     "a normal notification with a ref waits this long, so a newer event "
     "for the same ref replaces it (0: no wait)"},
    {"report_deadline", SB_CONF_DURATION, K(report_deadline), "1h", 0, 0,
     NULL, SB_CONF_RELOAD,
     "no final delivery report this long after a send (channels that "
     "report): the next channel is tried"},
    {"claim_idle", SB_CONF_DURATION, K(claim_idle), "60s", 100, 86400000LL, NULL,
     SB_CONF_RELOAD,
     "an entry pending this long with a silent consumer is taken over"},
    {"claim_interval", SB_CONF_DURATION, K(claim_interval), "5s", 100,
     3600000LL,
     NULL, SB_CONF_RELOAD, "how often to look for such entries"},
    {"max_deliveries", SB_CONF_INT, K(max_deliveries), "5", 1, 1000, NULL,
     SB_CONF_RELOAD,
     "an entry delivered this often without an outcome is a dead letter"},
    {"idempotency_window", SB_CONF_DURATION, K(idempotency_window), "7d",
     1000, 365 * 86400000LL, NULL, SB_CONF_RELOAD,
     "how long an idempotency key returns the same notification"},
    {"retention", SB_CONF_DURATION, K(retention), "30d", 1000,
     3650 * 86400000LL, NULL,
     SB_CONF_RELOAD,
     "finished notifications are kept this long (the timeline keeps them "
     "for ever)"},
    {"stats_interval", SB_CONF_DURATION, K(stats_interval), "5s", 100,
     3600000LL,
     NULL, SB_CONF_RELOAD, "queue gauges refresh and stream trim period"},
    {"poll_interval", SB_CONF_DURATION, K(poll_interval), "250ms", 10,
     60000, NULL, SB_CONF_RELOAD,
     "how often the retry schedule is checked (at most)"},
    {"trim", SB_CONF_BOOL, K(trim), "yes", 0, 0, NULL, SB_CONF_RELOAD,
     "trim the stream below its oldest unacknowledged entry"},
#undef K
    {NULL, 0, 0, NULL, 0, 0, NULL, 0, NULL},
};

static int notify_conf_check(void *conf, char *err, size_t errlen)
{
    const struct sb_notify_conf *c = conf;
    int f, t;

    if (c->quiet_hours && c->quiet_hours[0] && sb_ntf_quiet_parse(c->quiet_hours, &f, &t) < 0) {
        snprintf(err, errlen, "quiet_hours must be HH:MM-HH:MM");
        return -1;
    }
    if (!c->default_locale || !c->default_timezone || !c->group ||
        !c->templates) {
        snprintf(err, errlen, "templates, group, default_locale and "
                 "default_timezone must not be empty");
        return -1;
    }
    if (c->backoff_min > c->backoff_max) {
        snprintf(err, errlen, "backoff_min is above backoff_max");
        return -1;
    }
    for (size_t i = 0; c->channels && c->channels[i]; i++)
        if (strcmp(c->channels[i], "email") && strcmp(c->channels[i], "sms") &&
            strcmp(c->channels[i], "chat") &&
            strcmp(c->channels[i], "webhook")) {
            snprintf(err, errlen, "channels: unknown channel %s",
                     c->channels[i]);
            return -1;
        }
    return 0;
}

const struct sb_conf_section sb_notify_conf_section = {
    "notify", 0, sizeof(struct sb_notify_conf), notify_keys,
    "Order and service notifications (docs/notifications.md): the stream\n"
    "<prefix>notify and POST /api/v1/notifications feed one dispatcher.",
    notify_conf_check,
};

struct throttle_conf {
    long long rate;
    long long burst;
    long long concurrency;
};

static const struct sb_conf_key throttle_keys[] = {
    {"rate", SB_CONF_INT, offsetof(struct throttle_conf, rate), "0", 0,
     1000000, NULL, SB_CONF_RELOAD, "notifications per second (0: no limit)"},
    {"burst", SB_CONF_INT, offsetof(struct throttle_conf, burst), "0", 0,
     1000000, NULL, SB_CONF_RELOAD, "bucket size (0: one second's worth)"},
    {"concurrency", SB_CONF_INT, offsetof(struct throttle_conf, concurrency),
     "0", 0, 100000, NULL, SB_CONF_RELOAD,
     "sends in flight at once (0: no limit)"},
    {NULL, 0, 0, NULL, 0, 0, NULL, 0, NULL},
};

const struct sb_conf_section sb_throttle_conf_section = {
    "throttle", 1, sizeof(struct throttle_conf), throttle_keys,
    "Limits for notifications on one channel: [throttle sms], [throttle\n"
    "email], [throttle chat], [throttle webhook].",
    NULL,
};

/* ---- state ------------------------------------------------------------ */

struct job;

/* One channel's limiter and queue. */
struct thr {
    const char *name;
    double rate, burst, tokens;
    long long concurrency;
    uint64_t last;          /* uv_now of the last refill */
    size_t inflight, queued;
    struct job *head, *tail;
    uv_timer_t timer;
};

enum { NT_EMAIL, NT_SMS, NT_CHAT, NT_WEBHOOK, NT_NCHAN };
static const char *const nt_chan_names[NT_NCHAN] = {"email", "sms", "chat",
                                                    "webhook"};

/* One entry in hand: from take to its recorded result. Strings point into
 * buf (one allocation per job). */
struct job {
    struct job *next;              /* throttle queue */
    struct sb_list_node all;       /* on D.jobs: every job, oldest first */
    char *eid, *ntf, *channel, *to, *event, *locale, *tz, *quiet, *priority,
        *data, *ref, *customer, *cname;
    int attempt, tries;
    int64_t first, created;
    uint64_t held_since;           /* uv_now when read */
    uint64_t t0;                   /* uv_hrtime at send */
    struct thr *thr;
    struct sb_channel *ch;
    struct sb_outmsg msg;
    struct sb_rendered r;
    char *meta;
    char attempt_id[48];
    char buf[];
};

/* Results waiting to be written: argv strings in one arena. */
struct rbatch {
    struct rbatch *next;
    struct sb_buf arena;
    size_t n;                      /* results */
    size_t *off, *len;             /* per argv slot */
    size_t nslots, cap;
};

static struct {
    uv_loop_t *loop;
    struct sb_redis *rd;           /* XREADGROUP BLOCK */
    char *consumer;
    char stream[256];
    int running, draining, reading, group_ok, pending_phase;
    char cursor[48];               /* pending phase: last id read */
    size_t inflight;               /* entries read, not yet acked */
    struct thr thr[NT_NCHAN];
    struct sb_list jobs;           /* every job in hand */
    struct rbatch *cur, *retry;    /* results to write */
    uv_check_t flush;
    uv_timer_t due, claim, stats, retry_timer;
    int due_running, claim_running, stats_running;
    char claim_cursor[48];
    int quiet_from, quiet_to, quiet_set;
    /* metrics */
    struct sb_metric *m_sends, *m_latency, *m_e2s, *m_read, *m_rejected,
        *m_stream, *m_backlog, *m_pending, *m_pending_c, *m_sched, *m_dead,
        *m_rejects, *m_queued, *m_claimed;
} D;

size_t sb_notify_inflight(void)
{
    return D.inflight;
}

static void nt_read(void);
static void nt_pump(struct thr *t);

/* ---- results -------------------------------------------------------- */

static struct rbatch *rb_new(void)
{
    struct rbatch *b = sb_calloc(1, sizeof(*b));

    sb_buf_init(&b->arena, 0); /* no cap: bounded by NT_RESULT_MAX */
    return b;
}

static void rb_free(struct rbatch *b)
{
    sb_buf_free(&b->arena);
    free(b->off);
    free(b->len);
    free(b);
}

static void rb_add(struct rbatch *b, const char *s, size_t n)
{
    if (b->nslots == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 64;
        b->off = sb_realloc(b->off, b->cap * sizeof(*b->off));
        b->len = sb_realloc(b->len, b->cap * sizeof(*b->len));
    }
    b->off[b->nslots] = b->arena.len;
    b->len[b->nslots] = n;
    sb_buf_append(&b->arena, s ? s : "", n);
    b->nslots++;
}

static void rb_adds(struct rbatch *b, const char *s)
{
    rb_add(b, s, s ? strlen(s) : 0);
}

static void rb_addll(struct rbatch *b, long long v)
{
    char n[SB_NTF_NUM];

    rb_add(b, n, (size_t)snprintf(n, sizeof(n), "%lld", v));
}

static void nt_write(struct rbatch *b);

static void nt_retry_tick(uv_timer_t *t)
{
    struct rbatch *b = D.retry;

    D.retry = NULL;
    while (b) {
        struct rbatch *next = b->next;
        b->next = NULL;
        nt_write(b);
        b = next;
    }
}

static void nt_written(redisReply *r, const char *err, void *arg)
{
    struct rbatch *b = arg;

    if (r && r->type == REDIS_REPLY_ERROR) {
        /* The script refused the batch itself (a bug, not an outage):
         * writing it again would fail again and hold these entries in
         * hand for ever. They stay pending in Redis and come back through
         * XAUTOCLAIM after claim_idle. */
        char safe[200];
        SB_ERR(NT_PLACE, "recording results refused, left pending n=%zu "
               "err=\"%s\"", b->n, sb_log_safe(r->str, safe, sizeof(safe)));
        D.inflight -= b->n;
        rb_free(b);
        nt_read();
        return;
    }
    if (err || !r) {
        /* Keep it: the outcome of real sends must not be lost (a re-send
         * would be a duplicate). Written again when Redis answers. */
        SB_WARN(NT_PLACE, "recording results failed, will retry n=%zu "
                "err=%s", b->n, err ? err : "no reply");
        if (!D.running) {
            D.inflight -= b->n;
            rb_free(b);
            return;
        }
        b->next = D.retry;
        D.retry = b;
        if (!uv_is_active((uv_handle_t *)&D.retry_timer))
            uv_timer_start(&D.retry_timer, nt_retry_tick, NT_RETRY_MS, 0);
        return;
    }
    D.inflight -= b->n;
    rb_free(b);
    nt_read();
}

static void nt_write(struct rbatch *b)
{
    const char **argv = sb_malloc((b->nslots + 5) * sizeof(*argv));
    size_t *lens = sb_malloc((b->nslots + 5) * sizeof(*lens));
    char now[SB_NTF_NUM], ret[SB_NTF_NUM], n[SB_NTF_NUM];
    int rc;

    snprintf(now, sizeof(now), "%lld", (long long)sb_now_ms());
    snprintf(ret, sizeof(ret), "%lld", sb_ntf.c->retention / 1000);
    snprintf(n, sizeof(n), "%zu", b->n);
    argv[0] = sb_ntf.prefix;
    argv[1] = sb_ntf.c->group;
    argv[2] = now;
    argv[3] = ret;
    argv[4] = n;
    for (size_t i = 0; i < 5; i++)
        lens[i] = strlen(argv[i]);
    for (size_t i = 0; i < b->nslots; i++) {
        argv[5 + i] = b->arena.data + b->off[i];
        lens[5 + i] = b->len[i];
    }
    rc = sb_redis_script(sb_ntf.cmd, "notify_result", nt_written, b, 0,
                         (int)(b->nslots + 5), argv, lens);
    free(argv);
    free(lens);
    if (rc < 0)
        nt_written(NULL, "redis unavailable", b);
}

static void nt_flush(uv_check_t *h)
{
    struct rbatch *b = D.cur;

    uv_check_stop(&D.flush);
    if (!b)
        return;
    D.cur = NULL;
    nt_write(b);
}

/* Record one outcome (strings borrowed). */
static void nt_result(struct job *j, const char *outcome, const char *reason,
                      const char *pid, int parts, long long ms,
                      long long next, long long deadline)
{
    struct rbatch *b;

    if (!D.cur)
        D.cur = rb_new();
    b = D.cur;
    rb_adds(b, j->eid);
    rb_adds(b, j->ntf);
    rb_addll(b, j->attempt);
    rb_adds(b, outcome);
    rb_adds(b, j->channel);
    rb_adds(b, j->to);
    rb_adds(b, reason);
    rb_adds(b, pid);
    rb_addll(b, parts);
    rb_addll(b, ms);
    rb_addll(b, next);
    rb_adds(b, j->r.subject);
    rb_adds(b, j->r.text);
    rb_addll(b, deadline);
    rb_adds(b, j->attempt_id);
    b->n++;
    if (b->n >= NT_RESULT_MAX) {
        D.cur = NULL;
        nt_write(b);
    } else if (!uv_is_active((uv_handle_t *)&D.flush)) {
        uv_check_start(&D.flush, nt_flush);
    }
}

/* ---- jobs --------------------------------------------------------------- */

static void job_free(struct job *j)
{
    sb_list_remove(&D.jobs, &j->all);
    sb_rendered_free(&j->r);
    free(j->meta);
    free(j);
}

/* The entry stays pending in Redis (cancelled, or we are stopping): it is
 * no longer in hand here. */
static void job_drop(struct job *j)
{
    D.inflight--;
    job_free(j);
}

static void job_done(struct job *j, const char *outcome, const char *reason,
                     const char *pid, int parts, long long ms, long long next,
                     long long deadline)
{
    nt_result(j, outcome, reason, pid, parts, ms, next, deadline);
    job_free(j);
}

static struct thr *thr_find(const char *channel)
{
    for (int i = 0; i < NT_NCHAN; i++)
        if (strcmp(channel, nt_chan_names[i]) == 0)
            return &D.thr[i];
    return NULL;
}

static void on_sent(struct sb_outmsg *msg, const struct sb_send_result *r)
{
    struct job *j = msg->user;
    struct thr *t = j->thr;
    double secs = (double)(uv_hrtime() - j->t0) / 1e9;
    int64_t now = sb_now_ms();
    const char *res;

    t->inflight--;
    if (r->status == SB_SEND_CANCELLED || !D.running) {
        job_drop(j);
        return;
    }
    switch (r->status) {
    case SB_SEND_OK:
        res = "ok";
        break;
    case SB_SEND_TEMPFAIL:
        res = "tempfail";
        break;
    default:
        res = "permfail";
        break;
    }
    sb_metric_add(D.m_sends, 1, j->channel, res);
    sb_metric_observe(D.m_latency, secs, j->channel);
    if (r->status == SB_SEND_OK) {
        long long deadline = 0;
        if (j->ch->ops->flags & SB_CHAN_REPORTS &&
            sb_ntf.c->report_deadline > 0)
            deadline = now + sb_ntf.c->report_deadline;
        if (j->attempt == 1 && j->created > 0)
            sb_metric_observe(D.m_e2s, (double)(now - j->created) / 1e3);
        job_done(j, "sent", r->reason, r->provider_id, r->parts,
                 (long long)(secs * 1000), 0, deadline);
    } else if (r->status == SB_SEND_TEMPFAIL) {
        long long next = 0;
        if (!sb_ntf_exhausted(j->tries + 1, (int)sb_ntf.c->max_attempts,
                              j->first, sb_ntf.c->max_age, now))
            next = now + sb_ntf_backoff(sb_ntf.c->backoff_min,
                                        sb_ntf.c->backoff_max, j->tries + 1,
                                        r->retry_after_ms,
                                        (double)random() / RAND_MAX);
        job_done(j, "temp", r->reason, r->provider_id, r->parts,
                 (long long)(secs * 1000), next, 0);
    } else {
        job_done(j, "perm", r->reason, r->provider_id, r->parts,
                 (long long)(secs * 1000), 0, 0);
    }
    nt_pump(t);
}

static void job_send(struct job *j)
{
    struct sb_outmsg *m = &j->msg;

    memset(m, 0, sizeof(*m));
    m->id = j->attempt_id;
    m->to = j->to;
    m->subject = j->r.subject;
    m->text = j->r.text;
    m->html = j->r.html;
    m->customer = j->customer;
    m->meta_json = j->meta;
    m->user = j;
    j->t0 = uv_hrtime();
    j->thr->inflight++;
    if (j->ch->ops->send(j->ch, m, on_sent) < 0) {
        int64_t now = sb_now_ms();
        j->thr->inflight--;
        sb_metric_add(D.m_sends, 1, j->channel, "refused");
        /* The driver is full: a temporary failure, retried soon. */
        job_done(j, "temp", "driver busy", NULL, 0, 0, now + 1000, 0);
    }
}

static void thr_timer_cb(uv_timer_t *h)
{
    nt_pump(h->data);
}

static void nt_pump(struct thr *t)
{
    uint64_t now = uv_now(D.loop);

    if (t->rate > 0) {
        t->tokens += (double)(now - t->last) * t->rate / 1000.0;
        if (t->tokens > t->burst)
            t->tokens = t->burst;
    }
    t->last = now;
    while (t->head && (t->concurrency <= 0 ||
                       (long long)t->inflight < t->concurrency)) {
        struct job *j;
        if (t->rate > 0 && t->tokens < 1.0)
            break;
        j = t->head;
        t->head = j->next;
        if (!t->head)
            t->tail = NULL;
        t->queued--;
        if (t->rate > 0)
            t->tokens -= 1.0;
        job_send(j);
    }
    if (t->head && t->rate > 0 && t->tokens < 1.0) {
        uint64_t wait = (uint64_t)((1.0 - t->tokens) * 1000.0 / t->rate) + 1;
        uv_timer_start(&t->timer, thr_timer_cb, wait, 0);
    }
}

/* Quiet hours for this job: 0, or when they end. */
static int64_t job_quiet_until(const struct job *j, int64_t now)
{
    int f, t;
    const char *tz = j->tz[0] ? j->tz : sb_ntf.c->default_timezone;

    if (!tz)
        tz = "UTC";

    if (!strcmp(j->priority, "urgent"))
        return 0;
    if (j->quiet[0]) {
        if (sb_ntf_quiet_parse_json(j->quiet, &f, &t) < 0)
            return 0;
    } else if (D.quiet_set) {
        f = D.quiet_from;
        t = D.quiet_to;
    } else {
        return 0;
    }
    return sb_ntf_quiet_until(f, t, tz, now);
}

static void job_start(struct job *j)
{
    const char *used = NULL;
    const struct sb_tpl *t;
    struct sb_tpl_env env;
    json_t *ctx, *data;
    char err[256];
    int64_t now = sb_now_ms(), until;

    until = job_quiet_until(j, now);
    if (until > 0) {
        job_done(j, "hold", "quiet hours", NULL, 0, 0, until, 0);
        return;
    }
    j->thr = thr_find(j->channel);
    j->ch = sb_outbound_channel(j->channel);
    if (!j->ch || !j->thr) {
        job_done(j, "perm", "no driver for the channel", NULL, 0, 0, 0, 0);
        return;
    }
    t = sb_tpl_find(sb_ntf.tpl, j->event, j->channel, j->locale,
                    sb_ntf.c->default_locale, &used);
    if (!t) {
        job_done(j, "perm", "no template for the channel", NULL, 0, 0, 0, 0);
        return;
    }
    data = json_loads(j->data, 0, NULL);
    ctx = json_pack("{s:o,s:{s:s,s:s},s:s,s:s,s:{s:s}}", "data",
                    data ? data : json_object(), "customer", "id",
                    j->customer, "name", j->cname, "event", j->event, "ref",
                    j->ref, "notification", "id", j->ntf);
    env.locale = used;
    env.timezone = j->tz[0] ? j->tz : sb_ntf.c->default_timezone;
    if (!ctx || sb_tpl_render(t, ctx, &env, &j->r, err, sizeof(err)) < 0) {
        json_decref(ctx);
        job_done(j, "perm", ctx ? err : "bad data", NULL, 0, 0, 0, 0);
        return;
    }
    if (!strcmp(j->channel, "webhook")) {
        json_t *meta = json_pack("{s:s,s:s,s:s,s:s,s:O}", "notification",
                                 j->ntf, "event", j->event, "ref", j->ref,
                                 "locale", used, "data",
                                 json_object_get(ctx, "data"));
        j->meta = meta ? json_dumps(meta, JSON_COMPACT) : NULL;
        json_decref(meta);
    }
    json_decref(ctx);
    if (j->thr->tail)
        j->thr->tail->next = j;
    else
        j->thr->head = j;
    j->thr->tail = j;
    j->thr->queued++;
    nt_pump(j->thr);
}

/* A "send" item of notify_take's reply -> a job. */
static struct job *job_new(const redisReply *it)
{
    static const int idx[] = {0, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14};
    size_t total = 0, n = sizeof(idx) / sizeof(idx[0]);
    struct job *j;
    char **dst[13];
    char *p;
    long long v;

    for (size_t i = 0; i < n; i++)
        total += it->element[idx[i]]->len + 1;
    j = sb_calloc(1, sizeof(*j) + total);
    dst[0] = &j->eid;
    dst[1] = &j->ntf;
    dst[2] = &j->channel;
    dst[3] = &j->to;
    dst[4] = &j->event;
    dst[5] = &j->locale;
    dst[6] = &j->tz;
    dst[7] = &j->quiet;
    dst[8] = &j->priority;
    dst[9] = &j->data;
    dst[10] = &j->ref;
    dst[11] = &j->customer;
    dst[12] = &j->cname;
    p = j->buf;
    for (size_t i = 0; i < n; i++) {
        const redisReply *e = it->element[idx[i]];
        memcpy(p, e->str ? e->str : "", e->len);
        p[e->len] = '\0';
        *dst[i] = p;
        p += e->len + 1;
    }
    j->attempt = it->element[3]->type == REDIS_REPLY_INTEGER
                     ? (int)it->element[3]->integer : 1;
    j->tries = it->element[15]->type == REDIS_REPLY_INTEGER
                   ? (int)it->element[15]->integer : 0;
    j->first = it->element[16]->type == REDIS_REPLY_INTEGER
                   ? it->element[16]->integer : 0;
    j->created = sb_parse_ll(it->element[17]->str ? it->element[17]->str
                                                  : "", &v) == 0 ? v : 0;
    snprintf(j->attempt_id, sizeof(j->attempt_id), "%s.%d", j->ntf,
             j->attempt);
    j->held_since = uv_now(D.loop);
    sb_list_push_back(&D.jobs, &j->all);
    return j;
}

/* ---- take ------------------------------------------------------------- */

struct take_call {
    size_t n;
};

static int is_str(const redisReply *r)
{
    return r && (r->type == REDIS_REPLY_STRING ||
                 r->type == REDIS_REPLY_STATUS);
}

static void nt_taken(redisReply *r, const char *err, void *arg)
{
    struct take_call *tc = arg;
    size_t sent = 0;

    if (err || !r || r->type != REDIS_REPLY_ARRAY) {
        /* The entries stay pending in Redis; XAUTOCLAIM brings them back
         * after claim_idle. */
        SB_WARN(NT_PLACE, "take failed n=%zu err=%s", tc->n,
                err ? err : (r && r->str) ? r->str : "bad reply");
        D.inflight -= tc->n;
        free(tc);
        nt_read();
        return;
    }
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *it = r->element[i];
        if (it->type == REDIS_REPLY_ARRAY && it->elements >= 18 &&
            is_str(it->element[1]) && !strcmp(it->element[1]->str, "send")) {
            int ok = 1;
            for (size_t k = 0; k < 18; k++)
                if (k != 3 && k != 15 && k != 16 && !is_str(it->element[k]))
                    ok = 0;
            if (ok) {
                job_start(job_new(it));
                sent++;
                continue;
            }
        }
        if (it->type == REDIS_REPLY_ARRAY && it->elements >= 3 &&
            is_str(it->element[1]) && !strcmp(it->element[1]->str, "error")) {
            char safe[200];
            SB_WARN(NT_PLACE, "entry rejected id=%s reason=\"%s\"",
                    it->element[0]->str,
                    sb_log_safe(it->element[2]->str, safe, sizeof(safe)));
        }
        /* skip / error: acknowledged by the script */
        D.inflight--;
    }
    /* items the script did not answer for (never expected) */
    if (r->elements < tc->n)
        D.inflight -= tc->n - r->elements;
    free(tc);
    nt_read();
}

/* Argument builder for one take call. */
struct targs {
    const char **argv;
    size_t *lens;
    size_t n, cap;
    struct sb_buf keep;     /* strings we made (offsets) */
    char **owned;
    size_t nowned;
};

static void ta_add(struct targs *a, const char *s, size_t len)
{
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 256;
        a->argv = sb_realloc(a->argv, a->cap * sizeof(*a->argv));
        a->lens = sb_realloc(a->lens, a->cap * sizeof(*a->lens));
    }
    a->argv[a->n] = s ? s : "";
    a->lens[a->n] = s ? len : 0;
    a->n++;
}

static void ta_adds(struct targs *a, const char *s)
{
    ta_add(a, s, s ? strlen(s) : 0);
}

static void ta_own(struct targs *a, char *s)
{
    a->owned = sb_realloc(a->owned, (a->nowned + 1) * sizeof(*a->owned));
    a->owned[a->nowned++] = s;
    ta_adds(a, s);
}

/* All the raw fields of an entry as a JSON object (for the rejects). */
static char *entry_fields_json(const redisReply *f)
{
    json_t *o = json_object();
    char *s;

    for (size_t i = 0; i + 1 < f->elements; i += 2) {
        const redisReply *k = f->element[i], *v = f->element[i + 1];
        if (!is_str(k) || !is_str(v))
            continue;
        json_t *js = json_stringn(v->str, v->len > 4096 ? 4096 : v->len);
        if (!js)
            js = json_string("(not UTF-8)");
        char *kk = sb_strndup(k->str, k->len > 64 ? 64 : k->len);
        if (sb_utf8_valid(kk, strlen(kk)))
            json_object_set_new(o, kk, js);
        else
            json_decref(js);
        free(kk);
    }
    s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s ? s : sb_strdup("{}");
}

/* Entries of one XREADGROUP / XAUTOCLAIM reply -> one take call. */
static void nt_take(const redisReply *entries, int claimed)
{
    const struct sb_notify_conf *c = sb_ntf.c;
    struct targs a;
    struct take_call *tc;
    char now[SB_NTF_NUM], ttl[SB_NTF_NUM], win[SB_NTF_NUM], md[SB_NTF_NUM],
        ret[SB_NTF_NUM], nbuf[SB_NTF_NUM], defs[256], avail[64];
    size_t n = 0, count_at;

    memset(&a, 0, sizeof(a));
    snprintf(now, sizeof(now), "%lld", (long long)sb_now_ms());
    snprintf(ttl, sizeof(ttl), "%lld", c->idempotency_window / 1000);
    snprintf(win, sizeof(win), "%lld", c->supersede_window);
    snprintf(md, sizeof(md), "%lld", c->max_deliveries);
    snprintf(ret, sizeof(ret), "%lld", c->retention / 1000);
    defs[0] = avail[0] = '\0';
    for (size_t i = 0; c->channels && c->channels[i]; i++) {
        strncat(defs, c->channels[i], sizeof(defs) - strlen(defs) - 2);
        strcat(defs, ",");
    }
    /* available channels; "!" marks one where urgent ignores opt-out */
    for (int i = 0; i < NT_NCHAN; i++)
        if (sb_outbound_channel(nt_chan_names[i])) {
            strcat(avail, nt_chan_names[i]);
            for (size_t k = 0; c->urgent_opt_out && c->urgent_opt_out[k];
                 k++)
                if (strcmp(c->urgent_opt_out[k], nt_chan_names[i]) == 0) {
                    strcat(avail, "!");
                    break;
                }
            strcat(avail, ",");
        }
    ta_adds(&a, sb_ntf.prefix);
    ta_adds(&a, c->group);
    ta_adds(&a, now);
    ta_adds(&a, ttl);
    ta_adds(&a, win);
    ta_adds(&a, defs);
    ta_adds(&a, avail);
    ta_adds(&a, md);
    ta_adds(&a, ret);
    count_at = a.n;
    ta_adds(&a, "0");
    for (size_t i = 0; i < entries->elements; i++) {
        const redisReply *e = entries->element[i], *f;
        struct sb_ntf_in in;
        struct sb_json_err jerr;
        const char *names[32], *vals[32];
        size_t nl[32], vl[32], nf = 0;

        /* a deleted entry comes back from XREADGROUP 0 as [id, nil] */
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 ||
            !is_str(e->element[0]))
            continue;
        f = e->element[1];
        if (f->type != REDIS_REPLY_ARRAY) {
            /* trimmed or deleted while pending: nothing to do but ack */
            ta_add(&a, e->element[0]->str, e->element[0]->len);
            ta_adds(&a, "reject");
            ta_adds(&a, claimed ? "1" : "0");
            ta_adds(&a, "entry deleted before processing");
            for (int k = 4; k < NT_TAKE_SLOTS; k++)
                ta_adds(&a, k == 9 ? "{}" : "");
            n++;
            continue;
        }
        ta_add(&a, e->element[0]->str, e->element[0]->len);
        if (f->elements == 2 && is_str(f->element[0]) &&
            !strcmp(f->element[0]->str, "ntf") && is_str(f->element[1])) {
            ta_adds(&a, "ntf");
            ta_adds(&a, claimed ? "1" : "0");
            ta_add(&a, f->element[1]->str, f->element[1]->len);
            for (int k = 4; k < NT_TAKE_SLOTS; k++)
                ta_adds(&a, "");
            n++;
            continue;
        }
        for (size_t k = 0; k + 1 < f->elements && nf < 32; k += 2) {
            if (!is_str(f->element[k]) || !is_str(f->element[k + 1]))
                continue;
            names[nf] = f->element[k]->str;
            nl[nf] = f->element[k]->len;
            vals[nf] = f->element[k + 1]->str;
            vl[nf] = f->element[k + 1]->len;
            nf++;
        }
        memset(&jerr, 0, sizeof(jerr));
        if (f->elements / 2 > 32 ||
            sb_notify_from_fields(names, nl, vals, vl, nf, &in, &jerr) < 0) {
            ta_adds(&a, "reject");
            ta_adds(&a, claimed ? "1" : "0");
            ta_own(&a, sb_strdup(f->elements / 2 > 32 ? "too many fields"
                                                      : jerr.error));
            for (int k = 4; k < NT_TAKE_SLOTS; k++) {
                if (k == 9)
                    ta_own(&a, entry_fields_json(f));
                else
                    ta_adds(&a, "");
            }
            sb_metric_add(D.m_rejected, 1);
            n++;
            continue;
        }
        ta_adds(&a, "raw");
        ta_adds(&a, claimed ? "1" : "0");
        ta_adds(&a, "");
        ta_own(&a, sb_strdup(in.event));
        ta_own(&a, sb_strdup(in.customer));
        ta_own(&a, sb_strdup(in.email));
        ta_own(&a, sb_strdup(in.phone));
        ta_own(&a, sb_strdup(in.name));
        ta_own(&a, in.data);
        ta_own(&a, in.channels);
        in.data = in.channels = NULL;
        ta_own(&a, sb_strdup(in.locale));
        ta_own(&a, sb_strdup(in.priority));
        ta_own(&a, sb_strdup(in.not_before));
        ta_own(&a, sb_strdup(in.ref));
        ta_own(&a, sb_strdup(in.idem));
        n++;
    }
    snprintf(nbuf, sizeof(nbuf), "%zu", n);
    a.argv[count_at] = nbuf;
    a.lens[count_at] = strlen(nbuf);
    if (n > 0) {
        tc = sb_calloc(1, sizeof(*tc));
        tc->n = n;
        D.inflight += n;
        sb_metric_add(D.m_read, (double)n, claimed ? "claimed" : "read");
        if (sb_redis_script(sb_ntf.cmd, "notify_take", nt_taken, tc, 0,
                            (int)a.n, a.argv, a.lens) < 0) {
            D.inflight -= n;
            free(tc);
            SB_WARN(NT_PLACE, "take refused: redis unavailable n=%zu", n);
        }
    }
    for (size_t i = 0; i < a.nowned; i++)
        free(a.owned[i]);
    free(a.owned);
    free(a.argv);
    free(a.lens);
}

/* ---- reading ---------------------------------------------------------- */

static void nt_group_created(redisReply *r, const char *err, void *arg)
{
    /* redis.c hands an error reply over in err too: BUSYGROUP (the group
     * exists: a restart, a second instance) is success. */
    if (r && (r->type != REDIS_REPLY_ERROR ||
              (r->str && strstr(r->str, "BUSYGROUP")))) {
        D.group_ok = 1;
        nt_read();
        return;
    }
    SB_WARN(NT_PLACE, "cannot create the consumer group err=%s",
            err ? err : r ? r->str : "?");
}

static void nt_group(void)
{
    const char *argv[6] = {"XGROUP", "CREATE", D.stream, sb_ntf.c->group,
                           "0", "MKSTREAM"};

    sb_redis_cmdv(D.rd, nt_group_created, NULL, 6, argv, NULL);
}

static void nt_read_done(redisReply *r, const char *err, void *arg)
{
    D.reading = 0;
    if (!D.running)
        return;
    if (!r) {
        /* down or timed out: the state callback restarts us when up */
        return;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        if (strstr(r->str, "NOGROUP")) {
            D.group_ok = 0;
            nt_group();
        } else {
            SB_WARN(NT_PLACE, "read failed err=%s", r->str);
        }
        return;
    }
    if (r->type == REDIS_REPLY_ARRAY && r->elements > 0) {
        const redisReply *s = r->element[0];
        if (s->type == REDIS_REPLY_ARRAY && s->elements >= 2 &&
            s->element[1]->type == REDIS_REPLY_ARRAY) {
            const redisReply *entries = s->element[1];
            if (D.pending_phase) {
                if (entries->elements == 0) {
                    D.pending_phase = 0;
                    SB_INFO(NT_PLACE, "own pending entries re-read");
                } else {
                    const redisReply *last =
                        entries->element[entries->elements - 1];
                    if (last->type == REDIS_REPLY_ARRAY &&
                        is_str(last->element[0]))
                        snprintf(D.cursor, sizeof(D.cursor), "%s",
                                 last->element[0]->str);
                }
            }
            nt_take(entries, 0);
        }
    }
    nt_read();
}

static void nt_read(void)
{
    const struct sb_notify_conf *c = sb_ntf.c;
    char count[SB_NTF_NUM], block[SB_NTF_NUM];
    long long room;
    const char *argv[10];

    if (!D.running || D.draining || D.reading || !D.group_ok ||
        !sb_redis_is_up(D.rd) || !sb_redis_is_up(sb_ntf.cmd))
        return;
    room = c->max_inflight - (long long)D.inflight;
    if (room < c->batch && room < c->max_inflight / 2)
        return; /* resumes as results are written */
    if (room > c->batch)
        room = c->batch;
    if (room < 1)
        return;
    snprintf(count, sizeof(count), "%lld", room);
    snprintf(block, sizeof(block), "%d", 1000);
    argv[0] = "XREADGROUP";
    argv[1] = "GROUP";
    argv[2] = c->group;
    argv[3] = D.consumer;
    argv[4] = "COUNT";
    argv[5] = count;
    if (D.pending_phase) {
        argv[6] = "STREAMS";
        argv[7] = D.stream;
        argv[8] = D.cursor;
        if (sb_redis_cmdv(D.rd, nt_read_done, NULL, 9, argv, NULL) == 0)
            D.reading = 1;
        return;
    }
    argv[6] = "BLOCK";
    argv[7] = block;
    argv[8] = "STREAMS";
    argv[9] = D.stream;
    {
        const char *full[11];
        memcpy(full, argv, sizeof(argv));
        full[10] = ">";
        if (sb_redis_cmdv(D.rd, nt_read_done, NULL, 11, full, NULL) == 0)
            D.reading = 1;
    }
}

static void on_rd_state(struct sb_redis *r, int up, void *arg)
{
    if (up && D.running) {
        if (!D.group_ok)
            nt_group();
        else
            nt_read();
    }
}

static void on_cmd_state(struct sb_redis *r, int up, void *arg)
{
    if (up && D.running) {
        nt_read();
        if (D.retry && !uv_is_active((uv_handle_t *)&D.retry_timer))
            uv_timer_start(&D.retry_timer, nt_retry_tick, 0, 0);
    }
}

/* ---- the schedule, claims, stats ---------------------------------------- */

static void nt_due_tick(uv_timer_t *t);

static void nt_due_done(redisReply *r, const char *err, void *arg)
{
    uint64_t next = (uint64_t)sb_ntf.c->poll_interval;

    D.due_running = 0;
    if (!D.running)
        return;
    if (!err && r && r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
        long long moved = r->element[0]->integer;
        long long wait = r->element[1]->integer;
        if (moved >= NT_DUE_LIMIT)
            next = 0;
        else if (wait >= 0 && (uint64_t)wait < next)
            next = (uint64_t)wait;
    }
    if (!D.draining)
        uv_timer_start(&D.due, nt_due_tick, next, 0);
}

static void nt_due_tick(uv_timer_t *t)
{
    char now[SB_NTF_NUM], lim[SB_NTF_NUM];
    const char *argv[3] = {sb_ntf.prefix, now, lim};

    if (D.due_running || D.draining)
        return;
    snprintf(now, sizeof(now), "%lld", (long long)sb_now_ms());
    snprintf(lim, sizeof(lim), "%d", NT_DUE_LIMIT);
    if (sb_redis_script(sb_ntf.cmd, "notify_due", nt_due_done, NULL, 0, 3,
                        argv, NULL) == 0)
        D.due_running = 1;
    else
        uv_timer_start(&D.due, nt_due_tick,
                       (uint64_t)sb_ntf.c->poll_interval, 0);
}

static void nt_claim_done(redisReply *r, const char *err, void *arg)
{
    D.claim_running = 0;
    if (!D.running || err || !r || r->type != REDIS_REPLY_ARRAY ||
        r->elements < 2)
        return;
    if (is_str(r->element[0]))
        snprintf(D.claim_cursor, sizeof(D.claim_cursor), "%s",
                 r->element[0]->str);
    if (r->element[1]->type == REDIS_REPLY_ARRAY &&
        r->element[1]->elements > 0) {
        /* Entries we still hold (refreshed too late) are not taken twice. */
        const redisReply *e = r->element[1];
        redisReply **keep = sb_malloc(e->elements * sizeof(*keep));
        redisReply fake;
        size_t nk = 0;

        for (size_t i = 0; i < e->elements; i++) {
            const redisReply *x = e->element[i];
            int mine = 0;
            if (x->type == REDIS_REPLY_ARRAY && x->elements >= 1 &&
                is_str(x->element[0]))
                for (struct sb_list_node *n = D.jobs.head; n && !mine;
                     n = n->next)
                    mine = strcmp(sb_container_of(n, struct job, all)->eid,
                                  x->element[0]->str) == 0;
            if (!mine)
                keep[nk++] = e->element[i];
        }
        if (nk > 0) {
            SB_NOTICE(NT_PLACE, "claimed idle entries n=%zu", nk);
            sb_metric_add(D.m_claimed, (double)nk);
            memset(&fake, 0, sizeof(fake));
            fake.type = REDIS_REPLY_ARRAY;
            fake.elements = nk;
            fake.element = keep;
            nt_take(&fake, 1);
        }
        free(keep);
    }
}

static void nt_ignore(redisReply *r, const char *err, void *arg)
{
}

/* Keep entries we hold long from looking abandoned: XCLAIM ... JUSTID
 * resets their idle time without counting a delivery. */
static void nt_heartbeat(void)
{
    uint64_t now = uv_now(D.loop), age = (uint64_t)sb_ntf.c->claim_idle / 2;
    const char *argv[6 + 100];
    size_t n = 0;

    argv[0] = "XCLAIM";
    argv[1] = D.stream;
    argv[2] = sb_ntf.c->group;
    argv[3] = D.consumer;
    argv[4] = "0";
    for (struct sb_list_node *ln = D.jobs.head; ln && n < 100;
         ln = ln->next) {
        struct job *j = sb_container_of(ln, struct job, all);

        if (now - j->held_since < age)
            continue;
        argv[5 + n++] = j->eid;
        j->held_since = now;
    }
    if (n == 0)
        return;
    argv[5 + n] = "JUSTID";
    sb_redis_cmdv(sb_ntf.cmd, nt_ignore, NULL, (int)(n + 6), argv, NULL);
}

static void nt_claim_tick(uv_timer_t *t)
{
    char idle[SB_NTF_NUM], cnt[SB_NTF_NUM];
    const char *argv[8];

    if (D.draining || !D.group_ok)
        return;
    nt_heartbeat();
    if (D.claim_running || D.inflight + NT_CLAIM_COUNT >
                               (size_t)sb_ntf.c->max_inflight)
        return;
    snprintf(idle, sizeof(idle), "%lld", sb_ntf.c->claim_idle);
    snprintf(cnt, sizeof(cnt), "%d", NT_CLAIM_COUNT);
    argv[0] = "XAUTOCLAIM";
    argv[1] = D.stream;
    argv[2] = sb_ntf.c->group;
    argv[3] = D.consumer;
    argv[4] = idle;
    argv[5] = D.claim_cursor;
    argv[6] = "COUNT";
    argv[7] = cnt;
    if (sb_redis_cmdv(sb_ntf.cmd, nt_claim_done, NULL, 8, argv, NULL) == 0)
        D.claim_running = 1;
}

static long long rint_at(const redisReply *r, size_t i)
{
    if (r->elements <= i)
        return 0;
    if (r->element[i]->type == REDIS_REPLY_INTEGER)
        return r->element[i]->integer;
    return 0;
}

static json_t *stats_json(const redisReply *r)
{
    json_t *o, *cons = json_array();
    const redisReply *c;

    if (r->type != REDIS_REPLY_ARRAY || r->elements < 8)
        return NULL;
    c = r->element[6];
    for (size_t i = 0; c->type == REDIS_REPLY_ARRAY && i + 2 < c->elements;
         i += 3)
        json_array_append_new(
            cons, json_pack("{s:s,s:I,s:I}", "name",
                            is_str(c->element[i]) ? c->element[i]->str : "",
                            "pending", (json_int_t)rint_at(c, i + 1),
                            "idle_ms", (json_int_t)rint_at(c, i + 2)));
    o = json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:o}", "stream",
                  (json_int_t)rint_at(r, 0), "backlog",
                  (json_int_t)rint_at(r, 1), "pending",
                  (json_int_t)rint_at(r, 2), "scheduled",
                  (json_int_t)rint_at(r, 3), "dead",
                  (json_int_t)rint_at(r, 4), "rejects",
                  (json_int_t)rint_at(r, 5), "consumers", cons);
    return o;
}

static void stats_gauges(const redisReply *r)
{
    const redisReply *c = r->element[6];

    sb_metric_set(D.m_stream, (double)rint_at(r, 0));
    sb_metric_set(D.m_backlog, (double)rint_at(r, 1));
    sb_metric_set(D.m_pending, (double)rint_at(r, 2));
    sb_metric_set(D.m_sched, (double)rint_at(r, 3));
    sb_metric_set(D.m_dead, (double)rint_at(r, 4));
    sb_metric_set(D.m_rejects, (double)rint_at(r, 5));
    for (size_t i = 0; c->type == REDIS_REPLY_ARRAY && i + 2 < c->elements;
         i += 3)
        if (is_str(c->element[i]))
            sb_metric_set(D.m_pending_c, (double)rint_at(c, i + 1),
                          c->element[i]->str);
    for (int i = 0; i < NT_NCHAN; i++)
        sb_metric_set(D.m_queued, (double)D.thr[i].queued, nt_chan_names[i]);
}

static void nt_stats_done(redisReply *r, const char *err, void *arg)
{
    D.stats_running = 0;
    if (err || !r || r->type != REDIS_REPLY_ARRAY || r->elements < 8)
        return;
    stats_gauges(r);
}

static void nt_stats_tick(uv_timer_t *t)
{
    const char *argv[3] = {sb_ntf.prefix, sb_ntf.c->group,
                           sb_ntf.c->trim ? "1" : "0"};

    if (D.stats_running)
        return;
    if (sb_redis_script(sb_ntf.cmd, "notify_stats", nt_stats_done, NULL, 0,
                        3, argv, NULL) == 0)
        D.stats_running = 1;
}

struct stats_call {
    sb_store_json_cb *cb;
    void *arg;
};

static void nt_stats_reply(redisReply *r, const char *err, void *arg)
{
    struct stats_call *sc = arg;
    json_t *o = NULL, *chans;

    if (!err && r && r->type == REDIS_REPLY_ARRAY)
        o = stats_json(r);
    if (!o) {
        sc->cb(SB_STORE_UNAVAILABLE, NULL, "redis unavailable", sc->arg);
        free(sc);
        return;
    }
    chans = json_object();
    for (int i = 0; i < NT_NCHAN; i++)
        json_object_set_new(
            chans, nt_chan_names[i],
            json_pack("{s:I,s:I,s:b}", "queued", (json_int_t)D.thr[i].queued,
                      "inflight", (json_int_t)D.thr[i].inflight, "driver",
                      sb_outbound_channel(nt_chan_names[i]) != NULL));
    json_object_set_new(o, "channels", chans);
    json_object_set_new(o, "inflight", json_integer((json_int_t)D.inflight));
    sc->cb(SB_STORE_OK, o, NULL, sc->arg);
    free(sc);
}

int sb_notify_stats(sb_store_json_cb *cb, void *arg)
{
    struct stats_call *sc;
    const char *argv[3];

    if (!sb_ntf.api || !sb_ntf.c)
        return -1;
    argv[0] = sb_ntf.prefix;
    argv[1] = sb_ntf.c->group;
    argv[2] = "0";
    sc = sb_calloc(1, sizeof(*sc));
    sc->cb = cb;
    sc->arg = arg;
    if (sb_redis_script(sb_ntf.api, "notify_stats", nt_stats_reply, sc, 0, 3,
                        argv, NULL) < 0) {
        free(sc);
        return -1;
    }
    return 0;
}

/* ---- life cycle ------------------------------------------------------------ */

static void nt_apply_limits(const struct sb_config *conf)
{
    for (int i = 0; i < NT_NCHAN; i++) {
        struct thr *t = &D.thr[i];
        t->rate = t->burst = 0;
        t->concurrency = 0;
    }
    for (size_t i = 0; i < sb_config_count(conf, "throttle"); i++) {
        const char *name;
        const struct throttle_conf *tc =
            sb_config_nth(conf, "throttle", i, &name);
        struct thr *t = name ? thr_find(name) : NULL;
        if (!t) {
            SB_WARN(NT_PLACE, "throttle for an unknown channel name=%s",
                    name ? name : "");
            continue;
        }
        t->rate = (double)tc->rate;
        t->burst = tc->burst > 0 ? (double)tc->burst : (double)tc->rate;
        if (t->burst < 1 && t->rate > 0)
            t->burst = 1;
        t->tokens = t->burst;
        t->concurrency = tc->concurrency;
    }
}

int sb_notify_config(const struct sb_config *conf, char *err, size_t errlen)
{
    const struct sb_notify_conf *c = sb_config_get(conf, "notify");
    struct sb_tpl_set *set;

    int r = 0;

    /* The rest of the section applies even when the templates do not
     * load: the running set stays then. */
    sb_ntf.c = c;
    set = sb_tpl_load(c->templates, err, errlen);
    if (set) {
        sb_tpl_free(sb_ntf.tpl);
        sb_ntf.tpl = set;
        SB_INFO(NT_PLACE, "templates loaded dir=%s count=%zu", c->templates,
                sb_tpl_count(set));
    } else {
        r = -1;
    }
    D.quiet_set = c->quiet_hours && c->quiet_hours[0] &&
                  sb_ntf_quiet_parse(c->quiet_hours, &D.quiet_from,
                                     &D.quiet_to) == 0 &&
                  D.quiet_from != D.quiet_to;
    free(sb_ntf.default_country);
    sb_ntf.default_country = sb_strdup(
        ((const struct sb_core_conf *)sb_config_get(conf, "core"))
            ->default_country);
    if (D.loop)
        nt_apply_limits(conf);
    return r;
}

static void nt_metrics(void)
{
    static const double lat[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
    static const double e2s[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                 1, 2.5, 5, 10, 30, 60, 300};

    if (D.m_sends)
        return;
    D.m_sends = sb_metric_counter("sb_notify_sends_total",
                                  "Notification sends by channel and result "
                                  "(ok, tempfail, permfail, refused)",
                                  "channel,result");
    D.m_latency = sb_metric_histogram("sb_notify_send_seconds",
                                      "Time a driver took to accept or fail "
                                      "a send",
                                      "channel", lat,
                                      sizeof(lat) / sizeof(lat[0]));
    D.m_e2s = sb_metric_histogram("sb_notify_enqueue_to_send_seconds",
                                  "From acceptance to the first successful "
                                  "send",
                                  NULL, e2s, sizeof(e2s) / sizeof(e2s[0]));
    D.m_read = sb_metric_counter("sb_notify_entries_read_total",
                                 "Stream entries taken (read or claimed "
                                 "from a silent consumer)",
                                 "how");
    D.m_claimed = sb_metric_counter("sb_notify_claimed_total",
                                    "Entries taken over from an idle "
                                    "consumer",
                                    NULL);
    D.m_rejected = sb_metric_counter("sb_notify_rejected_total",
                                     "Stream entries that failed validation "
                                     "(sent to the rejects stream)",
                                     NULL);
    D.m_stream = sb_metric_gauge("sb_notify_stream_length",
                                 "Entries in the work stream", NULL);
    D.m_backlog = sb_metric_gauge("sb_notify_backlog",
                                  "Entries not yet read by the group", NULL);
    D.m_pending = sb_metric_gauge("sb_notify_pending",
                                  "Entries read and not yet acknowledged",
                                  NULL);
    D.m_pending_c = sb_metric_gauge("sb_notify_pending_consumer",
                                    "Pending entries per consumer",
                                    "consumer");
    D.m_sched = sb_metric_gauge("sb_notify_scheduled",
                                "Notifications waiting on the schedule "
                                "(retries, quiet hours, not_before)",
                                NULL);
    D.m_dead = sb_metric_gauge("sb_notify_dead_letters",
                               "Entries in the dead-letter stream", NULL);
    D.m_rejects = sb_metric_gauge("sb_notify_rejects",
                                  "Entries in the rejects stream", NULL);
    D.m_queued = sb_metric_gauge("sb_notify_throttled",
                                 "Sends waiting for their channel's rate or "
                                 "concurrency limit",
                                 "channel");
}

static double inflight_fn(void *arg)
{
    return (double)D.inflight;
}

static void nt_consumer_name(const struct sb_config *conf)
{
    const struct sb_notify_conf *c = sb_ntf.c;
    char host[256];
    long long port = 0;

    if (c->consumer && c->consumer[0]) {
        D.consumer = sb_strdup(c->consumer);
        return;
    }
    if (gethostname(host, sizeof(host)) < 0)
        strcpy(host, "switchboard");
    host[sizeof(host) - 1] = '\0';
    if (sb_config_count(conf, "listener") > 0) {
        const struct sb_listener_conf *l =
            sb_config_nth(conf, "listener", 0, NULL);
        port = l->port;
    }
    D.consumer = sb_asprintf("%s-%lld", host, port);
}

int sb_notify_init(uv_loop_t *loop, struct sb_redis *main_conn,
                   const struct sb_config *conf)
{
    const struct sb_redis_conf *rc = sb_config_get(conf, "redis");
    struct sb_redis_conf rconf;
    char err[512];

    sb_ntf.api = main_conn;
    sb_ntf.prefix = sb_strdup(rc->prefix && *rc->prefix ? rc->prefix : "sb:");
    snprintf(D.stream, sizeof(D.stream), "%snotify", sb_ntf.prefix);
    if (sb_notify_config(conf, err, sizeof(err)) < 0) {
        SB_ERR(NT_PLACE, "templates: %s", err);
        return -1;
    }
    if (sb_tpl_count(sb_ntf.tpl) == 0)
        SB_WARN(NT_PLACE, "no templates in %s: every notification will be "
                "refused", sb_ntf.c->templates);
    D.loop = loop;
    nt_apply_limits(conf);
    nt_metrics();
    sb_metric_gauge_fn("sb_notify_inflight",
                       "Notification entries in hand (read, not recorded)",
                       inflight_fn, NULL);
    for (int i = 0; i < NT_NCHAN; i++) {
        D.thr[i].name = nt_chan_names[i];
        D.thr[i].last = uv_now(loop);
        uv_timer_init(loop, &D.thr[i].timer);
        D.thr[i].timer.data = &D.thr[i];
    }
    sb_ntf.cmd = sb_redis_new(loop, rc, "notify");
    sb_redis_on_state(sb_ntf.cmd, on_cmd_state, NULL);
    uv_check_init(loop, &D.flush);
    uv_timer_init(loop, &D.due);
    uv_timer_init(loop, &D.claim);
    uv_timer_init(loop, &D.stats);
    uv_timer_init(loop, &D.retry_timer);
    D.running = 1;
    strcpy(D.claim_cursor, "0-0");
    if (!sb_ntf.c->enabled) {
        SB_NOTICE(NT_PLACE, "dispatcher disabled: accepting only");
        return 0;
    }
    nt_consumer_name(conf);
    /* The reader blocks up to 1 s per XREADGROUP: its connection's
     * command timeout must be longer than that. */
    rconf = *rc;
    if (rconf.command_timeout < 5000)
        rconf.command_timeout = 5000;
    D.rd = sb_redis_new(loop, &rconf, "notify-read");
    sb_redis_on_state(D.rd, on_rd_state, NULL);
    D.pending_phase = 1;
    strcpy(D.cursor, "0-0");
    uv_timer_start(&D.due, nt_due_tick, 0, 0);
    uv_timer_start(&D.claim, nt_claim_tick,
                   (uint64_t)sb_ntf.c->claim_interval,
                   (uint64_t)sb_ntf.c->claim_interval);
    uv_timer_start(&D.stats, nt_stats_tick, 100,
                   (uint64_t)sb_ntf.c->stats_interval);
    SB_INFO(NT_PLACE, "dispatcher consumer=%s group=%s stream=%s",
            D.consumer, sb_ntf.c->group, D.stream);
    return 0;
}

void sb_notify_drain(void)
{
    D.draining = 1;
    if (D.loop) {
        uv_timer_stop(&D.due);
        uv_timer_stop(&D.claim);
    }
}

static void nt_close(uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

void sb_notify_stop(void)
{
    if (!D.loop)
        return;
    D.running = 0;
    /* Jobs still queued behind a throttle: left pending in Redis. */
    for (int i = 0; i < NT_NCHAN; i++) {
        struct thr *t = &D.thr[i];
        while (t->head) {
            struct job *j = t->head;
            t->head = j->next;
            job_drop(j);
        }
        t->tail = NULL;
        t->queued = 0;
        nt_close((uv_handle_t *)&t->timer);
    }
    if (D.cur) {
        nt_write(D.cur); /* a last try; fails fast when Redis is gone */
        D.cur = NULL;
    }
    while (D.retry) {
        struct rbatch *b = D.retry;
        D.retry = b->next;
        rb_free(b);
    }
    nt_close((uv_handle_t *)&D.flush);
    nt_close((uv_handle_t *)&D.due);
    nt_close((uv_handle_t *)&D.claim);
    nt_close((uv_handle_t *)&D.stats);
    nt_close((uv_handle_t *)&D.retry_timer);
    if (D.rd)
        sb_redis_close(D.rd);
    if (sb_ntf.cmd)
        sb_redis_close(sb_ntf.cmd);
    D.rd = NULL;
    sb_ntf.cmd = NULL;
    sb_ntf.api = NULL;
    sb_tpl_free(sb_ntf.tpl);
    sb_ntf.tpl = NULL;
    free(D.consumer);
    free(sb_ntf.prefix);
    free(sb_ntf.default_country);
    D.consumer = sb_ntf.prefix = sb_ntf.default_country = NULL;
    D.loop = NULL;
}
