/* channel.h - the one interface every channel driver implements.
 *
 * A driver (channels/<name>/) sends messages out and hands what arrives to
 * the core. The core never knows SMTP from SMS: it sees each driver only
 * through its exported `const struct sb_channel_ops sb_chan_<name>` listed in
 * sb_channel_drivers[] (channel.c).
 *
 * The contract (Kannel's smscconn_p.h is the model):
 *
 *  1. send() never blocks and never completes before it returns. A return of
 *     0 means "accepted": exactly one completion follows, with OK, TEMPFAIL,
 *     PERMFAIL or CANCELLED (on stop) and a short reason. A refused send()
 *     (negative return) has no completion; the caller keeps the message.
 *  2. The message is borrowed until its completion: the driver copies what it
 *     keeps beyond that. The caller MAY NOT free or change it before then.
 *  3. Inbound contacts go to the core through sb_contact_ingest() (store.h),
 *     one call per contact.
 *  4. All driver code runs on the loop thread; blocking libraries run on the
 *     worker pool (worker.h) and report back on the loop.
 *  5. stop() completes every accepted, unfinished send with CANCELLED before
 *     it returns or from the loop soon after; after stop() no completion
 *     fires.
 *  6. Drivers MAY NOT include another driver's header; the core MAY NOT
 *     include a driver's.
 */
#ifndef SB_CHANNEL_H
#define SB_CHANNEL_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"

struct sb_http_req;

enum sb_send_status {
    SB_SEND_OK = 0,   /* accepted by the next hop (provider, relay, file) */
    SB_SEND_TEMPFAIL, /* try again later (timeout, 5xx, 4xx SMTP, 429) */
    SB_SEND_PERMFAIL, /* will never work (bad address, 5xx SMTP, 4xx HTTP) */
    SB_SEND_CANCELLED /* the driver was stopped */
};

struct sb_send_result {
    enum sb_send_status status;
    const char *reason;       /* short, no secrets; borrowed */
    const char *provider_id;  /* the next hop's id for the message, or NULL */
    long long retry_after_ms; /* TEMPFAIL hint, -1 when none */
    int parts;                /* units billed (SMS parts), 0 when n/a */
};

struct sb_outmsg {
    const char *id;           /* our attempt id, unique */
    const char *to;           /* e-mail address, E.164 number, visitor token */
    const char *from;         /* sender identity or NULL for the default */
    const char *subject;      /* e-mail only, may be NULL */
    const char *text;         /* UTF-8 body */
    const char *html;         /* optional HTML alternative */
    const char *in_reply_to;  /* threading (e-mail), may be NULL */
    const char *references;
    const char *conversation; /* conversation id, may be NULL */
    const char *customer;     /* customer id, may be NULL */
    const char *meta_json;    /* JSON object about the message for drivers
                                 that carry structure (webhook): for a
                                 notification {"notification","event",
                                 "ref","locale","data"}; may be NULL */
    const char *via;          /* a reply: the conversation's "via", what the
                                 driver recorded about how the customer
                                 reached us (store.h); may be NULL */
    void *user;               /* the caller's */
};

struct sb_channel;

typedef void sb_send_done(struct sb_outmsg *msg,
                          const struct sb_send_result *r);

struct sb_channel_ops {
    const char *name;                       /* "email", "sms", "file" */
    const struct sb_conf_section *conf;     /* its section, e.g. [file] */
    /* More sections of its own (NULL-terminated, or NULL), e.g. [sms]'s
     * [sms-provider NAME]: start() reads them through ch->config. */
    const struct sb_conf_section *const *more_conf;
    /* Create the driver's state from its config (borrowed for the call;
     * copy what is kept). 0 or -1. */
    int (*start)(struct sb_channel *ch, uv_loop_t *loop, const void *conf);
    int (*send)(struct sb_channel *ch, struct sb_outmsg *msg,
                sb_send_done *done);
    void (*stop)(struct sb_channel *ch);
    /* Optional (NULL: a change needs a restart): adopt the section's new
     * values after SIGHUP (borrowed for the call). 0 or -1 (logged; the
     * old values stay). */
    int (*reload)(struct sb_channel *ch, const void *conf);
    /* SB_CHAN_* */
    unsigned flags;
    /* Optional: requests to /webhooks/<driver>/<a>[/<b>] (a provider's
     * callbacks: inbound messages, delivery reports). The route is public:
     * the driver authenticates the caller itself and answers the request
     * exactly once (http.h), 404 for a path it does not know. Request
     * headers (sb_http_header) can be read only before it returns. */
    void (*webhook)(struct sb_channel *ch, struct sb_http_req *req);
};

/* The driver reports delivery later (SMS DLRs, bounces) through
 * sb_notify_report() (notify.h): a notification sent through it waits for
 * the final report, up to [notify] report_deadline. */
#define SB_CHAN_REPORTS 0x1u

/* The core's handle on one configured channel. */
struct sb_channel {
    const struct sb_channel_ops *ops;
    char *name;     /* instance name from config ("[channel file]") */
    void *priv;     /* the driver's state */
    /* The whole configuration, borrowed during start() and reload() only:
     * for drivers with named sections of their own ([sms-provider X]). */
    const struct sb_config *config;
};

/* NULL-terminated table of compiled-in drivers. */
extern const struct sb_channel_ops *const sb_channel_drivers[];

const struct sb_channel_ops *sb_channel_find_driver(const char *name);

/* Start every compiled-in driver whose config section the file has (a
 * driver without its section stays off). 0, or -1 when one failed (logged).
 */
int sb_channels_start(uv_loop_t *loop, const struct sb_config *conf);
/* SIGHUP: hand each started driver with a reload op its new section. */
void sb_channels_reload(const struct sb_config *conf);
/* A started driver by name (borrowed), or NULL. */
struct sb_channel *sb_channel_get(const char *name);
/* Stop and free every started driver (each cancels its in-flight sends). */
void sb_channels_stop(void);

#endif
