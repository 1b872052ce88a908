"""Constrained value types used across the contract."""

from typing import Annotated

from pydantic import StringConstraints

# Unit, cell, meeting and member ids: short slugs that are safe as Kafka keys and in URLs.
Identifier = Annotated[
    str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$", max_length=64)
]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=500, strip_whitespace=True)]
# An e-mail address, checked for shape only (delivery is the proof).
EmailLike = Annotated[
    str, StringConstraints(pattern=r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{2,}$", max_length=320)
]
