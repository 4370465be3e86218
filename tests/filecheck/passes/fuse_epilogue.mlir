// RUN: lpcc opt %s -p fuse-epilogue | filecheck %s
// RUN: lpcc opt %s -p 'fuse-epilogue,fuse-elementwise' | filecheck %s --check-prefix=BOTH

// Linear + bias + silu (x * sigmoid(x): both ops read the biased value).
func.func @bias_silu(%x: tensor<2x8xf32>, %w: tensor<4x8xf32>, %b: tensor<1x4xf32>) -> tensor<2x4xf32> {
  %h = lp.matmul %x, %w transpose_b : (tensor<2x8xf32>, tensor<4x8xf32>) -> tensor<2x4xf32>
  %hb = lp.add %h, %b : (tensor<2x4xf32>, tensor<1x4xf32>) -> tensor<2x4xf32>
  %sg = lp.sigmoid %hb : tensor<2x4xf32>
  %y = lp.mul %hb, %sg : tensor<2x4xf32>
  func.return %y : tensor<2x4xf32>
}
// CHECK-LABEL: func.func @bias_silu
// CHECK-NEXT:  %y = lp.fused epilogue(%x, %w, %b) : (tensor<2x8xf32>, tensor<4x8xf32>, tensor<1x4xf32>) -> tensor<2x4xf32> {
// CHECK-NEXT:  ^bb0(%x_1: tensor<2x8xf32>, %w_1: tensor<4x8xf32>, %b_1: tensor<1x4xf32>):
// CHECK-NEXT:    %h = lp.matmul %x_1, %w_1 transpose_b
// CHECK-NEXT:    %hb = lp.add %h, %b_1
// CHECK-NEXT:    %sg = lp.sigmoid %hb
// CHECK-NEXT:    %y_1 = lp.mul %hb, %sg
// CHECK-NEXT:    lp.yield %y_1 : tensor<2x4xf32>
// CHECK-NEXT:  }
// CHECK-NEXT:  func.return %y

// Scaling by a splat (cloned in), the residual add of the matmul's own
// input, and a cast to f16.
func.func @residual(%x: tensor<2x8xf32>, %w: tensor<8x8xf32>) -> tensor<2x8xf16> {
  %h = lp.matmul %x, %w transpose_b : (tensor<2x8xf32>, tensor<8x8xf32>) -> tensor<2x8xf32>
  %half = lp.constant splat 0.5 : tensor<1x1xf32>
  %s = lp.mul %h, %half : (tensor<2x8xf32>, tensor<1x1xf32>) -> tensor<2x8xf32>
  %r = lp.add %x, %s : tensor<2x8xf32>
  %c = lp.cast %r : tensor<2x8xf32> -> tensor<2x8xf16>
  func.return %c : tensor<2x8xf16>
}
// CHECK-LABEL: func.func @residual
// CHECK-NEXT:  %c = lp.fused epilogue(%x, %w) : (tensor<2x8xf32>, tensor<8x8xf32>) -> tensor<2x8xf16> {
// CHECK-NEXT:  ^bb0(%x_1: tensor<2x8xf32>, %w_1: tensor<8x8xf32>):
// CHECK-NEXT:    %half = lp.constant splat 0.5 : tensor<1x1xf32>
// CHECK-NEXT:    %h = lp.matmul %x_1, %w_1 transpose_b
// CHECK-NEXT:    %s = lp.mul %h, %half
// CHECK-NEXT:    %r = lp.add %x_1, %s
// CHECK-NEXT:    %c_1 = lp.cast %r : tensor<2x8xf32> -> tensor<2x8xf16>
// CHECK-NEXT:    lp.yield %c_1 : tensor<2x8xf16>
// CHECK-NEXT:  }
// CHECK-NEXT:  func.return %c

// The matmul's result is also returned: an epilogue would have to write it
// out as well, so nothing is fused.
func.func @two_users(%x: tensor<2x8xf32>, %w: tensor<4x8xf32>, %b: tensor<1x4xf32>) -> (tensor<2x4xf32>, tensor<2x4xf32>) {
  %h = lp.matmul %x, %w transpose_b : (tensor<2x8xf32>, tensor<4x8xf32>) -> tensor<2x4xf32>
  %hb = lp.add %h, %b : (tensor<2x4xf32>, tensor<1x4xf32>) -> tensor<2x4xf32>
  func.return %hb, %h : tensor<2x4xf32>, tensor<2x4xf32>
}
// CHECK-LABEL: func.func @two_users
// CHECK-NEXT:  %h = lp.matmul %x, %w transpose_b
// CHECK-NEXT:  %hb = lp.add %h, %b
// CHECK-NEXT:  func.return %hb, %h
// fuse-elementwise leaves the lone add alone too.
// BOTH-LABEL: func.func @two_users
// BOTH-NEXT:  %h = lp.matmul %x, %w transpose_b
// BOTH-NEXT:  %hb = lp.add %h, %b

