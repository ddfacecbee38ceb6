# dict_ops.py -- two processes each make n/2 operations on one Manager dict,
# half writes and half reads, on 100 keys of their own. The check is the sum of
# the final values.
# SPDX-License-Identifier: MIT
from multiprocessing import Manager, Process

from common import Clock, args


def work(d, p, m):
    for i in range(1, m + 1):
        k = "%d:%d" % (p, i % 100)
        if i % 2 == 0:
            d[k] = i
        else:
            d.get(k)


if __name__ == "__main__":
    n, _ = args()
    with Manager() as manager:
        d = manager.dict()
        clock = Clock()
        clock.start()
        ps = [Process(target=work, args=(d, p, n // 2)) for p in (1, 2)]
        for p in ps:
            p.start()
        for p in ps:
            p.join()
        clock.stop()
        clock.report(sum(d.values()))
