/* imap.c - the IMAP poller of the e-mail driver: one per [mailbox NAME].
 *
 * Every command is one libcurl transfer on the loop (httpc.h's
 * sb_httpc_easy: the multi handle keeps the connection, logged in and
 * with the mailbox selected, between commands). A poll walks:
 *
 *   STATUS "box" (UIDVALIDITY UIDNEXT)   nothing new: done until the next
 *   UID FETCH last+1:* (UID RFC822.SIZE) which, and how big
 *   UID FETCH a,b,c (UID BODY.PEEK[])    a batch of bodies; PEEK: nothing
 *                                        is marked before it is logged
 *   mailin (mailin.h) for each, a few at once: parsed, ingested or put in
 *                                        the quarantine (too large ones
 *                                        without being fetched)
 *   UID STORE set +FLAGS.SILENT (\Seen)  or UID MOVE set "folder": only
 *                                        what is durably in Redis (when
 *                                        this fails, last_uid stays and
 *                                        they come again, known)
 *   HSET <prefix>imap:<name> uidvalidity V last_uid L
 *
 * and goes round again while there is more. The last UID is the highest
 * one below which every message is done, so a crash anywhere means
 * fetching a few messages again, and their Message-ID (the contact's
 * source id) makes the second ingest a no-op. A UIDVALIDITY change means
 * the server renumbered the mailbox: last_uid starts from 0 again and the
 * same dedupe applies. A message that cannot be fetched whole three polls
 * in a row goes to the quarantine with that reason and the poller moves
 * past it: one bad message never blocks the mailbox.
 *
 * The FETCH response is read from curl's header stream (every line the
 * server sent, literals included) and parsed strictly by em_parse_fetch:
 * literal lengths are honoured, so a message body containing "* 5 FETCH"
 * or a tagged line cannot confuse the parser.
 */
#include "email_int.h"

#include <curl/curl.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "httpc.h"
#include "list.h"
#include "log.h"
#include "mailin.h"
#include "metrics.h"
#include "util.h"

#define IM_PLACE "chan.email.imap"
#define IM_BATCH_BYTES (32u * 1024 * 1024) /* bodies in hand at once */
/* Everything a command's answer holds travels through curl's header
 * stream, which curl 7.88 caps at 300 KiB per transfer - and counts
 * untagged responses again and again: n FETCH items of average size a
 * cost about a * n(n+1)/2 (130 one-line items of sizes already overflow
 * it). So a transfer of bodies is kept at (n+1)/2 * total <= IM_XFER_BYTES
 * (one message of up to IM_XFER_BYTES, a handful of small ones), a larger
 * message comes in chunks (BODY.PEEK[]<offset.length>), and sizes are
 * asked for IM_SIZE_UIDS UIDs at a time. */
#define IM_XFER_BYTES (192u * 1024)
#define IM_SIZE_UIDS 50
#define IM_CONCURRENT 4                    /* ingests at once */
#define IM_FETCH_TRIES 3
#define IM_MAX_ITEMS 1000

/* ---- config ------------------------------------------------------------ */

static const char *const after_names[] = {"seen", "move", NULL};
static const char *const tls_names[] = {"no", "try", "require", NULL};

static int mbox_check(void *conf, char *err, size_t errlen)
{
    struct em_mbox_conf *c = conf;

    if (!c->url || (strncmp(c->url, "imap://", 7) != 0 &&
                    strncmp(c->url, "imaps://", 8) != 0)) {
        snprintf(err, errlen, "url must be imap://HOST[:PORT]/MAILBOX or "
                              "imaps://...");
        return -1;
    }
    for (const char *p = c->url; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f) {
            snprintf(err, errlen, "url must not contain spaces or controls");
            return -1;
        }
    if (!c->username || !c->password) {
        snprintf(err, errlen, "username and password are required");
        return -1;
    }
    if (c->after == EM_AFTER_MOVE && (!c->move_to || !*c->move_to)) {
        snprintf(err, errlen, "after = move needs move_to");
        return -1;
    }
    if (c->move_to && strpbrk(c->move_to, "\"\\\r\n")) {
        snprintf(err, errlen, "move_to must not contain quotes, backslashes "
                              "or line breaks");
        return -1;
    }
    return 0;
}

