#!/usr/bin/env python3
"""The shell blocks of the README and docs/ pages, for .ci/readme.sh; and a
check of the links between those pages.

    python3 .ci/readme.py blocks FILE OUTDIR   writes OUTDIR/NNN.sh per block and OUTDIR/manifest
    python3 .ci/readme.py links FILE...         every relative link and #anchor resolves

A block is a fenced ```sh (or ```bash) block. An HTML comment on the line
just before its fence, which a reader of the rendered page never sees,
says how to run it:

    <!-- readme: background -->        a long-running gateway: started in the background, stopped at the end
    <!-- readme: exit N -->            the block is expected to exit with status N
    <!-- readme: skip: REASON -->      not run, and REASON is printed (only where a block truly cannot run)
    <!-- readme: expect-log -->        (before a ```text block) each line is in the log of the last
                                       background block, but for its timestamp and the names of
                                       mktemp's folders (/tmp/tmp.*)
    <!-- readme: file NAME -->         (before a block of any language) written to NAME in the current
                                       directory, as a reader saves it, for the blocks after it

Any other `<!-- readme` comment, a marker with no block under it, or one on
the wrong kind of block is an error, so a typo cannot quietly turn a check
off. The manifest has one line per block: NNN, kind (run, background, exit,
skip, expect-log, file), the line of the fence, and the marker's argument.
"""

import os
import re
import sys

FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([A-Za-z0-9_+-]*)")
MARKER = re.compile(r"^\s*<!--\s*readme:\s*(.*?)\s*-->\s*$")
SHELLS = {"sh", "bash", "shell"}


def fail(where, message):
    sys.exit(f"{where}: {message}")


def parse_marker(where, text):
    if text == "background":
        return "background", ""
    if text == "expect-log":
        return "expect-log", ""
    m = re.fullmatch(r"file ([A-Za-z0-9_.-]+)", text)
    if m:
        return "file", m.group(1)
    m = re.fullmatch(r"exit (\d+)", text)
    if m:
        return "exit", m.group(1)
    m = re.fullmatch(r"skip:\s*(.+)", text)
    if m:
        return "skip", m.group(1)
    fail(where, f"malformed marker <!-- readme: {text} -->: expected background, exit N, "
               "skip: REASON, expect-log or file NAME")


def blocks(path):
    """(kind, fence line, marker argument, language, text) per fenced block, markers checked."""
    lines = open(path, encoding="utf-8").read().split("\n")
    found, pending, i = [], None, 0
    while i < len(lines):
        line, where = lines[i], f"{path}:{i + 1}"
        if line.lstrip().startswith("<!--") and "readme" in line.lower():
            m = MARKER.match(line)
            if not m:
                fail(where, f"malformed marker: {line.strip()!r} (expected <!-- readme: ... -->)")
            if pending:
                fail(where, "two markers in a row: one marker per block")
            pending = (where, *parse_marker(where, m.group(1)))
            i += 1
            continue
        m = FENCE.match(line)
        if m:
            indent, fence, language = m.groups()
            body, j = [], i + 1
            while j < len(lines) and not lines[j].strip().startswith(fence):
                body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j])
                j += 1
            if j == len(lines):
                fail(where, "a fenced block that never closes")
            kind, argument = "run", ""
            if pending:
                kind, argument = pending[1], pending[2]
                if kind == "expect-log" and language != "text":
                    fail(pending[0], "expect-log goes before a ```text block")
                if kind not in ("expect-log", "file") and language not in SHELLS:
                    fail(pending[0], f"a {kind} marker goes before a ```sh block, not ```{language}")
                pending = None
            if language in SHELLS or kind in ("expect-log", "file"):
                found.append((kind, i + 1, argument, language, "\n".join(body) + "\n"))
            i = j + 1
            continue
        if pending and line.strip():
            fail(pending[0], "a marker must be on the line just before its block's fence")
        i += 1
    if pending:
        fail(pending[0], "a marker with no block under it")
    return found


def write_blocks(path, outdir):
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, "manifest"), "w") as manifest:
        for n, (kind, line, argument, _, text) in enumerate(blocks(path), 1):
            name = f"{n:03d}"
            with open(os.path.join(outdir, name + ".sh"), "w") as f:
                f.write(text)
            manifest.write(f"{name}\t{kind}\t{line}\t{argument}\n")


def slug(heading):
    """The anchor GitHub gives a heading."""
    text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path):
    seen, result, fence = {}, set(), None
    for line in open(path, encoding="utf-8"):
        m = FENCE.match(line)
        if m:
            fence = None if fence and m.group(2).startswith(fence) else (fence or m.group(2))
            continue
        if fence is None and re.match(r"#{1,6} ", line):
            base = slug(line.lstrip("#"))
            n = seen.get(base, 0)
            seen[base] = n + 1
            result.add(base if n == 0 else f"{base}-{n}")
    return result


def check_links(paths):
    bad = []
    for path in paths:
        fence = None
        for number, line in enumerate(open(path, encoding="utf-8"), 1):
            m = FENCE.match(line)
            if m:
                fence = None if fence and m.group(2).startswith(fence) else (fence or m.group(2))
                continue
            if fence:
                continue
            for target in re.findall(r"\]\(([^)\s]+)\)", line):
                if re.match(r"[a-z]+:", target):
                    continue
                file, _, anchor = target.partition("#")
                resolved = os.path.normpath(os.path.join(os.path.dirname(path), file)) if file else path
                if not os.path.exists(resolved):
                    bad.append(f"{path}:{number}: {target}: no such file")
                elif anchor and resolved.endswith(".md") and anchor not in anchors(resolved):
                    bad.append(f"{path}:{number}: {target}: no heading #{anchor} in {resolved}")
    for b in bad:
        print(b)
    if bad:
        sys.exit(f"{len(bad)} broken links")
    print(f"links: every relative link and anchor of {len(paths)} pages resolves")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "blocks":
        write_blocks(sys.argv[2], sys.argv[3])
    elif len(sys.argv) >= 3 and sys.argv[1] == "links":
        check_links(sys.argv[2:])
    else:
        sys.exit(__doc__)
