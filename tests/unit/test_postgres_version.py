"""The services need PostgreSQL 18 (the consumers' claim returns ``old``/``new``): the
start-up check refuses an older server by its ``server_version_num``."""

from __future__ import annotations

import pytest

from shared.postgres import UnsupportedPostgres, require_supported_server


@pytest.mark.parametrize("version_num", [170004, 160008, 130020, 179999])
def test_older_servers_are_refused(version_num: int) -> None:
    with pytest.raises(UnsupportedPostgres) as refused:
        require_supported_server(version_num)
    assert refused.value.version_num == version_num


def test_the_refusal_names_the_version_found_and_the_one_required() -> None:
    with pytest.raises(UnsupportedPostgres) as refused:
        require_supported_server(170004, "17.4 (Debian 17.4-1.pgdg120+2)")
    message = str(refused.value)
    assert "PostgreSQL 17.4 (Debian 17.4-1.pgdg120+2)" in message
    assert "170004" in message
    assert "PostgreSQL 18 or newer" in message


def test_without_the_text_the_version_is_read_from_the_number() -> None:
    with pytest.raises(UnsupportedPostgres, match=r"PostgreSQL 17\.4 "):
        require_supported_server(170004)


@pytest.mark.parametrize("version_num", [180000, 180001, 190000])
def test_18_and_newer_are_taken(version_num: int) -> None:
    require_supported_server(version_num)
