/* test_tz.c - time zones from TZif files: offsets, history, footer rules.
 *
 * Known instants in Moscow (its 2011-2014 permanent +4 and the return to
 * +3), New York on both sides of DST and after 2037 (where only the footer
 * rule answers), UTC, unknown and refused names, wall time to UTC in gaps
 * and overlaps, hand-made TZif files under $SB_ZONEINFO (footer only,
 * southern-hemisphere rule, corrupt files), the cache beyond its bound,
 * several threads at once, and a comparison with glibc's own reading of
 * the same files over many instants.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "tz.h"
#include "util.h"

/* UTC seconds of a UTC wall time, from the library under test's sibling
 * (sb_tz_mktime in "UTC" is checked against known values first). */
static int64_t utc(int y, int mon, int d, int h, int min, int s)
{
    int64_t ms = 0;

    assert_int_equal(sb_tz_mktime("UTC", y, mon, d, h, min, &ms), 0);
    return ms / 1000 + s;
}

static int off_at(const char *zone, int64_t t)
{
    int off = 99999;

    assert_int_equal(sb_tz_offset(zone, t, &off), 0);
    return off;
}

static void test_utc(void **state)
{
    int64_t ms;
    struct tm tm;

    (void)state;
    assert_int_equal(sb_tz_mktime("UTC", 1970, 1, 1, 0, 0, &ms), 0);
    assert_int_equal(ms, 0);
    assert_int_equal(sb_tz_mktime("UTC", 2026, 12, 1, 14, 5, &ms), 0);
    assert_int_equal(ms, 1796133900000LL);
    assert_int_equal(sb_tz_mktime("UTC", 2000, 2, 29, 0, 0, &ms), 0);
    assert_int_equal(ms, 951782400000LL);
    assert_int_equal(sb_tz_mktime("UTC", 1969, 12, 31, 23, 59, &ms), 0);
    assert_int_equal(ms, -60000);
    assert_int_equal(off_at("UTC", 1796133900), 0);
    assert_int_equal(off_at("Etc/UTC", 0), 0);
    assert_true(sb_tz_valid("UTC"));

    assert_int_equal(sb_tz_localtime("UTC", -1, &tm), 0);
    assert_int_equal(tm.tm_year, 69);
    assert_int_equal(tm.tm_mon, 11);
    assert_int_equal(tm.tm_mday, 31);
    assert_int_equal(tm.tm_hour, 23);
    assert_int_equal(tm.tm_min, 59);
    assert_int_equal(tm.tm_sec, 59);
    assert_int_equal(tm.tm_wday, 3); /* Wednesday */
    assert_int_equal(tm.tm_yday, 364);
    assert_int_equal(sb_tz_localtime("UTC", 951782400000LL, &tm), 0);
    assert_int_equal(tm.tm_mon, 1);
    assert_int_equal(tm.tm_mday, 29);
    assert_int_equal(tm.tm_yday, 59);
    /* outside years 1..9999 */
    assert_int_equal(sb_tz_localtime("UTC", INT64_MAX, &tm), -1);
    assert_int_equal(sb_tz_localtime("UTC", INT64_MIN, &tm), -1);
}

static void test_moscow(void **state)
{
    static const struct {
        int y, mon, d;
        int off;
    } cases[] = {
        {1995, 1, 15, 3 * 3600},  /* MSK */
        {1995, 7, 1, 4 * 3600},   /* MSD */
        {2010, 1, 15, 3 * 3600},  /* winter 2010: still MSK +3 */
        {2010, 7, 1, 4 * 3600},   /* summer 2010: MSD +4 */
        {2012, 1, 15, 4 * 3600},  /* 2011-03-27 .. 2014-10-26: +4 all year */
        {2013, 7, 1, 4 * 3600},
        {2014, 10, 25, 4 * 3600},
        {2014, 10, 27, 3 * 3600}, /* back to +3 */
        {2015, 1, 15, 3 * 3600},
        {2026, 7, 1, 3 * 3600},
        {2050, 1, 1, 3 * 3600},   /* after the last transition */
    };
    struct tm tm;

    (void)state;
    for (size_t i = 0; i < SB_ARRAY_LEN(cases); i++) {
        int64_t t = utc(cases[i].y, cases[i].mon, cases[i].d, 12, 0, 0);
        assert_int_equal(off_at("Europe/Moscow", t), cases[i].off);
    }
    /* 2026-12-01T11:05Z is 14:05 on Tuesday 1 December in Moscow */
    assert_int_equal(sb_tz_localtime("Europe/Moscow", 1796123100000LL, &tm),
                     0);
    assert_int_equal(tm.tm_year, 126);
    assert_int_equal(tm.tm_mon, 11);
    assert_int_equal(tm.tm_mday, 1);
    assert_int_equal(tm.tm_hour, 14);
    assert_int_equal(tm.tm_min, 5);
    assert_int_equal(tm.tm_wday, 2);
    assert_int_equal(tm.tm_yday, 334);
    assert_int_equal(tm.tm_gmtoff, 10800);
    assert_int_equal(tm.tm_isdst, 0);
}

