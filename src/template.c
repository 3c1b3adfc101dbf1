/* template.c - notification templates: parse, load a directory, render.
 *
 * A template text is compiled once into a list of nodes: literal text and
 * substitutions ({{ path | formatter:arg | ... }}). Rendering walks the
 * nodes against a JSON context; a substitution looks its path up, passes
 * the value through its formatters left to right and appends the result,
 * HTML-escaped in HTML templates unless the chain says `raw`.
 *
 * Absence is a value of its own: a path that is missing or null stays
 * "absent" through every formatter (money also turns absent when its
 * currency path is), `default` replaces absence (and "") with its text,
 * and absence left at the end of a chain is a render error naming the
 * path. So a chain with `default` never fails for lack of data, which is
 * exactly what sb_tpl_check counts as optional. A value of the wrong type
 * for a formatter is always an error.
 *
 * Directory layout, the e-mail "Subject:" header and the language itself
 * are documented for operators in docs/templates.md; the grammar is:
 *
 *   tag     = "{{" ws path ws *( "|" ws name ws [ ":" ws arg ws ] ) "}}"
 *   path    = first *( "." seg )   first = [A-Za-z_][A-Za-z0-9_-]*
 *                                  seg = [A-Za-z0-9_-]+ (digits: index)
 *   arg     = path / '"' *( char / '\"' / '\\' ) '"'
 *   "{{{{"  = a literal "{{"; a tag ends on its own line.
 *
 * Money is formatted from decimal digits (a decimal string, or the
 * shortest round-trip form of a JSON number), rounded half away from zero
 * to the currency's minor digits, so 0.1 + 0.2 shows as 0.30.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "template.h"
#include "tz.h"
#include "util.h"

#define TPL_MAX_FMTS 8
#define TPL_MAX_SEGS 16
#define TPL_MAX_PATH 256
#define TPL_MAX_DEFAULT 1024

enum tpl_fmt_kind {
    F_DATE,
    F_TIME,
    F_DATETIME,
    F_MONEY,
    F_UPPER,
    F_LOWER,
    F_DEFAULT,
    F_RAW,
};

enum { ARG_NONE, ARG_TEXT, ARG_PATH };

static const struct {
    const char *name;
    enum tpl_fmt_kind kind;
    int arg;
} FORMATTERS[] = {
    {"date", F_DATE, ARG_NONE},
    {"time", F_TIME, ARG_NONE},
    {"datetime", F_DATETIME, ARG_NONE},
    {"money", F_MONEY, ARG_PATH},
    {"upper", F_UPPER, ARG_NONE},
    {"lower", F_LOWER, ARG_NONE},
    {"default", F_DEFAULT, ARG_TEXT},
    {"raw", F_RAW, ARG_NONE},
};

static const char *const CHANNELS[] = {"email", "sms", "chat", "webhook"};

struct tpl_path {
    char *src;      /* dotted, as written */
    char **seg;
    size_t nseg;
};

struct tpl_fmt {
    enum tpl_fmt_kind kind;
    char *text;            /* default */
    struct tpl_path path;  /* money: the currency */
};

struct tpl_node {
    int line;
    char *text;            /* literal (NUL-terminated); NULL for a tag */
    size_t len;
    struct tpl_path path;
    struct tpl_fmt *fmts;
    size_t nfmt;
    int raw;
    int has_default;
};

struct tpl_body {
    struct tpl_node *nodes;
    size_t n;
    int html;
};

struct sb_tpl {
    char *channel;   /* NULL for sb_tpl_parse results */
    char *locale;
    struct tpl_body *subject, *text, *html;
};

struct tpl_event {
    char *name;
    struct sb_tpl **tpls;
    size_t n;
};

struct sb_tpl_set {
    struct tpl_event *events;
    size_t nevents;
    size_t count;
};

/* A parse error: where and why. */
struct tpl_perr {
    int line;
    char why[160];
};

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (!err || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static int perr(struct tpl_perr *e, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int perr(struct tpl_perr *e, int line, const char *fmt, ...)
{
    va_list ap;

    e->line = line;
    va_start(ap, fmt);
    vsnprintf(e->why, sizeof(e->why), fmt, ap);
    va_end(ap);
    return -1;
}

/* ---- freeing ------------------------------------------------------------- */

static void path_free(struct tpl_path *p)
{
    for (size_t i = 0; i < p->nseg; i++)
        free(p->seg[i]);
    free(p->seg);
    free(p->src);
    memset(p, 0, sizeof(*p));
}

static void node_free(struct tpl_node *n)
{
    free(n->text);
    path_free(&n->path);
    for (size_t k = 0; k < n->nfmt; k++) {
        free(n->fmts[k].text);
        path_free(&n->fmts[k].path);
    }
    free(n->fmts);
    memset(n, 0, sizeof(*n));
}

static void body_free(struct tpl_body *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->n; i++)
        node_free(&b->nodes[i]);
    free(b->nodes);
    free(b);
}

void sb_tpl_destroy(struct sb_tpl *t)
{
    if (!t)
        return;
    body_free(t->subject);
    body_free(t->text);
    body_free(t->html);
    free(t->channel);
    free(t->locale);
    free(t);
}

void sb_tpl_free(struct sb_tpl_set *set)
{
    if (!set)
        return;
    for (size_t i = 0; i < set->nevents; i++) {
        for (size_t k = 0; k < set->events[i].n; k++)
            sb_tpl_destroy(set->events[i].tpls[k]);
        free(set->events[i].tpls);
        free(set->events[i].name);
    }
    free(set->events);
    free(set);
}

void sb_rendered_free(struct sb_rendered *r)
{
    if (!r)
        return;
    free(r->subject);
    free(r->text);
    free(r->html);
    r->subject = r->text = r->html = NULL;
}

/* ---- parsing ------------------------------------------------------------- */

static int is_seg_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '_' || c == '-';
}

static void describe(char c, char *out, size_t n)
{
    if (c > 0x20 && c < 0x7f)
        snprintf(out, n, "'%c'", c);
    else if (c == ' ' || c == '\t')
        snprintf(out, n, "a space");
    else
        snprintf(out, n, "a non-ASCII character");
}

/* Parse a path at s[*i] (up to end). */
static int parse_path(const char *s, size_t end, size_t *i, int line,
                      struct tpl_path *p, struct tpl_perr *e)
{
    size_t start = *i, k = *i;
    char what[32];