// The epilogue ends where the readers cannot join: tanh(hb) would make hb a
// second result (reshape and the return read it), a broadcast changes the
// shape, and sub reads a reduction of tanh (a cycle).
func.func @stops(%x: tensor<2x8xf32>, %w: tensor<4x8xf32>, %b: tensor<1x4xf32>) -> (tensor<2x4xf32>, tensor<3x2x4xf32>, tensor<2x4xf32>) {
  %h = lp.matmul %x, %w transpose_b : (tensor<2x8xf32>, tensor<4x8xf32>) -> tensor<2x4xf32>
  %hb = lp.add %h, %b : (tensor<2x4xf32>, tensor<1x4xf32>) -> tensor<2x4xf32>
  %t = lp.tanh %hb : tensor<2x4xf32>
  %r = lp.reshape %hb : tensor<2x4xf32> -> tensor<1x2x4xf32>
  %bc = lp.broadcast %r : tensor<1x2x4xf32> -> tensor<3x2x4xf32>
  %m = lp.reduce_max %t dims [1] keepdim : tensor<2x4xf32> -> tensor<2x1xf32>
  %d = lp.sub %t, %m : (tensor<2x4xf32>, tensor<2x1xf32>) -> tensor<2x4xf32>
  func.return %hb, %bc, %d : tensor<2x4xf32>, tensor<3x2x4xf32>, tensor<2x4xf32>
}
// CHECK-LABEL: func.func @stops
// CHECK-NEXT:  %hb = lp.fused epilogue(%x, %w, %b)
// CHECK-NEXT:  ^bb0(%x_1: tensor<2x8xf32>, %w_1: tensor<4x8xf32>, %b_1: tensor<1x4xf32>):
// CHECK-NEXT:    %h = lp.matmul %x_1, %w_1 transpose_b
// CHECK-NEXT:    %hb_1 = lp.add %h, %b_1
// CHECK-NEXT:    lp.yield %hb_1 : tensor<2x4xf32>
// CHECK-NEXT:  }
// CHECK-NEXT:  %t = lp.tanh %hb
// CHECK-NEXT:  %r = lp.reshape %hb
// CHECK-NEXT:  %bc = lp.broadcast %r
// CHECK-NEXT:  %m = lp.reduce_max %t
// CHECK-NEXT:  %d = lp.sub %t, %m
// Then fuse-elementwise takes tanh and its trailing reduction.
// BOTH-LABEL: func.func @stops
// BOTH:       %hb = lp.fused epilogue
// BOTH:       %t, %m = lp.fused elementwise(%hb)
// BOTH:       %d = lp.sub %t, %m

// A group GEMM read only by its dequantizing reduction joins it; the
// residual add follows.
func.func @group_gemm(%x: tensor<2x32xf32>, %w: tensor<2x32x!lp.int<4>>, %s: tensor<2x4xf16>, %y: tensor<2x2xf32>) -> tensor<2x2xf32> {
  %p = lp.group_matmul %x, %w group 8 : (tensor<2x32xf32>, tensor<2x32x!lp.int<4>>) -> tensor<2x2x4xf32>
  %d = lp.group_dequant_reduce %p : tensor<2x2x4xf32> scale %s : tensor<2x4xf16> -> tensor<2x2xf32>
  %r = lp.add %d, %y : tensor<2x2xf32>
  func.return %r : tensor<2x2xf32>
}
// CHECK-LABEL: func.func @group_gemm
// CHECK-NEXT:  %r = lp.fused epilogue(%x, %w, %s, %y) : (tensor<2x32xf32>, tensor<2x32x!lp.int<4>>, tensor<2x4xf16>, tensor<2x2xf32>) -> tensor<2x2xf32> {
// CHECK-NEXT:  ^bb0(%x_1: tensor<2x32xf32>, %w_1: tensor<2x32x!lp.int<4>>, %s_1: tensor<2x4xf16>, %y_1: tensor<2x2xf32>):
// CHECK-NEXT:    %p = lp.group_matmul %x_1, %w_1 group 8
// CHECK-NEXT:    %d = lp.group_dequant_reduce %p : tensor<2x2x4xf32> scale %s_1
// CHECK-NEXT:    %r_1 = lp.add %d, %y_1
// CHECK-NEXT:    lp.yield %r_1 : tensor<2x2xf32>
// CHECK-NEXT:  }
// CHECK-NEXT:  func.return %r

// The partial products are returned too: the group GEMM stays outside and
// the reduction anchors the epilogue alone.
func.func @group_gemm_shared(%x: tensor<2x32xf32>, %w: tensor<2x32x!lp.int<4>>, %s: tensor<2x4xf16>, %y: tensor<2x2xf32>) -> (tensor<2x2xf32>, tensor<2x2x4xf32>) {
  %p = lp.group_matmul %x, %w group 8 : (tensor<2x32xf32>, tensor<2x32x!lp.int<4>>) -> tensor<2x2x4xf32>
  %d = lp.group_dequant_reduce %p : tensor<2x2x4xf32> scale %s : tensor<2x4xf16> -> tensor<2x2xf32>
  %r = lp.add %d, %y : tensor<2x2xf32>
  func.return %r, %p : tensor<2x2xf32>, tensor<2x2x4xf32>
}
// CHECK-LABEL: func.func @group_gemm_shared
// CHECK-NEXT:  %p = lp.group_matmul %x, %w group 8
// CHECK-NEXT:  %r = lp.fused epilogue(%p, %s, %y)
// CHECK-NEXT:  ^bb0(%p_1: tensor<2x2x4xf32>, %s_1: tensor<2x4xf16>, %y_1: tensor<2x2xf32>):
// CHECK-NEXT:    %d = lp.group_dequant_reduce %p_1
// CHECK-NEXT:    %r_1 = lp.add %d, %y_1
