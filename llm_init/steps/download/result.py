"""The typed outcome of the download step, as ``ctx.download_result`` holds it."""

from __future__ import annotations

from dataclasses import dataclass, field

from llm_init.config import NodeModelDownloadable


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeDownloadResult:
    """What one node holds after the download, and what this run fetched there."""

    node_id: str  # Ray's node id under Ray, else the host name
    path: str | None  # the model directory on that node; None when it fetched nothing (NONE)
    what: NodeModelDownloadable
    files: tuple[str, ...]  # relative paths present under ``path``
    bytes_total: int  # size of those files
    bytes_fetched: int  # bytes this run moved from the source (0 when all were cached)
    files_fetched: int
    seconds: float
    throughput_bytes_per_s: float  # bytes_fetched / seconds
    verified: dict[str, int] = field(default_factory=dict)  # files fetched, by check
    revision: str | None = None  # the resolved revision (a commit on the Hub)
    resolved_from: str = "source"  # "source", "llm-init cache", "hub cache" or "in place"
    ran_in: str = "process"  # "process" (the initializing one) or "ray_task"
    hostname: str = ""
    pid: int = 0
    trace_id: str | None = None  # the trace the node's download ran under
    started_at: float | None = None  # wall-clock time (``time.time()``) the download began


@dataclass(frozen=True, slots=True, kw_only=True)
class DownloadResult:
    """The download of one initialization: the local path, the source and every node."""

    source: str
    source_kind: str  # "local", "s3" or "hf"
    revision: str | None
    path: str | None  # the model directory on this (the local) node: what the engine loads
    nodes: tuple[NodeDownloadResult, ...]
    bytes_total: int  # over all nodes
    bytes_fetched: int  # over all nodes
    files_total: int  # over all nodes
    files_fetched: int  # over all nodes
    seconds: float  # wall-clock time of the whole step
    throughput_bytes_per_s: float  # bytes_fetched / seconds
    # The bucket URI vLLM streams the weights from (a streaming load format, no node fetched
    # them); None: the engine loads ``path``. See docs/streaming.md.
    streamed_from: str | None = None

    @property
    def node_ids(self) -> tuple[str, ...]:
        return tuple(n.node_id for n in self.nodes)

    def for_node(self, node_id: str) -> NodeDownloadResult:
        """The result of one node; ``KeyError`` naming the known nodes if it has none."""
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(f"no download result for node {node_id}; nodes: {self.node_ids}")
