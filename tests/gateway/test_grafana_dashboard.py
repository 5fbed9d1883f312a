"""The Grafana board (``deploy/grafana/cato.json``) queries only what CATO exports.

Every ``expr`` of the board (and every ``label_values(...)`` of its variables) goes through a
small PromQL reader (:func:`promql_selectors`): string literals, ranges (``[5m]``), Grafana
variables, numbers and durations are skipped; aggregation and grouping clauses (``by (le,
task)``) are skipped; an identifier followed by ``(`` must be a PromQL function; every other
identifier is a metric name, with the label names of its ``{...}`` matchers.

Those names are checked against the series a REAL gateway (``cato serve``, with an ``auth``
section and a metrics key, as in docs/GRAFANA.md) and a REAL ``cato engine`` expose over HTTP
on loopback, scraped after a few requests so that labelled series exist. A family exposes the
series names its type gives it in the Prometheus text format (a counter ``c``: ``c_total``,
``c_created``; a histogram ``h``: ``h_bucket``, ``h_count``, ``h_sum``, ``h_created``; a gauge:
its own name), so a query of ``cato_requests`` (no ``_total``) or ``cato_ttft_seconds_total``
fails as it would find nothing in Prometheus. Label names of matchers are checked where the
scrape holds samples of the metric (``instance`` and ``job`` are Prometheus' target labels).

The board's structure is checked too: unique panel ids, a datasource, targets and a grid
position on every panel, no overlapping panels, the SLA lines at the catalog's SLAs.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cato.core.catalog import TASK_NAMES, single_step_tasks
from cato.core.task import SlaKind

from conftest import (  # type: ignore[import-not-found, attr-defined, unused-ignore]
    SMALL_INDEX_ROOT, launch_gateway, start_engines)

BOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "cato.json"
CLIENT_KEY = "sk-grafana-test-client-0001"
METRICS_KEY = "mk-grafana-test-scraper-0001"

# ---------------------------------------------------------------------------- PromQL reader

#: PromQL's aggregation operators (followed by ``(`` or by ``by``/``without``).
AGGREGATIONS = frozenset({
    "sum", "avg", "min", "max", "count", "group", "stddev", "stdvar", "topk", "bottomk",
    "quantile", "count_values", "limitk", "limit_ratio"})
#: PromQL's functions (Prometheus 2.x/3.x).
FUNCTIONS = frozenset({
    "abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh",
    "avg_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "cos", "cosh",
    "count_over_time", "day_of_month", "day_of_week", "day_of_year", "days_in_month", "deg",
    "delta", "deriv", "exp", "floor", "histogram_avg", "histogram_count", "histogram_fraction",
    "histogram_quantile", "histogram_stddev", "histogram_stdvar", "histogram_sum", "hour",
    "idelta", "increase", "irate", "label_join", "label_replace", "last_over_time", "ln",
    "log10", "log2", "mad_over_time", "max_over_time", "min_over_time", "minute", "month",
    "predict_linear", "present_over_time", "quantile_over_time", "rad", "rate", "resets",
    "round", "scalar", "sgn", "sin", "sinh", "sort", "sort_desc", "sort_by_label",
    "sort_by_label_desc", "sqrt", "stddev_over_time", "stdvar_over_time", "sum_over_time",
    "tan", "tanh", "time", "timestamp", "vector", "year"})
#: Keywords that open a parenthesised list of label names.
GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
#: Other keywords and literals that are not metric names.
KEYWORDS = frozenset({"bool", "offset", "and", "or", "unless", "atan2", "inf", "nan"})
#: Labels Prometheus adds to every scraped series (the target's).
TARGET_LABELS = frozenset({"instance", "job"})

#: Grafana's variable query ``label_values(selector, label)`` (or ``label_values(label)``).
_LABEL_VALUES = re.compile(r"\s*label_values\((?:(?P<sel>.*),)?\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*",
                           re.S)
_TOKEN = re.compile(r"""
    (?P<str>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<var>\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*)
  | (?P<num>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?[A-Za-z]*)
  | (?P<id>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<ws>\s+)
  | (?P<op>.)
