"""Files the user asks for (``-o``, ``--png-dir``): checked before any work, written whole or not at all.

A destination that cannot be written (a folder given as a file, a file given as a folder,
a missing folder where none may be made) is refused in one line before the query or the
report runs. Regular files are written under a temporary name and renamed when all of
them are complete; a device or a pipe (``/dev/stdout``, ``/dev/full``) is written directly,
since it cannot be renamed onto, and a named pipe that no process reads is refused at once
rather than waited on forever. Folders made for the output are removed again when writing
fails, so a failure leaves nothing behind.

A symbolic link is followed: the file it names is replaced, as a shell's ``>`` would write
into it. Except where the kernel's ``protected_symlinks`` would refuse to follow it: a link
in a world-writable sticky folder (``/tmp``) that neither this user nor the folder's owner
owns. Anyone could have planted it there to make this user, root say, overwrite a file of
theirs; and txmdb replaces the target by a rename, which that kernel check never sees.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path
from typing import Iterable, Mapping

from txmdb.errors import InputError

__all__ = ["check_file_destination", "check_folder_destination", "write_files"]


def _cannot_write(path: Path, exc: OSError) -> InputError:
    return InputError(path, f"cannot write: {exc.strerror or exc}")


def _missing_folders(path: Path, folder: Path) -> list[Path]:
    """The folders to make, outermost first, for ``folder`` to exist; refused if one of them is a file."""
    missing = []
    while not folder.is_dir():
        if folder.exists() or folder == folder.parent:
            raise InputError(path, f"{folder} is not a folder")
        missing.append(folder)
        folder = folder.parent
    return missing[::-1]


def check_file_destination(path: str | os.PathLike, *, make_folder: bool = False) -> None:
    """Refuse ``path`` as an output file: a folder, or in a folder that does not exist.

    With ``make_folder`` a missing folder is fine (:func:`write_files` makes it), unless
    something on its way is a file.
    """
    path = Path(path)
    try:
        if path.is_dir():
            raise InputError(path, "is a folder; give the name of a file to write")
        if not path.parent.is_dir():
            if not make_folder and not path.parent.exists():
                raise InputError(path, f"folder {path.parent} does not exist")
            _missing_folders(path, path.parent)
    except OSError as exc:  # a name too long, a folder that cannot be searched
        raise _cannot_write(path, exc) from None


def check_folder_destination(path: str | os.PathLike) -> None:
    """Refuse ``path`` as an output folder if it, or a folder on its way, is not a folder."""
    path = Path(path)
    try:
        if path.exists() and not path.is_dir():
            raise InputError(path, "is not a folder; give a folder to write into")
        _missing_folders(path, path)
    except OSError as exc:
        raise _cannot_write(path, exc) from None


def write_files(contents: Mapping[Path, bytes], *, new_folders: Iterable[Path] = ()) -> None:
    """Write every file of ``contents`` whole, or none of them.

    Parameters
    ----------
    contents : mapping of Path to bytes
        Destination → content. The folder of each must exist, or be among ``new_folders``.
    new_folders : iterable of Path
        Folders to make first, with their missing parents; those made here are removed
        again if writing fails.

    Raises
    ------
    InputError
        A destination is refused, or writing fails (disk full, no permission…): the error
        names the file, and no partial or temporary file or new folder is left.
    """
    from txmdb.io.files import atomic_output

    made: list[Path] = []
    current: Path | None = None
    try:
        for folder in map(Path, new_folders):
            current = folder
            check_folder_destination(folder)
            for missing in _missing_folders(folder, folder):
                missing.mkdir()
                made.append(missing)
        with contextlib.ExitStack() as renames:
            for current, data in contents.items():
                current = Path(current)
                check_file_destination(current)
                if current.exists() and not current.is_file():
                    _write_special(current, data)  # a device or a pipe: nothing to rename
                    continue
                # A link to a file: replace the file it names, not the link.
                target = _link_target(current)
                # atomic_output renames when the stack closes, after every file is complete.
                renames.enter_context(atomic_output(target)).write_bytes(data)
    except OSError as exc:
        _remove_folders(made)
        raise _cannot_write(current, exc) from None
    except BaseException:
        _remove_folders(made)
        raise


def _write_special(path: Path, data: bytes) -> None:
    """Write ``data`` to a device or a pipe; a pipe with no reader is refused, not waited on."""
    try:
        # Non-blocking, opening a FIFO nobody reads fails (ENXIO) instead of waiting for a reader.
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise InputError(path, "is a pipe that no process reads; start its reader first") from None
        raise
    with open(fd, "wb") as stream:
        os.set_blocking(fd, True)  # then write as any file: a slow reader is waited for
        stream.write(data)


def _link_target(path: Path) -> Path:
    """``path``, or the file its chain of symbolic links names; refused where a link may be planted.

    The links are followed one at a time (at most 40, the kernel's limit): each must be
    owned by this user or by its folder's owner when that folder is world-writable and
    sticky, as the kernel's ``protected_symlinks`` requires.
    """
    for _ in range(40):
        if not path.is_symlink():
            return path
        link, folder = path.lstat(), path.parent.stat()
        shared = folder.st_mode & stat.S_ISVTX and folder.st_mode & stat.S_IWOTH
        if shared and link.st_uid not in (os.geteuid(), folder.st_uid):
            raise InputError(path, f"is a symbolic link of user id {link.st_uid} in the shared folder {path.parent} "
                                   "(world-writable, sticky): not followed; write to another name")
        path = path.parent / os.readlink(path)
    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))


def _remove_folders(folders: list[Path]) -> None:
    for folder in reversed(folders):
        with contextlib.suppress(OSError):
            folder.rmdir()
