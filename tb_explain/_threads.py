"""One small thread pool for the numpy and PNG work of logging events.

A logging event runs on the training thread, which waits for it, so the
machine's other cores are idle meanwhile. numpy's loops and Pillow's PNG
encoder release the GIL, so large statistics (`compute.stats`) and image
encodings (`summary.ops`) spread over a few threads finish sooner, with the
same results (each item is computed on its own).
"""

import concurrent.futures
import os
import threading

#: Work items of at least this many values go to the pool (`parallel_map`);
#: smaller ones cost less than a hand-off.
LARGE_ITEM = 1 << 16

#: `parallel_map` uses the pool only for at least this many values in all.
PARALLEL_VALUES = 1 << 20

_executors = {}  # thread name prefix -> (pid, ThreadPoolExecutor)
_lock = threading.Lock()


def _executor(prefix, max_workers):
    """The process's `ThreadPoolExecutor` named `prefix`, made at first use
    (a forked child has the parent's executor object, not its threads: it
    makes its own)."""
    with _lock:
        pid, executor = _executors.get(prefix, (None, None))
        if executor is None or pid != os.getpid():
            executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=max_workers, thread_name_prefix=prefix)
            _executors[prefix] = os.getpid(), executor
        return executor


def workers():
    """Threads of the pool: the machine's cores, at most 4 (1: no pool)."""
    return max(1, min(4, os.cpu_count() or 1))


def pool():
    """The shared `ThreadPoolExecutor`, or None on a single-core machine."""
    if workers() < 2:
        return None
    return _executor("tb_explain", workers())


def parallel_map(function, items, sizes):
    """`[function(item) for item in items]`, computed with the pool.

    The items of at least `LARGE_ITEM` values (`sizes`: values per item) go
    to the pool, largest first, while the calling thread does the small
    ones, when all add up to `PARALLEL_VALUES` or more; otherwise, and on a
    single core, all run on the calling thread.
    """
    executor = pool()
    if executor is None or sum(sizes) < PARALLEL_VALUES:
        return [function(item) for item in items]
    large = sorted((i for i, n in enumerate(sizes) if n >= LARGE_ITEM), key=lambda i: -sizes[i])
    futures = {i: executor.submit(function, items[i]) for i in large}
    results = [None if i in futures else function(item) for i, item in enumerate(items)]
    for i, future in futures.items():
        results[i] = future.result()
    return results


def background(function):
    """Runs `function()` on tb_explain's one background thread (a
    `ThreadPoolExecutor` of one worker, apart from the pool) and returns its
    `Future`. Its work, XLA's compiles of the callbacks' functions, overlaps
    training, which waits for none of it: a compile uses the CPU time the
    training thread leaves (the demo CNN's fit on JAX keeps 1.6 of two cores
    busy, and XLA compiles on up to two), holding the GIL only while it
    lowers the traced function (tens of milliseconds). One worker runs the
    submissions in order."""
    return _executor("tb_explain-background", 1).submit(function)
