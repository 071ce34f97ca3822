// taylor.hpp: the network's output and its first and second derivatives w.r.t. the inputs
// (Taylor mode), forward and backward, the whole network in one call, in blocks of rows that
// stay in cache, on the backend's threads.
//
// The recursion (numpy_backend._taylor_forward is the reference), per layer, with the streams
// of a layer one after another in one (1 + k1 + k2) x n x p buffer (base.py allocates the saved
// arrays as views of it), S = [A; Ȧ_1..Ȧ_k1; Ä_1..Ä_k2] the inputs of the next layer:
//
//     [H; Ḣ; Ḧ] = S W            (the bias on the first block only)
//     A' = act(H)   Ä'_q = σ2 ⊙ Ḣ_a ⊙ Ḣ_c + σ1 ⊙ Ḧ_q   Ȧ'_a = σ1 ⊙ Ḣ_a     (q = (a, c))
//
// with σ1, σ2, σ3 = act', act'', act''' written from the output A' (H is never kept). The input
// layer is the exception: S_0 = [X; e_i rows; 0], so its Ḣ_a is row first[a] of W on every sample
// and Ḧ = 0, exactly, with no product.
//
// The forward keeps each hidden layer's streams as they are before the activation, [Ḣ; Ḧ] (the
// backward needs them; [Ȧ; Ä] are one elementwise pass from them and A, where [Ḣ; Ḧ] from [Ȧ; Ä]
// would take a product), and the last layer's after it (the results). The backward, per layer
// from the last, turns the gradients arriving at [A'; Ȧ'; Ä'] into those at [H; Ḣ; Ḧ] (the
// equations of base.taylor_backward), then
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
    if (q <= small::max_width<T>()) return small::nn_dispatch<T, 1>(q, A, W, C, rows, p, false, b);
    MatMap<T> Cm(C, rows, q);
    Cm.noalias() = CMatMap<T>(A, rows, p) * CMatMap<T>(W, p, q);
    if (b != nullptr) Cm.rowwise() += Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>>(b, q);
}

// C (rows x p) = G (rows x q) Wᵀ, W p x q.
template <class T>
inline void block_product_t(const T* G, const T* W, T* C, Index rows, Index q, Index p) {
    if (p <= small::max_width<T>())
        return small::nn_dispatch<T, 1>(p, G, W, C, rows, q, true, static_cast<const T*>(nullptr));
    MatMap<T>(C, rows, p).noalias() = CMatMap<T>(G, rows, q) * CMatMap<T>(W, p, q).transpose();
}

// C (p x q) = Aᵀ G, A (rows x p), G (rows x q); sums = 1ᵀ G when not null.
template <class T>
inline void block_weight_product(const T* A, const T* G, T* C, T* sums, Index rows, Index p, Index q) {
    if (q <= small::max_width<T>()) return small::tn_dispatch<T, 1>(q, A, G, C, p, rows, sums);
    MatMap<T>(C, p, q).noalias() = CMatMap<T>(A, rows, p).transpose() * CMatMap<T>(G, rows, q);
    if (sums != nullptr) colsum<T>(G, sums, rows, q);
}

// Rows per block: about 4096 values of the widest layer (a block's streams stay in L1/L2).
inline Index taylor_block_rows(Index widest) { return std::max<Index>(8, std::min<Index>(256, 4096 / widest)); }

constexpr Index kTaylorGroups = 32;  // the backward's partial sums: at most this many groups of blocks

// The derivative streams through one activation, on m values of each stream: from the
// pre-activation streams [Ḣ; Ḧ] (stream j at pre + j * pre_stride) and the layer's output A,
//     Ä_q = σ2 Ḣ_a Ḣ_c + σ1 Ḧ_q,    Ȧ_a = σ1 Ḣ_a        (σ written from A)
// into post (stream j at post + j * post_stride). post may be pre itself (in place: the second
// streams are written first, while the Ḣ they read are still there).
template <class T>
inline void activate_streams(Act act, const TaylorDirs& dirs, const T* A, const T* pre, Index pre_stride, T* post,
                             Index post_stride, Index m) {
    const Index k1 = dirs.k1(), k2 = dirs.k2();
    auto Pre = [&](Index j) { return pre + j * pre_stride; };
    auto Post = [&](Index j) { return post + j * post_stride; };
    if (act == Act::identity || act == Act::none) {  // σ1 = 1, σ2 = 0: unchanged
        if (post != pre)
            for (Index j = 0; j < k1 + k2; ++j) std::copy_n(Pre(j), m, Post(j));
        return;
    }
    with_sigmas<T>(act, [&](auto sig) {
        using S = decltype(sig);
        for (Index qq = 0; qq < k2; ++qq) {
            const auto [a, c] = dirs.second[qq];
            if constexpr (S::curved)
                lanes::assign(
                    Post(k1 + qq), m, [](auto h, auto y, auto u, auto v) { return S::d2(y) * u * v + S::d1(y) * h; },
                    Pre(k1 + qq), A, Pre(a), Pre(c));
            else
                lanes::assign(Post(k1 + qq), m, [](auto h, auto y) { return S::d1(y) * h; }, Pre(k1 + qq), A);
        }
        for (Index a = 0; a < k1; ++a)
            lanes::assign(Post(a), m, [](auto h, auto y) { return S::d1(y) * h; }, Pre(a), A);
    });
}

