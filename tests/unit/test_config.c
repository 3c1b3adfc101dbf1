/* test_config.c - unit tests for the table-driven INI configuration.
 *
 * The tables below stand in for a module's config: one singleton section
 * with a key of every type, a singleton with a required key, a named
 * section with a required key and a cross-field check, and a named section
 * whose keys are all reloadable. Error cases are rows of (input, expected
 * substrings) so each message is checked for its exact "file:line:" and
 * reason.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "util.h"

/* ------------------------------------------------------------------ */
/* Test tables                                                          */

struct t_server {
    char *host;
    long long port;
    int debug;
    long long timeout;
    long long max_body;
    int mode;
    char **tags;
    char *password;
    char *token;
    char *motd;
};

static const char *const mode_choices[] = {"fast", "safe", NULL};

static const struct sb_conf_key server_keys[] = {
    {"host", SB_CONF_STR, offsetof(struct t_server, host), "127.0.0.1", 0,
     64, NULL, 0, "Address to bind."},
    {"port", SB_CONF_INT, offsetof(struct t_server, port), "8080", 1, 65535,
     NULL, 0, "TCP port."},
    {"debug", SB_CONF_BOOL, offsetof(struct t_server, debug), "no", 0, 0,
     NULL, SB_CONF_RELOAD, "Verbose logs."},
    {"timeout", SB_CONF_DURATION, offsetof(struct t_server, timeout), "5s",
     100, 3600000, NULL, SB_CONF_RELOAD, "Request timeout."},
    {"max_body", SB_CONF_SIZE, offsetof(struct t_server, max_body), "1M",
     1024, 1LL << 30, NULL, 0, "Largest request body."},
    {"mode", SB_CONF_ENUM, offsetof(struct t_server, mode), "safe", 0, 0,
     mode_choices, 0, "Durability mode."},
    {"tags", SB_CONF_LIST, offsetof(struct t_server, tags), "a, b", 0, 8,
     NULL, SB_CONF_RELOAD, "Tags."},
    {"password", SB_CONF_STR, offsetof(struct t_server, password), NULL, 0,
     16, NULL, SB_CONF_SECRET, "Password."},
    {"token", SB_CONF_STR, offsetof(struct t_server, token), NULL, 0, 0,
     NULL, SB_CONF_SECRET, "API token."},
    {"motd", SB_CONF_STR, offsetof(struct t_server, motd), NULL, 0, 0, NULL,
     0, "Message of the day."},
    {NULL, 0, 0, NULL, 0, 0, NULL, 0, NULL},
};

static const struct sb_conf_section sec_server = {
    "server", 0, sizeof(struct t_server), server_keys,
    "The HTTP server. This paragraph is long enough to need wrapping in the "
    "example output, which keeps every comment line within eighty columns.",
    NULL,
};

struct t_redis {
    char *url;
    long long db;
};

static const struct sb_conf_key redis_keys[] = {
    {"url", SB_CONF_STR, offsetof(struct t_redis, url), NULL, 0, 0, NULL,
     SB_CONF_REQUIRED, "Redis URL."},
    {"db", SB_CONF_INT, offsetof(struct t_redis, db), "0", 0, 15, NULL, 0,
     "Database."},
    {NULL, 0, 0, NULL, 0, 0, NULL, 0, NULL},
};

static const struct sb_conf_section sec_redis = {
    "redis", 0, sizeof(struct t_redis), redis_keys, "Redis.", NULL,
};

struct t_listener {
    char *bind;
    long long port;
    long long weight;
};

static const struct sb_conf_key listener_keys[] = {
    {"bind", SB_CONF_STR, offsetof(struct t_listener, bind), "127.0.0.1", 0,
     0, NULL, 0, "Address."},
    {"port", SB_CONF_INT, offsetof(struct t_listener, port), NULL, 1, 65535,
     NULL, SB_CONF_REQUIRED, "Port."},
    {"weight", SB_CONF_INT, offsetof(struct t_listener, weight), "1", 0,
     LLONG_MAX, NULL, SB_CONF_RELOAD, "Weight."},
    {NULL, 0, 0, NULL, 0, 0, NULL, 0, NULL},
};

static int listener_check(void *conf, char *err, size_t errlen)
{
    struct t_listener *l = conf;

    if (l->port == 9999) {
        snprintf(err, errlen, "port 9999 is reserved");
        return -1;
    }
    return 0;
}

static const struct sb_conf_section sec_listener = {
    "listener", 1, sizeof(struct t_listener), listener_keys, "Listeners.",
    listener_check,
};

struct t_route {
    char *target;
    long long ttl;
};

static const struct sb_conf_key route_keys[] = {
    {"target", SB_CONF_STR, offsetof(struct t_route, target), "x", 0, 0,
     NULL, SB_CONF_RELOAD, "Target."},
    {"ttl", SB_CONF_DURATION, offsetof(struct t_route, ttl), "1d", 0, 0,
     NULL, SB_CONF_RELOAD, "Time to live."},
    {NULL, 0, 0, NULL, 0, 0, NULL, 0, NULL},
};

static const struct sb_conf_section sec_route = {
    "route", 1, sizeof(struct t_route), route_keys, "Routes.", NULL,
};

