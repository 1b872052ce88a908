"""How notices name the organisation, pure: a cell by its registered name ("Chi bộ thôn
Đình Hương"), a ward or commune by its party organisation ("Đảng bộ xã Thiệu Vân") or its
committee ("Đảng ủy xã Thiệu Vân"), the kind (phường, xã, …) taken from the name or else
from the unit's level. The id stands in only when the name is unknown (a cell or unit this
service never saw registered, or registered before it kept names)."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field

# The word a level's units go by, when their name does not say it. "ward" is phường: a
# deployment registers its xã as "commune" (the generator does; REPORT_WARD_LEVELS).
LEVEL_KINDS = {"ward": "phường", "commune": "xã", "province": "tỉnh"}
# Kinds a unit's name may start with after "Đảng bộ" (longest first, so "thị xã" is not "xã").
NAME_KINDS = ("thành phố", "thị trấn", "thị xã", "đặc khu", "phường", "huyện", "quận", "tỉnh", "xã")
# Above the commune the committee has its own name: "Đảng bộ tỉnh X" → "Tỉnh ủy X".
COMMITTEES = {
    "tỉnh": "Tỉnh ủy",
    "thành phố": "Thành ủy",
    "thị xã": "Thị ủy",
    "huyện": "Huyện ủy",
    "quận": "Quận ủy",
}
_PARTY_PREFIXES = ("đảng bộ ", "đảng ủy ", "đảng uỷ ")


def _clean(text: str | None) -> str:
    return " ".join(unicodedata.normalize("NFC", text or "").split())


def cell_title(cell_id: str, name: str | None) -> str:
    """ "Chi bộ thôn Đình Hương" as registered; a name without "Chi bộ" gets it; no name:
    "Chi bộ <id>"."""
    registered = _clean(name)
    if not registered:
        return f"Chi bộ {cell_id}"
    return registered if registered.casefold().startswith("chi bộ") else f"Chi bộ {registered}"


@dataclass(frozen=True)
class UnitName:
    unit_id: str
    level: str | None = None
    name: str | None = None

    def parts(self) -> tuple[str | None, str]:
        """(kind, proper name): "Đảng bộ xã Thiệu Vân" → ("xã", "Thiệu Vân"); the kind from
        the level when the name does not say it; the id when the name is unknown."""
        rest = _clean(self.name)
        for prefix in _PARTY_PREFIXES:
            if rest.casefold().startswith(prefix):
                rest = rest[len(prefix) :]
                break
        for kind in NAME_KINDS:
            if rest.casefold().startswith(kind + " "):
                return kind, rest[len(kind) + 1 :]
        return LEVEL_KINDS.get(self.level or ""), rest or self.unit_id

    @property
    def organisation(self) -> str:
        """ "Đảng bộ xã Thiệu Vân"."""
        kind, proper = self.parts()
        return " ".join(p for p in ("Đảng bộ", kind, proper) if p)

    @property
    def committee(self) -> str:
        """The committee that acts for the unit: "Đảng ủy xã Thiệu Vân", "Tỉnh ủy Thanh Hóa"."""
        kind, proper = self.parts()
        if kind in COMMITTEES:
            return f"{COMMITTEES[kind]} {proper}"
        return " ".join(p for p in ("Đảng ủy", kind, proper) if p)


@dataclass(frozen=True)
class PlaceNames:
    """The names of the cells and units a notice speaks of (the directory's, at the time
    the notice is recorded)."""

    cells: Mapping[str, str | None] = field(default_factory=dict)  # cell id → name
    units: Mapping[str, UnitName] = field(default_factory=dict)

    def cell(self, cell_id: str) -> str:
        return cell_title(cell_id, self.cells.get(cell_id))

    def unit(self, unit_id: str, level: str | None = None) -> UnitName:
        """The unit as known; ``level`` (from the event) when the directory lacks it."""
        known = self.units.get(unit_id)
        if known is None:
            return UnitName(unit_id, level)
        return known if known.level else UnitName(unit_id, level, known.name)


NO_NAMES = PlaceNames()


def duration_vi(seconds: float) -> str:
    """Time left, as people say it: "khoảng 25 phút" under an hour, "khoảng 4 giờ" under
    two days, "khoảng 7 ngày" from two days on (each half up), "chưa đến 1 phút" at the
    very end."""
    if seconds < 60:
        return "chưa đến 1 phút"
    minutes = int(seconds / 60 + 0.5)
    if minutes < 60:
        return f"khoảng {minutes} phút"
    if seconds < 48 * 3600:
        return f"khoảng {int(seconds / 3600 + 0.5)} giờ"
    return f"khoảng {int(seconds / 86400 + 0.5)} ngày"
