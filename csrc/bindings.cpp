// bindings.cpp: the pybind11 module backprop._cpu, the one file that knows about Python.
//
// Every function checks what memory safety needs of its numpy arguments (type, dtype,
// C-contiguity, shape, writability, and the aliasing rule below) and raises TypeError/ValueError
// before any kernel runs, then maps the caller's buffers with no copy and releases the GIL around
// the kernel. Outputs are always given (the Python adapter allocates them when the caller did not).
//
// The aliasing rule: an elementwise kernel (activation_forward, activation_backward, dropout) may
// write its output into its FIRST input (exactly the same buffer: in place); no other output may
// overlap any input or another output. (In-place updates such as param, m, v or dW += penalty are
// one buffer read and written, not an input and an output.)
#include <pybind11/pybind11.h>
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common.hpp"
#include "dense.hpp"
#include "elementwise.hpp"
#include "gemm.hpp"
#include "loss.hpp"
#include "mlp_step.hpp"
#include "optim.hpp"
#include "taylor.hpp"

namespace py = pybind11;
using namespace backprop;

namespace {

// ---- argument checks --------------------------------------------------------------------------

enum class DType { f32, f64 };

std::string shape_str(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t d = 0; d < a.ndim(); ++d) {
        if (d) s += ", ";
        s += std::to_string(a.shape(d));
    }
    if (a.ndim() == 1) s += ",";
    return s + ")";
}

py::array as_array(const py::handle& obj, const char* name) {
    if (!py::isinstance<py::array>(obj))
        throw py::type_error(std::string(name) + " must be a numpy.ndarray, got " +
                             std::string(py::str(py::type::of(obj).attr("__name__"))));
    return py::reinterpret_borrow<py::array>(obj);
}

// Equivalent dtypes, not the same object: an unpickled array's float32 is a float32 all the same.
bool dtype_is(const py::array& a, const py::dtype& want) {
    return py::detail::npy_api::get().PyArray_EquivTypes_(a.dtype().ptr(), want.ptr());
}

DType dtype_of(const py::array& a, const char* name) {
    if (dtype_is(a, py::dtype::of<float>())) return DType::f32;
    if (dtype_is(a, py::dtype::of<double>())) return DType::f64;
    throw py::type_error(std::string(name) + " must be float32 or float64, got " +
                         std::string(py::str(a.dtype())));
}

// Checks one array against the expected dtype, rank and shape (-1: any extent) and returns its data.
template <class T>
T* checked(const py::array& a, const char* name, std::initializer_list<py::ssize_t> shape, bool writable) {
    const DType want = std::is_same<T, float>::value ? DType::f32 : DType::f64;
    if (dtype_of(a, name) != want)
        throw py::type_error(std::string(name) + " has dtype " + std::string(py::str(a.dtype())) +
                             " but the other arrays are " + (want == DType::f32 ? "float32" : "float64"));
    if (a.ndim() != py::ssize_t(shape.size()))
        throw py::value_error(std::string(name) + " must be " + std::to_string(shape.size()) +
                              "-D, got shape " + shape_str(a));
    py::ssize_t d = 0;
    for (py::ssize_t want_d : shape) {
        if (want_d >= 0 && a.shape(d) != want_d)
            throw py::value_error(std::string(name) + " has shape " + shape_str(a) + "; axis " +
                                  std::to_string(d) + " must be " + std::to_string(want_d));
        ++d;
    }
    if (a.size() == 0) throw py::value_error(std::string(name) + " is empty (shape " + shape_str(a) + ")");
    if (!(a.flags() & py::array::c_style))
        throw py::value_error(std::string(name) + " must be C-contiguous (use numpy.ascontiguousarray)");
    if (writable && !a.writeable()) throw py::value_error(std::string(name) + " is read-only");
    return static_cast<T*>(const_cast<void*>(a.data()));
}

struct Span {
    const char* name;
    const char* lo;
    const char* hi;
};
template <class T>
Span span(const char* name, const T* p, py::ssize_t count) {
    return {name, reinterpret_cast<const char*>(p), reinterpret_cast<const char*>(p + count)};
}
// Raises if `out` overlaps any of `others`. in_place: `out` may be exactly the first of them (an
// elementwise kernel writing into its first input).
void no_overlap(const Span& out, std::initializer_list<Span> others, bool in_place = false) {
    bool first = true;
    for (const Span& o : others) {
        const bool may_be_same = in_place && first;
        first = false;
        if (o.lo == nullptr) continue;
        if (may_be_same && o.lo == out.lo && o.hi == out.hi) continue;
        if (out.lo < o.hi && o.lo < out.hi)
            throw py::value_error(std::string(out.name) + " overlaps " + o.name +
                                  "; give a separate output buffer");
    }
}

