/* email_int.h - inside the e-mail driver: the IMAP poller's interface to
 * email.c. Nothing outside channels/email/ includes this.
 */
#ifndef SB_EMAIL_INT_H
#define SB_EMAIL_INT_H

#include <stddef.h>
#include <uv.h>

#include "config.h"

/* [mailbox NAME] */
struct em_mbox_conf {
    char *url;          /* imap://host[:port]/MAILBOX or imaps:// */
    char *username;
    char *password;     /* SECRET */
    char *address;      /* our address at this mailbox (replies from it) */
    long long interval; /* ms between polls */
    int after;          /* EM_AFTER_SEEN or EM_AFTER_MOVE */
    char *move_to;      /* folder for EM_AFTER_MOVE */
    int starttls;       /* imap://: 0 no, 1 try, 2 require */
    int verify;         /* imaps / STARTTLS: verify the certificate */
    char *ca_file;
    long long batch;    /* messages per fetch */
    long long timeout;  /* ms per IMAP command */
};

enum { EM_AFTER_SEEN = 0, EM_AFTER_MOVE = 1 };

extern const struct sb_conf_section em_mbox_section;

struct em_mbox;

/* A poller for one mailbox (conf copied), its position kept through
 * mailin.h (sb_mailin_pos_*). It starts polling at once. max_size:
 * messages larger are quarantined without being fetched. NULL on a bad
 * URL. */
struct em_mbox *em_mbox_start(uv_loop_t *loop, const char *name,
                              const struct em_mbox_conf *c, size_t max_size);
/* Stop polling; the poller frees itself once its transfer (if any) and
 * ingests in flight have completed. */
void em_mbox_stop(struct em_mbox *m);

/* Parse the response stream of "UID FETCH ... (UID ... BODY.PEEK[])" (or
 * RFC822.SIZE only): for each FETCH item, its UID, its RFC822.SIZE (0 if
 * absent) and its BODY[] literal (NULL if absent), in order. Returns the
 * number of items (up to max), or -1 when the stream is malformed. The
 * pointers point into buf. Exposed for the unit test and the fuzzer. */
struct em_fetch_item {
    unsigned long uid;
    unsigned long size;
    const char *body;
    size_t body_len;
};
int em_parse_fetch(const char *buf, size_t len, struct em_fetch_item *items,
                   int max);
/* "* STATUS <mbox> (UIDVALIDITY n UIDNEXT m ...)" in buf: 0 with both,
 * -1 when absent. */
int em_parse_status(const char *buf, size_t len, unsigned long *uidvalidity,
                    unsigned long *uidnext);

#endif
