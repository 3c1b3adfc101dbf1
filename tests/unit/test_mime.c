/* test_mime.c - e-mail parsing: the corpus, limits, charsets, HTML, quotes.
 *
 * The corpus test replays every tests/data/mail/NAME.eml against
 * NAME.expect.json (adding a pair adds a case; a missing or unknown key in
 * an expectation is a failure, so a typo cannot pass silently). Keys:
 *   subject, subject_not_contains[], from{name,addr}, reply_to{name,addr},
 *   to[{name,addr}], cc[...], message_id, in_reply_to, references[],
 *   return_path (string or null), date_ms, text (exact), text_contains[],
 *   text_not_contains[], text_from_html, html (null: no HTML),
 *   html_contains[], attachments[{filename, content_type, content_id,
 *   inline, size}] (the count is exact, each listed key checked),
 *   automatic, auto_reason, is_dsn, dsn{original_message_id, recipient,
 *   action, status, diagnostic_contains}, charsets_include[],
 *   charsets_exclude[], parts, quote_starts_with, quote_offset, no_crlf,
 *   refused ("reason substring": the message must be refused).
 * Every parse, here and in the generated cases, is also checked against
 * the contract's invariants (valid UTF-8, no CR/LF in header-derived
 * fields, sha256 of the kept data, quote offset inside the text...).
 *
 * Inputs too big for the repository are generated here: 10,000-deep
 * nesting bombs (multipart, message/rfc822, digest, one shared boundary),
 * a 1 MB header (top level and inside a part), 100,000 parts, headers
 * built to make a parser slow (unterminated encoded words, 24 MB of To
 * headers, 500,000 fields); their parse times are printed, not asserted.
 * Table-driven cases cover undeclared Cyrillic (KOI8-R against windows-1251,
 * short and upper-case texts), HTML to text, quoted-history detection and the
 * size caps. One test parses the corpus from 4 threads at once and compares
 * with the single-threaded results; another prints the corpus parse rate. When
 * ../shared/corpora (or $SB_CORPORA) has a mime/ folder, its files are replayed
 * for the invariants only (skipped otherwise).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <glib.h>
#include <glob.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "mime.h"
#include "testutil.h"
#include "util.h"

#define CORPUS "tests/data/mail"

/* ---- helpers --------------------------------------------------------- */

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int failures;

static void fail_at(const char *name, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void fail_at(const char *name, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "    %s: ", name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    failures++;
}

/* A header-derived string: valid UTF-8, no control characters. */
static void check_hdr(const char *name, const char *what, const char *s,
                      int may_be_null)
{
    if (!s) {
        if (!may_be_null)
            fail_at(name, "%s is NULL", what);
        return;
    }
    if (!sb_utf8_valid(s, strlen(s)))
        fail_at(name, "%s is not valid UTF-8", what);
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) {
            fail_at(name, "%s holds control character 0x%02x", what,
                    (unsigned char)*p);
            break;
        }
}

static void check_addr(const char *name, const char *what,
                       const struct sb_mime_addr *a)
{
    check_hdr(name, what, a->name, 0);
    check_hdr(name, what, a->addr, 0);
}

/* The contract's promises about any accepted message. */
static void check_invariants(const char *name, const struct sb_mime_msg *m,
                             const struct sb_mime_limits *lim)
{
    struct sb_mime_limits def;
    size_t tl;

    if (!lim) {
        sb_mime_limits_default(&def);
        lim = &def;
    }
    check_hdr(name, "message_id", m->message_id, 1);
    check_hdr(name, "in_reply_to", m->in_reply_to, 1);
    if (!m->references)
        fail_at(name, "references is NULL");
    for (char **r = m->references; r && *r; r++)
        check_hdr(name, "reference", *r, 0);
    check_addr(name, "from", &m->from);
    check_addr(name, "reply_to", &m->reply_to);
    for (size_t i = 0; i < m->nto; i++)
        check_addr(name, "to", &m->to[i]);
    for (size_t i = 0; i < m->ncc; i++)
        check_addr(name, "cc", &m->cc[i]);
    check_hdr(name, "return_path", m->return_path, 1);
    check_hdr(name, "subject", m->subject, 0);
    check_hdr(name, "auto_reason", m->auto_reason, 1);
    if (m->automatic != (m->auto_reason != NULL))
        fail_at(name, "automatic and auto_reason disagree");
    if (m->is_dsn && !m->automatic)
        fail_at(name, "a DSN that is not automatic");
    check_hdr(name, "dsn.original_message_id", m->dsn.original_message_id, 1);
    check_hdr(name, "dsn.recipient", m->dsn.recipient, 1);
    check_hdr(name, "dsn.action", m->dsn.action, 1);
    check_hdr(name, "dsn.status", m->dsn.status, 1);
    check_hdr(name, "dsn.diagnostic", m->dsn.diagnostic, 1);
    if (!m->text) {
        fail_at(name, "text is NULL");
        return;
    }
    tl = strlen(m->text);
    if (!sb_utf8_valid(m->text, tl))
        fail_at(name, "text is not valid UTF-8");
    for (size_t i = 0; i < tl; i++)
        if ((unsigned char)m->text[i] < 0x20 && m->text[i] != '\n' &&
            m->text[i] != '\t') {
            fail_at(name, "text holds control character 0x%02x",
                    (unsigned char)m->text[i]);
            break;
        }
    if (tl > lim->max_text)
        fail_at(name, "text over max_text (%zu)", tl);
    if (m->html && !sb_utf8_valid(m->html, strlen(m->html)))
        fail_at(name, "html is not valid UTF-8");
    if (m->html && strlen(m->html) > lim->max_text)
        fail_at(name, "html over max_text");
    if (m->text_from_html && !m->html)
        fail_at(name, "text_from_html without html");
    if (m->quote_offset < -1 || m->quote_offset >= (long)tl + (tl == 0))
        fail_at(name, "quote_offset %ld outside the text", m->quote_offset);
    if (m->quote_offset > 0 && m->text[m->quote_offset - 1] != '\n')
        fail_at(name, "quote_offset %ld not at a line start", m->quote_offset);
    if (m->parts < 1 || m->parts > lim->max_parts)
        fail_at(name, "parts %d", m->parts);
    if (!m->charsets)
        fail_at(name, "charsets is NULL");
    for (char **c = m->charsets; c && *c; c++) {
        check_hdr(name, "charset", *c, 0);
        for (const char *p = *c; *p; p++)
            if (*p >= 'A' && *p <= 'Z')
                fail_at(name, "charset %s not lower case", *c);
    }
    if (m->natts && !m->atts)
        fail_at(name, "natts without atts");
    for (size_t i = 0; i < m->natts; i++) {
        const struct sb_mime_att *a = &m->atts[i];
        check_hdr(name, "filename", a->filename, 0);
        check_hdr(name, "content_type", a->content_type, 0);
        check_hdr(name, "content_id", a->content_id, 1);
        if (a->filename &&
            (strchr(a->filename, '/') || strchr(a->filename, '\\')))
            fail_at(name, "filename %s keeps a path", a->filename);
        for (const char *p = a->content_type; p && *p; p++)
            if (*p >= 'A' && *p <= 'Z') {
                fail_at(name, "content type %s not lower case",
                        a->content_type);
                break;
            }
        if (strlen(a->sha256) != 64)
            fail_at(name, "sha256 [%s]", a->sha256);
        if (a->truncated != (a->data == NULL))
            fail_at(name, "truncated %d but data %p", a->truncated,
                    (void *)a->data);
        if (a->truncated && a->size <= lim->max_attachment)
            fail_at(name, "truncated below the cap");
        if (a->data) {
            gchar *sum = g_compute_checksum_for_data(G_CHECKSUM_SHA256, a->data,
                                                     a->size);
            if (strcmp(sum, a->sha256) != 0)
                fail_at(name, "sha256 does not match the data");
            g_free(sum);
        }
    }
}

