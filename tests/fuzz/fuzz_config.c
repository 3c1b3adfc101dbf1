/* fuzz_config.c - libFuzzer target for the INI configuration parser.
 *
 * Feeds the input to sb_config_parse with a small table that has a key of
 * every type, a required key, a secret, bounds, a named section and a
 * cross-field check; then dumps, frees, and checks the round trip: when no
 * secret was masked, the dump must parse back to a config whose dump is
 * byte-for-byte the same. Build:
 *
 *   clang -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Isrc \
 *       src/config.c src/util.c src/log.c tests/fuzz/fuzz_config.c
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

struct fz_main {
    char *name;
    long long count;
    int flag;
    long long wait;
    long long size;
    int mode;
    char **items;
    char *secret;
};

static const char *const fz_modes[] = {"one", "two", "three", NULL};

static const struct sb_conf_key fz_main_keys[] = {
    {"name", SB_CONF_STR, offsetof(struct fz_main, name), "x", 0, 32, NULL,
     0, "A string."},
    {"count", SB_CONF_INT, offsetof(struct fz_main, count), "3", -5, 100,
     NULL, 0, "An integer."},
    {"flag", SB_CONF_BOOL, offsetof(struct fz_main, flag), "no", 0, 0, NULL,
     0, "A flag."},
    {"wait", SB_CONF_DURATION, offsetof(struct fz_main, wait), "5s", 0, 0,
     NULL, 0, "A duration."},
    {"size", SB_CONF_SIZE, offsetof(struct fz_main, size), "1M", 1, 1LL << 40,
     NULL, 0, "A size."},
    {"mode", SB_CONF_ENUM, offsetof(struct fz_main, mode), "two", 0, 0,
     fz_modes, 0, "A choice."},
    {"items", SB_CONF_LIST, offsetof(struct fz_main, items), "a,b", 0, 16,
     NULL, 0, "A list."},
    {"secret", SB_CONF_STR, offsetof(struct fz_main, secret), NULL, 0, 0,
     NULL, SB_CONF_SECRET, "A secret."},
    {NULL, 0, 0, NULL, 0, 0, NULL, 0, NULL},
};

static const struct sb_conf_section fz_main = {
    "main", 0, sizeof(struct fz_main), fz_main_keys, "Main.", NULL,
};

struct fz_peer {
    char *host;
    long long port;
    long long timeout;
    char **tags;
};

static const struct sb_conf_key fz_peer_keys[] = {
    {"host", SB_CONF_STR, offsetof(struct fz_peer, host), NULL, 0, 0, NULL,
     SB_CONF_REQUIRED, "Host."},
    {"port", SB_CONF_INT, offsetof(struct fz_peer, port), "80", 1, 65535,
     NULL, 0, "Port."},
    {"timeout", SB_CONF_DURATION, offsetof(struct fz_peer, timeout), "1s",
     1, 86400000, NULL, SB_CONF_RELOAD, "Timeout."},
    {"tags", SB_CONF_LIST, offsetof(struct fz_peer, tags), NULL, 0, 0, NULL,
     0, "Tags."},
    {NULL, 0, 0, NULL, 0, 0, NULL, 0, NULL},
};

static int fz_peer_check(void *conf, char *err, size_t errlen)
{
    const struct fz_peer *p = conf;

    if (p->port == 7 && p->tags && p->tags[0]) {
        snprintf(err, errlen, "port 7 takes no tags");
        return -1;
    }
    return 0;
}

static const struct sb_conf_section fz_peer = {
    "peer", 1, sizeof(struct fz_peer), fz_peer_keys, "Peers.", fz_peer_check,
};

static const struct sb_conf_section *const fz_tables[] = {&fz_main, &fz_peer,
                                                          NULL};

static char *fz_dump(const struct sb_config *c, size_t *len)
{
    char *s = NULL;
    FILE *f = open_memstream(&s, len);

    if (!f)
        abort();
    sb_config_dump(c, f);
    fclose(f);
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512];
    struct sb_config *c, *c2;
    char *d1, *d2;
    size_t n1, n2;

    /* Relative "@PATH" secrets resolve to a directory that is not there. */
    setenv("CREDENTIALS_DIRECTORY", "/nonexistent-sb-fuzz", 1);
    c = sb_config_parse((const char *)data, size, "fuzz.conf", fz_tables,
                        err, sizeof(err));
    if (!c) {
        if (strncmp(err, "fuzz.conf", 9) != 0)
            abort(); /* every error names the file */
        return 0;
    }
    d1 = fz_dump(c, &n1);
    if (!strstr(d1, "********")) {
        c2 = sb_config_parse(d1, n1, "fuzz.conf", fz_tables, err,
                             sizeof(err));
        if (!c2) {
            fprintf(stderr, "dump does not parse: %s\n%s", err, d1);
            abort();
        }
        d2 = fz_dump(c2, &n2);
        if (n1 != n2 || memcmp(d1, d2, n1) != 0) {
            fprintf(stderr, "dump changed:\n%s---\n%s", d1, d2);
            abort();
        }
        if (sb_config_reload_check(c, c2, err, sizeof(err)) != 0) {
            fprintf(stderr, "reload_check: %s\n", err);
            abort();
        }
        free(d2);
        sb_config_free(c2);
    }
    free(d1);
    sb_config_free(c);
    return 0;
}
