/* console.h - the agent console's and dashboard's live connection:
 * WebSocket /console/ws, subprotocol switchboard.agent.v1.
 *
 * The protocol is documented in docs/console-protocol.md. In short: the
 * first message authenticates with a session token from POST
 * /api/v1/login; then the agent acts (presence, accept, decline, reply,
 * note, transfer, resolve, open a conversation's cross-channel timeline,
 * typing) and receives what concerns it live (offers, withdrawals,
 * assignments, new entries in its conversations, customer typing) from the
 * routing events of every instance (events.h). Operators may "watch": they
 * get the queues and agents tables at most once a second while anything
 * changes.
 *
 * Presence follows the sockets: the first socket of an agent that was
 * offline sets it online; when its last socket has been gone for
 * [console] offline_grace, it is set offline. Going away when idle is the
 * page's decision (it sends presence "away").
 */
#ifndef SB_CONSOLE_H
#define SB_CONSOLE_H

#include <uv.h>

#include "config.h"
#include "redis.h"

struct sb_console_conf {
    char **origins;
    long long offline_grace; /* ms */
    long long idle_timeout;  /* ms */
    long long max_message;   /* bytes */
};

extern const struct sb_conf_section sb_console_conf_section; /* [console] */

/* Register the WebSocket endpoint (before sb_http_start) and the event
 * listener. r is the normal Redis connection (borrowed). */
int sb_console_init(uv_loop_t *loop, struct sb_redis *r,
                    const struct sb_config *conf);
void sb_console_stop(void);

#endif
