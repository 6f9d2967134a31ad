//! Memory: the counting heap allocator and the memory planner.

pub mod heap;
pub mod plan;
