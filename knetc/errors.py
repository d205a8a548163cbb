"""Errors that point at the user's source."""
import linecache
import os
import sys

from . import context

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_NUMPY_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__import__("numpy").__file__)))


class CompileError(Exception):
    """A construct `@knetc.compile` cannot translate, with where it is and what to do instead."""

    def __init__(self, message, filename=None, lineno=None, hint=None):
        self.message, self.filename, self.lineno, self.hint = message, filename, lineno, hint
        super().__init__(format_error(message, filename, lineno, hint))

    def located(self, filename, lineno):
        """The same error, placed at a source line (the first placement wins)."""
        return self if self.filename is not None else CompileError(self.message, filename, lineno, self.hint)


class ShapeError(ValueError):
    """Shapes or dtypes that do not fit an op, named at the user's file and line where known."""

    def __init__(self, message, filename=None, lineno=None):
        if filename is None and not context.compiling():  # (compiled code: placed at the statement)
            filename, lineno = user_frame()  # eager code: the user's line is on the stack now
        self.message, self.filename, self.lineno = message, filename, lineno
        super().__init__(format_error(message, filename, lineno))

    def located(self, filename, lineno):
        """The same error, placed at a source line (the first placement wins)."""
        if self.filename is not None:
            return self
        return ShapeError(self.message, filename, lineno)




def format_error(message, filename=None, lineno=None, hint=None):
    text = message
    if filename is not None:
        source = linecache.getline(filename, lineno).strip()
        text = f'{message}\n  File "{filename}", line {lineno}' + (f"\n    {source}" if source else "")
    if hint:
        text += f"\n  hint: {hint}"
    return text


def user_frame():
    """(filename, lineno) of the innermost caller outside knetc and numpy, or (None, None)."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = os.path.abspath(frame.f_code.co_filename)
        if not filename.startswith((_PACKAGE_DIR, _NUMPY_DIR)) and not filename.startswith("<frozen"):
            return frame.f_code.co_filename, frame.f_lineno
        frame = frame.f_back
    return None, None
