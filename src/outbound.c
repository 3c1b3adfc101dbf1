/* outbound.c - agent replies through the customer's channel (outbound.h).
 *
 * A reply is a small state machine driven by completions: read the
 * conversation, read the customer, then try each candidate channel in turn
 * through its driver's send(); the first OK is logged with
 * sb_contact_ingest and answered. The message handed to a driver is owned
 * by the reply until the driver's completion (channel.h rule 2).
 */
#include "outbound.h"

#include <stdlib.h>
#include <string.h>

#include "channel.h"
#include "log.h"
#include "metrics.h"

#define OB_PLACE "core.outbound"
#define OB_MAX_TRIES 3

static const struct sb_conf_key channels_keys[] = {
    {"chat", SB_CONF_STR, offsetof(struct sb_channels_conf, chat), "chat",
     0, 32, NULL, SB_CONF_RELOAD, "driver that carries chat replies"},
    {"email", SB_CONF_STR, offsetof(struct sb_channels_conf, email), NULL, 0,
     32, NULL, SB_CONF_RELOAD,
     "driver that carries e-mail (file in development)"},
    {"sms", SB_CONF_STR, offsetof(struct sb_channels_conf, sms), NULL, 0, 32,
     NULL, SB_CONF_RELOAD, "driver that carries SMS (file in development)"},
    {"webhook", SB_CONF_STR, offsetof(struct sb_channels_conf, webhook),
     "webhook", 0, 32, NULL, SB_CONF_RELOAD,
     "driver that carries notifications to customers' bots (notifications "
     "only: agents' replies never fall back to it)"},
    {NULL, 0, 0, NULL, 0, 0, NULL, 0, NULL},
};

const struct sb_conf_section sb_channels_conf_section = {
    "channels", 0, sizeof(struct sb_channels_conf), channels_keys,
    "Which driver carries each customer channel. A channel without a\n"
    "driver is not reachable: replies fall back to the next one.",
    NULL,
};

static struct {
    char *drivers[4]; /* chat, email, sms, webhook */
    struct sb_metric *m_replies;
} O;

static const char *const chan_names[] = {"chat", "email", "sms", "webhook"};

void sb_outbound_config(const struct sb_config *conf)
{
    const struct sb_channels_conf *c = sb_config_get(conf, "channels");
    const char *v[4] = {c->chat, c->email, c->sms, c->webhook};

    for (int i = 0; i < 4; i++) {
        free(O.drivers[i]);
        O.drivers[i] = v[i] && *v[i] ? sb_strdup(v[i]) : NULL;
    }
    if (!O.m_replies)
        O.m_replies = sb_metric_counter("sb_replies_total",
                                        "Agent replies by channel used and "
                                        "result",
                                        "channel,result");
}

void sb_outbound_check(void)
{
    /* email and sms have no default driver: a name there was written on
     * purpose; chat and webhook name theirs by default (often unused) */
    for (int i = 0; i < 4; i++)
        if (O.drivers[i] && !sb_channel_get(O.drivers[i])) {
            if (i == 1 || i == 2)
                SB_WARN(OB_PLACE,
                        "[channels] %s = %s, but no such driver is running "
                        "(is its [%s] section written?): %s is unreachable",
                        chan_names[i], O.drivers[i], O.drivers[i],
                        chan_names[i]);
            else
                SB_INFO(OB_PLACE, "channel %s is off (no [%s] section)",
                        chan_names[i], O.drivers[i]);
        }
}

struct sb_channel *sb_outbound_channel(const char *channel)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(channel, chan_names[i]) == 0)
            return O.drivers[i] ? sb_channel_get(O.drivers[i]) : NULL;
    return NULL;
}

static int chan_index(const char *name)
{
    for (int i = 0; i < 3; i++)
        if (name && strcmp(name, chan_names[i]) == 0)
            return i;
    return -1;
}

struct reply {
    sb_store_json_cb *cb;
    void *arg;
    char *conv, *agent, *agent_name, *text, *client_id, *customer;
    char *conv_channel;
    char *via; /* the conversation's via, for its own channel */
    /* candidates: channel index and address, in order */
    int cand[3];
    char *addr[3];
    int ncand, next;
    json_t *tried;
    struct sb_outmsg msg;
    char msg_id[64];
    int used; /* channel index of the accepted send */
    char *provider_id;
    int parts; /* what the driver billed (SMS parts), 0 when n/a */
};

