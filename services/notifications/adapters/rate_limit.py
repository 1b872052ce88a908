"""A token bucket per channel: at most ``rate`` sends a second, bursts up to ``burst``."""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.capacity = burst if burst is not None else max(rate, 1.0)
        self._tokens = self.capacity
        self._at = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        if self.rate <= 0:  # 0: unlimited
            return
        async with self._lock:
            while True:
                now = time.monotonic()
                self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
                self._at = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                # Waiting for the next token is the limiter's whole job, not a test sleep.
                await asyncio.sleep((1 - self._tokens) / self.rate)


def parse_rates(text: str) -> dict[str, float]:
    """ "email:500,webhook:20" → {"email": 500.0, "webhook": 20.0} (sends per second)."""
    rates = {}
    for part in (p.strip() for p in text.split(",")):
        if part:
            name, _, value = part.partition(":")
            rates[name.strip()] = float(value)
    return rates
