"""The fleet commands' tables; they live with the CLI's other views in ``llm_init.cli.views``."""

from __future__ import annotations

from llm_init.cli.views import (
    STATS_COLS,
    STATUS_COLS,
    STATUS_STYLE,
    Col,
    diff_view,
    fitted_table,
    plain,
    secs,
    stats_table,
    status_table,
)

__all__ = ["STATS_COLS", "STATUS_COLS", "STATUS_STYLE", "Col", "diff_view", "fitted_table",
           "plain", "secs", "stats_table", "status_table"]
