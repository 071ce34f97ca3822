// small_gemm.hpp: products whose output rows are at most 32 wide (Raissi's 10-wide layers, the
// 20-wide layers of a physics-informed network).
//
// Eigen's blocked product packs both operands on every call: for a 100x10x10 product that costs
// ~0.9 µs, nine times the arithmetic. These kernels fix the output width N at compile time, so a
// row of the result lives in registers, and run R rows (or R output rows of Aᵀ G) side by side so
// the multiply-adds form independent chains. The only copy is the narrow operand (at most 32 x 256
// values) padded to whole registers; no allocation after the first call, no threads. Each output
// value is one sum over k in order, whatever the register width: the results do not depend on
// how a row is split into registers.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common.hpp"

namespace backprop {
namespace small {

constexpr int kRows = 8;  // rows computed side by side: independent multiply-add chains

// Rows side by side for rows of V registers: 8, or 6 from three registers up, so that the
// accumulators (rows x V) and a row of the other operand (V) stay within 32 registers with room
// to spare (8 x 3 + 3 = 27 spills; 6 x 3 + 3 = 21 does not, and runs 10-20% faster).
constexpr int rows_side_by_side(int V) { return V >= 3 ? 6 : kRows; }

// A SIMD register as a GCC/Clang vector type: the widest the build targets.
#if defined(__AVX512F__)
constexpr int kVecBytes = 64;
#elif defined(__AVX__)
constexpr int kVecBytes = 32;
#else
constexpr int kVecBytes = 16;
#endif

// A row of N values in V registers of VB bytes each (the build's widest by default).
template <class T, int N, int VB = kVecBytes>
struct Row {
    typedef T Vec __attribute__((vector_size(VB)));
    static constexpr int L = VB / int(sizeof(T));  // lanes per register
    static constexpr int V = (N + L - 1) / L;             // registers per row of N values
    static constexpr int count(int v) { return N - v * L < L ? N - v * L : L; }

