"""Who may call this replica: the registered clusters and VMs.

A certificate proves an identity for 24 hours, but a member removed from the
federation must be refused at once, on every replica.  Each replica keeps the
set of registered members, loaded from the store when its watch hub starts
(and again when the hub resets) and then kept by the hub's own events: the
removal's first write deletes the member record, and every replica's hub
sees that deletion within its usual watch latency.  A member's open watch
streams check the roster between batches and end with a 401 line.  The
roster is a set of names: 255 clusters and their VMs cost kilobytes."""

from __future__ import annotations

from federation.model import keys
from federation.model.records import SourceKind
from federation.registry import Change, Registry
from federation.trust.identity import Identity, Role

_ROLES = {SourceKind.CLUSTER: Role.CLUSTER, SourceKind.VM: Role.VM}


class Roster:
    def __init__(self) -> None:
        self._members: set[Identity] = set()

    async def load(self, registry: Registry) -> None:
        members: set[Identity] = set()
        for role in (Role.CLUSTER, Role.VM):
            members.update(Identity(role, m.name) for m in await registry.members(role))
        self._members = members

    def observe(self, change: Change) -> None:
        parsed = keys.parse_member(change.item.key)
        if parsed is None:
            return
        identity = Identity(_ROLES[parsed[0]], parsed[1])
        if change.type == "DELETE":
            self._members.discard(identity)
        else:
            self._members.add(identity)

    def revoke(self, identity: Identity) -> None:
        """At once, on the replica that removes it (others follow the event)."""
        self._members.discard(identity)

    def admits(self, identity: Identity) -> bool:
        """Admins always; a cluster or VM while it is registered."""
        return identity.role not in (Role.CLUSTER, Role.VM) or identity in self._members

    def refusal(self, identity: Identity) -> str:
        return (
            f"{identity} was removed from the federation (or is not registered); "
            "its credential is revoked"
        )


__all__ = ["Roster"]
