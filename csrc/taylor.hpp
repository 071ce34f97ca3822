// taylor.hpp: the network's output and its first and second derivatives w.r.t. the inputs
// (Taylor mode), forward and backward, the whole network in one call, in blocks of samples that
// stay in cache, on the backend's threads.
//
// The recursion (numpy_backend._taylor_forward is the reference), per layer, with the streams
// S = [A; Ȧ_1..Ȧ_k1; Ä_1..Ä_k2] the inputs of the next layer:
//
//     [H; Ḣ; Ḧ] = S W            (the bias on H only)
//     A' = act(H)   Ä'_q = σ2 ⊙ Ḣ_a ⊙ Ḣ_c + σ1 ⊙ Ḧ_q   Ȧ'_a = σ1 ⊙ Ḣ_a     (q = (a, c))
//
// with σ1, σ2, σ3 = act', act'', act''' written from the output A' (H is never kept), from the
// input layer's S_0 = [X; e_i rows; 0]. The backward, per layer from the last, turns the
// gradients arriving at [A'; Ȧ'; Ä'] into those at [H; Ḣ; Ḧ] (the equations of
// base.taylor_backward), then
//
//     dW = Sᵀ [GH; ĠH; G̈H]        (summed over every stream)
//     db = 1ᵀ GH                  (Ḣ and Ḧ carry no bias)
//     [G_A; Ġ; G̈] ← [GH; ĠH; G̈H] Wᵀ        (for the layer below)
//
// Blocks of samples, feature-major. A physics-informed network is narrow (20 wide) and its batch
// tall (10,000 points, 4 streams). Each block of R samples (8 registers: 128 floats, 64 doubles)
// goes through every layer while its streams stay in L1/L2, as p x R matrices, one sample per
// register lane (block_gemm.hpp): a layer's product is Wᵀ times the block with W's entries
// broadcast, every lane a sample, and the activation's passes run over whole registers. A
// sample's values never depend on where it sits in a block; the last, short block is padded
// with zero samples that carry zero gradients.
//
// What the forward keeps. For each hidden layer and block, [A; Ḣ; Ḧ] (the output, and the
// derivative streams BEFORE the activation: the backward needs them, and Ȧ, Ä are one pass from
// them and A, where Ḣ, Ḧ from Ȧ, Ä would take a product), feature-major, written past the cache
// (StreamOut, a few lines after each tile of the next layer's products): 26 MB for the Burgers
// network at 10,000 points, read again only by the backward, which asks for each block a layer
// ahead (ReadAhead, likewise between tiles). The last layer's streams are the results, row-major,
// after the activation.
//
// Threads and bits. Blocks are independent in the forward. In the backward each GROUP of blocks
// sums its own dW, db (lane by lane, block::nt, then the lanes in order), and the groups' sums
// are added in group order. Block and group sizes depend on the sizes only, never on the thread
// count, so the results are the same bits with 1 thread or 16 (and at any buffer addresses).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__AVX512F__) || defined(__AVX__) || defined(__SSE2__)
#include <immintrin.h>
#endif

#include "block_gemm.hpp"
#include "common.hpp"
#include "elementwise.hpp"
#include "parallel.hpp"
#include "scratch.hpp"

