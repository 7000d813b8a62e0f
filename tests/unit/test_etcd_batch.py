"""Group commit of etcd transactions (decision 57), against a fake etcd
that applies nested transactions as etcd does: what is asked meanwhile goes
in one batch, conflicting transactions in order in later ones, and a batch
refused as a whole is sent again one by one."""

from __future__ import annotations

import asyncio
from typing import Any

import aetcd.rpc as rpc
import pytest

from federation.store.base import StoreError, Unavailable
from federation.store.etcd_batch import Batcher


def txn(key: bytes, *, guard: bytes | None = None) -> Any:
    compare = []
    if guard is not None:
        compare = [
            rpc.Compare(key=guard, result=rpc.Compare.EQUAL, target=rpc.Compare.MOD, mod_revision=0)
        ]
    put = rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=b"v"))
    return rpc.TxnRequest(compare=compare, success=[put], failure=[])


class FakeEtcd:
    """Applies a transaction (nested ones each on their own) at one new
    revision; refuses a batch naming ``poison`` as a whole; can be gated."""

    def __init__(self) -> None:
        self.revision = 1
        self.mods: dict[bytes, int] = {}
        self.calls: list[int] = []  # nested transactions per call (0: a plain one)
        self.poison: bytes | None = None
        self.down = False
        self.gate: asyncio.Event | None = None
        self.called = asyncio.Event()

    async def send(self, request: Any) -> Any:
        nested = [op.request_txn for op in request.success if op.HasField("request_txn")]
        self.calls.append(len(nested))
        self.called.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise Unavailable("etcd unreachable")
        parts = nested or [request]
        if self.poison is not None and any(self._writes(p) == {self.poison} for p in parts):
            raise StoreError("etcd error: refused")
        self.revision += 1
        answers = [self._apply(p) for p in parts]
        header = rpc.ResponseHeader(revision=self.revision)
        if not nested:
            return rpc.TxnResponse(header=header, succeeded=answers[0])
        responses = [rpc.ResponseOp(response_txn=rpc.TxnResponse(succeeded=a)) for a in answers]
        return rpc.TxnResponse(header=header, succeeded=True, responses=responses)

    def _writes(self, request: Any) -> set[bytes]:
        return {op.request_put.key for op in request.success}

    def _apply(self, request: Any) -> bool:
        if any(self.mods.get(c.key, 0) != c.mod_revision for c in request.compare):
            return False
        for key in self._writes(request):
            self.mods[key] = self.revision
        return True


async def ask(batcher: Batcher, key: bytes, guard: bytes | None = None) -> tuple[bool, int]:
    return await batcher.txn(
        txn(key, guard=guard),
        writes=frozenset({key}),
        reads=frozenset() if guard is None else frozenset({guard}),
        size=len(key) + 1,
    )


async def test_one_transaction_goes_alone_and_those_asked_meanwhile_together() -> None:
    etcd = FakeEtcd()
    batcher = Batcher(etcd.send)
    assert await ask(batcher, b"a") == (True, 2)
    assert etcd.calls == [0]
    answers = await asyncio.gather(*(ask(batcher, b"k%d" % i) for i in range(5)))
    assert etcd.calls == [0, 5]
    assert answers == [(True, 3)] * 5  # one revision for the batch
    await batcher.close()


async def test_conflicting_transactions_go_in_order_in_later_batches() -> None:
    etcd = FakeEtcd()
    batcher = Batcher(etcd.send)
    answers = await asyncio.gather(
        ask(batcher, b"x", guard=b"x"),  # create x
        ask(batcher, b"y"),
        ask(batcher, b"x", guard=b"x"),  # create x again: must see the first
        ask(batcher, b"z", guard=b"y"),  # compares what an earlier one writes
    )
    assert etcd.calls == [2, 2]
    assert [a[0] for a in answers] == [True, True, False, False]
    assert answers[0][1] == answers[1][1] < answers[2][1] == answers[3][1]
    await batcher.close()


async def test_a_batch_refused_as_a_whole_is_sent_one_by_one() -> None:
    etcd = FakeEtcd()
    etcd.poison = b"bad"
    batcher = Batcher(etcd.send)
    answers = await asyncio.gather(
        ask(batcher, b"a"), ask(batcher, b"bad"), ask(batcher, b"c"), return_exceptions=True
    )
    assert etcd.calls == [3, 0, 0, 0]
    assert answers[0] == (True, 2) and answers[2] == (True, 3)
    assert isinstance(answers[1], StoreError) and "refused" in str(answers[1])
    await batcher.close()


async def test_an_unavailable_store_fails_the_whole_batch_and_the_next_goes() -> None:
    etcd = FakeEtcd()
    etcd.down = True
    batcher = Batcher(etcd.send)
    answers = await asyncio.gather(
        *(ask(batcher, b"k%d" % i) for i in range(3)), return_exceptions=True
    )
    assert all(isinstance(a, Unavailable) for a in answers)
    etcd.down = False
    assert await ask(batcher, b"k0") == (True, 2)
    await batcher.close()


async def test_what_is_asked_while_a_batch_is_in_flight_waits_and_goes_together() -> None:
    etcd = FakeEtcd()
    etcd.gate = asyncio.Event()
    batcher = Batcher(etcd.send, in_flight=1)
    first = asyncio.ensure_future(ask(batcher, b"first"))
    await etcd.called.wait()
    later = [asyncio.ensure_future(ask(batcher, b"k%d" % i)) for i in range(4)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert etcd.calls == [0]  # they wait for the one in flight
    etcd.gate.set()
    assert await first == (True, 2)
    assert await asyncio.gather(*later) == [(True, 3)] * 4
    assert etcd.calls == [0, 4]
    await batcher.close()


async def test_bounds_split_a_batch_and_a_cancelled_caller_is_left_out() -> None:
    etcd = FakeEtcd()
    batcher = Batcher(etcd.send, max_txns=3)
    asks = [asyncio.ensure_future(ask(batcher, b"k%d" % i)) for i in range(7)]
    asks[6].cancel()
    done = await asyncio.gather(*asks, return_exceptions=True)
    assert etcd.calls == [3, 3]
    assert isinstance(done[6], asyncio.CancelledError)
    await batcher.close()


@pytest.mark.parametrize("size", [10, 600_000])
async def test_a_batch_stays_under_its_byte_bound(size: int) -> None:
    etcd = FakeEtcd()
    batcher = Batcher(etcd.send, max_bytes=1 << 20)
    await asyncio.gather(
        *(
            batcher.txn(
                txn(b"k%d" % i), writes=frozenset({b"k%d" % i}), reads=frozenset(), size=size
            )
            for i in range(4)
        )
    )
    assert etcd.calls == ([4] if size == 10 else [0, 0, 0, 0])
    await batcher.close()
