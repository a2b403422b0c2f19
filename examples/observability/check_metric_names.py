#!/usr/bin/env python3
"""Keeps the dashboard and the Prometheus rules from drifting away from the metrics.

Checks, with the Python 3.11 standard library only:
  * dashboard.json is valid JSON and importable: a `datasource` variable of type datasource
    (Prometheus), a `service_name` variable filled by label_values(), unique panel ids,
    every panel with a Prometheus query on the `${datasource}` data source;
  * every metric name in every dashboard query and every rule expression is either a
    metric the collector exports (derived from traceconsistencyprocessor/metadata.yaml) or a recording rule of
    rules.yaml; every label in a selector is an attribute of that metric, under the name
    it is exported with (`name_override`, e.g. handoff_cause as cause), or job, instance,
    le; label values of enum attributes (reason, policy, cause: per metric) and finding
    kinds (README.md "Findings" table) exist;
  * every alert has a severity label, a summary and a description, and rules_test.yaml
    has for it a case where it fires and one where it must not.

Exported names. The collector serves its own metrics through its Prometheus reader; since
collector v0.155 (open-telemetry/opentelemetry-collector#15027) that reader defaults to
without_type_suffix, without_units and without_scope_info also when the reader is
configured explicitly (as in examples/collector.yaml). So the names are exactly
`otelcol_` + the key in traceconsistencyprocessor/metadata.yaml: no `_total` on counters, no unit suffix
(`_bytes`, `_seconds`, `_nanoseconds`); a histogram adds `_bucket`, `_sum` and `_count`.
tests/e2e relies on the same names (e.g. ..._release_age_count), and so does
scripts/bench-collector.sh (otelcol_receiver_accepted_spans).

Run from anywhere: python3 examples/observability/check_metric_names.py
"""

import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
METADATA = os.path.join(ROOT, "traceconsistencyprocessor", "metadata.yaml")
README = os.path.join(ROOT, "README.md")
RULES = os.path.join(HERE, "rules.yaml")
RULES_TEST = os.path.join(HERE, "rules_test.yaml")
DASHBOARD = os.path.join(HERE, "dashboard.json")

# Labels Prometheus adds to every scraped series, and the histogram bucket label.
TARGET_LABELS = {"job", "instance"}

PROMQL_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "offset", "bool", "inf", "nan", "atan2", "start", "end",
}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
# Aggregation operators may be followed by a by/without clause before their "(".
AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}


# --------------------------------------------------------------------------- metadata


def indent_of(line):
    return len(line) - len(line.lstrip(" "))


def parse_inline_list(v):
    v = v.strip()
    if not (v.startswith("[") and v.endswith("]")):
        return None
    return [x.strip().strip("'\"") for x in v[1:-1].split(",") if x.strip()]


def load_metadata(path):
    """Returns (metrics, attributes): metrics = {key: {"type": t, "attributes": [...]}},
    attributes = {name: {"label": exported label name (name_override or the name),
    "enum": enum list or None}}. A small indentation parser for the layout mdatagen uses;
    it fails loudly when it finds nothing."""
    lines = open(path).read().splitlines()
    attributes, metrics = {}, {}
    section = None  # "attributes" | "metrics"
    cur_attr = cur_metric = None
    for raw in lines:
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        ind, text = indent_of(raw), raw.strip()
        if ind == 0:
            section = "attributes" if text == "attributes:" else None
            if text == "telemetry:":
                section = "telemetry"
            continue
        if section == "attributes":
            if ind == 2 and text.endswith(":"):
                cur_attr = text[:-1]
                attributes[cur_attr] = {"label": cur_attr, "enum": None}
            elif ind == 4 and text.startswith("enum:") and cur_attr:
                attributes[cur_attr]["enum"] = parse_inline_list(text[len("enum:"):])
            elif ind == 4 and text.startswith("name_override:") and cur_attr:
                attributes[cur_attr]["label"] = unquote(text.split(":", 1)[1].strip())
        elif section in ("telemetry", "metrics"):
            if ind == 2:
                section = "metrics" if text == "metrics:" else "telemetry"
            elif section == "metrics" and ind == 4 and text.endswith(":"):
                cur_metric = text[:-1]
                metrics[cur_metric] = {"type": None, "attributes": []}
            elif section == "metrics" and ind == 6 and cur_metric:
                key = text.split(":", 1)[0]
                if key in ("sum", "gauge", "histogram"):
                    metrics[cur_metric]["type"] = key
                elif key == "attributes":
                    metrics[cur_metric]["attributes"] = parse_inline_list(text.split(":", 1)[1]) or []
    if not metrics or not attributes:
        sys.exit(f"{path}: found no metrics or attributes (parser out of date?)")
    for k, m in metrics.items():
        if m["type"] is None:
            sys.exit(f"{path}: metric {k} has no sum/gauge/histogram (parser out of date?)")
        for a in m["attributes"]:
            if a not in attributes:
                sys.exit(f"{path}: metric {k} uses undeclared attribute {a}")
    return metrics, attributes


