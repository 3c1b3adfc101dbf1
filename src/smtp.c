/* smtp.c - outbound mail: the MIME builder and a libesmtp client on
 * threads of its own.
 *
 * sb_mail_build() turns a struct sb_mail into RFC 5322 text: headers
 * checked for injection (CR, LF, invalid UTF-8), non-ASCII display names
 * and subjects as RFC 2047 encoded words (Q or B, whichever is shorter,
 * never splitting a character, folded under 78 columns), bodies
 * normalised to CRLF and sent quoted-printable or base64 (the shorter),
 * with an HTML alternative as multipart/alternative. Every line ends in
 * CRLF and is at most 998 bytes; a final scan refuses anything else.
 *
 * The client (struct sb_smtp) owns conf->threads threads made with
 * uv_thread_create (not the libuv worker pool: a relay that hangs until
 * its timeout must not starve MIME parsing or DNS). sb_smtp_submit()
 * stages a copy of the message on the loop thread and wakes the client's
 * uv_async_t; its callback, on the next loop pass, moves everything
 * staged onto the shared queue (mutex) and signals a condition variable,
 * so messages submitted in one pass end up in one session. A thread takes
 * up to max_per_session waiting jobs and sends them in one libesmtp
 * session, one smtp_message_t per job. Results go on a done list and the
 * thread wakes the loop through the same uv_async_t, whose callback runs
 * each job's callback on the loop thread. Outcomes come from
 * smtp_reverse_path_status(), smtp_recipient_status() and
 * smtp_message_transfer_status(); when none says anything (no
 * connection, timeout, STARTTLS missing or failed) the reason is pieced
 * together from libesmtp's events, its protocol monitor and smtp_errno().
 *
 * What libesmtp 1.1.0 does and does not do, found by reading it and by
 * the unit tests: it dot-stuffs every line of the message it sends, but
 * it splits lines on CRLF only, so a lone LF or CR followed by "." would
 * reach the relay unstuffed; sb_smtp_submit() therefore normalises the
 * copy it keeps to CRLF and makes it end with one. It passes our headers
 * through and adds none of its own when Date, From, To and Message-ID are
 * present. It cannot be interrupted, connect() has no timeout of its own
 * (a black-holed relay costs the kernel's SYN retries, about two
 * minutes), and every command timeout is at least one second. It reports
 * neither an AUTH failure nor a timeout as such: the monitor callback
 * watches the AUTH exchange, and a failure after timeout_ms of silence is
 * called a timeout. It carries on unauthenticated after a refused AUTH,
 * so when AUTH was configured and refused no message of that session
 * counts as accepted unless the relay still said 250 after DATA.
 *
 * Closing never blocks the loop on a session: sb_smtp_close() cancels the
 * waiting jobs and flags the threads; each thread finishes its session,
 * hands its results over, counts itself out under the mutex and wakes the
 * loop. The async callback joins a thread only after it has counted
 * itself out (so the join returns at once: the thread has nothing left to
 * do but return), and once all have, closes the async handle, whose close
 * callback frees the client.
 *
 * TLS: one SSL_CTX per client, shared by its sessions (libesmtp takes a
 * reference per session). With verify_cert the handshake itself checks
 * the chain (ca_file, else the system store) and the host name or IP
 * address (X509_VERIFY_PARAM), so a bad certificate fails the handshake;
 * libesmtp's own name check, which ignores IP addresses, is then
 * answered by X509_check_host()/X509_check_ip_asc(). Without verify_cert
 * every certificate is accepted (encryption without authentication).
 * TLS is capped at 1.2 to dodge a libesmtp 1.1.0 bug with TLS 1.3 (see
 * make_ssl_ctx()).
 */
#include "smtp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <auth-client.h>
#include <libesmtp.h>

#include "log.h"

#define PLACE "core.smtp"

#define MAIL_MAX_ADDR 254       /* RFC 5321 path minus the <> */
#define MAIL_MAX_MSGID 250
#define MAIL_MAX_REFS 8192
#define MAIL_MAX_URL 900
#define MAIL_MAX_NAME 256       /* display names, bytes */
#define MAIL_MAX_SUBJECT 2048
#define MAIL_FOLD 78            /* header line target */
#define MAIL_MAX_LINE 998       /* hard limit without CRLF */

#define SMTP_DEF_TIMEOUT_MS 30000L
#define SMTP_DEF_THREADS 2
#define SMTP_MAX_THREADS 64
#define SMTP_DEF_PER_SESSION 100
#define SMTP_MAX_PER_SESSION 10000
#define SMTP_DEF_QUEUE 10000
#define SMTP_MAX_DATA (64u << 20)   /* one message, bytes */
#define SMTP_CHUNK (64 << 10)       /* bytes handed to libesmtp at once */
#define SMTP_REASON_MAX 200

/* ======================================================================
 * Building
 * ====================================================================== */

/* Output with a sticky error: once an append hits the buffer's cap,
 * every later one is skipped and the build fails at the end. */
struct mw {
    struct sb_buf *b;
    int err;
};

static void mw_put(struct mw *w, const void *p, size_t n)
{
    if (!w->err && sb_buf_append(w->b, p, n) < 0)
        w->err = 1;
}

static void mw_puts(struct mw *w, const char *s)
{
    mw_put(w, s, strlen(s));
}

static void mw_putc(struct mw *w, char c)
{
    mw_put(w, &c, 1);
}

/* ---- checks ---------------------------------------------------------- */

static int has_crlf(const char *s)
{
    return strpbrk(s, "\r\n") != NULL;
}

static int utf8_ok(const char *s)
{
    return sb_utf8_valid(s, strlen(s));
}

/* "left@right" in n bytes, at most max: printable ASCII, exactly one "@"
 * with something on each side, none of the characters that would need
 * quoting or could end the field. Both an address and a msg-id without
 * its <> must be this. */
static int at_word_ok(const char *s, size_t n, size_t max)
{
    size_t at = 0, i, pos = 0;

    if (n < 3 || n > max)
        return 0;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c <= 0x20 || c >= 0x7f || strchr("<>,\"()[]\\;:", c))
            return 0;
        if (c == '@') {
            at++;
            pos = i;
        }
    }
    return at == 1 && pos > 0 && pos < n - 1;
}

static int addr_ok(const char *a)
{
    return at_word_ok(a, strlen(a), MAIL_MAX_ADDR);
}

static int msgid_ok(const char *s, size_t n)
{
    return at_word_ok(s, n, MAIL_MAX_MSGID);
}

/* Space-separated msg-ids (References); counts them through *count. */
static int refs_ok(const char *s, size_t *count)
{
    const char *p = s;

    *count = 0;
    if (strlen(s) > MAIL_MAX_REFS)
        return 0;
    while (*p) {
        size_t n;

        while (*p == ' ')
            p++;
        if (!*p)
            break;
        n = strcspn(p, " ");
        if (!msgid_ok(p, n))
            return 0;
        (*count)++;
        p += n;
    }
    return *count > 0;
}

static int url_ok(const char *u)
{
    size_t n = strlen(u), i;

    if (n > MAIL_MAX_URL)
        return 0;
    if (strncasecmp(u, "https://", 8) != 0 && strncasecmp(u, "mailto:", 7) &&
        strncasecmp(u, "http://", 7) != 0)
        return 0;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)u[i];

        if (c <= 0x20 || c >= 0x7f || c == '<' || c == '>' || c == '"')
            return 0;
    }
    return n > 8;
}

