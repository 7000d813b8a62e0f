"""Two federations on one host at once, as ``make demo`` beside ``make
test``: both ask for the same address blocks, each gets its own, and each
federates its own clusters."""

from __future__ import annotations

from pathlib import Path

from federation.sim.blocks import claim
from federation.sim.kube.resources import ENDPOINT_SLICE
from federation.sim.world import ClusterSpec, World
from tests.support import eventually

NS = "demo"
SPECS = (ClusterSpec("east", "us-east", ("a",)), ClusterSpec("west", "us-west", ("b",)))


def addresses(world: World, cluster: str, service: str) -> set[str]:
    slices = world.sim(cluster).client.list(
        ENDPOINT_SLICE, NS, f"kubernetes.io/service-name={service}"
    )
    return {a for s in slices for e in s.get("endpoints") or [] for a in e["addresses"]}


async def test_two_worlds_asking_for_the_same_blocks_run_side_by_side(tmp_path: Path) -> None:
    async with (
        World(tmp_path / "one", SPECS, first_index=60) as one,
        World(tmp_path / "two", SPECS, first_index=60) as two,
    ):
        blocks = [{m.sim.index for m in w.members.values()} for w in (one, two)]
        assert not blocks[0] & blocks[1], blocks
        for world in (one, two):
            for name in world.members:
                world.sim(name).run_echo(NS, "echo", replicas=1)
                await world.export(name, NS, "echo")
        for world in (one, two):
            for name in world.members:
                await eventually(
                    lambda w=world, n=name: (
                        bool(addresses(w, n, "echo"))  # type: ignore[misc]
                        and addresses(w, n, "echo-global") == addresses(w, n, "echo")
                    ),
                    timeout=20.0,
                    what=f"{name} routed to itself",
                )
        mine = {a for n in one.members for a in addresses(one, n, "echo")}
        theirs = {a for n in two.members for a in addresses(two, n, "echo")}
        assert not mine & theirs
    # Released: the blocks can be claimed again.
    again = claim(60)
    assert again.index == 60
    again.release()
