"""Constrained value types used across the contract."""

from datetime import UTC, date, datetime
from typing import Annotated

from pydantic import AwareDatetime, Field, StringConstraints

# Unit, cell, meeting and member ids: short slugs that are safe as Kafka keys and in URLs.
Identifier = Annotated[
    str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$", max_length=64)
]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=500, strip_whitespace=True)]
# An e-mail address, checked for shape only (delivery is the proof).
EmailLike = Annotated[
    str, StringConstraints(pattern=r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{2,}$", max_length=320)
]

# The contract's calendar: years 2000 to 2099. Times outside it are typing errors, and
# arithmetic on them (a month after 9999-12, 12 hours before 0001-01-01) would crash a
# decision or the store instead of refusing the command with its reason.
EARLIEST_DAY = date(2000, 1, 1)
LATEST_DAY = date(2099, 12, 31)
EARLIEST_TIME = datetime(2000, 1, 1, tzinfo=UTC)
END_OF_TIME = datetime(2100, 1, 1, tzinfo=UTC)  # exclusive
# A month, YYYY-MM, in the same years.
MONTH_PATTERN = r"^20[0-9]{2}-(0[1-9]|1[0-2])$"  # [0-9]: \d takes any script's digits
Month = Annotated[str, StringConstraints(pattern=MONTH_PATTERN)]
# JSON Schema has no bounds for formatted strings; formatMinimum and formatMaximum are the
# keywords ajv-formats and others read, and the description says it for everyone else.
ContractDate = Annotated[
    date,
    Field(
        ge=EARLIEST_DAY,
        le=LATEST_DAY,
        json_schema_extra={
            "formatMinimum": EARLIEST_DAY.isoformat(),
            "formatMaximum": LATEST_DAY.isoformat(),
        },
    ),
]
ContractDatetime = Annotated[
    AwareDatetime,
    Field(
        ge=EARLIEST_TIME,
        lt=END_OF_TIME,
        json_schema_extra={
            "formatMinimum": "2000-01-01T00:00:00Z",
            "formatExclusiveMaximum": "2100-01-01T00:00:00Z",
        },
    ),
]
