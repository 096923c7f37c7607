//! The sans-IO Redis connection: worked examples on scripted bytes, hostile input,
//! properties, and the same connection driven against a real Redis 7.

mod connection;
mod limits;
mod live;
mod properties;
mod pubsub;
mod reconnect;
mod replies;
mod support;
mod url;
