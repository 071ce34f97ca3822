// bindings_taylor.cpp: the Taylor-mode kernels' bindings (taylor_forward, taylor_backward: the whole
// network's input derivatives in one call).
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "bindings_common.hpp"
#include "taylor.hpp"

using namespace backprop;
using namespace backprop::bindings;

namespace {

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

}  // namespace

void backprop::bindings::bind_taylor(py::module_& m) {
    m.def("taylor_forward", &taylor_forward_py, py::arg("As"), py::arg("dAs"), py::arg("d2As"), py::arg("Ws"),
          py::arg("bs"), py::arg("activations"), py::arg("first"), py::arg("second"),
          "The whole network's Taylor-mode forward (taylor.hpp): writes As[1:], dAs, d2As, each layer's\n"
          "streams one buffer (As[l], dAs[l], d2As[l] one after another; dAs[0], d2As[0] likewise).");
    m.def("taylor_backward", &taylor_backward_py, py::arg("As"), py::arg("dAs"), py::arg("d2As"), py::arg("Ws"),
          py::arg("activations"), py::arg("first"), py::arg("second"), py::arg("G"), py::arg("dG"), py::arg("d2G"),
          py::arg("dWs"), py::arg("dbs"), "Writes dWs and dbs through taylor_forward's network (dG, d2G None: zero).");
}