#define M(f) offsetof(struct em_mbox_conf, f)
static const struct sb_conf_key mbox_keys[] = {
    {"url", SB_CONF_STR, M(url), NULL, 0, 2048, NULL, SB_CONF_REQUIRED,
     "imap://host[:port]/MAILBOX or imaps://... (MAILBOX: INBOX when "
     "empty)"},
    {"username", SB_CONF_STR, M(username), NULL, 0, 256, NULL, 0,
     "IMAP login"},
    {"password", SB_CONF_STR, M(password), NULL, 0, 256, NULL, SB_CONF_SECRET,
     "IMAP password"},
    {"address", SB_CONF_STR, M(address), NULL, 0, 254, NULL, 0,
     "our address at this mailbox: replies go out from it (default: the "
     "address the customer wrote to)"},
    {"interval", SB_CONF_DURATION, M(interval), "30s", 100, 86400000LL, NULL,
     0, "time between polls"},
    {"after", SB_CONF_ENUM, M(after), "seen", 0, 0, after_names, 0,
     "once a message is in the contact log: mark it \\Seen, or move it to "
     "move_to"},
    {"move_to", SB_CONF_STR, M(move_to), NULL, 0, 256, NULL, 0,
     "folder for after = move"},
    {"starttls", SB_CONF_ENUM, M(starttls), "try", 0, 0, tls_names, 0,
     "imap:// URLs: STARTTLS no, try or require"},
    {"verify", SB_CONF_BOOL, M(verify), "yes", 0, 0, NULL, 0,
     "verify the server's certificate and name"},
    {"ca_file", SB_CONF_STR, M(ca_file), NULL, 0, 4096, NULL, 0,
     "PEM bundle to verify with (default: the system store)"},
    {"batch", SB_CONF_INT, M(batch), "50", 1, IM_MAX_ITEMS, NULL, 0,
     "messages fetched per command"},
    {"timeout", SB_CONF_DURATION, M(timeout), "60s", 100, 3600000LL, NULL, 0,
     "one IMAP command, connect included"},
    {NULL, 0, 0, NULL, 0, 0, NULL, 0, NULL},
};
#undef M

const struct sb_conf_section em_mbox_section = {
    "mailbox", 1, sizeof(struct em_mbox_conf), mbox_keys,
    "An IMAP mailbox the e-mail channel polls (channels/email).",
    mbox_check,
};

/* ---- the response parsers ---------------------------------------------- */

/* The line starting at p (up to end): its length without CRLF through
 * *n, the start of the next line returned. */
static const char *line_end(const char *p, const char *end, size_t *n)
{
    const char *nl = memchr(p, '\n', (size_t)(end - p));

    if (!nl) {
        *n = (size_t)(end - p);
        return end;
    }
    *n = (size_t)(nl - p);
    if (*n && p[*n - 1] == '\r')
        (*n)--;
    return nl + 1;
}

static int read_num(const char **p, const char *end, unsigned long *out)
{
    unsigned long v = 0;
    const char *s = *p;

    if (s >= end || !isdigit((unsigned char)*s))
        return -1;
    while (s < end && isdigit((unsigned char)*s)) {
        if (v > 400000000UL)
            return -1;
        v = v * 10 + (unsigned long)(*s - '0');
        s++;
    }
    *p = s;
    *out = v;
    return 0;
}

static int word_at(const char *p, const char *end, const char *w)
{
    size_t n = strlen(w);
    return (size_t)(end - p) >= n && strncasecmp(p, w, n) == 0;
}

int em_parse_fetch(const char *buf, size_t len, struct em_fetch_item *items,
                   int max)
{
    const char *p = buf, *end = buf + len;
    int n = 0;

    while (p < end) {
        size_t ll;
        const char *next = line_end(p, end, &ll);
        const char *q = p, *le = p + ll;
        unsigned long seq;
        struct em_fetch_item it;

        if (!(ll > 2 && q[0] == '*' && q[1] == ' ')) {
            p = next;
            continue;
        }
        q += 2;
        if (read_num(&q, le, &seq) < 0 || !word_at(q, le, " FETCH (")) {
            p = next;
            continue;
        }
        q += 8;
        memset(&it, 0, sizeof(it));
        /* attributes up to the end of this line; a literal continues
         * after it, then the item goes on on the following line */
        for (;;) {
            while (q < le && *q == ' ')
                q++;
            if (q >= le)
                break;
            if (*q == ')') {
                q++;
                break;
            }
            if (word_at(q, le, "UID ")) {
                q += 4;
                if (read_num(&q, le, &it.uid) < 0)
                    return -1;
            } else if (word_at(q, le, "RFC822.SIZE ")) {
                q += 12;
                if (read_num(&q, le, &it.size) < 0)
                    return -1;
            } else if (word_at(q, le, "BODY[]")) {
                unsigned long blen, origin;
                q += 6;
                /* a partial fetch answers BODY[]<origin> */
                if (q < le && *q == '<') {
                    q++;
                    if (read_num(&q, le, &origin) < 0 || q >= le || *q != '>')
                        return -1;
                    q++;
                }
                if (q >= le || *q != ' ')
                    return -1;
                q++;
                if (word_at(q, le, "NIL")) {
                    q += 3;
                    continue;
                }
                if (q >= le || *q != '{')
                    return -1; /* a quoted body: not what servers send */
                q++;
                if (read_num(&q, le, &blen) < 0 || q + 1 != le || *q != '}')
                    return -1;
                /* the literal starts after this line's CRLF */
                if ((size_t)(end - next) < blen)
                    return -1; /* cut short */
                it.body = next;
                it.body_len = blen;
                /* the rest of the item follows the literal */
                p = next + blen;
                next = line_end(p, end, &ll);
                q = p;
                le = p + ll;
                continue;
            } else {
                /* FLAGS (...) and other attributes: skip one token or a
                 * parenthesised list */
                int depth = 0;
                while (q < le) {
                    if (*q == '(')
                        depth++;
                    else if (*q == ')') {
                        if (depth == 0)
                            break;
                        depth--;
                    } else if (*q == ' ' && depth == 0)
                        break;
                    q++;
                }
            }
        }
        if (n < max)
            items[n++] = it;
        p = next;
    }
    return n;
}

