// elementwise.hpp: activations, their derivatives, the bias-sum reduction and dropout.
//
// Every derivative is a function of the activation's output A (tanh' = 1 - A⊙A, ...), as in
// base.py. bias_activation fuses the bias into the activation so that a dense layer touches its
// n x p output once after the product instead of twice.
#pragma once

#include <algorithm>

#include "common.hpp"

namespace backprop {

template <class T>
using ArrRM = Eigen::Array<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using ArrMap = Eigen::Map<ArrRM<T>>;
template <class T>
using CArrMap = Eigen::Map<const ArrRM<T>>;

// act(X) for an Eigen array expression X; the same formulas as numpy_backend.activation_forward.
template <class T, class E>
inline void act_apply_expr(Act a, const E& x, ArrMap<T>& out) {
    switch (a) {
        case Act::tanh: out = x.tanh(); break;
        case Act::sigmoid: out = (T(1) + (-x).exp()).inverse(); break;
        case Act::relu: out = x.max(T(0)); break;
        case Act::leaky_relu: out = (x > T(0)).select(x, T(kLeakySlope) * x); break;
        case Act::identity:
        case Act::none: out = x; break;
    }
}

// A = act(H), elementwise over `size` values (H and A may be the same buffer).
template <class T>
inline void activation_forward(Act a, const T* H, T* A, Index size) {
    ArrMap<T> out(A, 1, size);
    act_apply_expr<T>(a, CArrMap<T>(H, 1, size), out);
}

// Rows per block so that a block (at most ~4096 values) stays in L1 between two sweeps over it.
inline Index block_rows(Index p) { return p >= 4096 ? 1 : 4096 / p; }

// A = act(H + b), b broadcast over the n rows: the bias and the activation in one pass over
// memory. Each block of rows gets the bias added, then the activation applied to the block as one
// flat vector (Eigen's vectorized tanh/exp need long contiguous runs, which 10-wide rows are not)
// while it is still in L1. H and A may be the same buffer: dense_forward finishes in place.
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
        ArrMap<T> block(A + r0 * p, 1, (r1 - r0) * p);
        act_apply_expr<T>(a, block, block);
    }
}

// act'(A) ⊙ dA for an Eigen expression pair, written into out.
template <class T, class EdA, class EA>
inline void act_grad_expr(Act a, const EdA& dA, const EA& A, ArrMap<T>& out) {
    switch (a) {
        case Act::tanh: out = dA * (T(1) - A * A); break;
        case Act::sigmoid: out = dA * (A * (T(1) - A)); break;
        case Act::relu: out = (A > T(0)).select(dA, T(0)); break;
        case Act::leaky_relu: out = (A > T(0)).select(dA, dA * T(kLeakySlope)); break;
        case Act::identity:
        case Act::none: out = dA; break;
    }
}

// G = dA ⊙ act'(A), elementwise (G may be dA's buffer).
template <class T>
inline void activation_backward(Act a, const T* dA, const T* A, T* G, Index size) {
    ArrMap<T> out(G, 1, size);
    act_grad_expr<T>(a, CArrMap<T>(dA, 1, size), CArrMap<T>(A, 1, size), out);
}

// db = 1ᵀ G: rows added in order (numpy's order for sum(axis=0) on a C array), vectorized along a row.
template <class T>
inline void colsum(const T* G, T* db, Index n, Index p) {
    for (Index j = 0; j < p; ++j) db[j] = G[j];
    for (Index i = 1; i < n; ++i) {
        const T* row = G + i * p;
        for (Index j = 0; j < p; ++j) db[j] += row[j];
    }
}

// out = A ⊙ M (the inverted-dropout mask; the same kernel forward and backward).
template <class T>
inline void dropout(const T* A, const T* M, T* out, Index size) {
    VecMap<T>(out, size) = CVecMap<T>(A, size) * CVecMap<T>(M, size);
}

}  // namespace backprop
