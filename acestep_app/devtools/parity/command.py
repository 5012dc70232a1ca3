"""``acestep-app parity PATH``: check this install against the reference, whatever PATH holds.

PATH is a folder of reference cases (``<case>.json`` + ``.safetensors``, fixture format; see
:mod:`acestep_app.devtools.parity.cases`) or a lyric-vector ``.json`` file
(:mod:`acestep_app.devtools.parity.lyrics`) or an ACE-Step 1.5 planner-vector ``.json`` file
(:mod:`acestep_app.devtools.parity.planner`). Each runner prints one line per case, then
``N passed, M failed``; the exit status is 0 only when every case passed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "run reference parity cases or vectors against this install"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "cases_dir", type=Path, help="folder of <case>.json (+ .safetensors) files, or a lyric- or planner-vector .json file"
    )
    parser.add_argument(
        "--checkpoint", type=Path, help="checkpoint folder (default: CASES_DIR/../checkpoint, else a sibling fixture's)"
    )
    parser.add_argument(
        "--lyric-vocab", type=Path, help="lyric vocabulary (default: <checkpoint>/lyric_tokenizer/vocab.json)"
    )
    parser.add_argument("--batched", action="store_true", help="run guidance branches as one batched forward")
    parser.add_argument(
        "--stored-source-latents", action="store_true",
        help="editing cases: take the source latents from the case instead of encoding its clip (checks the diffusion alone)",
    )  # fmt: skip
    parser.add_argument("-k", dest="only", help="run only cases whose name contains this text")


def run(args: argparse.Namespace) -> int:
    from acestep_app.engine.cpu_kernels import pin_reference_cpu_kernels

    pin_reference_cpu_kernels()  # first thing: oneDNN and MKL read their caps once (bfloat16 cases need them)
    from acestep_app.devtools.parity.cases import run_cases
    from acestep_app.devtools.parity.lyrics import is_lyric_vector_file, run_lyric_vectors
    from acestep_app.devtools.parity.planner import is_planner_vector_file, run_planner_vectors

    if is_planner_vector_file(args.cases_dir):
        return run_planner_vectors(args)
    if is_lyric_vector_file(args.cases_dir):
        return run_lyric_vectors(args)
    return run_cases(args)
