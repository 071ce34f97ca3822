// parallel.hpp: fn(worker, i) for i in [0, count), the calling thread and `threads - 1` others.
//
// Each worker takes the next i not yet taken, one at a time, until none is left: a worker that
// starts late (a new thread takes 10-30 µs to start) or is held up (a core shared with other
// work) leaves more of the i to the others, where fixed ranges would make every worker wait for
// the slowest (the Taylor kernels on a shared 2-core machine: 3-5% faster in the median call, the
// same in the fastest calls). Callers make every i write its own outputs only, so which worker
// runs an i, and how many workers there are, never changes a result. An exception thrown by fn on
// any worker is re-raised on the calling thread after all have joined; the other workers finish
// the i they hold and take no more.
#pragma once

#include <algorithm>
#include <atomic>
#include <exception>
#include <system_error>
#include <thread>
#include <vector>

#include "common.hpp"

namespace backprop {

template <class F>
inline void parallel_for(Index count, int threads, const F& fn) {
    const int workers = int(std::max<Index>(1, std::min<Index>(threads, count)));
    std::atomic<Index> next{0};
    auto run = [&](int w) {
        for (Index i = next.fetch_add(1, std::memory_order_relaxed); i < count;
             i = next.fetch_add(1, std::memory_order_relaxed))
            fn(w, i);
    };
    if (workers == 1) return run(0);
    std::vector<std::exception_ptr> errors(workers);
    std::vector<std::thread> pool;
    pool.reserve(workers - 1);
    auto guarded = [&](int w) {
        try {
            run(w);
        } catch (...) {
            errors[w] = std::current_exception();
            next.store(count, std::memory_order_relaxed);  // no more i for anyone
        }
    };
    for (int w = 1; w < workers; ++w) {
        try {
            pool.emplace_back(guarded, w);
        } catch (const std::system_error&) {  // no thread to be had: the others take its share
            break;
        }
    }
    guarded(0);
    for (auto& t : pool) t.join();
    for (auto& e : errors)
        if (e) std::rethrow_exception(e);
}

}  // namespace backprop