/* A secret that is not a string: its value must not leak from messages. */
struct t_vault {
    long long pin;
};

static const struct sb_conf_key vault_keys[] = {
    {"pin", SB_CONF_INT, offsetof(struct t_vault, pin), "0", 0, 9999, NULL,
     SB_CONF_SECRET, "PIN."},
    {NULL, 0, 0, NULL, 0, 0, NULL, 0, NULL},
};

static const struct sb_conf_section sec_vault = {
    "vault", 0, sizeof(struct t_vault), vault_keys, "Vault.", NULL,
};

static const struct sb_conf_section *const t_vault[] = {&sec_vault, NULL};

static const struct sb_conf_section *const t_all[] = {
    &sec_server, &sec_listener, &sec_route, NULL};
static const struct sb_conf_section *const t_req[] = {&sec_server,
                                                      &sec_redis, NULL};

/* ------------------------------------------------------------------ */
/* Helpers                                                              */

static struct sb_config *parse(const char *text,
                               const struct sb_conf_section *const *t,
                               char *err, size_t errlen)
{
    return sb_config_parse(text, strlen(text), "test.conf", t, err, errlen);
}

/* The dump as a new string. */
static char *dump(const struct sb_config *c)
{
    char *s = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&s, &n);

    assert_non_null(f);
    sb_config_dump(c, f);
    fclose(f);
    return s;
}

static char *example(const struct sb_conf_section *const *t)
{
    char *s = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&s, &n);

    assert_non_null(f);
    sb_config_write_example(t, f);
    fclose(f);
    return s;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

static void assert_contains(const char *hay, const char *needle)
{
    if (!strstr(hay, needle))
        fail_msg("expected \"%s\" in \"%s\"", needle, hay);
}

/* ------------------------------------------------------------------ */
/* Converters                                                           */

struct unit_case {
    const char *text;
    int ok;
    long long want;
};

static void test_parse_duration(void **state)
{
    static const struct unit_case cases[] = {
        {"250ms", 1, 250},
        {"5s", 1, 5000},
        {"2m", 1, 120000},
        {"1h", 1, 3600000},
        {"1d", 1, 86400000},
        {"30", 1, 30000},
        {"0", 1, 0},
        {"10 s", 1, 10000},
        {"", 0, 0},
        {"s", 0, 0},
        {"-5s", 0, 0},
        {"+5s", 0, 0},
        {"5x", 0, 0},
        {"5S", 0, 0},
        {"1.5s", 0, 0},
        {"5s ", 0, 0},
        {"9223372036854775807ms", 1, LLONG_MAX},
        {"9223372036854775807s", 0, 0},
        {"99999999999999999999", 0, 0},
    };

    (void)state;
    for (size_t i = 0; i < SB_ARRAY_LEN(cases); i++) {
        long long v = -1;
        int rc = sb_conf_parse_duration(cases[i].text, &v);
        if (rc != (cases[i].ok ? 0 : -1))
            fail_msg("duration '%s': rc %d", cases[i].text, rc);
        if (cases[i].ok && v != cases[i].want)
            fail_msg("duration '%s': %lld", cases[i].text, v);
    }
}

static void test_parse_size(void **state)
{
    static const struct unit_case cases[] = {
        {"512", 1, 512},
        {"512b", 1, 512},
        {"64k", 1, 65536},
        {"64K", 1, 65536},
        {"64kb", 1, 65536},
        {"64KiB", 1, 65536},
        {"1M", 1, 1048576},
        {"1G", 1, 1073741824},
        {"2 M", 1, 2097152},
        {"1T", 1, 1LL << 40},
        {"", 0, 0},
        {"k", 0, 0},
        {"-1", 0, 0},
        {"1Q", 0, 0},
        {"1kk", 0, 0},
        {"1.5M", 0, 0},
        {"9223372036854775807", 1, LLONG_MAX},
        {"9223372036854775807k", 0, 0},
    };

    (void)state;
    for (size_t i = 0; i < SB_ARRAY_LEN(cases); i++) {
        long long v = -1;
        int rc = sb_conf_parse_size(cases[i].text, &v);
        if (rc != (cases[i].ok ? 0 : -1))
            fail_msg("size '%s': rc %d", cases[i].text, rc);
        if (cases[i].ok && v != cases[i].want)
            fail_msg("size '%s': %lld", cases[i].text, v);
    }
}

static void test_parse_bool(void **state)
{
    static const struct unit_case cases[] = {
        {"yes", 1, 1},  {"no", 1, 0},     {"true", 1, 1}, {"false", 1, 0},
        {"on", 1, 1},   {"off", 1, 0},    {"1", 1, 1},    {"0", 1, 0},
        {"YES", 1, 1},  {"Off", 1, 0},    {"", 0, 0},     {"y", 0, 0},
        {"2", 0, 0},    {"yes ", 0, 0},   {"nope", 0, 0},
    };

    (void)state;
    for (size_t i = 0; i < SB_ARRAY_LEN(cases); i++) {
        int v = -1;
        int rc = sb_conf_parse_bool(cases[i].text, &v);
        if (rc != (cases[i].ok ? 0 : -1))
            fail_msg("bool '%s': rc %d", cases[i].text, rc);
        if (cases[i].ok && v != cases[i].want)
            fail_msg("bool '%s': %d", cases[i].text, v);
    }
}

