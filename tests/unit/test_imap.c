/* test_imap.c - the IMAP poller's response parsers (channels/email/imap.c).
 *
 * The FETCH parser reads curl's header stream: every line the server sent,
 * literals included. A message body that looks like protocol ("* 5 FETCH",
 * a tagged OK) must stay body; a literal cut short is malformed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "../../channels/email/email_int.h"

static const char STREAM[] =
    "* OK [CAPABILITY IMAP4rev1 LITERAL+] Dovecot ready.\r\n"
    "A001 OK Pre-login capabilities listed\r\n"
    "A002 OK Logged in\r\n"
    "* 2 EXISTS\r\n"
    "* OK [UIDVALIDITY 1795745186] UIDs valid\r\n"
    "A003 OK [READ-WRITE] Select completed\r\n"
    "* 1 FETCH (UID 1 RFC822.SIZE 58 BODY[] {58}\r\n"
    "Subject: a\r\n"
    "\r\n"
    "* 5 FETCH (UID 99 BODY[] {3}\r\n"
    "A004 OK fake\r\n"
    ")\r\n"
    "* 2 FETCH (UID 2 FLAGS (\\Seen \\Answered) BODY[] {4}\r\n"
    "ab\r\n"
    ")\r\n"
    "A004 OK Fetch completed.\r\n";

static void test_fetch_bodies(void **state)
{
    struct em_fetch_item it[8];
    int n = em_parse_fetch(STREAM, sizeof(STREAM) - 1, it, 8);

    (void)state;
    assert_int_equal(n, 2);
    assert_int_equal(it[0].uid, 1);
    assert_int_equal(it[0].size, 58);
    assert_int_equal(it[0].body_len, 58);
    assert_memory_equal(it[0].body, "Subject: a\r\n\r\n* 5 FETCH", 23);
    assert_memory_equal(it[0].body + 44, "A004 OK fake\r\n", 14);
    assert_int_equal(it[1].uid, 2);
    assert_int_equal(it[1].body_len, 4);
    assert_memory_equal(it[1].body, "ab\r\n", 4);
}

static void test_fetch_sizes_only(void **state)
{
    static const char s[] = "* 1 FETCH (UID 10 RFC822.SIZE 1000)\r\n"
                            "* 2 FETCH (RFC822.SIZE 20 UID 11)\r\n"
                            "* 3 FETCH (UID 12 BODY[] NIL)\r\n"
                            "A005 OK done\r\n";
    struct em_fetch_item it[8];
    int n = em_parse_fetch(s, sizeof(s) - 1, it, 8);

    (void)state;
    assert_int_equal(n, 3);
    assert_int_equal(it[0].uid, 10);
    assert_int_equal(it[0].size, 1000);
    assert_null(it[0].body);
    assert_int_equal(it[1].uid, 11);
    assert_int_equal(it[1].size, 20);
    assert_int_equal(it[2].uid, 12);
    assert_null(it[2].body);
    /* room for fewer: the first ones */
    assert_int_equal(em_parse_fetch(s, sizeof(s) - 1, it, 1), 1);
    assert_int_equal(it[0].uid, 10);
}

static void test_fetch_partial(void **state)
{
    static const char s[] = "* 7 FETCH (UID 70 BODY[]<4096> {6}\r\n"
                            "abc\r\nd)\r\n"
                            "A009 OK done\r\n";
    static const char bad[] = "* 7 FETCH (UID 70 BODY[]<x> {1}\r\na)\r\n";
    struct em_fetch_item it[2];

    (void)state;
    assert_int_equal(em_parse_fetch(s, sizeof(s) - 1, it, 2), 1);
    assert_int_equal(it[0].uid, 70);
    assert_int_equal(it[0].body_len, 6);
    assert_memory_equal(it[0].body, "abc\r\nd", 6);
    assert_int_equal(em_parse_fetch(bad, sizeof(bad) - 1, it, 2), -1);
}

static void test_fetch_malformed(void **state)
{
    static const char cut[] = "* 1 FETCH (UID 1 BODY[] {100}\r\nshort\r\n";
    static const char quoted[] = "* 1 FETCH (UID 1 BODY[] \"x\")\r\n";
    static const char huge[] =
        "* 1 FETCH (UID 99999999999999999999 BODY[] {1}\r\nx)\r\n";
    struct em_fetch_item it[4];

    (void)state;
    assert_int_equal(em_parse_fetch(cut, sizeof(cut) - 1, it, 4), -1);
    assert_int_equal(em_parse_fetch(quoted, sizeof(quoted) - 1, it, 4), -1);
    assert_int_equal(em_parse_fetch(huge, sizeof(huge) - 1, it, 4), -1);
    assert_int_equal(em_parse_fetch("", 0, it, 4), 0);
}

static void test_status(void **state)
{
    static const char s[] = "* CAPABILITY IMAP4rev1\r\n"
                            "* STATUS \"INBOX\" (UIDNEXT 3 UIDVALIDITY 42)\r\n"
                            "A002 OK Status completed.\r\n";
    static const char no[] = "* STATUS INBOX (MESSAGES 3)\r\n";
    unsigned long v = 0, next = 0;

    (void)state;
    assert_int_equal(em_parse_status(s, sizeof(s) - 1, &v, &next), 0);
    assert_int_equal(v, 42);
    assert_int_equal(next, 3);
    assert_int_equal(em_parse_status(no, sizeof(no) - 1, &v, &next), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fetch_bodies),
        cmocka_unit_test(test_fetch_sizes_only),
        cmocka_unit_test(test_fetch_partial),
        cmocka_unit_test(test_fetch_malformed),
        cmocka_unit_test(test_status),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
