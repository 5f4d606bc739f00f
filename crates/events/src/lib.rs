//! Flywheel's event contract: the envelope, a typed payload for every event of the catalogue,
//! subject and stream naming under a configurable prefix, and the MessagePack/JSON codec.
//!
//! Other systems code against `proto/`, which is generated from this crate.

pub mod catalogue;
pub mod codec;
pub mod control;
pub mod envelope;
pub mod payloads;
pub mod schema;
pub mod subjects;

pub use catalogue::{CATALOGUE, Channel, Event, EventKind, find_kind};
pub use codec::{
    CONTENT_TYPE_HEADER, ContentType, DecodeError, EncodeError, decode, decode_with_header, encode,
};
pub use envelope::Envelope;
pub use subjects::{StreamKind, SubjectError, Subjects};
