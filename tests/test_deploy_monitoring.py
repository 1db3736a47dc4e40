"""The Prometheus alert rules and the Grafana dashboard in deploy/ use only metrics the bridge
exports, and promtool accepts the rules and their unit tests.

The exported names come from a real :class:`Metrics` registry (with the email connector's own
counters registered on it, as the running bridge does), not from a list kept here.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import aiohttp
import pytest
from prometheus_client import generate_latest
from ruamel.yaml import YAML

from bridge.core.context import ConnectorContext
from bridge.core.health import HealthMonitor
from bridge.core.ids import NetworkID
from bridge.core.metrics import Metrics
from bridge.email.client import EmailGateway
from bridge.email.config import EXAMPLE_CONFIG as EMAIL_EXAMPLE
from bridge.email.config import EmailConfig
from bridge.portal.store import Store
from bridge.xmpp.link import LinkMetrics
from tests.e2e.process import free_port

DEPLOY = Path(__file__).parent.parent / "deploy"
ALERTS = DEPLOY / "prometheus" / "pontis-alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus" / "pontis-alerts.test.yml"
DASHBOARD = DEPLOY / "grafana" / "pontis-dashboard.json"

FROM_PROMETHEUS = {"up"}
"""Series Prometheus records itself for every scrape target."""

SAMPLE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}

PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and",
    "or", "unless", "atan2", "inf", "nan",
}  # fmt: skip


def bridge_metrics() -> Metrics:
    """The registry a running bridge serves: the core's metrics, the process and build
    collectors, and the email connector's own counters (registered as it starts)."""
    metrics = Metrics()
    ctx = ConnectorContext(
        network=NetworkID("email"), config={}, domain="hub.test", log=logging.getLogger("test"),
        store=cast(Any, None), http=cast(Any, None), metrics=metrics, core=cast(Any, None),
    )  # fmt: skip
    email_config = EmailConfig.from_section(YAML(typ="safe").load(EMAIL_EXAMPLE))
    EmailGateway(ctx, email_config, cast(Any, SimpleNamespace(database=None)), cast(Any, None))
    metrics.registry.register(LinkMetrics(list))  # the XMPP connector's, registered as it starts
    return metrics


def exported_names() -> set[str]:
    """Every series name the bridge's /metrics can show, labelled metrics without a child yet
    included (their samples appear once something is counted)."""
    names: set[str] = set()
    for family in bridge_metrics().registry.collect():
        names |= {family.name + suffix for suffix in SAMPLE_SUFFIXES[family.type]}
        names |= {sample.name for sample in family.samples}
    return names


def exported_labels() -> dict[str, set[str]]:
    """Series name → the label names it can carry, from the same registry as the names:
    declared label names for the bridge's own metrics, sample labels for the collectors
    (build info, process, Python)."""
    metrics = bridge_metrics()
    labels: dict[str, set[str]] = {}
    for collector, names in metrics.registry._collector_to_names.items():  # no public API
        declared = set(getattr(collector, "_labelnames", ()))
        for family in collector.collect():
            declared |= {label for sample in family.samples for label in sample.labels}
        for name in names:
            labels.setdefault(name, set()).update(declared)
    for name in [name for name in labels if name.endswith("_bucket")]:
        labels[name].add("le")
    return labels


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (Grafana variables allowed)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # label values
    expr = re.sub(r"\$\{\w+(?::\w+)?\}|\$\w+", "1", expr)  # Grafana variables
    expr = re.sub(r"\{[^{}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\[\]]*\]", "", expr)  # ranges and subqueries
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", "", expr)
    found = re.findall(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?!\s*\()(?![\w:])", expr)
    return {name for name in found if name not in PROMQL_WORDS}


def _tool(name: str, package: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is missing: scripts/test.sh installs Debian's {package} package"
    return found


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_tool("promtool", "prometheus"), *args],
        capture_output=True, text=True, timeout=120, cwd=cwd,
    )  # fmt: skip


