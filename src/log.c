/* log.c - one line per event on stderr with a syslog priority prefix. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int sb_log_level = LOG_INFO;

void sb_log_write(int level, const char *place, const char *fmt, ...)
{
    char line[2048];
    int n;
    va_list ap;

    n = snprintf(line, sizeof(line), "<%d>%s ", level, place);
    if (n < 0 || (size_t)n >= sizeof(line))
        return;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    va_end(ap);
    /* One write per line so concurrent writers do not interleave. */
    fprintf(stderr, "%s\n", line);
}

int sb_log_level_parse(const char *s)
{
    static const struct {
        const char *name;
        int level;
    } names[] = {
        {"err", LOG_ERR},       {"error", LOG_ERR},   {"warning", LOG_WARNING},
        {"warn", LOG_WARNING},  {"notice", LOG_NOTICE}, {"info", LOG_INFO},
        {"debug", LOG_DEBUG},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(s, names[i].name) == 0)
            return names[i].level;
    return -1;
}

char *sb_log_mask(const char *s, char *out, size_t outlen)
{
    size_t n = s ? strlen(s) : 0;
    const char *at = s ? strchr(s, '@') : NULL;

    if (outlen == 0)
        return out;
    if (!s) {
        snprintf(out, outlen, "-");
    } else if (at) {
        snprintf(out, outlen, "%.1s***%s", s, at);
    } else if (n > 6) {
        snprintf(out, outlen, "%.4s***%s", s, s + n - 2);
    } else {
        snprintf(out, outlen, "***");
    }
    return sb_log_safe(out, out, outlen);
}

char *sb_log_safe(const char *s, char *out, size_t outlen)
{
    size_t i = 0;

    if (outlen == 0)
        return out;
    for (; s && *s && i + 1 < outlen; s++) {
        unsigned char c = (unsigned char)*s;
        out[i++] = (c < 0x20 || c == 0x7f || c == '"' || c == ' ') ? '_'
                                                                   : (char)c;
    }
    out[i] = '\0';
    return out;
}
