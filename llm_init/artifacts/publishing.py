"""Capture and publish after the replica is ready, in a background thread.

The outcome is appended to the initialization's log after its last event
(``ArtifactPublished`` or ``ArtifactPublishSkipped``), as ``ReplicaReady`` is. A callback vetoes
publishing by setting ``ctx.custom_data["llm_init.warm_start.publish"] = False``, or redirects it
to another store by setting it to that store's URL, at any time before the replica is ready.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm_init.artifacts.stores import open_artifact_store
from llm_init.artifacts.transfer import (
    EXISTS,
    FAILED,
    PUBLISHED,
    SKIPPED,
    VETOED,
    PublishOutcome,
    publish,
)
from llm_init.callbacks import EventObserver
from llm_init.events import ArtifactPublished, ArtifactPublishSkipped, Event
from llm_init.recorder import notify
from llm_init.steps.warm_start import PUBLISH_KEY, CapturePlan, capture_plan
from llm_init.stores import EventStore, open_store
from llm_init.stores.append import APPEND_ATTEMPTS, append_next
from llm_init.telemetry import names, spans
from llm_init.telemetry.redaction import exception_message, redact_text

if TYPE_CHECKING:
    from llm_init.context import NodeInitializationContext

_log = logging.getLogger(__name__)


def start_publish(ctx: NodeInitializationContext, *, event_store: EventStore | None = None,
                  event_store_location: str | None = None,
                  observers: Sequence[EventObserver] = ()) -> threading.Thread | None:
    """Publish what vLLM cached for ``ctx``'s engine, in a daemon thread (returned; ``None``
    when this initialization has no warm start). The outcome goes to ``event_store`` (or the
    store at ``event_store_location``) and to ``observers``."""
    plan = capture_plan(ctx)
    if plan is None or not plan.settings.publish:
        return None
    choice = ctx.custom_data.get(PUBLISH_KEY)
    thread = threading.Thread(target=_publish, name=f"llm-init-publish-{ctx.init_id[:8]}",
                              args=(ctx.init_id, plan, choice, event_store,
                                    event_store_location, tuple(observers)), daemon=True)
    thread.start()
    return thread


def publish_plan(init_id: str, plan: CapturePlan, choice: Any = None, *,
                 event_store: EventStore | None = None, event_store_location: str | None = None,
                 observers: Sequence[EventObserver] = ()) -> PublishOutcome:
    """``start_publish``'s work in the caller's thread (``llm-init warm build`` waits for it):
    publish ``plan`` unless ``choice`` vetoes or redirects it, record the outcome; never
    raises for what the store does."""
    return _publish(init_id, plan, choice, event_store, event_store_location, tuple(observers))


def _publish(init_id: str, plan: CapturePlan, choice: Any, event_store: EventStore | None,
             location: str | None, observers: Sequence[EventObserver]) -> PublishOutcome:
    settings = plan.settings
    if isinstance(choice, str) and choice:
        settings = dataclasses.replace(settings, url=choice)
    key = plan.key
    with spans.current_tracer().start_as_current_span(names.SPAN_ARTIFACT_PUBLISH,
                                       attributes={names.ATTR_ARTIFACT_KEY: key.digest,
                                                   names.ATTR_INIT_ID: init_id}) as span:
        if choice is False:
            outcome = PublishOutcome(result=SKIPPED, key=key.digest, reason=VETOED,
                                     message=f"ctx.custom_data[{PUBLISH_KEY!r}] is False")
        elif plan.restored:
            outcome = PublishOutcome(result=SKIPPED, key=key.digest, reason=EXISTS,
                                     message="this replica started from the artifact")
        else:
            try:
                store = open_artifact_store(settings.url, endpoint_url=settings.endpoint_url)
                outcome = publish(store, key.digest, key.parts, Path(plan.cache_root),
                                  max_bytes=settings.max_bytes, signer=settings.signer(),
                                  trust=settings.trust())
            except Exception as exc:
                outcome = PublishOutcome(result=SKIPPED, key=key.digest, reason=FAILED,
                                         message=exception_message(exc))
        span.set_attribute(names.ATTR_ARTIFACT_RESULT, outcome.result)
        span.set_attribute(names.ATTR_ARTIFACT_BYTES, outcome.bytes)
        if outcome.reason:
            span.set_attribute(names.ATTR_ARTIFACT_REASON, outcome.reason)
    if outcome.result == PUBLISHED:
        fields: dict[str, Any] = dict(key=key.digest, store=settings.location,
                                      bytes=outcome.bytes, files=outcome.files,
                                      seconds=outcome.seconds, signed_by=outcome.signed_by)
        event_type: type[Event] = ArtifactPublished
    else:
        fields = dict(key=key.digest, store=settings.location, reason=outcome.reason or "",
                      message=redact_text(outcome.message or ""), bytes=outcome.bytes,
                      seconds=outcome.seconds)
        event_type = ArtifactPublishSkipped
    _log.info("llm-init: warm-start artifact %s: %s%s", key.digest, outcome.result,
              f" ({outcome.reason}: {outcome.message})" if outcome.reason else "")
    event = append_after_last(init_id, event_type, fields, event_store, location)
    if event is not None:
        notify(observers, event)
    return outcome


def append_after_last(init_id: str, event_type: type[Event], fields: dict[str, Any],
                      event_store: EventStore | None, location: str | None) -> Event | None:
    """Append one event after the last of ``init_id``'s log; a store error is logged."""
    if event_store is None and (location or "").startswith("memory:"):
        return None
    try:
        store = event_store if event_store is not None else open_store(location, create=False)
    except Exception as exc:
        _log.warning("llm-init: cannot record %s: %r", event_type.TYPE, exc)
        return None
    def build(events: Sequence[Event], sequence: int) -> Event:
        return event_type(init_id=init_id, sequence=sequence, timestamp=datetime.now(UTC),
                          node_id=events[-1].node_id, **fields)

    try:
        return append_next(store, init_id, build, attempts=APPEND_ATTEMPTS)
    except Exception as exc:
        _log.warning("llm-init: cannot record %s: %r", event_type.TYPE, exc)
        return None
    finally:
        if event_store is None:
            store.close()
