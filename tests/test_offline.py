"""The suite never touches the network, and the light commands never import timm / torchvision."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest


def test_socket_guard_refuses_any_remote_connection() -> None:
    with pytest.raises(RuntimeError, match="tests run offline"):
        socket.create_connection(("192.0.2.1", 80), timeout=1)  # TEST-NET-1: never routed
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with pytest.raises(RuntimeError, match="tests run offline"):
            s.connect_ex(("pypi.org", 443))
    finally:
        s.close()


def test_light_commands_do_not_import_timm_or_torchvision(tmp_path: Path) -> None:
    code = (
        "import contextlib, io, sys\n"
        "import mtlkit\n"
        "from mtlkit.cli import main\n"
        f"root = {str(tmp_path)!r}\n"
        "for argv in (['--help'], ['methods'], ['data', 'check', '--dataset', 'nyud', '--data-root', root]):\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        "        try:\n"
        "            main(argv)\n"
        "        except SystemExit:\n"
        "            pass\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'timm', 'torchvision'}))\n"
    )
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
