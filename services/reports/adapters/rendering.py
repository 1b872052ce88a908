"""Printable outputs of a monthly report: an HTML page laid out like an official Party
report (Vietnamese, A4), and a CSV of the per-cell or per-ward lines (English column names,
the API's field names).

A deployment overrides a template by putting a file of the same name in its own folder
(``templates_dir``), which is searched first, as with the notices' templates.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined, select_autoescape

from services.reports.domain.report import CellLine, RollupReport, WardReport
from shared.clock import LOCAL_TZ

BUILTIN_TEMPLATES = Path(__file__).parent / "templates"
DASH = "—"
NBSP = "\u00a0"

CATEGORIES_VI = {
    "land": "Đất đai",
    "roads_infrastructure": "Giao thông, hạ tầng",
    "security_order": "An ninh, trật tự",
    "environment": "Môi trường",
    "social_policy": "Chính sách xã hội",
    "other": "Khác",
}
ESCALATION_REASONS_VI = {
    "deadline": "Quá hạn giải quyết",
    "beyond_authority": "Vượt thẩm quyền",
    "unknown": "Không rõ",
}
MEETING_KINDS_VI = {"regular": "Thường kỳ", "thematic": "Chuyên đề", "committee": "Họp chi ủy"}
REGULAR_VI = {
    "held_on_planned_day": "Đúng ngày",
    "held_early": "Sớm hơn kế hoạch",
    "held_late": "Muộn hơn kế hoạch",
    "not_held": "Không sinh hoạt",
    "cancelled": "Hoãn, hủy",
}
CRITERIA_VI = {
    "attendance": "Tỷ lệ dự",
    "no_unexcused_absence": "Không vắng không lý do",
    "duration": "Thời lượng",
    "participation": "Tỷ lệ phát biểu",
    "minutes": "Biên bản",
    "previous_resolution": "Nghị quyết kỳ trước",
}
# "Đảng bộ phường Nam Ngạn" → place "Nam Ngạn" for the "…, ngày … tháng … năm …" line.
_UNIT_PREFIX = re.compile(
    r"^(?:Đảng bộ|Đảng ủy)\s+(?:phường|xã|thị trấn|thị xã|thành phố|tỉnh|huyện|quận)?\s*",
    re.IGNORECASE,
)


def render_html(report: WardReport | RollupReport, templates_dir: Path | None = None) -> str:
    template = "ward_report.html.j2" if isinstance(report, WardReport) else "rollup_report.html.j2"
    return _environment(templates_dir).get_template(template).render(report=report)


def render_csv(report: WardReport | RollupReport) -> str:
    """One row per cell (ward report) or per ward plus a totals row (roll-up). Values are
    the JSON API's: rates as fractions with a dot, ISO dates, true/false, empty for null.
    Lists are left out; their counts are columns (``regular_meetings.not_held``, …). A text
    that a spreadsheet would run as a formula gets a leading ``'``."""
    if isinstance(report, WardReport):
        header = list(CellLine.model_fields)
        rows = [_flatten(c.model_dump(mode="json")) for c in report.cells]
    else:
        rows = [
            {
                "row": "ward",
                **_flatten(w.unit.model_dump(mode="json"), "unit."),
                **_flatten(w.status.model_dump(mode="json"), "status."),
                **_flatten(w.figures.model_dump(mode="json")),
            }
            for w in report.wards
        ]
        rows.append(
            {
                "row": "total",
                **_flatten(report.unit.model_dump(mode="json"), "unit."),
                **_flatten(report.figures.model_dump(mode="json")),
            }
        )
        header = list(dict.fromkeys(k for r in rows for k in r))  # union, in first-seen order
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=header, restval="")
    writer.writeheader()
    writer.writerows({k: _csv_value(v) for k, v in r.items()} for r in rows)
    return out.getvalue()


def _flatten(value: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    return dict(_pairs(value, prefix))


def _pairs(value: dict[str, Any], prefix: str) -> Iterator[tuple[str, Any]]:
    for key, item in value.items():
        if isinstance(item, dict):
            yield from _pairs(item, f"{prefix}{key}.")
        elif not isinstance(item, list):
            yield f"{prefix}{key}", item


# A text cell starting with one of these is read by spreadsheets as a formula (names and
# reasons come from upstream publishers): OWASP's "CSV injection" guard prefixes a quote.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value if value.startswith(_FORMULA_START) else value
    return str(value)  # numbers stay numbers, a negative one too


@lru_cache(maxsize=8)
def _environment(templates_dir: Path | None) -> Environment:
    loaders = [FileSystemLoader(str(templates_dir))] if templates_dir else []
    loaders.append(FileSystemLoader(str(BUILTIN_TEMPLATES)))
    env = Environment(
        loader=ChoiceLoader(loaders),
        undefined=StrictUndefined,
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        pct=percent,
        num=number,
        dec=decimal,
        day=local_date,
        day_month=lambda d: DASH if d is None else d.strftime("%d/%m"),  # in the month's tables
        time=lambda d: DASH if d is None else d.astimezone(LOCAL_TZ).strftime("%H:%M"),
        last_day=lambda d: local_date(d - timedelta(microseconds=1)),  # ends are exclusive
        date_line=date_line,
        place=lambda name: _UNIT_PREFIX.sub("", name) or name,
        committee=committee,
        yes_no=lambda b: DASH if b is None else ("Có" if b else "Không"),
        category=lambda c: CATEGORIES_VI.get(c, c),
        escalation_reason=lambda r: ESCALATION_REASONS_VI.get(r, r),
        meeting_kind=lambda k: MEETING_KINDS_VI.get(k, k),
        regular=lambda s: REGULAR_VI.get(s, s),
        criterion=lambda c: CRITERIA_VI.get(c, c),
        roman=lambda n: ("I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X")[n - 1],
    )
    return env


def percent(rate: float | None, places: int = 2) -> str:
    """0.9347 → "93,47 %" (a no-break space, so the sign never wraps alone)."""
    return DASH if rate is None else f"{decimal(rate * 100, places)}{NBSP}%"


def decimal(value: float | None, places: int = 1) -> str:
    if value is None:
        return DASH
    return f"{value:,.{places}f}".replace(",", " ").replace(".", ",").replace(" ", ".")


def number(value: int | None) -> str:
    return DASH if value is None else f"{value:,}".replace(",", ".")


def local_date(value: date | datetime | None) -> str:
    if value is None:
        return DASH
    if isinstance(value, datetime):
        value = value.astimezone(LOCAL_TZ)
    return value.strftime("%d/%m/%Y")


def date_line(value: datetime) -> str:
    """ "ngày 05 tháng 11 năm 2026": days below 10 and months below 3 take a leading zero,
    as official documents write them (so no one can add a digit)."""
    d = value.astimezone(LOCAL_TZ)
    month = f"{d.month:02d}" if d.month < 3 else str(d.month)
    return f"ngày {d.day:02d} tháng {month} năm {d.year}"


def committee(name: str) -> str:
    """The committee that acts for a unit: "Đảng bộ phường X" → "Đảng ủy phường X",
    "Đảng bộ thành phố X" → "Thành ủy X"."""
    rest = name.removeprefix("Đảng bộ ")
    if rest == name:
        return name
    for kind, body in _COMMITTEES:
        if rest.startswith(kind + " "):
            return body + rest.removeprefix(kind)
    return "Đảng ủy " + rest


_COMMITTEES = (
    ("tỉnh", "Tỉnh ủy"),
    ("thành phố", "Thành ủy"),
    ("thị xã", "Thị ủy"),
    ("huyện", "Huyện ủy"),
    ("quận", "Quận ủy"),
)
