"""The generated district, as plain dataclasses: province → (optional district) → wards →
cells → members. Deterministic for a seed and a configuration.

The organisation is dated relative to the month it is generated for (exemptions start
and end around it), so a district is built together with its month: ``build_district``
takes the month's first day.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, timedelta

from generator import names

# Exemption reasons (miễn sinh hoạt): what the code stands for, in Vietnamese.
EXEMPTION_REASONS = {
    "old_age": "Tuổi cao, sức khỏe yếu (trên 75 tuổi)",
    "illness": "Ốm đau dài ngày, đang điều trị",
    "working_away": "Đi làm ăn xa, có xác nhận của cấp ủy nơi đến",
}


@dataclass(frozen=True)
class LevelSpec:
    """One level of the ladder above the wards, from the top: its level name, id part
    and Vietnamese name."""

    level: str
    slug: str
    name: str


DEFAULT_LADDER: tuple[LevelSpec, ...] = (
    LevelSpec("province", "thanh-hoa", "Đảng bộ tỉnh Thanh Hóa"),
    LevelSpec("district", "tp-thanh-hoa", "Đảng bộ thành phố Thanh Hóa"),
)


@dataclass(frozen=True)
class GeneratorConfig:
    seed: int
    wards: int = 34
    cells: int = 311
    # The units above the wards, top first. The district (city) level was abolished on
    # 1 July 2025; drop it (``without_district``) for a two-tier deployment.
    ladder: tuple[LevelSpec, ...] = DEFAULT_LADDER
    prefix: str | None = None  # id prefix; by default from the seed and the sizes

    def __post_init__(self) -> None:
        if self.wards < 1 or self.cells < self.wards:
            raise ValueError("need at least one ward and at least one cell per ward")
        if not self.ladder:
            raise ValueError("the ladder needs at least the province")
        if len(self.id_prefix) > 20:
            raise ValueError("the id prefix must be at most 20 characters")

    @property
    def id_prefix(self) -> str:
        if self.prefix:
            return self.prefix
        sized = "" if (self.wards, self.cells) == (34, 311) else f"-{self.wards}w{self.cells}c"
        return f"demo{self.seed}{sized}"

    def without_district(self) -> GeneratorConfig:
        return GeneratorConfig(
            self.seed,
            self.wards,
            self.cells,
            tuple(lv for lv in self.ladder if lv.level != "district"),
            self.prefix,
        )


@dataclass(frozen=True)
class Exemption:
    reason_code: str
    reason: str
    start: date
    end: date | None  # open-ended (old age)

    def covers(self, day: date) -> bool:
        return self.start <= day and (self.end is None or day <= self.end)


@dataclass
class Member:
    member_id: str
    full_name: str
    probationary: bool = False
    role: str | None = None  # "secretary" (bí thư), "deputy" (phó bí thư) or None
    exemptions: list[Exemption] = field(default_factory=list)
    transferred_from: str | None = None  # the cell this member came from, before the month

    def exempt_on(self, day: date) -> bool:
        return any(e.covers(day) for e in self.exemptions)


@dataclass
class Cell:
    cell_id: str
    ward_id: str
    name: str  # "Chi bộ phố Lê Lai 2"
    place: str  # "phố Lê Lai 2" / "thôn Phú Thọ"
    location: str  # where it meets: "Nhà văn hóa phố Lê Lai 2"
    meeting_day: int
    roll_calls: int
    members: list[Member]  # the roll for the month (after transfers)
    lists_exempt: bool  # whether its roll calls list exempt members (they may be left out)
    in_charge: tuple[str, str] = ("", "")  # (person id, name): the ward member in charge


@dataclass
class Transfer:
    """A member moved between two cells of one ward before the month."""

    member: Member
    from_cell: str
    to_cell: str


@dataclass
class Ward:
    unit_id: str
    parent_id: str
    kind: str  # "phường" or "xã"
    short_name: str  # "Nam Ngạn"
    cells: list[Cell]
    streets: list[str]  # streets or hamlets, for petition places
    committee: list[tuple[str, str]]  # (person id, name): ward members in charge of cells

    @property
    def name(self) -> str:
        return f"Đảng bộ {self.kind} {self.short_name}"


@dataclass(frozen=True)
class Unit:
    unit_id: str
    parent_id: str | None
    level: str
    name: str


@dataclass
class District:
    config: GeneratorConfig
    units: list[Unit]  # the ladder above the wards, top first
    wards: list[Ward]
    transfers: list[Transfer]

    @property
    def cells(self) -> list[Cell]:
        return [c for w in self.wards for c in w.cells]

    @property
    def member_count(self) -> int:
        return sum(len(c.members) for c in self.cells)


def person_name(rng: random.Random, female: bool | None = None) -> str:
    if female is None:
        female = rng.random() < 0.4
    ho = rng.choices([h for h, _ in names.HO], weights=[w for _, w in names.HO])[0]
    dem = rng.choice(names.TEN_DEM_NU if female else names.TEN_DEM_NAM)
    ten = rng.choice(names.TEN_NU if female else names.TEN_NAM)
    return f"{ho} {dem} {ten}"


def _cells_per_ward(rng: random.Random, wards: int, cells: int) -> list[int]:
    """Split the cells between the wards, unevenly but at least three each when possible."""
    floor = min(3, cells // wards)
    counts = [floor] * wards
    weights = [rng.uniform(0.5, 1.5) for _ in range(wards)]
    for _ in range(cells - floor * wards):
        counts[rng.choices(range(wards), weights=weights)[0]] += 1
    return counts


def _meeting_day(rng: random.Random) -> int:
    # Most cells meet on the 3rd (seed 002); some on another day, like the 10th (seed 001).
    return rng.choices([3, 5, 10, 15, 20], weights=[78, 5, 10, 4, 3])[0]


def build_district(config: GeneratorConfig, month_start: date) -> District:
    rng = random.Random(f"chibo-generator:{config.seed}:{config.wards}:{config.cells}")
    prefix = config.id_prefix
    units: list[Unit] = []
    parent: str | None = None
    for spec in config.ladder:
        unit_id = f"{prefix}.{spec.slug}"
        units.append(Unit(unit_id, parent, spec.level, spec.name))
        parent = unit_id
    assert parent is not None

    ward_names = [("phường", n) for n in names.PHUONG[:20]] + [("xã", n) for n in names.XA]
    ward_names += [("phường", n) for n in names.PHUONG[20:]]
    while len(ward_names) < config.wards:
        ward_names.append(("phường", f"Số {len(ward_names) + 1}"))
    chosen = ward_names[: config.wards]
    used_slugs: set[str] = set()
    wards: list[Ward] = []
    transfers: list[Transfer] = []
    for (kind, short), n_cells in zip(
        chosen, _cells_per_ward(rng, config.wards, config.cells), strict=True
    ):
        ward_slug = names.slug(short)
        while ward_slug in used_slugs:
            ward_slug += "-2"
        used_slugs.add(ward_slug)
        ward_id = f"{prefix}.{ward_slug}"
        pool = list(names.STREETS if kind == "phường" else names.HAMLETS)
        rng.shuffle(pool)
        streets = pool[: max(3, min(len(pool), (n_cells + 2) // 3))]
        cells = [_cell(rng, ward_id, kind, streets, i, month_start) for i in range(1, n_cells + 1)]
        committee = [
            (f"{ward_id}.uv{k:02d}", person_name(rng)) for k in range(1, (n_cells + 2) // 3 + 1)
        ]
        for i, cell in enumerate(cells):  # each member of the committee has about three cells
            cell.in_charge = committee[i // 3]
        ward = Ward(ward_id, parent, kind, short, cells, streets, committee)
        transfers += _transfers(rng, ward)
        wards.append(ward)
    return District(config, units, wards, transfers)


def _cell(
    rng: random.Random, ward_id: str, kind: str, streets: list[str], no: int, month_start: date
) -> Cell:
    street = streets[(no - 1) % len(streets)]
    nth = (no - 1) // len(streets) + 1
    if kind == "phường":
        place = f"phố {street}" + (f" {nth}" if nth > 1 or no % 2 == 0 else "")
    else:
        place = f"thôn {street}" + (f" {nth}" if nth > 1 else "")
    cell_id = f"{ward_id}.cb{no:02d}"
    size = round(rng.triangular(10, 40, 28))
    members = []
    for m in range(1, size + 1):
        old = rng.random() < 0.12
        member = Member(
            f"{cell_id}.dv{m:02d}",
            person_name(rng),
            probationary=not old and rng.random() < 0.05,
            role="secretary" if m == 1 else "deputy" if m == 2 else None,
        )
        if m > 2:
            _exemptions(rng, member, old, month_start)
        members.append(member)
    return Cell(
        cell_id=cell_id,
        ward_id=ward_id,
        name=f"Chi bộ {place}",
        place=place,
        location=f"Nhà văn hóa {place}",
        meeting_day=_meeting_day(rng),
        roll_calls=2 if rng.random() < 0.33 else 1,  # about a third of cells innovate
        members=members,
        lists_exempt=rng.random() < 0.5,
    )


def _exemptions(rng: random.Random, member: Member, old: bool, month_start: date) -> None:
    def days(a: int, b: int) -> timedelta:
        return timedelta(days=rng.randint(a, b))

    r = rng.random()
    if old and r < 0.35:  # old age: open-ended, for years
        start = month_start - days(365, 8 * 365)
        member.exemptions.append(Exemption("old_age", EXEMPTION_REASONS["old_age"], start, None))
    elif r < 0.025:  # long illness around the month
        member.exemptions.append(
            Exemption(
                "illness",
                EXEMPTION_REASONS["illness"],
                month_start - days(20, 120),
                month_start + days(40, 150),
            )
        )
    elif r < 0.05:  # working away for a season
        member.exemptions.append(
            Exemption(
                "working_away",
                EXEMPTION_REASONS["working_away"],
                month_start - days(30, 200),
                month_start + days(60, 300),
            )
        )
    elif r < 0.06:  # an illness that ended before the month: counted as usual
        end = month_start - days(5, 40)
        member.exemptions.append(
            Exemption("illness", EXEMPTION_REASONS["illness"], end - days(30, 90), end)
        )
    elif r < 0.065:  # leaves to work away in the middle of the month
        member.exemptions.append(
            Exemption(
                "working_away",
                EXEMPTION_REASONS["working_away"],
                month_start + days(12, 20),
                month_start + days(120, 200),
            )
        )


def _transfers(rng: random.Random, ward: Ward) -> list[Transfer]:
    """A few members move house within the ward: off one cell's roll, onto another's."""
    if len(ward.cells) < 2:
        return []
    moved = []
    for _ in range(sum(1 for _ in ward.cells if rng.random() < 0.12)):
        src, dst = rng.sample(ward.cells, 2)
        candidates = [
            m for m in src.members if m.role is None and not m.exemptions and not m.transferred_from
        ]
        if len(src.members) <= 10 or len(dst.members) >= 40 or not candidates:
            continue
        member = rng.choice(candidates)
        src.members.remove(member)
        member.transferred_from = src.cell_id
        dst.members.append(member)
        moved.append(Transfer(member, src.cell_id, dst.cell_id))
    return moved
