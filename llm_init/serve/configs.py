"""From Ray Serve LLM's ``LLMConfig`` (and llm-init's settings in it) to llm-init's own."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llm_init import labels
from llm_init.config import LLMConfig, NodeModelDownloadable
from llm_init.serve.ray_callbacks import adapter_class_for, download_mode, has_hooks
from llm_init.serve.settings import SETTINGS_KEY, LLMInitSettings

if TYPE_CHECKING:
    from llm_init.context import NodeInitializationContext


def settings_of(ray_llm_config: Any) -> LLMInitSettings:
    """The llm-init settings a Ray ``LLMConfig`` carries in ``experimental_configs``."""
    experimental = getattr(ray_llm_config, "experimental_configs", None) or {}
    return LLMInitSettings.from_mapping(experimental.get(SETTINGS_KEY))


class ReplicaPlacementGroup:
    """Puts the Serve replica's own placement group on the context before anything else runs,
    so that the download reaches every node of the group (as Ray's node initialization does)
    and every hook sees it."""

    def __init__(self, placement_group: Any) -> None:
        self.placement_group = placement_group

    def on_pre_initialization(self, ctx: NodeInitializationContext) -> None:
        """Fires first; sets ``placement_group`` to the replica's unless one is set."""
        if ctx.placement_group is None:
            ctx.placement_group = self.placement_group


def llm_init_config(ray_llm_config: Any, settings: LLMInitSettings,
                    ray_callback: Any = None, *,
                    replica_placement_group: Any = None) -> LLMConfig:
    """llm-init's ``LLMConfig`` for one Ray Serve LLM model: its id, source, engine arguments
    and placement, llm-init's callbacks, and the user's Ray callback (through an adapter).
    With ``replica_placement_group``, ``ReplicaPlacementGroup`` runs before them all."""
    engine_config = ray_llm_config.get_engine_config()
    source = ray_llm_config.model_loading_config.model_source
    if source is not None and not isinstance(source, str):
        source = getattr(source, "bucket_uri", None)  # a cloud mirror
    specs, kwargs = settings.callback_specs()
    mode = NodeModelDownloadable.MODEL_AND_TOKENIZER
    if has_hooks(ray_callback):
        specs = [adapter_class_for(type(ray_callback)), *specs]
        kwargs = [{"ray_callback": ray_callback}, *kwargs]
        mode = download_mode(ray_callback.ctx.worker_node_download_model)
    if replica_placement_group is not None:
        specs = [ReplicaPlacementGroup, *specs]
        kwargs = [{"placement_group": replica_placement_group}, *kwargs]
    return LLMConfig(
        model_id=ray_llm_config.model_id,
        model_source=source,
        engine_kwargs=dict(ray_llm_config.engine_kwargs),
        tensor_parallel_size=engine_config.tensor_parallel_degree,
        pipeline_parallel_size=engine_config.pipeline_parallel_degree,
        placement_bundles=engine_config.placement_bundles,
        placement_strategy=engine_config.placement_strategy,
        placement_group_timeout_s=settings.placement_group_timeout_s,
        runtime_env=dict(ray_llm_config.runtime_env) if ray_llm_config.runtime_env else None,
        local_node_download_model=mode,
        worker_node_download_model=mode,
        callback_class=specs or None,
        callback_kwargs=kwargs if specs else {},
        raise_error_on_callback=settings.raise_error_on_callback,
        hook_timeout_s=settings.hook_timeout_s,
        enable_metrics=settings.metrics,
        artifact_store=settings.artifact_store,
        overlap_weights=settings.overlap_weights,
    )


def replica_labels() -> dict[str, str]:
    """The fleet labels of the current Serve replica: application, deployment, replica and
    Ray node (empty outside a replica)."""
    try:
        import ray
        from ray import serve

        context = serve.get_replica_context()
        node_id = ray.get_runtime_context().get_node_id()
    except Exception:  # not in a replica: no labels
        return {}
    found = {labels.APPLICATION: getattr(context, "app_name", None),
             labels.DEPLOYMENT: getattr(context, "deployment", None),
             labels.REPLICA: getattr(context, "replica_tag", None),
             labels.NODE_ID: node_id}
    return {k: str(v) for k, v in found.items() if v}
