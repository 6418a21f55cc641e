"""The one mapper between events and stored records: a tolerant reader (unknown fields ignored,
left-out defaulted fields filled), exact, with one decode path for records and rows."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest

from llm_init import ContextChanged, EventStoreError, LLMConfig, initialize_node_sync
from llm_init.events import PhaseCompleted
from llm_init.stores import InMemoryEventStore
from llm_init.stores.codec import StoredEvent, decode, decode_rows, encode
from tests.support.callbacks import Busy
from tests.support.logs import T0
from tests.support.steps import setting_steps


def changed(**fields: object) -> ContextChanged:
    base: dict[str, object] = {"init_id": "x", "sequence": 3, "timestamp": T0,
                               "field": "custom_data", "key": "n", "old": None, "new": 1,
                               "changed_by": "cb", "hook": "on_pre_download"}
    return ContextChanged(**{**base, **fields})  # type: ignore[arg-type]  # fields of mixed types


def with_body(record: StoredEvent, **changes: object) -> StoredEvent:
    body = {**json.loads(record.state), **changes}
    body = {k: v for k, v in body.items() if v is not _DROP}
    return dataclasses.replace(record, state=json.dumps(body))


_DROP = object()


def test_an_unknown_field_is_ignored() -> None:
    """A body with a field the event type lacks decodes to the event without it."""
    assert decode(with_body(encode(changed()), colour="red")) == changed()


def test_a_real_log_decodes_the_same_on_both_paths() -> None:
    """Every event of a real run decodes to the event that was encoded."""
    memory = InMemoryEventStore()
    ctx = initialize_node_sync(LLMConfig(model_id="m", callback_class=Busy), event_store=memory,
                               steps=setting_steps())
    records = memory.read(ctx.init_id)
    assert [encode(decode(r)) for r in records] == records


def test_a_defaulted_field_an_older_writer_left_out_gets_its_default() -> None:
    """A body without a field that has a default decodes with that default."""
    record = with_body(encode(changed()), removed=_DROP, span_id=_DROP)
    assert decode(record) == changed()


def test_a_missing_required_field_is_an_error() -> None:
    """A body without a required field fails to decode."""
    with pytest.raises(EventStoreError, match="x#3"):
        decode(with_body(encode(changed()), changed_by=_DROP))


def test_integers_beyond_64_bits_round_trip() -> None:
    """A context value too large for a 64-bit integer decodes exactly."""
    event = changed(new=2**70 + 1)
    assert decode(encode(event)) == event


def test_ids_and_times_that_need_escaping_round_trip() -> None:
    """An init id with quotes, a backslash and a newline decodes exactly."""
    event = changed(init_id='odd "id"\\\n')
    assert decode(encode(event)) == event


def rows(records: list[StoredEvent]) -> list[tuple[object, ...]]:
    """The columns a store reads for ``decode_rows``: a record without its init id."""
    return [(r.sequence, r.topic, r.schema_version, r.timestamp, r.state) for r in records]


def real_log() -> list[StoredEvent]:
    memory = InMemoryEventStore()
    ctx = initialize_node_sync(LLMConfig(model_id="m", callback_class=Busy), event_store=memory,
                               steps=setting_steps())
    return memory.read(ctx.init_id)


def test_decode_rows_gives_what_decode_gives() -> None:
    """The rows of a real log decode to the events ``decode`` makes of its records."""
    log = real_log()
    assert decode_rows(log[0].init_id, rows(log)) == [decode(r) for r in log]


def test_decode_rows_escapes_an_odd_init_id() -> None:
    """An init id with quotes, a backslash and a newline decodes exactly from rows."""
    event = changed(init_id='odd "id"\\\n')
    assert decode_rows(event.init_id, rows([encode(event)])) == [event]


def outcome(decoding: Callable[[], object]) -> object:
    """What a decoding gives: its events, or its error's message."""
    try:
        return decoding()
    except EventStoreError as exc:
        return str(exc)


