// RUN: lpcc opt %s -p cse,dce --print-between-passes | filecheck %s

func.func @g(%x: tensor<2xf32>) -> tensor<2xf32> {
  %a = lp.sqrt %x : tensor<2xf32>
  %b = lp.sqrt %x : tensor<2xf32>
  func.return %a : tensor<2xf32>
}

// CHECK:      // -----// IR after cse //----- //
// CHECK:      %a = lp.sqrt %x
// CHECK-NEXT: func.return %a
// CHECK:      // -----// IR after dce //----- //
// CHECK:      %a = lp.sqrt %x
// CHECK-NEXT: func.return %a
