"""harness/mutate.py (`make mutate`): its inputs are checked; the equivalents list is well formed.
(The full mutation runs take minutes: they are `make mutate`, not part of `make test`; one real
run of the smallest module, a few seconds, checks that the set-up still lets the tests import
the mutants: a layout change once left every mutant "not checked" without a word.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness import mutate
from tests.helpers import assert_one_line_error

REPO = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.mutate", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args,words", [
    (["nosuch"], ["unknown module 'nosuch'", "machine"]),
    (["backoff", "--max-children", "0"], ["--max-children must be >= 1"]),
    (["backoff", "--limit-min", "0"], ["--limit-min must be > 0"]),
])
def test_bad_arguments_are_one_line_usage_errors(args, words) -> None:
    assert_one_line_error(run(*args), *words)


def test_an_equivalent_without_a_reason_is_refused(tmp_path) -> None:
    listed = tmp_path / "eq.txt"
    listed.write_text("# comment\n\npinkbutton.firmware.backoff.x_f__mutmut_1 the default is never used\n")
    assert mutate.load_equivalents(listed) == {
        "pinkbutton.firmware.backoff.x_f__mutmut_1": "the default is never used"}
    listed.write_text("pinkbutton.firmware.backoff.x_f__mutmut_2\n")
    with pytest.raises(mutate.UsageError, match=r"eq.txt:1: .*mutmut_2 has no reason given"):
        mutate.load_equivalents(listed)


def test_every_listed_equivalent_names_a_module_that_is_mutated_and_says_why() -> None:
    equivalents = mutate.load_equivalents()
    prefixes = tuple(mutate._prefix(module) for module, _ in mutate.MODULES.values())
    assert equivalents, "the list exists and is read"
    for name, reason in equivalents.items():
        assert name.startswith(prefixes) and "__mutmut_" in name, name
        assert len(reason.split()) >= 4, (name, reason)


def test_every_module_has_existing_test_files() -> None:
    for module, tests in mutate.MODULES.values():
        assert (REPO / module).is_file(), module
        assert all((REPO / t).is_file() for t in tests), tests


def test_the_table_has_one_row_per_module_and_the_score_excludes_equivalents() -> None:
    row = mutate.Row("backoff", 40, 36, 2, 0, 2, 3.0, [])
    assert row.score == pytest.approx(100 * 36 / 38)
    text = mutate.table([row, mutate.Row("debounce", 10, 10, 0, 0, 0, 1.0, [])])
    lines = text.splitlines()
    assert lines[0].split() == ["module", "mutants", "killed", "survived", "other",
                                "equivalent", "score", "time"]
    assert lines[1].split() == ["backoff", "40", "36", "2", "0", "2", "94.7%", "3", "s"]
    assert lines[2].split()[-3:] == ["100.0%", "1", "s"]


def test_a_real_run_of_the_smallest_module_kills_every_mutant() -> None:
    row = mutate.run_module("backoff", children=2, limit_s=120, equivalents={}, keep=None)
    assert (row.mutants, row.other, row.survived) == (row.killed, 0, 0), row
    assert row.mutants >= 30 and row.score == 100.0
