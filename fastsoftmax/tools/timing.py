"""Round-robin timing: every callable is timed in turn, starting one further along each repetition,
``loops`` calls per sample so that a sample lasts ~``sample_s``.  We report the median time per
call and, for every pair, the median over repetitions of the paired ratio ``t_other / t_this``
(the speedup), which cancels the slow drift of a shared machine better than a ratio of medians.
"""
from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Timing:
    name: str
    samples: list[float] = field(default_factory=list)
    loops: int = 1
    first_call_s: float = 0.0
    wall_s: float = 0.0   # summed over the timed samples
    cpu_s: float = 0.0    # the process's CPU time (all its threads) over the same samples

    @property
    def cores(self) -> float:
        """CPU time per wall time while this callable ran: how many cores it kept busy (the
        check that a thread budget of n is honored: at most ~n)."""
        return self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def median(self) -> float:
        return float(np.median(self.samples))


def measure(fns: dict, *, budget_s=0.5, sample_s=0.01, min_reps=5, max_reps=51,
            first_calls: dict | None = None) -> tuple[dict, dict]:
    """Time the callables ``fns`` (name -> fn) round-robin.

    Returns (timings: name -> Timing, speedup: (a, b) -> median over repetitions of
    ``t_b / t_a``, i.e. how many times faster a is than b).  Each fn must already have been
    called once (warm-up) unless ``first_calls`` is None, in which case it is called here.
    """
    names = list(fns)
    tim = {n: Timing(n) for n in names}
    for n in names:  # warm-up and the cost estimate
        if first_calls is None or n not in first_calls:
            t0 = time.perf_counter()
            fns[n]()
            tim[n].first_call_s = time.perf_counter() - t0
        else:
            tim[n].first_call_s = first_calls[n]
        t0 = time.perf_counter()
        fns[n]()
        est = max(time.perf_counter() - t0, 1e-7)
        tim[n].loops = max(1, min(100_000, int(sample_s / est)))
        tim[n].samples.append(est)  # a first, untimed-loop estimate; replaced below
    per_rep = sum(tim[n].loops * tim[n].samples[0] for n in names)
    reps = int(min(max_reps, max(min_reps, budget_s // max(per_rep, 1e-9))))
    for n in names:
        tim[n].samples.clear()
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for r in range(reps):
            k = r % len(names)
            for n in names[k:] + names[:k]:
                fn, loops = fns[n], tim[n].loops
                c0 = time.process_time()
                t0 = time.perf_counter()
                for _ in range(loops):
                    fn()
                dt = time.perf_counter() - t0
                tim[n].cpu_s += time.process_time() - c0
                tim[n].wall_s += dt
                tim[n].samples.append(dt / loops)
    finally:
        if gc_was:
            gc.enable()
    speed = {}
    for a in names:
        for b in names:
            if a != b:
                ra = np.asarray(tim[a].samples)
                rb = np.asarray(tim[b].samples)
                speed[(a, b)] = float(np.median(rb / ra))
    return tim, speed
