"""The printable report and its CSV, rendered from realistic samples (tests/report_samples)."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest

from services.reports.adapters.rendering import (
    committee,
    date_line,
    decimal,
    number,
    percent,
    render_csv,
    render_html,
)
from services.reports.domain.report import CellLine
from tests import report_samples


def text_of(html: str) -> str:
    """The page's text with tags and line breaks collapsed (no-break spaces kept), to
    assert on phrases."""
    return re.sub(r"[ \t\r\n]+", " ", re.sub(r"<[^>]+>", " ", html))


def test_ward_report_has_the_official_header_title_and_status() -> None:
    html = render_html(report_samples.ward_report())
    text = text_of(html)
    assert html.startswith("<!doctype html>") and '<html lang="vi">' in html
    assert '<meta charset="utf-8">' in html
    assert "ĐẢNG BỘ THÀNH PHỐ THANH HÓA" in text  # the nearest unit above
    assert "ĐẢNG BỘ PHƯỜNG NAM NGẠN" in text
    assert "ĐẢNG CỘNG SẢN VIỆT NAM" in text
    assert "Nam Ngạn, ngày 05 tháng 11 năm 2026" in text
    assert "-BC/ĐU" in text
    assert "BÁO CÁO KẾT QUẢ SINH HOẠT CHI BỘ THÁNG 10/2026" in text
    assert "từ ngày 01/10/2026 đến ngày 31/10/2026" in text  # the exclusive end, shown inclusive
    assert "trước ngày 10/11/2026" in text
    assert "Đã gửi đúng hạn (gửi lúc 16:20 ngày 04/11/2026)" in text
    assert "T/M ĐẢNG ỦY" in text and "Đảng ủy thành phố" not in text
    assert "Thành ủy Thanh Hóa (để báo cáo)" in text


def test_ward_report_has_the_numbered_sections_and_tables() -> None:
    report = report_samples.ward_report()
    text = text_of(render_html(report))
    for heading in (
        "I. Tình hình tổ chức sinh hoạt",
        "II. Tỷ lệ đảng viên dự sinh hoạt",
        "III. Chất lượng buổi sinh hoạt",
        "IV. Nghị quyết và việc thực hiện",
        "V. Kiến nghị của cử tri, đảng viên",
        "VI. Kiến nghị cần Đảng ủy phường Nam Ngạn xử lý trước ngày 10/11/2026",
    ):
        assert heading in text
    for cell in report.cells:
        assert cell.name in text
    assert "Chi bộ phố Nguyễn Mộng Tuân 2" in text
    assert "90,14\xa0%" in text  # 128 of 142: the ward's attendance, Vietnamese style
    assert "77,42\xa0%" in text  # a cell below target
    assert "Hoãn, hủy: Trùng lịch bầu cử tổ trưởng tổ dân phố" in text  # cancellation reason
    assert "Chi bộ phố Đông Sơn Không báo lý do" in text  # not held, no reason
    assert "Giao thông, hạ tầng" in text and "roads_infrastructure" not in text
    assert "Ngõ 126 Nguyễn Trãi (đoạn ngập úng khi mưa lớn)" in text  # a recurring topic
    assert "vượt thẩm quyền: 2" in text
    assert "Trung bình" in text and "Kém" in text  # every band is listed
    assert "Quá hạn" in text and "25/10/2026" in text  # a petition the ward must act on
    assert "Chưa chấm điểm" in text  # the open thematic meeting


def test_rollup_report_has_per_ward_and_per_group_tables_and_the_submission_counts() -> None:
    report = report_samples.province_rollup_report()
    text = text_of(render_html(report))
    assert "BÁO CÁO TỔNG HỢP KẾT QUẢ SINH HOẠT CHI BỘ THÁNG 10/2026" in text
    assert "ĐẢNG BỘ TỈNH THANH HÓA" in text and "Thanh Hóa, ngày 12 tháng 11 năm 2026" in text
    assert "-BC/TU" in text and "T/M BAN THƯỜNG VỤ" in text
    assert "đúng hạn 3" in text and "gửi muộn 1" in text and "chưa gửi 1" in text
    assert "Bảng 1a. Kết quả theo từng đơn vị trung gian" in text
    assert "Đảng bộ thành phố Thanh Hóa (5 đảng bộ)" in text
    for ward in report.wards:
        assert ward.unit.name in text
    assert "Tổng cộng 63 1.827 45/63" in text  # the totals row, thousands with a dot
    assert "Quá hạn, chưa gửi" in text and "08:05 12/11/2026" in text
    city = text_of(render_html(report_samples.rollup_report()))
    assert "đơn vị trung gian" not in city  # no groups, no group table


def test_html_is_escaped() -> None:
    report = report_samples.ward_report()
    evil = report.model_copy(
        update={"cells": [report.cells[0].model_copy(update={"name": "<script>x</script>"})]}
    )
    html = render_html(evil)
    assert "<script>x</script>" not in html and "&lt;script&gt;x&lt;/script&gt;" in html


def test_an_empty_ward_mid_month_renders_with_dashes() -> None:
    text = text_of(render_html(report_samples.empty_ward_report()))
    assert "ĐẢNG BỘ XÃ THIỆU VÂN" in text and "Tháng chưa kết thúc" in text
    assert "số liệu tính đến 00:00 ngày 13/10/2026" in text
    assert "Chưa có chi bộ nào." in text and "Chưa có buổi sinh hoạt nào." in text
    assert "đạt — (chỉ tiêu từ 90\xa0% trở lên)" in text
    assert "Không có kiến nghị nào đang chờ đảng ủy xử lý." in text


def test_page_is_self_contained_and_made_for_print() -> None:
    html = render_html(report_samples.ward_report())
    assert "@page { size: A4" in html and "table-layout: fixed" in html
    assert "display: table-header-group" in html and '"DejaVu Serif"' in html
    assert not re.search(r"""(src|href)=["']?https?:|@import|url\(""", html)


