"""The Grafana dashboard and docs/metrics.md speak only of metrics Parley exports, and of all of them."""

import json
import re
from pathlib import Path

from observability import metrics

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
DOC = (ROOT / "docs" / "metrics.md").read_text()

PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset", "le", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: label matchers, strings, ranges and grouping
    clauses taken out first, then every identifier that is not a function call or a keyword."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = re.findall(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])(?!\s*\()", expr)
    return {name for name in names if name.lower() not in PROMQL_WORDS}


def expressions() -> list[str]:
    return [target["expr"] for panel in DASHBOARD["panels"] for target in panel.get("targets", [])]


def test_the_name_finder_reads_promql():
    assert metric_names('histogram_quantile(0.95, sum by (le, model) (rate(a_b_bucket{x=~"5.."}[5m]))) > 0') == {"a_b_bucket"}
    assert metric_names("max by (state) (c) / on (state) d") == {"c", "d"}


def test_every_metric_the_dashboard_uses_is_exported():
    used = set().union(*(metric_names(expr) for expr in expressions()))
    assert used, "the dashboard queries nothing"
    assert used <= metrics.exported_names(), used - metrics.exported_names()


def test_the_dashboard_shows_every_metric_family():
    used = set().union(*(metric_names(expr) for expr in expressions()))
    families = {re.sub(r"_(bucket|sum|count)$", "", name) for name in used}
    exported = {re.sub(r"_(bucket|sum|count)$", "", name) for name in metrics.exported_names()}
    assert exported <= families, exported - families


def test_the_dashboard_is_a_grafana_dashboard():
    assert DASHBOARD["title"] and DASHBOARD["uid"] and isinstance(DASHBOARD["schemaVersion"], int)
    ids = [panel["id"] for panel in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    for panel in DASHBOARD["panels"]:
        assert {"type", "title", "gridPos"} <= set(panel)
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] != "row":
            assert panel["targets"] and all(target["refId"] and target["expr"] for target in panel["targets"])
            assert panel["datasource"]["uid"] == "${datasource}"
    assert [v["name"] for v in DASHBOARD["templating"]["list"]] == ["datasource"]


def test_the_docs_list_every_metric():
    families = {re.sub(r"_(bucket|sum|count)$", "", name) for name in metrics.exported_names()}
    for family in families:
        assert f"`{family}`" in DOC, family
    for path in ("/healthz", "/readyz", "/metrics"):
        assert f"`{path}`" in DOC
