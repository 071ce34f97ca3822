// elementwise.hpp: activations, their derivatives, the bias-sum reduction and dropout.
//
// Every derivative is a function of the activation's output A (tanh' = 1 - A⊙A, ...), as in
// base.py. bias_activation fuses the bias into the activation so that a dense layer touches its
// n x p output once after the product instead of twice. Every elementwise pass goes through
// lanes::assign, so a value does not depend on where the buffers start (lanes.hpp).
#pragma once

#include <algorithm>

#include "common.hpp"
#include "lanes.hpp"

namespace backprop {

// A = act(H), elementwise over `size` values; the same formulas as numpy_backend.activation_forward.
// A may be exactly H (in place).
template <class T>
inline void activation_forward(Act a, const T* H, T* A, Index size) {
    switch (a) {
        case Act::tanh: return lanes::assign(A, size, [](auto h) { return h.tanh(); }, H);
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
