// RUN: lpcc opt %s -p fuse-elementwise | filecheck %s
// RUN: lpcc opt %s -p 'fuse-elementwise{max_ops=2}' | filecheck %s --check-prefix=MAX2
// RUN: lpcc opt %s -p fuse-elementwise | lpcc opt - | filecheck %s --check-prefix=ROUND
// RUN: (! lpcc opt %s -p 'fuse-elementwise{max_ops=1}' 2>&1) | filecheck %s --check-prefix=BAD

// A chain whose first value is also returned: one region, two results
// (the values something outside reads, in the order they are defined).
func.func @chain(%a: tensor<4x8xf32>, %b: tensor<4x8xf32>) -> (tensor<4x8xf32>, tensor<4x8xf32>) {
  %e = lp.exp %a : tensor<4x8xf32>
  %m = lp.mul %e, %b : tensor<4x8xf32>
  %t = lp.tanh %m : tensor<4x8xf32>
  func.return %t, %e : tensor<4x8xf32>, tensor<4x8xf32>
}
// CHECK-LABEL: func.func @chain
// CHECK-NEXT:  %e, %t = lp.fused elementwise(%a, %b) : (tensor<4x8xf32>, tensor<4x8xf32>) -> (tensor<4x8xf32>, tensor<4x8xf32>) {
// CHECK-NEXT:  ^bb0(%a_1: tensor<4x8xf32>, %b_1: tensor<4x8xf32>):
// CHECK-NEXT:    %e_1 = lp.exp %a_1 : tensor<4x8xf32>
// CHECK-NEXT:    %m = lp.mul %e_1, %b_1 : tensor<4x8xf32>
// CHECK-NEXT:    %t_1 = lp.tanh %m : tensor<4x8xf32>
// CHECK-NEXT:    lp.yield %e_1, %t_1 : tensor<4x8xf32>, tensor<4x8xf32>
// CHECK-NEXT:  }
// CHECK-NEXT:  func.return %t, %e : tensor<4x8xf32>, tensor<4x8xf32>

// With at most two ops a region, tanh stays outside.
// MAX2-LABEL: func.func @chain
// MAX2-NEXT:  %e, %m = lp.fused elementwise(%a, %b)
// MAX2:         lp.yield %e_1, %m_1
// MAX2-NEXT:  }
// MAX2-NEXT:  %t = lp.tanh %m : tensor<4x8xf32>

// A diamond (exp feeds sin and cos, both feed add) is one region, one result.
func.func @diamond(%a: tensor<4x8xf32>) -> tensor<4x8xf32> {
  %e = lp.exp %a : tensor<4x8xf32>
  %s = lp.sin %e : tensor<4x8xf32>
  %c = lp.cos %e : tensor<4x8xf32>
  %y = lp.add %s, %c : tensor<4x8xf32>
  func.return %y : tensor<4x8xf32>
}
// CHECK-LABEL: func.func @diamond
// CHECK-NEXT:  %y = lp.fused elementwise(%a) : (tensor<4x8xf32>) -> tensor<4x8xf32> {
// CHECK-NEXT:  ^bb0(%a_1: tensor<4x8xf32>):
// CHECK-NEXT:    %e = lp.exp %a_1
// CHECK-NEXT:    %s = lp.sin %e
// CHECK-NEXT:    %c = lp.cos %e
// CHECK-NEXT:    %y_1 = lp.add %s, %c
// CHECK-NEXT:    lp.yield %y_1 : tensor<4x8xf32>
// CHECK-NEXT:  }
// CHECK-NEXT:  func.return %y
// Two ops a region: {exp, sin} then {cos, add}, which reads both results.
// MAX2-LABEL: func.func @diamond
// MAX2-NEXT:  %e, %s = lp.fused elementwise(%a)
// MAX2:       %y = lp.fused elementwise(%e, %s)
// MAX2-NEXT:  ^bb0(%e_1: tensor<4x8xf32>, %s_1: tensor<4x8xf32>):
// MAX2-NEXT:    %c = lp.cos %e_1
// MAX2-NEXT:    %y_1 = lp.add %s_1, %c