/* ------------------------------------------------------------------ */
/* Values                                                               */

static void test_defaults(void **state)
{
    char err[256];
    struct sb_config *c = parse("", t_all, err, sizeof(err));
    const struct t_server *s;

    (void)state;
    assert_non_null(c);
    s = sb_config_get(c, "server");
    assert_non_null(s);
    assert_string_equal(s->host, "127.0.0.1");
    assert_int_equal(s->port, 8080);
    assert_int_equal(s->debug, 0);
    assert_int_equal(s->timeout, 5000);
    assert_int_equal(s->max_body, 1048576);
    assert_int_equal(s->mode, 1);
    assert_non_null(s->tags);
    assert_string_equal(s->tags[0], "a");
    assert_string_equal(s->tags[1], "b");
    assert_null(s->tags[2]);
    assert_null(s->password);
    assert_null(s->token);
    assert_null(s->motd);
    assert_int_equal(sb_config_count(c, "listener"), 0);
    assert_null(sb_config_nth(c, "listener", 0, NULL));
    assert_int_equal(sb_config_count(c, "server"), 1);
    assert_null(sb_config_get(c, "listener"));
    assert_null(sb_config_get(c, "nope"));
    assert_string_equal(sb_config_path(c), "test.conf");
    sb_config_free(c);
    sb_config_free(NULL);
}

static void test_every_type(void **state)
{
    static const char text[] =
        "\xEF\xBB\xBF# a comment\r\n"
        "; another comment\n"
        "\n"
        "  [ server ]  \n"
        "host = \" spaced \"\n"
        "\tport=9090\n"
        "debug = On\n"
        "timeout = 250ms\n"
        "max_body = 64k\n"
        "mode = FAST\n"
        "tags = x, , y ,z,\r\n"
        "password = \"hunter2\"\n"
        "motd = hello # not a comment\n"
        "token =\n";
    char err[256];
    struct sb_config *c = parse(text, t_all, err, sizeof(err));
    const struct t_server *s;

    (void)state;
    if (!c)
        fail_msg("parse: %s", err);
    s = sb_config_get(c, "server");
    assert_string_equal(s->host, " spaced ");
    assert_int_equal(s->port, 9090);
    assert_int_equal(s->debug, 1);
    assert_int_equal(s->timeout, 250);
    assert_int_equal(s->max_body, 65536);
    assert_int_equal(s->mode, 0);
    assert_string_equal(s->tags[0], "x");
    assert_string_equal(s->tags[1], "y");
    assert_string_equal(s->tags[2], "z");
    assert_null(s->tags[3]);
    assert_string_equal(s->password, "hunter2");
    assert_string_equal(s->motd, "hello # not a comment");
    assert_null(s->token);
    sb_config_free(c);
}

struct value_case {
    const char *line;  /* under [server] */
    long long want;    /* the field the key names */
};

static void test_units_in_file(void **state)
{
    static const struct value_case cases[] = {
        {"timeout = 100ms", 100},     {"timeout = 30", 30000},
        {"timeout = 2m", 120000},     {"timeout = 1h", 3600000},
        {"timeout = 1500ms", 1500},   {"max_body = 1k", 1024},
        {"max_body = 1G", 1LL << 30}, {"max_body = 2000", 2000},
        {"port = 1", 1},              {"port = 65535", 65535},
        {"debug = yes", 1},           {"debug = 0", 0},
        {"mode = safe", 1},           {"mode = fast", 0},
    };
    char text[128], err[256];

    (void)state;
    for (size_t i = 0; i < SB_ARRAY_LEN(cases); i++) {
        struct sb_config *c;
        const struct t_server *s;
        long long got;

        snprintf(text, sizeof(text), "[server]\n%s\n", cases[i].line);
        c = parse(text, t_all, err, sizeof(err));
        if (!c)
            fail_msg("'%s': %s", cases[i].line, err);
        s = sb_config_get(c, "server");
        if (strncmp(cases[i].line, "timeout", 7) == 0)
            got = s->timeout;
        else if (strncmp(cases[i].line, "max_body", 8) == 0)
            got = s->max_body;
        else if (strncmp(cases[i].line, "port", 4) == 0)
            got = s->port;
        else if (strncmp(cases[i].line, "debug", 5) == 0)
            got = s->debug;
        else
            got = s->mode;
        if (got != cases[i].want)
            fail_msg("'%s': got %lld", cases[i].line, got);
        sb_config_free(c);
    }
}

