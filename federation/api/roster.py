"""Who may call this replica: the registered clusters and VMs.

A certificate proves an identity for 24 hours, but a member removed from the
federation must be refused at once, on every replica.  Each replica keeps the
set of registered members, loaded from the store when its watch hub starts
(and again when the hub resets) and then kept by the hub's own events: the
removal's first write deletes the member record, and every replica's hub
sees that deletion within its usual watch latency.  A name it lacks is
looked up in the store, so a member that has just joined is not refused
while this replica's hub catches up.  A member's open watch
streams check the roster between batches and end with a 401 line.  The
roster is a set of names: 255 clusters and their VMs cost kilobytes."""

from __future__ import annotations

from federation.model import Cluster, Workload, decode, keys
from federation.model.records import SourceKind
from federation.registry import Change, Registry
from federation.trust.identity import Identity, Role

_ROLES = {SourceKind.CLUSTER: Role.CLUSTER, SourceKind.VM: Role.VM}


class Roster:
    def __init__(self) -> None:
        self._members: dict[Identity, Cluster | Workload] = {}

    async def load(self, registry: Registry) -> None:
        members: dict[Identity, Cluster | Workload] = {}
        for role in (Role.CLUSTER, Role.VM):
            members.update((Identity(role, m.name), m) for m in await registry.members(role))
        self._members = members

    def observe(self, change: Change) -> None:
        parsed = keys.parse_member(change.item.key)
        if parsed is None:
            return
        kind, name = parsed
        identity = Identity(_ROLES[kind], name)
        if change.type == "DELETE" or change.item.value is None:
            self._members.pop(identity, None)
        else:
            record: Cluster | Workload
            if kind is SourceKind.CLUSTER:
                record = decode(Cluster, change.item.value)
            else:
                record = decode(Workload, change.item.value)
            self._members[identity] = record

    async def lookup(self, registry: Registry, identity: Identity) -> Cluster | Workload | None:
        """What ``identity`` was registered with, or None if it is not.  A
        name the roster lacks is read from the store: a member that joined
        a moment ago (the hub has not seen it yet, or it joined through
        another replica) is admitted, and kept; a removed one stays out."""
        record = self._members.get(identity)
        if record is None:
            record = await registry.member(identity)
            if record is not None:
                self._members[identity] = record
        return record

    def revoke(self, identity: Identity) -> None:
        """At once, on the replica that removes it (others follow the event)."""
        self._members.pop(identity, None)

    def admits(self, identity: Identity) -> bool:
        """Admins always; a cluster or VM while the roster holds it (for open
        streams, whose caller ``lookup`` admitted at their start)."""
        return identity.role not in (Role.CLUSTER, Role.VM) or identity in self._members

    def refusal(self, identity: Identity) -> str:
        return (
            f"{identity} was removed from the federation (or is not registered); "
            "its credential is revoked"
        )


__all__ = ["Roster"]
