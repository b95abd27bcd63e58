"""Argument checks shared by every public entry point.

Every check raises `TypeError` (wrong type) or `ValueError` (wrong value) with
a message that names the parameter and shows the offending value, so that a
bad configuration fails at construction, before any epoch is spent.
"""

import numbers
import os


def _show(value):
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_int(name, value, minimum=None):
    """Returns `value` as an `int`, checking type and lower bound."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"`{name}` must be an int, got {_show(value)} "
            f"of type {type(value).__name__}."
        )
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value}.")
    return value


def check_float(name, value, minimum=None, maximum=None, inclusive=True):
    """Returns `value` as a `float`, checking type and range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"`{name}` must be a number, got {_show(value)} "
            f"of type {type(value).__name__}."
        )
    value = float(value)
    low_bad = minimum is not None and (
        value < minimum if inclusive else value <= minimum
    )
    high_bad = maximum is not None and (
        value > maximum if inclusive else value >= maximum
    )
    if low_bad or high_bad or value != value:
        bounds = f"[{minimum}, {maximum}]" if inclusive else f"({minimum}, {maximum})"
        raise ValueError(f"`{name}` must be in {bounds}, got {value}.")
    return value


def check_bool(name, value):
    """Returns `value`, checking that it is a `bool`."""
    if not isinstance(value, bool):
        raise TypeError(
            f"`{name}` must be True or False, got {_show(value)} "
            f"of type {type(value).__name__}."
        )
    return value


def check_choice(name, value, choices):
    """Returns `value`, checking that it is one of `choices`."""
    if value not in choices:
        raise ValueError(
            f"`{name}` must be one of {sorted(choices)}, got {_show(value)}."
        )
    return value


def check_log_dir(log_dir):
    """Returns `log_dir` as a `str` path, creating it (and parents) if needed.

    Raises:
        TypeError: if `log_dir` is not a string or path-like object.
        ValueError: if `log_dir` is empty, names a file, or cannot be created.
    """
    if isinstance(log_dir, bytes) or not isinstance(log_dir, (str, os.PathLike)):
        raise TypeError(
            f"`log_dir` must be a str or os.PathLike, got {_show(log_dir)} "
            f"of type {type(log_dir).__name__}."
        )
    path = os.fspath(log_dir)
    if not path:
        raise ValueError("`log_dir` must be a non-empty path, got ''.")
    if "://" in path:  # gs://, s3://, hdfs://: TensorFlow's file system owns it.
        return path
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(
            f"`log_dir` must be a directory, but {path!r} is an existing file."
        )
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise ValueError(
            f"`log_dir` {path!r} cannot be created as a directory: {exc}"
        ) from exc
    return path


def check_datasets(data, default_name, expected):
    """`data` as `{name: dataset}`: a dict kept as it is, anything else named
    `default_name`; names must be non-empty str without '/' (`expected`
    describes `data` in the error when it is None)."""
    if data is None:
        raise ValueError(f"`data` is required: {expected}.")
    datasets = data if isinstance(data, dict) else {default_name: data}
    if not datasets:
        raise ValueError("`data` must name at least one dataset, got {}.")
    for name in datasets:
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError(f"`data` dataset names must be non-empty str without '/', "
                             f"got {name!r}.")
    return datasets


#: Privacy levels, from most to least written (see the README's "Privacy").
PRIVACY_LEVELS = ("off", "inputs", "strict")


def check_privacy(privacy, log_inputs=True, min_samples=8):
    """Returns `(level, min_samples)`: `privacy` checked, raised to "inputs"
    when `log_inputs` is False; `min_samples` (int >= 2) checked."""
    check_choice("privacy", privacy, PRIVACY_LEVELS)
    check_bool("log_inputs", log_inputs)
    min_samples = check_int("min_samples", min_samples, minimum=2)
    if not log_inputs and privacy == "off":
        privacy = "inputs"
    return privacy, min_samples