Act act_arg(const py::object& name, bool allow_none) {
    if (name.is_none()) {
        if (allow_none) return Act::none;
        throw py::value_error("activation must be a name, got None");
    }
    if (!py::isinstance<py::str>(name))
        throw py::type_error("activation must be a str, got " + std::string(py::str(py::type::of(name).attr("__name__"))));
    try {
        return act_from_name(name.cast<std::string>());
    } catch (const std::invalid_argument& e) {
        throw py::value_error(e.what());
    }
}

// ---- kernels ----------------------------------------------------------------------------------

template <class T>
py::array gemm_t(const py::array& A, const py::array& B, const py::array& out, bool ta, bool tb, double alpha,
                 double beta) {
    if (A.ndim() != 2) throw py::value_error("A must be 2-D, got shape " + shape_str(A));
    if (B.ndim() != 2) throw py::value_error("B must be 2-D, got shape " + shape_str(B));
    const py::ssize_t m = ta ? A.shape(1) : A.shape(0), k = ta ? A.shape(0) : A.shape(1);
    const py::ssize_t kb = tb ? B.shape(1) : B.shape(0), n = tb ? B.shape(0) : B.shape(1);
    if (k != kb)
        throw py::value_error("gemm: op(A) is " + std::to_string(m) + "x" + std::to_string(k) + " but op(B) is " +
                              std::to_string(kb) + "x" + std::to_string(n));
    const T* a = checked<T>(A, "A", {-1, -1}, false);
    const T* b = checked<T>(B, "B", {-1, -1}, false);
    T* c = checked<T>(out, "out", {m, n}, true);
    no_overlap(span("out", c, m * n), {span("A", a, m * k), span("B", b, k * n)});
    py::gil_scoped_release release;
    gemm<T>(ta, tb, m, n, k, T(alpha), a, b, T(beta), c);
    return out;
}

py::array gemm_py(const py::array& A, const py::array& B, const py::array& out, bool ta, bool tb, double alpha,
                  double beta) {
    return dtype_of(A, "A") == DType::f32 ? gemm_t<float>(A, B, out, ta, tb, alpha, beta)
                                          : gemm_t<double>(A, B, out, ta, tb, alpha, beta);
}

template <class T>
py::array dense_forward_t(const py::array& A, const py::array& W, const py::array& b, Act act, const py::array& out) {
    if (A.ndim() != 2) throw py::value_error("A must be 2-D (n x p_in), got shape " + shape_str(A));
    if (W.ndim() != 2) throw py::value_error("W must be 2-D (p_in x p_out), got shape " + shape_str(W));
    const py::ssize_t n = A.shape(0), p_in = A.shape(1), p_out = W.shape(1);
    const T* a = checked<T>(A, "A", {n, p_in}, false);
    const T* w = checked<T>(W, "W", {p_in, p_out}, false);
    const T* bb = checked<T>(b, "b", {p_out}, false);
    T* o = checked<T>(out, "out", {n, p_out}, true);
    no_overlap(span("out", o, n * p_out), {span("A", a, n * p_in), span("W", w, p_in * p_out), span("b", bb, p_out)});
    py::gil_scoped_release release;
    dense_forward<T>(a, w, bb, act, o, n, p_in, p_out);
    return out;
}

py::array dense_forward_py(const py::array& A, const py::array& W, const py::array& b, const py::object& activation,
                           const py::array& out) {
    const Act act = act_arg(activation, false);
    return dtype_of(A, "A") == DType::f32 ? dense_forward_t<float>(A, W, b, act, out)
                                          : dense_forward_t<double>(A, W, b, act, out);
}

