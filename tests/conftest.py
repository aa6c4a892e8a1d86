"""Every test starts from the same global RNG state, whatever ran before it.

Library code draws from explicit generators; some tests draw inputs from torch's and numpy's
global RNGs, whose state would otherwise depend on the tests that ran earlier (and so on
which tests are selected): the same test could pass alone and fail in the suite.
"""

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_global_rngs():
    torch.manual_seed(0)
    np.random.seed(0)
