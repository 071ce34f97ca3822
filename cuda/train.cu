// The two bookkeeping kernels of a training step replayed as a CUDA graph (backends/cuda/trainer.py,
// GraphTrainer): the first kernel of the graph copies the batch into the graph's fixed staging
// buffers, the last before the optimizer updates records the loss and decides whether the
// updates run. Everything that changes between replays lives in a control block in device memory,
// written by the host before a step or an epoch and read back after it:
//
//   ctl[0] X        address of the rows X (N x p_in) the batches are taken from
//   ctl[1] Y        address of the targets Y (N x p_out)
//   ctl[2] order    address of int64 row indices (N), or 0: rows in order
//   ctl[3] idx      batches recorded so far in this epoch (the next batch is rows idx*stride...)
//   ctl[4] stop     1: the optimizer updates are skipped (a non-finite loss, or a dry run)
//   ctl[5] dry      1: record, but never update (the warm-up run before a graph is captured)
//   ctl[6 .. 6+cap)         the batch losses (double), one per batch of the epoch
//   ctl[6+cap .. 6+4cap)    [lr, 1-β1^t, 1-β2^t] per batch (double), read by the updates
#include "common.cuh"

#define BP_CTL_X 0
#define BP_CTL_Y 1
#define BP_CTL_ORDER 2
#define BP_CTL_IDX 3
#define BP_CTL_STOP 4
#define BP_CTL_DRY 5
#define BP_CTL_LOSSES 6

__device__ __forceinline__ bool bp_finite(double x) { return bp_abs(x) <= 1.7976931348623157e308; }

// Xs (n x p_in), Ys (n x p_out) = rows r0 + r of X and Y, r < n, with r0 = idx * stride (through
// order when it is set); the reductions' counter (see bp_grid_sum) is set to 0, as the step's
// first kernel. Launch geometry: block (256, 1, 1); grid-stride loop over n (p_in + p_out).
template <typename T>
__device__ __forceinline__ void bp_train_batch_in(const long long* ctl, T* __restrict__ Xs,
                                                  T* __restrict__ Ys, int n, int p_in, int p_out,
                                                  long long stride, unsigned int* counter) {
    if (blockIdx.x == 0 && threadIdx.x == 0) *counter = 0u;
    const T* X = reinterpret_cast<const T*>(ctl[BP_CTL_X]);
    const T* Y = reinterpret_cast<const T*>(ctl[BP_CTL_Y]);
    const long long* order = reinterpret_cast<const long long*>(ctl[BP_CTL_ORDER]);
    const long long r0 = ctl[BP_CTL_IDX] * stride;
    const long long nx = (long long)n * p_in, total = nx + (long long)n * p_out;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        const bool is_x = i < nx;
        const long long j = is_x ? i : i - nx;
        const int p = is_x ? p_in : p_out;
        const long long r = j / p, c = j - r * p;
        const long long src = order != nullptr ? order[r0 + r] : r0 + r;
        if (is_x)
            Xs[j] = X[src * p + c];
        else
            Ys[j] = Y[src * p + c];
    }
}

// The step's loss = ((values[0] + values[1]) + values[2]) + ... (the data loss plus the weight
// penalties, added in the order of train.step_loss), recorded in the control
// block. stride == 0 (one step): losses[0] = loss, stop = (loss not finite) or dry. stride > 0 (an
// epoch): once stop is set nothing more is recorded; else losses[idx] = loss, stop is set when
// the loss is not finite (or dry), and idx advances. When the step goes on, hyper = [lr, bc1, bc2]
// of this batch, converted to T, for the updates. Launch geometry: one thread.
template <typename T>
__device__ __forceinline__ void bp_train_step_end(long long* ctl, const double* values, int nvalues,
                                                  int cap, long long stride, T* hyper) {
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    double* losses = reinterpret_cast<double*>(ctl + BP_CTL_LOSSES);
    const double* table = losses + cap;
    long long i = 0;
    if (stride > 0) {
        if (ctl[BP_CTL_STOP]) return;
        i = ctl[BP_CTL_IDX];
    }
    double loss = values[0];
    for (int k = 1; k < nvalues; ++k) loss += values[k];
    losses[i] = loss;
    const bool stop = !bp_finite(loss) || ctl[BP_CTL_DRY] != 0;
    ctl[BP_CTL_STOP] = stop ? 1 : 0;
    if (!stop)
        for (int k = 0; k < 3; ++k) hyper[k] = T(table[3 * i + k]);
    if (stride > 0) ctl[BP_CTL_IDX] = i + 1;
}

#define BP_TRAIN(SUFFIX, T)                                                                    \
    extern "C" __global__ void train_batch_in_##SUFFIX(const long long* ctl, T* __restrict__ Xs, \
                                                       T* __restrict__ Ys, int n, int p_in,    \
                                                       int p_out, long long stride,            \
                                                       unsigned int* counter) {                \
        bp_train_batch_in<T>(ctl, Xs, Ys, n, p_in, p_out, stride, counter);                    \
    }                                                                                          \
    extern "C" __global__ void train_step_end_##SUFFIX(long long* ctl, const double* values,   \
                                                       int nvalues, int cap, long long stride, \
                                                       T* hyper) {                             \
        bp_train_step_end<T>(ctl, values, nvalues, cap, stride, hyper);                        \
    }

BP_TRAIN(f32, float)
BP_TRAIN(f64, double)