static void test_new_york(void **state)
{
    struct tm tm;

    (void)state;
    assert_int_equal(off_at("America/New_York", utc(2026, 1, 15, 12, 0, 0)),
                     -5 * 3600);
    assert_int_equal(off_at("America/New_York", utc(2026, 7, 1, 12, 0, 0)),
                     -4 * 3600);
    /* 2026-03-08 02:00 EST = 07:00Z: clocks go forward */
    assert_int_equal(off_at("America/New_York", utc(2026, 3, 8, 6, 59, 59)),
                     -5 * 3600);
    assert_int_equal(off_at("America/New_York", utc(2026, 3, 8, 7, 0, 0)),
                     -4 * 3600);
    /* 2026-11-01 02:00 EDT = 06:00Z: clocks go back */
    assert_int_equal(off_at("America/New_York", utc(2026, 11, 1, 5, 59, 59)),
                     -4 * 3600);
    assert_int_equal(off_at("America/New_York", utc(2026, 11, 1, 6, 0, 0)),
                     -5 * 3600);
    /* after 2037 only the footer rule "EST5EDT,M3.2.0,M11.1.0" answers:
     * 2045 starts on 12 March and ends on 5 November */
    assert_int_equal(off_at("America/New_York", utc(2045, 3, 12, 6, 59, 59)),
                     -5 * 3600);
    assert_int_equal(off_at("America/New_York", utc(2045, 3, 12, 7, 0, 0)),
                     -4 * 3600);
    assert_int_equal(off_at("America/New_York", utc(2045, 11, 5, 5, 59, 59)),
                     -4 * 3600);
    assert_int_equal(off_at("America/New_York", utc(2045, 11, 5, 6, 0, 0)),
                     -5 * 3600);
    assert_int_equal(off_at("America/New_York", utc(2100, 7, 4, 16, 0, 0)),
                     -4 * 3600);
    assert_int_equal(off_at("America/New_York", utc(2100, 12, 25, 16, 0, 0)),
                     -5 * 3600);
    assert_int_equal(sb_tz_localtime("America/New_York",
                                     utc(2040, 7, 4, 16, 30, 0) * 1000, &tm),
                     0);
    assert_int_equal(tm.tm_hour, 12);
    assert_int_equal(tm.tm_min, 30);
    assert_int_equal(tm.tm_isdst, 1);
    assert_int_equal(tm.tm_gmtoff, -4 * 3600);
}

