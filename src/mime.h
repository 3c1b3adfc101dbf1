/* mime.h - one e-mail message, parsed with GMime into what the contact log
 * needs.
 *
 * Real-world mail is malformed and often not in UTF-8. sb_mime_parse()
 * turns raw RFC 5322 bytes into UTF-8 fields and text, or refuses the
 * message with a reason (the caller quarantines it). It never aborts,
 * never loops and stays within the limits given, whatever the input.
 *
 * Threads: sb_mime_init() once on the main thread before any worker
 * starts; sb_mime_parse() is then safe on any thread (the e-mail driver
 * runs it on the worker pool) and touches no global state of ours.
 *
 * Everything in struct sb_mime_msg is owned by it (sb_mime_free()). Every
 * string is valid UTF-8 without NUL bytes and, for header-derived fields
 * (names, addresses, subject, ids), without CR or LF: a decoded header
 * can never smuggle a line break into something we later send.
 */
#ifndef SB_MIME_H
#define SB_MIME_H

#include <stddef.h>
#include <stdint.h>

struct sb_mime_limits {
    size_t max_size;        /* whole message, bytes (refused above) */
    size_t max_header;      /* one header field, bytes (refused above) */
    int max_depth;          /* multipart / message nesting */
    int max_parts;          /* MIME parts in all */
    size_t max_attachment;  /* content kept per attachment; larger ones
                               keep their metadata only (data NULL,
                               truncated 1) */
    size_t max_text;        /* text and html kept, bytes (cut at a
                               character boundary, text_truncated 1) */
    /* Charsets tried, in order, for undeclared 8-bit text in headers and
     * bodies (e.g. {"utf-8", "windows-1251", "koi8-r", NULL}); NULL for
     * that default. */
    const char *const *fallback_charsets;
};

/* Defaults: 25 MiB, 64 KiB, depth 20, 500 parts, 10 MiB per attachment,
 * 1 MiB of text, fallbacks utf-8, windows-1251, koi8-r. */
void sb_mime_limits_default(struct sb_mime_limits *lim);

struct sb_mime_addr {
    char *name; /* display name, decoded (RFC 2047); "" when none */
    char *addr; /* addr-spec as written (not normalised); "" when none */
};

struct sb_mime_att {
    char *filename;     /* decoded (RFC 2047 / RFC 2231), path parts
                           removed; "" when none */
    char *content_type; /* "image/png", lower case */
    char *content_id;   /* without <>, or NULL */
    int is_inline;      /* Content-Disposition inline */
    size_t size;        /* decoded size in bytes */
    unsigned char *data;/* decoded content (size bytes), NULL when over
                           max_attachment */
    int truncated;      /* 1 when data was dropped for the cap */
    char sha256[65];    /* hex of the decoded content */
};

/* A delivery status notification (RFC 3464, multipart/report;
 * report-type=delivery-status), or a bounce recognised by its shape. */
struct sb_mime_dsn {
    char *original_message_id; /* Message-ID of the message that bounced
                                  (from the returned message or headers
                                  part), without <>, or NULL */
    char *recipient;           /* Final-Recipient / Original-Recipient
                                  address, or NULL */
    char *action;              /* "failed", "delayed", "delivered",
                                  "relayed", "expanded", or NULL */
    char *status;              /* "5.1.1", or NULL */
    char *diagnostic;          /* Diagnostic-Code text, or NULL */
};

struct sb_mime_msg {
    char *message_id;     /* without <>, or NULL when absent */
    char *in_reply_to;    /* first msg-id of In-Reply-To, without <> */
    char **references;    /* msg-ids of References, oldest first,
                             without <>; NULL-terminated (never NULL) */
    struct sb_mime_addr from;      /* empty strings when absent */
    struct sb_mime_addr reply_to;  /* empty strings when absent */
    struct sb_mime_addr *to;       /* nto entries */
    size_t nto;
    struct sb_mime_addr *cc;
    size_t ncc;
    char *return_path;    /* addr-spec; "" for "<>" (a bounce); NULL when
                             there is no Return-Path header */
    char *subject;        /* decoded, "" when absent */
    int64_t date_ms;      /* Date header as ms since the epoch, 0 when
                             absent or unparseable */

    char *text;           /* the body as plain UTF-8 text: the text/plain
                             part, else the HTML turned into readable text
                             (paragraphs, line breaks, list items, link
                             targets kept; scripts and styles dropped;
                             entities decoded); "" when none */
    int text_from_html;   /* 1 when text came from the HTML */
    char *html;           /* the text/html part as UTF-8, or NULL */
    int text_truncated;
    /* Byte offset in text where quoted reply history starts ("On ...
     * wrote:", "-----Original Message-----", "> " lines running to the
     * end, the Russian "... написал(а):"), or -1: the console folds it. */
    long quote_offset;

    struct sb_mime_att *atts;
    size_t natts;

    /* Automatic mail that must never open a conversation or get an
     * answer: Auto-Submitted other than "no", Precedence bulk / junk /
     * list / auto_reply, X-Autoreply, X-Autorespond, X-Auto-Response-
     * Suppress: All or OOF, an empty Return-Path, a DSN. */
    int automatic;
    char *auto_reason;    /* "auto-submitted: auto-replied", ...; NULL */
    int is_dsn;
    struct sb_mime_dsn dsn;   /* filled when is_dsn */

    char **charsets;      /* charsets met (lower case, "utf-8" for the
                             fallbacks too: what was actually used);
                             NULL-terminated */
    int parts;            /* MIME parts seen */
};

/* Call once on the main thread before any other thread exists (GMime's
 * global state); sb_mime_shutdown() at exit. Both idempotent. */
void sb_mime_init(void);
void sb_mime_shutdown(void);

/* Parse len bytes of one message. Returns 0 with *out filled (free it
 * with sb_mime_free()), or -1 with a one-line reason in err (e.g. "too
 * large: 30000000 bytes", "nesting deeper than 20", "no header", "header
 * field over 65536 bytes", "more than 500 parts") and *out empty. A
 * message merely broken (missing boundary, bad base64, undeclared or
 * unknown charset, no body) parses to what can be recovered: it is not
 * refused. lim NULL: the defaults. */
int sb_mime_parse(const char *raw, size_t len, const struct sb_mime_limits *lim,
                  struct sb_mime_msg *out, char *err, size_t errlen);

void sb_mime_free(struct sb_mime_msg *m);

#endif
