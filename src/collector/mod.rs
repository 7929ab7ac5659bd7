//! The drainer side: everything here runs on the background thread, never on a traced one.

pub mod clock;
pub mod control;
pub mod drainer;
pub mod finished;
pub mod shipper;
pub mod sink;
pub mod span_out;
pub mod stats;
pub mod tree;
