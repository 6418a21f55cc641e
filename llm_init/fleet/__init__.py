"""Fleet-wide views of the event log: queries, statistics, diffs, live status, export/import.

Each works on any store; stores with the optional query and watch methods answer faster.
"""

from __future__ import annotations

from llm_init.fleet.diff import InitDiff, TimeDelta, ValueDelta, diff_initializations
from llm_init.fleet.query import (
    QueryError,
    find_initializations,
    parse_labels,
    parse_time,
    query_durations,
    query_initializations,
)
from llm_init.fleet.stats import PhaseStats, percentile, phase_stats
from llm_init.fleet.status import FleetFollower, InitStatus, fleet_status
from llm_init.fleet.transfer import ImportResult, export_lines, import_lines
from llm_init.fleet.weights import WeightStats, weight_stats
from llm_init.stores.base import InitQuery
from llm_init.weight_transfers import WeightTransfer, weight_transfers

__all__ = [
    "FleetFollower",
    "ImportResult",
    "InitDiff",
    "InitQuery",
    "InitStatus",
    "PhaseStats",
    "QueryError",
    "TimeDelta",
    "ValueDelta",
    "WeightStats",
    "WeightTransfer",
    "diff_initializations",
    "export_lines",
    "find_initializations",
    "fleet_status",
    "import_lines",
    "parse_labels",
    "parse_time",
    "percentile",
    "phase_stats",
    "query_durations",
    "query_initializations",
    "weight_stats",
    "weight_transfers",
]
