"""Listening ports that fail to listen say so in one line an operator can act on.

Twisted reports a port in use as a 28 to 40 line traceback of ``CannotListenError``; the
operator needs which option, which address and what to do.
"""

from __future__ import annotations

import errno
import re

from twisted.application.service import MultiService
from twisted.internet.error import CannotListenError


class OneLineStartFailures(MultiService):
    """Listens (in ``privilegedStartService``, before twistd drops privileges); a port in use
    or refused stops the start with one line naming the option, the address and what to do,
    exit status 1, no traceback. ``listeners`` maps each option to its endpoint."""

    def __init__(self, listeners: dict[str, str | None]) -> None:
        super().__init__()
        self._listeners = listeners

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except CannotListenError as error:
            raise SystemExit(cannot_listen(error, self._listeners)) from None


def cannot_listen(error: CannotListenError, listeners: dict[str, str | None]) -> str:
    """``exchange-stream: --feed tcp:7001: cannot listen on 127.0.0.1:7001 (...)`` with the
    option whose endpoint names the port (every option when none or several do)."""
    port = str(error.port)
    named = [
        f"{option} {endpoint}"
        for option, endpoint in listeners.items()
        if endpoint is not None and port in re.split(r"[:=\s]", endpoint)
    ]
    which = named[0] if len(named) == 1 else " / ".join(o for o, e in listeners.items() if e)
    where = f"{error.interface or '*'}:{error.port}"
    cause = getattr(error.socketError, "errno", None)
    if cause == errno.EADDRINUSE:
        advice = "another process has it; stop that process or choose another port"
    elif cause == errno.EACCES:
        advice = "a port below 1024 needs privileges; choose another port or grant them"
    else:
        advice = "is that address one of this host's interfaces?"
    return f"exchange-stream: {which}: cannot listen on {where} ({error.socketError}): {advice}"