static void test_named_sections(void **state)
{
    static const char text[] = "[listener b]\n"
                               "port = 2\n"
                               "[server]\n"
                               "port = 1\n"
                               "[listener \"a\"]\n"
                               "port = 3\n"
                               "bind = 127.0.0.2\n"
                               "[listener  \"c.d-e:f\" ]\n"
                               "port = 4\n"
                               "weight = 7\n";
    static const char *const names[] = {"b", "a", "c.d-e:f"};
    static const long long ports[] = {2, 3, 4};
    char err[256];
    struct sb_config *c = parse(text, t_all, err, sizeof(err));

    (void)state;
    if (!c)
        fail_msg("parse: %s", err);
    assert_int_equal(sb_config_count(c, "listener"), 3);
    for (size_t i = 0; i < 3; i++) {
        const char *name = NULL;
        const struct t_listener *l = sb_config_nth(c, "listener", i, &name);
        assert_non_null(l);
        assert_string_equal(name, names[i]);
        assert_int_equal(l->port, ports[i]);
    }
    assert_null(sb_config_nth(c, "listener", 3, NULL));
    {
        const struct t_listener *a = sb_config_nth(c, "listener", 1, NULL);
        const struct t_listener *cd = sb_config_nth(c, "listener", 2, NULL);
        assert_string_equal(a->bind, "127.0.0.2");
        assert_int_equal(a->weight, 1);
        assert_string_equal(cd->bind, "127.0.0.1");
        assert_int_equal(cd->weight, 7);
    }
    assert_int_equal(
        ((const struct t_server *)sb_config_get(c, "server"))->port, 1);
    sb_config_free(c);
}

static void test_required(void **state)
{
    char err[256];
    struct sb_config *c;
    const struct t_redis *r;

    (void)state;
    c = parse("[redis]\nurl = redis://x\n", t_req, err, sizeof(err));
    if (!c)
        fail_msg("parse: %s", err);
    r = sb_config_get(c, "redis");
    assert_string_equal(r->url, "redis://x");
    assert_int_equal(r->db, 0);
    sb_config_free(c);
}

/* ------------------------------------------------------------------ */
/* Errors                                                               */

struct err_case {
    const char *text;
    const struct sb_conf_section *const *tables;
    const char *want1; /* location, e.g. "test.conf:3: " */
    const char *want2; /* reason */
};

static const char long_host[] =
    "[server]\nhost = "
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n";

static const struct err_case err_cases[] = {
    {"[nope]\n", t_all, "test.conf:1: ", "unknown section [nope]"},
    {"[server]\n\nfoo = 1\n", t_all, "test.conf:3: ",
     "unknown key 'foo' in section [server]"},
    {"[listener a]\nport = 1\nfoo = 1\n", t_all, "test.conf:3: ",
     "unknown key 'foo' in section [listener a]"},
    {"[server]\nport = 1\nport = 2\n", t_all, "test.conf:3: ",
     "duplicate key 'port' in [server] (first at line 2)"},
    {"[listener a]\nport = 1\n[listener a]\nport = 2\n", t_all,
     "test.conf:3: ", "duplicate section [listener a] (first at line 1)"},
    {"[listener a]\nport = 1\n[listener \"a\"]\n", t_all, "test.conf:3: ",
     "duplicate section [listener a]"},
    {"[server]\n[server]\n", t_all, "test.conf:2: ",
     "duplicate section [server] (first at line 1)"},
    {"[server]\nport = 70000\n", t_all, "test.conf:2: ",
     "port '70000' is out of bounds (1..65535)"},
    {"[server]\nport = 0\n", t_all, "test.conf:2: ", "(1..65535)"},
    {"[server]\ntimeout = 2h\n", t_all, "test.conf:2: ",
     "timeout '2h' is out of bounds (100ms..1h)"},
    {"[server]\ntimeout = 99ms\n", t_all, "test.conf:2: ", "(100ms..1h)"},
    {"[server]\nmax_body = 2G\n", t_all, "test.conf:2: ",
     "max_body '2G' is out of bounds (1k..1G)"},
    {"[listener a]\nport = 1\nweight = -1\n", t_all, "test.conf:3: ",
     "(at least 0)"},
    {"[server]\nport = 80x\n", t_all, "test.conf:2: ",
     "bad number '80x' for port"},
    {"[server]\nport = +80\n", t_all, "test.conf:2: ", "bad number"},
    {"[server]\nport =\n", t_all, "test.conf:2: ", "bad number '' for port"},
    {"[server]\nport = 99999999999999999999\n", t_all, "test.conf:2: ",
     "bad number"},
    {"[server]\ntimeout = 5 parsecs\n", t_all, "test.conf:2: ",
     "bad duration '5 parsecs' for timeout"},
    {"[server]\nmax_body = 1Q\n", t_all, "test.conf:2: ",
     "bad size '1Q' for max_body"},
    {"[server]\ndebug = maybe\n", t_all, "test.conf:2: ",
     "bad boolean 'maybe' for debug"},
    {"[server]\nmode = slow\n", t_all, "test.conf:2: ",
     "invalid choice 'slow' for mode (one of: fast, safe)"},
    {"[listener a]\nbind = x\n", t_all, "test.conf:1: ",
     "[listener a] port is required"},
    {"[listener a]\nport = 1\n[listener b]\n[server]\n", t_all,
     "test.conf:3: ", "[listener b] port is required"},
    {"[server]\n", t_req, "test.conf: ", "[redis] url is required"},
    {"[server]\n[redis]\ndb = 1\n", t_req, "test.conf:2: ",
     "[redis] url is required"},
    {"[redis]\nurl =\n", t_req, "test.conf:2: ",
     "url may not be empty (required)"},
    {"[redis]\nurl = \"\"\n", t_req, "test.conf:2: ", "may not be empty"},
    {"[server]\nport 80\n", t_all, "test.conf:2: ", "line without '='"},
    {"[server]\n= 80\n", t_all, "test.conf:2: ", "missing key before '='"},
    {"[server\nport = 1\n", t_all, "test.conf:1: ",
     "unterminated section header"},
    {"[server] # x\n", t_all, "test.conf:1: ", "unexpected text after ']'"},
    {"[]\n", t_all, "test.conf:1: ", "empty section header"},
    {"\n\nport = 80\n", t_all, "test.conf:3: ",
     "key 'port' outside any section"},
    {long_host, t_all, "test.conf:2: ",
     "value of host is too long (65 bytes, max 64)"},
    {"[server]\ntags = a, abcdefghi\n", t_all, "test.conf:2: ",
     "item of tags is too long (9 bytes, max 8)"},
    {"[listener]\nport = 1\n", t_all, "test.conf:1: ",
     "section [listener] needs a name"},
    {"[listener \"\"]\n", t_all, "test.conf:1: ", "needs a name"},
    {"[listener \"a]\n", t_all, "test.conf:1: ", "unterminated quote"},
    {"[listener a/b]\n", t_all, "test.conf:1: ", "bad name for [listener]"},
    {"[listener a b]\n", t_all, "test.conf:1: ", "bad name"},
    {"[server x]\n", t_all, "test.conf:1: ", "section [server] takes no name"},
    {"[server]\npassword = @/nonexistent/sb-secret\n", t_all,
     "test.conf:2: ",
     "password: cannot read secret file '/nonexistent/sb-secret'"},
    {"[server]\npassword = @\n", t_all, "test.conf:2: ",
     "empty file name after '@'"},
    {"[server]\npassword = @/\n", t_all, "test.conf:2: ",
     "is not a regular file"},
    {"[server]\r\nport = x\r\n", t_all, "test.conf:2: ",
     "bad number 'x' for port"},
    {"[server]\nhost = a\x01z\n", t_all, "test.conf:2: ",
     "control character 0x01"},
    {"[server]\nhost = a\rz\n", t_all, "test.conf:2: ",
     "control character 0x0d"},
    {"[listener a]\nport = 9999\n", t_all, "test.conf:1: ",
     "[listener a] port 9999 is reserved"},
};

