// lanes.hpp: elementwise kernels and their sums, computed by the same instructions at any address.
//
// Why. Eigen's assignment loop vectorizes only the run of elements between the first and the last
// aligned destination address (64 bytes with AVX-512) and computes the elements before and after
// that run with the scalar functions. With Eigen's default EIGEN_FAST_MATH the vector sqrt is an
// rsqrt estimate refined by Newton steps and the vector exp/log are Eigen's own polynomials, while
// the scalar ones are std::sqrt/std::exp/std::log (and the compiler may contract a*b+c into an FMA
// in one loop and not the other). numpy's buffers are only 16-byte aligned, so which elements took
// which path, hence the last bits of an activation, a loss gradient or an Adam update, depended on
// where the caller's arrays happened to start: three identical fits in one process ended at three
// different losses. The same can happen in Eigen's reductions over a Map (redux starts its packets
// at the first aligned address) and in its coefficient-based "lazy" products of tiny matrices.
//
// What. assign() evaluates an Eigen array expression packet by packet from the first element, with
// unaligned loads and stores, so every element goes through the same vector code (each lane of a
// packet is computed from that lane's inputs alone). The values after the last whole packet are
// taken from the packet of the last L values (evaluated first, so an in-place output does not feed
// it); fewer than L values are evaluated in one packet of zero-padded copies. An expression that
// Eigen cannot vectorize (no packet form, e.g. select) is evaluated by the scalar code for every
// element. sum() evaluates the same way and adds value i into double accumulator i mod L (L values
// to a packet), the accumulators combined by a fixed tree: the order depends only on the size.
// Nothing here reads the address of a buffer. Elementwise kernels (elementwise.hpp, loss.hpp,
// optim.hpp) write through assign() and reduce through sum(); colsum and the narrow products
// (small_gemm.hpp) have fixed orders of their own; Eigen's products are built with
// EIGEN_GEMM_TO_COEFFBASED_THRESHOLD=0 (CMakeLists.txt, checked in gemm.hpp) so that no product takes
// the lazy coefficient-based path; Eigen's blocked GEMM and GEMV use unaligned loads and stores and
// split work by sizes only.
//
// Guarantees (tests/test_reproducible.py):
// - the same inputs give the same bits, at any buffer addresses, in one process or across
//   processes, for the same build of this module on the same machine with the same thread count;
// - across thread counts: not promised. Products large enough for OpenBLAS are split between its
//   threads (by rows and columns of the result, not within a sum); the `wide` benchmark's products
//   and training step gave the same bits with 1 and 2 threads on the machine of
//   benchmarks/RESULTS.md (numpy's OpenBLAS and the scipy-openblas32 wheel's), but OpenBLAS does
//   not promise it. Everything else runs on the calling thread;
// - across machines, instruction sets or builds (an AVX2 build against an AVX-512 one, another
//   compiler or Eigen): not promised. The packet width fixes the accumulation order of sum() and the
//   vector functions differ between instruction sets; -march=native makes a build machine-specific.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <utility>

#include "common.hpp"

