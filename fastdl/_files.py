"""Writing files so that a crash never leaves half of one: checkpoints, plots, benchmark results, generated code."""

import contextlib
import os
import tempfile


def umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path, suffix=".tmp"):
    """A temporary path beside ``path`` to write to. When the block succeeds it is flushed to disk and renamed onto
    ``path`` (readers see the old file or the new one, never a partial one); when it fails it is removed.
    ``suffix`` matters to writers that pick the format from the name (matplotlib)."""
    path = os.fspath(path)
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".fastdl-", suffix=suffix)
    os.close(handle)
    try:
        os.chmod(temporary, 0o666 & ~umask())  # mkstemp makes the file private; these are ordinary files
        yield temporary
        descriptor = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def write_text_atomically(path, text):
    with atomic_path(path) as temporary:
        with open(temporary, "w") as file:
            file.write(text)
