"""The server's threads: a pool for host work (image codecs, JSON, body parsing) and the one engine thread.

Loading, warm-up and the engine loop all run on the engine thread: CUDA graphs captured during warm-up are
replayed only on the thread that captured them.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class Workers:
    def __init__(self, host_threads: int) -> None:
        self.host_pool = ThreadPoolExecutor(host_threads, thread_name_prefix="host")
        self.engine_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")

    async def on_host(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run CPU-bound host work (base64, image codecs, JSON, hashing) without blocking the event loop."""
        return await run_in(self.host_pool, function, *args, **kwargs)

    async def on_engine(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await run_in(self.engine_thread, function, *args, **kwargs)

    def close(self) -> None:
        self.host_pool.shutdown(wait=False, cancel_futures=True)
        self.engine_thread.shutdown(wait=False, cancel_futures=True)


async def run_in(executor: ThreadPoolExecutor, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor, functools.partial(function, *args, **kwargs))
