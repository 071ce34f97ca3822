// block_gemm.hpp: products over feature-major blocks (one sample per register lane), for the
// Taylor kernels (taylor.hpp).
//
// A block holds c samples (c a multiple of a register's lanes L) of p features as a p x c matrix:
// feature k of sample r at k * ld + r. A layer's product over a block is then
//
//     C (q x c) = Wᵀ B (p x c):        C[j][r] = b[j] + Σ_k W[k][j] B[k][r]
//
// with W's entries broadcast to every lane. Every lane is a sample: none is padding (a 20-wide
// row of a row-major product fills 20 of 24 lanes), no sum crosses lanes, and no value is ever
// broadcast from a block, so a sample's values do not depend on where it sits in the block. The
// backward's products take the same two shapes:
//
//     C (p x c) = W G (q x c)          (the gradient for the layer below: nn with W read across)
//     acc[k][j] += B[k][·] ⊙ G[j][·]   (dW = Σ_r B[k][r] G[j][r], kept lane by lane: nt)
//
// nn: each output is one sum over k in order, from the bias when given, one multiply-add per
// term: the same arithmetic as small_gemm.hpp's row kernels, value for value. nt keeps L partial
// sums per weight (lane λ sums the samples at positions λ, λ + L, ...): the caller adds them up
// in a fixed order once, after many blocks.
#pragma once

#include <algorithm>

#include "common.hpp"
#include "small_gemm.hpp"

