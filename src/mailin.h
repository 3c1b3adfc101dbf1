/* mailin.h - one inbound e-mail, from raw bytes to the contact log.
 *
 * The e-mail driver fetches; this module does the rest, the same way for a
 * fresh message and for a quarantined one an operator replays:
 *
 *   parse (mime.h, on the worker pool) -> keep the HTML and attachments
 *   (Redis "blob:<sha256>" keys, capped, expiring with the contact log's
 *   retention) -> sb_contact_ingest() with channel "email", the sender's
 *   address as identity, conversation "thread" (In-Reply-To, References,
 *   a "[#cv_N]" subject tag; automatic mail and bounces: no conversation)
 *   -> the router for a conversation that needs an agent -> for a bounce
 *   of one of our notifications, sb_notify_report() on its attempt.
 *
 * A message that cannot be parsed, or has no usable sender, goes to the
 * quarantine (Redis: "mailq:<id>" with the raw bytes, the reason, the
 * mailbox and UID) instead, and counts as done for the mailbox: it is
 * never fetched again in a loop. The caller marks the message in the
 * mailbox after the completion says OK or QUARANTINED, not before.
 */
#ifndef SB_MAILIN_H
#define SB_MAILIN_H

#include <stddef.h>
#include <jansson.h>
#include <uv.h>

#include "config.h"
#include "redis.h"
#include "store.h"

enum sb_mailin_status {
    SB_MAILIN_OK = 0,      /* in the contact log (or a known duplicate) */
    SB_MAILIN_QUARANTINED, /* kept in the quarantine with a reason */
    SB_MAILIN_UNAVAILABLE  /* Redis or the worker pool refused: try again
                              later, nothing acknowledged */
};

/* What the caller knows about where the message came from. */
struct sb_mailin_src {
    const char *mailbox;  /* [mailbox NAME], or "replay" */
    const char *address;  /* the mailbox's own address (replies go out
                             from it), or NULL */
    unsigned long uid;    /* IMAP UID, 0 when none */
    unsigned long uidvalidity;
};

struct sb_mailin_result {
    enum sb_mailin_status status;
    char contact_id[48];  /* OK: the log entry */
    char quarantine_id[48]; /* QUARANTINED: the entry */
    int duplicate;        /* OK: already ingested (same Message-ID) */
    const char *reason;   /* QUARANTINED / UNAVAILABLE: why; borrowed */
};

typedef void sb_mailin_cb(const struct sb_mailin_result *r, void *arg);

/* [email] keys this module reads (limits, fallback charsets, blob cap). */
struct sb_mailin_conf {
    long long max_size;
    long long max_header;
    long long max_depth;
    long long max_parts;
    long long max_attachment;
    long long max_text;
    char **fallback_charsets;
    long long blob_ttl;     /* ms */
};

/* Bind to the main Redis connection and prefix (borrowed). */
void sb_mailin_init(struct sb_redis *r, const char *prefix);
/* Adopt new limits (copied). */
void sb_mailin_config(const struct sb_mailin_conf *c);

/* Take raw (copied) through the pipeline above. 0 accepted (cb exactly
 * once, on the loop), -1 refused at once (worker pool full, Redis down):
 * no cb, try again later. */
int sb_mailin_ingest(const char *raw, size_t len,
                     const struct sb_mailin_src *src, sb_mailin_cb *cb,
                     void *arg);

/* Put raw in the quarantine with reason, without parsing (a message over
 * the size limit, one that cannot even be fetched whole). Completion as
 * above (QUARANTINED, or UNAVAILABLE). */
int sb_mailin_quarantine(const char *raw, size_t len, const char *reason,
                         const struct sb_mailin_src *src, sb_mailin_cb *cb,
                         void *arg);

/* A mailbox poller's position: "imap:<mailbox>" {uidvalidity, last_uid}.
 * get: cb(st, uidvalidity, last_uid, arg) with zeros for a new mailbox;
 * set: cb(st, 0, 0, arg). -1 when Redis refuses (no callback). */
typedef void sb_mailin_pos_cb(enum sb_store_status st,
                              unsigned long uidvalidity,
                              unsigned long last_uid, void *arg);
int sb_mailin_pos_get(const char *mailbox, sb_mailin_pos_cb *cb, void *arg);
int sb_mailin_pos_set(const char *mailbox, unsigned long uidvalidity,
                      unsigned long last_uid, sb_mailin_pos_cb *cb,
                      void *arg);

/* Operators. List, newest first: {"entries":[{"id","at","mailbox","uid",
 * "reason","size","from","subject"}],"next_before":id|null}. Show: one
 * entry with "raw" (the bytes as a JSON string when valid UTF-8, else
 * "raw_base64"). Replay: parse and ingest the raw bytes again; on success
 * the entry goes, on failure it stays with the new reason. Results as
 * store.h's JSON callbacks ({"result":"ingested","contact":id} or
 * {"result":"quarantined","reason":..} for replay). */
int sb_mailin_q_list(const char *before, int limit, sb_store_json_cb *cb,
                     void *arg);
int sb_mailin_q_show(const char *id, sb_store_json_cb *cb, void *arg);
int sb_mailin_q_replay(const char *id, sb_store_json_cb *cb, void *arg);

/* A stored blob (a message's HTML or an attachment) by its sha256 hex:
 * cb gets the bytes (borrowed for the call), or NOTFOUND (expired, never
 * stored: over the cap) / UNAVAILABLE. The contact's fields name the
 * blobs: "html": {"sha256","size"}, "attachments": [{"filename",
 * "content_type","size","sha256","stored"}]. */
typedef void sb_mailin_blob_cb(enum sb_store_status st, const char *data,
                               size_t len, void *arg);
int sb_mailin_blob(const char *sha256, sb_mailin_blob_cb *cb, void *arg);

#endif
