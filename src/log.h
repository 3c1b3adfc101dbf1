/* log.h - one line per event, syslog levels, key=value fields.
 *
 * Lines go to stderr as "<N>place phrase key=value ...", the "<N>" prefix being
 * the syslog priority journald understands. The level is checked before the
 * arguments are evaluated. Never log message bodies, secrets or tokens; mask
 * phone numbers and addresses with sb_log_mask() at info level.
 */
#ifndef SB_LOG_H
#define SB_LOG_H

#include <stddef.h>
#include <syslog.h>

extern int sb_log_level; /* LOG_ERR .. LOG_DEBUG; default LOG_INFO */

void sb_log_write(int level, const char *place, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define SB_LOG(level, place, ...)                                            \
    do {                                                                     \
        if ((level) <= sb_log_level)                                         \
            sb_log_write((level), (place), __VA_ARGS__);                     \
    } while (0)

#define SB_ERR(place, ...) SB_LOG(LOG_ERR, place, __VA_ARGS__)
#define SB_WARN(place, ...) SB_LOG(LOG_WARNING, place, __VA_ARGS__)
#define SB_NOTICE(place, ...) SB_LOG(LOG_NOTICE, place, __VA_ARGS__)
#define SB_INFO(place, ...) SB_LOG(LOG_INFO, place, __VA_ARGS__)
#define SB_DEBUG(place, ...) SB_LOG(LOG_DEBUG, place, __VA_ARGS__)

/* Parse "err", "warning", "notice", "info", "debug"; -1 if unknown. */
int sb_log_level_parse(const char *s);

/* Write a masked form of an address or number into out ("a***@example.com",
 * "+7916***67"), safe for info-level logs. Returns out. */
char *sb_log_mask(const char *s, char *out, size_t outlen);

/* Copy s into out, replacing control characters and quotes so a value taken
 * from outside cannot forge a log line. Returns out. */
char *sb_log_safe(const char *s, char *out, size_t outlen);

#endif
