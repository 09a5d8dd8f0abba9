# SPDX-License-Identifier: MIT
# Checks the project's Markdown documents: every relative link names a file in the repository
# (and, with #anchor, a heading in it), and no document cites a file the repository does not hold.
# Usage: bash tests/docs_links.sh [SOURCE_DIR]   (default: the directory above this script)
set -u
SRC=${1:-${PKM_SOURCE_DIR:-$(dirname "$0")/..}}
command -v python3 >/dev/null || { echo "docs_links: python3 is needed" >&2; exit 1; }

exec python3 - "$SRC" <<'EOF'
import os, re, sys

src = os.path.abspath(sys.argv[1])
skip_dirs = {".git", "build", "build-asan", "build-valgrind", "build-fuzz"}
docs = []
for root, dirs, files in os.walk(src):
    dirs[:] = sorted(d for d in dirs if d not in skip_dirs and not d.startswith("build"))
    docs += [os.path.join(root, f) for f in sorted(files) if f.endswith(".md")]
man = [os.path.join(src, "man", f) for f in sorted(os.listdir(os.path.join(src, "man")))
       if f.endswith(".1")] if os.path.isdir(os.path.join(src, "man")) else []

FENCE = re.compile(r"^\s*(```|~~~)")
def prose_lines(text):
    """(line number, line) outside fenced code blocks, with inline code spans blanked."""
    fenced = False
    for n, line in enumerate(text.split("\n"), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield n, re.sub(r"`+[^`]*`+", lambda m: " " * len(m.group(0)), line)

def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    h = re.sub(r"`|\*\*|__", "", heading.strip()).lower()
    h = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", h)
    h = "".join(c for c in h if c.isalnum() or c in " -_")
    return h.replace(" ", "-")

anchors_cache = {}
def anchors(path):
    if path not in anchors_cache:
        seen, out = {}, set()
        with open(path, encoding="utf-8") as f:
            for _, line in prose_lines(f.read()):
                m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
                if not m:
                    continue
                s = slug(m.group(1))
                k = seen.get(s, 0)
                seen[s] = k + 1
                out.add(s if k == 0 else "%s-%d" % (s, k))
        anchors_cache[path] = out
    return anchors_cache[path]

LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
# Files outside the repository that documents used to cite (the seed and the team's notes).
OUTSIDE = re.compile(r"WIRE-PROFILE\.md|\bspec/(TCP|AbstractProtocol|CompleteDefinition)\.md|"
                     r"/work/|\bshared/|DESIGN\.md")
errors, links = [], 0
for doc in docs:
    rel = os.path.relpath(doc, src)
    with open(doc, encoding="utf-8") as f:
        text = f.read()
    for n, line in enumerate(text.split("\n"), 1):
        if OUTSIDE.search(line):
            errors.append("%s:%d: cites a file outside the repository: %s" % (rel, n, line.strip()))
    for n, line in prose_lines(text):
        for m in LINK.finditer(line):
            target = m.group(1)
            links += 1
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:: not checked
                continue
            path, _, anchor = target.partition("#")
            dest = os.path.normpath(os.path.join(os.path.dirname(doc), path)) if path else doc
            if not dest.startswith(src + os.sep) and dest != src:
                errors.append("%s:%d: link leaves the repository: %s" % (rel, n, target))
            elif not os.path.exists(dest):
                errors.append("%s:%d: no such file: %s" % (rel, n, target))
            elif anchor and dest.endswith(".md") and anchor not in anchors(dest):
                errors.append("%s:%d: no heading for #%s in %s" % (rel, n, anchor,
                                                                   os.path.relpath(dest, src)))
for page in man:
    with open(page, encoding="utf-8") as f:
        for n, line in enumerate(f.read().split("\n"), 1):
            if OUTSIDE.search(line.replace("\\-", "-")):
                errors.append("%s:%d: cites a file outside the repository: %s"
                              % (os.path.relpath(page, src), n, line.strip()))

for e in errors:
    print("FAIL: " + e, file=sys.stderr)
if not docs:
    print("FAIL: no Markdown documents found under " + src, file=sys.stderr)
    sys.exit(1)
print("docs_links: %d documents, %d links, %d problems" % (len(docs) + len(man), links, len(errors)))
sys.exit(1 if errors else 0)
EOF
