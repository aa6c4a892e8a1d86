"""Cost of exact subgradients (dltheory.autodiff.exact_kinks) against plain PyTorch.

Prints, for an MLP 784-512-512-10 and a CNN (conv-relu-maxpool ×2, linear) on 28×28
inputs, fp32, CPU, batch 64/256/1024:
- time of forward+backward under ``exact_kinks`` divided by plain PyTorch's, on a batch
  without exact ties (the fast path: the gradient is PyTorch's bit for bit) and on a batch
  forced to hold ties in every ReLU layer (one sample all zeros, biases zeroed), the latter
  with tangents of the whole batch (``exact_kinks()``) and of the tied samples alone
  (``exact_kinks(batch_dim=0)``, side by side);
- the peak resident memory added by one forward+backward, divided by PyTorch's;
- how often exact ties occur while training with SGD on a real data set (scikit-learn
  digits, pixels/16 so the background is exactly 0) in fp32 and bfloat16.

Timings are medians of interleaved repeats, printed, never asserted. Run:
``python bench/autodiff.py`` (about 90 s on 2 cores); ``--threads N`` sets torch's
CPU threads (default 2; use 1 on a loaded machine, where waiting OpenMP threads distort
the timings); ``--cuda`` times the same workloads on the GPU (no tie-frequency table).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from _headline import headline
from dltheory.autodiff import exact_kinks

BATCHES = (64, 256, 1024)
REPEATS = 9
DEVICE = torch.device("cuda" if "--cuda" in sys.argv else "cpu")


def mlp(gen: torch.Generator) -> torch.nn.Module:
    net = torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512),
                              torch.nn.ReLU(), torch.nn.Linear(512, 10))
    return _init(net, gen)


def cnn(gen: torch.Generator) -> torch.nn.Module:
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(32 * 7 * 7, 10))
    return _init(net, gen)


def _init(net: torch.nn.Module, gen: torch.Generator) -> torch.nn.Module:
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) / max(p.shape[-1], 1) ** 0.5)
    return net


def inputs(kind: str, batch: int, gen: torch.Generator) -> torch.Tensor:
    shape = (batch, 784) if kind == "mlp" else (batch, 1, 28, 28)
    return torch.randn(shape, generator=gen)


def force_ties(net: torch.nn.Module, X: torch.Tensor) -> None:
    """Sample 0 all zeros and zero biases: every ReLU layer then has exact zeros."""
    with torch.no_grad():
        X[0] = 0
        for m in net:
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
                m.bias.zero_()


def step(net, X, y, mode):
    net.zero_grad(set_to_none=True)
    with mode:
        F.cross_entropy(net(X), y).backward()
    return mode


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, min_seconds: float = 0.1) -> float:
    """Seconds per call, averaged over enough calls to last ``min_seconds``."""
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        _sync()
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return elapsed / calls


def peak_added(fn) -> float:
    """Bytes by which one call raises memory above where it started: the CUDA allocator's
    peak, or on the CPU the resident set's (Linux)."""
    gc.collect()
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM, the peak resident set
    before = _status("VmRSS")
    fn()
    return _status("VmHWM") - before


