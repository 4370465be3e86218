// RUN: lpcc opt %s -p 'lut-gemm' | filecheck %s
// RUN: lpcc opt %s -p 'lut-gemm{table="f32"}' | filecheck %s --check-prefix=F32
// RUN: lpcc opt %s -p 'lut-gemm{act_group=16}' | filecheck %s --check-prefix=A8
// RUN: lpcc opt %s -p 'lut-gemm{g=8}' | filecheck %s --check-prefix=G8
// RUN: (! lpcc opt %s -p 'lut-gemm{act_group=6}' 2>&1) | filecheck %s --check-prefix=BADOPT
// RUN: (! lpcc opt %s -p 'lut-gemm{act_group=64}' 2>&1) | filecheck %s --check-prefix=BADFIT

// K = 32, G = 8. Two GEMMs read %x: a signed int4 weight with a dequant
// epilogue that already has the group sums (zero point), and an unsigned
// uint3 one; an f4e2m1 weight and a GEMM marked for the dequant kernel stay.
func.func @main(%x: tensor<2x32xf32>) -> (tensor<2x2xf32>, tensor<2x3x4xf32>, tensor<2x2x4xf32>, tensor<2x2x4xf32>) {
  %w4 = lp.constant {lp.name = "fc1.weight"} splat 3 : tensor<2x32x!lp.int<4>>
  %s = lp.constant splat 0.25 : tensor<2x4xf16>
  %z = lp.constant splat -1 : tensor<2x4x!lp.int<4>>
  %w3 = lp.constant splat 5 : tensor<3x32x!lp.uint<3>>
  %wf = lp.constant splat 1.5 : tensor<2x32x!lp.float<2,1,finite>>
  %S = lp.group_sum %x group 8 : tensor<2x32xf32> -> tensor<2x4xf32>
  %p1 = lp.group_matmul %x, %w4 group 8 {lp.name = "fc1.weight", lp.kernel = "lut"} : (tensor<2x32xf32>, tensor<2x32x!lp.int<4>>) -> tensor<2x2x4xf32>
  %y1 = lp.group_dequant_reduce %p1 : tensor<2x2x4xf32> scale %s : tensor<2x4xf16> zero %z : tensor<2x4x!lp.int<4>> sums %S : tensor<2x4xf32> -> tensor<2x2xf32>
  %p2 = lp.group_matmul %x, %w3 group 8 : (tensor<2x32xf32>, tensor<3x32x!lp.uint<3>>) -> tensor<2x3x4xf32>
  %p3 = lp.group_matmul %x, %wf group 8 : (tensor<2x32xf32>, tensor<2x32x!lp.float<2,1,finite>>) -> tensor<2x2x4xf32>
  %p4 = lp.group_matmul %x, %w4 group 8 {lp.kernel = "dequant"} : (tensor<2x32xf32>, tensor<2x32x!lp.int<4>>) -> tensor<2x2x4xf32>
  func.return %y1, %p2, %p3, %p4 : tensor<2x2xf32>, tensor<2x3x4xf32>, tensor<2x2x4xf32>, tensor<2x2x4xf32>
}

// Default: int8 tables, act group min(G, 64) = 8 (T-MAC's choice; it fits). ONE scale and ONE table serve both GEMMs, the existing
// group sums are reused, and the epilogue still reads the new P.
// CHECK-LABEL: func.func @main
// CHECK:      %S = lp.group_sum %x group 8
// CHECK-NEXT: %w4_planes = lp.bitplanes %w4 group 4 : tensor<2x32x!lp.int<4>> -> tensor<4x2x8x!lp.uint<4>>
// CHECK-NEXT: %x_ls = lp.lut_scale %x group 4 act_group 8 : tensor<2x32xf32> -> tensor<2x4xf32>
// CHECK-NEXT: %x_lut = lp.lut_precompute %x scale %x_ls group 4 : (tensor<2x32xf32>, tensor<2x4xf32>) -> tensor<2x8x16x!lp.int<8>>
// CHECK-NEXT: %p1 = lp.lut_accumulate %x_lut, %w4_planes, %S scale %x_ls group 8 signed {lp.name = "fc1.weight", lp.kernel = "lut"}
// CHECK-NEXT: %y1 = lp.group_dequant_reduce %p1 : tensor<2x2x4xf32> scale %s : tensor<2x4xf16> zero %z : tensor<2x4x!lp.int<4>> sums %S
// uint3: no `signed`, three planes.
// CHECK-NEXT: %w3_planes = lp.bitplanes %w3 group 4 : tensor<3x32x!lp.uint<3>> -> tensor<3x3x8x!lp.uint<4>>
// CHECK-NEXT: %p2 = lp.lut_accumulate %x_lut, %w3_planes, %S scale %x_ls group 8 :
// CHECK-NEXT: %p3 = lp.group_matmul %x, %wf group 8
// CHECK-NEXT: %p4 = lp.group_matmul %x, %w4 group 8 {lp.kernel = "dequant"}
// CHECK-NOT:  lp.lut_precompute
// CHECK-NOT:  lp.lut_scale

// f32 tables: no scale.
// F32:      %x_lut = lp.lut_precompute %x group 4 : tensor<2x32xf32> -> tensor<2x8x16xf32>
// F32-NEXT: %p1 = lp.lut_accumulate %x_lut, %w4_planes, %S group 8 signed
// F32:      %p2 = lp.lut_accumulate %x_lut, %w3_planes, %S group 8 :
// F32-NOT:  lp.lut_scale