static int token_ok(const char *s)
{
    size_t n = strlen(s), i;

    if (n == 0 || n > 64)
        return 0;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '-'))
            return 0;
    }
    return 1;
}

/* ---- RFC 2047 encoded words ------------------------------------------ */

static const char b64_tab[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void b64_put(struct mw *w, const unsigned char *p, size_t n)
{
    char q[4];

    while (n > 0) {
        unsigned v = (unsigned)p[0] << 16;

        if (n > 1)
            v |= (unsigned)p[1] << 8;
        if (n > 2)
            v |= p[2];
        q[0] = b64_tab[(v >> 18) & 63];
        q[1] = b64_tab[(v >> 12) & 63];
        q[2] = n > 1 ? b64_tab[(v >> 6) & 63] : '=';
        q[3] = n > 2 ? b64_tab[v & 63] : '=';
        mw_put(w, q, 4);
        if (n <= 3)
            break;
        p += 3;
        n -= 3;
    }
}

/* Characters an RFC 2047 "Q" word may carry as themselves anywhere,
 * phrases included (RFC 2047 5(3)); the rest become =XX, space "_". */
static int q_plain(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '!' || c == '*' || c == '+' ||
           c == '-' || c == '/';
}

static size_t q_cost(unsigned char c)
{
    return q_plain(c) || c == ' ' ? 1 : 3;
}

static void q_put(struct mw *w, const unsigned char *p, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t i;

    for (i = 0; i < n; i++) {
        if (q_plain(p[i])) {
            mw_putc(w, (char)p[i]);
        } else if (p[i] == ' ') {
            mw_putc(w, '_');
        } else {
            char e[3] = {'=', hex[p[i] >> 4], hex[p[i] & 15]};

            mw_put(w, e, 3);
        }
    }
}

#define EW_OVERHEAD 12 /* "=?UTF-8?B?" and "?=" */

/* Write s (valid UTF-8) as encoded words starting at column col, folding
 * (CRLF SP) before a word that would pass MAIL_FOLD columns; each word
 * holds whole characters and is at most 75 columns (RFC 2047 2). Returns
 * the column after the last word. */
static size_t put_words(struct mw *w, size_t col, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s), qlen = 0, blen, i = 0;
    int use_q;

    for (i = 0; i < n; i++)
        qlen += q_cost(p[i]);
    blen = (n + 2) / 3 * 4;
    use_q = qlen <= blen;
    i = 0;
    while (i < n) {
        size_t budget, start = i, cost = 0;

        /* Later words go on lines of their own; the first one too when
         * too little of its line is left. */
        if (start > 0 || col + EW_OVERHEAD + 12 > MAIL_FOLD) {
            mw_puts(w, "\r\n ");
            col = 1;
        }
        budget = MAIL_FOLD - col;
        if (budget > 75)
            budget = 75;
        budget -= EW_OVERHEAD;
        /* Take whole characters while the payload fits; when one does
         * not, end the word after its last space if it has one. Decoders
         * that wrongly keep the folding white space between two words
         * (Python 3.11's display names) then show a doubled space rather
         * than a word cut in two. */
        {
            size_t brk = start, brk_cost = 0;

            while (i < n) {
                size_t k = sb_utf8_seq(p + i, n - i, NULL), c = 0, j;
                int fits;

                if (k == 0)
                    k = 1; /* validated before; never split a byte anyway */
                for (j = 0; j < k; j++)
                    c += q_cost(p[i + j]);
                fits = use_q ? cost + c <= budget
                             : (i - start + k + 2) / 3 * 4 <= budget;
                if (!fits && i > start) {
                    if (brk > start && i < n) {
                        i = brk;
                        cost = brk_cost;
                    }
                    break;
                }
                cost += c;
                i += k;
                if (p[i - 1] == ' ') {
                    brk = i;
                    brk_cost = cost;
                }
            }
        }
        mw_puts(w, use_q ? "=?UTF-8?Q?" : "=?UTF-8?B?");
        if (use_q)
            q_put(w, p + start, i - start);
        else
            b64_put(w, p + start, i - start);
        mw_puts(w, "?=");
        col += EW_OVERHEAD +
               (use_q ? cost : (i - start + 2) / 3 * 4);
    }
    return col;
}

/* ---- headers ------------------------------------------------------------ */

static int printable_ascii(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
            return 0;
    return 1;
}

/* An unstructured value (Subject) written as is when it is printable
 * ASCII, holds no "=?" and folds at its spaces; encoded words otherwise. */
static void put_unstructured(struct mw *w, const char *name, const char *v)
{
    size_t col = strlen(name) + 2;
    const char *p = v;
    int plain = printable_ascii(v) && !strstr(v, "=?");

    mw_puts(w, name);
    mw_puts(w, ": ");
    if (plain) {
        /* Every run between spaces must fit on a folded line. */
        const char *q = v;

        while (*q && plain) {
            size_t run = strcspn(q, " ");

            if (run > 60)
                plain = 0;
            q += run;
            while (*q == ' ')
                q++;
        }
    }
    if (!plain) {
        if (*v)
            put_words(w, col, v);
        mw_puts(w, "\r\n");
        return;
    }
    /* Fold before a space when the segment " word" would pass 78. */
    while (*p) {
        size_t seg = (*p == ' ') ? 1 + strcspn(p + 1, " ") : strcspn(p, " ");

        if (p != v && *p == ' ' && col + seg > MAIL_FOLD) {
            mw_puts(w, "\r\n");
            col = 0;
        }
        mw_put(w, p, seg);
        col += seg;
        p += seg;
    }
    mw_puts(w, "\r\n");
}

static int atext(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || strchr("!#$%&'*+-/=?^_`{|}~", c);
}

/* "Name <addr>", the name as atoms, a quoted string or encoded words. */
static void put_mailbox(struct mw *w, const char *hname, const char *name,
                        const char *addr)
{
    size_t col = strlen(hname) + 2, n = name ? strlen(name) : 0, i;
    int atoms = n > 0 && n <= 60 && name[0] != ' ' && name[n - 1] != ' ' &&
                !strstr(name, "=?") && !strstr(name, "  ");
    int quotable = n > 0 && n <= 60 && printable_ascii(name) &&
                   !strstr(name, "=?");

    mw_puts(w, hname);
    mw_puts(w, ": ");
    if (n == 0) {
        mw_puts(w, addr);
        mw_puts(w, "\r\n");
        return;
    }
    for (i = 0; atoms && i < n; i++)
        if (name[i] != ' ' && !atext((unsigned char)name[i]))
            atoms = 0;
    if (atoms) {
        mw_puts(w, name);
        col += n;
    } else if (quotable) {
        mw_putc(w, '"');
        col++;
        for (i = 0; i < n; i++) {
            if (name[i] == '"' || name[i] == '\\') {
                mw_putc(w, '\\');
                col++;
            }
            mw_putc(w, name[i]);
            col++;
        }
        mw_putc(w, '"');
        col++;
    } else {
        col = put_words(w, col, name);
    }
    if (col + 3 + strlen(addr) > MAIL_FOLD)
        mw_puts(w, "\r\n <");
    else
        mw_puts(w, " <");
    mw_puts(w, addr);
    mw_puts(w, ">\r\n");
}

