//! What a traced thread and the drainer exchange: the 32-byte record and the payloads its
//! chunks carry, the ring it travels through, and who owns each ring.
//!
//! Everything here is shared by both sides: the traced thread (`local`) writes and reads back
//! its own ring, the drainer (`collector`) consumes it. Neither side defines a byte of its own.

pub mod array;
pub mod batch;
pub mod decode;
pub mod origin;
pub mod ownership;
pub mod record;
pub mod ring;

#[cfg(all(test, slicetrace_loom))]
mod loom_models;
