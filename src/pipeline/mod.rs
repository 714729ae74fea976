//! The synchronous hot path: verdicts on worker threads, ack ordering, alert batching. Nothing
//! here touches a socket or an async runtime; `io::connection` drives it.

pub mod ack;
pub mod batch;
pub mod pool;
pub mod verdict;