static void put_date(struct mw *w, int64_t ms)
{
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu",
                                       "Fri", "Sat"};
    static const char *const mons[] = {"Jan", "Feb", "Mar", "Apr", "May",
                                       "Jun", "Jul", "Aug", "Sep", "Oct",
                                       "Nov", "Dec"};
    time_t t = (time_t)((ms ? ms : sb_now_ms()) / 1000);
    struct tm tm;
    char buf[64];

    if (!gmtime_r(&t, &tm))
        memset(&tm, 0, sizeof(tm));
    snprintf(buf, sizeof(buf),
             "Date: %s, %02d %s %04d %02d:%02d:%02d +0000\r\n",
             days[tm.tm_wday % 7], tm.tm_mday, mons[tm.tm_mon % 12],
             tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
    mw_puts(w, buf);
}

static void put_refs(struct mw *w, const char *refs)
{
    const char *p = refs;
    size_t col = strlen("References:");
    int first = 1;

    mw_puts(w, "References:");
    while (*p) {
        size_t n;

        while (*p == ' ')
            p++;
        if (!*p)
            break;
        n = strcspn(p, " ");
        if (!first && col + n + 3 > MAIL_FOLD) {
            mw_puts(w, "\r\n");
            col = 0;
        }
        mw_puts(w, " <");
        mw_put(w, p, n);
        mw_putc(w, '>');
        col += n + 3;
        first = 0;
        p += n;
    }
    mw_puts(w, "\r\n");
}

/* ---- bodies -------------------------------------------------------------- */

/* Copy s with every lone CR or LF turned into CRLF. */
static void crlf_copy(const char *s, size_t n, struct sb_buf *out)
{
    size_t i, from = 0;

    for (i = 0; i < n; i++) {
        if (s[i] == '\r' && i + 1 < n && s[i + 1] == '\n') {
            i++;
            continue;
        }
        if (s[i] == '\r' || s[i] == '\n') {
            sb_buf_append(out, s + from, i - from);
            sb_buf_append(out, "\r\n", 2);
            from = i + 1;
        }
    }
    sb_buf_append(out, s + from, n - from);
}

/* Quoted-printable (RFC 2045 6.7) of CRLF text: lines at most 76
 * columns, soft breaks "=", trailing space or tab encoded. */
static void qp_encode(const char *s, size_t n, struct sb_buf *out)
{
    static const char hex[] = "0123456789ABCDEF";
    struct mw w = {out, 0};
    size_t i, col = 0;

    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        /* Space or tab just before a line break must be encoded. */
        int eol = i + 1 == n ||
                  (i + 2 < n && s[i + 1] == '\r' && s[i + 2] == '\n');
        char e[3];
        size_t len;

        if (c == '\r' && i + 1 < n && s[i + 1] == '\n') {
            mw_puts(&w, "\r\n");
            col = 0;
            i++;
            continue;
        }
        if ((c >= 33 && c <= 126 && c != '=') ||
            ((c == ' ' || c == '\t') && !eol)) {
            e[0] = (char)c;
            len = 1;
        } else {
            e[0] = '=';
            e[1] = hex[c >> 4];
            e[2] = hex[c & 15];
            len = 3;
        }
        if (col + len > 75) {
            mw_puts(&w, "=\r\n");
            col = 0;
        }
        mw_put(&w, e, len);
        col += len;
    }
}

static size_t b64_len(size_t n)
{
    size_t chars = (n + 2) / 3 * 4;

    return chars + (chars > 0 ? (chars - 1) / 76 * 2 : 0);
}

/* Base64 in lines of 76, CRLF between lines, none after the last. */
static void b64_lines(const char *s, size_t n, struct sb_buf *out)
{
    struct mw w = {out, 0};
    size_t i;

    for (i = 0; i < n; i += 57) {
        if (i > 0)
            mw_puts(&w, "\r\n");
        b64_put(&w, (const unsigned char *)s + i, n - i < 57 ? n - i : 57);
    }
}

/* One text part into out: its two content headers and a blank line,
 * then the encoded body without a final line break (the caller adds
 * it). */
static void put_part(struct sb_buf *out, const char *subtype,
                     const char *text)
{
    struct mw w = {out, 0};
    struct sb_buf norm, qp;

    sb_buf_init(&norm, 0);
    sb_buf_init(&qp, 0);
    crlf_copy(text, strlen(text), &norm);
    qp_encode(norm.data ? norm.data : "", norm.len, &qp);
    mw_puts(&w, "Content-Type: text/");
    mw_puts(&w, subtype);
    mw_puts(&w, "; charset=utf-8\r\n");
    if (qp.len <= b64_len(norm.len)) {
        mw_puts(&w, "Content-Transfer-Encoding: quoted-printable\r\n\r\n");
        mw_put(&w, qp.data ? qp.data : "", qp.len);
    } else {
        sb_buf_reset(&qp);
        b64_lines(norm.data ? norm.data : "", norm.len, &qp);
        mw_puts(&w, "Content-Transfer-Encoding: base64\r\n\r\n");
        mw_put(&w, qp.data ? qp.data : "", qp.len);
    }
    sb_buf_free(&norm);
    sb_buf_free(&qp);
}

static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
    const unsigned char *c = p;

    while (n--) {
        h ^= *c++;
        h *= 1099511628211ULL;
    }
    return h;
}

/* A boundary that cannot occur in QP or base64 text ("=_" never does:
 * QP's "=" is followed by hex digits or CRLF, base64 has no "_"); the
 * caller still checks the encoded parts for it. */
static void make_boundary(char *out, size_t outlen, const struct sb_mail *m,
                          unsigned salt)
{
    static unsigned counter;
    uint64_t h = 14695981039346656037ULL, now = sb_mono_ms();

    h = fnv1a(h, m->message_id, strlen(m->message_id));
    h = fnv1a(h, &now, sizeof(now));
    h = fnv1a(h, &salt, sizeof(salt));
    counter++;
    h = fnv1a(h, &counter, sizeof(counter));
    snprintf(out, outlen, "=_sb_%016llx_%u", (unsigned long long)h, salt);
}

/* Every line ends in CRLF and is at most 998 bytes; no NUL. */
static int lines_ok(const char *s, size_t n)
{
    size_t i, col = 0;

    for (i = 0; i < n; i++) {
        if (s[i] == '\0')
            return 0;
        if (s[i] == '\r') {
            if (i + 1 >= n || s[i + 1] != '\n')
                return 0;
            i++;
            col = 0;
            continue;
        }
        if (s[i] == '\n' || ++col > MAIL_MAX_LINE)
            return 0;
    }
    return col == 0;
}