def _alert_rules() -> list[dict[str, Any]]:
    doc = YAML(typ="safe").load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    queries = [
        (f"panel {panel['title']!r} target {target['refId']}", target["expr"])
        for panel in _panels(dashboard["panels"])
        for target in panel.get("targets", [])
    ]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            text = variable["query"]["query"]
            inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", text)
            assert inner, f"variable {variable['name']}: {text}"
            queries.append((f"variable {variable['name']}", inner.group(1)))
    return queries


def _unknown(queries: list[tuple[str, str]], known: set[str]) -> list[str]:
    return [
        f"{where}: {name}" for where, expr in queries for name in sorted(metric_names(expr) - known)
    ]


# --- The tools that check the checks -----------------------------------------------------------


def test_metric_names_reads_promql() -> None:
    assert metric_names(
        "histogram_quantile(0.95, sum by (le) (rate(pontis_queue_wait_seconds_bucket"
        '{job="$job", instance=~"$instance"}[$__rate_interval])))'
    ) == {"pontis_queue_wait_seconds_bucket"}
    assert metric_names(
        'sum by (instance, component) (rate(pontis_errors_total{component!="by (x)"}[5m])) '
        "> 0.1 and on (instance) up offset 5m unless absent(foo_bar) or 1e3"
    ) == {"pontis_errors_total", "up", "foo_bar"}
    assert metric_names("time() - process_start_time_seconds{instance=~'a|b'}") == {
        "process_start_time_seconds"
    }


def test_exported_names_come_from_the_registry() -> None:
    names = exported_names()
    text = generate_latest(Metrics().registry).decode()
    shown = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}
    assert shown <= names  # everything a scrape shows now
    assert {
        "pontis_errors_total", "pontis_queue_wait_seconds_bucket", "pontis_build_info",
        "pontis_oldest_pending_seconds", "pontis_email_inbound_total", "process_cpu_seconds_total",
        "process_resident_memory_bytes", "process_open_fds", "process_start_time_seconds",
        "python_info",
    } <= names  # fmt: skip
    assert "pontis_errors" not in names and "pontis_made_up_total" not in names


def test_a_name_the_bridge_does_not_export_is_reported() -> None:
    queries = [("alert X", 'rate(pontis_messages_total{network="xmpp"}[5m]) > 0')]
    assert _unknown(queries, exported_names()) == ["alert X: pontis_messages_total"]


def test_promtool_refuses_a_broken_rule_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(
        ALERTS.read_text().replace('expr: up{job="pontis"} == 0', 'expr: up{job="pontis" == 0')
    )
    done = _promtool("check", "rules", str(broken), cwd=tmp_path)
    assert done.returncode != 0
    assert "FAILED" in done.stdout + done.stderr


# --- Alert rules ---------------------------------------------------------------------------------


def test_promtool_check_rules() -> None:
    done = _promtool("check", "rules", ALERTS.name, cwd=ALERTS.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(_alert_rules())} rules found" in done.stdout


