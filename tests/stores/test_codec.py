"""The one mapper between events and stored records: strict about what it does not know,
lenient with what older writers left out."""

from __future__ import annotations

import dataclasses
import json

import pytest

from llm_init import ContextChanged, EventStoreError
from llm_init.stores import StoredEvent, decode, encode
from tests.support.logs import T0


def changed(**fields: object) -> ContextChanged:
    base: dict[str, object] = {"init_id": "x", "sequence": 3, "timestamp": T0,
                               "field": "custom_data", "key": "n", "old": None, "new": 1,
                               "changed_by": "cb", "hook": "on_pre_download"}
    return ContextChanged(**{**base, **fields})  # type: ignore[arg-type]


def with_body(record: StoredEvent, **changes: object) -> StoredEvent:
    body = {**json.loads(record.state), **changes}
    body = {k: v for k, v in body.items() if v is not _DROP}
    return dataclasses.replace(record, state=json.dumps(body))


_DROP = object()


def test_an_unknown_field_is_an_error_naming_the_event() -> None:
    """A body with a field the event type lacks fails to decode, naming init and sequence."""
    record = with_body(encode(changed()), colour="red")
    with pytest.raises(EventStoreError, match=r"x#3 \(ContextChanged\).*colour"):
        decode(record)


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
