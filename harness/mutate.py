"""Mutation testing of the pure modules (`make mutate`): does a wrong comparison get noticed?

Each module is mutated by mutmut (3.x, from the `dev` extra) against its own fast tests only,
in a scratch copy of the repository (the worktree is never touched), one module at a time.
Mutants listed in tests/mutation-equivalents.txt (one per line: the mutant's name, then why
it cannot change behaviour) are left out of the score. The table:

  module  mutants  killed  survived  other  equivalent  score

`killed` counts mutants a test failed on (a timeout counts: the mutant hung a test);
`other` is what mutmut could not decide (no test reached it, suspicious, not checked);
score = killed / (mutants - equivalent). Exit 1 when a module scores under --goal.

  python -m harness.mutate                      # every module
  python -m harness.mutate machine protocol     # some
  python -m harness.mutate backoff --survivors  # and show each surviving mutant's diff
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EQUIVALENTS = REPO / "tests" / "mutation-equivalents.txt"
PACKAGES = ("hal", "firmware", "simulator", "tools")
NAMESPACE = "pinkbutton"
SUPPORT = ("harness", "deploy")  # the test broker is built from deploy/mosquitto

#: name -> (module file, its own fast test files)
MODULES: dict[str, tuple[str, tuple[str, ...]]] = {
    "machine": ("firmware/machine.py", (
        "tests/test_machine.py", "tests/test_machine_properties.py",
        "tests/test_machine_pinned.py")),
    "protocol": ("firmware/protocol.py", (
        "tests/test_protocol.py", "tests/test_protocol_health.py",
        "tests/test_protocol_pinned.py")),
    "envelope": ("firmware/media/envelope.py", ("tests/test_envelope.py",)),
    "supervision": ("tools/controlroom/supervision.py", ("tests/test_supervision.py",)),
    "debounce": ("hal/debounce.py", ("tests/test_hal_debounce.py",)),
    "backoff": ("firmware/backoff.py", ("tests/test_backoff.py",)),
    "adaptation": ("firmware/media/adaptation.py", ("tests/test_adaptation.py",)),
    "monitor": ("firmware/monitor.py", ("tests/test_monitor.py",)),
}

KILLED_CODES = {1, 3, 36, 24, -24, 152, 255}  # a failing test, or a test the mutant hung
SURVIVED_CODES = {0}


class UsageError(Exception):
    pass


@dataclass
class Row:
    module: str
    mutants: int
    killed: int
    survived: int
    other: int
    equivalent: int
    seconds: float
    survivors: list[str]
    note: str = ""

    @property
    def score(self) -> float:
        judged = self.mutants - self.equivalent
        return 100.0 * self.killed / judged if judged else 100.0


def load_equivalents(path: Path = EQUIVALENTS) -> dict[str, str]:
    """mutant name -> reason; a line without a reason is an error (say why, or do not list)."""
    out: dict[str, str] = {}
    if not path.exists():
        return out
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, reason = line.partition(" ")
        if not reason.strip():
            raise UsageError(f"{path.name}:{number}: {name} has no reason given")
        out[name] = reason.strip()
    return out


def prepare(workdir: Path, module: str, tests: tuple[str, ...]) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis")
    # The code imports itself as pinkbutton.*: laid out as pinkbutton/<folder> here, so the
    # tests import mutmut's mutated copies (a namespace package found on the path before the
    # editable install's finder, which would hand them the checkout's unmutated files).
    for package in PACKAGES:
        shutil.copytree(REPO / package, workdir / NAMESPACE / package, ignore=ignore)
    shutil.copytree(REPO / "tests", workdir / "tests", ignore=ignore)
    for support in SUPPORT:  # what the tests use beside the code: copied, never mutated
        shutil.copytree(REPO / support, workdir / support, ignore=ignore)
    shutil.copy2(REPO / "pyproject.toml", workdir / "pyproject.toml")
    lines = "\n    ".join
    (workdir / "setup.cfg").write_text(
        "[mutmut]\n"
        f"source_paths =\n    {lines(f'{NAMESPACE}/{p}' for p in PACKAGES)}\n"
        f"only_mutate =\n    {NAMESPACE}/{module}\n"
        f"pytest_add_cli_args_test_selection =\n    {lines(tests)}\n"
        "pytest_add_cli_args =\n    -p\n    no:cacheprovider\n    --hypothesis-seed=0\n"
        "use_git_change_detection = false\n"
        f"also_copy =\n    {lines(SUPPORT)}\n"
    )


def run_module(name: str, *, children: int, limit_s: float, equivalents: dict[str, str],
               keep: Path | None) -> Row:
    module, tests = MODULES[name]
    tests = tuple(t for t in tests if (REPO / t).exists())
    workdir = Path(tempfile.mkdtemp(prefix=f"pinkbutton-mutate-{name}-"))
    started = time.monotonic()
    note = ""
    try:
        prepare(workdir, module, tests)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        with (workdir / "mutmut.log").open("w") as log:
            # Its own process group: a stop must take mutmut's forked workers with it.
            proc = subprocess.Popen([sys.executable, "-m", "mutmut", "run", "--max-children",
                                     str(children)], cwd=workdir, env=env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            try:
                proc.wait(timeout=limit_s)
            except subprocess.TimeoutExpired:
                note = f"stopped after {limit_s:.0f} s: unchecked mutants count as not killed"
            finally:
                _stop(proc)
        meta = workdir / "mutants" / NAMESPACE / f"{module}.meta"
        if not meta.exists():
            tail = (workdir / "mutmut.log").read_text()[-400:].strip().splitlines()
            raise RuntimeError(f"mutmut gave no results for {module}: "
                               f"{tail[-1] if tail else 'no output'}")
        codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
        row = Row(name, len(codes), 0, 0, 0, 0, 0.0, [], note)
        for mutant, code in sorted(codes.items()):
            if mutant in equivalents:
                row.equivalent += 1
            elif code in KILLED_CODES:
                row.killed += 1
            elif code in SURVIVED_CODES:
                row.survived += 1
                row.survivors.append(mutant)
            else:
                row.other += 1
                row.survivors.append(mutant)
        stale = [m for m in equivalents if m.startswith(_prefix(module)) and m not in codes]
        if stale:
            row.note = (row.note + "; " if row.note else "") + (
                f"{len(stale)} listed equivalent(s) no longer exist: {', '.join(stale[:3])}")
        row.seconds = time.monotonic() - started
        return row
    finally:
        if keep is not None:
            target = keep / name
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(workdir, target, symlinks=True)
        shutil.rmtree(workdir, ignore_errors=True)


def _stop(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            continue


def _prefix(module: str) -> str:
    return f"{NAMESPACE}." + module.removesuffix(".py").replace("/", ".") + "."


def show_survivors(name: str, row: Row, keep: Path) -> None:
    for mutant in row.survivors:
        diff = subprocess.run([sys.executable, "-m", "mutmut", "show", mutant], cwd=keep / name,
                              capture_output=True, text=True, check=False).stdout
        print(diff.rstrip())
        print()


def table(rows: list[Row]) -> str:
    head = ("module", "mutants", "killed", "survived", "other", "equivalent", "score", "time")
    lines = [head] + [
        (r.module, str(r.mutants), str(r.killed), str(r.survived), str(r.other),
         str(r.equivalent), f"{r.score:.1f}%", f"{r.seconds:.0f} s")
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = []
    for line in lines:
        cells = [line[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(line[1:], widths[1:], strict=True)]
        out.append("  ".join(cells))
    return "\n".join(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m harness.mutate", description=(__doc__ or "").split("\n")[0])
    ap.add_argument("modules", nargs="*", metavar="MODULE",
                    help=f"some of: {', '.join(MODULES)} (default: all)")
    ap.add_argument("--max-children", type=int, default=2, help="parallel mutant runs (2)")
    ap.add_argument("--limit-min", type=float, default=10.0,
                    help="stop a module's run after this many minutes (10)")
    ap.add_argument("--goal", type=float, default=95.0, help="minimum score per module (95)")
    ap.add_argument("--survivors", action="store_true", help="print each survivor's diff")
    ap.add_argument("--keep", type=Path, help="keep each module's mutmut directory under here")
    args = ap.parse_args(argv)
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        raise UsageError(f"unknown module {unknown[0]!r} (expected one of {', '.join(MODULES)})")
    if args.max_children < 1:
        raise UsageError(f"--max-children must be >= 1, not {args.max_children}")
    if not args.limit_min > 0:
        raise UsageError(f"--limit-min must be > 0, not {args.limit_min}")
    return args


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt  # so a stopped run still kills mutmut and removes its copy


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    try:
        args = parse_args(argv)
        equivalents = load_equivalents()
    except UsageError as e:
        print(f"mutate: {e}", file=sys.stderr)
        return 2
    if importlib.util.find_spec("mutmut") is None:
        print("mutate: mutmut is not installed (pip install -e '.[dev]')", file=sys.stderr)
        return 2
    keep = args.keep
    if args.survivors and keep is None:
        keep = Path(tempfile.mkdtemp(prefix="pinkbutton-mutate-keep-"))
    rows: list[Row] = []
    for name in args.modules or list(MODULES):
        print(f"mutating {MODULES[name][0]} against {' '.join(MODULES[name][1])} ...",
              flush=True)
        try:
            row = run_module(name, children=args.max_children, limit_s=args.limit_min * 60,
                             equivalents=equivalents, keep=keep)
        except (RuntimeError, OSError) as e:
            print(f"mutate: {name}: {e}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(f"mutate: stopped during {name}", file=sys.stderr)
            return 130
        rows.append(row)
        print(table([row]).splitlines()[-1], flush=True)
        if row.note:
            print(f"  note: {row.note}")
        if args.survivors:
            show_survivors(name, row, keep)
    print()
    print(table(rows))
    low = [r.module for r in rows if r.score < args.goal]
    if low:
        print(f"under {args.goal:g}%: {', '.join(low)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
