"""The end-to-end benchmark's guard on the store's memory, on real child processes."""
from __future__ import annotations

import subprocess
import sys

from benchmarks.end_to_end import MemoryWatch

# a child that holds ~size MiB, in 20 MiB steps, then sleeps
GROW = ("import time\nheld = []\nfor _ in range({steps}):\n    held.append(bytearray(20 << 20))\n"
        "    time.sleep(0.05)\ntime.sleep(60)\n")


def child(steps: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", GROW.format(steps=steps)])


def test_a_process_past_the_limit_is_killed_and_the_size_reported():
    process = child(steps=40)  # 800 MiB
    try:
        with MemoryWatch(process.pid, limit_mib=200, interval=0.05) as watch:
            assert process.wait(timeout=30) == -9
        assert watch.exceeded is not None and watch.exceeded > 200
        assert watch.peak_mib >= watch.exceeded
    finally:
        process.kill()


def test_a_process_under_the_limit_keeps_running_with_its_peak_recorded():
    process = child(steps=5)  # 100 MiB
    try:
        with MemoryWatch(process.pid, limit_mib=2000, interval=0.05) as watch:
            try:
                process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
        assert process.poll() is None and watch.exceeded is None
        assert 90 < watch.peak_mib < 2000
    finally:
        process.kill()
        process.wait()
