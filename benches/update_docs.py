"""Regenerate the measured tables of docs/benchmarks.md: one command.

    python benches/update_docs.py --section after               # ./dev setup first
    python benches/update_docs.py --section after --lock /tmp/bench.lock   # each run under flock
    python benches/update_docs.py --section after --from-json DIR          # re-render saved runs

It runs two ``fastsoftmax bench`` commands in fresh processes:

1. the default run: the default throughput suite, the small-call suite and the first-call suite
   (``--json DIR/default.json --plot docs/img/speedup_<section>.png``);
2. the full peer suite, one and two threads in one process: softmax, log_softmax, logsumexp,
   cross_entropy and cross_entropy_grad on every shape, float32 and float64, auto / C / Numba
   against every peer installed (``DIR/full.json``);

then writes their tables between ``<!-- bench:<section>:begin -->`` and
``<!-- bench:<section>:end -->`` in docs/benchmarks.md (the first time, a section "Results:
<section>" is added above "Earlier results").  DIR defaults to build/bench-docs.  ``--isa avx2`` runs the C
extension on its avx2 path (FASTSOFTMAX_ISA) on an AVX-512 machine.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PEER_SUITE = "softmax,log_softmax,logsumexp,cross_entropy,cross_entropy_grad"


def _run(cmd, lock, env):
    full = (["flock", lock] if lock else []) + cmd
    print("+", " ".join(full), flush=True)
    t0 = time.time()
    subprocess.run(full, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    print(f"  {time.time() - t0:.0f} s", flush=True)


def _cores(doc):
    """The document's cores_used ({case id: {contender: cores}}); runs saved before it moved
    there kept it in each result."""
    if doc.get("cores_used"):
        return doc["cores_used"]
    return {c["id"]: {r["contender"]: r["cores_used"] for r in c["results"] if "cores_used" in r}
            for c in doc["cases"]}


def render(section, default, full, plot_rel):
    from fastsoftmax.tools import report
    from fastsoftmax.tools.cli import report_all

    default = {**default, "cores_used": _cores(default)}
    env = default["environment"]
    m, v = env["machine"], env["versions"]
    simd = env["simd"]
    numba = (simd.get("numba") or {}).get("cpu", "?")
    lines = [
        f"Measured {default['created']} with `python benches/update_docs.py --section "
        f"{section}`: {m['cpu']} ({m['arch']}), {m['cores']} cores, SIMD "
        f"{' '.join(m['simd_flags'])}; C extension on its `{simd.get('cython')}` path, Numba "
        f"targeting `{numba}`.  Versions: {report.versions_line(env)}.  The machine was shared "
        "with other jobs (each run held a lock against other benchmarks, not against builds "
        "and tests).",
        "",
        f"Default run (`fastsoftmax bench`, {default['elapsed_s']:.0f} s: "
        + ", ".join(f"{k} {s:.0f} s" for k, s in default.get("suite_s", {}).items()) + "):",
        "",
        report_all(default, markdown=True),
    ]
    if plot_rel:
        lines += ["", f"![speedup per case, default suite]({plot_rel})"]
    if full["cases"]:
        lines += [
            "", f"### Full peer suite ({len(full['cases'])} cases, "
            f"{full['elapsed_s']:.0f} s of measuring, one and two threads)", "",
            "Per backend against each peer (auto = the dispatcher's choice; geomean and min "
            "over the cases of a thread count; min names its case):", "",
            report.format_backend_summary(full["cases"]), "",
            "Per case (each backend's paired speedup; `auto runs`: what auto chose):", "",
            report.format_backend_cases(full["cases"]), "",
            "Cores kept busy (process CPU time / wall time while each contender ran: the "
            "thread budget is an upper bound; below it, the share of the machine it got):", "",
            report.format_cores(full["cases"], _cores(full)),
        ]
    return "\n".join(lines)


def write_section(doc_path, section, text):
    begin, end = f"<!-- bench:{section}:begin -->", f"<!-- bench:{section}:end -->"
    with open(doc_path, encoding="utf-8") as fh:
        doc = fh.read()
    block = f"{begin}\n{text}\n{end}"
    if begin in doc and end in doc:
        doc = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: block, doc,
                     flags=re.S)
    else:
        anchor = "## Earlier results"
        title = f"## Results: {section}\n\n"
        doc = (doc.replace(anchor, title + block + "\n\n" + anchor, 1) if anchor in doc
               else doc.rstrip("\n") + "\n\n" + title + block + "\n")
    with open(doc_path, "w", encoding="utf-8") as fh:
        fh.write(doc)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--section", default="after", help="the marked section to (re)write")
    p.add_argument("--doc", default=os.path.join(ROOT, "docs", "benchmarks.md"))
    p.add_argument("--dir", default=os.path.join(ROOT, "build", "bench-docs"))
    p.add_argument("--lock", help="run each bench command under `flock LOCK`")
    p.add_argument("--from-json", action="store_true", help="render DIR's saved runs only")
    p.add_argument("--default-only", action="store_true", help="skip the full peer suite")
    p.add_argument("--isa", help="FASTSOFTMAX_ISA for the runs (e.g. avx2)")
    p.add_argument("--budget", default="0.3", help="seconds per full-suite case")
    a = p.parse_args(argv)
    os.makedirs(a.dir, exist_ok=True)
    env = dict(os.environ)
    if a.isa:
        env["FASTSOFTMAX_ISA"] = a.isa
    img = f"speedup_{a.section}.png"
    plot_path = os.path.join(os.path.dirname(a.doc), "img", img)
    py = [sys.executable, "-m", "fastsoftmax", "bench", "--no-progress",
          "--backend", "auto,cython,numba"]
    if not a.from_json:
        _run(py + ["--json", os.path.join(a.dir, "default.json"), "--plot", plot_path],
             a.lock, env)
        if not a.default_only:
            _run(py + ["--full", "--suite", "throughput", "--op", PEER_SUITE, "--threads", "1,2",
                       "--dtype", "float32,float64", "--budget", a.budget,
                       "--json", os.path.join(a.dir, "full.json")], a.lock, env)
    default = json.load(open(os.path.join(a.dir, "default.json")))
    path = os.path.join(a.dir, "full.json")
    full = json.load(open(path)) if os.path.exists(path) else {"cases": [], "elapsed_s": 0}
    rel = f"img/{img}" if os.path.exists(plot_path) else None
    write_section(a.doc, a.section, render(a.section, default, full, rel))
    print(f"wrote the {a.section!r} section of {a.doc}")


if __name__ == "__main__":
    main()
