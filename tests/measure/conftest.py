import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # The CI machine has 2 cores shared with other jobs; torch's spinning worker threads
    # slow small ops by orders of magnitude under contention, so these tests run on one.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
