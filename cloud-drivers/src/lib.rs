//! kelp's cloud drivers: one narrow async trait for creating, listing and deleting
//! tagged machines, with one module per cloud (sim, ec2, openstack, egi).
//!
//! This crate knows nothing about Kubernetes: it takes plain values and returns
//! plain values, so the drivers can be tested against their clouds alone.
#![forbid(unsafe_code)]

pub mod driver;
#[cfg(feature = "ec2")]
pub mod ec2;
#[cfg(feature = "openstack")]
pub mod egi;
pub mod metered;
#[cfg(feature = "openstack")]
pub mod openstack;
pub mod select;
pub mod sim;

pub use driver::*;
#[cfg(feature = "ec2")]
pub use ec2::{Ec2Credentials, Ec2Driver, Ec2Settings, ImageCache};
pub use metered::{CallRecord, CallStats, Metered};
#[cfg(feature = "openstack")]
pub use openstack::{OpenStackAuth, OpenStackDriver, OpenStackSettings};
pub use select::{NoFit, candidates, choose};
pub use sim::{SimCloud, SimConfig, SimDriver, sim_config_from};
