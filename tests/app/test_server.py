"""``segvol app`` as started by a user: the real server, its listening socket inspected."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.app.test_browser import _free_port, _wait_for
from tests.conftest import REPO

psutil = pytest.importorskip("psutil")
pytest.importorskip("streamlit")


def _listening(pid: int, port: int) -> set[str]:
    conns = psutil.Process(pid).net_connections(kind="inet")
    return {c.laddr.ip for c in conns if c.status == psutil.CONN_LISTEN and c.laddr.port == port}


def test_app_listens_on_loopback_only_by_default(tmp_path):
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "SEGVOL_APP_DATA_DIR": str(tmp_path)}  # ignored: --data-dir only
    proc = subprocess.Popen([sys.executable, "-m", "segvol", "app", "--port", str(port)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(port, proc)  # streamlit runs in this process (execve), so its sockets are the process's
        assert _listening(proc.pid, port) == {"127.0.0.1"}
        page_env = psutil.Process(proc.pid).environ()
        assert "SEGVOL_APP_DATA_DIR" not in page_env  # server paths stay off
    finally:
        proc.terminate()
        proc.wait(timeout=30)