ODD_BODIES = ['{}', ' { "field": "custom_data" }', '{ "field": "custom_data" }',
              '{"new": 1, "x": [}', '{,"new": 1}']


@pytest.mark.parametrize("state", ODD_BODIES)
def test_decode_rows_treats_rows_of_another_shape_as_decode_does(state: str) -> None:
    """A body the encoder would not write (empty, spaced, broken) decodes, or fails, exactly
    as ``decode`` does with it."""
    record = dataclasses.replace(encode(changed()), state=state)
    assert outcome(lambda: decode_rows(record.init_id, rows([record]))) == \
        outcome(lambda: [decode(record)])


@pytest.mark.parametrize("timestamp", ["2025-01-01T12:00:00\n+00:00", "2025-01-01T12:00:00\\"])
def test_decode_rows_treats_a_time_with_a_control_character_or_backslash_as_decode_does(
        timestamp: str) -> None:
    """A stored time with a newline or a backslash decodes, or fails, as ``decode`` has it."""
    record = dataclasses.replace(encode(changed()), timestamp=timestamp)
    assert outcome(lambda: decode_rows(record.init_id, rows([record]))) == \
        outcome(lambda: [decode(record)])


def test_decode_rows_keeps_a_time_with_a_quote_inside_its_string() -> None:
    """A stored time with a quote is one (invalid) time, not a valid time and another field."""
    record = dataclasses.replace(encode(changed()),
                                 timestamp='2025-01-01T12:00:00+00:00","colour":"red')
    with pytest.raises(EventStoreError, match="x#3"):
        decode_rows(record.init_id, rows([record]))


def test_decode_rows_rejects_a_newer_schema_version() -> None:
    """A row newer than its event type is an error, worded as ``decode`` words it."""
    record = dataclasses.replace(encode(changed()), schema_version=99)
    with pytest.raises(EventStoreError, match="newer than this llm-init"):
        decode_rows(record.init_id, rows([record]))


def test_a_non_finite_float_field_reads_back_as_that_float() -> None:
    """A float field the encoder stored as ``"Infinity"`` decodes to infinity, not to the text."""
    event = PhaseCompleted(init_id="x", sequence=3, timestamp=T0, phase="download",
                           duration_s=math.inf)
    assert decode(encode(event)) == event


_AWKWARD_VALUES = [
    "plain", "é ☃ 😀", "\x7f\x00\n\t\"\\", "\ud800", None, True, False, 0, -7, 2**70, 1.5,
    -0.0, 1e-07, 1e16, 5e-324, (), ("a", "b"), [], [1, "x", None],
    {"b": {"z": 1, "a": [2.5e-8]}, "a": "é", "B": None}, {1: "int key", 2.5: "float key"},
]


@pytest.mark.parametrize("value", _AWKWARD_VALUES, ids=repr)
def test_a_body_is_stored_as_json_with_sorted_keys_and_ascii_text(value: object) -> None:
    """An event's body is stored exactly as ``json.dumps`` with sorted keys, compact
    separators and ASCII escapes writes it, whatever its fields hold."""
    event = changed(old=value, new={"k": value}, key="é")
    body = {f.name: getattr(event, f.name) for f in dataclasses.fields(event)
            if f.name not in ("init_id", "sequence", "timestamp")}
    assert encode(event).state == json.dumps(body, sort_keys=True, separators=(",", ":"),
                                             allow_nan=False)


@pytest.mark.parametrize("timestamp", [
    T0, T0.replace(microsecond=0), T0.replace(microsecond=120000), T0.replace(year=999),
    T0.replace(tzinfo=None), T0.astimezone(timezone(timedelta(hours=-3, minutes=-30))),
], ids=str)
def test_a_timestamp_is_stored_as_iso_text_with_microseconds(timestamp: datetime) -> None:
    """An event's time is stored as its ISO 8601 text with six fraction digits and its
    offset, in UTC or not, on the second or not."""
    assert encode(changed(timestamp=timestamp)).timestamp == \
        timestamp.isoformat(timespec="microseconds")