static const char *mail_check(const struct sb_mail *m, size_t *nrefs)
{
    const char *hdrs[] = {m->from_name, m->to_name, m->subject,
                          m->from_addr, m->to_addr, m->reply_to,
                          m->message_id, m->in_reply_to, m->references,
                          m->list_unsubscribe, m->auto_submitted};
    size_t i;

    if (!m->from_addr || !m->to_addr || !m->message_id || !m->text)
        return "missing required field (from, to, message id or text)";
    for (i = 0; i < SB_ARRAY_LEN(hdrs); i++) {
        if (hdrs[i] && has_crlf(hdrs[i]))
            return "CR or LF in a header value";
        if (hdrs[i] && !utf8_ok(hdrs[i]))
            return "invalid UTF-8 in a header value";
    }
    if (!utf8_ok(m->text) || (m->html && !utf8_ok(m->html)))
        return "invalid UTF-8 in the body";
    if (!addr_ok(m->from_addr) || !addr_ok(m->to_addr) ||
        (m->reply_to && !addr_ok(m->reply_to)))
        return "bad address";
    if ((m->from_name && strlen(m->from_name) > MAIL_MAX_NAME) ||
        (m->to_name && strlen(m->to_name) > MAIL_MAX_NAME))
        return "display name too long";
    if (m->subject && strlen(m->subject) > MAIL_MAX_SUBJECT)
        return "subject too long";
    if (!msgid_ok(m->message_id, strlen(m->message_id)) ||
        (m->in_reply_to &&
         !msgid_ok(m->in_reply_to, strlen(m->in_reply_to))))
        return "bad message id";
    *nrefs = 0;
    if (m->references && *m->references && !refs_ok(m->references, nrefs))
        return "bad references";
    if (m->list_unsubscribe && !url_ok(m->list_unsubscribe))
        return "bad List-Unsubscribe URL";
    if (m->auto_submitted && !token_ok(m->auto_submitted))
        return "bad Auto-Submitted value";
    return NULL;
}

int sb_mail_build(const struct sb_mail *m, struct sb_buf *out,
                  const char **why)
{
    struct mw w = {out, 0};
    size_t start = out->len, nrefs = 0;
    const char *bad = mail_check(m, &nrefs);
    char boundary[64];

    if (bad) {
        *why = bad;
        return -1;
    }
    put_mailbox(&w, "From", m->from_name, m->from_addr);
    put_mailbox(&w, "To", m->to_name, m->to_addr);
    if (m->reply_to)
        put_mailbox(&w, "Reply-To", NULL, m->reply_to);
    if (m->subject)
        put_unstructured(&w, "Subject", m->subject);
    put_date(&w, m->date_ms);
    mw_puts(&w, "Message-ID: <");
    mw_puts(&w, m->message_id);
    mw_puts(&w, ">\r\n");
    if (m->in_reply_to) {
        mw_puts(&w, "In-Reply-To: <");
        mw_puts(&w, m->in_reply_to);
        mw_puts(&w, ">\r\n");
    }
    if (nrefs > 0)
        put_refs(&w, m->references);
    if (m->list_unsubscribe) {
        mw_puts(&w, "List-Unsubscribe: <");
        mw_puts(&w, m->list_unsubscribe);
        mw_puts(&w, ">\r\n");
        /* RFC 8058 one-click needs an https URI. */
        if (m->list_unsubscribe_post &&
            strncasecmp(m->list_unsubscribe, "https://", 8) == 0)
            mw_puts(&w, "List-Unsubscribe-Post: List-Unsubscribe=One-Click"
                        "\r\n");
    }
    if (m->auto_submitted) {
        mw_puts(&w, "Auto-Submitted: ");
        mw_puts(&w, m->auto_submitted);
        mw_puts(&w, "\r\n");
    }
    mw_puts(&w, "MIME-Version: 1.0\r\n");
    if (!m->html) {
        struct sb_buf part;

        sb_buf_init(&part, 0);
        put_part(&part, "plain", m->text);
        mw_put(&w, part.data, part.len);
        if (part.len < 2 || memcmp(part.data + part.len - 2, "\r\n", 2))
            mw_puts(&w, "\r\n");
        sb_buf_free(&part);
    } else {
        struct sb_buf pt, ph;
        unsigned salt = 0;
        size_t blen;

        sb_buf_init(&pt, 0);
        sb_buf_init(&ph, 0);
        put_part(&pt, "plain", m->text);
        put_part(&ph, "html", m->html);
        /* The delimiter must occur in neither part. */
        do {
            make_boundary(boundary, sizeof(boundary), m, salt++);
            blen = strlen(boundary);
        } while (salt < 16 && (memmem(pt.data, pt.len, boundary, blen) ||
                               memmem(ph.data, ph.len, boundary, blen)));
        mw_puts(&w, "Content-Type: multipart/alternative;\r\n boundary=\"");
        mw_puts(&w, boundary);
        mw_puts(&w, "\"\r\n\r\nThis is a multi-part message in MIME "
                    "format.\r\n--");
        mw_puts(&w, boundary);
        mw_puts(&w, "\r\n");
        mw_put(&w, pt.data, pt.len);
        mw_puts(&w, "\r\n--");
        mw_puts(&w, boundary);
        mw_puts(&w, "\r\n");
        mw_put(&w, ph.data, ph.len);
        mw_puts(&w, "\r\n--");
        mw_puts(&w, boundary);
        mw_puts(&w, "--\r\n");
        sb_buf_free(&pt);
        sb_buf_free(&ph);
    }
    if (w.err) {
        out->len = start;
        if (out->data)
            out->data[start] = '\0';
        *why = "message too large";
        return -1;
    }
    if (!lines_ok(out->data + start, out->len - start)) {
        out->len = start;
        out->data[start] = '\0';
        *why = "internal error: line too long or bare line break";
        return -1;
    }
    return 0;
}

/* ======================================================================
 * Sending
 * ====================================================================== */

/* One message from submit to its callback. The strings live in the same
 * allocation, after the struct. */
struct smtp_job {
    struct smtp_job *next;
    sb_smtp_cb *cb;
    void *arg;
    char *from;
    char *rcpt;
    char *data;
    size_t len;
    size_t rd;                 /* read position (SMTP thread) */
    smtp_message_t msg;        /* valid during its session only */
    smtp_recipient_t rcp;
    enum sb_smtp_status status;
    int code;
    char reason[SMTP_REASON_MAX];
};

struct sb_smtp {
    uv_loop_t *loop;
    uv_async_t async;          /* threads -> loop; freed in its close cb */
    uv_mutex_t mu;
    uv_cond_t cv;

    /* Configuration, read-only once the threads run. */
    char *host;
    char *hostport;
    char *helo;
    char *user;
    char *password;
    int host_is_ip;
    enum sb_smtp_tls tls;
    int verify;
    long timeout_ms;
    size_t nthreads;
    size_t per_session;
    size_t max_queue;
    SSL_CTX *ssl;
    uv_thread_t *threads;

    /* Under mu. */
    struct smtp_job *wait_head;
    struct smtp_job **wait_tail;
    size_t nwait;
    struct smtp_job *done_head;
    struct smtp_job **done_tail;
    size_t exited;             /* threads that have left their loop */
    int closing;

    /* Loop thread only. Submitted jobs are staged here and handed to the
     * threads together on the next loop pass (from the async callback),
     * so messages submitted in one pass share a session. */
    struct smtp_job *stage_head;
    struct smtp_job **stage_tail;
    size_t nstage;
    size_t pending;
    int close_called;
    int handle_closing;
};

/* What one session saw, filled in by libesmtp's callbacks on the SMTP
 * thread that runs it. */
struct smtp_run {
    struct sb_smtp *s;
    uint64_t last_io;          /* sb_mono_ms of the last byte either way */
    int connected;
    int no_starttls;           /* required but not offered */
    int tls_ok;
    int tls_bad;               /* certificate refused */
    char tls_why[128];
    int in_auth;               /* AUTH sent, final answer not yet seen */
    int auth_tried;
    int auth_ok;
    int auth_code;
    char auth_text[128];
    char last_reply[128];      /* first line of the last server reply */
};