int em_parse_status(const char *buf, size_t len, unsigned long *uidvalidity,
                    unsigned long *uidnext)
{
    const char *p = buf, *end = buf + len;
    int have = 0;

    while (p < end) {
        size_t ll;
        const char *next = line_end(p, end, &ll);
        const char *q = p, *le = p + ll;

        if (word_at(q, le, "* STATUS ")) {
            q = memchr(q, '(', ll);
            while (q && q < le) {
                if (word_at(q, le, "UIDVALIDITY ")) {
                    q += 12;
                    if (read_num(&q, le, uidvalidity) == 0)
                        have |= 1;
                } else if (word_at(q, le, "UIDNEXT ")) {
                    q += 8;
                    if (read_num(&q, le, uidnext) == 0)
                        have |= 2;
                } else {
                    q++;
                }
            }
        }
        p = next;
    }
    return have == 3 ? 0 : -1;
}

/* ---- the poller -------------------------------------------------------- */

enum { IT_WAIT, IT_BUSY, IT_DONE, IT_AGAIN };

struct im_item {
    unsigned long uid, size;
    char *raw;
    size_t len;
    int state;
    int too_big;
    int unfetchable;
};

struct em_mbox {
    uv_loop_t *loop;
    char *name;
    struct em_mbox_conf c;
    size_t max_size;
    char *base_url;  /* imap://host:port/ */
    char *box_url;   /* base + the mailbox, as configured */
    char *box;       /* the mailbox name, decoded, for STATUS */
    char *userpwd;
    uv_timer_t timer;
    int stopping, busy, xfer, ingests, closed_timer;
    unsigned long uidvalidity, last_uid;
    int loaded;
    struct im_item *items;
    int nitems, next_submit;
    int fetch_idx, fetch_end;   /* items asked for by the transfer out */
    int solo;                   /* a batch failed: one message a time */
    int errors;                 /* polls failed in a row */
    uint64_t logged_ms;         /* when a failure was last logged */
    unsigned long uidnext;      /* from the last STATUS */
    unsigned long fail_uid; /* the uid that failed to fetch, and how often */
    int fail_count;
    struct sb_metric *m_polls, *m_errors, *m_fetched;
};

static void poll_start(struct em_mbox *m);
static void on_timer(uv_timer_t *t);
static void step_sizes(struct em_mbox *m);
static void free_items(struct em_mbox *m);

static void mbox_free(struct em_mbox *m)
{
    free_items(m);
    free(m->name);
    free(m->c.url);
    free(m->c.username);
    if (m->c.password)
        memset(m->c.password, 0, strlen(m->c.password));
    free(m->c.password);
    free(m->c.address);
    free(m->c.move_to);
    free(m->c.ca_file);
    free(m->base_url);
    free(m->box_url);
    free(m->box);
    free(m);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct em_mbox *m = h->data;

    m->closed_timer = 1;
    if (!m->xfer && !m->ingests)
        mbox_free(m);
}

/* After anything finishes while stopping: free when nothing is left. */
static int gone(struct em_mbox *m)
{
    if (!m->stopping)
        return 0;
    if (!m->xfer && !m->ingests && m->closed_timer)
        mbox_free(m);
    return 1;
}

static void free_items(struct em_mbox *m)
{
    for (int i = 0; i < m->nitems; i++)
        free(m->items[i].raw);
    free(m->items);
    m->items = NULL;
    m->nitems = m->next_submit = 0;
}