static void test_mktime(void **state)
{
    int64_t ms;

    (void)state;
    /* Moscow 08:00 local = 05:00Z */
    assert_int_equal(
        sb_tz_mktime("Europe/Moscow", 2026, 6, 1, 8, 0, &ms), 0);
    assert_int_equal(ms / 1000, utc(2026, 6, 1, 5, 0, 0));
    /* New York summer and winter */
    assert_int_equal(
        sb_tz_mktime("America/New_York", 2026, 7, 1, 8, 0, &ms), 0);
    assert_int_equal(ms / 1000, utc(2026, 7, 1, 12, 0, 0));
    assert_int_equal(
        sb_tz_mktime("America/New_York", 2026, 1, 1, 8, 0, &ms), 0);
    assert_int_equal(ms / 1000, utc(2026, 1, 1, 13, 0, 0));
    /* gap: 02:30 does not exist on 2026-03-08; the later instant is 02:30
     * read as EST, 07:30Z (03:30 EDT) */
    assert_int_equal(
        sb_tz_mktime("America/New_York", 2026, 3, 8, 2, 30, &ms), 0);
    assert_int_equal(ms / 1000, utc(2026, 3, 8, 7, 30, 0));
    /* overlap: 01:30 happens twice on 2026-11-01; the earlier is EDT */
    assert_int_equal(
        sb_tz_mktime("America/New_York", 2026, 11, 1, 1, 30, &ms), 0);
    assert_int_equal(ms / 1000, utc(2026, 11, 1, 5, 30, 0));
    /* the same after 2037 (footer) */
    assert_int_equal(
        sb_tz_mktime("America/New_York", 2045, 11, 5, 1, 30, &ms), 0);
    assert_int_equal(ms / 1000, utc(2045, 11, 5, 5, 30, 0));
    assert_int_equal(
        sb_tz_mktime("America/New_York", 2045, 3, 12, 2, 30, &ms), 0);
    assert_int_equal(ms / 1000, utc(2045, 3, 12, 7, 30, 0));
    /* carries: 32 January is 1 February, month 13 is next January,
     * hour 24 is the next day */
    assert_int_equal(sb_tz_mktime("UTC", 2026, 1, 32, 0, 0, &ms), 0);
    assert_int_equal(ms / 1000, utc(2026, 2, 1, 0, 0, 0));
    assert_int_equal(sb_tz_mktime("UTC", 2026, 13, 1, 0, 0, &ms), 0);
    assert_int_equal(ms / 1000, utc(2027, 1, 1, 0, 0, 0));
    assert_int_equal(sb_tz_mktime("UTC", 2026, 12, 31, 24, 0, &ms), 0);
    assert_int_equal(ms / 1000, utc(2027, 1, 1, 0, 0, 0));
    assert_int_equal(sb_tz_mktime("Mars/Olympus", 2026, 1, 1, 0, 0, &ms), -1);
}

static void test_unknown_and_refused(void **state)
{
    static const char *const refused[] = {
        "", "../etc/passwd", "/etc/localtime", "Europe/../UTC",
        "Europe/Moscow\n", "Europe Moscow", "Europe/Moscow;ls",
        "Europe/Moscow%00", "..", "Europe/Moscow.bak", "Évora",
    };
    struct tm tm;
    int64_t ms;
    int off;
    char longname[300];

    (void)state;
    assert_int_equal(sb_tz_offset("Mars/Olympus", 0, &off), -1);
    assert_false(sb_tz_valid("Mars/Olympus"));
    assert_int_equal(sb_tz_localtime("Mars/Olympus", 0, &tm), -1);
    /* a directory and a non-TZif file are not zones */
    assert_false(sb_tz_valid("Europe"));
    assert_false(sb_tz_valid("zone.tab"));
    for (size_t i = 0; i < SB_ARRAY_LEN(refused); i++) {
        assert_int_equal(sb_tz_offset(refused[i], 0, &off), -1);
        assert_false(sb_tz_valid(refused[i]));
        assert_int_equal(sb_tz_localtime(refused[i], 0, &tm), -1);
        assert_int_equal(sb_tz_mktime(refused[i], 2026, 1, 1, 0, 0, &ms),
                         -1);
    }
    assert_int_equal(sb_tz_offset(NULL, 0, &off), -1);
    assert_false(sb_tz_valid(NULL));
    memset(longname, 'A', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    assert_false(sb_tz_valid(longname));
    assert_true(sb_tz_valid("Europe/Moscow"));
    assert_true(sb_tz_valid("America/New_York"));
    assert_true(sb_tz_valid("Etc/GMT+5"));
    assert_int_equal(off_at("Etc/GMT+5", 0), -5 * 3600);
}

/* ---- hand-made TZif files ------------------------------------------------ */

static void put32(struct sb_buf *b, uint32_t v)
{
    unsigned char p[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 8), (unsigned char)v};
    sb_buf_append(b, p, 4);
}

static void put64(struct sb_buf *b, int64_t v)
{
    put32(b, (uint32_t)((uint64_t)v >> 32));
    put32(b, (uint32_t)v);
}

