//! Typed payloads, one struct per event type of the catalogue.

mod common;
mod dataset;
mod deployment;
mod model;
mod monitoring;
mod security;
mod training;

pub use common::*;
pub use dataset::*;
pub use deployment::*;
pub use model::*;
pub use monitoring::*;
pub use security::*;
pub use training::*;