static void test_errors(void **state)
{
    (void)state;
    for (size_t i = 0; i < SB_ARRAY_LEN(err_cases); i++) {
        const struct err_case *e = &err_cases[i];
        char err[512] = "";
        struct sb_config *c = parse(e->text, e->tables, err, sizeof(err));

        if (c) {
            sb_config_free(c);
            fail_msg("case %zu parsed: %s", i, e->text);
        }
        if (strncmp(err, e->want1, strlen(e->want1)) != 0)
            fail_msg("case %zu: want prefix \"%s\" in \"%s\"", i, e->want1,
                     err);
        if (!strstr(err, e->want2))
            fail_msg("case %zu: want \"%s\" in \"%s\"", i, e->want2, err);
    }
}

/* Errors that need bytes strlen() cannot carry, or sizes. */
static void test_errors_binary(void **state)
{
    static const char nul[] = "[server]\nport = 8\0\n";
    char err[256] = "";
    char *big;
    struct sb_config *c;

    (void)state;
    c = sb_config_parse(nul, sizeof(nul) - 1, "test.conf", t_all, err,
                        sizeof(err));
    assert_null(c);
    assert_contains(err, "test.conf:2: NUL byte");

    big = sb_malloc(5001);
    memset(big, 'a', 5000);
    big[5000] = '\0';
    memcpy(big, "[server]\nmotd = ", 16);
    c = parse(big, t_all, err, sizeof(err));
    assert_null(c);
    assert_contains(err, "test.conf:2: line too long (max 4096 bytes)");
    free(big);

    big = sb_calloc(1, 2 * 1024 * 1024);
    memset(big, '\n', 2 * 1024 * 1024);
    c = sb_config_parse(big, 2 * 1024 * 1024, "test.conf", t_all, err,
                        sizeof(err));
    assert_null(c);
    assert_contains(err, "test.conf: file too large");
    free(big);

    /* A line of exactly the limit is fine; CRLF does not count. */
    big = sb_malloc(9 + 4096 + 3);
    memcpy(big, "[server]\n", 9);
    memcpy(big + 9, "motd = ", 7);
    memset(big + 16, 'b', 4096 - 7);
    memcpy(big + 9 + 4096, "\r\n", 3);
    c = parse(big, t_all, err, sizeof(err));
    if (!c)
        fail_msg("4096-byte line: %s", err);
    assert_int_equal(
        strlen(((const struct t_server *)sb_config_get(c, "server"))->motd),
        4096 - 7);
    sb_config_free(c);
    free(big);

    /* One byte more is not. */
    big = sb_malloc(9 + 4097 + 2);
    memcpy(big, "[server]\n", 9);
    memcpy(big + 9, "motd = ", 7);
    memset(big + 16, 'b', 4097 - 7);
    memcpy(big + 9 + 4097, "\n", 2);
    c = parse(big, t_all, err, sizeof(err));
    assert_null(c);
    assert_contains(err, "test.conf:2: line too long");
    free(big);

    /* err may be NULL. */
    assert_null(parse("[nope]\n", t_all, NULL, 0));
}

