/* test_notify_policy.c - retry backoff, quiet hours and time parsing.
 *
 * The dispatcher's pure rules from notify_policy.h, each with a clock the
 * test controls: the doubling and capped backoff with its jitter bounds and
 * a provider's Retry-After as a floor; when a channel is exhausted; quiet
 * hours as text and as a customer's JSON preference; when quiet hours end
 * for a customer in Moscow (overnight and daytime windows, both edges), in
 * New York across the spring-forward change, and in an unknown zone (UTC);
 * RFC 3339 and epoch-ms times, good and bad. Expected instants come from
 * glibc's timegm(), not from the code under test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "notify_policy.h"
#include "tz.h"
#include "util.h"

#define HOUR_MS 3600000LL

/* UTC ms of a UTC wall time (glibc as the oracle). */
static int64_t utc_ms(int y, int mon, int d, int h, int min, int s)
{
    struct tm tm;

    memset(&tm, 0, sizeof(tm));
    tm.tm_year = y - 1900;
    tm.tm_mon = mon - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = min;
    tm.tm_sec = s;
    return (int64_t)timegm(&tm) * 1000;
}

/* ---- backoff ---------------------------------------------------------- */

static void test_backoff_doubling(void **state)
{
    /* min 1000, max 60000: the nominal delay d before jitter */
    static const struct {
        int tries;
        long long d;
    } cases[] = {
        {1, 1000}, {2, 2000}, {3, 4000}, {4, 8000}, {5, 16000},
        {6, 32000}, {7, 60000}, {8, 60000}, {30, 60000}, {1000, 60000},
    };

    (void)state;
    for (size_t i = 0; i < SB_ARRAY_LEN(cases); i++) {
        long long d = cases[i].d;
        long long lo = sb_ntf_backoff(1000, 60000, cases[i].tries, -1, 0.0);
        long long hi = sb_ntf_backoff(1000, 60000, cases[i].tries, -1,
                                      0.9999999);
        long long mid = sb_ntf_backoff(1000, 60000, cases[i].tries, -1, 0.5);

        /* "equal jitter": rnd 0 gives d/2, rnd near 1 gives nearly d */
        assert_int_equal(lo, d / 2);
        assert_true(hi <= d);
        assert_true(hi >= d - 1);
        assert_true(mid >= d / 2 + d / 4 - 1 && mid <= d / 2 + d / 4 + 1);
    }
    /* a cap that is not a power-of-two multiple of min */
    assert_int_equal(sb_ntf_backoff(500, 3000, 4, -1, 0.0), 1500);
    assert_int_equal(sb_ntf_backoff(500, 3000, 3, -1, 0.0), 1000);
}

static void test_backoff_jitter_bounds(void **state)
{
    (void)state;
    for (int tries = 1; tries <= 10; tries++) {
        long long d = 2000LL << (tries - 1);
        long long prev = -1;

        if (d > 300000)
            d = 300000;
        for (int k = 0; k <= 1000; k++) {
            double rnd = k / 1000.0; /* includes 1.0: out of [0, 1) */
            long long v = sb_ntf_backoff(2000, 300000, tries, -1, rnd);

            assert_true(v >= d / 2);
            assert_true(v <= d);
            assert_true(v >= prev); /* more rnd never means sooner */
            prev = v;
        }
        /* the spread covers the interval, not one point */
        assert_true(sb_ntf_backoff(2000, 300000, tries, -1, 0.99) -
                        sb_ntf_backoff(2000, 300000, tries, -1, 0.0) >=
                    d / 2 - d / 50 - 1);
    }
    /* rnd out of range is clamped, never outside [d/2, d] */
    assert_int_equal(sb_ntf_backoff(1000, 60000, 1, -1, -3.0), 500);
    assert_true(sb_ntf_backoff(1000, 60000, 1, -1, 7.0) <= 1000);
}

static void test_backoff_retry_after(void **state)
{
    (void)state;
    /* a floor: later than the backoff wins */
    assert_int_equal(sb_ntf_backoff(1000, 60000, 1, 45000, 0.0), 45000);
    assert_int_equal(sb_ntf_backoff(1000, 60000, 1, 45000, 0.9999), 45000);
    /* even beyond the cap: never earlier than the provider asked */
    assert_int_equal(sb_ntf_backoff(1000, 60000, 9, 120000, 0.0), 120000);
    /* an earlier Retry-After does not shorten the backoff */
    assert_int_equal(sb_ntf_backoff(1000, 60000, 3, 100, 0.0), 2000);
    assert_int_equal(sb_ntf_backoff(1000, 60000, 3, 0, 0.0), 2000);
    /* none given */
    assert_int_equal(sb_ntf_backoff(1000, 60000, 3, -1, 0.0), 2000);
}

