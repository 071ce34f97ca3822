// bindings_trainer.cpp: the fused MLP trainer's bindings (Trainer32, Trainer64: a whole training step in
// one native call).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bindings_common.hpp"
#include "mlp_step.hpp"

using namespace backprop;
using namespace backprop::bindings;

namespace {

// The main thread's id (threading.main_thread().ident): only it runs Python's signal handlers.
unsigned long g_main_thread = 0;

// Asked between the batches of a native epoch (without the GIL): whether a signal handler raised,
// as Python's default SIGINT handler does (KeyboardInterrupt). At most once per kInterval it takes
// the GIL for the moment of PyErr_CheckSignals(); a raised exception is kept in `error` and the
// epoch stops before its next batch. Off in threads other than the main one, where
// PyErr_CheckSignals() does nothing.
class SignalCheck {
   public:
    static constexpr std::chrono::milliseconds kInterval{50};
    std::unique_ptr<py::error_already_set> error;

    SignalCheck() : enabled_(PyThread_get_thread_ident() == g_main_thread), last_(Clock::now()) {}

    bool operator()() {
        if (!enabled_) return false;
        const auto now = Clock::now();
        if (now - last_ < kInterval) return false;
        last_ = now;
        py::gil_scoped_acquire gil;
        if (PyErr_CheckSignals() == 0) return false;
        error = std::make_unique<py::error_already_set>();  // takes the raised exception
        return true;
    }

   private:
    using Clock = std::chrono::steady_clock;
    bool enabled_;
    Clock::time_point last_;
};

// A native trainer over the model's own buffers. It keeps references to every array it was
// given, so the buffers outlive it; the Python side rebuilds it when the model replaces one.
// It keeps no step count: step() and epoch() take t, the number of updates applied before the call.
template <class T>
class Trainer {
   public:
    // t is not used (the step count is an argument of step and epoch); it is accepted so that
    // existing callers that pass it positionally keep working.
    Trainer(const py::list& W, const py::list& b, const py::list& dW, const py::list& db, const py::list& activations,
            const std::string& loss_name, const std::string& optimizer, const py::list& state1, const py::list& state2,
            double lr, double momentum, double beta1, double beta2, double eps, double l1, double l2) {
        const std::size_t L = W.size();
        if (L == 0) throw py::value_error("the network has no layers");
        if (b.size() != L || dW.size() != L || db.size() != L || activations.size() != L)
            throw py::value_error("W, b, dW, db and activations must have one entry per layer");
        OptimConfig opt;
        if (optimizer == "sgd")
            opt.kind = Optim::sgd;
        else if (optimizer == "momentum")
            opt.kind = Optim::momentum;
        else if (optimizer == "nesterov")
            opt.kind = Optim::nesterov;
        else if (optimizer == "adam")
            opt.kind = Optim::adam;
        else
            throw py::value_error("unknown optimizer '" + optimizer + "'; valid: sgd, momentum, nesterov, adam");
        const std::size_t n_state1 = opt.kind == Optim::sgd ? 0 : 2 * L;
        const std::size_t n_state2 = opt.kind == Optim::adam ? 2 * L : 0;
        if (state1.size() != n_state1 || state2.size() != n_state2)
            throw py::value_error("optimizer '" + optimizer + "' needs " + std::to_string(n_state1) + " + " +
                                  std::to_string(n_state2) + " state arrays (W0, b0, W1, b1, ...), got " +
                                  std::to_string(state1.size()) + " + " + std::to_string(state2.size()));
        opt.lr = lr;
        opt.momentum = momentum;
        opt.beta1 = beta1;
        opt.beta2 = beta2;
        opt.eps = eps;
        Loss loss_kind;
        try {
            loss_kind = loss_from_name(loss_name);
        } catch (const std::invalid_argument& e) {
            throw py::value_error(e.what());
        }
        std::vector<LayerBuffers<T>> layers(L);
        auto keep = [&](const py::handle& obj, const std::string& name, py::ssize_t rows, py::ssize_t cols) -> T* {
            py::array a = as_array(obj, name.c_str());
            T* p = cols < 0 ? checked<T>(a, name.c_str(), {rows}, true) : checked<T>(a, name.c_str(), {rows, cols}, true);
            const py::ssize_t count = cols < 0 ? rows : rows * cols;
            const Buffer mine{name, reinterpret_cast<const char*>(p), reinterpret_cast<const char*>(p + count)};
            for (const Buffer& other : buffers_)
                if (mine.overlaps(other))
                    throw py::value_error(name + " overlaps " + other.name + "; every buffer must be separate");
            buffers_.push_back(mine);
            keep_.push_back(a);
            return p;
        };
        for (std::size_t l = 0; l < L; ++l) {
            const std::string s = std::to_string(l);
            py::array w = as_array(W[l], ("W[" + s + "]").c_str());
            if (w.ndim() != 2) throw py::value_error("W[" + s + "] must be 2-D, got shape " + shape_str(w));
            const py::ssize_t pi = w.shape(0), po = w.shape(1);
            if (l > 0 && pi != layers[l - 1].p_out)
                throw py::value_error("W[" + s + "] has " + std::to_string(pi) + " rows but layer " +
                                      std::to_string(l - 1) + " has " + std::to_string(layers[l - 1].p_out) +
                                      " outputs");
            auto& Ly = layers[l];
            Ly.p_in = pi;
            Ly.p_out = po;
            Ly.W = keep(W[l], "W[" + s + "]", pi, po);
            Ly.b = keep(b[l], "b[" + s + "]", po, -1);
            Ly.dW = keep(dW[l], "dW[" + s + "]", pi, po);
            Ly.db = keep(db[l], "db[" + s + "]", po, -1);
            if (n_state1) {
                Ly.mW = keep(state1[2 * l], "state1[" + std::to_string(2 * l) + "]", pi, po);
                Ly.mb = keep(state1[2 * l + 1], "state1[" + std::to_string(2 * l + 1) + "]", po, -1);
            }
            if (n_state2) {
                Ly.vW = keep(state2[2 * l], "state2[" + std::to_string(2 * l) + "]", pi, po);
                Ly.vb = keep(state2[2 * l + 1], "state2[" + std::to_string(2 * l + 1) + "]", po, -1);
            }
            Ly.act = act_arg(activations[l], false);
        }
        step_ = std::make_unique<MLPStep<T>>(std::move(layers), loss_kind, l1, l2, opt);
    }

