// bindings_common.hpp: the argument checks and buffer helpers shared by every part of the backprop._cpu
// bindings.
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
//
// The module is bound in parts, one translation unit each: bindings.cpp (the module definition,
// the plain kernels, threads and the BLAS), bindings_trainer.cpp (the fused training step) and
// bindings_taylor.cpp (the Taylor-mode kernels).
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <initializer_list>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "common.hpp"

namespace py = pybind11;

namespace backprop {
namespace bindings {

// ---- argument checks --------------------------------------------------------------------------

enum class DType { f32, f64 };

inline std::string shape_str(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t d = 0; d < a.ndim(); ++d) {
        if (d) s += ", ";
        s += std::to_string(a.shape(d));
    }
    if (a.ndim() == 1) s += ",";
    return s + ")";
}

inline py::array as_array(const py::handle& obj, const char* name) {
    if (!py::isinstance<py::array>(obj))
        throw py::type_error(std::string(name) + " must be a numpy.ndarray, got " +
                             std::string(py::str(py::type::of(obj).attr("__name__"))));
    return py::reinterpret_borrow<py::array>(obj);
}

// Equivalent dtypes, not the same object: an unpickled array's float32 is a float32 all the same.
inline bool dtype_is(const py::array& a, const py::dtype& want) {
    return py::detail::npy_api::get().PyArray_EquivTypes_(a.dtype().ptr(), want.ptr());
}

inline DType dtype_of(const py::array& a, const char* name) {
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
inline void no_overlap(const Span& out, std::initializer_list<Span> others, bool in_place = false) {
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

inline Act act_arg(const py::object& name, bool allow_none) {
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

// ---- the parts of the module ------------------------------------------------------------------

// The backend's thread count: OpenBLAS's when it is loaded, else the user's setting (bindings.cpp).
int get_num_threads();

void bind_taylor(py::module_& m);   // taylor_forward, taylor_backward (bindings_taylor.cpp)
void bind_trainer(py::module_& m);  // Trainer32, Trainer64 (bindings_trainer.cpp)

}  // namespace bindings
}  // namespace backprop
