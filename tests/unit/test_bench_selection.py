"""Which repetition the benchmark report keeps for each scenario."""

from __future__ import annotations

from bench.run import Measured, best_repetition

SCENARIO = "iris ONNX, 64 connections"


def run(repetition: int, target: str, rps: float, foreign: float = 0.0) -> Measured:
    return Measured(SCENARIO, target, repetition, 64, rps, 1000, 2000, 0, int(rps), foreign)


def test_the_calmest_repetition_wins_whatever_its_figures() -> None:
    runs = [
        run(1, "bare ASGI", 45_000, foreign=0.4), run(1, "pinnace", 22_000, foreign=0.4),
        run(2, "bare ASGI", 40_000), run(2, "pinnace", 19_000),
    ]
    assert {r.repetition for r in best_repetition(runs, SCENARIO)} == {2}


def test_among_equally_calm_repetitions_the_fastest_floor_wins() -> None:
    """A host slowing the whole machine shows in the floor, not in the foreign load."""
    runs = [
        run(1, "bare ASGI", 39_000), run(1, "pinnace", 18_000),
        run(2, "bare ASGI", 45_000, foreign=0.03), run(2, "pinnace", 21_000, foreign=0.03),
        run(3, "bare ASGI", 43_000), run(3, "pinnace", 21_500),
    ]
    chosen = best_repetition(runs, SCENARIO)
    assert {r.repetition for r in chosen} == {2}
    assert len(chosen) == 2


def test_scenarios_without_a_floor_keep_the_calmest_first_repetition() -> None:
    runs = [run(1, "workers 1", 21_000), run(2, "workers 1", 22_000)]
    assert {r.repetition for r in best_repetition(runs, SCENARIO)} == {1}
