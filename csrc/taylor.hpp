// taylor.hpp: the network's output and its first and second derivatives w.r.t. the inputs
// (Taylor mode), forward and backward, the whole network in one call, in blocks of rows that
// stay in cache, on the backend's threads.
//
// The recursion (numpy_backend._taylor_forward is the reference), per layer, with the streams
// of a layer stored one after another as one (1 + k1 + k2) x n x p buffer S = [A; Ȧ_1..Ȧ_k1;
// Ä_1..Ä_k2] (base.py allocates the saved arrays as views of it):
//
//     [H; Ḣ; Ḧ] = S W            (the bias on the first block only)
//     A' = act(H)   Ä'_q = σ2 ⊙ Ḣ_a ⊙ Ḣ_c + σ1 ⊙ Ḧ_q   Ȧ'_a = σ1 ⊙ Ḣ_a     (q = (a, c))
//
// with σ1, σ2, σ3 = act', act'', act''' written from the output A' (H is never kept). The input
// layer is the exception: S_0 = [X; e_i rows; 0], so its Ḣ_a is row first[a] of W on every sample
// and Ḧ = 0, exactly, with no product.
//
// The backward recomputes [Ḣ; Ḧ] = S[1:] W, turns the gradients arriving at [A'; Ȧ'; Ä'] into
// those at [H; Ḣ; Ḧ] (the equations of base.taylor_backward), then
//
//     dW = Sᵀ [GH; ĠH; G̈H]        (summed over every stream)
//     db = 1ᵀ GH                  (the first block only: Ḣ and Ḧ carry no bias)
//     [G_A; Ġ; G̈] ← [GH; ĠH; G̈H] Wᵀ        (for the layer below)
//
// (the input layer: dW = Xᵀ GH, plus 1ᵀ ĠH_a on row first[a]).
//
// Why blocks. A physics-informed network is narrow (20 wide) and its batch tall (10,000 points,
// 4 streams): a product per layer over all rows is 40,000 x 20 x 20, which a BLAS splits badly,
// and every elementwise pass would stream the whole layer through memory. Here each block of
// rows goes through every layer while its streams stay in L1/L2: the products are the
// register-blocked kernels of small_gemm.hpp (outputs up to 32 wide; Eigen beyond), each
// elementwise pass runs on the block just multiplied. Blocks are independent in the forward; in
// the backward each GROUP of blocks sums its own dW, db, and the groups' sums are added in group
// order. Block and group sizes depend on the sizes only, never on the thread count, so the
// results are the same bits with 1 thread or 16 (and at any buffer addresses: lanes.hpp).
#pragma once

#include <algorithm>
#include <utility>
#include <vector>

#include "common.hpp"
#include "elementwise.hpp"
#include "gemm.hpp"
#include "lanes.hpp"
#include "parallel.hpp"
#include "small_gemm.hpp"

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

// σ1 (and σ2, σ3 when asked: s2/s3 not null) of `m` activation outputs A, written from A.
template <class T>
inline void sigmas(Act act, const T* A, T* s1, T* s2, T* s3, Index m) {
    using C = Eigen::Array<T, Eigen::Dynamic, 1>;
    switch (act) {
        case Act::tanh:
            lanes::assign(s1, m, [](auto a) { return T(1) - a * a; }, A);
            if (s2) lanes::assign(s2, m, [](auto a, auto d) { return T(-2) * a * d; }, A, s1);
            if (s3) lanes::assign(s3, m, [](auto a, auto d) { return d * (T(6) * a * a - T(2)); }, A, s1);
            return;
        case Act::sigmoid:
            lanes::assign(s1, m, [](auto a) { return a * (T(1) - a); }, A);
            if (s2) lanes::assign(s2, m, [](auto a, auto d) { return d * (T(1) - T(2) * a); }, A, s1);
            if (s3)
                lanes::assign(s3, m, [](auto a, auto d) { return d * (T(1) - T(6) * a + T(6) * a * a); }, A, s1);
            return;
        case Act::relu:
            lanes::assign(s1, m, [](auto a) { return (a > T(0)).select(C::Constant(a.size(), T(1)), C::Zero(a.size())); }, A);
            break;
        case Act::leaky_relu:
            lanes::assign(
                s1, m,
                [](auto a) { return (a > T(0)).select(C::Constant(a.size(), T(1)), C::Constant(a.size(), T(kLeakySlope))); },
                A);
            break;
        case Act::identity:
        case Act::none:
            std::fill_n(s1, m, T(1));
            break;
    }
    if (s2) std::fill_n(s2, m, T(0));
    if (s3) std::fill_n(s3, m, T(0));
}

