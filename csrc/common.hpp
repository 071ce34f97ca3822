// common.hpp: shared types of the cpu backend's kernels (row-major Eigen maps, activation and loss ids).
//
// Everything here is free of pybind11: the kernels see raw pointers and sizes, which the bindings
// (bindings*.cpp) have checked against the caller's numpy arrays before any kernel runs.
#pragma once

#include <Eigen/Core>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace backprop {

using Index = Eigen::Index;

// A C-contiguous (row-major) matrix, mapped over a caller's buffer: no copy.
template <class T>
using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using MatMap = Eigen::Map<Mat<T>>;
template <class T>
using CMatMap = Eigen::Map<const Mat<T>>;
// A flat array view for elementwise work (any shape, viewed as its n*p values).
template <class T>
using Vec = Eigen::Array<T, Eigen::Dynamic, 1>;
template <class T>
using VecMap = Eigen::Map<Vec<T>>;
template <class T>
using CVecMap = Eigen::Map<const Vec<T>>;
// A row (the bias b, or the column sums 1ᵀG).
template <class T>
using RowArr = Eigen::Array<T, 1, Eigen::Dynamic>;
template <class T>
using RowMap = Eigen::Map<RowArr<T>>;
template <class T>
using CRowMap = Eigen::Map<const RowArr<T>>;

// The activations of base.py, in its order.
enum class Act : int { tanh = 0, sigmoid = 1, relu = 2, leaky_relu = 3, identity = 4, none = 5 };
// The losses of base.py, in its order.
enum class Loss : int { sse = 0, mse = 1, cross_entropy = 2, bce = 3 };

constexpr double kLeakySlope = 0.01;  // base.LEAKY_SLOPE

inline Act act_from_name(const std::string& name) {
    if (name == "tanh") return Act::tanh;
    if (name == "sigmoid") return Act::sigmoid;
    if (name == "relu") return Act::relu;
    if (name == "leaky_relu") return Act::leaky_relu;
    if (name == "identity") return Act::identity;
    throw std::invalid_argument("unknown activation '" + name +
                                "'; valid activations: tanh, sigmoid, relu, leaky_relu, identity");
}

inline Loss loss_from_name(const std::string& name) {
    if (name == "sse") return Loss::sse;
    if (name == "mse") return Loss::mse;
    if (name == "cross_entropy") return Loss::cross_entropy;
    if (name == "bce") return Loss::bce;
    throw std::invalid_argument("unknown loss '" + name + "'; valid losses: sse, mse, cross_entropy, bce");
}

}  // namespace backprop
