"""The implicit-bias claims' helpers: padding to the vector block, checkpoints, norms."""

from __future__ import annotations

import math

import pytest
import torch

from dltheory.claims._implicit_bias import dual_exponent, log_checkpoints, pad_to_simd
from dltheory.models import VECTOR_BLOCK


@pytest.mark.parametrize("dtype, block", [(torch.float64, 16), (torch.float32, 32)])
def test_pad_to_simd_pads_to_whole_vector_blocks_and_no_further(dtype, block):
    assert VECTOR_BLOCK // torch.empty((), dtype=dtype).element_size() == block
    x = torch.randn(3, 10, 30, dtype=dtype)
    y = pad_to_simd(pad_to_simd(x, 2), 1, value=math.inf)
    up = lambda n: -(-n // block) * block  # noqa: E731
    assert y.shape == (3, up(10), up(30)) == ((3, 16, 32) if block == 16 else (3, 32, 32))
    assert torch.equal(y[:, :10, :30], x) and (y[:, :10, 30:] == 0).all() and (y[:, 10:] == math.inf).all()
    whole = torch.randn(2, block, dtype=dtype)
    assert pad_to_simd(whole, 1) is whole
    assert pad_to_simd(torch.randn(2, block + 1, dtype=dtype), -1).shape == (2, 2 * block)


def test_log_checkpoints_end_at_the_last_step_and_dual_exponents_pair_up():
    marks = log_checkpoints(1000, 10)
    assert marks[0] == 1 and marks[-1] == 1000 and marks == sorted(set(marks))
    assert dual_exponent(1) == math.inf and dual_exponent(math.inf) == 1 and dual_exponent(3) == 1.5