// add reads exp and the matmul, which reads tanh(exp): putting add with
// {exp, tanh} would make a cycle through the matmul, so it starts a region
// of its own with neg.
func.func @cycle(%x: tensor<4x4xf32>, %w: tensor<4x4xf32>) -> tensor<4x4xf32> {
  %e = lp.exp %x : tensor<4x4xf32>
  %t = lp.tanh %e : tensor<4x4xf32>
  %m = lp.matmul %t, %w : tensor<4x4xf32>
  %y = lp.add %e, %m : tensor<4x4xf32>
  %z = lp.neg %y : tensor<4x4xf32>
  func.return %z : tensor<4x4xf32>
}
// CHECK-LABEL: func.func @cycle
// CHECK-NEXT:  %e, %t = lp.fused elementwise(%x) : (tensor<4x4xf32>) -> (tensor<4x4xf32>, tensor<4x4xf32>) {
// CHECK-NEXT:  ^bb0(%x_1: tensor<4x4xf32>):
// CHECK-NEXT:    %e_1 = lp.exp %x_1
// CHECK-NEXT:    %t_1 = lp.tanh %e_1
// CHECK-NEXT:    lp.yield %e_1, %t_1
// CHECK-NEXT:  }
// CHECK-NEXT:  %m = lp.matmul %t, %w
// CHECK-NEXT:  %z = lp.fused elementwise(%e, %m) : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32> {
// CHECK-NEXT:  ^bb0(%e_1: tensor<4x4xf32>, %m_1: tensor<4x4xf32>):
// CHECK-NEXT:    %y = lp.add %e_1, %m_1
// CHECK-NEXT:    %z_1 = lp.neg %y
// CHECK-NEXT:    lp.yield %z_1
// CHECK-NEXT:  }
// CHECK-NEXT:  func.return %z

// A trailing reduction joins the region; its reader (div) does not: it needs
// the whole sum first. div alone is not wrapped in a region.
func.func @reduction(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
  %e = lp.exp %x : tensor<4x8xf32>
  %s = lp.reduce_sum %e dims [1] keepdim : tensor<4x8xf32> -> tensor<4x1xf32>
  %r = lp.div %e, %s : (tensor<4x8xf32>, tensor<4x1xf32>) -> tensor<4x8xf32>
  func.return %r : tensor<4x8xf32>
}
// CHECK-LABEL: func.func @reduction
// CHECK-NEXT:  %e, %s = lp.fused elementwise(%x) : (tensor<4x8xf32>) -> (tensor<4x8xf32>, tensor<4x1xf32>) {
// CHECK-NEXT:  ^bb0(%x_1: tensor<4x8xf32>):
// CHECK-NEXT:    %e_1 = lp.exp %x_1
// CHECK-NEXT:    %s_1 = lp.reduce_sum %e_1 dims [1] keepdim
// CHECK-NEXT:    lp.yield %e_1, %s_1 : tensor<4x8xf32>, tensor<4x1xf32>
// CHECK-NEXT:  }
// CHECK-NEXT:  %r = lp.div %e, %s : (tensor<4x8xf32>, tensor<4x1xf32>) -> tensor<4x8xf32>
// CHECK-NEXT:  func.return %r