namespace backprop {

template <class T>
struct TaylorLayer {
    const T* W;  // p_in x p_out
    const T* b;  // p_out (nullptr in the backward)
    Act act;
    Index p_in, p_out;
};

// first: the k1 input indices; second: the k2 pairs (a, c) of positions in first.
struct TaylorDirs {
    std::vector<Index> first;
    std::vector<std::pair<Index, Index>> second;
    Index k1() const { return Index(first.size()); }
    Index k2() const { return Index(second.size()); }
};

namespace taylor_detail {

// σ1, σ2, σ3 (act', act'', act''') of an activation as expressions of its output y (a register
// of outputs, block::Reg<T>::Vec), computed inside the passes that need them: no buffer and no
// pass of their own. `curved`: σ2 and σ3 are not zero.
template <class T>
struct TanhSigmas {
    static constexpr bool curved = true;
    template <class E> static E d1(const E& y) { return T(1) - y * y; }
    template <class E> static E d2(const E& y) { return T(-2) * y * (T(1) - y * y); }
    template <class E> static E d3(const E& y) { return (T(1) - y * y) * (T(6) * y * y - T(2)); }
};

template <class T>
struct SigmoidSigmas {
    static constexpr bool curved = true;
    template <class E> static E d1(const E& y) { return y * (T(1) - y); }
    template <class E> static E d2(const E& y) { return y * (T(1) - y) * (T(1) - T(2) * y); }
    template <class E> static E d3(const E& y) { return y * (T(1) - y) * (T(1) - T(6) * y + T(6) * y * y); }
};

template <class T>
struct ReluSigmas {  // σ1 = [y > 0]; σ2 = σ3 = 0 almost everywhere
    static constexpr bool curved = false;
    template <class E> static E d1(const E& y) { return y > T(0) ? E{} + T(1) : E{}; }
    template <class E> static E d2(const E&) { return E{}; }
    template <class E> static E d3(const E&) { return E{}; }
};

template <class T>
struct LeakyReluSigmas {  // σ1 = 1 or the slope; σ2 = σ3 = 0 almost everywhere
    static constexpr bool curved = false;
    template <class E> static E d1(const E& y) { return y > T(0) ? E{} + T(1) : E{} + T(kLeakySlope); }
    template <class E> static E d2(const E&) { return E{}; }
    template <class E> static E d3(const E&) { return E{}; }
};

// fn(Sigmas{}) for the activation; identity (σ1 = 1, σ2 = σ3 = 0) calls nothing: its streams
// and their gradients pass through unchanged.
template <class T, class F>
inline void with_sigmas(Act act, const F& fn) {
    switch (act) {
        case Act::tanh: return fn(TanhSigmas<T>{});
        case Act::sigmoid: return fn(SigmoidSigmas<T>{});
        case Act::relu: return fn(ReluSigmas<T>{});
        case Act::leaky_relu: return fn(LeakyReluSigmas<T>{});
        case Act::identity:
        case Act::none: return;
    }
}

// The positions of m values (a multiple of L) in runs of Run registers, then one at a time:
// body(i, C) handles the C registers of values from i (C a compile-time constant), so that the
// loops over the streams inside it are paid once per run. With the stream counts known at compile
// time (with_counts), runs of 2 registers measured best for the forward's pass and runs of 4 for
// the backward's (2-3% of the backward; the Burgers network, builds compared call by call).
constexpr int kForwardRun = 2;
constexpr int kBackwardRun = 4;

template <class T, int Run, class Body>
inline void by_registers(Index m, const Body& body) {
    constexpr Index L = block::Reg<T>::L;
    Index i = 0;
    for (; i + Run * L <= m; i += Run * L) body(i, std::integral_constant<int, Run>{});
    for (; i < m; i += L) body(i, std::integral_constant<int, 1>{});
}

// fn(k1, k2) with the numbers of first- and second-derivative streams as compile-time constants
// (std::integral_constant) for the shapes physics-informed losses ask for most: one input with
// its second derivative (k1, k2 = 1, 1), or two inputs with one, two or three second derivatives
// (2, 1: Burgers' u_t, u_x, u_xx; 2, 2: a Laplacian; 2, 3). The loops over the streams in the
// passes below then unroll, and what they read stays in registers across them (the Burgers
// network: the forward 3% faster; the backward, with runs of 4 registers, 3%; two builds compared
// call by call). Other shapes, and activations without curvature (relu: no second derivatives),
// get the run-time counts.
template <bool Specialize, class F>
inline void with_counts(const TaylorDirs& dirs, const F& fn) {
    using std::integral_constant;
    const Index k1 = dirs.k1(), k2 = dirs.k2();
    if constexpr (Specialize) {
        if (k1 == 1 && k2 == 1) return fn(integral_constant<Index, 1>{}, integral_constant<Index, 1>{});
        if (k1 == 2 && k2 == 1) return fn(integral_constant<Index, 2>{}, integral_constant<Index, 1>{});
        if (k1 == 2 && k2 == 2) return fn(integral_constant<Index, 2>{}, integral_constant<Index, 2>{});
        if (k1 == 2 && k2 == 3) return fn(integral_constant<Index, 2>{}, integral_constant<Index, 3>{});
    }
    fn(k1, k2);
}

// σ1, σ2, σ3 at C registers of a layer's outputs A from position i.
template <class T, class S, int C>
struct SigmaRegs {
    using R = block::Reg<T>;
    typename R::Vec s1[C], s2[C], s3[C];
    SigmaRegs(const T* A, Index i) {
        _Pragma("GCC unroll 4") for (int v = 0; v < C; ++v) {
            const typename R::Vec y = R::load(A + i + v * R::L);
            s1[v] = S::d1(y), s2[v] = S::d2(y), s3[v] = S::d3(y);
        }
    }
};

// The derivative streams through one activation, at C registers of positions from i: from the
// pre-activation streams [Ḣ; Ḧ] (stream j at pre + j * pre_stride),
//     Ä_q = σ2 Ḣ_a Ḣ_c + σ1 Ḧ_q,    Ȧ_a = σ1 Ḣ_a
// into post (stream j at post + j * post_stride). post may be pre itself (in place: the second
// streams are written first, while the Ḣ they read are still there).
template <class T, class S, int C>
inline void activate_registers(const TaylorDirs& dirs, Index k1, Index k2, const SigmaRegs<T, S, C>& sg, const T* pre,
                               Index pre_stride, T* post, Index post_stride, Index i) {
    using R = block::Reg<T>;
    constexpr Index L = R::L;
    for (Index qq = 0; qq < k2; ++qq) {
        const auto [a, c] = dirs.second[qq];
        const T* ha = pre + a * pre_stride + i;
        const T* hc = pre + c * pre_stride + i;
        const T* hq = pre + (k1 + qq) * pre_stride + i;
        T* to = post + (k1 + qq) * post_stride + i;
        _Pragma("GCC unroll 4") for (int v = 0; v < C; ++v) {
            const Index o = v * L;
            R::store(to + o, S::curved ? sg.s2[v] * R::load(ha + o) * R::load(hc + o) + sg.s1[v] * R::load(hq + o)
                                       : sg.s1[v] * R::load(hq + o));
        }
    }
    for (Index a = 0; a < k1; ++a) {
        const T* ha = pre + a * pre_stride + i;
        T* to = post + a * post_stride + i;
        _Pragma("GCC unroll 4") for (int v = 0; v < C; ++v) R::store(to + v * L, sg.s1[v] * R::load(ha + v * L));
    }
}

// The gradients at [A'; Ȧ'; Ä'] (g, stream j at g + j * g_stride) into those at [H; Ḣ; Ḧ], in
// place, at C registers of positions from i: h = [Ḣ; Ḧ] (stream j at h + j * h_stride),
//   GH = σ1 G_A + Σ_a σ2 Ḣ_a Ġ_a + Σ_q (σ3 Ḣ_a Ḣ_c + σ2 Ḧ_q) G̈_q
//   ĠH_a = σ1 Ġ_a + Σ_{q=(a,c)} σ2 Ḣ_c G̈_q + Σ_{q=(c,a)} σ2 Ḣ_c G̈_q
//   G̈H_q = σ1 G̈_q
// (GH first and G̈H last: each reads stream gradients before they are overwritten.)
template <class T, class S, int C>
inline void backward_registers(const TaylorDirs& dirs, Index k1, Index k2, const SigmaRegs<T, S, C>& sg, T* g,
                               Index g_stride, const T* h, Index h_stride, Index i) {
    using R = block::Reg<T>;
    using Vec = typename R::Vec;
    constexpr Index L = R::L;
    auto Hd = [&](Index a) { return h + a * h_stride + i; };               // Ḣ_a
    auto Hq = [&](Index qq) { return h + (k1 + qq) * h_stride + i; };      // Ḧ_q
    auto Gd = [&](Index a) { return g + (1 + a) * g_stride + i; };         // Ġ_a
    auto Gq = [&](Index qq) { return g + (1 + k1 + qq) * g_stride + i; };  // G̈_q
    Vec GH[C];
    _Pragma("GCC unroll 4") for (int v = 0; v < C; ++v) GH[v] = sg.s1[v] * R::load(g + i + v * L);
    if constexpr (S::curved) {
        for (Index a = 0; a < k1; ++a) {
            const T *ha = Hd(a), *ga = Gd(a);
            _Pragma("GCC unroll 4") for (int v = 0; v < C; ++v)
                GH[v] += sg.s2[v] * R::load(ha + v * L) * R::load(ga + v * L);
        }
        for (Index qq = 0; qq < k2; ++qq) {
            const auto [a, c] = dirs.second[qq];
            const T *ha = Hd(a), *hc = Hd(c), *hq = Hq(qq), *gq = Gq(qq);
            _Pragma("GCC unroll 4") for (int v = 0; v < C; ++v) {
                const Index o = v * L;
                GH[v] += (sg.s3[v] * R::load(ha + o) * R::load(hc + o) + sg.s2[v] * R::load(hq + o)) * R::load(gq + o);
            }
        }
    }
    _Pragma("GCC unroll 4") for (int v = 0; v < C; ++v) R::store(g + i + v * L, GH[v]);
    for (Index a = 0; a < k1; ++a) {
        T* ga = Gd(a);
        Vec x[C];
        _Pragma("GCC unroll 4") for (int v = 0; v < C; ++v) x[v] = sg.s1[v] * R::load(ga + v * L);
        if constexpr (S::curved)
            for (Index qq = 0; qq < k2; ++qq) {
                const auto [qa, qc] = dirs.second[qq];
                const T* gq = Gq(qq);
                for (const Index other : {qa == a ? qc : Index(-1), qc == a ? qa : Index(-1)}) {
                    if (other < 0) continue;
                    const T* ho = Hd(other);
                    _Pragma("GCC unroll 4") for (int v = 0; v < C; ++v)
                        x[v] += sg.s2[v] * R::load(ho + v * L) * R::load(gq + v * L);
                }
            }
        _Pragma("GCC unroll 4") for (int v = 0; v < C; ++v) R::store(ga + v * L, x[v]);
    }
    for (Index qq = 0; qq < k2; ++qq) {
        T* gq = Gq(qq);
        _Pragma("GCC unroll 4") for (int v = 0; v < C; ++v) R::store(gq + v * L, sg.s1[v] * R::load(gq + v * L));
    }
}

// activate_registers over m values (a multiple of the register's lanes), σ written from A; for
// identity (σ1 = 1, σ2 = 0) post is pre unchanged.
template <class T>
inline void activate_streams(Act act, const TaylorDirs& dirs, const T* A, const T* pre, Index pre_stride, T* post,
                             Index post_stride, Index m) {
    if (act == Act::identity || act == Act::none) {
        if (post != pre)
            for (Index j = 0; j < dirs.k1() + dirs.k2(); ++j)
                std::copy_n(pre + j * pre_stride, m, post + j * post_stride);
        return;
    }
    with_sigmas<T>(act, [&](auto sig) {
        with_counts<decltype(sig)::curved>(dirs, [&](auto k1, auto k2) {
            by_registers<T, kForwardRun>(m, [&](Index i, auto chunk) {
                const SigmaRegs<T, decltype(sig), decltype(chunk)::value> sg(A, i);
                activate_registers<T>(dirs, k1, k2, sg, pre, pre_stride, post, post_stride, i);
            });
        });
    });
}

// backward_registers over m values; identity leaves g as it is.
template <class T>
inline void backward_streams(Act act, const TaylorDirs& dirs, const T* A, T* g, Index g_stride, const T* h,
                             Index h_stride, Index m) {
    with_sigmas<T>(act, [&](auto sig) {
        with_counts<decltype(sig)::curved>(dirs, [&](auto k1, auto k2) {
            by_registers<T, kBackwardRun>(m, [&](Index i, auto chunk) {
                const SigmaRegs<T, decltype(sig), decltype(chunk)::value> sg(A, i);
                backward_registers<T>(dirs, k1, k2, sg, g, g_stride, h, h_stride, i);
            });
        });
    });
}

// Samples per block: 8 registers of lanes (128 floats, 64 doubles). A block's streams of one
// 20-wide layer are then 40 KB (float, 4 streams): the products' operands stay in L1/L2 between
// the passes over them.
template <class T>
constexpr Index taylor_block_rows() { return 8 * block::lanes<T>(); }

constexpr Index kTaylorGroups = 32;  // the backward's partial sums: at most this many groups of blocks

template <class T>
using Buffer = std::vector<T, Eigen::aligned_allocator<T>>;

// rows x q values of a row-major array (row stride q) into a q x ld feature-major block (row j:
// the rows' values of column j), zeros after the first `rows` samples.
template <class T>
inline void gather(const T* src, Index q, Index rows, Index ld, T* dst) {
    for (Index j = 0; j < q; ++j) {
        T* d = dst + j * ld;
        for (Index r = 0; r < rows; ++r) d[r] = src[r * q + j];
        std::fill(d + rows, d + ld, T(0));
    }
}

// The inverse: the first `rows` samples of a q x ld block into rows x q values (row stride q).
template <class T>
inline void scatter(const T* src, Index q, Index rows, Index ld, T* dst) {
    for (Index j = 0; j < q; ++j)
        for (Index r = 0; r < rows; ++r) dst[r * q + j] = src[j * ld + r];
}

// `count` rows of `rows` values (row stride rows) into rows of ld values, zeros after; and back.
template <class T>
inline void pad_rows(const T* src, Index count, Index rows, Index ld, T* dst) {
    for (Index i = 0; i < count; ++i) {
        std::copy_n(src + i * rows, rows, dst + i * ld);
        std::fill(dst + i * ld + rows, dst + (i + 1) * ld, T(0));
    }
}
template <class T>
inline void unpad_rows(const T* src, Index count, Index rows, Index ld, T* dst) {
    for (Index i = 0; i < count; ++i) std::copy_n(src + i * ld, rows, dst + i * rows);
}

// Between the tiles of a block's products (block::nn's `between`), a few cache lines of other
// memory traffic, so that it proceeds while the core computes instead of stalling it in one burst.
// Lines per call: a block's bytes spread over the tiles of the products that carry them.
inline Index lines_per_tile(Index bytes, Index tiles) {
    return (bytes / 64 + tiles - 1) / std::max<Index>(1, tiles);
}

// The tiles of C (m x c) = M B: block::nn's calls of `between`.
template <class T>
inline Index nn_tiles(Index m, Index c) {
    const Index row_tiles = (m + block::kTileRows - 1) / block::kTileRows;
    const Index register_tiles = (c / block::lanes<T>() + block::kTileRegs - 1) / block::kTileRegs;
    return row_tiles * register_tiles;
}

// The forward's saved streams: a hidden layer's block [A; Ḣ; Ḧ] (40 KB for the Burgers network)
// copied to S past the caches (non-temporal stores: S is read again only by the backward, after
// the whole forward; through the cache each line would first be read, and the block's own streams
// pushed out), a few lines after each tile of the next layer's products. Written at once, the
// block's stores stalled the core until memory took them: 30% of the forward on two threads.
// start() copies at once where dst is not on a 64-byte boundary; finish() writes what is left.
// The stores are made visible to other threads by a fence (fence(), once per block).
class StreamOut {
public:
    void start(const void* src, void* dst, Index bytes, Index tiles) {
        finish();
        from_ = static_cast<const char*>(src), to_ = static_cast<char*>(dst), left_ = bytes;
        if (reinterpret_cast<std::uintptr_t>(dst) % 64 != 0 || bytes % 64 != 0) {
            std::memcpy(to_, from_, std::size_t(bytes));
            left_ = 0;
        }
        per_tile_ = lines_per_tile(left_, tiles);
    }
    void operator()() { write(per_tile_); }
    void finish() { write(left_ / 64); }
    static void fence() {
#if defined(__SSE2__)
        _mm_sfence();
#endif
    }

private:
    void write(Index lines) {
        for (; lines > 0 && left_ > 0; --lines, left_ -= 64, from_ += 64, to_ += 64) {
#if defined(__AVX512F__)
            _mm512_stream_si512(reinterpret_cast<__m512i*>(to_), _mm512_loadu_si512(from_));
#elif defined(__AVX__)
            for (int h = 0; h < 64; h += 32)
                _mm256_stream_si256(reinterpret_cast<__m256i*>(to_ + h),
                                    _mm256_loadu_si256(reinterpret_cast<const __m256i*>(from_ + h)));
#elif defined(__SSE2__)
            for (int h = 0; h < 64; h += 16)
                _mm_stream_si128(reinterpret_cast<__m128i*>(to_ + h),
                                 _mm_loadu_si128(reinterpret_cast<const __m128i*>(from_ + h)));
#else
            std::memcpy(to_, from_, 64);
#endif
        }
    }
    const char* from_ = nullptr;
    char* to_ = nullptr;
    Index left_ = 0, per_tile_ = 0;
};

// The backward's read-ahead: the saved block that the next layer down reads first (from memory:
// the forward wrote it past the caches) asked for into L2 a few lines after each tile of this
// layer's products. The hardware prefetchers stop at each 4 KB page of the 40 KB block; asked
// for all at once the requests crowd out the products' own loads. 6% of the backward on two
// threads.
class ReadAhead {
public:
    ReadAhead() = default;
    ReadAhead(const void* at, Index bytes, Index tiles)
        : at_(static_cast<const char*>(at)), lines_(bytes / 64), per_tile_(lines_per_tile(bytes, tiles)) {}
    void operator()() {
        for (Index i = 0; i < per_tile_ && lines_ > 0; ++i, --lines_, at_ += 64) __builtin_prefetch(at_, 0, 2);
    }

private:
    const char* at_ = nullptr;
    Index lines_ = 0, per_tile_ = 0;
};

// The input layer's streams for `rows` samples (X: rows x d, row-major), d x ld each: [X; the
// rows e_{first[a]} (1 on feature first[a], 0 elsewhere); zeros for the second streams], stream j
// at out + j * d * ld.
template <class T>
inline void input_block(const TaylorDirs& dirs, const T* X, Index d, Index rows, Index ld, T* out) {
    gather(X, d, rows, ld, out);
    std::fill_n(out + d * ld, (dirs.k1() + dirs.k2()) * d * ld, T(0));
    for (Index a = 0; a < dirs.k1(); ++a) std::fill_n(out + ((1 + a) * d + dirs.first[a]) * ld, ld, T(1));
}

// A hidden layer's saved block (s streams of p rows of `rows` values, at S + r0 * s * p) as
// streams of p x ld: in place for a whole block, else copied into `pad` with zeros after the
// samples.
template <class T>
inline const T* saved_block(const T* S, Index r0, Index rows, Index ld, Index s, Index p, T* pad) {
    const T* at = S + r0 * s * p;
    if (rows == ld) return at;
    pad_rows(at, s * p, rows, ld, pad);
    return pad;
}

}  // namespace taylor_detail


// X: n x d. S[0]: (k1+k2) x n x d, the input's streams (e rows, then zeros; unused when k1 = 0).
// S[l], l = 1..L: (1+k1+k2) x n x p_l. The last layer's: its output and its derivative streams
// after the activation (the results, row-major: stream j's rows at S[L] + j * n * p_L). A hidden
// layer's: what the backward needs, block by block of samples: for the samples r0..r0+rows-1,
// at S[l] + r0 * (1+k) * p_l, the streams [A; Ḣ; Ḧ] (the output, and the derivative streams
// BEFORE the activation: Ȧ, Ä are one elementwise pass from them and A, where Ḣ, Ḧ from Ȧ, Ä
// would take a product) as p_l x rows each, feature-major.
template <class T>
inline void taylor_forward(const std::vector<TaylorLayer<T>>& layers, const TaylorDirs& dirs, const T* X,
                           const std::vector<T*>& S, Index n, int threads) {
    using namespace taylor_detail;
    const Index k1 = dirs.k1(), k2 = dirs.k2(), k = k1 + k2, s = 1 + k, d = layers[0].p_in, nL = layers.size();
    if (k1 > 0) {  // S_0's streams: e_{first[a]} rows, then zeros
        std::fill_n(S[0], k * n * d, T(0));
        for (Index a = 0; a < k1; ++a)
            for (Index i = 0; i < n; ++i) S[0][(a * n + i) * d + dirs.first[a]] = T(1);
    }
    Index widest = d;
    for (const auto& L : layers) widest = std::max(widest, L.p_out);
    const Index R = taylor_block_rows<T>(), lanes = block::lanes<T>(), blocks = (n + R - 1) / R;
    std::vector<Buffer<T>> Wt(nL);  // each W, packed for the products' tiles (as Wᵀ)
    for (Index l = 0; l < nL; ++l) {
        const auto& L = layers[l];
        Wt[l].resize(block::packed_size(L.p_out, L.p_in));
        block::pack<T>(L.W, 1, L.p_out, L.p_out, L.p_in, Wt[l].data());
    }
    struct Work {
        Buffer<T> input, post[2], out[2];  // the input layer's streams; [Ȧ; Ä] and a part block's [A; Ḣ; Ḧ]
        std::vector<const T*> in;          // the current layer's input streams
    };
    auto work = scratch_for<Work>(threads);  // kept between calls (scratch.hpp)
    parallel_for(blocks, threads, [&](int w, Index blk) {
        Work& ws = *work[w];
        ws.input.resize(s * d * R), ws.in.resize(s);
        for (int i = 0; i < 2; ++i) ws.post[i].resize(k * widest * R), ws.out[i].resize(s * widest * R);
        const Index r0 = blk * R, rows = std::min(R, n - r0), ld = (rows + lanes - 1) / lanes * lanes;
        input_block<T>(dirs, X + r0 * d, d, rows, ld, ws.input.data());
        for (Index j = 0; j < s; ++j) ws.in[j] = ws.input.data() + j * d * ld;
        StreamOut saving;  // the previous layer's saved block, written during this layer's products
        for (Index l = 0; l < nL; ++l) {
            const TaylorLayer<T>& L = layers[l];
            const Index p = L.p_in, q = L.p_out, m = q * ld;
            const bool last = l == nL - 1;
            T* out = ws.out[l % 2].data();  // [H; Ḣ; Ḧ], q x ld each
            for (Index j = 0; j < s; ++j)  // every stream by the same W; the bias on H only
                block::nn<T>(Wt[l].data(), j == 0 ? L.b : nullptr, ws.in[j], ld, out + j * m, ld, q, p, ld, saving);
            saving.finish();
            // A = act(H), then the results in place (the last layer), or Ȧ, Ä for the next
            // layer's product (Ḣ, Ḧ stay saved)
            T* post = ws.post[l % 2].data();
            for (Index r = 0; r < q; ++r) {  // row by row: each row of A is in L1 for the streams' pass
                T* h = out + r * ld;
                activation_forward<T>(L.act, h, h, ld);
                activate_streams<T>(L.act, dirs, h, h + m, m, (last ? out + m : post) + r * ld, m, ld);
            }
            if (last) {  // row-major into S[L]
                for (Index j = 0; j < s; ++j) scatter<T>(out + j * m, q, rows, ld, S[l + 1] + j * n * q + r0 * q);
            } else {
                if (rows == ld)  // [A; Ḣ; Ḧ] saved past the cache, during the next layer's products
                    saving.start(out, S[l + 1] + r0 * s * q, s * m * Index(sizeof(T)),
                                 s * nn_tiles<T>(layers[l + 1].p_out, ld));
                else
                    unpad_rows<T>(out, s * q, rows, ld, S[l + 1] + r0 * s * q);
                ws.in[0] = out;
                for (Index j = 0; j < k; ++j) ws.in[1 + j] = post + j * m;
            }
        }
        saving.finish();
        StreamOut::fence();
    });
}

// The weight and bias gradients through taylor_forward's network. S as taylor_forward wrote it;
// G: n x p_L, dG: k1 x n x p_L, d2G: k2 x n x p_L (nullptr: zero). dW[l]: p_l x p_{l+1}, db[l]: p_{l+1}.
template <class T>
inline void taylor_backward(const std::vector<TaylorLayer<T>>& layers, const TaylorDirs& dirs, const T* X,
                            const std::vector<const T*>& S, const T* G, const T* dG, const T* d2G,
                            const std::vector<T*>& dW, const std::vector<T*>& db, Index n, int threads) {
    using namespace taylor_detail;
    const Index k1 = dirs.k1(), k2 = dirs.k2(), k = k1 + k2, s = 1 + k, nL = layers.size(), d = layers[0].p_in;
    Index widest = d, weights = 0;
    std::vector<Index> offW(nL), offb(nL);
    for (Index l = 0; l < nL; ++l) {
        const auto& L = layers[l];
        widest = std::max(widest, L.p_out);
        offW[l] = weights, weights += L.p_in * L.p_out;
        offb[l] = weights, weights += L.p_out;
    }
    const Index R = taylor_block_rows<T>(), lanes = block::lanes<T>(), blocks = (n + R - 1) / R;
    const Index groups = std::min(blocks, kTaylorGroups);
    std::vector<Buffer<T>> Wt(nL), Wn(nL);  // each W packed for the tiles: as Wᵀ, and as W (for W G)
    for (Index l = 0; l < nL; ++l) {
        const auto& L = layers[l];
        Wt[l].resize(block::packed_size(L.p_out, L.p_in));
        block::pack<T>(L.W, 1, L.p_out, L.p_out, L.p_in, Wt[l].data());
        Wn[l].resize(block::packed_size(L.p_in, L.p_out));
        block::pack<T>(L.W, L.p_out, 1, L.p_in, L.p_out, Wn[l].data());
    }
    struct Partial {
        std::vector<T> sums;
    };
    Scratch<Partial> partial_sums;  // group g's dW, db at g * weights
    std::vector<T>& partial = partial_sums->sums;
    partial.assign(std::size_t(groups * weights), T(0));
    struct Work {
        Buffer<T> input, g, g_prev, post, below, here, h, sums;  // sums: dW, db lane by lane
        std::vector<const T*> in, gs;
    };
    auto work = scratch_for<Work>(threads);
    parallel_for(groups, threads, [&](int w, Index grp) {
        Work& ws = *work[w];
        ws.input.resize(s * d * R), ws.g.resize(s * widest * R), ws.g_prev.resize(s * widest * R);
        ws.post.resize(k * widest * R), ws.below.resize(s * widest * R), ws.here.resize(s * widest * R);
        ws.h.resize(k * widest * R), ws.in.resize(s), ws.gs.resize(s);
        ws.sums.resize(weights * lanes);  // the group's first block starts the sums (fresh)
        const Index first_block = blocks * grp / groups, last_block = blocks * (grp + 1) / groups;
        for (Index blk = first_block; blk < last_block; ++blk) {
            const Index r0 = blk * R, rows = std::min(R, n - r0), ld = (rows + lanes - 1) / lanes * lanes;
            {  // the gradients arriving at the results' streams, feature-major
                const Index q = layers[nL - 1].p_out, m = q * ld, stride = n * q;
                gather<T>(G + r0 * q, q, rows, ld, ws.g.data());
                for (Index j = 0; j < k; ++j) {
                    const T* from = j < k1 ? (dG ? dG + j * stride : nullptr)
                                           : (d2G ? d2G + (j - k1) * stride : nullptr);
                    T* to = ws.g.data() + (1 + j) * m;
                    if (from) gather<T>(from + r0 * q, q, rows, ld, to); else std::fill_n(to, m, T(0));
                }
            }
            for (Index l = nL - 1; l >= 0; --l) {
                const TaylorLayer<T>& L = layers[l];
                const Index p = L.p_in, q = L.p_out, m = q * ld, mp = p * ld;
                // the layer's inputs [A; Ȧ; Ä]: the input layer's, or A_{l-1} saved and [Ȧ; Ä] one
                // pass from the saved Ḣ_{l-1}, Ḧ_{l-1}
                if (l == 0) {
                    input_block<T>(dirs, X + r0 * d, d, rows, ld, ws.input.data());
                    for (Index j = 0; j < s; ++j) ws.in[j] = ws.input.data() + j * d * ld;
                } else {
                    const T* below = saved_block<T>(S[l], r0, rows, ld, s, p, ws.below.data());
                    ws.in[0] = below;
                    activate_streams<T>(layers[l - 1].act, dirs, below, below + mp, mp, ws.post.data(), mp, mp);
                    for (Index j = 0; j < k; ++j) ws.in[1 + j] = ws.post.data() + j * mp;
                }
                // the layer's output A and its streams before the activation [Ḣ; Ḧ]: saved, but
                // for the last layer, whose saved streams are the results (after the activation):
                // the same for identity (whose backward does not read them), else again
                const T* A = nullptr;
                const T* h = nullptr;
                if (l == nL - 1) {
                    gather<T>(S[l + 1] + r0 * q, q, rows, ld, ws.here.data());
                    A = ws.here.data();
                    if (k > 0 && L.act != Act::identity && L.act != Act::none) {
                        for (Index j = 0; j < k; ++j)
                            block::nn<T>(Wt[l].data(), nullptr, ws.in[1 + j], ld, ws.h.data() + j * m, ld, q, p, ld);
                        h = ws.h.data();
                    }
                } else {
                    A = saved_block<T>(S[l + 1], r0, rows, ld, s, q, ws.here.data());
                    h = A + m;
                }
                T* g = ws.g.data();
                backward_streams<T>(L.act, dirs, A, g, m, h, m, m);
                // dW += Σ_j S_j G_jᵀ, db += 1ᵀ GH, lane by lane
                for (Index j = 0; j < s; ++j) ws.gs[j] = g + j * m;
                const bool fresh = blk == first_block;
                block::nt<T>(ws.in.data(), ld, ws.gs.data(), ld, int(s), ws.sums.data() + offW[l] * lanes, p, q, ld,
                             fresh);
                block::lane_rowsum<T>(g, ld, ws.sums.data() + offb[l] * lanes, q, ld, fresh);
                if (l > 0) {  // [G_A; Ġ; G̈] for the layer below: W G_j
                    ReadAhead ahead;  // the block the next layer down reads first
                    if (l >= 2 && rows == ld) {
                        const Index below = layers[l - 2].p_out;
                        ahead = ReadAhead(S[l - 1] + r0 * s * below, rows * s * below * Index(sizeof(T)),
                                          s * nn_tiles<T>(p, ld));
                    }
                    for (Index j = 0; j < s; ++j)
                        block::nn<T>(Wn[l].data(), nullptr, g + j * m, ld, ws.g_prev.data() + j * mp, ld, p, q, ld,
                                     ahead);
                    std::swap(ws.g, ws.g_prev);
                }
            }
        }
        block::add_lanes<T>(ws.sums.data(), partial.data() + grp * weights, weights);
    });
    // the groups' sums, added in group order (on this thread when they are few: starting a
    // thread takes about as long as adding up the Burgers network's 32 x 3,400)
    const int sum_threads = groups * weights < (Index(1) << 20) ? 1 : threads;
    parallel_for(nL, sum_threads, [&](int, Index l) {
        const Index q = layers[l].p_out, size = layers[l].p_in * q;
        for (Index i = 0; i < size; ++i) {  // (no rows: no groups, zero gradients)
            T v = T(0);
            for (Index grp = 0; grp < groups; ++grp) v += partial[grp * weights + offW[l] + i];
            dW[l][i] = v;
        }
        for (Index i = 0; i < q; ++i) {
            T v = T(0);
            for (Index grp = 0; grp < groups; ++grp) v += partial[grp * weights + offb[l] + i];
            db[l][i] = v;
        }
    });
}

}  // namespace backprop
