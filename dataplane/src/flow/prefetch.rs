//! A cache prefetch hint: the one unsafe call of the flow engine.
//!
//! A prefetch is a hint to the CPU: it does not read memory the program can
//! observe, never faults (not even on an invalid address) and changes no
//! result, only when the line arrives. Elsewhere than x86_64 it does nothing.
#![deny(unsafe_code)]

/// Asks for the cache line holding `*p` (and, with `lines > 1`, the lines
/// after it within `*p`) to be loaded into all cache levels.
#[inline(always)]
pub(crate) fn prefetch<T>(p: &T, lines: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let base = (p as *const T).cast::<i8>();
        let size = std::mem::size_of::<T>();
        for l in 0..lines {
            let off = l * 64;
            if off >= size.max(1) {
                break;
            }
            // `wrapping_add` keeps the address computation free of UB even
            // past the object; the offset stays within `*p` anyway.
            let q = base.wrapping_add(off);
            #[expect(unsafe_code, reason = "a prefetch hint; see the module documentation")]
            // SAFETY: `_mm_prefetch` does not dereference `q` in the sense of
            // the memory model: it is a hint that cannot fault or change any
            // value, and SSE (which provides it) is part of the x86_64 baseline.
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(q)
            };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (p, lines);
    }
}
