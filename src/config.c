/* config.c - INI configuration driven by declarative tables.
 *
 * A hand-written line parser (not inih: every message must carry the line
 * number) reads "[section]" / "[section NAME]" headers and "key = value"
 * lines, and looks every key up in the module's table (config.h). Each
 * section instance is one zeroed block of the module's struct size; the
 * table's defaults are converted first by the same converters as the file's
 * values, so a default that does not convert is a programmer error and
 * aborts. The first problem found stops the parse with "file:line: reason".
 *
 * Choices made where config.h leaves room:
 *   - an empty STR value (or no default) leaves the pointer NULL; a LIST is
 *     always a NULL-terminated array, empty when unset;
 *   - a REQUIRED STR or LIST may not be set to an empty value;
 *   - a singleton section may appear only once, a named instance only once;
 *   - instance names are 1..64 of [A-Za-z0-9_.:-], so dumps need no quoting;
 *   - section and key names are case-sensitive; BOOL and ENUM values are not;
 *   - no line may hold control characters other than TAB (NUL is reported
 *     as such); lines end in LF or CRLF; a leading UTF-8 BOM is skipped;
 *   - values of SECRET keys never appear in error messages.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

#define CONF_MAX_FILE (1024 * 1024) /* bytes in a config file */
#define CONF_MAX_LINE 4096          /* bytes in one line, without EOL */
#define CONF_MAX_NAME 64            /* bytes in an instance name */
#define CONF_SHOW 64                /* bytes of a bad value echoed back */
#define CONF_MASK "********"

struct conf_inst {
    const struct sb_conf_section *sec;
    char *name;     /* instance name; NULL for a singleton */
    void *data;     /* sec->size bytes: the module's struct */
    int line;       /* line of the header; 0 for an absent singleton */
    int *key_lines; /* per key: line that set it, 0 = default */
};

struct sb_config {
    char *path;
    const struct sb_conf_section **sections; /* NULL-terminated copy */
    struct conf_inst **insts; /* singletons first, then named in file order */
    size_t ninsts;
};

struct conf_parser {
    struct sb_config *c;
    const char *file;
    char *err;
    size_t errlen;
    struct conf_inst *cur; /* section being filled, NULL before the first */
};

/* ------------------------------------------------------------------ */
/* Small helpers                                                        */

static int is_ws(int ch)
{
    return ch == ' ' || ch == '\t';
}

static int is_digit(int ch)
{
    return ch >= '0' && ch <= '9';
}

/* Trim spaces and tabs at both ends, in place. */
static char *trim(char *s)
{
    char *e;

    while (is_ws(*s))
        s++;
    e = s + strlen(s);
    while (e > s && is_ws(e[-1]))
        e--;
    *e = '\0';
    return s;
}

static void *field(void *data, const struct sb_conf_key *k)
{
    return (char *)data + k->offset;
}

static const void *cfield(const void *data, const struct sb_conf_key *k)
{
    return (const char *)data + k->offset;
}

static size_t key_count(const struct sb_conf_section *s)
{
    size_t n = 0;

    while (s->keys[n].name)
        n++;
    return n;
}

static void list_free(char **l)
{
    if (!l)
        return;
    for (char **p = l; *p; p++)
        free(*p);
    free(l);
}

static size_t list_len(char *const *l)
{
    size_t n = 0;

    while (l && l[n])
        n++;
    return n;
}

