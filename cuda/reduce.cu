// Reductions of backprop: the bias-sum reduction db = 1ᵀ G and the weight penalty.
#include "common.cuh"

// db = 1ᵀ G: out[c] = Σ_r G[r, c] for an n x p array G (a column sum).
//
// Launch geometry: block (32, 8, 1): threadIdx.x walks 32 adjacent columns (coalesced rows),
// threadIdx.y the rows; grid (ceil(p / 32), S, 1). Block (bx, by) sums the rows of chunk by
// (chunk = ceil(n / S) rows) for its 32 columns: each thread adds every 8th row of the chunk,
// then the 8 partial sums of a column are added by a tree in shared memory (3 steps). It
// writes out[by * p + c]: with S = 1 that is db itself; with S > 1 (many rows, few columns)
// the S x p partial sums are summed by a second launch of the same kernel with n = S.
template <typename T>
__device__ __forceinline__ void bp_colsum(const T* __restrict__ G, T* __restrict__ out, int n, int p) {
    __shared__ T red[8][33];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int c = blockIdx.x * 32 + tx;
    const long long chunk = ((long long)n + gridDim.y - 1) / gridDim.y;
    const long long r0 = blockIdx.y * chunk;
    const long long r1 = bp_min((long long)n, r0 + chunk);
    T s = T(0);
    if (c < p)
        for (long long r = r0 + ty; r < r1; r += 8) s += G[r * p + c];
    red[ty][tx] = s;
    __syncthreads();
    for (int h = 4; h > 0; h >>= 1) {
        if (ty < h) red[ty][tx] += red[ty + h][tx];
        __syncthreads();
    }
    if (ty == 0 && c < p) out[(long long)blockIdx.y * p + c] = red[0][tx];
}

// penalty = l1 Σ|W| + (l2/2) Σ W²,   dW += l1 sign(W) + l2 W   (in place)
//
// Launch geometry: block (256, 1, 1); grid (B, 1, 1), B <= 1024 (the size of the partials
// buffer), with a grid-stride loop over the n weights. Each block reduces its terms in shared
// memory and the last block to finish adds the B block sums in order (bp_grid_sum) and writes
// value[0] in double precision.
template <typename T>
__device__ __forceinline__ void bp_weight_penalty(const T* __restrict__ W, T* __restrict__ dW,
                                                  long long n, T l1, T l2, double* partials,
                                                  unsigned int* counter, double* value) {
    __shared__ double red[BP_THREADS];
    double s = 0.0;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        const T w = W[i];
        const T sign = w > T(0) ? T(1) : (w < T(0) ? T(-1) : T(0));
        dW[i] += l1 * sign + l2 * w;
        s += (double)l1 * (double)bp_abs(w) + 0.5 * (double)l2 * (double)w * (double)w;
    }
    s = bp_block_sum<BP_THREADS>(s, red);
    bp_grid_sum<BP_THREADS>(s, partials, counter, value, 1.0, red);
}

#define BP_REDUCE(SUFFIX, T)                                                                   \
    extern "C" __global__ void colsum_##SUFFIX(const T* __restrict__ G, T* __restrict__ out,   \
                                               int n, int p) {                                 \
        bp_colsum<T>(G, out, n, p);                                                            \
    }                                                                                          \
    extern "C" __global__ void weight_penalty_##SUFFIX(const T* __restrict__ W, T* __restrict__ dW, \
                                                       long long n, T l1, T l2,                \
                                                       double* partials,                       \
                                                       unsigned int* counter, double* value) { \
        bp_weight_penalty<T>(W, dW, n, l1, l2, partials, counter, value);                      \
    }

BP_REDUCE(f32, float)
BP_REDUCE(f64, double)
