// RUN: lpcc opt %s | filecheck %s
// Element types, layouts and constants print exactly as they parse.

func.func @types(%w: tensor<16x8x!lp.int<3>, #lp.layout<shape=[16, 8], modes=[[2, 4, 2], [8]], spatial=[3, 1], local=[0, 2]>>,
                 %s: tensor<16x1x!lp.e8m0>, %f: tensor<4x!lp.float<2,3,finite>>, %b: tensor<4xi1>) -> tensor<16x8xf32> {
  %z = lp.constant splat -2 : tensor<16x1x!lp.int<3>>
  %c = lp.constant dense "0x9D7381" : tensor<8x!lp.uint<3>>
  %d = lp.dequantize %w scale %s zero %z block [1, 8] : (tensor<16x8x!lp.int<3>, #lp.layout<shape=[16, 8], modes=[[2, 4, 2], [8]], spatial=[3, 1], local=[0, 2]>>, tensor<16x1x!lp.e8m0>, tensor<16x1x!lp.int<3>>) -> tensor<16x8xf32>
  func.return %d : tensor<16x8xf32>
}

// CHECK: %w: tensor<16x8x!lp.int<3>, #lp.layout<shape=[16, 8], modes=[[2, 4, 2], [8]], spatial=[3, 1], local=[0, 2]>>
// CHECK-SAME: %s: tensor<16x1x!lp.e8m0>
// CHECK-SAME: tensor<4x!lp.float<2,3,finite>>
// CHECK-SAME: tensor<4xi1>
// CHECK: %z = lp.constant splat -2 : tensor<16x1x!lp.int<3>>
// CHECK: %c = lp.constant dense "0x9D7381" : tensor<8x!lp.uint<3>>
// CHECK: lp.dequantize %w scale %s zero %z block [1, 8]
