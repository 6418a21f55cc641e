"""llm-init: a customizable, observable initialization runtime for LLM replicas."""

from __future__ import annotations

from llm_init.callbacks import (
    EventObserver,
    NodeInitializationCallback,
    NodeInitializationCallbackBase,
)
from llm_init.config import LLMConfig, NodeModelDownloadable
from llm_init.context import NodeInitializationContext
from llm_init.errors import (
    CallbackConfigError,
    CallbackError,
    ContextFieldError,
    DuplicateEventError,
    EventRejectedError,
    EventStoreError,
    HookTimeoutError,
    LLMInitError,
    StepError,
    StepNotConfiguredError,
    UnknownInitializationError,
)
from llm_init.events import (
    ContextChanged,
    Event,
    EventRejected,
    HookCompleted,
    HookFailed,
    HookStarted,
    InitializationCompleted,
    InitializationFailed,
    InitializationStarted,
    PhaseCompleted,
    PhaseFailed,
    PhaseSkipped,
    PhaseStarted,
    ReplicaLaunched,
    ReplicaReady,
    StepCompleted,
    StepFailed,
    StepProgressed,
    StepStarted,
)
from llm_init.launch import ReplicaLaunch
from llm_init.phases import HOOK_NAMES, PHASES, Phase
from llm_init.replay import ReplayedInitialization, TimelineEntry, read_events, replay
from llm_init.runtime import initialize_node, initialize_node_sync
from llm_init.steps import DefaultStep, DefaultSteps
from llm_init.stores import EventStore, InMemoryEventStore, SQLiteEventStore, open_store

__all__ = [
    "HOOK_NAMES",
    "PHASES",
    "CallbackConfigError",
    "CallbackError",
    "ContextChanged",
    "ContextFieldError",
    "DefaultStep",
    "DefaultSteps",
    "DuplicateEventError",
    "Event",
    "EventObserver",
    "EventRejected",
    "EventRejectedError",
    "EventStore",
    "EventStoreError",
    "HookCompleted",
    "HookFailed",
    "HookStarted",
    "HookTimeoutError",
    "InMemoryEventStore",
    "InitializationCompleted",
    "InitializationFailed",
    "InitializationStarted",
    "LLMConfig",
    "LLMInitError",
    "NodeInitializationCallback",
    "NodeInitializationCallbackBase",
    "NodeInitializationContext",
    "NodeModelDownloadable",
    "Phase",
    "PhaseCompleted",
    "PhaseFailed",
    "PhaseSkipped",
    "PhaseStarted",
    "ReplayedInitialization",
    "ReplicaLaunch",
    "ReplicaLaunched",
    "ReplicaReady",
    "SQLiteEventStore",
    "StepCompleted",
    "StepError",
    "StepFailed",
    "StepNotConfiguredError",
    "StepProgressed",
    "StepStarted",
    "TimelineEntry",
    "UnknownInitializationError",
    "initialize_node",
    "initialize_node_sync",
    "open_store",
    "read_events",
    "replay",
]
