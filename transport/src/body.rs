//! [`Body`]: a received frame's body, sharing one allocation with the frames that came with it.

use std::fmt;
use std::ops::{Deref, Range};
use std::sync::Arc;

/// A received frame's body: a range of a buffer that the other frames of the same read share.
/// Cloning it counts a reference; [`Body::into_parts`] hands the buffer and range to a type of
/// the receiver's own (raftd keeps the entries of an append as slices of it). Compared and
/// printed by content.
#[derive(Clone)]
pub struct Body {
    buf: Arc<[u8]>,
    range: Range<usize>,
}

impl Body {
    /// The bytes `range` of `buf`.
    ///
    /// # Panics
    /// If `range` is not within `buf`.
    pub fn new(buf: Arc<[u8]>, range: Range<usize>) -> Body {
        assert!(
            range.start <= range.end && range.end <= buf.len(),
            "frame body {range:?} outside its buffer of {} bytes",
            buf.len()
        );
        Body { buf, range }
    }

    /// The shared buffer and where in it this body lies.
    pub fn into_parts(self) -> (Arc<[u8]>, Range<usize>) {
        (self.buf, self.range)
    }
}

impl Deref for Body {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buf[self.range.clone()]
    }
}

/// A body in a buffer of its own (a copy).
impl From<&[u8]> for Body {
    fn from(bytes: &[u8]) -> Body {
        let buf = Arc::<[u8]>::from(bytes);
        let range = 0..buf.len();
        Body { buf, range }
    }
}

impl From<Vec<u8>> for Body {
    fn from(bytes: Vec<u8>) -> Body {
        Body::from(bytes.as_slice())
    }
}

impl PartialEq for Body {
    fn eq(&self, other: &Body) -> bool {
        **self == **other
    }
}

impl Eq for Body {}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}
