//! The traced thread's side: the calls, the thread handle, and the read-back `propagate_context`
//! uses. Nothing here imports from `collector`.

pub mod api;
pub(crate) mod directory;
pub(crate) mod handle;
pub(crate) mod history;
pub mod task;