inline bool curved(Act act) { return act == Act::tanh || act == Act::sigmoid; }

// The input layer's stream products for `rows` samples: stream a (a < k1) holds row first[a] of
// W (p wide) on every sample, the k2 streams after it zeros; stream j starts at out + j * stride.
template <class T>
inline void input_streams(const TaylorDirs& dirs, const T* W, T* out, Index rows, Index p, Index stride) {
    for (Index a = 0; a < dirs.k1(); ++a) {
        const T* w = W + dirs.first[a] * p;
        for (Index i = 0; i < rows; ++i) std::copy_n(w, p, out + a * stride + i * p);
    }
    for (Index qq = 0; qq < dirs.k2(); ++qq) std::fill_n(out + (dirs.k1() + qq) * stride, rows * p, T(0));
}

// C (rows x q) = A (rows x p) W (p x q) (+ the row b), on the calling thread.
template <class T>
inline void block_product(const T* A, const T* W, const T* b, T* C, Index rows, Index p, Index q) {
    if (q <= small::kBlockWidth) return small::block_nn<T>(q, A, W, C, rows, p, false, b);
    MatMap<T> Cm(C, rows, q);
    Cm.noalias() = CMatMap<T>(A, rows, p) * CMatMap<T>(W, p, q);
    if (b != nullptr) Cm.rowwise() += Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>>(b, q);
}

// C (rows x p) = G (rows x q) Wᵀ, W p x q.
template <class T>
inline void block_product_t(const T* G, const T* W, T* C, Index rows, Index q, Index p) {
    if (p <= small::kBlockWidth) return small::block_nn<T>(p, G, W, C, rows, q, true, static_cast<const T*>(nullptr));
    MatMap<T>(C, rows, p).noalias() = CMatMap<T>(G, rows, q) * CMatMap<T>(W, p, q).transpose();
}

// C (p x q) = Aᵀ G, A (rows x p), G (rows x q); sums = 1ᵀ G when not null.
template <class T>
inline void block_weight_product(const T* A, const T* G, T* C, T* sums, Index rows, Index p, Index q) {
    if (q <= small::kBlockWidth) return small::block_tn<T>(q, A, G, C, p, rows, sums);
    MatMap<T>(C, p, q).noalias() = CMatMap<T>(A, rows, p).transpose() * CMatMap<T>(G, rows, q);
    if (sums != nullptr) colsum<T>(G, sums, rows, q);
}

// Rows per block: about 4096 values of the widest layer (a block's streams stay in L1/L2).
inline Index taylor_block_rows(Index widest) { return std::max<Index>(8, std::min<Index>(256, 4096 / widest)); }

constexpr Index kTaylorGroups = 32;  // the backward's partial sums: at most this many groups of blocks

// One layer's activation and streams in place, on m values of each stream (stream j at
// out + j * stride): A = act(H); Ä_q = σ2 Ḣ_a Ḣ_c + σ1 Ḧ_q (before the Ḣ it reads are
// overwritten); Ȧ_a = σ1 Ḣ_a.
template <class T>
inline void forward_streams(Act act, const TaylorDirs& dirs, T* out, Index stride, Index m, T* s1, T* s2) {
    const Index k1 = dirs.k1(), k2 = dirs.k2();
    activation_forward<T>(act, out, out, m);
    if (act == Act::identity || act == Act::none) return;  // σ1 = 1, σ2 = 0: the streams pass unchanged
    sigmas<T>(act, out, s1, k2 > 0 ? s2 : nullptr, nullptr, m);
    for (Index qq = 0; qq < k2; ++qq) {
        const auto [a, c] = dirs.second[qq];
        T* hq = out + (1 + k1 + qq) * stride;
        lanes::assign(
            hq, m, [](auto hq_, auto ha, auto hc, auto d1, auto d2) { return d2 * ha * hc + d1 * hq_; }, hq,
            static_cast<const T*>(out + (1 + a) * stride), static_cast<const T*>(out + (1 + c) * stride),
            static_cast<const T*>(s1), static_cast<const T*>(s2));
    }
    for (Index a = 0; a < k1; ++a) {
        T* ha = out + (1 + a) * stride;
        lanes::assign(ha, m, [](auto h, auto d1) { return d1 * h; }, static_cast<const T*>(ha),
                      static_cast<const T*>(s1));
    }
}

