import pytest
import torch


@pytest.fixture(params=[1, 2, 4], ids=["1-thread", "2-threads", "4-threads"])
def threads(request):
    """Run a test at 1, 2 and 4 intra-op threads (the count set, not the cores present,
    decides how kernels split their work, so 4 threads test it on a 2-core machine too)."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)
