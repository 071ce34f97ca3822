// scratch.hpp: workspaces kept from one call to the next, so that a kernel's buffers are not
// fresh memory every call.
//
// A kernel that runs on several threads gives each worker a workspace of a few hundred KB
// (taylor.hpp: the block's streams and the weight gradients' partial sums). Allocated per call,
// that memory came from the operating system page by page each time (the allocator hands large
// blocks back when they are freed): about 190 page faults per forward and backward of the Burgers
// network, about 5% of its time on two threads. A Scratch<W> takes a W from a process-wide list of
// free ones (a new W when the list is empty) and puts it back when it goes out of scope, with the
// capacity its buffers grew to; at most kKeep of each kind are kept. Calls running at the same
// time each get their own workspaces. What a workspace holds on entry is whatever the last user
// left: kernels size and fill what they read.
#pragma once

#include <algorithm>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace backprop {

template <class W>
class ScratchList {
public:
    static constexpr std::size_t kKeep = 64;

    std::unique_ptr<W> take() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            if (!free_.empty()) {
                std::unique_ptr<W> w = std::move(free_.back());
                free_.pop_back();
                return w;
            }
        }
        return std::make_unique<W>();
    }

    void give(std::unique_ptr<W> w) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (free_.size() < kKeep) free_.push_back(std::move(w));
    }

    static ScratchList& instance() {
        static ScratchList* list = new ScratchList;  // never destroyed: no order problem at exit
        return *list;
    }

private:
    std::mutex mutex_;
    std::vector<std::unique_ptr<W>> free_;
};

template <class W>
class Scratch {
public:
    Scratch() : w_(ScratchList<W>::instance().take()) {}
    ~Scratch() {
        if (w_) ScratchList<W>::instance().give(std::move(w_));
    }
    Scratch(Scratch&& other) noexcept = default;
    Scratch& operator=(Scratch&&) = delete;
    Scratch(const Scratch&) = delete;
    Scratch& operator=(const Scratch&) = delete;

    W& operator*() { return *w_; }
    W* operator->() { return w_.get(); }

private:
    std::unique_ptr<W> w_;
};

// n workspaces of kind W (one per worker).
template <class W>
std::vector<Scratch<W>> scratch_for(int n) {
    std::vector<Scratch<W>> out;
    out.reserve(std::size_t(std::max(1, n)));
    for (int i = 0; i < std::max(1, n); ++i) out.emplace_back();
    return out;
}

}  // namespace backprop
