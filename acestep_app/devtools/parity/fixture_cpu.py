"""Run bfloat16 parity cases with MKL on the code paths of the CPU that made the fixtures.

The reference's bfloat16 cases (``fixtures/acestep-v1-tiny-bf16``) were produced on an AMD Zen 4 CPU.
MKL picks its float32 GEMM and FFT kernels by CPU vendor, and on an Intel CPU no documented setting
selects the kernels it runs on AMD: the STFT of a source clip then rounds a few dozen bfloat16 mel
values one step away from the reference's, and the edit grows apart from there (docs/fidelity.md).
That difference belongs to the library, not to our code, and a parity check should measure our code.

MKL asks three of its own service functions which vendor it runs on. On an Intel CPU,
:func:`run_on_fixture_cpu_paths` builds a shared library answering "not Intel, a Zen", loads it ahead
of MKL (``LD_PRELOAD``) in a child ``acestep-app parity`` process, and returns that process's exit
status; its output is the command's output. This needs a C compiler (``cc``); without one, or with
``--native-mkl``, the cases run on the CPU's own MKL paths and the command says so. Only the parity
command does this: the engine always runs the libraries as they are.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from acestep_app.engine.cpu_kernels import intel_cpu

CHILD_MARKER = "ACESTEP_PARITY_FIXTURE_CPU"  # set in the child, so it runs the cases itself
SHIM_SOURCE = """\
/* MKL's vendor queries, answered as on an AMD Zen CPU (acestep-app parity, bfloat16 cases). */
int mkl_serv_intel_cpu_true(void) { return 0; }
int mkl_serv_intel_cpu(void) { return 0; }
int mkl_serv_cpuiszen(void) { return 1; }
"""


def has_bfloat16_cases(cases_dir: Path) -> bool:
    for path in sorted(Path(cases_dir).glob("*.json")):
        try:
            if json.loads(path.read_text(encoding="utf-8")).get("dtype") == "bfloat16":
                return True
        except (OSError, ValueError, AttributeError):
            continue
    return False


def in_child() -> bool:
    return os.environ.get(CHILD_MARKER) is not None


def wanted(cases_dir: Path, native_mkl: bool) -> bool:
    """Whether this run should re-run itself on the fixture CPU's MKL paths."""
    return (not native_mkl and not in_child() and Path(cases_dir).is_dir()
            and has_bfloat16_cases(cases_dir) and intel_cpu() and sys.platform.startswith("linux"))


def build_shim(cache_dir: Path) -> Path | None:
    """The shim library, compiled once into ``cache_dir``; None when no C compiler is found."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    digest = hashlib.sha256(SHIM_SOURCE.encode()).hexdigest()[:16]
    library = cache_dir / f"mkl-vendor-zen-{digest}.so"
    if library.is_file():
        return library
    cache_dir.mkdir(parents=True, exist_ok=True)
    source = cache_dir / f"mkl-vendor-zen-{digest}.{os.getpid()}.c"
    source.write_text(SHIM_SOURCE, encoding="utf-8")
    partial = library.with_name(f"{library.name}.{os.getpid()}")
    try:
        built = subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", str(partial), str(source)],
                               capture_output=True, text=True)
        if built.returncode != 0:
            return None
        partial.replace(library)  # atomic: a library that exists is complete
    finally:
        source.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)
    return library


def run_on_fixture_cpu_paths(argv: list[str], cache_dir: Path) -> int | None:
    """``acestep-app parity *argv`` in a child with MKL on its Zen code paths; None if it cannot be arranged."""
    library = build_shim(cache_dir)
    if library is None:
        print("note: no C compiler found: bfloat16 cases run on this Intel CPU's own MKL code paths "
              "(docs/fidelity.md)", flush=True)
        return None
    env = {**os.environ, CHILD_MARKER: "zen",
           "LD_PRELOAD": " ".join(filter(None, [str(library), os.environ.get("LD_PRELOAD")]))}
    print("bfloat16 cases on an Intel CPU: MKL runs the code paths it runs on the AMD Zen CPU that made the "
          "fixtures (--native-mkl keeps this CPU's; docs/fidelity.md)", flush=True)
    return subprocess.run([sys.executable, "-m", "acestep_app.cli", "parity", *argv], env=env).returncode
