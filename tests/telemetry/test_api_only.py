"""Library code depends on the OpenTelemetry API only; the SDK is the application's choice."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import sys
from llm_init import InMemoryEventStore, LLMConfig, initialize_node_sync
from tests.support.steps import local_steps
initialize_node_sync(LLMConfig(model_id="m"), event_store=InMemoryEventStore(),
                     steps=local_steps())
print(sorted(m for m in ("opentelemetry.sdk", "structlog", "ray") if m in sys.modules))
"""


def test_an_initialization_without_an_application_loads_no_sdk() -> None:
    """Running an initialization imports neither the SDK nor structlog nor Ray."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LLM_INIT_METRICS_PORT": "off"}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                         text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_only_the_tracing_module_imports_the_sdk() -> None:
    """Among llm-init's modules only ``telemetry/tracing.py`` (application layer) names the SDK."""
    importing = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "llm_init").rglob("*.py")
                       if "opentelemetry.sdk" in p.read_text())
    assert importing == ["llm_init/telemetry/tracing.py"]
