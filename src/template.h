/* template.h - notification templates: load, check, render.
 *
 * A template set is every template under one directory, laid out as
 * DIR/<event>/<channel>.<locale> (plus DIR/<event>/email.<locale>.html for
 * the HTML part of an e-mail). The set is parsed completely when loaded and
 * is immutable afterwards, so it can be shared by readers and swapped as a
 * whole on SIGHUP. The language ({{ path | formatter:arg }}) is described
 * for operators in docs/templates.md.
 *
 * Rendering takes a JSON context object; the dispatcher's is
 *   {"data": {...}, "customer": {"id", "name"}, "event": "order.shipped",
 *    "ref": "...", "notification": {"id": "nt_123"}}
 * and it is borrowed for the call. Error messages name variable paths and
 * template lines, never values (they may be personal data).
 */
#ifndef SB_TEMPLATE_H
#define SB_TEMPLATE_H

#include <stddef.h>
#include <jansson.h>

#define SB_TPL_FILE_MAX (64 * 1024)      /* largest template file */
#define SB_TPL_OUTPUT_MAX (1024 * 1024)  /* largest rendered part */

struct sb_tpl_set;  /* every template under one directory, immutable */
struct sb_tpl;      /* one (event, channel, locale) */

/* Load DIR/<event>/<channel>.<locale> (and the optional
 * DIR/<event>/email.<locale>.html). event: [a-z0-9_.-]+ (not starting with
 * a dot), channel: one of email sms chat webhook, locale
 * [a-z]{2}(-[A-Z]{2})?. Every file is parsed now: a syntax error fails the
 * whole load with "file:line: reason" in err (the daemon keeps the old set
 * on SIGHUP). Unknown files (README, *~) are ignored with no error; files
 * larger than SB_TPL_FILE_MAX are an error, and so is an email.LL.html
 * without its email.LL. An empty or missing DIR gives an empty set.
 * Returns a new set (free with sb_tpl_free) or NULL. */
struct sb_tpl_set *sb_tpl_load(const char *dir, char *err, size_t errlen);
void sb_tpl_free(struct sb_tpl_set *set); /* accepts NULL */
size_t sb_tpl_count(const struct sb_tpl_set *set);
int sb_tpl_has_event(const struct sb_tpl_set *set, const char *event);
/* Is there any template for (event, channel) in any locale? 1/0 */
int sb_tpl_has_channel(const struct sb_tpl_set *set, const char *event,
                       const char *channel);
/* Locale fallback: `locale` exact ("en-GB"), then its language ("en"), then
 * default_locale, then its language; NULL when none. Either locale may be
 * NULL. *used (if used is not NULL) gets the locale found, borrowed from
 * the set. The template is borrowed from the set. */
const struct sb_tpl *sb_tpl_find(const struct sb_tpl_set *set,
                                 const char *event, const char *channel,
                                 const char *locale,
                                 const char *default_locale,
                                 const char **used);
/* Every variable path every template of `event` needs (not those whose
 * chain has a `default`) is present and not null in ctx: 0, or -1 with the
 * first missing dotted path (e.g. "data.tracking_url") in missing. An event
 * without templates needs nothing. */
int sb_tpl_check(const struct sb_tpl_set *set, const char *event,
                 json_t *ctx, char *missing, size_t missinglen);

struct sb_tpl_env {
    const char *locale;    /* formatting locale: "ru" or "en" rules (others,
                              and NULL: en); "ru-RU" counts as "ru" */
    const char *timezone;  /* IANA zone for dates; NULL or unknown: UTC */
};

struct sb_rendered {
    char *subject;  /* email only, else NULL; one line (CR, LF and other
                       control characters of values become spaces) */
    char *text;     /* always */
    char *html;     /* email with a .html sibling, else NULL */
};

/* Render t with ctx (a JSON object, borrowed). 0 with new strings in *out
 * (free with sb_rendered_free), or -1 with a reason (missing variable, a
 * value of the wrong type for a formatter) in err and *out all NULL. Output
 * is valid UTF-8. env may be NULL (en, UTC). */
int sb_tpl_render(const struct sb_tpl *t, json_t *ctx,
                  const struct sb_tpl_env *env, struct sb_rendered *out,
                  char *err, size_t errlen);
void sb_rendered_free(struct sb_rendered *r); /* frees the strings */

/* Parse one template text (what the loader does per file, without the
 * e-mail "Subject:" header) - for the fuzzer and tests. The result renders
 * the text into sb_rendered.text, HTML-escaping substitutions when html is
 * 1. Returns a new template (free with sb_tpl_destroy) or NULL with
 * "line N: reason" in err. */
struct sb_tpl *sb_tpl_parse(const char *text, size_t len, int html,
                            char *err, size_t errlen);
void sb_tpl_destroy(struct sb_tpl *t); /* accepts NULL */

#endif