    memset(p, 0, sizeof(*p));
    if (k >= end || !((s[k] >= 'a' && s[k] <= 'z') ||
                      (s[k] >= 'A' && s[k] <= 'Z') || s[k] == '_')) {
        if (k >= end)
            return perr(e, line, "a variable name is missing");
        describe(s[k], what, sizeof(what));
        return perr(e, line, "a variable name cannot start with %s", what);
    }
    for (;;) {
        size_t b = k;

        while (k < end && is_seg_char(s[k]))
            k++;
        if (k == b)
            return perr(e, line, "empty part in a variable name");
        if (p->nseg == TPL_MAX_SEGS)
            return perr(e, line, "variable name has more than %d parts",
                        TPL_MAX_SEGS);
        p->seg = sb_realloc(p->seg, (p->nseg + 1) * sizeof(*p->seg));
        p->seg[p->nseg++] = sb_strndup(s + b, k - b);
        if (k < end && s[k] == '.') {
            k++;
            continue;
        }
        break;
    }
    if (k - start > TPL_MAX_PATH)
        return perr(e, line, "variable name longer than %d bytes",
                    TPL_MAX_PATH);
    p->src = sb_strndup(s + start, k - start);
    *i = k;
    return 0;
}

static void skip_ws(const char *s, size_t end, size_t *i)
{
    while (*i < end && (s[*i] == ' ' || s[*i] == '\t'))
        (*i)++;
}

/* A quoted default text at s[*i] == '"'. */
static int parse_text(const char *s, size_t end, size_t *i, int line,
                      char **out, struct tpl_perr *e)
{
    struct sb_buf b;
    size_t k = *i + 1;

    sb_buf_init(&b, TPL_MAX_DEFAULT);
    for (;;) {
        if (k >= end || s[k] == '\n') {
            sb_buf_free(&b);
            return perr(e, line, "unterminated \"text\"");
        }
        if (s[k] == '"')
            break;
        if (s[k] == '\\' && k + 1 < end && (s[k + 1] == '"' ||
                                            s[k + 1] == '\\'))
            k++;
        if (sb_buf_append(&b, s + k, 1) < 0) {
            sb_buf_free(&b);
            return perr(e, line, "default text longer than %d bytes",
                        TPL_MAX_DEFAULT);
        }
        k++;
    }
    *out = b.data ? sb_buf_steal(&b, NULL) : sb_strdup("");
    *i = k + 1;
    return 0;
}

static int parse_fmt(const char *s, size_t end, size_t *i, int line,
                     struct tpl_node *n, struct tpl_perr *e)
{
    size_t b = *i, f;
    struct tpl_fmt *fm;
    char name[16];

    while (*i < end && s[*i] >= 'a' && s[*i] <= 'z')
        (*i)++;
    if (*i == b) {
        char what[32];

        if (*i >= end || s[*i] == '}')
            return perr(e, line, "a formatter name is missing after '|'");
        describe(s[*i], what, sizeof(what));
        return perr(e, line, "unexpected %s after '|'", what);
    }
    if (*i - b >= sizeof(name))
        return perr(e, line, "unknown formatter '%.*s'", 15, s + b);
    memcpy(name, s + b, *i - b);
    name[*i - b] = '\0';
    for (f = 0; f < SB_ARRAY_LEN(FORMATTERS); f++)
        if (strcmp(FORMATTERS[f].name, name) == 0)
            break;
    if (f == SB_ARRAY_LEN(FORMATTERS))
        return perr(e, line, "unknown formatter '%s'", name);
    if (n->nfmt == TPL_MAX_FMTS)
        return perr(e, line, "more than %d formatters", TPL_MAX_FMTS);
    n->fmts = sb_realloc(n->fmts, (n->nfmt + 1) * sizeof(*n->fmts));
    fm = &n->fmts[n->nfmt++];
    memset(fm, 0, sizeof(*fm));
    fm->kind = FORMATTERS[f].kind;
    skip_ws(s, end, i);
    if (*i < end && s[*i] == ':') {
        (*i)++;
        skip_ws(s, end, i);
        switch (FORMATTERS[f].arg) {
        case ARG_NONE:
            return perr(e, line, "formatter '%s' takes no argument", name);
        case ARG_TEXT:
            if (*i >= end || s[*i] != '"')
                return perr(e, line, "'%s' needs a quoted text: "
                            "%s:\"...\"", name, name);
            if (parse_text(s, end, i, line, &fm->text, e) < 0)
                return -1;
            break;
        case ARG_PATH:
            if (parse_path(s, end, i, line, &fm->path, e) < 0)
                return -1;
            break;
        }
    } else if (FORMATTERS[f].arg == ARG_TEXT) {
        return perr(e, line, "'%s' needs a quoted text: %s:\"...\"", name,
                    name);
    } else if (FORMATTERS[f].arg == ARG_PATH) {
        return perr(e, line, "'%s' needs the currency's variable: "
                    "money:data.currency", name);
    }
    if (fm->kind == F_RAW)
        n->raw = 1;
    if (fm->kind == F_DEFAULT)
        n->has_default = 1;
    return 0;
}

/* A tag whose "{{" is at s[at]; *i gets the index after its "}}". */
static int parse_tag(const char *s, size_t len, size_t at, size_t *i,
                     int line, struct tpl_node *n, struct tpl_perr *e)
{
    const char *nl = memchr(s + at, '\n', len - at);
    size_t end = nl ? (size_t)(nl - s) : len, k = at + 2;
    char what[32];

    memset(n, 0, sizeof(*n));
    n->line = line;
    /* an unclosed tag is reported as such rather than as what follows */
    {
        int closed = 0, quoted = 0;

        for (size_t q = k; q < end; q++) {
            if (quoted) {
                if (s[q] == '\\' && q + 1 < end)
                    q++;
                else if (s[q] == '"')
                    quoted = 0;
            } else if (s[q] == '"') {
                quoted = 1;
            } else if (s[q] == '}' && q + 1 < end && s[q + 1] == '}') {
                closed = 1;
                break;
            }
        }
        if (!closed)
            return perr(e, line, "unclosed {{ (a tag must end with }} on "
                        "the same line; write {{{{ for a literal {{)");
    }
    skip_ws(s, end, &k);
    if (k + 1 < end && s[k] == '}' && s[k + 1] == '}')
        return perr(e, line, "empty {{ }}");
    if (parse_path(s, end, &k, line, &n->path, e) < 0)
        return -1;
    skip_ws(s, end, &k);
    while (k < end && s[k] == '|') {
        k++;
        skip_ws(s, end, &k);
        if (parse_fmt(s, end, &k, line, n, e) < 0)
            return -1;
        skip_ws(s, end, &k);
    }
    if (k + 1 < end && s[k] == '}' && s[k + 1] == '}') {
        *i = k + 2;
        return 0;
    }
    describe(k < end ? s[k] : ' ', what, sizeof(what));
    return perr(e, line, "unexpected %s in {{ }} (expected '|' or }})",
                what);
}

static void push_node(struct tpl_body *b, const struct tpl_node *n)
{
    b->nodes = sb_realloc(b->nodes, (b->n + 1) * sizeof(*b->nodes));
    b->nodes[b->n++] = *n;
}

