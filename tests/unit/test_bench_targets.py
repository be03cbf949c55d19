"""The benchmark report's targets table: the workers row and what two cores allow."""

from __future__ import annotations

from bench.run import Measured, targets

SCENARIO = "iris ONNX, 64 connections, nothing pinned"


def run(target: str, rps: float, cpu_us: float, load_cpu_us: float) -> Measured:
    return Measured(SCENARIO, target, 1, 64, rps, 1000, 2000, 0, int(rps), 0.0,
                    cpu_us=cpu_us, load_cpu_us=load_cpu_us)


def _workers_row(chosen: dict[str, list[Measured]]) -> str:
    return next(line for line in targets(chosen).splitlines() if "--workers 2" in line)


def test_the_workers_row_gives_the_ceiling_wrk_leaves_two_workers() -> None:
    # One worker: 50 µs a request fills its core. Two: wrk's 10 µs a request shares the cores,
    # so at most 2 * 50 / (50 + 10) = 1.67 times one worker's rate.
    chosen = {SCENARIO: [run("workers 1", 20_000, 50, 12), run("workers 2", 32_000, 52, 10)]}
    row = _workers_row(chosen)
    assert "1.60 x" in row
    assert "2 cores allow 1.67 x" in row
    assert "wrk's 10 µs" in row and "two workers' 52 µs" in row
    assert row.endswith("| **no** |")  # the target is 1.7 x, whatever the ceiling


def test_a_run_recorded_without_wrk_cpu_has_no_ceiling() -> None:
    chosen = {SCENARIO: [run("workers 1", 20_000, 50, 0), run("workers 2", 35_000, 50, 0)]}
    row = _workers_row(chosen)
    assert "allow" not in row
    assert row.endswith("| yes |")
