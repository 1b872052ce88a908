"""The HTTP door's stored form of an Idempotency-Key: one namespace per caller."""

from __future__ import annotations

from services.meetings.entrypoints.http import caller_idempotency_key
from shared.auth import Principal, Role


def _caller(subject: str) -> Principal:
    return Principal(subject=subject, role=Role.WARD_OFFICIAL, scope_level="ward", scope_unit="w")


def test_callers_whose_subject_and_key_run_together_do_not_share_a_key() -> None:
    assert caller_idempotency_key(_caller("a:b"), "c") != caller_idempotency_key(
        _caller("a"), "b:c"
    )
    assert caller_idempotency_key(_caller("sec-a"), "1") != caller_idempotency_key(
        _caller("sec-b"), "1"
    )


def test_no_caller_key_reads_as_a_key_stored_in_the_old_global_form() -> None:
    """Old keys are `http:<key>`; a client could have sent any text as `<key>`."""
    assert not caller_idempotency_key(_caller("http"), "x").startswith("http:")
    assert caller_idempotency_key(_caller("sec-a"), "1") == "http-caller:sec-a:1"
