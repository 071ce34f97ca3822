// The matrix product of backprop, with its fused epilogues.
//
//   C = epilogue(alpha op(A) op(B) + beta C)        op(A): M x K, op(B): K x N, C: M x N
//
// op(X) is X or Xᵀ (template flags TA, TB); all arrays are C-contiguous (row-major), so A is
// M x K (K x M when TA), B is K x N (N x K when TB). The epilogue, applied element by element
// before the single store of C, is (in this order, each part optional):
//
//   + bias[j]                 the bias row of the forward pass   H = A W + b
//   act(.)                    the activation                      A_next = act(H)
//   * dact(D[i, j])           the derivative Hadamard of the backward pass,
//                             G_prev = act'(A_prev) ⊙ (G Wᵀ), with D = A_prev
//
// and, when colsum != nullptr, the blocks of the first row of tiles also write
//   colsum[j] = Σ_k op(B)[k, j]   (the bias gradient db = 1ᵀ G, fused into dW = A_prevᵀ G).
//
// Algorithm: each block computes a BM x BN tile of C, walking K in steps of BK. Per step the
// block copies a BM x BK tile of op(A) and a BK x BN tile of op(B) into shared memory (stored
// k-major: As[k][m], Bs[k][n]), with 16-byte vector loads (float4/double2) when the source's
// row length is a multiple of the vector width and the pointer is aligned, scalar loads
// otherwise; elements outside the matrices load as 0, so any M, N, K works. The global loads
// of the next step are issued into registers before the arithmetic of the current one
// (register prefetch) and stored to shared memory after it. Each of the
// NT = (BM/TM)(BN/TN) threads then accumulates a TM x TN block of C in registers (register
// blocking): per k it reads TM values of As and TN values of Bs into registers and does
// TM*TN fused multiply-adds, a register-cached outer product.
//
// Launch geometry: block (NT, 1, 1) = 256 threads for every configuration;
// grid (ceil(M/BM), ceil(N/BN), 1). Rows of tiles run along grid.x (up to 2^31-1 tiles, so any
// number of samples), columns along grid.y (at most 65535 tiles; checked in Python). Global
// offsets are computed in 64-bit integers.
//
// Configurations (instantiated at the end of the file, chosen in Python by the tile count):
//   L  BM=BN=128 BK=8  TM=TN=8   large products (the 4096^3 benchmark)
//   M  BM=BN=64  BK=16 TM=TN=4   medium
//   S  BM=BN=32  BK=16 TM=TN=2   small, launch-bound products (many blocks for few outputs)
#include "common.cuh"

// Moves one BK x X tile of an operand from global memory into shared memory dst[BK][X] in two
// steps, so that the global loads of the next tile are in flight while the block computes on
// the current one (register prefetch): load() reads the thread's share of the tile into
// registers, store() writes them to shared memory.
//
// ALONG_X: the tile is contiguous in memory along X (src is K x X_total, row length X_total):
//   dst[k][x] = src[(k0 + k) * X_total + x0 + x]        op(A) when TA, op(B) when not TB
// otherwise contiguous along K (src is X_total x K), and transposed on the way:
//   dst[k][x] = src[(x0 + x) * K + k0 + k]              op(A) when not TA, op(B) when TB
// Elements outside the matrix (k0 + k >= K or x0 + x >= X_total) are 0. With vec (the row
// length a multiple of the vector width W and src aligned) each load is one 16-byte vector,
// which then lies wholly inside or wholly outside the matrix.
template <typename T, int X, int BK, int NT, bool ALONG_X>
struct bp_tile_loader {
    enum { W = bp_vec<T>::width };
    enum { NV = (BK * X / W + NT - 1) / NT };  // vectors per thread
    enum { NS = (BK * X + NT - 1) / NT };      // scalars per thread
    enum { NR = NV * W > NS ? NV * W : NS };
    T reg[NR];

    // element e of the tile in vector units (vec) or scalars: its k and x
    __device__ __forceinline__ static void where(int e, int per, int& k, int& x) {
        if (ALONG_X) { k = e / (X / per); x = (e % (X / per)) * per; }
        else         { x = e / (BK / per); k = (e % (BK / per)) * per; }
    }

