"""HTTP read API of the reports service."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from services.reports.adapters.rendering import render_csv, render_html
from services.reports.domain.report import RollupReport, WardReport
from services.reports.service_layer.reports import NotYetApplied, ReportReader, UnknownUnit
from shared.auth import Principal
from shared.clock import ReportMonth
from shared.contract.types import MONTH_PATTERN, Identifier
from shared.http import bearer_principal, error_response

MONTH = MONTH_PATTERN  # the months commands may name, so every one has a report
STREAM_AT = r"^[^@\s]{1,200}@[1-9][0-9]{0,9}$"


def _reader(request: Request) -> ReportReader:
    return request.app.state.reader  # type: ignore[no-any-return]


def report_router() -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["reports"])

    @router.get(
        "/reports/{unit_id}/{month}",
        response_model=WardReport | RollupReport,
        responses={
            200: {
                "description": "The report: JSON (schema docs/report.schema.json), CSV or HTML.",
                "content": {"text/csv": {}, "text/html": {}},
            },
            403: {"description": "The token's scope does not cover this unit"},
            404: {"description": "No such unit"},
            503: {"description": "consistent_with: not applied within wait_ms"},
        },
    )
    async def monthly_report(
        unit_id: Annotated[Identifier, Path(description="A ward, or a unit above wards.")],
        month: Annotated[str, Path(pattern=MONTH, description="YYYY-MM, Asia/Ho_Chi_Minh.")],
        principal: Annotated[Principal, Depends(bearer_principal)],
        reader: Annotated[ReportReader, Depends(_reader)],
        request: Request,
        format: Annotated[Literal["json", "csv", "html"], Query()] = "json",
        consistent_with: Annotated[
            list[str] | None,
            Query(
                max_length=100,
                description=(
                    "Read-your-writes: `stream_id@version` from a command's answer; the "
                    "report waits until the projection has applied it (repeatable)."
                ),
            ),
        ] = None,
        wait_ms: Annotated[int, Query(ge=0, le=30_000)] = 5_000,
    ) -> Any:
        if consistent_with:
            wanted = _positions(consistent_with)
            if isinstance(wanted, Response):
                return wanted
            try:
                await reader.wait_until_applied(wanted, wait_ms / 1000)
            except NotYetApplied as exc:
                return error_response(
                    503,
                    "not_yet_applied",
                    "Báo cáo chưa cập nhật kịp dữ liệu vừa ghi; vui lòng thử lại sau giây lát.",
                    "The report has not applied these events yet; retry shortly.",
                    behind=exc.behind,
                )
        try:
            report = await reader.report(principal, unit_id, ReportMonth(month))
        except UnknownUnit:
            return error_response(
                404,
                "unknown_unit",
                f"Không có đơn vị {unit_id}.",
                f"There is no unit {unit_id}.",
            )
        if format == "csv":
            return Response(
                "\ufeff" + render_csv(report),  # the BOM makes Excel read UTF-8
                media_type="text/csv; charset=utf-8",
                headers={"Content-Disposition": f'attachment; filename="{unit_id}-{month}.csv"'},
            )
        if format == "html":
            return HTMLResponse(render_html(report, request.app.state.templates_dir))
        return JSONResponse(report.model_dump(mode="json", by_alias=True))

    @router.get("/wards")
    async def list_wards(
        principal: Annotated[Principal, Depends(bearer_principal)],
        reader: Annotated[ReportReader, Depends(_reader)],
    ) -> dict[str, Any]:
        return {"wards": await reader.wards(principal)}

    @router.get("/wards/{ward_id}/meetings", responses={403: {"description": "Out of scope"}})
    async def ward_meetings(
        ward_id: Annotated[Identifier, Path()],
        principal: Annotated[Principal, Depends(bearer_principal)],
        reader: Annotated[ReportReader, Depends(_reader)],
    ) -> dict[str, Any]:
        meetings = await reader.ward_meetings(principal, ward_id)
        return {"ward_id": ward_id, "meetings_scheduled": len(meetings), "meetings": meetings}

    return router


def _positions(tokens: list[str]) -> dict[str, int] | Response:
    wanted: dict[str, int] = {}
    for token in tokens:
        if not re.match(STREAM_AT, token):
            return error_response(
                422,
                "invalid_consistent_with",
                "Tham số consistent_with phải có dạng stream_id@version.",
                "consistent_with must be stream_id@version.",
                value=token[:200],
            )
        stream_id, version = token.rsplit("@", 1)
        wanted[stream_id] = max(wanted.get(stream_id, 0), int(version))
    return wanted
