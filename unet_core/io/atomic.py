"""Atomic writes: every output appears whole or not at all, and what killed writers left is swept.

A file or directory is built under a hidden temporary name beside its destination
(``.<name>.tmp-<hex>``) and renamed into place only when complete; a replaced output is first moved
aside (``.<name>.old-<hex>``) and removed after. Each temporary is ``flock``-ed while its writer lives,
so the next writer of the same path removes what a killed one left (`sweep_leftovers`) and leaves a
live one's copy alone.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; rename it to ``path`` only if the block succeeds.

    A previous ``path`` is replaced only after the new one is complete; on failure the temporary directory
    is removed and ``path`` is left as it was. What a killed writer left beside ``path`` is removed first
    (`sweep_leftovers`).

    Parameters
    ----------
    path : str or path-like
        The directory to write; its parent folders are created.

    Yields
    ------
    pathlib.Path
        The empty temporary directory ``.<name>.tmp-<hex>`` to fill.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    sweep_leftovers(final)
    tmp, handle = _claim_temporary(final, directory=True)
    try:
        yield tmp
        move_into_place(tmp, final)
    finally:
        if tmp.exists():
            _remove_settled(tmp)
        os.close(handle)


def _remove_settled(path: Path, *, settle: float = 0.05, timeout: float = 5.0) -> None:
    """Remove ``path`` and keep removing until nothing recreates it: when one chunk write fails (a full
    disk), Zarr's event loop still runs its sibling writes, whose ``mkdir`` brings folders back."""
    deadline = time.monotonic() + timeout
    while True:
        shutil.rmtree(path, ignore_errors=True)
        time.sleep(settle)
        if not path.exists() or time.monotonic() > deadline:
            return


def move_into_place(tmp: Path, final: Path) -> None:
    """Rename the finished ``tmp`` to ``final``, replacing a previous ``final``.

    A previous ``final`` stays readable until it is replaced: a file by the rename itself; a folder, which
    a rename cannot replace, is moved aside to ``.<name>.old-*`` just before and removed once ``tmp`` is in
    place. When writers of the same output race, each move succeeds and the last one's copy stays.

    Parameters
    ----------
    tmp : pathlib.Path
        A complete file or folder beside ``final``, on the same file system.
    final : pathlib.Path
        Where it goes.
    """
    olds = []
    while True:
        try:
            os.replace(tmp, final)
            break
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise
        old = _aside(final)
        with contextlib.suppress(FileNotFoundError):  # another writer moved it first
            os.replace(final, old)
            olds.append(old)
    for old in olds:
        _remove(old)


def discard(path: str | os.PathLike) -> None:
    """Remove a file or folder at once.

    It is renamed to ``.<name>.old-*`` first, so a kill during a long deletion leaves no half-deleted
    ``path`` (only the ``.old-`` copy, which `sweep_leftovers` removes).

    Parameters
    ----------
    path : str or path-like
        An existing file or folder.
    """
    final = Path(path)
    old = _aside(final)
    os.replace(final, old)
    _remove(old)


def _aside(final: Path) -> Path:
    return final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> None:
    """Write a file via temp + rename so readers never see a partial file.

    The file gets the mode of a plain ``open`` (0o666 less the umask), not ``mkstemp``'s 0o600.

    Parameters
    ----------
    path : str or path-like
        The file to write; its parent folders are created and a previous file is replaced.
    payload : bytes
        The whole content.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    sweep_leftovers(final)
    tmp, handle = _claim_temporary(final, directory=False)
    try:
        with os.fdopen(os.dup(handle), "wb") as out:
            out.write(payload)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
        os.close(handle)


def _lock(handle: int, *, wait: bool) -> bool | None:
    """``flock`` an open file or directory: True if held, False if a live process holds it, None where the
    file system has no such locks (then nothing is swept)."""
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    except OSError:
        return None
    return True


def _claim_temporary(final: Path, *, directory: bool) -> tuple[Path, int]:
    """A new ``.<name>.tmp-<hex>`` beside ``final`` and an open, locked handle on it; the lock (released by
    the kernel when the process dies) tells `sweep_leftovers` that its writer is alive."""
    while True:
        tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
        if directory:
            tmp.mkdir()
            try:
                handle = os.open(tmp, os.O_RDONLY)
            except FileNotFoundError:  # swept before we could open and lock it: take another name
                continue
        else:
            handle = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        _lock(handle, wait=True)
        with contextlib.suppress(FileNotFoundError):
            if os.stat(tmp).st_ino == os.fstat(handle).st_ino:  # still ours, not swept before the lock
                return tmp, handle
        os.close(handle)  # swept between creation and lock: take another name


def sweep_leftovers(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary copies of ``path`` that killed writers left beside it.

    ``.<name>.tmp-*`` entries are removed only when no live process holds their lock (so a concurrent
    writer of the same path keeps its copy), ``.<name>.old-*`` (a replaced output) always.

    Parameters
    ----------
    path : str or path-like
        The output whose leftovers to remove; it need not exist.

    Returns
    -------
    list of pathlib.Path
        The leftovers removed.
    """
    final = Path(path)
    pattern = re.compile(rf"\.{re.escape(final.name)}\.(tmp|old)-[0-9a-f]{{8}}")
    try:
        entries = [(e.path, m[1]) for e in os.scandir(final.parent) if (m := pattern.fullmatch(e.name))]
    except FileNotFoundError:
        return []
    removed = []
    for name, kind in entries:
        leftover = Path(name)
        try:
            handle = os.open(leftover, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue  # gone already, a link, or not ours to open
        try:
            if kind == "old" or _lock(handle, wait=False):
                _remove(leftover)
                removed.append(leftover)
        finally:
            os.close(handle)
    if removed:
        log.info("removed %d leftovers of killed writers of %s", len(removed), final)
    return removed


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` like `atomic_write_bytes`.

    Parameters
    ----------
    path : str or path-like
        The file to write.
    text : str
        The whole content.
    """
    atomic_write_bytes(path, text.encode())