/* This poll is over: the next one after the interval. */
static void poll_done(struct em_mbox *m, const char *error)
{
    uint64_t delay = (uint64_t)m->c.interval;

    if (!error) {
        if (m->errors)
            SB_NOTICE(IM_PLACE, "polling again mailbox=%s after %d failed "
                                "polls",
                      m->name, m->errors);
        m->solo = 0;
        m->errors = 0;
    } else {
        /* a mailbox that keeps failing (server down) is tried less and
         * less often, up to every 5 minutes, and logged once a minute */
        uint64_t now = sb_mono_ms();
        sb_metric_add(m->m_errors, 1, m->name);
        m->errors++;
        for (int i = 1; i < m->errors && i < 10 && delay < 300000; i++)
            delay *= 2;
        if (delay > 300000)
            delay = 300000;
        if (m->errors == 1 || now - m->logged_ms >= 60000) {
            SB_WARN(IM_PLACE, "poll failed mailbox=%s err=\"%s\" failures=%d "
                              "next_in_ms=%llu",
                    m->name, error, m->errors, (unsigned long long)delay);
            m->logged_ms = now;
        }
    }
    free_items(m);
    m->busy = 0;
    if (!m->stopping)
        uv_timer_start(&m->timer, on_timer, delay, 0);
}

/* A curl handle for one IMAP command on url. */
static CURL *im_easy(struct em_mbox *m, const char *url, const char *cmd)
{
    CURL *e = curl_easy_init();
    CURLcode rc = CURLE_OK;

    if (!e)
        return NULL;
#define SET(o, v)                                                             \
    do {                                                                      \
        if (rc == CURLE_OK)                                                   \
            rc = curl_easy_setopt(e, o, v);                                   \
    } while (0)
    SET(CURLOPT_URL, url);
    SET(CURLOPT_PROTOCOLS_STR, "imap,imaps");
    SET(CURLOPT_USERNAME, m->c.username);
    SET(CURLOPT_PASSWORD, m->c.password);
    SET(CURLOPT_CUSTOMREQUEST, cmd);
    SET(CURLOPT_TIMEOUT_MS, (long)m->c.timeout);
    SET(CURLOPT_CONNECTTIMEOUT_MS, (long)m->c.timeout);
    if (strncmp(url, "imap://", 7) == 0 && m->c.starttls)
        SET(CURLOPT_USE_SSL, m->c.starttls == 2 ? (long)CURLUSESSL_ALL
                                                : (long)CURLUSESSL_TRY);
    SET(CURLOPT_SSL_VERIFYPEER, m->c.verify ? 1L : 0L);
    SET(CURLOPT_SSL_VERIFYHOST, m->c.verify ? 2L : 0L);
    if (m->c.ca_file)
        SET(CURLOPT_CAINFO, m->c.ca_file);
#undef SET
    if (rc != CURLE_OK) {
        curl_easy_cleanup(e);
        return NULL;
    }
    return e;
}

static int im_run(struct em_mbox *m, const char *url, const char *cmd,
                  size_t max_body, sb_httpc_cb *cb)
{
    CURL *e = im_easy(m, url, cmd);

    if (!e)
        return -1;
    /* STATUS of the mailbox a connection has selected answers from that
     * session's view (Dovecot): ask on a connection of its own */
    if (strncmp(cmd, "STATUS ", 7) == 0) {
        curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
        curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
    }
    SB_DEBUG(IM_PLACE, "command mailbox=%s cmd=\"%.80s\"", m->name, cmd);
    if (sb_httpc_easy(e, 1, max_body, cb, m) < 0)
        return -1;
    m->xfer = 1;
    return 0;
}

/* "1,2,5" of the items in state st (NULL when none). */
static char *uid_set(struct em_mbox *m, int want_fetch)
{
    struct sb_buf b;

    sb_buf_init(&b, 0);
    for (int i = 0; i < m->nitems; i++) {
        const struct im_item *it = &m->items[i];
        if (want_fetch ? (it->too_big || it->unfetchable)
                       : it->state != IT_DONE)
            continue;
        sb_buf_printf(&b, "%s%lu", b.len ? "," : "", it->uid);
    }
    return b.len ? sb_buf_steal(&b, NULL) : (sb_buf_free(&b), NULL);
}

/* -- save ---------------------------------------------------------------- */

static void on_saved(enum sb_store_status st, unsigned long v,
                     unsigned long last, void *arg)
{
    struct em_mbox *m = arg;
    int more;

    (void)v;
    (void)last;
    m->xfer = 0;
    if (gone(m))
        return;
    if (st != SB_STORE_OK) {
        poll_done(m, "saving the last UID failed");
        return;
    }
    /* a full batch, all of it done: there may be more */
    more = m->nitems > 0 && m->uidnext && m->last_uid < m->uidnext - 1;
    for (int i = 0; i < m->nitems; i++)
        if (m->items[i].state != IT_DONE)
            more = 0;
    if (more) {
        free_items(m);
        step_sizes(m);
    } else {
        poll_done(m, NULL);
    }
}

