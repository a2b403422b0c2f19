#!/usr/bin/env python3
"""Checks that rules_test.yaml would catch a wrong threshold in rules.yaml.

For every tunable constant in rules.yaml (traceconsistency:threshold:* and
traceconsistency:config:*) it writes a copy of rules.yaml with that constant changed
(x10 and /10, or +10 and -1 when it is 0), runs `promtool test rules` on it and requires
that the tests fail for every alert that depends on the constant. For every alert with a
`for:` duration it also drops the duration and requires that alert's tests to fail.

Python 3.11 standard library only; needs promtool on PATH. Run from anywhere:
    python3 examples/observability/test_threshold_mutations.py
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
RULES = os.path.join(HERE, "rules.yaml")
TESTS = os.path.join(HERE, "rules_test.yaml")

CONST_RE = re.compile(
    r"^(?P<head>\s*- record: (?P<name>traceconsistency:(?:threshold|config):\w+)\n"
    r"\s*expr: vector\()(?P<value>[0-9.eE+-]+)(?P<tail>\)\s*)$",
    re.M,
)


def rule_blocks(text):
    """Yields (kind, name, block text) for every rule, kind 'record' or 'alert'."""
    starts = [m for m in re.finditer(r"^\s*- (record|alert): (\S+)\s*$", text, re.M)]
    for i, m in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(text)
        yield m.group(1), m.group(2), text[m.start():end]


def dependencies(text):
    """Maps each alert name to the set of rule names it depends on, transitively."""
    blocks = list(rule_blocks(text))
    records = {name for kind, name, _ in blocks if kind == "record"}
    direct = {}
    for kind, name, block in blocks:
        body = block.split("\n", 1)[1] if "\n" in block else ""
        uses = {r for r in records if re.search(re.escape(r) + r"(?![\w:])", body)}
        direct.setdefault(name, set()).update(uses)
    deps = {}
    for kind, name, _ in blocks:
        if kind != "alert":
            continue
        seen, todo = set(), list(direct[name])
        while todo:
            r = todo.pop()
            if r not in seen:
                seen.add(r)
                todo.extend(direct.get(r, ()))
        deps[name] = seen
    return deps


def run_tests(rules_text):
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "rules.yaml"), "w") as f:
            f.write(rules_text)
        shutil.copy(TESTS, os.path.join(d, "rules_test.yaml"))
        p = subprocess.run(
            ["promtool", "test", "rules", "rules_test.yaml"],
            cwd=d, capture_output=True, text=True,
        )
        return p.returncode, p.stdout + p.stderr


def failed_alerts(output):
    return set(re.findall(r"alertname: (\w+), time:", output))


def fmt(v):
    return repr(v) if isinstance(v, float) else str(v)


def main():
    text = open(RULES).read()
    rc, out = run_tests(text)
    if rc != 0:
        print(out)
        sys.exit("rules_test.yaml fails on the unmodified rules.yaml")
    deps = dependencies(text)
    problems, runs = [], 0

    consts = list(CONST_RE.finditer(text))
    if len(consts) < 5:
        sys.exit(f"found only {len(consts)} tunable constants in rules.yaml; parser out of date?")
    for m in consts:
        name, value = m.group("name"), float(m.group("value"))
        alerts = sorted(a for a, d in deps.items() if name in d)
        if not alerts:
            problems.append(f"{name}: no alert depends on it")
            continue
        mutants = [value + 10, -1.0] if value == 0 else [value * 10, value / 10]
        for mv in mutants:
            mutated = text[:m.start("value")] + fmt(mv) + text[m.end("value"):]
            rc, out = run_tests(mutated)
            runs += 1
            caught = failed_alerts(out)
            missed = [a for a in alerts if a not in caught]
            if rc == 0 or missed:
                problems.append(
                    f"{name} = {fmt(mv)} (was {m.group('value')}): tests of {', '.join(missed or alerts)} still pass"
                )
            else:
                print(f"ok  {name} = {fmt(mv)}: caught by tests of {', '.join(alerts)}")

    for kind, name, block in rule_blocks(text):
        if kind != "alert":
            continue
        fm = re.search(r"^\s*for: \S+\n", block, re.M)
        if not fm:
            continue
        start = text.index(block)
        mutated = text[:start] + block.replace(fm.group(0), "", 1) + text[start + len(block):]
        rc, out = run_tests(mutated)
        runs += 1
        if rc == 0 or name not in failed_alerts(out):
            problems.append(f"{name} without its `{fm.group(0).strip()}`: its tests still pass")
        else:
            print(f"ok  {name} without `{fm.group(0).strip()}`: caught")

    if problems:
        print("\nrules_test.yaml does not catch these changes to rules.yaml:")
        for p in problems:
            print("  - " + p)
        sys.exit(1)
    print(f"threshold mutations: all {runs} mutants of rules.yaml caught by rules_test.yaml")


if __name__ == "__main__":
    main()
