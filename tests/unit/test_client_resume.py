"""A watch stream that breaks between two changes of one revision (one
etcd transaction of several, decision 57): the client resumes after the
last revision it saw whole and gives each change exactly once."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from pathlib import Path

from aiohttp import web

from agents.client import Event, RegistryClient
from federation.trust import ca as certs


def line(revision: int, key: str) -> bytes:
    body = {"type": "DELETE", "revision": revision, "kind": "Cluster", "key": key, "object": None}
    return json.dumps(body).encode() + b"\n"


async def test_a_stream_broken_inside_a_revision_resumes_without_loss_or_repeat(
    tmp_path: Path,
) -> None:
    now = time.time()
    root = certs.new_root("resume.test", now)
    cert, key = certs.issue_server(root, ["127.0.0.1"], now)
    (tmp_path / "tls.crt").write_bytes(certs.cert_pem(cert))
    (tmp_path / "tls.key").write_bytes(certs.plain_key_pem(key))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    asked: list[str] = []
    done = asyncio.Event()

    async def watch(request: web.Request) -> web.StreamResponse:
        since = request.query["since"]
        asked.append(since)
        response = web.StreamResponse()
        await response.prepare(request)
        if len(asked) == 1:  # revision 7 holds a, b and c: break after a
            await response.write(line(6, "clusters/z") + line(7, "clusters/a"))
            assert request.transport is not None
            request.transport.close()
            return response
        # Resumed after 6: the registry sends all of 7 again, then 8.
        await response.write(
            b"".join(line(7, k) for k in ("clusters/a", "clusters/b", "clusters/c"))
        )
        await response.write(line(8, "clusters/d"))
        await done.wait()  # open until the test is over
        return response

    app = web.Application()
    app.router.add_get("/v1/watch", watch)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    client = RegistryClient(f"https://127.0.0.1:{port}", None, ca_pem=certs.cert_pem(root.cert))
    given: list[tuple[int, str]] = []
    try:
        changes = client.changes(since=5)
        async with asyncio.timeout(10):
            async for change in changes:
                assert isinstance(change, Event)
                given.append((change.revision, change.key))
                if len(given) == 5:
                    break
        await changes.aclose()
    finally:
        done.set()
        await client.close()
        await runner.cleanup()
    assert asked == ["5", "6"]
    assert given == [
        (6, "clusters/z"),
        (7, "clusters/a"),
        (7, "clusters/b"),
        (7, "clusters/c"),
        (8, "clusters/d"),
    ]
