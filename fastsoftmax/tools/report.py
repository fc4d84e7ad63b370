"""Reports of a benchmark run (the terminal table, Markdown, the summary line, the plot) and of
the dispatch table in force (``fastsoftmax tune --show``)."""
from __future__ import annotations

import math

from .. import _dispatch, _tables
from .tune import MIN_GAIN


def _fmt_t(s: float) -> str:
    for unit, f in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if s >= f:
            return f"{s / f:.3g}{unit}"
    return f"{s * 1e9:.3g}ns"


# every peer a report may show, in column order (a peer no case measured gets no column)
PEER_ORDER = ("numpy", "scipy", "torch", "jax", "onnxruntime", "copyto")
# the peers of the per-backend tables: the compiled libraries, then SciPy (the drop-in target)
VERSUS = ("torch", "jax", "onnxruntime", "scipy")
BACKEND_LABEL = {"auto": "auto", "cython": "C", "numba": "Numba", "numpy": "NumPy ref"}


def _peers_of(cases) -> list[str]:
    return [p for p in PEER_ORDER
            if any(r["contender"] == p for c in cases for r in c["results"])]


def _fmt_x(v) -> str:
    if v is None:
        return "-"
    return f"{v:.2f}x" if v < 10 else f"{v:.1f}x"


def format_table(doc: dict) -> str:
    """The results as a text table: one block per case, one line per contender."""
    peers = _peers_of(doc["cases"])
    head = (f"{'case':38s} {'contender':38s} {'time':>8s} {'Gelem/s':>8s} {'GB/s':>7s} "
            + " ".join(f"{'vs ' + p:>9s}" for p in peers))
    lines = [head, "-" * len(head)]
    problems = []
    for c in doc["cases"]:
        label = f"{c['op']} {c['dtype']} {c['shape_name']} t{c['threads']}"
        for k, r in enumerate(c["results"]):
            sp = " ".join(f"{_fmt_x(r['speedup'].get(p)):>9s}" for p in peers)
            flag = ""
            chk = r.get("check")
            if chk and not chk["ok"]:
                flag = "  MISMATCH"
                problems.append(f"{c['id']}: {r['contender']} differs from the NumPy formula "
                                f"(max relative error {chk['max_rel_err']:.3g})")
            who = r["contender"]
            if r.get("resolved"):
                who = f"{who}={r['resolved']}"
            lines.append(f"{(label if k == 0 else ''):38s} {who:38s} "
                         f"{_fmt_t(r['median_s']):>8s} {r['gelem_per_s']:8.3f} "
                         f"{r['gb_per_s']:7.2f} {sp}{flag}")
        for name, err in c["errors"].items():
            problems.append(f"{c['id']}: {name} failed: {err}")
    skipped = sorted({f"{p} ({why})" for c in doc["cases"] for p, why in c["skipped"].items()})
    lines.append("")
    lines.append("time: median per call; vs X: median over repetitions of t_X / t_this "
                 "(> 1: faster than X); GB/s: bytes read + written per second.")
    summ = summary(doc)
    if summ:
        lines.append("geometric mean speedup of the best fastsoftmax contender per case: "
                     + ", ".join(f"vs {p} {v:.2f}x ({n} cases)" for p, (v, n) in summ.items()))
    if skipped:
        lines.append("peers skipped: " + "; ".join(skipped))
    lines += [f"WARNING: {p}" for p in problems]
    env = doc["environment"]
    lines.append(f"{env['machine']['cpu']}, {env['machine']['cores']} cores; "
                 + versions_line(env) + f"; {doc.get('elapsed_s', 0):.0f} s")
    return "\n".join(lines)


def versions_line(env: dict) -> str:
    v = env["versions"]
    libs = [f"fastsoftmax {v['fastsoftmax']}" + (f" ({v['git']})" if v.get("git") else "")]
    libs += [f"{k} {v[k]}" for k in ("numpy", "scipy", "numba", "torch", "jax", "onnxruntime")
             if v.get(k)]
    return ", ".join(libs)


# ------------------------------------------------------------- per backend, against each peer
def _ours_by_backend(case: dict) -> dict:
    """backend -> our result of the case on that backend (method auto, no variant)."""
    out = {}
    for r in case["results"]:
        if r["kind"] == "ours" and not r.get("variant") and r.get("method") in (None, "auto"):
            out[r["backend"]] = r
    return out


def _backends_of(cases) -> list[str]:
    seen = {b for c in cases for b in _ours_by_backend(c)}
    return [b for b in ("auto", "cython", "numba", "numpy") if b in seen]


def _case_label(c: dict) -> str:
    return f"{c['op']} {c['dtype']} {c['shape_name']}"