static void header(struct sb_buf *b, uint32_t timecnt, uint32_t typecnt,
                   uint32_t charcnt)
{
    static const char zero[15];

    sb_buf_append(b, "TZif2", 5);
    sb_buf_append(b, zero, 15);
    put32(b, 0);       /* isut */
    put32(b, 0);       /* isstd */
    put32(b, 0);       /* leap */
    put32(b, timecnt);
    put32(b, typecnt);
    put32(b, charcnt);
}

/* A v2 file: an empty v1 block, then transitions (times, their types) and
 * types (offsets, isdst), then the footer. */
static void write_zone(const char *dir, const char *name, size_t ntrans,
                       const int64_t *trans, const uint8_t *idx,
                       size_t ntypes, const int32_t *offs,
                       const uint8_t *dst, const char *footer)
{
    struct sb_buf b;
    char *path = sb_asprintf("%s/%s", dir, name);
    FILE *f;

    sb_buf_init(&b, 0);
    header(&b, 0, 1, 4);
    put32(&b, 0);
    sb_buf_append(&b, "\0\0", 2);
    sb_buf_append(&b, "UTC", 4);
    header(&b, (uint32_t)ntrans, (uint32_t)ntypes, 4);
    for (size_t i = 0; i < ntrans; i++)
        put64(&b, trans[i]);
    sb_buf_append(&b, idx, ntrans);
    for (size_t i = 0; i < ntypes; i++) {
        put32(&b, (uint32_t)offs[i]);
        sb_buf_append(&b, &dst[i], 1);
        sb_buf_append(&b, "", 1);
    }
    sb_buf_append(&b, "ABC", 4);
    sb_buf_printf(&b, "\n%s\n", footer);
    f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b.data, 1, b.len, f), b.len);
    fclose(f);
    sb_buf_free(&b);
    free(path);
}

static void write_raw(const char *dir, const char *name, const void *p,
                      size_t n)
{
    char *path = sb_asprintf("%s/%s", dir, name);
    FILE *f = fopen(path, "wb");

    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    fclose(f);
    free(path);
}

static char TMPDIR_PATH[64]; /* removed by the teardown, even on failure */

