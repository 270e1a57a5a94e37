"""An API token kept in a file that something else renews: a Kubernetes ServiceAccount's projected
token (``/var/run/secrets/kubernetes.io/serviceaccount/token``, rewritten by the kubelet before it
expires), or a Secret mounted as a file. Read when made — an unreadable or empty file is the caller's
error at once — and again at most once a minute (as client-go does) when a call needs it; a read that
fails then keeps the token read before."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Callable

from .errors import ValidationError

#: How long a token read from its file is used before the file is read again, in seconds.
TOKEN_FILE_REFRESH = 60.0


class TokenFile:
    """The token in ``path``; ``field`` names the setting in errors (``FSB_TOKEN_FILE``)."""

    def __init__(self, path: Path, field: str, clock: Callable[[], float] = time.monotonic) -> None:
        #: Absolute: a later change of the working directory does not change which file is read.
        self.path = path.absolute()
        self._field = field
        self._clock = clock
        self._token = self._read()
        self._read_at = clock()

    def current(self) -> str:
        """The token, read again when the last read is a refresh period old."""
        elapsed = self._clock() - self._read_at
        if elapsed >= TOKEN_FILE_REFRESH or elapsed < 0:
            self._read_at = self._clock()
            # Being rewritten, or gone for a moment: the token read before may still be good.
            with contextlib.suppress(ValidationError):
                self._token = self._read()
        return self._token

    def _read(self) -> str:
        try:
            text = self.path.read_text()
        except OSError as error:
            raise ValidationError(self._field, f"{self.path} cannot be read: {error.strerror or error}") from None
        except UnicodeDecodeError:
            raise ValidationError(self._field, f"{self.path} is not text: it should hold the API token") from None
        token = text.strip()
        if not token:
            raise ValidationError(self._field, f"{self.path} is empty: it should hold the API token (e.g. a ServiceAccount's)")
        return token
