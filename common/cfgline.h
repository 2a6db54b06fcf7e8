/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The line syntax shared by kvdexd's and kvdex-ingest's config files:
 * "key = value", '#' comments, blank lines.
 */
#ifndef KVDEX_COMMON_CFGLINE_H
#define KVDEX_COMMON_CFGLINE_H

#ifdef __cplusplus
extern "C" {
#endif

/* Leading and trailing whitespace cut off, in place; returns the new start. */
char *kvdex_cfg_trim(char *s);

/* A config line with its comment cut off ('#' at the start of the line or
 * after whitespace, so a value may contain '#') and trimmed, in place;
 * returns the new start ("" for a blank or comment line). */
char *kvdex_cfg_clean(char *line);

#ifdef __cplusplus
}
#endif

#endif /* KVDEX_COMMON_CFGLINE_H */
