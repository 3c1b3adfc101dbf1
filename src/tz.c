/* tz.c - IANA time zones read from TZif files, cached, thread-safe.
 *
 * A zone is read once from $SB_ZONEINFO/NAME (default /usr/share/zoneinfo)
 * and kept in a cache of at most TZ_CACHE_MAX zones (least recently used
 * goes first); zones that do not exist are cached too, so a bad name in
 * every request does not mean a file lookup per request. All work on a
 * zone happens under one mutex, so an evicted zone is never in use.
 *
 * The file format is tzfile(5) / RFC 8536: a version 1 block that we skip,
 * then (version 2 and later) a second header and data block with 64-bit
 * transition times, then a newline-enclosed POSIX TZ string that says what
 * happens after the last transition. Version 1 files (32-bit times, no
 * footer) are read as they are. Instants before the first transition use
 * time type 0; instants after the last one use the footer rule when there
 * is one, else the last transition's type. Leap-second records are skipped
 * (times are POSIX times).
 *
 * Dates are proleptic Gregorian, computed from day counts (no timegm(), no
 * TZ environment variable), so the process-wide zone is never touched.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tz.h"
#include "util.h"

#define TZ_CACHE_MAX 64
#define TZ_NAME_MAX 128
#define TZ_FILE_MAX (512 * 1024)
#define TZ_DIR_DEFAULT "/usr/share/zoneinfo"
#define TZ_DAY 86400
/* days from 0001-01-01 to 1970-01-01, proleptic Gregorian */
#define TZ_EPOCH_DAYS 719162
#define TZ_MIN_YEAR 1
#define TZ_MAX_YEAR 9999

struct tz_type {
    int32_t off;   /* seconds east of UTC */
    int isdst;
};

/* A date rule of a POSIX TZ string: Jn, n or Mm.w.d, then /time. */
struct tz_rule {
    char kind;     /* 'J' (1..365, no Feb 29), 'D' (0..365), 'M' */
    int day;       /* J and D */
    int mon, week, wday; /* M */
    int32_t secs;  /* local time of the change, may be negative or > 24h */
};

struct tz_zone {
    char *name;
    int known;             /* 0: a cached "no such zone" */
    size_t ntrans;
    int64_t *trans;        /* ascending UTC instants */
    uint8_t *idx;          /* type after each transition */
    size_t ntypes;
    struct tz_type *types;
    int has_footer;
    int has_dst;
    int32_t std_off, dst_off; /* seconds east */
    struct tz_rule start, end;
    uint64_t used;         /* LRU stamp */
};

static pthread_mutex_t tz_lock = PTHREAD_MUTEX_INITIALIZER;
static struct tz_zone *tz_cache[TZ_CACHE_MAX];
static size_t tz_ncache;
static uint64_t tz_tick;

/* ---- calendar ------------------------------------------------------------ */

static int64_t fdiv(int64_t a, int64_t b)
{
    int64_t q = a / b;

    if ((a % b != 0) && ((a < 0) != (b < 0)))
        q--;
    return q;
}

static int64_t fmod64(int64_t a, int64_t b)
{
    return a - fdiv(a, b) * b;
}

static int is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static const int tz_cum[12] = {0, 31, 59, 90, 120, 151,
                               181, 212, 243, 273, 304, 334};

static int month_len(int64_t y, int m)
{
    static const int len[12] = {31, 28, 31, 30, 31, 30,
                                31, 31, 30, 31, 30, 31};

    return len[m - 1] + (m == 2 && is_leap(y));
}

/* Days since 1970-01-01 of y-m-d (m 1..12, d from 1; d may run past the
 * month's end, the excess carries into the next months). */
static int64_t days_of(int64_t y, int m, int64_t d)
{
    int64_t before = y - 1;
    int64_t days = before * 365 + fdiv(before, 4) - fdiv(before, 100) +
                   fdiv(before, 400);

    days += tz_cum[m - 1] + (m > 2 && is_leap(y)) + d - 1;
    return days - TZ_EPOCH_DAYS;
}

