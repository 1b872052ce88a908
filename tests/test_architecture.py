"""The shape the design promises: no service imports another, and each has the same rooms."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("meetings", "reports", "notifications")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("service", SERVICES)
def test_no_service_imports_another(service: str) -> None:
    others = [f"services.{s}" for s in SERVICES if s != service]
    for path in (ROOT / "services" / service).rglob("*.py"):
        for module in imported_modules(path):
            assert not any(module == o or module.startswith(o + ".") for o in others), (
                f"{path.relative_to(ROOT)} imports {module}"
            )


def test_shared_imports_no_service() -> None:
    for path in (ROOT / "shared").rglob("*.py"):
        assert not any(m.startswith("services") for m in imported_modules(path)), path


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_has_the_same_inner_shape(service: str) -> None:
    folder = ROOT / "services" / service
    for room in ("domain", "service_layer", "adapters", "entrypoints"):
        assert (folder / room / "__init__.py").is_file(), f"{service} lacks {room}/"
    assert (folder / "bootstrap.py").is_file()
    assert (folder / "__main__.py").is_file()


def test_domain_does_no_io() -> None:
    forbidden = ("asyncpg", "aiokafka", "faststream", "httpx", "aiosmtplib", "fastapi")
    for service in SERVICES:
        for path in (ROOT / "services" / service / "domain").rglob("*.py"):
            for module in imported_modules(path):
                assert not module.startswith(forbidden), f"{path} imports {module}"
