/* SPDX-License-Identifier: MIT */
/* libpkmcom umbrella header: include this one to get the whole public API. */
#ifndef PKMCOM_PKMCOM_H
#define PKMCOM_PKMCOM_H

#include "pkmcom/common.h"
#include "pkmcom/packet.h"
#include "pkmcom/keys.h"
#include "pkmcom/apl.h"
#include "pkmcom/schema.h"
#include "pkmcom/cmpl.h"
#include "pkmcom/keylog.h"
#include "pkmcom/describe.h"
#include "pkmcom/engine.h"
#include "pkmcom/conn.h"
#include "pkmcom/server.h"

#endif