template <class T>
void dense_backward_t(const py::array& G, const py::array& A_prev, const py::array& W, Act act, const py::array& dW,
                      const py::array& db, const py::object& G_prev) {
    if (G.ndim() != 2) throw py::value_error("G must be 2-D (n x p_out), got shape " + shape_str(G));
    if (W.ndim() != 2) throw py::value_error("W must be 2-D (p_in x p_out), got shape " + shape_str(W));
    const py::ssize_t n = G.shape(0), p_out = G.shape(1), p_in = W.shape(0);
    const T* g = checked<T>(G, "G", {n, p_out}, false);
    const T* a = checked<T>(A_prev, "A_prev", {n, p_in}, false);
    const T* w = checked<T>(W, "W", {p_in, p_out}, false);
    T* dw = checked<T>(dW, "dW", {p_in, p_out}, true);
    T* dbb = checked<T>(db, "db", {p_out}, true);
    T* gp = nullptr;
    if (!G_prev.is_none()) gp = checked<T>(as_array(G_prev, "G_prev"), "G_prev", {n, p_in}, true);
    const Span ins[] = {span("G", g, n * p_out), span("A_prev", a, n * p_in), span("W", w, p_in * p_out)};
    const Span sdw = span("dW", dw, p_in * p_out), sdb = span("db", dbb, p_out);
    const Span sgp = gp ? span("G_prev", gp, n * p_in) : Span{"G_prev", nullptr, nullptr};
    no_overlap(sdw, {ins[0], ins[1], ins[2], sdb, sgp});
    no_overlap(sdb, {ins[0], ins[1], ins[2], sgp});
    if (gp) no_overlap(sgp, {ins[0], ins[1], ins[2]});
    py::gil_scoped_release release;
    dense_backward<T>(g, a, w, act, dw, dbb, gp, n, p_in, p_out);
}

void dense_backward_py(const py::array& G, const py::array& A_prev, const py::array& W, const py::object& activation_prev,
                       const py::array& dW, const py::array& db, const py::object& G_prev) {
    const Act act = act_arg(activation_prev, true);
    if (dtype_of(G, "G") == DType::f32)
        dense_backward_t<float>(G, A_prev, W, act, dW, db, G_prev);
    else
        dense_backward_t<double>(G, A_prev, W, act, dW, db, G_prev);
}

// Elementwise kernels accept any rank; inputs and output must have the same shape.
template <class T>
T* same_shape(const py::array& ref, const py::array& a, const char* name, bool writable) {
    if (a.ndim() != ref.ndim())
        throw py::value_error(std::string(name) + " has shape " + shape_str(a) + ", expected " + shape_str(ref));
    for (py::ssize_t d = 0; d < ref.ndim(); ++d)
        if (a.shape(d) != ref.shape(d))
            throw py::value_error(std::string(name) + " has shape " + shape_str(a) + ", expected " + shape_str(ref));
    if (a.size() == 0) throw py::value_error(std::string(name) + " is empty (shape " + shape_str(a) + ")");
    const DType want = std::is_same<T, float>::value ? DType::f32 : DType::f64;
    if (dtype_of(a, name) != want)
        throw py::type_error(std::string(name) + " has dtype " + std::string(py::str(a.dtype())) +
                             " but the other arrays are " + (want == DType::f32 ? "float32" : "float64"));
    if (!(a.flags() & py::array::c_style))
        throw py::value_error(std::string(name) + " must be C-contiguous (use numpy.ascontiguousarray)");
    if (writable && !a.writeable()) throw py::value_error(std::string(name) + " is read-only");
    return static_cast<T*>(const_cast<void*>(a.data()));
}

template <class T>
py::array activation_forward_t(const py::array& H, Act act, const py::array& out) {
    const T* h = same_shape<T>(H, H, "H", false);
    T* o = same_shape<T>(H, out, "out", true);
    const py::ssize_t size = H.size();
    no_overlap(span("out", o, size), {span("H", h, size)}, true);
    py::gil_scoped_release release;
    activation_forward<T>(act, h, o, size);
    return out;
}

py::array activation_forward_py(const py::array& H, const py::object& activation, const py::array& out) {
    const Act act = act_arg(activation, false);
    return dtype_of(H, "H") == DType::f32 ? activation_forward_t<float>(H, act, out)
                                          : activation_forward_t<double>(H, act, out);
}

template <class T>
py::array activation_backward_t(const py::array& dA, const py::array& A, Act act, const py::array& out) {
    const T* da = same_shape<T>(dA, dA, "dA", false);
    const T* a = same_shape<T>(dA, A, "A", false);
    T* o = same_shape<T>(dA, out, "out", true);
    const py::ssize_t size = dA.size();
    no_overlap(span("out", o, size), {span("dA", da, size), span("A", a, size)}, true);
    py::gil_scoped_release release;
    activation_backward<T>(act, da, a, o, size);
    return out;
}

