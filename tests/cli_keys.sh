# SPDX-License-Identifier: MIT
# pkmcom keygen / fingerprint: a new key is PEM with mode 0600 and its printed fingerprint is the
# one the openssl CLI computes; fingerprints of private, public PEM and DER files; errors.
source "$(dirname "$0")/support/cli.sh"
DATA=${PKM_SOURCE_DIR:-$(dirname "$0")/..}/tests/data
command -v openssl >/dev/null || fail "the openssl CLI is needed"

# The fingerprint as WIRE-PROFILE section 6 defines it, computed with openssl alone.
openssl_fp() { # FILE [pubin]
    local in=(-in "$1")
    [ "${2:-}" = pubin ] && in=(-pubin -in "$1")
    echo "SHA256:$(openssl pkey "${in[@]}" -pubout -outform DER | openssl dgst -sha256 -binary |
        base64 | tr -d '=\n')"
}

# --help everywhere, exit 0, usage on stdout.
for c in "" keygen fingerprint serve send demo; do
    run help $c --help
    expect_rc "help $c" 0
    grep -q '^usage: pkmcom' "$T/help.out" || fail "pkmcom $c --help prints no usage"
    [ ! -s "$T/help.err" ] || fail "pkmcom $c --help wrote to stderr"
    ok
done
run help --help
for c in keygen fingerprint serve send demo; do
    grep -q "^  $c " "$T/help.out" || fail "pkmcom --help does not list $c"
    ok
done
run version --version
expect_rc version 0
grep -qE '^pkmcom [0-9]+\.[0-9]+\.[0-9]+$' "$T/version.out" || fail "--version: $(cat "$T/version.out")"
ok

# keygen: PEM, 0600, the fingerprint on stdout matches openssl's.
run keygen keygen -o "$T/k.pem"
expect_rc keygen 0
[ "$(stat -c %a "$T/k.pem")" = 600 ] || fail "keygen: mode $(stat -c %a "$T/k.pem"), expected 600"
ok
head -1 "$T/k.pem" | grep -q -- '-----BEGIN PRIVATE KEY-----' || fail "keygen: not PKCS#8 PEM"
ok
[ "$(openssl pkey -in "$T/k.pem" -noout -text | head -1)" = "Private-Key: (2048 bit, 2 primes)" ] ||
    fail "keygen: not an RSA-2048 key: $(openssl pkey -in "$T/k.pem" -noout -text | head -1)"
ok
FP=$(openssl_fp "$T/k.pem")
expect_out keygen "$FP"
grep -qE '^SHA256:[A-Za-z0-9+/]{43}$' "$T/keygen.out" || fail "keygen: malformed fingerprint"
ok

# fingerprint of the private key, of its public key in PEM and in DER.
run fp fingerprint "$T/k.pem"
expect_rc fp 0
expect_out fp "$FP"
openssl pkey -in "$T/k.pem" -pubout -out "$T/k.pub.pem"
openssl pkey -in "$T/k.pem" -pubout -outform DER -out "$T/k.pub.der"
chmod 644 "$T/k.pub.pem" "$T/k.pub.der"
run fp_pub fingerprint "$T/k.pub.pem"
expect_rc fp_pub 0
expect_out fp_pub "$FP"
run fp_der fingerprint "$T/k.pub.der"
expect_rc fp_der 0
expect_out fp_der "$FP"

# The repository's fixtures: a PKCS#8 key, its traditional form, its public key.
FIXFP=$(openssl_fp "$DATA/server_key.pub.pem" pubin)
cp "$DATA/server_key.pem" "$DATA/server_key_traditional.pem" "$T/"
chmod 600 "$T/server_key.pem" "$T/server_key_traditional.pem"
for f in "$T/server_key.pem" "$T/server_key_traditional.pem" "$DATA/server_key.pub.pem" \
    "$DATA/server_key.pub.der"; do
    run fix fingerprint "$f"
    expect_rc "fingerprint $f" 0
    expect_out fix "$FIXFP"
done

# --public writes the public key too (0644), with the same fingerprint.
run keygen2 keygen -o "$T/k2.pem" --public "$T/k2.pub.pem"
expect_rc keygen2 0
[ "$(stat -c %a "$T/k2.pub.pem")" = 644 ] || fail "keygen --public: mode $(stat -c %a "$T/k2.pub.pem")"
ok
[ "$(openssl_fp "$T/k2.pub.pem" pubin)" = "$(cat "$T/keygen2.out")" ] || fail "keygen --public: fingerprint"
ok
[ "$(cat "$T/keygen2.out")" != "$FP" ] || fail "two keygens gave the same key"
ok