/* Set by the certificate verify callback during a handshake; one session
 * at a time per thread, so thread-local is enough. */
static _Thread_local char tls_verify_err[128];

static uv_once_t smtp_once = UV_ONCE_INIT;

static void smtp_global_init(void)
{
    auth_client_init();
}

/* Copy a server text or library message into out: printable ASCII only,
 * the first line, trimmed. */
static void safe_copy(char *out, size_t outlen, const char *in)
{
    size_t o = 0;

    if (!in)
        in = "";
    while (*in == ' ')
        in++;
    for (; *in && *in != '\r' && *in != '\n' && o + 1 < outlen; in++) {
        unsigned char c = (unsigned char)*in;

        out[o++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    while (o > 0 && out[o - 1] == ' ')
        o--;
    out[o] = '\0';
}

/* ---- libesmtp callbacks (SMTP threads) ---------------------------------- */

static const char *on_msg_read(void **ctx, int *len, void *arg)
{
    struct smtp_job *j = arg;
    size_t n;

    SB_UNUSED(ctx);
    if (len == NULL) { /* rewind */
        j->rd = 0;
        return NULL;
    }
    if (j->rd >= j->len) {
        *len = 0;
        return NULL;
    }
    n = j->len - j->rd;
    if (n > SMTP_CHUNK)
        n = SMTP_CHUNK;
    *len = (int)n;
    j->rd += n;
    return j->data + j->rd - n;
}

static int cert_matches(const struct sb_smtp *s, SSL *ssl)
{
    X509 *cert = SSL_get1_peer_certificate(ssl);
    int ok;

    if (!cert)
        return 0;
    if (s->host_is_ip)
        ok = X509_check_ip_asc(cert, s->host, 0) == 1;
    else
        ok = X509_check_host(cert, s->host, 0,
                             X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS, NULL) == 1;
    X509_free(cert);
    return ok;
}

static void on_event(smtp_session_t sess, int ev, void *arg, ...)
{
    struct smtp_run *r = arg;
    const struct sb_smtp *s = r->s;
    va_list ap;
    int *ok;

    SB_UNUSED(sess);
    va_start(ap, arg);
    switch (ev) {
    case SMTP_EV_CONNECT:
        r->connected = 1;
        r->last_io = sb_mono_ms();
        break;
    case SMTP_EV_MESSAGEDATA:
    case SMTP_EV_MESSAGESENT:
        r->last_io = sb_mono_ms();
        break;
    case SMTP_EV_EXTNA_STARTTLS:
        r->no_starttls = 1;
        break;
    case SMTP_EV_STARTTLS_OK:
        r->tls_ok = 1;
        break;
    case SMTP_EV_INVALID_PEER_CERTIFICATE: {
        long vfy = va_arg(ap, long);

        ok = va_arg(ap, int *);
        *ok = !s->verify;
        if (s->verify) {
            r->tls_bad = 1;
            safe_copy(r->tls_why, sizeof(r->tls_why),
                      X509_verify_cert_error_string(vfy));
        }
        break;
    }
    case SMTP_EV_NO_PEER_CERTIFICATE:
        ok = va_arg(ap, int *);
        *ok = !s->verify;
        if (s->verify) {
            r->tls_bad = 1;
            safe_copy(r->tls_why, sizeof(r->tls_why), "no certificate");
        }
        break;
    case SMTP_EV_WRONG_PEER_CERTIFICATE: {
        SSL *ssl;

        ok = va_arg(ap, int *);
        (void)va_arg(ap, const char *);
        ssl = va_arg(ap, SSL *);
        /* libesmtp compares the name it resolved and ignores IP
         * addresses; the handshake already checked ours. */
        *ok = !s->verify || cert_matches(s, ssl);
        if (!*ok) {
            r->tls_bad = 1;
            safe_copy(r->tls_why, sizeof(r->tls_why),
                      "certificate does not match the host");
        }
        break;
    }
    case SMTP_EV_WEAK_CIPHER:
        (void)va_arg(ap, int);
        ok = va_arg(ap, int *);
        *ok = 0;
        break;
    default:
        break;
    }
    va_end(ap);
}

/* The protocol monitor (commands and replies, never message data): keeps
 * the last reply for reasons and follows AUTH, which libesmtp does not
 * report. The credentials it sees are never stored or logged. */
static void on_monitor(const char *buf, int len, int writing, void *arg)
{
    struct smtp_run *r = arg;

    r->last_io = sb_mono_ms();
    if (len <= 0)
        return;
    if (writing == SMTP_CB_WRITING) {
        if (len >= 5 && strncasecmp(buf, "AUTH ", 5) == 0) {
            r->in_auth = 1;
            r->auth_tried = 1;
        }
        return;
    }
    if (writing != SMTP_CB_READING)
        return;
    {
        char line[128];
        size_t n = (size_t)len < sizeof(line) - 1 ? (size_t)len
                                                   : sizeof(line) - 1;
        int code;

        memcpy(line, buf, n);
        line[n] = '\0';
        safe_copy(r->last_reply, sizeof(r->last_reply), line);
        if (!r->in_auth || n < 3)
            return;
        code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
        if (code == 334)
            return; /* a challenge: the exchange goes on */
        r->in_auth = 0;
        if (code >= 200 && code < 300) {
            r->auth_ok = 1;
        } else {
            r->auth_code = code;
            safe_copy(r->auth_text, sizeof(r->auth_text), line);
        }
    }
}

static int on_auth_interact(auth_client_request_t req, char **result,
                            int fields, void *arg)
{
    static char empty[] = "";
    struct sb_smtp *s = arg;
    int i;

    for (i = 0; i < fields; i++) {
        if (req[i].flags & AUTH_USER)
            result[i] = s->user;
        else if (req[i].flags & AUTH_PASS)
            result[i] = s->password;
        else if (req[i].flags & AUTH_REALM)
            result[i] = empty;
        else
            return 0;
    }
    return 1;
}

/* OpenSSL's verify callback: remembers why a chain was refused. */
static int on_verify(int ok, X509_STORE_CTX *x)
{
    if (!ok && !tls_verify_err[0])
        safe_copy(tls_verify_err, sizeof(tls_verify_err),
                  X509_verify_cert_error_string(X509_STORE_CTX_get_error(x)));
    return ok;
}

/* libesmtp makes the SSL itself: give it SNI when the handshake starts. */
static void on_ssl_info(const SSL *ssl, int where, int ret)
{
    SSL_CTX *ctx = SSL_get_SSL_CTX(ssl);
    const struct sb_smtp *s = ctx ? SSL_CTX_get_app_data(ctx) : NULL;

    SB_UNUSED(ret);
    if ((where & SSL_CB_HANDSHAKE_START) && s && !s->host_is_ip &&
        !SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name))
        SSL_set_tlsext_host_name((SSL *)ssl, s->host);
}

/* ---- one session ------------------------------------------------------ */

static void job_set(struct smtp_job *j, enum sb_smtp_status st, int code,
                    const char *reason)
{
    j->status = st;
    j->code = code;
    safe_copy(j->reason, sizeof(j->reason), reason);
}

static void job_set_status(struct smtp_job *j, const smtp_status_t *st,
                           enum sb_smtp_status how)
{
    char buf[SMTP_REASON_MAX];

    if (st->enh_class > 0)
        snprintf(buf, sizeof(buf), "%d %d.%d.%d %s", st->code, st->enh_class,
                 st->enh_subject, st->enh_detail, st->text ? st->text : "");
    else
        snprintf(buf, sizeof(buf), "%d %s", st->code,
                 st->text ? st->text : "");
    job_set(j, how, st->code, buf);
}

/* RFC 5321 classes; 552 is temporary (RFC 5321 4.5.3.1.10). */
static enum sb_smtp_status classify(int code)
{
    if (code >= 200 && code < 300)
        return SB_SMTP_OK;
    if (code >= 500 && code < 600 && code != 552)
        return SB_SMTP_PERMFAIL;
    return SB_SMTP_TEMPFAIL;
}

/* Why a session ended without a word on this message. */
static void session_reason(const struct smtp_run *r, int started, int err,
                           uint64_t now, char *out, size_t outlen)
{
    char ebuf[128];
    const struct sb_smtp *s = r->s;

    if (!r->connected) {
        if (err == -ECONNREFUSED)
            snprintf(ebuf, sizeof(ebuf), "connection refused");
        else if (!smtp_strerror(err, ebuf, sizeof(ebuf)))
            snprintf(ebuf, sizeof(ebuf), "error %d", err);
        snprintf(out, outlen, "cannot connect: %s", ebuf);
    } else if (r->no_starttls) {
        snprintf(out, outlen, "STARTTLS required but not offered");
    } else if (tls_verify_err[0] || r->tls_bad) {
        snprintf(out, outlen, "TLS certificate verification failed: %s",
                 tls_verify_err[0] ? tls_verify_err : r->tls_why);
    } else if (s->tls != SB_SMTP_TLS_NONE && !r->tls_ok &&
               err == SMTP_ERR_CLIENT_ERROR) {
        snprintf(out, outlen, "STARTTLS handshake failed");
    } else if (now - r->last_io + 50 >= (uint64_t)s->timeout_ms) {
        snprintf(out, outlen, "timeout (no reply in %ld ms)", s->timeout_ms);
    } else if (err == SMTP_ERR_DROPPED_CONNECTION) {
        snprintf(out, outlen, "connection dropped by the relay");
    } else if (r->last_reply[0] && r->last_reply[0] != '2' &&
               r->last_reply[0] != '3') {
        snprintf(out, outlen, "session ended: %s", r->last_reply);
    } else if (!started && smtp_strerror(err, ebuf, sizeof(ebuf))) {
        snprintf(out, outlen, "session failed: %s", ebuf);
    } else {
        snprintf(out, outlen, "no reply from the relay");
    }
}

static void set_timeouts(smtp_session_t sess, long ms)
{
    static const int which[] = {Timeout_GREETING, Timeout_ENVELOPE,
                                Timeout_DATA, Timeout_TRANSFER,
                                Timeout_DATA2};
    size_t i;

    for (i = 0; i < SB_ARRAY_LEN(which); i++)
        smtp_set_timeout(sess, which[i] | Timeout_OVERRIDE_RFC2822_MINIMUM,
                         ms);
}

static void run_batch(struct sb_smtp *s, struct smtp_job *jobs)
{
    struct smtp_run r;
    smtp_session_t sess;
    auth_context_t actx = NULL;
    struct smtp_job *j;
    int started, err, auth_failed, nfail = 0, saw_mail = 0;
    char why[SMTP_REASON_MAX] = "";
    uint64_t now;

    memset(&r, 0, sizeof(r));
    r.s = s;
    tls_verify_err[0] = '\0';
    sess = smtp_create_session();
    if (!sess) {
        for (j = jobs; j; j = j->next)
            job_set(j, SB_SMTP_TEMPFAIL, 0, "out of memory (libesmtp)");
        return;
    }
    smtp_set_server(sess, s->hostport);
    if (s->helo)
        smtp_set_hostname(sess, s->helo);
    set_timeouts(sess, s->timeout_ms);
    smtp_set_eventcb(sess, on_event, &r);
    smtp_set_monitorcb(sess, on_monitor, &r, 0);
    smtp_starttls_enable(sess, s->tls == SB_SMTP_TLS_REQUIRE
                                   ? Starttls_REQUIRED
                               : s->tls == SB_SMTP_TLS_TRY
                                   ? Starttls_ENABLED
                                   : Starttls_DISABLED);
    if (s->ssl)
        smtp_starttls_set_ctx(sess, s->ssl);
    if (s->user) {
        actx = auth_create_context();
        if (actx) {
            auth_set_mechanism_flags(actx, AUTH_PLUGIN_PLAIN, 0);
            auth_set_interact_cb(actx, on_auth_interact, s);
            smtp_auth_set_context(sess, actx);
        }
    }
    for (j = jobs; j; j = j->next) {
        j->status = SB_SMTP_TEMPFAIL;
        j->code = 0;
        j->reason[0] = '\0';
        j->msg = smtp_add_message(sess);
        j->rcp = NULL;
        if (!j->msg || !smtp_set_reverse_path(j->msg, j->from) ||
            !smtp_set_messagecb(j->msg, on_msg_read, j)) {
            job_set(j, SB_SMTP_TEMPFAIL, 0, "libesmtp refused the message");
            continue;
        }
        smtp_size_set_estimate(j->msg, (unsigned long)j->len);
        j->rcp = smtp_add_recipient(j->msg, j->rcpt);
        if (!j->rcp)
            job_set(j, SB_SMTP_TEMPFAIL, 0, "libesmtp refused the recipient");
    }

    r.last_io = sb_mono_ms();
    started = smtp_start_session(sess);
    err = smtp_errno();
    now = sb_mono_ms();
    auth_failed = s->user && r.auth_tried && !r.auth_ok;

    for (j = jobs; j; j = j->next) {
        const smtp_status_t *mail, *rcpt, *xfer;

        if (!j->rcp)
            continue;
        mail = smtp_reverse_path_status(j->msg);
        rcpt = smtp_recipient_status(j->rcp);
        xfer = smtp_message_transfer_status(j->msg);
        if (mail && mail->code)
            saw_mail = 1;
        if (xfer && xfer->code >= 200 && xfer->code < 300 && rcpt &&
            rcpt->code >= 200 && rcpt->code < 300) {
            job_set_status(j, xfer, SB_SMTP_OK);
        } else if (auth_failed) {
            /* Our credentials, not this message: try again later. */
            char buf[SMTP_REASON_MAX];

            snprintf(buf, sizeof(buf), "AUTH refused: %s",
                     r.auth_text[0] ? r.auth_text : "no reply");
            job_set(j, SB_SMTP_TEMPFAIL, r.auth_code, buf);
        } else if (mail && mail->code >= 400) {
            /* 530 to MAIL: the relay wants AUTH or TLS first, which is
             * about our session, not this message. */
            job_set_status(j, mail, mail->code == 530 ? SB_SMTP_TEMPFAIL
                                                      : classify(mail->code));
        } else if (rcpt && rcpt->code >= 400) {
            job_set_status(j, rcpt, classify(rcpt->code));
        } else if (xfer && xfer->code >= 400) {
            job_set_status(j, xfer, classify(xfer->code));
        } else {
            if (!why[0])
                session_reason(&r, started, err, now, why, sizeof(why));
            job_set(j, SB_SMTP_TEMPFAIL, 0, why);
        }
        if (j->status != SB_SMTP_OK)
            nfail++;
    }
    if (why[0])
        SB_WARN(PLACE, "session failed host=%s port=%s messages=%d "
                "reason=\"%s\"", s->host, strchr(s->hostport, ':') + 1,
                nfail, why);
    if (s->user && !r.auth_tried && saw_mail)
        SB_WARN(PLACE, "relay offered no usable AUTH mechanism host=%s",
                s->host);
    if (auth_failed)
        SB_ERR(PLACE, "AUTH refused host=%s user_set=1 reply=\"%s\"",
               s->host, r.auth_text);
    smtp_destroy_session(sess);
    if (actx)
        auth_destroy_context(actx);
}

static void smtp_thread(void *arg)
{
    struct sb_smtp *s = arg;

    for (;;) {
        struct smtp_job *batch = NULL, **tail = &batch, *j;
        size_t n = 0;

        uv_mutex_lock(&s->mu);
        while (!s->closing && !s->wait_head)
            uv_cond_wait(&s->cv, &s->mu);
        if (!s->wait_head) { /* closing and nothing left */
            s->exited++;
            uv_mutex_unlock(&s->mu);
            uv_async_send(&s->async);
            return;
        }
        while (s->wait_head && n < s->per_session) {
            j = s->wait_head;
            s->wait_head = j->next;
            j->next = NULL;
            *tail = j;
            tail = &j->next;
            n++;
        }
        if (!s->wait_head)
            s->wait_tail = &s->wait_head;
        s->nwait -= n;
        uv_mutex_unlock(&s->mu);

        run_batch(s, batch);

        uv_mutex_lock(&s->mu);
        *s->done_tail = batch;
        s->done_tail = tail;
        uv_mutex_unlock(&s->mu);
        uv_async_send(&s->async);
    }
}

/* ---- loop side -------------------------------------------------------- */

/* The configuration copies and the TLS context. */
static void free_fields(struct sb_smtp *s)
{
    if (s->ssl)
        SSL_CTX_free(s->ssl);
    free(s->threads);
    free(s->host);
    free(s->hostport);
    free(s->helo);
    free(s->user);
    if (s->password) {
        explicit_bzero(s->password, strlen(s->password));
        free(s->password);
    }
}

static void free_client(struct sb_smtp *s)
{
    uv_cond_destroy(&s->cv);
    uv_mutex_destroy(&s->mu);
    free_fields(s);
    free(s);
}

static void on_async_closed(uv_handle_t *h)
{
    free_client(h->data);
}

static void complete(struct sb_smtp *s, struct smtp_job *j)
{
    struct sb_smtp_result res;

    res.status = j->status;
    res.code = j->code;
    res.reason = j->reason;
    s->pending--;
    j->cb(&res, j->arg);
    free(j);
}

static void on_async(uv_async_t *h)
{
    struct sb_smtp *s = h->data;
    struct smtp_job *list, *j;
    size_t exited, i;

    uv_mutex_lock(&s->mu);
    if (s->stage_head && !s->closing) {
        *s->wait_tail = s->stage_head;
        s->wait_tail = s->stage_tail;
        s->nwait += s->nstage;
        if (s->nstage > s->per_session)
            uv_cond_broadcast(&s->cv);
        else
            uv_cond_signal(&s->cv);
        s->stage_head = NULL;
        s->stage_tail = &s->stage_head;
        s->nstage = 0;
    }
    list = s->done_head;
    s->done_head = NULL;
    s->done_tail = &s->done_head;
    exited = s->exited;
    uv_mutex_unlock(&s->mu);

    while ((j = list) != NULL) {
        list = j->next;
        complete(s, j);
    }
    if (!s->close_called || s->handle_closing || exited < s->nthreads)
        return;
    /* Every thread has counted itself out: each join returns at once. */
    for (i = 0; i < s->nthreads; i++)
        uv_thread_join(&s->threads[i]);
    s->nthreads = 0;
    uv_mutex_lock(&s->mu);
    list = s->done_head;
    s->done_head = NULL;
    s->done_tail = &s->done_head;
    uv_mutex_unlock(&s->mu);
    while ((j = list) != NULL) {
        list = j->next;
        complete(s, j);
    }
    s->handle_closing = 1;
    uv_close((uv_handle_t *)&s->async, on_async_closed);
}

static int host_ok(const char *h)
{
    size_t n = strlen(h), i;

    if (n == 0 || n > 253)
        return 0;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)h[i];

        if (c <= 0x20 || c >= 0x7f || c == ':' || c == '/' || c == '@')
            return 0;
    }
    return 1;
}

