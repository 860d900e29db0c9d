"""What a compiled kernel binary asks of a GPU's streaming multiprocessor (SM), read without a GPU.

Registers a thread, bytes spilled to local memory, shared memory a block, the machine (SASS)
instructions in the binary (read by the cuobjdump that ships with triton), and the resident
warps an SM can hold with them. A kernel with no loop (LRN, pooling) runs each of its
instructions once a thread, so their count is its work.
For a memory-bound kernel (LRN, pooling) few resident warps means little memory in flight: a
config that spills or fits few warps on an SM is rarely worth timing. Only NVIDIA binaries.
"""
from __future__ import annotations

import ast
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass

from alexspec.kernels.ops.launch import triton

# an SM of compute capability 8.0-9.0 (A100, H100): registers, shared memory and warps it holds
SM_REGISTERS = 65536
SM_SHARED_BYTES = 228 * 1024
SM_WARPS = 64
SM_BLOCKS = 32
REGISTER_GRANULE = 8  # registers are handed out per thread in multiples of this (per warp: x 32)


@dataclass(frozen=True)
class Resources:
    registers: int  # per thread
    spilled_bytes: int  # per thread, in local memory (cuobjdump's STACK)
    shared_bytes: int  # per block, as launched (Triton's dynamic shared memory)
    warps: int  # per block
    instructions: int = 0  # in the binary (SASS)

    @property
    def resident_warps(self) -> int:
        """Warps an SM holds at once with these registers and this shared memory."""
        per_warp = -(-self.registers // REGISTER_GRANULE) * REGISTER_GRANULE * 32
        blocks = min(SM_BLOCKS, SM_REGISTERS // (per_warp * self.warps),
                     SM_SHARED_BYTES // self.shared_bytes if self.shared_bytes else SM_BLOCKS)
        return min(SM_WARPS, blocks * self.warps)


def cuobjdump() -> str | None:
    """The path of the cuobjdump shipped with the installed triton, None where there is none."""
    if triton is None:
        return None
    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    return path if os.access(path, os.X_OK) else None


def resources(kernel) -> Resources:
    """The resources of `kernel`, a triton CompiledKernel for an NVIDIA GPU."""
    tool = cuobjdump()
    if tool is None:
        raise RuntimeError("no cuobjdump in the installed triton: cannot read a binary's resources")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as binary:
        binary.write(kernel.asm["cubin"])
        binary.flush()
        report = subprocess.run([tool, "-res-usage", binary.name], capture_output=True, text=True, check=True).stdout
        sass = subprocess.run([tool, "-sass", binary.name], capture_output=True, text=True, check=True).stdout
    found = re.search(r"REG:(\d+) STACK:(\d+)", report)
    if found is None:
        raise RuntimeError(f"cuobjdump printed no register count for {kernel.name}: {report[-500:]}")
    instructions = len(re.findall(r"^\s+/\*[0-9a-f]{4,}\*/", sass, flags=re.MULTILINE))  # one address each
    return Resources(int(found[1]), int(found[2]), kernel.metadata.shared, kernel.metadata.num_warps, instructions)


def compiled_binaries(jit_function) -> list[tuple[dict, object]]:
    """Every binary `jit_function` (a triton JITFunction) holds compiled, with its compile-time
    constants by name (block sizes included) and num_warps/num_stages: [(constants, kernel)]."""
    found = []
    for cache in jit_function.device_caches.values():
        for key, kernel in cache[0].items():
            kernel = kernel.result() if hasattr(kernel, "result") else kernel
            found.append((_constants(jit_function, key, kernel), kernel))
    return found


def _constants(jit_function, key: str, kernel) -> dict:
    """The compile-time constants in a JIT cache key: '[(type, value) per argument]{options}'."""
    specialization = ast.literal_eval(key[:key.index("]{") + 1])
    constants = {name: value for name, (kind, value) in zip(jit_function.arg_names, specialization)
                 if kind == "constexpr" and not isinstance(value, str)}
    return {**constants, "num_warps": kernel.metadata.num_warps, "num_stages": kernel.metadata.num_stages}
