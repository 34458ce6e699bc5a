"""The errors that the inputs a user named cause, not the run: :class:`InputError` and its two kinds.

A dataset without the file its layout needs, a folder without images, a predictions table evaluated
against the ground truth of another set: rerunning does not help, the command line or the data must
change. Each kind is also the builtin error it replaces (:class:`MissingInputError` is a
``FileNotFoundError``, :class:`InvalidInputError` a ``ValueError``), so every handler written for those
keeps working. The jobs (``jobs.entry.run_job``) report an ``InputError`` as one line, without a
traceback, and exit 2, as they do for a bad command line.

This module imports nothing: the command line's entry point imports it before torch or Ray.
"""

from __future__ import annotations


class InputError(Exception):
    """An error caused by the inputs a command was given (base class; raise one of the kinds below)."""


class MissingInputError(InputError, FileNotFoundError):
    """A file or folder the inputs need is not there (a dataset layout's file, any image, a table)."""


class InvalidInputError(InputError, ValueError):
    """The inputs are there but are not what the command expects.

    A malformed annotation file, say, or a predictions table and a ground truth of different sets.
    """