static void push_text(struct tpl_body *b, struct sb_buf *lit, int line)
{
    struct tpl_node n;

    if (lit->len == 0)
        return;
    memset(&n, 0, sizeof(n));
    n.line = line;
    n.text = sb_buf_steal(lit, &n.len);
    push_node(b, &n);
}

/* Compile s[0..len) (one trailing newline dropped), its first line being
 * number line0. */
static struct tpl_body *body_parse(const char *s, size_t len, int html,
                                   int line0, struct tpl_perr *e)
{
    struct tpl_body *b = sb_calloc(1, sizeof(*b));
    struct sb_buf lit;
    int line = line0, lit_line = line0;
    size_t i = 0;

    b->html = html;
    /* bytes first: no NUL, valid UTF-8 */
    for (size_t k = 0; k < len;) {
        size_t n = sb_utf8_seq(s + k, len - k, NULL);

        if (s[k] == '\0') {
            perr(e, line, "NUL byte");
            goto fail;
        }
        if (n == 0) {
            perr(e, line, "invalid UTF-8");
            goto fail;
        }
        if (s[k] == '\n')
            line++;
        k += n;
    }
    if (len > 0 && s[len - 1] == '\n') {
        len--;
        if (len > 0 && s[len - 1] == '\r')
            len--;
    }
    line = line0;
    sb_buf_init(&lit, 0);
    while (i < len) {
        if (s[i] == '{' && i + 1 < len && s[i + 1] == '{') {
            struct tpl_node n;

            if (i + 3 < len && s[i + 2] == '{' && s[i + 3] == '{') {
                sb_buf_append(&lit, "{{", 2);
                i += 4;
                continue;
            }
            push_text(b, &lit, lit_line);
            if (parse_tag(s, len, i, &i, line, &n, e) < 0) {
                node_free(&n); /* what was parsed so far */
                sb_buf_free(&lit);
                goto fail;
            }
            push_node(b, &n);
            lit_line = line;
            continue;
        }
        if (lit.len == 0)
            lit_line = line;
        if (s[i] == '\n')
            line++;
        sb_buf_append(&lit, s + i, 1);
        i++;
    }
    push_text(b, &lit, lit_line);
    sb_buf_free(&lit);
    return b;
fail:
    body_free(b);
    return NULL;
}

struct sb_tpl *sb_tpl_parse(const char *text, size_t len, int html,
                            char *err, size_t errlen)
{
    struct tpl_perr e = {0, ""};
    struct tpl_body *b;
    struct sb_tpl *t;

    if (!text && len)
        return NULL;
    b = body_parse(text ? text : "", len, html, 1, &e);
    if (!b) {
        seterr(err, errlen, "line %d: %s", e.line, e.why);
        return NULL;
    }
    t = sb_calloc(1, sizeof(*t));
    t->text = b;
    return t;
}

/* ---- values -------------------------------------------------------------- */

/* The value at path in ctx, or NULL when absent or null (borrowed). */
static json_t *lookup(json_t *ctx, const struct tpl_path *p)
{
    json_t *j = ctx;

    for (size_t i = 0; i < p->nseg && j; i++) {
        const char *seg = p->seg[i];

        if (json_is_object(j)) {
            j = json_object_get(j, seg);
        } else if (json_is_array(j)) {
            size_t n = strlen(seg), idx = 0;

            if (n == 0 || n > 9 || strspn(seg, "0123456789") != n)
                return NULL;
            for (size_t k = 0; k < n; k++)
                idx = idx * 10 + (size_t)(seg[k] - '0');
            j = json_array_get(j, idx);
        } else {
            return NULL;
        }
    }
    return json_is_null(j) ? NULL : j;
}

enum { V_ABSENT, V_JSON, V_STR };

struct tpl_val {
    int state;
    json_t *j;            /* V_JSON, borrowed */
    char *s;              /* V_STR, owned */
    const char *missing;  /* V_ABSENT: the path that was not there */
};

static void val_set_str(struct tpl_val *v, char *s)
{
    free(v->s);
    v->s = s;
    v->j = NULL;
    v->state = V_STR;
}

/* Shortest text that reads back as d; integral values without a point. */
static void fmt_real(double d, char *out, size_t n)
{
    if (d == floor(d) && fabs(d) < 1e15) {
        snprintf(out, n, "%.0f", d == 0 ? 0.0 : d);
        return;
    }
    for (int p = 1; p <= 17; p++) {
        snprintf(out, n, "%.*g", p, d);
        if (strtod(out, NULL) == d)
            return;
    }
}

/* The value as text: borrowed (*out) or written into tmp. -1 for objects
 * and arrays. */
static int val_text(const struct tpl_val *v, char *tmp, size_t n,
                    const char **out)
{
    if (v->state == V_STR) {
        *out = v->s;
        return 0;
    }
    switch (json_typeof(v->j)) {
    case JSON_STRING:
        *out = json_string_value(v->j);
        return 0;
    case JSON_INTEGER:
        snprintf(tmp, n, "%" JSON_INTEGER_FORMAT, json_integer_value(v->j));
        break;
    case JSON_REAL:
        fmt_real(json_real_value(v->j), tmp, n);
        break;
    case JSON_TRUE:
        snprintf(tmp, n, "true");
        break;
    case JSON_FALSE:
        snprintf(tmp, n, "false");
        break;
    default:
        return -1;
    }
    *out = tmp;
    return 0;
}

static const char *type_name(const struct tpl_val *v)
{
    if (v->state == V_STR)
        return "a string";
    switch (json_typeof(v->j)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER:
    case JSON_REAL: return "a number";
    default: return "a boolean";
    }
}

/* ---- UTF-8 --------------------------------------------------------------- */

