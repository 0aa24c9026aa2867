"""Timing in interleaved rounds: the host is shared and drifts by 10-25% between seconds, so contenders take
turns within each round and ratios are taken within a round (``paired``), where both saw the same conditions."""

import statistics
import time


def sample(call, seconds, minimum=5):
    """Median wall time (us) of ``call`` over at least ``minimum`` calls and ``seconds`` seconds."""
    samples, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(samples) < minimum:
        t0 = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e6


def interleaved_rounds(calls, rounds=9, seconds_per_call=0.1, pause=0.2):
    """{name: [median us in each round]} for callables that take turns within every round.

    Before each turn a pause lets the thread pools of whatever ran before (BLAS, PyTorch's OpenMP) stop
    spinning: a pool still spinning on the other core halves the next library's GEMM on 2 cores.
    """
    per_round = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            time.sleep(pause)
            for _ in range(3):
                call()
            per_round[name].append(sample(call, seconds_per_call))
    return per_round


def medians(per_round):
    return {name: statistics.median(values) for name, values in per_round.items()}


def paired(per_round, numerator, denominator):
    """Median over rounds of numerator / denominator, each ratio taken within one round (None if one is missing)."""
    if numerator not in per_round or denominator not in per_round:
        return None
    return statistics.median(a / b for a, b in zip(per_round[numerator], per_round[denominator]))
