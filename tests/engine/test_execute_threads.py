"""Worker processes hold to their share of the cores, BLAS pools included."""

import subprocess
import sys


def test_limit_threads_reaches_torch_and_the_blas_pools_numpy_and_scipy_load():
    code = (
        "import torch, threadpoolctl\n"
        "from dltheory.engine.execute import limit_threads\n"
        "limit_threads(1)\n"
        "pools = threadpoolctl.threadpool_info()\n"
        "assert torch.get_num_threads() == 1\n"
        "assert any(p['user_api'] == 'blas' for p in pools), pools\n"
        "assert all(p['num_threads'] == 1 for p in pools if p['user_api'] == 'blas'), pools\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
