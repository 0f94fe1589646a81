//! Array indexes the verifier of every supported kernel can prove in range.
//!
//! The programs index the packet tables and the port bytes with values computed from packet
//! fields. Each index is masked to its table's length, a power of two. LLVM drops a mask it can
//! prove redundant (a 17-bit value `& (2^17 - 1)`), and it is right to, but the verifiers of
//! older kernels (Debian's 5.10, 6.1 and 6.12 among them) lose track of the value's range
//! across byte swaps and register moves and then refuse the access: "math between map_value
//! pointer and register with unbounded min value is not allowed". 6.18's verifier tracks more
//! and accepts it either way. [`index`] applies the mask in inline assembly, which LLVM cannot
//! see through, so the AND stays on the register that indexes, right before it does.

/// `i` masked to `LEN` entries (`LEN` a power of two), as an instruction the compiler keeps.
#[inline(always)]
pub fn index<const LEN: usize>(i: usize) -> usize {
    const { assert!(LEN.is_power_of_two() && LEN - 1 <= i32::MAX as usize) };
    let mut i = i;
    // SAFETY: an AND on a register; no memory, no stack, no flags.
    unsafe { core::arch::asm!("{0} &= {1}", inout(reg) i, const LEN - 1, options(pure, nomem, nostack)) };
    // What the AND guarantees, told to the compiler (which cannot see into the assembly), so
    // that it adds no bounds check of its own.
    // SAFETY: masked with LEN - 1 just above.
    unsafe { core::hint::assert_unchecked(i < LEN) };
    i
}