/* The inverse: year, month (1..12), day (1..31), day of year (0..365). */
static void civil_of(int64_t days, int64_t *y, int *m, int *d, int *yday)
{
    int64_t z = days + TZ_EPOCH_DAYS; /* days since 0001-01-01 */
    int64_t n400 = fdiv(z, 146097);
    int64_t r = z - n400 * 146097;    /* 0 .. 146096 */
    int64_t n100 = r / 36524, n4, n1;
    int leap, mon;

    if (n100 == 4)
        n100 = 3;
    r -= n100 * 36524;
    n4 = r / 1461;
    r -= n4 * 1461;
    n1 = r / 365;
    if (n1 == 4)
        n1 = 3;
    r -= n1 * 365;
    *y = n400 * 400 + n100 * 100 + n4 * 4 + n1 + 1;
    *yday = (int)r;
    leap = is_leap(*y);
    for (mon = 12; mon > 1; mon--)
        if (r >= tz_cum[mon - 1] + (mon > 2 && leap))
            break;
    *m = mon;
    *d = (int)(r - tz_cum[mon - 1] - (mon > 2 && leap)) + 1;
}

static int wday_of(int64_t days)
{
    return (int)fmod64(days + 4, 7); /* 1970-01-01 was a Thursday */
}

/* ---- POSIX TZ strings (the TZif footer) ---------------------------------- */