static void test_exhausted(void **state)
{
    const int64_t t = utc_ms(2026, 11, 26, 10, 0, 0);

    (void)state;
    /* by count */
    assert_int_equal(sb_ntf_exhausted(1, 3, t, 3600000, t), 0);
    assert_int_equal(sb_ntf_exhausted(2, 3, t, 3600000, t + 1000), 0);
    assert_int_equal(sb_ntf_exhausted(3, 3, t, 3600000, t + 2000), 1);
    assert_int_equal(sb_ntf_exhausted(4, 3, t, 3600000, t + 2000), 1);
    assert_int_equal(sb_ntf_exhausted(1, 1, t, 3600000, t), 1);
    /* by age of the first try on the channel */
    assert_int_equal(sb_ntf_exhausted(1, 10, t, 3600000, t + 3599999), 0);
    assert_int_equal(sb_ntf_exhausted(1, 10, t, 3600000, t + 3600000), 1);
    assert_int_equal(sb_ntf_exhausted(2, 10, t, 3600000, t + 7200000), 1);
}

/* ---- quiet hours: parsing --------------------------------------------- */

static void test_quiet_parse(void **state)
{
    static const struct {
        const char *s;
        int rc, from, to;
    } cases[] = {
        {"22:00-08:00", 0, 1320, 480},
        {"12:00-14:00", 0, 720, 840},
        {"00:00-23:59", 0, 0, 1439},
        {"23:59-00:00", 0, 1439, 0},
        {"07:05-07:05", 0, 425, 425},
        {"", -1, 0, 0},
        {"22:00", -1, 0, 0},
        {"22:00-", -1, 0, 0},
        {"-08:00", -1, 0, 0},
        {"22-08", -1, 0, 0},
        {"2:00-08:00", -1, 0, 0},
        {"22:00-8:00", -1, 0, 0},
        {"24:00-08:00", -1, 0, 0},
        {"22:00-08:60", -1, 0, 0},
        {"22:00-08:00x", -1, 0, 0},
        {" 22:00-08:00", -1, 0, 0},
        {"22:00 - 08:00", -1, 0, 0},
        {"22.00-08.00", -1, 0, 0},
        {"ab:cd-08:00", -1, 0, 0},
        {"22:00-08:00-09:00", -1, 0, 0},
        {"+2:00-08:00", -1, 0, 0},
    };

    (void)state;
    for (size_t i = 0; i < SB_ARRAY_LEN(cases); i++) {
        int from = -7, to = -7;
        int rc = sb_ntf_quiet_parse(cases[i].s, &from, &to);

        if (rc != cases[i].rc)
            print_error("case \"%s\": rc %d\n", cases[i].s, rc);
        assert_int_equal(rc, cases[i].rc);
        if (rc == 0) {
            assert_int_equal(from, cases[i].from);
            assert_int_equal(to, cases[i].to);
        }
    }
}

static void test_quiet_parse_json(void **state)
{
    static const struct {
        const char *s;
        int rc, from, to;
    } cases[] = {
        {"{\"from\":\"22:00\",\"to\":\"08:00\"}", 0, 1320, 480},
        {"{\"to\":\"14:00\",\"from\":\"12:30\"}", 0, 750, 840},
        {" { \"from\" : \"00:00\" , \"to\" : \"06:15\" , \"x\": 1 } ", 0, 0,
         375},
        {"{\"from\":\"22:00\"}", -1, 0, 0},
        {"{\"to\":\"08:00\"}", -1, 0, 0},
        {"{}", -1, 0, 0},
        {"[]", -1, 0, 0},
        {"[\"22:00\",\"08:00\"]", -1, 0, 0},
        {"\"22:00-08:00\"", -1, 0, 0},
        {"{\"from\":2200,\"to\":800}", -1, 0, 0},
        {"{\"from\":\"25:00\",\"to\":\"08:00\"}", -1, 0, 0},
        {"{\"from\":\"22:00\",\"to\":\"8:00\"}", -1, 0, 0},
        {"{\"from\":null,\"to\":\"08:00\"}", -1, 0, 0},
        {"{\"from\":\"22:00\",\"to\":\"08:00\"", -1, 0, 0},
        {"", -1, 0, 0},
        {"null", -1, 0, 0},
    };

    (void)state;
    for (size_t i = 0; i < SB_ARRAY_LEN(cases); i++) {
        int from = -7, to = -7;
        int rc = sb_ntf_quiet_parse_json(cases[i].s, &from, &to);

        if (rc != cases[i].rc)
            print_error("case %s: rc %d\n", cases[i].s, rc);
        assert_int_equal(rc, cases[i].rc);
        if (rc == 0) {
            assert_int_equal(from, cases[i].from);
            assert_int_equal(to, cases[i].to);
        }
    }
}

