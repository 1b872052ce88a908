"""The projection's JSON of a list of texts (agenda, who was present, topics) is the text
``json.dumps(..., ensure_ascii=False)`` gives, for any string."""

from __future__ import annotations

import json

from services.reports.domain.projection import _json

TEXTS = [
    [],
    ["Sinh hoạt chi bộ thường kỳ", "Việc khác 3"],
    ['say "hi"', "back\\slash", "line\nbreak\ttab", "\x00\x01\x1f", "\u2028\u2029", "😀"],
    [""],
]


def test_a_list_of_texts_is_what_json_dumps_gives() -> None:
    for texts in TEXTS:
        assert _json(texts) == json.dumps(texts, ensure_ascii=False)