/* A bad secret value never appears in the message. */
static void test_secret_not_echoed(void **state)
{
    char err[256] = "";
    struct sb_config *c;

    (void)state;
    c = parse("[server]\npassword = sup3rs3cretsup3rs3cret\n", t_all, err,
              sizeof(err));
    assert_null(c);
    assert_contains(err, "test.conf:2: value of password is too long");
    assert_null(strstr(err, "sup3r"));

    c = parse("[vault]\npin = 12345\n", t_vault, err, sizeof(err));
    assert_null(c);
    assert_contains(err, "test.conf:2: pin is out of bounds (0..9999)");
    assert_null(strstr(err, "12345"));
    c = parse("[vault]\npin = 77x7\n", t_vault, err, sizeof(err));
    assert_null(c);
    assert_contains(err, "test.conf:2: bad number for pin");
    assert_null(strstr(err, "77x7"));

    /* A set secret of any type is masked in dumps. */
    c = parse("[vault]\npin = 4321\n", t_vault, err, sizeof(err));
    assert_non_null(c);
    {
        char *d = dump(c);
        assert_string_equal(d, "[vault]\npin = ********\n");
        free(d);
    }
    sb_config_free(c);
}

/* ------------------------------------------------------------------ */
/* Secrets                                                              */

static void test_secret_files(void **state)
{
    char dir[] = "/tmp/sb-conf-XXXXXX";
    char path[256], conf[256], text[512], err[512];
    struct sb_config *c;
    const struct t_server *s;

    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/pw", dir);
    write_file(path, "  s3cret \r\nsecond line\n");
    snprintf(path, sizeof(path), "%s/tok", dir);
    write_file(path, "tok-en");
    snprintf(path, sizeof(path), "%s/empty", dir);
    write_file(path, "\n");
    snprintf(path, sizeof(path), "%s/long", dir);
    write_file(path, "abcdefghijklmnopqrstuvwxyz\n");
    snprintf(conf, sizeof(conf), "%s/test.conf", dir);

    /* Absolute path. */
    unsetenv("CREDENTIALS_DIRECTORY");
    snprintf(text, sizeof(text), "[server]\npassword = @%s/pw\n", dir);
    c = parse(text, t_all, err, sizeof(err));
    if (!c)
        fail_msg("absolute: %s", err);
    s = sb_config_get(c, "server");
    assert_string_equal(s->password, "s3cret");
    sb_config_free(c);

    /* Relative to the directory of the config file, quoted. */
    snprintf(text, sizeof(text), "[server]\npassword = \"@pw\"\n"
             "token = @tok\n");
    c = sb_config_parse(text, strlen(text), conf, t_all, err, sizeof(err));
    if (!c)
        fail_msg("relative: %s", err);
    s = sb_config_get(c, "server");
    assert_string_equal(s->password, "s3cret");
    assert_string_equal(s->token, "tok-en");
    sb_config_free(c);

    /* Relative to $CREDENTIALS_DIRECTORY when set. */
    setenv("CREDENTIALS_DIRECTORY", dir, 1);
    c = parse("[server]\ntoken = @tok\n", t_all, err, sizeof(err));
    if (!c)
        fail_msg("credentials: %s", err);
    s = sb_config_get(c, "server");
    assert_string_equal(s->token, "tok-en");
    sb_config_free(c);

    c = parse("[server]\n\ntoken = @missing\n", t_all, err, sizeof(err));
    assert_null(c);
    assert_contains(err, "test.conf:3: token: cannot read secret file");
    assert_contains(err, "/missing");

    c = parse("[server]\ntoken = @empty\n", t_all, err, sizeof(err));
    assert_null(c);
    assert_contains(err, "test.conf:2: token: secret file");
    assert_contains(err, "is empty");

    /* The converter's bounds apply, and the content is not echoed. */
    c = parse("[server]\npassword = @long\n", t_all, err, sizeof(err));
    assert_null(c);
    assert_contains(err, "test.conf:2: value of password is too long");
    assert_null(strstr(err, "abcdef"));
    unsetenv("CREDENTIALS_DIRECTORY");

    /* "@" is literal for keys that are not secret. */
    c = parse("[server]\nmotd = @pw\n", t_all, err, sizeof(err));
    assert_non_null(c);
    assert_string_equal(
        ((const struct t_server *)sb_config_get(c, "server"))->motd, "@pw");
    sb_config_free(c);

    for (size_t i = 0; i < 4; i++) {
        static const char *const f[] = {"pw", "tok", "empty", "long"};
        snprintf(path, sizeof(path), "%s/%s", dir, f[i]);
        unlink(path);
    }
    assert_int_equal(rmdir(dir), 0);
}

/* ------------------------------------------------------------------ */
/* Dump, example, load                                                  */

