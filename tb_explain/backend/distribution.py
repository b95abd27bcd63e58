"""`keras.distribution` facts: which process this is, how many there are.

Under `keras.distribution` (implemented for JAX in Keras 3.15) every process
runs the callbacks; only process 0 writes, and a probe pass over sharded
weights is a collective that every process runs.
"""

import keras


def process_index():
    """This process's index among the processes of the job (0 alone)."""
    if keras.backend.backend() == "jax":
        import jax  # noqa: PLC0415

        return jax.process_index()
    return 0


def process_count():
    """How many processes the job has (1 alone)."""
    if keras.backend.backend() == "jax":
        import jax  # noqa: PLC0415

        return jax.process_count()
    return 1


def active():
    """The active `keras.distribution.Distribution`, or None."""
    return keras.distribution.distribution()
