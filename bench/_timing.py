"""Side-by-side timing shared by the bench scripts."""

import time


def interleaved(runs, repeats):
    """Times every callable of `runs` once per repeat, taking turns.

    Interleaving spreads this noisy machine's slow spells over all of them,
    so their ratios stay meaningful.

    Args:
        runs: Dict from name to a callable taking no argument.
        repeats: Rounds.

    Returns:
        Dict from name to the list of its durations in seconds.
    """
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times
