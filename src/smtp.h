/* smtp.h - outbound mail: building correct MIME, and sending it through a
 * relay with libesmtp on a bounded set of threads of its own.
 *
 * Building (sb_mail_build) is pure and runs anywhere. Sending: the loop
 * thread submits messages to an sb_smtp client; each of its threads (at
 * most conf->threads, none shared with the worker pool, so a slow relay
 * never starves MIME parsing) takes up to conf->max_per_session waiting
 * messages and sends them in ONE SMTP session (connect, EHLO, STARTTLS,
 * AUTH, then MAIL/RCPT/DATA per message); every message's callback runs
 * on the loop thread exactly once with its outcome.
 *
 * Outcome per message (the relay's word for its recipient wins):
 *   OK        250 after DATA and the recipient accepted;
 *   TEMPFAIL  4xx, 552 "too many recipients" (RFC 5321 4.5.3.1.10), a
 *             timeout, a dropped or refused connection, a failed STARTTLS
 *             or AUTH that might work later, a silent server;
 *   PERMFAIL  5xx (other than that 552), and a message refused before
 *             sending (sb_mail_build's reasons).
 * Timeouts are conf->timeout_ms per SMTP command/response (libesmtp's
 * RFC minimums are overridden: Timeout_OVERRIDE_RFC2822_MINIMUM).
 * SIGPIPE must be ignored process-wide (main does).
 */
#ifndef SB_SMTP_H
#define SB_SMTP_H

#include <stddef.h>
#include <uv.h>

#include "util.h"

/* ---- building ---------------------------------------------------------- */

struct sb_mail {
    const char *from_addr;   /* envelope and From address (required) */
    const char *from_name;   /* display name (UTF-8) or NULL */
    const char *to_addr;     /* one recipient (required) */
    const char *to_name;     /* or NULL */
    const char *reply_to;    /* address or NULL */
    const char *subject;     /* UTF-8, or NULL for none */
    const char *text;        /* UTF-8 plain body (required, may be "") */
    const char *html;        /* UTF-8 HTML alternative, or NULL */
    const char *message_id;  /* without <>, e.g. "nt_5.1.x7f3@example.com"
                                (required: the caller makes it on its own
                                domain) */
    const char *in_reply_to; /* msg-id without <>, or NULL */
    const char *references;  /* space-separated msg-ids without <>, or
                                NULL */
    const char *list_unsubscribe;      /* URL (https:, http: in
                                          development, or mailto:) or NULL */
    int list_unsubscribe_post;         /* 1: List-Unsubscribe-Post:
                                          List-Unsubscribe=One-Click */
    const char *auto_submitted;        /* "auto-generated" for
                                          notifications, NULL for
                                          replies */
    int64_t date_ms;                   /* Date header; 0 = now */
};

/* Write the whole message (headers, blank line, body) to out, CRLF line
 * endings throughout, lines at most 998 bytes:
 *  - From/To/Reply-To with RFC 2047 encoded display names when not ASCII
 *    (and quoted when they need it), Subject encoded the same way (folded
 *    under 78 columns), Date, Message-ID, In-Reply-To, References,
 *    MIME-Version, List-Unsubscribe(-Post), Auto-Submitted;
 *  - text only: text/plain; charset=utf-8, quoted-printable (base64 when
 *    that is shorter, e.g. mostly Cyrillic); with html:
 *    multipart/alternative (text first) with a boundary that occurs in
 *    neither part;
 *  - bodies normalised to CRLF (lone CR or LF become CRLF). Dot-stuffing
 *    is the sender's job (libesmtp does it), not the builder's.
 * Refused (-1, static reason in *why): a CR, LF or NUL in any header
 * value or address (header injection), an address without exactly one
 * "@" or with spaces, "<", ">", "," or controls, a missing required
 * field, invalid UTF-8 anywhere. Returns 0 otherwise. */
int sb_mail_build(const struct sb_mail *m, struct sb_buf *out,
                  const char **why);

/* ---- sending ----------------------------------------------------------- */

enum sb_smtp_tls {
    SB_SMTP_TLS_NONE = 0, /* plain (development relays on loopback) */
    SB_SMTP_TLS_TRY,      /* STARTTLS when offered */
    SB_SMTP_TLS_REQUIRE   /* STARTTLS or TEMPFAIL (the default) */
};

struct sb_smtp_conf {
    const char *host;        /* relay host name or address */
    int port;                /* 25, 587, ... */
    enum sb_smtp_tls tls;
    int verify_cert;         /* 1: the relay's certificate must verify
                                (against ca_file or the system store) and
                                match host */
    const char *ca_file;     /* PEM bundle or NULL */
    const char *user;        /* AUTH user, NULL for none */
    const char *password;
    const char *helo;        /* EHLO name; NULL: the host name */
    long timeout_ms;         /* per command; 0 = 30000 */
    size_t threads;          /* sessions at once; 0 = 2 */
    size_t max_per_session;  /* messages per session; 0 = 100 */
    size_t max_queue;        /* waiting messages before submit refuses;
                                0 = 10000 */
};

enum sb_smtp_status { SB_SMTP_OK = 0, SB_SMTP_TEMPFAIL, SB_SMTP_PERMFAIL,
                      SB_SMTP_CANCELLED };

struct sb_smtp_result {
    enum sb_smtp_status status;
    int code;            /* the relay's reply code for the recipient or
                            the transfer (250, 451, 550...), 0 when none
                            (connection failure, timeout) */
    const char *reason;  /* short: the relay's text or ours ("timeout",
                            "connection refused", "STARTTLS required but
                            not offered"); borrowed for the callback */
};

typedef void sb_smtp_cb(const struct sb_smtp_result *r, void *arg);

struct sb_smtp;

/* A client for one relay (conf borrowed for the call: copied). NULL on a
 * bad conf (logged). */
struct sb_smtp *sb_smtp_new(uv_loop_t *loop, const struct sb_smtp_conf *conf);

/* Queue one message: envelope sender and one recipient (addresses, no
 * <>), data = a whole message from sb_mail_build (copied). 0 accepted (cb
 * runs exactly once, on the loop, never inside this call), -1 refused
 * (queue full, closing, an address with CR/LF/NUL/<>/spaces): no cb. */
int sb_smtp_submit(struct sb_smtp *s, const char *env_from, const char *rcpt,
                   const char *data, size_t len, sb_smtp_cb *cb, void *arg);

/* Messages accepted whose callback has not run. */
size_t sb_smtp_pending(const struct sb_smtp *s);

/* Stop: waiting messages complete CANCELLED before this returns; sessions
 * in progress finish (libesmtp cannot be interrupted; bounded by the
 * timeouts) and their messages complete normally from the loop; the
 * client frees itself once its threads are done. No use after this. */
void sb_smtp_close(struct sb_smtp *s);

#endif
