"""Notices name cells and wards as registered, not by id; a commune is a xã, a ward a
phường; time left reads as people say it."""

from __future__ import annotations

import unicodedata
from datetime import timedelta

import pytest

from services.notifications.adapters.templating import TemplateRenderer
from services.notifications.domain.names import PlaceNames, UnitName, cell_title, duration_vi
from services.notifications.domain.notices import Trigger
from tests.unit.test_notifications_rules import CONTEXTS, FACTS, MEETING, START

CELL = "nam-ngan.to-01"
WARD = "nam-ngan"


def names(level: str, ward_name: str | None, cell_name: str | None) -> PlaceNames:
    return PlaceNames(
        cells={CELL: cell_name},
        units={WARD: UnitName(WARD, level, ward_name)},
    )


COMMUNE = names("commune", "Đảng bộ xã Thiệu Vân", "Chi bộ thôn Đình Hương")
WARD_NAMES = names("ward", "Đảng bộ phường Nam Ngạn", "Chi bộ phố Lê Lai 1")


def test_a_commune_is_a_xa_and_a_ward_a_phuong() -> None:
    assert UnitName(WARD, "commune", "Đảng bộ xã Thiệu Vân").committee == "Đảng ủy xã Thiệu Vân"
    assert UnitName(WARD, "ward", "Đảng bộ phường Nam Ngạn").committee == (
        "Đảng ủy phường Nam Ngạn"
    )
    # A name without its kind takes it from the level.
    assert UnitName(WARD, "commune", "Thiệu Vân").committee == "Đảng ủy xã Thiệu Vân"
    assert UnitName(WARD, "ward", "Nam Ngạn").organisation == "Đảng bộ phường Nam Ngạn"
    # The name's own kind wins (an older deployment registering its xã as "ward").
    assert UnitName(WARD, "ward", "Đảng bộ xã Thiệu Vân").committee == "Đảng ủy xã Thiệu Vân"
    # Above the commune the committee has its own name.
    assert UnitName("p", "province", "Đảng bộ tỉnh Thanh Hóa").committee == "Tỉnh ủy Thanh Hóa"
    assert UnitName("d", "district", "Đảng bộ thành phố Thanh Hóa").committee == (
        "Thành ủy Thanh Hóa"
    )
    # Decomposed (NFD) input is read as the same words.
    nfd = unicodedata.normalize("NFD", "Đảng bộ xã Thiệu Vân")
    assert UnitName(WARD, "commune", nfd).committee == "Đảng ủy xã Thiệu Vân"


def test_the_id_stands_in_only_when_the_name_is_unknown() -> None:
    assert UnitName(WARD, "commune").committee == "Đảng ủy xã nam-ngan"
    assert UnitName(WARD, "ward").organisation == "Đảng bộ phường nam-ngan"
    assert UnitName(WARD).committee == "Đảng ủy nam-ngan"  # not even the level
    assert cell_title(CELL, None) == "Chi bộ nam-ngan.to-01"
    assert cell_title(CELL, "Chi bộ thôn Đình Hương") == "Chi bộ thôn Đình Hương"
    assert cell_title(CELL, "Tổ 3") == "Chi bộ Tổ 3"


@pytest.mark.parametrize(
    ("left", "said"),
    [
        (timedelta(minutes=25), "khoảng 25 phút"),
        (timedelta(minutes=1, seconds=10), "khoảng 1 phút"),
        (timedelta(seconds=20), "chưa đến 1 phút"),
        (timedelta(minutes=59, seconds=45), "khoảng 1 giờ"),
        (timedelta(hours=4), "khoảng 4 giờ"),
        (timedelta(hours=2, minutes=30), "khoảng 3 giờ"),  # half up, not to even
        (timedelta(hours=46, minutes=10), "khoảng 46 giờ"),
        (timedelta(hours=47, minutes=59), "khoảng 48 giờ"),
        (timedelta(hours=48), "khoảng 2 ngày"),
        (timedelta(hours=60), "khoảng 3 ngày"),  # two and a half days, half up
        (timedelta(hours=168), "khoảng 7 ngày"),
    ],
)
def test_time_left_reads_as_people_say_it(left: timedelta, said: str) -> None:
    assert duration_vi(left.total_seconds()) == said


DEADLINE = START + timedelta(days=22)  # FACTS' deadline


def test_a_deadline_warning_says_when_its_time_left_was_counted() -> None:
    as_of = DEADLINE - timedelta(hours=4)
    context = {"petition": FACTS, "remaining": timedelta(hours=4), "as_of": as_of}
    message = TemplateRenderer().render("petition_deadline", {**context, "names": WARD_NAMES})
    # The deadline is 19:30 on 25/12/2026 in Hà Nội, the warning four hours before.
    said = "(tính đến 15:30 ngày 25/12/2026, còn khoảng 4 giờ)"
    assert said in message.text and said in message.html


