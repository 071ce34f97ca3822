// elementwise.hpp: activations, their derivatives, the bias-sum reduction and dropout.
//
// Every derivative is a function of the activation's output A (tanh' = 1 - A⊙A, ...), as in
// base.py. The fused variants (bias + activation, derivative + column sum) exist so that a dense
// layer touches its n x p output once after the product instead of two or three times.
#pragma once

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

// A = act(H + b), b broadcast over the n rows: the bias and the activation in one pass over H.
// (H and A may be the same buffer: dense_forward writes the product into A and finishes in place.)
template <class T>
inline void bias_activation(Act a, const T* H, const T* b, T* A, Index n, Index p) {
    CArrMap<T> Hm(H, n, p);
    ArrMap<T> Am(A, n, p);
    CRowMap<T> bm(b, p);
    if (n == 1) {
        ArrMap<T> row(A, 1, p);
        act_apply_expr<T>(a, CArrMap<T>(H, 1, p) + CArrMap<T>(b, 1, p), row);
        return;
    }
    act_apply_expr<T>(a, Hm.rowwise() + bm, Am);
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
    RowMap<T> out(db, p);
    out = CRowMap<T>(G, p);
    for (Index i = 1; i < n; ++i) out += CRowMap<T>(G + i * p, p);
}

// G ⊙= act'(A) row by row, and db = 1ᵀ G accumulated in the same sweep (used by the fused step,
// where the G of one layer is the next layer's bias gradient: one pass instead of two).
template <class T>
inline void activation_backward_colsum(Act a, T* G, const T* A, T* db, Index n, Index p) {
    RowMap<T> acc(db, p);
    for (Index i = 0; i < n; ++i) {
        ArrMap<T> row(G + i * p, 1, p);
        act_grad_expr<T>(a, CArrMap<T>(G + i * p, 1, p), CArrMap<T>(A + i * p, 1, p), row);
        if (i == 0)
            acc = CRowMap<T>(G, p);
        else
            acc += CRowMap<T>(G + i * p, p);
    }
}

// out = A ⊙ M (the inverted-dropout mask; the same kernel forward and backward).
template <class T>
inline void dropout(const T* A, const T* M, T* out, Index size) {
    VecMap<T>(out, size) = CVecMap<T>(A, size) * CVecMap<T>(M, size);
}

}  // namespace backprop
