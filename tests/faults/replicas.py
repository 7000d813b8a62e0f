"""Registry replicas as processes (``fedctl registry serve``) on one etcd
cluster, which a fault test can SIGKILL and start again, and the load the
fault tests put through them: one cluster publishing as fast as it is
answered, watchers on every replica, each recording what it saw."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from agents.client import Credentials, Event, RegistryClient, RegistryError, Relist, Synced
from federation.model import EndpointSet, SourceRef
from federation.shared.clock import Backoff
from federation.sim.etcd_process import free_port
from tests.contract.registry_http.test_smoke import endpoint_set

ENCRYPTION_KEY = "ha-test-encryption-key"


@dataclass
class Replica:
    """One ``fedctl registry serve`` process and its data directory."""

    name: str
    store_url: str
    data_dir: Path
    leader_ttl: int = 3
    heartbeat_ttl: int = 4
    port: int = field(default_factory=free_port)
    process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def config(self) -> Path:
        return self.data_dir / "admin.json"

    async def start(self) -> None:
        key = self.data_dir / "key"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        key.write_text(ENCRYPTION_KEY)
        log = (self.data_dir / "registry.log").open("ab")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "federation.cli", "registry", "serve",
            "--store", self.store_url, "--listen", f"127.0.0.1:{self.port}",
            "--data-dir", str(self.data_dir), "--encryption-key-file", str(key),
            "--replica", self.name, "--leader-ttl", str(self.leader_ttl),
            "--heartbeat-ttl", str(self.heartbeat_ttl), "--bookmark-interval", "1",
            stdout=asyncio.subprocess.PIPE, stderr=log,
        )  # fmt: skip
        log.close()
        assert self.process.stdout is not None
        banner = await asyncio.wait_for(self.process.stdout.readline(), 60)
        if self.url not in banner.decode():
            raise AssertionError(f"{self.name} did not start: {self.log_tail()}")
        # The rest of the banner, so the pipe never fills.
        for _ in range(3):
            await self.process.stdout.readline()

    async def kill(self) -> None:
        """SIGKILL: no resignation, no goodbye to the watch streams."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        self.process = None

    async def stop(self) -> int:
        if self.process is None:
            return 0
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.process.wait(), 30)
        self.process = None
        return code

    def log_tail(self) -> str:
        path = self.data_dir / "registry.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"


def admin_client(replicas: list[Replica], config: Path) -> RegistryClient:
    data = json.loads(config.read_text())
    credentials = Credentials.from_files(Path(data["cert"]), Path(data["key"]), Path(data["ca"]))
    return RegistryClient(
        ",".join(r.url for r in replicas), credentials, retries=10, backoff=Backoff(0.1, 5.0)
    )


@dataclass
class Outcome:
    """One publish: when it was asked, when answered, how."""

    started: float
    ended: float
    revision: int = 0
    generation: int = 0
    status: int | None = None  # None: acknowledged


@dataclass
class Publisher:
    """``east`` publishes a new generation as soon as the last is answered."""

    client: RegistryClient
    source: SourceRef
    outcomes: list[Outcome] = field(default_factory=list)
    generation: int = 0

    @property
    def acked(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status is None]

    async def publish_once(self) -> Outcome:
        self.generation += 1
        started = time.monotonic()
        chosen = endpoint_set(self.source.name, self.generation)
        try:
            answer = await self.client.publish(chosen)
        except RegistryError as err:
            outcome = Outcome(
                started, time.monotonic(), generation=self.generation, status=err.status
            )
        else:
            outcome = Outcome(started, time.monotonic(), int(answer["revision"]), self.generation)
        self.outcomes.append(outcome)
        return outcome

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            outcome = await self.publish_once()
            if outcome.status is not None:
                await asyncio.sleep(0.05)  # the client already backed off; do not spin

    def longest_gap(self, since: float) -> float:
        """The longest time after ``since`` with no publish acknowledged."""
        times = [since] + [o.ended for o in self.acked if o.ended > since]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


@dataclass
class Watcher:
    """``changes()`` through one client; records every EndpointSet event of
    one key, and every relist (a relist is allowed, but counted)."""

    client: RegistryClient
    key: str
    revisions: list[int] = field(default_factory=list)
    relists: int = 0
    start: int = 0

    async def run(self) -> None:
        async with contextlib.aclosing(self.client.changes()) as changes:
            async for change in changes:
                if isinstance(change, Event) and change.kind == "EndpointSet":
                    # After the first snapshot: what the watch delivered.
                    if self.start and change.key == self.key and change.object is not None:
                        self.revisions.append(change.revision)
                elif isinstance(change, Relist):
                    self.relists += 1
                elif isinstance(change, Synced) and not self.start:
                    self.start = change.revision


async def heartbeats(client: RegistryClient, source: SourceRef, stop: asyncio.Event) -> None:
    """An agent's heartbeat, every second, through every fault."""
    while not stop.is_set():
        with contextlib.suppress(RegistryError):
            await client.heartbeat(source)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


def stale_flags(history: list[tuple[int, bytes]]) -> list[bool]:
    return [EndpointSet.from_wire(json.loads(value)).stale for _, value in history]
