"""Records validate themselves, round-trip through JSON, and name bad fields."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from federation.model import (
    MAX_ENDPOINTS_PER_SET,
    Cluster,
    Endpoint,
    EndpointPort,
    EndpointSet,
    FailoverTarget,
    Locality,
    NetworkMode,
    Protocol,
    ServiceRef,
    SourceKind,
    SourceRef,
    TrafficPolicy,
    ValidationError,
    Workload,
    decode,
    encode,
)
from federation.model.validation import check_ip

# -- strategies -------------------------------------------------------------------

dns_labels = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?\Z")
service_names = st.from_regex(r"\A[a-z]([-a-z0-9]{0,20}[a-z0-9])?\Z")
label_values = st.from_regex(r"\A([A-Za-z0-9]([-A-Za-z0-9_.]{0,10}[A-Za-z0-9])?)?\Z")
addresses = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(str)

localities = st.builds(
    Locality, region=label_values, zone=label_values, cluster=dns_labels, network=label_values
)
ports = st.builds(
    EndpointPort,
    name=dns_labels,
    port=st.integers(1, 65535),
    protocol=st.sampled_from(Protocol),
)
endpoints = st.builds(
    Endpoint,
    address=addresses,
    ports=st.lists(ports, max_size=3, unique_by=lambda p: p.name).map(tuple),
    locality=localities,
    ready=st.booleans(),
    serving=st.booleans(),
    terminating=st.booleans(),
    weight=st.integers(0, 1000),
)
services = st.builds(ServiceRef, namespace=dns_labels, name=service_names)
sources = st.builds(SourceRef, kind=st.sampled_from(SourceKind), name=dns_labels)
endpoint_sets = st.builds(
    EndpointSet,
    service=services,
    source=sources,
    generation=st.integers(0, 2**63 - 1),
    endpoints=st.lists(endpoints, max_size=5).map(tuple),
    stale=st.booleans(),
    changed_at=st.floats(0, 1e10, allow_nan=False),
)
labels = st.dictionaries(dns_labels, label_values, max_size=4)
clusters = st.builds(
    Cluster,
    name=dns_labels,
    locality=localities,
    network_mode=st.sampled_from(NetworkMode),
    labels=labels,
)
workloads = st.builds(
    Workload,
    name=dns_labels,
    namespace=dns_labels,
    service_account=dns_labels,
    address=addresses,
    locality=localities,
    ports=st.lists(ports, max_size=3).map(tuple),
    labels=labels,
)
policies = st.builds(
    TrafficPolicy,
    service=services,
    failover=st.lists(
        st.builds(FailoverTarget, region=st.just("r1"), cluster=dns_labels), max_size=3
    ).map(tuple),
    min_healthy=st.integers(0, 10),
    failback_hold_down_seconds=st.floats(0, 3600, allow_nan=False),
    weights=st.dictionaries(sources.map(str), st.integers(0, 100), max_size=3),
)


# -- round trips ------------------------------------------------------------------


@given(st.one_of(endpoint_sets, clusters, workloads, policies))
def test_every_record_round_trips_through_json(record: Any) -> None:
    assert decode(type(record), encode(record)) == record


@given(endpoint_sets)
def test_encoding_is_canonical(record: EndpointSet) -> None:
    again = decode(EndpointSet, encode(record))
    assert encode(again) == encode(record)


# -- rejection --------------------------------------------------------------------


def _valid_set() -> dict[str, Any]:
    return {
        "service": {"namespace": "shop", "name": "cart"},
        "source": "cluster:east-1",
        "generation": 3,
        "endpoints": [
            {
                "address": "10.0.0.1",
                "ports": [{"name": "http", "port": 8080}],
                "locality": {"region": "eu", "zone": "eu-1a"},
            }
        ],
    }


def test_a_valid_wire_set_parses_with_defaults() -> None:
    parsed = EndpointSet.from_wire(_valid_set())
    assert parsed.source == SourceRef(kind=SourceKind.CLUSTER, name="east-1")
    assert parsed.endpoints[0].ready and not parsed.endpoints[0].terminating
    assert parsed.endpoints[0].ports[0].protocol is Protocol.TCP


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda d: d["service"].update(name="Cart"), "service.name"),
        (lambda d: d["service"].update(namespace="a" * 64), "service.namespace"),
        (lambda d: d.update(source="galaxy:east"), "source.kind"),
        (lambda d: d.update(source="east"), "source"),
        (lambda d: d.update(generation=-1), "generation"),
        (lambda d: d.update(generation="3"), "generation"),
        (lambda d: d.update(generation=True), "generation"),
        (lambda d: d["endpoints"][0].update(address="10.0.0.300"), "endpoints[0].address"),
        (lambda d: d["endpoints"][0]["ports"][0].update(port=0), "endpoints[0].ports[0].port"),
        (lambda d: d["endpoints"][0]["ports"][0].update(port=65536), "endpoints[0].ports[0].port"),
        (lambda d: d["endpoints"][0]["ports"][0].update(name="HTTP"), "endpoints[0].ports[0].name"),
        (
            lambda d: d["endpoints"][0]["ports"][0].update(protocol="ICMP"),
            "endpoints[0].ports[0].protocol",
        ),
        (lambda d: d["endpoints"][0].update(ready="yes"), "endpoints[0].ready"),
        (lambda d: d["endpoints"][0]["locality"].pop("region"), "endpoints[0].locality.region"),
        (
            lambda d: d["endpoints"][0]["locality"].update(zone="eu 1a"),
            "endpoints[0].locality.zone",
        ),
        (lambda d: d["endpoints"][0].update(colour="blue"), "endpoints[0].colour"),
        (lambda d: d.update(endpoints="many"), "endpoints"),
        (lambda d: d.update(endpoints=[7]), "endpoints[0]"),
        (lambda d: d.pop("service"), "service"),
        (
            lambda d: d.update(endpoints=d["endpoints"] * (MAX_ENDPOINTS_PER_SET + 1)),
            "endpoints",
        ),
    ],
)
def test_invalid_wire_input_names_the_field(mutate: Any, path: str) -> None:
    data = _valid_set()
    mutate(data)
    with pytest.raises(ValidationError) as caught:
        EndpointSet.from_wire(data)
    assert caught.value.path == path
    assert str(caught.value).startswith(path)


def test_malformed_json_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="malformed JSON"):
        decode(EndpointSet, b"{not json")


def test_duplicate_port_names_are_refused() -> None:
    port = EndpointPort(name="http", port=80)
    with pytest.raises(ValidationError, match="unique"):
        Endpoint(address="10.0.0.1", ports=(port, port), locality=Locality(region="r", zone="z"))


def test_ipv6_addresses_are_canonicalised() -> None:
    ep = Endpoint(address="FD00:0::1", ports=(), locality=Locality(region="r", zone="z"))
    assert ep.address == "fd00::1"


def test_policy_weights_name_real_sources() -> None:
    service = ServiceRef(namespace="shop", name="cart")
    with pytest.raises(ValidationError) as caught:
        TrafficPolicy(service=service, weights={"somewhere": 5})
    assert caught.value.path.startswith("weights")


def test_failover_target_must_name_something() -> None:
    with pytest.raises(ValidationError):
        FailoverTarget()


# A value that is not valid for its field, by kind of field.
_bad_names = st.one_of(
    st.text(min_size=64, max_size=70, alphabet="abc"),
    st.from_regex(r"\A[a-z]*[A-Z_ .!/][a-z]*\Z"),
    st.just(""),
    st.just("-leading"),
    st.integers(),
)


@given(_bad_names)
def test_bad_cluster_names_are_always_rejected(name: object) -> None:
    wire = {"name": name, "locality": {"region": "r", "zone": "z"}}
    with pytest.raises(ValidationError) as caught:
        Cluster.from_wire(wire)
    assert caught.value.path == "name"


@given(st.text(max_size=40).filter(lambda s: not _is_ip(s)))
def test_non_addresses_are_always_rejected(address: str) -> None:
    wire = {
        "name": "vm-1",
        "namespace": "shop",
        "serviceAccount": "cart",
        "address": address,
        "locality": {"region": "r", "zone": "z"},
    }
    with pytest.raises(ValidationError) as caught:
        Workload.from_wire(wire)
    assert caught.value.path == "address"


quads = st.lists(
    st.one_of(st.integers(0, 300).map(str), st.sampled_from(["00", "01", "-1", "", " 1", "1 "])),
    min_size=3,
    max_size=5,
).map(".".join)


@given(st.one_of(quads, st.text(alphabet="0123456789.:abcdef", max_size=20)))
def test_addresses_are_canonical_exactly_as_ipaddress_says(text: str) -> None:
    import ipaddress

    try:
        expected: str | None = str(ipaddress.ip_address(text))
    except ValueError:
        expected = None
    try:
        got: str | None = check_ip("address", text)
    except ValidationError:
        got = None
    assert got == expected


@given(st.integers().filter(lambda p: not 1 <= p <= 65535))
def test_out_of_range_ports_are_always_rejected(port: int) -> None:
    data = _valid_set()
    data["endpoints"][0]["ports"][0]["port"] = port
    with pytest.raises(ValidationError):
        EndpointSet.from_wire(json.loads(json.dumps(data)))


def _is_ip(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("bad", [80.5, True, "80"])
def test_a_remembered_port_never_accepts_what_validation_refuses(bad: object) -> None:
    """Ports and localities are remembered by their exact fields and types."""
    assert EndpointPort.from_wire({"name": "http", "port": 80}).port == 80
    assert EndpointPort.from_wire({"name": "http", "port": 80.0}).port == 80  # JSON's integer
    with pytest.raises(ValidationError):
        EndpointPort.from_wire({"name": "http", "port": bad})
    same = {"region": "eu", "zone": "a"}
    assert Locality.from_wire(same) is Locality.from_wire(dict(same))
    assert Locality.from_wire(same) == Locality.from_wire({"zone": "a", "region": "eu"})
    with pytest.raises(ValidationError):
        Locality.from_wire({"region": "eu", "zone": "a b"})
