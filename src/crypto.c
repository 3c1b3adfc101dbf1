/* crypto.c - tokens, hashes and secret comparison (libsodium).
 *
 * The only file that calls libsodium. Session tokens are random bytes in
 * base64url and are stored only as their SHA-256; API keys carry a short
 * public id (to find the key in config) and a random secret, and config
 * holds a keyed BLAKE2b of the whole key, so a leaked config is no key.
 * Passwords are argon2id strings with libsodium's INTERACTIVE limits; a
 * stored string asking for more memory or passes than we would ever write
 * is refused instead of being run. Secrets are compared in constant time
 * once their lengths match.
 */
#include "crypto.h"

#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "log.h"

#define TOKEN_BYTES 32
#define APIKEY_ID_MAX 32
#define APIKEY_PREFIX "sb_"

/* Highest argon2 cost we accept in a stored hash: well above INTERACTIVE
 * (2 passes, 64 MiB) and below anything that could exhaust the host. */
#define PWHASH_MAX_MEM_KIB (1024u * 1024u)
#define PWHASH_MAX_PASSES 16u

/* Fixed application key for API key hashing. Changing it invalidates every
 * configured key hash, so it never changes. */
static const unsigned char apikey_hash_key[crypto_generichash_KEYBYTES] = {
    0x73, 0x77, 0x69, 0x74, 0x63, 0x68, 0x62, 0x6f, 0x61, 0x72, 0x64,
    0x2d, 0x61, 0x70, 0x69, 0x6b, 0x65, 0x79, 0x2d, 0x76, 0x31, 0x3a,
    0x9e, 0x41, 0x0c, 0xd3, 0x5b, 0x87, 0x2a, 0xf6, 0x10, 0xc8,
};

int sb_crypto_init(void)
{
    if (sodium_init() < 0) {
        SB_ERR("core.crypto", "sodium_init failed");
        return -1;
    }
    return 0;
}

void sb_token_new(char *out)
{
    unsigned char raw[TOKEN_BYTES];

    randombytes_buf(raw, sizeof(raw));
    sodium_bin2base64(out, SB_TOKEN_LEN + 1, raw, sizeof(raw),
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof(raw));
}

void sb_sha256_hex(const void *data, size_t len, char *out)
{
    unsigned char h[crypto_hash_sha256_BYTES];

    crypto_hash_sha256(h, data, len);
    sodium_bin2hex(out, SB_HASH_HEX_LEN + 1, h, sizeof(h));
}

int sb_secret_eq(const char *a, const char *b)
{
    size_t n;

    if (!a || !b)
        return 0;
    n = strlen(a);
    if (strlen(b) != n)
        return 0;
    return sodium_memcmp(a, b, n) == 0;
}

static int apikey_id_char(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static int b64url_char(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '-' || c == '_';
}

/* Length of a valid id at the start of s (stops at the first other
 * character), 0 when there is none or it is too long. */
static size_t apikey_id_len(const char *s)
{
    size_t n = 0;

    while (n <= APIKEY_ID_MAX && apikey_id_char((unsigned char)s[n]))
        n++;
    return n <= APIKEY_ID_MAX ? n : 0;
}

int sb_apikey_parse(const char *key, char *id_out, size_t id_outlen)
{
    unsigned char raw[TOKEN_BYTES];
    size_t idlen, binlen = 0;
    const char *secret;

    if (!key || strncmp(key, APIKEY_PREFIX, strlen(APIKEY_PREFIX)) != 0)
        return -1;
    key += strlen(APIKEY_PREFIX);
    idlen = apikey_id_len(key);
    if (idlen == 0 || key[idlen] != '_')
        return -1;
    secret = key + idlen + 1;
    for (size_t i = 0; i < SB_TOKEN_LEN; i++)
        if (!b64url_char((unsigned char)secret[i]))
            return -1;
    if (secret[SB_TOKEN_LEN] != '\0')
        return -1;
    /* The secret must decode to exactly the bytes we generate. */
    if (sodium_base642bin(raw, sizeof(raw), secret, SB_TOKEN_LEN, NULL, &binlen,
                          NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        binlen != sizeof(raw))
        return -1;
    sodium_memzero(raw, sizeof(raw));
    if (!id_out || id_outlen < idlen + 1)
        return -1;
    memcpy(id_out, key, idlen);
    id_out[idlen] = '\0';
    return 0;
}

int sb_apikey_new(const char *id, char *out, size_t outlen)
{
    char secret[SB_TOKEN_LEN + 1];
    size_t idlen;
    int n;

    if (!id || !out)
        return -1;
    idlen = apikey_id_len(id);
    if (idlen == 0 || id[idlen] != '\0')
        return -1;
    sb_token_new(secret);
    n = snprintf(out, outlen, APIKEY_PREFIX "%s_%s", id, secret);
    sodium_memzero(secret, sizeof(secret));
    if (n < 0 || (size_t)n >= outlen) {
        if (outlen)
            sodium_memzero(out, outlen);
        return -1;
    }
    return 0;
}

void sb_apikey_hash(const char *key, char *out)
{
    unsigned char h[32];

    crypto_generichash(h, sizeof(h), (const unsigned char *)key, strlen(key),
                       apikey_hash_key, sizeof(apikey_hash_key));
    sodium_bin2hex(out, SB_HASH_HEX_LEN + 1, h, sizeof(h));
}

int sb_password_hash(const char *password, char *out, size_t outlen)
{
    size_t n;

    if (!password || !out || outlen < crypto_pwhash_STRBYTES)
        return -1;
    n = strnlen(password, SB_PASSWORD_MAX + 1);
    if (n > SB_PASSWORD_MAX)
        return -1;
    if (crypto_pwhash_str(out, password, n, crypto_pwhash_OPSLIMIT_INTERACTIVE,
                          crypto_pwhash_MEMLIMIT_INTERACTIVE) != 0) {
        SB_ERR("core.crypto", "password hashing failed (out of memory?)");
        return -1;
    }
    return 0;
}

/* Refuse stored hashes that are not argon2id strings of a sane cost. */
static int pwhash_plausible(const char *hash)
{
    unsigned v, m, t, p;
    int used = 0;

    if (sscanf(hash, "$argon2id$v=%u$m=%u,t=%u,p=%u$%n", &v, &m, &t, &p,
               &used) != 4 ||
        used == 0)
        return 0;
    return v == 19 && m >= 8 && m <= PWHASH_MAX_MEM_KIB && t >= 1 &&
           t <= PWHASH_MAX_PASSES && p == 1;
}

int sb_password_verify(const char *hash, const char *password)
{
    char buf[crypto_pwhash_STRBYTES];
    size_t hl, pl;

    if (!hash || !password)
        return 0;
    hl = strnlen(hash, sizeof(buf));
    pl = strnlen(password, SB_PASSWORD_MAX + 1);
    if (hl == 0 || hl >= sizeof(buf) || pl > SB_PASSWORD_MAX)
        return 0;
    if (!pwhash_plausible(hash))
        return 0;
    /* libsodium takes a crypto_pwhash_STRBYTES array: give it one. */
    memset(buf, 0, sizeof(buf));
    memcpy(buf, hash, hl);
    return crypto_pwhash_str_verify(buf, password, pl) == 0;
}