static void check_refused(const char *name, const struct sb_mime_msg *m,
                          const char *err)
{
    if (!err[0])
        fail_at(name, "refused without a reason");
    for (const char *p = err; *p; p++)
        if ((unsigned char)*p < 0x20) {
            fail_at(name, "reason holds a control character");
            break;
        }
    if (m->subject || m->text || m->references || m->atts || m->charsets)
        fail_at(name, "refused but *out is not empty");
}

/* After sb_mime_parse returned rc: what the contract promises either way. */
static void check_parse(const char *name, int rc, const struct sb_mime_msg *m,
                        const char *err, const struct sb_mime_limits *lim)
{
    if (rc == 0)
        check_invariants(name, m, lim);
    else
        check_refused(name, m, err);
}

/* ---- the corpus ------------------------------------------------------ */

static const char *jstr(json_t *v)
{
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static void expect_str(const char *name, const char *what, const char *got,
                       json_t *want)
{
    if (json_is_null(want)) {
        if (got)
            fail_at(name, "%s: got \"%s\", want null", what, got);
        return;
    }
    if (!json_is_string(want)) {
        fail_at(name, "%s: expectation is not a string", what);
        return;
    }
    if (!got || strcmp(got, json_string_value(want)) != 0)
        fail_at(name, "%s: got \"%s\", want \"%s\"", what, got ? got : "(null)",
                json_string_value(want));
}

static void expect_int(const char *name, const char *what, long long got,
                       json_t *want)
{
    long long w =
        json_is_boolean(want) ? json_is_true(want) : json_integer_value(want);

    if (!json_is_integer(want) && !json_is_boolean(want))
        fail_at(name, "%s: expectation is not a number", what);
    else if (got != w)
        fail_at(name, "%s: got %lld, want %lld", what, got, w);
}

static void expect_contains(const char *name, const char *what, const char *got,
                            json_t *list, int want)
{
    size_t i;
    json_t *v;

    json_array_foreach(list, i, v)
    {
        const char *s = jstr(v);
        int has = got && s && strstr(got, s) != NULL;
        if (has != want)
            fail_at(name, "%s %s \"%s\"", what, want ? "lacks" : "contains",
                    s ? s : "?");
    }
}

static void expect_addr(const char *name, const char *what,
                        const struct sb_mime_addr *a, json_t *want)
{
    char buf[64];

    snprintf(buf, sizeof(buf), "%s.name", what);
    if (json_object_get(want, "name"))
        expect_str(name, buf, a->name, json_object_get(want, "name"));
    snprintf(buf, sizeof(buf), "%s.addr", what);
    if (json_object_get(want, "addr"))
        expect_str(name, buf, a->addr, json_object_get(want, "addr"));
}

static void expect_addrs(const char *name, const char *what,
                         const struct sb_mime_addr *a, size_t n, json_t *want)
{
    size_t i;
    json_t *v;

    if (json_array_size(want) != n) {
        fail_at(name, "%s: %zu addresses, want %zu", what, n,
                json_array_size(want));
        return;
    }
    json_array_foreach(want, i, v) expect_addr(name, what, &a[i], v);
}

static int has_charset(const struct sb_mime_msg *m, const char *cs)
{
    for (char **c = m->charsets; c && *c; c++)
        if (strcmp(*c, cs) == 0)
            return 1;
    return 0;
}

static void expect_atts(const char *name, const struct sb_mime_msg *m,
                        json_t *want)
{
    size_t i;
    json_t *v;

    if (json_array_size(want) != m->natts) {
        fail_at(name, "%zu attachments, want %zu", m->natts,
                json_array_size(want));
        return;
    }
    json_array_foreach(want, i, v)
    {
        const struct sb_mime_att *a = &m->atts[i];
        const char *k;
        json_t *x;

        json_object_foreach(v, k, x)
        {
            if (strcmp(k, "filename") == 0)
                expect_str(name, "filename", a->filename, x);
            else if (strcmp(k, "content_type") == 0)
                expect_str(name, "content_type", a->content_type, x);
            else if (strcmp(k, "content_id") == 0)
                expect_str(name, "content_id", a->content_id, x);
            else if (strcmp(k, "inline") == 0)
                expect_int(name, "inline", a->is_inline, x);
            else if (strcmp(k, "size") == 0)
                expect_int(name, "size", (long long)a->size, x);
            else
                fail_at(name, "unknown attachment key %s", k);
        }
    }
}

static void expect_dsn(const char *name, const struct sb_mime_msg *m,
                       json_t *want)
{
    const char *k;
    json_t *x;

    json_object_foreach(want, k, x)
    {
        if (strcmp(k, "original_message_id") == 0)
            expect_str(name, k, m->dsn.original_message_id, x);
        else if (strcmp(k, "recipient") == 0)
            expect_str(name, k, m->dsn.recipient, x);
        else if (strcmp(k, "action") == 0)
            expect_str(name, k, m->dsn.action, x);
        else if (strcmp(k, "status") == 0)
            expect_str(name, k, m->dsn.status, x);
        else if (strcmp(k, "diagnostic_contains") == 0) {
            if (!m->dsn.diagnostic ||
                !strstr(m->dsn.diagnostic, json_string_value(x)))
                fail_at(name, "diagnostic \"%s\" lacks \"%s\"",
                        m->dsn.diagnostic ? m->dsn.diagnostic : "(null)",
                        json_string_value(x));
        } else
            fail_at(name, "unknown dsn key %s", k);
    }
}

static void check_expect(const char *name, int rc, const char *err,
                         const struct sb_mime_msg *m, json_t *exp)
{
    json_t *refused = json_object_get(exp, "refused");
    const char *k;
    json_t *v;

    if (refused) {
        if (rc == 0)
            fail_at(name, "accepted, want refused \"%s\"", jstr(refused));
        else if (!strstr(err, jstr(refused) ? jstr(refused) : "?"))
            fail_at(name, "refused \"%s\", want \"%s\"", err, jstr(refused));
        return;
    }
    if (rc != 0) {
        fail_at(name, "refused: %s", err);
        return;
    }
    json_object_foreach(exp, k, v)
    {
        if (strcmp(k, "subject") == 0)
            expect_str(name, k, m->subject, v);
        else if (strcmp(k, "subject_not_contains") == 0)
            expect_contains(name, "subject", m->subject, v, 0);
        else if (strcmp(k, "from") == 0)
            expect_addr(name, k, &m->from, v);
        else if (strcmp(k, "reply_to") == 0)
            expect_addr(name, k, &m->reply_to, v);
        else if (strcmp(k, "to") == 0)
            expect_addrs(name, k, m->to, m->nto, v);
        else if (strcmp(k, "cc") == 0)
            expect_addrs(name, k, m->cc, m->ncc, v);
        else if (strcmp(k, "message_id") == 0)
            expect_str(name, k, m->message_id, v);
        else if (strcmp(k, "in_reply_to") == 0)
            expect_str(name, k, m->in_reply_to, v);
        else if (strcmp(k, "references") == 0) {
            size_t i, n = 0;
            json_t *r;
            while (m->references[n])
                n++;
            if (n != json_array_size(v))
                fail_at(name, "%zu references, want %zu", n,
                        json_array_size(v));
            else
                json_array_foreach(v, i, r)
                    expect_str(name, "reference", m->references[i], r);
        } else if (strcmp(k, "return_path") == 0)
            expect_str(name, k, m->return_path, v);
        else if (strcmp(k, "date_ms") == 0)
            expect_int(name, k, m->date_ms, v);
        else if (strcmp(k, "text") == 0)
            expect_str(name, k, m->text, v);
        else if (strcmp(k, "text_contains") == 0)
            expect_contains(name, "text", m->text, v, 1);
        else if (strcmp(k, "text_not_contains") == 0)
            expect_contains(name, "text", m->text, v, 0);
        else if (strcmp(k, "text_from_html") == 0)
            expect_int(name, k, m->text_from_html, v);
        else if (strcmp(k, "html") == 0)
            expect_str(name, k, m->html, v);
        else if (strcmp(k, "html_contains") == 0)
            expect_contains(name, "html", m->html, v, 1);
        else if (strcmp(k, "attachments") == 0)
            expect_atts(name, m, v);
        else if (strcmp(k, "automatic") == 0)
            expect_int(name, k, m->automatic, v);
        else if (strcmp(k, "auto_reason") == 0)
            expect_str(name, k, m->auto_reason, v);
        else if (strcmp(k, "is_dsn") == 0)
            expect_int(name, k, m->is_dsn, v);
        else if (strcmp(k, "dsn") == 0)
            expect_dsn(name, m, v);
        else if (strcmp(k, "charsets_include") == 0 ||
                 strcmp(k, "charsets_exclude") == 0) {
            size_t i;
            json_t *c;
            int want = k[9] == 'i';
            json_array_foreach(v, i, c) if (has_charset(m, jstr(c)) != want)
                fail_at(name, "charsets %s %s", want ? "lack" : "include",
                        jstr(c));
        } else if (strcmp(k, "parts") == 0)
            expect_int(name, k, m->parts, v);
        else if (strcmp(k, "quote_offset") == 0)
            expect_int(name, k, m->quote_offset, v);
        else if (strcmp(k, "quote_starts_with") == 0) {
            const char *w = jstr(v);
            if (m->quote_offset < 0 || !w ||
                strncmp(m->text + m->quote_offset, w, strlen(w)) != 0)
                fail_at(name, "quote at %ld (\"%.30s\"), want \"%s\"",
                        m->quote_offset,
                        m->quote_offset >= 0 ? m->text + m->quote_offset : "",
                        w ? w : "?");
        } else if (strcmp(k, "no_crlf") == 0)
            ; /* the invariants check every header-derived field */
        else
            fail_at(name, "unknown expectation key %s", k);
    }
}

struct corpus {
    size_t n;
    char **names;
    char **data;
    size_t *len;
};

static struct corpus corpus;

static void corpus_load(void)
{
    glob_t g;

    if (corpus.n)
        return;
    if (glob(CORPUS "/*.eml", 0, NULL, &g) != 0)
        return;
    corpus.names = sb_calloc(g.gl_pathc, sizeof(char *));
    corpus.data = sb_calloc(g.gl_pathc, sizeof(char *));
    corpus.len = sb_calloc(g.gl_pathc, sizeof(size_t));
    for (size_t i = 0; i < g.gl_pathc; i++) {
        corpus.names[i] = sb_strdup(g.gl_pathv[i]);
        corpus.data[i] = t_slurp(g.gl_pathv[i], &corpus.len[i]);
        assert_non_null(corpus.data[i]);
    }
    corpus.n = g.gl_pathc;
    globfree(&g);
}

static void test_corpus(void **state)
{
    (void)state;
    corpus_load();
    /* the issue's list needs about 40 messages: a lost corpus must fail */
    assert_true(corpus.n >= 40);
    failures = 0;
    for (size_t i = 0; i < corpus.n; i++) {
        const char *name = strrchr(corpus.names[i], '/') + 1;
        char path[512], err[256];
        struct sb_mime_msg m;
        json_error_t jerr;
        json_t *exp;
        int rc;

        snprintf(path, sizeof(path), "%.*s.expect.json",
                 (int)(strlen(corpus.names[i]) - 4), corpus.names[i]);
        exp = json_load_file(path, 0, &jerr);
        if (!json_is_object(exp)) {
            fail_at(name, "no expectation (%s: %s)", path, jerr.text);
            json_decref(exp);
            continue;
        }
        rc = sb_mime_parse(corpus.data[i], corpus.len[i], NULL, &m, err,
                           sizeof(err));
        check_parse(name, rc, &m, err, NULL);
        check_expect(name, rc, err, &m, exp);
        sb_mime_free(&m);
        json_decref(exp);
    }
    print_message("corpus: %zu messages, %d failures\n", corpus.n, failures);
    assert_int_equal(failures, 0);
}

/* ---- generated inputs: bombs and big headers ------------------------- */

static int parse_refused(const char *what, const char *raw, size_t len,
                         const struct sb_mime_limits *lim, const char *want)
{
    struct sb_mime_msg m;
    char err[256] = "";
    double t0 = now_s(), dt;
    int rc;

    rc = sb_mime_parse(raw, len, lim, &m, err, sizeof(err));
    dt = now_s() - t0;
    print_message("%-34s %8zu bytes  %7.2f ms  %s\n", what, len, dt * 1e3,
                  rc ? err : "accepted");
    check_parse(what, rc, &m, err, lim);
    sb_mime_free(&m);
    if (want && (rc == 0 || !strstr(err, want))) {
        fail_at(what, "got \"%s\", want refused \"%s\"", rc ? err : "ok", want);
        return -1;
    }
    return rc;
}

/* A generated message (data is new). */
struct gen {
    char *data;
    size_t len;
};

static struct gen gen_of(struct sb_buf *b)
{
    struct gen g;

    g.data = sb_buf_steal(b, &g.len);
    return g;
}

/* A message made of a part repeated (or nested) n times: head, then each
 * n times (a printf format, given the index twice), then tail. */
struct pattern {
    const char *head, *each, *tail;
};

static struct gen repeat_n(const struct pattern *p, int n)
{
    struct sb_buf b;

    sb_buf_init(&b, 0);
    sb_buf_appends(&b, p->head);
    for (int i = 0; i < n; i++)
        sb_buf_printf(&b, p->each, i, i);
    sb_buf_appends(&b, p->tail);
    return gen_of(&b);
}

/* head, then fill until the message holds size bytes, then tail. */
static struct gen fill_to(const char *head, const char *fill, size_t size,
                          const char *tail)
{
    struct sb_buf b;

    sb_buf_init(&b, 0);
    sb_buf_appends(&b, head);
    while (b.len < size)
        sb_buf_appends(&b, fill);
    sb_buf_appends(&b, tail);
    return gen_of(&b);
}

/* "name: ", fill until the value holds size bytes, CRLF. */
static void append_field(struct sb_buf *b, const char *name, const char *fill,
                         size_t size)
{
    sb_buf_printf(b, "%s: ", name);
    for (size_t start = b->len; b->len - start < size;)
        sb_buf_appends(b, fill);
    sb_buf_appends(b, "\r\n");
}

/* parse_refused() on a generated message, which it frees. */
static int parse_gen(const char *what, struct gen g,
                     const struct sb_mime_limits *lim, const char *want)
{
    int rc = parse_refused(what, g.data, g.len, lim, want);

    free(g.data);
    return rc;
}

/* Parse a generated message (freed) with lim into *m: it must be
 * accepted, and keep the invariants (checked under name). */
static void parse_ok_gen(const char *name, struct gen g,
                         const struct sb_mime_limits *lim,
                         struct sb_mime_msg *m)
{
    char err[256];
    int rc = sb_mime_parse(g.data, g.len, lim, m, err, sizeof(err));

    free(g.data); /* the message owns all it holds */
    assert_int_equal(rc, 0);
    check_invariants(name, m, lim);
}

/* The same, for a message made with printf and the default limits. */
static void parse_ok(const char *name, struct sb_mime_msg *m, const char *fmt,
                     ...) __attribute__((format(printf, 3, 4)));

static void parse_ok(const char *name, struct sb_mime_msg *m, const char *fmt,
                     ...)
{
    struct sb_buf b;
    va_list ap;

    sb_buf_init(&b, 0);
    va_start(ap, fmt);
    sb_buf_vprintf(&b, fmt, ap);
    va_end(ap);
    parse_ok_gen(name, gen_of(&b), NULL, m);
}

#define HDR_TOP                                                                \
    "From: bomb@example.com\r\n"                                               \
    "To: support@example.com\r\n"                                              \
    "Subject: bomb\r\n"                                                        \
    "MIME-Version: 1.0\r\n"

/* Nesting bombs, n levels deep. */
static const struct pattern bomb_multipart = {
    HDR_TOP, "Content-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\n--b%d\r\n",
    "Content-Type: text/plain\r\n\r\ndeep\r\n"};
static const struct pattern bomb_one_boundary = {
    HDR_TOP, "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n",
    "Content-Type: text/plain\r\n\r\ndeep\r\n"};
static const struct pattern bomb_message = {
    HDR_TOP, "Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n",
    "\r\ndeep\r\n"};
/* multipart/digest: a part without Content-Type is a message/rfc822 */
static const struct pattern bomb_digest = {
    HDR_TOP,
    "Content-Type: multipart/digest; boundary=d%d\r\n\r\n"
    "--d%d\r\n\r\nSubject: in digest\r\n",
    "\r\ndeep\r\n"};
/* n parts in one multipart */
static const struct pattern many_parts = {
    HDR_TOP "Content-Type: multipart/mixed; boundary=p\r\n\r\n",
    "--p\r\n\r\nx\r\n", "--p--\r\n"};

/* n To headers of 60 KB, then a body. */
static struct gen to_headers(int n)
{
    struct sb_buf b;

    sb_buf_init(&b, 0);
    for (int k = 0; k < n; k++)
        append_field(&b, "To", "a@example.com, ", 60000);
    sb_buf_appends(&b, "\r\nbody\r\n");
    return gen_of(&b);
}

/* One generated input against a structural limit. */
struct limit_case {
    const char *what;
    const struct pattern *pattern; /* repeated n times */
    int n;                         /* levels, or parts */
    int max_depth;                 /* 0: the default (lim NULL when both are) */
    int max_parts;
    const char *want; /* the refusal wanted; NULL: accepted */
};

static void run_limit_cases(const struct limit_case *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct sb_mime_limits lim;
        int rc;

        sb_mime_limits_default(&lim);
        if (c[i].max_depth)
            lim.max_depth = c[i].max_depth;
        if (c[i].max_parts)
            lim.max_parts = c[i].max_parts;
        rc = parse_gen(c[i].what, repeat_n(c[i].pattern, c[i].n),
                       c[i].max_depth || c[i].max_parts ? &lim : NULL,
                       c[i].want);
        if (!c[i].want)
            assert_int_equal(rc, 0);
    }
}

