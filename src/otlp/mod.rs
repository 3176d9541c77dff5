//! The OTLP protobuf wire format, once: the field numbers and wire types
//! of the trace messages ([`tag`], checked against `proto/` by a test), a
//! zero-copy [`read`]er and a [`write`](mod@write)r. The receiver's decoder, the
//! attributes kept in wire form, the forward encoder and loadgen all go
//! through it.
//!
//! [`kit`] builds requests for tests, benches and loadgen.
//!
//! A leaf: nothing here imports another module of the crate.

pub mod kit;
pub mod read;
pub mod tag;
pub mod write;
