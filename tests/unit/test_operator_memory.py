"""The operator's resident memory at scale (issue 20): what glibc keeps for its threads."""

from __future__ import annotations

import subprocess
import sys

import pytest

_ARENAS = """
import ctypes, sys, tempfile, threading
from hegui.operator import main
if sys.argv[1] == "few":
    assert main.few_malloc_arenas()
together = threading.Barrier(8)  # all alive at once: none takes an exited one's arena
def churn():  # as a reconcile thread decoding listings does
    together.wait()
    for _ in range(200):
        blocks = [bytearray(4096) for _ in range(64)]
        del blocks
    together.wait()
threads = [threading.Thread(target=churn) for _ in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
libc = ctypes.CDLL("libc.so.6")
libc.fopen.restype = ctypes.c_void_p
with tempfile.NamedTemporaryFile() as report:
    out = ctypes.c_void_p(libc.fopen(report.name.encode(), b"w"))
    libc.malloc_info(0, out)
    libc.fclose(out)
    print(open(report.name).read().count("<heap nr="))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_info")
def test_the_operator_s_threads_share_two_malloc_arenas() -> None:
    """Eight threads allocating get arenas of their own (up to 8 a core), each keeping what was
    freed in it; the operator caps them at two before its threads start."""
    def arenas(mode: str) -> int:
        done = subprocess.run([sys.executable, "-c", _ARENAS, mode], capture_output=True,
                              text=True, check=True, timeout=120,
                              env={"PATH": "/usr/bin:/bin"})
        return int(done.stdout)

    assert arenas("few") <= 2 < arenas("default")
