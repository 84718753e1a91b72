"""The project's one exception type for mistakes a user can fix, and the one-line format of every message.

The CLI turns a :class:`HalocutError` into one line on stderr and exit code
:data:`EXIT_USER_ERROR`; anything else is a bug and keeps its traceback.
"""

EXIT_USER_ERROR = 2
MESSAGE_CHARS = 240  # what a quoted library message is cut to


class HalocutError(Exception):
    """A user-facing error: the message is one line naming the file, field or layer at fault.

    >>> str(HalocutError("model 'vgg17': unknown"))
    "model 'vgg17': unknown"
    """


def one_line(error: BaseException | str, first: bool = False, limit: int = MESSAGE_CHARS) -> str:
    """A library's message on one line: white space folded (or, with ``first``, its first non-empty line, for
    messages that go on with a traceback, as TVM's and Ray's do), cut to ``limit`` characters.

    >>> one_line(ValueError("shapes\\n  (1, 2) and (3, 4)\\n\\tdiffer"))
    'shapes (1, 2) and (3, 4) differ'
    >>> one_line(RuntimeError("Check failed\\nStack trace:\\n  0: f"), first=True)
    'Check failed'
    >>> one_line(KeyError())
    'KeyError'
    """
    text = str(error)
    if first:
        text = next((line for line in text.splitlines() if line.strip()), "")
    text = " ".join(text.split())
    if not text and isinstance(error, BaseException):
        text = type(error).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."
