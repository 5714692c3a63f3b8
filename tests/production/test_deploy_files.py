"""The shipped deployment files: cluster.conf is a configuration nats-server accepts (with the TLS files
and environment it names), and the Grafana dashboard queries metrics that exist."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Final

from ctxmeter.natsserver import nats_server_binary
from functions.metrics import FunctionsMetrics
from tests.production.pki import Pki
from tests.production.servers import AUTH_CONF, CLUSTER_CONF, PERMISSIONS_CONF, PROJECT
from ws_edge.metrics import EdgeMetrics

DASHBOARD: Final = PROJECT / "deploy" / "grafana" / "ctxmeter.json"
METRIC: Final = re.compile(r"\bctxmeter_(?:edge|functions)_[a-z_]+\b")


def test_cluster_conf_is_accepted_by_nats_server(tmp_path: Path, pki: Pki) -> None:
    for path in (CLUSTER_CONF, AUTH_CONF, PERMISSIONS_CONF):
        shutil.copy(path, tmp_path / path.name)
    tls = tmp_path / "tls"
    tls.mkdir()
    for name, source in {
        "server.pem": pki.server.cert,
        "server-key.pem": pki.server.key,
        "ca.pem": pki.ca,
        "route.pem": pki.server.cert,
        "route-key.pem": pki.server.key,
        "route-ca.pem": pki.ca,
    }.items():
        shutil.copy(source, tls / name)
    config = tmp_path / CLUSTER_CONF.name
    text = config.read_text()
    assert "/etc/nats/tls/" in text and "/var/lib/nats/jetstream" in text
    config.write_text(text.replace("/etc/nats/tls/", f"{tls}/").replace("/var/lib/nats/jetstream", str(tmp_path)))
    env = {"CTXMETER_NATS_NODE": "nats-1"}
    env |= {f"CTXMETER_{user}_PASSWORD": "x" for user in ("FUNCTIONS", "SERVICE", "EDGE", "AGENT", "WATCHER")}
    checked = subprocess.run(
        [nats_server_binary(), "-t", "-c", str(config)], capture_output=True, text=True, env=env, timeout=30
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def sample_names() -> set[str]:
    """Every series name the edge and the functions export (counters with _total, histograms' parts)."""
    names: set[str] = set()
    for registry in (EdgeMetrics().registry, FunctionsMetrics().registry):
        for family in registry.collect():
            names.add(family.name)
            if family.type == "counter":
                names.add(f"{family.name}_total")
            if family.type == "histogram":
                names |= {f"{family.name}_{part}" for part in ("bucket", "count", "sum")}
    return names


def expressions(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        return found + [expr for value in node.values() for expr in expressions(value)]
    if isinstance(node, list):
        return [expr for value in node for expr in expressions(value)]
    return []


def test_the_dashboard_queries_metrics_that_exist() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = expressions(dashboard)
    assert exprs
    used = {name for expr in exprs for name in METRIC.findall(expr)}
    assert used <= sample_names(), used - sample_names()
    # The signals docs/deploy.md tells operators to alert on are on it.
    for name in (
        "ctxmeter_functions_conflicts_total",
        "ctxmeter_edge_slow_sockets_closed_total",
        "ctxmeter_edge_nats_reconnects_total",
        "ctxmeter_functions_nats_reconnects_total",
        "ctxmeter_functions_store_bytes",
        "ctxmeter_functions_store_max_bytes",
    ):
        assert name in used
    # Every panel has an id and a title, and ids are unique (Grafana imports it as is).
    panels = [panel for panel in dashboard["panels"] if panel.get("type") != "row"]
    assert all(panel.get("title") for panel in panels)
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