static const char *p_name(const char *s)
{
    const char *b;

    if (*s == '<') {
        for (s++; *s && *s != '>'; s++)
            ;
        return *s == '>' ? s + 1 : NULL;
    }
    for (b = s; (*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z'); s++)
        ;
    return s - b >= 3 ? s : NULL;
}

static const char *p_num(const char *s, int lo, int hi, int *out)
{
    int v = 0, n = 0;

    while (*s >= '0' && *s <= '9' && n < 4) {
        v = v * 10 + (*s++ - '0');
        n++;
    }
    if (n == 0 || v < lo || v > hi)
        return NULL;
    *out = v;
    return s;
}

/* [+-]hh[:mm[:ss]]; hours up to hmax. */
static const char *p_time(const char *s, int hmax, int32_t *out)
{
    int sign = 1, h, m = 0, sec = 0;

    if (*s == '+' || *s == '-')
        sign = *s++ == '-' ? -1 : 1;
    if (!(s = p_num(s, 0, hmax, &h)))
        return NULL;
    if (*s == ':') {
        if (!(s = p_num(s + 1, 0, 59, &m)))
            return NULL;
        if (*s == ':' && !(s = p_num(s + 1, 0, 59, &sec)))
            return NULL;
    }
    *out = sign * (h * 3600 + m * 60 + sec);
    return s;
}

static const char *p_rule(const char *s, struct tz_rule *r)
{
    memset(r, 0, sizeof(*r));
    if (*s == 'J') {
        r->kind = 'J';
        s = p_num(s + 1, 1, 365, &r->day);
    } else if (*s == 'M') {
        r->kind = 'M';
        if ((s = p_num(s + 1, 1, 12, &r->mon)) && *s == '.' &&
            (s = p_num(s + 1, 1, 5, &r->week)) && *s == '.')
            s = p_num(s + 1, 0, 6, &r->wday);
        else
            s = NULL;
    } else {
        r->kind = 'D';
        s = p_num(s, 0, 365, &r->day);
    }
    if (!s)
        return NULL;
    r->secs = 2 * 3600;
    if (*s == '/')
        s = p_time(s + 1, 167, &r->secs);
    return s;
}

/* Fill the footer fields of z from a TZ string; -1 if it is not one we
 * understand (the zone then carries on with its last transition). */
static int p_posix(const char *s, struct tz_zone *z)
{
    int32_t v;

    if (!(s = p_name(s)) || !(s = p_time(s, 167, &v)))
        return -1;
    z->std_off = -v;
    z->dst_off = z->std_off;
    z->has_dst = 0;
    if (*s == '\0')
        return 0;
    if (!(s = p_name(s)))
        return -1;
    z->dst_off = z->std_off + 3600;
    if (*s != ',' && *s != '\0') {
        if (!(s = p_time(s, 167, &v)))
            return -1;
        z->dst_off = -v;
    }
    if (*s != ',' || !(s = p_rule(s + 1, &z->start)) || *s != ',' ||
        !(s = p_rule(s + 1, &z->end)) || *s != '\0')
        return -1;
    z->has_dst = 1;
    return 0;
}

/* Days since the epoch of the rule's date in year y. */
static int64_t rule_day(const struct tz_rule *r, int64_t y)
{
    int64_t first;
    int dd, len;

    switch (r->kind) {
    case 'J':
        return days_of(y, 1, 1) + r->day - 1 + (is_leap(y) && r->day >= 60);
    case 'D':
        return days_of(y, 1, 1) + r->day;
    default:
        first = days_of(y, r->mon, 1);
        dd = (r->wday - wday_of(first) + 7) % 7 + (r->week - 1) * 7;
        len = month_len(y, r->mon);
        while (dd >= len)
            dd -= 7;
        return first + dd;
    }
}

static void footer_at(const struct tz_zone *z, int64_t t, int32_t *off,
                      int *isdst)
{
    int64_t y, s, e;
    int m, d, yd, in;

    if (!z->has_dst) {
        *off = z->std_off;
        *isdst = 0;
        return;
    }
    civil_of(fdiv(t + z->std_off, TZ_DAY), &y, &m, &d, &yd);
    /* start is given in standard time, end in daylight time */
    s = rule_day(&z->start, y) * TZ_DAY + z->start.secs - z->std_off;
    e = rule_day(&z->end, y) * TZ_DAY + z->end.secs - z->dst_off;
    if (s < e)
        in = t >= s && t < e;
    else
        in = !(t >= e && t < s);
    *off = in ? z->dst_off : z->std_off;
    *isdst = in;
}

/* ---- TZif files ---------------------------------------------------------- */

struct tz_hdr {
    char ver;
    uint32_t isut, isstd, leap, time, type, chr;
};

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
           (uint32_t)p[2] << 8 | p[3];
}

static int64_t be64(const unsigned char *p)
{
    return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

static int read_hdr(const unsigned char *p, size_t n, struct tz_hdr *h)
{
    if (n < 44 || memcmp(p, "TZif", 4) != 0)
        return -1;
    h->ver = (char)p[4];
    h->isut = be32(p + 20);
    h->isstd = be32(p + 24);
    h->leap = be32(p + 28);
    h->time = be32(p + 32);
    h->type = be32(p + 36);
    h->chr = be32(p + 40);
    return 0;
}

/* Length of the data block after a header (tsize: 4 or 8). */
static uint64_t block_len(const struct tz_hdr *h, int tsize)
{
    return (uint64_t)h->time * (uint64_t)(tsize + 1) +
           (uint64_t)h->type * 6 + h->chr +
           (uint64_t)h->leap * (uint64_t)(tsize + 4) + h->isstd + h->isut;
}

static int parse_tzif(const unsigned char *p, size_t n, struct tz_zone *z)
{
    struct tz_hdr h;
    size_t at = 44;
    int tsize = 4;
    const unsigned char *q;

    if (read_hdr(p, n, &h) < 0)
        return -1;
    if (h.ver >= '2') {
        uint64_t skip = 44 + block_len(&h, 4);

        if (skip > n || read_hdr(p + skip, n - skip, &h) < 0)
            return -1;
        at = (size_t)skip + 44;
        tsize = 8;
    }
    if (h.type == 0 || h.type > 256 || block_len(&h, tsize) > n - at)
        return -1;
    q = p + at;
    z->ntrans = h.time;
    z->trans = sb_calloc(h.time ? h.time : 1, sizeof(*z->trans));
    z->idx = sb_calloc(h.time ? h.time : 1, 1);
    for (size_t i = 0; i < h.time; i++) {
        z->trans[i] = tsize == 8 ? be64(q) : (int32_t)be32(q);
        q += tsize;
        if (i > 0 && z->trans[i] <= z->trans[i - 1])
            return -1;
    }
    for (size_t i = 0; i < h.time; i++) {
        z->idx[i] = *q++;
        if (z->idx[i] >= h.type)
            return -1;
    }
    z->ntypes = h.type;
    z->types = sb_calloc(h.type, sizeof(*z->types));
    for (size_t i = 0; i < h.type; i++, q += 6) {
        int32_t off = (int32_t)be32(q);

        if (off <= -26 * 3600 || off >= 26 * 3600 || q[4] > 1)
            return -1;
        z->types[i].off = off;
        z->types[i].isdst = q[4];
    }
    if (tsize == 8) {
        const unsigned char *f = p + at + block_len(&h, 8);
        const unsigned char *end = p + n;

        if (f < end && *f == '\n') {
            const unsigned char *nl =
                memchr(f + 1, '\n', (size_t)(end - f - 1));

            if (nl && nl - f - 1 > 0 && nl - f - 1 < 256) {
                char s[256];

                memcpy(s, f + 1, (size_t)(nl - f - 1));
                s[nl - f - 1] = '\0';
                z->has_footer = p_posix(s, z) == 0;
            }
        }
    }
    return 0;
}

static int read_file(const char *path, unsigned char **out, size_t *outlen)
{
    struct stat st;
    unsigned char *buf;
    size_t got = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);

    if (fd < 0)
        return -1;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 ||
        st.st_size > TZ_FILE_MAX) {
        close(fd);
        return -1;
    }
    buf = sb_malloc((size_t)st.st_size);
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);

        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    *out = buf;
    *outlen = got;
    return 0;
}

