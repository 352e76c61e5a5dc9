//! TCP sequence-number arithmetic (RFC 793 modulo 2^32 comparisons).
#![forbid(unsafe_code)]

/// `a < b` in sequence space.
#[inline]
pub fn lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// `a <= b` in sequence space.
#[inline]
pub fn le(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) <= 0
}

/// `a > b` in sequence space.
#[inline]
pub fn gt(a: u32, b: u32) -> bool {
    lt(b, a)
}

/// `a >= b` in sequence space.
#[inline]
pub fn ge(a: u32, b: u32) -> bool {
    le(b, a)
}

/// The later of two sequence numbers.
#[inline]
pub fn max(a: u32, b: u32) -> u32 {
    if gt(a, b) {
        a
    } else {
        b
    }
}

/// The earlier of two sequence numbers.
#[inline]
pub fn min(a: u32, b: u32) -> u32 {
    if lt(a, b) {
        a
    } else {
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps() {
        assert!(lt(u32::MAX - 10, 5));
        assert!(gt(5, u32::MAX - 10));
        assert!(le(7, 7) && ge(7, 7));
        assert!(!lt(7, 7));
        assert_eq!(max(u32::MAX, 3), 3);
        assert_eq!(min(u32::MAX, 3), u32::MAX);
    }
}
