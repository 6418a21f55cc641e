"""Label keys of ``InitializationStarted.labels`` that fleet queries filter and group by.

The Serve integration sets them; anyone calling ``initialize_node(..., labels=...)`` may too.
Values are free strings; keys outside this list are kept and can be filtered with ``--label``.
"""

from __future__ import annotations

APPLICATION = "application"
"""The Ray Serve application the replica belongs to."""
DEPLOYMENT = "deployment"
"""The Ray Serve deployment (within the application)."""
REPLICA = "replica"
"""The Ray Serve replica id."""
NODE_ID = "node_id"
"""The Ray node id (hex) the replica runs on; falls back to the events' ``node_id`` header."""

FLEET_LABELS: tuple[str, ...] = (APPLICATION, DEPLOYMENT, REPLICA, NODE_ID)
