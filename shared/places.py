"""How a petition's place is compared: one definition for the service that flags a
petition as recurring (meetings) and the report that lists the recurring topics."""

from __future__ import annotations

import re
import unicodedata


def place_key(place: str) -> str:
    """The place as compared for recurrence: case, spacing and punctuation do not count;
    Vietnamese diacritics do (Hòa and Hóa are different places)."""
    text = unicodedata.normalize("NFC", place).casefold()
    return " ".join(re.sub(r"[^\w\s]", " ", text).split())
