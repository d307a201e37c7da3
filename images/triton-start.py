#!/usr/bin/python3.11
"""The Triton image's entrypoint: tritonserver with the image's Python backend copied under /tmp.

The Python backend gives its stub execute permission (chmod) every time it loads a model, which a
read-only root filesystem and a non-root user both refuse; hegui.moderation.tritonserver does the
same in a private directory when it runs Triton beside the tests. The copy is links to the
image's files plus the stub itself, in the pod's /tmp (an emptyDir).
"""

import os
import shutil
import sys
from pathlib import Path

SERVER = Path("/opt/hegui/lib/pytriton/tritonserver")
STUB = "triton_python_backend_stub"


def main() -> None:
    backends = Path(os.environ.get("TMPDIR", "/tmp")) / "hegui-triton-backends"  # noqa: S108
    python = backends / "python"
    shutil.rmtree(backends, ignore_errors=True)
    python.mkdir(parents=True)
    for item in (SERVER / "backends" / "python").iterdir():
        if item.name == STUB:
            shutil.copy2(item, python / STUB)
        elif item.name != "__pycache__":
            (python / item.name).symlink_to(item)
    binary = str(SERVER / "bin" / "tritonserver")
    os.execv(binary, [binary, f"--backend-directory={backends}", *sys.argv[1:]])  # noqa: S606


if __name__ == "__main__":
    main()
