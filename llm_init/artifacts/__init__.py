"""Warm starts: what vLLM cached on one node (compiled graphs, model inspection), published to
an artifact store after a replica starts and restored on the next node before its engine
starts. See docs/warm-starts.md."""

from llm_init.artifacts.build import BuildError, BuildOutcome, build
from llm_init.artifacts.catalog import (
    ArtifactEntry,
    CatalogError,
    PruneReport,
    inspect_artifact,
    list_artifacts,
    prune,
)
from llm_init.artifacts.key import (
    ArtifactKey,
    artifact_key,
    cpu_flags,
    device_identity,
    make_key,
    software_versions,
    weights_identity,
)
from llm_init.artifacts.manifest import CorruptArtifactError, Manifest
from llm_init.artifacts.stores import (
    ArtifactStore,
    ArtifactStoreError,
    DirectoryArtifactStore,
    S3ArtifactStore,
    open_artifact_store,
)
from llm_init.artifacts.transfer import PublishOutcome, RestoreOutcome, publish, restore

__all__ = [
    "ArtifactEntry",
    "ArtifactKey",
    "ArtifactStore",
    "ArtifactStoreError",
    "BuildError",
    "BuildOutcome",
    "CatalogError",
    "CorruptArtifactError",
    "DirectoryArtifactStore",
    "Manifest",
    "PruneReport",
    "PublishOutcome",
    "RestoreOutcome",
    "S3ArtifactStore",
    "artifact_key",
    "build",
    "cpu_flags",
    "device_identity",
    "inspect_artifact",
    "list_artifacts",
    "make_key",
    "open_artifact_store",
    "prune",
    "publish",
    "restore",
    "software_versions",
    "weights_identity",
]
