"""Warm starts: vLLM's caches published after one replica starts and restored on the next.

Warm starts: what vLLM cached on one node (compiled graphs, model inspection), published to
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
    weights_of_listing,
)
from llm_init.artifacts.manifest import CorruptArtifactError, Manifest
from llm_init.artifacts.signing import (
    Signer,
    SigningKeyError,
    TrustedKeys,
    UntrustedArtifactError,
    load_private_key,
    trusted_keys,
)
from llm_init.artifacts.stores import (
    ArtifactDeniedError,
    ArtifactStore,
    ArtifactStoreError,
    ArtifactTooLargeError,
    DirectoryArtifactStore,
    S3ArtifactStore,
    open_artifact_store,
)
from llm_init.artifacts.transfer import PublishOutcome, RestoreOutcome, publish, restore

__all__ = [
    "ArtifactDeniedError",
    "ArtifactEntry",
    "ArtifactKey",
    "ArtifactStore",
    "ArtifactStoreError",
    "ArtifactTooLargeError",
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
    "Signer",
    "SigningKeyError",
    "TrustedKeys",
    "UntrustedArtifactError",
    "artifact_key",
    "build",
    "cpu_flags",
    "device_identity",
    "inspect_artifact",
    "list_artifacts",
    "load_private_key",
    "make_key",
    "open_artifact_store",
    "prune",
    "publish",
    "restore",
    "software_versions",
    "trusted_keys",
    "weights_identity",
    "weights_of_listing",
]
