// RUN: lpcc opt %s -p 'tile{isa="generic"}' | filecheck %s
// RUN: lpcc opt %s -p 'tile{isa="avx2"}' | lpcc opt - | filecheck %s --check-prefix=AVX2
// RUN: (! lpcc opt %s -p 'tile{isa="sse9"}' 2>&1) | filecheck %s --check-prefix=BAD

// The tile pass asks the CPU kernel generators what they build for each
// kernel and records it; the op's semantics do not change (the IR reparses).

func.func @main(%x: tensor<5x8xf32>, %m: tensor<8x16xf32>) -> (tensor<5x8xf32>, tensor<5x16xf32>) {
  // CHECK: lp.neg %x {lp.tile = "{{.*}}rows {{[0-9]+}} / granule {{[0-9]+}}{{.*}}"}
  // AVX2: lp.neg %x {lp.tile = "{{.*}}"}
  %n = lp.neg %x : tensor<5x8xf32>
  // CHECK: lp.matmul {{.*}}lp.tile = "{{.*}}"
  %y = lp.matmul %n, %m : (tensor<5x8xf32>, tensor<8x16xf32>) -> tensor<5x16xf32>
  // A region whose body no generator takes as a whole runs op by op.
  // CHECK: lp.fused elementwise(%x) {lp.tile = "split"}
  %z = lp.fused elementwise(%x) : (tensor<5x8xf32>) -> tensor<5x8xf32> {
  ^bb0(%a: tensor<5x8xf32>):
    %c = lp.cumsum %a dim 1 : tensor<5x8xf32>
    lp.yield %c : tensor<5x8xf32>
  }
  func.return %z, %y : tensor<5x8xf32>, tensor<5x16xf32>
}

// BAD: tile: unknown isa 'sse9'
