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


_LISTINGS = """
import gc, json, sys
from hegui.operator import main
pod = {"metadata": {"name": "p", "labels": {"app": "a"},
                    "managedFields": [{"fieldsV1": {"f:spec": {}, "f:metadata": {}}}]},
       "spec": {"containers": [{"name": "model", "ports": [{"containerPort": 8000}]}]},
       "status": {"conditions": [{"type": "Ready"}, {"type": "PodScheduled"}]}}
raw = json.dumps({"items": [pod] * 100})  # a namespace's pods
heap = [json.loads(raw) for _ in range(100)]  # what the operator holds
if sys.argv[1] == "less":
    main.collect_garbage_less()
before = [generation["collections"] for generation in gc.get_stats()]
read = []
for _ in range(300):  # listings decoded, each read a while by the namespace's reconciles
    read = [*read[-29:], json.loads(raw)]
print(*[g["collections"] - b for g, b in zip(gc.get_stats(), before, strict=True)])
"""


def test_decoding_listings_sets_off_no_collection_of_the_whole_heap() -> None:
    """With Python's default thresholds each decoded listing ran the young collection about
    twice a listing, promoted it while it was still read, and set off collections of the whole
    heap (issue 20: a fifth of the operator's time at 1,000 services, filed under JSON
    decoding); the operator collects its young generation after 20,000 new objects and leaves
    start-up's objects out."""
    def collections(mode: str) -> list[int]:
        done = subprocess.run([sys.executable, "-c", _LISTINGS, mode], capture_output=True,
                              text=True, check=True, timeout=120)
        return [int(n) for n in done.stdout.split()]

    default, less = collections("default"), collections("less")
    assert default[2] >= 1 and less[2] == 0  # whole-heap collections
    assert less[0] * 10 < default[0]  # young ones
