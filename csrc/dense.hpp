// dense.hpp: one dense layer forward and backward, the product fused with its elementwise work.
//
// Forward: the product A W is written straight into the output buffer, then ONE pass adds the
// bias and applies the activation in place (H is never stored: every derivative is taken from A).
// Backward: dW = A_prevᵀ G and G_prev = G Wᵀ are two products; the derivative Hadamard
// act'(A_prev) ⊙ (G Wᵀ) is applied in place in the one pass that follows the second product.
#pragma once

#include "common.hpp"
#include "elementwise.hpp"
#include "gemm.hpp"

namespace backprop {

// A_next (n x p_out) = act(A (n x p_in) W (p_in x p_out) + b).
template <class T>
inline void dense_forward(const T* A, const T* W, const T* b, Act act, T* A_next, Index n, Index p_in,
                          Index p_out) {
    if (small::dense_product<T>(A, W, b, A_next, n, p_in, p_out)) {  // bias added in the product
        if (act != Act::identity) activation_forward<T>(act, A_next, A_next, n * p_out);
        return;
    }
    gemm<T>(false, false, n, p_out, p_in, T(1), A, W, T(0), A_next);
    bias_activation<T>(act, A_next, b, A_next, n, p_out);
}

// dW = A_prevᵀ G and db = 1ᵀ G: for narrow layers in one sweep over G (small_gemm.hpp's tn),
// else a product and a column sum.
template <class T>
inline void weight_grads(const T* A_prev, const T* G, T* dW, T* db, Index n, Index p_in, Index p_out) {
    if (small::weight_grads<T>(A_prev, G, dW, db, n, p_in, p_out)) return;
    gemm<T>(true, false, p_in, p_out, n, T(1), A_prev, G, T(0), dW);
    colsum<T>(G, db, n, p_out);
}

// dW = A_prevᵀ G, db = 1ᵀ G, and (if G_prev) G_prev = act_prev'(A_prev) ⊙ (G Wᵀ).
// act_prev == Act::none: G_prev = G Wᵀ (A_prev is the input X or a dropout-masked activation).
template <class T>
inline void dense_backward(const T* G, const T* A_prev, const T* W, Act act_prev, T* dW, T* db, T* G_prev,
                           Index n, Index p_in, Index p_out) {
    weight_grads<T>(A_prev, G, dW, db, n, p_in, p_out);
    if (G_prev == nullptr) return;
    gemm<T>(false, true, n, p_in, p_out, T(1), G, W, T(0), G_prev);
    if (act_prev != Act::none && act_prev != Act::identity)
        activation_backward<T>(act_prev, G_prev, A_prev, G_prev, n * p_in);
}

}  // namespace backprop
