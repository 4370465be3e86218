// RUN: lpcc opt %s -p 'symmetrize-tables' | filecheck %s
// RUN: lpcc opt %s -p 'lut-gemm,symmetrize-tables' | filecheck %s --check-prefix=PIPE

// An int8 table read by two lut_accumulates, an f32 table (g = 2) read by one,
// and an f32 table that is also returned: only the first two are halved.
func.func @main(%x: tensor<2x16xf32>) -> (tensor<2x2x2xf32>, tensor<2x2x2xf32>, tensor<2x2x2xf32>, tensor<2x4x16xf32>) {
  %w = lp.constant splat -2 : tensor<2x16x!lp.int<3>>
  %planes = lp.bitplanes %w group 4 : tensor<2x16x!lp.int<3>> -> tensor<3x2x4x!lp.uint<4>>
  %planes2 = lp.bitplanes %w group 2 : tensor<2x16x!lp.int<3>> -> tensor<3x2x8x!lp.uint<2>>
  %S = lp.group_sum %x group 8 : tensor<2x16xf32> -> tensor<2x2xf32>
  %ls = lp.lut_scale %x group 4 act_group 8 : tensor<2x16xf32> -> tensor<2x2xf32>
  %T = lp.lut_precompute %x scale %ls group 4 {lp.name = "x.lut"} : (tensor<2x16xf32>, tensor<2x2xf32>) -> tensor<2x4x16x!lp.int<8>>
  %p1 = lp.lut_accumulate %T, %planes, %S scale %ls group 8 signed : (tensor<2x4x16x!lp.int<8>>, tensor<3x2x4x!lp.uint<4>>, tensor<2x2xf32>, tensor<2x2xf32>) -> tensor<2x2x2xf32>
  %p2 = lp.lut_accumulate %T, %planes, %S scale %ls group 8 : (tensor<2x4x16x!lp.int<8>>, tensor<3x2x4x!lp.uint<4>>, tensor<2x2xf32>, tensor<2x2xf32>) -> tensor<2x2x2xf32>
  %T2 = lp.lut_precompute %x group 2 : tensor<2x16xf32> -> tensor<2x8x4xf32>
  %p3 = lp.lut_accumulate %T2, %planes2, %S group 8 signed : (tensor<2x8x4xf32>, tensor<3x2x8x!lp.uint<2>>, tensor<2x2xf32>) -> tensor<2x2x2xf32>
  %T3 = lp.lut_precompute %x group 4 : tensor<2x16xf32> -> tensor<2x4x16xf32>
  %p4 = lp.lut_accumulate %T3, %planes, %S group 8 signed : (tensor<2x4x16xf32>, tensor<3x2x4x!lp.uint<4>>, tensor<2x2xf32>) -> tensor<2x2x2xf32>
  func.return %p1, %p3, %p4, %T3 : tensor<2x2x2xf32>, tensor<2x2x2xf32>, tensor<2x2x2xf32>, tensor<2x4x16xf32>
}

// 2^g entries -> 2^(g-1): 16 -> 8 int8 entries (64 -> 32 bytes per token),
// 4 -> 2 f32 entries; attributes and the result name stay.
// CHECK:      %T = lp.lut_precompute %x scale %ls group 4 half {lp.name = "x.lut"} : (tensor<2x16xf32>, tensor<2x2xf32>) -> tensor<2x4x8x!lp.int<8>>
// CHECK-NEXT: %p1 = lp.lut_accumulate %T, %planes, %S scale %ls group 8 signed : (tensor<2x4x8x!lp.int<8>>,
// CHECK-NEXT: %p2 = lp.lut_accumulate %T, %planes, %S scale %ls group 8 : (tensor<2x4x8x!lp.int<8>>,
// CHECK-NEXT: %T2 = lp.lut_precompute %x group 2 half : tensor<2x16xf32> -> tensor<2x8x2xf32>
// CHECK-NEXT: %p3 = lp.lut_accumulate %T2, %planes2, %S group 8 signed : (tensor<2x8x2xf32>,
// CHECK-NEXT: %T3 = lp.lut_precompute %x group 4 : tensor<2x16xf32> -> tensor<2x4x16xf32>
// CHECK-NEXT: %p4 = lp.lut_accumulate %T3, %planes, %S group 8 signed : (tensor<2x4x16xf32>,

// After lut-gemm: the table it made is halved.
func.func @pipe(%x: tensor<1x8xf32>) -> tensor<1x2x1xf32> {
  %w = lp.constant splat 1 : tensor<2x8x!lp.uint<4>>
  %p = lp.group_matmul %x, %w group 8 : (tensor<1x8xf32>, tensor<2x8x!lp.uint<4>>) -> tensor<1x2x1xf32>
  func.return %p : tensor<1x2x1xf32>
}
// PIPE-LABEL: func.func @pipe
// PIPE:       %x_lut = lp.lut_precompute %x scale %x_ls group 4 half : (tensor<1x8xf32>, tensor<1x1xf32>) -> tensor<1x2x8x!lp.int<8>>
// PIPE-NEXT:  %p = lp.lut_accumulate %x_lut, %w_planes, %x_sum_g8 scale %x_ls group 8 : (tensor<1x2x8x!lp.int<8>>,
