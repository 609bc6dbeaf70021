"""Log lines: one JSON object per line, whole, even with several processes on one stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys

_WRITER = """
import sys
from weightwarden.log import configure_logging, get_logger
configure_logging("json")
log = get_logger("test")
for n in range(int(sys.argv[1])):
    log.info("collector listening", worker=sys.argv[2], n=n, url="http://127.0.0.1:40229")
"""


def test_processes_sharing_stderr_never_split_each_others_lines():
    """Four processes (like `collector serve --workers`) log into one pipe: every line whole.

    Unbuffered, as under PYTHONUNBUFFERED=1, a print of the line and its newline were two
    writes, and another process's line landed between them.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    lines_each, writers = 500, 4
    read_fd, write_fd = os.pipe()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(lines_each), str(n)],
            stderr=write_fd,
            env=env,
        )
        for n in range(writers)
    ]
    os.close(write_fd)
    with os.fdopen(read_fd, encoding="utf-8") as pipe:
        lines = pipe.read().splitlines()
    assert [proc.wait(timeout=60) for proc in procs] == [0] * writers
    records = [json.loads(line) for line in lines]  # a split line does not parse
    assert len(records) == lines_each * writers
    assert {(r["worker"], r["n"]) for r in records} == {
        (str(w), n) for w in range(writers) for n in range(lines_each)
    }