static void step_save(struct em_mbox *m)
{
    unsigned long last = m->last_uid;

    /* the highest UID below which everything is done */
    for (int i = 0; i < m->nitems && m->items[i].state == IT_DONE; i++)
        last = m->items[i].uid;
    m->last_uid = last;
    if (sb_mailin_pos_set(m->name, m->uidvalidity, last, on_saved, m) < 0) {
        poll_done(m, "redis unavailable");
        return;
    }
    m->xfer = 1;
}

/* -- mark ---------------------------------------------------------------- */

static void on_marked(const struct sb_httpc_resp *r, void *arg)
{
    struct em_mbox *m = arg;

    m->xfer = 0;
    if (gone(m))
        return;
    if (r->error) {
        /* in the log already, but not marked: last_uid stays, the next
         * poll fetches them again, finds them known (same Message-ID) and
         * marks them then */
        poll_done(m, r->error);
        return;
    }
    step_save(m);
}

static void step_mark(struct em_mbox *m)
{
    char *set = uid_set(m, 0);
    char *cmd;

    if (!set) {
        step_save(m);
        return;
    }
    if (m->c.after == EM_AFTER_MOVE)
        cmd = sb_asprintf("UID MOVE %s \"%s\"", set, m->c.move_to);
    else
        cmd = sb_asprintf("UID STORE %s +FLAGS.SILENT (\\Seen)", set);
    if (im_run(m, m->box_url, cmd, 1024 * 1024, on_marked) < 0)
        step_save(m);
    free(cmd);
    free(set);
}

/* -- ingest -------------------------------------------------------------- */

static void submit_more(struct em_mbox *m);

static void all_submitted_done(struct em_mbox *m)
{
    if (m->ingests == 0 && m->next_submit >= m->nitems)
        step_mark(m);
}

struct im_ing {
    struct em_mbox *m;
    int idx;
};

static void on_item_done(const struct sb_mailin_result *r, void *arg)
{
    struct im_ing *g = arg;
    struct em_mbox *m = g->m;
    struct im_item *it = m->items ? &m->items[g->idx] : NULL;

    free(g);
    m->ingests--;
    if (gone(m))
        return;
    if (!it)
        return;
    if (r->status == SB_MAILIN_UNAVAILABLE) {
        it->state = IT_AGAIN;
        /* stop submitting: the rest waits for the next poll */
        m->next_submit = m->nitems;
        SB_WARN(IM_PLACE, "not taken in, will try again mailbox=%s uid=%lu "
                          "reason=\"%s\"",
                m->name, it->uid, r->reason ? r->reason : "-");
    } else {
        it->state = IT_DONE;
        free(it->raw);
        it->raw = NULL;
        sb_metric_add(m->m_fetched, 1, m->name,
                      r->status == SB_MAILIN_OK ? "ingested" : "quarantined");
    }
    submit_more(m);
    all_submitted_done(m);
}

static void submit_more(struct em_mbox *m)
{
    while (m->ingests < IM_CONCURRENT && m->next_submit < m->nitems) {
        int i = m->next_submit++;
        struct im_item *it = &m->items[i];
        struct im_ing *g = sb_calloc(1, sizeof(*g));
        struct sb_mailin_src src;
        char reason[128];
        int rc;

        g->m = m;
        g->idx = i;
        memset(&src, 0, sizeof(src));
        src.mailbox = m->name;
        src.address = m->c.address;
        src.uid = it->uid;
        src.uidvalidity = m->uidvalidity;
        it->state = IT_BUSY;
        if (it->too_big) {
            snprintf(reason, sizeof(reason),
                     "too large: %lu bytes (max_size %zu); not fetched",
                     it->size, m->max_size);
            rc = sb_mailin_quarantine("", 0, reason, &src, on_item_done, g);
        } else if (it->unfetchable) {
            snprintf(reason, sizeof(reason),
                     "could not be fetched whole in %d polls",
                     IM_FETCH_TRIES);
            rc = sb_mailin_quarantine("", 0, reason, &src, on_item_done, g);
        } else {
            rc = sb_mailin_ingest(it->raw, it->len, &src, on_item_done, g);
        }
        if (rc < 0) {
            free(g);
            it->state = IT_AGAIN;
            m->next_submit = m->nitems;
            break;
        }
        m->ingests++;
    }
}

/* -- fetch bodies -------------------------------------------------------- */

static void fetch_next(struct em_mbox *m);

