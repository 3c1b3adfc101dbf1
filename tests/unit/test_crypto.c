/* test_crypto.c - tokens, hashes, API keys and passwords.
 *
 * Known vectors pin the hash functions and the API key hashing key (a
 * changed key would silently invalidate every configured key hash). The
 * API key parser gets a table of malformed keys. Argon2id runs a handful
 * of times only: each run costs 64 MiB and a noticeable fraction of a
 * second, more under ASan.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"

static const char b64url[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int setup(void **state)
{
    (void)state;
    return sb_crypto_init();
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void test_token(void **state)
{
    enum { N = 2000 };
    char(*tok)[SB_TOKEN_LEN + 1] = calloc(N, sizeof(*tok));

    (void)state;
    assert_non_null(tok);
    assert_int_equal(sb_crypto_init(), 0); /* a second call is fine */
    for (size_t i = 0; i < N; i++) {
        memset(tok[i], '#', sizeof(tok[i]));
        sb_token_new(tok[i]);
        assert_int_equal(strlen(tok[i]), SB_TOKEN_LEN);
        assert_int_equal(strspn(tok[i], b64url), SB_TOKEN_LEN);
        /* 32 bytes = 256 bits: the last of 43 characters carries 4 bits
         * and 2 zero bits, so it is one of 16 characters */
        assert_non_null(strchr("AEIMQUYcgkosw048", tok[i][42]));
    }
    qsort(tok, N, sizeof(*tok), cmp_str);
    for (size_t i = 1; i < N; i++)
        assert_true(strcmp(tok[i - 1], tok[i]) != 0);
    free(tok);
}

