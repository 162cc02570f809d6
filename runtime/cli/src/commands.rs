//! One room per group of commands.

pub(crate) mod anchor;
pub(crate) mod appliance;
pub(crate) mod audit;
pub(crate) mod cert;
pub(crate) mod gpu;
pub(crate) mod license;
pub(crate) mod offline;
pub(crate) mod policy;
pub(crate) mod update;