def test_promtool_test_rules_fire_when_they_should() -> None:
    """pontis-alerts.test.yml feeds series as the bridge exports them and names the alerts
    that must fire, and when (and that a user's own login or a federation refusal does not)."""
    done = _promtool("test", "rules", ALERT_TESTS.name, cwd=ALERT_TESTS.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    tested = set(re.findall(r"alertname: (\w+)", ALERT_TESTS.read_text()))
    assert tested == {rule["alert"] for rule in _alert_rules()}


def test_alerts_use_only_exported_metrics() -> None:
    rules = _alert_rules()
    assert len(rules) >= 10
    queries = [(f"alert {rule['alert']}", rule["expr"]) for rule in rules]
    assert _unknown(queries, exported_names() | FROM_PROMETHEUS) == []


@pytest.mark.parametrize("rule", _alert_rules(), ids=lambda rule: rule["alert"])
def test_each_alert_says_what_and_how_bad(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in ("critical", "warning", "info")
    assert rule["annotations"]["summary"] and rule["annotations"]["description"]


# --- Dashboard -------------------------------------------------------------------------------------


def test_dashboard_uses_only_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = _dashboard_queries(dashboard)
    assert len(queries) >= 20
    assert _unknown(queries, exported_names() | FROM_PROMETHEUS) == []


def test_dashboard_shows_what_an_operator_needs() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    used = set().union(*(metric_names(expr) for _, expr in _dashboard_queries(dashboard)))
    for name in (
        "up", "pontis_dependency_reachable", "pontis_client_connected", "pontis_build_info",
        "pontis_remote_events_total", "pontis_matrix_events_total",
        "pontis_queue_wait_seconds_bucket", "pontis_oldest_pending_seconds",
        "pontis_dead_letters_kept", "pontis_dead_letters_total", "pontis_errors_total",
        "process_cpu_seconds_total", "process_resident_memory_bytes",
    ):  # fmt: skip
        assert name in used, name


def test_dashboard_legends_name_labels_the_metrics_have() -> None:
    """A legend such as ``{{version}} (Python {{python}})`` shows a label of the series the
    panel selects (or Prometheus's own ``instance``/``job``), else Grafana prints it empty."""
    dashboard = json.loads(DASHBOARD.read_text())
    labels = exported_labels()
    assert labels["pontis_build_info"] == {"version", "python"}
    wrong = []
    for panel in _panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            known = {"instance", "job"}.union(
                *(labels.get(name, set()) for name in metric_names(target["expr"]))
            )
            wrong += [
                f"panel {panel['title']!r}: {{{{{label}}}}}"
                for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", ""))
                if label not in known
            ]
    assert wrong == []


def test_dashboard_is_one_grafana_can_import() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    panels = list(_panels(dashboard["panels"]))
    assert len({panel["id"] for panel in panels}) == len(panels)
    variables = {variable["name"] for variable in dashboard["templating"]["list"]}
    assert {"datasource", "job", "instance"} <= variables
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert 'job="$job"' in target["expr"] and 'instance=~"$instance"' in target["expr"]


# --- The dependency gauge the health alerts read ---------------------------------------------------


def test_dependency_gauge_follows_the_probes() -> None:
    metrics = Metrics()
    metrics.show_dependencies({"homeserver": None, "database": True})
    text = generate_latest(metrics.registry).decode()
    assert 'pontis_dependency_reachable{dependency="database"} 1.0' in text
    assert 'dependency="homeserver"' not in text  # not probed yet: no series, no false alert
    metrics.show_dependencies({"homeserver": False, "database": False})
    text = generate_latest(metrics.registry).decode()
    assert 'pontis_dependency_reachable{dependency="homeserver"} 0.0' in text
    assert 'pontis_dependency_reachable{dependency="database"} 0.0' in text


async def test_dependency_gauge_from_the_health_report(store: Store) -> None:
    """What ``HealthMonitor.report()`` returns feeds the gauge as it is (the /metrics handler
    passes it on): a homeserver that refuses connections is 0, the database 1."""
    metrics = Metrics()
    async with aiohttp.ClientSession() as http:
        monitor = HealthMonitor(
            http=http, homeserver_url=f"http://127.0.0.1:{free_port()}", db=store.database,
            log=logging.getLogger("test"),
        )  # fmt: skip
        await monitor.probe_homeserver()
        _, dependencies = await monitor.report()
    metrics.show_dependencies({name: probe["reachable"] for name, probe in dependencies.items()})
    text = generate_latest(metrics.registry).decode()
    assert 'pontis_dependency_reachable{dependency="homeserver"} 0.0' in text
    assert 'pontis_dependency_reachable{dependency="database"} 1.0' in text


def test_every_alert_is_explained_in_the_docs() -> None:
    docs = (Path(__file__).parent.parent / "docs" / "deploy.md").read_text()
    missing = [rule["alert"] for rule in _alert_rules() if f"| `{rule['alert']}` |" not in docs]
    assert missing == []
