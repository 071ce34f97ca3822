"""Data-parallel training over MPI: ``mpiexec -n 2 python examples/mpi_fit.py``.

Every rank builds the same data (shard="take": each rank trains on its contiguous part), the
parameters start from rank 0's, every step's gradient is summed over the ranks with one
Allreduce, and every rank ends with the same model; rank 0 prints and saves it.
"""

import numpy as np
from mpi4py import MPI

import backprop as bp
from backprop.train import fit

comm = MPI.COMM_WORLD
rank = comm.Get_rank()

rng = np.random.default_rng(0)
X = rng.uniform(-1, 1, size=(4096, 2))
Y = np.sin(3 * X[:, :1]) * np.cos(2 * X[:, 1:])

net = bp.MLP([2, 32, 32, 1], activation="tanh", dtype="float64", seed=rank)  # rank 0's wins
history = fit(net, X, Y, loss="mse", optimizer="adam", lr=1e-2, epochs=30, batch_size=256,
              seed=0, comm=comm, validation_data=(X[:512], Y[:512]), early_stopping=5,
              verbose=True)

# every rank holds the same parameters; only rank 0 writes
checksum = float(np.abs(net.weights[0]).sum())
same = comm.allreduce(checksum, op=MPI.MIN) == comm.allreduce(checksum, op=MPI.MAX)
if rank == 0:
    print(f"{comm.Get_size()} ranks, {history.epochs} epochs: loss {history.loss[-1]:.3e}, "
          f"val_loss {history.val_loss[-1]:.3e}; ranks agree: {same}")
    net.save("mpi_fit_model.npz")
    print("saved mpi_fit_model.npz")