namespace backprop {
namespace lanes {

template <class T>
using Packet = typename Eigen::internal::packet_traits<T>::type;
template <class T>
constexpr Index kLanes = Eigen::internal::unpacket_traits<Packet<T>>::size;
// An input of an elementwise expression: `size` values read in place (any alignment).
template <class T>
using In = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;

namespace detail {

template <class T, std::size_t N>
using Ptrs = std::array<const T*, N>;

template <class T, class F, std::size_t N, std::size_t... I>
auto make(const F& f, const Ptrs<T, N>& in, Index size, std::index_sequence<I...>) {
    return f(In<T>(in[I], size)...);
}

template <class T, class F, std::size_t N>
using Expr = decltype(make<T>(std::declval<const F&>(), std::declval<const Ptrs<T, N>&>(), Index(0),
                              std::make_index_sequence<N>()));

template <class E>
constexpr bool vectorized = (Eigen::internal::evaluator<E>::Flags & Eigen::ActualPacketAccessBit) != 0 &&
                            (Eigen::internal::evaluator<E>::Flags & Eigen::LinearAccessBit) != 0;

// Evaluates f(In(in[0]), In(in[1]), ...) over `size` values: packet(p, start, from, to) for each
// packet p, whose lane j holds value start + j and of which values [from, to) are to be used; or,
// when the expression has no vector form, scalar(value, i) for every value. The packets start at
// 0, L, 2L, ...; the values after the last whole packet come from the packet of the last L values
// (evaluated before any other, so that an output written over the first input does not feed it),
// or, when there are fewer than L values, from a packet of zero-padded copies.
template <class T, std::size_t N, class F, class OnPacket, class OnScalar>
inline void evaluate(Index size, const Ptrs<T, N>& in, const F& f, OnPacket&& packet, OnScalar&& scalar) {
    using E = Expr<T, F, N>;
    using Ev = Eigen::internal::evaluator<E>;
    constexpr auto seq = std::make_index_sequence<N>();
    if constexpr (vectorized<E>) {
        constexpr Index L = kLanes<T>;
        const Index body = size / L * L;
        if (size < L) {
            alignas(64) T pad[N][L];
            Ptrs<T, N> padded;
            for (std::size_t k = 0; k < N; ++k) {
                std::fill_n(pad[k], L, T(0));
                std::copy_n(in[k], size, pad[k]);
                padded[k] = pad[k];
            }
            const E e = make<T>(f, padded, L, seq);
            Ev ev(e);
            packet(ev.template packet<Eigen::Unaligned, Packet<T>>(0), 0, 0, size);
            return;
        }
        const E e = make<T>(f, in, size, seq);
        Ev ev(e);
        const Packet<T> last = ev.template packet<Eigen::Unaligned, Packet<T>>(size - L);
        for (Index i = 0; i < body; i += L) packet(ev.template packet<Eigen::Unaligned, Packet<T>>(i), i, i, i + L);
        if (body < size) packet(last, size - L, body, size);
    } else {
        const E e = make<T>(f, in, size, seq);
        Ev ev(e);
        for (Index i = 0; i < size; ++i) scalar(T(ev.coeff(i)), i);
    }
}

}  // namespace detail

// out[i] = f(In(in0), In(in1), ...)[i] for i < size. `out` may be exactly the first input (in
// place); it must not overlap any other input.
template <class T, class F, class... P>
inline void assign(T* out, Index size, const F& f, const P*... in) {
    static_assert(sizeof...(P) >= 1, "an elementwise expression needs an input");
    const detail::Ptrs<T, sizeof...(P)> ins{in...};
    detail::evaluate<T>(
        size, ins, f,
        [out](const auto& p, Index start, Index from, Index to) {
            if (from == start && to == start + kLanes<T>) {
                Eigen::internal::pstoreu(out + start, p);
            } else {
                alignas(64) T tmp[kLanes<T>];
                Eigen::internal::pstoreu(tmp, p);
                std::copy(tmp + (from - start), tmp + (to - start), out + from);
            }
        },
        [out](T v, Index i) { out[i] = v; });
}

// Σ_i f(In(in0), ...)[i] in double: value i goes to accumulator i mod kLanes (lane by lane, in index
// order), and the kLanes accumulators are added by a fixed tree.
template <class T, class F, class... P>
inline double sum(Index size, const F& f, const P*... in) {
    static_assert(sizeof...(P) >= 1, "an elementwise expression needs an input");
    constexpr Index L = kLanes<T>;
    double acc[L] = {};
    const detail::Ptrs<T, sizeof...(P)> ins{in...};
    detail::evaluate<T>(
        size, ins, f,
        [&acc](const auto& p, Index start, Index from, Index to) {
            alignas(64) T tmp[L];
            Eigen::internal::pstoreu(tmp, p);
            if (from == start && to == start + L) {  // start is a multiple of L
                for (Index j = 0; j < L; ++j) acc[j] += double(tmp[j]);
            } else {
                for (Index i = from; i < to; ++i) acc[i % L] += double(tmp[i - start]);
            }
        },
        [&acc](T v, Index i) { acc[i % L] += double(v); });
    for (Index width = L / 2; width >= 1; width /= 2)
        for (Index j = 0; j < width; ++j) acc[j] += acc[j + width];
    return acc[0];
}

}  // namespace lanes
}  // namespace backprop
