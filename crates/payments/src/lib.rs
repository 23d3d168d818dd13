//! The payments service.
//!
//! - [`gateway`]: what Till asks of a payment gateway and what it accepts back, as typed
//!   values ([`gateway::GatewayIntent`], [`gateway::Decline`]), with one adapter per
//!   provider ([`gateway::stripe`]). An adapter calls its provider only through the
//!   outbound kit and validates every reply before anything acts on it: a reply that
//!   names another object, another amount or currency, a status the API does not have,
//!   or a malformed body is an `InvalidReply`, never a defaulted field.

pub mod gateway;
