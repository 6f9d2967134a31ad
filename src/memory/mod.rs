//! Memory: the counting heap allocator, what a plan counts beside its own buffers, the memory planner, and the sizer every workspace
//! is built through (one size list for allocation and accounting).

pub mod account;
pub mod heap;
pub mod plan;
pub mod sizes;