py::array activation_backward_py(const py::array& dA, const py::array& A, const py::object& activation,
                                 const py::array& out) {
    const Act act = act_arg(activation, false);
    return dtype_of(dA, "dA") == DType::f32 ? activation_backward_t<float>(dA, A, act, out)
                                            : activation_backward_t<double>(dA, A, act, out);
}

template <class T>
py::array colsum_t(const py::array& G, const py::array& out) {
    if (G.ndim() != 2) throw py::value_error("G must be 2-D (n x p), got shape " + shape_str(G));
    const py::ssize_t n = G.shape(0), p = G.shape(1);
    const T* g = checked<T>(G, "G", {n, p}, false);
    T* o = checked<T>(out, "out", {p}, true);
    no_overlap(span("out", o, p), {span("G", g, n * p)});
    py::gil_scoped_release release;
    colsum<T>(g, o, n, p);
    return out;
}

py::array colsum_py(const py::array& G, const py::array& out) {
    return dtype_of(G, "G") == DType::f32 ? colsum_t<float>(G, out) : colsum_t<double>(G, out);
}

template <class T>
py::array dropout_t(const py::array& A, const py::array& M, const py::array& out) {
    const T* a = same_shape<T>(A, A, "A", false);
    const T* m = same_shape<T>(A, M, "M", false);
    T* o = same_shape<T>(A, out, "out", true);
    const py::ssize_t size = A.size();
    no_overlap(span("out", o, size), {span("A", a, size), span("M", m, size)}, true);
    py::gil_scoped_release release;
    dropout<T>(a, m, o, size);
    return out;
}

py::array dropout_py(const py::array& A, const py::array& M, const py::array& out) {
    return dtype_of(A, "A") == DType::f32 ? dropout_t<float>(A, M, out) : dropout_t<double>(A, M, out);
}

template <class T>
double loss_t(Loss kind, const py::array& F, const py::array& Y, const py::array& G) {
    if (F.ndim() != 2) throw py::value_error("F must be 2-D (n x k), got shape " + shape_str(F));
    const py::ssize_t n = F.shape(0), k = F.shape(1);
    const T* f = checked<T>(F, "F", {n, k}, false);
    const T* y = checked<T>(Y, "Y", {n, k}, false);
    T* g = checked<T>(G, "G", {n, k}, true);
    no_overlap(span("G", g, n * k), {span("F", f, n * k), span("Y", y, n * k)});
    py::gil_scoped_release release;
    return loss<T>(kind, f, y, g, n, k);
}

double loss_py(const std::string& name, const py::array& F, const py::array& Y, const py::array& G) {
    Loss kind;
    try {
        kind = loss_from_name(name);
    } catch (const std::invalid_argument& e) {
        throw py::value_error(e.what());
    }
    return dtype_of(F, "F") == DType::f32 ? loss_t<float>(kind, F, Y, G) : loss_t<double>(kind, F, Y, G);
}

template <class T>
double weight_penalty_t(const py::array& W, const py::array& dW, double l1, double l2) {
    const T* w = same_shape<T>(W, W, "W", false);
    T* g = same_shape<T>(W, dW, "dW", true);
    no_overlap(span("dW", g, W.size()), {span("W", w, W.size())});
    py::gil_scoped_release release;
    return weight_penalty<T>(w, g, W.size(), l1, l2);
}

double weight_penalty_py(const py::array& W, const py::array& dW, double l1, double l2) {
    return dtype_of(W, "W") == DType::f32 ? weight_penalty_t<float>(W, dW, l1, l2)
                                          : weight_penalty_t<double>(W, dW, l1, l2);
}

template <class T>
void sgd_update_t(const py::array& param, const py::array& grad, const py::object& velocity, double lr,
                  double momentum, bool nesterov) {
    T* p = same_shape<T>(param, param, "param", true);
    const T* g = same_shape<T>(param, grad, "grad", false);
    T* v = nullptr;
    const py::ssize_t size = param.size();
    if (!velocity.is_none()) {
        v = same_shape<T>(param, as_array(velocity, "velocity"), "velocity", true);
        no_overlap(span("velocity", v, size), {span("param", p, size), span("grad", g, size)});
    }
    no_overlap(span("param", p, size), {span("grad", g, size)});
    py::gil_scoped_release release;
    if (v == nullptr)
        sgd_update<T>(p, g, nullptr, size, lr, 0.0, false);
    else
        sgd_update<T>(p, g, v, size, lr, momentum, nesterov);
}

