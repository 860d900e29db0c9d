"""What a kernel binary asks of an SM, and the warps an SM then holds (CUDA's occupancy rules)."""
from __future__ import annotations

import pytest

from alexspec.kernels.tuning.resources import Resources


@pytest.mark.parametrize("registers, shared_kb, warps, resident", [
    (255, 0, 4, 8),      # 256 x 32 registers a warp: 32,768 a block, two blocks in 65,536
    (64, 0, 4, 32),      # 8 blocks of 4 warps
    (56, 0, 4, 36),      # 1,792 registers a warp: 9 whole blocks
    (51, 0, 4, 36),      # rounded up to 56 registers a thread
    (32, 0, 1, 32),      # 64 one-warp blocks would fit the registers; an SM holds 32 blocks
    (16, 0, 8, 64),      # and 64 warps
    (64, 100, 8, 16),    # 100 KB of shared memory a block: two blocks in 228 KB
    (128, 20, 4, 16),    # registers bind before shared memory
])
def test_resident_warps_follow_the_sm_limits(registers, shared_kb, warps, resident):
    assert Resources(registers, 0, shared_kb * 1024, warps).resident_warps == resident
