"""The etcd store as production runs it: over TLS with a client
certificate, and on a three-member cluster whose leader dies."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from federation.sim.etcd_process import EtcdCluster, EtcdProcess
from federation.store import Store, StoreError, Unavailable, open_store
from tests.tls import etcd_tls_files


@pytest.fixture(scope="module")
def tls_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdProcess]:
    files = etcd_tls_files(tmp_path_factory.mktemp("etcd-tls"))
    with EtcdProcess(tls=files) as server:
        yield server


async def test_the_store_reaches_etcd_over_tls_with_a_client_certificate(
    tls_etcd: EtcdProcess,
) -> None:
    store = await open_store(tls_etcd.url)
    try:
        revision = await store.put("/tls/a", b"1")
        got = await store.get("/tls/a")
        assert got.kv is not None and got.kv.value == b"1" and got.revision >= revision
        events = store.watch("/tls/", revision)
        first = await anext(events)
        assert first.key == "/tls/a"
        await events.aclose()  # type: ignore[attr-defined]
    finally:
        await store.close()


async def test_without_the_client_certificate_etcd_refuses_with_a_clear_error(
    tls_etcd: EtcdProcess,
) -> None:
    assert tls_etcd.tls is not None
    url = "etcd://{}:{}?cacert={}".format(*tls_etcd.endpoint, tls_etcd.tls.ca)
    with pytest.raises(StoreError):
        store = await open_store(url.replace("?cacert=", "?timeout=1&cacert="))
        await store.close()


@pytest.fixture(scope="module")
def cluster() -> Iterator[EtcdCluster]:
    with EtcdCluster(3) as made:
        yield made


async def _put_until_it_succeeds(store: Store, key: str, budget: float) -> float:
    started = time.monotonic()
    while True:
        try:
            await store.put(key, b"after")
            return time.monotonic() - started
        except Unavailable:
            if time.monotonic() - started > budget:
                raise


async def test_a_leader_kill_stalls_writes_about_an_election_not_a_fixed_timeout(
    cluster: EtcdCluster, tmp_path: Path
) -> None:
    store = await open_store(cluster.url)
    try:
        await store.put("/members/before", b"1")
        leader = cluster.leader()
        leader.kill()
        stalled = await _put_until_it_succeeds(store, "/members/after", budget=15)
        got = await store.get("/members/before")
        assert got.kv is not None  # nothing acknowledged was lost
        assert stalled < 3.5, f"a write waited {stalled:.1f}s after the leader died"
    finally:
        await store.close()
        if not leader.running:
            leader.start()
