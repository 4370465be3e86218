// RUN: lpcc opt %s -p 'quantize{weight="int4" group_size=4}' | filecheck %s
// RUN: lpcc opt %s -p 'quantize{weight="int4-g4" exclude="fc2.*"}' | filecheck %s --check-prefix=EXCL
// RUN: lpcc opt %s -p 'quantize{weight="uint4" group_size=2}' | filecheck %s --check-prefix=ASYM
// RUN: lpcc opt %s -p 'quantize{weight="f4e2m1" scale_dtype="e8m0"}' | filecheck %s --check-prefix=MX
// RUN: lpcc opt %s -p 'quantize{weight="int8" group_size=0}' | lpcc opt - | filecheck %s --check-prefix=PC
// RUN: (! lpcc opt %s -p 'quantize{weight="int1"}' 2>&1) | filecheck %s --check-prefix=BAD

// Two linear layers as the torch frontend emits them. fc1.weight is
//   [[1, -2, 3.5, 7], [0.5, -0.25, 0, -1.75]]
// and fc2.weight [[0.5, 1], [-3, 1.5], [0.125, -0.0625]].
func.func @main(%x: tensor<3x4xf32>) -> tensor<3x3xf32> {
  %w1 = lp.constant {lp.name = "fc1.weight"} dense "0x0000803F000000C0000060400000E0400000003F000080BE000000000000E0BF" : tensor<2x4xf32>
  %w2 = lp.constant {lp.name = "fc2.weight"} dense "0x0000003F0000803F000040C00000C03F0000003E000080BD" : tensor<3x2xf32>
  %h = lp.matmul %x, %w1 transpose_b : (tensor<3x4xf32>, tensor<2x4xf32>) -> tensor<3x2xf32>
  %a = lp.tanh %h : tensor<3x2xf32>
  %y = lp.matmul %a, %w2 transpose_b : (tensor<3x2xf32>, tensor<3x2xf32>) -> tensor<3x3xf32>
  func.return %y : tensor<3x3xf32>
}

// int4, symmetric: row 0 has absmax 7 -> scale 1, codes [1, -2, 4, 7] (3.5
// rounds half to even); row 1 has absmax 1.75 -> scale 0.25, codes
// [2, -1, 0, -7]. Two's-complement nibbles, low nibble first: E1 74 F2 90.
// Scales in f16, little-endian: 1.0 = 0x3C00, 0.25 = 0x3400.
// CHECK:      %w1_q = lp.constant {lp.name = "fc1.weight"} dense "0xE174F290" : tensor<2x4x!lp.int<4>>
// CHECK-NEXT: %w1_scale = lp.constant {lp.name = "fc1.weight.scale"} dense "0x003C0034" : tensor<2x1xf16>
// CHECK-NEXT: %w1_dq = lp.dequantize %w1_q scale %w1_scale block [1, 4] : (tensor<2x4x!lp.int<4>>, tensor<2x1xf16>) -> tensor<2x4xf32>
// CHECK-NEXT: %w2_q = lp.constant {lp.name = "fc2.weight"} {{.*}} : tensor<3x2x!lp.int<4>>
// CHECK-NEXT: %w2_scale = lp.constant {lp.name = "fc2.weight.scale"} {{.*}} : tensor<3x1xf16>
// K = 2 < group size 4: one group of 2 per row.
// CHECK-NEXT: %w2_dq = lp.dequantize %w2_q scale %w2_scale block [1, 2]
// The old f32 constants are gone (the CHECK-NEXT chain leaves no room).
// CHECK-NEXT: %h = lp.matmul %x, %w1_dq transpose_b
// CHECK:      %y = lp.matmul %a, %w2_dq transpose_b

// EXCL:      %w1_dq = lp.dequantize
// EXCL:      %w2 = lp.constant {lp.name = "fc2.weight"} dense "0x0000003F{{.*}}" : tensor<3x2xf32>
// EXCL:      lp.matmul %x, %w1_dq transpose_b
// EXCL:      lp.matmul %a, %w2 transpose_b

// uint is asymmetric: a zero point per group, in the weight's own type.
// ASYM:      %w1_q = lp.constant {lp.name = "fc1.weight"} {{.*}} : tensor<2x4x!lp.uint<4>>
// ASYM-NEXT: %w1_scale = lp.constant {lp.name = "fc1.weight.scale"} {{.*}} : tensor<2x2xf16>
// ASYM-NEXT: %w1_zero = lp.constant {lp.name = "fc1.weight.zero"} {{.*}} : tensor<2x2x!lp.uint<4>>
// ASYM-NEXT: %w1_dq = lp.dequantize %w1_q scale %w1_scale zero %w1_zero block [1, 2]

// MXFP4-style: e8m0 scales 2**ceil(log2(absmax / 6)): row 0 -> 2 (code 0x80),
// row 1 -> 0.5 (0x7E). w / s = [0.5, -1, 1.75, 3.5] -> fp4 codes 1, A, 4, 6
// (1.75 and 3.5 round half to even: 2 and 4); [1, -0.5, 0, -3.5] -> 2, 9, 0, E.
// MX:      %w1_q = lp.constant {lp.name = "fc1.weight"} dense "0xA16492E0" : tensor<2x4x!lp.float<2,1,finite>>
// MX-NEXT: %w1_scale = lp.constant {lp.name = "fc1.weight.scale"} dense "0x807E" : tensor<2x1x!lp.e8m0>

// Per channel (group_size=0): one scale per row; the output parses back.
// PC: lp.dequantize %w1_q scale %w1_scale block [1, 4] : (tensor<2x4x!lp.int<8>>, tensor<2x1xf16>)
// PC: lp.dequantize %w2_q scale %w2_scale block [1, 2] : (tensor<3x2x!lp.int<8>>, tensor<3x1xf16>)

// BAD: lpcc opt: error: bad pipeline
// BAD-SAME: symmetric int1 has no nonzero level