def exported_names(metrics, attributes):
    """{exported Prometheus name: {allowed label: its values (enum list) or None}}. An
    attribute is exported under its name_override when it has one."""
    out = {}
    for key, m in metrics.items():
        base = "otelcol_" + key
        labels = {attributes[a]["label"]: attributes[a]["enum"] for a in m["attributes"]}
        labels.update({t: None for t in TARGET_LABELS})
        if m["type"] == "histogram":
            out[base + "_bucket"] = {**labels, "le": None}
            out[base + "_sum"] = dict(labels)
            out[base + "_count"] = dict(labels)
        else:
            out[base] = labels
    return out


def finding_kinds(path):
    """The finding kinds of README.md's "Findings" table: the code spans of each row's first
    cell (e.g. `no_root` / `multiple_roots`)."""
    text = open(path).read()
    m = re.search(r"\n### Findings\n(.*?)\n#", text, re.S)
    if not m:
        sys.exit(f"{path}: no '### Findings' section")
    kinds = set()
    for line in m.group(1).splitlines():
        if not line.startswith("| `"):
            continue
        first = line.split("|")[1]
        kinds.update(re.findall(r"`([a-z_]+)`", first))
    if len(kinds) < 5:
        sys.exit(f"{path}: the Findings table lists only {sorted(kinds)}")
    return kinds


# --------------------------------------------------------------------------- rules


def load_rules(path):
    """[(kind, name, expr, labels, annotations)] from rules.yaml, for the layout it uses:
    `- record:`/`- alert:` items with `expr:` inline or as a `|` block, and flat
    `labels:`/`annotations:` maps (values inline or as `>-` blocks)."""
    lines = open(path).read().splitlines()
    rules = []
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)- (record|alert): (\S+)\s*$", lines[i])
        if not m:
            i += 1
            continue
        base = len(m.group(1)) + 2
        rule = {"kind": m.group(2), "name": m.group(3), "expr": None, "labels": {}, "annotations": {}}
        i += 1
        section = None
        while i < len(lines) and (not lines[i].strip() or indent_of(lines[i]) >= base) \
                and not re.match(r"^\s*- (record|alert):", lines[i]):
            line = lines[i]
            if not line.strip() or line.lstrip().startswith("#"):
                i += 1
                continue
            ind, text = indent_of(line), line.strip()
            key, _, val = text.partition(":")
            val = val.strip()
            if ind == base:
                section = key
                if key == "expr":
                    if val in ("|", "|-", ">", ">-"):
                        block, i = read_block(lines, i + 1, base)
                        rule["expr"] = " ".join(block)
                        continue
                    rule["expr"] = unquote(val)
            elif ind == base + 2 and section in ("labels", "annotations"):
                if val in ("|", "|-", ">", ">-"):
                    block, i = read_block(lines, i + 1, base + 2)
                    rule[section][key] = " ".join(block)
                    continue
                rule[section][key] = unquote(val)
            i += 1
        if not rule["expr"]:
            sys.exit(f"{path}: rule {rule['name']} has no expr")
        rules.append(rule)
    if not rules:
        sys.exit(f"{path}: no rules found")
    return rules


def read_block(lines, i, parent_indent):
    out = []
    while i < len(lines) and (not lines[i].strip() or indent_of(lines[i]) > parent_indent):
        out.append(lines[i].strip())
        i += 1
    return out, i


def unquote(v):
    if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
        return v[1:-1]
    return v


# --------------------------------------------------------------------------- PromQL


class Selector:
    def __init__(self, name, matchers):
        self.name = name
        self.matchers = matchers  # [(label, op, value)]


