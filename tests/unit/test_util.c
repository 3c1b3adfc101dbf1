/* test_util.c - the strict UTF-8 decoder and the capped buffers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "list.h"
#include "util.h"

static void test_utf8(void **state)
{
    static const struct {
        const char *s;
        size_t len;   /* of the first sequence; 0 = invalid */
        uint32_t cp;
    } cases[] = {
        {"A", 1, 0x41},
        {"\xd0\x96", 2, 0x416},              /* Ж */
        {"\xe2\x82\xac", 3, 0x20ac},         /* € */
        {"\xf0\x9f\x98\x80", 4, 0x1f600},    /* emoji */
        {"\xc0\xaf", 0, 0},                  /* overlong '/' */
        {"\xe0\x80\xaf", 0, 0},              /* overlong, 3 bytes */
        {"\xed\xa0\x80", 0, 0},              /* surrogate U+D800 */
        {"\xf4\x90\x80\x80", 0, 0},          /* above U+10FFFF */
        {"\xd0", 0, 0},                      /* truncated */
        {"\x80", 0, 0},                      /* lone continuation */
        {"\xd0\x41", 0, 0},                  /* bad continuation */
    };

    (void)state;
    for (size_t i = 0; i < SB_ARRAY_LEN(cases); i++) {
        uint32_t cp = 0;
        size_t n = sb_utf8_seq(cases[i].s, strlen(cases[i].s), &cp);
        assert_int_equal(n, cases[i].len);
        if (n)
            assert_int_equal(cp, cases[i].cp);
        assert_int_equal(sb_utf8_valid(cases[i].s, strlen(cases[i].s)),
                         cases[i].len != 0);
    }
    assert_true(sb_utf8_valid("", 0));
    assert_true(sb_utf8_valid("Привет, мир! 😀", strlen("Привет, мир! 😀")));
    assert_false(sb_utf8_valid("ok\xff", 3));
    /* n bounds the read: a sequence cut by n is invalid */
    assert_int_equal(sb_utf8_seq("\xe2\x82\xac", 2, NULL), 0);
}

static void test_buf_cap(void **state)
{
    struct sb_buf b;

    (void)state;
    sb_buf_init(&b, 8);
    assert_int_equal(sb_buf_appends(&b, "12345678"), 0);
    assert_int_equal(sb_buf_appends(&b, "9"), -1);
    assert_int_equal(b.len, 8);
    assert_string_equal(b.data, "12345678");
    sb_buf_reset(&b);
    assert_int_equal(sb_buf_printf(&b, "%d-%s", 42, "x"), 0);
    assert_string_equal(b.data, "42-x");
    sb_buf_free(&b);
}

struct item {
    int v;
    struct sb_list_node link;
};

/* The values on l, in order, as a string ("123"). */
static const char *list_str(const struct sb_list *l)
{
    static char out[16];
    size_t k = 0;

    for (const struct sb_list_node *n = l->head; n; n = n->next)
        out[k++] = (char)('0' + sb_container_of(n, struct item, link)->v);
    out[k] = '\0';
    return out;
}

static void test_list(void **state)
{
    struct sb_list l = SB_LIST_INIT;
    struct item it[5];

    (void)state;
    for (int i = 0; i < 5; i++)
        it[i].v = i;
    assert_null(sb_list_pop_front(&l));
    sb_list_push_back(&l, &it[1].link);
    sb_list_push_back(&l, &it[2].link);
    sb_list_push_front(&l, &it[0].link);
    sb_list_push_back(&l, &it[3].link);
    assert_string_equal(list_str(&l), "0123");
    assert_int_equal(l.count, 4);
    sb_list_remove(&l, &it[2].link);  /* middle */
    sb_list_remove(&l, &it[3].link);  /* tail */
    assert_string_equal(list_str(&l), "01");
    assert_ptr_equal(l.tail, &it[1].link);
    sb_list_remove(&l, &it[0].link);  /* head */
    assert_ptr_equal(l.head, &it[1].link);
    assert_ptr_equal(sb_list_pop_front(&l), &it[1].link);
    assert_null(l.head);
    assert_null(l.tail);
    assert_int_equal(l.count, 0);
    sb_list_push_back(&l, &it[4].link);
    assert_string_equal(list_str(&l), "4");
    /* back from a node to its struct */
    assert_ptr_equal(sb_container_of(l.head, struct item, link), &it[4]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_buf_cap),
        cmocka_unit_test(test_list),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
