// bindings.cpp: the module backprop._cpu and the plain kernels' bindings (gemm, dense, activations,
// losses, optimizer updates), threads and the BLAS.
//
// The argument checks every binding makes are in bindings_common.hpp; the fused trainer's bindings
// are in bindings_trainer.cpp and the Taylor kernels' in bindings_taylor.cpp.
#include <string>

#include "bindings_common.hpp"
#include "dense.hpp"
#include "elementwise.hpp"
#include "gemm.hpp"
#include "loss.hpp"
#include "optim.hpp"

using namespace backprop;
using namespace backprop::bindings;

namespace {

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

// ---- threads and the BLAS ---------------------------------------------------------------------

int g_num_threads = 0;  // 0: not set by the user

void set_num_threads(int n) {
    if (n < 1) throw py::value_error("the number of threads must be >= 1, got " + std::to_string(n));
    g_num_threads = n;
    Blas& blas = Blas::instance();
    if (blas.loaded()) blas.set_num_threads(n);
}

void bind_kernels(py::module_& m) {
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
}

void bind_threads(py::module_& m) {
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
}

}  // namespace

int backprop::bindings::get_num_threads() {
    Blas& blas = Blas::instance();
    if (blas.loaded()) return blas.get_num_threads();
    return g_num_threads > 0 ? g_num_threads : 1;  // Eigen only: every kernel on the calling thread
}

PYBIND11_MODULE(_cpu, m) {
    m.doc() = "backprop's cpu backend: the Backend protocol's kernels in C++17 on Eigen, with OpenBLAS for large products.";

    bind_kernels(m);
    bind_taylor(m);
    bind_trainer(m);
    bind_threads(m);
    m.attr("eigen_version") = std::to_string(EIGEN_WORLD_VERSION) + "." + std::to_string(EIGEN_MAJOR_VERSION) + "." +
                              std::to_string(EIGEN_MINOR_VERSION);
}
