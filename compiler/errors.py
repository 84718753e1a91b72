"""The project's one exception type for mistakes a user can fix.

The CLI turns a :class:`HalocutError` into one line on stderr and exit code
:data:`EXIT_USER_ERROR`; anything else is a bug and keeps its traceback.
"""

EXIT_USER_ERROR = 2


class HalocutError(Exception):
    """A user-facing error: the message is one line naming the file, field or layer at fault.

    >>> str(HalocutError("model 'vgg17': unknown"))
    "model 'vgg17': unknown"
    """