/* ---- quiet hours: when they end --------------------------------------- */

struct quiet_case {
    const char *what;
    int from, to;
    const char *tz;
    int64_t now;
    int64_t want; /* 0: not quiet */
};

static void run_quiet(const struct quiet_case *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int64_t got = sb_ntf_quiet_until(c[i].from, c[i].to, c[i].tz,
                                         c[i].now);

        if (got != c[i].want)
            print_error("case %s: got %lld want %lld\n", c[i].what,
                        (long long)got, (long long)c[i].want);
        assert_int_equal(got, c[i].want);
    }
}

static void test_quiet_moscow_overnight(void **state)
{
    /* Moscow is UTC+3 all year; local = UTC + 3 h. Window 22:00-08:00. */
    const struct quiet_case c[] = {
        {"23:30 -> 08:00 next day", 1320, 480, "Europe/Moscow",
         utc_ms(2026, 3, 10, 20, 30, 0), utc_ms(2026, 3, 11, 5, 0, 0)},
        {"07:00 -> 08:00 same day", 1320, 480, "Europe/Moscow",
         utc_ms(2026, 3, 11, 4, 0, 0), utc_ms(2026, 3, 11, 5, 0, 0)},
        {"12:00 -> not quiet", 1320, 480, "Europe/Moscow",
         utc_ms(2026, 3, 11, 9, 0, 0), 0},
        {"22:00 sharp -> quiet", 1320, 480, "Europe/Moscow",
         utc_ms(2026, 3, 10, 19, 0, 0), utc_ms(2026, 3, 11, 5, 0, 0)},
        {"21:59:59 -> not yet", 1320, 480, "Europe/Moscow",
         utc_ms(2026, 3, 10, 18, 59, 59), 0},
        {"00:00 -> 08:00 same day", 1320, 480, "Europe/Moscow",
         utc_ms(2026, 3, 10, 21, 0, 0), utc_ms(2026, 3, 11, 5, 0, 0)},
        {"07:59:59.999 -> 1 ms left", 1320, 480, "Europe/Moscow",
         utc_ms(2026, 3, 11, 5, 0, 0) - 1, utc_ms(2026, 3, 11, 5, 0, 0)},
        {"08:00 sharp -> over", 1320, 480, "Europe/Moscow",
         utc_ms(2026, 3, 11, 5, 0, 0), 0},
        /* across a month and a year end */
        {"23:30 Dec 31 -> 08:00 Jan 1", 1320, 480, "Europe/Moscow",
         utc_ms(2026, 12, 31, 20, 30, 0), utc_ms(2027, 1, 1, 5, 0, 0)},
        {"23:00 Feb 28 2028 -> Feb 29", 1320, 480, "Europe/Moscow",
         utc_ms(2028, 2, 28, 20, 0, 0), utc_ms(2028, 2, 29, 5, 0, 0)},
        /* the same instant is daytime in UTC */
        {"same instant, UTC", 1320, 480, "UTC",
         utc_ms(2026, 3, 10, 20, 30, 0), 0},
    };

    (void)state;
    run_quiet(c, SB_ARRAY_LEN(c));
}

