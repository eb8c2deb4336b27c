"""Progress bars for long work: tqdm, quiet when stderr is not a terminal."""
import sys

from tqdm.auto import tqdm


def progress_bar(iterable=None, disable=None, **kwargs):
    """tqdm over `iterable`; disabled by default when stderr is not a terminal (CI, pipes, logs)."""
    if disable is None:
        disable = not sys.stderr.isatty()
    return tqdm(iterable, disable=disable, leave=False, **kwargs)
