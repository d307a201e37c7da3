"""The evidence store's calls in a process of their own, off the sidecar's interpreter (Art.11).

Shipping a segment to an S3 store is two HTTP requests a second (a HEAD that refuses to write
over a name, then the PUT), signed and parsed in Python by the minio client: about 6 ms of CPU a
second at 300 requests a second (bench/records.py). In the sidecar's process that work holds the
GIL in bursts of a few milliseconds while the event loop waits, and a request that arrives then
waits too: it was most of what shipping added to a request's p99. `ProcessStore` runs those
calls in a child process (`python -m hegui.evidence.worker`) instead; the shipper thread only
builds the segment (its SHA-256 releases the GIL) and hands its bytes over a pipe.

The child holds no state the sidecar needs: it is started on first use and again after it
dies; a call it does not answer (it died, the pipe broke) is a StoreError, which the shipper
treats as the store being away (nothing is marked shipped, the records wait in the pod, and a
segment the child may have written before dying is found again by name, never written twice).
It runs in a session of its own, so a signal to the sidecar's process group (Ctrl-C, a
container's SIGTERM relayed to the group) reaches the sidecar, whose shutdown ships what waits
through it, and not the child first; it exits when the sidecar closes its end of the pipe or
dies. Credentials reach it in the pipe (the factory), never on its command line.

The protocol, over the child's stdin and stdout: 8-byte big-endian length, then a pickle. The
first message is the factory (a picklable callable returning a Store), then (method, args)
calls, each answered by ("ok", value) or ("error", exception). The peer is this process's own
child: nothing else writes to these pipes.
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from hegui.evidence.store import Store, StoreError, Version

_LENGTH = struct.Struct(">Q")


def _send(fd: int, value: Any) -> None:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_LENGTH.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def _receive(fd: int) -> Any:
    """The next message; EOFError when the other end closed the pipe."""
    def exactly(count: int) -> bytes:
        chunks, left = [], count
        while left:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    (length,) = _LENGTH.unpack(exactly(_LENGTH.size))
    return pickle.loads(exactly(length))  # noqa: S301 (the peer is our own child or parent)


class ProcessStore:
    """A Store whose calls run in a child process (see the module's doc). `factory` builds the
    real store there and must pickle: `functools.partial(S3Store, url, ...)`, say."""

    def __init__(self, factory: Callable[[], Store], url: str) -> None:
        self.factory, self.url = factory, url
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None

    def _started(self) -> subprocess.Popen[bytes]:
        if self._process is not None and self._process.poll() is None:
            return self._process
        self._stop()
        process = subprocess.Popen([sys.executable, "-m", "hegui.evidence.worker"],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   start_new_session=True, close_fds=True)
        assert process.stdin is not None
        self._process = process
        try:
            _send(process.stdin.fileno(), self.factory)
        except OSError as error:
            self._stop()
            raise StoreError(f"{self.url}: cannot start the store's worker process: "
                             f"{error}") from None
        return process

    def _call(self, method: str, *args: Any) -> Any:
        with self._lock:
            process = self._started()
            assert process.stdin is not None and process.stdout is not None
            try:
                _send(process.stdin.fileno(), (method, args))
                status, value = _receive(process.stdout.fileno())
            except (OSError, EOFError, pickle.UnpicklingError) as error:
                self._stop()
                raise StoreError(f"{self.url}: the store's worker process did not answer "
                                 f"{method} ({type(error).__name__}); it is started again on "
                                 "the next call") from None
        if status == "error":
            raise value
        return value

    def put(self, key: str, data: bytes, retain_until: datetime) -> None:
        self._call("put", key, data, retain_until)

    def get(self, key: str, version_id: str | None = None, length: int | None = None) -> bytes:
        found: bytes = self._call("get", key, version_id, length)
        return found

    def exists(self, key: str) -> bool:
        return bool(self._call("exists", key))

    def versions(self, prefix: str) -> Iterator[Version]:
        found: list[Version] = self._call("versions", prefix)
        yield from found

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                pipe.close()
        try:
            process.wait(5.0)  # it exits when its stdin closes
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def close(self) -> None:
        """Stop the child (the shipper is done with the store)."""
        with self._lock:
            self._stop()


def serve(reading: int, writing: int) -> int:
    """The child: build the store, then answer calls until the pipe closes."""
    try:
        factory = _receive(reading)
    except EOFError:
        return 0
    try:
        store = factory()
    except Exception as error:  # each call answers it
        store, broken = None, error
    while True:
        try:
            method, args = _receive(reading)
        except EOFError:
            return 0
        try:
            if store is None:
                raise StoreError(f"the evidence store could not be opened: {broken}")
            value = getattr(store, method)(*args)
            if method == "versions":
                value = list(value)
            answer: tuple[str, Any] = ("ok", value)
        except Exception as error:  # the shipper decides
            answer = ("error", error if isinstance(error, StoreError) else
                      StoreError(f"{type(error).__name__}: {error}"))
        _send(writing, answer)


if __name__ == "__main__":
    answers = os.dup(1)
    os.dup2(2, 1)  # whatever a library prints goes to stderr, never into the answers
    sys.exit(serve(sys.stdin.fileno(), answers))
