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

// σ1, σ2, σ3 (act', act'', act''') of an activation as expressions of its output y (an Eigen
// array expression), computed inside each elementwise pass that needs them: no buffer and no
// pass of their own. `curved`: σ2 and σ3 are not zero.
template <class T>
struct TanhSigmas {
    static constexpr bool curved = true;
    template <class E> static auto d1(const E& y) { return T(1) - y * y; }
    template <class E> static auto d2(const E& y) { return T(-2) * y * (T(1) - y * y); }
    template <class E> static auto d3(const E& y) { return (T(1) - y * y) * (T(6) * y * y - T(2)); }
};

template <class T>
struct SigmoidSigmas {
    static constexpr bool curved = true;
    template <class E> static auto d1(const E& y) { return y * (T(1) - y); }
    template <class E> static auto d2(const E& y) { return y * (T(1) - y) * (T(1) - T(2) * y); }
    template <class E> static auto d3(const E& y) { return y * (T(1) - y) * (T(1) - T(6) * y + T(6) * y * y); }
};

template <class T>
struct ReluSigmas {  // σ1 = [y > 0]; σ2 = σ3 = 0 almost everywhere
    static constexpr bool curved = false;
    template <class E> static auto d1(const E& y) {
        using C = Eigen::Array<T, Eigen::Dynamic, 1>;
        return (y > T(0)).select(C::Constant(y.size(), T(1)), C::Zero(y.size()));
    }
};

template <class T>
struct LeakyReluSigmas {  // σ1 = 1 or the slope; σ2 = σ3 = 0 almost everywhere
    static constexpr bool curved = false;
    template <class E> static auto d1(const E& y) {
        using C = Eigen::Array<T, Eigen::Dynamic, 1>;
        return (y > T(0)).select(C::Constant(y.size(), T(1)), C::Constant(y.size(), T(kLeakySlope)));
    }
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
// overwritten); Ȧ_a = σ1 Ḣ_a, with σ written from A.
template <class T>
inline void forward_streams(Act act, const TaylorDirs& dirs, T* out, Index stride, Index m) {
    const Index k1 = dirs.k1(), k2 = dirs.k2();
    activation_forward<T>(act, out, out, m);
    const T* A = out;
    with_sigmas<T>(act, [&](auto sig) {
        using S = decltype(sig);
        for (Index qq = 0; qq < k2; ++qq) {
            const auto [a, c] = dirs.second[qq];
            T* hq = out + (1 + k1 + qq) * stride;
            const T* ha = out + (1 + a) * stride;
            const T* hc = out + (1 + c) * stride;
            if constexpr (S::curved)
                lanes::assign(
                    hq, m, [](auto h, auto y, auto u, auto v) { return S::d2(y) * u * v + S::d1(y) * h; },
                    static_cast<const T*>(hq), A, ha, hc);
            else
                lanes::assign(hq, m, [](auto h, auto y) { return S::d1(y) * h; }, static_cast<const T*>(hq), A);
        }
        for (Index a = 0; a < k1; ++a) {
            T* ha = out + (1 + a) * stride;
            lanes::assign(ha, m, [](auto h, auto y) { return S::d1(y) * h; }, static_cast<const T*>(ha), A);
        }
    });
}

// The gradients at [A'; Ȧ'; Ä'] (g, stream j at g + j * m) into those at [H; Ḣ; Ḧ], in place, on
// m values: A the layer's output, h = [Ḣ; Ḧ] (stream j at h + j * m), σ written from A.
//   GH = σ1 G_A + Σ_a σ2 Ḣ_a Ġ_a + Σ_q (σ3 Ḣ_a Ḣ_c + σ2 Ḧ_q) G̈_q
//   ĠH_a = σ1 Ġ_a + Σ_{q=(a,c)} σ2 Ḣ_c G̈_q + Σ_{q=(c,a)} σ2 Ḣ_c G̈_q
//   G̈H_q = σ1 G̈_q
// (GH first: it reads the stream gradients before they are overwritten.)
template <class T>
inline void backward_streams(Act act, const TaylorDirs& dirs, const T* A, T* g, const T* h, Index m) {
    const Index k1 = dirs.k1(), k2 = dirs.k2();
    auto Hd = [&](Index a) { return h + a * m; };                      // Ḣ_a
    auto Hq = [&](Index qq) { return h + (k1 + qq) * m; };             // Ḧ_q
    auto Gd = [&](Index a) { return g + (1 + a) * m; };                // Ġ_a
    auto Gq = [&](Index qq) { return g + (1 + k1 + qq) * m; };         // G̈_q
    with_sigmas<T>(act, [&](auto sig) {
        using S = decltype(sig);
        T* GH = g;
        lanes::assign(GH, m, [](auto x, auto y) { return S::d1(y) * x; }, static_cast<const T*>(GH), A);
        if constexpr (S::curved) {
            for (Index a = 0; a < k1; ++a)
                lanes::assign(
                    GH, m, [](auto x, auto y, auto u, auto w) { return x + S::d2(y) * u * w; },
                    static_cast<const T*>(GH), A, Hd(a), static_cast<const T*>(Gd(a)));
            for (Index qq = 0; qq < k2; ++qq) {
                const auto [a, c] = dirs.second[qq];
                lanes::assign(
                    GH, m,
                    [](auto x, auto y, auto ha, auto hc, auto hq, auto gq) {
                        return x + (S::d3(y) * ha * hc + S::d2(y) * hq) * gq;
                    },
                    static_cast<const T*>(GH), A, Hd(a), Hd(c), Hq(qq), static_cast<const T*>(Gq(qq)));
            }
        }
        for (Index a = 0; a < k1; ++a)
            lanes::assign(Gd(a), m, [](auto x, auto y) { return S::d1(y) * x; }, static_cast<const T*>(Gd(a)), A);
        if constexpr (S::curved) {
            for (Index qq = 0; qq < k2; ++qq) {
                const auto [a, c] = dirs.second[qq];
                auto add = [&](Index to, Index other) {
                    lanes::assign(
                        Gd(to), m, [](auto x, auto y, auto hc, auto gq) { return x + S::d2(y) * hc * gq; },
                        static_cast<const T*>(Gd(to)), A, Hd(other), static_cast<const T*>(Gq(qq)));
                };
                add(a, c);
                add(c, a);
            }
        }
        for (Index qq = 0; qq < k2; ++qq)
            lanes::assign(Gq(qq), m, [](auto x, auto y) { return S::d1(y) * x; }, static_cast<const T*>(Gq(qq)), A);
    });
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
    parallel_for(blocks, threads, [&](int, Index blk) {
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
            forward_streams<T>(L.act, dirs, out, stride, rows * q);
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
        std::vector<T> g, g_prev, h, dw, dbias;
    };
    std::vector<Work> work(std::size_t(std::max(1, threads)));
    parallel_for(groups, threads, [&](int w, Index grp) {
        Work& ws = work[w];
        ws.g.resize(s * R * widest), ws.g_prev.resize(s * R * widest), ws.h.resize((k1 + k2) * R * widest_out);
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
                backward_streams<T>(L.act, dirs, S[l + 1] + r0 * q, g, h, m);
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
