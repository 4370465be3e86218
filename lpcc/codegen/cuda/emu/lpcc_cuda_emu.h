// lpcc_cuda_emu.h: run CUDA C kernels on the host, compiled as C++17 by g++.
//
// lpcc tests the logic of its CUDA kernels on machines without a GPU by
// compiling the SAME source with `g++ -include lpcc_cuda_emu.h` (see
// lpcc/codegen/cuda/emu.py, which also writes the launchers). The model:
//
// * A launch runs the blocks one after another on the calling OS thread, a
//   block's threads as fibers (user-level contexts, 256 KiB stacks): each runs
//   until it waits at a barrier or returns, then the next one is resumed.
// * `__syncthreads()` is a barrier over the block's live threads (a thread that
//   returned from the kernel no longer counts, as on the hardware). When every
//   unfinished thread waits at a barrier nobody can release (a barrier or warp
//   primitive in divergent code), the launch fails with "deadlock" at once.
//   Threads do not preempt each other: a thread spinning on memory that
//   another thread of its block writes later hangs.
// * Serial mode (chosen by emu.py when the source names no barrier or warp
//   primitive): a block's threads simply run one after another, and when the
//   source has no shared memory, blocks are spread over a few OS threads.
//   A primitive reached anyway (hidden in a macro) is reported as an error.
// * `__shared__` is `static` (placed in the section `lpcc_shared`): with one
//   block at a time, one static instance per variable IS the block's shared
//   memory, and the code needs no rewriting. Before every block that section and
//   the dynamic shared buffer are filled with 0xFF bytes (NaN as float, -1 as
//   int), so a kernel that reads shared memory it did not write this block sees
//   garbage, not the previous block's values. (`__shared__` variables in
//   function templates land outside the section and are not re-poisoned.)
//   Blocks never run concurrently when shared memory exists.
//   `extern __shared__ T name[];` (dynamic shared memory) is rewritten by
//   emu.py into a pointer to a per-launch buffer of `shared_bytes`.
// * Warp primitives (`__shfl*_sync`, `__ballot_sync`, `__any/__all_sync`,
//   `__reduce_*_sync`, `__syncwarp`) exchange values through a per-warp slot
//   array between two per-warp barriers. The mask must name every live lane of
//   the warp (0xffffffff is the usual one); other masks are reported as errors.
//   Warp-synchronous code that relies on lock-step execution without
//   `__syncwarp` does not work here (it is undefined on Volta+ as well).
// * The built-in variables threadIdx/blockIdx/blockDim/gridDim are thread_local
//   (set by the scheduler before a fiber resumes).
// * PTX inline assembly (`asm("lop3.b32 ...")`, mma.sync, cp.async) is NOT
//   supported: g++ would try to assemble it for x86. Kernels that use PTX must
//   provide a C fallback under `#ifdef LPCC_EMU` (defined by this header).
// * `__half`/`__nv_bfloat16` are 16-bit structs converted with round-to-nearest
//   -even; arithmetic intrinsics compute in float/double and round once.
#pragma once

#define LPCC_EMU 1

#include <pthread.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

// ---- qualifiers ----------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)
#define __constant__
#define __managed__
#define __shared__ static __attribute__((section("lpcc_shared")))
#define LPCC_EMU_EXTERN_SHARED(T, name) \
  T* const name = reinterpret_cast<T*>(::lpcc_emu::dynamic_shared())

// ---- vector and index types ----------------------------------------------
#define LPCC_EMU_VEC2(T, N, A) \
  struct __attribute__((aligned(A))) N { T x, y; }; \
  static inline N make_##N(T x, T y) { return N{x, y}; }
#define LPCC_EMU_VEC3(T, N) \
  struct N { T x, y, z; }; \
  static inline N make_##N(T x, T y, T z) { return N{x, y, z}; }
#define LPCC_EMU_VEC4(T, N, A) \
  struct __attribute__((aligned(A))) N { T x, y, z, w; }; \
  static inline N make_##N(T x, T y, T z, T w) { return N{x, y, z, w}; }
LPCC_EMU_VEC2(int, int2, 8)
LPCC_EMU_VEC2(unsigned int, uint2, 8)
LPCC_EMU_VEC2(float, float2, 8)
LPCC_EMU_VEC2(short, short2, 4)
LPCC_EMU_VEC2(unsigned short, ushort2, 4)
LPCC_EMU_VEC2(long long, longlong2, 16)
LPCC_EMU_VEC2(unsigned long long, ulonglong2, 16)
LPCC_EMU_VEC2(double, double2, 16)
LPCC_EMU_VEC3(int, int3)
LPCC_EMU_VEC3(unsigned int, uint3)
LPCC_EMU_VEC3(float, float3)
LPCC_EMU_VEC4(int, int4, 16)
LPCC_EMU_VEC4(unsigned int, uint4, 16)
LPCC_EMU_VEC4(float, float4, 16)
LPCC_EMU_VEC4(signed char, char4, 4)
LPCC_EMU_VEC4(unsigned char, uchar4, 4)
LPCC_EMU_VEC4(short, short4, 8)
LPCC_EMU_VEC4(unsigned short, ushort4, 8)

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1)
      : x(x_), y(y_), z(z_) {}
};

static thread_local uint3 threadIdx;
static thread_local uint3 blockIdx;
static thread_local dim3 blockDim;
static thread_local dim3 gridDim;
static constexpr int warpSize = 32;