// The gradients at [A'; Ȧ'; Ä'] (g, stream j at g + j * m) into those at [H; Ḣ; Ḧ], in place, on
// m values: A the layer's output, h = [Ḣ; Ḧ] (stream j at h + j * h_stride), σ written from A.
//   GH = σ1 G_A + Σ_a σ2 Ḣ_a Ġ_a + Σ_q (σ3 Ḣ_a Ḣ_c + σ2 Ḧ_q) G̈_q
//   ĠH_a = σ1 Ġ_a + Σ_{q=(a,c)} σ2 Ḣ_c G̈_q + Σ_{q=(c,a)} σ2 Ḣ_c G̈_q
//   G̈H_q = σ1 G̈_q
// (GH first: it reads the stream gradients before they are overwritten.)
template <class T>
inline void backward_streams(Act act, const TaylorDirs& dirs, const T* A, T* g, const T* h, Index h_stride,
                             Index m) {
    const Index k1 = dirs.k1(), k2 = dirs.k2();
    auto Hd = [&](Index a) { return h + a * h_stride; };               // Ḣ_a
    auto Hq = [&](Index qq) { return h + (k1 + qq) * h_stride; };      // Ḧ_q
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

// X: n x d. S[0]: (k1+k2) x n x d, the input's streams (e rows, then zeros; unused when k1 = 0).
// S[l], l = 1..L: (1+k1+k2) x n x p_l, written: block 0 the layer's output A_l, then its k1 first
// and k2 second streams, AFTER the activation for the last layer (Ȧ_L, Ä_L: the results) and
// BEFORE it for the hidden layers (Ḣ_l, Ḧ_l: the backward needs them, and Ȧ_l, Ä_l are one
// elementwise pass from them and A_l, where a product would be needed the other way round).
template <class T>
inline void taylor_forward(const std::vector<TaylorLayer<T>>& layers, const TaylorDirs& dirs, const T* X,
                           const std::vector<T*>& S, Index n, int threads) {
    using namespace taylor_detail;
    const Index k1 = dirs.k1(), k2 = dirs.k2(), k = k1 + k2, d = layers[0].p_in, nL = layers.size();
    if (k1 > 0) {  // S_0's streams: e_{first[a]} rows, then zeros
        std::fill_n(S[0], k * n * d, T(0));
        for (Index a = 0; a < k1; ++a)
            for (Index i = 0; i < n; ++i) S[0][(a * n + i) * d + dirs.first[a]] = T(1);
    }
    Index widest = 1;
    for (const auto& L : layers) widest = std::max(widest, L.p_out);
    const Index R = taylor_block_rows(widest), blocks = (n + R - 1) / R;
    struct Work {
        std::vector<T> post, next;  // a hidden layer's [Ȧ; Ä] for this block's rows, compact
    };
    std::vector<Work> work(std::size_t(std::max(1, threads)));
    parallel_for(blocks, threads, [&](int w, Index blk) {
        Work& ws = work[w];
        ws.post.resize(k * R * widest), ws.next.resize(k * R * widest);
        const Index r0 = blk * R, rows = std::min(R, n - r0);
        for (Index l = 0; l < nL; ++l) {
            const TaylorLayer<T>& L = layers[l];
            const Index p = L.p_in, q = L.p_out, stride = n * q, m = rows * q;
            T* out = S[l + 1] + r0 * q;  // this block's rows of stream 0; stream j at + j * stride
            if (l == 0) {
                block_product<T>(X + r0 * d, L.W, L.b, out, rows, d, q);
                input_streams<T>(dirs, L.W, out + stride, rows, q, stride);
            } else {  // every stream by the same W; the bias on A only
                block_product<T>(S[l] + r0 * p, L.W, L.b, out, rows, p, q);
                for (Index j = 0; j < k; ++j)
                    block_product<T>(ws.post.data() + j * rows * p, L.W, nullptr, out + (1 + j) * stride, rows, p, q);
            }
            activation_forward<T>(L.act, out, out, m);
            if (l == nL - 1) {  // the results, in place
                activate_streams<T>(L.act, dirs, out, out + stride, stride, out + stride, stride, m);
            } else {  // Ḣ, Ḧ stay saved; Ȧ, Ä for the next layer's product
                activate_streams<T>(L.act, dirs, out, out + stride, stride, ws.next.data(), m, m);
                std::swap(ws.post, ws.next);
            }
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
    const Index k1 = dirs.k1(), k2 = dirs.k2(), k = k1 + k2, s = 1 + k, nL = layers.size(), d = layers[0].p_in;
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
        std::vector<T> g, g_prev, post, h, dw, dbias;
    };
    std::vector<Work> work(std::size_t(std::max(1, threads)));
    parallel_for(groups, threads, [&](int w, Index grp) {
        Work& ws = work[w];
        ws.g.resize(s * R * widest), ws.g_prev.resize(s * R * widest), ws.post.resize(k * R * widest);
        ws.h.resize(k * R * widest_out), ws.dw.resize(widest * widest_out), ws.dbias.resize(widest_out);
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
                const Index p = L.p_in, q = L.p_out, m = rows * q, stride = n * q;
                T* g = ws.g.data();
                // the layer's inputs [A; Ȧ; Ä] for this block: X and e rows, or A_{l-1} saved and
                // [Ȧ; Ä] from the saved Ḣ_{l-1}, Ḧ_{l-1} (compact in ws.post)
                const T* A_in = l == 0 ? X + r0 * d : S[l] + r0 * p;
                if (l > 0 && k > 0)
                    activate_streams<T>(layers[l - 1].act, dirs, A_in, A_in + n * p, n * p, ws.post.data(),
                                        rows * p, rows * p);
                // the layer's pre-activation streams [Ḣ; Ḧ]: saved, but for the last layer, whose
                // saved streams are after its activation: the same for identity, else again
                const T* h = S[l + 1] + r0 * q + stride;
                Index h_stride = stride;
                const Act act_out = L.act;
                if (l == nL - 1 && k > 0 && act_out != Act::identity && act_out != Act::none) {
                    if (l == 0)
                        input_streams<T>(dirs, L.W, ws.h.data(), rows, q, m);
                    else
                        for (Index j = 0; j < k; ++j)
                            block_product<T>(ws.post.data() + j * rows * p, L.W, nullptr, ws.h.data() + j * m, rows,
                                             p, q);
                    h = ws.h.data(), h_stride = m;
                }
                backward_streams<T>(L.act, dirs, S[l + 1] + r0 * q, g, h, h_stride, m);
                // dW += Σ_j S_jᵀ G_j over this block's rows, db += 1ᵀ GH
                T* dw = ws.dw.data();
                T* pw = part + offW[l];
                T* pb = part + offb[l];
                block_weight_product<T>(A_in, g, dw, ws.dbias.data(), rows, p, q);
                for (Index i = 0; i < p * q; ++i) pw[i] += dw[i];
                for (Index i = 0; i < q; ++i) pb[i] += ws.dbias[i];
                if (l == 0) {  // S_0's stream a is e_{first[a]}: 1ᵀ ĠH_a onto row first[a]
                    for (Index a = 0; a < k1; ++a) {
                        colsum<T>(g + (1 + a) * m, ws.dbias.data(), rows, q);
                        T* row = pw + dirs.first[a] * q;
                        for (Index i = 0; i < q; ++i) row[i] += ws.dbias[i];
                    }
                } else {
                    for (Index j = 0; j < k; ++j) {
                        block_weight_product<T>(ws.post.data() + j * rows * p, g + (1 + j) * m, dw, nullptr, rows, p, q);
                        for (Index i = 0; i < p * q; ++i) pw[i] += dw[i];
                    }
                    // [G_A; Ġ; G̈] for the layer below
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
        for (Index i = 0; i < size; ++i) {
            T v = partial[offW[l] + i];
            for (Index grp = 1; grp < groups; ++grp) v += partial[grp * weights + offW[l] + i];
            dW[l][i] = v;
        }
        for (Index i = 0; i < q; ++i) {
            T v = partial[offb[l] + i];
            for (Index grp = 1; grp < groups; ++grp) v += partial[grp * weights + offb[l] + i];
            db[l][i] = v;
        }
    });
}

}  // namespace backprop
