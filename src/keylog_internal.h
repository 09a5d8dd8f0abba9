/* SPDX-License-Identifier: MIT */
/* What the engine uses of the key log (src/keylog.c): appending a line to PKMCOM_KEYLOGFILE.
 * Not installed. */
#ifndef PKM_KEYLOG_INTERNAL_H
#define PKM_KEYLOG_INTERNAL_H

#include "pkmcom/keylog.h"

/* Appends e's line to the file at path (created 0600 if missing; O_APPEND, one write() for the
 * line). Every error is ignored. */
void pkm__keylog_append(const char *path, const pkm_keylog_entry_t *e);

#endif