static void test_own_files(void **state)
{
    char tmpl[] = "/tmp/sb-tz-XXXXXX";
    char *dir = mkdtemp(tmpl);
    static const int64_t t1[] = {1000000000};
    static const uint8_t i1[] = {1};
    static const int32_t o1[] = {3600, 7200};
    static const uint8_t d1[] = {0, 0};
    static const int32_t o2[] = {10 * 3600, 11 * 3600};
    static const uint8_t d2[] = {0, 1};
    static const int32_t o3[] = {5 * 3600};
    static const uint8_t d3[] = {0};
    int64_t ms;

    (void)state;
    assert_non_null(dir);
    snprintf(TMPDIR_PATH, sizeof(TMPDIR_PATH), "%s", dir);
    setenv("SB_ZONEINFO", dir, 1);
    sb_tz_cleanup();

    /* one transition, then a footer with no DST */
    write_zone(dir, "One", 1, t1, i1, 2, o1, d1, "<+02>-2");
    assert_int_equal(off_at("One", 999999999), 3600);
    assert_int_equal(off_at("One", 1000000000), 7200);
    assert_int_equal(off_at("One", 4000000000LL), 7200);

    /* southern hemisphere, footer only (no transitions): Sydney's rule,
     * DST from the first Sunday of October to the first Sunday of April,
     * changes at 02:00 standard and 03:00 daylight time */
    write_zone(dir, "South", 0, NULL, NULL, 2, o2, d2,
               "AEST-10AEDT,M10.1.0,M4.1.0/3");
    assert_int_equal(off_at("South", utc(2030, 1, 15, 0, 0, 0)), 11 * 3600);
    assert_int_equal(off_at("South", utc(2030, 7, 15, 0, 0, 0)), 10 * 3600);
    assert_int_equal(off_at("South", utc(2030, 12, 31, 20, 0, 0)),
                     11 * 3600);
    /* 2030-04-07 03:00 AEDT = 2030-04-06 16:00Z */
    assert_int_equal(off_at("South", utc(2030, 4, 6, 15, 59, 59)), 11 * 3600);
    assert_int_equal(off_at("South", utc(2030, 4, 6, 16, 0, 0)), 10 * 3600);
    /* 2030-10-06 02:00 AEST = 2030-10-05 16:00Z */
    assert_int_equal(off_at("South", utc(2030, 10, 5, 15, 59, 59)),
                     10 * 3600);
    assert_int_equal(off_at("South", utc(2030, 10, 5, 16, 0, 0)), 11 * 3600);

    /* Julian-day rules and a time after 24h (v3): DST from day J60 (1
     * March, never 29 February) to day 300 (zero-based) at 25:00 */
    write_zone(dir, "Jul", 0, NULL, NULL, 2, o1, d2,
               "<+01>-1<+02>,J60/0,300/25");
    assert_int_equal(off_at("Jul", utc(2028, 2, 29, 12, 0, 0)), 3600);
    assert_int_equal(off_at("Jul", utc(2028, 3, 1, 12, 0, 0)), 7200);
    /* day 300 of 2028 (leap) is 27 October; 25:00 of +02 is 23:00Z */
    assert_int_equal(off_at("Jul", utc(2028, 10, 27, 22, 59, 0)), 7200);
    assert_int_equal(off_at("Jul", utc(2028, 10, 27, 23, 0, 0)), 3600);

    /* a footer we cannot read: the last type carries on */
    write_zone(dir, "Odd", 0, NULL, NULL, 1, o3, d3, "??");
    assert_int_equal(off_at("Odd", 0), 5 * 3600);

    /* corrupt files are unknown zones */
    write_raw(dir, "Empty", "", 0);
    write_raw(dir, "Short", "TZif2\0\0\0", 8);
    write_raw(dir, "Text", "Europe/Moscow\n", 14);
    assert_false(sb_tz_valid("Empty"));
    assert_false(sb_tz_valid("Short"));
    assert_false(sb_tz_valid("Text"));
    {
        /* typecnt 0 */
        struct sb_buf b;

        sb_buf_init(&b, 0);
        header(&b, 0, 0, 0);
        write_raw(dir, "NoTypes", b.data, b.len);
        sb_buf_free(&b);
        assert_false(sb_tz_valid("NoTypes"));
    }
    /* UTC without any zone file */
    assert_true(sb_tz_valid("UTC"));
    assert_int_equal(sb_tz_mktime("UTC", 2026, 1, 1, 0, 0, &ms), 0);
    assert_false(sb_tz_valid("Europe/Moscow"));

    sb_tz_cleanup();
    unsetenv("SB_ZONEINFO");
    {
        char *cmd = sb_asprintf("rm -rf '%s'", dir);
        assert_int_equal(system(cmd), 0);
        free(cmd);
    }
    assert_true(sb_tz_valid("Europe/Moscow"));
}

/* ---- the cache and threads ----------------------------------------------- */

static const char *const zones[] = {
    "Europe/Moscow", "America/New_York", "Europe/London", "Europe/Berlin",
    "Asia/Tokyo", "Australia/Sydney", "America/Los_Angeles",
    "America/Sao_Paulo", "Asia/Kolkata", "Asia/Yekaterinburg",
    "Asia/Vladivostok", "Europe/Kaliningrad", "Europe/Samara",
    "Asia/Novosibirsk", "Asia/Almaty", "Europe/Minsk", "Europe/Kyiv",
    "Africa/Cairo", "America/Santiago", "Pacific/Auckland",
    "Asia/Kathmandu", "America/St_Johns", "Australia/Lord_Howe",
    "Pacific/Chatham", "Asia/Tehran", "Europe/Dublin", "Africa/Casablanca",
    "America/Havana", "Asia/Gaza", "America/Godthab", "Europe/Lisbon",
    "Asia/Jerusalem", "America/Chicago", "America/Denver",
    "America/Anchorage", "Pacific/Honolulu", "Asia/Shanghai",
    "Asia/Singapore", "Asia/Dubai", "Europe/Istanbul", "Europe/Paris",
    "Europe/Madrid", "Europe/Rome", "Europe/Warsaw", "Europe/Helsinki",
    "Europe/Athens", "Asia/Seoul", "Asia/Bangkok", "Asia/Jakarta",
    "Asia/Manila", "Asia/Karachi", "Asia/Dhaka", "Asia/Tashkent",
    "Asia/Baku", "Asia/Tbilisi", "Asia/Yerevan", "Asia/Omsk",
    "Asia/Krasnoyarsk", "Asia/Irkutsk", "Asia/Yakutsk", "Asia/Magadan",
    "Asia/Kamchatka", "Europe/Volgograd", "Europe/Astrakhan",
    "America/Mexico_City", "America/Bogota", "America/Lima",
    "America/Caracas", "America/Halifax", "Atlantic/Azores",
    "Atlantic/Reykjavik", "Africa/Johannesburg", "Africa/Lagos",
    "Africa/Nairobi", "Antarctica/Troll", "Pacific/Apia", "Pacific/Kiritimati",
    "America/Asuncion", "America/Argentina/Buenos_Aires", "Etc/GMT-14",
};

