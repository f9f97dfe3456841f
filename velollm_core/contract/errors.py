"""Errors that the CLI turns into one readable message and an exit code."""


class VeloError(Exception):
    """A failure of the job (exit code 1): the message is shown to the user as is."""

    exit_code = 1


class UserInputError(VeloError):
    """Bad input from the user (exit code 2): missing file, unknown model, bad flag value."""

    exit_code = 2


class BackendError(VeloError):
    """A runtime (server) failed, was unreachable or answered something we cannot use."""


class ServerGone(BackendError):
    """The server is gone (it refuses connections): nothing more can be measured.

    Raised by ``generate`` (or by the load generator for a stream that cannot connect), it ends the
    load level and the benchmark at once, where any other ``BackendError`` is one failed request.
    """
