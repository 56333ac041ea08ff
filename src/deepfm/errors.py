"""The base class of failures a user can fix (bad params, data, files, servers).

Commands (`stages/`, `deepfm score`) print such an error as one line and exit 1;
any other exception is a bug and keeps its traceback. Each module defines its own
subclass next to the code that raises it.
"""


class UserError(Exception):
    """A failure whose message names the file, line, column, key or URI at fault.

    Stages and `deepfm score` print its one-line message and exit 1; a subclass says which
    part of the pipeline refused.

    Example::

        raise UserError("params.yaml line 3: train.lr must be greater than 0, got -1")
    """
