"""Background tasks of a service: stopped the same way everywhere."""

from __future__ import annotations

import asyncio
import contextlib


async def cancel(*tasks: asyncio.Task[None] | None) -> None:
    """Cancel the tasks and wait for each to finish unwinding."""
    for task in tasks:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
