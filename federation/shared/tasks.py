"""Owned asyncio tasks: stop them and see how they ended.

``cancel_and_wait`` cancels tasks and waits until each has ended, and
returns the exceptions they ended with other than their cancellation.  The
caller's own cancellation is never swallowed: if it is cancelled while it
waits, it is cancelled.  ``stop_tasks`` does the same and raises the first
of those exceptions, for owners that must not lose a crash.
"""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(*tasks: asyncio.Future[Any]) -> list[BaseException]:
    for task in tasks:
        task.cancel()
    ended = await asyncio.gather(*tasks, return_exceptions=True)
    return [
        result
        for result in ended
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError)
    ]


async def stop_tasks(*tasks: asyncio.Future[Any]) -> None:
    errors = await cancel_and_wait(*tasks)
    if errors:
        raise errors[0]


__all__ = ["cancel_and_wait", "stop_tasks"]
