"""Instructions per iteration of the C kernels' vectorized loops, read from ``objdump -d`` of the
built objects (``build/temp.*/isa_<path>/csrc/fsm_kernels_impl.o``).

    python benches/c_loops.py [--objdir build/temp.linux-x86_64-cpython-311] [FUNCTION ...]

For each function, every loop (a backward conditional jump inside the function) whose body names
a vector register of the path's width and contains an FMA is printed: its instruction count, how
many name a vector register, and the vectors of results it produces per iteration (the stores of
that width; loops without a store count their loads).  Instructions per vector = count / vectors.
"""
import argparse
import glob
import os
import re
import subprocess
import sys

DEFAULT = ["row_expsum_store_f32", "row_expsum_store_f64", "softmax_rows_f32", "softmax_rows_f64",
           "softmax_block_store_f32", "softmax_block_store_f64", "exp_f32", "exp_f64",
           "online_stats_f32.constprop.0", "row_shiftstore_f32", "row_shiftstore_f64"]


def disasm(obj):
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", obj], capture_output=True,
                         text=True, check=True).stdout
    funcs, cur = {}, None
    for line in out.splitlines():
        m = re.match(r"^([0-9a-f]+) <(.+)>:$", line)
        if m:
            cur = funcs.setdefault(m.group(2), [])
            continue
        m = re.match(r"^\s+([0-9a-f]+):\s+(\S.*)$", line)
        if m and cur is not None:
            cur.append((int(m.group(1), 16), m.group(2).strip()))
    return funcs


def loops(insns, reg):
    addrs = [a for a, _ in insns]
    found = []
    for i, (a, text) in enumerate(insns):
        m = re.match(r"^j(?!mp)\w+\s+([0-9a-f]+)", text)
        if not m:
            continue
        tgt = int(m.group(1), 16)
        if tgt > a or tgt not in addrs:
            continue
        j = addrs.index(tgt)
        body = [t for _, t in insns[j:i + 1] if not t.startswith("nop") and "nop" not in t.split()[0]]
        vec = [t for t in body if "%" + reg in t]
        if not vec or not any("fmadd" in t or "fnmadd" in t or "fmsub" in t for t in body):
            continue
        stores = [t for t in body if re.match(r"^vmov\w*\s+%" + reg + r"\d+,.*\(", t)]
        loads = [t for t in body if re.search(r"\(.*\),%" + reg, t) or re.match(r"^v\w+\s+-?0?x?[0-9a-f]*\(%r", t)]
        found.append((len(body), len(vec), len(stores), len(loads), body))
    return found


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--objdir", default=None)
    ap.add_argument("--show", action="store_true", help="print the loop bodies")
    ap.add_argument("funcs", nargs="*")
    a = ap.parse_args()
    objdir = a.objdir or sorted(glob.glob("build/temp.*"))[0]
    for path, reg in (("avx2", "ymm"), ("avx512", "zmm")):
        obj = os.path.join(objdir, f"isa_{path}", "csrc", "fsm_kernels_impl.o")
        funcs = disasm(obj)
        for fn in a.funcs or DEFAULT:
            if fn not in funcs:
                continue
            for n, nv, ns, nl, body in loops(funcs[fn], reg):
                per = ns or 1
                print(f"{path:7s} {fn:32s} {n:4d} insns ({nv} {reg}), {ns} stores: "
                      f"{n / per:.1f} per vector of results")
                if a.show:
                    print("\n".join("      " + t for t in body))


if __name__ == "__main__":
    sys.exit(main())