static void test_nesting_bombs(void **state)
{
    static const struct limit_case cases[] = {
        {"10,000 nested multiparts", &bomb_multipart, 10000, 0, 0,
         "nesting deeper than 20"},
        {"10,000 multiparts, one boundary", &bomb_one_boundary, 10000, 0, 0,
         "nesting deeper than 20"},
        {"10,000 nested message/rfc822", &bomb_message, 10000, 0, 0,
         "nesting deeper than 20"},
        {"10,000 nested digests", &bomb_digest, 10000, 0, 0,
         "nesting deeper than 20"},
        /* the limit itself: depth 5 passes with max_depth 5, 6 does not */
        {"5 levels, max_depth 5", &bomb_multipart, 5, 5, 0, NULL},
        {"6 levels, max_depth 5", &bomb_multipart, 6, 5, 0,
         "nesting deeper than 5"},
        {"2 messages, max_depth 2", &bomb_message, 2, 2, 0, NULL},
        {"2 messages, max_depth 1", &bomb_message, 2, 1, 0,
         "nesting deeper than 1"},
    };

    (void)state;
    failures = 0;
    run_limit_cases(cases, SB_ARRAY_LEN(cases));
    assert_int_equal(failures, 0);
}

static void test_part_limit(void **state)
{
    static const struct limit_case cases[] = {
        {"501 parts", &many_parts, 500, 0, 0, "more than 500 parts"},
        {"100,000 parts", &many_parts, 100000, 0, 0, "more than 500 parts"},
        {"11 parts, max_parts 10", &many_parts, 10, 0, 10,
         "more than 10 parts"},
    };
    struct sb_mime_msg m;

    (void)state;
    failures = 0;
    /* 499 leaves + the multipart */
    parse_ok_gen("500 parts", repeat_n(&many_parts, 499), NULL, &m);
    assert_int_equal(m.parts, 500);
    sb_mime_free(&m);
    run_limit_cases(cases, SB_ARRAY_LEN(cases));
    assert_int_equal(failures, 0);
}