""", re.X | re.S)


class PromQLError(ValueError):
    """An expression the reader cannot take (unknown function, unbalanced brackets)."""


@dataclass
class Selector:
    """A metric name and the label names its ``{...}`` matchers use."""

    name: str
    labels: set[str] = field(default_factory=set)


def _tokens(expr: str) -> list[tuple[str, str]]:
    out = []
    for m in _TOKEN.finditer(expr):
        kind = m.lastgroup
        assert kind is not None
        if kind != "ws":
            out.append((kind, m.group()))
    return out


def promql_selectors(expr: str) -> list[Selector]:
    """The metric selectors of a PromQL expression (Grafana variables allowed), in order.
    Raises :class:`PromQLError` for an identifier called as a function that PromQL lacks.
    A Grafana variable query ``label_values(selector, label)`` yields the selector's."""
    lv = _LABEL_VALUES.fullmatch(expr)
    toks = _tokens(lv.group("sel") or "" if lv else expr)
    depth = 0
    for _, text in toks:
        depth += {"(": 1, ")": -1}.get(text, 0)
        if depth < 0:
            break
    if depth != 0:
        raise PromQLError(f"unbalanced parentheses in {expr!r}")
    out: list[Selector] = []
    i, n = 0, len(toks)
    while i < n:
        kind, text = toks[i]
        nxt = toks[i + 1][1] if i + 1 < n else ""
        if text == "[":                       # a range or subquery: durations, variables
            depth = 0
            while i < n:
                depth += {"[": 1, "]": -1}.get(toks[i][1], 0)
                i += 1
                if depth == 0:
                    break
            else:
                raise PromQLError(f"unbalanced '[' in {expr!r}")
            continue
        if text == "{":                       # matchers without a name: {__name__=...}
            raise PromQLError(f"a selector without a metric name in {expr!r}")
        if kind != "id":
            i += 1
            continue
        if text in GROUPING and nxt == "(":   # by (le, task): label names
            close = next((j for j in range(i + 1, n) if toks[j][1] == ")"), None)
            if close is None:
                raise PromQLError(f"unclosed '{text} (' in {expr!r}")
            i = close + 1
            continue
        if text in AGGREGATIONS or text in KEYWORDS:
            i += 1
            continue
        if nxt == "(":
            if text not in FUNCTIONS:
                raise PromQLError(f"unknown PromQL function {text!r} in {expr!r}")
            i += 1
            continue
        sel = Selector(text)
        i += 1
        if i < n and toks[i][1] == "{":       # label matchers: name op "value", ...
            i += 1
            while i < n and toks[i][1] != "}":
                if toks[i][0] == "id":
                    sel.labels.add(toks[i][1])
                i += 1
            if i == n:
                raise PromQLError(f"unclosed '{{' in {expr!r}")
            i += 1
        out.append(sel)
    return out