def scan_promql(expr):
    """Returns (selectors, grouping labels, functions) of a PromQL expression, with
    Grafana variables ($__rate_interval, ${datasource}, $service_name) allowed."""
    s = expr
    # Grafana variables become harmless placeholders (they appear in ranges and strings).
    s = re.sub(r"\$\{[^}]*\}|\$\w+", "1m", s)
    selectors, grouping, functions = [], [], []
    i, n = 0, len(s)
    pending_grouping = False
    while i < n:
        c = s[i]
        if c.isspace():
            i += 1
            continue
        if c in "\"'`":
            j = i + 1
            while j < n and s[j] != c:
                j += 2 if s[j] == "\\" else 1
            i = j + 1
            continue
        if c == "[":
            j = s.index("]", i)
            i = j + 1
            continue
        if c == "#":  # comment
            j = s.find("\n", i)
            i = n if j < 0 else j
            continue
        if c == "{":
            j, matchers = parse_matchers(s, i)
            selectors.append(Selector(None, matchers))
            i = j
            continue
        m = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?[a-zA-Z0-9]*").match(s, i)
        if m and (c.isdigit() or c == "."):
            i = m.end()
            continue
        m = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*").match(s, i)
        if m:
            word = m.group(0)
            j = m.end()
            while j < n and s[j].isspace():
                j += 1
            nxt = s[j] if j < n else ""
            if word.lower() in GROUPING:
                if nxt == "(":
                    k = s.index(")", j)
                    grouping += [x.strip() for x in s[j + 1:k].split(",") if x.strip()]
                    i = k + 1
                else:
                    i = j
                continue
            if word.lower() in PROMQL_KEYWORDS:
                i = j
                continue
            if nxt == "(" or word in AGGREGATIONS:
                functions.append(word)
                i = j
                continue
            if nxt == "{":
                k, matchers = parse_matchers(s, j)
                selectors.append(Selector(word, matchers))
                i = k
                continue
            selectors.append(Selector(word, []))
            i = j
            continue
        i += 1
    return selectors, grouping, functions


def parse_matchers(s, i):
    """Parses {label op "value", ...} starting at s[i] == '{'; returns (end, matchers)."""
    assert s[i] == "{"
    i += 1
    matchers = []
    pat = re.compile(r"\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*')\s*,?")
    while True:
        while i < len(s) and s[i].isspace():
            i += 1
        if i >= len(s):
            raise ValueError("unterminated label matchers")
        if s[i] == "}":
            return i + 1, matchers
        m = pat.match(s, i)
        if not m:
            raise ValueError(f"cannot parse label matcher at {s[i:i + 40]!r}")
        matchers.append((m.group(1), m.group(2), m.group(3)[1:-1]))
        i = m.end()


# --------------------------------------------------------------------------- checks


class Checker:
    def __init__(self, exported, kinds, recorded):
        self.exported = exported
        self.kinds = kinds
        self.recorded = recorded
        self.all_labels = set().union(*exported.values()) | {"le"}
        # A recording rule may carry a label of any metric: its values are those of every
        # metric with that label (None when one of them has no enum).
        self.any_values = {}
        for labels in exported.values():
            for label, enum in labels.items():
                if label in self.any_values and self.any_values[label] is None:
                    continue
                self.any_values[label] = None if enum is None else self.any_values.get(label, set()) | set(enum)
        self.errors = []
        self.used = set()

    def values_of(self, metric, label):
        if label == "kind":
            return self.kinds
        if metric in self.exported:
            enum = self.exported[metric].get(label)
            return set(enum) if enum else None
        return self.any_values.get(label)

    def check_expr(self, where, expr, allow_no_selector=False):
        try:
            selectors, grouping, _ = scan_promql(expr)
        except ValueError as e:
            self.errors.append(f"{where}: {e}: {expr}")
            return
        if not selectors and not allow_no_selector:
            self.errors.append(f"{where}: no metric in query: {expr}")
        for sel in selectors:
            if sel.name is None:
                self.errors.append(f"{where}: selector without a metric name: {expr}")
                continue
            if sel.name in self.exported:
                allowed = self.exported[sel.name]
                self.used.add(sel.name)
            elif sel.name in self.recorded:
                allowed = self.all_labels
                self.used.add(sel.name)
            else:
                hint = ""
                for suffix in ("_total", "_bytes", "_seconds", "_nanoseconds"):
                    if sel.name.endswith(suffix) and sel.name[: -len(suffix)] in self.exported:
                        hint = f" (the collector exports it as {sel.name[: -len(suffix)]})"
                self.errors.append(
                    f"{where}: metric {sel.name} is neither exported by the collector "
                    f"(traceconsistencyprocessor/metadata.yaml) nor recorded in rules.yaml{hint}")
                continue
            for label, op, value in sel.matchers:
                if label not in allowed:
                    self.errors.append(f"{where}: {sel.name} has no label {label!r} (labels: {sorted(allowed)})")
                    continue
                known = self.values_of(sel.name, label)
                if known is None or op not in ("=", "=~") or "$" in value or value == "1m":
                    continue
                alternatives = value.split("|") if op == "=~" else [value]
                if op == "=~" and not all(re.fullmatch(r"[a-z_]+", a) for a in alternatives):
                    continue
                for a in alternatives:
                    if a not in known:
                        self.errors.append(f"{where}: {label}={a!r} is not a known value (known: {sorted(known)})")
        for label in grouping:
            if label not in self.all_labels:
                self.errors.append(f"{where}: grouping label {label!r} is not a label of any metric")