static void test_big_headers(void **state)
{
    /* each grown to 1 MB with fill */
    static const struct {
        const char *what, *head, *fill, *tail;
    } big[] = {
        /* a Subject folded over 16,000 lines */
        {"1 MB folded Subject", "From: big@example.com\r\nSubject: start",
         "\r\n continued words of a very long subject", "\r\n\r\nbody\r\n"},
        /* a line with no fold at all */
        {"1 MB unfolded header line", "From: big@example.com\r\nX-Long: ",
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
         "\r\n\r\nbody\r\n"},
        /* a header inside a part */
        {"1 MB header in a part",
         HDR_TOP "Content-Type: multipart/mixed; boundary=z\r\n\r\n"
                 "--z\r\nContent-Type: text/plain; name=\"",
         "\r\n xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
         "\"\r\n\r\nbody\r\n--z--\r\n"},
    };
    struct sb_mime_msg m;

    (void)state;
    failures = 0;
    for (size_t i = 0; i < SB_ARRAY_LEN(big); i++)
        parse_gen(big[i].what,
                  fill_to(big[i].head, big[i].fill, 1u << 20, big[i].tail),
                  NULL, "header field over 65536 bytes");

    /* just under the limit: accepted, and the subject is all there */
    parse_ok_gen("60 KB subject",
                 fill_to("From: big@example.com\r\nSubject: s", "\r\n word",
                         60000, "\r\n\r\nbody\r\n"),
                 NULL, &m);
    assert_true(strlen(m.subject) > 40000);
    assert_null(strchr(m.subject, '\n'));
    sb_mime_free(&m);
    assert_int_equal(failures, 0);
}

