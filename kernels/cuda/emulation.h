// Runs fastdl's CUDA kernels on the CPU, for testing without a GPU (kernels/cuda/emulator.py compiles a .cu
// file with g++ and this header forced in front). Each block's threads are fibers (ucontext) run one at a time
// until they reach __syncthreads() or a warp shuffle; a barrier opens when every thread of the block (or warp)
// that has not returned waits at it, as on the hardware. Blocks run one after another, so __shared__ memory can
// be a static variable. Slow, single-threaded and deterministic: it checks indexing, reductions and formulas,
// not speed or races between blocks.
#pragma once

#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

namespace fastdl_emulation {

enum State { RUNNING, AT_BLOCK_BARRIER, AT_WARP_BARRIER, FINISHED };

// Switching fibers: on x86-64 a few instructions that swap the callee-saved registers and the stack pointer
// (ucontext's swapcontext also saves the signal mask: a system call per switch, 10x slower); elsewhere ucontext.
#if defined(__x86_64__)
extern "C" void fastdl_switch_stack(void** save_sp, void* load_sp);
asm(R"(
.text
.globl fastdl_switch_stack
.type fastdl_switch_stack,@function
fastdl_switch_stack:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
)");
struct Context {
    void* sp = nullptr;
};
inline void switch_context(Context* save, Context* load) { fastdl_switch_stack(&save->sp, load->sp); }
inline void start_context(Context* context, std::vector<char>& stack, void (*entry)()) {
    auto top = (uintptr_t)(stack.data() + stack.size()) & ~(uintptr_t)15;
    void** sp = (void**)top;
    *--sp = nullptr;         // where a caller's return address would be: keeps the ABI's stack alignment
    *--sp = (void*)entry;    // fastdl_switch_stack's ret jumps here
    for (int k = 0; k < 6; ++k) *--sp = nullptr;  // rbp, rbx, r12-r15
    context->sp = sp;
}
#else
struct Context {
    ucontext_t uc;
};
inline void switch_context(Context* save, Context* load) { swapcontext(&save->uc, &load->uc); }
inline void start_context(Context* context, std::vector<char>& stack, void (*entry)()) {
    getcontext(&context->uc);
    context->uc.uc_stack.ss_sp = stack.data();
    context->uc.uc_stack.ss_size = stack.size();
    context->uc.uc_link = nullptr;
    makecontext(&context->uc, entry, 0);
}
#endif

struct Fiber {
    Context context;
    std::vector<char> stack;
    State state = RUNNING;
};

inline dim3 thread_index, block_index, block_dim, grid_dim;
inline std::vector<Fiber> fibers;
inline int active = 0;  // threads of the running block (fibers beyond it are idle)
inline Context scheduler;
inline int current = 0;
inline unsigned long long warp_exchange[1024];
inline const char* failure = nullptr;

inline void wait(State state) {
    fibers[current].state = state;
    switch_context(&fibers[current].context, &scheduler);
}

// Opens every barrier whose members (the threads that have not returned) all wait at it. False: deadlock.
inline bool open_barriers() {
    bool opened = false;
    int n = active;
    bool all_at_block = true, any_at_block = false;
    for (int t = 0; t < n; ++t) {
        Fiber& f = fibers[t];
        if (f.state == RUNNING || f.state == AT_WARP_BARRIER) all_at_block = false;
        if (f.state == AT_BLOCK_BARRIER) any_at_block = true;
    }
    if (all_at_block && any_at_block) {
        for (int t = 0; t < n; ++t)
            if (fibers[t].state == AT_BLOCK_BARRIER) fibers[t].state = RUNNING;
        return true;
    }
    for (int warp = 0; warp < n; warp += 32) {
        bool all = true, any = false;
        for (int lane = warp; lane < std::min(n, warp + 32); ++lane) {
            if (fibers[lane].state == RUNNING || fibers[lane].state == AT_BLOCK_BARRIER) all = false;
            if (fibers[lane].state == AT_WARP_BARRIER) any = true;
        }
        if (all && any) {
            for (int lane = warp; lane < std::min(n, warp + 32); ++lane)
                if (fibers[lane].state == AT_WARP_BARRIER) fibers[lane].state = RUNNING;
            opened = true;
        }
    }
    return opened;
}

template <typename Body>
struct Entry {
    static inline Body* body = nullptr;
    static void run() {
        (*body)();
        fibers[current].state = FINISHED;
        switch_context(&fibers[current].context, &scheduler);
    }
};

// Runs body() once per thread of every block. Returns an error message, or nullptr.
template <typename Body>
const char* launch(dim3 grid, dim3 block, Body body) {
    int threads = (int)(block.x * block.y * block.z);
    if (threads <= 0 || threads > 1024) return "block size must be 1..1024 threads";
    grid_dim = grid;
    block_dim = block;
    Entry<Body>::body = &body;
    if ((int)fibers.size() < threads) fibers.resize(threads);  // stacks kept between launches: no zero-filling
    for (auto& f : fibers)
        if (f.stack.empty()) f.stack.resize(128 * 1024);
    active = threads;
    for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx) {
                block_index = {bx, by, bz};
                for (int t = 0; t < threads; ++t) {
                    Fiber& f = fibers[t];
                    f.state = RUNNING;
                    start_context(&f.context, f.stack, Entry<Body>::run);
                }
                for (;;) {
                    bool ran = false;
                    for (int t = 0; t < threads; ++t) {
                        if (fibers[t].state != RUNNING) continue;
                        current = t;
                        thread_index = {t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
                        switch_context(&scheduler, &fibers[t].context);
                        ran = true;
                    }
                    bool done = std::all_of(fibers.begin(), fibers.begin() + threads, [](Fiber& f) { return f.state == FINISHED; });
                    if (done) break;
                    if (!open_barriers() && !ran) return "deadlock: some threads wait at a barrier the others never reach";
                }
            }
    return nullptr;
}

// Calls kernel(args...) with each argument read from args[i] (the bytes of the value), once per thread.
template <typename... A, size_t... I>
const char* launch_with(void (*kernel)(A...), dim3 grid, dim3 block, void** args, std::index_sequence<I...>) {
    return launch(grid, block, [&] { kernel(*static_cast<std::remove_reference_t<A>*>(args[I])...); });
}

template <typename... A>
const char* launch_kernel(void (*kernel)(A...), const unsigned* config, void** args) {
    dim3 grid{config[0], config[1], config[2]}, block{config[3], config[4], config[5]};
    return launch_with(kernel, grid, block, args, std::index_sequence_for<A...>{});
}

// One letter per parameter, for the launcher's argument check: pointer -> "*" + element letter.
template <typename T> constexpr const char* letter() {
    using U = std::remove_cv_t<T>;
    if constexpr (std::is_pointer_v<U>) {
        using E = std::remove_cv_t<std::remove_pointer_t<U>>;
        if constexpr (std::is_same_v<E, float>) return "*f";
        else if constexpr (std::is_same_v<E, double>) return "*d";
        else if constexpr (std::is_same_v<E, long long>) return "*q";
        else if constexpr (std::is_same_v<E, int>) return "*i";
        else if constexpr (std::is_same_v<E, unsigned char>) return "*B";
        else if constexpr (std::is_same_v<E, unsigned short>) return "*H";
        else if constexpr (std::is_same_v<E, unsigned long long>) return "*Q";
        else return "*?";
    } else if constexpr (std::is_same_v<U, float>) return "f";
    else if constexpr (std::is_same_v<U, double>) return "d";
    else if constexpr (std::is_same_v<U, long long>) return "q";
    else if constexpr (std::is_same_v<U, int>) return "i";
    else if constexpr (std::is_same_v<U, unsigned long long>) return "Q";
    else if constexpr (std::is_same_v<U, unsigned int>) return "I";
    else return "?";
}

template <typename... A>
const char* signature(void (*)(A...)) {
    static std::string text;
    if (text.empty()) ((text += letter<A>(), text += " "), ...);
    return text.c_str();
}

template <typename T>
T shuffle(T value, int source_lane) {
    int lane = current % 32, warp = current - lane;
    std::memcpy(&warp_exchange[current], &value, sizeof(T));
    wait(AT_WARP_BARRIER);
    T result = value;
    if (source_lane >= 0 && source_lane < 32 && warp + source_lane < active)
        std::memcpy(&result, &warp_exchange[warp + source_lane], sizeof(T));
    wait(AT_WARP_BARRIER);  // nobody overwrites the exchange before every lane has read it
    return result;
}

}  // namespace fastdl_emulation

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define threadIdx fastdl_emulation::thread_index
#define blockIdx fastdl_emulation::block_index
#define blockDim fastdl_emulation::block_dim
#define gridDim fastdl_emulation::grid_dim