def check_rules(checker, rules, test_text):
    alerts = [r for r in rules if r["kind"] == "alert"]
    if not alerts:
        checker.errors.append("rules.yaml: no alerts")
    for r in rules:
        checker.check_expr(f"rules.yaml {r['name']}", r["expr"],
                           allow_no_selector=r["name"].startswith(("traceconsistency:threshold:",
                                                                    "traceconsistency:config:")))
    for a in alerts:
        where = f"rules.yaml alert {a['name']}"
        if a["labels"].get("severity") not in ("info", "warning", "critical"):
            checker.errors.append(f"{where}: severity label missing or not info/warning/critical")
        for key in ("summary", "description"):
            if len(a["annotations"].get(key, "")) < 20:
                checker.errors.append(f"{where}: annotation {key} missing or too short")
        # rules_test.yaml: one case where it fires, one where it must not.
        cases = re.findall(
            r"alertname: " + re.escape(a["name"]) + r"\s*\n\s*exp_alerts:(.*?)(?=\n\s*- eval_time:|\n\s*- name:|\n\s*#|\Z)",
            test_text, re.S)
        if not any(c.strip() == "[]" for c in cases):
            checker.errors.append(f"rules_test.yaml: no case where {a['name']} must not fire (exp_alerts: [])")
        if not any("exp_labels" in c for c in cases):
            checker.errors.append(f"rules_test.yaml: no case where {a['name']} fires")


def panels_of(dash):
    for p in dash.get("panels", []):
        yield p
        for q in p.get("panels", []) or []:  # collapsed rows
            yield q


def check_dashboard(checker, dash):
    where = "dashboard.json"
    if not dash.get("title") or not dash.get("uid"):
        checker.errors.append(f"{where}: title and uid are required")
    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        checker.errors.append(f"{where}: needs a variable 'datasource' of type datasource, query prometheus")
    for name, v in variables.items():
        if v.get("type") != "query":
            continue
        if (v.get("datasource") or {}).get("uid") != "${datasource}":
            checker.errors.append(f"{where}: variable {name} must use the ${{datasource}} data source")
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = re.fullmatch(r"\s*label_values\(\s*(.*?)\s*,\s*(\w+)\s*\)\s*", q or "")
        if not m:
            checker.errors.append(f"{where}: variable {name}: query must be label_values(<selector>, <label>): {q!r}")
            continue
        checker.check_expr(f"{where} variable {name}", m.group(1))
        sels, _, _ = scan_promql(m.group(1))
        for s in sels:
            if s.name in checker.exported and m.group(2) not in checker.exported[s.name]:
                checker.errors.append(f"{where}: variable {name}: {s.name} has no label {m.group(2)}")
    sv = variables.get("service_name")
    if not sv or "service_name" not in json.dumps(sv.get("query")):
        checker.errors.append(f"{where}: needs a variable 'service_name' filled by label_values(..., service_name)")

    ids = set()
    n_queries = 0
    for p in panels_of(dash):
        pid, title = p.get("id"), p.get("title", "?")
        pwhere = f"{where} panel {pid} {title!r}"
        if pid in ids:
            checker.errors.append(f"{pwhere}: duplicate panel id")
        ids.add(pid)
        if "gridPos" not in p:
            checker.errors.append(f"{pwhere}: no gridPos")
        if p.get("type") == "row":
            continue
        if (p.get("datasource") or {}).get("uid") != "${datasource}":
            checker.errors.append(f"{pwhere}: datasource must be ${{datasource}}")
        targets = p.get("targets") or []
        if not targets:
            checker.errors.append(f"{pwhere}: no queries")
        for t in targets:
            expr = t.get("expr")
            if not expr:
                checker.errors.append(f"{pwhere}: target {t.get('refId')} has no expr")
                continue
            n_queries += 1
            checker.check_expr(pwhere, expr)
    if n_queries == 0:
        checker.errors.append(f"{where}: no queries")
    return n_queries


