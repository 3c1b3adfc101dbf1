/* fuzz_mime.c - libFuzzer target for inbound e-mail parsing.
 *
 * The input is one raw message, fed to sb_mime_parse() twice: with the
 * default limits and with tiny ones (depth 3, 20 parts, 256-byte header
 * fields, 16-byte attachments, 64 bytes of text), so the caps and the
 * refusal paths are exercised as much as the parsing. Invariants that
 * abort(): a refusal has a printable reason and leaves *out empty; an
 * accepted message has every string valid UTF-8, no control character in
 * any header-derived field, text within max_text without control
 * characters other than tab and newline, a quote offset at a line start
 * inside the text, 1..max_parts parts, kept attachment data within the cap
 * and matching its sha256; parsing the same bytes again gives the same
 * subject, text and attachment count.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>

#include "mime.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_field(const char *s, int may_be_null)
{
    if (!s) {
        if (!may_be_null)
            abort();
        return;
    }
    if (!sb_utf8_valid(s, strlen(s)))
        abort();
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            abort();
}

static void check_msg(const struct sb_mime_msg *m,
                      const struct sb_mime_limits *lim)
{
    size_t tl;

    check_field(m->message_id, 1);
    check_field(m->in_reply_to, 1);
    if (!m->references || !m->charsets)
        abort();
    for (char **r = m->references; *r; r++)
        check_field(*r, 0);
    for (char **c = m->charsets; *c; c++)
        check_field(*c, 0);
    check_field(m->from.name, 0);
    check_field(m->from.addr, 0);
    check_field(m->reply_to.name, 0);
    check_field(m->reply_to.addr, 0);
    for (size_t i = 0; i < m->nto; i++) {
        check_field(m->to[i].name, 0);
        check_field(m->to[i].addr, 0);
    }
    for (size_t i = 0; i < m->ncc; i++) {
        check_field(m->cc[i].name, 0);
        check_field(m->cc[i].addr, 0);
    }
    check_field(m->return_path, 1);
    check_field(m->subject, 0);
    check_field(m->auto_reason, 1);
    check_field(m->dsn.original_message_id, 1);
    check_field(m->dsn.recipient, 1);
    check_field(m->dsn.action, 1);
    check_field(m->dsn.status, 1);
    check_field(m->dsn.diagnostic, 1);
    if (m->automatic != (m->auto_reason != NULL) ||
        (m->is_dsn && !m->automatic))
        abort();
    if (!m->text)
        abort();
    tl = strlen(m->text);
    if (tl > lim->max_text || !sb_utf8_valid(m->text, tl))
        abort();
    for (size_t i = 0; i < tl; i++)
        if ((unsigned char)m->text[i] < 0x20 && m->text[i] != '\n' &&
            m->text[i] != '\t')
            abort();
    if (m->html && (strlen(m->html) > lim->max_text ||
                    !sb_utf8_valid(m->html, strlen(m->html))))
        abort();
    if (m->quote_offset < -1 ||
        (m->quote_offset >= 0 && (size_t)m->quote_offset >= tl + (tl == 0)))
        abort();
    if (m->quote_offset > 0 && m->text[m->quote_offset - 1] != '\n')
        abort();
    if (m->parts < 1 || m->parts > lim->max_parts)
        abort();
    for (size_t i = 0; i < m->natts; i++) {
        const struct sb_mime_att *a = &m->atts[i];
        check_field(a->filename, 0);
        check_field(a->content_type, 0);
        check_field(a->content_id, 1);
        if (strchr(a->filename, '/') || strchr(a->filename, '\\'))
            abort();
        if (strlen(a->sha256) != 64 || a->truncated != (a->data == NULL))
            abort();
        if (a->data) {
            gchar *sum;
            if (a->size > lim->max_attachment)
                abort();
            sum = g_compute_checksum_for_data(G_CHECKSUM_SHA256, a->data,
                                              a->size);
            if (strcmp(sum, a->sha256) != 0)
                abort();
            g_free(sum);
        }
    }
}

static void run(const char *raw, size_t len, const struct sb_mime_limits *lim)
{
    struct sb_mime_msg m, again;
    char err[256];

    memset(err, 'x', sizeof(err));
    if (sb_mime_parse(raw, len, lim, &m, err, sizeof(err)) != 0) {
        size_t n = strnlen(err, sizeof(err));
        if (n == 0 || n == sizeof(err))
            abort();
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)err[i] < 0x20)
                abort();
        if (m.subject || m.text || m.references || m.atts)
            abort();
        sb_mime_free(&m);
        return;
    }
    check_msg(&m, lim);
    if (sb_mime_parse(raw, len, lim, &again, err, sizeof(err)) != 0 ||
        strcmp(m.subject, again.subject) != 0 ||
        strcmp(m.text, again.text) != 0 || m.natts != again.natts)
        abort();
    sb_mime_free(&again);
    sb_mime_free(&m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    struct sb_mime_limits lim;
    char *raw;

    if (!ready) {
        sb_mime_init();
        ready = 1;
    }
    /* an exact-size copy so any overread is caught by ASan */
    raw = sb_malloc(size ? size : 1);
    memcpy(raw, data, size);
    sb_mime_limits_default(&lim);
    run(raw, size, &lim);
    lim.max_depth = 3;
    lim.max_parts = 20;
    lim.max_header = 256;
    lim.max_attachment = 16;
    lim.max_text = 64;
    run(raw, size, &lim);
    free(raw);
    return 0;
}
