// loss.hpp: the loss value and its gradient G = dLoss/dF in one pass over F and Y.
//
// numpy computes the residual, then the value, then the gradient (three or more passes and
// temporaries); here each row of F and Y is read once and G written once, the value accumulated
// in double on the way.
#pragma once

#include <algorithm>
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
        case Loss::sse:    // L = ½ Σ (F - Y)²,        G = F - Y
        case Loss::mse: {  // L = (1/nk) Σ (F - Y)²,   G = 2 (F - Y) / nk
            // elementwise: the n x k values as one flat run, in blocks that stay in L1
            const T scale = T(2.0 / double(size));
            constexpr Index kBlock = 4096;
            for (Index s0 = 0; s0 < size; s0 += kBlock) {
                const Index len = std::min(kBlock, size - s0);
                ArrMap<T> g(G + s0, 1, len);
                g = CArrMap<T>(F + s0, 1, len) - CArrMap<T>(Y + s0, 1, len);
                acc += double(g.square().sum());
                if (kind == Loss::mse) g *= scale;
            }
            return kind == Loss::sse ? 0.5 * acc : acc / double(size);
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
