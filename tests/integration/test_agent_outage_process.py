"""``fedctl agent cluster`` restarted while the registry is down, as
processes: it starts from the cluster record it kept and the view saved on
its ServiceImports, still fails over locally, and converges once the
registry is back."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from agents.cluster.importer import sets_from_import
from agents.cluster.kube import MCS_GROUP as MCS
from agents.cluster.kube import SERVICE_EXPORTS, Kube, KubeError
from federation.sim.cluster import SimCluster
from federation.sim.etcd_process import free_port
from federation.sim.kube.resources import ENDPOINT_SLICE
from tests.faults.replicas import Replica, admin_client
from tests.support import eventually

NS = "demo"


@contextlib.asynccontextmanager
async def agent_process(
    kubeconfig: Path, registry: str, state: Path, port: int, token: str | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    credential = ["--join-token", token] if token else ["--cert-dir", str(state / "certs")]
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "federation.cli", "agent", "cluster",
        "--kubeconfig", str(kubeconfig), "--registry", registry, *credential,
        "--state-dir", str(state), "--listen", f"127.0.0.1:{port}",
        stdout=asyncio.subprocess.DEVNULL, stderr=(state.parent / f"{state.name}.log").open("ab"),
    )  # fmt: skip
    try:
        yield child
    finally:
        if child.returncode is None:
            child.send_signal(signal.SIGTERM)
            await asyncio.wait_for(child.wait(), 20)


async def answers(port: int, path: str = "/healthz") -> bool:
    try:
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}{path}") as r:
            return r.status == 200
    except aiohttp.ClientError:
        return False


def global_addresses(sim: SimCluster) -> set[str]:
    slices = sim.client.list(ENDPOINT_SLICE, NS, "kubernetes.io/service-name=echo-global")
    return {a for s in slices for e in s.get("endpoints") or [] for a in e["addresses"]}


def pod_ips(sim: SimCluster) -> set[str]:
    slices = sim.client.list(ENDPOINT_SLICE, NS, "kubernetes.io/service-name=echo")
    return {a for s in slices for e in s.get("endpoints") or [] for a in e["addresses"]}


async def export(kubeconfig: Path) -> None:
    kube = await Kube.from_kubeconfig(kubeconfig)
    try:

        async def created() -> bool:
            try:  # once the agent has installed the MCS CRDs
                await kube.create(SERVICE_EXPORTS, NS, {"metadata": {"name": "echo"}})
            except KubeError as err:
                assert err.status in (404, 409), err
                return err.status == 409
            return True

        await eventually(created, timeout=30.0, what="the ServiceExport created")
    finally:
        await kube.close()


async def test_an_agent_restarted_while_the_registry_is_down_starts_and_converges(
    tmp_path: Path,
) -> None:
    registry = Replica("solo", f"sqlite:///{tmp_path / 'registry' / 'registry.db'}",
                       tmp_path / "registry", heartbeat_ttl=15)  # fmt: skip
    await registry.start()
    admin = admin_client([registry], registry.config)
    ports = {"east": free_port(), "west": free_port()}
    try:
        tokens = {}
        for name, zone in (("east", "a"), ("west", "b")):
            record = {"name": name, "locality": {"region": f"r-{name}", "zone": zone}}
            tokens[name] = (await admin.request("POST", "/v1/clusters", {"record": record}))[
                "token"
            ]
        async with (
            SimCluster("east", index=47, region="r-east", zones=("a",)) as east,
            SimCluster("west", index=48, region="r-west", zones=("b",)) as west,
        ):
            configs = {}
            for sim in (east, west):
                sim.run_echo(NS, "echo", replicas=2)
                configs[sim.name] = sim.write_kubeconfig(tmp_path / f"{sim.name}.kubeconfig")
            async with (
                agent_process(configs["east"], registry.url, tmp_path / "east", ports["east"],
                              tokens["east"]) as first_east,
                agent_process(configs["west"], registry.url, tmp_path / "west", ports["west"],
                              tokens["west"]),
            ):  # fmt: skip
                for sim in (east, west):
                    await export(configs[sim.name])
                both = pod_ips(east) | pod_ips(west)

                def saved_view_complete() -> bool:  # what the restarted agent starts from
                    kind = east.api.types.find(MCS, "v1alpha1", "serviceimports")
                    saved = east.client.get(kind, NS, "echo")
                    sets = sets_from_import(saved) if saved else []
                    return {str(s.source) for s in sets if s.endpoints} == {
                        "cluster:east", "cluster:west"
                    } and global_addresses(east) == pod_ips(east)  # fmt: skip

                await eventually(saved_view_complete, timeout=30.0, what="east importing west")
                await registry.stop()  # the outage begins
                first_east.kill()  # and east's agent dies in it
                await first_east.wait()
                async with agent_process(
                    configs["east"], registry.url, tmp_path / "east", ports["east"]
                ) as again:
                    await eventually(
                        lambda: answers(ports["east"]), timeout=30.0, what="the agent up again"
                    )
                    for i in range(2):
                        await east.kill_backend(NS, f"echo-{i}")
                    await eventually(
                        lambda: global_addresses(east) == pod_ips(west),
                        timeout=30.0,
                        what="east failing over to west with the registry down",
                    )
                    assert again.returncode is None
                    await registry.start()  # the outage ends
                    for i in range(2):
                        await east.revive_backend(NS, f"echo-{i}")

                    async def converged() -> bool:
                        _, events = await admin.collect_snapshot()
                        sources = {
                            e.object["source"]
                            for e in events
                            if e.kind == "EndpointSet" and e.object and e.object["endpoints"]
                        }
                        ready = await answers(ports["east"], "/readyz")
                        return ready and sources == {"cluster:east", "cluster:west"}

                    await eventually(converged, timeout=40.0, what="east converged again")
                    await eventually(
                        lambda: global_addresses(east) == pod_ips(east),
                        timeout=30.0,
                        what="east back on its own pods",
                    )
                assert again.returncode == 0, (tmp_path / "east.log").read_text()[-2000:]
                assert both
    finally:
        await admin.close()
        await registry.stop()
