"""``fedctl agent vm`` restarted while the registry is down, as processes:
it starts from the record and view it kept in its state dir, forwards at
once, moves traffic off a dead backend, and converges (alive, in sync)
once the registry is back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from agents.view import keep_alive
from federation.model import (
    Endpoint,
    EndpointPort,
    EndpointSet,
    Locality,
    ServiceRef,
    SourceRef,
    Workload,
)
from federation.shared.clock import SystemClock
from federation.sim import echo
from federation.sim.etcd_process import free_port
from tests.faults.replicas import Replica, admin_client
from tests.integration.test_agent_outage_process import answers
from tests.support import eventually

ECHO = ServiceRef(namespace="demo", name="echo")
EAST = SourceRef.parse("cluster:east")


@contextlib.asynccontextmanager
async def vm_process(
    registry: str, state: Path, port: int, forward: int, token: str | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    join = ["--join-token", token] if token else []
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "federation.cli", "agent", "vm", "--registry", registry, *join,
        "--state-dir", str(state), "--listen", f"127.0.0.1:{port}", "--probe", "none",
        "--forward", f"{ECHO}=127.0.0.1:{forward}",
        stdout=asyncio.subprocess.DEVNULL, stderr=(state.parent / "vm.log").open("ab"),
    )  # fmt: skip
    try:
        yield child
    finally:
        if child.returncode is None:
            child.send_signal(signal.SIGTERM)
            await asyncio.wait_for(child.wait(), 20)


async def served_by(port: int) -> str | None:
    try:
        status, body = await echo.request("127.0.0.1", port)
    except (OSError, TimeoutError):
        return None
    return str(json.loads(body)["pod"]) if status == 200 else None


async def test_a_vm_agent_started_in_an_outage_forwards_and_converges(tmp_path: Path) -> None:
    registry = Replica("solo", f"sqlite:///{tmp_path / 'registry' / 'registry.db'}",
                       tmp_path / "registry", heartbeat_ttl=15)  # fmt: skip
    await registry.start()
    admin = admin_client([registry], registry.config)
    backends = [echo.EchoServer("127.0.0.1", 0, pod=f"echo-{i}", cluster="east") for i in (0, 1)]
    for backend in backends:
        await backend.start()
    beating: asyncio.Task[None] | None = None
    east = None
    ports = {"agent": free_port(), "forward": free_port()}
    try:
        east_token = (
            await admin.request(
                "POST",
                "/v1/clusters",
                {"record": {"name": "east", "locality": {"region": "r", "zone": "a"}}},
            )
        )["token"]
        vm = Workload(name="vm1", namespace="demo", service_account="app", address="127.0.9.7",
                      locality=Locality(region="r", zone="vm"))  # fmt: skip
        vm_token = (await admin.request("POST", "/v1/vms", {"record": vm.to_wire()}))["token"]
        credentials, _ = await type(admin).join(registry.url, east_token)
        east = type(admin)(registry.url, credentials)
        beating = asyncio.create_task(keep_alive(east, EAST, SystemClock()))
        here = Locality(region="r", zone="a", cluster="east")
        await east.publish(EndpointSet(
            service=ECHO, source=EAST, generation=1, ports=(EndpointPort(name="http", port=80),),
            endpoints=tuple(Endpoint(address="127.0.0.1", locality=here,
                                     ports=(EndpointPort(name="http", port=b.port),))
                            for b in backends),
        ))  # fmt: skip
        state = tmp_path / "vm"
        async with vm_process(registry.url, state, ports["agent"], ports["forward"],
                              vm_token) as first:  # fmt: skip
            await eventually(lambda: served_by(ports["forward"]), timeout=30.0,
                             what="the VM forwarding echo")  # fmt: skip
            await eventually(lambda: (state / "view.json").exists(), what="the view saved")
            await registry.stop()  # the outage begins
            first.kill()  # and the VM agent dies in it
            await first.wait()
        async with vm_process(registry.url, state, ports["agent"], ports["forward"]) as again:
            await eventually(lambda: answers(ports["agent"]), timeout=30.0, what="VM agent up")
            assert await served_by(ports["forward"]) in {"echo-0", "echo-1"}
            await backends[0].stop()  # a backend dies: its connections move to the other
            for _ in range(20):
                assert await served_by(ports["forward"]) == "echo-1"
            await registry.start()  # the outage ends

            async def converged() -> bool:
                status = await admin.request("GET", "/v1/status")
                row = next(m for m in status["members"] if m["name"] == "vm1")
                return bool(row["alive"]) and row["changesBehind"] == 0

            await eventually(converged, timeout=40.0, what="the VM alive and in sync")
            assert again.returncode is None
        assert again.returncode == 0, (tmp_path / "vm.log").read_text()[-2000:]
    finally:
        if beating is not None:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating
        for backend in backends:
            await backend.stop()
        if east is not None:
            await east.close()
        await admin.close()
        await registry.stop()
