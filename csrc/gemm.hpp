// gemm.hpp: C = alpha op(A) op(B) + beta C on row-major buffers, routed to the fastest product.
//
// Products with a narrow output (at most 16 wide, the Raissi network's 100x10x10) run in the
// register-blocked kernels of small_gemm.hpp; other small products in Eigen: no library call,
// no threads. Large products go to OpenBLAS (the scipy-openblas32 wheel, the same
// build numpy ships), loaded at run time with dlopen: on this kind of machine Eigen 3.4's own
// product reaches 64-71% of the FP32 peak where OpenBLAS reaches 81-87%. OpenBLAS is optional:
// without it every product runs in Eigen (single-threaded), with the same results to rounding.
#pragma once

#include <dlfcn.h>

#include <atomic>
#include <cstdint>
#include <string>

#include "common.hpp"
#include "small_gemm.hpp"

namespace backprop {

// The OpenBLAS entry points, found by name in a shared library chosen at run time.
struct Blas {
    // cblas_?gemm with 32-bit integers (blasint = int), CBLAS enums as ints.
    using sgemm_t = void (*)(int, int, int, int, int, int, float, const float*, int, const float*, int,
                             float, float*, int);
    using dgemm_t = void (*)(int, int, int, int, int, int, double, const double*, int, const double*,
                             int, double, double*, int);
    using set_threads_t = void (*)(int);
    using get_threads_t = int (*)();

    sgemm_t sgemm = nullptr;
    dgemm_t dgemm = nullptr;
    set_threads_t set_num_threads = nullptr;
    get_threads_t get_num_threads = nullptr;
    std::string path;
    // Products with m*n*k below this many multiply-adds stay in Eigen.
    std::atomic<long long> threshold{40000};

    bool loaded() const { return sgemm != nullptr && dgemm != nullptr; }

    static Blas& instance() {
        static Blas blas;
        return blas;
    }

    // Loads `lib` and finds `<prefix>cblas_sgemm`, ... in it. Returns an error message or "".
    std::string load(const std::string& lib, const std::string& prefix) {
        void* handle = dlopen(lib.c_str(), RTLD_NOW | RTLD_LOCAL);
        if (handle == nullptr) {
            const char* err = dlerror();
            return std::string("cannot load ") + lib + ": " + (err ? err : "unknown error");
        }
        auto find = [&](const char* name) { return dlsym(handle, (prefix + name).c_str()); };
        auto s = reinterpret_cast<sgemm_t>(find("cblas_sgemm"));
        auto d = reinterpret_cast<dgemm_t>(find("cblas_dgemm"));
        auto st = reinterpret_cast<set_threads_t>(find("openblas_set_num_threads"));
        auto gt = reinterpret_cast<get_threads_t>(find("openblas_get_num_threads"));
        if (!s || !d || !st || !gt) return lib + " lacks " + prefix + "cblas_sgemm/dgemm or thread control";
        sgemm = s;
        dgemm = d;
        set_num_threads = st;
        get_num_threads = gt;
        path = lib;
        return "";
    }
};

namespace detail {
constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;  // the CBLAS enum values

inline void blas_gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float* A, int lda,
                      const float* B, int ldb, float beta, float* C, int ldc) {
    Blas::instance().sgemm(kRowMajor, ta ? kTrans : kNoTrans, tb ? kTrans : kNoTrans, m, n, k, alpha,
                           A, lda, B, ldb, beta, C, ldc);
}
inline void blas_gemm(bool ta, bool tb, int m, int n, int k, double alpha, const double* A, int lda,
                      const double* B, int ldb, double beta, double* C, int ldc) {
    Blas::instance().dgemm(kRowMajor, ta ? kTrans : kNoTrans, tb ? kTrans : kNoTrans, m, n, k, alpha,
                           A, lda, B, ldb, beta, C, ldc);
}

// The Eigen product, op(A) op(B) with op chosen at compile time so Eigen sees plain expressions.
template <class T, class EA, class EB>
inline void eigen_product(const EA& opA, const EB& opB, T alpha, T beta, MatMap<T>& Cm) {
    if (beta == T(0)) {
        Cm.noalias() = alpha * (opA * opB);
    } else {
        if (beta != T(1)) Cm *= beta;
        Cm.noalias() += alpha * (opA * opB);
    }
}
}  // namespace detail

// C (m x n) = alpha op(A) op(B) + beta C; op(A) is m x k, op(B) is k x n; all C-contiguous.
// A is stored m x k (k x m when trans_a), B is stored k x n (n x k when trans_b).
// With beta == 0, C is not read (it may hold garbage or NaN).
template <class T>
inline void gemm(bool trans_a, bool trans_b, Index m, Index n, Index k, T alpha, const T* A,
                 const T* B, T beta, T* C) {
    if (m == 0 || n == 0) return;
    if (alpha == T(1) && beta == T(0) && small::gemm<T>(trans_a, trans_b, m, n, k, A, B, C)) return;
    Blas& blas = Blas::instance();
    if (blas.loaded() && k > 0 && m * n * k >= blas.threshold.load(std::memory_order_relaxed)) {
        detail::blas_gemm(trans_a, trans_b, int(m), int(n), int(k), alpha, A, int(trans_a ? m : k), B,
                          int(trans_b ? k : n), beta, C, int(n));
        return;
    }
    MatMap<T> Cm(C, m, n);
    if (k == 0) {  // an empty sum
        if (beta == T(0))
            Cm.setZero();
        else
            Cm *= beta;
        return;
    }
    if (!trans_a && !trans_b)
        detail::eigen_product<T>(CMatMap<T>(A, m, k), CMatMap<T>(B, k, n), alpha, beta, Cm);
    else if (trans_a && !trans_b)
        detail::eigen_product<T>(CMatMap<T>(A, k, m).transpose(), CMatMap<T>(B, k, n), alpha, beta, Cm);
    else if (!trans_a && trans_b)
        detail::eigen_product<T>(CMatMap<T>(A, m, k), CMatMap<T>(B, n, k).transpose(), alpha, beta, Cm);
    else
        detail::eigen_product<T>(CMatMap<T>(A, k, m).transpose(), CMatMap<T>(B, n, k).transpose(), alpha,
                                 beta, Cm);
}

}  // namespace backprop
