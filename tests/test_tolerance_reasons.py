"""Every numeric tolerance in the tests states its reason (the team's rule for tests that cannot flake).

A tolerance is an ``atol``/``rtol``/``abs_tol``/``rel_tol``/``abs``/``rel``/``tol`` argument, or a
``pytest.approx``, ``allclose``, ``isclose`` or ``assert_close`` call. Its reason is a ``#`` comment on
the same statement or on one of the four lines above it, saying where the bound comes from: the
dtype's epsilon x the signal's scale x the number of reductions, a format's quantisation step, a
published table's precision, ... never "whatever passed". A tolerance given as a named constant
(``atol=BATCHED_TOL``) carries its reason where the constant is defined; ``tol=0`` needs none.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
CALLS = {"approx", "allclose", "isclose", "assert_close", "assert_allclose"}
KEYWORDS = {"atol", "rtol", "abs_tol", "rel_tol", "abs", "rel", "tol"}
LOOKBACK = 4


def has_comment(lines: list[str], first: int, last: int) -> bool:
    """A ``#`` comment on lines ``first..last`` (1-based, the statement) or the LOOKBACK lines above."""
    return any("#" in line for line in lines[max(0, first - 1 - LOOKBACK):last])


def tolerance_values(call: ast.Call) -> list[ast.expr] | None:
    """The tolerance arguments of ``call``, or None when it is not a tolerance at all."""
    name = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", None)
    keywords = [keyword.value for keyword in call.keywords if keyword.arg in KEYWORDS]
    if name in CALLS:
        return keywords
    return keywords or None


def reasoned_elsewhere(value: ast.expr) -> bool:
    """``0`` (exact) or a named constant (its reason is at its definition, checked separately)."""
    if isinstance(value, ast.Constant) and value.value == 0:
        return True
    return isinstance(value, ast.Name) and value.id.isupper()


@pytest.mark.parametrize("path", sorted(TESTS.glob("test_*.py")), ids=lambda path: path.name)
def test_every_tolerance_states_its_reason(path):
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    tree = ast.parse(source)
    statements = [node for node in ast.walk(tree) if isinstance(node, ast.stmt)]
    missing = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        values = tolerance_values(node)
        if values is None or (values and all(reasoned_elsewhere(value) for value in values)):
            continue
        statement = min((s for s in statements if s.lineno <= node.lineno <= s.end_lineno),
                        key=lambda s: s.end_lineno - s.lineno)
        if isinstance(statement, ast.FunctionDef):
            continue  # a helper's default (def _close(..., tol=1e-4)): the comment above the def
        if not has_comment(lines, statement.lineno, statement.end_lineno):
            missing.append(f"{path.name}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    for constant in re.finditer(r"^([A-Z][A-Z0-9_]*TOL[A-Z0-9_]*)\s*=", source, re.MULTILINE):
        line = source[:constant.start()].count("\n") + 1
        if not has_comment(lines, line, line):
            missing.append(f"{path.name}:{line}: {constant.group(1)} has no comment saying why")
    assert not missing, (
        "tolerances without a stated reason; put a comment on the line(s) above each saying where the bound "
        "comes from (dtype epsilon x signal scale x number of reductions, a quantisation step, a table's "
        "precision), with the measured error if you have it:\n  " + "\n  ".join(missing))