static void test_quiet_moscow_day(void **state)
{
    /* Window 12:00-14:00 Moscow time. */
    const struct quiet_case c[] = {
        {"13:15 -> 14:00", 720, 840, "Europe/Moscow",
         utc_ms(2026, 7, 1, 10, 15, 0), utc_ms(2026, 7, 1, 11, 0, 0)},
        {"12:00 sharp -> 14:00", 720, 840, "Europe/Moscow",
         utc_ms(2026, 7, 1, 9, 0, 0), utc_ms(2026, 7, 1, 11, 0, 0)},
        {"11:59 -> not quiet", 720, 840, "Europe/Moscow",
         utc_ms(2026, 7, 1, 8, 59, 0), 0},
        {"14:00 -> over", 720, 840, "Europe/Moscow",
         utc_ms(2026, 7, 1, 11, 0, 0), 0},
        {"23:30 -> not quiet", 720, 840, "Europe/Moscow",
         utc_ms(2026, 7, 1, 20, 30, 0), 0},
        {"from == to: never quiet", 720, 720, "Europe/Moscow",
         utc_ms(2026, 7, 1, 9, 0, 0), 0},
        {"from == to at midnight", 0, 0, "Europe/Moscow",
         utc_ms(2026, 7, 1, 21, 0, 0), 0},
    };

    (void)state;
    run_quiet(c, SB_ARRAY_LEN(c));
}

static void test_quiet_new_york_dst(void **state)
{
    /* 2026-03-08 02:00 EST (UTC-5) the clocks jump to 03:00 EDT (UTC-4);
     * 2026-11-01 02:00 EDT they go back to 01:00 EST. */
    const struct quiet_case c[] = {
        /* window 01:00-03:00 on the spring-forward night: 03:00 EDT is
         * 07:00Z, only one real hour after 01:00 EST (06:00Z) */
        {"01:30 EST -> 03:00 EDT", 60, 180, "America/New_York",
         utc_ms(2026, 3, 8, 6, 30, 0), utc_ms(2026, 3, 8, 7, 0, 0)},
        {"01:00 EST -> 03:00 EDT", 60, 180, "America/New_York",
         utc_ms(2026, 3, 8, 6, 0, 0), utc_ms(2026, 3, 8, 7, 0, 0)},
        {"01:59:59 EST -> 1 s left", 60, 180, "America/New_York",
         utc_ms(2026, 3, 8, 6, 59, 59), utc_ms(2026, 3, 8, 7, 0, 0)},
        {"03:00 EDT -> over", 60, 180, "America/New_York",
         utc_ms(2026, 3, 8, 7, 0, 0), 0},
        {"03:30 EDT -> over", 60, 180, "America/New_York",
         utc_ms(2026, 3, 8, 7, 30, 0), 0},
        {"00:59 EST -> not yet", 60, 180, "America/New_York",
         utc_ms(2026, 3, 8, 5, 59, 0), 0},
        /* the same window a day earlier and later (no change): 2 h */
        {"01:30 EST Mar 7 -> 03:00 EST", 60, 180, "America/New_York",
         utc_ms(2026, 3, 7, 6, 30, 0), utc_ms(2026, 3, 7, 8, 0, 0)},
        {"01:30 EDT Mar 9 -> 03:00 EDT", 60, 180, "America/New_York",
         utc_ms(2026, 3, 9, 5, 30, 0), utc_ms(2026, 3, 9, 7, 0, 0)},
        {"04:00 EDT Mar 8 -> 08:00 EDT", 1320, 480, "America/New_York",
         utc_ms(2026, 3, 8, 8, 0, 0), utc_ms(2026, 3, 8, 12, 0, 0)},
        /* and back in November: 08:00 EST = 13:00Z */
        {"23:00 EDT Oct 31 -> 08:00 EST", 1320, 480, "America/New_York",
         utc_ms(2026, 11, 1, 3, 0, 0), utc_ms(2026, 11, 1, 13, 0, 0)},
    };

    int64_t t;

    (void)state;
    run_quiet(c, SB_ARRAY_LEN(c));
    /* 01:15 EST on Nov 1 comes after 01:15 EDT: a window 22:00-01:30 may
     * be read as over or as ending at 01:30 EST (06:30Z), never as ending
     * at 01:30 EDT, which is past */
    t = sb_ntf_quiet_until(1320, 90, "America/New_York",
                           utc_ms(2026, 11, 1, 6, 15, 0));
    assert_true(t == 0 || t == utc_ms(2026, 11, 1, 6, 30, 0));
    /* the first 01:15 (EDT): ends at the first 01:30 */
    assert_int_equal(sb_ntf_quiet_until(1320, 90, "America/New_York",
                                        utc_ms(2026, 11, 1, 5, 15, 0)),
                     utc_ms(2026, 11, 1, 5, 30, 0));
}

