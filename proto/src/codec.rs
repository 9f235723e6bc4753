//! The protobuf codec of every generated service: prost, with smaller
//! buffers than tonic's default.
//!
//! tonic gives each stream an 8 KiB encode and an 8 KiB decode buffer and
//! keeps them for the stream's life. A controller holds one long-lived
//! stream per agent (10,000 per leader), whose messages are a few hundred
//! bytes: 16 KiB each was a quarter of a session's memory. The buffers start
//! at [`BUFFER_BYTES`] and grow to fit a larger message (a Raft batch, a
//! snapshot) as tonic's do; only the starting size differs.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Starting size of a stream's encode and of its decode buffer.
pub const BUFFER_BYTES: usize = 1024;
/// Encoded bytes after which a streaming response yields to the transport
/// (tonic's default).
const YIELD_THRESHOLD: usize = 32 * 1024;

/// prost encoding with [`BUFFER_BYTES`] buffers; named by `build.rs` as the
/// `codec_path` of every service.
#[derive(Debug, Clone)]
pub struct SmallBufferCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SmallBufferCodec<T, U> {
    fn default() -> Self {
        SmallBufferCodec(PhantomData)
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_BYTES, YIELD_THRESHOLD)
}

impl<T, U> Codec for SmallBufferCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}
