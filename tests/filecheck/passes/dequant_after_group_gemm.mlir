// RUN: lpcc opt %s -p 'dequant-after-group-gemm' | filecheck %s
// RUN: lpcc opt %s -p 'dequant-after-group-gemm{act="int8"}' | lpcc opt - | filecheck %s --check-prefix=A8
// RUN: (! lpcc opt %s -p 'dequant-after-group-gemm{act="int4"}' 2>&1) | filecheck %s --check-prefix=BAD

// Quantized linear layers as the quantize pass leaves them; splat codes, as
// only the IR structure is checked here (the numbers are checked against the
// interpreter in tests/passes/test_dequant_after_group_gemm.py).

// uint4 with a zero point, G = 4 (K = 8): group sums of x are needed.
func.func @zero_point(%x: tensor<2x8xf32>) -> tensor<2x3xf32> {
  %q = lp.constant {lp.name = "fc1.weight"} splat 9 : tensor<3x8x!lp.uint<4>>
  %s = lp.constant splat 0.5 : tensor<3x2xf16>
  %z = lp.constant splat 8 : tensor<3x2x!lp.uint<4>>
  %wd = lp.dequantize %q scale %s zero %z block [1, 4] : (tensor<3x8x!lp.uint<4>>, tensor<3x2xf16>, tensor<3x2x!lp.uint<4>>) -> tensor<3x8xf32>
  %y = lp.matmul %x, %wd transpose_b {lp.kernel = "dequant"} : (tensor<2x8xf32>, tensor<3x8xf32>) -> tensor<2x3xf32>
  func.return %y : tensor<2x3xf32>
}
// CHECK-LABEL: func.func @zero_point
// CHECK-NOT:   lp.dequantize
// CHECK:       %y_p = lp.group_matmul %x, %q group 4 {lp.name = "fc1.weight", lp.kernel = "dequant"} : (tensor<2x8xf32>, tensor<3x8x!lp.uint<4>>) -> tensor<2x3x2xf32>
// CHECK-NEXT:  %x_sum_g4 = lp.group_sum %x group 4 : tensor<2x8xf32> -> tensor<2x2xf32>
// CHECK-NEXT:  %y = lp.group_dequant_reduce %y_p : tensor<2x3x2xf32> scale %s : tensor<3x2xf16> zero %z : tensor<3x2x!lp.uint<4>> sums %x_sum_g4 : tensor<2x2xf32> -> tensor<2x3xf32>
// CHECK-NEXT:  func.return %y

// With int8 activations: x is quantized per group (a = max(absmax, 2^-100) /
// 127), the inner sums are int32 and a joins the epilogue.
// A8-LABEL: func.func @zero_point
// A8:       %x_groups_g4 = lp.reshape %x : tensor<2x8xf32> -> tensor<2x2x4xf32>
// A8-NEXT:  %x_abs_g4 = lp.abs %x_groups_g4 : tensor<2x2x4xf32>
// A8-NEXT:  %x_absmax_g4 = lp.reduce_max %x_abs_g4 dims [2] : tensor<2x2x4xf32> -> tensor<2x2xf32>
// A8-NEXT:  %x_tiny_g4 = lp.constant splat 7.888609e-31 : tensor<1x1xf32>
// A8-NEXT:  %x_absmax_floor_g4 = lp.max %x_absmax_g4, %x_tiny_g4
// A8-NEXT:  %x_qmax_g4 = lp.constant splat 127.0 : tensor<1x1xf32>
// A8-NEXT:  %x_a_g4 = lp.div %x_absmax_floor_g4, %x_qmax_g4 : (tensor<2x2xf32>, tensor<1x1xf32>) -> tensor<2x2xf32>
// A8-NEXT:  %x_i8_g4 = lp.quantize %x scale %x_a_g4 block [1, 4] : (tensor<2x8xf32>, tensor<2x2xf32>) -> tensor<2x8x!lp.int<8>>
// A8-NEXT:  %y_p = lp.group_matmul %x_i8_g4, %q group 4 {{.*}} -> tensor<2x3x2x!lp.int<32>>
// A8-NEXT:  %x_i8_g4_sum = lp.group_sum %x_i8_g4 group 4 : tensor<2x8x!lp.int<8>> -> tensor<2x2x!lp.int<32>>
// A8-NEXT:  %y = lp.group_dequant_reduce %y_p : tensor<2x3x2x!lp.int<32>> scale %s : tensor<3x2xf16> zero %z : tensor<3x2x!lp.uint<4>> sums %x_i8_g4_sum : tensor<2x2x!lp.int<32>> act_scale %x_a_g4 : tensor<2x2xf32> -> tensor<2x3xf32>

