// parallel.hpp: fn(worker, i) for i in [0, count), the calling thread and `threads - 1` others.
//
// Each worker takes one contiguous range of i. Callers make every i write its own outputs only,
// so which worker runs an i, and how many workers there are, never changes a result. An
// exception thrown by fn on any worker is re-raised on the calling thread after all have joined.
#pragma once

#include <algorithm>
#include <exception>
#include <system_error>
#include <thread>
#include <vector>

#include "common.hpp"

namespace backprop {

template <class F>
inline void parallel_for(Index count, int threads, const F& fn) {
    const int workers = int(std::max<Index>(1, std::min<Index>(threads, count)));
    auto run = [&](int w) {
        const Index begin = count * w / workers, end = count * (w + 1) / workers;
        for (Index i = begin; i < end; ++i) fn(w, i);
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
        }
    };
    for (int w = 1; w < workers; ++w) {
        try {
            pool.emplace_back(guarded, w);
        } catch (const std::system_error&) {  // no thread to be had: this range on the caller
            guarded(w);
        }
    }
    guarded(0);
    for (auto& t : pool) t.join();
    for (auto& e : errors)
        if (e) std::rethrow_exception(e);
}

}  // namespace backprop
