# logloop.py -- the log loop with multiprocessing.Pool.map: item i computes
# log(i + 1) + ... + log(i + 1000); the check is the sum of the results.
# SPDX-License-Identifier: MIT
from math import log
from multiprocessing import Pool

from common import Clock, args

LOGS = 1000


def work(i):
    s = 0.0
    for k in range(1, LOGS + 1):
        s += log(i + k)
    return s


if __name__ == "__main__":
    n, workers = args()
    clock = Clock()
    with Pool(workers) as pool:
        clock.start()
        r = pool.map(work, range(1, n + 1))
        clock.stop()
    s = 0.0
    for v in r:
        s += v
    clock.report("%.6f" % s)
