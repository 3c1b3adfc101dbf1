/* events.c - one pub/sub subscriber per daemon, fanned out to listeners. */
#include "events.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "metrics.h"

static struct {
    struct {
        sb_event_fn *fn;
        void *arg;
    } listeners[8];
    size_t n;
    struct sb_redis *sub;
    struct sb_redis *pub; /* for sb_events_publish(NULL, ...) */
    char channel[80];
    struct sb_metric *m_events;
} E;

int sb_events_listen(sb_event_fn *fn, void *arg)
{
    if (E.n == sizeof(E.listeners) / sizeof(E.listeners[0]))
        return -1;
    E.listeners[E.n].fn = fn;
    E.listeners[E.n].arg = arg;
    E.n++;
    return 0;
}

static void on_message(const char *channel, const char *payload, size_t len,
                       void *arg)
{
    json_error_t jerr;
    json_t *ev = json_loadb(payload, len, 0, &jerr);

    if (!ev || !json_is_string(json_object_get(ev, "type"))) {
        SB_WARN("core.events", "malformed event dropped channel=%s", channel);
        json_decref(ev);
        return;
    }
    sb_metric_add(E.m_events, 1,
                  json_string_value(json_object_get(ev, "type")));
    for (size_t i = 0; i < E.n; i++)
        E.listeners[i].fn(ev, E.listeners[i].arg);
    json_decref(ev);
}

void sb_events_start(uv_loop_t *loop, const struct sb_redis_conf *conf,
                     const char *prefix)
{
    const char *chans[2];

    snprintf(E.channel, sizeof(E.channel), "%sevents", prefix);
    chans[0] = E.channel;
    chans[1] = NULL;
    E.m_events = sb_metric_counter("sb_events_received_total",
                                   "Live events received from Redis pub/sub",
                                   "type");
    E.sub = sb_redis_subscriber(loop, conf, "events", chans, on_message, NULL);
    E.pub = sb_redis_new(loop, conf, "events-pub");
}

static void on_published(redisReply *reply, const char *err, void *arg)
{
    if (!reply || reply->type == REDIS_REPLY_ERROR)
        SB_DEBUG("core.events", "publish failed err=%s", err ? err : "-");
}

int sb_events_publish(struct sb_redis *r, const json_t *ev)
{
    char *s;
    const char *argv[3] = {"PUBLISH", E.channel, NULL};
    size_t lens[3];
    int rc;

    if (!r)
        r = E.pub;
    if (!r || !(s = json_dumps(ev, JSON_COMPACT)))
        return -1;
    argv[2] = s;
    lens[0] = 7;
    lens[1] = strlen(E.channel);
    lens[2] = strlen(s);
    rc = sb_redis_cmdv(r, on_published, NULL, 3, argv, lens);
    free(s);
    return rc;
}

void sb_events_stop(void)
{
    if (E.sub)
        sb_redis_close(E.sub);
    if (E.pub)
        sb_redis_close(E.pub);
    E.sub = NULL;
    E.pub = NULL;
}