// int4, symmetric: no zero point, so no group sums.
func.func @symmetric(%x: tensor<2x8xf32>) -> tensor<2x3xf32> {
  %q = lp.constant {lp.name = "fc2.weight"} splat -3 : tensor<3x8x!lp.int<4>>
  %s = lp.constant splat 0.25 : tensor<3x1xf16>
  %wd = lp.dequantize %q scale %s block [1, 8] : (tensor<3x8x!lp.int<4>>, tensor<3x1xf16>) -> tensor<3x8xf32>
  %y = lp.matmul %x, %wd transpose_b : (tensor<2x8xf32>, tensor<3x8xf32>) -> tensor<2x3xf32>
  func.return %y : tensor<2x3xf32>
}
// CHECK-LABEL: func.func @symmetric
// CHECK-NOT:   lp.dequantize
// CHECK:       %y_p = lp.group_matmul %x, %q group 8 {lp.name = "fc2.weight"} : (tensor<2x8xf32>, tensor<3x8x!lp.int<4>>) -> tensor<2x3x1xf32>
// CHECK-NEXT:  %y = lp.group_dequant_reduce %y_p : tensor<2x3x1xf32> scale %s : tensor<3x1xf16> -> tensor<2x3xf32>
// CHECK-NEXT:  func.return %y

// A8-LABEL: func.func @symmetric
// A8:       %x_i8_g8 = lp.quantize %x scale %x_a_g8 block [1, 8]
// A8-NEXT:  %y_p = lp.group_matmul %x_i8_g8, %q group 8
// A8-NOT:   lp.group_sum
// A8-NEXT:  %y = lp.group_dequant_reduce %y_p : tensor<2x3x1x!lp.int<32>> scale %s : tensor<3x1xf16> act_scale %x_a_g8 : tensor<2x1xf32> -> tensor<2x3xf32>

// f4e2m1 (MXFP4-style e8m0 scales): a float weight type stays on float
// activations even with act="int8".
func.func @float_weight(%x: tensor<2x8xf32>) -> tensor<2x3xf32> {
  %q = lp.constant {lp.name = "fc3.weight"} splat 1.5 : tensor<3x8x!lp.float<2,1,finite>>
  %s = lp.constant splat 2.0 : tensor<3x2x!lp.e8m0>
  %wd = lp.dequantize %q scale %s block [1, 4] : (tensor<3x8x!lp.float<2,1,finite>>, tensor<3x2x!lp.e8m0>) -> tensor<3x8xf32>
  %y = lp.matmul %x, %wd transpose_b : (tensor<2x8xf32>, tensor<3x8xf32>) -> tensor<2x3xf32>
  func.return %y : tensor<2x3xf32>
}
// CHECK-LABEL: func.func @float_weight
// CHECK:       %y_p = lp.group_matmul %x, %q group 4 {lp.name = "fc3.weight"} : (tensor<2x8xf32>, tensor<3x8x!lp.float<2,1,finite>>) -> tensor<2x3x2xf32>
// CHECK-NEXT:  %y = lp.group_dequant_reduce %y_p : tensor<2x3x2xf32> scale %s : tensor<3x2x!lp.e8m0> -> tensor<2x3xf32>

