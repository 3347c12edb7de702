"""Which of this process's open descriptors a path names, however it is spelled.

``/dev/stdout``, ``//dev/stdout``, ``/dev/./stdout``, ``/dev/fd/1``, ``/proc/self/fd/1``,
``/proc/thread-self/fd/1``, ``/proc/PID/fd/1`` or a symbolic link to any of them: opened by
name, each is a new open of the file the descriptor is on, not the descriptor. A command that
must act on the descriptor itself (read the stdin it was started without, write a report at
the offset the shell's redirection left) asks here first.
"""

from __future__ import annotations

import os
import re
import select

# The kernel's limit on the symbolic links one path's lookup follows.
_MOST_LINKS = 40


def own_descriptor(path: str | os.PathLike[str]) -> int | None:
    """The descriptor of this process that ``path`` opens, else None: its symbolic links are
    followed up to ``/proc/PID[/task/TID]/fd/N``, whose own link, to the file the descriptor
    holds, is not."""
    descriptor = descriptor_named(path)
    # A number no descriptor is open on names no file (its open is ENOENT, the caller's
    # mistake, exit 2), not a descriptor to write (EBADF, exit 3).
    return descriptor if descriptor is not None and is_open(descriptor) else None


def descriptor_named(path: str | os.PathLike[str]) -> int | None:
    """The number of the descriptor of this process that ``path`` names, open or not (a file
    opened later may take it), else None."""
    path = os.fspath(path)
    for _ in range(_MOST_LINKS):
        # The folder's links resolved before its "..", as the kernel does (abspath would
        # take "link/.." for the folder the link is in).
        if not os.path.isabs(path):
            try:
                path = os.path.join(os.getcwd(), path)
            except OSError:  # the working folder was removed: the file's open says so
                return None
        folder, name = os.path.split(path)
        if name in ("", ".", ".."):
            return None  # a folder
        folder = os.path.realpath(folder)
        if _descriptor_number(name) and _descriptors_folder(folder):
            return int(name)
        try:
            target = os.readlink(os.path.join(folder, name))
        except OSError:  # not a symbolic link (or none there): a file of its own
            return None
        path = os.path.join(folder, target)
    return None


# A process's descriptors folder in /proc, its own or a thread's, however the folder is reached.
_DESCRIPTORS_FOLDER = re.compile(r"/proc/[^/]+(/task/[^/]+)?/fd")


def names_a_descriptor(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a descriptor, of this process (:func:`descriptor_named`) or any
    (``/proc/PID/fd/N``): a path that opens whatever that process holds under the number when
    it is opened, not a file of its own."""
    if descriptor_named(path) is not None:
        return True
    folder = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    return _DESCRIPTORS_FOLDER.fullmatch(folder) is not None


def is_open(descriptor: int) -> bool:
    """Whether ``descriptor`` is open in this process."""
    try:
        os.fstat(descriptor)
    except OSError:
        return False
    return True


def write_all(descriptor: int, data: bytes) -> None:
    """Write ``data`` whole through ``descriptor``, which may be non-blocking (a pipe its
    parent set O_NONBLOCK on, as Node.js and some supervisors do, shared by every process the
    pipe was handed to): a write that would block waits until it can go on, as on a blocking
    descriptor, instead of failing with EAGAIN part-way (a report cut after 64 KB, exit 3)."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(descriptor, view) :]
        except BlockingIOError:
            wait_writable(descriptor)


def wait_writable(descriptor: int) -> None:
    """Until ``descriptor`` takes more (or its reader went away: the next write says so)."""
    poller = select.poll()
    poller.register(descriptor, select.POLLOUT)
    poller.poll()


def _descriptor_number(name: str) -> bool:
    """Whether ``name`` is a descriptor's name in ``/proc/PID/fd``: digits without a leading
    zero (the kernel finds no ``01`` there)."""
    return name.isascii() and name.isdigit() and str(int(name)) == name


def _descriptors_folder(folder: str) -> bool:
    """Whether ``folder`` (its links resolved) is this process's, or one of its threads',
    ``fd`` folder in ``/proc``."""
    own = f"/proc/{os.getpid()}"
    if folder == f"{own}/fd":
        return True
    task, _, rest = folder.removeprefix(f"{own}/task/").partition("/")
    return folder.startswith(f"{own}/task/") and task.isdigit() and rest == "fd"


__all__ = [
    "descriptor_named",
    "is_open",
    "names_a_descriptor",
    "own_descriptor",
    "wait_writable",
    "write_all",
]
