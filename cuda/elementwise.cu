// Elementwise kernels of backprop: activations, their backward, the dropout mask.
//
// The output may be one of the inputs (in place: G = dA ⊙ act'(A) into dA), so no pointer here is
// __restrict__: each thread reads its elements before it writes them.
//
// Launch geometry (all kernels here): block (BP_THREADS = 256, 1, 1);
// grid (min(ceil(n / 256), 65535 * 4), 1, 1), with a grid-stride loop over the n elements
// (64-bit indices), so any n works with any grid.
#include "common.cuh"

// A = act(H), elementwise over n values.
template <typename T>
__device__ __forceinline__ void bp_activation_forward(const T*  H, T*  A,
                                                      long long n, int act) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        A[i] = bp_act(act, H[i]);
}

// G = dA ⊙ act'(A), elementwise, the derivative written with the activation's output A.
template <typename T>
__device__ __forceinline__ void bp_activation_backward(const T*  dA,
                                                       const T*  A,
                                                       T*  G, long long n, int act) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        G[i] = dA[i] * bp_dact(act, A[i]);
}

// out = A ⊙ M, M the inverted-dropout mask (0 where dropped, 1/(1-p) where kept).
template <typename T>
__device__ __forceinline__ void bp_dropout(const T*  A, const T*  M,
                                           T*  out, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        out[i] = A[i] * M[i];
}

#define BP_ELEMENTWISE(SUFFIX, T)                                                              \
    extern "C" __global__ void activation_forward_##SUFFIX(const T*  H,            \
                                                           T*  A, long long n,     \
                                                           int act) {                          \
        bp_activation_forward<T>(H, A, n, act);                                                \
    }                                                                                          \
    extern "C" __global__ void activation_backward_##SUFFIX(                                   \
        const T*  dA, const T*  A, T*  G, long long n,     \
        int act) {                                                                             \
        bp_activation_backward<T>(dA, A, G, n, act);                                           \
    }                                                                                          \
    extern "C" __global__ void dropout_##SUFFIX(const T*  A, const T*  M, \
                                                T*  out, long long n) {            \
        bp_dropout<T>(A, M, out, n);                                                           \
    }

BP_ELEMENTWISE(f32, float)
BP_ELEMENTWISE(f64, double)
