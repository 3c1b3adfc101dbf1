/* tz.h - IANA time zones without touching the process TZ.
 *
 * Zones are read from the system's TZif files (/usr/share/zoneinfo, or the
 * directory in $SB_ZONEINFO) and kept in a small cache shared by every
 * thread (guarded by a mutex), so a render on the loop thread and one on a
 * worker never disturb each other or the process-wide TZ that localtime()
 * uses. Instants past a zone's last recorded transition follow the POSIX TZ
 * rule in the file's footer ("EST5EDT,M3.2.0,M11.1.0"). Leap seconds are
 * ignored: times are POSIX times. "UTC" works even without zone files.
 */
#ifndef SB_TZ_H
#define SB_TZ_H

#include <stdint.h>
#include <time.h>

/* 0 and the UTC offset (seconds east) of zone at utc_s, or -1 when the zone
 * is unknown. zone: an IANA name ("Europe/Moscow", "America/New_York",
 * "UTC"); names with "..", a leading '/', or bytes outside [A-Za-z0-9/_+-]
 * are refused. */
int sb_tz_offset(const char *zone, int64_t utc_s, int *off_s);

/* 1 when zone names a loadable zone, else 0. */
int sb_tz_valid(const char *zone);

/* Break utc_ms down in zone into *out (tm_gmtoff and tm_isdst set,
 * tm_zone NULL, tm_year from 1900 and tm_mon from 0 as usual); -1 when the
 * zone is unknown or the instant is outside years 1..9999. */
int sb_tz_localtime(const char *zone, int64_t utc_ms, struct tm *out);

/* The UTC instant (ms) of the local wall time y-mon-d h:min in zone (mon
 * 1..12, d 1..31; values outside carry over, so d + 1 is the next day), for
 * "hold until 08:00 local". A wall time that falls in a gap (clocks jump
 * forward) gives the later instant, read with the offset before the gap;
 * one that happens twice (clocks go back) gives the earlier. -1 on an
 * unknown zone. */
int sb_tz_mktime(const char *zone, int y, int mon, int d, int h, int min,
                 int64_t *utc_ms);

/* Frees the cache (zones are read again on next use). */
void sb_tz_cleanup(void);

#endif
