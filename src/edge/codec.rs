//! The server's gRPC codec: prost, except that a request which does not decode is
//! answered INVALID_ARGUMENT (invariant 7), not INTERNAL as tonic-prost does.
//!
//! Owns: the mapping of request decode errors to a client error that says what was
//! wrong and what is expected; and how much one response stream buffers while
//! encoding (small chunks: what a stalled stream holds in the transport is about
//! two of them). Must never change how messages are encoded: the encoder is
//! prost's own (frames are pre-encoded in `frame`).

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::{Code, Status};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Initial encode buffer of a response stream.
const ENCODE_BUFFER_BYTES: usize = 4 * 1024;
/// A response stream hands the transport a chunk once this much is encoded
/// (tonic's default is 32 KiB; a chunk is at most this plus one message).
const YIELD_BYTES: usize = 8 * 1024;

/// Used by the generated servers (`build.rs` sets it as their codec path).
pub struct HubCodec<T, U> {
    prost: ProstCodec<T, U>,
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for HubCodec<T, U> {
    fn default() -> Self {
        HubCodec {
            prost: ProstCodec::default(),
            _types: PhantomData,
        }
    }
}

impl<T, U> Codec for HubCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = RequestDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::new(ENCODE_BUFFER_BYTES, YIELD_BYTES))
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder(self.prost.decoder())
    }
}

/// Decodes requests; a malformed one is the client's error.
pub struct RequestDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for RequestDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|status| {
            if status.code() == Code::Internal {
                Status::invalid_argument(format!(
                    "request: not a valid protobuf message ({}); expected an encoded {}",
                    status.message(),
                    message_name::<U>()
                ))
            } else {
                status
            }
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

/// `dip.v1.PublishRequest` for `dip_hub::proto::PublishRequest`.
fn message_name<U>() -> String {
    let rust_name = std::any::type_name::<U>();
    let short = rust_name.rsplit("::").next().unwrap_or(rust_name);
    format!("dip.v1.{short}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_expected_message() {
        assert_eq!(
            message_name::<crate::proto::PublishRequest>(),
            "dip.v1.PublishRequest"
        );
    }
}
