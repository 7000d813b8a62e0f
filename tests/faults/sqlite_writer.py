"""A child process that writes to a SQLite store until it is killed.

It prints each key after ``put`` returned, so every printed key is an
acknowledged write.  Run as ``python -m tests.faults.sqlite_writer FILE``.
"""

from __future__ import annotations

import asyncio
import sys

from federation.store.sqlite import SqliteStore


async def write_forever(path: str) -> None:
    store = SqliteStore(path)
    await store.start()
    index = 0
    while True:
        key = f"/durability/{index:08d}"
        await store.put(key, b"v%d" % index)
        sys.stdout.write(f"{key}\n")
        sys.stdout.flush()
        index += 1


if __name__ == "__main__":
    asyncio.run(write_forever(sys.argv[1]))
