/* crypto.h - tokens, hashes and secret comparison (libsodium).
 *
 * Session tokens are 32 random bytes in unpadded base64url (43 chars); only
 * their SHA-256 (hex) is stored. API keys look like "sb_<id>_<secret>": the
 * id (1..32 of [a-z0-9]) names the key in config, the secret (43 chars of
 * base64url) is never stored — config holds sb_apikey_hash() of the whole
 * key, a keyed BLAKE2b (crypto_generichash with a fixed application key) in
 * hex. Passwords are argon2id strings from crypto_pwhash_str (INTERACTIVE
 * limits), at most SB_PASSWORD_MAX bytes. All comparisons of secrets are
 * constant time (sodium_memcmp, lengths first).
 */
#ifndef SB_CRYPTO_H
#define SB_CRYPTO_H

#include <stddef.h>

#define SB_TOKEN_LEN 43       /* base64url of 32 bytes, no padding */
#define SB_HASH_HEX_LEN 64    /* SHA-256 / BLAKE2b-256 in hex */
#define SB_PASSWORD_MAX 1024
#define SB_PWHASH_LEN 128     /* crypto_pwhash_STRBYTES */

/* sodium_init(); 0 or -1. Call once before threads start. */
int sb_crypto_init(void);

/* A new random token: out must hold SB_TOKEN_LEN + 1. */
void sb_token_new(char *out);
/* SHA-256 of data as lowercase hex: out holds SB_HASH_HEX_LEN + 1. */
void sb_sha256_hex(const void *data, size_t len, char *out);
/* Constant-time equality of two strings (lengths compared first). */
int sb_secret_eq(const char *a, const char *b);

/* API keys. */
/* Split "sb_<id>_<secret>": copies id into id_out (>= 33 bytes). 0 / -1. */
int sb_apikey_parse(const char *key, char *id_out, size_t id_outlen);
/* A new key for `id` (out >= 80 bytes). 0, or -1 when id is invalid. */
int sb_apikey_new(const char *id, char *out, size_t outlen);
/* Keyed hash of the whole key string, hex (SB_HASH_HEX_LEN + 1). */
void sb_apikey_hash(const char *key, char *out);

/* Passwords (slow: call from the worker pool). */
/* 0 and the argon2id string in out (>= SB_PWHASH_LEN), -1 on failure or a
 * password longer than SB_PASSWORD_MAX. */
int sb_password_hash(const char *password, char *out, size_t outlen);
/* 1 match, 0 mismatch or malformed hash. */
int sb_password_verify(const char *hash, const char *password);

#endif
