"""A person's answer to an escalated case: validated like an inquiry response, refused clearly."""

from __future__ import annotations

from typing import Any

import pytest

from eventcenter.domain.errors import InvalidAnswer
from eventcenter.domain.escalation import Answer, AnswerAction


def test_an_acknowledgement_names_who_took_the_case_and_may_carry_a_note() -> None:
    plain = Answer.acknowledge("ann")
    noted = Answer.acknowledge("ann", "looking at the broker now")

    assert plain.action is AnswerAction.ACKNOWLEDGE
    assert plain.by == "ann"
    assert plain.note is None
    assert noted.note == "looking at the broker now"


def test_a_resolution_says_what_was_done() -> None:
    answer = Answer.resolve("bob", "  rotated the expired Redis password  ")

    assert answer.action is AnswerAction.RESOLVE
    assert answer.note == "rotated the expired Redis password"


@pytest.mark.parametrize("note", [None, "", "   "])
def test_a_resolution_without_a_note_is_refused(note: str | None) -> None:
    data: dict[str, Any] = {"action": "resolve", "by": "bob"}
    if note is not None:
        data["note"] = note

    with pytest.raises(InvalidAnswer) as raised:
        Answer.parse(data)

    assert raised.value.field == "note"
    assert "a resolve needs a non-empty note" in str(raised.value)


def test_an_empty_note_on_an_acknowledgement_counts_as_none() -> None:
    assert Answer.acknowledge("ann", "  ").note is None


def test_an_unknown_field_is_refused_naming_it_and_the_fields_an_answer_has() -> None:
    with pytest.raises(InvalidAnswer) as raised:
        Answer.parse({"action": "resolve", "by": "bob", "notes": "typo of note"})

    message = str(raised.value)
    assert "field 'notes': unknown field (an answer has: action, by, note)" in message
    assert "field 'note'" in message  # and the resolve still lacks its note: both are listed
    assert [field for field, _ in raised.value.problems] == ["note", "notes"]


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"action": "close", "by": "bob"}, "action"),
        ({"by": "bob"}, "action"),
        ({"action": "acknowledge"}, "by"),
        ({"action": "acknowledge", "by": "   "}, "by"),
        ({"action": "acknowledge", "by": "x" * 201}, "by"),
        ({"action": "resolve", "by": "bob", "note": "x" * 4001}, "note"),
        ({"action": "acknowledge", "by": 7}, "by"),
    ],
)
def test_invalid_answers_are_refused_naming_the_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidAnswer) as raised:
        Answer.parse(data)

    assert raised.value.field == field
    assert str(raised.value).startswith("invalid answer: field ")


def test_an_answer_body_is_read_from_json_text() -> None:
    answer = Answer.parse(b'{"action": "resolve", "by": "bob", "note": "restarted NATS"}')

    assert answer == Answer.resolve("bob", "restarted NATS")
    with pytest.raises(InvalidAnswer, match="field 'answer'"):
        Answer.parse(b"[1, 2]")


def test_the_published_schema_says_what_is_required_and_refuses_other_fields() -> None:
    schema = Answer.json_schema()

    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"action", "by"}
    assert set(schema["properties"]) == {"action", "by", "note"}


def test_an_answer_is_immutable() -> None:
    answer = Answer.acknowledge("ann")

    with pytest.raises(Exception, match="frozen"):
        answer.by = "eve"  # type: ignore[misc]
