//! The read side of the API: every query reads projections, scoped to the viewer.

pub mod audit;
pub mod calls;
pub mod directory;
pub mod jobs;
pub mod keys;