/* glibc's view of the same file: the offset at t with TZ=zone. */
static long glibc_offset(const char *zone, time_t t)
{
    struct tm tm;

    setenv("TZ", zone, 1);
    tzset();
    assert_non_null(localtime_r(&t, &tm));
    return tm.tm_gmtoff;
}

static void test_against_glibc(void **state)
{
    uint64_t x = 88172645463325252ULL;
    size_t checked = 0;
    char *old = getenv("TZ") ? sb_strdup(getenv("TZ")) : NULL;

    (void)state;
    /* more zones than the cache holds, several passes */
    for (int pass = 0; pass < 3; pass++) {
        for (size_t z = 0; z < SB_ARRAY_LEN(zones); z++) {
            for (int k = 0; k < 40; k++) {
                int64_t t;
                int off;

                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                /* 1950 .. 2150 */
                t = -631152000LL + (int64_t)(x % 6311520000ULL);
                if (sb_tz_offset(zones[z], t, &off) != 0)
                    fail_msg("zone %s unknown", zones[z]);
                if (off != glibc_offset(zones[z], (time_t)t))
                    fail_msg("%s at %lld: %d, glibc %ld", zones[z],
                             (long long)t, off,
                             glibc_offset(zones[z], (time_t)t));
                checked++;
            }
        }
    }
    if (old) {
        setenv("TZ", old, 1);
        free(old);
    } else {
        unsetenv("TZ");
    }
    tzset();
    assert_true(checked > 9000);
}

static void *worker(void *arg)
{
    size_t base = (size_t)(uintptr_t)arg, bad = 0;

    for (size_t i = 0; i < 4000; i++) {
        const char *z = zones[(base + i * 7) % SB_ARRAY_LEN(zones)];
        int off;
        struct tm tm;

        if (sb_tz_offset(z, 1700000000 + (int64_t)i * 3600, &off) != 0 ||
            sb_tz_localtime(z, 1700000000000LL, &tm) != 0)
            bad++;
        if (i % 1000 == 999)
            sb_tz_cleanup();
    }
    return (void *)(uintptr_t)bad;
}

static void test_threads(void **state)
{
    pthread_t th[4];

    (void)state;
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(
            pthread_create(&th[i], NULL, worker, (void *)(uintptr_t)i), 0);
    for (size_t i = 0; i < 4; i++) {
        void *bad;

        assert_int_equal(pthread_join(th[i], &bad), 0);
        assert_int_equal((uintptr_t)bad, 0);
    }
    assert_int_equal(off_at("Europe/Moscow", 1700000000), 3 * 3600);
}

static int teardown(void **state)
{
    (void)state;
    if (TMPDIR_PATH[0]) {
        char *cmd = sb_asprintf("rm -rf '%s'", TMPDIR_PATH);

        if (system(cmd) != 0)
            fprintf(stderr, "cannot remove %s\n", TMPDIR_PATH);
        free(cmd);
    }
    sb_tz_cleanup();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utc),
        cmocka_unit_test(test_moscow),
        cmocka_unit_test(test_new_york),
        cmocka_unit_test(test_mktime),
        cmocka_unit_test(test_unknown_and_refused),
        cmocka_unit_test(test_own_files),
        cmocka_unit_test(test_against_glibc),
        cmocka_unit_test(test_threads),
    };

    unsetenv("SB_ZONEINFO");
    return cmocka_run_group_tests(tests, NULL, teardown);
}