    double step(const py::array& X, const py::array& Y, double lr, long long t) {
        const py::ssize_t n = check_xy(X, Y);
        check_t(t);
        const T* x = static_cast<const T*>(X.data());
        const T* y = static_cast<const T*>(Y.data());
        py::gil_scoped_release release;
        return step_->step(x, y, n, lr, t);
    }

    // Runs the minibatches of one epoch; returns the batch losses (a float64 array). On a signal
    // whose handler raises (Ctrl-C) it stops after the batch in progress and raises that exception,
    // with the attributes `losses` (the batches run) and `updates` (how many were applied).
    py::array_t<double> epoch(const py::array& X, const py::array& Y, py::ssize_t batch_size, const py::object& order,
                              double lr, long long t) {
        const py::ssize_t N = check_xy(X, Y);
        check_t(t);
        if (batch_size < 1) throw py::value_error("batch_size must be >= 1, got " + std::to_string(batch_size));
        const std::int64_t* idx = nullptr;
        if (!order.is_none()) {
            py::array ord = as_array(order, "order");
            if (!dtype_is(ord, py::dtype::of<std::int64_t>()))
                throw py::type_error("order must be an int64 array, got " + std::string(py::str(ord.dtype())));
            if (ord.ndim() != 1 || ord.shape(0) != N)
                throw py::value_error("order must have shape (" + std::to_string(N) + ",), got " + shape_str(ord));
            if (!(ord.flags() & py::array::c_style)) throw py::value_error("order must be C-contiguous");
            idx = static_cast<const std::int64_t*>(ord.data());
            check_apart(Buffer{"order", reinterpret_cast<const char*>(idx), reinterpret_cast<const char*>(idx + N)});
            for (py::ssize_t i = 0; i < N; ++i)
                if (idx[i] < 0 || idx[i] >= N)
                    throw py::value_error("order[" + std::to_string(i) + "] = " + std::to_string(idx[i]) +
                                          " is out of range for " + std::to_string(N) + " samples");
        }
        const py::ssize_t nb = (N + batch_size - 1) / batch_size;
        std::vector<double> out(static_cast<std::size_t>(nb));
        const T* x = static_cast<const T*>(X.data());
        const T* y = static_cast<const T*>(Y.data());
        SignalCheck interrupted;
        py::ssize_t ran;
        {
            py::gil_scoped_release release;
            ran = step_->epoch(x, y, N, idx, batch_size, lr, t, out.data(), interrupted);
        }
        py::array_t<double> losses(ran);
        std::copy_n(out.data(), ran, losses.mutable_data());
        if (interrupted.error) {  // every batch run was applied (a non-finite loss ends the epoch first)
            const py::object& exc = interrupted.error->value();
            if (py::hasattr(exc, "__dict__")) {
                exc.attr("losses") = losses;
                exc.attr("updates") = py::int_(ran);
            }
            throw *interrupted.error;
        }
        return losses;
    }

