"""Contact details, looked up at send time from the meetings service's erasable store
(``POST /v1/people/contacts:lookup``), so that an erasure holds for every later message.
Nothing here is stored or logged."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx

from services.notifications.adapters.channels import TemporaryFailure


class LookupFailed(TemporaryFailure):
    """The look-up failed; ``reason`` is ``unauthorized`` (the token was refused) or
    ``unavailable`` (unreachable, or any other answer)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Contact:
    email: str | None
    phone: str | None

    def address(self, channel: str) -> str | None:
        if channel == "email":
            return self.email
        if channel == "webhook":
            return self.phone
        return "-"  # the log channel needs no address


class ContactsClient:
    def __init__(self, base_url: str, token: Callable[[], str], timeout_s: float = 10.0) -> None:
        self._client = httpx.AsyncClient(base_url=base_url, timeout=timeout_s)
        self._token = token  # a system-scoped bearer token, fresh for each call

    async def lookup(self, person_ids: list[str]) -> dict[str, Contact]:
        """The contacts of those who have one; raises LookupFailed (temporary) otherwise."""
        found: dict[str, Contact] = {}
        unique = sorted(set(person_ids))
        for start in range(0, len(unique), 1000):
            try:
                response = await self._client.post(
                    "/v1/people/contacts:lookup",
                    json={"person_ids": unique[start : start + 1000]},
                    headers={"Authorization": f"Bearer {self._token()}"},
                )
            except httpx.HTTPError as exc:
                raise LookupFailed("unavailable", f"contacts: {type(exc).__name__}") from exc
            if response.status_code != 200:
                reason = "unauthorized" if response.status_code in (401, 403) else "unavailable"
                raise LookupFailed(reason, f"contacts: HTTP {response.status_code}")
            for person_id, c in response.json()["contacts"].items():
                found[person_id] = Contact(email=c.get("email"), phone=c.get("phone"))
        return found

    async def close(self) -> None:
        await self._client.aclose()