    __device__ __forceinline__ void load(const T* __restrict__ src, int k0, int K, int x0,
                                         int X_total, int tid, bool vec) {
        typedef typename bp_vec<T>::type V;
        if (vec) {
#pragma unroll
            for (int v = 0; v < NV; ++v) {
                const int e = tid + v * NT;
                int k, x;
                where(e, W, k, x);
                const int gk = k0 + k, gx = x0 + x;
                if (e < BK * X / W && gk < K && gx < X_total) {
                    const long long at = ALONG_X ? (long long)gk * X_total + gx
                                                 : (long long)gx * K + gk;
                    const V val = *reinterpret_cast<const V*>(src + at);
                    const T* pv = reinterpret_cast<const T*>(&val);
#pragma unroll
                    for (int q = 0; q < W; ++q) reg[v * W + q] = pv[q];
                } else {
#pragma unroll
                    for (int q = 0; q < W; ++q) reg[v * W + q] = T(0);
                }
            }
        } else {
#pragma unroll
            for (int i = 0; i < NS; ++i) {
                const int e = tid + i * NT;
                int k, x;
                where(e, 1, k, x);
                const int gk = k0 + k, gx = x0 + x;
                reg[i] = (e < BK * X && gk < K && gx < X_total)
                             ? src[ALONG_X ? (long long)gk * X_total + gx : (long long)gx * K + gk]
                             : T(0);
            }
        }
    }

    __device__ __forceinline__ void store(T (*dst)[X], int tid, bool vec) const {
        if (vec) {
#pragma unroll
            for (int v = 0; v < NV; ++v) {
                const int e = tid + v * NT;
                if (e >= BK * X / W) break;
                int k, x;
                where(e, W, k, x);
#pragma unroll
                for (int q = 0; q < W; ++q) {
                    if (ALONG_X) dst[k][x + q] = reg[v * W + q];
                    else         dst[k + q][x] = reg[v * W + q];
                }
            }
        } else {
#pragma unroll
            for (int i = 0; i < NS; ++i) {
                const int e = tid + i * NT;
                if (e >= BK * X) break;
                int k, x;
                where(e, 1, k, x);
                dst[k][x] = reg[i];
            }
        }
    }
};

// The epilogue of one element of C, out of line: the TM x TN calls of the unrolled epilogue
// stay small (the code once per tile, not the inner loop) and the accumulators stay in registers.
//   C[idx] = act(alpha acc + beta C[idx] + bias[col]) * dact(D[idx])
template <typename T>
__device__ __noinline__ void bp_epilogue_store(T* C, long long idx, int col, T acc, T alpha, T beta,
                                               const T* bias, int act, const T* D, int dact) {
    T c = alpha * acc;
    if (beta != T(0)) c += beta * C[idx];
    if (bias != nullptr) c += bias[col];
    if (act != BP_ACT_IDENTITY) c = bp_act(act, c);
    if (D != nullptr) c *= bp_dact(dact, D[idx]);
    C[idx] = c;
}

template <typename T>
__device__ __forceinline__ bool bp_aligned(const T* p) {
    return (reinterpret_cast<unsigned long long>(p) % (bp_vec<T>::width * sizeof(T))) == 0;
}

