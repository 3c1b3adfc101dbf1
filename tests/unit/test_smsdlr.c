/* test_smsdlr.c - the SMS delivery-report state machine, table-driven.
 *
 * Every Kannel %d value and Twilio status is mapped through a table of
 * expected states (garbage included). All 49 (current, incoming) pairs of
 * sb_dlr_next() are checked against an oracle written from the rules
 * (forward only, final sticky, unknown yields to final reports only), then
 * report sequences: out of order, duplicated, every permutation of a set
 * of reports. The deadline is checked at its boundary and at the int64
 * extremes. The state names are checked against the ranking in
 * src/lua/notify_report.lua, which the drivers feed them to.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "smsdlr.h"

#define NONE SB_DLR_NONE
#define QUEUED SB_DLR_QUEUED
#define SENT SB_DLR_SENT
#define DELIVERED SB_DLR_DELIVERED
#define UNDELIVERED SB_DLR_UNDELIVERED
#define FAILED SB_DLR_FAILED
#define UNKNOWN SB_DLR_UNKNOWN

struct map_case {
    const char *in;
    enum sb_dlr_state want;
};

static const struct map_case kannel_cases[] = {
    {"1", DELIVERED},
    {"2", UNDELIVERED},
    {"4", SENT},
    {"8", SENT},
    {"16", FAILED},
    {"0", NONE},
    {"3", NONE},
    {"19", NONE},
    {"32", NONE},
    {"-1", NONE},
    {"", NONE},
    {"abc", NONE},
    {"1x", NONE},
    {"8 ", NONE},
    {"1.0", NONE},
    {NULL, NONE},
    {"99999999999999999999", NONE},
};

static const struct map_case twilio_cases[] = {
    {"accepted", QUEUED},
    {"scheduled", QUEUED},
    {"queued", QUEUED},
    {"sending", QUEUED},
    {"sent", SENT},
    {"delivered", DELIVERED},
    {"read", DELIVERED},
    {"undelivered", UNDELIVERED},
    {"failed", FAILED},
    {"canceled", FAILED},
    {"Delivered", DELIVERED},
    {"FAILED", FAILED},
    {"receiving", NONE},
    {"received", NONE},
    {"partially_delivered", NONE},
    {"unknown", NONE},
    {"", NONE},
    {"delivered ", NONE},
    {NULL, NONE},
};

static void test_kannel_map(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(kannel_cases) / sizeof(kannel_cases[0]);
         i++) {
        const struct map_case *c = &kannel_cases[i];
        enum sb_dlr_state got = sb_dlr_from_kannel(c->in);

        if (got != c->want)
            print_error("kannel \"%s\": %s, want %s\n",
                        c->in ? c->in : "(null)", sb_dlr_name(got),
                        sb_dlr_name(c->want));
        assert_int_equal(got, c->want);
    }
}

static void test_twilio_map(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(twilio_cases) / sizeof(twilio_cases[0]);
         i++) {
        const struct map_case *c = &twilio_cases[i];
        enum sb_dlr_state got = sb_dlr_from_twilio(c->in);

        if (got != c->want)
            print_error("twilio \"%s\": %s, want %s\n",
                        c->in ? c->in : "(null)", sb_dlr_name(got),
                        sb_dlr_name(c->want));
        assert_int_equal(got, c->want);
    }
}

static void test_names(void **state)
{
    static const char *const want[] = {"none",      "queued",      "sent",
                                       "delivered", "undelivered", "failed",
                                       "unknown"};

    (void)state;
    assert_int_equal(SB_DLR_NSTATES, 7);
    for (int s = 0; s < SB_DLR_NSTATES; s++) {
        assert_string_equal(sb_dlr_name((enum sb_dlr_state)s), want[s]);
        assert_int_equal(sb_dlr_parse(want[s]), s);
    }
    assert_string_equal(sb_dlr_name((enum sb_dlr_state)99), "none");
    assert_string_equal(sb_dlr_name((enum sb_dlr_state) - 1), "none");
    assert_int_equal(sb_dlr_parse("Delivered"), NONE);
    assert_int_equal(sb_dlr_parse("bogus"), NONE);
    assert_int_equal(sb_dlr_parse(""), NONE);
    assert_int_equal(sb_dlr_parse(NULL), NONE);

    assert_false(sb_dlr_is_final(NONE));
    assert_false(sb_dlr_is_final(QUEUED));
    assert_false(sb_dlr_is_final(SENT));
    assert_true(sb_dlr_is_final(DELIVERED));
    assert_true(sb_dlr_is_final(UNDELIVERED));
    assert_true(sb_dlr_is_final(FAILED));
    assert_false(sb_dlr_is_final(UNKNOWN));
}

/* The rules, written out independently of the table. */
static enum sb_dlr_state oracle(enum sb_dlr_state cur, enum sb_dlr_state in)
{
    static const int rank[] = {0, 1, 2, 3, 3, 3, -1};

