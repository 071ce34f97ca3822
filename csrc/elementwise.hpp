// elementwise.hpp: activations, their derivatives, the bias-sum reduction and dropout.
//
// Every derivative is a function of the activation's output A (tanh' = 1 - A⊙A, ...), as in
// base.py. bias_activation fuses the bias into the activation so that a dense layer touches its
// n x p output once after the product instead of twice. Every elementwise pass goes through
// lanes::assign, so a value does not depend on where the buffers start (lanes.hpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "common.hpp"
#include "lanes.hpp"

namespace backprop {

// tanh of doubles in registers. Eigen 3.4 has no vector tanh for doubles: it calls the C library
// one value at a time, which was half of a float64 physics-informed training step. Here
//     tanh x = sign(x) (-t) / (t + 2),    t = expm1(-2|x|)
// where -t = 1 - e^-2|x| comes from expm1 without cancellation and t + 2 = 1 + e^-2|x| is in
// (1, 2]; expm1 is Kahan's formula over Eigen's vector exp and log. Within 6 units in the last
// place of the C library's tanh (2 million values from 1e-3 to 30, both signs); where Eigen has
// no vector exp and log for doubles, std::tanh value by value.
struct TanhDouble {
    double operator()(double x) const { return std::tanh(x); }
    template <class P>
    P packetOp(const P& x) const {
        using namespace Eigen::internal;
        const P ax = pabs(x);
        const P t = generic_expm1(pnegate(padd(ax, ax)));
        const P z = pdiv(pnegate(t), padd(t, pset1<P>(2.0)));
        return por(z, pand(x, pset1<P>(-0.0)));  // the sign of x (z >= 0)
    }
};

}  // namespace backprop

template <>
struct Eigen::internal::functor_traits<backprop::TanhDouble> {
    enum {
        Cost = 60 * NumTraits<double>::MulCost,
        PacketAccess = packet_traits<double>::HasExp && packet_traits<double>::HasLog && packet_traits<double>::HasDiv
    };
};

namespace backprop {

// A = act(H), elementwise over `size` values; the same formulas as numpy_backend.activation_forward.
// A may be exactly H (in place).
template <class T>
inline void activation_forward(Act a, const T* H, T* A, Index size) {
    switch (a) {
        case Act::tanh:
            if constexpr (std::is_same_v<T, double>)
                return lanes::assign(A, size, [](auto h) { return h.unaryExpr(TanhDouble{}); }, H);
            else
                return lanes::assign(A, size, [](auto h) { return h.tanh(); }, H);
        case Act::sigmoid: return lanes::assign(A, size, [](auto h) { return (T(1) + (-h).exp()).inverse(); }, H);
        case Act::relu: return lanes::assign(A, size, [](auto h) { return h.max(T(0)); }, H);
        case Act::leaky_relu:
            return lanes::assign(A, size, [](auto h) { return (h > T(0)).select(h, T(kLeakySlope) * h); }, H);
        case Act::identity:
        case Act::none:
            if (A != H) std::copy_n(H, size, A);
            return;
    }
}

// Rows per block so that a block (at most ~4096 values) stays in L1 between two sweeps over it.
inline Index block_rows(Index p) { return p >= 4096 ? 1 : 4096 / p; }

// A = act(H + b), b broadcast over the n rows: the bias and the activation in one pass over
// memory. Each block of rows gets the bias added (an exact IEEE add, the same in any loop), then
// the activation applied to the block as one flat run while it is still in L1. H and A may be the
// same buffer: dense_forward finishes in place.
template <class T>
inline void bias_activation(Act a, const T* H, const T* b, T* A, Index n, Index p) {
    const Index rows = block_rows(p);
    for (Index r0 = 0; r0 < n; r0 += rows) {
        const Index r1 = std::min(n, r0 + rows);
        for (Index i = r0; i < r1; ++i) {
            const T* h = H + i * p;
            T* out = A + i * p;
            for (Index j = 0; j < p; ++j) out[j] = h[j] + b[j];
        }
        if (a == Act::identity || a == Act::none) continue;
        T* block = A + r0 * p;
        activation_forward<T>(a, block, block, (r1 - r0) * p);
    }
}

// G = dA ⊙ act'(A), elementwise. G may be exactly dA (in place), not A.
template <class T>
inline void activation_backward(Act a, const T* dA, const T* A, T* G, Index size) {
    switch (a) {
        case Act::tanh:
            return lanes::assign(G, size, [](auto d, auto y) { return d * (T(1) - y * y); }, dA, A);
        case Act::sigmoid:
            return lanes::assign(G, size, [](auto d, auto y) { return d * (y * (T(1) - y)); }, dA, A);
        case Act::relu:
            return lanes::assign(G, size, [](auto d, auto y) { return (y > T(0)).select(d, T(0)); }, dA, A);
        case Act::leaky_relu:
            return lanes::assign(
                G, size, [](auto d, auto y) { return (y > T(0)).select(d, d * T(kLeakySlope)); }, dA, A);
        case Act::identity:
        case Act::none:
            if (G != dA) std::copy_n(dA, size, G);
            return;
    }
}

// db = 1ᵀ G: rows added in order (numpy's order for sum(axis=0) on a C array), vectorized along a
// row; the order depends on n and p only.
template <class T>
inline void colsum(const T* G, T* db, Index n, Index p) {
    for (Index j = 0; j < p; ++j) db[j] = G[j];
    for (Index i = 1; i < n; ++i) {
        const T* row = G + i * p;
        for (Index j = 0; j < p; ++j) db[j] += row[j];
    }
}

// out = A ⊙ M (the inverted-dropout mask; the same kernel forward and backward). out may be
// exactly A (in place), not M.
template <class T>
inline void dropout(const T* A, const T* M, T* out, Index size) {
    lanes::assign(out, size, [](auto a, auto m) { return a * m; }, A, M);
}

}  // namespace backprop
