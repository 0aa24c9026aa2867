"""Writing files so that a crash never leaves half of one: checkpoints, plots, benchmark results, generated code.

The temporary beside each file is named ``.fastdl-<pid>@<host>@<random><suffix>``. A process killed while writing
leaves its temporary behind (a checkpoint's can be many megabytes); the next write into that folder removes the
temporaries of this host's processes that no longer run, and any other of ours older than a day (another host's,
or one from before the names held a process id), never a live writer's.
"""

import contextlib
import os
import socket
import tempfile
import time

PREFIX = ".fastdl-"
ABANDONED_AFTER_SECONDS = 24 * 3600  # for temporaries whose writer cannot be asked (another host's)


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
    folder = os.path.dirname(os.path.abspath(path))
    remove_abandoned_temporaries(folder)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f"{PREFIX}{os.getpid()}@{_host()}@", suffix=suffix)
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


def _host():
    return socket.gethostname().replace("@", "_").replace(os.sep, "_") or "localhost"


def _running(pid):
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists, under another user
    return True


def _abandoned(path, name, host):
    fields = name[len(PREFIX):].split("@")
    if len(fields) == 3 and fields[0].isdigit() and fields[1] == host and os.name == "posix":
        return not _running(int(fields[0]))
    return time.time() - os.path.getmtime(path) > ABANDONED_AFTER_SECONDS


def remove_abandoned_temporaries(folder):
    """Remove the temporaries left in ``folder`` by writers that died mid-write (see the module's docstring)."""
    host = _host()
    try:
        names = [name for name in os.listdir(folder) if name.startswith(PREFIX)]
    except OSError:
        return
    for name in names:
        path = os.path.join(folder, name)
        try:
            if os.path.isfile(path) and _abandoned(path, name, host):
                os.unlink(path)
        except OSError:
            pass  # gone already (another cleaner), or not ours to remove