static void test_sha256(void **state)
{
    static const struct {
        const char *data;
        size_t len;
        const char *hex;
    } rows[] = {
        {"abc", 3,
         "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"", 0,
         "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"{\"property\": \"value\", \"boolean\": true}", 38,
         "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"},
        {"a\0b", 3,
         "59b271ae1bbcb1d31d41929817f4b16fb439eb4f31520b5ad1d5ce98920a7138"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char out[SB_HASH_HEX_LEN + 1];

        memset(out, '#', sizeof(out));
        sb_sha256_hex(rows[i].data, rows[i].len, out);
        assert_string_equal(out, rows[i].hex);
    }
}

static void test_secret_eq(void **state)
{
    static const struct {
        const char *a, *b;
        int eq;
    } rows[] = {
        {"abc", "abc", 1},
        {"abc", "abd", 0},
        {"abc", "abcd", 0},
        {"abcd", "abc", 0},
        {"", "", 1},
        {"", "a", 0},
        {"a", "", 0},
        {"Abc", "abc", 0},
        {NULL, "a", 0},
        {"a", NULL, 0},
        {NULL, NULL, 0},
        {"sb_erp_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
         "sb_erp_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", 1},
        {"sb_erp_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
         "sb_erp_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB", 0},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        if (sb_secret_eq(rows[i].a, rows[i].b) != rows[i].eq)
            print_error("row %zu\n", i);
        assert_int_equal(sb_secret_eq(rows[i].a, rows[i].b), rows[i].eq);
    }
}

#define S43 "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

static void test_apikey_parse(void **state)
{
    static const struct {
        const char *key;
        const char *id; /* NULL: refused */
    } rows[] = {
        {"sb_erp_" S43, "erp"},
        {"sb_a_" S43, "a"},
        {"sb_0_" S43, "0"},
        {"sb_erp1_" S43, "erp1"},
        {"sb_abcdefghijklmnopqrstuvwxyz012345_" S43,
         "abcdefghijklmnopqrstuvwxyz012345"},
        {"sb_erp_abc-def_ghiABCDEFGHIJKLMNOPQRSTUVWXYZ012348", "erp"},
        {"sb_erp__AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "erp"},
        /* refused */
        {"", NULL},
        {"sb_", NULL},
        {"sb__" S43, NULL},
        {"sb_erp", NULL},
        {"sb_erp_", NULL},
        {"sb_erp" S43, NULL},
        {"xb_erp_" S43, NULL},
        {"SB_erp_" S43, NULL},
        {"sb-erp_" S43, NULL},
        {" sb_erp_" S43, NULL},
        {"sb_erp_" S43 " ", NULL},
        {"sb_erp_" S43 "\n", NULL},
        {"sb_ERP_" S43, NULL},
        {"sb_e-p_" S43, NULL},
        {"sb_e.p_" S43, NULL},
        {"sb_\xc3\xa9_" S43, NULL},
        {"sb_abcdefghijklmnopqrstuvwxyz0123456_" S43, NULL},         /* id 33 */
        {"sb_erp_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", NULL}, /* 42 */
        {"sb_erp_" S43 "A", NULL},                                   /* 44 */
        {"sb_erp_" S43 S43, NULL},
        {"sb_my_id_" S43, NULL},
        {"sb_erp__" S43, NULL},
        {"sb_erp_" S43 "_", NULL},
        {"sb_erp_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA+", NULL},
        {"sb_erp_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/", NULL},
        {"sb_erp_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", NULL},
        {"sb_erp_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==", NULL},
        {"sb_erp_AAAAAAAAAAAAAAAAAAAAA AAAAAAAAAAAAAAAAAAAAA", NULL},
        /* not a canonical encoding of 32 bytes (non-zero padding bits) */
        {"sb_erp_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB", NULL},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char id[33];
        int rc;

        strcpy(id, "untouched");
        rc = sb_apikey_parse(rows[i].key, id, sizeof(id));
        if ((rc == 0) != (rows[i].id != NULL))
            print_error("row %zu \"%s\": rc %d\n", i, rows[i].key, rc);
        if (rows[i].id) {
            assert_int_equal(rc, 0);
            assert_string_equal(id, rows[i].id);
        } else {
            assert_int_equal(rc, -1);
        }
    }
    {
        char small[3];
        assert_int_equal(sb_apikey_parse("sb_erp_" S43, small, sizeof(small)),
                         -1);
        assert_int_equal(sb_apikey_parse("sb_er_" S43, small, sizeof(small)),
                         0);
        assert_string_equal(small, "er");
        assert_int_equal(sb_apikey_parse(NULL, small, sizeof(small)), -1);
    }
}

static void test_apikey_new(void **state)
{
    static const char *const good[] = {
        "a", "erp", "erp1", "0", "abcdefghijklmnopqrstuvwxyz012345",
    };
    static const char *const bad[] = {
        "",
        "A",
        "erp-1",
        "erp_1",
        "e p",
        "\xc3\xa9",
        "abcdefghijklmnopqrstuvwxyz0123456",
        "erp\n",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        char key[80], key2[80], id[33], want[48];

        assert_int_equal(sb_apikey_new(good[i], key, sizeof(key)), 0);
        snprintf(want, sizeof(want), "sb_%s_", good[i]);
        assert_int_equal(strncmp(key, want, strlen(want)), 0);
        assert_int_equal(strlen(key), strlen(want) + SB_TOKEN_LEN);
        assert_int_equal(strspn(key + strlen(want), b64url), SB_TOKEN_LEN);
        assert_int_equal(sb_apikey_parse(key, id, sizeof(id)), 0);
        assert_string_equal(id, good[i]);
        assert_int_equal(sb_apikey_new(good[i], key2, sizeof(key2)), 0);
        assert_true(strcmp(key, key2) != 0);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char key[80];
        assert_int_equal(sb_apikey_new(bad[i], key, sizeof(key)), -1);
    }
    {
        char key[80];
        /* "sb_" + 3 + "_" + 43 = 50 characters: 50 bytes is one short */
        assert_int_equal(sb_apikey_new("erp", key, 50), -1);
        assert_int_equal(sb_apikey_new("erp", key, 51), 0);
        assert_int_equal(sb_apikey_new(NULL, key, sizeof(key)), -1);
    }
}

static void test_apikey_hash(void **state)
{
    char h1[SB_HASH_HEX_LEN + 1], h2[SB_HASH_HEX_LEN + 1];
    char sha[SB_HASH_HEX_LEN + 1];
    const char *key = "sb_erp_" S43;

    (void)state;
    /* pins the application key: BLAKE2b-256 keyed, computed elsewhere */
    sb_apikey_hash(key, h1);
    assert_string_equal(
        h1, "6733044bc7910abebd51a1b1f27bc00f143f9a3c05787994c1f85189d6604f47");
    sb_apikey_hash(key, h2);
    assert_string_equal(h1, h2);
    sb_sha256_hex(key, strlen(key), sha);
    assert_true(strcmp(h1, sha) != 0);
    sb_apikey_hash("sb_erp_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE", h2);
    assert_true(strcmp(h1, h2) != 0);
    assert_int_equal(strlen(h2), SB_HASH_HEX_LEN);
    assert_int_equal(strspn(h2, "0123456789abcdef"), SB_HASH_HEX_LEN);
}

static void test_password(void **state)
{
    char hash[SB_PWHASH_LEN], hash2[SB_PWHASH_LEN], bad[SB_PWHASH_LEN];
    char *longpw = malloc(SB_PASSWORD_MAX + 2);
    char small[64];

    (void)state;
    assert_non_null(longpw);
    /* argon2 run 1 */
    assert_int_equal(sb_password_hash("correct horse", hash, sizeof(hash)), 0);
    assert_int_equal(strncmp(hash, "$argon2id$v=19$m=65536,t=2,p=1$", 31), 0);
    /* runs 2 and 3 */
    assert_int_equal(sb_password_verify(hash, "correct horse"), 1);
    assert_int_equal(sb_password_verify(hash, "correct horsf"), 0);

    /* refused without running argon2 */
    assert_int_equal(sb_password_verify("", "correct horse"), 0);
    assert_int_equal(sb_password_verify("$argon2id$garbage", "x"), 0);
    assert_int_equal(sb_password_verify("plaintext", "plaintext"), 0);
    assert_int_equal(sb_password_verify(NULL, "x"), 0);
    assert_int_equal(sb_password_verify(hash, NULL), 0);
    /* truncated hash: malformed */
    memcpy(bad, hash, sizeof(bad));
    bad[40] = '\0';
    assert_int_equal(sb_password_verify(bad, "correct horse"), 0);
    /* cost beyond what we accept (4 GiB): refused, not run */
    assert_int_equal(
        sb_password_verify("$argon2id$v=19$m=4194304,t=2,p=1$"
                           "c29tZXNhbHRzb21lc2FsdA$"
                           "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                           "x"),
        0);
    assert_int_equal(sb_password_verify("$argon2id$v=19$m=65536,t=99,p=1$"
                                        "c29tZXNhbHRzb21lc2FsdA$"
                                        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
                                        "AAAAAAAAAAAA",
                                        "x"),
                     0);
    /* argon2i is not what we write */
    assert_int_equal(sb_password_verify("$argon2i$v=19$m=32768,t=4,p=1$"
                                        "c29tZXNhbHRzb21lc2FsdA$"
                                        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
                                        "AAAAAAAAAAAA",
                                        "x"),
                     0);
    /* a hash string with no NUL within SB_PWHASH_LEN bytes */
    {
        char over[SB_PWHASH_LEN + 8];
        memset(over, 'a', sizeof(over) - 1);
        over[sizeof(over) - 1] = '\0';
        memcpy(over, "$argon2id$", 10);
        assert_int_equal(sb_password_verify(over, "x"), 0);
    }

    /* length limit: 1025 bytes refused by hash and verify */
    memset(longpw, 'p', SB_PASSWORD_MAX + 1);
    longpw[SB_PASSWORD_MAX + 1] = '\0';
    assert_int_equal(sb_password_hash(longpw, hash2, sizeof(hash2)), -1);
    assert_int_equal(sb_password_verify(hash, longpw), 0);
    /* output too small */
    assert_int_equal(sb_password_hash("x", small, sizeof(small)), -1);
    assert_int_equal(sb_password_hash(NULL, hash2, sizeof(hash2)), -1);
    free(longpw);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token),      cmocka_unit_test(test_sha256),
        cmocka_unit_test(test_secret_eq),  cmocka_unit_test(test_apikey_parse),
        cmocka_unit_test(test_apikey_new), cmocka_unit_test(test_apikey_hash),
        cmocka_unit_test(test_password),
    };

    return cmocka_run_group_tests(tests, setup, NULL);
}
