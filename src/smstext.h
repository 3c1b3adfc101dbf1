/* smstext.h - SMS text: GSM-7 or UCS-2, parts, and inbound decoding.
 *
 * An SMS carries 140 octets: 160 septets of the GSM 03.38 default alphabet
 * (3GPP TS 23.038) or 70 UTF-16 code units (UCS-2). A concatenated message
 * spends 6 octets of each part on the user data header, leaving 153 septets
 * or 67 units per part. The characters of the GSM extension table (form
 * feed ^ { } \ [ ~ ] | and the euro sign) are sent as ESC + char and cost
 * two septets; a code point above U+FFFF costs two units (a surrogate
 * pair). Neither pair is ever split across parts: a character that does not
 * fit whole in a part starts the next one.
 *
 * All functions are pure (no I/O, no logging): they take UTF-8 and refuse
 * invalid UTF-8 with a short static reason. The part boundaries are byte
 * offsets into the UTF-8 input, so a driver can send concatenated parts
 * itself (each part re-encoded in the message's coding); the number of
 * parts is the cost of the message.
 *
 * Inbound, Kannel hands over the text with its `coding` (0 GSM/7-bit, 1
 * 8-bit binary, 2 UCS-2) and `charset`; sb_sms_decode() turns it into UTF-8.
 */
#ifndef SB_SMSTEXT_H
#define SB_SMSTEXT_H

#include <stddef.h>

/* Values as Kannel's `coding` (0 7-bit, 2 UCS-2). */
enum sb_sms_coding {
    SB_SMS_GSM7 = 0,
    SB_SMS_UCS2 = 2,
};

#define SB_SMS_GSM7_SINGLE 160 /* septets in a single message */
#define SB_SMS_GSM7_PART 153   /* septets per part when concatenated */
#define SB_SMS_UCS2_SINGLE 70  /* UTF-16 units in a single message */
#define SB_SMS_UCS2_PART 67    /* UTF-16 units per part when concatenated */
#define SB_SMS_MAX_PARTS 255   /* the UDH counts parts in one octet */

/* Kannel's `coding` for inbound text. */
#define SB_SMS_CODING_7BIT 0
#define SB_SMS_CODING_8BIT 1
#define SB_SMS_CODING_UCS2 2

/* One part: bytes [off, off + len) of the UTF-8 input, worth `units`
 * septets (GSM-7, escapes counted as 2) or UTF-16 units (UCS-2). */
struct sb_sms_part {
    size_t off;
    size_t len;
    size_t units;
};

/* The outcome of sb_sms_split(). */
struct sb_sms_info {
    enum sb_sms_coding coding;
    size_t units; /* septets or UTF-16 units of the whole text */
    size_t parts; /* parts needed (1 for an empty text) */
};

/* Choose the coding of text (UTF-8, len bytes, no NUL character) and cut
 * it into parts. An empty text is one empty GSM-7 part.
 *
 * max_parts: the most parts allowed, 1..SB_SMS_MAX_PARTS; 0 means
 * SB_SMS_MAX_PARTS. parts: NULL, or an array the caller owns with room for
 * max_parts entries (SB_SMS_MAX_PARTS when max_parts is 0); the first
 * info->parts entries are filled.
 *
 * Returns 0, or -1 with a static reason in *why (why may be NULL): invalid
 * UTF-8 or a NUL, or more parts than max_parts (info is then filled all
 * the same, with the number of parts the text would need, and parts with
 * the first max_parts of them). text may be NULL only when len is 0. */
int sb_sms_split(const char *text, size_t len, size_t max_parts,
                 struct sb_sms_info *info, struct sb_sms_part *parts,
                 const char **why);

/* "gsm7" or "ucs2" (static). */
const char *sb_sms_coding_name(enum sb_sms_coding coding);

/* 1 when the code point is in the GSM-7 default alphabet or its extension
 * table; *septets (may be NULL) gets 1 or 2. 0 otherwise. */
int sb_sms_gsm7_char(unsigned long cp, unsigned *septets);

/* UTF-8 to UTF-16 big-endian bytes (for Kannel coding=2 with
 * charset=UTF-16BE): code points above U+FFFF become surrogate pairs.
 * Returns 0 and a new buffer in *out (caller frees; NUL-terminated after
 * *outlen bytes, the NUL not counted), or -1 with a static reason (invalid
 * UTF-8 or a NUL; *out untouched). */
int sb_sms_to_utf16be(const char *text, size_t len, char **out, size_t *outlen,
                      const char **why);

/* Decode an inbound body into UTF-8. coding is Kannel's (0, 1 or 2; -1 when
 * unknown); charset (may be NULL or empty) is one of UTF-8, UTF-16BE,
 * UTF-16LE, UTF-16 (a byte-order mark decides, big-endian without one),
 * UCS-2 (= UTF-16BE), ISO-8859-1 (latin1) or windows-1251 (cp1251), any
 * case. Without a charset, coding 2 means UTF-16BE, anything else UTF-8.
 * Coding 1 (binary) is refused. Refused as well: invalid UTF-8, an odd
 * number of bytes or a lone surrogate in UTF-16, a byte windows-1251 does
 * not define, and NUL characters. A leading byte-order mark is dropped.
 *
 * Returns 0 and a new NUL-terminated UTF-8 string in *out (caller frees),
 * its length in *outlen (may be NULL), or -1 with a static reason. */
int sb_sms_decode(int coding, const char *charset, const void *body, size_t len,
                  char **out, size_t *outlen, const char **why);

#endif
