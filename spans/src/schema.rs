//! What the Request → Thread → Slice tree writes into its spans: attribute keys, span-name
//! formats, and the one rule that tells a span's role from them.

/// Deepest nesting of slices kept per request and thread; deeper slices are counted and dropped.
pub const MAX_DEPTH: usize = 64;
