// gemm.hpp: C = alpha op(A) op(B) + beta C on row-major buffers, routed to the fastest product.
//
// Products with a narrow output (at most 32 wide: the Raissi network's 100x10x10, the 20-wide
// layers of a physics-informed network) run in the register-blocked kernels of small_gemm.hpp;
// other small products in Eigen: no library call, no threads. Large products go to OpenBLAS
// (the scipy-openblas32 wheel, the same build numpy ships; numpy's own copy when it has one),
// loaded at run time with dlopen: on this kind of machine Eigen 3.4's own
// product reaches 64-71% of the FP32 peak where OpenBLAS reaches 81-87%. OpenBLAS is optional:
// without it every product runs in Eigen (single-threaded), with the same results to rounding.
//
// Which path a product takes depends on its sizes only, never on where its buffers start: the
// narrow kernels pack their operand into an aligned buffer of their own, Eigen's blocked products
// load and store unaligned, and Eigen's coefficient-based path for tiny products (its vector part
// and its scalar part, split at the first aligned address of each row, add in different orders; a
// probe of tiny shapes at 17 offsets found them equal with GCC 12, which contracts both into the
// same FMAs, but nothing promises it) is turned off by EIGEN_GEMM_TO_COEFFBASED_THRESHOLD=0
// (CMakeLists.txt; checked below).
#pragma once

#include <dlfcn.h>

#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>

#include "common.hpp"
#include "small_gemm.hpp"

static_assert(EIGEN_GEMM_TO_COEFFBASED_THRESHOLD == 0,
              "build with EIGEN_GEMM_TO_COEFFBASED_THRESHOLD=0: Eigen's lazy products depend on addresses");

namespace backprop {

// The OpenBLAS entry points, found by name in a shared library chosen at run time: numpy's own
// OpenBLAS when numpy bundles one (64-bit integers, symbols like scipy_cblas_sgemm64_), so that
// numpy and this backend share ONE thread pool, else the scipy-openblas32 wheel's.
struct Blas {
    // cblas_?gemm, CBLAS enums as ints, with 32-bit (LP64) or 64-bit (ILP64) integers.
    template <class T, class I>
    using gemm_t = void (*)(int, int, int, I, I, I, T, const T*, I, const T*, I, T, T*, I);
    using set_threads_t = void (*)(int);
    using get_threads_t = int (*)();

    gemm_t<float, int> sgemm32 = nullptr;
    gemm_t<double, int> dgemm32 = nullptr;
    gemm_t<float, std::int64_t> sgemm64 = nullptr;
    gemm_t<double, std::int64_t> dgemm64 = nullptr;
    set_threads_t set_num_threads = nullptr;
    get_threads_t get_num_threads = nullptr;
    // Products with m*n*k below this many multiply-adds stay in Eigen.
    static constexpr long long kThreshold = 40000;

    bool loaded() const { return sgemm32 != nullptr || sgemm64 != nullptr; }

    static Blas& instance() {
        static Blas blas;
        return blas;
    }

    // Loads `lib` and finds `<prefix>cblas_sgemm<suffix>`, ... in it (ilp64: 64-bit integers).
    // Returns an error message, or "" once the products are routed there.
    std::string load(const std::string& lib, const std::string& prefix, const std::string& suffix, bool ilp64) {
        void* handle = dlopen(lib.c_str(), RTLD_NOW | RTLD_LOCAL);
        if (handle == nullptr) {
            const char* err = dlerror();
            return std::string("cannot load ") + lib + ": " + (err ? err : "unknown error");
        }
        auto find = [&](const char* name) { return dlsym(handle, (prefix + name + suffix).c_str()); };
        void* s = find("cblas_sgemm");
        void* d = find("cblas_dgemm");
        auto st = reinterpret_cast<set_threads_t>(find("openblas_set_num_threads"));
        auto gt = reinterpret_cast<get_threads_t>(find("openblas_get_num_threads"));
        if (!s || !d || !st || !gt)
            return lib + " lacks " + prefix + "cblas_sgemm" + suffix + ", cblas_dgemm or the thread controls";
        sgemm32 = nullptr, dgemm32 = nullptr, sgemm64 = nullptr, dgemm64 = nullptr;
        if (ilp64) {
            dgemm64 = reinterpret_cast<gemm_t<double, std::int64_t>>(d);
            sgemm64 = reinterpret_cast<gemm_t<float, std::int64_t>>(s);
        } else {
            dgemm32 = reinterpret_cast<gemm_t<double, int>>(d);
            sgemm32 = reinterpret_cast<gemm_t<float, int>>(s);
        }
        set_num_threads = st;
        get_num_threads = gt;
        return "";
    }
};

namespace detail {
constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;  // the CBLAS enum values

template <class T>
inline void blas_gemm(bool ta, bool tb, Index m, Index n, Index k, T alpha, const T* A, Index lda, const T* B,
                      Index ldb, T beta, T* C, Index ldc) {
    const Blas& blas = Blas::instance();
    const int opa = ta ? kTrans : kNoTrans, opb = tb ? kTrans : kNoTrans;
    if constexpr (std::is_same<T, float>::value) {
        if (blas.sgemm64)
            return blas.sgemm64(kRowMajor, opa, opb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
        blas.sgemm32(kRowMajor, opa, opb, int(m), int(n), int(k), alpha, A, int(lda), B, int(ldb), beta, C, int(ldc));
    } else {
        if (blas.dgemm64)
            return blas.dgemm64(kRowMajor, opa, opb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
        blas.dgemm32(kRowMajor, opa, opb, int(m), int(n), int(k), alpha, A, int(lda), B, int(ldb), beta, C, int(ldc));
    }
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
    const Blas& blas = Blas::instance();
    constexpr Index kIntMax = std::numeric_limits<int>::max();  // an LP64 BLAS takes int sizes
    const bool int32_ok = blas.sgemm64 != nullptr || (m <= kIntMax && n <= kIntMax && k <= kIntMax);
    if (blas.loaded() && k > 0 && int32_ok && m * n * k >= Blas::kThreshold) {
        detail::blas_gemm<T>(trans_a, trans_b, m, n, k, alpha, A, trans_a ? m : k, B, trans_b ? k : n, beta, C, n);
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
