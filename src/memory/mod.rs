//! Memory accounting: the counting heap allocator (the memory planner joins it here).

pub mod heap;
