# common.py -- shared by the Python peers of scripts/bench: arguments and the
# result line "seconds=S check=C" that run.lua reads.
# SPDX-License-Identifier: MIT
import sys
import time


def args():
    """n and workers from the command line: file.py N [WORKERS]."""
    n = int(sys.argv[1])
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    return n, workers


class Clock:
    """Marks the timed part of a run, as ctx.start()/ctx.stop() on the Lua side."""

    def start(self):
        self.t0 = time.perf_counter()

    def stop(self):
        self.t1 = time.perf_counter()

    def report(self, check):
        print("seconds=%.9f check=%s clock=wall" % (self.t1 - self.t0, check), flush=True)
