"""nginx as a child process: where its binary is, its command line, the `user` line of a config.

Shared by the reports server (`reporting.webserver`) and the API's buffering proxy (`serving.proxy`).
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
from pathlib import Path


def user_directive(reports_dir: Path) -> str:
    """Started as root, nginx workers would switch to `nobody`, who may not read the folder: run
    them as the folder's owner instead. As a normal user the directive is not needed (and ignored)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "# user: not root, workers run as the current user"

    st = Path(reports_dir).stat()
    return f"user {pwd.getpwuid(st.st_uid).pw_name} {grp.getgrgid(st.st_gid).gr_name};"


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def nginx_args(conf: Path, binary: str | None = None) -> list[str]:
    prefix = conf.parent
    return [
        binary or nginx_binary() or "nginx",
        "-p",
        f"{prefix}/",
        "-e",
        str(prefix / "logs" / "error.log"),
        "-c",
        str(conf),
    ]


def nginx_test(conf: Path) -> subprocess.CompletedProcess:
    return subprocess.run(nginx_args(conf) + ["-t"], capture_output=True, text=True, timeout=30)
