"""deploy/grafana/federation.json queries only metrics that exist: a running
registry and a running cluster agent are scraped, and every metric a panel
names must be exported by one of them; no ``_created`` series; the
monitors select what the Services and pods are labelled."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from federation.sim.world import World
from tests.integration.test_cluster_agent import NS, echo_world, routed_to

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SUFFIXES = ("_bucket", "_count", "_sum", "_total")


def queried() -> set[str]:
    dashboard = json.loads((DEPLOY / "grafana/federation.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(exprs) >= 10
    return {base(n) for n in re.findall(r"\bfederation_[a-z_]+", " ".join(exprs))}


def base(name: str) -> str:
    for suffix in SUFFIXES:
        name = name.removesuffix(suffix)
    return name


def families(text: str) -> set[str]:
    return {base(n) for n in re.findall(r"^# TYPE (\S+) ", text, re.MULTILINE)}


async def scrape_agent(world: World, name: str) -> str:
    agent = world.members[name].agent
    assert agent is not None
    runner = web.AppRunner(agent.health_app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession() as http, http.get(f"http://{host}:{port}/metrics") as r:
            return await r.text()
    finally:
        await runner.cleanup()


async def test_every_metric_the_dashboard_queries_is_exported(tmp_path: Path) -> None:
    async with echo_world(tmp_path) as world:
        for name in world.members:
            await routed_to(world, name, name)
        admin = world.admin()
        await admin.request("GET", "/v1/status")  # a request, so the duration histogram has one
        async with admin.get_raw("/metrics") as answer:
            registry_text = await answer.text()
        agent_text = await scrape_agent(world, "east1")
    exported = families(registry_text) | families(agent_text)
    missing = sorted(queried() - exported)
    assert not missing, f"queried by the dashboard, exported by nobody: {missing}"
    for text in (registry_text, agent_text):
        assert "_created" not in text
    assert f'federation_agent_route_priority{{namespace="{NS}",service="echo"}} 0.0' in agent_text
    assert "federation_agent_registry_connected 1.0" in agent_text


def objects(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_the_monitors_select_what_is_labelled() -> None:
    monitors = {d["kind"]: d for d in objects(DEPLOY / "monitoring/monitors.yaml")}
    agent = objects(DEPLOY / "cluster/base/agent.yaml")
    registry = objects(DEPLOY / "registry/base/registry.yaml")
    pods = next(d for d in agent if d["kind"] == "Deployment")["spec"]["template"]["metadata"]
    wanted = monitors["PodMonitor"]["spec"]["selector"]["matchLabels"]
    assert wanted.items() <= pods["labels"].items()
    ports = {p["name"] for c in next(d for d in agent if d["kind"] == "Deployment")["spec"][
        "template"]["spec"]["containers"] for p in c.get("ports", [])}  # fmt: skip
    assert monitors["PodMonitor"]["spec"]["podMetricsEndpoints"][0]["port"] in ports
    services = [d for d in registry if d["kind"] == "Service"]
    wanted = monitors["ServiceMonitor"]["spec"]["selector"]["matchLabels"]
    (metrics,) = [s for s in services if wanted.items() <= s["metadata"]["labels"].items()]
    port = monitors["ServiceMonitor"]["spec"]["endpoints"][0]["port"]
    assert port in {p["name"] for p in metrics["spec"]["ports"]}