inline void __syncthreads() { fastdl_emulation::wait(fastdl_emulation::AT_BLOCK_BARRIER); }
inline void __syncwarp(unsigned = 0xffffffffu) { fastdl_emulation::wait(fastdl_emulation::AT_WARP_BARRIER); }
template <typename T> T __shfl_down_sync(unsigned, T value, int delta) {
    int lane = fastdl_emulation::current % 32;
    return fastdl_emulation::shuffle(value, lane + delta < 32 ? lane + delta : lane);
}
template <typename T> T __shfl_xor_sync(unsigned, T value, int mask) {
    return fastdl_emulation::shuffle(value, (fastdl_emulation::current % 32) ^ mask);
}
template <typename T> T __shfl_sync(unsigned, T value, int lane) { return fastdl_emulation::shuffle(value, lane); }

using std::max;
using std::min;
using std::sqrt;
using std::exp;
using std::log;
using std::tanh;
using std::erf;
using std::erfc;
using std::hypot;
using std::log1p;
using std::expm1;
using std::isfinite;
using std::isnan;
using std::fabs;
inline double __longlong_as_double(long long bits) {
    double value;
    std::memcpy(&value, &bits, sizeof value);
    return value;
}
inline float __uint_as_float(unsigned int bits) {
    float value;
    std::memcpy(&value, &bits, sizeof value);
    return value;
}
inline unsigned int __float_as_uint(float value) {
    unsigned int bits;
    std::memcpy(&bits, &value, sizeof bits);
    return bits;
}
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