static __attribute__((noreturn, format(printf, 3, 4))) void
table_bug(const struct sb_conf_section *s, const struct sb_conf_key *k,
          const char *fmt, ...)
{
    char why[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    SB_ERR("core.config", "bad config table section=%s key=%s reason=\"%s\"",
           s && s->name ? s->name : "-", k && k->name ? k->name : "-", why);
    abort();
}

static __attribute__((format(printf, 3, 4))) void
perr(struct conf_parser *p, int line, const char *fmt, ...)
{
    int n;
    va_list ap;

    if (!p->err || p->errlen == 0)
        return;
    if (line > 0)
        n = snprintf(p->err, p->errlen, "%s:%d: ", p->file, line);
    else
        n = snprintf(p->err, p->errlen, "%s: ", p->file);
    if (n < 0 || (size_t)n >= p->errlen)
        return;
    va_start(ap, fmt);
    vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------ */
/* Units                                                                */

/* Parse an unsigned decimal number at *sp, advancing it. */
static int parse_digits(const char **sp, long long *out)
{
    const char *s = *sp;
    long long v = 0;

    if (!is_digit(*s))
        return -1;
    for (; is_digit(*s); s++) {
        int d = *s - '0';
        if (v > (LLONG_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *sp = s;
    *out = v;
    return 0;
}

static int scale(long long v, long long mult, long long *out)
{
    if (v > LLONG_MAX / mult)
        return -1;
    *out = v * mult;
    return 0;
}

int sb_conf_parse_duration(const char *s, long long *ms)
{
    static const struct {
        const char *unit;
        long long mult;
    } units[] = {
        {"", 1000},      {"ms", 1},          {"s", 1000},
        {"m", 60000LL}, {"h", 3600000LL},   {"d", 86400000LL},
    };
    long long v;

    if (!s || parse_digits(&s, &v) < 0)
        return -1;
    while (is_ws(*s))
        s++;
    for (size_t i = 0; i < SB_ARRAY_LEN(units); i++)
        if (strcmp(s, units[i].unit) == 0)
            return scale(v, units[i].mult, ms);
    return -1;
}

int sb_conf_parse_size(const char *s, long long *bytes)
{
    static const struct {
        char letter;
        long long mult;
    } units[] = {
        {'k', 1LL << 10}, {'m', 1LL << 20}, {'g', 1LL << 30}, {'t', 1LL << 40},
    };
    long long v, mult = 1;

    if (!s || parse_digits(&s, &v) < 0)
        return -1;
    while (is_ws(*s))
        s++;
    if (*s) {
        char ch = (char)(*s | 0x20);
        for (size_t i = 0; i < SB_ARRAY_LEN(units); i++) {
            if (ch == units[i].letter) {
                mult = units[i].mult;
                s++;
                if ((*s | 0x20) == 'i')
                    s++;
                break;
            }
        }
        /* "512b", "64k", "64kb", "64KiB" */
        if ((*s | 0x20) == 'b')
            s++;
        if (*s)
            return -1;
    }
    return scale(v, mult, bytes);
}

int sb_conf_parse_bool(const char *s, int *b)
{
    static const char *const yes[] = {"yes", "true", "on", "1"};
    static const char *const no[] = {"no", "false", "off", "0"};

    if (!s)
        return -1;
    for (size_t i = 0; i < SB_ARRAY_LEN(yes); i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *b = 1;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *b = 0;
            return 0;
        }
    }
    return -1;
}

/* The shortest exact form: "0s", "250ms", "90s", "2m", "1h", "1d". */
static void fmt_duration(long long ms, char *buf, size_t n)
{
    static const struct {
        const char *unit;
        long long mult;
    } units[] = {
        {"d", 86400000LL}, {"h", 3600000LL}, {"m", 60000LL}, {"s", 1000},
    };

    if (ms == 0) {
        snprintf(buf, n, "0s");
        return;
    }
    for (size_t i = 0; i < SB_ARRAY_LEN(units); i++) {
        if (ms % units[i].mult == 0) {
            snprintf(buf, n, "%lld%s", ms / units[i].mult, units[i].unit);
            return;
        }
    }
    snprintf(buf, n, "%lldms", ms);
}

/* Bytes, or an exact binary multiple: "512", "64k", "1M", "2G", "1T". */
static void fmt_size(long long b, char *buf, size_t n)
{
    static const struct {
        const char *unit;
        int shift;
    } units[] = {{"T", 40}, {"G", 30}, {"M", 20}, {"k", 10}};

    if (b != 0) {
        for (size_t i = 0; i < SB_ARRAY_LEN(units); i++) {
            long long m = 1LL << units[i].shift;
            if (b % m == 0) {
                snprintf(buf, n, "%lld%s", b / m, units[i].unit);
                return;
            }
        }
    }
    snprintf(buf, n, "%lld", b);
}

static void fmt_number(enum sb_conf_type t, long long v, char *buf, size_t n)
{
    if (t == SB_CONF_DURATION)
        fmt_duration(v, buf, n);
    else if (t == SB_CONF_SIZE)
        fmt_size(v, buf, n);
    else
        snprintf(buf, n, "%lld", v);
}

static int has_bounds(const struct sb_conf_key *k)
{
    return k->min != 0 || k->max != 0;
}

/* "1..65535", "at least 1", "at most 10s", in the key's units. */
static void fmt_bounds(const struct sb_conf_key *k, char *buf, size_t n)
{
    char lo[32], hi[32];

    fmt_number(k->type, k->min, lo, sizeof(lo));
    fmt_number(k->type, k->max, hi, sizeof(hi));
    if (k->max == LLONG_MAX)
        snprintf(buf, n, "at least %s", lo);
    else if (k->min == LLONG_MIN)
        snprintf(buf, n, "at most %s", hi);
    else
        snprintf(buf, n, "%s..%s", lo, hi);
}

/* ------------------------------------------------------------------ */
/* Converting one value                                                 */

/* " 'value'" for messages, or "" for secrets. */
static const char *shown(const struct sb_conf_key *k, const char *v,
                         char *buf, size_t n)
{
    if (k->flags & SB_CONF_SECRET)
        return "";
    snprintf(buf, n, " '%.*s%s'", CONF_SHOW, v,
             strlen(v) > CONF_SHOW ? "..." : "");
    return buf;
}

static int check_bounds(const struct sb_conf_key *k, long long v,
                        const char *text, char *why, size_t whylen)
{
    char b[96], sv[CONF_SHOW + 8];

    if (!has_bounds(k) || (v >= k->min && v <= k->max))
        return 0;
    fmt_bounds(k, b, sizeof(b));
    snprintf(why, whylen, "%s%s is out of bounds (%s)", k->name,
             shown(k, text, sv, sizeof(sv)), b);
    return -1;
}

static int split_list(const struct sb_conf_key *k, const char *v,
                      char ***out, char *why, size_t whylen)
{
    size_t n = 0, alloc = 4;
    char **l = sb_calloc(alloc + 1, sizeof(*l));
    char *copy = sb_strdup(v), *s = copy;

    for (;;) {
        char *comma = strchr(s, ',');
        char *item;

        if (comma)
            *comma = '\0';
        item = trim(s);
        if (*item) {
            if (k->max > 0 && strlen(item) > (size_t)k->max) {
                snprintf(why, whylen,
                         "item of %s is too long (%zu bytes, max %lld)",
                         k->name, strlen(item), k->max);
                free(copy);
                list_free(l);
                return -1;
            }
            if (n == alloc) {
                alloc *= 2;
                l = sb_realloc(l, (alloc + 1) * sizeof(*l));
            }
            l[n++] = sb_strdup(item);
            l[n] = NULL;
        }
        if (!comma)
            break;
        s = comma + 1;
    }
    free(copy);
    *out = l;
    return 0;
}

/* Convert v for key k and store it in the struct at data, replacing (and
 * freeing) the previous value. Returns 0, or -1 with a reason in why; the
 * struct is unchanged on failure. */
static int conf_set(const struct sb_conf_key *k, void *data, const char *v,
                    char *why, size_t whylen)
{
    char sv[CONF_SHOW + 8];
    long long ll;
    int b;

    switch (k->type) {
    case SB_CONF_STR: {
        char **p = field(data, k);
        size_t n = strlen(v);
        if (k->max > 0 && n > (size_t)k->max) {
            snprintf(why, whylen, "value of %s is too long (%zu bytes, max "
                     "%lld)", k->name, n, k->max);
            return -1;
        }
        free(*p);
        *p = n ? sb_strdup(v) : NULL;
        return 0;
    }
    case SB_CONF_INT:
        if (sb_parse_ll(v, &ll) < 0 || !(is_digit(*v) || *v == '-')) {
            snprintf(why, whylen, "bad number%s for %s",
                     shown(k, v, sv, sizeof(sv)), k->name);
            return -1;
        }
        if (check_bounds(k, ll, v, why, whylen) < 0)
            return -1;
        *(long long *)field(data, k) = ll;
        return 0;
    case SB_CONF_DURATION:
        if (sb_conf_parse_duration(v, &ll) < 0) {
            snprintf(why, whylen, "bad duration%s for %s (use e.g. 250ms, "
                     "5s, 2m, 1h, 1d; a bare number is seconds)",
                     shown(k, v, sv, sizeof(sv)), k->name);
            return -1;
        }
        if (check_bounds(k, ll, v, why, whylen) < 0)
            return -1;
        *(long long *)field(data, k) = ll;
        return 0;
    case SB_CONF_SIZE:
        if (sb_conf_parse_size(v, &ll) < 0) {
            snprintf(why, whylen, "bad size%s for %s (use e.g. 512, 64k, "
                     "1M, 1G)", shown(k, v, sv, sizeof(sv)), k->name);
            return -1;
        }
        if (check_bounds(k, ll, v, why, whylen) < 0)
            return -1;
        *(long long *)field(data, k) = ll;
        return 0;
    case SB_CONF_BOOL:
        if (sb_conf_parse_bool(v, &b) < 0) {
            snprintf(why, whylen, "bad boolean%s for %s (use yes/no, "
                     "true/false, on/off, 1/0)",
                     shown(k, v, sv, sizeof(sv)), k->name);
            return -1;
        }
        *(int *)field(data, k) = b;
        return 0;
    case SB_CONF_ENUM: {
        struct sb_buf list;
        for (int i = 0; k->choices[i]; i++) {
            if (strcasecmp(v, k->choices[i]) == 0) {
                *(int *)field(data, k) = i;
                return 0;
            }
        }
        sb_buf_init(&list, 0);
        for (int i = 0; k->choices[i]; i++)
            sb_buf_printf(&list, "%s%s", i ? ", " : "", k->choices[i]);
        snprintf(why, whylen, "invalid choice%s for %s (one of: %s)",
                 shown(k, v, sv, sizeof(sv)), k->name, list.data);
        sb_buf_free(&list);
        return -1;
    }
    case SB_CONF_LIST: {
        char **l, ***p = field(data, k);
        if (split_list(k, v, &l, why, whylen) < 0)
            return -1;
        list_free(*p);
        *p = l;
        return 0;
    }
    }
    snprintf(why, whylen, "key %s has an unknown type", k->name);
    return -1;
}

static int value_empty(const struct sb_conf_key *k, const void *data)
{
    if (k->type == SB_CONF_STR)
        return *(char *const *)cfield(data, k) == NULL;
    if (k->type == SB_CONF_LIST)
        return list_len(*(char **const *)cfield(data, k)) == 0;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Tables and instances                                                 */

static size_t type_size(enum sb_conf_type t)
{
    switch (t) {
    case SB_CONF_STR:
        return sizeof(char *);
    case SB_CONF_INT:
    case SB_CONF_DURATION:
    case SB_CONF_SIZE:
        return sizeof(long long);
    case SB_CONF_BOOL:
    case SB_CONF_ENUM:
        return sizeof(int);
    case SB_CONF_LIST:
        return sizeof(char **);
    }
    return 0;
}

/* Programmer errors in the tables abort: they are not the operator's. */
static void check_tables(const struct sb_conf_section *const *sections)
{
    if (!sections)
        table_bug(NULL, NULL, "no section array");
    for (size_t i = 0; sections[i]; i++) {
        const struct sb_conf_section *s = sections[i];

        if (!s->name || !*s->name || !s->keys || s->size == 0)
            table_bug(s, NULL, "section needs a name, keys and a size");
        for (size_t j = 0; j < i; j++)
            if (strcmp(sections[j]->name, s->name) == 0)
                table_bug(s, NULL, "section given twice");
        for (const struct sb_conf_key *k = s->keys; k->name; k++) {
            size_t ts = type_size(k->type);
            if (ts == 0)
                table_bug(s, k, "unknown type");
            if (k->offset > s->size || s->size - k->offset < ts)
                table_bug(s, k, "offset outside the struct");
            if (k->type == SB_CONF_ENUM && (!k->choices || !k->choices[0]))
                table_bug(s, k, "enum without choices");
            if ((k->flags & SB_CONF_REQUIRED) && k->def)
                table_bug(s, k, "required key with a default");
            if (has_bounds(k) && k->min > k->max)
                table_bug(s, k, "min > max");
            for (const struct sb_conf_key *o = s->keys; o < k; o++)
                if (strcmp(o->name, k->name) == 0)
                    table_bug(s, k, "key given twice");
        }
    }
}

static void inst_free(struct conf_inst *in)
{
    if (!in)
        return;
    if (in->data) {
        for (const struct sb_conf_key *k = in->sec->keys; k->name; k++) {
            if (k->type == SB_CONF_STR) {
                char **p = field(in->data, k);
                if (*p && (k->flags & SB_CONF_SECRET))
                    explicit_bzero(*p, strlen(*p));
                free(*p);
            } else if (k->type == SB_CONF_LIST) {
                list_free(*(char ***)field(in->data, k));
            }
        }
    }
    free(in->data);
    free(in->key_lines);
    free(in->name);
    free(in);
}

/* A new instance with the table's defaults applied, appended to c. */
static struct conf_inst *inst_new(struct sb_config *c,
                                  const struct sb_conf_section *s,
                                  const char *name, int line)
{
    struct conf_inst *in = sb_calloc(1, sizeof(*in));
    char why[512];

    in->sec = s;
    in->name = name ? sb_strdup(name) : NULL;
    in->data = sb_calloc(1, s->size);
    in->key_lines = sb_calloc(key_count(s) + 1, sizeof(int));
    in->line = line;
    for (const struct sb_conf_key *k = s->keys; k->name; k++) {
        if (k->type == SB_CONF_LIST)
            *(char ***)field(in->data, k) = sb_calloc(1, sizeof(char *));
        if (k->def && conf_set(k, in->data, k->def, why, sizeof(why)) < 0)
            table_bug(s, k, "default '%s' does not convert: %s", k->def,
                      why);
    }
    c->insts = sb_realloc(c->insts, (c->ninsts + 1) * sizeof(*c->insts));
    c->insts[c->ninsts++] = in;
    return in;
}

static struct conf_inst *find_inst(const struct sb_config *c,
                                   const struct sb_conf_section *s,
                                   const char *name)
{
    for (size_t i = 0; i < c->ninsts; i++) {
        struct conf_inst *in = c->insts[i];
        if (in->sec != s)
            continue;
        if (!name || (in->name && strcmp(in->name, name) == 0))
            return in;
    }
    return NULL;
}

static const struct sb_conf_section *find_section(const struct sb_config *c,
                                                  const char *name)
{
    if (!c || !name)
        return NULL;
    for (size_t i = 0; c->sections[i]; i++)
        if (strcmp(c->sections[i]->name, name) == 0)
            return c->sections[i];
    return NULL;
}

/* "[redis]" or "[listener main]" into buf. */
static const char *inst_label(const struct conf_inst *in, char *buf,
                              size_t n)
{
    if (in->name)
        snprintf(buf, n, "[%s %s]", in->sec->name, in->name);
    else
        snprintf(buf, n, "[%s]", in->sec->name);
    return buf;
}

/* After the last key of an instance: required keys, then the check hook. */
static int inst_finish(struct conf_parser *p, struct conf_inst *in)
{
    char label[CONF_MAX_NAME * 3], why[512];
    size_t i = 0;

    inst_label(in, label, sizeof(label));
    for (const struct sb_conf_key *k = in->sec->keys; k->name; k++, i++) {
        if ((k->flags & SB_CONF_REQUIRED) && in->key_lines[i] == 0) {
            perr(p, in->line, "%s %s is required", label, k->name);
            return -1;
        }
    }
    if (in->sec->check) {
        why[0] = '\0';
        if (in->sec->check(in->data, why, sizeof(why)) != 0) {
            perr(p, in->line, "%s %s", label,
                 why[0] ? why : "is not valid");
            return -1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Parsing                                                              */

static int name_ok(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > CONF_MAX_NAME)
        return 0;
    for (; *s; s++) {
        char ch = *s;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              is_digit(ch) || ch == '_' || ch == '-' || ch == '.' ||
              ch == ':'))
            return 0;
    }
    return 1;
}

static int parse_header(struct conf_parser *p, int line, char *s)
{
    const struct sb_conf_section *sec;
    struct conf_inst *dup;
    char *close = strchr(s, ']'), *in, *name = NULL, *e;

    if (!close) {
        perr(p, line, "unterminated section header (missing ']')");
        return -1;
    }
    for (e = close + 1; is_ws(*e); e++)
        ;
    if (*e) {
        perr(p, line, "unexpected text after ']' in section header");
        return -1;
    }
    *close = '\0';
    in = trim(s + 1);
    for (e = in; *e && !is_ws(*e); e++)
        ;
    if (*e) {
        *e = '\0';
        name = trim(e + 1);
        if (*name == '"') {
            size_t n = strlen(name);
            if (n < 2 || name[n - 1] != '"') {
                perr(p, line, "unterminated quote in section header");
                return -1;
            }
            name[n - 1] = '\0';
            name++;
        }
    }
    if (!*in) {
        perr(p, line, "empty section header");
        return -1;
    }
    sec = find_section(p->c, in);
    if (!sec) {
        struct sb_buf known;
        sb_buf_init(&known, 0);
        for (size_t i = 0; p->c->sections[i]; i++)
            sb_buf_printf(&known, "%s%s", i ? ", " : "",
                          p->c->sections[i]->name);
        perr(p, line, "unknown section [%.*s] (known: %s)", CONF_SHOW, in,
             known.data ? known.data : "none");
        sb_buf_free(&known);
        return -1;
    }
    if (p->cur && inst_finish(p, p->cur) < 0)
        return -1;
    p->cur = NULL;
    if (!sec->named) {
        if (name) {
            perr(p, line, "section [%s] takes no name", sec->name);
            return -1;
        }
        dup = find_inst(p->c, sec, NULL);
        if (dup->line) {
            perr(p, line, "duplicate section [%s] (first at line %d)",
                 sec->name, dup->line);
            return -1;
        }
        dup->line = line;
        p->cur = dup;
        return 0;
    }
    if (!name || !*name) {
        perr(p, line, "section [%s] needs a name, e.g. [%s main]",
             sec->name, sec->name);
        return -1;
    }
    if (!name_ok(name)) {
        perr(p, line, "bad name for [%s] (1..%d of letters, digits, "
             "'_', '-', '.', ':')", sec->name, CONF_MAX_NAME);
        return -1;
    }
    dup = find_inst(p->c, sec, name);
    if (dup) {
        perr(p, line, "duplicate section [%s %s] (first at line %d)",
             sec->name, name, dup->line);
        return -1;
    }
    p->cur = inst_new(p->c, sec, name, line);
    return 0;
}

/* The directory "@PATH" is relative to. Returns new. */
static char *secret_dir(const char *file)
{
    const char *cred = getenv("CREDENTIALS_DIRECTORY");
    const char *slash = file ? strrchr(file, '/') : NULL;

    if (cred && *cred)
        return sb_strdup(cred);
    if (!slash)
        return sb_strdup(".");
    if (slash == file)
        return sb_strdup("/");
    return sb_strndup(file, (size_t)(slash - file));
}

/* Read the first line of a secret file, trimmed. Returns new (the caller
 * wipes and frees it), or NULL with a reason in why. */
static char *read_secret(const char *file, const char *ref, char *why,
                         size_t whylen)
{
    char *path, *buf = NULL, *line, *nl;
    size_t n = 0;
    struct stat st;
    int fd = -1;

    if (!*ref) {
        snprintf(why, whylen, "empty file name after '@'");
        return NULL;
    }
    if (ref[0] == '/') {
        path = sb_strdup(ref);
    } else {
        char *dir = secret_dir(file);
        path = sb_asprintf("%s/%s", dir, ref);
        free(dir);
    }
    /* Look before opening: opening a device or a FIFO can have effects. */
    if (stat(path, &st) < 0) {
        snprintf(why, whylen, "cannot read secret file '%.200s': %s", path,
                 strerror(errno));
        goto fail;
    }
    if (S_ISREG(st.st_mode))
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (S_ISREG(st.st_mode) && (fd < 0 || fstat(fd, &st) < 0)) {
        snprintf(why, whylen, "cannot read secret file '%.200s': %s", path,
                 strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(why, whylen, "secret file '%.200s' is not a regular file",
                 path);
        goto fail;
    }
    buf = sb_malloc(CONF_MAX_LINE + 2);
    while (n < CONF_MAX_LINE + 1) {
        ssize_t r = read(fd, buf + n, CONF_MAX_LINE + 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(why, whylen, "cannot read secret file '%.200s': %s",
                     path, strerror(errno));
            goto fail;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    nl = memchr(buf, '\n', n);
    if (nl)
        n = (size_t)(nl - buf);
    if (n > CONF_MAX_LINE) {
        snprintf(why, whylen, "secret file '%.200s': first line too long "
                 "(max %d bytes)", path, CONF_MAX_LINE);
        goto fail;
    }
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    buf[n] = '\0';
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)buf[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
            snprintf(why, whylen, "secret file '%.200s': control character "
                     "in first line", path);
            goto fail;
        }
    }
    line = trim(buf);
    if (!*line) {
        snprintf(why, whylen, "secret file '%.200s' is empty", path);
        goto fail;
    }
    memmove(buf, line, strlen(line) + 1);
    close(fd);
    free(path);
    return buf;
fail:
    if (fd >= 0)
        close(fd);
    if (buf) {
        explicit_bzero(buf, CONF_MAX_LINE + 2);
        free(buf);
    }
    free(path);
    return NULL;
}

static int parse_assign(struct conf_parser *p, int line, char *s)
{
    char *eq = strchr(s, '='), *key, *val, *secret = NULL, sk[CONF_SHOW + 8];
    char why[512], label[CONF_MAX_NAME * 3];
    const struct sb_conf_key *k;
    size_t i = 0, n;
    int rc;

    if (!eq) {
        perr(p, line, "line without '=' (expected key = value)");
        return -1;
    }
    *eq = '\0';
    key = trim(s);
    val = trim(eq + 1);
    if (!*key) {
        perr(p, line, "missing key before '='");
        return -1;
    }
    if (!p->cur) {
        perr(p, line, "key '%.*s' outside any section", CONF_SHOW, key);
        return -1;
    }
    inst_label(p->cur, label, sizeof(label));
    for (k = p->cur->sec->keys; k->name; k++, i++)
        if (strcmp(k->name, key) == 0)
            break;
    if (!k->name) {
        snprintf(sk, sizeof(sk), "%.*s", CONF_SHOW, key);
        perr(p, line, "unknown key '%s' in section %s", sk, label);
        return -1;
    }
    if (p->cur->key_lines[i]) {
        perr(p, line, "duplicate key '%s' in %s (first at line %d)", k->name,
             label, p->cur->key_lines[i]);
        return -1;
    }
    n = strlen(val);
    if (n >= 2 && val[0] == '"' && val[n - 1] == '"') {
        val[n - 1] = '\0';
        val++;
    }
    if ((k->flags & SB_CONF_SECRET) && val[0] == '@') {
        secret = read_secret(p->file, val + 1, why, sizeof(why));
        if (!secret) {
            perr(p, line, "%s: %s", k->name, why);
            return -1;
        }
        val = secret;
    }
    rc = conf_set(k, p->cur->data, val, why, sizeof(why));
    if (secret) {
        explicit_bzero(secret, strlen(secret));
        free(secret);
    }
    if (rc < 0) {
        perr(p, line, "%s", why);
        return -1;
    }
    if ((k->flags & SB_CONF_REQUIRED) && value_empty(k, p->cur->data)) {
        perr(p, line, "%s may not be empty (required)", k->name);
        return -1;
    }
    p->cur->key_lines[i] = line;
    return 0;
}

/* One line without its EOL, NUL-terminated, at most CONF_MAX_LINE bytes. */
static int parse_line(struct conf_parser *p, int line, char *s)
{
    while (is_ws(*s))
        s++;
    if (!*s || *s == '#' || *s == ';')
        return 0;
    if (*s == '[')
        return parse_header(p, line, s);
    return parse_assign(p, line, s);
}

static int parse_text(struct conf_parser *p, const char *text, size_t len)
{
    char buf[CONF_MAX_LINE + 1];
    size_t pos = 0;
    int line = 0;

    if (len > CONF_MAX_FILE) {
        perr(p, 0, "file too large (max %d bytes)", CONF_MAX_FILE);
        return -1;
    }
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0)
        pos = 3;
    while (pos < len) {
        const char *start = text + pos;
        const char *nl = memchr(start, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - start) : len - pos;

        line++;
        pos += n + (nl ? 1 : 0);
        if (n > 0 && start[n - 1] == '\r')
            n--;
        if (n > CONF_MAX_LINE) {
            perr(p, line, "line too long (max %d bytes)", CONF_MAX_LINE);
            return -1;
        }
        if (memchr(start, '\0', n)) {
            perr(p, line, "NUL byte in line");
            return -1;
        }
        for (size_t i = 0; i < n; i++) {
            unsigned char ch = (unsigned char)start[i];
            if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
                perr(p, line, "control character 0x%02x in line", ch);
                return -1;
            }
        }
        memcpy(buf, start, n);
        buf[n] = '\0';
        if (parse_line(p, line, buf) < 0)
            return -1;
    }
    if (p->cur && inst_finish(p, p->cur) < 0)
        return -1;
    for (size_t i = 0; i < p->c->ninsts; i++) {
        struct conf_inst *in = p->c->insts[i];
        if (!in->name && in->line == 0 && inst_finish(p, in) < 0)
            return -1;
    }
    return 0;
}

struct sb_config *sb_config_parse(const char *text, size_t len,
                                  const char *filename,
                                  const struct sb_conf_section *const *sections,
                                  char *err, size_t errlen)
{
    struct sb_config *c;
    struct conf_parser p;
    size_t ns = 0;

    check_tables(sections);
    while (sections[ns])
        ns++;
    c = sb_calloc(1, sizeof(*c));
    c->path = sb_strdup(filename ? filename : "<config>");
    c->sections = sb_calloc(ns + 1, sizeof(*c->sections));
    memcpy(c->sections, sections, ns * sizeof(*c->sections));
    for (size_t i = 0; i < ns; i++)
        if (!sections[i]->named)
            inst_new(c, sections[i], NULL, 0);

    memset(&p, 0, sizeof(p));
    p.c = c;
    p.file = c->path;
    p.err = err;
    p.errlen = errlen;
    if (err && errlen)
        err[0] = '\0';
    if (parse_text(&p, text ? text : "", text ? len : 0) < 0) {
        sb_config_free(c);
        return NULL;
    }
    return c;
}

struct sb_config *sb_config_load(const char *path,
                                 const struct sb_conf_section *const *sections,
                                 char *err, size_t errlen)
{
    struct sb_config *c = NULL;
    char *buf = NULL;
    size_t n = 0;
    int fd;

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        if (err && errlen)
            snprintf(err, errlen, "%s: cannot open: %s", path,
                     strerror(errno));
        return NULL;
    }
    buf = sb_malloc(CONF_MAX_FILE + 1);
    while (n < CONF_MAX_FILE + 1) {
        ssize_t r = read(fd, buf + n, CONF_MAX_FILE + 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            if (err && errlen)
                snprintf(err, errlen, "%s: cannot read: %s", path,
                         strerror(errno));
            goto out;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    c = sb_config_parse(buf, n, path, sections, err, errlen);
out:
    close(fd);
    explicit_bzero(buf, n);
    free(buf);
    return c;
}

void sb_config_free(struct sb_config *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->ninsts; i++)
        inst_free(c->insts[i]);
    free(c->insts);
    free(c->sections);
    free(c->path);
    free(c);
}

/* ------------------------------------------------------------------ */
/* Access                                                               */

const void *sb_config_get(const struct sb_config *c, const char *section)
{
    const struct sb_conf_section *s = find_section(c, section);
    struct conf_inst *in;

    if (!s || s->named)
        return NULL;
    in = find_inst(c, s, NULL);
    return in ? in->data : NULL;
}

int sb_config_present(const struct sb_config *c, const char *section)
{
    const struct sb_conf_section *s = find_section(c, section);
    struct conf_inst *in;

    if (!s)
        return 0;
    if (s->named)
        return sb_config_count(c, section) > 0;
    in = find_inst(c, s, NULL);
    return in && in->line > 0;
}

size_t sb_config_count(const struct sb_config *c, const char *section)
{
    const struct sb_conf_section *s = find_section(c, section);
    size_t n = 0;

    if (!s)
        return 0;
    for (size_t i = 0; i < c->ninsts; i++)
        if (c->insts[i]->sec == s)
            n++;
    return n;
}

const void *sb_config_nth(const struct sb_config *c, const char *section,
                          size_t i, const char **name)
{
    const struct sb_conf_section *s = find_section(c, section);

    if (!s)
        return NULL;
    for (size_t j = 0; j < c->ninsts; j++) {
        if (c->insts[j]->sec != s)
            continue;
        if (i-- == 0) {
            if (name)
                *name = c->insts[j]->name;
            return c->insts[j]->data;
        }
    }
    return NULL;
}

const char *sb_config_path(const struct sb_config *c)
{
    return c ? c->path : NULL;
}

/* ------------------------------------------------------------------ */
/* Dump and example                                                     */

/* The value as text sb_config_parse reads back to the same value. */
static void fmt_value(const struct sb_conf_key *k, const void *data,
                      struct sb_buf *b)
{
    char num[32];

    switch (k->type) {
    case SB_CONF_STR: {
        const char *s = *(char *const *)cfield(data, k);
        if (s)
            sb_buf_appends(b, s);
        break;
    }
    case SB_CONF_INT:
    case SB_CONF_DURATION:
    case SB_CONF_SIZE:
        fmt_number(k->type, *(const long long *)cfield(data, k), num,
                   sizeof(num));
        sb_buf_appends(b, num);
        break;
    case SB_CONF_BOOL:
        sb_buf_appends(b, *(const int *)cfield(data, k) ? "yes" : "no");
        break;
    case SB_CONF_ENUM: {
        int v = *(const int *)cfield(data, k);
        for (int i = 0; k->choices[i]; i++)
            if (i == v)
                sb_buf_appends(b, k->choices[i]);
        break;
    }
    case SB_CONF_LIST: {
        char *const *l = *(char **const *)cfield(data, k);
        for (size_t i = 0; l && l[i]; i++)
            sb_buf_printf(b, "%s%s", i ? ", " : "", l[i]);
        break;
    }
    }
}

/* Quote a value that trimming or quote stripping would change. */
static void put_value(FILE *out, const char *v)
{
    size_t n = strlen(v);

    if (n && (is_ws(v[0]) || is_ws(v[n - 1]) || v[0] == '"'))
        fprintf(out, "\"%s\"", v);
    else
        fputs(v, out);
}

void sb_config_dump(const struct sb_config *c, FILE *out)
{
    struct sb_buf b;
    int first = 1;

    if (!c)
        return;
    sb_buf_init(&b, 0);
    for (size_t s = 0; c->sections[s]; s++) {
        for (size_t i = 0; i < c->ninsts; i++) {
            const struct conf_inst *in = c->insts[i];
            char label[CONF_MAX_NAME * 3];

            if (in->sec != c->sections[s])
                continue;
            fprintf(out, "%s%s\n", first ? "" : "\n",
                    inst_label(in, label, sizeof(label)));
            first = 0;
            for (const struct sb_conf_key *k = in->sec->keys; k->name; k++) {
                sb_buf_reset(&b);
                fmt_value(k, in->data, &b);
                if (!b.data || !*b.data)
                    fprintf(out, "%s =\n", k->name);
                else if (k->flags & SB_CONF_SECRET)
                    fprintf(out, "%s = %s\n", k->name, CONF_MASK);
                else {
                    fprintf(out, "%s = ", k->name);
                    put_value(out, b.data);
                    fputc('\n', out);
                }
            }
        }
    }
    sb_buf_free(&b);
}

/* Write text as "# " comment lines of at most 78 columns. */
static void put_comment(FILE *out, const char *text)
{
    const char *s = text;
    size_t col = 0;

    if (!text || !*text)
        return;
    while (*s) {
        size_t w;

        while (*s == ' ' || *s == '\t')
            s++;
        if (*s == '\n') {
            fputc('\n', out);
            col = 0;
            s++;
            continue;
        }
        if (!*s)
            break;
        w = strcspn(s, " \t\n");
        if (col > 0 && col + 1 + w > 78) {
            fputc('\n', out);
            col = 0;
        }
        if (col == 0) {
            fputc('#', out);
            col = 1;
        }
        fprintf(out, " %.*s", (int)w, s);
        col += 1 + w;
        s += w;
    }
    if (col > 0)
        fputc('\n', out);
}

static void key_details(const struct sb_conf_key *k, struct sb_buf *b)
{
    static const char *const names[] = {
        [SB_CONF_STR] = "string",     [SB_CONF_INT] = "integer",
        [SB_CONF_BOOL] = "yes/no",    [SB_CONF_DURATION] = "duration",
        [SB_CONF_SIZE] = "size",      [SB_CONF_ENUM] = "one of",
        [SB_CONF_LIST] = "comma-separated list",
    };
    char bounds[96];

    sb_buf_appends(b, names[k->type]);
    if (k->type == SB_CONF_ENUM) {
        for (int i = 0; k->choices[i]; i++)
            sb_buf_printf(b, "%s%s", i ? ", " : ": ", k->choices[i]);
    } else if (k->type == SB_CONF_STR || k->type == SB_CONF_LIST) {
        if (k->max > 0)
            sb_buf_printf(b, ", at most %lld bytes%s", k->max,
                          k->type == SB_CONF_LIST ? " each" : "");
    } else if (k->type != SB_CONF_BOOL && has_bounds(k)) {
        fmt_bounds(k, bounds, sizeof(bounds));
        sb_buf_printf(b, ", %s", bounds);
    }
    if (k->flags & SB_CONF_REQUIRED)
        sb_buf_appends(b, ", required");
    if (k->flags & SB_CONF_SECRET)
        sb_buf_appends(b, ", secret: \"@FILE\" reads it from FILE");
    if (k->flags & SB_CONF_RELOAD)
        sb_buf_appends(b, ", reloadable");
}

void sb_config_write_example(const struct sb_conf_section *const *sections,
                             FILE *out)
{
    struct sb_buf b;

    check_tables(sections);
    sb_buf_init(&b, 0);
    for (size_t i = 0; sections[i]; i++) {
        const struct sb_conf_section *s = sections[i];
        /* A named section is an example: all of it commented out. */
        const char *pre = s->named ? "# " : "";

        if (i > 0)
            fputc('\n', out);
        put_comment(out, s->doc);
        if (s->named) {
            fprintf(out, "# Any number of [%s NAME] sections, for example:\n",
                    s->name);
            fprintf(out, "# [%s main]\n", s->name);
        } else {
            fprintf(out, "[%s]\n", s->name);
        }
        for (const struct sb_conf_key *k = s->keys; k->name; k++) {
            char *line;

            sb_buf_reset(&b);
            key_details(k, &b);
            line = sb_asprintf("%s%s(%s)", k->doc ? k->doc : "",
                               k->doc && *k->doc ? " " : "", b.data);
            put_comment(out, line);
            free(line);
            if (k->flags & SB_CONF_REQUIRED) {
                fprintf(out, "%s%s =\n", pre, k->name);
            } else if (k->def) {
                fprintf(out, "# %s = ", k->name);
                put_value(out, k->def);
                fputc('\n', out);
            } else {
                fprintf(out, "# %s =\n", k->name);
            }
        }
    }
    sb_buf_free(&b);
}

/* ------------------------------------------------------------------ */
/* Reload                                                               */

static int key_equal(const struct sb_conf_key *k, const void *a,
                     const void *b)
{
    switch (k->type) {
    case SB_CONF_STR: {
        const char *x = *(char *const *)cfield(a, k);
        const char *y = *(char *const *)cfield(b, k);
        return (!x && !y) || (x && y && strcmp(x, y) == 0);
    }
    case SB_CONF_INT:
    case SB_CONF_DURATION:
    case SB_CONF_SIZE:
        return *(const long long *)cfield(a, k) ==
               *(const long long *)cfield(b, k);
    case SB_CONF_BOOL:
    case SB_CONF_ENUM:
        return *(const int *)cfield(a, k) == *(const int *)cfield(b, k);
    case SB_CONF_LIST: {
        char *const *x = *(char **const *)cfield(a, k);
        char *const *y = *(char **const *)cfield(b, k);
        size_t n = list_len(x);
        if (n != list_len(y))
            return 0;
        for (size_t i = 0; i < n; i++)
            if (strcmp(x[i], y[i]) != 0)
                return 0;
        return 1;
    }
    }
    return 0;
}

/* The first non-RELOAD key of a section, or NULL. */
static const struct sb_conf_key *fixed_key(const struct sb_conf_section *s)
{
    for (const struct sb_conf_key *k = s->keys; k->name; k++)
        if (!(k->flags & SB_CONF_RELOAD))
            return k;
    return NULL;
}

/* An instance present in one config only. */
static int inst_changed(const struct conf_inst *in, const char *what,
                        char *err, size_t errlen)
{
    const struct sb_conf_key *k = fixed_key(in->sec);
    char label[CONF_MAX_NAME * 3];

    if (!k)
        return 0;
    if (err && errlen)
        snprintf(err, errlen, "%s.%s needs a restart (%s %s)", in->sec->name,
                 k->name, inst_label(in, label, sizeof(label)), what);
    return -1;
}

int sb_config_reload_check(const struct sb_config *old,
                           const struct sb_config *new_conf, char *err,
                           size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    for (size_t s = 0; old->sections[s] || new_conf->sections[s]; s++) {
        if (old->sections[s] != new_conf->sections[s]) {
            if (err && errlen)
                snprintf(err, errlen, "configs made from different tables");
            return -1;
        }
    }
    for (size_t i = 0; i < old->ninsts; i++) {
        const struct conf_inst *a = old->insts[i];
        const struct conf_inst *b = find_inst(new_conf, a->sec, a->name);
        char label[CONF_MAX_NAME * 3];

        if (!b) {
            if (inst_changed(a, "removed", err, errlen) < 0)
                return -1;
            continue;
        }
        for (const struct sb_conf_key *k = a->sec->keys; k->name; k++) {
            if ((k->flags & SB_CONF_RELOAD) || key_equal(k, a->data, b->data))
                continue;
            if (err && errlen) {
                if (a->name)
                    snprintf(err, errlen, "%s.%s needs a restart (%s)",
                             a->sec->name, k->name,
                             inst_label(a, label, sizeof(label)));
                else
                    snprintf(err, errlen, "%s.%s needs a restart",
                             a->sec->name, k->name);
            }
            return -1;
        }
    }
    for (size_t i = 0; i < new_conf->ninsts; i++) {
        const struct conf_inst *b = new_conf->insts[i];
        if (!find_inst(old, b->sec, b->name) &&
            inst_changed(b, "added", err, errlen) < 0)
            return -1;
    }
    return 0;
}
