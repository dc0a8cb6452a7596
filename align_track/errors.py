"""Exceptions raised by align-track."""
from __future__ import annotations


class AlignTrackError(Exception):
    """Base class of align-track's own errors."""


class AlignTrackConfigError(AlignTrackError, ValueError):
    """A ``tracker`` setting is unknown or has a bad value; raised at start."""


class BackendUnavailableError(AlignTrackError, ImportError):
    """The selected backend's client library is not installed."""


class StoreError(AlignTrackError, OSError):
    """The SQLite store cannot be opened or read; the message names the file."""
