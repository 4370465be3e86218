// RUN: lpcc opt %s -p fold-constants | filecheck %s
// RUN: lpcc opt %s -p 'fold-constants{max_growth=56}' | filecheck %s --check-prefix=GROW
// RUN: lpcc opt %s -p 'fold-constants{max_growth=55}' | filecheck %s --check-prefix=GROW55
// RUN: (! lpcc opt %s -p 'fold-constants{max_growth=-1}' 2>&1) | filecheck %s --check-prefix=BAD
// RUN: lpcc opt %s -p canonicalize | filecheck %s --check-prefix=CANON

// The int4 weight w (codes, low nibble first) is
//   row 0: [1, 0, 3, 2, 5, 4, 7, 6], row 1: [-7, -8, -5, -6, -3, -4, -1, -2];
// its unsigned codes u = w + 8 are [9, 8, 11, 10 | 13, 12, 15, 14] and
// [1, 0, 3, 2 | 5, 4, 7, 6].
func.func @planes() -> tensor<4x2x2x!lp.uint<4>> {
  %w = lp.constant {lp.name = "fc1.weight"} dense "0x0123456789ABCDEF" : tensor<2x8x!lp.int<4>>
  %planes = lp.bitplanes %w group 4 : tensor<2x8x!lp.int<4>> -> tensor<4x2x2x!lp.uint<4>>
  func.return %planes : tensor<4x2x2x!lp.uint<4>>
}
// Bit b of each run of 4 weights, as a nibble (weight t -> bit t):
// plane 0: 5 5 5 5, plane 1: C C C C, plane 2: 0 F 0 F, plane 3: F F 0 0.
// 8 bytes in, 8 bytes out: it folds, the weight goes, the name follows.
// CHECK-LABEL: func.func @planes
// CHECK-NEXT:  %planes = lp.constant {lp.name = "fc1.weight.bitplanes"} dense "0x5555CCCCF0F0FF00" : tensor<4x2x2x!lp.uint<4>>
// CHECK-NEXT:  func.return %planes

// The dequantized weight would take 64 bytes for 8 + 4: it stays (unless
// max_growth allows 56 more bytes).
func.func @dequant() -> tensor<2x8xf32> {
  %w = lp.constant {lp.name = "fc1.weight"} dense "0x0123456789ABCDEF" : tensor<2x8x!lp.int<4>>
  %s = lp.constant {lp.name = "fc1.weight.scale"} dense "0x003C0034" : tensor<2x1xf16>
  %dq = lp.dequantize %w scale %s block [1, 8] : (tensor<2x8x!lp.int<4>>, tensor<2x1xf16>) -> tensor<2x8xf32>
  func.return %dq : tensor<2x8xf32>
}
// CHECK-LABEL: func.func @dequant
// CHECK-NEXT:  %w = lp.constant {lp.name = "fc1.weight"} dense "0x0123456789ABCDEF"
// CHECK-NEXT:  %s = lp.constant {lp.name = "fc1.weight.scale"}
// CHECK-NEXT:  %dq = lp.dequantize %w scale %s block [1, 8]
// Row 0 times 1.0 = [1.0, 0.0, 3.0, 2.0, ...] (f32 little-endian), row 1
// times 0.25 ends with [-0.25, -0.5] = 0xBE800000, 0xBF000000.
// GROW-LABEL: func.func @dequant
// GROW-NEXT:  %dq = lp.constant {lp.name = "fc1.weight.dequantize"} dense "0x0000803F000000000000404000000040{{[0-9A-F]*}}000080BE000000BF" : tensor<2x8xf32>
// GROW-NEXT:  func.return %dq
// GROW55-LABEL: func.func @dequant
// GROW55:       lp.dequantize

// A reshape and a permute of a constant fold (the same bytes); an unnamed
// constant gives an unnamed result. [[1, -2, 3.5], [7, 0.5, -0.25]] permuted
// is [[1, 7], [-2, 0.5], [3.5, -0.25]].
func.func @shapes() -> (tensor<3x2xf32>, tensor<6xf32>) {
  %c = lp.constant dense "0x0000803F000000C0000060400000E0400000003F000080BE" : tensor<2x3xf32>
  %t = lp.permute %c [1, 0] : tensor<2x3xf32> -> tensor<3x2xf32>
  %r = lp.reshape %c : tensor<2x3xf32> -> tensor<6xf32>
  func.return %t, %r : tensor<3x2xf32>, tensor<6xf32>
}
// CHECK-LABEL: func.func @shapes
// CHECK-NEXT:  %t = lp.constant dense "0x0000803F0000E040000000C00000003F00006040000080BE" : tensor<3x2xf32>
// CHECK-NEXT:  %r = lp.constant dense "0x0000803F000000C0000060400000E0400000003F000080BE" : tensor<6xf32>
// CHECK-NEXT:  func.return %t, %r

