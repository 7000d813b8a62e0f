"""agents/cluster/mcs.py: the oldest export decides, conflicts are named,
conditions keep their transition time while they hold."""

from __future__ import annotations

import datetime as dt

from agents.cluster import mcs
from federation.model import EndpointPort, EndpointSet, ServiceRef, SessionAffinity, SourceRef

ECHO = ServiceRef(namespace="demo", name="echo")
NOW = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)


def export(cluster: str, at: float, *ports: tuple[str, int], **more: object) -> EndpointSet:
    return EndpointSet(
        service=ECHO, source=SourceRef.parse(f"cluster:{cluster}"), generation=1, exported_at=at,
        ports=tuple(EndpointPort(name=n, port=p) for n, p in ports), **more,  # type: ignore[arg-type]
    )  # fmt: skip


def test_agreeing_exports_merge_ports_and_have_no_conflict() -> None:
    derived = mcs.derive([export("b", 20, ("http", 80)), export("a", 10, ("http", 80), ("m", 9))])
    assert derived.type == mcs.CLUSTER_SET_IP and derived.winner == "a"
    assert [p.name for p in derived.ports] == ["http", "m"]
    assert derived.clusters == ("a", "b") and derived.conflicts == ()


def test_the_oldest_export_wins_and_every_disagreement_is_named() -> None:
    derived = mcs.derive([
        export("old", 10, ("http", 80)),
        export("new", 20, ("http", 8080), headless=True),
        export("aff", 30, ("http", 80), session_affinity=SessionAffinity.CLIENT_IP),
    ])  # fmt: skip
    assert derived.winner == "old" and derived.type == mcs.CLUSTER_SET_IP
    assert [p.port for p in derived.ports] == [80]
    assert derived.conflicts == (mcs.PORT, mcs.TYPE, mcs.AFFINITY)
    assert derived.disagreeing == ("aff", "new")
    assert "in old" in derived.message()


def test_conditions_for_a_missing_service_and_for_a_conflict() -> None:
    obj = {"metadata": {"name": "echo", "generation": 3}}
    missing = {c["type"]: c for c in mcs.export_conditions(obj, None, None, NOW)}
    assert (missing["Valid"]["status"], missing["Valid"]["reason"]) == ("False", "NoService")
    assert missing["Conflict"]["reason"] == "NoConflicts"
    assert missing["Valid"]["observedGeneration"] == 3
    derived = mcs.derive([export("old", 10, ("http", 80)), export("new", 20, ("http", 81))])
    service = {"spec": {"type": "ClusterIP"}}
    wanted = mcs.export_conditions(obj, service, derived, NOW)
    conflict = next(c for c in wanted if c["type"] == "Conflict")
    assert (conflict["status"], conflict["reason"]) == ("True", "PortConflict")
    later = mcs.export_conditions({**obj, "status": {"conditions": wanted}}, service, derived,
                                  NOW + dt.timedelta(hours=1))  # fmt: skip
    assert later == wanted  # nothing changed: same times, nothing to write
    assert mcs.same_conditions({"status": {"conditions": wanted}}, later)


def test_external_name_is_not_valid() -> None:
    obj = {"metadata": {"name": "echo"}}
    service = {"spec": {"type": "ExternalName"}}
    valid = next(c for c in mcs.export_conditions(obj, service, None, NOW) if c["type"] == "Valid")
    assert valid["reason"] == "InvalidServiceType"