// A8-LABEL: func.func @float_weight
// A8-NOT:   lp.quantize
// A8:       %y_p = lp.group_matmul %x, %q group 4 {{.*}} -> tensor<2x3x2xf32>
// A8-NEXT:  %y = lp.group_dequant_reduce %y_p : tensor<2x3x2xf32> scale %s

// Q, K and V read the same x with the same G: ONE group_sum (and, with
// int8, one quantization of x) serves all three. V has G = 2: its own.
func.func @shared(%x: tensor<1x5x8xf32>) -> (tensor<1x5x2xf32>, tensor<1x5x2xf32>, tensor<1x5x2xf32>) {
  %sq = lp.constant splat 0.5 : tensor<2x2xf16>
  %s2 = lp.constant splat 0.5 : tensor<2x4xf16>
  %zq = lp.constant splat 1 : tensor<2x2x!lp.uint<2>>
  %z2 = lp.constant splat 1 : tensor<2x4x!lp.uint<2>>
  %q1 = lp.constant {lp.name = "attn.wq.weight"} splat 2 : tensor<2x8x!lp.uint<2>>
  %q2 = lp.constant {lp.name = "attn.wk.weight"} splat 3 : tensor<2x8x!lp.uint<2>>
  %q3 = lp.constant {lp.name = "attn.wv.weight"} splat 0 : tensor<2x8x!lp.uint<2>>
  %w1 = lp.dequantize %q1 scale %sq zero %zq block [1, 4] : (tensor<2x8x!lp.uint<2>>, tensor<2x2xf16>, tensor<2x2x!lp.uint<2>>) -> tensor<2x8xf32>
  %w2 = lp.dequantize %q2 scale %sq zero %zq block [1, 4] : (tensor<2x8x!lp.uint<2>>, tensor<2x2xf16>, tensor<2x2x!lp.uint<2>>) -> tensor<2x8xf32>
  %w3 = lp.dequantize %q3 scale %s2 zero %z2 block [1, 2] : (tensor<2x8x!lp.uint<2>>, tensor<2x4xf16>, tensor<2x4x!lp.uint<2>>) -> tensor<2x8xf32>
  %yq = lp.matmul %x, %w1 transpose_b : (tensor<1x5x8xf32>, tensor<2x8xf32>) -> tensor<1x5x2xf32>
  %yk = lp.matmul %x, %w2 transpose_b : (tensor<1x5x8xf32>, tensor<2x8xf32>) -> tensor<1x5x2xf32>
  %yv = lp.matmul %x, %w3 transpose_b : (tensor<1x5x8xf32>, tensor<2x8xf32>) -> tensor<1x5x2xf32>
  func.return %yq, %yk, %yv : tensor<1x5x2xf32>, tensor<1x5x2xf32>, tensor<1x5x2xf32>
}
// CHECK-LABEL: func.func @shared
// CHECK:       %yq_p = lp.group_matmul %x, %q1 group 4 {lp.name = "attn.wq.weight"} : (tensor<1x5x8xf32>, tensor<2x8x!lp.uint<2>>) -> tensor<1x5x2x2xf32>
// CHECK-NEXT:  %x_sum_g4 = lp.group_sum %x group 4 : tensor<1x5x8xf32> -> tensor<1x5x2xf32>
// CHECK-NEXT:  %yq = lp.group_dequant_reduce %yq_p {{.*}} sums %x_sum_g4
// CHECK-NEXT:  %yk_p = lp.group_matmul %x, %q2 group 4
// CHECK-NEXT:  %yk = lp.group_dequant_reduce %yk_p {{.*}} sums %x_sum_g4
// CHECK-NEXT:  %yv_p = lp.group_matmul %x, %q3 group 2
// CHECK-NEXT:  %x_sum_g2 = lp.group_sum %x group 2
// CHECK-NEXT:  %yv = lp.group_dequant_reduce %yv_p {{.*}} sums %x_sum_g2
// CHECK-NOT:   lp.group_sum

