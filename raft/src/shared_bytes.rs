//! [`SharedBytes`]: an entry's bytes, cheap to clone and able to share one buffer with
//! others — the entries decoded from one message are ranges of that message's frame.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::{Deref, Range};
use std::sync::Arc;

/// Immutable bytes: a range of a reference-counted buffer. Cloning one counts a reference;
/// nothing is copied. Compared, hashed and printed by content, like `[u8]`.
///
/// Against a reference-counted slice of its own per entry, this is what lets a follower
/// decode an append of many entries with one allocation (the frame's) instead of one per
/// entry, and a leader propose a client's write as the range of the request that holds it.
/// A range keeps its whole buffer allocated: the frame stays while any entry of it is held.
#[derive(Clone)]
pub struct SharedBytes {
    buf: Arc<[u8]>,
    range: Range<usize>,
}

impl SharedBytes {
    /// No bytes.
    pub fn new() -> SharedBytes {
        SharedBytes::from(Arc::<[u8]>::from([]))
    }

    /// A copy of `bytes` in a buffer of its own.
    pub fn copy_from_slice(bytes: &[u8]) -> SharedBytes {
        SharedBytes::from(Arc::<[u8]>::from(bytes))
    }

    /// The part of `self` that `sub` is, sharing this buffer. `sub` must be a subslice of
    /// `self` (borrowed from it); an empty `sub` gives empty bytes whatever it points at.
    ///
    /// # Panics
    /// If a non-empty `sub` is not within `self`: that is a bug in the caller.
    pub fn slice_ref(&self, sub: &[u8]) -> SharedBytes {
        if sub.is_empty() {
            return SharedBytes {
                buf: Arc::clone(&self.buf),
                range: self.range.start..self.range.start,
            };
        }
        let base = self.as_ptr() as usize;
        let at = sub.as_ptr() as usize;
        assert!(
            at >= base && at + sub.len() <= base + self.len(),
            "slice_ref: the subslice is not within these bytes"
        );
        let start = self.range.start + (at - base);
        SharedBytes {
            buf: Arc::clone(&self.buf),
            range: start..start + sub.len(),
        }
    }

    /// The bytes `range` of `buf`, shared (no copy).
    ///
    /// # Panics
    /// If `range` is not within `buf`.
    pub fn from_parts(buf: Arc<[u8]>, range: Range<usize>) -> SharedBytes {
        assert!(
            range.start <= range.end && range.end <= buf.len(),
            "range {range:?} outside a buffer of {} bytes",
            buf.len()
        );
        SharedBytes { buf, range }
    }

    /// Bytes of the whole buffer these bytes are a range of: what holding them keeps
    /// allocated.
    pub fn buffer_len(&self) -> usize {
        self.buf.len()
    }

    /// Whether `self` and `other` are ranges of one buffer.
    pub fn same_buffer(&self, other: &SharedBytes) -> bool {
        Arc::ptr_eq(&self.buf, &other.buf)
    }
}

impl Default for SharedBytes {
    fn default() -> SharedBytes {
        SharedBytes::new()
    }
}

impl Deref for SharedBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buf[self.range.clone()]
    }
}

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

/// The whole buffer, shared (no copy).
impl From<Arc<[u8]>> for SharedBytes {
    fn from(buf: Arc<[u8]>) -> SharedBytes {
        let range = 0..buf.len();
        SharedBytes { buf, range }
    }
}

impl From<Vec<u8>> for SharedBytes {
    fn from(bytes: Vec<u8>) -> SharedBytes {
        SharedBytes::from(Arc::<[u8]>::from(bytes))
    }
}

impl From<&[u8]> for SharedBytes {
    fn from(bytes: &[u8]) -> SharedBytes {
        SharedBytes::copy_from_slice(bytes)
    }
}

impl<const N: usize> From<&[u8; N]> for SharedBytes {
    fn from(bytes: &[u8; N]) -> SharedBytes {
        SharedBytes::copy_from_slice(bytes)
    }
}

impl From<&str> for SharedBytes {
    fn from(text: &str) -> SharedBytes {
        SharedBytes::copy_from_slice(text.as_bytes())
    }
}

impl From<String> for SharedBytes {
    fn from(text: String) -> SharedBytes {
        SharedBytes::from(text.into_bytes())
    }
}

impl FromIterator<u8> for SharedBytes {
    fn from_iter<I: IntoIterator<Item = u8>>(bytes: I) -> SharedBytes {
        SharedBytes::from(bytes.into_iter().collect::<Arc<[u8]>>())
    }
}

impl PartialEq for SharedBytes {
    fn eq(&self, other: &SharedBytes) -> bool {
        **self == **other
    }
}

impl Eq for SharedBytes {}

impl PartialEq<[u8]> for SharedBytes {
    fn eq(&self, other: &[u8]) -> bool {
        **self == *other
    }
}

impl Hash for SharedBytes {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (**self).hash(state)
    }
}

impl fmt::Debug for SharedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_share_the_buffer_and_compare_by_content() {
        let whole = SharedBytes::from(b"header|first|second".to_vec());
        let first = whole.slice_ref(&whole[7..12]);
        let second = whole.slice_ref(&whole[13..]);
        assert_eq!(&*first, b"first");
        assert_eq!(&*second, b"second");
        assert!(whole.as_ptr_range().contains(&first.as_ptr()));
        // A slice of a slice is still a range of the first buffer.
        let inner = second.slice_ref(&second[1..3]);
        assert_eq!(&*inner, b"ec");
        assert_eq!(inner.as_ptr(), whole[14..].as_ptr());
        assert_eq!(first, SharedBytes::from("first"));
        assert_ne!(first, second);
        assert!(whole.slice_ref(&[]).is_empty());
        assert!(first.same_buffer(&second) && !first.same_buffer(&SharedBytes::from("first")));
        assert_eq!((first.len(), first.buffer_len()), (5, whole.len()));
        assert_eq!(SharedBytes::new(), SharedBytes::default());
        assert_eq!(format!("{first:?}"), format!("{:?}", b"first".as_slice()));
    }

    #[test]
    #[should_panic(expected = "not within")]
    fn a_foreign_slice_is_refused() {
        let whole = SharedBytes::from(b"abc".to_vec());
        let other = b"xyz".to_vec();
        let _ = whole.slice_ref(&other);
    }
}