// The tiled product with its epilogue; see the comment at the top of the file.
template <typename T, int BM, int BN, int BK, int TM, int TN, bool TA, bool TB>
__device__ __forceinline__ void bp_gemm(const T* __restrict__ A, const T* __restrict__ B,
                                        T* __restrict__ C, int M, int N, int K, T alpha, T beta,
                                        const T* __restrict__ bias, int act,
                                        const T* __restrict__ D, int dact,
                                        T* __restrict__ colsum) {
    const int NT = (BM / TM) * (BN / TN);
    const int W = bp_vec<T>::width;
    __shared__ __align__(16) T As[BK][BM];
    __shared__ __align__(16) T Bs[BK][BN];

    const int tid = threadIdx.x;
    const int trow = tid / (BN / TN), tcol = tid % (BN / TN);
    const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
    // Vector loads need rows whose length is a multiple of W and aligned base pointers.
    const bool vec_a = TA ? (M % W == 0 && bp_aligned(A)) : (K % W == 0 && bp_aligned(A));
    const bool vec_b = TB ? (K % W == 0 && bp_aligned(B)) : (N % W == 0 && bp_aligned(B));
    const bool do_colsum = colsum != nullptr && blockIdx.x == 0 && tid < BN;

    T acc[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = T(0);
    T csum = T(0);
    T ra[TM], rb[TN];

    bp_tile_loader<T, BM, BK, NT, TA> load_a;   // op(A) is contiguous along M when TA
    bp_tile_loader<T, BN, BK, NT, !TB> load_b;  // op(B) is contiguous along N when not TB
    load_a.load(A, 0, K, m0, M, tid, vec_a);
    load_b.load(B, 0, K, n0, N, tid, vec_b);
    for (int k0 = 0; k0 < K; k0 += BK) {
        load_a.store(As, tid, vec_a);
        load_b.store(Bs, tid, vec_b);
        __syncthreads();
        if (k0 + BK < K) {  // the next tiles' global loads overlap this tile's arithmetic
            load_a.load(A, k0 + BK, K, m0, M, tid, vec_a);
            load_b.load(B, k0 + BK, K, n0, N, tid, vec_b);
        }
        if (do_colsum) {
#pragma unroll
            for (int k = 0; k < BK; ++k) csum += Bs[k][tid];
        }
#pragma unroll
        for (int k = 0; k < BK; ++k) {
#pragma unroll
            for (int i = 0; i < TM; ++i) ra[i] = As[k][trow * TM + i];
#pragma unroll
            for (int j = 0; j < TN; ++j) rb[j] = Bs[k][tcol * TN + j];
#pragma unroll
            for (int i = 0; i < TM; ++i)
#pragma unroll
                for (int j = 0; j < TN; ++j) acc[i][j] += ra[i] * rb[j];
        }
        __syncthreads();
    }

    if (do_colsum && n0 + tid < N) colsum[n0 + tid] = csum;

#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int row = m0 + trow * TM + i;
        if (row >= M) continue;
#pragma unroll
        for (int j = 0; j < TN; ++j) {
            const int col = n0 + tcol * TN + j;
            if (col < N)
                bp_epilogue_store(C, (long long)row * N + col, col, acc[i][j], alpha, beta, bias,
                                  act, D, dact);
        }
    }
}

// The extern "C" entry points: gemm_<config>_<op(A)op(B)>_<dtype>, for example gemm_L_tn_f32
// computes with BM=BN=128 the product Aᵀ B in float32. Plain C names (no name_expressions) keep
// CuPy's disk cache of the compiled module effective.
#define BP_GEMM_ENTRY(CFG, BM, BN, BK, TM, TN, OPS, TA, TB, SUFFIX, T)                         \
    extern "C" __global__ void __launch_bounds__((BM / TM) * (BN / TN))                        \
    gemm_##CFG##_##OPS##_##SUFFIX(const T* __restrict__ A, const T* __restrict__ B,            \
                                  T* __restrict__ C, int M, int N, int K, T alpha, T beta,     \
                                  const T* __restrict__ bias, int act,                         \
                                  const T* __restrict__ D, int dact, T* __restrict__ colsum) { \
        bp_gemm<T, BM, BN, BK, TM, TN, TA, TB>(A, B, C, M, N, K, alpha, beta, bias, act, D,    \
                                               dact, colsum);                                  \
    }

#define BP_GEMM_OPS(CFG, BM, BN, BK, TM, TN, SUFFIX, T)                \
    BP_GEMM_ENTRY(CFG, BM, BN, BK, TM, TN, nn, false, false, SUFFIX, T) \
    BP_GEMM_ENTRY(CFG, BM, BN, BK, TM, TN, tn, true, false, SUFFIX, T)  \
    BP_GEMM_ENTRY(CFG, BM, BN, BK, TM, TN, nt, false, true, SUFFIX, T)  \
    BP_GEMM_ENTRY(CFG, BM, BN, BK, TM, TN, tt, true, true, SUFFIX, T)

#define BP_GEMM_CONFIGS(SUFFIX, T)                   \
    BP_GEMM_OPS(L, 128, 128, 8, 8, 8, SUFFIX, T)     \
    BP_GEMM_OPS(M, 64, 64, 16, 4, 4, SUFFIX, T)      \
    BP_GEMM_OPS(S, 32, 32, 16, 2, 2, SUFFIX, T)

BP_GEMM_CONFIGS(f32, float)
BP_GEMM_CONFIGS(f64, double)
