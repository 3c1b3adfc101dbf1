/* util.h - allocation that never returns NULL, bounded buffers, time.
 *
 * Allocation wrappers abort on out-of-memory: a daemon that cannot allocate a
 * few bytes cannot make progress, and systemd restarts us. Buffers carry a hard
 * cap so no input can grow one without bound (curl's dynbuf is the model).
 */
#ifndef SB_UTIL_H
#define SB_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>

#define SB_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define SB_UNUSED(x) ((void)(x))

/* Never return NULL; abort with a message on OOM. */
void *sb_malloc(size_t n);
void *sb_calloc(size_t nmemb, size_t size);
void *sb_realloc(void *p, size_t n);
char *sb_strdup(const char *s);
char *sb_strndup(const char *s, size_t n);
/* Returns a new string built like printf. */
char *sb_asprintf(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/* A growable byte buffer with a hard cap. Always NUL-terminated after any
 * successful append (the NUL is not counted in len). */
struct sb_buf {
    char *data;
    size_t len;
    size_t alloc;
    size_t cap; /* maximum len; 0 means SIZE_MAX */
};

void sb_buf_init(struct sb_buf *b, size_t cap);
/* Returns 0, or -1 when the cap would be exceeded (buffer unchanged). */
int sb_buf_append(struct sb_buf *b, const void *p, size_t n);
int sb_buf_appends(struct sb_buf *b, const char *s);
int sb_buf_printf(struct sb_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int sb_buf_vprintf(struct sb_buf *b, const char *fmt, va_list ap);
void sb_buf_reset(struct sb_buf *b); /* len = 0, keeps memory */
void sb_buf_free(struct sb_buf *b);  /* frees memory, keeps cap */
/* Detach: returns the data (caller frees), buffer becomes empty. */
char *sb_buf_steal(struct sb_buf *b, size_t *len);

/* Wall clock in milliseconds since the epoch, and a monotonic clock. */
int64_t sb_now_ms(void);
uint64_t sb_mono_ms(void);

/* UTF-8, strictly: overlong forms, surrogates, code points above U+10FFFF
 * and truncated sequences are invalid. sb_utf8_seq returns the length of
 * the sequence at p (n bytes available) or 0 when invalid, and the code
 * point through cp when cp is not NULL; sb_utf8_valid says whether all of
 * p[0..n) is valid. */
size_t sb_utf8_seq(const void *p, size_t n, uint32_t *cp);
int sb_utf8_valid(const void *p, size_t n);

/* Parse a decimal integer that must fill the whole string (no sign for
 * unsigned). Returns 0 or -1. */
int sb_parse_ll(const char *s, long long *out);

#endif
