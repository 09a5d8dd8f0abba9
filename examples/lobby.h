/* SPDX-License-Identifier: MIT
 * The lobby chat's protocol, shared by lobby_server.c and lobby_client.c: 0x01 Join {name} and
 * 0x10 Say {text} from a client, 0x11 Said {from, text} from the server. */
#ifndef LOBBY_H
#define LOBBY_H
#include <pkmcom/pkmcom.h>

enum { LOBBY_JOIN = 0x01, LOBBY_SAY = 0x10, LOBBY_SAID = 0x11 };
static const pkm_field_t lobby_text[] = {{.name = "text", .type = PKM_T_STRING}};
static const pkm_field_t lobby_said_f[] = {{.name = "from", .type = PKM_T_STRING},
                                           {.name = "text", .type = PKM_T_STRING}};
static const pkm_schema_t lobby_join = {"Join", lobby_text, 1}, lobby_say = {"Say", lobby_text, 1},
                          lobby_said = {"Said", lobby_said_f, 2};
static const pkm_registry_entry_t lobby_packets[] = {
    {LOBBY_JOIN, &lobby_join}, {LOBBY_SAY, &lobby_say}, {LOBBY_SAID, &lobby_said}};
#endif
