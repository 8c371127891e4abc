#!/usr/bin/env python3
"""Reads client-test's console output and prints one verdict line per test and a summary.

    parse-results.py RESULT_DIR [--suite NAME] [--wall SECONDS] [--rc N]

RESULT_DIR is one suite's result directory written by tests/conformance.sh; its
client-test.out is client-test's stdout. Prints

    PASS <test>
    FAIL <test>  <first lines of the failure report>
    NORESULT <test>  (started, no verdict: the run was stopped)
    SUMMARY suite=<NAME> passed=N failed=M total=T wall_s=S dir=<RESULT_DIR>

and writes the same text to RESULT_DIR/results.txt. Exit status 0 only when at least one
test ran and all of them passed.

How client-test reports: each test prints its name, then " okay" or " *** failed ***" and
the CppUnit failure report. With several tests, the parent process forks one child per test
and, when a child fails or dies, adds "<test> (<pid>): failed with return code N" or
"... killed by signal N" without a line break, so the next test's name may follow on the
same line. A child that dies leaves its name without a verdict; the parent's line gives it.
"""

import argparse
import os
import re
import sys

TEST_NAME = r"Client::[A-Za-z0-9_:]+"
VERDICT = re.compile(
    r"^(?P<name>" + TEST_NAME + r")"
    r"(?: (?P<okay>okay)| \*\*\* (?P<failed>failed|failure ignored) \*\*\*"
    r"| \(\d+\): (?P<child>failed with return code \d+|killed by signal \d+))\s*$")
STARTED = re.compile(r"^(?P<name>" + TEST_NAME + r")\s*$")
# lines of a CppUnit failure report that carry no information
NOISE = re.compile(r"^(!!!FAILURES!!!|Test Results:|Run:|Failures !!!|Test name:|$)")


def split_lines(text):
    """Lines, with a break before every test name that does not start a line."""
    text = re.sub(r"(?<=\S)(?=" + TEST_NAME + r"(?: okay| \*\*\*| \(\d+\): |\s*$))", "\n", text,
                  flags=re.M)
    return text.splitlines()


def parse(lines):
    """[(test, status, detail)] in the order the tests started; status PASS, FAIL or NORESULT."""
    results = {}
    order = []

    def record(name, status, detail):
        if name not in results:
            order.append(name)
            results[name] = (status, detail)
        elif results[name][0] != "FAIL":  # a failure is never overwritten
            if status != "NORESULT" or results[name][0] == "NORESULT":
                results[name] = (status, detail or results[name][1])

    for i, line in enumerate(lines):
        m = VERDICT.match(line)
        if m:
            name = m.group("name")
            if m.group("okay"):
                record(name, "PASS", "")
            elif m.group("failed") == "failure ignored":
                record(name, "PASS", "failure ignored")
            elif m.group("failed"):
                record(name, "FAIL", failure_detail(lines[i + 1:]))
            else:  # the parent's line about a child
                record(name, "FAIL", m.group("child"))
            continue
        m = STARTED.match(line)
        if m:
            record(m.group("name"), "NORESULT", "no verdict (run stopped?)")
    return [(name,) + results[name] for name in order]


def failure_detail(following):
    """A CppUnit failure report in one line: assertion, message, expression, call chain."""
    items = []
    wrapped = False  # whether the previous line may continue on this one
    for line in following[:40]:
        if STARTED.match(line) or VERDICT.match(line) or line.startswith("Failures !!!"):
            break
        line = line.rstrip()
        if NOISE.match(line.strip()):
            continue
        if line.startswith("- "):
            items.append(line[2:].strip())
            wrapped = True
        elif wrapped and items:
            # CppUnit wraps long "- " lines at a fixed width, also inside words
            items[-1] += line
        else:
            items.append(line.strip())
            wrapped = False
    # "ClientTest.cpp:N" lines after the assertion are the call chain
    chain = [i for i in items[1:] if re.fullmatch(r"\S+\.(?:cpp|h):\d+", i)]
    rest = [i for i in items if i not in chain]
    if chain:
        rest.append("via " + " < ".join(chain))
    return " | ".join(rest)[:700]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--suite")
    ap.add_argument("--wall", default="?")
    ap.add_argument("--rc", default="?")
    args = ap.parse_args()
    with open(os.path.join(args.dir, "client-test.out"), encoding="utf-8", errors="replace") as f:
        tests = parse(split_lines(f.read()))
    out = []
    for name, status, detail in tests:
        out.append("%s %s%s" % (status, name, "  " + detail if detail and status != "PASS" else ""))
    passed = sum(1 for t in tests if t[1] == "PASS")
    failed = sum(1 for t in tests if t[1] == "FAIL")
    out.append("SUMMARY suite=%s passed=%d failed=%d total=%d wall_s=%s rc=%s dir=%s" % (
        args.suite or os.path.basename(args.dir), passed, failed, len(tests), args.wall, args.rc,
        args.dir))
    text = "\n".join(out) + "\n"
    sys.stdout.write(text)
    with open(os.path.join(args.dir, "results.txt"), "w", encoding="utf-8") as f:
        f.write(text)
    ok = tests and passed == len(tests) and args.rc in ("0", "?")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
