"""The exception hierarchy: one root, and messages that name the culprit."""

from __future__ import annotations


class LLMInitError(Exception):
    """Root of every error llm-init raises on purpose."""


class CallbackConfigError(LLMInitError):
    """A configured callback cannot be used (bad import path, no hooks, bad signature or kwargs)."""


class ContextFieldError(LLMInitError, TypeError):
    """A hook or step assigned a read-only field, or a value of the wrong type to a typed field."""


class CallbackError(LLMInitError):
    """A user callback's hook raised, or ran past its timeout."""

    def __init__(self, message: str, *, callback: str, hook: str) -> None:
        super().__init__(message)
        self.callback = callback
        self.hook = hook


class HookTimeoutError(CallbackError, TimeoutError):
    """A hook ran longer than the configured per-hook timeout."""


class StepError(LLMInitError):
    """A default step (download, placement group, engine) failed."""

    def __init__(self, message: str, *, step: str, phase: str) -> None:
        super().__init__(message)
        self.step = step
        self.phase = phase


class StepNotConfiguredError(LLMInitError):
    """A default step was needed but no real implementation was configured."""


class EventStoreError(LLMInitError):
    """The event store cannot be opened, read or appended to."""


class DuplicateEventError(EventStoreError):
    """An (init_id, sequence) pair was appended twice: a lost or duplicated write."""


class UnknownInitializationError(EventStoreError, LookupError):
    """No initialization with that id exists in the store."""


class EventStoreUnavailableError(EventStoreError):
    """The event store cannot be reached right now (a database down or unreachable); the same
    call may succeed later, which is what the buffering store waits for."""


class EventRejectedError(EventStoreError):
    """The event store refused an event for good (a value it cannot hold, a sequence number
    taken by another writer): the same append would fail again, so the initialization fails
    instead of retrying. The message names the event and, where known, its hook, step or field."""


class ArtifactError(LLMInitError):
    """A warm-start artifact or its store: what a restore or publish turns into a miss or a
    skip, and what ``llm-init warm`` reports."""