static void zone_free(struct tz_zone *z)
{
    if (!z)
        return;
    free(z->name);
    free(z->trans);
    free(z->idx);
    free(z->types);
    free(z);
}

static void zone_clear(struct tz_zone *z)
{
    free(z->trans);
    free(z->idx);
    free(z->types);
    z->trans = NULL;
    z->idx = NULL;
    z->types = NULL;
    z->ntrans = z->ntypes = 0;
    z->has_footer = z->has_dst = 0;
}

/* A new zone; known == 0 when there is no such zone file. */
static struct tz_zone *zone_load(const char *name)
{
    struct tz_zone *z = sb_calloc(1, sizeof(*z));
    const char *dir = getenv("SB_ZONEINFO");
    unsigned char *buf = NULL;
    size_t n = 0;
    char *path;

    z->name = sb_strdup(name);
    if (!dir || !*dir)
        dir = TZ_DIR_DEFAULT;
    path = sb_asprintf("%s/%s", dir, name);
    if (read_file(path, &buf, &n) == 0) {
        if (parse_tzif(buf, n, z) == 0)
            z->known = 1;
        else
            zone_clear(z);
    }
    free(buf);
    free(path);
    if (!z->known &&
        (strcmp(name, "UTC") == 0 || strcmp(name, "Etc/UTC") == 0)) {
        z->types = sb_calloc(1, sizeof(*z->types));
        z->ntypes = 1;
        z->known = 1;
    }
    return z;
}

static int name_ok(const char *zone)
{
    size_t n;

    if (!zone || !*zone || zone[0] == '/' || strstr(zone, ".."))
        return 0;
    n = strlen(zone);
    if (n > TZ_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = zone[i];

        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
              (c >= '0' && c <= '9') || c == '/' || c == '_' || c == '+' ||
              c == '-'))
            return 0;
    }
    return 1;
}

/* The cached zone (loading it if needed); tz_lock held. NULL when the zone
 * is unknown. */
static const struct tz_zone *zone_get(const char *name)
{
    struct tz_zone *z;
    size_t slot = tz_ncache;

    for (size_t i = 0; i < tz_ncache; i++) {
        if (strcmp(tz_cache[i]->name, name) == 0) {
            tz_cache[i]->used = ++tz_tick;
            return tz_cache[i]->known ? tz_cache[i] : NULL;
        }
    }
    z = zone_load(name);
    z->used = ++tz_tick;
    if (tz_ncache == TZ_CACHE_MAX) {
        slot = 0;
        for (size_t i = 1; i < tz_ncache; i++)
            if (tz_cache[i]->used < tz_cache[slot]->used)
                slot = i;
        zone_free(tz_cache[slot]);
    } else {
        tz_ncache++;
    }
    tz_cache[slot] = z;
    return z->known ? z : NULL;
}

static void zone_at(const struct tz_zone *z, int64_t t, int32_t *off,
                    int *isdst)
{
    size_t lo, hi;

    if (z->ntrans == 0 || t < z->trans[0]) {
        if (z->ntrans == 0 && z->has_footer) {
            footer_at(z, t, off, isdst);
            return;
        }
        *off = z->types[0].off;
        *isdst = z->types[0].isdst;
        return;
    }
    if (t >= z->trans[z->ntrans - 1] && z->has_footer) {
        footer_at(z, t, off, isdst);
        return;
    }
    /* the last transition at or before t */
    lo = 0;
    hi = z->ntrans;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;

        if (z->trans[mid] <= t)
            lo = mid;
        else
            hi = mid;
    }
    *off = z->types[z->idx[lo]].off;
    *isdst = z->types[z->idx[lo]].isdst;
}

/* ---- public -------------------------------------------------------------- */

