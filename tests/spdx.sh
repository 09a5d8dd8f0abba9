#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Every source file in the repository (C, headers, scripts, CMake, Makefile, the man page) names
# its licence with an SPDX line in its first four lines; prints each file that does not.
# Usage: tests/spdx.sh [SOURCE_DIR]
set -euo pipefail
cd "${1:-$(dirname "$0")/..}"
bad=0 n=0
while IFS= read -r f; do
    case "$f" in
    *.c | *.h | *.sh | *.py | *.cmake | *.in | *.1 | CMakeLists.txt | */CMakeLists.txt | Makefile | .ci/run) ;;
    *) continue ;;
    esac
    n=$((n + 1))
    if ! head -n 4 "$f" | grep -q 'SPDX-License-Identifier: MIT'; then
        echo "FAIL: $f: no SPDX-License-Identifier line in its first four lines"
        bad=$((bad + 1))
    fi
done < <(git ls-files 2>/dev/null || find . -type f | sed 's|^\./||')
echo "spdx: $n source files, $bad without an SPDX line"
[ "$bad" -eq 0 ]