/* Headers built to make a parser slow: each is parsed or refused quickly
 * (the times are printed, not asserted). */
static void test_hostile_headers(void **state)
{
    static const char *const fills[] = {
        "=?a?B?xx?=",                /* encoded words, well formed */
        "=?utf-8?B?0J/RgNC4=?= ",    /* padded words: the bug-133 path */
        "\"<<<,,,@@@;;;:::\\\\\"",   /* address specials */
        "<a@b> ",                    /* message ids */
        "\xd0\xf0\xe8\xe2\xe5\xf2 ", /* undeclared 8-bit */
    };
    static const char *const names[] = {"Subject", "From", "To", "References",
                                        "Cc"};
    static const struct pattern unterminated = {
        "From: a@example.com\r\nSubject: ", "=?a?B?xx x", "\r\n\r\nbody\r\n"};
    static const struct pattern small_fields = {
        "", "X-A: b\r\n", "Subject: last\r\n\r\nbody\r\n"};
    char what[64];

    (void)state;
    failures = 0;
    for (size_t f = 0; f < SB_ARRAY_LEN(fills); f++) {
        struct sb_buf b;

        sb_buf_init(&b, 0);
        sb_buf_appends(&b, "Message-ID: <x@y>\r\n");
        for (size_t k = 0; k < SB_ARRAY_LEN(names); k++)
            append_field(&b, names[k], fills[f], 60000);
        sb_buf_appends(&b, "\r\nbody\r\n");
        snprintf(what, sizeof(what), "60 KB headers of \"%.12s\"", fills[f]);
        assert_int_equal(parse_gen(what, gen_of(&b), NULL, NULL), 0);
    }

    /* unterminated encoded words: GMime 3.2.13 rescans the field for each
     * one, so past 50 the field is refused; 50 of them are still parsed */
    for (int n = 50; n <= 4000; n += 3950) {
        snprintf(what, sizeof(what), "%d unterminated encoded words", n);
        parse_gen(what, repeat_n(&unterminated, n), NULL,
                  n > 50 ? "more than 50 broken encoded words" : NULL);
    }

    /* 400 To headers of 60 KB, and 500,000 small header fields; 15 To
     * headers of 60 KB are under the block cap */
    parse_gen("400 To headers of 60 KB", to_headers(400), NULL,
              "header block over 1048576 bytes");
    parse_gen("500,000 header fields", repeat_n(&small_fields, 500000), NULL,
              "header block over 1048576 bytes");
    assert_int_equal(
        parse_gen("15 To headers of 60 KB", to_headers(15), NULL, NULL), 0);
    assert_int_equal(failures, 0);
}

