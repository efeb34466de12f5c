"""Domain errors. The CLI turns every ``TxmdbError`` into one line and exit status 1."""

from contextlib import contextmanager


class TxmdbError(Exception):
    """A user-facing error: bad input, a missing record, an unusable database."""


class InputError(TxmdbError):
    """A file or value that cannot be used; the message names the file and the problem."""

    def __init__(self, source, problem: str):
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{source}: {problem}")


class RefusedInput(InputError):
    """An input the analysis can refuse only once it has read the data (more clusters than
    valid voxels): refused like a bad option, so the attempt leaves no record at all."""


class NotFoundError(TxmdbError):
    """A record named by the user does not exist."""


class DuplicateError(TxmdbError):
    """A record with the same unique key exists already."""


class StateError(TxmdbError):
    """A record is not in a state that allows the change asked for (a finished job cancelled)."""


class DatabaseError(TxmdbError):
    """The catalogue cannot be reached, or its schema is not the one this txmdb expects."""


class StoreError(TxmdbError):
    """The results store cannot be written: no space left, file too large, read-only…"""


class StoreFileTaken(StoreError):
    """A store file is already where a new record's file would go, and no row names it (ids are
    given again after a database is restored from an older backup than its store)."""


class StoreOwnerError(StoreError):
    """The store belongs to another catalogue, or cannot be shown to be this one's."""


class StoreFileError(StoreError):
    """A store file is missing or is not the file its row recorded (SHA-256 differs)."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"store file {path} {problem}")


class ParameterError(TxmdbError):
    """A value given for a named parameter is unusable.

    The message names the value ("voxel size 1e-320 nm is not positive"), never a
    command-line option; ``parameters`` holds the keyword names involved, which the CLI
    renders as its own options.
    """

    def __init__(self, parameters: str | tuple[str, ...], message: str):
        self.parameters = (parameters,) if isinstance(parameters, str) else tuple(parameters)
        super().__init__(message)


class FilterError(ParameterError):
    """A query was given a filter it does not declare: a usage error, not an empty result."""


@contextmanager
def input_errors(source):
    """Translate the ``ValueError`` of a pure kernel into an :class:`InputError` naming ``source``.

    Kernels (``txmdb.analysis``) know arrays, not files: the catalogue wraps each kernel
    call on a file's data in this, once.
    """
    try:
        yield
    except ValueError as exc:
        raise InputError(source, str(exc)) from None