static void put_cp(struct sb_buf *b, uint32_t cp)
{
    unsigned char u[4];
    size_t n;

    if (cp < 0x80) {
        u[0] = (unsigned char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (unsigned char)(0xc0 | cp >> 6);
        u[1] = (unsigned char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (unsigned char)(0xe0 | cp >> 12);
        u[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        u[2] = (unsigned char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        u[0] = (unsigned char)(0xf0 | cp >> 18);
        u[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
        u[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        u[3] = (unsigned char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    sb_buf_append(b, u, n);
}

/* Upper-case mapping of the scripts a customer message is likely to hold:
 * ASCII, Latin-1, Latin Extended-A, Greek and Cyrillic. */
static uint32_t cp_upper(uint32_t c)
{
    if (c >= 'a' && c <= 'z')
        return c - 32;
    if (c < 0x80)
        return c;
    if ((c >= 0xe0 && c <= 0xfe && c != 0xf7))
        return c - 0x20;
    if (c == 0xff)
        return 0x178;
    if (c >= 0x100 && c <= 0x17f) {
        if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17e))
            return (c & 1) ? c : c - 1;
        if (c == 0x131 || c == 0x138 || c == 0x149 || c == 0x17f)
            return c;
        return (c & 1) ? c - 1 : c;
    }
    if (c >= 0x3b1 && c <= 0x3c9)
        return c == 0x3c2 ? 0x3a3 : c - 0x20;
    if (c >= 0x430 && c <= 0x44f)
        return c - 0x20;
    if (c >= 0x450 && c <= 0x45f)
        return c - 0x50;
    if ((c >= 0x460 && c <= 0x481) || (c >= 0x48a && c <= 0x4bf) ||
        (c >= 0x4d0 && c <= 0x52f))
        return (c & 1) ? c - 1 : c;
    if (c >= 0x4c1 && c <= 0x4ce)
        return (c & 1) ? c : c - 1;
    if (c == 0x4cf)
        return 0x4c0;
    return c;
}

static uint32_t cp_lower(uint32_t c)
{
    if (c >= 'A' && c <= 'Z')
        return c + 32;
    if (c < 0x80)
        return c;
    if (c >= 0xc0 && c <= 0xde && c != 0xd7)
        return c + 0x20;
    if (c == 0x178)
        return 0xff;
    if (c >= 0x100 && c <= 0x17f) {
        if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17e))
            return (c & 1) ? c + 1 : c;
        if (c == 0x130 || c == 0x131 || c == 0x138 || c == 0x149 ||
            c == 0x17f)
            return c;
        return (c & 1) ? c : c + 1;
    }
    if (c >= 0x391 && c <= 0x3a9 && c != 0x3a2)
        return c + 0x20;
    if (c >= 0x410 && c <= 0x42f)
        return c + 0x20;
    if (c >= 0x400 && c <= 0x40f)
        return c + 0x50;
    if ((c >= 0x460 && c <= 0x481) || (c >= 0x48a && c <= 0x4bf) ||
        (c >= 0x4d0 && c <= 0x52f))
        return (c & 1) ? c : c + 1;
    if (c >= 0x4c1 && c <= 0x4ce)
        return (c & 1) ? c + 1 : c;
    if (c == 0x4c0)
        return 0x4cf;
    return c;
}

static char *case_map(const char *s, int upper)
{
    struct sb_buf b;
    size_t n = strlen(s);

    sb_buf_init(&b, 0);
    sb_buf_append(&b, "", 0);
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t k = sb_utf8_seq(s + i, n - i, &cp);

        if (k == 0) {
            put_cp(&b, 0xfffd);
            i++;
            continue;
        }
        put_cp(&b, upper ? cp_upper(cp) : cp_lower(cp));
        i += k;
    }
    return sb_buf_steal(&b, NULL);
}

/* Replace invalid sequences with U+FFFD (values built by a caller with
 * json_string_nocheck could carry them). */
static char *utf8_fix(char *s, size_t len)
{
    struct sb_buf b;

    if (sb_utf8_valid(s, len))
        return s;
    sb_buf_init(&b, 0);
    sb_buf_append(&b, "", 0);
    for (size_t i = 0; i < len;) {
        size_t k = sb_utf8_seq(s + i, len - i, NULL);

        if (k == 0) {
            put_cp(&b, 0xfffd);
            i++;
        } else {
            sb_buf_append(&b, s + i, k);
            i += k;
        }
    }
    free(s);
    return sb_buf_steal(&b, NULL);
}

/* ---- dates --------------------------------------------------------------- */

static const char *const MONTHS_EN[12] = {
    "Jan", "Feb", "Mar", "Apr", "May", "Jun",
    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
};

/* genitive, as in "1 декабря 2026" */
static const char *const MONTHS_RU[12] = {
    "января", "февраля", "марта", "апреля", "мая", "июня",
    "июля", "августа", "сентября", "октября", "ноября", "декабря",
};

struct tpl_when {
    int y, mon, d, h, min;
    int has_time;
};

static int digits(const char *s, size_t n, int *out)
{
    int v = 0;

    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

static int days_in(int y, int m)
{
    static const int len[12] = {31, 28, 31, 30, 31, 30,
                                31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

    return len[m - 1] + (m == 2 && leap);
}

/* ISO 8601: YYYY-MM-DD, or that plus [T ]HH:MM[:SS[.frac]] and an optional
 * Z / +HH:MM / +HHMM / +HH. A date-only value and a time without an offset
 * are shown as written; a time with an offset is converted to tz. */
static int parse_iso(const char *s, const char *tz, struct tpl_when *w)
{
    size_t n = strlen(s), i;
    int sec = 0, off = 0, has_off = 0;
    struct tm tm;
    int64_t ms;

    memset(w, 0, sizeof(*w));
    if (n < 10 || digits(s, 4, &w->y) < 0 || s[4] != '-' ||
        digits(s + 5, 2, &w->mon) < 0 || s[7] != '-' ||
        digits(s + 8, 2, &w->d) < 0)
        return -1;
    if (w->y < 1 || w->mon < 1 || w->mon > 12 || w->d < 1 ||
        w->d > days_in(w->y, w->mon))
        return -1;
    if (n == 10)
        return 0;
    if ((s[10] != 'T' && s[10] != 't' && s[10] != ' ') || n < 16 ||
        digits(s + 11, 2, &w->h) < 0 || s[13] != ':' ||
        digits(s + 14, 2, &w->min) < 0 || w->h > 23 || w->min > 59)
        return -1;
    i = 16;
    if (i < n && s[i] == ':') {
        if (i + 3 > n || digits(s + i + 1, 2, &sec) < 0 || sec > 60)
            return -1;
        i += 3;
        if (i < n && (s[i] == '.' || s[i] == ',')) {
            size_t b = ++i;

            while (i < n && s[i] >= '0' && s[i] <= '9')
                i++;
            if (i == b)
                return -1;
        }
    }
    w->has_time = 1;
    if (i == n)
        return 0;
    if ((s[i] == 'Z' || s[i] == 'z') && i + 1 == n) {
        has_off = 1;
    } else if (s[i] == '+' || s[i] == '-') {
        int oh, om = 0, sign = s[i] == '-' ? -1 : 1;
        size_t r = n - i - 1;
        const char *o = s + i + 1;

        if (r == 2) {
            if (digits(o, 2, &oh) < 0)
                return -1;
        } else if (r == 4) {
            if (digits(o, 2, &oh) < 0 || digits(o + 2, 2, &om) < 0)
                return -1;
        } else if (r == 5 && o[2] == ':') {
            if (digits(o, 2, &oh) < 0 || digits(o + 3, 2, &om) < 0)
                return -1;
        } else {
            return -1;
        }
        if (oh > 23 || om > 59)
            return -1;
        off = sign * (oh * 3600 + om * 60);
        has_off = 1;
    } else {
        return -1;
    }
    if (!has_off)
        return 0;
    if (sb_tz_mktime("UTC", w->y, w->mon, w->d, w->h, w->min, &ms) < 0)
        return -1;
    ms += (int64_t)(sec > 59 ? 59 : sec) * 1000 - (int64_t)off * 1000;
    if (sb_tz_localtime(tz, ms, &tm) < 0)
        return -1;
    w->y = tm.tm_year + 1900;
    w->mon = tm.tm_mon + 1;
    w->d = tm.tm_mday;
    w->h = tm.tm_hour;
    w->min = tm.tm_min;
    return 0;
}

static int when_of(const struct tpl_val *v, const char *tz,
                   struct tpl_when *w)
{
    struct tm tm;
    int64_t ms;

    if (v->state == V_STR || json_is_string(v->j))
        return parse_iso(v->state == V_STR ? v->s : json_string_value(v->j),
                         tz, w);
    if (json_is_integer(v->j)) {
        ms = json_integer_value(v->j);
    } else if (json_is_real(v->j)) {
        double d = json_real_value(v->j);

        if (!(fabs(d) < 4e14))
            return -1;
        ms = (int64_t)floor(d);
    } else {
        return -1;
    }
    if (sb_tz_localtime(tz, ms, &tm) < 0)
        return -1;
    w->y = tm.tm_year + 1900;
    w->mon = tm.tm_mon + 1;
    w->d = tm.tm_mday;
    w->h = tm.tm_hour;
    w->min = tm.tm_min;
    w->has_time = 1;
    return 0;
}

/* ---- money --------------------------------------------------------------- */

#define DEC_MAX_INT 30  /* digits before the point */

/* Round the decimal text s ([-+]digits[.digits][e[-+]digits]) to frac
 * digits, half away from zero. Writes the integer digits (no leading
 * zeros) and the fraction digits; -1 if s is not a number or too large. */
static int dec_round(const char *s, int frac, char *ip, size_t ipn,
                     char *fp, size_t fpn, int *neg)
{
    char m[128];  /* mantissa digits, point removed */
    size_t nm = 0, i = 0, n = strlen(s);
    long point = -1, exp = 0, pos;
    char all[DEC_MAX_INT + 8 + 1];
    size_t nall = 0;
    int carry;

    *neg = 0;
    if (i < n && (s[i] == '-' || s[i] == '+'))
        *neg = s[i++] == '-';
    for (; i < n; i++) {
        if (s[i] >= '0' && s[i] <= '9') {
            if (nm == 0 && s[i] == '0' && point < 0)
                continue; /* leading zero */
            if (nm >= sizeof(m) - 1)
                return -1;
            m[nm++] = s[i];
        } else if (s[i] == '.' && point < 0) {
            point = (long)nm;
        } else {
            break;
        }
    }
    /* at least one digit somewhere */
    if (i == 0 || strspn(s, "+-.") == i)
        return -1;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        int esign = 1;
        long ev = 0;

        i++;
        if (i < n && (s[i] == '-' || s[i] == '+'))
            esign = s[i++] == '-' ? -1 : 1;
        if (i >= n)
            return -1;
        for (; i < n && s[i] >= '0' && s[i] <= '9'; i++)
            if (ev < 10000)
                ev = ev * 10 + (s[i] - '0');
        exp = esign * ev;
    }
    if (i != n)
        return -1;
    if (point < 0)
        point = (long)nm;
    pos = point + exp;  /* digits of m before the point */
    if (pos > DEC_MAX_INT)
        return -1;
    /* all = the integer digits (at least one: "0" when pos <= 0), then
     * frac + 1 fraction digits; the last one decides the rounding */
    for (long k = pos > 0 ? 0 : pos - 1; k < pos + frac + 1; k++)
        all[nall++] = (k >= 0 && (size_t)k < nm) ? m[k] : '0';
    carry = all[nall - 1] >= '5';
    nall--;
    for (size_t k = nall; k-- > 0 && carry;) {
        if (all[k] == '9') {
            all[k] = '0';
        } else {
            all[k]++;
            carry = 0;
        }
    }
    {
        size_t nint = nall - (size_t)frac, skip = 0, o = 0;

        if (carry)
            ip[o++] = '1';
        while (!carry && skip + 1 < nint && all[skip] == '0')
            skip++;
        if (nint - skip + 2 > ipn || (size_t)frac + 1 > fpn)
            return -1;
        memcpy(ip + o, all + skip, nint - skip);
        ip[o + nint - skip] = '\0';
        memcpy(fp, all + nint, (size_t)frac);
        fp[frac] = '\0';
    }
    if (strspn(ip, "0") == strlen(ip) && strspn(fp, "0") == strlen(fp))
        *neg = 0;
    return 0;
}

static int minor_digits(const char *cur)
{
    static const char *const zero[] = {
        "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG",
        "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF",
    };
    static const char *const three[] = {
        "BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND",
    };

    for (size_t i = 0; i < SB_ARRAY_LEN(zero); i++)
        if (strcmp(cur, zero[i]) == 0)
            return 0;
    for (size_t i = 0; i < SB_ARRAY_LEN(three); i++)
        if (strcmp(cur, three[i]) == 0)
            return 3;
    return 2;
}

#define NBSP "\xc2\xa0"

/* "1,234.50" (en) or "1 234,50" (ru, no-break spaces) */
static void put_amount(struct sb_buf *b, const char *ip, const char *fp,
                       int ru)
{
    size_t n = strlen(ip);

    for (size_t i = 0; i < n; i++) {
        if (i > 0 && (n - i) % 3 == 0)
            sb_buf_appends(b, ru ? NBSP : ",");
        sb_buf_append(b, ip + i, 1);
    }
    if (*fp) {
        sb_buf_appends(b, ru ? "," : ".");
        sb_buf_appends(b, fp);
    }
}

static char *fmt_money(const char *ip, const char *fp, int neg,
                       const char *cur, int ru)
{
    static const struct {
        const char *code, *en, *ru;
    } SYMBOLS[] = {
        {"RUB", NULL, "\xe2\x82\xbd"},          /* ₽ */
        {"USD", "$", "$"},
        {"EUR", "\xe2\x82\xac", "\xe2\x82\xac"}, /* € */
        {"GBP", "\xc2\xa3", "\xc2\xa3"},         /* £ */
        {"KZT", NULL, "\xe2\x82\xb8"},          /* ₸ */
    };
    const char *en = NULL, *rs = NULL;
    struct sb_buf b;

    for (size_t i = 0; i < SB_ARRAY_LEN(SYMBOLS); i++) {
        if (strcmp(SYMBOLS[i].code, cur) == 0) {
            en = SYMBOLS[i].en;
            rs = SYMBOLS[i].ru;
        }
    }
    sb_buf_init(&b, 0);
    if (neg)
        sb_buf_appends(&b, "-");
    if (!ru && en) {
        sb_buf_appends(&b, en);
        put_amount(&b, ip, fp, 0);
    } else {
        put_amount(&b, ip, fp, ru);
        sb_buf_appends(&b, ru ? NBSP : " ");
        sb_buf_appends(&b, ru && rs ? rs : cur);
    }
    return sb_buf_steal(&b, NULL);
}

/* ---- rendering ----------------------------------------------------------- */

struct tpl_run {
    json_t *ctx;
    int ru;
    const char *tz;
    char *err;
    size_t errlen;
    const char *part;  /* "subject", "text", "html" */
};

static int rerr(struct tpl_run *r, const struct tpl_node *n,
                const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int rerr(struct tpl_run *r, const struct tpl_node *n,
                const char *fmt, ...)
{
    char why[200];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    seterr(r->err, r->errlen, "%s line %d: %s", r->part, n->line, why);
    return -1;
}

static int apply(struct tpl_run *r, const struct tpl_node *n,
                 const struct tpl_fmt *f, struct tpl_val *v)
{
    char tmp[64];
    const char *s;

    switch (f->kind) {
    case F_RAW:
        return 0;
    case F_DEFAULT:
        if (v->state == V_ABSENT ||
            (v->state == V_STR && !v->s[0]) ||
            (v->state == V_JSON && json_is_string(v->j) &&
             json_string_length(v->j) == 0))
            val_set_str(v, sb_strdup(f->text));
        return 0;
    default:
        break;
    }
    if (v->state == V_ABSENT)
        return 0;
    switch (f->kind) {
    case F_UPPER:
    case F_LOWER:
        if (val_text(v, tmp, sizeof(tmp), &s) < 0)
            return rerr(r, n, "%s: %s cannot be %s-cased", n->path.src,
                        type_name(v), f->kind == F_UPPER ? "upper" : "lower");
        val_set_str(v, case_map(s, f->kind == F_UPPER));
        return 0;
    case F_DATE:
    case F_TIME:
    case F_DATETIME: {
        static const char *const names[] = {"date", "time", "datetime"};
        struct tpl_when w;
        const char *fname = names[f->kind - F_DATE];

        if (when_of(v, r->tz, &w) < 0)
            return rerr(r, n, "%s: %s needs an ISO 8601 date or time or "
                        "epoch milliseconds", n->path.src, fname);
        if (f->kind == F_TIME && !w.has_time)
            return rerr(r, n, "%s: time of a date without a time of day",
                        n->path.src);
        if (f->kind == F_TIME) {
            val_set_str(v, sb_asprintf("%02d:%02d", w.h, w.min));
        } else {
            char *d = r->ru
                ? sb_asprintf("%d %s %d", w.d, MONTHS_RU[w.mon - 1], w.y)
                : sb_asprintf("%d %s %d", w.d, MONTHS_EN[w.mon - 1], w.y);

            if (f->kind == F_DATETIME && w.has_time) {
                char *dt = sb_asprintf("%s, %02d:%02d", d, w.h, w.min);

                free(d);
                d = dt;
            }
            val_set_str(v, d);
        }
        return 0;
    }
    case F_MONEY: {
        json_t *cj = lookup(r->ctx, &f->path);
        char cur[4], ip[DEC_MAX_INT + 4], fp[8];
        const char *cs;
        int neg;

        if (!cj) {
            v->state = V_ABSENT;
            v->missing = f->path.src;
            free(v->s);
            v->s = NULL;
            v->j = NULL;
            return 0;
        }
        cs = json_string_value(cj);
        if (!cs || strlen(cs) != 3)
            return rerr(r, n, "%s: a currency is a three-letter code",
                        f->path.src);
        for (int i = 0; i < 3; i++) {
            char c = cs[i];

            if (c >= 'a' && c <= 'z')
                c = (char)(c - 32);
            if (c < 'A' || c > 'Z')
                return rerr(r, n, "%s: a currency is a three-letter code",
                            f->path.src);
            cur[i] = c;
        }
        cur[3] = '\0';
        if ((v->state == V_JSON && !json_is_number(v->j) &&
             !json_is_string(v->j)) ||
            val_text(v, tmp, sizeof(tmp), &s) < 0 ||
            dec_round(s, minor_digits(cur), ip, sizeof(ip), fp, sizeof(fp),
                      &neg) < 0)
            return rerr(r, n, "%s: money needs a number or a decimal string",
                        n->path.src);
        val_set_str(v, fmt_money(ip, fp, neg, cur, r->ru));
        return 0;
    }
    default:
        return 0;
    }
}

static int put_escaped(struct sb_buf *b, const char *s, int html)
{
    if (!html)
        return sb_buf_appends(b, s);
    for (; *s; s++) {
        const char *e = NULL;

        switch (*s) {
        case '&': e = "&amp;"; break;
        case '<': e = "&lt;"; break;
        case '>': e = "&gt;"; break;
        case '"': e = "&quot;"; break;
        case '\'': e = "&#39;"; break;
        }
        if ((e ? sb_buf_appends(b, e) : sb_buf_append(b, s, 1)) < 0)
            return -1;
    }
    return 0;
}

static int render_node(struct tpl_run *r, const struct tpl_node *n,
                       int html, struct sb_buf *out)
{
    struct tpl_val v = {V_ABSENT, NULL, NULL, n->path.src};
    char tmp[64];
    const char *s;
    int rc = -1;

    v.j = lookup(r->ctx, &n->path);
    if (v.j)
        v.state = V_JSON;
    for (size_t i = 0; i < n->nfmt; i++)
        if (apply(r, n, &n->fmts[i], &v) < 0)
            goto out;
    if (v.state == V_ABSENT) {
        rerr(r, n, "missing variable %s", v.missing);
        goto out;
    }
    if (val_text(&v, tmp, sizeof(tmp), &s) < 0) {
        rerr(r, n, "%s is %s; only strings, numbers and booleans can be "
             "shown", n->path.src, type_name(&v));
        goto out;
    }
    if (put_escaped(out, s, html && !n->raw) < 0) {
        rerr(r, n, "output longer than %d bytes", SB_TPL_OUTPUT_MAX);
        goto out;
    }
    rc = 0;
out:
    free(v.s);
    return rc;
}

static char *render_body(struct tpl_run *r, const struct tpl_body *b)
{
    struct sb_buf out;
    size_t len;

    sb_buf_init(&out, SB_TPL_OUTPUT_MAX);
    sb_buf_append(&out, "", 0);
    for (size_t i = 0; i < b->n; i++) {
        const struct tpl_node *n = &b->nodes[i];

        if (n->text) {
            if (sb_buf_append(&out, n->text, n->len) < 0) {
                rerr(r, n, "output longer than %d bytes", SB_TPL_OUTPUT_MAX);
                sb_buf_free(&out);
                return NULL;
            }
        } else if (render_node(r, n, b->html, &out) < 0) {
            sb_buf_free(&out);
            return NULL;
        }
    }
    {
        char *s = sb_buf_steal(&out, &len);

        return utf8_fix(s, len);
    }
}

static int is_ru(const char *locale)
{
    return locale && locale[0] == 'r' && locale[1] == 'u' &&
           (locale[2] == '\0' || locale[2] == '-' || locale[2] == '_');
}

int sb_tpl_render(const struct sb_tpl *t, json_t *ctx,
                  const struct sb_tpl_env *env, struct sb_rendered *out,
                  char *err, size_t errlen)
{
    struct tpl_run r;

    memset(out, 0, sizeof(*out));
    if (!t || !t->text) {
        seterr(err, errlen, "no template");
        return -1;
    }
    if (!json_is_object(ctx)) {
        seterr(err, errlen, "the context is not a JSON object");
        return -1;
    }
    memset(&r, 0, sizeof(r));
    r.ctx = ctx;
    r.ru = env ? is_ru(env->locale) : 0;
    r.tz = env && env->timezone && sb_tz_valid(env->timezone)
               ? env->timezone : "UTC";
    r.err = err;
    r.errlen = errlen;
    if (t->subject) {
        r.part = "subject";
        if (!(out->subject = render_body(&r, t->subject)))
            goto fail;
        /* one header line: no CR, LF or other controls from values */
        for (char *p = out->subject; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f)
                *p = ' ';
    }
    r.part = "text";
    if (!(out->text = render_body(&r, t->text)))
        goto fail;
    if (t->html) {
        r.part = "html";
        if (!(out->html = render_body(&r, t->html)))
            goto fail;
    }
    return 0;
fail:
    sb_rendered_free(out);
    return -1;
}

/* ---- the set: loading ---------------------------------------------------- */

static int valid_event(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > 64 || s[0] == '.' || s[0] == '-')
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') ||
              s[i] == '_' || s[i] == '.' || s[i] == '-'))
            return 0;
    return 1;
}

static int valid_locale(const char *s, size_t n)
{
    if (n != 2 && n != 5)
        return 0;
    if (s[0] < 'a' || s[0] > 'z' || s[1] < 'a' || s[1] > 'z')
        return 0;
    return n == 2 || (s[2] == '-' && s[3] >= 'A' && s[3] <= 'Z' &&
                      s[4] >= 'A' && s[4] <= 'Z');
}

/* "<channel>.<locale>" or "email.<locale>.html": 1 with the parts, 0 for
 * anything else. */
static int classify(const char *name, const char **channel, char *locale,
                    int *html)
{
    const char *dot = strchr(name, '.'), *loc;
    size_t n;

    if (!dot)
        return 0;
    *channel = NULL;
    for (size_t i = 0; i < SB_ARRAY_LEN(CHANNELS); i++)
        if (strlen(CHANNELS[i]) == (size_t)(dot - name) &&
            strncmp(name, CHANNELS[i], (size_t)(dot - name)) == 0)
            *channel = CHANNELS[i];
    if (!*channel)
        return 0;
    loc = dot + 1;
    n = strlen(loc);
    *html = 0;
    if (n > 5 && strcmp(loc + n - 5, ".html") == 0) {
        if (strcmp(*channel, "email") != 0)
            return 0;
        *html = 1;
        n -= 5;
    }
    if (!valid_locale(loc, n))
        return 0;
    memcpy(locale, loc, n);
    locale[n] = '\0';
    return 1;
}

static int read_small(const char *path, char **out, size_t *outlen,
                      char *err, size_t errlen)
{
    struct stat st;
    char *buf;
    size_t got = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);

    if (fd < 0) {
        seterr(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) < 0 || st.st_size > SB_TPL_FILE_MAX) {
        seterr(err, errlen, "%s: larger than %d KiB", path,
               SB_TPL_FILE_MAX / 1024);
        close(fd);
        return -1;
    }
    buf = sb_malloc((size_t)st.st_size + 1);
    for (;;) {
        ssize_t r;

        if (got > SB_TPL_FILE_MAX) {
            seterr(err, errlen, "%s: larger than %d KiB", path,
                   SB_TPL_FILE_MAX / 1024);
            free(buf);
            close(fd);
            return -1;
        }
        if (got == (size_t)st.st_size + 1) {
            /* the file grew while we read it */
            buf = sb_realloc(buf, SB_TPL_FILE_MAX + 2);
            st.st_size = SB_TPL_FILE_MAX + 1;
        }
        r = read(fd, buf + got, (size_t)st.st_size + 1 - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            seterr(err, errlen, "%s: %s", path, strerror(errno));
            free(buf);
            close(fd);
            return -1;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    buf[got] = '\0';
    *out = buf;
    *outlen = got;
    return 0;
}

/* Split an e-mail file into its Subject line and body, and compile both. */
static int parse_email(struct sb_tpl *t, const char *s, size_t len,
                       struct tpl_perr *e)
{
    const char *nl = memchr(s, '\n', len);
    size_t l1 = nl ? (size_t)(nl - s) : len, k = 8, body;

    if (l1 < 8 || strncasecmp(s, "Subject:", 8) != 0)
        return perr(e, 1, "an e-mail template starts with a "
                    "\"Subject: ...\" line");
    if (l1 > 0 && s[l1 - 1] == '\r')
        l1--;
    while (k < l1 && (s[k] == ' ' || s[k] == '\t'))
        k++;
    while (l1 > k && (s[l1 - 1] == ' ' || s[l1 - 1] == '\t'))
        l1--;
    if (k == l1)
        return perr(e, 1, "the subject is empty");
    if (!(t->subject = body_parse(s + k, l1 - k, 0, 1, e)))
        return -1;
    if (!nl)
        return perr(e, 1, "the e-mail has no body (a blank line and the "
                    "text must follow the Subject line)");
    body = (size_t)(nl - s) + 1;
    if (body < len && s[body] == '\r')
        body++;
    if (body >= len || s[body] != '\n')
        return perr(e, 2, "a blank line must follow the Subject line");
    body++;
    if (!(t->text = body_parse(s + body, len - body, 0, 3, e)))
        return -1;
    return 0;
}

static struct sb_tpl *event_tpl(struct tpl_event *ev, const char *channel,
                                const char *locale)
{
    struct sb_tpl *t;

    for (size_t i = 0; i < ev->n; i++)
        if (strcmp(ev->tpls[i]->channel, channel) == 0 &&
            strcmp(ev->tpls[i]->locale, locale) == 0)
            return ev->tpls[i];
    t = sb_calloc(1, sizeof(*t));
    t->channel = sb_strdup(channel);
    t->locale = sb_strdup(locale);
    ev->tpls = sb_realloc(ev->tpls, (ev->n + 1) * sizeof(*ev->tpls));
    ev->tpls[ev->n++] = t;
    return t;
}

static void free_names(struct dirent **ents, int n)
{
    for (int i = 0; i < n; i++)
        free(ents[i]);
    free(ents);
}

static int load_event(struct tpl_event *ev, const char *dir, char *err,
                      size_t errlen)
{
    struct dirent **ents = NULL;
    int n = scandir(dir, &ents, NULL, alphasort), rc = -1;

    if (n < 0) {
        seterr(err, errlen, "%s: %s", dir, strerror(errno));
        return -1;
    }
    for (int i = 0; i < n; i++) {
        const char *channel;
        char locale[8], *path, *text = NULL;
        int html;
        size_t len;
        struct stat st;
        struct tpl_perr e = {0, ""};
        struct sb_tpl *t;
        int bad;

        if (!classify(ents[i]->d_name, &channel, locale, &html))
            continue;
        path = sb_asprintf("%s/%s", dir, ents[i]->d_name);
        if (stat(path, &st) < 0 || !S_ISREG(st.st_mode)) {
            free(path);
            continue;
        }
        if (read_small(path, &text, &len, err, errlen) < 0) {
            free(path);
            goto out;
        }
        t = event_tpl(ev, channel, locale);
        if (html) {
            bad = !(t->html = body_parse(text, len, 1, 1, &e));
        } else if (strcmp(channel, "email") == 0) {
            bad = parse_email(t, text, len, &e) < 0;
        } else {
            bad = !(t->text = body_parse(text, len, 0, 1, &e));
        }
        if (bad)
            seterr(err, errlen, "%s:%d: %s", path, e.line, e.why);
        free(text);
        free(path);
        if (bad)
            goto out;
    }
    for (size_t i = 0; i < ev->n; i++) {
        if (!ev->tpls[i]->text) {
            seterr(err, errlen, "%s/email.%s.html: there is no email.%s "
                   "beside it (the subject and text part)", dir,
                   ev->tpls[i]->locale, ev->tpls[i]->locale);
            goto out;
        }
    }
    rc = 0;
out:
    free_names(ents, n);
    return rc;
}

struct sb_tpl_set *sb_tpl_load(const char *dir, char *err, size_t errlen)
{
    struct sb_tpl_set *set = sb_calloc(1, sizeof(*set));
    struct dirent **ents = NULL;
    int n;

    if (err && errlen)
        err[0] = '\0';
    n = dir ? scandir(dir, &ents, NULL, alphasort) : -1;
    if (n < 0) {
        if (!dir || errno == ENOENT)
            return set;
        seterr(err, errlen, "%s: %s", dir, strerror(errno));
        sb_tpl_free(set);
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        struct tpl_event ev = {NULL, NULL, 0};
        struct stat st;
        char *path;

        if (!valid_event(ents[i]->d_name))
            continue;
        path = sb_asprintf("%s/%s", dir, ents[i]->d_name);
        if (stat(path, &st) < 0 || !S_ISDIR(st.st_mode)) {
            free(path);
            continue;
        }
        if (load_event(&ev, path, err, errlen) < 0) {
            for (size_t k = 0; k < ev.n; k++)
                sb_tpl_destroy(ev.tpls[k]);
            free(ev.tpls);
            free(path);
            free_names(ents, n);
            sb_tpl_free(set);
            return NULL;
        }
        free(path);
        if (ev.n == 0) {
            free(ev.tpls);
            continue;
        }
        ev.name = sb_strdup(ents[i]->d_name);
        set->events = sb_realloc(set->events,
                                 (set->nevents + 1) * sizeof(*set->events));
        set->events[set->nevents++] = ev;
        set->count += ev.n;
    }
    free_names(ents, n);
    return set;
}

/* ---- the set: queries ---------------------------------------------------- */

static const struct tpl_event *find_event(const struct sb_tpl_set *set,
                                          const char *event)
{
    if (!set || !event)
        return NULL;
    for (size_t i = 0; i < set->nevents; i++)
        if (strcmp(set->events[i].name, event) == 0)
            return &set->events[i];
    return NULL;
}

size_t sb_tpl_count(const struct sb_tpl_set *set)
{
    return set ? set->count : 0;
}

int sb_tpl_has_event(const struct sb_tpl_set *set, const char *event)
{
    return find_event(set, event) != NULL;
}

int sb_tpl_has_channel(const struct sb_tpl_set *set, const char *event,
                       const char *channel)
{
    const struct tpl_event *ev = find_event(set, event);

    for (size_t i = 0; ev && channel && i < ev->n; i++)
        if (strcmp(ev->tpls[i]->channel, channel) == 0)
            return 1;
    return 0;
}

static const struct sb_tpl *find_exact(const struct tpl_event *ev,
                                       const char *channel,
                                       const char *locale, size_t n)
{
    for (size_t i = 0; i < ev->n; i++) {
        const struct sb_tpl *t = ev->tpls[i];

        if (strcmp(t->channel, channel) == 0 && strlen(t->locale) == n &&
            strncmp(t->locale, locale, n) == 0)
            return t;
    }
    return NULL;
}

const struct sb_tpl *sb_tpl_find(const struct sb_tpl_set *set,
                                 const char *event, const char *channel,
                                 const char *locale,
                                 const char *default_locale,
                                 const char **used)
{
    const struct tpl_event *ev = find_event(set, event);
    const char *tries[2] = {locale, default_locale};

    if (used)
        *used = NULL;
    if (!ev || !channel)
        return NULL;
    for (size_t i = 0; i < 2; i++) {
        const char *l = tries[i];
        const struct sb_tpl *t;

        if (!l || !*l)
            continue;
        t = find_exact(ev, channel, l, strlen(l));
        if (!t && strlen(l) > 2 && (l[2] == '-' || l[2] == '_'))
            t = find_exact(ev, channel, l, 2);
        if (t) {
            if (used)
                *used = t->locale;
            return t;
        }
    }
    return NULL;
}

static const char *body_missing(const struct tpl_body *b, json_t *ctx)
{
    for (size_t i = 0; b && i < b->n; i++) {
        const struct tpl_node *n = &b->nodes[i];

        if (n->text || n->has_default)
            continue;
        if (!lookup(ctx, &n->path))
            return n->path.src;
        for (size_t k = 0; k < n->nfmt; k++)
            if (n->fmts[k].kind == F_MONEY && !lookup(ctx, &n->fmts[k].path))
                return n->fmts[k].path.src;
    }
    return NULL;
}

int sb_tpl_check(const struct sb_tpl_set *set, const char *event,
                 json_t *ctx, char *missing, size_t missinglen)
{
    const struct tpl_event *ev = find_event(set, event);

    for (size_t i = 0; ev && i < ev->n; i++) {
        const struct sb_tpl *t = ev->tpls[i];
        const char *m = body_missing(t->subject, ctx);

        if (!m)
            m = body_missing(t->text, ctx);
        if (!m)
            m = body_missing(t->html, ctx);
        if (m) {
            seterr(missing, missinglen, "%s", m);
            return -1;
        }
    }
    return 0;
}