static void test_refusals(void **state)
{
    struct sb_mime_limits lim;
    struct sb_mime_msg m;
    char err[128], want[64];
    static const char ok[] = "From: a@example.com\r\nSubject: s\r\n\r\nx\r\n";

    (void)state;
    failures = 0;
    sb_mime_limits_default(&lim);
    lim.max_size = 10;
    parse_refused("over max_size", ok, strlen(ok), &lim, "too large: ");
    assert_int_equal(sb_mime_parse(ok, strlen(ok), &lim, &m, err, sizeof(err)),
                     -1);
    snprintf(want, sizeof(want), "too large: %zu bytes", strlen(ok));
    assert_string_equal(err, want);
    parse_refused("empty", "", 0, NULL, "no header");
    parse_refused("NULL", NULL, 0, NULL, "no header");
    parse_refused("binary junk", "\x01\x02\x03\xff\xfe", 5, NULL, "no header");
    parse_refused("only a BOM", "\xef\xbb\xbf", 3, NULL, "no header");
    parse_refused("blank line first", "\r\nFrom: a@b\r\n", 13, NULL,
                  "no header");
    /* no err buffer at all, and a header-only message without newline */
    assert_int_equal(sb_mime_parse("x", 1, NULL, &m, NULL, 0), -1);
    assert_int_equal(
        sb_mime_parse("Subject: s\r\nFoo", 16, NULL, &m, err, sizeof(err)), 0);
    assert_string_equal(m.subject, "s");
    assert_string_equal(m.text, "");
    assert_string_equal(m.from.addr, "");
    assert_null(m.html);
    assert_null(m.message_id);
    assert_null(m.return_path);
    assert_non_null(m.references);
    assert_null(m.references[0]);
    sb_mime_free(&m);
    sb_mime_free(&m); /* freeing twice is harmless: it was emptied */
    sb_mime_free(NULL);
    assert_int_equal(failures, 0);
}

/* ---- caps ------------------------------------------------------------ */

static void test_caps(void **state)
{
    /* 100 times 2-byte characters: 400 bytes of text, then two
     * attachments */
    static const struct pattern two_atts = {
        HDR_TOP "Content-Type: multipart/mixed; boundary=c\r\n\r\n"
                "--c\r\nContent-Type: text/plain; charset=utf-8\r\n"
                "Content-Transfer-Encoding: 8bit\r\n\r\n",
        "Жж",
        "\r\n--c\r\nContent-Type: application/zip\r\n"
        "Content-Disposition: attachment; filename=a.zip\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n"
        "UEsDBAoAAAAAAAAAIQAAAAAAAAAAAAAAAAAAAAAA\r\n"
        "--c\r\nContent-Type: image/gif\r\n"
        "Content-Disposition: attachment; filename=b.gif\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n"
        "R0lGODlh\r\n--c--\r\n"};
    struct sb_mime_limits lim;
    struct sb_mime_msg m;
    char *sum;
    guchar *zip;
    gsize zlen;

    (void)state;
    failures = 0;
    sb_mime_limits_default(&lim);
    lim.max_text = 101; /* odd: the cut must back off to a boundary */
    lim.max_attachment = 10;
    parse_ok_gen("caps", repeat_n(&two_atts, 100), &lim, &m);
    assert_int_equal(m.text_truncated, 1);
    assert_int_equal(strlen(m.text), 100);
    assert_int_equal(m.natts, 2);
    assert_int_equal(m.atts[0].size, 30);
    assert_int_equal(m.atts[0].truncated, 1);
    assert_null(m.atts[0].data);
    zip = g_base64_decode("UEsDBAoAAAAAAAAAIQAAAAAAAAAAAAAAAAAAAAAA", &zlen);
    sum = g_compute_checksum_for_data(G_CHECKSUM_SHA256, zip, zlen);
    assert_int_equal(zlen, 30);
    assert_string_equal(m.atts[0].sha256, sum);
    g_free(sum);
    g_free(zip);
    assert_int_equal(m.atts[1].size, 6);
    assert_int_equal(m.atts[1].truncated, 0);
    assert_memory_equal(m.atts[1].data, "GIF89a", 6);
    sb_mime_free(&m);
    assert_int_equal(failures, 0);
}

/* ---- charsets -------------------------------------------------------- */

struct cyr_case {
    const char *utf8;
    const char *charset; /* how it is sent, undeclared */
};

static void test_undeclared_cyrillic(void **state)
{
    static const struct cyr_case cases[] = {
        {"Привет", "KOI8-R"},
        {"Привет", "WINDOWS-1251"},
        {"Счёт на оплату", "KOI8-R"},
        {"Счёт на оплату", "WINDOWS-1251"},
        {"СРОЧНО: ОПЛАТА", "WINDOWS-1251"},
        {"СРОЧНО: ОПЛАТА", "KOI8-R"},
        {"Да", "WINDOWS-1251"},
        {"Вопрос", "KOI8-R"},
        {"Заявка №5 от ООО «Вектор»", "WINDOWS-1251"},
        {"Ошибка при оплате картой", "KOI8-R"},
        {"Re: Доставка", "KOI8-R"},
        {"Re: Доставка", "WINDOWS-1251"},
    };
    int wrong = 0;

    (void)state;
    failures = 0;
    for (size_t i = 0; i < SB_ARRAY_LEN(cases); i++) {
        gsize n = 0;
        gchar *enc = g_convert(cases[i].utf8, -1, cases[i].charset, "UTF-8",
                               NULL, &n, NULL);
        struct sb_mime_msg m;

        assert_non_null(enc);
        assert_int_equal(strlen(enc), n); /* no NUL: %s takes it whole */
        parse_ok(cases[i].utf8, &m,
                 "From: a@example.ru\r\nSubject: %s\r\n"
                 "Content-Type: text/plain\r\n\r\n%s\r\n",
                 enc, enc);
        if (strcmp(m.subject, cases[i].utf8) != 0 ||
            strncmp(m.text, cases[i].utf8, strlen(cases[i].utf8)) != 0) {
            print_message("%s as %s: subject \"%s\"\n", cases[i].utf8,
                          cases[i].charset, m.subject);
            wrong++;
        }
        sb_mime_free(&m);
        g_free(enc);
    }
    assert_int_equal(wrong, 0);
    assert_int_equal(failures, 0);
}

static void test_fallback_list(void **state)
{
    static const char *const latin[] = {"utf-8", "iso-8859-1", NULL};
    static const char *const only_koi[] = {"koi8-r", NULL};
    static const char msg[] = "From: a@example.com\r\nSubject: x\r\n"
                              "Content-Type: text/plain\r\n\r\n"
                              "caf\xe9 cr\xe8me\r\n";
    struct sb_mime_limits lim;
    struct sb_mime_msg m;
    char err[128];

    (void)state;
    sb_mime_limits_default(&lim);
    lim.fallback_charsets = latin;
    assert_int_equal(
        sb_mime_parse(msg, strlen(msg), &lim, &m, err, sizeof(err)), 0);
    assert_string_equal(m.text, "café crème\n");
    assert_string_equal(m.charsets[0], "iso-8859-1");
    sb_mime_free(&m);
    lim.fallback_charsets = only_koi;
    assert_int_equal(
        sb_mime_parse(msg, strlen(msg), &lim, &m, err, sizeof(err)), 0);
    assert_string_equal(m.charsets[0], "koi8-r");
    assert_true(sb_utf8_valid(m.text, strlen(m.text)));
    sb_mime_free(&m);
}

/* ---- HTML to text ---------------------------------------------------- */

struct html_case {
    const char *html;
    const char *text;
};

