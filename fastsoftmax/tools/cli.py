"""The ``fastsoftmax`` command: ``bench``, ``info`` and ``tune``.

Exit codes: 0 success, 2 usage error (argparse), 1 runtime failure (with a message on stderr).
The measuring lives in ``bench`` (cases and peers from the registry), ``timing`` (round-robin) and
``tune``; the reports in ``report``; this module parses arguments and prints.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

PROG = "fastsoftmax"


class UsageError(Exception):
    """A bad combination of arguments found after parsing (exit code 2)."""


class Progress:
    """A plain-text progress bar on stderr (one line per step when stderr is not a terminal)."""

    def __init__(self, total: int, enabled: bool = True, stream=None):
        self.total = max(total, 1)
        self.done = 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = time.perf_counter()

    def step(self, label: str) -> None:
        """Announce the step that starts now."""
        if not self.enabled:
            return
        width = 24
        filled = int(width * self.done / self.total)
        bar = "#" * filled + "." * (width - filled)
        el = time.perf_counter() - self.t0
        eta = f" eta {el / self.done * (self.total - self.done):4.0f}s" if self.done else ""
        line = f"[{bar}] {self.done + 1}/{self.total} {label}{eta}"
        if self.tty:
            self.stream.write("\r" + line[:119].ljust(119))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self.done += 1

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\r" + " " * 119 + "\r")
            self.stream.flush()


CASE_TIMEOUT_S = 300  # a case that runs longer is a hung kernel: dump the stacks and exit 1


class _watchdog:
    """Exit with status 1 and every thread's traceback when the block runs past ``seconds``: a
    kernel that never returns (a deadlocked thread pool) must not hang a benchmark run."""

    def __init__(self, seconds: float, what: str):
        self.seconds, self.what = seconds, what

    def __enter__(self):
        import faulthandler

        try:
            sys.stderr.fileno()
        except (AttributeError, OSError, ValueError):  # stderr captured in memory: no watchdog
            self.active = False
            return self
        self.active = True
        faulthandler.dump_traceback_later(self.seconds, exit=True)
        return self

    def __exit__(self, *exc):
        if self.active:
            import faulthandler

            faulthandler.cancel_dump_traceback_later()
        return False


# --------------------------------------------------------------------------------- parsing
def _csv(kind):
    def parse(text):
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"empty {kind} list")
        return items
    return parse


def _threads(text):
    try:
        vals = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"threads must be integers like 1,2; got {text!r}")
    if not vals or any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"threads must be positive integers; got {text!r}")
    return vals


def _positive_float(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}")
    if not v > 0 or not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return v


def _flatten(lists):
    return None if lists is None else [x for sub in lists for x in sub]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="fastsoftmax: compiled softmax, log_softmax, logsumexp and cross-entropy. "
                    "Benchmark it against NumPy/SciPy/PyTorch, show what runs here, tune "
                    "the dispatcher.")
    sub = p.add_subparsers(dest="command", metavar="{bench,info,tune}")

    b = sub.add_parser(
        "bench", help="measure throughput and speedups against NumPy, SciPy and peers",
        description="Measure fastsoftmax against NumPy/SciPy and the installed peers "
                    "(PyTorch CPU, JAX, onnxruntime), round-robin in one process; print a table of "
                    "medians, throughput and speedups.  Default: a float32, one-thread subset, "
                    "the small-call suite and the first-call suite (fresh processes).")
    b.add_argument("--full", action="store_true",
                   help="every op x shape, float32 and float64, 1 and 2 threads")
    b.add_argument("--op", action="append", type=_csv("op"), metavar="OP[,OP]",
                   help="only these ops (softmax, log_softmax, logsumexp, cross_entropy, "
                        "cross_entropy_grad, softmax_out)")
    b.add_argument("--dtype", action="append", type=_csv("dtype"), metavar="DTYPE[,DTYPE]",
                   help="float32 and/or float64")
    b.add_argument("--backend", action="append", type=_csv("backend"), metavar="NAME[,NAME]",
                   help="our backends to measure: numba, cython, numpy, auto "
                        "(default: every available compiled backend; the small-call suite "
                        "adds auto)")
    b.add_argument("--shape", action="append", type=_csv("shape"), metavar="SHAPE[,SHAPE]",
                   help="named shapes (4096x1000, 256x32000, 32x50257, 1x4000000, 200000x10, "
                        "256MB) or dims like 1000x100")
    b.add_argument("--peer", action="append", type=_csv("peer"), metavar="PEER[,PEER]",
                   help="peers to compare with: numpy, scipy, torch, jax, onnxruntime, "
                        "copyto, or none (default: all installed)")
    b.add_argument("--method", choices=("auto", "three_pass", "online", "all"), default="auto",
                   help="softmax method of our contenders; 'all' measures each")
    b.add_argument("--threads", type=_threads, metavar="N[,N]",
                   help="thread budgets, e.g. 1,2 (default 1; --full: 1,2)")
    b.add_argument("--budget", type=_positive_float, default=None, metavar="SECONDS",
                   help="measuring time per case (default 0.4, --full 0.8)")
    b.add_argument("--suite", type=_csv("suite"), metavar="NAME[,NAME]",
                   help="which suites to run: throughput (the op x shape cases), small (per-call "
                        "time of tiny arrays), first-call (fresh processes, cold and warm Numba "
                        "cache); default: all three, or throughput alone when --op, --shape, "
                        "--dtype or --threads narrow the cases")
    b.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    b.add_argument("--json", metavar="FILE", help="write the results as JSON (schema in "
                                                  "docs/benchmarks.md)")
    b.add_argument("--plot", metavar="FILE.png", help="draw the speedups (needs matplotlib)")
    b.add_argument("--markdown", action="store_true",
                   help="print the results as a Markdown table (for docs/benchmarks.md)")
    b.add_argument("--list", action="store_true", help="list the cases and exit")
    b.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    b.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)  # tiny shapes: tests
    b.add_argument("--dask", action="store_true",
                   help="fastsoftmax.dask on a LocalCluster, 1 and 2 workers, vs dask's da.exp "
                        "expression (needs fastsoftmax[dask])")
    b.add_argument("--realworld", action="store_true",
                   help="hmmlearn / statsmodels / scikit-learn fits with and without "
                        "patch_scipy(), in fresh processes (needs fastsoftmax[clients])")
    b.set_defaults(func=cmd_bench)

    i = sub.add_parser("info", help="version, backends, SIMD path, threads, library versions",
                       description="What fastsoftmax can run here and why a backend cannot.")
    i.add_argument("--json", action="store_true", help="print the information as JSON")
    i.set_defaults(func=cmd_info)

    t = sub.add_parser(
        "tune", help="measure every backend and method per size class; 'auto' uses the winners",
        description="Measure every available compiled backend and method per op x dtype x size "
                    "class on this machine and store the winners in the per-user tuning file "
                    "($FASTSOFTMAX_TUNE_FILE, $XDG_CACHE_HOME/fastsoftmax/tune.json or "
                    "~/.cache/fastsoftmax/tune.json); backend='auto' uses them from then on.")
    g = t.add_mutually_exclusive_group()
    g.add_argument("--show", action="store_true", help="print the table in force and exit")
    g.add_argument("--reset", action="store_true", help="delete the tuning file and exit")
    t.add_argument("--op", action="append", type=_csv("op"), metavar="OP[,OP]",
                   help="only these ops (softmax, log_softmax, logsumexp, cross_entropy)")
    t.add_argument("--dtype", action="append", type=_csv("dtype"), metavar="DTYPE[,DTYPE]")
    t.add_argument("--threads", type=_threads, metavar="N[,N]",
                   help="thread budgets to tune for (default: the current budget)")
    t.add_argument("--budget", type=_positive_float, default=0.08, metavar="SECONDS",
                   help="measuring time per class (default 0.08)")
    t.add_argument("--file", metavar="FILE", help="tuning file to use (default: as above)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    t.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)
    # maintainers: print the tuning file's entries worth shipping as a built-in table
    # (fastsoftmax/data/tables/*.json)
    t.add_argument("--emit-builtin", action="store_true", help=argparse.SUPPRESS)
    t.set_defaults(func=cmd_tune)
    return p


def main(argv=None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else 2
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.command is None:
        parser.print_usage(sys.stderr)
        print(f"{PROG}: error: choose a command: bench, info or tune", file=sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `fastsoftmax bench | head`: the reader left, not a failure
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except Exception as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 1


# ----------------------------------------------------------------------------------- info
def cmd_info(args) -> int:
    import warnings

    from .. import _dispatch, _tables
    from . import bench as _bench

    with warnings.catch_warnings():  # a bad tuning file is reported below, not as a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        env = _bench.environment()
    path = _tables.tune_path()
    doc, why = _tables.read_file(path, _dispatch.available_backends())
    env["tune_file"] = {"path": path, "exists": os.path.exists(path),
                        "usable": doc is not None and why is None, "problem": why,
                        "entries": len(doc["entries"]) if doc and why is None else 0}
    if args.json:
        print(json.dumps(env, indent=1, sort_keys=True))
        return 0
    v = env["versions"]
    print(f"fastsoftmax {v['fastsoftmax']}")
    print(f"backends (auto order): {', '.join(env['available_backends'])}")
    for name, b in env["backends"].items():
        if not b["available"]:
            print(f"  {name:7s} unavailable: {b.get('reason', '?')}")
            continue
        if name == "cython":
            detail = (f"C extension; SIMD path in use: {env['simd']['cython']} "
                      f"(this CPU can run: {', '.join(b.get('isa_paths', []))}; "
                      "FASTSOFTMAX_ISA forces a lower one)")
        elif name == "numba":
            nt = env["simd"]["numba"] or {}
            feats = " ".join(nt.get("features", []))
            detail = (f"numba {b.get('version')}; LLVM targets {nt.get('cpu', '?')}"
                      + (f" ({feats})" if feats else ""))
        else:
            detail = "NumPy reference (oracle and fallback)"
        print(f"  {name:7s} available: {detail}")
    print(f"default backend: {_default_backend()}")
    print(f"threads: {env['threads']} (FASTSOFTMAX_NUM_THREADS or set_num_threads)")
    tf, dt = env["tune_file"], env["dispatch_table"]
    builtin = (f"built-in table {dt['builtin']} (measured on {dt['builtin_cpu'].split('|')[0]}; "
               f"match: {dt['builtin_match']})" if dt.get("builtin")
               else "no built-in table for a CPU like this one: the default order")
    if tf["usable"]:
        tune_line = f"{path} ({tf['entries']} entries), then the {builtin}"
    elif tf["exists"]:
        tune_line = f"{builtin}; {path} is ignored: {tf['problem']}"
    else:
        tune_line = f"{builtin}; no {path}"
    print(f"dispatch table: {tune_line}")
    print(f"  measured on this CPU: {'yes' if dt['measured_on_this_cpu'] else 'no'}")
    m = env["machine"]
    print(f"CPU: {m['cpu']} ({m['arch']}), {m['cores']} cores available; "
          f"SIMD: {' '.join(m['simd_flags']) or 'none detected'}")
    libs = [f"python {v['python']}", f"numpy {v['numpy']}"]
    missing = []
    for lib in ("scipy", "numba", "llvmlite", "torch", "jax", "onnxruntime", "matplotlib"):
        (libs if v[lib] else missing).append(f"{lib} {v[lib]}" if v[lib] else lib)
    print(f"versions: {', '.join(libs)}" + (f" (not installed: {', '.join(missing)})"
                                            if missing else ""))
    return 0


def _default_backend() -> str:
    from .. import _dispatch

    try:
        return _dispatch.requested()
    except ValueError as exc:
        return f"invalid ({exc})"


# ---------------------------------------------------------------------------------- bench
def _cmd_bench_suite(args) -> int:
    """bench --dask / --realworld: their engines are tools/bench_dask.py and tools/realworld.py."""
    if args.dask and args.realworld:
        raise UsageError("choose one of --dask and --realworld")
    if args.dask:
        from . import bench_dask as suite
    else:
        from . import realworld as suite
    progress = None if args.no_progress else (lambda s: print(s, file=sys.stderr, flush=True))
    try:
        rows = suite.run(quick=args.quick, progress=progress)
    except ImportError as exc:
        extra = "dask" if args.dask else "clients"
        print(f"{PROG}: error: {exc}; install the extra: pip install 'fastsoftmax[{extra}]'",
              file=sys.stderr)
        return 1
    print(suite.format_table(rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"suite": "dask" if args.dask else "realworld", "rows": rows}, fh, indent=1)
    return 0


SUITES = ("throughput", "small", "first-call")
SMALL_BUDGET_S = 0.25  # measuring time per small-call case


def _suites(args, ops, dtypes, shapes) -> list[str]:
    if args.suite:
        bad = [x for x in args.suite if x not in SUITES]
        if bad:
            raise UsageError(f"unknown suite {bad[0]!r}: choose from {', '.join(SUITES)}")
        return list(args.suite)
    if ops or dtypes or shapes or args.threads or args.quick:
        return ["throughput"]
    return list(SUITES)


def report_all(doc: dict, markdown: bool = False) -> str:
    """Every suite of a bench document: the throughput cases (the table, then per backend
    against each peer), the small calls, the first calls."""
    from .report import (first_call_summary, format_backend_cases, format_backend_summary,
                         format_cores, format_first_calls, format_markdown, format_small,
                         format_table)

    parts = []
    if doc["cases"]:
        parts.append(format_markdown(doc) if markdown else format_table(doc))
        parts.append(("### " if markdown else "") + "Per backend against each peer "
                     "(median of paired ratios t_peer / t_ours; > 1: ours is faster)\n\n"
                     + format_backend_summary(doc["cases"]))
        if markdown:
            parts.append(format_backend_cases(doc["cases"]))
        if doc.get("cores_used"):
            parts.append(("### " if markdown else "") + "Cores kept busy (process CPU time / "
                         "wall time while each contender ran; the thread budget is an upper "
                         "bound)\n\n" + format_cores(doc["cases"], doc["cores_used"]))
    if doc.get("small_calls"):
        parts.append(("### " if markdown else "") + "Small calls: microseconds per call, one "
                     "thread (median of round-robin samples; auto vs X: paired ratios)\n\n"
                     + format_small(doc["small_calls"], md=markdown))
    if doc.get("first_calls"):
        parts.append(("### " if markdown else "") + "First call in a fresh process "
                     "(milliseconds; cold: empty NUMBA_CACHE_DIR, warm: the same directory "
                     "again)\n\n" + format_first_calls(doc["first_calls"], md=markdown)
                     + "\n\n" + first_call_summary(doc["first_calls"]))
    if not doc["cases"]:
        from .report import versions_line

        env = doc["environment"]
        parts.append(f"{env['machine']['cpu']}, {env['machine']['cores']} cores; "
                     + versions_line(env) + f"; {doc.get('elapsed_s', 0):.0f} s")
    return "\n\n".join(parts)


def cmd_bench(args) -> int:
    if args.dask or args.realworld:
        return _cmd_bench_suite(args)
    from .. import _dispatch
    from . import bench as _bench
    from .report import check_plot_available, plot

    ops = _flatten(args.op)
    dtypes = _flatten(args.dtype)
    shapes = _flatten(args.shape)
    try:
        cases = _bench.select_cases(full=args.full, quick=args.quick, ops=ops, dtypes=dtypes,
                                    shapes=shapes, threads=args.threads)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not cases:
        raise UsageError("no case matches these filters (the 256MB shape is float32 only)")
    peers = _flatten(args.peer)
    if peers is None:
        peers = list(_bench.PEERS)
    elif peers == ["none"]:
        peers = []
    else:
        bad = [p for p in peers if p not in _bench.PEERS]
        if bad:
            raise UsageError(f"unknown peer {bad[0]!r}: choose from "
                             f"{', '.join(_bench.PEERS)} or none")
    suites = _suites(args, ops, dtypes, shapes)
    backends = _flatten(args.backend)
    avail = _dispatch.available_backends()
    if backends is None:
        backends = [b for b in avail if b != "numpy"] or ["numpy"]
    else:
        for b in backends:
            if b not in _dispatch.BACKENDS + ("auto",):
                raise UsageError(f"unknown backend {b!r}: choose from "
                                 f"{', '.join(_dispatch.BACKENDS + ('auto',))}")
        for b in backends:
            if b != "auto" and b not in avail:
                _dispatch.load(b)  # raises BackendUnavailableError with the reason
    methods = ("three_pass", "online") if args.method == "all" else (args.method,)
    small = _bench.select_small_cases() if "small" in suites else []
    firsts = []
    if "first-call" in suites:
        from . import firstcall

        firsts = firstcall.plan()
    if "throughput" not in suites:
        cases = []
    if args.list:  # the throughput cases; the other suites' too when --suite names them
        if not args.suite:
            small, firsts = [], []
        for c in cases + small:
            cons, skipped = _bench.contenders(c.op, backends, methods=methods, peers=peers)
            extra = f"  (skipped: {', '.join(skipped)})" if skipped else ""
            print(f"{c.id:40s} {', '.join(x.name for x in cons)}{extra}")
        for f in firsts:
            print(f"first call: {f['who']} {f['bench']} {f['dtype']} {f['shape_name']} "
                  f"t{f['threads']} {f['cache'] or ''}".rstrip())
        return 0
    if args.plot:
        check_plot_available()
    budget = args.budget or (0.8 if args.full else 0.4)
    t_start = time.time()
    doc = {
        "schema": _bench.SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_start)),
        "command": " ".join([PROG] + args.argv),
        "environment": _bench.environment(),
        "settings": {"budget_s": budget, "backends": backends, "methods": list(methods),
                     "peers": peers, "quick": bool(args.quick), "full": bool(args.full),
                     "seed": args.seed, "suites": suites, "small_budget_s": SMALL_BUDGET_S},
        "cases": [],
        "small_calls": [],
        "first_calls": [],
        "cores_used": {},
    }
    prog = Progress(len(cases) + len(small) + len(firsts), enabled=not args.no_progress)
    try:
        for c in cases:
            prog.step(c.id)
            with _watchdog(CASE_TIMEOUT_S, c.id):
                doc["cases"].append(_bench.run_case(c, backends, methods=methods, peers=peers,
                                                    budget_s=budget, seed=args.seed,
                                                    cores=doc["cores_used"]))
        t_small = time.time()
        for c in small:
            prog.step("small " + c.id)
            with _watchdog(CASE_TIMEOUT_S, c.id):
                small_backends = (["auto"] if "auto" not in backends else []) + backends
                doc["small_calls"].append(_bench.run_case(
                    c, small_backends, peers=[p for p in peers if p != "copyto"],
                    budget_s=SMALL_BUDGET_S, seed=args.seed))
        t_first = time.time()
        if firsts:
            from . import firstcall

            with _watchdog(CASE_TIMEOUT_S * 4, "first calls"):
                doc["first_calls"] = firstcall.run(firsts, progress=prog.step)
    finally:
        prog.close()
    doc["elapsed_s"] = round(time.time() - t_start, 2)
    doc["suite_s"] = {"throughput": round(t_small - t_start, 2),
                      "small": round(t_first - t_small, 2),
                      "first-call": round(time.time() - t_first, 2)}
    print(report_all(doc, markdown=args.markdown))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=1)
            fh.write("\n")
        print(f"wrote {args.json}")
    if args.plot:
        plot(doc, args.plot)
        print(f"wrote {args.plot}")
    return 0


def cmd_tune(args) -> int:
    from .. import _policy, _registry, _tables
    from . import tune
    from .report import builtin_in_force, show_table

    path = args.file or _tables.tune_path()
    if args.reset:
        removed = _tables.reset_file(path)
        from .. import _dispatch

        _dispatch.invalidate()
        print(f"removed {path}" if removed else f"no tuning file at {path}; nothing to remove")
        print(builtin_in_force()[0])
        return 0
    if args.show:
        print(show_table(path))
        return 0
    if args.emit_builtin:
        from .. import _dispatch

        doc, why = _tables.read_file(path, _dispatch.available_backends())
        if doc is None or why is not None:
            raise RuntimeError(f"no usable tuning file at {path}: {why or 'missing'}")
        print(_tables.dumps({**doc, "entries": _tables.minimal_entries(doc["entries"])}), end="")
        return 0
    ops = _flatten(args.op)
    dtypes = _flatten(args.dtype)
    for o in ops or ():
        if o not in _registry.OPS:
            raise UsageError(f"unknown op {o!r}: tune measures {', '.join(_registry.OPS)}")
    for d in dtypes or ():
        if d not in _policy.DTYPES:
            raise UsageError(f"unknown dtype {d!r}: choose float32 or float64")
    plan = tune.plan(ops=ops, dtypes=dtypes, threads=args.threads, quick=args.quick)
    prog = Progress(len(plan), enabled=not args.no_progress)
    try:
        with _watchdog(CASE_TIMEOUT_S * max(1, len(plan) // 4), "tune"):
            entries = tune.measure(plan, budget_s=args.budget, progress=prog.step)
    finally:
        prog.close()
    tune.write(path, entries, {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "budget_s": args.budget, "quick": bool(args.quick),
    })
    print(show_table(path))
    return 0
