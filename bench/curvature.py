"""Hessian trace and top-5 eigenvalues: dltheory.measure against PyHessian,
hessian-eigenthings, curvlinops and BackPACK, side by side, on the anchor workloads.

Prints one table per workload and quantity: median seconds over rounds, speed relative to
PyHessian (PyHessian's time / the method's time; > 1 is faster) and relative error against
float64 ground truth computed by the other tools (BackPACK's exact diagonal for the trace,
curvlinops + scipy eigsh at tol=0 for the eigenvalues). Timings are printed, never asserted.

The other tools are not dependencies of dltheory: ``make bench`` installs them (the list is
``bench/tools.txt``) next to torch 2.13.0 without letting pip replace torch; by hand:

    pip install --no-deps --target .venv/bench-tools -r bench/tools.txt
    PYTHONPATH=.venv/bench-tools python bench/curvature.py [--rounds 3] [--threads 1]

A tool that does not import is reported and skipped.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import nn

from _headline import headline
from dltheory.measure import HessianOperator, batched_hvp, hessian_eigs, hessian_trace, model_loss


def _mlp(dtype):
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.Tanh(), nn.Linear(128, 128), nn.Tanh(), nn.Linear(128, 10))
    x = torch.randn(1024, 64, generator=g)
    y = torch.randint(0, 10, (1024,), generator=g)
    return model.to(dtype), x.to(dtype), y


def _cnn(dtype):
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.Tanh(), nn.Conv2d(8, 8, 3), nn.Tanh(), nn.Flatten(),
                          nn.Linear(8 * 4 * 4, 10))
    x = torch.randn(256, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (256,), generator=g)
    return model.to(dtype), x.to(dtype), y


WORKLOADS = {"MLP 64-128-128-10 tanh, n=1024": _mlp, "CNN conv8-conv8-fc10 tanh, 8x8, n=256": _cnn}


def _tools():
    found, missing = {}, {}
    for name, module in [("pyhessian", "pyhessian"), ("eigenthings", "hessian_eigenthings"),
                         ("curvlinops", "curvlinops"), ("backpack", "backpack")]:
        try:
            found[name] = __import__(module)
        except Exception as exc:  # any import failure means: skip the tool, say why
            missing[name] = f"{type(exc).__name__}: {exc}"
    return found, missing


def _ground_truth(make, tools):
    model, x, y = make(torch.float64)
    truth = {}
    if "backpack" in tools:
        from backpack import backpack, extend
        from backpack.extensions import DiagHessian
        m = extend(copy.deepcopy(model))
        loss = extend(nn.CrossEntropyLoss())(m(x), y)
        with backpack(DiagHessian()):
            loss.backward()
        truth["trace"] = float(sum(p.diag_h.sum() for p in m.parameters()))
        truth["trace_by"] = "BackPACK DiagHessian float64"
    else:
        truth["trace"] = float(hessian_trace(model_loss(model, nn.CrossEntropyLoss(), (x, y)),
                                             dict(model.named_parameters()), method="exact"))
        truth["trace_by"] = "dltheory exact (BackPACK missing)"
    if "curvlinops" in tools:
        from curvlinops import HessianLinearOperator
        from scipy.sparse.linalg import eigsh
        H = HessianLinearOperator(model, nn.CrossEntropyLoss(), list(model.parameters()), [(x, y)],
                                  check_deterministic=False).to_scipy()
        with threadpool_limits(1, "blas"):
            vals = eigsh(H, k=5, which="LA", tol=0, ncv=40, return_eigenvectors=False)
        truth["top5"] = np.sort(vals)[::-1]
        truth["top5_by"] = "curvlinops + scipy eigsh(tol=0) float64"
    else:
        truth["top5"] = hessian_eigs(model_loss(model, nn.CrossEntropyLoss(), (x, y)),
                                     dict(model.named_parameters()), k=5, tol=1e-10).numpy()
        truth["top5_by"] = "dltheory Lanczos tol=1e-10 float64 (curvlinops missing)"
    return truth


def _trace_methods(model, x, y, tools):
    crit = nn.CrossEntropyLoss()
    loss = model_loss(model, crit, (x, y))
    params = {n: p.detach() for n, p in model.named_parameters()}
    methods = {}
    if "pyhessian" in tools:
        from pyhessian import hessian

        def pyhessian_trace(n):
            def run():
                model.zero_grad(set_to_none=True)   # PyHessian accumulates into .grad (2x bug)
                h = hessian(model, crit, data=(x, y), cuda=False)
                return float(np.mean(h.trace(maxIter=n, tol=0))), n
            return run
        methods["PyHessian Hutchinson, 100 probes"] = pyhessian_trace(100)
        methods["PyHessian Hutchinson, 1000 probes"] = pyhessian_trace(1000)
    if "eigenthings" in tools:
        import hessian_eigenthings as he

        def eigenthings_trace():
            op = he.HessianOperator(model, [(x, y)], he.supervised_loss(crit))
            return float(he.trace(op, num_matvecs=100, method="hutchinson", seed=0).estimate), 100
        methods["hessian-eigenthings Hutchinson, 100"] = eigenthings_trace
    if "curvlinops" in tools:
        from curvlinops import HessianLinearOperator, hutchinson_trace

        def curvlinops_trace():
            H = HessianLinearOperator(model, crit, list(model.parameters()), [(x, y)],
                                      check_deterministic=False)
            return float(hutchinson_trace(H, 100)), 100
        methods["curvlinops hutchinson_trace, 100"] = curvlinops_trace
    if "backpack" in tools:
        from backpack import backpack, extend
        from backpack.extensions import DiagHessian
        extended = extend(copy.deepcopy(model))   # extend() installs hooks in place
        ext_crit = extend(nn.CrossEntropyLoss())

        def backpack_diag():
            extended.zero_grad(set_to_none=True)
            with backpack(DiagHessian()):
                ext_crit(extended(x), y).backward()
            return float(sum(p.diag_h.sum() for p in extended.parameters())), "-"
        methods["BackPACK DiagHessian (exact)"] = backpack_diag

    def ours(**kw):
        def run():
            est = hessian_trace(loss, params, generator=torch.Generator().manual_seed(0), **kw)
            return float(est), f"{est.probes} ({est.method})"
        return run
    methods["dltheory hessian_trace hutchinson, 100"] = ours(method="hutchinson", probes=100)
    methods["dltheory hessian_trace auto (default)"] = ours()
    methods["dltheory hessian_trace auto, rtol=0.01, max 3000"] = ours(probes=3000, rtol=0.01)
    return methods


def _eig_methods(model, x, y, tools):
    crit = nn.CrossEntropyLoss()
    loss = model_loss(model, crit, (x, y))
    params = {n: p.detach() for n, p in model.named_parameters()}
    methods = {}
    if "pyhessian" in tools:
        from pyhessian import hessian

        def pyhessian_eigs(max_iter, tol):
            def run():
                model.zero_grad(set_to_none=True)
                h = hessian(model, crit, data=(x, y), cuda=False)
                return np.sort(np.array(h.eigenvalues(maxIter=max_iter, tol=tol, top_n=5)[0]))[::-1], "-"
            return run
        methods["PyHessian power iteration, defaults"] = pyhessian_eigs(100, 1e-3)
        methods["PyHessian power iteration, maxIter=1000 tol=1e-6"] = pyhessian_eigs(1000, 1e-6)
    if "eigenthings" in tools:
        import hessian_eigenthings as he

        def eigenthings_lanczos():
            op = he.HessianOperator(model, [(x, y)], he.supervised_loss(crit))
            res = he.lanczos(op, k=5, max_iter=50, which="LA", seed=0)
            return np.sort(res.eigenvalues.double().numpy())[::-1], res.iterations
        methods["hessian-eigenthings lanczos(k=5, max_iter=50)"] = eigenthings_lanczos
    if "curvlinops" in tools:
        from curvlinops import HessianLinearOperator
        from scipy.sparse.linalg import eigsh

        def curvlinops_eigsh():
            H = HessianLinearOperator(model, crit, list(model.parameters()), [(x, y)],
                                      check_deterministic=False).to_scipy()
            with threadpool_limits(1, "blas"):
                vals = eigsh(H, k=5, which="LA", tol=1e-3, return_eigenvectors=False)
            return np.sort(vals)[::-1], "-"
        methods["curvlinops + eigsh(tol=1e-3), BLAS 1 thread"] = curvlinops_eigsh

    def ours():
        return hessian_eigs(loss, params, k=5).numpy(), "-"
    methods["dltheory hessian_eigs(k=5) (tol=1e-4)"] = ours
    return methods


def _engine_methods(model, x, y):
    """100 Hessian-vector products per engine: the graph-reusing double-backward loop
    against vmap of forward-over-reverse in chunks (what hessian_trace picks per device)."""
    loss = model_loss(model, nn.CrossEntropyLoss(), (x, y))
    params = {n: p.detach() for n, p in model.named_parameters()}
    g = torch.Generator(device=x.device).manual_seed(0)
    P = sum(p.numel() for p in params.values())
    V = (2 * torch.randint(0, 2, (100, P), generator=g, device=x.device) - 1).to(x.dtype)
    sizes = [p.numel() for p in params.values()]
    tree = {n: c.reshape(100, *p.shape) for (n, p), c in zip(params.items(), V.split(sizes, dim=1))}

    def sync(value):
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        return value

    def loop():
        op = HessianOperator(loss, params)
        return sync(float(sum(float(v @ op.matvec(v)) for v in V) / 100)), 100

    def chunked(size):
        def run():
            out = batched_hvp(loss, params, tree, chunk_size=size)
            flat = torch.cat([out[n].reshape(100, -1) for n in params], dim=1)
            return sync(float((V * flat).sum() / 100)), f"chunks of {size or 'auto'}"
        return run
    methods = {"double-backward loop (graph reused)": loop}
    for size in (10, 25, 100, None):
        methods[f"vmap(jvp(grad)), chunk {size or 'auto'}"] = chunked(size)
    methods["hessian_trace(method='hutchinson', 100) (engine per device)"] = lambda: (sync(float(
        hessian_trace(loss, params, method="hutchinson"))), 100)
    methods["hessian_trace(method='exact')"] = lambda: (
        sync(float(hessian_trace(loss, params, method="exact"))), "-")
    return methods


def _time(methods, rounds):
    """Warm up each method, then time ``rounds`` round-robin passes (load hits all alike)."""
    results = {name: fn() for name, fn in methods.items()}
    times = {name: [] for name in methods}
    for _ in range(rounds):
        for name, fn in methods.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return results, {name: statistics.median(ts) for name, ts in times.items()}


def _table(title, results, medians, error, reference):
    print(f"\n### {title}\n")
    print("| method | median s | speed vs PyHessian | rel. error | work |")
    print("|---|---|---|---|---|")
    ref = medians.get(reference)
    for name, (value, work) in results.items():
        speed = f"{ref / medians[name]:.2f}x" if ref else "-"
        print(f"| {name} | {medians[name]:.3f} | {speed} | {error(value):.1e} | {work} |")


def _headline(workload, what, ours, theirs, results, medians, error):
    """Ours against theirs as one headline row: speed ratio and both errors."""
    if ours not in medians or theirs not in medians:
        return
    headline(f"{what}, {workload}: {ours} vs {theirs}",
             f"{medians[theirs] / medians[ours]:.2f}× faster",
             f"rel. error {error(results[ours][0]):.1e} vs {error(results[theirs][0]):.1e}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 is far faster on a shared, oversubscribed CPU)")
    parser.add_argument("--only", choices=["mlp", "cnn"], default=None)
    parser.add_argument("--engines", default=None, metavar="DEVICE",
                        help="only time the hvp engines on DEVICE (cpu or cuda), no other tools")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.engines:
        for title, make in WORKLOADS.items():
            model, x, y = make(torch.float32)
            model, x, y = model.to(args.engines), x.to(args.engines), y.to(args.engines)
            results, medians = _time(_engine_methods(model, x, y), args.rounds)
            print(f"\n## {title} on {torch.cuda.get_device_name() if args.engines == 'cuda' else 'cpu'}")
            ref = medians["double-backward loop (graph reused)"]
            print("| engine | median s | speed vs loop | mean vᵀHv | work |\n|---|---|---|---|---|")
            for name, (value, work) in results.items():
                print(f"| {name} | {medians[name]:.4f} | {ref / medians[name]:.2f}x | {value:.6g} | {work} |")
        return
    tools, missing = _tools()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"load avg {' '.join(f'{v:.2f}' for v in __import__('os').getloadavg())}")
    for name, why in missing.items():
        print(f"- {name}: not available ({why}); skipped")
    for title, make in WORKLOADS.items():
        if args.only and not title.lower().startswith(args.only):
            continue
        truth = _ground_truth(make, tools)
        model, x, y = make(torch.float32)
        n_params = sum(p.numel() for p in model.parameters())
        print(f"\n## {title}: {n_params} parameters")
        print(f"exact trace {truth['trace']:.6f} ({truth['trace_by']}); top-5 "
              f"{', '.join(f'{v:.6f}' for v in truth['top5'])} ({truth['top5_by']})")
        results, medians = _time(_trace_methods(model, x, y, tools), args.rounds)
        exact_trace, top5 = truth["trace"], np.asarray(truth["top5"])
        trace_error = lambda v: abs(v - exact_trace) / abs(exact_trace)   # noqa: B023 (used at once)
        _table("trace, float32", results, medians, trace_error, "PyHessian Hutchinson, 100 probes")
        slow = "PyHessian Hutchinson, 1000 probes"
        if slow in medians:
            for name in ("dltheory hessian_trace auto (default)",
                         "dltheory hessian_trace auto, rtol=0.01, max 3000"):
                print(f"\ntime to ≈1%: {slow} ({trace_error(results[slow][0]):.1e}) vs {name} "
                      f"({trace_error(results[name][0]):.1e}): {medians[slow] / medians[name]:.1f}x")
        for theirs in ("PyHessian Hutchinson, 100 probes", slow):
            _headline(title, "Hessian trace", "dltheory hessian_trace auto (default)", theirs,
                      results, medians, trace_error)
        results, medians = _time(_eig_methods(model, x, y, tools), args.rounds)
        eig_error = lambda v: float(np.max(np.abs(np.asarray(v) - top5) / np.abs(top5)))   # noqa: B023
        _table("top-5 eigenvalues, float32", results, medians, eig_error,
               "PyHessian power iteration, defaults")
        _headline(title, "top-5 Hessian eigenvalues", "dltheory hessian_eigs(k=5) (tol=1e-4)",
                  "PyHessian power iteration, defaults", results, medians, eig_error)


if __name__ == "__main__":
    main()
