/* notify.h - order and service notifications: accept, queue, dispatch.
 *
 * Business systems tell switchboard that something happened (order.paid,
 * service.updated, ...) through POST /api/v1/notifications or by XADDing
 * the same fields to the stream <prefix>notify. The dispatcher reads that
 * stream with a consumer group (any number of instances share it), renders
 * the event's template for the chosen channel and locale (template.h),
 * sends through the channel driver (channel.h), and records every attempt.
 * Temporary failures wait on a schedule in Redis with exponential backoff;
 * permanent ones, exhausted retries and "not delivered" reports move to
 * the customer's next channel; when none is left the notification becomes
 * a dead letter. The state machine, the Redis layout and the stream fields
 * are documented in docs/notifications.md.
 *
 * At-least-once: an entry is acknowledged only after its outcome is in
 * Redis. A crash between a send and its record can send that one again;
 * nothing accepted is ever dropped.
 */
#ifndef SB_NOTIFY_H
#define SB_NOTIFY_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "json.h"
#include "redis.h"
#include "store.h"

extern const struct sb_conf_section sb_notify_conf_section;   /* [notify] */
extern const struct sb_conf_section sb_throttle_conf_section; /* [throttle] */

/* One notification request, validated and normalised; all strings, ""
 * when absent (the form both doors share). */
struct sb_ntf_in {
    char event[65];
    char customer[48];
    char email[320];
    char phone[32];
    char name[257];
    char locale[17];
    char priority[8];      /* "normal" or "urgent" */
    char not_before[24];   /* epoch ms as text, or "" */
    char ref[129];
    char idem[201];
    char *data;            /* compact JSON object text (owned) */
    char *channels;        /* JSON array text or "" (owned) */
};

void sb_ntf_in_free(struct sb_ntf_in *in);

/* Validate the JSON body of POST /api/v1/notifications into *in. 0, or -1
 * with the reason and field in err (unknown event, no template, a missing
 * template variable, bad recipient, bad not_before, ...). */
int sb_notify_from_json(json_t *body, struct sb_ntf_in *in,
                        struct sb_json_err *err);

/* The same for a stream entry's fields (name/value pairs, borrowed). */
int sb_notify_from_fields(const char *const *names, const size_t *nlens,
                          const char *const *values, const size_t *vlens,
                          size_t n, struct sb_ntf_in *in,
                          struct sb_json_err *err);

/* Start: templates, the stream's group, the reader connection, timers.
 * main is the shared command connection (borrowed). 0 or -1 (logged). */
int sb_notify_init(uv_loop_t *loop, struct sb_redis *main,
                   const struct sb_config *conf);
/* SIGHUP: templates (a broken set keeps the old one), limits, policy. */
int sb_notify_config(const struct sb_config *conf, char *err, size_t errlen);
/* Drain: stop reading new entries; sends in flight finish. */
void sb_notify_drain(void);
/* Entries read and not yet acknowledged (sends and records in flight). */
size_t sb_notify_inflight(void);
/* Stop everything now; unfinished entries stay pending in Redis. */
void sb_notify_stop(void);

/* Accept a validated notification (borrowed). Result:
 * {"id","duplicate":bool,"customer","state"}; NOTFOUND for an unknown
 * customer. -1 when Redis is unavailable. */
int sb_notify_submit(const struct sb_ntf_in *in, sb_store_json_cb *cb,
                     void *arg);
/* {"id","state","event",...,"attempts":[{...}]}; NOTFOUND. */
int sb_notify_get(const char *id, sb_store_json_cb *cb, void *arg);
/* Dead letters, newest first: {"entries":[{"id","notification","reason",
 * "event","customer","at"}],"next_before":id|null}. */
int sb_notify_dlq_list(const char *before, int limit, sb_store_json_cb *cb,
                       void *arg);
/* Start a dead notification over / drop it from the queue: {"ok":true};
 * NOTFOUND when it is not a dead letter. */
int sb_notify_dlq_retry(const char *id, sb_store_json_cb *cb, void *arg);
int sb_notify_dlq_drop(const char *id, sb_store_json_cb *cb, void *arg);
/* Queue figures: {"stream":n,"backlog":n,"pending":n,"scheduled":n,
 * "dead":n,"rejects":n,"inflight":n,"consumers":[{"name","pending",
 * "idle_ms"}],"channels":{"webhook":{"queued":n,"inflight":n}}}. */
int sb_notify_stats(sb_store_json_cb *cb, void *arg);

/* A delivery report from a driver for attempt id "nt_<n>.<k>" (the id the
 * driver got in sb_outmsg.id): status queued, sent, delivered,
 * undelivered or failed. Result {"result":"applied"|"stale"|"early"}
 * (early: the attempt is not recorded yet; the report is kept and applied
 * when it is); NOTFOUND for an unknown attempt. cb may be NULL (fire and
 * forget, failures logged). -1 when Redis is unavailable. */
int sb_notify_report(const char *attempt_id, const char *status,
                     const char *reason, sb_store_json_cb *cb, void *arg);

#endif
