//! Training: AdamW, learning-rate schedules, record order, and the trainer that runs
//! optimizer steps over the model's training pass, the session that sets a run up from a
//! [`TrainSpec`] for every front end, and the history a run leaves for people to look at.

pub mod adamw;
pub mod checkpoint;
pub mod history;
pub mod order;
pub mod outdir;
pub mod run;
pub mod schedule;
pub mod session;
pub mod spec;
pub mod trainer;

pub use adamw::{AdamW, AdamWConfig};
pub use order::RecordOrder;
pub use schedule::Schedule;
pub use session::{Counts, Resume, Session, Started, Truncation};
pub use spec::{AdapterInit, Length, TrainSpec};
pub use trainer::{StepStats, TrainConfig, Trainer};
