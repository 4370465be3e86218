// RUN: lpcc opt %s -p fuse-table-precompute | filecheck %s
// RUN: lpcc opt %s -p 'fuse-table-precompute{into_producer=false}' | filecheck %s --check-prefix=GROUP

// RMSNorm (the tail after the mean of squares) produces %x; Q, K and V each
// got their own scale, table and group sums. Only the tables read %x.
func.func @rmsnorm(%h: tensor<2x32xf32>) -> (tensor<2x2x4xf32>, tensor<2x2x4xf32>, tensor<2x2x4xf32>) {
  %sq = lp.mul %h, %h : tensor<2x32xf32>
  %ms = lp.reduce_mean %sq dims [1] keepdim : tensor<2x32xf32> -> tensor<2x1xf32>
  %eps = lp.constant splat 1.0e-05 : tensor<2x1xf32>
  %a = lp.add %ms, %eps : tensor<2x1xf32>
  %r = lp.rsqrt %a : tensor<2x1xf32>
  %rb = lp.broadcast %r : tensor<2x1xf32> -> tensor<2x32xf32>
  %n = lp.mul %h, %rb : tensor<2x32xf32>
  %g = lp.constant splat 1.5 : tensor<1x32xf32>
  %gb = lp.broadcast %g : tensor<1x32xf32> -> tensor<2x32xf32>
  %x = lp.mul %n, %gb : tensor<2x32xf32>
  %wq = lp.constant splat 9 : tensor<2x2x8x!lp.uint<4>>
  %wk = lp.constant splat 5 : tensor<2x2x8x!lp.uint<4>>
  %wv = lp.constant splat 12 : tensor<2x2x8x!lp.uint<4>>
  %ls_q = lp.lut_scale %x group 4 act_group 32 : tensor<2x32xf32> -> tensor<2x1xf32>
  %t_q = lp.lut_precompute %x scale %ls_q group 4 : (tensor<2x32xf32>, tensor<2x1xf32>) -> tensor<2x8x16x!lp.int<8>>
  %s_q = lp.group_sum %x group 8 : tensor<2x32xf32> -> tensor<2x4xf32>
  %q = lp.lut_accumulate %t_q, %wq, %s_q scale %ls_q group 8 : (tensor<2x8x16x!lp.int<8>>, tensor<2x2x8x!lp.uint<4>>, tensor<2x4xf32>, tensor<2x1xf32>) -> tensor<2x2x4xf32>
  %ls_k = lp.lut_scale %x group 4 act_group 32 : tensor<2x32xf32> -> tensor<2x1xf32>
  %t_k = lp.lut_precompute %x scale %ls_k group 4 : (tensor<2x32xf32>, tensor<2x1xf32>) -> tensor<2x8x16x!lp.int<8>>
  %s_k = lp.group_sum %x group 8 : tensor<2x32xf32> -> tensor<2x4xf32>
  %k = lp.lut_accumulate %t_k, %wk, %s_k scale %ls_k group 8 : (tensor<2x8x16x!lp.int<8>>, tensor<2x2x8x!lp.uint<4>>, tensor<2x4xf32>, tensor<2x1xf32>) -> tensor<2x2x4xf32>
  %ls_v = lp.lut_scale %x group 4 act_group 32 : tensor<2x32xf32> -> tensor<2x1xf32>
  %t_v = lp.lut_precompute %x scale %ls_v group 4 : (tensor<2x32xf32>, tensor<2x1xf32>) -> tensor<2x8x16x!lp.int<8>>
  %s_v = lp.group_sum %x group 8 : tensor<2x32xf32> -> tensor<2x4xf32>
  %v = lp.lut_accumulate %t_v, %wv, %s_v scale %ls_v group 8 signed : (tensor<2x8x16x!lp.int<8>>, tensor<2x2x8x!lp.uint<4>>, tensor<2x4xf32>, tensor<2x1xf32>) -> tensor<2x2x4xf32>
  func.return %q, %k, %v : tensor<2x2x4xf32>, tensor<2x2x4xf32>, tensor<2x2x4xf32>
}
// One scale, one table, one sum; the chain from the mean to %x (its splat
// constants cloned in) and the tables are one kernel, and %x is not a result.
// CHECK-LABEL: func.func @rmsnorm
// CHECK-NEXT:  %sq = lp.mul %h, %h
// CHECK-NEXT:  %ms = lp.reduce_mean %sq
// CHECK:       %ls_q, %t_q, %s_q = lp.fused precompute(%ms, %h) : (tensor<2x1xf32>, tensor<2x32xf32>) -> (tensor<2x1xf32>, tensor<2x8x16x!lp.int<8>>, tensor<2x4xf32>) {
// CHECK-NEXT:  ^bb0(%ms_1: tensor<2x1xf32>, %h_1: tensor<2x32xf32>):
// CHECK:         %a = lp.add %ms_1, %eps
// CHECK-NEXT:    %r = lp.rsqrt %a
// CHECK-NEXT:    %rb = lp.broadcast %r
// CHECK-NEXT:    %n = lp.mul %h_1, %rb
// CHECK-NEXT:    %gb = lp.broadcast %g
// CHECK-NEXT:    %x = lp.mul %n, %gb
// CHECK-NEXT:    %ls_q_1 = lp.lut_scale %x group 4 act_group 32
// CHECK-NEXT:    %t_q_1 = lp.lut_precompute %x scale %ls_q_1 group 4
// CHECK-NEXT:    %s_q_1 = lp.group_sum %x group 8
// CHECK-NEXT:    lp.yield %ls_q_1, %t_q_1, %s_q_1
// CHECK-NEXT:  }
// CHECK-NEXT:  %q = lp.lut_accumulate %t_q, %wq, %s_q scale %ls_q group 8
// CHECK-NEXT:  %k = lp.lut_accumulate %t_q, %wk, %s_q scale %ls_q group 8
// CHECK-NEXT:  %v = lp.lut_accumulate %t_q, %wv, %s_q scale %ls_q group 8 signed
// CHECK-NOT:   lp.lut_precompute
// CHECK-NOT:   lp.group_sum

