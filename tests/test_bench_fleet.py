"""`make bench-fleet`'s table (harness/bench_fleet.py): one row per engine and step, the
PostgreSQL receivers beside SQLite at the same steps, a verdict line per engine, and a note
when PostgreSQL could not start."""

from __future__ import annotations

import pytest

from harness import bench_fleet
from harness.bench import Series
from harness.pg import PostgresError

SQLITE, PG = "1 receiver, SQLite", "2 receivers, PostgreSQL"


def step(idle: int, p99: float, lost: int = 0) -> dict:
    lat = {"p50": p99 / 3, "p95": p99 / 2, "p99": p99, "max": p99, "n": 100}
    sample = {"cpu_devices": 80.0, "cpu_room": 12.0, "rss_devices": 900.0 + idle,
              "rss_room": 90.0}
    return {"idle": idle, "press": lat, "edge": {**lat, "p50": lat["p50"] + 50},
            "first_frame": lat, "g2g": lat, "samples": [sample], "broker_cpu": 20.0,
            "mib_per_idle": 1.5, "lost": lost, "duplicated": 0, "unregistered": 0}


def result(steps: dict, notes: list[str] | None = None) -> dict:
    return {"floor": Series("floor", [0.2, 0.3, 0.4]), "steps": steps, "notes": notes or []}


def test_the_table_has_the_postgresql_receivers_beside_sqlite_and_a_verdict_for_each():
    table = bench_fleet.format_table(result({
        SQLITE: [step(250, 20.0), step(500, 40.0), step(1000, 80.0)],
        PG: [step(250, 25.0), step(500, 60.0), {"idle": 1000, "error": "over its 300 s"}],
    }))
    lines = table.splitlines()
    header = next(line for line in lines if line.startswith("room"))
    rows = [line for line in lines if line.startswith((SQLITE, PG))]
    assert [r.split()[3] for r in rows[:6]] == ["250", "500", "1000", "250", "500", "1000"]
    assert rows[5].endswith("failed: over its 300 s")
    # the engine's full name fits its column: every value row lines up with the header
    for row in rows[:5]:
        assert len(row) == len(header), (row, header)
    assert "PG-HOOK" not in table and "not measured yet" not in table
    sqlite_verdict = next(line for line in lines if line.startswith("largest fleet")
                          and SQLITE in line)
    pg_verdict = next(line for line in lines if line.startswith("largest fleet") and PG in line)
    assert sqlite_verdict.endswith("500 idle + 20 streaming (p99 40.0 ms)")
    assert pg_verdict.endswith("none of the steps")  # 250 is under 500, 500 over 50 ms
    # the goals line still judges the SQLite engine
    assert "goal 1000 idle + 20 streaming within 50 ms: not met" in table


def test_without_postgresql_the_sqlite_rows_print_with_a_note():
    note = f"{PG}: not measured, PostgreSQL did not start: initdb not found"
    table = bench_fleet.format_table(result({SQLITE: [step(250, 20.0), step(500, 30.0)]},
                                            [note]))
    assert sum(line.startswith(SQLITE) for line in table.splitlines()) == 2
    assert f"note: {note}" in table
    assert not any(line.startswith("largest fleet") and PG in line
                   for line in table.splitlines())
    assert "largest fleet" in table and "500 idle + 20 streaming (p99 30.0 ms)" in table


def test_a_postgresql_that_cannot_start_is_a_note_not_a_failure(monkeypatch):
    class Broken:
        def __init__(self, durable: bool) -> None:
            assert durable  # a benchmark measures PostgreSQL as deployed: fsync on

        def start(self):
            raise PostgresError("initdb not found: apt-get install postgresql\nmore")

    monkeypatch.setattr(bench_fleet, "Postgres", Broken)
    pg, note = bench_fleet.start_postgres()
    assert pg is None
    assert note == (f"{PG}: not measured, PostgreSQL did not start: initdb not found: "
                    "apt-get install postgresql")


@pytest.mark.parametrize("engine, args", [
    (SQLITE, []),
    (PG, ["--receivers", "2", "--db", "postgresql://x@127.0.0.1:5/step_250"]),
])
def test_each_engine_runs_the_load_with_its_receivers_and_database(engine, args):
    assert bench_fleet.engine_args(engine, "postgresql://x@127.0.0.1:5/step_250") == args
