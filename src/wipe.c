/* SPDX-License-Identifier: MIT */
/* pkm__wipe(): OpenSSL's cleanse behind the library's own name, so that the files kept free of
 * OpenSSL's headers (the libuv server's) still wipe secrets the project's one way. */
#include <openssl/crypto.h>
#include "internal.h"

void pkm__wipe(void *p, size_t n)
{
    if (p && n) OPENSSL_cleanse(p, n);
}
