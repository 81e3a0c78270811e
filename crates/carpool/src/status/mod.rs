//! The live view of a running array: what the admin listener of `carpool
//! up` answers at `/status` ([`model`], built by [`history`] from the
//! components' metrics, read back with [`exposition`]), the dashboard it
//! serves at `/` ([`DASHBOARD`]), and `carpool status` ([`render`]).

pub mod exposition;
pub mod history;
pub mod model;
pub mod render;

/// The dashboard page: one file, no external fetch; it polls `/status`.
pub const DASHBOARD: &str = include_str!("dashboard.html");

/// Now, in seconds since the epoch (the unit of every time in `/status`).
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
