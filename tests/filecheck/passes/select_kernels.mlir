// RUN: lpcc opt %s -p 'select-kernels' | filecheck %s
// RUN: lpcc opt %s -p 'select-kernels{target="cuda"}' | filecheck %s --check-prefix=CUDA
// RUN: lpcc opt %s -p 'select-kernels{override="layers.0.*=dense,*.mlp.*=lut, *=dequant"}' | filecheck %s --check-prefix=OVR
// RUN: (! lpcc opt %s -p 'select-kernels{override="*.w4=lut"}' 2>&1) | filecheck %s --check-prefix=NOLUT
// RUN: (! lpcc opt %s -p 'select-kernels{override="*.mlp.*=fast"}' 2>&1) | filecheck %s --check-prefix=KIND

// (target "reference" follows the same rule as the default "cpu": see
// tests/passes/test_kernel_choice.py; malformed options are tested there too.)

// Quantized linear layers as the quantize pass leaves them (splat codes: the
// rule only reads the weight type and the activation rows m).
func.func @main(%x: tensor<1x8xf32>, %xp: tensor<16x8xf32>, %xd: tensor<?x8xf32> {lp.dims = "s0,8"}, %xb: tensor<3x4x8xf32>) -> (tensor<1x2xf32>, tensor<16x2xf32>, tensor<1x2xf32>, tensor<1x2xf32>, tensor<?x2xf32>, tensor<3x4x2xf32>, tensor<1x8xf32>) {
  %s = lp.constant splat 0.5 : tensor<2x1xf16>
  %q1 = lp.constant {lp.name = "layers.0.mlp.w1.weight"} splat 1 : tensor<2x8x!lp.int<2>>
  %w1 = lp.dequantize %q1 scale %s block [1, 8] : (tensor<2x8x!lp.int<2>>, tensor<2x1xf16>) -> tensor<2x8xf32>
  %q2 = lp.constant {lp.name = "layers.1.mlp.w2.weight"} splat 3 : tensor<2x8x!lp.uint<3>>
  %q2z = lp.constant splat 4 : tensor<2x1x!lp.uint<3>>
  %w2 = lp.dequantize %q2 scale %s zero %q2z block [1, 8] : (tensor<2x8x!lp.uint<3>>, tensor<2x1xf16>, tensor<2x1x!lp.uint<3>>) -> tensor<2x8xf32>
  %q3 = lp.constant {lp.name = "layers.1.attn.w3"} splat 5 : tensor<2x8x!lp.int<8>>
  %w3 = lp.dequantize %q3 scale %s block [1, 8] : (tensor<2x8x!lp.int<8>>, tensor<2x1xf16>) -> tensor<2x8xf32>
  %q4 = lp.constant {lp.name = "layers.1.attn.w4"} splat 1.5 : tensor<2x8x!lp.float<2,1,finite>>
  %w4 = lp.dequantize %q4 scale %s block [1, 8] : (tensor<2x8x!lp.float<2,1,finite>>, tensor<2x1xf16>) -> tensor<2x8xf32>
  %q5 = lp.constant {lp.name = "layers.1.attn.w5"} splat 1 : tensor<2x8xi1>
  %w5 = lp.dequantize %q5 scale %s block [1, 8] : (tensor<2x8xi1>, tensor<2x1xf16>) -> tensor<2x8xf32>
  %dense = lp.constant {lp.name = "head.weight"} splat 0.25 : tensor<8x8xf32>
  // int/uint of 1..7 bits: LUT on CPU at any m (measured faster).
  // int2 at m = 1 (decode): LUT.
  %y1 = lp.matmul %x, %w1 transpose_b : (tensor<1x8xf32>, tensor<2x8xf32>) -> tensor<1x2xf32>
  // uint3 at m = 16 (prefill): LUT too.
  %y2 = lp.matmul %xp, %w2 transpose_b : (tensor<16x8xf32>, tensor<2x8xf32>) -> tensor<16x2xf32>
  // int8: dequant at any m (its int8 stream beats 8 bit planes).
  %y3 = lp.matmul %x, %w3 transpose_b : (tensor<1x8xf32>, tensor<2x8xf32>) -> tensor<1x2xf32>
  // f4e2m1: a float type has no bit planes: dequant.
  %y4 = lp.matmul %x, %w4 transpose_b : (tensor<1x8xf32>, tensor<2x8xf32>) -> tensor<1x2xf32>
  // uint1 with a dynamic m (decode-shaped): LUT.
  %y5 = lp.matmul %xd, %w5 transpose_b {lp.dims = "s0,2"} : (tensor<?x8xf32>, tensor<2x8xf32>) -> tensor<?x2xf32>
  // int2 with batch 3 x 4 rows: m = 12 activation rows share the weights; LUT.
  %y6 = lp.matmul %xb, %w1 transpose_b : (tensor<3x4x8xf32>, tensor<2x8xf32>) -> tensor<3x4x2xf32>
  // Not a quantized weight: never tagged.
  %y7 = lp.matmul %x, %dense transpose_b : (tensor<1x8xf32>, tensor<8x8xf32>) -> tensor<1x8xf32>
  func.return %y1, %y2, %y3, %y4, %y5, %y6, %y7 : tensor<1x2xf32>, tensor<16x2xf32>, tensor<1x2xf32>, tensor<1x2xf32>, tensor<?x2xf32>, tensor<3x4x2xf32>, tensor<1x8xf32>
}