void sgd_update_py(const py::array& param, const py::array& grad, const py::object& velocity, double lr,
                   double momentum, bool nesterov) {
    if (dtype_of(param, "param") == DType::f32)
        sgd_update_t<float>(param, grad, velocity, lr, momentum, nesterov);
    else
        sgd_update_t<double>(param, grad, velocity, lr, momentum, nesterov);
}

template <class T>
void adam_update_t(const py::array& param, const py::array& grad, const py::array& m, const py::array& v, double lr,
                   double beta1, double beta2, double eps, long long step) {
    T* p = same_shape<T>(param, param, "param", true);
    const T* g = same_shape<T>(param, grad, "grad", false);
    T* mm = same_shape<T>(param, m, "m", true);
    T* vv = same_shape<T>(param, v, "v", true);
    const py::ssize_t size = param.size();
    no_overlap(span("param", p, size), {span("grad", g, size), span("m", mm, size), span("v", vv, size)});
    no_overlap(span("m", mm, size), {span("grad", g, size), span("v", vv, size)});
    no_overlap(span("v", vv, size), {span("grad", g, size)});
    py::gil_scoped_release release;
    adam_update<T>(p, g, mm, vv, size, lr, beta1, beta2, eps, step);
}

void adam_update_py(const py::array& param, const py::array& grad, const py::array& m, const py::array& v, double lr,
                    double beta1, double beta2, double eps, long long step) {
    if (step < 1) throw py::value_error("adam step counts from 1, got " + std::to_string(step));
    if (dtype_of(param, "param") == DType::f32)
        adam_update_t<float>(param, grad, m, v, lr, beta1, beta2, eps, step);
    else
        adam_update_t<double>(param, grad, m, v, lr, beta1, beta2, eps, step);
}