# keygen does not overwrite without --force (the error names the file, which is untouched: same
# bytes, same inode, same mtime); with it, a new key in a new file put in place by rename.
INODE=$(stat -c %i "$T/k.pem")
STAMP=$(stat -c %Y.%i.%s "$T/k.pem")
run keygen_exists keygen -o "$T/k.pem"
expect_rc keygen_exists 1
expect_one_error keygen_exists "$T/k.pem already exists (use --force to replace it)"
[ "$(openssl_fp "$T/k.pem")" = "$FP" ] || fail "keygen without --force changed the file"
ok
[ "$(stat -c %Y.%i.%s "$T/k.pem")" = "$STAMP" ] || fail "keygen without --force touched the file"
ok
# The same for the --public file: refused before any key is written.
echo "public" >"$T/pub-exists.pem"
run keygen_pub_exists keygen -o "$T/new-priv.pem" --public "$T/pub-exists.pem"
expect_rc keygen_pub_exists 1
expect_one_error keygen_pub_exists "$T/pub-exists.pem already exists"
[ ! -e "$T/new-priv.pem" ] || fail "keygen wrote the private key although --public exists"
ok
[ "$(cat "$T/pub-exists.pem")" = public ] || fail "keygen touched the existing --public file"
ok
chmod 644 "$T/k.pem" # --force also replaces a file with a lax mode: the new one is 0600
run keygen_force keygen -o "$T/k.pem" --force
expect_rc keygen_force 0
[ "$(cat "$T/keygen_force.out")" = "$(openssl_fp "$T/k.pem")" ] || fail "keygen --force: fingerprint"
ok
[ "$(cat "$T/keygen_force.out")" != "$FP" ] || fail "keygen --force kept the old key"
ok
[ "$(stat -c %i "$T/k.pem")" != "$INODE" ] || fail "keygen --force wrote in place, not by rename"
ok
[ "$(stat -c %a "$T/k.pem")" = 600 ] || fail "keygen --force: mode $(stat -c %a "$T/k.pem")"
ok
FP=$(cat "$T/keygen_force.out")

# Even with --force: a symbolic link is neither followed nor replaced, a file with a second hard
# link is not replaced; both refused with a sentence naming the file.
ln -s "$T/k.pem" "$T/link.pem"
run keygen_symlink keygen -o "$T/link.pem" --force
expect_rc keygen_symlink 1
expect_one_error keygen_symlink "$T/link.pem is a symbolic link"
[ -L "$T/link.pem" ] && [ "$(openssl_fp "$T/k.pem")" = "$FP" ] || fail "keygen --force on a link"
ok
run keygen_symlink2 keygen -o "$T/link.pem"
expect_rc keygen_symlink2 1
expect_one_error keygen_symlink2 "already exists"
ln "$T/k.pem" "$T/hard.pem"
run keygen_hardlink keygen -o "$T/k.pem" --force
expect_rc keygen_hardlink 1
expect_one_error keygen_hardlink "$T/k.pem has more than one hard link"
[ "$(openssl_fp "$T/k.pem")" = "$FP" ] && [ "$(openssl_fp "$T/hard.pem")" = "$FP" ] ||
    fail "keygen --force changed a hard-linked key"
ok
rm "$T/hard.pem" "$T/link.pem"
run keygen_same keygen -o "$T/same.pem" --public "$T/same.pem"
expect_rc keygen_same 2
expect_one_error keygen_same "same file"
# No temporary file is left behind by any of these.
ls "$T" | grep -q '\.tmp-' && fail "temporary files left: $(ls "$T" | grep '\.tmp-')"
ok

# Errors: one line on stderr, exit 1 (runtime) or 2 (usage).
run missing fingerprint "$T/no-such-file.pem"
expect_rc missing 1
expect_one_error missing "No such file or directory"
echo "not a key" >"$T/junk.pem"
run junk fingerprint "$T/junk.pem"
expect_rc junk 1
expect_one_error junk "no usable key"
run dir fingerprint "$T"
expect_rc dir 1
expect_one_error dir "not a regular file"
cp "$T/k.pem" "$T/open.pem"
chmod 644 "$T/open.pem"
run perm fingerprint "$T/open.pem"
expect_rc perm 1
expect_one_error perm "mode 0644"
cp "$DATA/rsa1024_key.pem" "$T/rsa1024.pem"
chmod 600 "$T/rsa1024.pem"
run small fingerprint "$T/rsa1024.pem"
expect_rc small 1
expect_one_error small "RSA-2048"
run rsa4096 fingerprint "$DATA/rsa4096.pub.der"
expect_rc rsa4096 1
expect_one_error rsa4096 "not a DER RSA-2048 public key"
run noarg fingerprint
expect_rc noarg 2
expect_one_error noarg "missing FILE"
run twoargs fingerprint a b
expect_rc twoargs 2
expect_one_error twoargs
run noout keygen
expect_rc noout 2
expect_one_error noout "missing -o FILE"
run keygen_dir keygen -o "$T/no-such-dir/k.pem"
expect_rc keygen_dir 1
expect_one_error keygen_dir "cannot write the key"
run unknown frobnicate
expect_rc unknown 2
expect_one_error unknown "unknown command 'frobnicate'"
run none
expect_rc none 2

echo "cli_keys: $CHECKS checks passed"
