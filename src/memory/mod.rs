//! Memory: the counting heap allocator, the memory planner, and the sizer every workspace
//! is built through (one size list for allocation and accounting).

pub mod heap;
pub mod plan;
pub mod sizes;
