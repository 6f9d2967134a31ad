//! `plora_memory_plan`: a memory plan as numbers.

use std::ffi::c_char;

use crate::cstr;

/// Rows a plan holds at most (`PLORA_PLAN_MAX_ITEMS`).
pub const MAX_ITEMS: usize = 16;

/// `plora_plan_item` (C struct)
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PlanItem {
    pub name: [c_char; 48],
    pub bytes: u64,
}

/// `plora_memory_plan` (C struct)
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MemoryPlan {
    pub struct_size: u32,
    pub threads: u32,
    pub budget_bytes: u64,
    pub total_bytes: u64,
    pub seq_len: u32,
    pub chunk: u32,
    pub saved_activations: u32,
    pub segment: u32,
    pub loss_rows: u32,
    pub n_items: u32,
    pub items: [PlanItem; MAX_ITEMS],
}

/// How a plan is shaped (the numbers of `plora_memory_plan` besides its items).
pub struct Shape {
    pub threads: usize,
    pub seq_len: usize,
    pub chunk: usize,
    /// `PLORA_SAVED_*`; 0 for generation.
    pub saved_activations: u32,
    /// Blocks per checkpoint segment; 0 for generation.
    pub segment: usize,
    /// Logit rows at once in the fused head + loss; 0 for generation.
    pub loss_rows: usize,
}

fn to_u32(n: usize) -> u32 {
    n.min(u32::MAX as usize) as u32
}

impl MemoryPlan {
    /// A plan of `total` bytes over `items` (the first [`MAX_ITEMS`], largest first).
    pub fn new(budget: u64, total: u64, shape: Shape, items: &[(&str, u64)]) -> MemoryPlan {
        let mut sorted: Vec<(&str, u64)> = items.to_vec();
        sorted.sort_by_key(|x| std::cmp::Reverse(x.1));
        let mut out = MemoryPlan {
            struct_size: std::mem::size_of::<MemoryPlan>() as u32,
            threads: to_u32(shape.threads),
            budget_bytes: budget,
            total_bytes: total,
            seq_len: to_u32(shape.seq_len),
            chunk: to_u32(shape.chunk),
            saved_activations: shape.saved_activations,
            segment: to_u32(shape.segment),
            loss_rows: to_u32(shape.loss_rows),
            n_items: sorted.len().min(MAX_ITEMS) as u32,
            items: [PlanItem {
                name: [0; 48],
                bytes: 0,
            }; MAX_ITEMS],
        };
        for (slot, (name, bytes)) in out.items.iter_mut().zip(sorted) {
            *slot = PlanItem {
                name: cstr::fixed(name),
                bytes,
            };
        }
        out
    }
}
