"""Jinja2 rendering of Vietnamese notices. A deployment overrides a template by putting
a file of the same name in its own folder (``TEMPLATES_DIR``), which is searched first."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined, select_autoescape

from shared.clock import LOCAL_TZ

BUILTIN_TEMPLATES = Path(__file__).parent / "templates"

MEETING_KINDS_VI = {
    "regular": "sinh hoạt thường kỳ",
    "thematic": "sinh hoạt chuyên đề",
    "committee": "họp chi ủy",
}


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

    def render(self, template: str, context: dict[str, object]) -> RenderedMessage:
        def part(suffix: str) -> str:
            return self._env.get_template(f"{template}.{suffix}.j2").render(**context)

        return RenderedMessage(
            subject=" ".join(part("subject").split()), text=part("txt"), html=part("html")
        )


def _local(value: datetime) -> datetime:
    return value.astimezone(LOCAL_TZ)