/* Item i failed to come whole once more: after IM_FETCH_TRIES polls in
 * a row it goes to the quarantine unfetched. */
static void note_failure(struct em_mbox *m, int i)
{
    struct im_item *it = &m->items[i];

    if (m->fail_uid == it->uid)
        m->fail_count++;
    else {
        m->fail_uid = it->uid;
        m->fail_count = 1;
    }
    SB_WARN(IM_PLACE, "message not fetched whole mailbox=%s uid=%lu try=%d",
            m->name, it->uid, m->fail_count);
}

/* Item i could not be fetched whole: the batch stops before it (it is
 * tried again next poll, and quarantined when it keeps failing). */
static void cut_at(struct em_mbox *m, int i)
{
    note_failure(m, i);
    for (int k = i; k < m->nitems; k++) {
        free(m->items[k].raw);
        m->items[k].raw = NULL;
    }
    m->nitems = i;
}

static void on_bodies(const struct sb_httpc_resp *r, void *arg)
{
    struct em_mbox *m = arg;
    struct em_fetch_item got[IM_MAX_ITEMS];
    int n, chunked;
    struct im_item *first;

    m->xfer = 0;
    if (gone(m))
        return;
    if (r->error) {
        /* a batch that failed is asked for one message at a time next;
         * a message that fails alone counts towards its quarantine */
        if (m->fetch_end - m->fetch_idx > 1)
            m->solo = 1;
        else
            note_failure(m, m->fetch_idx);
        poll_done(m, r->error);
        return;
    }
    n = em_parse_fetch(r->body, r->body_len, got, IM_MAX_ITEMS);
    if (n < 0)
        SB_WARN(IM_PLACE, "malformed FETCH response mailbox=%s", m->name);
    first = &m->items[m->fetch_idx];
    chunked = first->size > IM_XFER_BYTES;
    if (chunked) {
        /* one chunk of one large message */
        const struct em_fetch_item *g = NULL;
        for (int k = 0; k < n; k++)
            if (got[k].uid == first->uid && got[k].body)
                g = &got[k];
        if (!g) {
            cut_at(m, m->fetch_idx);
        } else {
            first->raw = sb_realloc(first->raw, first->len + g->body_len + 1);
            memcpy(first->raw + first->len, g->body, g->body_len);
            first->len += g->body_len;
            first->raw[first->len] = '\0';
            if (g->body_len < IM_XFER_BYTES || first->len >= first->size ||
                first->len > m->max_size)
                m->fetch_idx++;
        }
    } else {
        for (int i = m->fetch_idx; i < m->fetch_end; i++) {
            struct im_item *it = &m->items[i];
            if (it->too_big || it->unfetchable)
                continue;
            for (int k = 0; k < n; k++)
                if (got[k].uid == it->uid && got[k].body) {
                    it->raw = sb_malloc(got[k].body_len + 1);
                    memcpy(it->raw, got[k].body, got[k].body_len);
                    it->raw[got[k].body_len] = '\0';
                    it->len = got[k].body_len;
                    break;
                }
            if (!it->raw) {
                cut_at(m, i);
                break;
            }
        }
        /* past what this transfer asked for (or what is left of a cut) */
        m->fetch_idx = m->fetch_end < m->nitems ? m->fetch_end : m->nitems;
    }
    fetch_next(m);
}

/* Ask for the next bodies: a run of small messages within IM_XFER_BYTES,
 * or the next chunk of a large one; when all are in hand, ingest. */
static void fetch_next(struct em_mbox *m)
{
    struct sb_buf set;
    size_t total = 0;
    char *cmd;
    int i = m->fetch_idx;

    while (i < m->nitems &&
           (m->items[i].too_big || m->items[i].unfetchable))
        i++;
    m->fetch_idx = i;
    if (i >= m->nitems) {
        if (m->nitems == 0) {
            poll_done(m, NULL);
            return;
        }
        m->next_submit = 0;
        submit_more(m);
        all_submitted_done(m);
        return;
    }
    if (m->items[i].size > IM_XFER_BYTES) {
        cmd = sb_asprintf("UID FETCH %lu (UID BODY.PEEK[]<%zu.%u>)",
                          m->items[i].uid, m->items[i].len, IM_XFER_BYTES);
        m->fetch_end = i + 1;
        total = IM_XFER_BYTES;
    } else {
        sb_buf_init(&set, 0);
        for (; i < m->nitems; i++) {
            const struct im_item *it = &m->items[i];
            if (it->too_big || it->unfetchable)
                continue;
            size_t n = (size_t)(i - m->fetch_idx) + 1; /* with this one */
            if (it->size > IM_XFER_BYTES ||
                (set.len && (m->solo ||
                             (total + it->size) * (n + 1) / 2 >
                                 IM_XFER_BYTES)))
                break;
            sb_buf_printf(&set, "%s%lu", set.len ? "," : "", it->uid);
            total += it->size;
        }
        m->fetch_end = i;
        cmd = sb_asprintf("UID FETCH %s (UID BODY.PEEK[])", set.data);
        sb_buf_free(&set);
    }
    /* the stream carries the bodies plus the protocol around them */
    if (im_run(m, m->box_url, cmd, total + 64 * 1024, on_bodies) < 0)
        poll_done(m, "fetch refused");
    free(cmd);
}