// The gradients at [A'; Ȧ'; Ä'] (g, stream j at g + j * m) into those at [H; Ḣ; Ḧ], in place, on
// m values: A the layer's output, h = [Ḣ; Ḧ] (stream j at h + j * m).
//   GH = σ1 G_A + Σ_a σ2 Ḣ_a Ġ_a + Σ_q (σ3 Ḣ_a Ḣ_c + σ2 Ḧ_q) G̈_q
//   ĠH_a = σ1 Ġ_a + Σ_{q=(a,c)} σ2 Ḣ_c G̈_q + Σ_{q=(c,a)} σ2 Ḣ_c G̈_q
//   G̈H_q = σ1 G̈_q
template <class T>
inline void backward_streams(Act act, const TaylorDirs& dirs, const T* A, T* g, const T* h, Index m, T* s1, T* s2,
                             T* s3) {
    const Index k1 = dirs.k1(), k2 = dirs.k2();
    const bool curve = curved(act);
    sigmas<T>(act, A, s1, curve ? s2 : nullptr, curve && k2 > 0 ? s3 : nullptr, m);
    const T* d1 = s1;
    const T* d2 = s2;
    const T* d3 = s3;
    auto Hd = [&](Index a) { return h + a * m; };                          // Ḣ_a
    auto Hq = [&](Index qq) { return h + (k1 + qq) * m; };                 // Ḧ_q
    auto Gd = [&](Index a) { return g + (1 + a) * m; };                    // Ġ_a
    auto Gq = [&](Index qq) { return g + (1 + k1 + qq) * m; };             // G̈_q
    T* GH = g;
    lanes::assign(GH, m, [](auto x, auto y) { return y * x; }, static_cast<const T*>(GH), d1);
    if (curve) {
        for (Index a = 0; a < k1; ++a)
            lanes::assign(
                GH, m, [](auto x, auto u, auto v, auto w) { return x + u * v * w; }, static_cast<const T*>(GH), d2,
                Hd(a), static_cast<const T*>(Gd(a)));
        for (Index qq = 0; qq < k2; ++qq) {
            const auto [a, c] = dirs.second[qq];
            lanes::assign(
                GH, m,
                [](auto x, auto t3, auto t2, auto ha, auto hc, auto hq, auto gq) {
                    return x + (t3 * ha * hc + t2 * hq) * gq;
                },
                static_cast<const T*>(GH), d3, d2, Hd(a), Hd(c), Hq(qq), static_cast<const T*>(Gq(qq)));
        }
    }
    for (Index a = 0; a < k1; ++a)
        lanes::assign(Gd(a), m, [](auto x, auto y) { return y * x; }, static_cast<const T*>(Gd(a)), d1);
    if (curve) {
        for (Index qq = 0; qq < k2; ++qq) {
            const auto [a, c] = dirs.second[qq];
            auto add = [&](Index to, Index other) {
                lanes::assign(
                    Gd(to), m, [](auto x, auto t2, auto hc, auto gq) { return x + t2 * hc * gq; },
                    static_cast<const T*>(Gd(to)), d2, Hd(other), static_cast<const T*>(Gq(qq)));
            };
            add(a, c);
            add(c, a);
        }
    }
    for (Index qq = 0; qq < k2; ++qq)
        lanes::assign(Gq(qq), m, [](auto x, auto y) { return y * x; }, static_cast<const T*>(Gq(qq)), d1);
}

}  // namespace taylor_detail

