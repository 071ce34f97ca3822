// mlp_step.hpp: a whole training step of a dense network (forward, loss, backward, penalty,
// optimizer update) in one native call, and an epoch of minibatches in one call.
//
// What it fuses and why: for Raissi's 10-wide network a step is ~0.5 MFLOP, so the ~40 Python
// kernel calls of the kernel-by-kernel path (each a few µs of interpreter, argument checks and
// GIL traffic) cost more than the arithmetic. Here the layers run back to back on buffers owned
// by the caller (parameters, gradients, optimizer state: the model's arrays, so both paths share
// one state) and on scratch activations kept across steps, with the per-kernel fusions
// (bias+activation after the forward product, dW and db in one sweep over G for narrow layers,
// the derivative after the backward product) and the optimizer updating every parameter in one
// loop per array. The kernels called are the same ones
// the kernel path calls, so the numbers agree with it (to the order of one column sum).
#pragma once

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

#include "common.hpp"
#include "dense.hpp"
#include "elementwise.hpp"
#include "gemm.hpp"
#include "loss.hpp"
#include "optim.hpp"

namespace backprop {

enum class Optim : int { sgd = 0, momentum = 1, nesterov = 2, adam = 3 };

// One dense layer's buffers, all owned by the caller: W (p_in x p_out), b (p_out), their
// gradients, and the optimizer state (velocity, or Adam's m and v; null when unused).
template <class T>
struct LayerBuffers {
    T* W = nullptr;
    T* b = nullptr;
    T* dW = nullptr;
    T* db = nullptr;
    T* mW = nullptr;  // velocity (momentum/nesterov) or Adam's first moment
    T* mb = nullptr;
    T* vW = nullptr;  // Adam's second moment
    T* vb = nullptr;
    Index p_in = 0, p_out = 0;
    Act act = Act::identity;  // the activation applied to this layer's output
};

struct OptimConfig {
    Optim kind = Optim::sgd;
    double lr = 0.01, momentum = 0.0, beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
    long long t = 0;  // Adam's step count (the update uses t + 1 and stores it)
};

template <class T>
class MLPStep {
   public:
    std::vector<LayerBuffers<T>> layers;
    Loss loss_kind = Loss::sse;
    double l1 = 0.0, l2 = 0.0;
    OptimConfig opt;

    MLPStep(std::vector<LayerBuffers<T>> layers_, Loss loss_, double l1_, double l2_, OptimConfig opt_)
        : layers(std::move(layers_)), loss_kind(loss_), l1(l1_), l2(l2_), opt(opt_) {
        if (layers.empty()) throw std::invalid_argument("a network needs at least one layer");
        for (std::size_t l = 1; l < layers.size(); ++l)
            if (layers[l].p_in != layers[l - 1].p_out)
                throw std::invalid_argument("layer widths do not chain");
        max_width_ = 0;
        for (auto& L : layers) max_width_ = std::max(max_width_, std::max(L.p_in, L.p_out));
    }

    Index p_in() const { return layers.front().p_in; }
    Index p_out() const { return layers.back().p_out; }

    // The network's output for the last batch (n x p_out), valid after step/forward.
    const T* output() const { return A_.back().data(); }

    // Forward only: A_{l+1} = act(A_l W_l + b_l); returns the output buffer (n x p_out).
    const T* forward(const T* X, Index n) {
        reserve(n);
        const T* A = X;
        for (std::size_t l = 0; l < layers.size(); ++l) {
            const auto& L = layers[l];
            dense_forward<T>(A, L.W, L.b, L.act, A_[l].data(), n, L.p_in, L.p_out);
            A = A_[l].data();
        }
        return A;
    }

    // Forward, loss, backward, penalty and update for one batch. Returns the loss value
    // (the data loss plus the weight penalty l1 Σ|W| + l2/2 Σ W² over the weight matrices).
    // A loss that is not finite skips the update, so the parameters stay as they were.
    double step(const T* X, const T* Y, Index n) {
        const double value = gradients(X, Y, n);
        if (std::isfinite(value)) update();
        return value;
    }