// Splats fold whatever the size: 4096 x 4096 f32 would be 64 MiB, the
// folded splat is one element. exp(0) = 1, and a row sum of 4096 ones
// (a reduction: evaluated, found to be a splat) is 4096. Small shape
// arithmetic on int64 folds too: 3 * 7 - 1.
func.func @splats() -> (tensor<4096x4096xf32>, tensor<64xf32>, tensor<2x!lp.int<64>>) {
  %z = lp.constant splat 0.0 : tensor<1x4096xf32>
  %b = lp.broadcast %z : tensor<1x4096xf32> -> tensor<4096x4096xf32>
  %e = lp.exp %b : tensor<4096x4096xf32>
  %one = lp.constant splat 1.0 : tensor<64x4096xf32>
  %sum = lp.reduce_sum %one dims [1] : tensor<64x4096xf32> -> tensor<64xf32>
  %a = lp.constant dense "0x03000000000000000400000000000000" : tensor<2x!lp.int<64>>
  %k = lp.constant splat 7 : tensor<2x!lp.int<64>>
  %m = lp.mul %a, %k : tensor<2x!lp.int<64>>
  %c1 = lp.constant splat 1 : tensor<2x!lp.int<64>>
  %n = lp.sub %m, %c1 : tensor<2x!lp.int<64>>
  func.return %e, %sum, %n : tensor<4096x4096xf32>, tensor<64xf32>, tensor<2x!lp.int<64>>
}
// CHECK-LABEL: func.func @splats
// CHECK-NEXT:  %e = lp.constant splat 1.0 : tensor<4096x4096xf32>
// CHECK-NEXT:  %sum = lp.constant splat 4096.0 : tensor<64xf32>
// CHECK-NEXT:  %n = lp.constant dense "0x14000000000000001B00000000000000" : tensor<2x!lp.int<64>>
// CHECK-NEXT:  func.return %e, %sum, %n

// Not folded: an integer division by zero (it fails when the program runs,
// where the user sees it), a result of dynamic size, and lp.iota (it has no
// operand, so it could only grow).
func.func @kept(%x: tensor<?x4xf32> {lp.dims = "s0,4"}) -> (tensor<2x!lp.int<8>>, tensor<?x4xf32>, tensor<4xf32>) {
  %a = lp.constant splat 5 : tensor<2x!lp.int<8>>
  %zero = lp.constant splat 0 : tensor<2x!lp.int<8>>
  %q = lp.div %a, %zero : tensor<2x!lp.int<8>>
  %c = lp.constant splat 2.0 : tensor<1x4xf32>
  %b = lp.broadcast %c {lp.dims = "s0,4"} : tensor<1x4xf32> -> tensor<?x4xf32>
  %i = lp.iota dim 0 : tensor<4xf32>
  func.return %q, %b, %i : tensor<2x!lp.int<8>>, tensor<?x4xf32>, tensor<4xf32>
}
// CHECK-LABEL: func.func @kept
// CHECK:       %q = lp.div %a, %zero
// CHECK:       %b = lp.broadcast %c {lp.dims = "s0,4"}
// CHECK:       %i = lp.iota dim 0

// BAD: pass fold-constants, option max_growth: expected bytes >= 0, got -1

// xDSL's canonicalize works on lp IR with the low-precision ops and fused
// regions: it keeps what is used and removes the unused (pure) table op.
func.func @canon(%x: tensor<2x32xf32>) -> tensor<2x8x16xf32> {
  %unused = lp.group_sum %x group 8 : tensor<2x32xf32> -> tensor<2x4xf32>
  %t = lp.fused precompute(%x) : (tensor<2x32xf32>) -> tensor<2x8x16xf32> {
  ^bb0(%a: tensor<2x32xf32>):
    %e = lp.exp %a : tensor<2x32xf32>
    %l = lp.lut_precompute %e group 4 : tensor<2x32xf32> -> tensor<2x8x16xf32>
    lp.yield %l : tensor<2x8x16xf32>
  }
  func.return %t : tensor<2x8x16xf32>
}
// CANON-LABEL: func.func @canon
// CANON-NEXT:  %t = lp.fused precompute(%x) : (tensor<2x32xf32>) -> tensor<2x8x16xf32> {
// CANON-NEXT:  ^bb0(%a: tensor<2x32xf32>):
// CANON-NEXT:    %e = lp.exp %a
// CANON-NEXT:    %l = lp.lut_precompute %e group 4
// CANON-NEXT:    lp.yield %l
// CANON-NEXT:  }
// CANON-NEXT:  func.return %t
