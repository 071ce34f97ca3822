// Shared definitions of the backprop CUDA kernels: activation codes, the activations and their
// derivatives (written with the activation's OUTPUT A, as the Backend protocol defines them),
// overloads that pick the float or double math function, and block-level reductions.
//
// The kernels are plain CUDA C++ (no warp intrinsics, no inline PTX, no tensor cores), so the
// same sources also compile with a host compiler through the project's emulation header
// (tests/cuda_emu/cuda_emu.h), which is how CI checks their arithmetic without a GPU.
//
// The Python loader (backprop/backends/cuda/program.py) pastes this header in front of the .cu
// files and compiles them as one NVRTC program; each .cu also includes it for nvcc and the
// emulator.
#pragma once

// Activation codes, the same numbers as ACT_CODES in backends/cuda/program.py.
#define BP_ACT_IDENTITY 0
#define BP_ACT_TANH 1
#define BP_ACT_SIGMOID 2
#define BP_ACT_RELU 3
#define BP_ACT_LEAKY_RELU 4
#define BP_LEAKY_SLOPE 0.01

// Loss codes for loss_pointwise_*, the same numbers as LOSS_CODES in backends/cuda/program.py.
#define BP_LOSS_SSE 0
#define BP_LOSS_MSE 1
#define BP_LOSS_BCE 2

// Threads per block of the 1-D kernels (elementwise, optimizer, reductions).
#define BP_THREADS 256

// Size of the block-sums buffer of the grid-wide sums (MAX_PARTIALS in program.py): no reducing
// kernel is launched with more blocks.
#define BP_MAX_PARTIALS 1024

// ---- float / double overloads of the math functions ----------------------------------------
__device__ __forceinline__ float bp_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double bp_tanh(double x) { return tanh(x); }
__device__ __forceinline__ float bp_exp(float x) { return expf(x); }
__device__ __forceinline__ double bp_exp(double x) { return exp(x); }
__device__ __forceinline__ float bp_log(float x) { return logf(x); }
__device__ __forceinline__ double bp_log(double x) { return log(x); }
__device__ __forceinline__ float bp_log1p(float x) { return log1pf(x); }
__device__ __forceinline__ double bp_log1p(double x) { return log1p(x); }
__device__ __forceinline__ float bp_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double bp_sqrt(double x) { return sqrt(x); }
__device__ __forceinline__ float bp_abs(float x) { return fabsf(x); }
__device__ __forceinline__ double bp_abs(double x) { return fabs(x); }
template <typename T> __device__ __forceinline__ T bp_max(T a, T b) { return a > b ? a : b; }
template <typename T> __device__ __forceinline__ T bp_min(T a, T b) { return a < b ? a : b; }

// A = act(H)
template <typename T>
__device__ __forceinline__ T bp_act(int act, T h) {
    switch (act) {
        case BP_ACT_TANH: return bp_tanh(h);
        case BP_ACT_SIGMOID: return T(1) / (T(1) + bp_exp(-h));
        case BP_ACT_RELU: return h > T(0) ? h : T(0);
        case BP_ACT_LEAKY_RELU: return h > T(0) ? h : T(BP_LEAKY_SLOPE) * h;
        default: return h;
    }
}

// act'(A), written with the activation's output A:
//   tanh 1 - A A,  sigmoid A (1 - A),  relu [A > 0],  leaky_relu [A > 0] + 0.01 [A <= 0],  identity 1
template <typename T>
__device__ __forceinline__ T bp_dact(int act, T a) {
    switch (act) {
        case BP_ACT_TANH: return T(1) - a * a;
        case BP_ACT_SIGMOID: return a * (T(1) - a);
        case BP_ACT_RELU: return a > T(0) ? T(1) : T(0);
        case BP_ACT_LEAKY_RELU: return a > T(0) ? T(1) : T(BP_LEAKY_SLOPE);
        default: return T(1);
    }
}

// ---- vector types for aligned 16-byte loads --------------------------------------------------
template <typename T> struct bp_vec;
template <> struct bp_vec<float> { typedef float4 type; enum { width = 4 }; };
template <> struct bp_vec<double> { typedef double2 type; enum { width = 2 }; };

// ---- block reductions ------------------------------------------------------------------------
// The sum of v over the NT threads of a 1-D block (a tree in shared memory, log2(NT) steps).
// Every thread of the block must call it; every thread gets the sum. ``red`` holds NT values.
template <int NT>
__device__ __forceinline__ double bp_block_sum(double v, double* red) {
    const int tid = threadIdx.x + threadIdx.y * blockDim.x;
    red[tid] = v;
    __syncthreads();
    for (int s = NT / 2; s > 0; s >>= 1) {
        if (tid < s) red[tid] += red[tid + s];
        __syncthreads();
    }
    const double total = red[0];
    __syncthreads();
    return total;
}

// Grid-wide sum of one value per block, finished by the last block to arrive (threadfence
// reduction): block b writes partials[b]; the last block adds the partials in block order (so
// the result does not depend on which block came last) and writes value[0] = scale * sum. One
// launch gives the loss value with no second kernel.
//
// The counter must be 0 when the kernel starts: the host sets it to 0 right before every launch
// (a memset), and the last block sets it back to 0. The last block also poisons all
// BP_MAX_PARTIALS block sums with NaN, and block 0 sets value[0] = NaN before it takes its
// ticket; so a counter that is not 0 at the start (a reset missing, a launch aborted midway)
// gives NaN (no block sees the last ticket, or one sees it too early and adds poisoned sums),
// not a silent wrong number.
template <int NT>
__device__ __forceinline__ void bp_grid_sum(double block_total, double* partials,
                                            unsigned int* counter, double* value, double scale,
                                            double* red) {
    __shared__ int is_last;
    const int tid = threadIdx.x + threadIdx.y * blockDim.x;
    if (tid == 0) {
        if (blockIdx.x == 0) value[0] = __longlong_as_double(0x7ff8000000000000LL);  // NaN
        partials[blockIdx.x] = block_total;
        __threadfence();
        const unsigned int ticket = atomicAdd(counter, 1u);
        is_last = (ticket == gridDim.x - 1);
    }
    __syncthreads();
    if (is_last) {
        __threadfence();
        double s = 0.0;
        for (unsigned int i = tid; i < gridDim.x; i += NT) s += ((volatile double*)partials)[i];
        s = bp_block_sum<NT>(s, red);
        for (int i = tid; i < BP_MAX_PARTIALS; i += NT)
            partials[i] = __longlong_as_double(0x7ff8000000000000LL);
        if (tid == 0) {
            value[0] = scale * s;
            *counter = 0u;
        }
    }
}
