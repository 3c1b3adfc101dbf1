/* outbound.h - an agent's reply, sent in the channel the customer used.
 *
 * [channels] maps each customer channel (chat, email, sms) to the driver
 * that carries it (chat, file in development, and later smtp, kannel,
 * twilio). A reply goes out through the conversation's own channel; when
 * that fails (a chat customer who has left: TEMPFAIL "not connected"; a
 * permanent failure), it goes through the customer's next reachable
 * channel — the customer's preferred order first, then any channel for
 * which the customer has an identity and a driver runs, skipping channels
 * the customer opted out of. The reply is written to the contact log
 * (direction out, type message, the agent, the channel it actually went
 * through, the driver's id) only once a driver accepted it; the log entry
 * is in the same conversation, with fields {"via", "tried"}.
 *
 * Same contract as store.h: borrowed inputs, exactly one completion, -1
 * when refused (Redis down).
 */
#ifndef SB_OUTBOUND_H
#define SB_OUTBOUND_H

#include "config.h"
#include "store.h"

struct sb_channels_conf {
    char *chat;
    char *email;
    char *sms;
    char *webhook; /* notifications only */
};

extern const struct sb_conf_section sb_channels_conf_section; /* [channels] */

void sb_outbound_config(const struct sb_config *conf);

/* Warn about each channel [channels] maps to a driver that is not
 * running (after the drivers started, and after a reload). */
void sb_outbound_check(void);

struct sb_channel;
/* The running driver that carries a customer channel ("chat", "email",
 * "sms", "webhook"), or NULL when none is configured or started. */
struct sb_channel *sb_outbound_channel(const char *channel);

/* Reply in conversation conv as agent (its display name goes to the
 * customer). client_id, when given, makes a retried request safe: the same
 * (agent, client_id) is logged once. Result:
 *   {"contact": id, "conversation": conv, "channel": used, "tried": [...]}
 * CONFLICT "customer not reachable" (with what was tried) when no channel
 * took it; CONFLICT "conversation resolved" for a resolved one. */
int sb_outbound_reply(const char *conv, const char *agent,
                      const char *agent_name, const char *text,
                      const char *client_id, sb_store_json_cb *cb, void *arg);

#endif