// X: n x d. S[0]: (k1+k2) x n x d (the input's streams; unused when k1 = 0), S[l]: (1+k1+k2) x n
// x p_l for l = 1..L, written: block 0 the activations, then the k1 first and k2 second streams.
template <class T>
inline void taylor_forward(const std::vector<TaylorLayer<T>>& layers, const TaylorDirs& dirs, const T* X,
                           const std::vector<T*>& S, Index n, int threads) {
    using namespace taylor_detail;
    const Index k1 = dirs.k1(), k2 = dirs.k2(), s = 1 + k1 + k2, d = layers[0].p_in;
    if (k1 > 0) {  // S_0's streams: e_{first[a]} rows, then zeros
        std::fill_n(S[0], (k1 + k2) * n * d, T(0));
        for (Index a = 0; a < k1; ++a)
            for (Index i = 0; i < n; ++i) S[0][(a * n + i) * d + dirs.first[a]] = T(1);
    }
    Index widest = 1;
    for (const auto& L : layers) widest = std::max(widest, L.p_out);
    const Index R = taylor_block_rows(widest), blocks = (n + R - 1) / R;
    struct Work {
        std::vector<T> s1, s2;
    };
    std::vector<Work> work(std::size_t(std::max(1, threads)));
    parallel_for(blocks, threads, [&](int w, Index blk) {
        Work& ws = work[w];
        ws.s1.resize(R * widest), ws.s2.resize(k2 > 0 ? R * widest : 0);
        const Index r0 = blk * R, rows = std::min(R, n - r0);
        for (std::size_t l = 0; l < layers.size(); ++l) {
            const TaylorLayer<T>& L = layers[l];
            const Index p = L.p_in, q = L.p_out, stride = n * q;
            T* out = S[l + 1] + r0 * q;  // this block's rows of stream 0; stream j at + j * stride
            if (l == 0) {
                block_product<T>(X + r0 * d, L.W, L.b, out, rows, d, q);
                input_streams<T>(dirs, L.W, out + stride, rows, q, stride);
            } else {
                for (Index j = 0; j < s; ++j)  // every stream by the same W; the bias on A only
                    block_product<T>(S[l] + (j * n + r0) * p, L.W, j == 0 ? L.b : nullptr, out + j * stride, rows, p, q);
            }
            forward_streams<T>(L.act, dirs, out, stride, rows * q, ws.s1.data(), ws.s2.data());
        }
    });
}