// Without into_producer: the same tables deduplicated and grouped; the
// RMSNorm tail stays as it was.
// GROUP-LABEL: func.func @rmsnorm
// GROUP:       %x = lp.mul %n, %gb
// GROUP:       %ls_q, %t_q, %s_q = lp.fused precompute(%x) : (tensor<2x32xf32>) -> (tensor<2x1xf32>, tensor<2x8x16x!lp.int<8>>, tensor<2x4xf32>) {
// GROUP-NEXT:  ^bb0(%x_1: tensor<2x32xf32>):
// GROUP-NEXT:    %ls_q_1 = lp.lut_scale %x_1
// GROUP-NEXT:    %t_q_1 = lp.lut_precompute %x_1 scale %ls_q_1
// GROUP-NEXT:    %s_q_1 = lp.group_sum %x_1
// GROUP-NEXT:    lp.yield %ls_q_1, %t_q_1, %s_q_1
// GROUP-NEXT:  }
// GROUP-NEXT:  %q = lp.lut_accumulate %t_q, %wq, %s_q
// GROUP-NEXT:  %k = lp.lut_accumulate %t_q, %wk, %s_q
// GROUP-NEXT:  %v = lp.lut_accumulate %t_q, %wv, %s_q

// %x is produced by a fused elementwise region and is also read by a
// residual add: the region and the table join, and %x stays a result.
func.func @region(%a: tensor<2x32xf32>, %b: tensor<2x32xf32>) -> (tensor<2x2x4xf32>, tensor<2x32xf32>) {
  %x = lp.fused elementwise(%a, %b) : (tensor<2x32xf32>, tensor<2x32xf32>) -> tensor<2x32xf32> {
  ^bb0(%p: tensor<2x32xf32>, %q: tensor<2x32xf32>):
    %s = lp.sigmoid %p : tensor<2x32xf32>
    %m = lp.mul %s, %q : tensor<2x32xf32>
    lp.yield %m : tensor<2x32xf32>
  }
  %w = lp.constant splat 3 : tensor<2x2x8x!lp.uint<4>>
  %t = lp.lut_precompute %x group 4 : tensor<2x32xf32> -> tensor<2x8x16xf32>
  %s = lp.group_sum %x group 8 : tensor<2x32xf32> -> tensor<2x4xf32>
  %y = lp.lut_accumulate %t, %w, %s group 8 : (tensor<2x8x16xf32>, tensor<2x2x8x!lp.uint<4>>, tensor<2x4xf32>) -> tensor<2x2x4xf32>
  %res = lp.add %x, %b : tensor<2x32xf32>
  func.return %y, %res : tensor<2x2x4xf32>, tensor<2x32xf32>
}
// CHECK-LABEL: func.func @region
// CHECK:       %x, %t, %s = lp.fused precompute(%a, %b) : (tensor<2x32xf32>, tensor<2x32xf32>) -> (tensor<2x32xf32>, tensor<2x8x16xf32>, tensor<2x4xf32>) {
// CHECK-NEXT:  ^bb0(%a_1: tensor<2x32xf32>, %b_1: tensor<2x32xf32>):
// CHECK-NEXT:    %s_1 = lp.sigmoid %a_1
// CHECK-NEXT:    %x_1 = lp.mul %s_1, %b_1
// CHECK-NEXT:    %t_1 = lp.lut_precompute %x_1 group 4
// CHECK-NEXT:    %s_2 = lp.group_sum %x_1 group 8
// CHECK-NEXT:    lp.yield %x_1, %t_1, %s_2
// CHECK-NEXT:  }
// CHECK-NEXT:  %y = lp.lut_accumulate %t, %w, %s group 8
// CHECK-NEXT:  %res = lp.add %x, %b
// CHECK-NOT:   lp.fused elementwise
// GROUP-LABEL: func.func @region
// GROUP:       %x = lp.fused elementwise(%a, %b)
// GROUP:       %t, %s = lp.fused precompute(%x)