// ---- the runtime -----------------------------------------------------------
namespace lpcc_emu {

struct Abort {};  // unwinds a thread out of the kernel when the launch fails

struct Launch;

// A barrier over a set of fibers (the threads of a block or of a warp). All
// fibers of a launch run on one OS thread, so no locking: a fiber that must
// wait switches back to the scheduler, which resumes it once `gen` moved on.
struct Barrier {
  unsigned expected = 0, arrived = 0;
  unsigned long long gen = 0;
  const char* what = "";
  Launch* launch = nullptr;

  void reset(unsigned n) {
    expected = n;
    arrived = 0;
  }
  void wait() {
    wait([] {});
  }
  // Wait until `expected` threads arrived; the last one runs `on_release`
  // (while every other participant is still waiting).
  template <class F>
  void wait(F&& on_release);
  // A thread that returned from the kernel stops counting.
  void leave() {
    --expected;
    if (arrived > 0 && arrived >= expected) {
      arrived = 0;
      ++gen;
    }
  }
};

struct Warp {
  Barrier bar;
  unsigned live = 0;  // lanes that have not returned
  unsigned long long slot[32];
  unsigned int big[32][10];  // per-lane operands of mma emulation
};

// ---- fibers: a block's threads as user-level contexts on one OS thread -----
#if defined(__x86_64__)
// Callee-saved registers on the fiber's own stack; `sp` is all a context is.
struct FiberCtx {
  void* sp = nullptr;
};
extern "C" void lpcc_emu_switch(void** save_sp, void* new_sp);
asm(R"(
  .text
  .p2align 4
  .hidden lpcc_emu_switch
  .type lpcc_emu_switch,@function
lpcc_emu_switch:
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
  .size lpcc_emu_switch, .-lpcc_emu_switch
)");
static inline void fiber_init(FiberCtx& c, char* stack, size_t size, void (*entry)()) {
  uintptr_t top = (reinterpret_cast<uintptr_t>(stack) + size) & ~uintptr_t(15);
  void** x = reinterpret_cast<void**>(top - 8);  // as after a call: x % 16 == 8
  x[0] = nullptr;                                 // entry's return address: none
  x[-1] = reinterpret_cast<void*>(entry);
  for (int i = 2; i <= 7; ++i) x[-i] = nullptr;  // the six popped registers
  c.sp = &x[-7];
}
static inline void fiber_switch(FiberCtx& from, FiberCtx& to) {
  lpcc_emu_switch(&from.sp, to.sp);
}
#else
}  // namespace lpcc_emu
#include <ucontext.h>
namespace lpcc_emu {
struct FiberCtx {
  ucontext_t uc;
};
static inline void fiber_init(FiberCtx& c, char* stack, size_t size, void (*entry)()) {
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack;
  c.uc.uc_stack.ss_size = size;
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, entry, 0);
}
static inline void fiber_switch(FiberCtx& from, FiberCtx& to) {
  swapcontext(&from.uc, &to.uc);
}
#endif

struct ThreadCtx {
  Launch* launch;
  unsigned tid, lane, warp;
};

struct Fiber {
  FiberCtx ctx;
  ThreadCtx tc;
  uint3 idx;
  Barrier* waiting = nullptr;  // the barrier it waits at (and its generation)
  unsigned long long wait_gen = 0;
  bool done = false;
};

struct Launch {
  dim3 grid, block;
  unsigned nthreads = 0;
  bool serial = false;  // threads run one after another (no barriers in source)
  unsigned workers = 1;  // OS threads sharing the blocks (serial mode only)
  std::atomic<unsigned long long> next_block{0};
  std::atomic<bool> aborted{false};
  std::mutex msg_mu;
  std::string msg;
  Barrier block_bar;
  std::vector<std::unique_ptr<Warp>> warps;
  unsigned char* dyn_shared = nullptr;
  size_t dyn_bytes = 0;
  std::atomic<long long> count{0};  // __syncthreads_count/and/or
  std::function<void()> body;
  // fiber mode
  FiberCtx sched;
  Fiber* current = nullptr;
  std::vector<Fiber> fibers;

  void fail(const std::string& m) {
    std::lock_guard<std::mutex> lk(msg_mu);
    if (msg.empty()) msg = m;
    aborted.store(true);
  }
};

static thread_local ThreadCtx* tls = nullptr;
static thread_local Launch* cur_launch = nullptr;

extern "C" char __start_lpcc_shared[] __attribute__((weak));
extern "C" char __stop_lpcc_shared[] __attribute__((weak));