// An explicit act group (16 = 2 G): one scale per 16 activations.
// A8:       %x_ls = lp.lut_scale %x group 4 act_group 16 : tensor<2x32xf32> -> tensor<2x2xf32>
// A8:       lp.lut_accumulate %x_lut, %w4_planes, %S scale %x_ls group 8 signed

// g = 8 activations per table: 256 entries, planes of uint8 indices.
// G8:       %w4_planes = lp.bitplanes %w4 group 8 : tensor<2x32x!lp.int<4>> -> tensor<4x2x4x!lp.uint<8>>
// G8:       %x_lut = lp.lut_precompute %x scale %x_ls group 8 : (tensor<2x32xf32>, tensor<2x4xf32>) -> tensor<2x4x256x!lp.int<8>>

// BADOPT: pass lut-gemm, option act_group: expected 0 (choose) or a positive multiple of g = 4, got 6
// BADFIT: pass lut-gemm, option act_group=64: does not fit lp.group_matmul 'fc1.weight' (K = 32, group G = 8, g = 4)

// A dynamic M: the new ops carry lp.dims.
func.func @dyn(%x: tensor<?x32xf32> {lp.dims = "s0,32"}) -> tensor<?x2x1xf32> {
  %w = lp.constant splat 1 : tensor<2x32x!lp.uint<2>>
  %p = lp.group_matmul %x, %w group 32 {lp.dims = "s0,2,1"} : (tensor<?x32xf32>, tensor<2x32x!lp.uint<2>>) -> tensor<?x2x1xf32>
  func.return %p : tensor<?x2x1xf32>
}
// CHECK-LABEL: func.func @dyn
// CHECK:      %x_sum_g32 = lp.group_sum %x group 32 {lp.dims = "s0,1"} : tensor<?x32xf32> -> tensor<?x1xf32>
// CHECK-NEXT: %x_ls = lp.lut_scale %x group 4 act_group 32 {lp.dims = "s0,1"}
// CHECK-NEXT: %x_lut = lp.lut_precompute %x scale %x_ls group 4 {lp.dims = "s0,8,16"}
// CHECK-NEXT: %p = lp.lut_accumulate %x_lut, %w_planes, %x_sum_g32 scale %x_ls group 32 {lp.dims = "s0,2,1"}

// A dequantize-then-matmul (what the quantize pass writes) goes through
// dequant-after-group-gemm's rewrite first; one marked for the dequant kernel
// and one on a float weight type stay matmuls.
func.func @mm(%x: tensor<2x32xf32>) -> (tensor<2x3xf32>, tensor<2x3xf32>, tensor<2x3xf32>) {
  %q = lp.constant {lp.name = "fc.weight"} splat 2 : tensor<3x32x!lp.uint<2>>
  %s = lp.constant splat 0.5 : tensor<3x2xf16>
  %z = lp.constant splat 1 : tensor<3x2x!lp.uint<2>>
  %wd = lp.dequantize %q scale %s zero %z block [1, 16] : (tensor<3x32x!lp.uint<2>>, tensor<3x2xf16>, tensor<3x2x!lp.uint<2>>) -> tensor<3x32xf32>
  %y = lp.matmul %x, %wd transpose_b : (tensor<2x32xf32>, tensor<3x32xf32>) -> tensor<2x3xf32>
  %y2 = lp.matmul %x, %wd transpose_b {lp.kernel = "dequant"} : (tensor<2x32xf32>, tensor<3x32xf32>) -> tensor<2x3xf32>
  %qf = lp.constant splat 1.5 : tensor<3x32x!lp.float<2,1,finite>>
  %sf = lp.constant splat 0.5 : tensor<3x2xf16>
  %wf = lp.dequantize %qf scale %sf block [1, 16] : (tensor<3x32x!lp.float<2,1,finite>>, tensor<3x2xf16>) -> tensor<3x32xf32>
  %y3 = lp.matmul %x, %wf transpose_b : (tensor<2x32xf32>, tensor<3x32xf32>) -> tensor<2x3xf32>
  func.return %y, %y2, %y3 : tensor<2x3xf32>, tensor<2x3xf32>, tensor<2x3xf32>
}
// CHECK-LABEL: func.func @mm
// CHECK:      %wd = lp.dequantize %q
// CHECK:      %q_planes = lp.bitplanes %q group 4
// CHECK:      %x_sum_g16 = lp.group_sum %x group 16
// CHECK:      %x_lut = lp.lut_precompute %x scale %x_ls group 4
// CHECK:      %y_p = lp.lut_accumulate %x_lut, %q_planes, %x_sum_g16 scale %x_ls group 16 {lp.name = "fc.weight"}
// CHECK-NEXT: %y = lp.group_dequant_reduce %y_p : tensor<2x3x2xf32> scale %s : tensor<3x2xf16> zero %z : tensor<3x2x!lp.uint<2>> sums %x_sum_g16 : tensor<2x2xf32> -> tensor<2x3xf32>
// CHECK-NEXT: %y2 = lp.matmul %x, %wd transpose_b {lp.kernel = "dequant"}
// CHECK:      %y3 = lp.matmul %x, %wf transpose_b
// CHECK-NOT:  lp.group_matmul
