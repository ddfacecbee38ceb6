# pool_start.py -- create a Pool and close and join it, n times; the check is
# the number of workers started in all.
# SPDX-License-Identifier: MIT
from multiprocessing import Pool

from common import Clock, args

if __name__ == "__main__":
    n, workers = args()
    clock = Clock()
    started = 0
    clock.start()
    for _ in range(n):
        pool = Pool(workers)
        started += len(pool._pool)
        pool.close()
        pool.join()
    clock.stop()
    clock.report(started)