// The weight and bias gradients through taylor_forward's network. S as taylor_forward wrote it;
// G: n x p_L, dG: k1 x n x p_L, d2G: k2 x n x p_L (nullptr: zero). dW[l]: p_l x p_{l+1}, db[l]: p_{l+1}.
template <class T>
inline void taylor_backward(const std::vector<TaylorLayer<T>>& layers, const TaylorDirs& dirs, const T* X,
                            const std::vector<const T*>& S, const T* G, const T* dG, const T* d2G,
                            const std::vector<T*>& dW, const std::vector<T*>& db, Index n, int threads) {
    using namespace taylor_detail;
    const Index k1 = dirs.k1(), k2 = dirs.k2(), s = 1 + k1 + k2, nL = layers.size(), d = layers[0].p_in;
    Index widest_out = 1, widest = d, weights = 0;
    std::vector<Index> offW(nL), offb(nL);
    for (Index l = 0; l < nL; ++l) {
        const auto& L = layers[l];
        widest_out = std::max(widest_out, L.p_out);
        widest = std::max({widest, L.p_in, L.p_out});
        offW[l] = weights, weights += L.p_in * L.p_out;
        offb[l] = weights, weights += L.p_out;
    }
    const Index R = taylor_block_rows(widest_out), blocks = (n + R - 1) / R;
    const Index groups = std::min(blocks, kTaylorGroups);
    std::vector<T> partial(std::size_t(groups * weights), T(0));  // group g's dW, db at g * weights
    struct Work {
        std::vector<T> g, g_prev, h, s1, s2, s3, dw, dbias;
    };
    std::vector<Work> work(std::size_t(std::max(1, threads)));
    parallel_for(groups, threads, [&](int w, Index grp) {
        Work& ws = work[w];
        ws.g.resize(s * R * widest), ws.g_prev.resize(s * R * widest), ws.h.resize((k1 + k2) * R * widest_out);
        ws.s1.resize(R * widest_out), ws.s2.resize(R * widest_out), ws.s3.resize(R * widest_out);
        ws.dw.resize(widest * widest_out), ws.dbias.resize(widest_out);
        T* part = partial.data() + grp * weights;
        const Index first_block = blocks * grp / groups, last_block = blocks * (grp + 1) / groups;
        for (Index blk = first_block; blk < last_block; ++blk) {
            const Index r0 = blk * R, rows = std::min(R, n - r0);
            {  // the gradients arriving at the output's streams, this block's rows, stacked compactly
                const Index q = layers[nL - 1].p_out, m = rows * q, stride = n * q;
                std::copy_n(G + r0 * q, m, ws.g.data());
                for (Index a = 0; a < k1; ++a) {
                    T* to = ws.g.data() + (1 + a) * m;
                    if (dG) std::copy_n(dG + a * stride + r0 * q, m, to); else std::fill_n(to, m, T(0));
                }
                for (Index qq = 0; qq < k2; ++qq) {
                    T* to = ws.g.data() + (1 + k1 + qq) * m;
                    if (d2G) std::copy_n(d2G + qq * stride + r0 * q, m, to); else std::fill_n(to, m, T(0));
                }
            }
            for (Index l = nL - 1; l >= 0; --l) {
                const TaylorLayer<T>& L = layers[l];
                const Index p = L.p_in, q = L.p_out, m = rows * q;
                T* g = ws.g.data();
                T* h = ws.h.data();
                if (k1 > 0) {  // [Ḣ; Ḧ] again, this block's rows
                    if (l == 0)
                        input_streams<T>(dirs, L.W, h, rows, q, m);
                    else
                        for (Index j = 1; j < s; ++j)
                            block_product<T>(S[l] + (j * n + r0) * p, L.W, nullptr, h + (j - 1) * m, rows, p, q);
                }
                backward_streams<T>(L.act, dirs, S[l + 1] + r0 * q, g, h, m, ws.s1.data(), ws.s2.data(),
                                    ws.s3.data());
                // dW += Σ_j S_jᵀ G_j over this block's rows, db += 1ᵀ GH
                T* dw = ws.dw.data();
                T* pw = part + offW[l];
                T* pb = part + offb[l];
                const Index streams = l == 0 ? 1 : s;  // the input's streams are e rows: below
                for (Index j = 0; j < streams; ++j) {
                    const T* A = l == 0 ? X + r0 * d : S[l] + (j * n + r0) * p;
                    block_weight_product<T>(A, g + j * m, dw, j == 0 ? ws.dbias.data() : nullptr, rows, p, q);
                    for (Index k = 0; k < p * q; ++k) pw[k] += dw[k];
                }
                for (Index k = 0; k < q; ++k) pb[k] += ws.dbias[k];
                if (l == 0) {  // S_0's stream a is e_{first[a]}: 1ᵀ ĠH_a onto row first[a]
                    for (Index a = 0; a < k1; ++a) {
                        colsum<T>(g + (1 + a) * m, ws.dbias.data(), rows, q);
                        T* row = pw + dirs.first[a] * q;
                        for (Index k = 0; k < q; ++k) row[k] += ws.dbias[k];
                    }
                } else {  // [G_A; Ġ; G̈] for the layer below
                    for (Index j = 0; j < s; ++j)
                        block_product_t<T>(g + j * m, L.W, ws.g_prev.data() + j * rows * p, rows, q, p);
                    std::swap(ws.g, ws.g_prev);
                }
            }
        }
    });
    // the groups' sums, added in group order
    parallel_for(nL, threads, [&](int, Index l) {
        const Index q = layers[l].p_out, size = layers[l].p_in * q;
        for (Index k = 0; k < size; ++k) {
            T v = partial[offW[l] + k];
            for (Index grp = 1; grp < groups; ++grp) v += partial[grp * weights + offW[l] + k];
            dW[l][k] = v;
        }
        for (Index k = 0; k < q; ++k) {
            T v = partial[offb[l] + k];
            for (Index grp = 1; grp < groups; ++grp) v += partial[grp * weights + offb[l] + k];
            db[l][k] = v;
        }
    });
}

}  // namespace backprop
