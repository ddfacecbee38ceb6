# apply_async.py -- n apply_async calls of the identity, then every get();
# the check is the sum of the results.
# SPDX-License-Identifier: MIT
from multiprocessing import Pool

from common import Clock, args


def identity(x):
    return x


if __name__ == "__main__":
    n, workers = args()
    clock = Clock()
    with Pool(workers) as pool:
        clock.start()
        rs = [pool.apply_async(identity, (i,)) for i in range(1, n + 1)]
        s = sum(r.get() for r in rs)
        clock.stop()
    clock.report(s)
