/* smsdlr.h - SMS delivery-report states: a monotone, pure state machine.
 *
 * An outbound SMS attempt moves queued < sent < a final state (delivered,
 * undelivered, failed). Reports come from Kannel's dlr-url (%d) and
 * Twilio's status callbacks; they can be missing, duplicated or out of
 * order, so the state only moves forward and a final state is sticky.
 * "unknown" is what the deadline gives an attempt with no final report; a
 * final report that arrives later still wins over it, nothing else does.
 * This is the ranking src/lua/notify_report.lua applies in Redis (queued 1,
 * sent 2, final 3, unknown below final only); the names are the statuses
 * sb_notify_report() takes, so a driver passes sb_dlr_name() straight on.
 *
 * Mappings:
 *   Kannel %d: 1 delivered to phone -> delivered; 2 not delivered to phone
 *   -> undelivered; 4 queued on the SMSC -> sent (the SMSC holds it: it
 *   left us, as Twilio's "sent" means it reached the carrier); 8 delivered
 *   to the SMSC -> sent; 16 not delivered to the SMSC (rejected) -> failed.
 *   Any other value (0, several bits, garbage) -> none.
 *   Twilio: accepted, scheduled, queued, sending -> queued; sent -> sent;
 *   delivered, read -> delivered; undelivered -> undelivered; failed,
 *   canceled -> failed. Inbound statuses (receiving, received) and any
 *   other word -> none.
 */
#ifndef SB_SMSDLR_H
#define SB_SMSDLR_H

#include <stdint.h>

enum sb_dlr_state {
    SB_DLR_NONE = 0, /* no report yet; as input: "ignore this report" */
    SB_DLR_QUEUED,
    SB_DLR_SENT,
    SB_DLR_DELIVERED,
    SB_DLR_UNDELIVERED,
    SB_DLR_FAILED,
    SB_DLR_UNKNOWN, /* the deadline passed without a final report */
    SB_DLR_NSTATES
};

/* The state after `incoming` arrives in state `current`. Out-of-range
 * values count as SB_DLR_NONE. next == current means a stale or duplicate
 * report: nothing to record. */
enum sb_dlr_state sb_dlr_next(enum sb_dlr_state current,
                              enum sb_dlr_state incoming);

/* The deadline: SB_DLR_UNKNOWN when current is not final and now_ms is at
 * or past sent_ms + timeout_ms, else current. */
enum sb_dlr_state sb_dlr_expire(enum sb_dlr_state current, int64_t sent_ms,
                                int64_t now_ms, int64_t timeout_ms);

/* 1 for delivered, undelivered and failed. */
int sb_dlr_is_final(enum sb_dlr_state s);

/* Kannel's %d as the decimal string it puts in the dlr-url (NULL fine). */
enum sb_dlr_state sb_dlr_from_kannel(const char *d);

/* A Twilio MessageStatus / SmsStatus (any case; NULL fine). */
enum sb_dlr_state sb_dlr_from_twilio(const char *status);

/* "none", "queued", "sent", "delivered", "undelivered", "failed",
 * "unknown" (static; "none" for out-of-range values too). */
const char *sb_dlr_name(enum sb_dlr_state s);

/* The inverse of sb_dlr_name(); SB_DLR_NONE for anything else. */
enum sb_dlr_state sb_dlr_parse(const char *name);

#endif
