// RUN: lpcc opt %s -p cse | filecheck %s --check-prefix=CSE
// RUN: lpcc opt %s -p cse,dce | filecheck %s --check-prefix=BOTH
// RUN: lpcc opt %s -p dce | filecheck %s --check-prefix=DCE

// Two identical lp.exp collapse under cse; the unused lp.neg goes under dce.
func.func @f(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
  %a = lp.exp %x : tensor<4x8xf32>
  %b = lp.exp %x : tensor<4x8xf32>
  %dead = lp.neg %x : tensor<4x8xf32>
  %s = lp.add %a, %b : tensor<4x8xf32>
  func.return %s : tensor<4x8xf32>
}

// cse merges the two lp.exp (and, being xDSL's cse, drops the dead lp.neg):
// CSE:      %a = lp.exp %x : tensor<4x8xf32>
// CSE-NOT:  lp.exp
// CSE-NOT:  lp.neg
// CSE:      %s = lp.add %a, %a : tensor<4x8xf32>

// BOTH:      %a = lp.exp %x : tensor<4x8xf32>
// BOTH-NEXT: %s = lp.add %a, %a : tensor<4x8xf32>
// BOTH-NEXT: func.return %s

// dce alone keeps both exps and drops only the unused neg:
// DCE:      %a = lp.exp %x
// DCE-NEXT: %b = lp.exp %x
// DCE-NEXT: %s = lp.add %a, %b
