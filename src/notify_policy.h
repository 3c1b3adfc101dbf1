/* notify_policy.h - the dispatcher's decisions, as pure functions.
 *
 * Kept apart from notify.c (which does I/O) so each rule can be tested
 * with a controllable clock: how long to wait before a retry, whether a
 * customer's quiet hours hold a notification and until when, and the
 * parsing of times given by business systems.
 */
#ifndef SB_NOTIFY_POLICY_H
#define SB_NOTIFY_POLICY_H

#include <stdint.h>

/* Wait before the retry that follows failure number `tries` (1 = the first
 * failure): min * 2^(tries-1) capped at max, then "equal jitter" - a
 * uniform pick in [d/2, d] from rnd in [0, 1) - so retries of many
 * notifications failing together spread out. A provider's Retry-After
 * (retry_after_ms >= 0) is a floor: never earlier than it asked. */
long long sb_ntf_backoff(long long min_ms, long long max_ms, int tries,
                         long long retry_after_ms, double rnd);

/* Is a temporary failure the last one on this channel? 1 when tries
 * (failures so far, this one included) reached max_attempts or the first
 * try on the channel is max_age_ms old. */
int sb_ntf_exhausted(int tries, int max_attempts, int64_t first_ms,
                     long long max_age_ms, int64_t now_ms);

/* Quiet hours "HH:MM-HH:MM" (as in config) into minutes after midnight.
 * 0, or -1 when malformed. from == to means no quiet hours. */
int sb_ntf_quiet_parse(const char *s, int *from_min, int *to_min);

/* The same from a customer's preference {"from":"22:00","to":"08:00"}
 * (JSON text). 0 or -1. */
int sb_ntf_quiet_parse_json(const char *json, int *from_min, int *to_min);

/* 0 when now is outside the quiet hours [from, to) in zone tz (an
 * overnight window when from > to); else the UTC ms at which they end.
 * An unknown zone is taken as UTC. */
int64_t sb_ntf_quiet_until(int from_min, int to_min, const char *tz,
                           int64_t now_ms);

/* RFC 3339 date-time ("2026-11-26T10:00:00Z", "...+03:00", fractional
 * seconds allowed) or epoch milliseconds (all digits) into epoch ms.
 * 0 or -1. */
int sb_ntf_parse_time(const char *s, int64_t *ms);

#endif