static void test_dump(void **state)
{
    static const char text[] = "[listener z]\nport = 81\n"
                               "[server]\n"
                               "timeout = 1500ms\n"
                               "max_body = 1536\n"
                               "password = hunter2\n"
                               "tags = \"q\", r\n"
                               "motd = \"quoted\"\n";
    char err[256], *d;
    struct sb_config *c = parse(text, t_all, err, sizeof(err));

    (void)state;
    if (!c)
        fail_msg("parse: %s", err);
    d = dump(c);
    assert_contains(d, "[server]\nhost = 127.0.0.1\nport = 8080\n"
                       "debug = no\ntimeout = 1500ms\nmax_body = 1536\n"
                       "mode = safe\ntags = \"\"q\", r\"\n"
                       "password = ********\ntoken =\nmotd = quoted\n");
    assert_contains(d, "\n[listener z]\nbind = 127.0.0.1\nport = 81\n"
                       "weight = 1\n");
    assert_null(strstr(d, "hunter2"));
    /* The server section comes first: table order, not file order. */
    assert_int_equal(strncmp(d, "[server]\n", 9), 0);
    free(d);
    sb_config_free(c);

    c = parse("[server]\ntimeout = 120\nmax_body = 2048k\n"
              "[route r]\n[route s]\nttl = 90\n[route t]\nttl = 25h\n"
              "[route u]\nttl = 1001ms\n[route v]\nttl = 0\n",
              t_all, err, sizeof(err));
    assert_non_null(c);
    d = dump(c);
    assert_contains(d, "timeout = 2m\n");
    assert_contains(d, "[route r]\ntarget = x\nttl = 1d\n");
    assert_contains(d, "[route s]\ntarget = x\nttl = 90s\n");
    assert_contains(d, "[route t]\ntarget = x\nttl = 25h\n");
    assert_contains(d, "[route u]\ntarget = x\nttl = 1001ms\n");
    assert_contains(d, "[route v]\ntarget = x\nttl = 0s\n");
    assert_contains(d, "max_body = 2M\n");
    free(d);
    sb_config_free(c);
}

static void test_dump_roundtrip(void **state)
{
    static const char text[] = "[server]\n"
                               "host = \" lead and trail \"\n"
                               "port = 1\n"
                               "debug = yes\n"
                               "timeout = 3600s\n"
                               "max_body = 1025\n"
                               "mode = fast\n"
                               "tags = \"x\",y\n"
                               "motd = \"q\" said\n"
                               "[listener one]\nport = 10\nbind =\n"
                               "[listener two]\nport = 20\nweight = 3\n"
                               "[route r]\n";
    char err[256], *d1, *d2;
    struct sb_config *c1 = parse(text, t_all, err, sizeof(err)), *c2;

    (void)state;
    if (!c1)
        fail_msg("parse: %s", err);
    d1 = dump(c1);
    c2 = parse(d1, t_all, err, sizeof(err));
    if (!c2)
        fail_msg("reparse: %s\n%s", err, d1);
    d2 = dump(c2);
    assert_string_equal(d1, d2);
    assert_int_equal(sb_config_reload_check(c1, c2, err, sizeof(err)), 0);
    {
        const struct t_server *s = sb_config_get(c2, "server");
        const struct t_listener *l = sb_config_nth(c2, "listener", 0, NULL);
        assert_string_equal(s->host, " lead and trail ");
        assert_string_equal(s->tags[0], "\"x\"");
        assert_string_equal(s->motd, "\"q\" said");
        assert_int_equal(s->timeout, 3600000);
        assert_null(l->bind);
    }
    free(d1);
    free(d2);
    sb_config_free(c1);
    sb_config_free(c2);
}

struct reload_case {
    const char *old_text;
    const char *new_text;
    const char *want; /* NULL: reload is fine */
};

static void test_reload_check(void **state)
{
    static const struct reload_case cases[] = {
        {"[server]\n", "[server]\n", NULL},
        {"", "[server]\ntimeout = 9s\ndebug = yes\ntags = q\n", NULL},
        {"[server]\nport = 1\n", "[server]\nport = 2\n",
         "server.port needs a restart"},
        {"", "[server]\nmotd = hi\n", "server.motd needs a restart"},
        {"", "[server]\nmode = fast\n", "server.mode needs a restart"},
        {"", "[server]\nmax_body = 2M\n", "server.max_body needs a restart"},
        {"[listener a]\nport = 1\n", "[listener a]\nport = 1\nweight = 5\n",
         NULL},
        {"[listener a]\nport = 1\n", "[listener a]\nport = 2\n",
         "listener.port needs a restart ([listener a])"},
        {"[listener a]\nport = 1\n",
         "[listener a]\nport = 1\n[listener b]\nport = 2\n",
         "listener.bind needs a restart ([listener b] added)"},
        {"[listener a]\nport = 1\n[listener b]\nport = 2\n",
         "[listener b]\nport = 2\n",
         "listener.bind needs a restart ([listener a] removed)"},
        /* Order of named instances does not matter. */
        {"[listener a]\nport = 1\n[listener b]\nport = 2\n",
         "[listener b]\nport = 2\n[listener a]\nport = 1\n", NULL},
        /* Every key of [route] is reloadable: instances may come and go. */
        {"[route r]\n", "[route s]\ntarget = y\n[route t]\n", NULL},
    };
    char err[256];

    (void)state;
    for (size_t i = 0; i < SB_ARRAY_LEN(cases); i++) {
        struct sb_config *a = parse(cases[i].old_text, t_all, err,
                                    sizeof(err));
        struct sb_config *b = parse(cases[i].new_text, t_all, err,
                                    sizeof(err));
        int rc;

        assert_non_null(a);
        assert_non_null(b);
        err[0] = '\0';
        rc = sb_config_reload_check(a, b, err, sizeof(err));
        if (!cases[i].want && rc != 0)
            fail_msg("case %zu: %s", i, err);
        if (cases[i].want) {
            if (rc != -1)
                fail_msg("case %zu: accepted", i);
            if (strcmp(err, cases[i].want) != 0)
                fail_msg("case %zu: want \"%s\", got \"%s\"", i,
                         cases[i].want, err);
        }
        sb_config_free(a);
        sb_config_free(b);
    }
}

