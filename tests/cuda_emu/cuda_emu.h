// cuda_emu.h: runs CUDA C++ kernels on the CPU, so CI without a GPU checks their arithmetic.
//
// A launch runs the blocks of the grid one after another. The threads of a block are fibers
// (ucontext) on one OS thread: each runs the kernel until it reaches __syncthreads(), which
// switches to the next thread; when every thread of the block waits at the barrier, all go on.
// That is CUDA's contract for __syncthreads(), so a kernel that forgets a barrier or calls it
// from divergent code is caught here (a thread that finished while others wait at a barrier is
// reported as an error). __shared__ variables become function statics: one copy shared by the
// threads of the block that runs, which is the only block running. threadIdx, blockIdx,
// blockDim and gridDim are globals set before each switch. Atomics are plain read-modify-writes
// (one OS thread), __threadfence() does nothing.
//
// Not part of the package: the test harness (emulator.py) compiles cuda/*.cu with g++ after
// this header, plus one generated launcher per kernel.
#pragma once
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

struct dim3 {
    unsigned int x = 1, y = 1, z = 1;
};
struct alignas(16) float4 {
    float x, y, z, w;
};
struct alignas(16) double2 {
    double x, y;
};

namespace cuda_emu {

inline dim3 threadIdx_, blockIdx_, blockDim_, gridDim_;
inline std::string error_;

enum State { READY, AT_BARRIER, DONE };
struct Fiber {
    ucontext_t ctx;
    char* stack = nullptr;
    State state = READY;
    dim3 tid;
};
const size_t kStack = 256 * 1024;
inline std::vector<Fiber> fibers_;
inline ucontext_t scheduler_;
inline Fiber* current_ = nullptr;
inline const std::function<void()>* body_ = nullptr;

inline void fiber_main() {
    (*body_)();
    current_->state = DONE;  // returns to uc_link, the scheduler
}

inline void syncthreads() {
    current_->state = AT_BARRIER;
    swapcontext(&current_->ctx, &scheduler_);
}

// Runs body() as every thread of every block; returns false with error_ set on misuse.
inline bool launch(dim3 grid, dim3 block, const std::function<void()>& body) {
    const unsigned long long nthreads = (unsigned long long)block.x * block.y * block.z;
    if (nthreads == 0 || nthreads > 1024 || block.z > 64) {
        error_ = "invalid block dimensions";
        return false;
    }
    if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535 ||
        grid.x > 2147483647u) {
        error_ = "invalid grid dimensions";
        return false;
    }
    while (fibers_.size() < nthreads) {
        fibers_.emplace_back();
        fibers_.back().stack = static_cast<char*>(malloc(kStack));
    }
    body_ = &body;
    blockDim_ = block;
    gridDim_ = grid;
    for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx) {
                blockIdx_ = dim3{bx, by, bz};
                for (unsigned long long t = 0; t < nthreads; ++t) {
                    Fiber& f = fibers_[t];
                    f.tid = dim3{unsigned(t % block.x), unsigned((t / block.x) % block.y),
                                 unsigned(t / ((unsigned long long)block.x * block.y))};
                    f.state = READY;
                    getcontext(&f.ctx);
                    f.ctx.uc_stack.ss_sp = f.stack;
                    f.ctx.uc_stack.ss_size = kStack;
                    f.ctx.uc_link = &scheduler_;
                    makecontext(&f.ctx, fiber_main, 0);
                }
                for (;;) {  // one pass runs every live thread up to its next barrier or its end
                    for (unsigned long long t = 0; t < nthreads; ++t) {
                        Fiber& f = fibers_[t];
                        if (f.state == DONE) continue;
                        f.state = READY;
                        current_ = &f;
                        threadIdx_ = f.tid;
                        swapcontext(&scheduler_, &f.ctx);
                    }
                    unsigned long long done = 0, waiting = 0;
                    for (unsigned long long t = 0; t < nthreads; ++t) {
                        done += fibers_[t].state == DONE;
                        waiting += fibers_[t].state == AT_BARRIER;
                    }
                    if (done == nthreads) break;
                    if (done != 0) {
                        error_ = "__syncthreads() reached by some threads of a block while others "
                                 "had finished (divergent barrier)";
                        return false;
                    }
                }
            }
    return true;
}

// ---- the launcher of a kernel of any signature, from CUDA's void** argument array ----------
template <typename T> struct code { static std::string get() { return "?"; } };
template <> struct code<float> { static std::string get() { return "f"; } };
template <> struct code<double> { static std::string get() { return "d"; } };
template <> struct code<int> { static std::string get() { return "i"; } };
template <> struct code<unsigned int> { static std::string get() { return "I"; } };
template <> struct code<long long> { static std::string get() { return "q"; } };
template <typename T> struct code<T*> {
    static std::string get() { return "P" + code<std::remove_cv_t<T>>::get(); }
};

template <typename... A>
std::string signature(void (*)(A...)) {
    std::string s;
    ((s += code<std::remove_cv_t<A>>::get(), s += ","), ...);
    return s;
}

template <typename... A, size_t... I>
void call(void (*kernel)(A...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<std::remove_cv_t<A>*>(args[I])...);
}

template <typename... A>
int run(void (*kernel)(A...), const unsigned int* geometry, void** args) {
    const dim3 grid{geometry[0], geometry[1], geometry[2]};
    const dim3 block{geometry[3], geometry[4], geometry[5]};
    const std::function<void()> body = [&] { call(kernel, args, std::index_sequence_for<A...>{}); };
    return launch(grid, block, body) ? 0 : 1;
}

}  // namespace cuda_emu

extern "C" const char* cuda_emu_error() { return cuda_emu::error_.c_str(); }

// ---- the CUDA vocabulary the kernels use ------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __shared__ static
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define threadIdx (::cuda_emu::threadIdx_)
#define blockIdx (::cuda_emu::blockIdx_)
#define blockDim (::cuda_emu::blockDim_)
#define gridDim (::cuda_emu::gridDim_)

inline void __syncthreads() { cuda_emu::syncthreads(); }
inline void __threadfence() {}
inline unsigned int atomicAdd(unsigned int* p, unsigned int v) {
    const unsigned int old = *p;
    *p = old + v;
    return old;
}
inline double __longlong_as_double(long long x) {
    double d;
    memcpy(&d, &x, sizeof d);
    return d;
}
