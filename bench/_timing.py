"""Side-by-side timing and compute floors shared by the bench scripts."""

import time


def input_gradient(model):
    """The compute floor of the gradient methods: one compiled gradient of the
    target outputs with respect to a batch of inputs, `(batch, target) -> grads`."""
    import tensorflow as tf  # noqa: PLC0415 (bench scripts set TF's log level first)

    @tf.function
    def gradient(batch, target):
        with tf.GradientTape() as tape:
            tape.watch(batch)
            f = tf.reduce_sum(tf.gather(model(batch, training=False), target, axis=1,
                                        batch_dims=1))
        return tape.gradient(f, batch)

    return gradient


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
