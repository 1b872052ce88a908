"""Jinja2 rendering of Vietnamese notices. A deployment overrides a template by putting
a file of the same name in its own folder (``TEMPLATES_DIR``), which is searched first."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined, select_autoescape

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
    return str(max(round(value.total_seconds() / 3600), 0))


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
        self._env.filters["month_vi"] = lambda m: f"{str(m)[5:7]}/{str(m)[:4]}"

    def render(self, template: str, context: dict[str, object]) -> RenderedMessage:
        def part(suffix: str) -> str:
            return self._env.get_template(f"{template}.{suffix}.j2").render(**context)

        return RenderedMessage(
            subject=" ".join(part("subject").split()), text=part("txt"), html=part("html")
        )


def _local(value: datetime) -> datetime:
    return value.astimezone(LOCAL_TZ)