// %x is a function argument, %z comes from a matmul: their tables are
// grouped (one kernel, one read of the activations). A lone table op (the
// group sums of %u) is left as it is.
func.func @grouped(%x: tensor<2x32xf32>, %u: tensor<2x32xf32>, %m: tensor<32x32xf32>) -> (tensor<2x2x4xf32>, tensor<2x2x4xf32>, tensor<2x4xf32>) {
  %w = lp.constant splat 3 : tensor<2x2x8x!lp.uint<4>>
  %t = lp.lut_precompute %x group 4 : tensor<2x32xf32> -> tensor<2x8x16xf32>
  %s = lp.group_sum %x group 8 : tensor<2x32xf32> -> tensor<2x4xf32>
  %y = lp.lut_accumulate %t, %w, %s group 8 : (tensor<2x8x16xf32>, tensor<2x2x8x!lp.uint<4>>, tensor<2x4xf32>) -> tensor<2x2x4xf32>
  %z = lp.matmul %x, %m : (tensor<2x32xf32>, tensor<32x32xf32>) -> tensor<2x32xf32>
  %tz = lp.lut_precompute %z group 4 : tensor<2x32xf32> -> tensor<2x8x16xf32>
  %sz = lp.group_sum %z group 8 : tensor<2x32xf32> -> tensor<2x4xf32>
  %yz = lp.lut_accumulate %tz, %w, %sz group 8 : (tensor<2x8x16xf32>, tensor<2x2x8x!lp.uint<4>>, tensor<2x4xf32>) -> tensor<2x2x4xf32>
  %su = lp.group_sum %u group 8 : tensor<2x32xf32> -> tensor<2x4xf32>
  func.return %y, %yz, %su : tensor<2x2x4xf32>, tensor<2x2x4xf32>, tensor<2x4xf32>
}
// CHECK-LABEL: func.func @grouped
// CHECK:       %t, %s = lp.fused precompute(%x) : (tensor<2x32xf32>) -> (tensor<2x8x16xf32>, tensor<2x4xf32>) {
// CHECK-NEXT:  ^bb0(%x_1: tensor<2x32xf32>):
// CHECK-NEXT:    %t_1 = lp.lut_precompute %x_1 group 4
// CHECK-NEXT:    %s_1 = lp.group_sum %x_1 group 8
// CHECK-NEXT:    lp.yield %t_1, %s_1
// CHECK-NEXT:  }
// CHECK-NEXT:  %y = lp.lut_accumulate %t, %w, %s group 8
// CHECK-NEXT:  %z = lp.matmul %x, %m
// CHECK-NEXT:  %tz, %sz = lp.fused precompute(%z)
// CHECK:       %yz = lp.lut_accumulate %tz, %w, %sz group 8
// CHECK-NEXT:  %su = lp.group_sum %u group 8
// CHECK-NEXT:  func.return %y, %yz, %su

// The chain grows back only over ops whose result nothing else reads: %e is
// also returned, so it stays outside and the region starts at %x.
func.func @chain_stop(%a: tensor<2x32xf32>, %b: tensor<2x32xf32>) -> (tensor<2x8x16xf32>, tensor<2x4xf32>, tensor<2x32xf32>) {
  %e = lp.exp %a : tensor<2x32xf32>
  %x = lp.mul %e, %b : tensor<2x32xf32>
  %t = lp.lut_precompute %x group 4 : tensor<2x32xf32> -> tensor<2x8x16xf32>
  %s = lp.group_sum %x group 8 : tensor<2x32xf32> -> tensor<2x4xf32>
  func.return %t, %s, %e : tensor<2x8x16xf32>, tensor<2x4xf32>, tensor<2x32xf32>
}
// CHECK-LABEL: func.func @chain_stop
// CHECK-NEXT:  %e = lp.exp %a
// CHECK-NEXT:  %t, %s = lp.fused precompute(%e, %b)
// CHECK-NEXT:  ^bb0(%e_1: tensor<2x32xf32>, %b_1: tensor<2x32xf32>):
// CHECK-NEXT:    %x = lp.mul %e_1, %b_1
// CHECK-NEXT:    %t_1 = lp.lut_precompute %x group 4
// CHECK-NEXT:    %s_1 = lp.group_sum %x group 8
// CHECK-NEXT:    lp.yield %t_1, %s_1
// CHECK-NEXT:  }
// CHECK-NEXT:  func.return %t, %s, %e