def board_queries(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target and every variable query of ``board``."""
    for p in board["panels"]:
        for t in p.get("targets", []):
            yield f"panel {p['id']} {p.get('title', '')!r} target {t.get('refId')}", t["expr"]
    for v in board.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            yield f"variable {v['name']!r}", q


# ---------------------------------------------------------------------------- exported series

_SERIES_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "summary": ("", "_count", "_sum", "_created"),
}


def exported_series(*texts: str) -> dict[str, set[str] | None]:
    """Series name -> label names seen on its samples (plus the target labels), or None when
    the family has no samples yet; from Prometheus text expositions."""
    out: dict[str, set[str] | None] = {}
    for text in texts:
        for fam in text_string_to_metric_families(text):
            for suffix in _SERIES_SUFFIXES.get(fam.type, ("",)):
                name = fam.name + suffix
                labels = [set(s.labels) for s in fam.samples if s.name == name]
                known = out.get(name)
                if labels:
                    out[name] = (known or set()).union(TARGET_LABELS, *labels)
                else:
                    out.setdefault(name, None)
    return out


def unexported(queries: list[tuple[str, str]], exported: dict[str, set[str] | None]) -> list[str]:
    """Problems: metrics nobody exports, label names a metric's samples do not carry,
    expressions the reader cannot take. Empty when every query can find data."""
    problems = []
    for where, expr in queries:
        try:
            selectors = promql_selectors(expr)
        except PromQLError as e:
            problems.append(f"{where}: {e}")
            continue
        if not selectors:
            problems.append(f"{where}: queries no metric: {expr!r}")
        for s in selectors:
            if s.name not in exported:
                problems.append(f"{where}: metric {s.name!r} is not exported")
                continue
            labels = exported[s.name]
            if labels is not None and not s.labels <= labels:
                problems.append(f"{where}: metric {s.name!r} has no label(s) "
                                f"{sorted(s.labels - labels)}; it has {sorted(labels)}")
    return problems


# ---------------------------------------------------------------------------- board structure

def structure_problems(board: dict[str, Any]) -> list[str]:
    """What would make Grafana import the board badly or show an empty panel."""
    problems = []
    if not isinstance(board.get("schemaVersion"), int) or board["schemaVersion"] < 36:
        problems.append(f"schemaVersion {board.get('schemaVersion')!r}: want >= 36 (Grafana 9+)")
    inputs = [i.get("name") for i in board.get("__inputs", [])]
    if "DS_PROMETHEUS" not in inputs:
        problems.append(f"__inputs has no DS_PROMETHEUS datasource input: {inputs}")
    ids = [p.get("id") for p in board["panels"]]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup or None in ids:
        problems.append(f"panel ids must be present and unique; repeated: {dup}")
    boxes: list[tuple[str, dict[str, int]]] = []
    for p in board["panels"]:
        name = f"panel {p.get('id')} {p.get('title', '')!r}"
        g = p.get("gridPos")
        if not isinstance(g, dict) or not all(isinstance(g.get(k), int) for k in "hwxy"):
            problems.append(f"{name}: gridPos needs integer h, w, x, y; got {g!r}")
        else:
            if g["x"] + g["w"] > 24 or min(g.values()) < 0:
                problems.append(f"{name}: gridPos {g} leaves the 24-column grid")
            for other, og in boxes:
                if (g["x"] < og["x"] + og["w"] and og["x"] < g["x"] + g["w"]
                        and g["y"] < og["y"] + og["h"] and og["y"] < g["y"] + g["h"]):
                    problems.append(f"{name}: overlaps {other}")
            boxes.append((name, g))
        if p.get("type") == "row":
            continue
        ds = p.get("datasource")
        if not isinstance(ds, dict) or ds.get("type") != "prometheus" or not ds.get("uid"):
            problems.append(f"{name}: needs a prometheus datasource, got {ds!r}")
        targets = p.get("targets") or []
        if not targets or not all(isinstance(t.get("expr"), str) and t["expr"].strip()
                                  for t in targets):
            problems.append(f"{name}: needs at least one target, each with an expr")
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs):
            problems.append(f"{name}: refIds must be unique: {refs}")
    return problems


def sla_panels(board: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Task -> the panels whose every target selects that one task (``task="..."``)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for p in board["panels"]:
        tasks = {m for t in p.get("targets", [])
                 for m in re.findall(r'task="([^"]+)"', t["expr"])}
        if len(tasks) == 1 and all('task="' in t["expr"] for t in p["targets"]):
            out.setdefault(tasks.pop(), []).append(p)
    return out


def load_board() -> dict[str, Any]:
    board: dict[str, Any] = json.loads(BOARD.read_text())
    return board


# ---------------------------------------------------------------------------- the real scrape

@dataclass
class Scrape:
    gateway: str
    engine: str
    unauthenticated_status: int


@pytest.fixture(scope="module")
def scrape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scrape]:
    """A real ``cato engine`` behind a real gateway with a client key and a metrics key; a few
    requests of every task, then both ``/metrics`` scraped over HTTP."""
    tmp = tmp_path_factory.mktemp("grafana")
    engines = start_engines(1, tmp)
    config = {
        "models": [{"name": "m", "coefficients": "a100-llama7b", "accepts_priority": True,
                    "replicas": [{"url": e.url} for e in engines]}],
        "profile_probes": 1,
        "code_index_root": SMALL_INDEX_ROOT,
        "auth": {"api_keys": [{"name": "tenant-a", "key": CLIENT_KEY}],
                 "metrics_keys": [{"key": METRICS_KEY}]},
    }
    try:
        gw = launch_gateway(tmp, config, engines)
    except BaseException:
        for engine in engines:   # the gateway did not start: leave no engine behind
            engine.stop()
        raise
    try:
        with httpx.Client(timeout=30.0) as http:
            for task in TASK_NAMES:
                r = http.post(gw.url + "/v1/completions",
                              headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                              json={"model": task, "prompt": "def f(x): return x",
                                    "max_tokens": 4})
                assert r.status_code == 200, r.text
            no_key = http.get(gw.url + "/metrics").status_code
            g = http.get(gw.url + "/metrics", headers={"Authorization": f"Bearer {METRICS_KEY}"})
            assert g.status_code == 200, g.text
            e = http.get(engines[0].url + "/metrics")
            assert e.status_code == 200, e.text
        yield Scrape(g.text, e.text, no_key)
    finally:
        gw.close()


# ---------------------------------------------------------------------------- tests

def test_the_board_queries_only_exported_metrics(scrape: Scrape) -> None:
    board = load_board()
    queries = list(board_queries(board))
    exported = exported_series(scrape.gateway, scrape.engine)
    assert unexported(queries, exported) == []
    queried = {s.name for _, q in queries for s in promql_selectors(q)}
    # The board covers both sides: the gateway's own metrics and the engines' vLLM metrics.
    assert {"cato_requests_total", "cato_goodput_requests_total", "cato_ttft_seconds_bucket",
            "cato_e2e_seconds_bucket", "cato_replica_queue_depth", "cato_replica_in_flight",
            "cato_replica_state", "cato_scale_events_total", "cato_retries_total",
            "cato_replica_ejections_total", "vllm:kv_cache_usage_perc",
            "vllm:num_requests_running", "vllm:num_requests_waiting"} <= queried
    # The labels were checked on real samples for the core series, not skipped as unseen.
    for name in ("cato_requests_total", "cato_ttft_seconds_bucket", "cato_replica_state",
                 "vllm:kv_cache_usage_perc", "vllm:time_to_first_token_seconds_bucket",
                 "cato_auth_requests_total"):
        assert exported.get(name), f"no samples of {name} after the requests"


def test_metrics_need_the_metrics_key(scrape: Scrape) -> None:
    """docs/GRAFANA.md tells Prometheus to send a metrics key: without one the gateway
    refuses the scrape."""
    assert scrape.unauthenticated_status == 401


@pytest.mark.parametrize("planted, complaint", [
    ("cato_bogus_requests_total", "'cato_bogus_requests_total' is not exported"),
    ("cato_requests", "'cato_requests' is not exported"),                 # no _total
    ("cato_ttft_seconds_total", "'cato_ttft_seconds_total' is not exported"),   # a histogram
    ("vllm:gpu_cache_usage_perc", "'vllm:gpu_cache_usage_perc' is not exported"),  # old vLLM
    ('cato_requests_total{tsk="x"}', "has no label(s) ['tsk']"),
    ("histgram_quantile(0.9, cato_ttft_seconds_bucket)", "unknown PromQL function"),
])
def test_the_checker_reports_a_planted_metric(scrape: Scrape, planted: str,
                                              complaint: str) -> None:
    queries = list(board_queries(load_board()))
    where, expr = queries[3]
    queries[3] = (where, f"{expr} + on() group_left() sum({planted})")
    problems = unexported(queries, exported_series(scrape.gateway, scrape.engine))
    assert len(problems) == 1 and problems[0].startswith(where) and complaint in problems[0], \
        problems


@pytest.mark.parametrize("expr, names, labels", [
    ('histogram_quantile(0.95, sum by (le, task) (rate(cato_ttft_seconds_bucket{task=~"$task"}'
     '[$__rate_interval])))', ["cato_ttft_seconds_bucket"], {"task"}),
    ('sum(rate(a_total{x="by (y)", z!~"$v|w"}[5m] offset 1h30m)) by (q) / on (q) '
     'group_left (r) max without (s) (b:c{t="u"}) > bool 0.5e3',
     ["a_total", "b:c"], {"x", "z", "t"}),
    ("label_values(cato_requests_total, task)", ["cato_requests_total"], set()),
    ('vllm:num_requests_running{model_name=~"${model:regex}"} and on() vector(1)',
     ["vllm:num_requests_running"], {"model_name"}),
])
def test_the_reader_finds_names_and_matcher_labels(expr: str, names: list[str],
                                                   labels: set[str]) -> None:
    sels = promql_selectors(expr)
    assert [s.name for s in sels] == names
    assert set().union(*(s.labels for s in sels)) == labels


@pytest.mark.parametrize("expr", ["sum(rate(x_total[5m])", "sum(x_total))", "rate(x_total[5m",
                                  "x_total{a=\"b\"", "histgram_quantile(0.5, x_bucket)"])
def test_the_reader_rejects_what_prometheus_would(expr: str) -> None:
    with pytest.raises(PromQLError):
        promql_selectors(expr)


def test_the_board_structure() -> None:
    assert structure_problems(load_board()) == []


def _dup_id(b: dict[str, Any]) -> None:
    b["panels"][2]["id"] = b["panels"][1]["id"]


def _no_ds(b: dict[str, Any]) -> None:
    del b["panels"][1]["datasource"]


def _no_targets(b: dict[str, Any]) -> None:
    b["panels"][1]["targets"] = []


def _no_grid(b: dict[str, Any]) -> None:
    del b["panels"][1]["gridPos"]


def _overlap(b: dict[str, Any]) -> None:
    b["panels"][2]["gridPos"] = dict(b["panels"][1]["gridPos"])


def _old_schema(b: dict[str, Any]) -> None:
    b["schemaVersion"] = 16


@pytest.mark.parametrize("spoil, complaint", [
    (_dup_id, "unique"), (_no_ds, "datasource"), (_no_targets, "target"),
    (_no_grid, "gridPos"), (_overlap, "overlaps"), (_old_schema, "schemaVersion"),
])
def test_the_structure_check_can_fail(spoil: Any, complaint: str) -> None:
    board = copy.deepcopy(load_board())
    spoil(board)
    problems = structure_problems(board)
    assert problems and all(complaint in p for p in problems), problems


def test_sla_lines_are_the_catalog_slas() -> None:
    """One panel per task draws its SLA metric's percentiles with the catalog's SLA (at
    sla_scale 1) as a dashed threshold line."""
    tasks = single_step_tasks({t: "m" for t in TASK_NAMES})
    panels = sla_panels(load_board())
    assert sorted(panels) == sorted(TASK_NAMES)
    for name, ps in panels.items():
        assert len(ps) == 1, [p["title"] for p in ps]
        p, t = ps[0], tasks[name]
        metric = "cato_ttft_seconds_bucket" if t.sla_kind is SlaKind.TTFT \
            else "cato_e2e_seconds_bucket"
        assert all(metric in tg["expr"] for tg in p["targets"]), (name, p["targets"])
        d = p["fieldConfig"]["defaults"]
        assert d["custom"]["thresholdsStyle"]["mode"] in ("dashed", "line", "line+area",
                                                          "dashed+area")
        steps = [s["value"] for s in d["thresholds"]["steps"] if s["value"] is not None]
        assert steps == [pytest.approx(t.sla_s)], (name, steps)
        assert d["unit"] == "s"