def _status(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return float(line.split()[1]) * 1024
    raise RuntimeError(field)


def _cases():
    """(workload, batch, the four ways to take one step), for every workload and batch."""
    for kind, make in (("mlp", mlp), ("cnn", cnn)):
        for batch in BATCHES:
            gen = torch.Generator().manual_seed(batch)
            net, X = make(gen), inputs(kind, batch, gen)
            y = torch.randint(0, 10, (batch,), generator=gen)
            tied_net, tied_X = make(gen), X.clone()
            force_ties(tied_net, tied_X)
            net, X, y, tied_net, tied_X = (t.to(DEVICE) for t in (net, X, y, tied_net, tied_X))
            # one context per variant, as around a training loop (v is drawn once)
            fast, tied = exact_kinks(generator=gen), exact_kinks(generator=gen)
            per_sample = exact_kinks(generator=gen, batch_dim=0)
            yield kind, batch, {
                "plain": lambda net=net, X=X, y=y: step(net, X, y, nullcontext()),
                "fast": lambda net=net, X=X, y=y, m=fast: step(net, X, y, m),
                "plain_tied": lambda net=tied_net, X=tied_X, y=y: step(net, X, y, nullcontext()),
                "tied": lambda net=tied_net, X=tied_X, y=y, m=tied: step(net, X, y, m),
                "per_sample": lambda net=tied_net, X=tied_X, y=y, m=per_sample: step(net, X, y, m),
            }


def _ties(report) -> str:
    return ", ".join(f"{op} {n}" for op, n in sorted(report.ties.items()) if n) or "none"


def speed_table() -> None:
    where = torch.cuda.get_device_name() if DEVICE.type == "cuda" else \
        f"CPU, {torch.get_num_threads()} threads"
    print(f"## Time, exact_kinks vs plain PyTorch forward+backward (fp32, {DEVICE.type})\n")
    print(f"torch {torch.__version__}, {where}; median of {REPEATS} "
          "interleaved repeats; on a shared machine the ratios are noisy\n")
    print("| workload | batch | PyTorch ms | random batch: ratio | forced ties: ratio | "
          "forced ties, batch_dim=0: ratio | ties resolved (random / forced) |")
    print("|---|---|---|---|---|---|---|")
    ratios = {"random batches": [], "forced ties": []}
    for kind, batch, variants in _cases():
        for fn in variants.values():
            fn()  # warm-up
        times = {k: [] for k in variants}
        for _ in range(REPEATS):
            for k, fn in variants.items():
                times[k].append(timed(fn))
        med = {k: statistics.median(v) for k, v in times.items()}
        met = [_ties(variants[k]().report) for k in ("fast", "tied")]
        print(f"| {kind} | {batch} | {1e3 * med['plain']:.2f} | {med['fast'] / med['plain']:.2f} | "
              f"{med['tied'] / med['plain_tied']:.2f} | {med['per_sample'] / med['plain_tied']:.2f} | "
              f"{met[0]} / {met[1]} |")
        ratios["random batches"].append(med["fast"] / med["plain"])
        ratios["forced ties"].append(med["tied"] / med["plain_tied"])
    print()
    for what, values in ratios.items():
        headline(f"exact_kinks forward+backward time ÷ plain PyTorch, {what} "
                 f"({DEVICE.type}, {len(values)} workloads)",
                 f"median {statistics.median(values):.2f}× (max {max(values):.2f}×)",
                 "plain PyTorch on the same net and batch, interleaved in one run")


def memory_table() -> None:
    print("## Peak memory of one forward+backward, exact_kinks / plain PyTorch\n")
    print("(peak added by the step: CUDA allocator; on the CPU the resident set, glibc returning "
          "every block >= 64 KiB to the OS)\n")
    print("| workload | batch | PyTorch MiB | no tie: ratio | with ties: ratio | "
          "with ties, batch_dim=0: ratio |")
    print("|---|---|---|---|---|---|")
    worst = []
    for kind, batch, variants in _cases():
        for fn in variants.values():
            fn()
        mem = {k: max(peak_added(fn), 1.0) for k, fn in variants.items()}
        if mem["plain"] < 2**20:  # below a MiB the allocator's reuse decides, not the step
            print(f"| {kind} | {batch} | < 1 | - | - | - |")
            continue
        worst.append(max(mem["fast"] / mem["plain"], mem["tied"] / mem["plain_tied"]))
        print(f"| {kind} | {batch} | {mem['plain'] / 2**20:.1f} | {mem['fast'] / mem['plain']:.2f} | "
              f"{mem['tied'] / mem['plain_tied']:.2f} | {mem['per_sample'] / mem['plain_tied']:.2f} |")
    print()
    if worst:
        headline(f"exact_kinks peak memory ÷ plain PyTorch ({DEVICE.type}, {len(worst)} workloads "
                 f"≥ 1 MiB)", f"max {max(worst):.2f}×", "with or without ties, batch_dim unset")


def tie_frequency_table(steps: int = 30) -> None:
    """Fraction of SGD batches whose gradient met an exact tie, on scikit-learn digits."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    X_all = torch.tensor(digits.data, dtype=torch.float32) / 16  # exact binary fractions
    y_all = torch.tensor(digits.target)
    print(f"## Exact ties while training with SGD on digits ({steps} steps, lr 0.1, batch 256)\n")
    print("| workload | dtype | batches with a tie resolved by a tangent | ties per batch | "
          "undetermined | max-pool windows flat / identical per batch |")
    print("|---|---|---|---|---|---|")
    for kind in ("mlp", "cnn"):
        for dtype in (torch.float32, torch.bfloat16):
            gen = torch.Generator().manual_seed(0)
            if kind == "mlp":
                net = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(),
                                          torch.nn.Linear(256, 256), torch.nn.ReLU(),
                                          torch.nn.Linear(256, 10))
            else:
                net = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(),
                                          torch.nn.MaxPool2d(2), torch.nn.Flatten(),
                                          torch.nn.Linear(16 * 16, 10))
            net = _init(net, gen).to(dtype)
            opt = torch.optim.SGD(net.parameters(), lr=0.1)
            mode = exact_kinks(generator=gen)
            hit = ties = undetermined = flat = identical = 0
            with mode:
                for _ in range(steps):
                    idx = torch.randint(0, len(X_all), (256,), generator=gen)
                    X = X_all[idx].to(dtype)
                    X = X if kind == "mlp" else X.view(-1, 1, 8, 8)
                    opt.zero_grad()
                    F.cross_entropy(net(X).float(), y_all[idx]).backward()
                    opt.step()
                    r = mode.report
                    hit += r.n_ties > 0
                    ties += r.n_ties
                    undetermined += sum(r.undetermined.values())
                    flat += sum(r.flat.values())
                    identical += sum(r.identical.values())
            pool = f"{flat / steps:.0f} / {identical / steps:.1f}" if kind == "cnn" else "-"
            name = str(dtype).removeprefix("torch.")
            print(f"| {kind} | {name} | {hit}/{steps} ({100 * hit / steps:.0f}%) | "
                  f"{ties / steps:.2f} | {undetermined} | {pool} |")
    print()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--cuda", action="store_true", help="time on the GPU (no tie-frequency table)")
    parser.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    threads = args.threads
    torch.set_num_threads(threads)
    if args.memory:
        memory_table()
        sys.exit()
    start = time.perf_counter()
    speed_table()
    sys.stdout.flush()
    if DEVICE.type == "cuda":
        memory_table()
    else:
        # memory in a child process: every tensor-sized block mmap'd and returned on free,
        # so the resident set follows the live tensors (too slow a malloc for timings)
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
        subprocess.run([sys.executable, __file__, "--memory", "--threads", str(threads)], env=env, check=True)
        tie_frequency_table()
    print(f"(total {time.perf_counter() - start:.0f} s)")
