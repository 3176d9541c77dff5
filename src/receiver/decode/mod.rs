//! Request bodies → lean spans: OTLP protobuf ([`proto`], by hand over the
//! wire bytes through [`crate::otlp`]) and OTLP/JSON ([`json`]).

pub mod json;
pub mod proto;
