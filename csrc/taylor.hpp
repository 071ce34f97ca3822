// taylor.hpp: the network's output and its first and second derivatives w.r.t. the inputs
// (Taylor mode), forward and backward, the whole network in one call; every layer's streams
// share ONE product.
//
// The recursion (numpy_backend._taylor_forward is the reference), per layer, with the streams
// of a layer stored one after another as one (1 + k1 + k2) x n x p buffer S = [A; Ȧ_1..Ȧ_k1;
// Ä_1..Ä_k2] (base.py allocates the saved arrays as views of it):
//
//     [H; Ḣ; Ḧ] = S W            (one product of (1+k1+k2)·n rows; the bias on the first block)
//     A' = act(H + b)   Ä'_q = σ2 ⊙ Ḣ_a ⊙ Ḣ_c + σ1 ⊙ Ḧ_q   Ȧ'_a = σ1 ⊙ Ḣ_a     (q = (a, c))
//
// with σ1, σ2, σ3 = act', act'', act''' written from the output A' (H is never kept), done in
// ONE pass over the product's result (row blocks that stay in L1: bias, activation, σ, the
// streams, in place). The input layer is the exception: S_0 = [X; e_i rows; 0], so its Ḣ_a is
// row first[a] of W on every sample and Ḧ = 0, exactly, with no product.
//
// The backward recomputes [Ḣ; Ḧ] = S[1:] W (one product), turns the gradients arriving at
// [A'; Ȧ'; Ä'] into those at [H; Ḣ; Ḧ] in one elementwise pass (the equations of
// base.taylor_backward), then
//
//     dW = Sᵀ [GH; ĠH; G̈H]        (one product over all streams: k = (1+k1+k2)·n)
//     db = 1ᵀ GH                  (the first block only: Ḣ and Ḧ carry no bias)
//     [G_A; Ġ; G̈] ← [GH; ĠH; G̈H] Wᵀ        (one product, for the layer below)
//
// (the input layer: dW = Xᵀ GH, plus 1ᵀ ĠH_a on row first[a]). Every elementwise value goes
// through lanes::assign, and which product path runs depends on sizes only, so the results do
// not depend on where the buffers start (lanes.hpp).
#pragma once

#include <algorithm>
#include <utility>
#include <vector>

#include "common.hpp"
#include "elementwise.hpp"
#include "gemm.hpp"
#include "lanes.hpp"

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

// Writes the input layer's stream products: block a (a < k1) of `out` (k1+k2 blocks of n x p)
// holds row first[a] of W on every sample, the k2 blocks after it zeros.
template <class T>
inline void input_streams(const TaylorDirs& dirs, const T* W, T* out, Index n, Index p) {
    const Index B = n * p;
    for (Index a = 0; a < dirs.k1(); ++a) {
        const T* w = W + dirs.first[a] * p;
        T* blk = out + a * B;
        for (Index i = 0; i < n; ++i) std::copy_n(w, p, blk + i * p);
    }
    std::fill_n(out + dirs.k1() * B, dirs.k2() * B, T(0));
}

}  // namespace taylor_detail

