// optim.hpp: the weight penalty and the optimizer updates, in place, one elementwise pass per array.
//
// Each pass reads its inputs once and writes its output once (lanes::assign: the same bits at any
// address); numpy needs a temporary per operator. Scalars are rounded to T first, as numpy does
// with Python floats against float32 arrays, so the numbers match the reference to rounding.
#pragma once

#include <cmath>

#include "common.hpp"
#include "lanes.hpp"

namespace backprop {

// dW += l1 sign(W) + l2 W; returns l1 Σ|W| + (l2/2) Σ W² (fixed-order sums in double).
template <class T>
inline double weight_penalty(const T* W, T* dW, Index size, double l1, double l2) {
    const T tl1 = T(l1), tl2 = T(l2);
    lanes::assign(dW, size, [tl1, tl2](auto g, auto w) { return g + (tl1 * w.sign() + tl2 * w); }, dW, W);
    const double abs_sum = lanes::sum<T>(size, [](auto w) { return w.abs(); }, W);
    const double square_sum = lanes::sum<T>(size, [](auto w) { return w.square(); }, W);
    return l1 * abs_sum + 0.5 * l2 * square_sum;
}

// v = μ v + g;  step = g + μ v (nesterov) or v;  param -= lr step.  No velocity: param -= lr g.
template <class T>
inline void sgd_update(T* param, const T* grad, T* velocity, Index size, double lr, double momentum,
                       bool nesterov) {
    const T tlr = T(lr), tmu = T(momentum);
    if (velocity == nullptr) {
        lanes::assign(param, size, [tlr](auto p, auto g) { return p - tlr * g; }, param, grad);
        return;
    }
    lanes::assign(velocity, size, [tmu](auto v, auto g) { return v * tmu + g; }, velocity, grad);
    if (nesterov)
        lanes::assign(
            param, size, [tlr, tmu](auto p, auto g, auto v) { return p - tlr * (g + tmu * v); }, param, grad,
            static_cast<const T*>(velocity));
    else
        lanes::assign(param, size, [tlr](auto p, auto v) { return p - tlr * v; }, param,
                      static_cast<const T*>(velocity));
}

// Adam (Kingma & Ba, Algorithm 1) in place; `step` counts from 1 (the bias corrections use it).
template <class T>
inline void adam_update(T* param, const T* grad, T* m, T* v, Index size, double lr, double beta1, double beta2,
                        double eps, long long step) {
    const T b1 = T(beta1), b2 = T(beta2), c1 = T(1 - beta1), c2 = T(1 - beta2);
    const T bc1 = T(1 - std::pow(beta1, double(step))), bc2 = T(1 - std::pow(beta2, double(step)));
    const T tlr = T(lr), teps = T(eps);
    lanes::assign(m, size, [b1, c1](auto mm, auto g) { return mm * b1 + c1 * g; }, m, grad);
    lanes::assign(v, size, [b2, c2](auto vv, auto g) { return vv * b2 + c2 * g * g; }, v, grad);
    lanes::assign(
        param, size,
        [tlr, bc1, bc2, teps](auto p, auto mm, auto vv) { return p - tlr * (mm / bc1) / ((vv / bc2).sqrt() + teps); },
        param, static_cast<const T*>(m), static_cast<const T*>(v));
}

}  // namespace backprop