// ---- the fused training step --------------------------------------------------------------------

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
void bind_trainer(py::module_& m, const char* name) {
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

// ---- Taylor mode: the whole network's input derivatives in one call ----------------------------

int get_num_threads();  // the backend's thread count (below, with the BLAS)

// Every output span must be apart from every other span (outputs and inputs).
void all_apart(const std::vector<Span>& outputs, const std::vector<Span>& inputs) {
    for (std::size_t i = 0; i < outputs.size(); ++i) {
        const Span& o = outputs[i];
        auto check = [&](const Span& x) {
            if (o.lo < x.hi && x.lo < o.hi)
                throw py::value_error(std::string(o.name) + " overlaps " + x.name + "; give separate buffers");
        };
        for (std::size_t j = i + 1; j < outputs.size(); ++j) check(outputs[j]);
        for (const Span& x : inputs) check(x);
    }
}

// The layers, the directions and the saved streams, checked. As[0] is X; for l >= 1, As[l],
// dAs[l], d2As[l] must lie one after another in memory (one (1+k1+k2) x n x p_l buffer), and
// dAs[0], d2As[0] likewise: base.taylor_forward allocates them so.
template <class T>
struct TaylorArgs {
    std::vector<TaylorLayer<T>> layers;
    TaylorDirs dirs;
    const T* X = nullptr;
    std::vector<T*> S;  // S[0]: the input's streams (nullptr when k1 = 0), S[l]: the stacked layer l
    std::vector<std::string> names;
    std::vector<Span> weights, stacks;
    py::ssize_t n = 0;

    TaylorArgs(const py::list& As, const py::list& dAs, const py::list& d2As, const py::list& Ws, const py::object& bs,
               const py::list& activations, const py::list& first, const py::list& second, bool writable) {
        const std::size_t L = Ws.size();
        if (L == 0) throw py::value_error("the network has no layers");
        if (As.size() != L + 1 || dAs.size() != L + 1 || d2As.size() != L + 1 || activations.size() != L ||
            (!bs.is_none() && py::len(bs) != L))
            throw py::value_error("As, dAs, d2As need L + 1 entries and Ws, bs, activations L");
        py::array x = as_array(As[0], "As[0]");
        if (x.ndim() != 2) throw py::value_error("As[0] (X) must be 2-D, got shape " + shape_str(x));
        n = x.shape(0);
        X = checked<T>(x, "As[0]", {n, x.shape(1)}, false);
        names.reserve(8 * L + 8);  // no reallocation: the spans point into it
        py::ssize_t p = x.shape(1);
        for (py::handle i : first) {
            const long long v = i.cast<long long>();
            if (v < 0 || v >= p) throw py::value_error("first: input index " + std::to_string(v) + " out of range");
            dirs.first.push_back(Index(v));
        }
        const Index k1 = dirs.k1();
        for (py::handle pr : second) {
            const auto t = pr.cast<std::pair<long long, long long>>();
            if (t.first < 0 || t.first >= k1 || t.second < 0 || t.second >= k1)
                throw py::value_error("second: stream positions out of range");
            dirs.second.emplace_back(Index(t.first), Index(t.second));
        }
        const Index k2 = dirs.k2();
        for (std::size_t l = 0; l < L; ++l) {
            const std::string s = std::to_string(l);
            names.push_back("Ws[" + s + "]");
            py::array w = as_array(Ws[l], names.back().c_str());
            if (w.ndim() != 2 || w.shape(0) != p)
                throw py::value_error(names.back() + " has shape " + shape_str(w) + "; its input has " +
                                      std::to_string(p) + " columns");
            const py::ssize_t q = w.shape(1);
            TaylorLayer<T> Ly{checked<T>(w, names.back().c_str(), {p, q}, false), nullptr,
                              act_arg(activations[l], false), p, q};
            weights.push_back(span(names.back().c_str(), Ly.W, p * q));
            if (!bs.is_none()) {
                names.push_back("bs[" + s + "]");
                py::array b = as_array(bs[py::int_(l)], names.back().c_str());
                Ly.b = checked<T>(b, names.back().c_str(), {q}, false);
                weights.push_back(span(names.back().c_str(), Ly.b, q));
            }
            layers.push_back(Ly);
            p = q;
        }
        S.assign(L + 1, nullptr);
        for (std::size_t l = 0; l <= L; ++l) {
            const std::string s = std::to_string(l);
            const py::ssize_t pl = l == 0 ? x.shape(1) : layers[l - 1].p_out, B = n * pl;
            const T* start = nullptr;
            const T* next = nullptr;  // where the next block must begin
            auto block = [&](const py::handle& obj, const std::string& name, py::ssize_t k, bool three) {
                if (k == 0) return;
                names.push_back(name);
                py::array a = as_array(obj, names.back().c_str());
                T* ptr = three ? checked<T>(a, names.back().c_str(), {k, n, pl}, writable)
                               : checked<T>(a, names.back().c_str(), {n, pl}, writable);
                if (next != nullptr && ptr != next)
                    throw py::value_error("saved streams of layer " + s +
                                          " are not one buffer: allocate them with taylor_forward");
                if (start == nullptr) start = ptr;
                next = ptr + k * B;
            };
            if (l > 0) block(As[l], "As[" + s + "]", 1, false);
            block(dAs[l], "dAs[" + s + "]", k1, true);
            block(d2As[l], "d2As[" + s + "]", k2, true);
            if (start != nullptr) {
                S[l] = const_cast<T*>(start);
                names.push_back("streams of layer " + s);
                stacks.push_back(span(names.back().c_str(), start, (l > 0 ? 1 + k1 + k2 : k1 + k2) * B));
            }
        }
    }
};

template <class T>
void taylor_forward_t(const py::list& As, const py::list& dAs, const py::list& d2As, const py::list& Ws,
                      const py::list& bs, const py::list& activations, const py::list& first, const py::list& second) {
    TaylorArgs<T> t(As, dAs, d2As, Ws, bs, activations, first, second, true);
    std::vector<Span> inputs = t.weights;
    py::array x = as_array(As[0], "As[0]");
    inputs.push_back(span("As[0]", t.X, x.size()));
    all_apart(t.stacks, inputs);
    const int threads = get_num_threads();
    py::gil_scoped_release release;
    taylor_forward<T>(t.layers, t.dirs, t.X, t.S, t.n, threads);
}

void taylor_forward_py(const py::list& As, const py::list& dAs, const py::list& d2As, const py::list& Ws,
                       const py::list& bs, const py::list& activations, const py::list& first,
                       const py::list& second) {
    if (dtype_of(as_array(As[0], "As[0]"), "As[0]") == DType::f32)
        taylor_forward_t<float>(As, dAs, d2As, Ws, bs, activations, first, second);
    else
        taylor_forward_t<double>(As, dAs, d2As, Ws, bs, activations, first, second);
}

template <class T>
void taylor_backward_t(const py::list& As, const py::list& dAs, const py::list& d2As, const py::list& Ws,
                       const py::list& activations, const py::list& first, const py::list& second,
                       const py::array& G, const py::object& dG, const py::object& d2G, const py::list& dWs,
                       const py::list& dbs) {
    TaylorArgs<T> t(As, dAs, d2As, Ws, py::none(), activations, first, second, false);
    const std::size_t L = t.layers.size();
    const py::ssize_t n = t.n, pL = t.layers.back().p_out;
    const Index k1 = t.dirs.k1(), k2 = t.dirs.k2();
    if (k1 > 0 && t.S[0] == nullptr) throw py::value_error("the input's streams are missing");
    std::vector<Span> inputs = t.weights;
    inputs.insert(inputs.end(), t.stacks.begin(), t.stacks.end());
    py::array x = as_array(As[0], "As[0]");
    inputs.push_back(span("As[0]", t.X, x.size()));
    const T* g = checked<T>(G, "G", {n, pL}, false);
    inputs.push_back(span("G", g, n * pL));
    const T* dg = nullptr;
    const T* d2g = nullptr;
    if (!dG.is_none() && k1 > 0) {
        dg = checked<T>(as_array(dG, "dG"), "dG", {k1, n, pL}, false);
        inputs.push_back(span("dG", dg, k1 * n * pL));
    }
    if (!d2G.is_none() && k2 > 0) {
        d2g = checked<T>(as_array(d2G, "d2G"), "d2G", {k2, n, pL}, false);
        inputs.push_back(span("d2G", d2g, k2 * n * pL));
    }
    if (dWs.size() != L || dbs.size() != L) throw py::value_error("dWs and dbs need one array per layer");
    std::vector<T*> dw(L), db(L);
    std::vector<Span> outputs;
    std::vector<std::string> names;
    names.reserve(2 * L);
    for (std::size_t l = 0; l < L; ++l) {
        const py::ssize_t p = t.layers[l].p_in, q = t.layers[l].p_out;
        names.push_back("dWs[" + std::to_string(l) + "]");
        dw[l] = checked<T>(as_array(dWs[l], names.back().c_str()), names.back().c_str(), {p, q}, true);
        outputs.push_back(span(names.back().c_str(), dw[l], p * q));
        names.push_back("dbs[" + std::to_string(l) + "]");
        db[l] = checked<T>(as_array(dbs[l], names.back().c_str()), names.back().c_str(), {q}, true);
        outputs.push_back(span(names.back().c_str(), db[l], q));
    }
    all_apart(outputs, inputs);
    std::vector<const T*> S(t.S.begin(), t.S.end());
    const int threads = get_num_threads();
    py::gil_scoped_release release;
    taylor_backward<T>(t.layers, t.dirs, t.X, S, g, dg, d2g, dw, db, n, threads);
}

void taylor_backward_py(const py::list& As, const py::list& dAs, const py::list& d2As, const py::list& Ws,
                        const py::list& activations, const py::list& first, const py::list& second, const py::array& G,
                        const py::object& dG, const py::object& d2G, const py::list& dWs, const py::list& dbs) {
    if (dtype_of(G, "G") == DType::f32)
        taylor_backward_t<float>(As, dAs, d2As, Ws, activations, first, second, G, dG, d2G, dWs, dbs);
    else
        taylor_backward_t<double>(As, dAs, d2As, Ws, activations, first, second, G, dG, d2G, dWs, dbs);
}

// ---- threads and the BLAS ---------------------------------------------------------------------

int g_num_threads = 0;  // 0: not set by the user

void set_num_threads(int n) {
    if (n < 1) throw py::value_error("the number of threads must be >= 1, got " + std::to_string(n));
    g_num_threads = n;
    Blas& blas = Blas::instance();
    if (blas.loaded()) blas.set_num_threads(n);
}

int get_num_threads() {
    Blas& blas = Blas::instance();
    if (blas.loaded()) return blas.get_num_threads();
    return g_num_threads > 0 ? g_num_threads : 1;  // Eigen only: every kernel on the calling thread
}

}  // namespace