    // Copies rows x N values into rows x V registers, zero padded, so that the kernels load
    // whole registers (a partial load of a row that was just written stalls on store forwarding).
    // With transposed, p is N x rows (row-major) and its transpose is packed (for G Wᵀ).
    static inline const Vec* pack(const T* p, Index rows, bool transposed = false) {
        thread_local std::vector<T> buffer;  // (a vector of Vec would drop the vector attribute)
        const std::size_t need = std::size_t(rows * V * L) + kVecBytes / sizeof(T);  // room to align
        if (buffer.size() < need) buffer.resize(need);
        const std::uintptr_t addr = reinterpret_cast<std::uintptr_t>(buffer.data());
        const std::uintptr_t aligned = (addr + kVecBytes - 1) & ~std::uintptr_t(kVecBytes - 1);
        Vec* out = reinterpret_cast<Vec*>(aligned);
        for (Index i = 0; i < rows; ++i) {
            T* o = reinterpret_cast<T*>(out + i * V);
            if (transposed) {
                for (int j = 0; j < N; ++j) o[j] = p[j * rows + i];
            } else {
                const T* in = p + i * N;
                for (int j = 0; j < N; ++j) o[j] = in[j];
            }
            for (int j = N; j < V * L; ++j) o[j] = T(0);
        }
        return out;
    }
    static inline void store(const Vec* in, T* p) {
        for (int v = 0; v < V; ++v) std::memcpy(p + v * L, &in[v], sizeof(T) * std::size_t(count(v)));
    }
};

// C (m x N) = A (m x k) B (k x N) (+ the row b broadcast when b is given), all row-major.
// B_transposed: B is given as its transpose, N x k (the G Wᵀ product).
template <class T, int N, int VB = kVecBytes>
void nn(const T* A, const T* B, T* C, Index m, Index k, bool B_transposed, const T* b) {
    using R = Row<T, N, VB>;
    using Vec = typename R::Vec;
    constexpr int V = R::V;
    const Vec* Bp = R::pack(B, k, B_transposed);
    Vec init[V] = {};
    if (b != nullptr)  // the bias starts every accumulator: H = b + A W with no pass of its own
        for (int v = 0; v < V; ++v)
            for (int j = 0; j < R::count(v); ++j) init[v][j] = b[v * R::L + j];
    constexpr int RB = rows_side_by_side(V);
    // RB rows of A (row stride k) into `rows` rows of C. Every row of C takes this same code,
    // the last m % RB too (from a zero-padded copy), so a row's result does not depend on its
    // position: predictions do not change when the samples are reordered.
    auto block = [&](const T* Ab, T* Cb, Index rows) {
        Vec acc[RB][V];
        for (int r = 0; r < RB; ++r)
            for (int v = 0; v < V; ++v) acc[r][v] = init[v];
        for (Index kk = 0; kk < k; ++kk) {
            const Vec* bk = Bp + kk * V;
            for (int r = 0; r < RB; ++r) {
                const T a = Ab[r * k + kk];
                for (int v = 0; v < V; ++v) acc[r][v] += a * bk[v];
            }
        }
        for (Index r = 0; r < rows; ++r) R::store(acc[r], Cb + r * N);
    };
    Index i = 0;
    for (; i + RB <= m; i += RB) block(A + i * k, C + i * N, RB);
    if (i < m) {
        thread_local std::vector<T> tail;
        tail.assign(std::size_t(RB * k), T(0));
        std::copy_n(A + i * k, (m - i) * k, tail.data());
        block(tail.data(), C + i * N, m - i);
    }
}

// RR rows p..p+RR-1 of C = Aᵀ G (G packed), and with SUM the column sums 1ᵀ G in the same sweep.
// S interleaved partial sums over the samples keep RR * S multiply-add chains in flight, so a
// block of one or two rows is not bound by the latency of a chain n long.
template <class T, int N, int RR, int S, bool SUM, int VB>
inline void tn_rows(const T* A, const typename Row<T, N, VB>::Vec* Gp, T* C, Index P, Index n, Index p, T* colsum) {
    using R = Row<T, N, VB>;
    using Vec = typename R::Vec;
    constexpr int V = R::V;
    Vec acc[S][RR][V] = {};
    Vec sum[S][V] = {};
    Index i = 0;
    for (; i + S <= n; i += S)
        for (int s = 0; s < S; ++s) {
            const Vec* g = Gp + (i + s) * V;
            if (SUM)
                for (int v = 0; v < V; ++v) sum[s][v] += g[v];
            for (int r = 0; r < RR; ++r) {
                const T a = A[(i + s) * P + p + r];
                for (int v = 0; v < V; ++v) acc[s][r][v] += a * g[v];
            }
        }
    for (; i < n; ++i) {  // the last n % S samples
        const Vec* g = Gp + i * V;
        if (SUM)
            for (int v = 0; v < V; ++v) sum[0][v] += g[v];
        for (int r = 0; r < RR; ++r) {
            const T a = A[i * P + p + r];
            for (int v = 0; v < V; ++v) acc[0][r][v] += a * g[v];
        }
    }
    for (int s = 1; s < S; ++s)
        for (int v = 0; v < V; ++v) {
            for (int r = 0; r < RR; ++r) acc[0][r][v] += acc[s][r][v];
            if (SUM) sum[0][v] += sum[s][v];
        }
    for (int r = 0; r < RR; ++r) R::store(acc[0][r], C + (p + r) * N);
    if (SUM) R::store(sum[0], colsum);
}

template <class T, int N, int RR, int VB>
inline void tn_block(const T* A, const typename Row<T, N, VB>::Vec* Gp, T* C, Index P, Index n, Index p, T* colsum) {
    // about 8 chains per block, S x RR x V accumulators within about 20 registers
    constexpr int V = Row<T, N, VB>::V, chains = RR >= 8 ? 1 : 8 / RR, room = 20 / (RR * V);
    constexpr int S = chains < room ? chains : room < 1 ? 1 : room;
    if (colsum != nullptr)
        tn_rows<T, N, RR, S, true, VB>(A, Gp, C, P, n, p, colsum);
    else
        tn_rows<T, N, RR, S, false, VB>(A, Gp, C, P, n, p, nullptr);
}

template <class T, int N, int VB = kVecBytes>
void tn(const T* A, const T* G, T* C, Index P, Index n, T* colsum) {
    using R = Row<T, N, VB>;
    const typename R::Vec* Gp = R::pack(G, n);
    // Output rows in blocks of 8, then 4, 2, 1: each block is one sweep over G with that many
    // independent chains (P = 10 is two sweeps, not four). The first sweep also sums 1ᵀ G.
    // From four registers a row up, blocks of 4 (8 x 4 accumulators would fill the registers).
    Index p = 0;
    if constexpr (R::V < 4)
        for (; p + 8 <= P; p += 8, colsum = nullptr) tn_block<T, N, 8, VB>(A, Gp, C, P, n, p, colsum);
    for (; p + 4 <= P; p += 4, colsum = nullptr) tn_block<T, N, 4, VB>(A, Gp, C, P, n, p, colsum);
    if (p + 2 <= P) tn_block<T, N, 2, VB>(A, Gp, C, P, n, p, colsum), p += 2, colsum = nullptr;
    if (p < P) tn_block<T, N, 1, VB>(A, Gp, C, P, n, p, colsum);
}

// The register width for rows of N values: the build's widest, or half of it on an AVX-512 build
// when that leaves fewer lanes of a row unused and the accumulators still fit in the 32
// registers. 20 floats take two 64-byte registers with 12 lanes idle, or three 32-byte ones with
// 4 idle: on a core that runs a 512-bit operation as two 256-bit halves, a third less work.
template <class T, int N>
constexpr int vec_bytes() {
    if (kVecBytes != 64) return kVecBytes;
    const int bytes = N * int(sizeof(T)), wide = 64, half = 32;
    const int pad_wide = (bytes + wide - 1) / wide * wide - bytes;
    const int v_half = (bytes + half - 1) / half, pad_half = v_half * half - bytes;
    return pad_half < pad_wide && rows_side_by_side(v_half) * v_half + v_half <= 32 ? half : wide;
}

// The widest output row handled here: 32 on AVX-512 (four registers a row of doubles, six rows
// side by side), less where the accumulators would not fit in the registers; never under 16.
template <class T>
constexpr Index max_width() {
    const int registers = kVecBytes == 64 ? 32 : 16, lanes = kVecBytes / int(sizeof(T));
    int v = 1;
    while (rows_side_by_side(v + 1) * (v + 1) + (v + 1) <= registers) ++v;
    const Index widest = Index(v) * lanes;
    return widest < 16 ? 16 : widest > 32 ? 32 : widest;
}

template <class T, int N>
void nn_dispatch(Index width, const T* A, const T* B, T* C, Index m, Index k, bool B_transposed, const T* b) {
    if constexpr (N <= max_width<T>()) {
        if (width == N) return nn<T, N, vec_bytes<T, N>()>(A, B, C, m, k, B_transposed, b);
        return nn_dispatch<T, N + 1>(width, A, B, C, m, k, B_transposed, b);
    }
}

template <class T, int N>
void tn_dispatch(Index width, const T* A, const T* G, T* C, Index P, Index n, T* colsum) {
    if constexpr (N <= max_width<T>()) {
        if (width == N) return tn<T, N, vec_bytes<T, N>()>(A, G, C, P, n, colsum);
        return tn_dispatch<T, N + 1>(width, A, G, C, P, n, colsum);
    }
}

constexpr Index kMaxDepth = 256;          // the longest other dimension handled here
constexpr Index kMaxWork = Index(1) << 21;  // m*n*k: beyond this a blocked product wins

// Whether C = op(A) op(B) (op(A) m x k, op(B) k x n) is a product for these kernels.
template <class T>
inline bool fits(bool trans_a, bool trans_b, Index m, Index n, Index k) {
    if (n > max_width<T>() || n < 1 || k < 1 || m * n * k > kMaxWork) return false;
    if (!trans_a) return k <= kMaxDepth;   // A W and G Wᵀ: k is the depth of B
    return !trans_b && m <= kMaxDepth;     // Aᵀ G: m rows of output
}

// H (n x N) = A W + b, A (n x P), W (P x N): the forward product with the bias added on the way.
template <class T>
bool dense_product(const T* A, const T* W, const T* b, T* H, Index n, Index P, Index N) {
    if (!fits<T>(false, false, n, N, P)) return false;
    nn_dispatch<T, 1>(N, A, W, H, n, P, false, b);
    return true;
}

// dW (P x N) = Aᵀ G and db = 1ᵀ G in one sweep over G, A (n x P), G (n x N).
template <class T>
bool weight_grads(const T* A, const T* G, T* dW, T* db, Index n, Index P, Index N) {
    if (!fits<T>(true, false, P, N, n)) return false;
    tn_dispatch<T, 1>(N, A, G, dW, P, n, db);
    return true;
}

// Tries C = op(A) op(B) (alpha 1, beta 0) with a small kernel; false when the shape is not one.
// op(A) is m x k, op(B) is k x n.
template <class T>
bool gemm(bool trans_a, bool trans_b, Index m, Index n, Index k, const T* A, const T* B, T* C) {
    if (!fits<T>(trans_a, trans_b, m, n, k)) return false;
    if (!trans_a && !trans_b) {  // the forward product A W
        nn_dispatch<T, 1>(n, A, B, C, m, k, false, static_cast<const T*>(nullptr));
        return true;
    }
    if (trans_a && !trans_b) {  // dW = Aᵀ G: A is k x m, reduce over k
        tn_dispatch<T, 1>(n, A, B, C, m, k, static_cast<T*>(nullptr));
        return true;
    }
    if (!trans_a && trans_b) {  // G Wᵀ: B is n x k, packed transposed
        nn_dispatch<T, 1>(n, A, B, C, m, k, true, static_cast<const T*>(nullptr));
        return true;
    }
    return false;
}

}  // namespace small
}  // namespace backprop
