"""vLLM's processes may use the CPU's AMX tiles: llm-init's general plugin asks for them."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points

from llm_init.steps.vllm_plugin import request_amx_permission

# The kernel's answer, read in a fresh process (the permission is per process): the bitmask
# of extended states this process may use (ARCH_GET_XCOMP_PERM), bit 18 being XTILEDATA.
_PERMITTED = """
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
def permitted():
    mask = ctypes.c_uint64(0)
    libc.syscall(158, 0x1022, ctypes.byref(mask))  # SYS_arch_prctl, ARCH_GET_XCOMP_PERM
    return bool(mask.value & (1 << 18))
before = permitted()
if sys.argv[1] == "plugins":
    from vllm.plugins import load_general_plugins
    load_general_plugins()
print(before, permitted())
"""


def _cpu_has_amx_tiles() -> bool:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        return " amx_tile" in f.read()


def test_the_plugin_is_registered_where_vllm_looks_for_general_plugins():
    """vLLM finds llm-init's plugin among its general plugins, naming the AMX request."""
    found = {ep.name: ep.value for ep in entry_points(group="vllm.general_plugins")}
    assert found.get("llm_init_amx") == "llm_init.steps.vllm_plugin:request_amx_permission"


def test_vllm_loading_its_plugins_leaves_the_process_allowed_to_use_amx_tiles():
    """In a fresh process, vLLM's own plugin loading grants the tile state where the CPU has
    AMX (a new process has none), and asks for nothing where it has no AMX."""
    out = subprocess.run([sys.executable, "-c", _PERMITTED, "plugins"], capture_output=True,
                         text=True, check=True, timeout=300).stdout.split()
    has_amx = _cpu_has_amx_tiles()
    assert out == ["False", str(has_amx)]
    assert request_amx_permission() is has_amx