static void step_bodies(struct em_mbox *m)
{
    m->fetch_idx = 0;
    fetch_next(m);
}

/* -- sizes --------------------------------------------------------------- */

static int by_uid(const void *a, const void *b)
{
    unsigned long x = ((const struct em_fetch_item *)a)->uid;
    unsigned long y = ((const struct em_fetch_item *)b)->uid;
    return x < y ? -1 : x > y;
}

static void on_sizes(const struct sb_httpc_resp *r, void *arg)
{
    struct em_mbox *m = arg;
    struct em_fetch_item *got;
    int n, k = 0;
    size_t bytes = 0;

    m->xfer = 0;
    if (gone(m))
        return;
    if (r->error) {
        poll_done(m, r->error);
        return;
    }
    got = sb_calloc(IM_MAX_ITEMS * 4, sizeof(*got));
    n = em_parse_fetch(r->body, r->body_len, got, IM_MAX_ITEMS * 4);
    if (n < 0) {
        free(got);
        poll_done(m, "malformed FETCH response");
        return;
    }
    qsort(got, (size_t)n, sizeof(*got), by_uid);
    m->items = sb_calloc((size_t)m->c.batch, sizeof(*m->items));
    for (int i = 0; i < n && k < m->c.batch; i++) {
        struct im_item *it;
        /* "last+1:*" names the last message even when it is older */
        if (got[i].uid <= m->last_uid || (k && got[i].uid == got[i - 1].uid))
            continue;
        if (k && bytes + got[i].size > IM_BATCH_BYTES)
            break;
        it = &m->items[k++];
        it->uid = got[i].uid;
        it->size = got[i].size;
        it->too_big = m->max_size && got[i].size > m->max_size;
        it->unfetchable = m->fail_uid == it->uid &&
                          m->fail_count >= IM_FETCH_TRIES;
        if (!it->too_big)
            bytes += got[i].size;
    }
    free(got);
    m->nitems = k;
    if (k == 0) {
        /* no message in this range of UIDs (expunged or moved ones): when
         * the mailbox goes further, skip it - UIDs only grow */
        if (m->uidnext && m->last_uid + IM_SIZE_UIDS < m->uidnext - 1) {
            m->last_uid += IM_SIZE_UIDS;
            step_sizes(m);
            return;
        }
        poll_done(m, NULL);
        return;
    }
    step_bodies(m);
}

static void step_sizes(struct em_mbox *m)
{
    char *cmd = sb_asprintf("UID FETCH %lu:%lu (UID RFC822.SIZE)",
                            m->last_uid + 1, m->last_uid + IM_SIZE_UIDS);

    if (im_run(m, m->box_url, cmd, 4 * 1024 * 1024, on_sizes) < 0)
        poll_done(m, "fetch refused");
    free(cmd);
}

/* -- status -------------------------------------------------------------- */

static void on_status(const struct sb_httpc_resp *r, void *arg)
{
    struct em_mbox *m = arg;
    unsigned long v = 0, next = 0;

    m->xfer = 0;
    if (gone(m))
        return;
    sb_metric_add(m->m_polls, 1, m->name);
    if (r->error) {
        poll_done(m, r->error);
        return;
    }
    if (em_parse_status(r->body, r->body_len, &v, &next) < 0) {
        poll_done(m, "no STATUS in the answer");
        return;
    }
    if (m->uidvalidity && v != m->uidvalidity) {
        SB_WARN(IM_PLACE, "UIDVALIDITY changed mailbox=%s old=%lu new=%lu: "
                          "resync (known messages are recognised by "
                          "Message-ID)",
                m->name, m->uidvalidity, v);
        m->last_uid = 0;
        m->fail_uid = 0;
    }
    m->uidvalidity = v;
    m->uidnext = next;
    if (next && next - 1 <= m->last_uid) {
        poll_done(m, NULL);
        return;
    }
    step_sizes(m);
}

