"""The base class of failures a user can fix (bad params, data, files, servers).

Commands (`stages/`, `deepfm score`) print such an error as one line and exit 1;
any other exception is a bug and keeps its traceback. Each module defines its own
subclass next to the code that raises it.
"""


class UserError(Exception):
    """A failure whose message names the file, line, column, key or URI at fault."""