static SSL_CTX *make_ssl_ctx(struct sb_smtp *s, const char *ca_file)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

    if (!ctx) {
        SB_ERR(PLACE, "SSL_CTX_new failed");
        return NULL;
    }
    /* TLS 1.2 only, deliberately: after a TLS 1.3 handshake the server
     * sends NewSessionTicket records; when they are already there as
     * libesmtp 1.1.0 sends its first EHLO, its loop runs the EHLO reply
     * handler before flushing the command, SSL_read() finds no
     * application data and the session ends as "dropped connection"
     * (seen here in about one session in twenty against aiosmtpd). TLS
     * 1.2 has no records after the handshake. Renegotiation is refused
     * for the same reason. */
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_app_data(ctx, s);
    SSL_CTX_set_info_callback(ctx, on_ssl_info);
    if (!s->verify) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
        return ctx;
    }
    if (ca_file) {
        if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
            SB_ERR(PLACE, "cannot load CA file path=%s", ca_file);
            goto fail;
        }
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        SB_ERR(PLACE, "cannot load the system CA store");
        goto fail;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, on_verify);
    {
        X509_VERIFY_PARAM *p = SSL_CTX_get0_param(ctx);

        X509_VERIFY_PARAM_set_hostflags(p,
                                        X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if ((s->host_is_ip ? X509_VERIFY_PARAM_set1_ip_asc(p, s->host)
                           : X509_VERIFY_PARAM_set1_host(p, s->host, 0)) !=
            1) {
            SB_ERR(PLACE, "cannot set the host to verify host=%s", s->host);
            goto fail;
        }
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

struct sb_smtp *sb_smtp_new(uv_loop_t *loop, const struct sb_smtp_conf *conf)
{
    struct sb_smtp *s;
    struct in_addr a4;
    size_t i;

    if (!conf->host || !host_ok(conf->host)) {
        SB_ERR(PLACE, "bad relay host (a name or IPv4 address)");
        return NULL;
    }
    if (conf->port <= 0 || conf->port > 65535 || conf->timeout_ms < 0 ||
        (conf->user && !conf->password) ||
        (conf->helo && !host_ok(conf->helo)) ||
        (unsigned)conf->tls > SB_SMTP_TLS_REQUIRE) {
        SB_ERR(PLACE, "bad relay configuration host=%s", conf->host);
        return NULL;
    }
    uv_once(&smtp_once, smtp_global_init);

    s = sb_calloc(1, sizeof(*s));
    s->loop = loop;
    s->host = sb_strdup(conf->host);
    s->hostport = sb_asprintf("%s:%d", conf->host, conf->port);
    s->helo = conf->helo ? sb_strdup(conf->helo) : NULL;
    s->user = conf->user ? sb_strdup(conf->user) : NULL;
    s->password = conf->user ? sb_strdup(conf->password) : NULL;
    s->host_is_ip = inet_pton(AF_INET, conf->host, &a4) == 1;
    s->tls = conf->tls;
    s->verify = conf->verify_cert;
    s->timeout_ms = conf->timeout_ms ? conf->timeout_ms : SMTP_DEF_TIMEOUT_MS;
    s->nthreads = conf->threads ? conf->threads : SMTP_DEF_THREADS;
    if (s->nthreads > SMTP_MAX_THREADS)
        s->nthreads = SMTP_MAX_THREADS;
    s->per_session = conf->max_per_session ? conf->max_per_session
                                           : SMTP_DEF_PER_SESSION;
    if (s->per_session > SMTP_MAX_PER_SESSION)
        s->per_session = SMTP_MAX_PER_SESSION;
    s->max_queue = conf->max_queue ? conf->max_queue : SMTP_DEF_QUEUE;
    s->wait_tail = &s->wait_head;
    s->done_tail = &s->done_head;
    s->stage_tail = &s->stage_head;
    if (s->user && s->tls == SB_SMTP_TLS_NONE)
        SB_WARN(PLACE, "AUTH without TLS: the password crosses the network "
                "in clear host=%s", s->host);
    if (s->tls != SB_SMTP_TLS_NONE &&
        !(s->ssl = make_ssl_ctx(s, conf->ca_file)))
        goto fail;
    if (uv_mutex_init(&s->mu) != 0 || uv_cond_init(&s->cv) != 0)
        abort(); /* only fails on resource exhaustion */
    uv_async_init(loop, &s->async, on_async);
    s->async.data = s;
    s->threads = sb_calloc(s->nthreads, sizeof(*s->threads));
    for (i = 0; i < s->nthreads; i++) {
        int rc = uv_thread_create(&s->threads[i], smtp_thread, s);

        if (rc != 0) {
            SB_ERR(PLACE, "cannot start SMTP thread: %s", uv_strerror(rc));
            break;
        }
    }
    if (i < s->nthreads) {
        /* The async handle is live: free through its close callback. */
        size_t started = i;

        uv_mutex_lock(&s->mu);
        s->closing = 1;
        uv_cond_broadcast(&s->cv);
        uv_mutex_unlock(&s->mu);
        for (i = 0; i < started; i++)
            uv_thread_join(&s->threads[i]);
        s->nthreads = 0;
        s->close_called = s->handle_closing = 1;
        uv_close((uv_handle_t *)&s->async, on_async_closed);
        return NULL;
    }
    SB_INFO(PLACE, "relay client ready host=%s port=%d tls=%s verify=%d "
            "auth=%d threads=%zu per_session=%zu timeout_ms=%ld",
            s->host, conf->port,
            s->tls == SB_SMTP_TLS_REQUIRE ? "require"
            : s->tls == SB_SMTP_TLS_TRY   ? "try"
                                          : "none",
            s->verify, s->user != NULL, s->nthreads, s->per_session,
            s->timeout_ms);
    return s;
fail:
    free_fields(s);
    free(s);
    return NULL;
}

/* An envelope address: printable ASCII with an "@", without spaces, <,
 * >, quotes or controls; the sender may be empty (the null reverse
 * path). */
static int env_addr_ok(const char *a, int may_be_empty)
{
    size_t n = strlen(a), i;

    if (n == 0)
        return may_be_empty;
    if (n > MAIL_MAX_ADDR || !strchr(a, '@'))
        return 0;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)a[i];

        if (c <= 0x20 || c >= 0x7f || c == '<' || c == '>' || c == '"')
            return 0;
    }
    return 1;
}