// RMSNorm as the torch frontend emits it, with a dynamic length t: the
// mean of squares is one region, the normalization another. Splat constants
// are cloned into the region that reads them; the dense weight is an input.
func.func @rmsnorm(%x: tensor<2x?x8xf32> {lp.dims = "2,t,8"}) -> tensor<2x?x8xf32> {
  %two = lp.constant splat 2.0 : tensor<1x1x1xf32>
  %eps = lp.constant splat 1.0e-05 : tensor<1x1x1xf32>
  %w = lp.constant dense "0x0000803F000000400000404000008040000080BF000000C0000040C0000080C0" : tensor<1x1x8xf32>
  %sq = lp.pow %x, %two {lp.dims = "2,t,8"} : (tensor<2x?x8xf32>, tensor<1x1x1xf32>) -> tensor<2x?x8xf32>
  %ms = lp.reduce_mean %sq dims [2] keepdim {lp.dims = "2,t,1"} : tensor<2x?x8xf32> -> tensor<2x?x1xf32>
  %a = lp.add %ms, %eps {lp.dims = "2,t,1"} : (tensor<2x?x1xf32>, tensor<1x1x1xf32>) -> tensor<2x?x1xf32>
  %r = lp.rsqrt %a {lp.dims = "2,t,1"} : tensor<2x?x1xf32>
  %n = lp.mul %x, %r {lp.dims = "2,t,8"} : (tensor<2x?x8xf32>, tensor<2x?x1xf32>) -> tensor<2x?x8xf32>
  %y = lp.mul %n, %w {lp.dims = "2,t,8"} : (tensor<2x?x8xf32>, tensor<1x1x8xf32>) -> tensor<2x?x8xf32>
  func.return %y : tensor<2x?x8xf32>
}
// CHECK-LABEL: func.func @rmsnorm
// CHECK-NEXT:  %w = lp.constant dense
// CHECK-NEXT:  %ms = lp.fused elementwise(%x) : (tensor<2x?x8xf32>) -> tensor<2x?x1xf32> {
// CHECK-NEXT:  ^bb0(%x_1: tensor<2x?x8xf32>):
// CHECK-NEXT:    %two = lp.constant splat 2.0 : tensor<1x1x1xf32>
// CHECK-NEXT:    %sq = lp.pow %x_1, %two {lp.dims = "2,t,8"}
// CHECK-NEXT:    %ms_1 = lp.reduce_mean %sq dims [2] keepdim {lp.dims = "2,t,1"}
// CHECK-NEXT:    lp.yield %ms_1 : tensor<2x?x1xf32>
// CHECK-NEXT:  }
// CHECK-NEXT:  %y = lp.fused elementwise(%ms, %x, %w) : (tensor<2x?x1xf32>, tensor<2x?x8xf32>, tensor<1x1x8xf32>) -> tensor<2x?x8xf32> {
// CHECK-NEXT:  ^bb0(%ms_1: tensor<2x?x1xf32>, %x_1: tensor<2x?x8xf32>, %w_1: tensor<1x1x8xf32>):
// CHECK-NEXT:    %eps = lp.constant splat 1.0e-05 : tensor<1x1x1xf32>
// CHECK-NEXT:    %a = lp.add %ms_1, %eps
// CHECK-NEXT:    %r = lp.rsqrt %a
// CHECK-NEXT:    %n = lp.mul %x_1, %r
// CHECK-NEXT:    %y_1 = lp.mul %n, %w_1
// CHECK-NEXT:    lp.yield %y_1 : tensor<2x?x8xf32>
// CHECK-NEXT:  }
// CHECK-NEXT:  func.return %y

// A broadcast and an iota join the region (the iota is recomputed in it).
func.func @broadcast_iota(%x: tensor<1x8xf32>) -> tensor<4x8xi1> {
  %b = lp.broadcast %x : tensor<1x8xf32> -> tensor<4x8xf32>
  %i = lp.iota dim 0 : tensor<4x8xf32>
  %c = lp.cmp lt %i, %b : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xi1>
  func.return %c : tensor<4x8xi1>
}
// CHECK-LABEL: func.func @broadcast_iota
// CHECK-NEXT:  %c = lp.fused elementwise(%x) : (tensor<1x8xf32>) -> tensor<4x8xi1> {
// CHECK-NEXT:  ^bb0(%x_1: tensor<1x8xf32>):
// CHECK-NEXT:    %i = lp.iota dim 0 : tensor<4x8xf32>
// CHECK-NEXT:    %b = lp.broadcast %x_1 : tensor<1x8xf32> -> tensor<4x8xf32>
// CHECK-NEXT:    %c_1 = lp.cmp lt %i, %b
// CHECK-NEXT:    lp.yield %c_1 : tensor<4x8xi1>
// CHECK-NEXT:  }
// CHECK-NEXT:  func.return %c

// One op alone is left as it is.
func.func @single(%x: tensor<4xf32>) -> tensor<4xf32> {
  %e = lp.exp %x : tensor<4xf32>
  func.return %e : tensor<4xf32>
}
// CHECK-LABEL: func.func @single
// CHECK-NEXT:  %e = lp.exp %x : tensor<4xf32>
// CHECK-NEXT:  func.return %e

// The fused module prints and parses back unchanged.
// ROUND: %e, %t = lp.fused elementwise(%a, %b)
// ROUND: %ms = lp.fused elementwise(%x)

// BAD: lpcc opt: error: bad pipeline
// BAD-SAME: option max_ops: expected >= 2
