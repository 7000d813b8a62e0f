"""What a publisher may claim about its endpoints.

Routing trusts an endpoint's locality: it is what decides that a consumer
in zone ``eu-1a`` prefers it.  So a cluster may publish endpoints only in
its own name, region and registered zones, and a VM only its registered
address and locality; anything else would let one member draw another's
traffic.  A contradiction names the field, as the API's 422 does."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from federation.model.members import Cluster, Workload
from federation.model.records import EndpointSet, Locality
from federation.model.validation import Inconsistent


class Contradiction(Inconsistent):
    """A record contradicts what its publisher was registered with."""


def check_claims(endpoint_set: EndpointSet, member: Cluster | Workload) -> None:
    for i, endpoint in enumerate(endpoint_set.endpoints):
        _check_claim(f"endpoints[{i}]", endpoint.address, endpoint.locality, member)


Claim = tuple[int, str, Locality]  # an endpoint's index in its shard, its address, its locality


def check_claimed(claims: Iterable[Claim], member: Cluster | Workload) -> None:
    """``check_claims`` for the endpoints these claims are of: all of a
    shard's, or those a publisher's delta adds (decision 60)."""
    for i, address, locality in claims:
        _check_claim(f"endpoints[{i}]", address, locality, member)


def wire_claims(endpoints: Iterable[dict[str, Any]]) -> Iterator[Claim]:
    """The claims of endpoints in their stored form: each locality is read
    through its memo, so a shard's few distinct localities are decoded once."""
    for i, endpoint in enumerate(endpoints):
        yield i, endpoint["address"], Locality.from_wire(endpoint["locality"])


def _check_claim(where: str, address: str, locality: Locality, member: Cluster | Workload) -> None:
    """One endpoint's address and locality against its publisher's record."""
    if isinstance(member, Workload):
        if address != member.address:
            raise Contradiction(
                f"{where}.address", f"VM {member.name} is registered with address {member.address}"
            )
        wanted = member.locality
        if (locality.region, locality.zone) != (wanted.region, wanted.zone):
            raise Contradiction(
                f"{where}.locality",
                f"VM {member.name} is registered in {wanted.region}/{wanted.zone}",
            )
        return
    if locality.cluster and locality.cluster != member.name:
        raise Contradiction(
            f"{where}.locality.cluster", f"cluster {member.name} may not publish as another"
        )
    if locality.region != member.locality.region:
        raise Contradiction(
            f"{where}.locality.region",
            f"cluster {member.name} is registered in region {member.locality.region}",
        )
    if locality.zone not in member.zones:
        raise Contradiction(
            f"{where}.locality.zone",
            f"cluster {member.name} is registered with zones {', '.join(member.zones)}",
        )
    if locality.network and locality.network != member.locality.network:
        raise Contradiction(
            f"{where}.locality.network",
            f"cluster {member.name} is registered on network {member.locality.network!r}",
        )


__all__ = ["Claim", "Contradiction", "check_claimed", "check_claims", "wire_claims"]
