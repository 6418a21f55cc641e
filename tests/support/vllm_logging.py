"""Stand-ins for vLLM's logging configuration."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class FakeLoggingConfig:
    """The fields of vLLM's ``LoggingConfig`` the watch reads."""

    configure_logging: bool = True
    pylogging_config_file: str | None = None
    log_level: str = "INFO"
    formatter: str = "text"