namespace backprop {
namespace block {

// A register of the build's widest kind (small_gemm.hpp), as a GCC/Clang vector type.
template <class T>
struct Reg {
    typedef T Vec __attribute__((vector_size(small::kVecBytes)));
    // the same register read from or written to any address of a T (an unaligned move)
    typedef T Unaligned __attribute__((vector_size(small::kVecBytes), aligned(alignof(T))));
    static constexpr Index L = small::kVecBytes / Index(sizeof(T));
    static inline Vec load(const T* p) { return *reinterpret_cast<const Unaligned*>(p); }
    static inline void store(T* p, const Vec& v) { *reinterpret_cast<Unaligned*>(p) = v; }
    static inline Vec broadcast(T x) {
        Vec v;
        for (Index i = 0; i < L; ++i) v[i] = x;
        return v;
    }
};

// Lanes per register for T: block widths are multiples of it.
template <class T>
constexpr Index lanes() { return Reg<T>::L; }

// The tile: MO output rows x NV registers of samples, MO * NV accumulators (20 of the 32
// registers at MO = 5, NV = 4, plus NV for a row of B and one broadcast).
constexpr int kTileRows = 5;
constexpr int kTileRegs = 4;

// M (m x k) in the order the tiles read it: for each tile of kTileRows rows, for each kk, the
// tile's kTileRows values M(o, kk) (zeros past row m), M(o, kk) = coef[o * so + kk * sk]:
// so = 1, sk = q reads W (k x q) as Wᵀ (the forward); so = q, sk = 1 reads W (m x q) as it is
// (the backward's W G). packed_size values.
inline Index packed_size(Index m, Index k) { return (m + kTileRows - 1) / kTileRows * kTileRows * k; }

template <class T>
inline void pack(const T* coef, Index so, Index sk, Index m, Index k, T* out) {
    for (Index o0 = 0; o0 < m; o0 += kTileRows)
        for (Index kk = 0; kk < k; ++kk)
            for (Index o = o0; o < o0 + kTileRows; ++o) *out++ = o < m ? coef[o * so + kk * sk] : T(0);
}

// MO rows x NV registers (from column 0) of C = M B (+ bias): M's tile packed (P[kk * kTileRows + o]).
template <class T, int MO, int NV, bool BIAS>
inline void nn_tile(const T* P, const T* bias, const T* B, Index ldb, T* C, Index ldc, Index k) {
    using R = Reg<T>;
    using Vec = typename R::Vec;
    Vec acc[MO][NV];
    {  // kk = 0 starts the sums (k >= 1): b + w x, or w x (0 + w x, exactly)
        Vec b[NV];
        _Pragma("GCC unroll 16") for (int v = 0; v < NV; ++v) b[v] = R::load(B + v * R::L);
        _Pragma("GCC unroll 16") for (int o = 0; o < MO; ++o)
            _Pragma("GCC unroll 16") for (int v = 0; v < NV; ++v)
                acc[o][v] = BIAS ? P[o] * b[v] + R::broadcast(bias[o]) : P[o] * b[v];
    }
    for (Index kk = 1; kk < k; ++kk) {
        Vec b[NV];
        _Pragma("GCC unroll 16") for (int v = 0; v < NV; ++v) b[v] = R::load(B + kk * ldb + v * R::L);
        const T* w = P + kk * kTileRows;
        _Pragma("GCC unroll 16") for (int o = 0; o < MO; ++o)
            _Pragma("GCC unroll 16") for (int v = 0; v < NV; ++v) acc[o][v] += w[o] * b[v];
    }
    _Pragma("GCC unroll 16") for (int o = 0; o < MO; ++o)
        _Pragma("GCC unroll 16") for (int v = 0; v < NV; ++v) R::store(C + o * ldc + v * R::L, acc[o][v]);
}

template <class T, int MO>
inline void nn_tile_regs(int nv, const T* P, const T* bias, const T* B, Index ldb, T* C, Index ldc, Index k) {
    static_assert(kTileRegs == 4, "one case per register count");
    if (bias != nullptr) {
        switch (nv) {
            case 1: return nn_tile<T, MO, 1, true>(P, bias, B, ldb, C, ldc, k);
            case 2: return nn_tile<T, MO, 2, true>(P, bias, B, ldb, C, ldc, k);
            case 3: return nn_tile<T, MO, 3, true>(P, bias, B, ldb, C, ldc, k);
            default: return nn_tile<T, MO, 4, true>(P, bias, B, ldb, C, ldc, k);
        }
    }
    switch (nv) {
        case 1: return nn_tile<T, MO, 1, false>(P, bias, B, ldb, C, ldc, k);
        case 2: return nn_tile<T, MO, 2, false>(P, bias, B, ldb, C, ldc, k);
        case 3: return nn_tile<T, MO, 3, false>(P, bias, B, ldb, C, ldc, k);
        default: return nn_tile<T, MO, 4, false>(P, bias, B, ldb, C, ldc, k);
    }
}

// The default `between` of the products: nothing between the tiles.
struct NoWork {
    void operator()() const {}
};

// C (m x c, row stride ldc) = M (m x k, packed by pack) B (k x c, row stride ldb), plus bias[o]
// on row o when bias is given. c: a multiple of L. between() runs after each tile (taylor.hpp
// writes its saved streams out there, a few lines at a time, while the products keep the core
// busy).
template <class T, class Between = NoWork>
inline void nn(const T* packed, const T* bias, const T* B, Index ldb, T* C, Index ldc, Index m, Index k, Index c,
               Between&& between = {}) {
    static_assert(kTileRows == 5, "one case per row count");
    constexpr Index L = Reg<T>::L;
    const Index regs = c / L;
    for (Index o = 0; o < m; o += kTileRows) {
        const int mo = int(std::min<Index>(kTileRows, m - o));
        const T* P = packed + o * k;
        const T* bo = bias != nullptr ? bias + o : nullptr;
        for (Index v = 0; v < regs; v += kTileRegs) {
            const int nv = int(std::min<Index>(kTileRegs, regs - v));
            const T* Bv = B + v * L;
            T* Cv = C + o * ldc + v * L;
            switch (mo) {
                case 1: nn_tile_regs<T, 1>(nv, P, bo, Bv, ldb, Cv, ldc, k); break;
                case 2: nn_tile_regs<T, 2>(nv, P, bo, Bv, ldb, Cv, ldc, k); break;
                case 3: nn_tile_regs<T, 3>(nv, P, bo, Bv, ldb, Cv, ldc, k); break;
                case 4: nn_tile_regs<T, 4>(nv, P, bo, Bv, ldb, Cv, ldc, k); break;
                default: nn_tile_regs<T, 5>(nv, P, bo, Bv, ldb, Cv, ldc, k); break;
            }
            between();
        }
    }
}

// The nt tile: MK rows of B x MJ rows of G (20 accumulators at 4 x 5, plus 9 registers of rows).
constexpr int kNtRows = 4;
constexpr int kNtCols = 5;

// Makes the compiler hold v in a register. Left alone, GCC folds the loads of the nt tile's rows
// into the multiply-adds as memory operands, so each row is read once per use (4 or 5 times
// instead of once): the tile ran at 72-80 GFLOP/s, load-bound; with its rows in registers and
// the tile compiled on its own (noinline: inlined into nt it spilled), 103-107.
template <class V>
inline void in_register(V& v) {
#if defined(__x86_64__) || defined(__i386__)
    __asm__("" : "+v"(v));
#elif defined(__aarch64__)
    __asm__("" : "+w"(v));
#endif
}

// acc[k][j] (L lanes at acc + (k * q + j) * L), k < MK, j < MJ, += Σ_s Σ_v B_s[k][v] ⊙ G_s[j][v]
// over the `streams` pairs (B_s, G_s) and the c / L registers of their rows; `fresh`: acc holds
// nothing yet, the sums start from zero (what a zero-filled acc would give, without filling it).
template <class T, int MK, int MJ>
__attribute__((noinline)) void nt_tile(const T* const* B, Index ldb, const T* const* G, Index ldg, int streams,
                                       Index c, T* acc, Index q, bool fresh) {
    using R = Reg<T>;
    using Vec = typename R::Vec;
    constexpr Index L = R::L;
    Vec s[MK][MJ];
    _Pragma("GCC unroll 16") for (int i = 0; i < MK; ++i)
        _Pragma("GCC unroll 16") for (int j = 0; j < MJ; ++j) s[i][j] = fresh ? Vec{} : R::load(acc + (i * q + j) * L);
    for (int st = 0; st < streams; ++st)
        for (Index v = 0; v < c; v += L) {
            Vec b[MK], g[MJ];
            _Pragma("GCC unroll 16") for (int i = 0; i < MK; ++i) {
                b[i] = R::load(B[st] + i * ldb + v);
                in_register(b[i]);
            }
            _Pragma("GCC unroll 16") for (int j = 0; j < MJ; ++j) {
                g[j] = R::load(G[st] + j * ldg + v);
                in_register(g[j]);
            }
            _Pragma("GCC unroll 16") for (int i = 0; i < MK; ++i)
                _Pragma("GCC unroll 16") for (int j = 0; j < MJ; ++j) s[i][j] += b[i] * g[j];
        }
    _Pragma("GCC unroll 16") for (int i = 0; i < MK; ++i)
        _Pragma("GCC unroll 16") for (int j = 0; j < MJ; ++j) R::store(acc + (i * q + j) * L, s[i][j]);
}

template <class T, int MK>
inline void nt_tile_cols(int mj, const T* const* B, Index ldb, const T* const* G, Index ldg, int streams, Index c,
                         T* acc, Index q, bool fresh) {
    static_assert(kNtCols == 5, "one case per column count");
    switch (mj) {
        case 1: return nt_tile<T, MK, 1>(B, ldb, G, ldg, streams, c, acc, q, fresh);
        case 2: return nt_tile<T, MK, 2>(B, ldb, G, ldg, streams, c, acc, q, fresh);
        case 3: return nt_tile<T, MK, 3>(B, ldb, G, ldg, streams, c, acc, q, fresh);
        case 4: return nt_tile<T, MK, 4>(B, ldb, G, ldg, streams, c, acc, q, fresh);
        default: return nt_tile<T, MK, 5>(B, ldb, G, ldg, streams, c, acc, q, fresh);
    }
}

// acc (p x q weights, L lanes each) += Σ_s B_s G_sᵀ lane by lane: B_s p x c (row stride ldb),
// G_s q x c (row stride ldg), s < streams, c a multiple of L. The streams are taken 16 at a time
// (in order: the same sums as one at a time). fresh: acc = instead of += (acc is not read).
template <class T>
inline void nt(const T* const* B, Index ldb, const T* const* G, Index ldg, int streams, T* acc, Index p, Index q,
               Index c, bool fresh = false) {
    static_assert(kNtRows == 4, "one case per row count");
    constexpr Index L = Reg<T>::L;
    constexpr int kChunk = 16;
    const T* Bk[kChunk];
    const T* Gj[kChunk];
    for (int s0 = 0; s0 < streams; s0 += kChunk) {
        const int count = std::min(kChunk, streams - s0);
        for (Index k = 0; k < p; k += kNtRows) {
            const int mk = int(std::min<Index>(kNtRows, p - k));
            for (int st = 0; st < count; ++st) Bk[st] = B[s0 + st] + k * ldb;
            for (Index j = 0; j < q; j += kNtCols) {
                const int mj = int(std::min<Index>(kNtCols, q - j));
                for (int st = 0; st < count; ++st) Gj[st] = G[s0 + st] + j * ldg;
                T* a = acc + (k * q + j) * L;
                switch (mk) {
                    case 1: nt_tile_cols<T, 1>(mj, Bk, ldb, Gj, ldg, count, c, a, q, fresh && s0 == 0); break;
                    case 2: nt_tile_cols<T, 2>(mj, Bk, ldb, Gj, ldg, count, c, a, q, fresh && s0 == 0); break;
                    case 3: nt_tile_cols<T, 3>(mj, Bk, ldb, Gj, ldg, count, c, a, q, fresh && s0 == 0); break;
                    default: nt_tile_cols<T, 4>(mj, Bk, ldb, Gj, ldg, count, c, a, q, fresh && s0 == 0); break;
                }
            }
        }
    }
}

// acc[j] (L lanes at acc + j * L) += Σ_v G[j][v], j < q: the bias gradient, lane by lane (fresh:
// = instead of +=, as nt).
template <class T>
inline void lane_rowsum(const T* G, Index ldg, T* acc, Index q, Index c, bool fresh = false) {
    using R = Reg<T>;
    for (Index j = 0; j < q; ++j) {
        typename R::Vec s = fresh ? typename R::Vec{} : R::load(acc + j * R::L);
        for (Index v = 0; v < c; v += R::L) s += R::load(G + j * ldg + v);
        R::store(acc + j * R::L, s);
    }
}

// out[i] = Σ_λ acc[i * L + λ], λ in order, i < count: the lanes' partial sums added up.
template <class T>
inline void add_lanes(const T* acc, T* out, Index count) {
    constexpr Index L = Reg<T>::L;
    for (Index i = 0; i < count; ++i) {
        T v = acc[i * L];
        for (Index l = 1; l < L; ++l) v += acc[i * L + l];
        out[i] = v;
    }
}

}  // namespace block
}  // namespace backprop
