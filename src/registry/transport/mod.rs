//! The floor every request of the registry module stands on, below [`auth`](super::auth), the
//! distribution API client ([`http`](super::http)) and the hosted APIs
//! ([`hosted`](super::hosted)): the per-host [`throttle`] and the one [`retry`] policy, bodies
//! read within limits and watched for stalls ([`body`]), paged listings ([`pager`]), the
//! headers that carry digests and upload offsets ([`wire`]), and TLS trust ([`tls`]).
//!
//! Arrows only point down: nothing here imports `auth`, `http` or `hosted`; what this floor
//! fails with is a [`RegistryError`](super::error::RegistryError), whose reasons live in the
//! leaves below it.

pub mod body;
pub mod pager;
pub mod retry;
pub mod throttle;
pub mod tls;
pub mod wire;

#[cfg(test)]
mod tests;