PYBIND11_MODULE(_cpu, m) {
    m.doc() = "backprop's cpu backend: the Backend protocol's kernels in C++17 on Eigen, with OpenBLAS for large products.";

    m.def("gemm", &gemm_py, py::arg("A"), py::arg("B"), py::arg("out"), py::arg("trans_a") = false,
          py::arg("trans_b") = false, py::arg("alpha") = 1.0, py::arg("beta") = 0.0,
          "out = alpha op(A) op(B) + beta out.");
    m.def("dense_forward", &dense_forward_py, py::arg("A"), py::arg("W"), py::arg("b"), py::arg("activation"),
          py::arg("out"), "out = act(A W + b): the product, then bias and activation in one pass.");
    m.def("dense_backward", &dense_backward_py, py::arg("G"), py::arg("A_prev"), py::arg("W"),
          py::arg("activation_prev"), py::arg("dW"), py::arg("db"), py::arg("G_prev"),
          "dW = A_prevᵀ G, db = 1ᵀ G, G_prev = act'(A_prev) ⊙ (G Wᵀ) (skipped when G_prev is None).");
    m.def("activation_forward", &activation_forward_py, py::arg("H"), py::arg("activation"), py::arg("out"));
    m.def("activation_backward", &activation_backward_py, py::arg("dA"), py::arg("A"), py::arg("activation"),
          py::arg("out"));
    m.def("colsum", &colsum_py, py::arg("G"), py::arg("out"));
    m.def("dropout", &dropout_py, py::arg("A"), py::arg("M"), py::arg("out"));
    m.def("loss", &loss_py, py::arg("name"), py::arg("F"), py::arg("Y"), py::arg("G"),
          "The loss value; G = dLoss/dF written in the same pass.");
    m.def("weight_penalty", &weight_penalty_py, py::arg("W"), py::arg("dW"), py::arg("l1"), py::arg("l2"));
    m.def("sgd_update", &sgd_update_py, py::arg("param"), py::arg("grad"), py::arg("velocity"), py::arg("lr"),
          py::arg("momentum") = 0.0, py::arg("nesterov") = false);
    m.def("adam_update", &adam_update_py, py::arg("param"), py::arg("grad"), py::arg("m"), py::arg("v"),
          py::arg("lr"), py::arg("beta1"), py::arg("beta2"), py::arg("eps"), py::arg("step"));

    m.def("taylor_forward", &taylor_forward_py, py::arg("As"), py::arg("dAs"), py::arg("d2As"), py::arg("Ws"),
          py::arg("bs"), py::arg("activations"), py::arg("first"), py::arg("second"),
          "The whole network's Taylor-mode forward (taylor.hpp): writes As[1:], dAs, d2As, each layer's\n"
          "streams one buffer (As[l], dAs[l], d2As[l] one after another; dAs[0], d2As[0] likewise).");
    m.def("taylor_backward", &taylor_backward_py, py::arg("As"), py::arg("dAs"), py::arg("d2As"), py::arg("Ws"),
          py::arg("activations"), py::arg("first"), py::arg("second"), py::arg("G"), py::arg("dG"), py::arg("d2G"),
          py::arg("dWs"), py::arg("dbs"), "Writes dWs and dbs through taylor_forward's network (dG, d2G None: zero).");

    g_main_thread = py::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>();
    bind_trainer<float>(m, "Trainer32");
    bind_trainer<double>(m, "Trainer64");

    m.def("set_num_threads", &set_num_threads, py::arg("n"),
          "Threads for the large products (OpenBLAS's pool); everything else runs on the calling thread.");
    m.def("get_num_threads", &get_num_threads);
    m.def(
        "load_blas",
        [](const std::string& path, const std::string& prefix, const std::string& suffix, bool ilp64) {
            std::string err = Blas::instance().load(path, prefix, suffix, ilp64);
            if (!err.empty()) throw py::value_error(err);
            if (g_num_threads > 0) Blas::instance().set_num_threads(g_num_threads);
        },
        py::arg("path"), py::arg("prefix") = "scipy_", py::arg("suffix") = "", py::arg("ilp64") = false,
        "Routes large products to the OpenBLAS in `path` (symbols `<prefix>cblas_sgemm<suffix>`, ...;\n"
        "ilp64: 64-bit integer arguments).");
    m.attr("eigen_version") = std::to_string(EIGEN_WORLD_VERSION) + "." + std::to_string(EIGEN_MAJOR_VERSION) + "." +
                              std::to_string(EIGEN_MINOR_VERSION);
}
