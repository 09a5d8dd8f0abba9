# SPDX-License-Identifier: MIT
# man/pkmcom.1: valid roff for groff's man macros (no warnings, when groff is installed), and every
# option that a command's --help lists is documented in it.
source "$(dirname "$0")/support/cli.sh"
MAN=${PKM_SOURCE_DIR:-$(dirname "$0")/..}/man/pkmcom.1
[ -f "$MAN" ] || fail "no man page at $MAN"
ok
if command -v groff >/dev/null; then
    groff -man -Tutf8 -ww "$MAN" >"$T/man.txt" 2>"$T/groff.err" || fail "groff failed"
    [ ! -s "$T/groff.err" ] || fail "groff warnings: $(cat "$T/groff.err")"
    ok
else
    echo "cli_man: groff not installed, roff check skipped"
fi
for c in keygen fingerprint serve send demo dump; do
    run help "$c" --help
    expect_rc "help $c" 0
    grep -q "^\.S[SH] .*$c" "$MAN" || fail "man page: no section for $c"
    ok
    for opt in $(grep -oE -- '--[a-z][a-z-]*' "$T/help.out" | sort -u); do
        grep -qF -- "$(printf '%s' "$opt" | sed 's/-/\\-/g')" "$MAN" ||
            fail "man page does not document $c $opt"
        ok
    done
done
echo "cli_man: $CHECKS checks passed"
