//! The contract's pure rules: no I/O, unit-tested.

pub mod availability;
pub mod item;
pub mod outcome;

pub use availability::{availability, stocked_in, Availability, Remaining, Status};
pub use item::{BeyondStock, ItemConfig, Level, SkuState, Tracking};
pub use outcome::{
    updates, Allocation, AvailabilityUpdate, ConfirmedLine, HoldOutcome, LineOutcome, OrderOutcome, RejectReason, refusal,
    RejectedLine, SkuChange,
};
