// optim.hpp: the weight penalty and the optimizer updates, in place, one vectorized loop each.
//
// Each update reads the gradient and the state once and writes parameter and state once;
// numpy needs a temporary per operator. Scalars are rounded to T first, as numpy does with
// Python floats against float32 arrays, so the numbers match the reference.
#pragma once

#include <cmath>

#include "common.hpp"

namespace backprop {

// dW += l1 sign(W) + l2 W; returns l1 Σ|W| + (l2/2) Σ W².
template <class T>
inline double weight_penalty(const T* W, T* dW, Index size, double l1, double l2) {
    CVecMap<T> w(W, size);
    VecMap<T> g(dW, size);
    const T tl1 = T(l1), tl2 = T(l2);
    g += tl1 * w.sign() + tl2 * w;
    return l1 * double(w.abs().sum()) + 0.5 * l2 * double(w.square().sum());
}

// v = μ v + g;  step = g + μ v (nesterov) or v;  param -= lr step.  No velocity: param -= lr g.
template <class T>
inline void sgd_update(T* param, const T* grad, T* velocity, Index size, double lr, double momentum,
                       bool nesterov) {
    VecMap<T> p(param, size);
    CVecMap<T> g(grad, size);
    const T tlr = T(lr), tmu = T(momentum);
    if (velocity == nullptr) {
        p -= tlr * g;
        return;
    }
    VecMap<T> v(velocity, size);
    v = v * tmu + g;
    if (nesterov)
        p -= tlr * (g + tmu * v);
    else
        p -= tlr * v;
}

// Adam (Kingma & Ba, Algorithm 1, step counted from 1), in place.
template <class T>
inline void adam_update(T* param, const T* grad, T* m, T* v, Index size, double lr, double beta1,
                        double beta2, double eps, long long step) {
    VecMap<T> p(param, size), mm(m, size), vv(v, size);
    CVecMap<T> g(grad, size);
    const T b1 = T(beta1), b2 = T(beta2), c1 = T(1 - beta1), c2 = T(1 - beta2);
    const T bc1 = T(1 - std::pow(beta1, double(step))), bc2 = T(1 - std::pow(beta2, double(step)));
    const T tlr = T(lr), teps = T(eps);
    mm = mm * b1 + c1 * g;
    vv = vv * b2 + c2 * g * g;
    p -= tlr * (mm / bc1) / ((vv / bc2).sqrt() + teps);
}

}  // namespace backprop
