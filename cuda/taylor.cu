// Elementwise kernels of the Taylor-mode derivatives w.r.t. the inputs (taylor_forward,
// taylor_backward). The products (H = A W + b, Ḣ_a = Ȧ_a W, Ḧ_q = Ä_q W, dW, the gradients of the
// layer below) are gemm launches; these kernels do the rest of each layer in one pass.
//
// Streams are stacked: element e of stream s of an m = n x p block is X[s * m + e]. Pairs are
// 2 k2 ints (a_q, c_q): the first-derivative streams of second-derivative stream q.
// σ1, σ2, σ3 = act', act'', act''' at H, written from the output A = act(H):
//   tanh      σ1 = 1 - A²       σ2 = -2 A σ1        σ3 = σ1 (6A² - 2)
//   sigmoid   σ1 = A (1 - A)    σ2 = σ1 (1 - 2A)    σ3 = σ1 (1 - 6A + 6A²)
//   identity  1, 0, 0;   relu, leaky_relu: σ1 piecewise, σ2 = σ3 = 0
//
// The forward kernel works in place (each thread reads its element of every stream before it
// writes it), so no pointer here is __restrict__.
//
// Launch geometry (all kernels here): block (BP_THREADS = 256, 1, 1);
// grid (min(ceil(m / 256), 65535 * 4), 1, 1), a grid-stride loop over the m elements of one
// stream (64-bit indices), every stream of an element handled by the same thread.
#include "common.cuh"

template <typename T>
__device__ __forceinline__ void bp_taylor_sigmas(int act, T a, T& s1, T& s2, T& s3) {
    switch (act) {
        case BP_ACT_TANH:
            s1 = T(1) - a * a; s2 = T(-2) * a * s1; s3 = s1 * (T(6) * a * a - T(2)); return;
        case BP_ACT_SIGMOID:
            s1 = a * (T(1) - a); s2 = s1 * (T(1) - T(2) * a);
            s3 = s1 * (T(1) - T(6) * a + T(6) * a * a); return;
        default:
            s1 = bp_dact(act, a); s2 = T(0); s3 = T(0); return;
    }
}

// The seed of layer 0: Ȧ_a[r, j] = [j == first[a]] (k1 x n x d), Ä_q = 0 (k2 x n x d).
template <typename T>
__device__ __forceinline__ void bp_taylor_seed(T* dA, T* d2A, const int* first, long long m,
                                               int d, int k1, int k2) {
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < m;
         e += (long long)gridDim.x * blockDim.x) {
        const int j = (int)(e % d);
        for (int a = 0; a < k1; ++a) dA[a * m + e] = j == first[a] ? T(1) : T(0);
        for (int q = 0; q < k2; ++q) d2A[q * m + e] = T(0);
    }
}

// One layer's streams, from A' = act(H) and the products Ḣ (in dA), Ḧ (in d2A):
//   Ä'_q = σ2 ⊙ Ḣ_a ⊙ Ḣ_c + σ1 ⊙ Ḧ_q   (q = (a, c)),   Ȧ'_a = σ1 ⊙ Ḣ_a        (in place)
template <typename T>
__device__ __forceinline__ void bp_taylor_forward_streams(const T* A, T* dA, T* d2A,
                                                          const int* pairs, long long m, int k1,
                                                          int k2, int act) {
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < m;
         e += (long long)gridDim.x * blockDim.x) {
        T s1, s2, s3;
        bp_taylor_sigmas(act, A[e], s1, s2, s3);
        for (int q = 0; q < k2; ++q)
            d2A[q * m + e] = s2 * dA[pairs[2 * q] * m + e] * dA[pairs[2 * q + 1] * m + e]
                             + s1 * d2A[q * m + e];
        for (int a = 0; a < k1; ++a) dA[a * m + e] = s1 * dA[a * m + e];
    }
}

// One layer's backward, from A', the gradients G_A, Ġ_a, G̈_q at A', Ȧ'_a, Ä'_q and the
// products Ḣ_a, Ḧ_q (d2H may be null when k2 = 0):
//   G̈H_q = σ1 ⊙ G̈_q
//   ĠH_a = σ1 ⊙ Ġ_a + Σ_{q=(a,c)} σ2 ⊙ Ḣ_c ⊙ G̈_q + Σ_{q=(c,a)} σ2 ⊙ Ḣ_c ⊙ G̈_q
//   GH   = σ1 ⊙ G_A + Σ_a σ2 ⊙ Ḣ_a ⊙ Ġ_a + Σ_q (σ3 ⊙ Ḣ_a ⊙ Ḣ_c + σ2 ⊙ Ḧ_q) ⊙ G̈_q
// The outputs GH, dGH, d2GH are other buffers than the inputs.
template <typename T>
__device__ __forceinline__ void bp_taylor_backward_streams(
    const T* A, const T* GA, const T* dGA, const T* d2GA, const T* dH, const T* d2H,
    const int* pairs, T* GH, T* dGH, T* d2GH, long long m, int k1, int k2, int act) {
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < m;
         e += (long long)gridDim.x * blockDim.x) {
        T s1, s2, s3;
        bp_taylor_sigmas(act, A[e], s1, s2, s3);
        T g = s1 * GA[e];
        for (int a = 0; a < k1; ++a) {
            g += s2 * dH[a * m + e] * dGA[a * m + e];
            dGH[a * m + e] = s1 * dGA[a * m + e];
        }
        for (int q = 0; q < k2; ++q) {
            const int a = pairs[2 * q], c = pairs[2 * q + 1];
            const T g2 = d2GA[q * m + e], ha = dH[a * m + e], hc = dH[c * m + e];
            d2GH[q * m + e] = s1 * g2;
            dGH[a * m + e] += s2 * hc * g2;
            dGH[c * m + e] += s2 * ha * g2;
            g += (s3 * ha * hc + s2 * d2H[q * m + e]) * g2;
        }
        GH[e] = g;
    }
}

#define BP_TAYLOR(SUFFIX, T)                                                                   \
    extern "C" __global__ void taylor_seed_##SUFFIX(T* dA, T* d2A, const int* first,          \
                                                    long long m, int d, int k1, int k2) {      \
        bp_taylor_seed<T>(dA, d2A, first, m, d, k1, k2);                                       \
    }                                                                                          \
    extern "C" __global__ void taylor_forward_streams_##SUFFIX(                                \
        const T* A, T* dA, T* d2A, const int* pairs, long long m, int k1, int k2, int act) {   \
        bp_taylor_forward_streams<T>(A, dA, d2A, pairs, m, k1, k2, act);                       \
    }                                                                                          \
    extern "C" __global__ void taylor_backward_streams_##SUFFIX(                               \
        const T* A, const T* GA, const T* dGA, const T* d2GA, const T* dH, const T* d2H,       \
        const int* pairs, T* GH, T* dGH, T* d2GH, long long m, int k1, int k2, int act) {      \
        bp_taylor_backward_streams<T>(A, GA, dGA, d2GA, dH, d2H, pairs, GH, dGH, d2GH, m, k1,  \
                                      k2, act);                                                \
    }

BP_TAYLOR(f32, float)
BP_TAYLOR(f64, double)