static inline void compiler_fence() {
  asm volatile("" ::: "memory");
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

// A barrier or warp primitive reached in serial mode: emu.py saw none in the
// source (one hidden behind a macro?), so the threads do not run concurrently.
[[noreturn]] static void serial_misuse(Launch* L, const char* what) {
  std::string m = std::string(what) +
                  " reached in serial mode: emu.py found no barrier or warp "
                  "primitive in the source text, so the block's threads run one "
                  "after another; spell the primitive out in the source (not "
                  "through a macro built by token pasting)";
  L->fail(m);
  throw Abort{};
}

template <class F>
void Barrier::wait(F&& on_release) {
  Launch& L = *launch;
  if (L.serial) serial_misuse(&L, what);
  if (L.aborted.load(std::memory_order_relaxed)) throw Abort{};
  compiler_fence();
  if (++arrived >= expected) {
    on_release();
    arrived = 0;
    ++gen;
    return;
  }
  Fiber* f = L.current;
  f->waiting = this;
  f->wait_gen = gen;
  fiber_switch(f->ctx, L.sched);  // back when the barrier released
  compiler_fence();
  if (L.aborted.load(std::memory_order_relaxed)) throw Abort{};
}

[[noreturn]] static inline void fail(const std::string& m) {
  tls->launch->fail(m);
  throw Abort{};
}

static inline void* dynamic_shared() { return tls->launch->dyn_shared; }

static inline void poison_shared(Launch& L) {
  if (__start_lpcc_shared != nullptr && __stop_lpcc_shared > __start_lpcc_shared)
    memset(__start_lpcc_shared, 0xFF,
           size_t(__stop_lpcc_shared - __start_lpcc_shared));
  if (L.dyn_shared) memset(L.dyn_shared, 0xFF, L.dyn_bytes);
}

static void fiber_main() {
  Launch& L = *cur_launch;
  Fiber& f = *L.current;
  try {
    L.body();
  } catch (Abort&) {
  } catch (std::exception& e) {
    L.fail(std::string("a C++ exception escaped the kernel: ") + e.what());
  } catch (...) {
    L.fail("an unknown C++ exception escaped the kernel");
  }
  f.done = true;
  Warp& w = *L.warps[f.tc.warp];
  w.live &= ~(1u << f.tc.lane);
  L.block_bar.leave();
  w.bar.leave();
  fiber_switch(f.ctx, L.sched);  // never resumed
  __builtin_unreachable();
}

// Fiber stacks, kept across launches (launches are serialized): 256 KiB each
// with a guard page below, mapped lazily by the kernel.
static constexpr size_t kStack = 256u << 10, kGuard = 4096;
static char* stacks = nullptr;
static unsigned nstacks = 0;

static bool ensure_stacks(unsigned n) {
  if (n <= nstacks) return true;
  if (stacks) munmap(stacks, nstacks * (kStack + kGuard));
  nstacks = 0;
  void* p = mmap(nullptr, n * (kStack + kGuard), PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    stacks = nullptr;
    return false;
  }
  stacks = static_cast<char*>(p);
  for (unsigned i = 0; i < n; ++i) mprotect(stacks + i * (kStack + kGuard), kGuard, PROT_NONE);
  nstacks = n;
  return true;
}

// Thread mode: every block's threads are fibers on the calling OS thread,
// resumed round-robin; each runs until it waits at a barrier or returns.
static void run_fibers(Launch& L) {
  if (!ensure_stacks(L.nthreads)) {
    L.fail("could not map " + std::to_string(L.nthreads) + " fiber stacks");
    return;
  }
  cur_launch = &L;
  blockDim = L.block;
  gridDim = L.grid;
  L.fibers.assign(L.nthreads, Fiber{});
  for (unsigned t = 0; t < L.nthreads; ++t) {
    Fiber& f = L.fibers[t];
    f.tc = ThreadCtx{&L, t, t % 32, t / 32};
    f.idx = uint3{t % L.block.x, (t / L.block.x) % L.block.y,
                  t / (L.block.x * L.block.y)};
  }
  for (unsigned bz = 0; bz < L.grid.z && !L.aborted; ++bz)
    for (unsigned by = 0; by < L.grid.y && !L.aborted; ++by)
      for (unsigned bx = 0; bx < L.grid.x && !L.aborted; ++bx) {
        poison_shared(L);
        L.block_bar.reset(L.nthreads);
        for (size_t w = 0; w < L.warps.size(); ++w) {
          unsigned n = std::min(32u, L.nthreads - unsigned(w) * 32u);
          L.warps[w]->bar.reset(n);
          L.warps[w]->live = n == 32 ? 0xffffffffu : ((1u << n) - 1u);
        }
        L.count.store(0);
        blockIdx = uint3{bx, by, bz};
        for (unsigned t = 0; t < L.nthreads; ++t) {
          Fiber& f = L.fibers[t];
          f.done = false;
          f.waiting = nullptr;
          fiber_init(f.ctx, stacks + t * (kStack + kGuard) + kGuard, kStack, fiber_main);
        }
        unsigned left = L.nthreads;
        while (left > 0 && !L.aborted) {
          bool progress = false;
          for (Fiber& f : L.fibers) {
            if (f.done || (f.waiting && f.waiting->gen == f.wait_gen)) continue;
            f.waiting = nullptr;
            L.current = &f;
            tls = &f.tc;
            threadIdx = f.idx;
            fiber_switch(L.sched, f.ctx);
            progress = true;
            if (f.done) --left;
            if (L.aborted) break;
          }
          if (!progress && left > 0) {
            Barrier* b = nullptr;
            for (Fiber& f : L.fibers)
              if (!f.done && f.waiting) {
                b = f.waiting;
                break;
              }
            char buf[400];
            snprintf(buf, sizeof buf,
                     "deadlock at %s: %u of %u threads arrived and the others "
                     "never will (a barrier or warp primitive inside divergent "
                     "code?)",
                     b ? b->what : "?", b ? b->arrived : 0u, b ? b->expected : 0u);
            L.fail(buf);
          }
        }
      }
  // After an abort, fibers still waiting are abandoned mid-stack (their
  // stacks are reused by the next launch); the kernel's locals are plain data.
  tls = nullptr;
  cur_launch = nullptr;
}

// Serial mode: a block's threads run one after another on one OS thread
// (the kernel has no barrier or warp primitive, so no thread waits for
// another). Several workers take blocks from a shared counter when the kernel
// has no shared memory (its one static instance could not serve two blocks).
static void run_serial(Launch& L) {
  ThreadCtx c{&L, 0, 0, 0};
  tls = &c;
  blockDim = L.block;
  gridDim = L.grid;
  const unsigned long long gx = L.grid.x, gy = L.grid.y;
  const unsigned long long nblocks = gx * gy * L.grid.z;
  try {
    for (;;) {
      if (L.aborted.load(std::memory_order_relaxed)) break;
      const unsigned long long b = L.next_block.fetch_add(1);
      if (b >= nblocks) break;
      blockIdx = uint3{unsigned(b % gx), unsigned(b / gx % gy), unsigned(b / (gx * gy))};
      if (L.workers == 1) poison_shared(L);
      unsigned t = 0;
      for (unsigned z = 0; z < L.block.z; ++z)
        for (unsigned y = 0; y < L.block.y; ++y)
          for (unsigned x = 0; x < L.block.x; ++x, ++t) {
            c.tid = t;
            c.lane = t & 31u;
            c.warp = t >> 5;
            threadIdx = uint3{x, y, z};
            L.body();
          }
    }
  } catch (Abort&) {
  } catch (std::exception& e) {
    L.fail(std::string("a C++ exception escaped the kernel: ") + e.what());
  } catch (...) {
    L.fail("an unknown C++ exception escaped the kernel");
  }
  tls = nullptr;
}

static void* serial_main(void* p) {
  run_serial(*static_cast<Launch*>(p));
  return nullptr;
}

static inline bool has_static_shared() {
  return __start_lpcc_shared != nullptr && __stop_lpcc_shared > __start_lpcc_shared;
}

static void launch_serial(Launch& L, unsigned workers) {
  unsigned long long nblocks =
      (unsigned long long)L.grid.x * L.grid.y * L.grid.z;
  if (has_static_shared() || L.dyn_shared != nullptr) workers = 1;
  L.workers = unsigned(std::max(1ull, std::min<unsigned long long>(workers, nblocks)));
  std::vector<pthread_t> extra;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 8u << 20);
  for (unsigned w = 1; w < L.workers; ++w) {
    pthread_t th;
    if (pthread_create(&th, &attr, serial_main, &L) != 0) break;  // fewer workers
    extra.push_back(th);
  }
  pthread_attr_destroy(&attr);
  L.workers = unsigned(extra.size()) + 1;  // poisoning needs the true count
  run_serial(L);
  for (pthread_t th : extra) pthread_join(th, nullptr);
}

