//! The small value types the tracing calls take.

use crate::name::Name;
use std::ops::BitOr;

/// A caller-given timestamp in nanoseconds since the Unix epoch (the reference's `ts=`).
/// `UnixNanos(0)` means now, as the reference's `ts=0`: the call reads the clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct UnixNanos(pub u64);

impl UnixNanos {
    pub fn now() -> UnixNanos {
        UnixNanos(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0),
        )
    }
}

/// What `slice_end` does besides ending the slice. Combine with `|`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct End(pub(crate) u8);

impl End {
    /// Just end the slice.
    pub const PLAIN: End = End(0);
    /// Open an anonymous slice at the same instant (named by the next `slice_end`).
    pub const AUTO_NEXT_ANON: End = End(crate::wire::record::flag::AUTO_NEXT_ANON);
    /// End this request's thread span after the slice (the reference's `thread_finish_flag`).
    pub const THREAD_FINISH: End = End(crate::wire::record::flag::THREAD_FINISH);

    pub fn contains(self, other: End) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for End {
    type Output = End;
    fn bitor(self, rhs: End) -> End {
        End(self.0 | rhs.0)
    }
}

/// An attribute value. Integers, floats and booleans cost one record; a string is copied into
/// the ring (at most [`MAX_STR_BYTES`](crate::limits::MAX_STR_BYTES), cut at a char boundary),
/// which costs one record more per 28 bytes. An array (OpenTelemetry's homogeneous arrays) is
/// copied the same way, its elements packed into at most
/// [`MAX_ARRAY_BYTES`](crate::limits::MAX_ARRAY_BYTES): 8 bytes an integer or float, one a
/// boolean, 2 plus its length a string (each cut as a string attribute is). An array longer
/// than that keeps its leading elements that fit whole.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value<'a> {
    I64(i64),
    F64(f64),
    Bool(bool),
    Str(&'a str),
    I64s(&'a [i64]),
    F64s(&'a [f64]),
    Bools(&'a [bool]),
    Strs(&'a [&'a str]),
}

impl From<i64> for Value<'_> {
    fn from(v: i64) -> Self {
        Value::I64(v)
    }
}
impl From<u32> for Value<'_> {
    fn from(v: u32) -> Self {
        Value::I64(v as i64)
    }
}
impl From<i32> for Value<'_> {
    fn from(v: i32) -> Self {
        Value::I64(v as i64)
    }
}
impl From<usize> for Value<'_> {
    fn from(v: usize) -> Self {
        Value::I64(v as i64)
    }
}
impl From<f64> for Value<'_> {
    fn from(v: f64) -> Self {
        Value::F64(v)
    }
}
impl From<bool> for Value<'_> {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl<'a> From<&'a str> for Value<'a> {
    fn from(v: &'a str) -> Self {
        Value::Str(v)
    }
}
impl<'a> From<&'a [i64]> for Value<'a> {
    fn from(v: &'a [i64]) -> Self {
        Value::I64s(v)
    }
}
impl<'a> From<&'a [f64]> for Value<'a> {
    fn from(v: &'a [f64]) -> Self {
        Value::F64s(v)
    }
}
impl<'a> From<&'a [bool]> for Value<'a> {
    fn from(v: &'a [bool]) -> Self {
        Value::Bools(v)
    }
}
impl<'a> From<&'a [&'a str]> for Value<'a> {
    fn from(v: &'a [&'a str]) -> Self {
        Value::Strs(v)
    }
}

/// A key and a value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Attr<'a> {
    pub key: &'static Name,
    pub value: Value<'a>,
}

impl<'a> Attr<'a> {
    pub fn new(key: &'static Name, value: impl Into<Value<'a>>) -> Attr<'a> {
        Attr {
            key,
            value: value.into(),
        }
    }
}

/// Optional parts of a call: an explicit timestamp and attributes. `Opts::default()` is "now,
/// no attributes".
#[derive(Clone, Copy, Debug, Default)]
pub struct Opts<'a> {
    pub ts: Option<UnixNanos>,
    pub attrs: &'a [Attr<'a>],
}

impl<'a> Opts<'a> {
    #[must_use]
    pub fn at(ts: UnixNanos) -> Opts<'a> {
        Opts {
            ts: Some(ts),
            attrs: &[],
        }
    }

    #[must_use]
    pub fn attrs(attrs: &'a [Attr<'a>]) -> Opts<'a> {
        Opts { ts: None, attrs }
    }

    #[must_use]
    pub fn with_attrs(mut self, attrs: &'a [Attr<'a>]) -> Opts<'a> {
        self.attrs = attrs;
        self
    }
}
