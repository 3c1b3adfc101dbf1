/* config.h - INI configuration driven by declarative tables.
 *
 * Every module declares one table (struct sb_conf_section) of its keys: name,
 * type, offsetof into the module's own struct, default as text, bounds, flags
 * and a one-line doc. The same table parses the file, checks values, rejects
 * unknown keys with "file:line: reason", masks secrets in --dump-config, tells
 * which keys may change on SIGHUP, and writes the documented example config.
 * (Redis' standardConfig[] and nginx's ngx_command_t are the models.)
 *
 * File syntax:
 *
 *     # comment            ; comment too (only at the start of a line)
 *     [redis]              a singleton section
 *     host = 127.0.0.1
 *     [listener main]      a named section; [listener "main"] is the same
 *     port = 8080
 *
 * Values run to the end of the line, trimmed; a value wrapped in double quotes
 * loses them (no escapes). A SECRET value written as "@PATH" is read from that
 * file (first line, trimmed); a relative PATH is taken from
 * $CREDENTIALS_DIRECTORY when set (systemd LoadCredential=), else the
 * directory of the config file.
 *
 * Types: STR (char *), INT (long long), BOOL (int; yes/no/true/false/on/off/
 * 1/0), DURATION (long long milliseconds; "250ms", "5s", "2m", "1h", "1d", a
 * bare number is seconds), SIZE (long long bytes; "512", "64k", "1M", "1G",
 * binary multiples), ENUM (int index into choices[]), LIST (char **, NULL
 * terminated; comma separated, items trimmed, empty items dropped).
 *
 * Bounds (min, max) apply to INT, DURATION and SIZE after unit conversion;
 * min == max == 0 means unbounded. For STR and LIST, max (when non-zero) is the
 * longest allowed string length in bytes.
 */
#ifndef SB_CONFIG_H
#define SB_CONFIG_H

#include <stddef.h>
#include <stdio.h>

enum sb_conf_type {
    SB_CONF_STR,
    SB_CONF_INT,
    SB_CONF_BOOL,
    SB_CONF_DURATION,
    SB_CONF_SIZE,
    SB_CONF_ENUM,
    SB_CONF_LIST,
};

#define SB_CONF_REQUIRED 0x1u /* must be set (no default) */
#define SB_CONF_SECRET 0x2u   /* masked as "********" in dumps */
#define SB_CONF_RELOAD 0x4u   /* may change on SIGHUP without a restart */

struct sb_conf_key {
    const char *name;
    enum sb_conf_type type;
    size_t offset;               /* offsetof(struct module_conf, field) */
    const char *def;             /* default as text; NULL = unset */
    long long min, max;          /* bounds, see above */
    const char *const *choices;  /* ENUM only: NULL-terminated */
    unsigned flags;
    const char *doc;             /* one line for the example config */
};

struct sb_conf_section {
    const char *name;    /* "[name]" in the file */
    int named;           /* 1: "[name INSTANCE]", any number of instances */
    size_t size;         /* sizeof the module's struct */
    const struct sb_conf_key *keys; /* terminated by a row with name NULL */
    const char *doc;     /* a paragraph for the example config */
    /* Optional cross-field check after all keys of one instance are set.
     * Return 0, or -1 with a reason in err (the loader prefixes file:line of
     * the section header). */
    int (*check)(void *conf, char *err, size_t errlen);
};

struct sb_config;

/* Parse a file against a NULL-terminated array of section tables. Returns a
 * new config, or NULL with "file:line: reason" (or "file: reason") in err.
 * Singleton sections that do not appear still exist with their defaults; a
 * missing REQUIRED key of a present (or singleton) section is an error. */
struct sb_config *sb_config_load(const char *path,
                                 const struct sb_conf_section *const *sections,
                                 char *err, size_t errlen);

/* The same from memory; filename is used in messages and for "@PATH". */
struct sb_config *sb_config_parse(const char *text, size_t len,
                                  const char *filename,
                                  const struct sb_conf_section *const *sections,
                                  char *err, size_t errlen);

/* Frees every string and list the tables describe. Accepts NULL. */
void sb_config_free(struct sb_config *c);

/* The singleton section's struct (borrowed; valid until sb_config_free), or
 * NULL when no such section table was given or it is a named one. */
const void *sb_config_get(const struct sb_config *c, const char *section);

/* 1 when the file has the section (a singleton's defaults exist either
 * way; drivers start only when their section is written). */
int sb_config_present(const struct sb_config *c, const char *section);

/* Named sections: how many instances, and the i-th in file order (name of the
 * instance returned through *name if non-NULL). */
size_t sb_config_count(const struct sb_config *c, const char *section);
const void *sb_config_nth(const struct sb_config *c, const char *section,
                          size_t i, const char **name);

/* The file the config came from (borrowed). */
const char *sb_config_path(const struct sb_config *c);

/* Write the effective configuration, every key with its value, secrets
 * masked, in a form sb_config_parse accepts (apart from masked secrets). */
void sb_config_dump(const struct sb_config *c, FILE *out);

/* Compare two configs made from the same tables. Returns 0 when every
 * difference is in RELOAD keys, else -1 with "section.key needs a restart"
 * in err. Instances of named sections added or removed count as changes of
 * a non-reloadable key unless every key of that section is RELOAD. */
int sb_config_reload_check(const struct sb_config *old,
                           const struct sb_config *new_conf, char *err,
                           size_t errlen);

/* Write a documented example config: every section's doc, every key with its
 * doc, type, bounds and default (commented out where a default exists). */
void sb_config_write_example(const struct sb_conf_section *const *sections,
                             FILE *out);

/* Convert one value the way the loader does (exposed for tests and for
 * modules that parse durations or sizes elsewhere). 0 or -1. */
int sb_conf_parse_duration(const char *s, long long *ms);
int sb_conf_parse_size(const char *s, long long *bytes);
int sb_conf_parse_bool(const char *s, int *b);

#endif