static std::mutex launch_mutex;  // static __shared__ storage: one launch at a time

// dims = {grid.x, grid.y, grid.z, block.x, block.y, block.z}. mode: 0 = a
// block's threads are fibers (barriers and warp primitives work), 1 = serial
// (see run_serial) on up to `workers` OS threads. Returns 0, or 1 with a
// message in err. (`timeout_s` is unused: a deadlock is detected exactly.)
static int launch(const unsigned* dims, unsigned long long shared_bytes,
                  double timeout_s, int mode, int workers, char* err, int errcap,
                  std::function<void()> body) {
  (void)timeout_s;
  std::lock_guard<std::mutex> guard(launch_mutex);
  Launch L;
  L.grid = dim3(dims[0], dims[1], dims[2]);
  L.block = dim3(dims[3], dims[4], dims[5]);
  L.nthreads = dims[3] * dims[4] * dims[5];
  L.body = std::move(body);
  L.block_bar.what = "__syncthreads()";
  L.block_bar.launch = &L;
  unsigned nwarps = (L.nthreads + 31) / 32;
  for (unsigned i = 0; i < nwarps; ++i) {
    L.warps.emplace_back(new Warp());
    L.warps.back()->bar.what = "a warp primitive (__shfl*_sync, __ballot_sync, "
                               "__syncwarp, ...)";
    L.warps.back()->bar.launch = &L;
  }
  std::vector<unsigned char> dyn;
  if (shared_bytes > 0) {
    dyn.resize(shared_bytes + 256);
    uintptr_t a = (reinterpret_cast<uintptr_t>(dyn.data()) + 127) & ~uintptr_t(127);
    L.dyn_shared = reinterpret_cast<unsigned char*>(a);
    L.dyn_bytes = shared_bytes;
  }
  if (mode == 1) {
    L.serial = true;
    launch_serial(L, unsigned(std::max(1, workers)));
  } else {
    run_fibers(L);
  }
  if (!L.msg.empty()) {
    snprintf(err, size_t(errcap), "%s", L.msg.c_str());
    return 1;
  }
  return 0;
}

// ---- kernel arguments ------------------------------------------------------
template <class... A, size_t... I>
static void invoke_impl(void (*k)(A...), void** args, std::index_sequence<I...>) {
  k(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(args[I])...);
}
template <class... A>
static void invoke(void (*k)(A...), void** args) {
  invoke_impl(k, args, std::index_sequence_for<A...>{});
}

template <class T>
static std::string describe_one();
template <class... A>
static int describe(void (*)(A...), char* buf, int cap) {
  std::string s;
  ((s += describe_one<std::remove_cv_t<A>>() + " "), ...);
  snprintf(buf, size_t(cap), "%s", s.c_str());
  return int(sizeof...(A));
}

