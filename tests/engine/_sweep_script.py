"""Run the toy claim's sweep into a store: ``python _sweep_script.py STORE BACKEND WORKERS``.

Used by the tests as a separate process that can be killed midway."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from dltheory.claims.runner import run_claim  # noqa: E402
from dltheory.engine import Store  # noqa: E402
from tests.engine._toy_claim import CLAIM  # noqa: E402

if __name__ == "__main__":
    store_path, backend, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with Store.open(store_path) as store:
        result = run_claim(CLAIM, store, profile="smoke", backend=backend, workers=workers)
    print(result.results.counts(), result.skipped, flush=True)