// CHECK:      %y1 = lp.matmul %x, %w1 transpose_b {lp.kernel = "lut"}
// CHECK-NEXT: %y2 = lp.matmul %xp, %w2 transpose_b {lp.kernel = "lut"}
// CHECK-NEXT: %y3 = lp.matmul %x, %w3 transpose_b {lp.kernel = "dequant"}
// CHECK-NEXT: %y4 = lp.matmul %x, %w4 transpose_b {lp.kernel = "dequant"}
// CHECK-NEXT: %y5 = lp.matmul %xd, %w5 transpose_b {lp.dims = "s0,2", lp.kernel = "lut"}
// CHECK-NEXT: %y6 = lp.matmul %xb, %w1 transpose_b {lp.kernel = "lut"}
// CHECK-NEXT: %y7 = lp.matmul %x, %dense transpose_b :

// CUDA:      %y1 = lp.matmul %x, %w1 transpose_b {lp.kernel = "dequant"}
// CUDA-NEXT: %y2 = lp.matmul %xp, %w2 transpose_b {lp.kernel = "dequant"}
// CUDA-NEXT: %y3 = lp.matmul %x, %w3 transpose_b {lp.kernel = "dequant"}
// CUDA-NEXT: %y4 = lp.matmul %x, %w4 transpose_b {lp.kernel = "dequant"}
// CUDA-NEXT: %y5 = lp.matmul %xd, %w5 transpose_b {lp.dims = "s0,2", lp.kernel = "dequant"}
// CUDA-NEXT: %y6 = lp.matmul %xb, %w1 transpose_b {lp.kernel = "dequant"}
// CUDA-NEXT: %y7 = lp.matmul %x, %dense transpose_b :

// First match wins: layers.0.mlp.w1 is dense (not lut), layers.1.mlp.w2 is
// lut even at m = 16, the rest fall through to "*".
// OVR:      %y1 = lp.matmul %x, %w1 transpose_b {lp.kernel = "dense"}
// OVR-NEXT: %y2 = lp.matmul %xp, %w2 transpose_b {lp.kernel = "lut"}
// OVR-NEXT: %y3 = lp.matmul %x, %w3 transpose_b {lp.kernel = "dequant"}
// OVR-NEXT: %y4 = lp.matmul %x, %w4 transpose_b {lp.kernel = "dequant"}
// OVR-NEXT: %y5 = lp.matmul %xd, %w5 transpose_b {lp.dims = "s0,2", lp.kernel = "dequant"}
// OVR-NEXT: %y6 = lp.matmul %xb, %w1 transpose_b {lp.kernel = "dense"}
// OVR-NEXT: %y7 = lp.matmul %x, %dense transpose_b :

// NOLUT: lpcc opt: error: pass select-kernels, option override: '*.w4'=lut matches weight layers.1.attn.w4, which cannot use the LUT kernel: f4e2m1 is not an integer type

// KIND: lpcc opt: error: bad pipeline
// KIND-SAME: option override: unknown kernel kind 'fast' for pattern '*.mlp.*'; choose one of lut, dequant, dense