    if (in == NONE || sb_dlr_is_final(cur))
        return cur;
    if (in == UNKNOWN)
        return UNKNOWN;
    if (cur == UNKNOWN)
        return sb_dlr_is_final(in) ? in : cur;
    return rank[in] > rank[cur] ? in : cur;
}

static void test_all_pairs(void **state)
{
    (void)state;
    for (int c = 0; c < SB_DLR_NSTATES; c++) {
        for (int i = 0; i < SB_DLR_NSTATES; i++) {
            enum sb_dlr_state got = sb_dlr_next(c, i);
            enum sb_dlr_state want = oracle(c, i);

            if (got != want)
                print_error("%s + %s: %s, want %s\n", sb_dlr_name(c),
                            sb_dlr_name(i), sb_dlr_name(got),
                            sb_dlr_name(want));
            assert_int_equal(got, want);
            /* a repeated report changes nothing */
            assert_int_equal(sb_dlr_next(got, i), got);
        }
    }
    /* a few pairs spelled out */
    assert_int_equal(sb_dlr_next(NONE, QUEUED), QUEUED);
    assert_int_equal(sb_dlr_next(SENT, QUEUED), SENT);
    assert_int_equal(sb_dlr_next(DELIVERED, FAILED), DELIVERED);
    assert_int_equal(sb_dlr_next(FAILED, DELIVERED), FAILED);
    assert_int_equal(sb_dlr_next(UNKNOWN, SENT), UNKNOWN);
    assert_int_equal(sb_dlr_next(UNKNOWN, UNDELIVERED), UNDELIVERED);
    assert_int_equal(sb_dlr_next(DELIVERED, UNKNOWN), DELIVERED);
    /* out-of-range values are "no report" */
    assert_int_equal(sb_dlr_next(SENT, (enum sb_dlr_state)42), SENT);
    assert_int_equal(sb_dlr_next((enum sb_dlr_state)42, QUEUED), QUEUED);
}

/* Apply reports in order from NONE; count the state changes. */
static enum sb_dlr_state run(const enum sb_dlr_state *r, size_t n, int *changes)
{
    enum sb_dlr_state s = NONE;

    *changes = 0;
    for (size_t i = 0; i < n; i++) {
        enum sb_dlr_state next = sb_dlr_next(s, r[i]);

        if (next != s)
            (*changes)++;
        s = next;
    }
    return s;
}

struct seq_case {
    enum sb_dlr_state reports[6];
    size_t n;
    enum sb_dlr_state want;
    int changes;
};

static const struct seq_case seq_cases[] = {
    {{QUEUED, SENT, DELIVERED}, 3, DELIVERED, 3},
    {{DELIVERED, SENT, QUEUED}, 3, DELIVERED, 1},
    {{SENT, QUEUED}, 2, SENT, 1},
    {{QUEUED, QUEUED, SENT, SENT, SENT}, 5, SENT, 2},
    {{DELIVERED, DELIVERED, DELIVERED}, 3, DELIVERED, 1},
    {{FAILED, DELIVERED}, 2, FAILED, 1},
    {{UNDELIVERED, FAILED, DELIVERED}, 3, UNDELIVERED, 1},
    {{QUEUED, UNKNOWN, SENT}, 3, UNKNOWN, 2},
    {{QUEUED, UNKNOWN, DELIVERED, FAILED}, 4, DELIVERED, 3},
    {{SENT, UNKNOWN, UNKNOWN, UNDELIVERED}, 4, UNDELIVERED, 3},
    {{DELIVERED, UNKNOWN}, 2, DELIVERED, 1},
    {{NONE, QUEUED, NONE}, 3, QUEUED, 1},
    {{NONE}, 1, NONE, 0},
};

static void test_sequences(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(seq_cases) / sizeof(seq_cases[0]); i++) {
        const struct seq_case *c = &seq_cases[i];
        int changes;
        enum sb_dlr_state got = run(c->reports, c->n, &changes);

        if (got != c->want || changes != c->changes)
            print_error("sequence %zu: %s after %d changes, want %s, %d\n", i,
                        sb_dlr_name(got), changes, sb_dlr_name(c->want),
                        c->changes);
        assert_int_equal(got, c->want);
        assert_int_equal(changes, c->changes);
    }
}

/* Provider words straight through: Kannel 8 (SMSC) may come after 1. */
static void test_provider_sequences(void **state)
{
    static const char *const kannel[] = {"1", "8", "4", "1", "2"};
    static const char *const twilio[] = {"sent",    "queued", "delivered",
                                         "sending", "failed", "read"};
    enum sb_dlr_state s = NONE;

    (void)state;
    for (size_t i = 0; i < sizeof(kannel) / sizeof(kannel[0]); i++)
        s = sb_dlr_next(s, sb_dlr_from_kannel(kannel[i]));
    assert_int_equal(s, DELIVERED);

    s = NONE;
    s = sb_dlr_next(s, sb_dlr_from_kannel("8"));
    assert_int_equal(s, SENT);
    s = sb_dlr_next(s, sb_dlr_from_kannel("16"));
    assert_int_equal(s, FAILED);
    s = sb_dlr_next(s, sb_dlr_from_kannel("1"));
    assert_int_equal(s, FAILED);

    s = NONE;
    for (size_t i = 0; i < sizeof(twilio) / sizeof(twilio[0]); i++)
        s = sb_dlr_next(s, sb_dlr_from_twilio(twilio[i]));
    assert_int_equal(s, DELIVERED);
    assert_string_equal(sb_dlr_name(s), "delivered");
}