// X: n x d. S[0]: (k1+k2) x n x d (the input's streams; unused when k1 = 0), S[l]: (1+k1+k2) x n
// x p_l for l = 1..L, written: block 0 the activations, then the k1 first and k2 second streams.
template <class T>
inline void taylor_forward(const std::vector<TaylorLayer<T>>& layers, const TaylorDirs& dirs, const T* X,
                           const std::vector<T*>& S, Index n) {
    using namespace taylor_detail;
    const Index k1 = dirs.k1(), k2 = dirs.k2(), s = 1 + k1 + k2, d = layers[0].p_in;
    if (k1 > 0) {  // S_0's streams: e_{first[a]} rows, then zeros
        std::fill_n(S[0], (k1 + k2) * n * d, T(0));
        for (Index a = 0; a < k1; ++a)
            for (Index i = 0; i < n; ++i) S[0][(a * n + i) * d + dirs.first[a]] = T(1);
    }
    Index widest = 4096;
    for (const auto& L : layers) widest = std::max(widest, L.p_out);
    std::vector<T> s1(widest), s2(k2 > 0 ? widest : 0);
    for (std::size_t l = 0; l < layers.size(); ++l) {
        const TaylorLayer<T>& L = layers[l];
        const Index p = L.p_in, q = L.p_out, B = n * q;
        T* out = S[l + 1];
        if (l == 0) {
            gemm<T>(false, false, n, q, p, T(1), X, L.W, T(0), out);
            input_streams<T>(dirs, L.W, out + B, n, q);
        } else {
            gemm<T>(false, false, s * n, q, p, T(1), S[l], L.W, T(0), out);  // every stream at once
        }
        const Index rows = block_rows(q);
        for (Index r0 = 0; r0 < n; r0 += rows) {
            const Index r1 = std::min(n, r0 + rows), o = r0 * q, m = (r1 - r0) * q;
            T* A = out + o;
            for (Index i = r0; i < r1; ++i) {
                T* h = out + i * q;
                for (Index j = 0; j < q; ++j) h[j] += L.b[j];
            }
            activation_forward<T>(L.act, A, A, m);
            if (L.act == Act::identity) continue;  // σ1 = 1, σ2 = 0: the streams pass unchanged
            sigmas<T>(L.act, A, s1.data(), k2 > 0 ? s2.data() : nullptr, nullptr, m);
            for (Index qq = 0; qq < k2; ++qq) {  // before the first streams it reads are overwritten
                const auto [a, c] = dirs.second[qq];
                T* hq = out + (1 + k1 + qq) * B + o;
                lanes::assign(
                    hq, m, [](auto hq_, auto ha, auto hc, auto d1, auto d2) { return d2 * ha * hc + d1 * hq_; }, hq,
                    static_cast<const T*>(out + (1 + a) * B + o), static_cast<const T*>(out + (1 + c) * B + o),
                    static_cast<const T*>(s1.data()), static_cast<const T*>(s2.data()));
            }
            for (Index a = 0; a < k1; ++a) {
                T* ha = out + (1 + a) * B + o;
                lanes::assign(ha, m, [](auto h, auto d1) { return d1 * h; }, static_cast<const T*>(ha),
                              static_cast<const T*>(s1.data()));
            }
        }
    }
}

