"""Jinja2 rendering of Vietnamese notices. A deployment overrides a template by putting
a file of the same name in its own folder (``TEMPLATES_DIR``), which is searched first."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from jinja2 import (
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    StrictUndefined,
    pass_context,
    select_autoescape,
)
from jinja2.runtime import Context

from services.notifications.domain.names import NO_NAMES, PlaceNames, duration_vi
from shared.clock import LOCAL_TZ

BUILTIN_TEMPLATES = Path(__file__).parent / "templates"

MEETING_KINDS_VI = {
    "regular": "sinh hoạt thường kỳ",
    "thematic": "sinh hoạt chuyên đề",
    "committee": "họp chi ủy",
}

LEVELS_VI = {
    "cell": "chi bộ",
    "ward": "phường, xã",
    "commune": "xã",
    "district": "quận, huyện",
    "city": "thành phố",
    "province": "tỉnh",
}
CATEGORIES_VI = {
    "land": "đất đai",
    "roads_infrastructure": "giao thông, hạ tầng",
    "security_order": "an ninh, trật tự",
    "environment": "môi trường",
    "social_policy": "chính sách xã hội",
    "other": "vấn đề khác",
}
ESCALATION_REASONS_VI = {
    "deadline": "quá thời hạn giải quyết",
    "beyond_authority": "vượt thẩm quyền",
}


def _history_step(step: dict[str, Any]) -> str:
    level = LEVELS_VI.get(str(step.get("level")), str(step.get("level")))
    what = step.get("what")
    if what == "raised":
        return f"Tiếp nhận ở cấp {level}"
    if what == "escalated":
        reason = ESCALATION_REASONS_VI.get(str(step.get("reason")), "")
        return f"Chuyển lên cấp {level} ({reason})"
    if what == "resolved":
        return f"Giải quyết ở cấp {level}"
    if what == "reopened":
        return f"Mở lại ở cấp {level}"
    return str(what)


def _percent(value: float) -> str:
    return f"{value * 100:.1f}%".replace(".", ",")  # Vietnamese decimal comma


def _hours(value: timedelta) -> str:
    # Kept for deployments' own templates; the built-ins say ``remaining | time_left``.
    return str(max(round(value.total_seconds() / 3600), 0))


def _names(context: Context) -> PlaceNames:
    """The notice's ``names`` (directory.place_names); a context without them (a test, an
    old caller) falls back to the ids."""
    names = context.get("names")
    return names if isinstance(names, PlaceNames) else NO_NAMES


@pass_context
def _cell_name(context: Context, cell_id: str) -> str:
    return _names(context).cell(str(cell_id))


@pass_context
def _unit_name(context: Context, unit_id: str, level: str | None = None) -> str:
    return _names(context).unit(str(unit_id), level).organisation


@pass_context
def _committee(context: Context, unit_id: str, level: str | None = None) -> str:
    return _names(context).unit(str(unit_id), level).committee


@pass_context
def _holder_name(context: Context, holder_id: str | None, level: str) -> str:
    """Who holds a petition: the cell ("Chi bộ …") at level "cell", else the unit's
    committee ("Đảng ủy xã …")."""
    if holder_id is None:
        return LEVELS_VI.get(str(level), str(level))
    if level == "cell":
        return _names(context).cell(str(holder_id))
    return _names(context).unit(str(holder_id), level).committee


@dataclass(frozen=True)
class RenderedMessage:
    subject: str
    text: str
    html: str


class TemplateRenderer:
    def __init__(self, override_dir: Path | None = None) -> None:
        loaders = [FileSystemLoader(str(override_dir))] if override_dir else []
        loaders.append(FileSystemLoader(str(BUILTIN_TEMPLATES)))
        self._env = Environment(
            loader=ChoiceLoader(loaders),
            undefined=StrictUndefined,
            autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
            keep_trailing_newline=True,
        )
        self._env.filters["local_date"] = lambda d: _local(d).strftime("%d/%m/%Y")
        self._env.filters["local_time"] = lambda d: _local(d).strftime("%H:%M")
        self._env.filters["meeting_kind"] = lambda k: MEETING_KINDS_VI.get(str(k), str(k))
        self._env.filters["level"] = lambda v: LEVELS_VI.get(str(v), str(v))
        self._env.filters["category"] = lambda v: CATEGORIES_VI.get(str(v), str(v))
        self._env.filters["escalation_reason"] = lambda v: ESCALATION_REASONS_VI.get(str(v), str(v))
        self._env.filters["history_step"] = _history_step
        self._env.filters["percent"] = _percent
        self._env.filters["hours"] = _hours
        self._env.filters["time_left"] = lambda d: duration_vi(d.total_seconds())
        self._env.filters["cell_name"] = _cell_name
        self._env.filters["unit_name"] = _unit_name
        self._env.filters["committee"] = _committee
        self._env.filters["holder_name"] = _holder_name
        self._env.filters["month_vi"] = lambda m: f"{str(m)[5:7]}/{str(m)[:4]}"

    def render(self, template: str, context: dict[str, object]) -> RenderedMessage:
        def part(suffix: str) -> str:
            return self._env.get_template(f"{template}.{suffix}.j2").render(**context)

        return RenderedMessage(
            subject=" ".join(part("subject").split()), text=part("txt"), html=part("html")
        )


def _local(value: datetime) -> datetime:
    return value.astimezone(LOCAL_TZ)
