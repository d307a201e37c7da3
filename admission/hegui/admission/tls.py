"""Serving certificates read from files and reloaded when they change.

cert-manager (and hegui's own bootstrap) rotate the certificate by rewriting the files of a
mounted Secret. Loading a new chain into the live SSLContext makes every later handshake use it,
with no restart and no dropped connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from pathlib import Path

log = logging.getLogger(__name__)


class ReloadingCertificate:
    def __init__(self, cert_file: Path, key_file: Path) -> None:
        self.cert_file, self.key_file = cert_file, key_file
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._stamp: tuple[float, float, int, int] | None = None
        self.reload_if_changed()
        self.reloads = 0

    def _current_stamp(self) -> tuple[float, float, int, int]:
        cert, key = self.cert_file.stat(), self.key_file.stat()
        return cert.st_mtime, key.st_mtime, cert.st_size, key.st_size

    def reload_if_changed(self) -> bool:
        stamp = self._current_stamp()
        if stamp == self._stamp:
            return False
        # A half-written pair fails to load; keep serving the old one and try again next tick.
        self.context.load_cert_chain(str(self.cert_file), str(self.key_file))
        self._stamp = stamp
        return True

    async def watch(self, interval: float = 2.0) -> None:
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(OSError, ssl.SSLError):
                if self.reload_if_changed():
                    self.reloads += 1
                    log.info("reloaded serving certificate from %s", self.cert_file)
