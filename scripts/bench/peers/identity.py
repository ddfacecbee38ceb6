# identity.py -- Pool.map of the identity over a list of n integers (default
# chunks); the check is the sum of the results.
# SPDX-License-Identifier: MIT
from multiprocessing import Pool

from common import Clock, args


def identity(x):
    return x


if __name__ == "__main__":
    n, workers = args()
    items = list(range(1, n + 1))
    clock = Clock()
    with Pool(workers) as pool:
        clock.start()
        r = pool.map(identity, items)
        clock.stop()
    clock.report(sum(r))
