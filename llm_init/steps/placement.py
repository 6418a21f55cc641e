"""The placement-group step: the replica's own placement group, or one made for this init.

Inside a Ray Serve replica (or any actor or task scheduled into a placement group) the step uses
that group, which Serve reserved before the replica started. Outside one it creates a group from
``LLMConfig.placement_bundles`` (or one bundle per tensor x pipeline parallel worker) with
``LLMConfig.placement_strategy`` and waits for it, at most ``placement_group_timeout_s``. A group
set by a hook (``ctx.placement_group``) is used as given. Which bundle landed on which node is
reported as ``report(placement_group={...})``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llm_init.errors import StepError
from llm_init.phases import Phase
from llm_init.steps.base import ProgressReporter

if TYPE_CHECKING:
    from llm_init.config import LLMConfig
    from llm_init.context import NodeInitializationContext

STEP = "placement_group"
_PHASE = Phase.PLACEMENT_GROUP.value


class PlacementGroupTimeoutError(StepError):
    """The placement group's bundles could not all be reserved in time."""

    def __init__(self, message: str) -> None:
        super().__init__(message, step=STEP, phase=_PHASE)


class RayNotInitializedError(StepError):
    """The step needs a connected Ray driver or worker."""

    def __init__(self, message: str) -> None:
        super().__init__(message, step=STEP, phase=_PHASE)


def default_bundles(config: LLMConfig, *, gpus_in_cluster: bool) -> list[dict[str, float]]:
    """``placement_bundles`` if given, else one bundle per engine worker (tensor x pipeline
    parallel size): one GPU each when the cluster has GPUs, one CPU each otherwise."""
    if config.placement_bundles:
        return [dict(b) for b in config.placement_bundles]
    per_worker = {"GPU": 1.0} if gpus_in_cluster else {"CPU": 1.0}
    workers = config.tensor_parallel_size * config.pipeline_parallel_size
    return [dict(per_worker) for _ in range(workers)]


def unmet_demand(bundles: Sequence[Mapping[str, float]], available: Mapping[str, float],
                 total: Mapping[str, float]) -> list[str]:
    """One line per resource the bundles ask for beyond what the cluster has free now."""
    demand: dict[str, float] = {}
    for bundle in bundles:
        for name, amount in bundle.items():
            demand[name] = demand.get(name, 0.0) + float(amount)
    lines = []
    for name in sorted(demand):
        free, owned = float(available.get(name, 0.0)), float(total.get(name, 0.0))
        if demand[name] > free:
            where = "the cluster has none" if owned == 0 else f"{free:g} of {owned:g} free"
            lines.append(f"{name}: bundles need {demand[name]:g}, {where}")
    return lines


@dataclass(frozen=True, slots=True, kw_only=True)
class PlacementGroupStep:
    """Gets the placement group the engine runs in; see the module docs.

    ``use_current``: use the placement group this process was scheduled into (a Serve
    replica's) when there is one. ``timeout_s`` overrides ``placement_group_timeout_s``.
    ``name`` names a group this step creates.
    """

    use_current: bool = True
    timeout_s: float | None = None
    name: str = ""

    async def run(self, ctx: NodeInitializationContext, report: ProgressReporter) -> None:
        ray = _connected_ray()
        from ray.util.placement_group import (
            PlacementGroup,
            get_current_placement_group,
            placement_group,
            remove_placement_group,
        )

        config = ctx.llm_config
        timeout = self.timeout_s if self.timeout_s is not None else config.placement_group_timeout_s
        started = time.perf_counter()
        created = False
        current = get_current_placement_group() if self.use_current else None
        if isinstance(ctx.placement_group, PlacementGroup):
            pg = ctx.placement_group
            source = "current" if current is not None and current.id == pg.id else "context"
        elif current is not None:
            pg, source = current, "current"
        else:
            if ctx.placement_group is not None:
                kind = type(ctx.placement_group)
                raise StepError(
                    f"ctx.placement_group holds a {kind.__module__}.{kind.__qualname__}, not a "
                    "ray.util.placement_group.PlacementGroup; set a real one or None",
                    step=STEP, phase=_PHASE)
            bundles = default_bundles(
                config, gpus_in_cluster=ray.cluster_resources().get("GPU", 0) > 0)
            pg = placement_group(bundles, strategy=config.placement_strategy, name=self.name)
            source, created = "created", True
        try:
            await asyncio.wait_for(_ready(pg), timeout)
        except TimeoutError:
            message = _timeout_message(ray, pg, config.placement_strategy, timeout, source)
            if created:
                remove_placement_group(pg)
            raise PlacementGroupTimeoutError(message) from None
        ctx.placement_group = pg
        report(placement_group=placement_summary(ray, pg, source=source,
                                                 wait_s=time.perf_counter() - started))


def placement_summary(ray: Any, pg: Any, *, source: str, wait_s: float) -> dict[str, Any]:
    """What the log keeps of a placement group: id, bundles, strategy and each bundle's node."""
    from ray.util.placement_group import placement_group_table

    table = placement_group_table(pg)
    addresses = {n["NodeID"]: n.get("NodeManagerAddress") for n in ray.nodes()}
    to_node = table.get("bundles_to_node_id") or {}
    return {
        "id": pg.id.hex(),
        "source": source,
        "strategy": table.get("strategy"),
        "state": table.get("state"),
        "bundles": [dict(b) for b in pg.bundle_specs],
        "bundles_to_node": {str(i): {"node_id": node, "address": addresses.get(node)}
                            for i, node in sorted(to_node.items())},
        "wait_s": round(wait_s, 3),
    }


async def _ready(pg: Any) -> None:
    from ray.util.placement_group import placement_group_table

    if placement_group_table(pg).get("state") == "CREATED":
        return
    await pg.ready()


def _timeout_message(ray: Any, pg: Any, strategy: str, timeout: float, source: str) -> str:
    bundles = [dict(b) for b in pg.bundle_specs]
    lines = unmet_demand(bundles, ray.available_resources(), ray.cluster_resources())
    if not lines:
        # Enough in total, but not where the strategy needs it (one node for STRICT_PACK,
        # distinct nodes for STRICT_SPREAD).
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        lines = [f"the cluster has the resources in total, but not placed as {strategy} needs: "
                 f"nodes have {nodes}"]
    what = {"created": "the placement group created for this initialization",
            "current": "this process's placement group",
            "context": "the placement group set on the context"}[source]
    return (f"{what} ({bundles}, strategy {strategy}) was not ready after {timeout:g} s; "
            "unmet demand: " + "; ".join(lines))


def _connected_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise RayNotInitializedError(
            "the placement group step needs Ray (pip install 'llm-init[serve]')") from exc
    if not ray.is_initialized():
        raise RayNotInitializedError(
            "the placement group step needs a running Ray: call ray.init() first, or return "
            "False from on_pre_placement_group to run without a placement group")
    return ray
