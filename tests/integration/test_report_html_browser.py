"""The printable report as a browser shows and prints it: Debian's headless chromium opens
the rendered page, a small script in a test copy measures every table against the page's
width and writes the result into the DOM, which ``--dump-dom`` returns. A screenshot and a
PDF are kept under ``test-artifacts/`` for a person to look at."""

from __future__ import annotations

import html as html_lib
import json
import re
import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from services.reports.adapters.rendering import render_html
from services.reports.domain.report import RollupReport, WardReport
from tests import report_samples

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (scripts/setup.sh installs it when run as root; "
    "or: apt-get install chromium)",
)

# Runs on load: any table wider than the page's content box, or any cell whose content
# spills out of it, is an overflow; so is a number, date, percentage or header word that
# had to be broken across lines to fit its column (legal, but it misreads on paper). The
# page's screen layout has the A4 content width.
PROBE = r"""<script>
addEventListener("load", () => {
  const page = document.querySelector("main.page");
  const css = getComputedStyle(page);
  const box = page.getBoundingClientRect();
  const left = box.left + parseFloat(css.paddingLeft);
  const right = box.right - parseFloat(css.paddingRight);
  const bad = [];
  const tables = document.querySelectorAll("table");
  tables.forEach((t, i) => {
    const r = t.getBoundingClientRect();
    if (r.left < left - 1 || r.right > right + 1 || t.scrollWidth > t.clientWidth + 1)
      bad.push(`table ${i}: ${Math.round(r.width)}px in ${Math.round(right - left)}px`);
    t.querySelectorAll("th, td").forEach(c => {
      if (c.scrollWidth > c.clientWidth + 1)
        bad.push(`table ${i} cell "${c.textContent.trim().slice(0, 30)}" spills out`);
      const token = c.tagName === "TH" ? /\S+/g : /\d[\d.,\/]*(\u00a0%)?/g;
      const walk = document.createTreeWalker(c, NodeFilter.SHOW_TEXT);
      for (let node; (node = walk.nextNode());) {
        for (const m of node.data.matchAll(token)) {
          const range = document.createRange();
          range.setStart(node, m.index);
          range.setEnd(node, m.index + m[0].length);
          if (range.getClientRects().length > 1) bad.push(`table ${i}: "${m[0]}" is split`);
        }
      }
    });
  });
  if (document.documentElement.scrollWidth > innerWidth) bad.push("page scrolls sideways");
  document.body.dataset.tables = tables.length;
  document.body.dataset.contentWidth = Math.round(right - left);
  document.body.dataset.overflow = JSON.stringify(bad);
});
</script>"""

SAMPLES: dict[str, Callable[[], WardReport | RollupReport]] = {
    "ward": report_samples.ward_report,
    "rollup": report_samples.province_rollup_report,
    "empty": report_samples.empty_ward_report,
}


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [
            CHROMIUM,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=5000",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


@pytest.mark.parametrize("name", SAMPLES)
def test_report_renders_prints_and_fits_the_page(name: str, tmp_path: Path) -> None:
    report = SAMPLES[name]()
    html = render_html(report)
    ARTIFACTS.mkdir(exist_ok=True)
    page = ARTIFACTS / f"report-{name}.html"
    page.write_text(html, encoding="utf-8")
    probed = tmp_path / "probed.html"
    probed.write_text(html.replace("</body>", PROBE + "</body>"), encoding="utf-8")

    dom = chromium(tmp_path / "p1", "--window-size=1000,1400", "--dump-dom", probed.as_uri()).stdout
    overflow = re.search(r'data-overflow="([^"]*)"', dom)
    assert overflow, "the probe did not run"
    assert json.loads(html_lib.unescape(overflow.group(1))) == [], "a table overflows"
    tables = int(re.search(r'data-tables="(\d+)"', dom).group(1))  # type: ignore[union-attr]
    assert tables >= 3
    # The page was read as UTF-8 and the Vietnamese survived the round trip.
    assert "BÁO CÁO" in dom and "KẾT QUẢ SINH HOẠT CHI BỘ THÁNG 10/2026" in dom
    assert "ĐẢNG CỘNG SẢN VIỆT NAM" in dom
    if isinstance(report, WardReport) and report.cells:
        assert "ĐẢNG BỘ PHƯỜNG NAM NGẠN" in dom and "Đảng bộ phường Nam Ngạn" in dom
        assert "Chi bộ phố Nguyễn Mộng Tuân 2" in dom and "Nam Ngạn, ngày 05 tháng 11" in dom
    if isinstance(report, RollupReport):
        assert "BÁO CÁO TỔNG HỢP" in dom and "Đảng bộ phường Điện Biên" in dom

    shot = ARTIFACTS / f"report-{name}.png"
    shot.unlink(missing_ok=True)
    chromium(tmp_path / "p2", "--window-size=1000,2600", f"--screenshot={shot}", page.as_uri())
    assert png_size(shot) == (1000, 2600)
    assert shot.stat().st_size > 50_000, "the screenshot is suspiciously small: blank page?"

    pdf = ARTIFACTS / f"report-{name}.pdf"
    pdf.unlink(missing_ok=True)
    chromium(tmp_path / "p3", "--no-pdf-header-footer", f"--print-to-pdf={pdf}", page.as_uri())
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF") and len(data) > 10_000
    print(f"\nreport {name}: {shot} {pdf}")


def test_a_font_with_vietnamese_coverage_is_installed() -> None:
    """The stack's fallbacks only help if one of them can draw "Đảng", "ường", "ẫ"."""
    fc_list = shutil.which("fc-list")
    if fc_list is None:
        pytest.skip("fontconfig's fc-list is not installed")
    families = subprocess.run(
        [fc_list, ":lang=vi", "family"], capture_output=True, text=True, check=True
    ).stdout
    stack = ("Times New Roman", "Tinos", "Liberation Serif", "DejaVu Serif", "Noto Serif")
    assert any(f in families for f in stack), f"no serif font for Vietnamese in: {families}"