// ---- warp primitives -------------------------------------------------------
static inline void check_mask(const char* fn, unsigned mask) {
  if (tls->launch->serial) serial_misuse(tls->launch, fn);
  Warp& w = *tls->launch->warps[tls->warp];
  unsigned live = w.live;
  if ((mask & live) != live) {
    char buf[300];
    snprintf(buf, sizeof buf,
             "%s with mask 0x%08x in warp %u whose live lanes are 0x%08x: the "
             "emulator supports only masks that name every live lane "
             "(use 0xffffffff)",
             fn, mask, tls->warp, live);
    fail(buf);
  }
}

// Every live lane stores `v`, then `read(slots)` runs once all have.
template <class R, class F>
static inline R warp_exchange(const char* fn, unsigned mask,
                              unsigned long long v, F&& read) {
  check_mask(fn, mask);
  Warp& w = *tls->launch->warps[tls->warp];
  w.slot[tls->lane] = v;
  w.bar.wait();
  R r = read(w.slot, w.live);
  w.bar.wait();
  return r;
}

template <class T>
static inline unsigned long long to_bits(T v) {
  static_assert(sizeof(T) <= 8, "warp shuffles of types wider than 8 bytes");
  unsigned long long b = 0;
  memcpy(&b, &v, sizeof(T));
  return b;
}
template <class T>
static inline T from_bits(unsigned long long b) {
  T v;
  memcpy(&v, &b, sizeof(T));
  return v;
}

template <class T>
static inline T shfl_from(const char* fn, unsigned mask, T var, int src) {
  return warp_exchange<T>(fn, mask, to_bits(var),
                          [&](const unsigned long long* s, unsigned live) {
                            if (src < 0 || src > 31 || !(live >> src & 1u))
                              return var;  // no such lane: own value
                            return from_bits<T>(s[src]);
                          });
}

}  // namespace lpcc_emu

static inline void __syncthreads() { lpcc_emu::tls->launch->block_bar.wait(); }

static inline int __syncthreads_count(int pred) {
  lpcc_emu::Launch& L = *lpcc_emu::tls->launch;
  if (pred) L.count.fetch_add(1);
  L.block_bar.wait();
  long long r = L.count.load();
  L.block_bar.wait([&L] { L.count.store(0); });
  return int(r);
}
static inline int __syncthreads_and(int pred) {
  return __syncthreads_count(!pred) == 0;
}
static inline int __syncthreads_or(int pred) { return __syncthreads_count(pred) != 0; }

static inline void __syncwarp(unsigned mask = 0xffffffffu) {
  lpcc_emu::check_mask("__syncwarp", mask);
  lpcc_emu::tls->launch->warps[lpcc_emu::tls->warp]->bar.wait();
}

static inline unsigned __activemask() {
  if (lpcc_emu::tls->launch->serial)
    lpcc_emu::serial_misuse(lpcc_emu::tls->launch, "__activemask");
  return lpcc_emu::tls->launch->warps[lpcc_emu::tls->warp]->live;
}

template <class T>
static inline T __shfl_sync(unsigned mask, T var, int srcLane, int width = 32) {
  int lane = int(lpcc_emu::tls->lane);
  int src = (lane & ~(width - 1)) + (srcLane & (width - 1));
  return lpcc_emu::shfl_from("__shfl_sync", mask, var, src);
}
template <class T>
static inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32) {
  int lane = int(lpcc_emu::tls->lane);
  int src = (lane & (width - 1)) < int(delta) ? lane : lane - int(delta);
  return lpcc_emu::shfl_from("__shfl_up_sync", mask, var, src);
}
template <class T>
static inline T __shfl_down_sync(unsigned mask, T var, unsigned delta,
                                 int width = 32) {
  int lane = int(lpcc_emu::tls->lane);
  int src = (lane & (width - 1)) + int(delta) >= width ? lane : lane + int(delta);
  return lpcc_emu::shfl_from("__shfl_down_sync", mask, var, src);
}
template <class T>
static inline T __shfl_xor_sync(unsigned mask, T var, int laneMask, int width = 32) {
  int lane = int(lpcc_emu::tls->lane);
  int src = lane ^ laneMask;
  int max_lane = (lane & ~(width - 1)) | (width - 1);
  if (src > max_lane) src = lane;  // later groups: own value (as the PTX bfly)
  return lpcc_emu::shfl_from("__shfl_xor_sync", mask, var, src);
}

static inline unsigned __ballot_sync(unsigned mask, int pred) {
  return lpcc_emu::warp_exchange<unsigned>(
      "__ballot_sync", mask, pred ? 1ull : 0ull,
      [&](const unsigned long long* s, unsigned live) {
        unsigned r = 0;
        for (int i = 0; i < 32; ++i)
          if ((live >> i & 1u) && s[i]) r |= 1u << i;
        return r & mask;
      });
}
static inline int __any_sync(unsigned mask, int pred) {
  return __ballot_sync(mask, pred) != 0;
}
static inline int __all_sync(unsigned mask, int pred) {
  unsigned live = __activemask() & mask;
  return __ballot_sync(mask, pred) == live;
}

#define LPCC_EMU_WARP_REDUCE(NAME, T, INIT, OP)                               \
  static inline T NAME(unsigned mask, T value) {                               \
    return lpcc_emu::warp_exchange<T>(                                         \
        #NAME, mask, lpcc_emu::to_bits(value),                                 \
        [&](const unsigned long long* s, unsigned live) {                      \
          T acc = INIT;                                                        \
          for (int i = 0; i < 32; ++i)                                         \
            if (live >> i & 1u) {                                              \
              T v = lpcc_emu::from_bits<T>(s[i]);                              \
              acc = OP;                                                        \
            }                                                                  \
          return acc;                                                          \
        });                                                                    \
  }
