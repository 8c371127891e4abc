#!/usr/bin/env python3
"""Seeds for the engine_messages and content_convert fuzz targets (see perf/fuzz.sh).

    fuzz_seeds.py TARGET CAPTURES_DIR CORPUS_DIR

engine_messages: each captured session's client messages (c2s .xml or .wbxml)
joined by the target's separator, with XML auth-md5 logins replaced by
auth-basic test:test (the captures' user), since the md5 digests were
computed against nonces of the capturing server. Pairs of sessions are
joined too, so that a later slow sync matches against stored items.
content_convert: the item texts (vCard, iCalendar, notes) of those messages.
"""
import html
import os
import re
import sys

SEPARATOR = b"--MSG--\n"
BASIC = (b"<Cred><Meta><Type xmlns='syncml:metinf'>syncml:auth-basic</Type></Meta>"
         b"<Data>dGVzdDp0ZXN0</Data></Cred>")


def sessions(root):
    for dirpath, _, files in sorted(os.walk(root)):
        for ext in ("xml", "wbxml"):
            msgs = sorted(f for f in files if f.endswith("-c2s." + ext))
            if msgs:
                yield dirpath, [open(os.path.join(dirpath, f), "rb").read() for f in msgs]


def basic_auth(msg):
    return re.sub(rb"<Cred>.*?</Cred>", BASIC, msg, flags=re.S) if msg.startswith(b"<") else msg


def main():
    target, root, out = sys.argv[1:4]
    os.makedirs(out, exist_ok=True)
    found = list(sessions(root))
    n = 0
    if target == "engine_messages":
        joined = [SEPARATOR.join(basic_auth(m) for m in msgs) for _, msgs in found]
        for i, s in enumerate(joined):
            open(os.path.join(out, f"seed-session-{i:03}"), "wb").write(s)
            n += 1
        for i in range(len(joined) - 1):
            open(os.path.join(out, f"seed-pair-{i:03}"), "wb").write(joined[i] + SEPARATOR + joined[i + 1])
            n += 1
    else:
        texts = set()
        for _, msgs in found:
            for m in msgs:
                for cdata in re.findall(rb"<Data><!\[CDATA\[(.*?)\]\]></Data>", m, flags=re.S):
                    texts.add(cdata)
                for plain in re.findall(rb"<Data>(BEGIN:.*?)</Data>", m, flags=re.S):
                    texts.add(html.unescape(plain.decode("utf-8", "replace")).encode())
        for i, t in enumerate(sorted(texts)):
            open(os.path.join(out, f"seed-item-{i:04}"), "wb").write(t)
            n += 1
    print(f"{target}: {n} seeds", file=sys.stderr)


if __name__ == "__main__":
    main()
