"""A vLLM general plugin: lets each vLLM process use the CPU's AMX tiles.

vLLM's CPU build picks its AMX kernels (attention, bf16 matmul) wherever the CPU reports AMX
tiles, but Linux lets a process execute tile instructions only after it has asked for the tile
state (``arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA)``). Nothing on vLLM 0.32's path asks, so
on such CPUs (Sapphire Rapids and later) the first attention call dies of SIGILL. The
permission is per process and reset by ``exec``, so asking in the replica does not cover the
EngineCore process vLLM spawns. vLLM runs its general plugins (entry point group
``vllm.general_plugins``) in every process it starts, before any model code: llm-init
registers ``request_amx_permission`` there. ``VLLM_PLUGINS`` can leave it out, as any plugin.
"""

from __future__ import annotations

import logging

_log = logging.getLogger(__name__)


def request_amx_permission() -> bool:
    """Ask the kernel for the AMX tile state where the CPU has AMX tiles; ``True`` when this
    process may now use them, ``False`` on CPUs without AMX (nothing to ask for)."""
    try:
        import torch
    except ImportError:  # vLLM always has torch; a bare import of this module may not
        return False
    cpu = torch.cpu
    if not cpu._is_amx_tile_supported():
        return False
    granted = bool(cpu._init_amx())
    if not granted:
        _log.warning("the CPU has AMX tiles but the kernel refused them to this process; "
                     "vLLM's AMX kernels will fail (SIGILL)")
    return granted