LPCC_EMU_WARP_REDUCE(__reduce_add_sync, unsigned, 0u, acc + v)
LPCC_EMU_WARP_REDUCE(__reduce_add_sync, int, 0, int(unsigned(acc) + unsigned(v)))
LPCC_EMU_WARP_REDUCE(__reduce_min_sync, unsigned, UINT_MAX, std::min(acc, v))
LPCC_EMU_WARP_REDUCE(__reduce_min_sync, int, INT_MAX, std::min(acc, v))
LPCC_EMU_WARP_REDUCE(__reduce_max_sync, unsigned, 0u, std::max(acc, v))
LPCC_EMU_WARP_REDUCE(__reduce_max_sync, int, INT_MIN, std::max(acc, v))
LPCC_EMU_WARP_REDUCE(__reduce_and_sync, unsigned, ~0u, acc & v)
LPCC_EMU_WARP_REDUCE(__reduce_or_sync, unsigned, 0u, acc | v)
LPCC_EMU_WARP_REDUCE(__reduce_xor_sync, unsigned, 0u, acc ^ v)

// ---- memory fences and atomics ---------------------------------------------
static inline void __threadfence() { lpcc_emu::compiler_fence(); }
static inline void __threadfence_block() { lpcc_emu::compiler_fence(); }
static inline void __threadfence_system() { lpcc_emu::compiler_fence(); }

