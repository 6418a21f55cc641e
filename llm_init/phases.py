"""The five phases of one initialization, in their fixed order, and the hooks around each."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Phase(StrEnum):
    PRE_INITIALIZATION = "pre_initialization"
    DOWNLOAD = "download"
    PLACEMENT_GROUP = "placement_group"
    ENGINE_INIT = "engine_init"
    POST_INITIALIZATION = "post_initialization"


@dataclass(frozen=True, slots=True)
class PhaseSpec:
    """Which hooks surround a phase and which default step (if any) runs between them."""

    phase: Phase
    pre_hook: str | None
    step: str | None
    post_hook: str | None


PHASES: tuple[PhaseSpec, ...] = (
    PhaseSpec(Phase.PRE_INITIALIZATION, "on_pre_initialization", None, None),
    PhaseSpec(Phase.DOWNLOAD, "on_pre_download", "download", "on_post_download"),
    PhaseSpec(Phase.PLACEMENT_GROUP, "on_pre_placement_group", "placement_group",
              "on_post_placement_group"),
    PhaseSpec(Phase.ENGINE_INIT, "on_pre_engine_init", "engine", "on_post_engine_init"),
    PhaseSpec(Phase.POST_INITIALIZATION, None, None, "on_post_initialization"),
)

HOOK_NAMES: tuple[str, ...] = (
    "on_pre_initialization",
    "on_pre_download",
    "on_post_download",
    "on_pre_placement_group",
    "on_post_placement_group",
    "on_pre_engine_init",
    "on_post_engine_init",
    "on_post_initialization",
)

PRE_HOOKS: frozenset[str] = frozenset(h for h in HOOK_NAMES if h.startswith("on_pre_"))