/* Any order of queued, sent, one final report (with a duplicate of one of
 * them) ends in that final report. */
static void test_permutations(void **state)
{
    static const enum sb_dlr_state finals[] = {DELIVERED, UNDELIVERED, FAILED};
    int runs = 0;

    (void)state;
    for (size_t f = 0; f < 3; f++) {
        for (int dup = 0; dup < 3; dup++) {
            enum sb_dlr_state base[4] = {QUEUED, SENT, finals[f]};

            base[3] = base[dup];
            /* all 24 orders of the 4 reports */
            for (int a = 0; a < 4; a++)
                for (int b = 0; b < 4; b++)
                    for (int c = 0; c < 4; c++)
                        for (int d = 0; d < 4; d++) {
                            enum sb_dlr_state r[4];
                            int changes;

                            if (a == b || a == c || a == d || b == c ||
                                b == d || c == d)
                                continue;
                            r[0] = base[a];
                            r[1] = base[b];
                            r[2] = base[c];
                            r[3] = base[d];
                            assert_int_equal(run(r, 4, &changes), finals[f]);
                            assert_true(changes >= 1 && changes <= 3);
                            runs++;
                        }
        }
    }
    assert_int_equal(runs, 3 * 3 * 24);
}

static void test_expire(void **state)
{
    (void)state;
    assert_int_equal(sb_dlr_expire(SENT, 1000, 1499, 500), SENT);
    assert_int_equal(sb_dlr_expire(SENT, 1000, 1500, 500), UNKNOWN);
    assert_int_equal(sb_dlr_expire(QUEUED, 1000, 9000, 500), UNKNOWN);
    assert_int_equal(sb_dlr_expire(NONE, 1000, 9000, 500), UNKNOWN);
    assert_int_equal(sb_dlr_expire(UNKNOWN, 1000, 9000, 500), UNKNOWN);
    assert_int_equal(sb_dlr_expire(DELIVERED, 1000, 9000, 500), DELIVERED);
    assert_int_equal(sb_dlr_expire(FAILED, 1000, 9000, 500), FAILED);
    assert_int_equal(sb_dlr_expire(UNDELIVERED, 0, 9000, 500), UNDELIVERED);
    /* a clock that went backwards expires nothing */
    assert_int_equal(sb_dlr_expire(SENT, 1000, 999, 0), SENT);
    /* zero timeout: due at once */
    assert_int_equal(sb_dlr_expire(SENT, 1000, 1000, 0), UNKNOWN);
    /* extremes: no overflow (UBSan would catch it) */
    assert_int_equal(sb_dlr_expire(SENT, INT64_MIN, INT64_MAX, INT64_MAX),
                     UNKNOWN);
    assert_int_equal(sb_dlr_expire(SENT, 0, INT64_MAX - 1, INT64_MAX), SENT);
    assert_int_equal(sb_dlr_expire(SENT, INT64_MAX, INT64_MIN, 1), SENT);
}

/* The names the drivers pass to sb_notify_report() are the ones its Lua
 * script ranks: "name = " in its RANK table. */
static void test_lua_vocabulary(void **state)
{
    static const enum sb_dlr_state reportable[] = {QUEUED, SENT, DELIVERED,
                                                   UNDELIVERED, FAILED};
    char buf[8192], *rank;
    size_t n;
    FILE *f = fopen("src/lua/notify_report.lua", "r");

    (void)state;
    if (!f) {
        print_message("src/lua/notify_report.lua not found (run from the "
                      "repository root)\n");
        skip();
    }
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    rank = strstr(buf, "RANK = {");
    assert_non_null(rank);
    *strchr(rank, '}') = '\0';
    for (size_t i = 0; i < sizeof(reportable) / sizeof(reportable[0]); i++) {
        char key[32];

        snprintf(key, sizeof(key), " %s = ", sb_dlr_name(reportable[i]));
        if (!strstr(rank, key))
            print_error("\"%s\" not ranked in notify_report.lua\n",
                        sb_dlr_name(reportable[i]));
        assert_non_null(strstr(rank, key));
    }
    /* "unknown" is set by the deadline, never reported */
    assert_null(strstr(rank, " unknown = "));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kannel_map),
        cmocka_unit_test(test_twilio_map),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_all_pairs),
        cmocka_unit_test(test_sequences),
        cmocka_unit_test(test_provider_sequences),
        cmocka_unit_test(test_permutations),
        cmocka_unit_test(test_expire),
        cmocka_unit_test(test_lua_vocabulary),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