static void test_html_to_text(void **state)
{
    static const struct html_case cases[] = {
        {"<p>a</p><p>b</p>", "a\n\nb"},
        {"one<br>two<br><br>three", "one\ntwo\n\nthree"},
        {"  lots   of\n\n  space  ", "lots of space"},
        {"<pre>keep   this\n  indented</pre>after",
         "keep   this\n  indented\n\nafter"},
        {"x &lt;&gt;&amp;&quot;&#39;&#x41;&#150;&nbsp;y", "x <>&\"'A– y"},
        {"&#0;&#xD800;&#x110000;&bogus;&amp", "\xef\xbf\xbd\xef\xbf\xbd"
                                              "\xef\xbf\xbd&bogus;&"},
        {"<a href='https://e.x/?q=\"a>b\"'>link</a>",
         "link <https://e.x/?q=\"a>b\">"},
        {"<a href=\"https://same.example\">https://same.example</a>",
         "https://same.example"},
        {"<a href=\"javascript:alert(1)\">click</a>", "click"},
        {"<ul><li>a<ul><li>b</li></ul></li><li>c</li></ul>", "- a\n- b\n- c"},
        {"<script>alert('x')</script>visible<style>p{}</style>", "visible"},
        {"text<script>never closed", "text"},
        {"before<!-- comment never closed", "before"},
        {"a&#11;b&#x1b;c&#127;d", "a b c d"}, /* controls: white space */
        {"a<b", "a"}, /* a tag left open runs to the end */
        {"a < b > c", "a < b > c"},
        {"<div title=\"unclosed>text", "text"},
        {"<blockquote>q1<blockquote>q2</blockquote></blockquote>after",
         "> q1\n\n> > q2\n\nafter"},
        {"<table><tr><td>1</td><td>2</td></tr><tr><td>3</td></tr></table>",
         "1 2\n3"},
        {"<HEAD><TITLE>t</TITLE></HEAD><BODY>B&Uuml;r&ouml;</BODY>", "BÜrö"},
        {"<head><meta charset=utf-8>no end of head", "no end of head"},
    };
    int wrong = 0;

    (void)state;
    failures = 0;
    for (size_t i = 0; i < SB_ARRAY_LEN(cases); i++) {
        struct sb_mime_msg m;

        parse_ok(cases[i].html, &m,
                 "From: a@example.com\r\nContent-Type: text/html;"
                 " charset=utf-8\r\n\r\n%s",
                 cases[i].html);
        if (strcmp(m.text, cases[i].text) != 0) {
            print_message("html [%s]\n  got  [%s]\n  want [%s]\n",
                          cases[i].html, m.text, cases[i].text);
            wrong++;
        }
        sb_mime_free(&m);
    }
    assert_int_equal(wrong, 0);
    assert_int_equal(failures, 0);
}

/* A big, hostile HTML body stays linear. */
static void test_html_linear(void **state)
{
    struct gen g = fill_to("From: a@example.com\r\nContent-Type: text/html\r\n"
                           "\r\n",
                           "<a href=\"x <b title='y <i <!-- &#x <p>&amp"
                           "<head><head>",
                           4u << 20, "");
    struct sb_mime_msg m;
    char err[128];
    double t0;

    (void)state;
    t0 = now_s();
    assert_int_equal(sb_mime_parse(g.data, g.len, NULL, &m, err, sizeof(err)),
                     0);
    print_message("4 MB hostile HTML: %.1f ms\n", (now_s() - t0) * 1e3);
    failures = 0;
    check_invariants("hostile html", &m, NULL);
    assert_int_equal(failures, 0);
    sb_mime_free(&m);
    free(g.data);
}

/* ---- quoted history -------------------------------------------------- */

struct quote_case {
    const char *text;
    const char *starts; /* NULL: no quote */
};

static void test_quotes(void **state)
{
    static const struct quote_case cases[] = {
        {"Yes.\n\nOn Mon, 1 Jan 2024, Bob wrote:\n> question\n",
         "On Mon, 1 Jan 2024"},
        {"Yes.\n\n> question\n> more\n", "> question"},
        {"Yes.\n\nBob <b@x> wrote:\n\n> q\n>\n> q2\n\n", "Bob <b@x> wrote:"},
        /* replies between the quoted lines: nothing to fold */
        {"On Mon, Bob wrote:\n> q1\nanswer 1\n> q2\nanswer 2\n", NULL},
        /* nothing new before the quote: nothing to fold */
        {"> only quoted\n> text\n", NULL},
        {"\n\nOn Mon, Bob wrote:\n> q\n", NULL},
        {"Ok\n\n-----Original Message-----\nFrom: x\n", "-----Original"},
        {"Ok\n\n-----Исходное сообщение-----\nОт: x\n", "-----Исходное"},
        {"Ok\n\n________________________________\nFrom: Bob\nSent: Monday\n",
         "______"},
        {"Ok\n\nFrom: Bob <b@x>\nSent: Monday\nTo: me\n", "From: Bob"},
        {"Принято.\n\n01.02.2024, 10:00, Иван пишет:\n> вопрос\n",
         "01.02.2024, 10:00, Иван пишет:"},
        {"Ок\n\nПн, 1 янв. 2024 г. Иван <i@x> написал(а):\n\n> вопрос\n",
         "Пн, 1 янв."},
        {"Ок\n\nпн, 4 мар. 2024 г. в 10:00, Support <s@x>:\n> вопрос\n",
         "пн, 4 мар."},
        {"I wrote: this line ends with a colon:\nand goes on\n", NULL},
        {"Plain text without history.\n", NULL},
    };
    int wrong = 0;

    (void)state;
    failures = 0;
    for (size_t i = 0; i < SB_ARRAY_LEN(cases); i++) {
        struct sb_mime_msg m;
        int ok;

        parse_ok(cases[i].text, &m,
                 "From: a@example.com\r\nContent-Type: text/plain;"
                 " charset=utf-8\r\n\r\n%s",
                 cases[i].text);
        if (cases[i].starts)
            ok = m.quote_offset >= 0 &&
                 strncmp(m.text + m.quote_offset, cases[i].starts,
                         strlen(cases[i].starts)) == 0;
        else
            ok = m.quote_offset == -1;
        if (!ok) {
            print_message("quote in [%s]: at %ld, want %s\n", cases[i].text,
                          m.quote_offset,
                          cases[i].starts ? cases[i].starts : "none");
            wrong++;
        }
        sb_mime_free(&m);
    }
    assert_int_equal(wrong, 0);
    assert_int_equal(failures, 0);
}

/* ---- garbage --------------------------------------------------------- */

/* Random and mutated inputs: anything may be refused, nothing may break
 * an invariant. xorshift, fixed seed: reproducible. */
