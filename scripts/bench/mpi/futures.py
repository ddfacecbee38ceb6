# futures.py -- the peer: trivial tasks through mpi4py.futures. Run as
#   mpirun -n 4 python3 -m mpi4py.futures scripts/bench/mpi/futures.py [ntasks]
import sys, time
from mpi4py.futures import MPIPoolExecutor
def ident(x):
    return x
if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    with MPIPoolExecutor() as ex:
        list(ex.map(ident, range(100)))
        t = time.monotonic()
        fs = [ex.submit(ident, i) for i in range(n)]
        for i, f in enumerate(fs):
            assert f.result() == i
        dt = time.monotonic() - t
        print("mpi4py.futures submit: %d tasks on %d workers (ranks 1-3): %.0f tasks/s" % (n, 3, n / dt))