static void reply_free(struct reply *r)
{
    free(r->conv);
    free(r->agent);
    free(r->agent_name);
    free(r->text);
    free(r->client_id);
    free(r->customer);
    free(r->conv_channel);
    free(r->via);
    for (int i = 0; i < 3; i++)
        free(r->addr[i]);
    free(r->provider_id);
    json_decref(r->tried);
    free(r);
}

static void finish(struct reply *r, enum sb_store_status st, json_t *res,
                   const char *err)
{
    r->cb(st, res, err, r->arg);
    reply_free(r);
}

static void try_next(struct reply *r);

static void on_logged(enum sb_store_status st,
                      const struct sb_contact_result *res, const char *err,
                      void *arg)
{
    struct reply *r = arg;
    json_t *j;

    if (st != SB_STORE_OK) {
        /* Sent but not recorded: say so loudly; the caller gets the
         * store's status and may retry with the same client id. */
        SB_ERR(OB_PLACE, "reply sent but not logged conversation=%s err=%s",
               r->conv, err ? err : "-");
        finish(r, st, NULL, err);
        return;
    }
    j = json_pack("{s:s, s:s, s:s, s:O, s:b}", "contact", res->contact_id,
                  "conversation", r->conv, "channel", chan_names[r->used],
                  "tried", r->tried, "duplicate", res->duplicate);
    finish(r, SB_STORE_OK, j, NULL);
}

static void log_reply(struct reply *r)
{
    struct sb_contact_in in;
    json_t *f = json_pack("{s:s, s:O}", "via", chan_names[r->used], "tried",
                          r->tried);
    char *fields;
    char src[256];

    if (r->parts > 0)
        json_object_set_new(f, "parts", json_integer(r->parts));
    fields = json_dumps(f, JSON_COMPACT);

    memset(&in, 0, sizeof(in));
    in.channel = chan_names[r->used];
    in.direction = "out";
    in.type = "message";
    in.conversation = r->conv;
    in.text = r->text;
    in.text_len = strlen(r->text);
    in.agent = r->agent;
    in.provider_id = r->provider_id;
    in.fields_json = fields;
    if (r->client_id) {
        snprintf(src, sizeof(src), "reply:%s:%s:%s", r->conv, r->agent,
                 r->client_id);
        in.source_id = src;
    }
    if (sb_contact_ingest(&in, on_logged, r) < 0) {
        SB_ERR(OB_PLACE, "reply sent but not logged conversation=%s "
                         "err=redis unavailable",
               r->conv);
        finish(r, SB_STORE_UNAVAILABLE, NULL, "redis unavailable");
    }
    free(fields);
    json_decref(f);
}

static void on_sent(struct sb_outmsg *msg, const struct sb_send_result *res)
{
    struct reply *r = msg->user;
    int ch = r->cand[r->next - 1];
    static const char *const st[] = {"ok", "tempfail", "permfail",
                                     "cancelled"};

    json_array_append_new(r->tried,
                          json_pack("{s:s, s:s, s:s}", "channel",
                                    chan_names[ch], "result", st[res->status],
                                    "reason",
                                    res->reason ? res->reason : ""));
    sb_metric_add(O.m_replies, 1, chan_names[ch], st[res->status]);
    if (res->status == SB_SEND_OK) {
        r->used = ch;
        if (res->provider_id)
            r->provider_id = sb_strdup(res->provider_id);
        r->parts = res->parts;
        log_reply(r);
        return;
    }
    if (res->status == SB_SEND_CANCELLED) {
        finish(r, SB_STORE_UNAVAILABLE, NULL, "shutting down");
        return;
    }
    try_next(r);
}

static void try_next(struct reply *r)
{
    while (r->next < r->ncand) {
        int ch = r->cand[r->next];
        const char *addr = r->addr[r->next];
        struct sb_channel *drv = sb_channel_get(O.drivers[ch]);
        r->next++;
        if (!drv) {
            json_array_append_new(
                r->tried, json_pack("{s:s, s:s, s:s}", "channel",
                                    chan_names[ch], "result", "unavailable",
                                    "reason", "driver not running"));
            continue;
        }
        memset(&r->msg, 0, sizeof(r->msg));
        snprintf(r->msg_id, sizeof(r->msg_id), "reply-%s-%lld", r->conv,
                 (long long)sb_now_ms());
        r->msg.id = r->msg_id;
        r->msg.to = addr;
        r->msg.from = r->agent_name;
        r->msg.text = r->text;
        r->msg.conversation = r->conv;
        if (r->via && strcmp(chan_names[ch], r->conv_channel) == 0)
            r->msg.via = r->via;
        r->msg.customer = r->customer;
        r->msg.user = r;
        if (drv->ops->send(drv, &r->msg, on_sent) == 0)
            return;
        json_array_append_new(r->tried,
                              json_pack("{s:s, s:s, s:s}", "channel",
                                        chan_names[ch], "result", "refused",
                                        "reason", "driver busy"));
    }
    {
        char *t = json_dumps(r->tried, JSON_COMPACT);
        char err[512];
        snprintf(err, sizeof(err), "customer not reachable (tried: %s)",
                 t ? t : "[]");
        free(t);
        finish(r, SB_STORE_CONFLICT, NULL, err);
    }
}

