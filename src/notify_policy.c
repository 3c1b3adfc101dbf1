/* notify_policy.c - retry backoff, quiet hours and time parsing.
 *
 * No I/O and no clock of its own: the caller passes "now", so the tests
 * can put it anywhere (a quiet night in Moscow, a DST change in New York).
 */
#include "notify_policy.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "tz.h"

long long sb_ntf_backoff(long long min_ms, long long max_ms, int tries,
                         long long retry_after_ms, double rnd)
{
    long long d = min_ms > 0 ? min_ms : 1;

    for (int i = 1; i < tries && d < max_ms; i++)
        d *= 2;
    if (d > max_ms)
        d = max_ms;
    if (rnd < 0)
        rnd = 0;
    if (rnd >= 1)
        rnd = 0.999999;
    d = d / 2 + (long long)((double)(d - d / 2) * rnd);
    if (retry_after_ms >= 0 && d < retry_after_ms)
        d = retry_after_ms;
    return d;
}

int sb_ntf_exhausted(int tries, int max_attempts, int64_t first_ms,
                     long long max_age_ms, int64_t now_ms)
{
    if (max_attempts > 0 && tries >= max_attempts)
        return 1;
    return max_age_ms > 0 && first_ms > 0 && now_ms - first_ms >= max_age_ms;
}

/* "HH:MM" -> minutes, or -1. */
static int hhmm(const char *s, size_t n)
{
    if (n != 5 || s[2] != ':')
        return -1;
    for (size_t i = 0; i < 5; i++)
        if (i != 2 && (s[i] < '0' || s[i] > '9'))
            return -1;
    int h = (s[0] - '0') * 10 + (s[1] - '0');
    int m = (s[3] - '0') * 10 + (s[4] - '0');
    return h < 24 && m < 60 ? h * 60 + m : -1;
}

int sb_ntf_quiet_parse(const char *s, int *from_min, int *to_min)
{
    const char *dash;

    if (!s)
        return -1;
    dash = strchr(s, '-');
    if (!dash)
        return -1;
    *from_min = hhmm(s, (size_t)(dash - s));
    *to_min = hhmm(dash + 1, strlen(dash + 1));
    return *from_min < 0 || *to_min < 0 ? -1 : 0;
}

int sb_ntf_quiet_parse_json(const char *json, int *from_min, int *to_min)
{
    json_t *o = json_loads(json, 0, NULL);
    const char *f, *t;
    int r = -1;

    f = json_string_value(json_object_get(o, "from"));
    t = json_string_value(json_object_get(o, "to"));
    if (f && t) {
        *from_min = hhmm(f, strlen(f));
        *to_min = hhmm(t, strlen(t));
        r = *from_min < 0 || *to_min < 0 ? -1 : 0;
    }
    json_decref(o);
    return r;
}

/* The UTC ms of minute `min` on the local date of `day_ms` in tz. */
static int64_t local_at(const char *tz, int64_t day_ms, int add, int min)
{
    struct tm tm;
    int64_t out;

    if (sb_tz_localtime(tz, day_ms, &tm) < 0 ||
        sb_tz_mktime(tz, tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday + add,
                     min / 60, min % 60, &out) < 0)
        return -1;
    return out;
}

int64_t sb_ntf_quiet_until(int from_min, int to_min, const char *tz,
                           int64_t now_ms)
{
    struct tm tm;
    int m;
    int64_t end;

    if (from_min == to_min)
        return 0;
    if (!tz || !*tz || !sb_tz_valid(tz))
        tz = "UTC";
    if (sb_tz_localtime(tz, now_ms, &tm) < 0)
        return 0;
    m = tm.tm_hour * 60 + tm.tm_min;
    if (from_min < to_min) {
        if (m < from_min || m >= to_min)
            return 0;
        end = local_at(tz, now_ms, 0, to_min);
    } else {
        if (m < from_min && m >= to_min)
            return 0;
        /* In the evening part the window ends tomorrow morning. */
        end = local_at(tz, now_ms, m >= from_min, to_min);
    }
    return end > now_ms ? end : 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int digits(const char *s, int n, int *out)
{
    int v = 0;

    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

int sb_ntf_parse_time(const char *s, int64_t *ms)
{
    int y, mo, d, h, mi, sec, frac = 0, fd = 0, oh = 0, om = 0, sign = 1;
    size_t n = s ? strlen(s) : 0;
    const char *p;
    static const int mdays[] = {31, 29, 31, 30, 31, 30,
                                31, 31, 30, 31, 30, 31};

    if (n == 0)
        return -1;
    if (strspn(s, "0123456789") == n) {
        if (n > 15)
            return -1;
        *ms = 0;
        for (size_t i = 0; i < n; i++)
            *ms = *ms * 10 + (s[i] - '0');
        return 0;
    }
    if (n < 20 || digits(s, 4, &y) || s[4] != '-' || digits(s + 5, 2, &mo) ||
        s[7] != '-' || digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't'
        && s[10] != ' ') || digits(s + 11, 2, &h) || s[13] != ':' ||
        digits(s + 14, 2, &mi) || s[16] != ':' || digits(s + 17, 2, &sec))
        return -1;
    p = s + 19;
    if (*p == '.') {
        p++;
        while (*p >= '0' && *p <= '9') {
            if (fd < 3) {
                frac = frac * 10 + (*p - '0');
                fd++;
            }
            p++;
        }
        if (fd == 0)
            return -1;
        while (fd < 3) {
            frac *= 10;
            fd++;
        }
    }
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        sign = *p == '-' ? -1 : 1;
        if (digits(p + 1, 2, &oh) || p[3] != ':' || digits(p + 4, 2, &om) ||
            oh > 23 || om > 59)
            return -1;
        p += 6;
    } else {
        return -1;
    }
    if (*p || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 ||
        mi > 59 || sec > 60)
        return -1;
    if (mo == 2 && d == 29 && !((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return -1;
    *ms = ((days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 +
            (sec == 60 ? 59 : sec)) -
           sign * (oh * 3600 + om * 60)) * 1000 + frac;
    return 0;
}