static void test_example(void **state)
{
    static const struct sb_conf_section *const t_opt[] = {&sec_server,
                                                          &sec_listener,
                                                          NULL};
    char err[256], *ex, *d1, *d2;
    struct sb_config *c, *empty;
    const char *line;

    (void)state;
    ex = example(t_opt);
    assert_contains(ex, "# The HTTP server.");
    assert_contains(ex, "\n[server]\n");
    assert_contains(ex, "# TCP port. (integer, 1..65535)\n# port = 8080\n");
    assert_contains(ex, "# Request timeout. (duration, 100ms..1h, "
                        "reloadable)\n# timeout = 5s\n");
    assert_contains(ex, "(size, 1k..1G)\n# max_body = 1M\n");
    assert_contains(ex, "(one of: fast, safe)\n# mode = safe\n");
    assert_contains(ex, "(yes/no, reloadable)\n# debug = no\n");
    assert_contains(ex, "(comma-separated list, at most 8 bytes each, "
                        "reloadable)\n# tags = a, b\n");
    assert_contains(ex, "secret: \"@FILE\" reads it from FILE)\n"
                        "# password =\n");
    assert_contains(ex, "# [listener main]\n");
    assert_contains(ex, "# Port. (integer, 1..65535, required)\n# port =\n");
    assert_contains(ex, "(integer, at least 0, reloadable)\n# weight = 1\n");
    /* Every line is a comment, a header or a key, within 80 columns. */
    for (line = ex; *line;) {
        const char *nl = strchr(line, '\n');
        assert_non_null(nl);
        if (nl - line > 80)
            fail_msg("long line: %.*s", (int)(nl - line), line);
        line = nl + 1;
    }

    /* It parses, to the defaults. */
    c = parse(ex, t_opt, err, sizeof(err));
    if (!c)
        fail_msg("example does not parse: %s\n%s", err, ex);
    empty = parse("", t_opt, err, sizeof(err));
    assert_non_null(empty);
    d1 = dump(c);
    d2 = dump(empty);
    assert_string_equal(d1, d2);
    free(d1);
    free(d2);
    free(ex);
    sb_config_free(c);
    sb_config_free(empty);

    /* A required key of a singleton is left for the operator to fill. */
    ex = example(t_req);
    assert_contains(ex, "[redis]\n# Redis URL. (string, required)\nurl =\n");
    c = parse(ex, t_req, err, sizeof(err));
    assert_null(c);
    assert_contains(err, "url may not be empty");
    free(ex);
}

static void test_load(void **state)
{
    char dir[] = "/tmp/sb-conf-XXXXXX";
    char path[256], err[512];
    struct sb_config *c;

    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/sb.conf", dir);
    write_file(path, "[server]\nport = 4242\n[listener x]\nport = 1\n");
    c = sb_config_load(path, t_all, err, sizeof(err));
    if (!c)
        fail_msg("load: %s", err);
    assert_string_equal(sb_config_path(c), path);
    assert_int_equal(
        ((const struct t_server *)sb_config_get(c, "server"))->port, 4242);
    assert_int_equal(sb_config_count(c, "listener"), 1);
    sb_config_free(c);

    write_file(path, "[server]\nport = 4242\nbogus = 1\n");
    c = sb_config_load(path, t_all, err, sizeof(err));
    assert_null(c);
    {
        char want[300];
        snprintf(want, sizeof(want), "%s:3: unknown key 'bogus'", path);
        assert_contains(err, want);
    }
    unlink(path);

    c = sb_config_load(path, t_all, err, sizeof(err));
    assert_null(c);
    assert_contains(err, "cannot open: No such file or directory");
    assert_int_equal(rmdir(dir), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_duration),
        cmocka_unit_test(test_parse_size),
        cmocka_unit_test(test_parse_bool),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_every_type),
        cmocka_unit_test(test_units_in_file),
        cmocka_unit_test(test_named_sections),
        cmocka_unit_test(test_required),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_errors_binary),
        cmocka_unit_test(test_secret_not_echoed),
        cmocka_unit_test(test_secret_files),
        cmocka_unit_test(test_dump),
        cmocka_unit_test(test_dump_roundtrip),
        cmocka_unit_test(test_reload_check),
        cmocka_unit_test(test_example),
        cmocka_unit_test(test_load),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