// A8-LABEL: func.func @shared
// A8:       %x_i8_g4 = lp.quantize %x scale %x_a_g4 block [1, 1, 4]
// A8-NEXT:  %yq_p = lp.group_matmul %x_i8_g4, %q1 group 4
// A8-NEXT:  %x_i8_g4_sum = lp.group_sum %x_i8_g4 group 4
// A8-NEXT:  %yq = lp.group_dequant_reduce %yq_p {{.*}} sums %x_i8_g4_sum {{.*}} act_scale %x_a_g4
// A8-NEXT:  %yk_p = lp.group_matmul %x_i8_g4, %q2 group 4
// A8-NEXT:  %yk = lp.group_dequant_reduce %yk_p {{.*}} sums %x_i8_g4_sum {{.*}} act_scale %x_a_g4
// A8:       %x_i8_g2 = lp.quantize %x scale %x_a_g2 block [1, 1, 2]
// A8-NEXT:  %yv_p = lp.group_matmul %x_i8_g2, %q3 group 2
// A8-NEXT:  %x_i8_g2_sum = lp.group_sum %x_i8_g2 group 2
// A8-NOT:   lp.quantize
// A8-NOT:   lp.group_sum

// Left alone: a block that is not [1, G]; a matmul tagged dense
// (select-kernels); no transpose_b. A dequantize with another user stays for
// that user. K % G != 0 (K = 8, G = 3) rewrites with a short last group
// (groups 3, 3, 2, as the scales), on float activations even with act=int8.
func.func @no_match(%x: tensor<2x8xf32>, %xt: tensor<2x2xf32>) -> (tensor<2x2xf32>, tensor<2x2xf32>, tensor<2x2xf32>, tensor<2x8xf32>, tensor<2x8xf32>, tensor<2x2xf32>) {
  %q = lp.constant splat 3 : tensor<2x8x!lp.int<4>>
  %s_blk = lp.constant splat 0.5 : tensor<1x2xf16>
  %w_blk = lp.dequantize %q scale %s_blk block [2, 4] : (tensor<2x8x!lp.int<4>>, tensor<1x2xf16>) -> tensor<2x8xf32>
  %y_blk = lp.matmul %x, %w_blk transpose_b : (tensor<2x8xf32>, tensor<2x8xf32>) -> tensor<2x2xf32>
  %s_odd = lp.constant splat 0.5 : tensor<2x3xf16>
  %w_odd = lp.dequantize %q scale %s_odd block [1, 3] : (tensor<2x8x!lp.int<4>>, tensor<2x3xf16>) -> tensor<2x8xf32>
  %y_odd = lp.matmul %x, %w_odd transpose_b : (tensor<2x8xf32>, tensor<2x8xf32>) -> tensor<2x2xf32>
  %s = lp.constant splat 0.5 : tensor<2x2xf16>
  %w = lp.dequantize %q scale %s block [1, 4] : (tensor<2x8x!lp.int<4>>, tensor<2x2xf16>) -> tensor<2x8xf32>
  %y_dense = lp.matmul %x, %w transpose_b {lp.kernel = "dense"} : (tensor<2x8xf32>, tensor<2x8xf32>) -> tensor<2x2xf32>
  %y_plain = lp.matmul %xt, %w : (tensor<2x2xf32>, tensor<2x8xf32>) -> tensor<2x8xf32>
  %y_ok = lp.matmul %x, %w transpose_b : (tensor<2x8xf32>, tensor<2x8xf32>) -> tensor<2x2xf32>
  func.return %y_blk, %y_odd, %y_dense, %y_plain, %w, %y_ok : tensor<2x2xf32>, tensor<2x2xf32>, tensor<2x2xf32>, tensor<2x8xf32>, tensor<2x8xf32>, tensor<2x2xf32>
}
// CHECK-LABEL: func.func @no_match
// CHECK:       %y_blk = lp.matmul %x, %w_blk transpose_b
// CHECK:       %y_odd_p = lp.group_matmul %x, %q group 3 : (tensor<2x8xf32>, tensor<2x8x!lp.int<4>>) -> tensor<2x2x3xf32>
// CHECK-NEXT:  %y_odd = lp.group_dequant_reduce %y_odd_p
// CHECK:       %w = lp.dequantize %q scale %s block [1, 4]
// CHECK-NEXT:  %y_dense = lp.matmul %x, %w transpose_b {lp.kernel = "dense"}
// CHECK-NEXT:  %y_plain = lp.matmul %xt, %w :
// CHECK-NEXT:  %y_ok_p = lp.group_matmul %x, %q group 4
// CHECK-NEXT:  %y_ok = lp.group_dequant_reduce %y_ok_p
// CHECK-NEXT:  func.return %y_blk, %y_odd, %y_dense, %y_plain, %w, %y_ok

