# squares.py -- Pool.map of x * x over range(1, n + 1) (default chunks); the
# check is "count:last square".
# SPDX-License-Identifier: MIT
from multiprocessing import Pool

from common import Clock, args


def square(x):
    return x * x


if __name__ == "__main__":
    n, workers = args()
    clock = Clock()
    with Pool(workers) as pool:
        clock.start()
        r = pool.map(square, range(1, n + 1))
        clock.stop()
    clock.report("%d:%d" % (len(r), r[-1]))
