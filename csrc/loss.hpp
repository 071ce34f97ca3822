// loss.hpp: the loss value and its gradient G = dLoss/dF in one pass over F and Y.
//
// numpy computes the residual, then the value, then the gradient (three or more passes and
// temporaries); here each row of F and Y is read once and G written once, the value accumulated
// in double on the way.
#pragma once

#include <cmath>

#include "common.hpp"
#include "elementwise.hpp"

namespace backprop {

// Returns the loss of F (n x k) against Y (n x k) and writes G = dLoss/dF (n x k).
template <class T>
inline double loss(Loss kind, const T* F, const T* Y, T* G, Index n, Index k) {
    const Index size = n * k;
    double acc = 0.0;
    switch (kind) {
        case Loss::sse: {  // L = ½ Σ (F - Y)²,  G = F - Y
            for (Index i = 0; i < n; ++i) {
                ArrMap<T> g(G + i * k, 1, k);
                g = CArrMap<T>(F + i * k, 1, k) - CArrMap<T>(Y + i * k, 1, k);
                acc += double(g.square().sum());
            }
            return 0.5 * acc;
        }
        case Loss::mse: {  // L = (1/nk) Σ (F - Y)²,  G = 2 (F - Y) / nk
            const T scale = T(2.0 / double(size));
            for (Index i = 0; i < n; ++i) {
                ArrMap<T> g(G + i * k, 1, k);
                g = CArrMap<T>(F + i * k, 1, k) - CArrMap<T>(Y + i * k, 1, k);
                acc += double(g.square().sum());
                g *= scale;
            }
            return acc / double(size);
        }
        case Loss::cross_entropy: {  // L = -(1/n) Σ Y ⊙ log softmax(F),  G = (softmax(F) - Y) / n
            const T tn = T(n);
            for (Index i = 0; i < n; ++i) {
                CArrMap<T> f(F + i * k, 1, k), y(Y + i * k, 1, k);
                ArrMap<T> g(G + i * k, 1, k);
                const T fmax = f.maxCoeff();
                g = f - fmax;                                  // Z
                const T logsum = std::log(g.exp().sum());
                g -= logsum;                                   // log P
                acc += double((y * g).sum());
                g = (g.exp() - y) / tn;                        // (P - Y) / n
            }
            return -acc / double(n);
        }
        case Loss::bce: {  // L = (1/nk) Σ [max(F,0) - Y F + log(1+exp(-|F|))],  G = (σ(F) - Y) / nk
            const T tsize = T(size);
            for (Index i = 0; i < n; ++i) {
                CArrMap<T> f(F + i * k, 1, k), y(Y + i * k, 1, k);
                ArrMap<T> g(G + i * k, 1, k);
                acc += double((f.max(T(0)) - y * f + (-f.abs()).exp().log1p()).sum());
                g = ((T(1) + (-f).exp()).inverse() - y) / tsize;
            }
            return acc / double(size);
        }
    }
    return 0.0;
}

}  // namespace backprop