def test_a_deadline_warning_with_minutes_left_says_minutes() -> None:
    context = {
        "petition": FACTS,
        "remaining": timedelta(minutes=25),
        "as_of": DEADLINE - timedelta(minutes=25),
        "names": WARD_NAMES,
    }
    message = TemplateRenderer().render("petition_deadline", context)
    said = "(tính đến 19:05 ngày 25/12/2026, còn khoảng 25 phút)"
    assert said in message.text and said in message.html
    assert "0 giờ" not in message.text
    assert "Kính gửi Thường trực Đảng ủy phường Nam Ngạn," in message.text
    assert "Kiến nghị kn-1 của Chi bộ phố Lê Lai 1 đang do cấp phường, xã" in message.text


def test_a_communes_meeting_notice_is_signed_by_the_xa_with_the_cells_name() -> None:
    message = TemplateRenderer().render("meeting_scheduled", {"meeting": MEETING, "names": COMMUNE})
    assert message.subject == (
        "[Chi bộ thôn Đình Hương] Thông báo lịch sinh hoạt thường kỳ ngày 03/12/2026"
    )
    assert message.text.startswith("Kính gửi các đồng chí đảng viên Chi bộ thôn Đình Hương,")
    assert message.text.rstrip().endswith("Đảng ủy xã Thiệu Vân")
    assert "<strong>Chi bộ thôn Đình Hương</strong>" in message.html
    assert "<em>Đảng ủy xã Thiệu Vân</em>" in message.html
    assert "phường" not in message.text + message.html


def test_a_wards_meeting_notice_is_signed_by_the_phuong() -> None:
    message = TemplateRenderer().render(
        "meeting_scheduled", {"meeting": MEETING, "names": WARD_NAMES}
    )
    assert message.subject.startswith("[Chi bộ phố Lê Lai 1] ")
    assert message.text.rstrip().endswith("Đảng ủy phường Nam Ngạn")
    assert "<em>Đảng ủy phường Nam Ngạn</em>" in message.html


@pytest.mark.parametrize("trigger", [t for t in Trigger if t is not Trigger.DIGEST])
@pytest.mark.parametrize("known", [COMMUNE, WARD_NAMES], ids=["commune", "ward"])
def test_no_template_shows_a_cell_or_ward_id_once_the_names_are_known(
    trigger: Trigger, known: PlaceNames
) -> None:
    context, in_subject, in_text = CONTEXTS[trigger]
    message = TemplateRenderer().render(trigger.value, {**context, "names": known})
    for part in (message.subject, message.text, message.html):
        assert WARD not in part  # nor the cell's id, which starts with it
    assert in_subject in message.subject and in_text in message.text
    cell, ward = known.cell(CELL), known.unit(WARD)
    seen = message.subject + message.text
    assert cell in seen or ward.committee in seen or ward.organisation in seen
    if known is COMMUNE:
        assert "phường Nam Ngạn" not in seen and "Đảng ủy phường" not in seen


def test_subjects_name_the_ward_and_the_cell() -> None:
    renderer = TemplateRenderer()
    context, _, _ = CONTEXTS[Trigger.MEETING_MISSING]
    message = renderer.render("meeting_missing", {**context, "names": COMMUNE})
    assert message.subject == (
        "[Đảng bộ xã Thiệu Vân] Chi bộ thôn Đình Hương chưa sinh hoạt thường kỳ tháng 11/2026"
    )
    assert "Kính gửi Thường trực Đảng ủy xã Thiệu Vân," in message.text
    context, _, _ = CONTEXTS[Trigger.REPORT_LATE]
    message = renderer.render("report_late", {**context, "names": COMMUNE})
    assert (
        message.subject == "[Đảng bộ xã Thiệu Vân] Chưa gửi báo cáo tháng 11/2026 (hạn 10/12/2026)"
    )
    assert "Đảng ủy xã Thiệu Vân chưa gửi báo cáo tháng 11/2026" in message.text
    context, _, _ = CONTEXTS[Trigger.PETITION_RAISED]
    message = renderer.render("petition_raised", {**context, "names": COMMUNE})
    assert message.subject == (
        "[Kiến nghị] Chi bộ thôn Đình Hương tiếp nhận kiến nghị về giao thông, hạ tầng"
    )
    assert message.text.startswith("Kính gửi các đồng chí cấp ủy Chi bộ thôn Đình Hương,")
