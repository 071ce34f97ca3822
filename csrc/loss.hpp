// loss.hpp: the loss value and its gradient G = dLoss/dF.
//
// The gradient is one elementwise pass (lanes::assign) and the value one fixed-order sum in double
// (lanes::sum), so both are the same at any buffer address. Cross entropy also needs each row's max
// and the log of each row's sum of exponentials: the max is exact, the row sums are added in double
// in index order, and the log is taken in double (numpy takes both in the array's dtype, which
// differs from this by rounding only). G must not overlap F or Y.
#pragma once

#include <algorithm>
#include <cmath>

#include "common.hpp"
#include "lanes.hpp"

namespace backprop {

// Returns the loss of F (n x k) against Y (n x k) and writes G = dLoss/dF (n x k).
template <class T>
inline double loss(Loss kind, const T* F, const T* Y, T* G, Index n, Index k) {
    const Index size = n * k;
    switch (kind) {
        case Loss::sse: {  // L = ½ Σ (F - Y)²,  G = F - Y
            const double acc = lanes::sum<T>(size, [](auto f, auto y) { return (f - y).square(); }, F, Y);
            lanes::assign(G, size, [](auto f, auto y) { return f - y; }, F, Y);
            return 0.5 * acc;
        }
        case Loss::mse: {  // L = (1/nk) Σ (F - Y)²,  G = 2 (F - Y) / nk
            const T scale = T(2.0 / double(size));
            const double acc = lanes::sum<T>(size, [](auto f, auto y) { return (f - y).square(); }, F, Y);
            lanes::assign(G, size, [scale](auto f, auto y) { return scale * (f - y); }, F, Y);
            return acc / double(size);
        }
        case Loss::cross_entropy: {  // L = -(1/n) Σ Y ⊙ log softmax(F),  G = (softmax(F) - Y) / n
            // G = Z = F - rowmax(F), then exp(Z) in place, then log P = Z - log Σ_row exp(Z)
            for (Index i = 0; i < n; ++i) {
                const T* f = F + i * k;
                T* g = G + i * k;
                const T fmax = *std::max_element(f, f + k);
                for (Index j = 0; j < k; ++j) g[j] = f[j] - fmax;
            }
            lanes::assign(G, size, [](auto z) { return z.exp(); }, G);
            for (Index i = 0; i < n; ++i) {
                const T* f = F + i * k;
                T* g = G + i * k;
                double s = 0.0;
                for (Index j = 0; j < k; ++j) s += double(g[j]);
                const T logsum = T(std::log(s));
                const T fmax = *std::max_element(f, f + k);
                for (Index j = 0; j < k; ++j) g[j] = (f[j] - fmax) - logsum;
            }
            const double acc = lanes::sum<T>(size, [](auto y, auto logp) { return y * logp; }, Y, G);
            const T tn = T(n);
            lanes::assign(G, size, [tn](auto logp, auto y) { return (logp.exp() - y) / tn; }, G, Y);
            return -acc / double(n);
        }
        case Loss::bce: {  // L = (1/nk) Σ [max(F,0) - Y F + log(1+exp(-|F|))],  G = (σ(F) - Y) / nk
            const double acc = lanes::sum<T>(
                size, [](auto f, auto y) { return f.max(T(0)) - y * f + (-f.abs()).exp().log1p(); }, F, Y);
            const T tsize = T(size);
            lanes::assign(
                G, size, [tsize](auto f, auto y) { return ((T(1) + (-f).exp()).inverse() - y) / tsize; }, F, Y);
            return acc / double(size);
        }
    }
    return 0.0;
}

}  // namespace backprop