int sb_tz_offset(const char *zone, int64_t utc_s, int *off_s)
{
    const struct tz_zone *z;
    int32_t off = 0;
    int isdst = 0;

    if (!name_ok(zone))
        return -1;
    pthread_mutex_lock(&tz_lock);
    z = zone_get(zone);
    if (z)
        zone_at(z, utc_s, &off, &isdst);
    pthread_mutex_unlock(&tz_lock);
    if (!z)
        return -1;
    if (off_s)
        *off_s = off;
    return 0;
}

int sb_tz_valid(const char *zone)
{
    return sb_tz_offset(zone, 0, NULL) == 0;
}

int sb_tz_localtime(const char *zone, int64_t utc_ms, struct tm *out)
{
    const struct tz_zone *z;
    int64_t s = fdiv(utc_ms, 1000), local, days, y;
    int32_t off = 0;
    int isdst = 0, m, d, yd;

    /* years 1..9999 (with a day's margin for the offset) */
    if (!name_ok(zone) || s < (days_of(TZ_MIN_YEAR, 1, 1) + 1) * TZ_DAY ||
        s > (days_of(TZ_MAX_YEAR, 12, 31) - 1) * TZ_DAY)
        return -1;
    pthread_mutex_lock(&tz_lock);
    z = zone_get(zone);
    if (z)
        zone_at(z, s, &off, &isdst);
    pthread_mutex_unlock(&tz_lock);
    if (!z)
        return -1;
    local = s + off;
    days = fdiv(local, TZ_DAY);
    civil_of(days, &y, &m, &d, &yd);
    memset(out, 0, sizeof(*out));
    out->tm_year = (int)(y - 1900);
    out->tm_mon = m - 1;
    out->tm_mday = d;
    out->tm_yday = yd;
    out->tm_wday = wday_of(days);
    out->tm_hour = (int)(fmod64(local, TZ_DAY) / 3600);
    out->tm_min = (int)(fmod64(local, 3600) / 60);
    out->tm_sec = (int)fmod64(local, 60);
    out->tm_isdst = isdst;
    out->tm_gmtoff = off;
    out->tm_zone = NULL;
    return 0;
}

int sb_tz_mktime(const char *zone, int y, int mon, int d, int h, int min,
                 int64_t *utc_ms)
{
    const struct tz_zone *z;
    int64_t yy = (int64_t)y + fdiv((int64_t)mon - 1, 12);
    int m = (int)fmod64((int64_t)mon - 1, 12) + 1;
    int64_t wall, best = 0, cand[3];
    int found = 0;

    if (!name_ok(zone) || yy < TZ_MIN_YEAR || yy > TZ_MAX_YEAR ||
        d < -400 || d > 400 || h < -1000 || h > 1000 || min < -100000 ||
        min > 100000)
        return -1;
    wall = days_of(yy, m, d) * TZ_DAY + (int64_t)h * 3600 + (int64_t)min * 60;
    pthread_mutex_lock(&tz_lock);
    z = zone_get(zone);
    if (z) {
        int32_t o[3], chk;
        int isdst;

        /* Every answer t = wall - off lies within a day of wall; the
         * offsets two days either side (and at wall) are the candidates,
         * and a candidate holds when the zone agrees at its instant. */
        zone_at(z, wall - 2 * TZ_DAY, &o[0], &isdst);
        zone_at(z, wall, &o[1], &isdst);
        zone_at(z, wall + 2 * TZ_DAY, &o[2], &isdst);
        for (int i = 0; i < 3; i++) {
            cand[i] = wall - o[i];
            zone_at(z, cand[i], &chk, &isdst);
            if (chk == o[i] && (!found || cand[i] < best)) {
                best = cand[i];
                found = 1;
            }
        }
        if (!found) {
            /* a gap: read with the offset before it (the smaller offset,
             * so the later instant) */
            best = cand[0] > cand[2] ? cand[0] : cand[2];
        }
    }
    pthread_mutex_unlock(&tz_lock);
    if (!z)
        return -1;
    *utc_ms = best * 1000;
    return 0;
}

void sb_tz_cleanup(void)
{
    pthread_mutex_lock(&tz_lock);
    for (size_t i = 0; i < tz_ncache; i++) {
        zone_free(tz_cache[i]);
        tz_cache[i] = NULL;
    }
    tz_ncache = 0;
    pthread_mutex_unlock(&tz_lock);
}