/* The evening before the spring-forward night is 23 hours long: 24 h
 * after 23:00 EST on Mar 7 is already 00:00 EDT on Mar 9, so "tomorrow
 * morning" must be the next local date, not now + 24 h. */
static void test_quiet_eve_of_spring_forward(void **state)
{
    const struct quiet_case c[] = {
        /* 22:00-08:00: ends 08:00 EDT Mar 8 = 12:00Z (not Mar 9) */
        {"23:00 EST Mar 7 -> 08:00 EDT Mar 8", 1320, 480,
         "America/New_York", utc_ms(2026, 3, 8, 4, 0, 0),
         utc_ms(2026, 3, 8, 12, 0, 0)},
        {"23:59 EST Mar 7 -> 08:00 EDT Mar 8", 1320, 480,
         "America/New_York", utc_ms(2026, 3, 8, 4, 59, 0),
         utc_ms(2026, 3, 8, 12, 0, 0)},
        /* an end inside the gap (02:30 does not exist on Mar 8): the
         * later instant, read with the offset before the gap = 07:30Z */
        {"23:00 EST Mar 7, to 02:30", 1320, 150, "America/New_York",
         utc_ms(2026, 3, 8, 4, 0, 0), utc_ms(2026, 3, 8, 7, 30, 0)},
    };

    (void)state;
    run_quiet(c, SB_ARRAY_LEN(c));
}

static void test_quiet_unknown_zone(void **state)
{
    /* unknown, refused or missing zones: read as UTC */
    const struct quiet_case c[] = {
        {"Mars/Olympus 23:30Z", 1320, 480, "Mars/Olympus",
         utc_ms(2026, 3, 10, 23, 30, 0), utc_ms(2026, 3, 11, 8, 0, 0)},
        {"Mars/Olympus 12:00Z", 1320, 480, "Mars/Olympus",
         utc_ms(2026, 3, 10, 12, 0, 0), 0},
        {"../etc/passwd", 1320, 480, "../etc/passwd",
         utc_ms(2026, 3, 10, 7, 0, 0), utc_ms(2026, 3, 10, 8, 0, 0)},
        {"empty zone", 720, 840, "", utc_ms(2026, 3, 10, 13, 0, 0),
         utc_ms(2026, 3, 10, 14, 0, 0)},
        {"UTC", 720, 840, "UTC", utc_ms(2026, 3, 10, 13, 0, 0),
         utc_ms(2026, 3, 10, 14, 0, 0)},
    };

    (void)state;
    run_quiet(c, SB_ARRAY_LEN(c));
}

/* ---- time parsing ----------------------------------------------------- */

static void test_parse_time_good(void **state)
{
    const int64_t t10 = utc_ms(2026, 11, 26, 10, 0, 0);
    const struct {
        const char *s;
        int64_t want;
    } cases[] = {
        {"2026-11-26T10:00:00Z", t10},
        {"2026-11-26t10:00:00z", t10},
        {"2026-11-26 10:00:00Z", t10},
        {"2026-11-26T13:00:00+03:00", t10},
        {"2026-11-26T05:00:00-05:00", t10},
        {"2026-11-26T15:30:00+05:30", t10},
        {"2026-11-26T10:00:00+00:00", t10},
        {"2026-11-26T10:00:00-00:00", t10},
        {"2026-11-26T10:00:00.5Z", t10 + 500},
        {"2026-11-26T10:00:00.05Z", t10 + 50},
        {"2026-11-26T10:00:00.123Z", t10 + 123},
        {"2026-11-26T10:00:00.123999Z", t10 + 123},
        {"2026-11-26T13:00:00.250+03:00", t10 + 250},
        /* offsets that cross a day and a year */
        {"2026-12-31T23:30:00-01:00", utc_ms(2027, 1, 1, 0, 30, 0)},
        {"2027-01-01T01:00:00+03:00", utc_ms(2026, 12, 31, 22, 0, 0)},
        /* leap years */
        {"2024-02-29T12:00:00Z", utc_ms(2024, 2, 29, 12, 0, 0)},
        {"2000-02-29T00:00:00Z", 951782400000LL},
        {"2028-02-29T23:59:59Z", utc_ms(2028, 2, 29, 23, 59, 59)},
        {"1970-01-01T00:00:00Z", 0},
        /* epoch milliseconds */
        {"1795687200000", 1795687200000LL},
        {"0", 0},
        {"1", 1},
    };

    (void)state;
    assert_int_equal(t10, 1795687200000LL);
    for (size_t i = 0; i < SB_ARRAY_LEN(cases); i++) {
        int64_t ms = -12345;
        int rc = sb_ntf_parse_time(cases[i].s, &ms);

        if (rc != 0 || ms != cases[i].want)
            print_error("case %s: rc %d ms %lld want %lld\n", cases[i].s,
                        rc, (long long)ms, (long long)cases[i].want);
        assert_int_equal(rc, 0);
        assert_int_equal(ms, cases[i].want);
    }
}

