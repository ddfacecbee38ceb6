# queue_items.py -- a producer process puts n small tuples (i, "item", 2.5) on a
# multiprocessing.Queue; the parent takes them. The check is the sum of the i.
# SPDX-License-Identifier: MIT
from multiprocessing import Process, Queue

from common import Clock, args


def producer(q, n):
    for i in range(1, n + 1):
        q.put((i, "item", 2.5))


if __name__ == "__main__":
    n, _ = args()
    q = Queue()
    clock = Clock()
    clock.start()
    p = Process(target=producer, args=(q, n))
    p.start()
    s = 0
    for _ in range(n):
        s += q.get()[0]
    p.join()
    clock.stop()
    clock.report(s)