def backend_summary(cases) -> dict:
    """(backend, threads, peer) -> (geomean, min, case of the min, cases below 1x, cases)."""
    acc: dict = {}
    for c in cases:
        for b, r in _ours_by_backend(c).items():
            for p, v in r["speedup"].items():
                if v > 0 and p != "copyto":
                    acc.setdefault((b, c["threads"], p), []).append((v, _case_label(c)))
    out = {}
    for k, vals in acc.items():
        g = math.exp(sum(math.log(v) for v, _ in vals) / len(vals))
        lo = min(vals)
        out[k] = (g, lo[0], lo[1], sum(v < 1 for v, _ in vals), len(vals))
    return out


def format_backend_summary(cases, md: bool = True) -> str:
    """Per backend (auto, C, Numba) and thread count: geomean and min speedup against each
    peer, over every case measured."""
    summ = backend_summary(cases)
    peers = [p for p in VERSUS + ("numpy",) if any(k[2] == p for k in summ)]
    threads = sorted({c["threads"] for c in cases})
    lines = ["| backend | threads | " + " | ".join(f"vs {p}: geomean, min (case)" for p in peers)
             + " |", "|---|---|" + "---|" * len(peers)]
    for b in _backends_of(cases):
        for t in threads:
            cells = []
            for p in peers:
                e = summ.get((b, t, p))
                cells.append("-" if e is None else
                             f"{e[0]:.2f}x, {e[1]:.2f}x ({e[2]})"
                             + (f", {e[3]} of {e[4]} < 1x" if e[3] else f", {e[4]} cases"))
            if any(x != "-" for x in cells):
                lines.append(f"| {BACKEND_LABEL.get(b, b)} | {t} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_backend_cases(cases) -> str:
    """One row per case: each backend's speedup against each peer (the per-case ratios)."""
    peers = [p for p in VERSUS if any(r["contender"] == p for c in cases for r in c["results"])]
    backends = _backends_of(cases)
    head = ("| op | dtype | shape | thr | auto runs | "
            + " | ".join(f"{BACKEND_LABEL.get(b, b)} vs {p}" for b in backends for p in peers)
            + " |")
    lines = [head, "|---|---|---|---|---|" + "---|" * (len(backends) * len(peers))]
    for c in cases:
        by = _ours_by_backend(c)
        if not by:
            continue
        cells = [_fmt_x(by[b]["speedup"].get(p)) if b in by else "-"
                 for b in backends for p in peers]
        auto = by.get("auto", {}).get("resolved") or "-"
        lines.append(f"| {c['op']} | {c['dtype']} | {c['shape_name']} | {c['threads']} | "
                     f"{auto} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_cores(cases, cores: dict) -> str:
    """Per contender and thread budget: the cores it kept busy (process CPU time / wall time
    while it ran), median and max over the cases: the check that every contender stayed within
    the budget it was given."""
    acc: dict = {}
    for c in cases:
        for name, v in cores.get(c["id"], {}).items():
            if " " not in name:  # not an in-place variant
                acc.setdefault((name, c["threads"]), []).append(v)
    threads = sorted({t for _, t in acc})
    names = list(dict.fromkeys(n for n, _ in acc))
    head = ["contender"] + [f"{t} thread{'s' if t > 1 else ''}: median, max" for t in threads]
    rows = []
    for n in names:
        cells = [n]
        for t in threads:
            v = sorted(acc.get((n, t), []))
            cells.append(f"{v[len(v) // 2]:.2f}, {v[-1]:.2f}" if v else "-")
        rows.append(cells)
    return _grid(head, rows, True)


# ------------------------------------------------------------------------- small calls
def _us(r) -> str:
    return f"{r['median_s'] * 1e6:.2f}" if r else "-"


def format_small(cases, md: bool = False) -> str:
    """The small-call suite: per-call microseconds of every contender, and auto's paired
    speedup against each peer."""
    peers = [p for p in _peers_of(cases) if p != "copyto"]
    backends = _backends_of(cases)
    names = [BACKEND_LABEL.get(b, b) for b in backends] + peers
    vs = [p for p in VERSUS if p in peers]
    head = (["op", "dtype", "shape"] + [f"{n} us" for n in names]
            + [f"auto vs {p}" for p in vs])
    rows = []
    for c in cases:
        by = _ours_by_backend(c)
        res = {r["contender"]: r for r in c["results"]}
        shape = "x".join(map(str, c["shape"]))
        auto = by.get("auto")
        rows.append([c["op"], c["dtype"], f"({shape},)" if len(c["shape"]) == 1 else shape]
                    + [_us(by.get(b)) for b in backends] + [_us(res.get(p)) for p in peers]
                    + [_fmt_x(auto["speedup"].get(p)) if auto else "-" for p in vs])
    return _grid(head, rows, md)


def _grid(head, rows, md: bool) -> str:
    if md:
        return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                         + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(head)]
    fmt = lambda r: "  ".join(x.rjust(w) if i > 2 else x.ljust(w)  # noqa: E731
                              for i, (x, w) in enumerate(zip(r, widths)))
    return "\n".join([fmt(head), "-" * (sum(widths) + 2 * len(widths))] + [fmt(r) for r in rows])


# ------------------------------------------------------------------------- first calls
def _ms(v) -> str:
    return "-" if v is None else f"{v * 1e3:.1f}"


def format_first_calls(rows, md: bool = False) -> str:
    """The first-call suite: per op, dtype and thread budget, the first call (and the import)
    in a fresh process with a cold and a warm Numba cache, and scipy's first call."""
    scipy = {(r["bench"], r["dtype"]): r for r in rows if r["who"] == "scipy"}
    groups: dict = {}
    for r in rows:
        if r["who"] == "fastsoftmax":
            groups.setdefault((r["bench"], r["dtype"], r["threads"]), {})[r["cache"]] = r
    head = ["op", "dtype", "shape", "thr", "import ms", "first call ms, cold cache",
            "first call ms, warm cache", "second call ms", "auto runs", "scipy first call ms"]
    out = []
    for (b, d, t), g in groups.items():
        cold, warm = g.get("cold", {}), g.get("warm", {})
        err = cold.get("error") or warm.get("error")
        sp = scipy.get((b, d), {})
        out.append([b, d, cold.get("shape_name", warm.get("shape_name", "")), str(t),
                    _ms(cold.get("import_s")), _ms(cold.get("first_call_s")),
                    _ms(warm.get("first_call_s")), _ms(warm.get("second_call_s")),
                    (cold.get("resolved") or "-") + (" (numba imported)"
                                                     if cold.get("numba_loaded") else ""),
                    _ms(sp.get("first_call_s")) + (f"  ERROR: {err}" if err else "")])
    return _grid(head, out, md)


def first_call_summary(rows) -> str:
    fs = [r for r in rows if r["who"] == "fastsoftmax" and "first_call_s" in r]
    if not fs:
        return ""
    parts = []
    for cache in ("cold", "warm"):
        sel = [r for r in fs if r["cache"] == cache]
        if sel:
            w = max(sel, key=lambda r: r["first_call_s"])
            parts.append(f"slowest first call, {cache} Numba cache: "
                         f"{w['first_call_s'] * 1e3:.0f} ms "
                         f"({w['bench']} {w['dtype']} t{w['threads']})")
    imp = [r["import_s"] for r in fs if "import_s" in r]
    if imp:
        parts.append(f"import fastsoftmax: {min(imp) * 1e3:.0f}-{max(imp) * 1e3:.0f} ms")
    return "; ".join(parts)


def _fastest_ours(case: dict) -> dict | None:
    """Our fastest contender of a case, the in-place variants left out (the text table lists
    them; the summary, the markdown table and the plot compare like with like)."""
    ours = [r for r in case["results"] if r["kind"] == "ours" and not r.get("variant")]
    return min(ours, key=lambda r: r["median_s"]) if ours else None


def format_markdown(doc: dict) -> str:
    """One row per case: our best contender's throughput, the peers' and the speedups."""
    peers = _peers_of(doc["cases"])
    head = ("| op | dtype | shape | thr | fastest of ours | GB/s | "
            + " | ".join(f"{p} GB/s" for p in peers) + " | "
            + " | ".join(f"vs {p}" for p in peers) + " |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for c in doc["cases"]:
        best = _fastest_ours(c)
        if best is None:
            continue
        by = {r["contender"]: r for r in c["results"]}
        gbs = " | ".join(f"{by[p]['gb_per_s']:.2f}" if p in by else "-" for p in peers)
        sp = " | ".join(_fmt_x(best["speedup"].get(p)) for p in peers)
        name = best["contender"].replace("fastsoftmax", "").strip("[]").replace("] ", " ")
        if best.get("resolved"):
            name += f" ({best['resolved']})"
        lines.append(f"| {c['op']} | {c['dtype']} | {c['shape_name']} | {c['threads']} | "
                     f"{name} | {best['gb_per_s']:.2f} | {gbs} | {sp} |")
    summ = summary(doc)
    if summ:
        lines.append("")
        lines.append("Geometric mean speedup of our fastest contender: "
                     + ", ".join(f"{v:.2f}x vs {p} ({n} cases)" for p, (v, n) in summ.items())
                     + ".")
    return "\n".join(lines)


def summary(doc: dict) -> dict:
    """peer -> (geometric mean over cases of the best ours-vs-peer speedup, number of cases)."""
    acc: dict = {}
    for c in doc["cases"]:
        best = _fastest_ours(c)
        if best is None:
            continue
        for p, v in best["speedup"].items():
            if v > 0:
                acc.setdefault(p, []).append(math.log(v))
    return {p: (math.exp(sum(v) / len(v)), len(v)) for p, v in acc.items()}


def check_plot_available() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise RuntimeError("--plot needs matplotlib, which is not installed here "
                           "(pip install matplotlib, or pip install 'fastsoftmax[plot]')") from None


def plot(doc: dict, path: str) -> None:
    """Horizontal bars: speedup of the best fastsoftmax contender per case against each peer."""
    check_plot_available()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for c in doc["cases"]:
        best = _fastest_ours(c)
        if best is not None:
            rows.append((f"{c['op']} {c['dtype']} {c['shape_name']} t{c['threads']}\n"
                         f"{best['contender']}", best["speedup"]))
    peers = [p for p in PEER_ORDER if any(p in sp for _, sp in rows)]
    if not rows or not peers:
        raise RuntimeError("nothing to plot: no case has both a fastsoftmax result and a peer")
    from matplotlib.ticker import FuncFormatter

    fig, ax = plt.subplots(figsize=(9, len(rows) * (0.16 * len(peers) + 0.25) + 1.5))
    h = 0.8 / len(peers)
    for k, p in enumerate(peers):
        ys = [i + k * h for i in range(len(rows))]
        vals = [sp.get(p, float("nan")) for _, sp in rows]
        ax.barh(ys, vals, height=h, label=f"vs {p}")
    ax.set_yticks([i + 0.4 - h / 2 for i in range(len(rows))])
    ax.set_yticklabels([lab for lab, _ in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(1.0, color="k", lw=0.8)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.set_xlabel("speedup (t_peer / t_fastsoftmax, median of paired repetitions)")
    m = doc["environment"]["machine"]
    ax.set_title(f"fastsoftmax {doc['environment']['versions']['fastsoftmax']} on {m['cpu']}",
                 fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------------- tune

def _default_choice() -> str:
    first = [b for b in _dispatch.available_backends() if b != "numpy"]
    return f"{first[0]}/auto" if first else "numpy/auto"


def builtin_in_force() -> tuple[str, list]:
    """(a line saying what "auto" uses without a per-user file, that table's entries)."""
    name, bdoc, match = _tables.builtin_for_this_cpu()
    if bdoc is None:
        return ("no built-in table was measured on a CPU like this one (match: none); "
                f"'auto' runs the default order ({_default_choice()})"), []
    return (f"'auto' uses the built-in table {name} ({len(bdoc['entries'])} entries, measured "
            f"on {bdoc['fingerprint']['cpu'].split('|')[0]}; match: {match})"), bdoc["entries"]


def show_table(path: str) -> str:
    """The per-user table at ``path`` (or, without a usable one, the built-in table in force)."""
    doc, why = _tables.read_file(path, _dispatch.available_backends())
    lines = []
    if doc is None or why is not None:
        lines.append(f"no tuning file at {path}" if why is None else f"{path} is ignored: {why}")
        line, entries = builtin_in_force()
        lines.append(line)
    else:
        fp = doc["fingerprint"]
        lines.append(f"tuning file {path}: {len(doc['entries'])} entries, measured "
                     f"{doc.get('created', '?')} with fastsoftmax {fp['fastsoftmax']} on "
                     f"{fp['cpu'].split('|')[0]}, backends {', '.join(fp['backends'])}")
        entries = doc["entries"]
    if entries:
        lines.append(f"{'op':13s} {'dtype':8s} {'size class':28s} {'thr':4s} "
                     f"{'choice':18s} {'fastest':18s} {'gain':>6s}")
        for e in sorted(entries, key=lambda e: tuple(e[f] for f in _tables.ENTRY_FIELDS)):
            key, choice = _tables.parse_entry(e)
            gain = e.get("gain")
            gs = f"{gain:.2f}x" if isinstance(gain, (int, float)) else ""
            lines.append(f"{key.op:13s} {key.dtype:8s} {str(key.size):28s} {key.threads:4s} "
                         f"{str(choice):18s} {str(e.get('fastest', '')):18s} {gs:>6s}")
        lines.append(f"gain: t_default / t_fastest (median of paired ratios); the fastest "
                     f"replaces the default ({_default_choice()}) only from "
                     f"{MIN_GAIN:.2f}x")
    return "\n".join(lines)
