//! Shared test code for hush.
//!
//! * [`TestServer`]: an in-process stand-in for the homeserver's key and
//!   to-device endpoints, good enough to wire several engines together.
//! * [`VirtualClock`]: the `now` every engine call takes, advanced by tests
//!   instead of sleeping.
//! * [`TestDevice`]: one engine plus the loop a client would run around it
//!   (sync, drain outgoing requests, answer them).
//! * [`conformance`]: the store conformance suite; [`stores`]: factories
//!   for every backend it runs against; [`own_devices`]: two devices of
//!   one user, for the secret and key sharing tests.
//! * [`fuzz`]: the fuzz targets, shared by `fuzz/` and the corpus replay.
//! * [`proxy`]: a fault-injecting HTTP proxy between a client and Synapse.

mod clock;
pub mod conformance;
mod device;
pub mod fuzz;
pub mod memory;
pub mod own_devices;
pub mod proxy;
mod rogue;
mod seeded;
mod server;
pub mod sim;
pub mod stores;
pub mod synapse;
mod victim;
mod wedge;

pub use clock::VirtualClock;
pub use device::{TestDevice, decrypted};
pub use rogue::RogueDevice;
pub use seeded::Seeded;
pub use server::{ServerError, TestServer};
pub use victim::Victim;
pub use wedge::wedged_message;
