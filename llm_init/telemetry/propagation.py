"""Carry the trace context across process boundaries: into a dict, or into environment variables.

Work an initialization runs elsewhere (a Ray task downloading on another node, an engine worker
process) continues the same trace when it starts under the context injected here::

    carrier = propagation.inject()                 # in the initialization, inside its span
    ...
    with propagation.continued(carrier):           # in the other process
        with tracer.start_as_current_span("download on node 2"): ...

For a child process, ``env_vars()`` gives ``TRACEPARENT``/``TRACESTATE`` (the OpenTelemetry
convention for environment carriers, also read by vLLM), ``in_environment()`` sets them for a
block in which children are started, and ``continued()`` without a carrier reads them back.
Only the OpenTelemetry API is used: without an SDK this costs nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context

from llm_init.environ import environment
from llm_init.telemetry.names import ENV_TRACEPARENT, ENV_TRACESTATE

_ENV_NAMES = {"traceparent": ENV_TRACEPARENT, "tracestate": ENV_TRACESTATE, "baggage": "BAGGAGE"}


def inject(carrier: dict[str, str] | None = None, context: Context | None = None
           ) -> dict[str, str]:
    """Write the current (or the given) trace context into ``carrier`` as W3C headers
    (``traceparent``, ``tracestate``, ``baggage``) and return it; empty when no span is active."""
    carrier = {} if carrier is None else carrier
    propagate.inject(carrier, context=context)
    return carrier


def extract(carrier: Mapping[str, str]) -> Context:
    """The trace context carried by ``carrier`` (header names in any case)."""
    return propagate.extract({k.lower(): v for k, v in carrier.items()})


def env_vars(context: Context | None = None) -> dict[str, str]:
    """The current (or the given) trace context as environment variables for a child process:
    ``TRACEPARENT`` and, when set, ``TRACESTATE`` and ``BAGGAGE``."""
    return {_ENV_NAMES.get(k, k.upper()): v for k, v in inject(None, context).items()}


@contextmanager
def in_environment(context: Context | None = None) -> Iterator[dict[str, str]]:
    """Put the current (or the given) trace context into the environment for the block
    (``env_vars()``), so that processes started inside continue the trace; yield it as W3C
    headers. Afterwards every such variable is as it was, whoever set it inside."""
    carrier = inject(None, context)
    values = {_ENV_NAMES.get(k, k.upper()): v for k, v in carrier.items()}
    with environment(values, also_restore=_ENV_NAMES.values()):
        yield carrier


def context_from_env(environ: Mapping[str, str] | None = None) -> Context | None:
    """The trace context a parent process put into the environment, or ``None``."""
    env = os.environ if environ is None else environ
    if ENV_TRACEPARENT not in env and ENV_TRACEPARENT.lower() not in env:
        return None
    carrier = {header: env.get(name) or env.get(name.lower()) or ""
               for header, name in _ENV_NAMES.items()}
    context = extract({k: v for k, v in carrier.items() if v})
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def parent_context() -> Context | None:
    """Where a new root span should hang: the active span if there is one, else the context in
    ``TRACEPARENT``, else ``None`` (a new trace)."""
    if trace.get_current_span().get_span_context().is_valid:
        return None  # the current context is used as it is
    return context_from_env()


@contextmanager
def continued(carrier: Mapping[str, str] | None = None) -> Iterator[Context]:
    """Make the carried context (or, with no carrier, the one in ``TRACEPARENT``) current, so
    that spans started inside continue the parent's trace."""
    if carrier is not None:
        context = extract(carrier)
    else:
        context = context_from_env() or otel_context.get_current()
    token = otel_context.attach(context)
    try:
        yield context
    finally:
        otel_context.detach(token)