#define LPCC_EMU_ATOMIC_INT(T)                                                     \
  static inline T atomicAdd(T* p, T v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); } \
  static inline T atomicSub(T* p, T v) { return __atomic_fetch_sub(p, v, __ATOMIC_SEQ_CST); } \
  static inline T atomicAnd(T* p, T v) { return __atomic_fetch_and(p, v, __ATOMIC_SEQ_CST); } \
  static inline T atomicOr(T* p, T v) { return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); }   \
  static inline T atomicXor(T* p, T v) { return __atomic_fetch_xor(p, v, __ATOMIC_SEQ_CST); } \
  static inline T atomicExch(T* p, T v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); } \
  static inline T atomicCAS(T* p, T cmp, T v) {                                    \
    __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST); \
    return cmp;                                                                    \
  }                                                                                \
  static inline T atomicMin(T* p, T v) {                                           \
    T old = __atomic_load_n(p, __ATOMIC_SEQ_CST);                                  \
    while (v < old && !__atomic_compare_exchange_n(p, &old, v, false,              \
                                                   __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {} \
    return old;                                                                    \
  }                                                                                \
  static inline T atomicMax(T* p, T v) {                                           \
    T old = __atomic_load_n(p, __ATOMIC_SEQ_CST);                                  \
    while (v > old && !__atomic_compare_exchange_n(p, &old, v, false,              \
                                                   __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {} \
    return old;                                                                    \
  }
LPCC_EMU_ATOMIC_INT(int)
LPCC_EMU_ATOMIC_INT(unsigned int)
LPCC_EMU_ATOMIC_INT(unsigned long long)
LPCC_EMU_ATOMIC_INT(long long)

template <class F, class U>
static inline F lpcc_emu_atomic_float_add(F* p, F v) {
  U* q = reinterpret_cast<U*>(p);
  U old = __atomic_load_n(q, __ATOMIC_SEQ_CST), nw;
  do {
    F f;
    memcpy(&f, &old, sizeof f);
    f += v;
    memcpy(&nw, &f, sizeof nw);
  } while (!__atomic_compare_exchange_n(q, &old, nw, false, __ATOMIC_SEQ_CST,
                                        __ATOMIC_SEQ_CST));
  F r;
  memcpy(&r, &old, sizeof r);
  return r;
}
static inline float atomicAdd(float* p, float v) {
  return lpcc_emu_atomic_float_add<float, unsigned>(p, v);
}
static inline double atomicAdd(double* p, double v) {
  return lpcc_emu_atomic_float_add<double, unsigned long long>(p, v);
}

// ---- integer and float intrinsics ------------------------------------------
template <class A, class B>
static inline std::common_type_t<A, B> min(A a, B b) {
  using T = std::common_type_t<A, B>;
  return T(a) < T(b) ? T(a) : T(b);
}
template <class A, class B>
static inline std::common_type_t<A, B> max(A a, B b) {
  using T = std::common_type_t<A, B>;
  return T(a) > T(b) ? T(a) : T(b);
}

static inline float __int_as_float(int x) { return lpcc_emu::from_bits<float>(unsigned(x)); }
static inline int __float_as_int(float x) { return int(unsigned(lpcc_emu::to_bits(x))); }
static inline float __uint_as_float(unsigned x) { return lpcc_emu::from_bits<float>(x); }
static inline unsigned __float_as_uint(float x) { return unsigned(lpcc_emu::to_bits(x)); }
static inline double __longlong_as_double(long long x) {
  return lpcc_emu::from_bits<double>((unsigned long long)x);
}
static inline long long __double_as_longlong(double x) {
  return (long long)lpcc_emu::to_bits(x);
}

static inline int __popc(unsigned x) { return __builtin_popcount(x); }
static inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
static inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(unsigned(x)); }
static inline int __clzll(long long x) {
  return x == 0 ? 64 : __builtin_clzll((unsigned long long)x);
}
static inline int __ffs(int x) { return __builtin_ffs(x); }
static inline int __ffsll(long long x) { return __builtin_ffsll(x); }
static inline unsigned __brev(unsigned x) {
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
  return r;
}
static inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
  unsigned long long v = ((unsigned long long)y << 32) | x;
  unsigned r = 0;
  for (int i = 0; i < 4; ++i) {
    unsigned sel = (s >> (4 * i)) & 7u;
    r |= unsigned((v >> (8 * sel)) & 0xffu) << (8 * i);
  }
  return r;
}
static inline unsigned __funnelshift_l(unsigned lo, unsigned hi, unsigned sh) {
  unsigned long long v = ((unsigned long long)hi << 32) | lo;
  return unsigned((v << (sh & 31u)) >> 32);
}
static inline unsigned __funnelshift_r(unsigned lo, unsigned hi, unsigned sh) {
  unsigned long long v = ((unsigned long long)hi << 32) | lo;
  return unsigned(v >> (sh & 31u));
}
static inline unsigned __funnelshift_lc(unsigned lo, unsigned hi, unsigned sh) {
  unsigned long long v = ((unsigned long long)hi << 32) | lo;
  return unsigned((v << std::min(sh, 32u)) >> 32);
}
static inline unsigned __funnelshift_rc(unsigned lo, unsigned hi, unsigned sh) {
  unsigned long long v = ((unsigned long long)hi << 32) | lo;
  return unsigned(v >> std::min(sh, 32u));
}
static inline int __mulhi(int a, int b) { return int(((long long)a * b) >> 32); }
static inline unsigned __umulhi(unsigned a, unsigned b) {
  return unsigned(((unsigned long long)a * b) >> 32);
}
static inline int __dp4a(int a, int b, int c) {
  int r = c;
  for (int i = 0; i < 4; ++i)
    r += int((signed char)(a >> (8 * i))) * int((signed char)(b >> (8 * i)));
  return r;
}
static inline unsigned __dp4a(unsigned a, unsigned b, unsigned c) {
  unsigned r = c;
  for (int i = 0; i < 4; ++i) r += ((a >> (8 * i)) & 0xffu) * ((b >> (8 * i)) & 0xffu);
  return r;
}

template <class T>
static inline T __ldg(const T* p) { return *p; }
template <class T>
static inline T __ldcg(const T* p) { return *p; }
template <class T>
static inline T __ldcs(const T* p) { return *p; }
template <class T>
static inline void __stcs(T* p, T v) { *p = v; }
template <class T>
static inline void __stcg(T* p, T v) { *p = v; }

static inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline float __fdividef(float a, float b) { return a / b; }
static inline float __frcp_rn(float a) { return 1.0f / a; }
static inline float __fsqrt_rn(float a) { return std::sqrt(a); }
static inline float rsqrtf(float a) { return 1.0f / std::sqrt(a); }
static inline float __frsqrt_rn(float a) { return 1.0f / std::sqrt(a); }
// __expf, __logf, __sinf, __cosf, __powf, __exp10f, __log2f: glibc declares
// them already (same results as expf & co).
static inline float __saturatef(float a) {
  return std::isnan(a) ? 0.0f : std::min(1.0f, std::max(0.0f, a));
}
static inline int __float2int_rn(float a) { return int(std::nearbyint(a)); }
static inline int __float2int_rz(float a) { return int(a); }
static inline int __float2int_rd(float a) { return int(std::floor(a)); }
static inline int __float2int_ru(float a) { return int(std::ceil(a)); }
static inline unsigned __float2uint_rn(float a) { return unsigned(std::nearbyint(a)); }
static inline unsigned __float2uint_rz(float a) { return unsigned(a); }
static inline float __int2float_rn(int a) { return float(a); }
static inline float __uint2float_rn(unsigned a) { return float(a); }

static inline long long clock64() {
  return std::chrono::steady_clock::now().time_since_epoch().count();
}
static inline void __nanosleep(unsigned) {}
[[noreturn]] static inline void __trap() { lpcc_emu::fail("__trap() called"); }

// ---- 16-bit floats -----------------------------------------------------------
namespace lpcc_emu {
static inline unsigned short f2h_bits(float f) {
  unsigned x = unsigned(to_bits(f));
  unsigned sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u)  // inf, or NaN kept quiet with its top payload
    return (unsigned short)(sign | 0x7c00u |
                            (ax > 0x7f800000u ? 0x200u | ((ax >> 13) & 0x3ffu) : 0u));
  if (ax >= 0x477ff000u) return (unsigned short)(sign | 0x7c00u);  // >= 65520
  if (ax < 0x38800000u) {                                          // half subnormal
    if (ax < 0x33000000u) return (unsigned short)sign;             // <= 2^-25
    unsigned e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u, sh = 126u - e;
    unsigned q = m >> sh, rem = m & ((1u << sh) - 1u), half = 1u << (sh - 1u);
    if (rem > half || (rem == half && (q & 1u))) ++q;
    return (unsigned short)(sign | q);
  }
  unsigned r = ax - 0x38000000u;
  return (unsigned short)(sign | ((r + 0xfffu + ((r >> 13) & 1u)) >> 13));
}
static inline float h2f_bits(unsigned short h) {
  unsigned sign = (unsigned(h) & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0) {
    float v = float(m) * 5.9604644775390625e-08f;  // m * 2^-24, exact
    return sign ? -v : v;
  }
  if (e == 31) return from_bits<float>(sign | 0x7f800000u | (m << 13));
  return from_bits<float>(sign | ((e + 112u) << 23) | (m << 13));
}
static inline unsigned short f2bf_bits(float f) {
  unsigned x = unsigned(to_bits(f));
  if ((x & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((x >> 16) | 0x40u);
  return (unsigned short)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}
// double -> float rounding to odd, then float -> half to nearest even, is one
// correct rounding double -> half (float keeps > 11 + 2 bits).
static inline float round_to_odd(double d) {
  float f = float(d);
  if (std::isfinite(d) && double(f) != d) {
    if (std::fabs(double(f)) > std::fabs(d)) f = std::nextafter(f, 0.0f);
    f = from_bits<float>(unsigned(to_bits(f)) | 1u);
  }
  return f;
}
static inline float bf2f_bits(unsigned short b) { return from_bits<float>(unsigned(b) << 16); }
}  // namespace lpcc_emu

struct __half {
  unsigned short __x;
  __half() = default;
  __half(float f) : __x(lpcc_emu::f2h_bits(f)) {}
  operator float() const { return lpcc_emu::h2f_bits(__x); }
};
struct __attribute__((aligned(4))) __half2 {
  __half x, y;
};
typedef __half half;
typedef __half2 half2;

struct __nv_bfloat16 {
  unsigned short __x;
  __nv_bfloat16() = default;
  __nv_bfloat16(float f) : __x(lpcc_emu::f2bf_bits(f)) {}
  operator float() const { return lpcc_emu::bf2f_bits(__x); }
};
struct __attribute__((aligned(4))) __nv_bfloat162 {
  __nv_bfloat16 x, y;
};

static inline __half __ushort_as_half(unsigned short b) {
  __half h;
  h.__x = b;
  return h;
}
static inline unsigned short __half_as_ushort(__half h) { return h.__x; }
namespace lpcc_emu {
static inline __half d2h(double d) { return __ushort_as_half(f2h_bits(round_to_odd(d))); }
}  // namespace lpcc_emu
static inline __half __float2half(float f) { return __ushort_as_half(lpcc_emu::f2h_bits(f)); }
static inline __half __float2half_rn(float f) { return __float2half(f); }
static inline float __half2float(__half h) { return lpcc_emu::h2f_bits(h.__x); }
static inline __half __hadd(__half a, __half b) { return lpcc_emu::d2h(double(float(a)) + double(float(b))); }
static inline __half __hsub(__half a, __half b) { return lpcc_emu::d2h(double(float(a)) - double(float(b))); }
static inline __half __hmul(__half a, __half b) { return __float2half(float(a) * float(b)); }
static inline __half __hneg(__half a) { return __ushort_as_half(a.__x ^ 0x8000u); }
static inline __half __hfma(__half a, __half b, __half c) {
  // a*b is exact in double; one fma rounding to double, then to half (exact
  // unless the addends are > 2^29 apart, where the double rounding cannot tie).
  return lpcc_emu::d2h(std::fma(double(float(a)), double(float(b)), double(float(c))));
}
static inline __half2 __halves2half2(__half a, __half b) { return __half2{a, b}; }
static inline __half2 __floats2half2_rn(float a, float b) {
  return __half2{__float2half(a), __float2half(b)};
}
static inline __half2 __float2half2_rn(float a) { return __floats2half2_rn(a, a); }
static inline float2 __half22float2(__half2 h) { return float2{float(h.x), float(h.y)}; }
static inline float __low2float(__half2 h) { return float(h.x); }
static inline float __high2float(__half2 h) { return float(h.y); }
static inline __half __low2half(__half2 h) { return h.x; }
static inline __half __high2half(__half2 h) { return h.y; }
static inline __half2 __hadd2(__half2 a, __half2 b) {
  return __half2{__hadd(a.x, b.x), __hadd(a.y, b.y)};
}
static inline __half2 __hsub2(__half2 a, __half2 b) {
  return __half2{__hsub(a.x, b.x), __hsub(a.y, b.y)};
}
static inline __half2 __hmul2(__half2 a, __half2 b) {
  return __half2{__hmul(a.x, b.x), __hmul(a.y, b.y)};
}
static inline __half2 __hfma2(__half2 a, __half2 b, __half2 c) {
  return __half2{__hfma(a.x, b.x, c.x), __hfma(a.y, b.y, c.y)};
}

static inline __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16(f); }
static inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16(f); }
static inline float __bfloat162float(__nv_bfloat16 b) { return float(b); }
static inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short b) {
  __nv_bfloat16 h;
  h.__x = b;
  return h;
}
static inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 b) { return b.__x; }

// ---- parameter descriptions (read by emu.py through the launchers) ----------
namespace lpcc_emu {
template <class T>
static std::string describe_one() {
  if constexpr (std::is_pointer_v<T>) {
    using P = std::remove_pointer_t<T>;
    std::string s = "P";
    if constexpr (std::is_void_v<std::remove_cv_t<P>>)
      s += "0";
    else
      s += std::to_string(alignof(P));
    if (std::is_const_v<P>) s += "c";
    return s;
  } else if constexpr (std::is_same_v<T, __half>) {
    return "h2";
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return "b2";
  } else if constexpr (std::is_same_v<T, bool>) {
    return "?1";
  } else if constexpr (std::is_floating_point_v<T>) {
    return "f" + std::to_string(sizeof(T));
  } else if constexpr (std::is_integral_v<T>) {
    return std::string(std::is_signed_v<T> ? "i" : "u") + std::to_string(sizeof(T));
  } else {
    return "x" + std::to_string(sizeof(T));
  }
}
}  // namespace lpcc_emu
