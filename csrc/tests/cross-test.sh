#!/bin/sh
# ./dev cross-test aarch64: the C kernels cross-compiled for aarch64 with the flags of setup.py's
# baseline path (the kernel objects' flags included), linked with the C driver cross_driver.c,
# run under qemu-aarch64; the driver checks against references computed on x86-64
# (gen_cross_ref.py writes build/cross/aarch64/cross_ref.h with mpmath before the build).  Also prints the NEON evidence of the hot loops' disassembly.
# Needs (Debian): gcc-aarch64-linux-gnu qemu-user  [or CROSS_CC=zig-style command, see below]
#   CROSS_CC  the cross compiler (default aarch64-linux-gnu-gcc), e.g.
#             CROSS_CC="python -m ziglang cc -target aarch64-linux-gnu" (then static, no sysroot)
#   QEMU      the emulator (default qemu-aarch64)
set -eu
arch=${1:-}
[ "$arch" = aarch64 ] || { echo "usage: ./dev cross-test aarch64" >&2; exit 2; }
CROSS_CC=${CROSS_CC:-aarch64-linux-gnu-gcc}
QEMU=${QEMU:-qemu-aarch64}
first=${CROSS_CC%% *}
if ! command -v "$first" >/dev/null 2>&1 || ! command -v "$QEMU" >/dev/null 2>&1; then
    echo "cross-test: needs $first and $QEMU (Debian: apt-get install gcc-aarch64-linux-gnu qemu-user)" >&2
    exit 3
fi
out=build/cross/aarch64
mkdir -p "$out"
# the flags of setup.py (UNIX_COMMON + -O3, the kernel-only flags), read from it so they cannot drift
flags=$(${PYTHON:-python3} - <<'PY'
import ast
tree = ast.parse(open("setup.py").read())
v = {t.id: ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
     for t in n.targets if isinstance(t, ast.Name) and t.id in ("UNIX_COMMON", "KERNEL_FLAGS")}
print(" ".join(v["UNIX_COMMON"] + ["-O3", "-DNDEBUG"] + v["KERNEL_FLAGS"]))
PY
)
echo "+ $CROSS_CC $flags (kernels, FSM_ISA=baseline)"
# shellcheck disable=SC2086
$CROSS_CC $flags -DFSM_ISA=baseline -Icsrc -c csrc/fsm_kernels_impl.c -o "$out/fsm_kernels_impl.o"
# shellcheck disable=SC2086
$CROSS_CC $flags -Icsrc -c csrc/fsm_dispatch.c -o "$out/fsm_dispatch.o"
# shellcheck disable=SC2086
$CROSS_CC $flags -Icsrc -c csrc/fsm_threads.c -o "$out/fsm_threads.o"
# the references, computed here on the x86-64 host with mpmath (nothing generated is committed)
${PYTHON:-python3} csrc/tests/gen_cross_ref.py "$out/cross_ref.h"
$CROSS_CC -O2 -std=gnu11 -Wall -Icsrc -I"$out" -c csrc/tests/cross_driver.c -o "$out/cross_driver.o"
$CROSS_CC -static "$out/cross_driver.o" "$out/fsm_kernels_impl.o" "$out/fsm_dispatch.o" \
    "$out/fsm_threads.o" -lm -pthread -o "$out/cross_driver"
file "$out/cross_driver" 2>/dev/null || true

# NEON evidence: vector FMAs and q-register arithmetic in the kernel object
OBJDUMP=${OBJDUMP:-aarch64-linux-gnu-objdump}
if command -v "$OBJDUMP" >/dev/null 2>&1; then
    "$OBJDUMP" -d "$out/fsm_kernels_impl.o" > "$out/fsm_kernels_impl.s"
    echo "NEON in the kernels: $(grep -cE '\sfmla\s+v[0-9]+\.(4s|2d)' "$out/fsm_kernels_impl.s") fmla (vector)," \
         "$(grep -cE '\sfmul\s+v[0-9]+\.(4s|2d)' "$out/fsm_kernels_impl.s") fmul (vector)," \
         "$(grep -cE '\sfcmgt\s+v[0-9]+\.(4s|2d)' "$out/fsm_kernels_impl.s") fcmgt (vector)," \
         "$(grep -cE '\sfmax\s+v[0-9]+' "$out/fsm_kernels_impl.s") fmax (vector)," \
         "$(grep -cE '\sfmadd\s+[sd][0-9]+' "$out/fsm_kernels_impl.s") fmadd (scalar); disassembly: $out/fsm_kernels_impl.s"
fi
echo "+ $QEMU $out/cross_driver"
"$QEMU" "$out/cross_driver"
