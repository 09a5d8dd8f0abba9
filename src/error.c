/* SPDX-License-Identifier: MIT */
/* pkm_strerror() and pkm_errname(): a sentence and a symbolic name for every PKM_E* code, both
 * generated from the one table in include/pkmcom/common.h (PKM_ERROR_TABLE). */
#include "pkmcom/common.h"

const char *pkm_strerror(int err)
{
    switch (err) {
#define PKM_ERROR_TEXT_(name, value, sentence)                                                     \
    case name: return sentence;
        PKM_ERROR_TABLE(PKM_ERROR_TEXT_)
#undef PKM_ERROR_TEXT_
    }
    return "unknown libpkmcom error";
}

const char *pkm_errname(int err)
{
    switch (err) {
#define PKM_ERROR_NAME_(name, value, sentence)                                                     \
    case name: return #name;
        PKM_ERROR_TABLE(PKM_ERROR_NAME_)
#undef PKM_ERROR_NAME_
    }
    return "PKM_E?";
}
