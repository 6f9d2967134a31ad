//! Training: AdamW, learning-rate schedules, record order, and the trainer that runs
//! optimizer steps over the model's training pass.

pub mod adamw;
pub mod checkpoint;
pub mod order;
pub mod run;
pub mod schedule;
pub mod trainer;

pub use adamw::{AdamW, AdamWConfig};
pub use order::RecordOrder;
pub use schedule::Schedule;
pub use trainer::{StepStats, TrainConfig, Trainer};
