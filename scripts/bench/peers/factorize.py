# factorize.py -- factor 1..n into lists of prime factors with Pool.map; the
# check is "number of factors:their sum".
# SPDX-License-Identifier: MIT
from multiprocessing import Pool

from common import Clock, args


def factorize(n):
    f = []
    while n % 2 == 0 and n > 1:
        f.append(2)
        n //= 2
    d = 3
    while d * d <= n:
        while n % d == 0:
            f.append(d)
            n //= d
        d += 2
    if n > 1:
        f.append(n)
    return f


if __name__ == "__main__":
    n, workers = args()
    clock = Clock()
    with Pool(workers) as pool:
        clock.start()
        r = pool.map(factorize, range(1, n + 1))
        clock.stop()
    clock.report("%d:%d" % (sum(len(f) for f in r), sum(sum(f) for f in r)))
