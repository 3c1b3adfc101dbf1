/* events.h - live events from every instance, delivered to local screens.
 *
 * The routing engine and ingest publish compact JSON events on the Redis
 * pub/sub channel "<prefix>events" (docs/routing.md lists them). Each
 * daemon holds one subscriber connection and hands every event to the
 * listeners registered here: the agent console, the web chat driver. So a
 * reply decided on one instance reaches a socket held by another.
 *
 * Pub/sub is fire-and-forget: an event published while the subscriber is
 * reconnecting is lost. Listeners use events to refresh screens, never as
 * the only record (the contact log and Redis state are the record).
 */
#ifndef SB_EVENTS_H
#define SB_EVENTS_H

#include <jansson.h>
#include <uv.h>

#include "redis.h"

/* ev is borrowed for the call; it always has a string "type". */
typedef void sb_event_fn(const json_t *ev, void *arg);

/* Register a listener (at most 8); call before or after start. */
int sb_events_listen(sb_event_fn *fn, void *arg);

/* Start the subscriber connection (conf copied) for prefix + "events". */
void sb_events_start(uv_loop_t *loop, const struct sb_redis_conf *conf,
                     const char *prefix);

/* Publish an event of our own (console typing, presence) through a
 * normal connection r, or with r NULL through the events module's own
 * connection (opened by sb_events_start; for callers that hold none,
 * such as channel drivers). Fire-and-forget: returns -1 when refused. */
int sb_events_publish(struct sb_redis *r, const json_t *ev);

void sb_events_stop(void);

#endif
