// Losses of backprop: the value and the gradient G = dLoss/dF in one launch.
#include "common.cuh"

// Pointwise losses over the size = n k values of F and Y (R = F - Y):
//   sse  L = ½ Σ R²                                        G = R
//   mse  L = (1/size) Σ R²                                 G = (2/size) R
//   bce  L = (1/size) Σ [max(F,0) - Y F + log1p(exp(-|F|))]  G = (sigmoid(F) - Y) / size
// value[0] = vscale * Σ term (accumulated in double); G = gscale * (R or sigmoid(F) - Y)
// (gscale is 1, 2/size or 1/size).
//
// Launch geometry: block (256, 1, 1); grid (B, 1, 1), B <= 1024, grid-stride loop over the
// values; block sums in shared memory, the last block adds them in order (bp_grid_sum).
template <typename T>
__device__ __forceinline__ void bp_loss_pointwise(int kind, const T* __restrict__ F,
                                                  const T* __restrict__ Y, T* __restrict__ G,
                                                  long long size, T gscale, double vscale,
                                                  double* partials, unsigned int* counter,
                                                  double* value) {
    __shared__ double red[BP_THREADS];
    double s = 0.0;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < size;
         i += (long long)gridDim.x * blockDim.x) {
        const T f = F[i], y = Y[i];
        if (kind == BP_LOSS_BCE) {
            const T term = bp_max(f, T(0)) - y * f + bp_log1p(bp_exp(-bp_abs(f)));
            s += (double)term;
            G[i] = (T(1) / (T(1) + bp_exp(-f)) - y) * gscale;
        } else {
            const T r = f - y;
            s += (double)r * (double)r;
            G[i] = gscale * r;
        }
    }
    s = bp_block_sum<BP_THREADS>(s, red);
    bp_grid_sum<BP_THREADS>(s, partials, counter, value, vscale, red);
}

// Softmax cross-entropy, row by row, stable (the row maximum subtracted):
//   Z = F_i - max_j F_ij,  logP_i = Z - log Σ_j exp(Z_j)
//   L = -(1/n) Σ_i Σ_j Y_ij logP_ij            G_i = (exp(logP_i) - Y_i) / n
//
// Launch geometry: block (32, 8, 1): each of the 8 rows of threads owns one row of F, its 32
// threads stride over the k columns, and the row maximum and the row sum of exponentials are
// block reductions over those 32 threads (a tree in shared memory, 5 steps each);
// grid (B, 1, 1), B = min(ceil(n / 8), 1024), each block walking groups of 8 rows with a
// grid stride. The loss terms are summed per block and the last block adds the block sums
// in order (bp_grid_sum).
template <typename T>
__device__ __forceinline__ void bp_softmax_cross_entropy(const T* __restrict__ F,
                                                         const T* __restrict__ Y,
                                                         T* __restrict__ G, int n, int k,
                                                         double* partials, unsigned int* counter,
                                                         double* value) {
    __shared__ T rowred[8][32];
    __shared__ double red[256];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const T inv_n = T(1) / T(n);
    double s = 0.0;
    for (long long g = blockIdx.x; g * 8 < n; g += gridDim.x) {  // uniform across the block
        const long long row = g * 8 + ty;
        const bool live = row < n;
        const T* f = F + (live ? row : 0) * (long long)k;
        // the row maximum
        T m = f[0];  // k >= 1; every value of the row is >= the maximum's lower bound f[0]
        if (live)
            for (int j = tx; j < k; j += 32) m = bp_max(m, f[j]);
        rowred[ty][tx] = m;
        __syncthreads();
        for (int h = 16; h > 0; h >>= 1) {
            if (tx < h) rowred[ty][tx] = bp_max(rowred[ty][tx], rowred[ty][tx + h]);
            __syncthreads();
        }
        m = rowred[ty][0];
        __syncthreads();
        // the row sum of exp(F - max)
        T e = T(0);
        if (live)
            for (int j = tx; j < k; j += 32) e += bp_exp(f[j] - m);
        rowred[ty][tx] = e;
        __syncthreads();
        for (int h = 16; h > 0; h >>= 1) {
            if (tx < h) rowred[ty][tx] += rowred[ty][tx + h];
            __syncthreads();
        }
        const T logsum = bp_log(rowred[ty][0]);
        __syncthreads();
        if (live) {
            const T* y = Y + row * k;
            T* gr = G + row * k;
            for (int j = tx; j < k; j += 32) {
                const T logp = f[j] - m - logsum;
                s += (double)y[j] * (double)logp;
                gr[j] = (bp_exp(logp) - y[j]) * inv_n;
            }
        }
    }
    s = bp_block_sum<256>(s, red);
    bp_grid_sum<256>(s, partials, counter, value, -1.0 / (double)n, red);
}

#define BP_LOSS(SUFFIX, T)                                                                     \
    extern "C" __global__ void loss_pointwise_##SUFFIX(                                        \
        int kind, const T* __restrict__ F, const T* __restrict__ Y, T* __restrict__ G,         \
        long long size, T gscale, double vscale, double* partials, unsigned int* counter,      \
        double* value) {                                                                       \
        bp_loss_pointwise<T>(kind, F, Y, G, size, gscale, vscale, partials, counter, value);   \
    }                                                                                          \
    extern "C" __global__ void softmax_cross_entropy_##SUFFIX(                                 \
        const T* __restrict__ F, const T* __restrict__ Y, T* __restrict__ G, int n, int k,     \
        double* partials, unsigned int* counter, double* value) {                              \
        bp_softmax_cross_entropy<T>(F, Y, G, n, k, partials, counter, value);                  \
    }

BP_LOSS(f32, float)
BP_LOSS(f64, double)