// The weight and bias gradients through taylor_forward's network. S as taylor_forward wrote it;
// G: n x p_L, dG: k1 x n x p_L, d2G: k2 x n x p_L (nullptr: zero). dW[l]: p_l x p_{l+1}, db[l]: p_{l+1}.
template <class T>
inline void taylor_backward(const std::vector<TaylorLayer<T>>& layers, const TaylorDirs& dirs, const T* X,
                            const std::vector<const T*>& S, const T* G, const T* dG, const T* d2G,
                            const std::vector<T*>& dW, const std::vector<T*>& db, Index n) {
    using namespace taylor_detail;
    const Index k1 = dirs.k1(), k2 = dirs.k2(), s = 1 + k1 + k2, nL = layers.size();
    Index widest = 0, widest_out = 4096;
    for (const auto& L : layers) {
        widest = std::max({widest, L.p_in, L.p_out});
        widest_out = std::max(widest_out, L.p_out);
    }
    std::vector<T> g(s * n * widest), g_prev(s * n * widest), hd((k1 + k2) * n * widest);
    std::vector<T> s1(widest_out), s2(widest_out), s3(widest_out);
    {  // the gradients arriving at the output's blocks, stacked as S is
        const Index B = n * layers[nL - 1].p_out;
        std::copy_n(G, B, g.data());
        if (k1 > 0) {
            if (dG) std::copy_n(dG, k1 * B, g.data() + B); else std::fill_n(g.data() + B, k1 * B, T(0));
        }
        if (k2 > 0) {
            if (d2G) std::copy_n(d2G, k2 * B, g.data() + (1 + k1) * B);
            else std::fill_n(g.data() + (1 + k1) * B, k2 * B, T(0));
        }
    }
    for (Index l = nL - 1; l >= 0; --l) {
        const TaylorLayer<T>& L = layers[l];
        const Index p = L.p_in, q = L.p_out, B = n * q;
        const T* A = S[l + 1];
        T* gs = g.data();
        const T* h = hd.data();
        if (k1 > 0) {  // [Ḣ; Ḧ] again
            if (l == 0)
                input_streams<T>(dirs, L.W, hd.data(), n, q);
            else
                gemm<T>(false, false, (k1 + k2) * n, q, p, T(1), S[l] + n * p, L.W, T(0), hd.data());
        }
        const bool curve = curved(L.act);
        const Index rows = block_rows(q);
        for (Index r0 = 0; r0 < n; r0 += rows) {
            const Index r1 = std::min(n, r0 + rows), o = r0 * q, m = (r1 - r0) * q;
            const T* d1 = s1.data();
            const T* d2 = s2.data();
            const T* d3 = s3.data();
            sigmas<T>(L.act, A + o, s1.data(), curve ? s2.data() : nullptr, curve && k2 > 0 ? s3.data() : nullptr, m);
            auto Hd = [&](Index a) { return h + a * B + o; };            // Ḣ_a
            auto Hq = [&](Index qq) { return h + (k1 + qq) * B + o; };   // Ḧ_q
            auto Gd = [&](Index a) { return gs + (1 + a) * B + o; };     // Ġ_a
            auto Gq = [&](Index qq) { return gs + (1 + k1 + qq) * B + o; };  // G̈_q
            T* GH = gs + o;
            // GH = σ1 G_A + Σ_a σ2 Ḣ_a Ġ_a + Σ_q (σ3 Ḣ_a Ḣ_c + σ2 Ḧ_q) G̈_q   (reads the stream
            // gradients before they are overwritten below)
            lanes::assign(GH, m, [](auto x, auto y) { return y * x; }, static_cast<const T*>(GH), d1);
            if (curve) {
                for (Index a = 0; a < k1; ++a)
                    lanes::assign(
                        GH, m, [](auto x, auto u, auto v, auto w) { return x + u * v * w; }, static_cast<const T*>(GH),
                        d2, Hd(a), static_cast<const T*>(Gd(a)));
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
            // ĠH_a = σ1 Ġ_a + Σ_{q=(a,c)} σ2 Ḣ_c G̈_q + Σ_{q=(c,a)} σ2 Ḣ_c G̈_q
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
            // G̈H_q = σ1 G̈_q
            for (Index qq = 0; qq < k2; ++qq)
                lanes::assign(Gq(qq), m, [](auto x, auto y) { return y * x; }, static_cast<const T*>(Gq(qq)), d1);
        }
        if (l == 0) {  // S_0 = [X; e rows; 0]
            gemm<T>(true, false, p, q, n, T(1), X, gs, T(0), dW[l]);
            std::vector<T> col(q);
            for (Index a = 0; a < k1; ++a) {
                colsum<T>(gs + (1 + a) * B, col.data(), n, q);
                T* row = dW[l] + dirs.first[a] * q;
                for (Index j = 0; j < q; ++j) row[j] += col[j];
            }
        } else {
            gemm<T>(true, false, p, q, s * n, T(1), S[l], gs, T(0), dW[l]);  // Σ over every stream
        }
        colsum<T>(gs, db[l], n, q);
        if (l > 0) {
            gemm<T>(false, true, s * n, p, q, T(1), gs, L.W, T(0), g_prev.data());
            std::swap(g, g_prev);
        }
    }
}

}  // namespace backprop
