// Optimizer updates of backprop, in place.
//
// Launch geometry (both kernels): block (256, 1, 1); grid (min(ceil(n / 256), 65535 * 4), 1, 1)
// with a grid-stride loop over the n parameters (64-bit indices).
#include "common.cuh"

// SGD with momentum (PyTorch's form):
//   v = momentum v + g;   step = g + momentum v (nesterov) or v;   param -= lr step
// velocity == nullptr: plain gradient descent, param -= lr g.
// hyper != nullptr: lr is read from hyper[0] (a device array, so a replayed CUDA graph uses the
// current rate); skip != nullptr: nothing is updated when *skip != 0 (a graph-replayed step whose
// loss was not finite).
template <typename T>
__device__ __forceinline__ void bp_sgd_update(T* __restrict__ param, const T* __restrict__ grad,
                                              T* __restrict__ velocity, long long n, T lr,
                                              T momentum, int nesterov, const T* __restrict__ hyper,
                                              const long long* __restrict__ skip) {
    if (skip != nullptr && *skip != 0) return;
    if (hyper != nullptr) lr = hyper[0];
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        const T g = grad[i];
        if (velocity == nullptr) {
            param[i] -= lr * g;
        } else {
            const T v = momentum * velocity[i] + g;
            velocity[i] = v;
            param[i] -= lr * (nesterov ? g + momentum * v : v);
        }
    }
}

// Adam (Kingma & Ba, Algorithm 1):
//   m = β1 m + (1-β1) g;   v = β2 v + (1-β2) g²
//   param -= lr (m / bc1) / (sqrt(v / bc2) + eps),   bc1 = 1 - β1^step, bc2 = 1 - β2^step
// The step-dependent scalars lr, bc1, bc2 are read from the device array hyper = [lr, bc1, bc2]
// when hyper != nullptr (so a captured CUDA graph replays with the current step), else the
// arguments are used. skip != nullptr: nothing is updated when *skip != 0.
template <typename T>
__device__ __forceinline__ void bp_adam_update(T* __restrict__ param, const T* __restrict__ grad,
                                               T* __restrict__ m, T* __restrict__ v, long long n,
                                               T lr, T beta1, T beta2, T eps, T bc1, T bc2,
                                               const T* __restrict__ hyper,
                                               const long long* __restrict__ skip) {
    if (skip != nullptr && *skip != 0) return;
    if (hyper != nullptr) {
        lr = hyper[0];
        bc1 = hyper[1];
        bc2 = hyper[2];
    }
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        const T g = grad[i];
        const T mi = beta1 * m[i] + (T(1) - beta1) * g;
        const T vi = beta2 * v[i] + (T(1) - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        param[i] -= lr * (mi / bc1) / (bp_sqrt(vi / bc2) + eps);
    }
}

#define BP_OPTIM(SUFFIX, T)                                                                    \
    extern "C" __global__ void sgd_update_##SUFFIX(T* __restrict__ param,                      \
                                                   const T* __restrict__ grad,                 \
                                                   T* __restrict__ velocity, long long n, T lr, \
                                                   T momentum, int nesterov,                   \
                                                   const T* __restrict__ hyper,                \
                                                   const long long* __restrict__ skip) {       \
        bp_sgd_update<T>(param, grad, velocity, n, lr, momentum, nesterov, hyper, skip);       \
    }                                                                                          \
    extern "C" __global__ void adam_update_##SUFFIX(                                           \
        T* __restrict__ param, const T* __restrict__ grad, T* __restrict__ m, T* __restrict__ v, \
        long long n, T lr, T beta1, T beta2, T eps, T bc1, T bc2, const T* __restrict__ hyper, \
        const long long* __restrict__ skip) {                                                  \
        bp_adam_update<T>(param, grad, m, v, n, lr, beta1, beta2, eps, bc1, bc2, hyper, skip); \
    }

BP_OPTIM(f32, float)
BP_OPTIM(f64, double)