def test_a_deployment_template_wins(tmp_path: Path) -> None:
    (tmp_path / "_styles.css.j2").write_text("body { color: navy; }", encoding="utf-8")
    html = render_html(report_samples.ward_report(), templates_dir=tmp_path)
    assert "body { color: navy; }" in html and "@page" not in html
    assert "BÁO CÁO KẾT QUẢ SINH HOẠT CHI BỘ" in html  # the rest is the built-in template


def test_ward_csv_has_one_row_per_cell_with_the_api_field_names() -> None:
    report = report_samples.ward_report()
    rows = list(csv.reader(io.StringIO(render_csv(report))))
    assert rows[0] == list(CellLine.model_fields)
    assert len(rows) == 1 + len(report.cells)
    first = dict(zip(rows[0], rows[1], strict=True))
    assert first["name"] == "Chi bộ phố Nguyễn Mộng Tuân 1"
    assert first["rate"] == "0.9286" and first["held_on"] == "2026-10-03"
    assert first["below_target"] == "false" and first["band"] == "Tốt"
    cancelled = dict(zip(rows[0], rows[5], strict=True))
    assert cancelled["rate"] == "" and cancelled["cancel_reason"].startswith("Trùng lịch")
    long_name = dict(zip(rows[0], rows[7], strict=True))["name"]
    assert long_name.startswith("Chi bộ khu dân cư số 7 (phố Nguyễn Trãi, ngõ 126")  # a comma


def test_rollup_csv_has_one_row_per_ward_and_a_totals_row_with_dotted_columns() -> None:
    report = report_samples.province_rollup_report()
    rows = list(csv.DictReader(io.StringIO(render_csv(report))))
    assert len(rows) == len(report.wards) + 1
    assert [r["row"] for r in rows] == ["ward"] * len(report.wards) + ["total"]
    assert rows[0]["unit.name"] == "Đảng bộ phường Nam Ngạn"
    assert rows[0]["attendance.rate"] == "0.9014"
    assert rows[0]["status.state"] == "submitted_on_time"
    assert rows[0]["quality.bands.Tốt"] == "2"
    assert rows[0]["petitions.by_category.roads_infrastructure"] == "3"
    assert rows[0]["petitions.escalated_to_ward_by_reason.beyond_authority"] == "2"
    total = rows[-1]
    assert total["unit.unit_id"] == "th.thanh-hoa" and total["cells"] == "63"
    assert total["status.state"] == ""  # the roll-up itself has no submission
    assert "regular_meetings.not_held_cells" not in total  # lists stay out; counts are in


def test_empty_ward_csv_is_just_the_header() -> None:
    rows = list(csv.reader(io.StringIO(render_csv(report_samples.empty_ward_report()))))
    assert rows == [list(CellLine.model_fields)]


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.9347, "93,47\xa0%"), (1.0, "100,00\xa0%"), (0.0, "0,00\xa0%"), (None, "—")],
)
def test_percentages_are_written_the_vietnamese_way(value: float | None, expected: str) -> None:
    assert percent(value) == expected


def test_numbers_dates_and_committees() -> None:
    assert number(5200) == "5.200" and number(None) == "—"
    assert decimal(1234.56, 1) == "1.234,6"
    from datetime import UTC, datetime

    # 17:30 UTC on 4 February is already the 5th in Hà Nội; months below 3 take a zero.
    assert date_line(datetime(2026, 2, 4, 17, 30, tzinfo=UTC)) == "ngày 05 tháng 02 năm 2026"
    assert date_line(datetime(2026, 11, 5, 2, tzinfo=UTC)) == "ngày 05 tháng 11 năm 2026"
    assert committee("Đảng bộ phường Nam Ngạn") == "Đảng ủy phường Nam Ngạn"
    assert committee("Đảng bộ thành phố Thanh Hóa") == "Thành ủy Thanh Hóa"
    assert committee("Đảng bộ tỉnh Thanh Hóa") == "Tỉnh ủy Thanh Hóa"
    assert committee("Chi bộ Cơ quan") == "Chi bộ Cơ quan"


@pytest.mark.parametrize(
    "text", ['=HYPERLINK("http://x")', "+1+2", "-2+3", "@SUM(A1)", "\tx", "\rx", "=1"]
)
def test_csv_text_that_a_spreadsheet_would_run_gets_a_quote(text: str) -> None:
    report = report_samples.ward_report()
    evil = report.model_copy(
        update={
            "cells": [
                report.cells[4].model_copy(update={"name": text, "cancel_reason": text}),
                report.cells[0],
            ]
        }
    )
    rows = list(csv.DictReader(io.StringIO(render_csv(evil))))
    assert rows[0]["name"] == rows[0]["cancel_reason"] == "'" + text
    assert rows[1]["name"] == "Chi bộ phố Nguyễn Mộng Tuân 1"  # ordinary text as it is


def test_csv_numbers_stay_numbers_even_negative_ones() -> None:
    report = report_samples.ward_report()
    odd = report.model_copy(
        update={"cells": [report.cells[0].model_copy(update={"members": -3, "rate": -0.5})]}
    )
    row = next(csv.DictReader(io.StringIO(render_csv(odd))))
    assert row["members"] == "-3" and row["rate"] == "-0.5"
    assert row["held_on"] == "2026-10-03" and row["band"] == "Tốt"