/* Bytes needed for data with lone CR/LF made CRLF, ending in CRLF. */
static size_t crlf_size(const char *d, size_t len)
{
    size_t i, n = 0;

    for (i = 0; i < len; i++) {
        if (d[i] == '\r' && i + 1 < len && d[i + 1] == '\n') {
            n += 2;
            i++;
        } else if (d[i] == '\r' || d[i] == '\n') {
            n += 2;
        } else {
            n++;
        }
    }
    if (n < 2 || len < 1 || (d[len - 1] != '\n' && d[len - 1] != '\r'))
        n += 2;
    return n;
}

static size_t crlf_into(char *out, const char *d, size_t len)
{
    size_t i, o = 0;

    for (i = 0; i < len; i++) {
        if (d[i] == '\r' || d[i] == '\n') {
            if (d[i] == '\r' && i + 1 < len && d[i + 1] == '\n')
                i++;
            out[o++] = '\r';
            out[o++] = '\n';
        } else {
            out[o++] = d[i];
        }
    }
    if (o < 2 || out[o - 1] != '\n') {
        out[o++] = '\r';
        out[o++] = '\n';
    }
    return o;
}

int sb_smtp_submit(struct sb_smtp *s, const char *env_from, const char *rcpt,
                   const char *data, size_t len, sb_smtp_cb *cb, void *arg)
{
    struct smtp_job *j;
    size_t nf, nr, nd;
    int full;
    char *p;

    if (!s || s->close_called || !env_from || !rcpt || !cb ||
        (!data && len) || len > SMTP_MAX_DATA ||
        !env_addr_ok(env_from, 1) || !env_addr_ok(rcpt, 0))
        return -1;
    nf = strlen(env_from) + 1;
    nr = strlen(rcpt) + 1;
    nd = crlf_size(data ? data : "", len);
    uv_mutex_lock(&s->mu);
    full = s->nwait + s->nstage >= s->max_queue;
    uv_mutex_unlock(&s->mu);
    if (full)
        return -1;

    j = sb_malloc(sizeof(*j) + nf + nr + nd);
    memset(j, 0, sizeof(*j));
    p = (char *)(j + 1);
    j->from = memcpy(p, env_from, nf);
    j->rcpt = memcpy(p + nf, rcpt, nr);
    j->data = p + nf + nr;
    j->len = crlf_into(j->data, data ? data : "", len);
    j->cb = cb;
    j->arg = arg;

    *s->stage_tail = j;
    s->stage_tail = &j->next;
    s->nstage++;
    s->pending++;
    uv_async_send(&s->async);
    return 0;
}

size_t sb_smtp_pending(const struct sb_smtp *s)
{
    return s ? s->pending : 0;
}

void sb_smtp_close(struct sb_smtp *s)
{
    struct smtp_job *list, *j;

    if (!s || s->close_called)
        return;
    s->close_called = 1;
    uv_mutex_lock(&s->mu);
    s->closing = 1;
    list = s->wait_head;
    s->wait_head = NULL;
    s->wait_tail = &s->wait_head;
    s->nwait = 0;
    uv_cond_broadcast(&s->cv);
    uv_mutex_unlock(&s->mu);
    /* Staged jobs were submitted after the waiting ones. */
    if (s->stage_head) {
        struct smtp_job **t = &list;

        while (*t)
            t = &(*t)->next;
        *t = s->stage_head;
        s->stage_head = NULL;
        s->stage_tail = &s->stage_head;
        s->nstage = 0;
    }
    while ((j = list) != NULL) {
        list = j->next;
        job_set(j, SB_SMTP_CANCELLED, 0, "cancelled: client closing");
        complete(s, j);
    }
    /* The async callback joins the threads once they are out and frees
     * the client; wake it in case they already are. */
    uv_async_send(&s->async);
}