static void test_garbage(void **state)
{
    uint64_t x = 0x9e3779b97f4a7c15ull;
    int accepted = 0;

    (void)state;
    corpus_load();
    failures = 0;
    for (int i = 0; i < 3000; i++) {
        struct sb_mime_msg m;
        char err[256];
        size_t len;
        char *buf;
        int rc;

        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if (corpus.n && (i & 1)) {
            /* a corpus message with a few bytes changed or cut */
            size_t k = (size_t)(x % corpus.n);
            len = corpus.len[k];
            buf = sb_malloc(len + 1);
            memcpy(buf, corpus.data[k], len);
            for (int j = 0; j < 8 && len; j++) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf[x % len] = (char)(x >> 32);
            }
            if (i % 3 == 0)
                len = (size_t)((x >> 20) % (len + 1));
        } else {
            len = (size_t)(x % 2048);
            buf = sb_malloc(len + 1);
            for (size_t j = 0; j < len; j++) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf[j] = "From: a@b\r\n:-=?Bq<>\x80\xd0\xff\0"[x % 24];
            }
        }
        rc = sb_mime_parse(buf, len, NULL, &m, err, sizeof(err));
        check_parse("garbage", rc, &m, err, NULL);
        accepted += rc == 0;
        sb_mime_free(&m);
        free(buf);
    }
    print_message("garbage: 3000 inputs, %d accepted\n", accepted);
    assert_int_equal(failures, 0);
}

/* ---- threads and speed ----------------------------------------------- */

/* A digest of one parse, to compare runs. */
static char *summary(const char *raw, size_t len)
{
    struct sb_mime_msg m;
    char err[256];
    char *s;

    if (sb_mime_parse(raw, len, NULL, &m, err, sizeof(err)) != 0)
        return sb_asprintf("refused %s", err);
    s = sb_asprintf("%s|%s|%s|%zu|%d|%ld|%s", m.subject, m.from.addr, m.text,
                    m.natts, m.parts, m.quote_offset,
                    m.natts ? m.atts[m.natts - 1].sha256 : "");
    sb_mime_free(&m);
    return s;
}

struct worker {
    pthread_t tid;
    char **expected;
    int rounds;
    int mismatches;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;

    for (int r = 0; r < w->rounds; r++) {
        for (size_t i = 0; i < corpus.n; i++) {
            size_t k = (i + (size_t)r * 7) % corpus.n;
            char *s = summary(corpus.data[k], corpus.len[k]);
            if (strcmp(s, w->expected[k]) != 0)
                w->mismatches++;
            free(s);
        }
    }
    return NULL;
}

static void test_threads(void **state)
{
    struct worker w[4];
    char **expected;
    int total = 0;

    (void)state;
    corpus_load();
    assert_true(corpus.n > 0);
    expected = sb_calloc(corpus.n, sizeof(char *));
    for (size_t i = 0; i < corpus.n; i++)
        expected[i] = summary(corpus.data[i], corpus.len[i]);
    for (int t = 0; t < 4; t++) {
        w[t].expected = expected;
        w[t].rounds = 5;
        w[t].mismatches = 0;
        assert_int_equal(pthread_create(&w[t].tid, NULL, worker_main, &w[t]),
                         0);
    }
    for (int t = 0; t < 4; t++) {
        pthread_join(w[t].tid, NULL);
        total += w[t].mismatches;
    }
    for (size_t i = 0; i < corpus.n; i++)
        free(expected[i]);
    free(expected);
    assert_int_equal(total, 0);
}

static void test_rate(void **state)
{
    size_t bytes = 0, msgs = 0;
    double t0, dt;

    (void)state;
    corpus_load();
    assert_true(corpus.n > 0);
    t0 = now_s();
    do {
        for (size_t i = 0; i < corpus.n; i++) {
            struct sb_mime_msg m;
            char err[256];
            if (sb_mime_parse(corpus.data[i], corpus.len[i], NULL, &m, err,
                              sizeof(err)) == 0)
                sb_mime_free(&m);
            bytes += corpus.len[i];
            msgs++;
        }
        dt = now_s() - t0;
    } while (dt < 1.0 && msgs < 1000000);
    print_message("corpus rate: %zu messages in %.2f s = %.0f messages/s, "
                  "%.1f MB/s (one thread)\n",
                  msgs, dt, (double)msgs / dt, (double)bytes / dt / 1e6);
}

/* ---- the shared MimeKit corpus (optional) ---------------------------- */

static void replay_dir(const char *dir, int *count)
{
    DIR *d = opendir(dir);
    struct dirent *e;

    if (!d)
        return;
    while ((e = readdir(d)) != NULL) {
        char path[4096];
        struct stat st;
        struct sb_mime_msg m;
        char err[256];
        size_t len;
        char *raw;

        if (e->d_name[0] == '.' || strcmp(e->d_name, "LICENSE") == 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (stat(path, &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode)) {
            replay_dir(path, count);
            continue;
        }
        raw = t_slurp(path, &len);
        if (!raw)
            continue;
        check_parse(e->d_name,
                    sb_mime_parse(raw, len, NULL, &m, err, sizeof(err)), &m,
                    err, NULL);
        sb_mime_free(&m);
        free(raw);
        (*count)++;
    }
    closedir(d);
}

static void test_shared_corpus(void **state)
{
    const char *base = getenv("SB_CORPORA");
    char dir[4096];
    int count = 0;

    (void)state;
    snprintf(dir, sizeof(dir), "%s/mime", base ? base : "../shared/corpora");
    failures = 0;
    replay_dir(dir, &count);
    if (count == 0)
        skip();
    print_message("shared corpus: %d files\n", count);
    assert_int_equal(failures, 0);
}

static int setup(void **state)
{
    (void)state;
    sb_mime_init();
    sb_mime_init(); /* idempotent */
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (size_t i = 0; i < corpus.n; i++) {
        free(corpus.names[i]);
        free(corpus.data[i]);
    }
    free(corpus.names);
    free(corpus.data);
    free(corpus.len);
    sb_mime_shutdown();
    sb_mime_shutdown();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_corpus),
        cmocka_unit_test(test_nesting_bombs),
        cmocka_unit_test(test_part_limit),
        cmocka_unit_test(test_big_headers),
        cmocka_unit_test(test_hostile_headers),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_caps),
        cmocka_unit_test(test_undeclared_cyrillic),
        cmocka_unit_test(test_fallback_list),
        cmocka_unit_test(test_html_to_text),
        cmocka_unit_test(test_html_linear),
        cmocka_unit_test(test_quotes),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_rate),
        cmocka_unit_test(test_shared_corpus),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