def self_test(exported, kinds, recorded):
    """The checker must reject names and labels that do not exist."""
    c = Checker(exported, kinds, recorded)
    good = [
        'sum by (service_name, kind) (rate(otelcol_processor_traceconsistency_findings{service_name=~"$service_name", kind="missing_parent"}[$__rate_interval]))',
        'histogram_quantile(0.99, sum by (le) (rate(otelcol_processor_traceconsistency_release_age_bucket[5m])))',
        'otelcol_processor_traceconsistency_traces_released{reason=~"memory_pressure|span_limit"} offset 1h',
        'sum by (cause) (rate(otelcol_processor_traceconsistency_handoff_traces{cause="idle_timeout"}[5m]))',
        'otelcol_processor_traceconsistency_spans_lost{cause="shutdown_timeout"}',
    ]
    for e in good:
        c.check_expr("self-test", e)
    if c.errors:
        sys.exit("self-test: valid queries rejected:\n  " + "\n  ".join(c.errors))
    bad = [
        "rate(otelcol_processor_traceconsistency_findings_total[5m])",
        "otelcol_processor_traceconsistency_bytes_buffered_bytes",
        "rate(otelcol_processor_traceconsistency_release_age_seconds_bucket[5m])",
        "otelcol_processor_traceconsistency_release_age",
        'otelcol_processor_traceconsistency_findings{reason="complete"}',
        'otelcol_processor_traceconsistency_traces_released{reason="evicted"}',
        'otelcol_processor_traceconsistency_findings{kind="orphan"}',
        "sum by (pipeline) (otelcol_processor_traceconsistency_spans_buffered)",
        "traceconsistency:no_such_rule",
        'otelcol_processor_traceconsistency_handoff_traces{handoff_cause="idle_timeout"}',
        'otelcol_processor_traceconsistency_handoff_spans{cause="shutdown_timeout"}',
        'otelcol_processor_traceconsistency_spans_lost{cause="idle_timeout"}',
    ]
    for e in bad:
        c = Checker(exported, kinds, recorded)
        c.check_expr("self-test", e)
        if not c.errors:
            sys.exit(f"self-test: the checker accepts a wrong query: {e}")


def main():
    metrics, attributes = load_metadata(METADATA)
    exported = exported_names(metrics, attributes)
    kinds = finding_kinds(README)
    rules = load_rules(RULES)
    recorded = {r["name"] for r in rules if r["kind"] == "record"}
    self_test(exported, kinds, recorded)

    checker = Checker(exported, kinds, recorded)
    check_rules(checker, rules, open(RULES_TEST).read())
    try:
        dash = json.load(open(DASHBOARD))
    except json.JSONDecodeError as e:
        sys.exit(f"dashboard.json: invalid JSON: {e}")
    n_queries = check_dashboard(checker, dash)

    if checker.errors:
        print("observability files drifted from the metrics:")
        for e in checker.errors:
            print("  - " + e)
        sys.exit(1)
    unused = sorted(n for n in exported if n not in checker.used)
    print(f"metric names: {len(rules)} rules and {n_queries} dashboard queries use only the "
          f"{len(exported)} exported names (traceconsistencyprocessor/metadata.yaml) and {len(recorded)} recording rules")
    if unused:
        print("  not shown anywhere (fine, for information): " + ", ".join(unused))


if __name__ == "__main__":
    main()
