// mlp_step.hpp: a whole training step of a dense network (forward, loss, backward, penalty,
// optimizer update) in one native call, and an epoch of minibatches in one call.
//
// What it fuses and why: for Raissi's 10-wide network a step is ~0.5 MFLOP, so the ~40 Python
// kernel calls of the kernel-by-kernel path (each a few µs of interpreter, argument checks and
// GIL traffic) cost more than the arithmetic. Here the layers run back to back on buffers owned
// by the caller (parameters, gradients, optimizer state: the model's arrays, so both paths share
// one state) and on scratch activations kept across steps. The step calls the kernels the kernel
// path calls, in the kernel path's order (train.gradient_kernels, model._loss_and_grad):
// dense_forward per layer, loss, activation_backward for the output activation, dense_backward
// per layer, weight_penalty per layer, then sgd_update or adam_update per array. The equations
// live in those kernels only, so both paths give the same bits.
//
// The optimizer's step count is not kept here: step() and epoch() take t, the number of updates
// applied before the call, and the caller counts (a batch whose loss is not finite is not applied).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "common.hpp"
#include "dense.hpp"
#include "elementwise.hpp"
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
};

template <class T>
class MLPStep {
   public:
    MLPStep(std::vector<LayerBuffers<T>> layers, Loss loss, double l1, double l2, OptimConfig opt)
        : layers_(std::move(layers)), loss_(loss), l1_(l1), l2_(l2), opt_(opt) {
        if (layers_.empty()) throw std::invalid_argument("a network needs at least one layer");
        for (std::size_t l = 1; l < layers_.size(); ++l)
            if (layers_[l].p_in != layers_[l - 1].p_out) throw std::invalid_argument("layer widths do not chain");
        for (auto& L : layers_) max_width_ = std::max(max_width_, std::max(L.p_in, L.p_out));
    }

    Index p_in() const { return layers_.front().p_in; }
    Index p_out() const { return layers_.back().p_out; }

    // Forward, loss, backward, penalty and update for one batch of n rows, with learning rate lr;
    // t updates were applied before this one (Adam's bias corrections use step t + 1). Returns the
    // loss (the data loss plus l1 Σ|W| + l2/2 Σ W² over the weight matrices). A loss that is not
    // finite skips the update, so the parameters stay as they were.
    double step(const T* X, const T* Y, Index n, double lr, long long t) {
        const double value = gradients(X, Y, n);
        if (std::isfinite(value)) update(lr, t + 1);
        return value;
    }

    // One epoch of minibatches: rows order[s : s+batch] of X (N x p_in) and Y (N x p_out), in
    // order; order == nullptr means 0..N-1 (slices, no gather). Batch i is update t + i + 1 and
    // losses[i] gets its loss. Stops after the first batch whose loss is not finite (not applied),
    // or after a batch when stop() returns true (stop is asked between batches, not after the
    // last). Returns the number of batches run.
    template <class Stop>
    Index epoch(const T* X, const T* Y, Index N, const std::int64_t* order, Index batch, double lr, long long t,
                double* losses, Stop&& stop) {
        const Index pi = p_in(), po = p_out();
        Index i = 0;
        for (Index s = 0; s < N; s += batch, ++i) {
            if (i > 0 && stop()) return i;
            const Index nb = std::min(batch, N - s);
            if (order == nullptr) {
                losses[i] = step(X + s * pi, Y + s * po, nb, lr, t + i);
            } else {
                Xb_.resize(std::size_t(nb * pi));
                Yb_.resize(std::size_t(nb * po));
                for (Index r = 0; r < nb; ++r) {
                    const Index src = Index(order[s + r]);
                    std::copy_n(X + src * pi, pi, Xb_.data() + r * pi);
                    std::copy_n(Y + src * po, po, Yb_.data() + r * po);
                }
                losses[i] = step(Xb_.data(), Yb_.data(), nb, lr, t + i);
            }
            if (!std::isfinite(losses[i])) return i + 1;
        }
        return i;
    }

   private:
    std::vector<LayerBuffers<T>> layers_;
    Loss loss_;
    double l1_, l2_;
    OptimConfig opt_;
    Index max_width_ = 0, cap_ = 0;
    std::vector<std::vector<T>> A_;  // A_[l] = layer l's output (n x p_out)
    std::vector<T> G_[2];            // ping-pong backward signals (n x max width)
    std::vector<T> Xb_, Yb_;         // the gathered minibatch

    void reserve(Index n) {
        if (n <= cap_) return;
        A_.resize(layers_.size());
        for (std::size_t l = 0; l < layers_.size(); ++l) A_[l].resize(std::size_t(n * layers_[l].p_out));
        G_[0].resize(std::size_t(n * max_width_));
        G_[1].resize(std::size_t(n * max_width_));
        cap_ = n;
    }

    // The gradient half of a step (train.gradient_kernels): dW, db filled; returns the loss.
    double gradients(const T* X, const T* Y, Index n) {
        reserve(n);
        const T* A = X;
        for (std::size_t l = 0; l < layers_.size(); ++l) {
            const auto& L = layers_[l];
            dense_forward<T>(A, L.W, L.b, L.act, A_[l].data(), n, L.p_in, L.p_out);
            A = A_[l].data();
        }
        const T* F = A;
        T* G = G_[0].data();
        T* G_prev = G_[1].data();
        double value = loss<T>(loss_, F, Y, G, n, p_out());
        const Act out_act = layers_.back().act;
        if (out_act != Act::identity) activation_backward<T>(out_act, G, F, G, n * p_out());
        for (std::size_t l = layers_.size(); l-- > 0;) {
            const auto& L = layers_[l];
            if (l == 0) {  // no dX
                dense_backward<T>(G, X, L.W, Act::none, L.dW, L.db, nullptr, n, L.p_in, L.p_out);
                break;
            }
            dense_backward<T>(G, A_[l - 1].data(), L.W, layers_[l - 1].act, L.dW, L.db, G_prev, n, L.p_in, L.p_out);
            std::swap(G, G_prev);
        }
        if (l1_ != 0.0 || l2_ != 0.0)
            for (auto& L : layers_) value += weight_penalty<T>(L.W, L.dW, L.p_in * L.p_out, l1_, l2_);
        return value;
    }

    // The optimizer update of every parameter from dW, db; `step` counts from 1 (Adam).
    void update(double lr, long long step) {
        for (auto& L : layers_) {
            update_one(L.W, L.dW, L.mW, L.vW, L.p_in * L.p_out, lr, step);
            update_one(L.b, L.db, L.mb, L.vb, L.p_out, lr, step);
        }
    }

    void update_one(T* p, const T* g, T* m, T* v, Index size, double lr, long long step) {
        switch (opt_.kind) {
            case Optim::sgd: sgd_update<T>(p, g, nullptr, size, lr, 0.0, false); break;
            case Optim::momentum: sgd_update<T>(p, g, m, size, lr, opt_.momentum, false); break;
            case Optim::nesterov: sgd_update<T>(p, g, m, size, lr, opt_.momentum, true); break;
            case Optim::adam: adam_update<T>(p, g, m, v, size, lr, opt_.beta1, opt_.beta2, opt_.eps, step); break;
        }
    }
};

}  // namespace backprop