// A8-LABEL: func.func @no_match
// A8:       %y_blk = lp.matmul %x, %w_blk transpose_b
// A8:       %y_odd_p = lp.group_matmul %x, %q group 3
// A8:       %y_dense = lp.matmul %x, %w transpose_b {lp.kernel = "dense"}
// A8-NEXT:  %y_plain = lp.matmul %xt, %w :
// A8:       %y_ok_p = lp.group_matmul %x_i8_g4, %q group 4

// Dynamic M (tokens): the new ops carry lp.dims for their `?` sizes.
func.func @dynamic(%x: tensor<?x8xf32> {lp.dims = "s0,8"}) -> tensor<?x3xf32> {
  %q = lp.constant {lp.name = "fc.weight"} splat 1 : tensor<3x8x!lp.uint<3>>
  %s = lp.constant splat 0.5 : tensor<3x2xf16>
  %z = lp.constant splat 4 : tensor<3x2x!lp.uint<3>>
  %wd = lp.dequantize %q scale %s zero %z block [1, 4] : (tensor<3x8x!lp.uint<3>>, tensor<3x2xf16>, tensor<3x2x!lp.uint<3>>) -> tensor<3x8xf32>
  %y = lp.matmul %x, %wd transpose_b {lp.dims = "s0,3"} : (tensor<?x8xf32>, tensor<3x8xf32>) -> tensor<?x3xf32>
  func.return %y : tensor<?x3xf32>
}
// CHECK-LABEL: func.func @dynamic
// CHECK:       %y_p = lp.group_matmul %x, %q group 4 {lp.dims = "s0,3,2", lp.name = "fc.weight"} : (tensor<?x8xf32>, tensor<3x8x!lp.uint<3>>) -> tensor<?x3x2xf32>
// CHECK-NEXT:  %x_sum_g4 = lp.group_sum %x group 4 {lp.dims = "s0,2"} : tensor<?x8xf32> -> tensor<?x2xf32>
// CHECK-NEXT:  %y = lp.group_dequant_reduce %y_p {{.*}} {lp.dims = "s0,3"} -> tensor<?x3xf32>

// A8-LABEL: func.func @dynamic
// A8:       %x_groups_g4 = lp.reshape %x {lp.dims = "s0,2,4"} : tensor<?x8xf32> -> tensor<?x2x4xf32>
// A8-NEXT:  %x_abs_g4 = lp.abs %x_groups_g4 {lp.dims = "s0,2,4"}
// A8-NEXT:  %x_absmax_g4 = lp.reduce_max %x_abs_g4 dims [2] {lp.dims = "s0,2"}
// A8:       %x_a_g4 = lp.div %x_absmax_floor_g4, %x_qmax_g4 {lp.dims = "s0,2"}
// A8-NEXT:  %x_i8_g4 = lp.quantize %x scale %x_a_g4 block [1, 4] {lp.dims = "s0,8"}
// A8-NEXT:  %y_p = lp.group_matmul %x_i8_g4, %q group 4 {lp.dims = "s0,3,2", lp.name = "fc.weight"}

// BAD: lpcc opt: error: bad pipeline
// BAD-SAME: option act: 'int4' is not one of 'float', 'int8'