    // Forward, loss and backward only (dW, db filled, parameters untouched). Returns the loss.
    double gradients(const T* X, const T* Y, Index n) {
        const T* F = forward(X, n);
        const std::size_t nl = layers.size();
        T* G = G_[0].data();
        T* G_other = G_[1].data();
        double value = loss<T>(loss_kind, F, Y, G, n, p_out());
        const Act out_act = layers.back().act;
        if (out_act != Act::identity) activation_backward<T>(out_act, G, F, G, n * p_out());
        for (std::size_t l = nl; l-- > 0;) {
            const auto& L = layers[l];
            const T* A_prev = l == 0 ? X : A_[l - 1].data();
            weight_grads<T>(A_prev, G, L.dW, L.db, n, L.p_in, L.p_out);  // dW = A_prevᵀ G, db = 1ᵀ G
            if (l == 0) break;                                          // no dX
            // G_prev = act'(A_prev) ⊙ (G Wᵀ): the product, then the derivative in place
            gemm<T>(false, true, n, L.p_in, L.p_out, T(1), G, L.W, T(0), G_other);
            const Act act = layers[l - 1].act;
            if (act != Act::identity) activation_backward<T>(act, G_other, A_prev, G_other, n * L.p_in);
            std::swap(G, G_other);
        }
        if (l1 != 0.0 || l2 != 0.0)
            for (auto& L : layers) value += weight_penalty<T>(L.W, L.dW, L.p_in * L.p_out, l1, l2);
        return value;
    }

    // The optimizer update of every parameter from the gradients in dW, db.
    void update() {
        if (opt.kind == Optim::adam) ++opt.t;
        for (auto& L : layers) {
            update_one(L.W, L.dW, L.mW, L.vW, L.p_in * L.p_out);
            update_one(L.b, L.db, L.mb, L.vb, L.p_out);
        }
    }

    // One epoch of minibatches: rows order[s : s+batch] of X (N x p_in) and Y (N x p_out), in
    // order; order == nullptr means 0..N-1 (slices, no gather). losses[i] gets batch i's loss.
    // Stops after the first batch whose loss is not finite (not updated); returns the batches run.
    Index epoch(const T* X, const T* Y, Index N, const std::int64_t* order, Index batch, double* losses) {
        const Index pi = p_in(), po = p_out();
        Index i = 0;
        for (Index s = 0; s < N; s += batch, ++i) {
            const Index nb = std::min(batch, N - s);
            if (order == nullptr) {
                losses[i] = step(X + s * pi, Y + s * po, nb);
                if (!std::isfinite(losses[i])) return i + 1;
                continue;
            }
            Xb_.resize(std::size_t(nb * pi));
            Yb_.resize(std::size_t(nb * po));
            for (Index r = 0; r < nb; ++r) {
                const Index src = Index(order[s + r]);
                std::copy_n(X + src * pi, pi, Xb_.data() + r * pi);
                std::copy_n(Y + src * po, po, Yb_.data() + r * po);
            }
            losses[i] = step(Xb_.data(), Yb_.data(), nb);
            if (!std::isfinite(losses[i])) return i + 1;
        }
        return i;
    }

   private:
    Index max_width_ = 0, cap_ = 0;
    std::vector<std::vector<T>> A_;  // A_[l] = this layer's output (n x p_out)
    std::vector<T> G_[2];            // ping-pong backward signals (n x max width)
    std::vector<T> Xb_, Yb_;         // the gathered minibatch

    void reserve(Index n) {
        if (n <= cap_) return;
        A_.resize(layers.size());
        for (std::size_t l = 0; l < layers.size(); ++l) A_[l].resize(std::size_t(n * layers[l].p_out));
        G_[0].resize(std::size_t(n * max_width_));
        G_[1].resize(std::size_t(n * max_width_));
        cap_ = n;
    }

    void update_one(T* p, const T* g, T* m, T* v, Index size) {
        switch (opt.kind) {
            case Optim::sgd: sgd_update<T>(p, g, nullptr, size, opt.lr, 0.0, false); break;
            case Optim::momentum: sgd_update<T>(p, g, m, size, opt.lr, opt.momentum, false); break;
            case Optim::nesterov: sgd_update<T>(p, g, m, size, opt.lr, opt.momentum, true); break;
            case Optim::adam:
                adam_update<T>(p, g, m, v, size, opt.lr, opt.beta1, opt.beta2, opt.eps, opt.t);
                break;
        }
    }
};

}  // namespace backprop