static void test_parse_time_bad(void **state)
{
    static const char *const bad[] = {
        "",
        "now",
        "-1",
        "12a",
        "1795687200000.5",
        "99999999999999999999999999", /* would overflow */
        "2026-11-26",
        "2026-11-26T10:00Z",
        "2026-11-26T10:00:00",         /* no zone */
        "2026-11-26T10:00:00+0300",
        "2026-11-26T10:00:00+3:00",
        "2026-11-26T10:00:00+24:00",
        "2026-11-26T10:00:00+03:60",
        "2026-11-26T10:00:00.Z",       /* a dot without digits */
        "2026-11-26T10:00:00Z ",
        " 2026-11-26T10:00:00Z",
        "2026-11-26T10:00:00ZZ",
        "2026-11-26X10:00:00Z",
        "2026/11/26T10:00:00Z",
        "26-11-2026T10:00:00Z",
        "2026-13-01T00:00:00Z",        /* month 13 */
        "2026-00-10T00:00:00Z",        /* month 0 */
        "2026-11-00T00:00:00Z",        /* day 0 */
        "2026-11-31T00:00:00Z",        /* November has 30 */
        "2026-04-31T00:00:00Z",
        "2026-01-32T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "2026-02-29T00:00:00Z",        /* 2026 is not a leap year */
        "2100-02-29T00:00:00Z",        /* divisible by 100, not by 400 */
        "1900-02-29T00:00:00Z",
        "2026-11-26T24:00:00Z",
        "2026-11-26T10:60:00Z",
        "2026-11-26T10:00:61Z",
        "2026-11-26T1a:00:00Z",
        "+026-11-26T10:00:00Z",
    };

    (void)state;
    for (size_t i = 0; i < SB_ARRAY_LEN(bad); i++) {
        int64_t ms = 0;
        int rc = sb_ntf_parse_time(bad[i], &ms);

        if (rc != -1)
            print_error("case \"%s\": accepted as %lld\n", bad[i],
                        (long long)ms);
        assert_int_equal(rc, -1);
    }
    /* the good neighbours of the leap-day cases */
    {
        int64_t ms = 0;

        assert_int_equal(sb_ntf_parse_time("2026-02-28T00:00:00Z", &ms), 0);
        assert_int_equal(ms, utc_ms(2026, 2, 28, 0, 0, 0));
        assert_int_equal(sb_ntf_parse_time("2026-03-01T00:00:00Z", &ms), 0);
        assert_int_equal(ms - utc_ms(2026, 2, 28, 0, 0, 0), 24 * HOUR_MS);
        assert_int_equal(sb_ntf_parse_time("2100-02-28T00:00:00Z", &ms), 0);
        assert_int_equal(ms, utc_ms(2100, 2, 28, 0, 0, 0));
        assert_int_equal(sb_ntf_parse_time("2026-11-30T00:00:00Z", &ms), 0);
    }
}

static int teardown(void **state)
{
    (void)state;
    sb_tz_cleanup();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backoff_doubling),
        cmocka_unit_test(test_backoff_jitter_bounds),
        cmocka_unit_test(test_backoff_retry_after),
        cmocka_unit_test(test_exhausted),
        cmocka_unit_test(test_quiet_parse),
        cmocka_unit_test(test_quiet_parse_json),
        cmocka_unit_test(test_quiet_moscow_overnight),
        cmocka_unit_test(test_quiet_moscow_day),
        cmocka_unit_test(test_quiet_new_york_dst),
        cmocka_unit_test(test_quiet_eve_of_spring_forward),
        cmocka_unit_test(test_quiet_unknown_zone),
        cmocka_unit_test(test_parse_time_good),
        cmocka_unit_test(test_parse_time_bad),
    };

    return cmocka_run_group_tests(tests, NULL, teardown);
}