/* Candidates: the conversation's channel, then the preferred order, then
 * every other channel, each once, each with an identity to send to (chat
 * always can: the driver finds the visitor by conversation). */
static void plan(struct reply *r, json_t *cust)
{
    json_t *ids = json_object_get(cust, "identities");
    json_t *prefs = json_object_get(cust, "preferences");
    json_t *order = json_object_get(prefs, "order");
    json_t *optout = json_object_get(prefs, "opt_out");
    const char *seq[10];
    size_t n = 0, i;
    json_t *v;

    seq[n++] = r->conv_channel;
    json_array_foreach(order, i, v)
    {
        if (n < 6 && json_is_string(v))
            seq[n++] = json_string_value(v);
    }
    for (int k = 0; k < 3; k++)
        seq[n++] = chan_names[k];
    for (i = 0; i < n && r->ncand < 3; i++) {
        int ch = chan_index(seq[i]), dup = 0;
        json_t *list;
        if (ch < 0 || !O.drivers[ch])
            continue;
        for (int k = 0; k < r->ncand; k++)
            dup |= r->cand[k] == ch;
        if (dup || json_object_get(optout, chan_names[ch]))
            continue;
        /* a customer's numbers are "phone" identities, reached by SMS */
        list = json_object_get(ids, ch == 2 ? "phone" : chan_names[ch]);
        if (ch == 0) {
            /* chat: only the conversation's own visitor can be reached */
            if (strcmp(r->conv_channel, "chat") != 0)
                continue;
            r->addr[r->ncand] = NULL;
        } else if (json_array_size(list) > 0) {
            r->addr[r->ncand] =
                sb_strdup(json_string_value(json_array_get(list, 0)));
        } else {
            continue;
        }
        r->cand[r->ncand++] = ch;
    }
}

static void on_customer(enum sb_store_status st, json_t *cust,
                        const char *err, void *arg)
{
    struct reply *r = arg;

    if (st != SB_STORE_OK) {
        finish(r, st, NULL, err);
        json_decref(cust);
        return;
    }
    plan(r, cust);
    json_decref(cust);
    try_next(r);
}

static void on_conv(enum sb_store_status st, json_t *conv, const char *err,
                    void *arg)
{
    struct reply *r = arg;
    const char *state = json_string_value(json_object_get(conv, "state"));
    const char *cust = json_string_value(json_object_get(conv, "customer"));
    const char *ch = json_string_value(json_object_get(conv, "channel"));

    if (st != SB_STORE_OK) {
        finish(r, st, NULL, err);
        json_decref(conv);
        return;
    }
    if (state && strcmp(state, "resolved") == 0) {
        json_decref(conv);
        finish(r, SB_STORE_CONFLICT, NULL, "conversation resolved");
        return;
    }
    r->customer = sb_strdup(cust ? cust : "");
    r->conv_channel = sb_strdup(ch ? ch : "");
    {
        const char *via = json_string_value(json_object_get(conv, "via"));
        r->via = via && *via ? sb_strdup(via) : NULL;
    }
    json_decref(conv);
    if (sb_customer_get(r->customer, on_customer, r) < 0)
        finish(r, SB_STORE_UNAVAILABLE, NULL, "redis unavailable");
}

int sb_outbound_reply(const char *conv, const char *agent,
                      const char *agent_name, const char *text,
                      const char *client_id, sb_store_json_cb *cb, void *arg)
{
    struct reply *r = sb_calloc(1, sizeof(*r));

    r->cb = cb;
    r->arg = arg;
    r->conv = sb_strdup(conv);
    r->agent = sb_strdup(agent);
    r->agent_name = sb_strdup(agent_name && *agent_name ? agent_name : agent);
    r->text = sb_strdup(text);
    r->client_id = client_id ? sb_strdup(client_id) : NULL;
    r->tried = json_array();
    if (sb_conversation_get(conv, on_conv, r) < 0) {
        reply_free(r);
        return -1;
    }
    return 0;
}