static void step_status(struct em_mbox *m)
{
    struct sb_buf q;
    char *cmd;

    sb_buf_init(&q, 0);
    sb_buf_appends(&q, "STATUS \"");
    for (const char *p = m->box; *p; p++) {
        if (*p == '"' || *p == '\\')
            sb_buf_appends(&q, "\\");
        sb_buf_append(&q, p, 1);
    }
    sb_buf_appends(&q, "\" (UIDVALIDITY UIDNEXT)");
    cmd = sb_buf_steal(&q, NULL);
    if (im_run(m, m->base_url, cmd, 64 * 1024, on_status) < 0)
        poll_done(m, "status refused");
    free(cmd);
}

/* -- state --------------------------------------------------------------- */

static void on_loaded(enum sb_store_status st, unsigned long v,
                      unsigned long last, void *arg)
{
    struct em_mbox *m = arg;

    m->xfer = 0;
    if (gone(m))
        return;
    if (st != SB_STORE_OK) {
        poll_done(m, "reading the mailbox position failed");
        return;
    }
    m->uidvalidity = v;
    m->last_uid = last;
    m->loaded = 1;
    SB_INFO(IM_PLACE, "position mailbox=%s uidvalidity=%lu last_uid=%lu",
            m->name, m->uidvalidity, m->last_uid);
    step_status(m);
}

static void poll_start(struct em_mbox *m)
{
    if (m->busy || m->stopping)
        return;
    m->busy = 1;
    if (m->loaded) {
        step_status(m);
        return;
    }
    if (sb_mailin_pos_get(m->name, on_loaded, m) < 0) {
        /* Redis not connected yet (at start): quietly, in a second */
        m->busy = 0;
        uv_timer_start(&m->timer, on_timer, 1000, 0);
        return;
    }
    m->xfer = 1;
}

static void on_timer(uv_timer_t *t)
{
    poll_start(t->data);
}

/* Split url into "scheme://authority/" and the decoded mailbox. */
static int split_url(const char *url, char **base, char **box)
{
    const char *a = strstr(url, "://"), *slash;
    char *dec;
    int n = 0;

    if (!a)
        return -1;
    slash = strchr(a + 3, '/');
    if (!slash || !slash[1]) {
        *base = sb_asprintf("%.*s/", (int)(slash ? slash - url : (long)strlen(url)),
                            url);
        *box = sb_strdup("INBOX");
        return 0;
    }
    *base = sb_strndup(url, (size_t)(slash - url + 1));
    dec = curl_easy_unescape(NULL, slash + 1, 0, &n);
    if (!dec || memchr(dec, 0, (size_t)n) || strpbrk(dec, "\r\n;?")) {
        curl_free(dec);
        free(*base);
        return -1;
    }
    *box = sb_strdup(dec);
    curl_free(dec);
    return 0;
}

struct em_mbox *em_mbox_start(uv_loop_t *loop, const char *name,
                              const struct em_mbox_conf *c, size_t max_size)
{
    struct em_mbox *m = sb_calloc(1, sizeof(*m));

    if (split_url(c->url, &m->base_url, &m->box) < 0) {
        SB_ERR(IM_PLACE, "mailbox %s: bad url", name);
        free(m);
        return NULL;
    }
    m->loop = loop;
    m->name = sb_strdup(name);
    m->c = *c;
    m->c.url = sb_strdup(c->url);
    m->c.username = sb_strdup(c->username);
    m->c.password = sb_strdup(c->password);
    m->c.address = c->address ? sb_strdup(c->address) : NULL;
    m->c.move_to = c->move_to ? sb_strdup(c->move_to) : NULL;
    m->c.ca_file = c->ca_file ? sb_strdup(c->ca_file) : NULL;
    m->box_url = sb_strdup(c->url);
    if (!strchr(strstr(m->box_url, "://") + 3, '/')) {
        free(m->box_url);
        m->box_url = sb_asprintf("%sINBOX", m->base_url);
    }
    m->max_size = max_size;
    m->m_polls = sb_metric_counter("sb_imap_polls_total",
                                   "IMAP polls by mailbox", "mailbox");
    m->m_errors = sb_metric_counter("sb_imap_errors_total",
                                    "IMAP polls that failed", "mailbox");
    m->m_fetched = sb_metric_counter("sb_imap_messages_total",
                                     "Messages taken from a mailbox",
                                     "mailbox,result");
    uv_timer_init(loop, &m->timer);
    m->timer.data = m;
    uv_timer_start(&m->timer, on_timer, 0, 0);
    SB_NOTICE(IM_PLACE, "polling mailbox=%s every=%lldms after=%s", name,
              c->interval, after_names[c->after]);
    return m;
}

void em_mbox_stop(struct em_mbox *m)
{
    if (!m)
        return;
    m->stopping = 1;
    uv_timer_stop(&m->timer);
    uv_close((uv_handle_t *)&m->timer, on_timer_closed);
}
