/* SPDX-License-Identifier: Apache-2.0 */
#include "common/cfgline.h"

#include <ctype.h>
#include <string.h>

char *
kvdex_cfg_trim(char *s)
{
	char *e;

	while (isspace((unsigned char)*s)) {
		s++;
	}
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1])) {
		*--e = '\0';
	}
	return s;
}

char *
kvdex_cfg_clean(char *line)
{
	for (char *p = line; *p != '\0'; p++) {
		if (*p == '#' && (p == line || isspace((unsigned char)p[-1]))) {
			*p = '\0';
			break;
		}
	}
	return kvdex_cfg_trim(line);
}
