//! Little-endian integers at byte offsets, for the daemon's own record
//! formats (the reply store's slots, the client's keep file): `None` when
//! the field runs past the end, which each format reports as its own
//! corruption error.

pub fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at.checked_add(4)?)?
        .try_into()
        .ok()
        .map(u32::from_le_bytes)
}

pub fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at.checked_add(8)?)?
        .try_into()
        .ok()
        .map(u64::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_inside_are_read_and_past_the_end_are_none() {
        let b = [1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(u32_at(&b, 0), Some(1));
        assert_eq!(u64_at(&b, 4), Some(2));
        assert_eq!(u32_at(&b, 9), None);
        assert_eq!(u64_at(&b, 5), None);
        assert_eq!(u64_at(&b, usize::MAX), None);
    }
}
