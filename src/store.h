/* store.h - customers, conversations and the contact log, all in Redis.
 *
 * Everything durable lives in Redis and every write that must be atomic is
 * one Lua script (src/lua/), so a crash of the daemon or of Redis between two
 * commands leaves nothing half written, and any number of daemon instances
 * can share one Redis. The Redis layout is documented in README.md
 * ("Redis data layout").
 *
 * sb_contact_ingest() is THE entry point every channel driver and the HTTP
 * API call to record a contact: it resolves (or creates) the customer from
 * the identities given, continues or opens a conversation, appends the entry
 * to the global log and to the customer's and conversation's timelines, and
 * is idempotent on (channel, source_id).
 *
 * All functions are asynchronous. Inputs are borrowed for the call (copied
 * into the Redis command before return). Each accepted call (return 0)
 * completes exactly once on the loop thread; -1 means refused (Redis down or
 * overloaded: the HTTP layer answers 503) and no completion follows.
 * Completion status codes are enum sb_store_status.
 */
#ifndef SB_STORE_H
#define SB_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "redis.h"

enum sb_store_status {
    SB_STORE_OK = 0,
    SB_STORE_NOTFOUND,   /* no such customer / conversation */
    SB_STORE_CONFLICT,   /* e.g. merge into itself, identity owned by another */
    SB_STORE_INVALID,    /* bad argument (message in err) */
    SB_STORE_UNAVAILABLE /* Redis timeout / disconnected: nothing acknowledged */
};

#define SB_IDENT_MAX 8

struct sb_identity {
    const char *type;  /* "email", "phone", "chat" */
    const char *value; /* already normalised (normalize.h) */
};

struct sb_contact_in {
    const char *channel;     /* email sms chat phone visit event api ... */
    const char *direction;   /* "in", "out", "internal" */
    const char *type;        /* message note status assignment notification
                                call visit event ... */
    const char *customer_id; /* known customer, or NULL: resolve by ids */
    struct sb_identity ids[SB_IDENT_MAX];
    int nids;
    const char *name;        /* display name hint for a new customer */
    const char *locale;      /* "ru"/"en" hint for a new customer */
    /* NULL: continue the customer's open conversation on this channel or
     * open a new one; "none": no conversation; "new": always a new one;
     * "thread" (e-mail): the conversation of this customer that a
     * Message-ID in fields.thread.refs or the id in fields.thread.tag
     * names, else a new one; else an existing conversation id of this
     * customer. fields.message_id (e-mail) and, for outbound e-mail, the
     * provider id are remembered as Message-IDs of the conversation. */
    const char *conversation;
    const char *subject;
    const char *text;        /* body, UTF-8 */
    size_t text_len;
    const char *source_id;   /* idempotency key within the channel */
    const char *provider_id;
    const char *agent;       /* agent id for outbound/notes */
    const char *fields_json; /* extra free-form JSON object, or NULL; its
                                "via" (inbound, a string) is kept on the
                                conversation: how replies reach the
                                customer (a driver's own notation) */
    int64_t ts_ms;           /* when it happened at the source; 0 = now */
};

struct sb_contact_result {
    char contact_id[48];      /* stream id in the global log */
    char customer_id[48];
    char conversation_id[48]; /* "" when none */
    int duplicate;            /* 1: source_id seen before, nothing written */
    int new_customer;
    int new_conversation;
    int merge_proposed;       /* identities of two customers met */
    int needs_route;          /* an inbound chat/email/sms contact left its
                                 conversation new or resolved: hand it to
                                 the router (sb_router_route) */
};

typedef void sb_contact_cb(enum sb_store_status st,
                           const struct sb_contact_result *res,
                           const char *err, void *arg);

/* JSON results are new references the callback owns (json_decref them) —
 * NULL unless st == SB_STORE_OK. */
typedef void sb_store_json_cb(enum sb_store_status st, json_t *result,
                              const char *err, void *arg);

/* Map a script's error reply ("NOTFOUND ...", "CONFLICT ...", "INVALID
 * ...") to a status, *msg past the prefix; anything else is logged (with
 * the script's name) and is UNAVAILABLE. */
enum sb_store_status sb_store_map_error(const char *script, const char *text,
                                       const char **msg);

/* Bind the store to a Redis connection (borrowed; outlives the store) and
 * the key prefix. */
void sb_store_init(struct sb_redis *r, const char *prefix);

/* How long a (channel, source_id) is remembered for idempotency. */
void sb_store_set_dedupe_window(long long seconds);

int sb_contact_ingest(const struct sb_contact_in *in, sb_contact_cb *cb,
                      void *arg);

/* Customer as a JSON object:
 *   {"id","name","locale","timezone","tier","tags":[...],"curator",
 *    "preferences":{"order":["email","sms","chat"],
 *                   "opt_out":{"sms":{"at":ms,"source":"..."}}},
 *    "identities":{"email":[...],"phone":[...],"chat":[...]},
 *    "created":ms,"updated":ms,"merged_into":id (only when merged)}
 * A merged id resolves to the surviving customer (result has its id). */
int sb_customer_get(const char *id, sb_store_json_cb *cb, void *arg);
int sb_customer_find(const char *type, const char *value,
                     sb_store_json_cb *cb, void *arg);
/* Partial update: name, locale, timezone, tier, tags, curator,
 * preferences; identities to add under "identities" (normalised by the
 * caller). Conflict when an identity belongs to another customer. */
int sb_customer_update(const char *id, json_t *patch, sb_store_json_cb *cb,
                       void *arg);
/* Merge `from` into `into`: identities, conversations and timeline move;
 * `from` resolves to `into` afterwards. Result: the merged customer. */
int sb_customer_merge(const char *into, const char *from,
                      sb_store_json_cb *cb, void *arg);
/* Pending merge proposals for a customer: [{"a","b","identity","at"}]. */
int sb_merge_proposals(const char *id, sb_store_json_cb *cb, void *arg);

/* Timeline, newest first: {"entries":[{...}], "next_before": id|null}.
 * before: a contact id (exclusive) or NULL for the newest; limit 1..200. */
int sb_timeline_customer(const char *id, const char *before, int limit,
                         sb_store_json_cb *cb, void *arg);
int sb_timeline_conversation(const char *id, const char *before, int limit,
                             sb_store_json_cb *cb, void *arg);
/* The global log, oldest first after `after` (exclusive; NULL = from the
 * start, "$" = only new ones are not supported here): for tail and reports. */
int sb_log_read(const char *after, int limit, sb_store_json_cb *cb,
                void *arg);

/* One contact by id, as {"entries":[entry], "next_after": id} (entries
 * empty when there is no such contact). */
int sb_contact_get(const char *id, sb_store_json_cb *cb, void *arg);

/* Conversation: {"id","customer","channel","state","queue","agent",
 *  "subject","created","first_response","resolved","updated"}, and
 * "via" when an inbound contact gave one. */
int sb_conversation_get(const char *id, sb_store_json_cb *cb, void *arg);

#endif
