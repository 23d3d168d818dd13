//! The outbox kit: what a service needs to publish events, and nothing more.
//!
//! - [`envelope`]: the event envelope of API.md and the catalogue of event types.
//! - [`append`]: each service writes its events to its own outbox table
//!   (`<schema>.outbox`, created by its migration with `events.create_outbox`), in the
//!   same transaction as the state change. The events service relays them from there.
//! - [`consume`]: a consumer's subscription and handler, and the [`consume::Subscriber`]
//!   the events service offers, so that a service consumes events without linking it.
//!
//! Architecture invariant: this crate depends on no broker and no HTTP client, and on no
//! service; services reach the events backbone only through it.

pub mod append;
pub mod consume;
pub mod envelope;

pub use append::{announce, append, AnnounceError};
pub use envelope::{Event, EventBody, EventType};

till_kit::typed_id!(EventId, "evt", "event", "An event: something that happened to a resource.");