   private:
    struct Buffer {
        std::string name;
        const char* lo;
        const char* hi;
        bool overlaps(const Buffer& o) const { return lo < o.hi && o.lo < hi; }
    };
    std::unique_ptr<MLPStep<T>> step_;
    std::vector<py::array> keep_;  // the model's buffers, kept alive while the trainer lives
    std::vector<Buffer> buffers_;  // and where they are: every one is written by a step

    // An input of a step (X, Y, order) must not overlap a buffer the step writes.
    void check_apart(const Buffer& in) const {
        for (const Buffer& b : buffers_)
            if (in.overlaps(b)) throw py::value_error(in.name + " overlaps " + b.name + ", which the trainer writes");
    }

    static void check_t(long long t) {
        if (t < 0) throw py::value_error("t counts the updates already applied, >= 0; got " + std::to_string(t));
    }

    py::ssize_t check_xy(const py::array& X, const py::array& Y) {
        if (X.ndim() != 2) throw py::value_error("X must be 2-D (n x p_in), got shape " + shape_str(X));
        const py::ssize_t n = X.shape(0);
        const T* x = checked<T>(X, "X", {n, step_->p_in()}, false);
        const T* y = checked<T>(Y, "Y", {n, step_->p_out()}, false);
        check_apart(Buffer{"X", reinterpret_cast<const char*>(x), reinterpret_cast<const char*>(x + n * step_->p_in())});
        check_apart(Buffer{"Y", reinterpret_cast<const char*>(y), reinterpret_cast<const char*>(y + n * step_->p_out())});
        return n;
    }
};

template <class T>
void bind_trainer_class(py::module_& m, const char* name) {
    using Tr = Trainer<T>;
    py::class_<Tr>(m, name,
                   "A dense network's whole training step in one native call, over the model's own buffers.\n"
                   "It keeps no step count: step and epoch take t, the number of updates applied before.")
        .def(py::init<const py::list&, const py::list&, const py::list&, const py::list&, const py::list&,
                      const std::string&, const std::string&, const py::list&, const py::list&, double, double, double,
                      double, double, double, double>(),
             py::arg("W"), py::arg("b"), py::arg("dW"), py::arg("db"), py::arg("activations"), py::arg("loss"),
             py::arg("optimizer"), py::arg("state1"), py::arg("state2"), py::arg("lr"), py::arg("momentum") = 0.0,
             py::arg("beta1") = 0.9, py::arg("beta2") = 0.999, py::arg("eps") = 1e-8,
             py::arg("l1") = 0.0, py::arg("l2") = 0.0)
        .def("step", &Tr::step, py::arg("X"), py::arg("Y"), py::arg("lr"), py::arg("t"),
             "Forward, loss, backward, penalty and update (Adam's step t+1) on one batch with learning rate lr;\n"
             "returns the loss. The update is applied if and only if the loss is finite.")
        .def("epoch", &Tr::epoch, py::arg("X"), py::arg("Y"), py::arg("batch_size"), py::arg("order"), py::arg("lr"),
             py::arg("t"),
             "Steps over X[order] (order None: X in order) in minibatches, batch i as update t+i+1; returns\n"
             "each batch's loss. Every finite one was applied; it stops after the first that is not finite\n"
             "(not applied). Ctrl-C stops it after the batch in progress: the KeyboardInterrupt carries\n"
             "`losses` and `updates` (the batches run, all applied).");
}

}  // namespace

void backprop::bindings::bind_trainer(py::module_& m) {
    g_main_thread = py::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>();
    bind_trainer_class<float>(m, "Trainer32");
    bind_trainer_class<double>(m, "Trainer64");
}
