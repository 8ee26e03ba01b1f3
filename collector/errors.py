"""The command line's errors and exit codes, in one module that ``cli``, ``service`` and ``replay`` all import."""

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad usage, bad config or unreadable input: exit 2 with the message on stderr."""
