"""``fastsoftmax bench --dask``: fastsoftmax.dask on a LocalCluster (127.0.0.1) with 1 and 2
worker processes of one thread, against dask's own expression for the same result:

* logsumexp: ``m = x.max(axis); m + log(exp(x - m).sum(axis))``;
* softmax:   ``e = exp(x - x.max(axis)); e / e.sum(axis)``.

The data is persisted on the workers first, so the time is the op's, not the data's creation;
each timing is the median of ``repeats`` computes of a fresh graph.  The reduced axis spans
chunks in the "spanning" layout (the (m, s) reduction) and fits one chunk in "rows"
(map_blocks).  GB/s counts the input bytes once.
"""
from __future__ import annotations

import statistics
import time

import numpy as np

CASES = (  # (op, shape, chunks, layout)
    ("logsumexp", (64, 2_000_000), (8, 2_000_000), "rows"),
    ("logsumexp", (64, 2_000_000), (64, 250_000), "spanning"),
    ("softmax", (64, 1_000_000), (8, 1_000_000), "rows"),
    ("softmax", (64, 1_000_000), (64, 125_000), "spanning"),
)
QUICK = (("logsumexp", (8, 40_000), (4, 10_000), "spanning"),
         ("softmax", (8, 40_000), (4, 40_000), "rows"))


def _ours(fd, op, x):
    return fd.logsumexp(x, axis=1) if op == "logsumexp" else fd.softmax(x, axis=1)


def _dask_expr(da, op, x):
    m = x.max(axis=1, keepdims=True)
    if op == "logsumexp":
        return (m + da.log(da.exp(x - m).sum(axis=1, keepdims=True)))[:, 0]
    e = da.exp(x - m)
    return e / e.sum(axis=1, keepdims=True)


def _time(client, make, repeats):
    import distributed
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fut = client.compute(make())
        distributed.wait(fut)
        times.append(time.perf_counter() - t0)
        del fut
    return statistics.median(times)


def run(quick=False, workers=(1, 2), repeats=5, dtype="float32", progress=None):
    import dask.array as da
    import distributed

    import fastsoftmax.dask as fd

    rows = []
    for nw in workers:
        with distributed.LocalCluster(host="127.0.0.1", n_workers=nw, threads_per_worker=1,
                                      processes=True, dashboard_address=None,
                                      silence_logs=40) as cluster, \
                distributed.Client(cluster) as client:
            for op, shape, chunks, layout in (QUICK if quick else CASES):
                if progress:
                    progress(f"{op} {shape[0]}x{shape[1]} {layout} workers={nw}")
                x = da.random.default_rng(0).standard_normal(shape, chunks=chunks,
                                                             dtype=np.dtype(dtype))
                x = client.persist(x)
                distributed.wait(x)
                # check once: the two agree
                a, b = client.compute([_ours(fd, op, x), _dask_expr(da, op, x)], sync=True)
                np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
                t_ours = _time(client, lambda: _ours(fd, op, x), repeats)
                t_dask = _time(client, lambda: _dask_expr(da, op, x), repeats)
                gb = x.nbytes / 1e9
                rows.append({"op": op, "shape": f"{shape[0]}x{shape[1]}", "layout": layout,
                             "chunks": f"{chunks[0]}x{chunks[1]}", "dtype": dtype,
                             "workers": nw, "ours_s": t_ours, "dask_s": t_dask,
                             "ours_gbs": gb / t_ours, "dask_gbs": gb / t_dask,
                             "vs_dask": t_dask / t_ours})
                del x
    base = {(r["op"], r["layout"]): r for r in rows if r["workers"] == min(workers)}
    for r in rows:
        b = base[(r["op"], r["layout"])]
        r["scaling"] = b["ours_s"] / r["ours_s"]
        r["dask_scaling"] = b["dask_s"] / r["dask_s"]
    return rows


def format_table(rows) -> str:
    lines = ["| op | shape | reduced axis | workers | ours GB/s | dask expr GB/s | vs dask | "
             "scaling (ours) | scaling (dask) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['op']} | {r['shape']} {r['dtype']} | {r['layout']} "
                     f"({r['chunks']}) | {r['workers']} | {r['ours_gbs']:.2f} | "
                     f"{r['dask_gbs']:.2f} | {r['vs_dask']:.2f}x | {r['scaling']:.2f}x | "
                     f"{r['dask_scaling']:.2f}x |")
    return "\n".join(lines)
