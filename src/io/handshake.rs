//! The start of every connection (MQTT in/out, before `Flow` takes over): write CONNECT, wait
//! for the CONNACK (bounded), and turn a refusal into an error naming the broker. Whatever the
//! broker sent after its CONNACK stays in the read buffer for the loop to decode at once.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use thiserror::Error;

use super::transport::Transport;
use crate::mqtt::codec::{
    self, CodecError, ConnAckInfo, ConnectOptions, Encoder, Inbound, Version,
};

/// Why a CONNECT did not get an accepting CONNACK.
#[derive(Debug, Error)]
pub enum HandshakeError {
    #[error("{addr} refused the connection: {reason}")]
    Refused { addr: String, reason: String },
    #[error("no CONNACK from {addr} within {secs} s")]
    ConnAckTimeout { addr: String, secs: u64 },
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// How a connection's byte stream fails, during the handshake or after it (then inside
/// [`ConnectionError`](super::connection::ConnectionError)).
#[derive(Debug, Error)]
pub enum WireError {
    #[error("connection lost")]
    Io(#[from] std::io::Error),
    #[error("broker closed the connection")]
    Closed,
    #[error("unexpected packet {0} from the broker")]
    Unexpected(&'static str),
    #[error("protocol error")]
    Codec(#[from] CodecError),
}

impl WireError {
    /// A lost or closed socket may work on the next attempt; a broker that does not speak our
    /// MQTT will not.
    pub fn is_fatal_at_startup(&self) -> bool {
        !matches!(self, WireError::Io(_) | WireError::Closed)
    }
}

impl From<std::io::Error> for HandshakeError {
    fn from(e: std::io::Error) -> Self {
        HandshakeError::Wire(e.into())
    }
}

impl From<CodecError> for HandshakeError {
    fn from(e: CodecError) -> Self {
        HandshakeError::Wire(e.into())
    }
}

impl HandshakeError {
    /// A lost or closed socket may work on the next attempt; a refusal or a broker that does
    /// not speak our MQTT will not.
    pub fn is_fatal_at_startup(&self) -> bool {
        match self {
            HandshakeError::Wire(e) => e.is_fatal_at_startup(),
            _ => true,
        }
    }
}

/// How long the broker has to answer our CONNECT.
pub const CONNACK_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest CONNACK we read (its properties included).
const MAX_CONNACK: usize = 64 * 1024;

/// Sends CONNECT and returns the accepted CONNACK.
pub async fn connect(
    transport: &mut Transport,
    rbuf: &mut BytesMut,
    version: Version,
    options: &ConnectOptions,
    addr: &str,
) -> Result<ConnAckInfo, HandshakeError> {
    let mut buf = BytesMut::new();
    Encoder::connect(version, &mut buf, options)?;
    transport.write_all(&buf).await?;
    let answer = tokio::time::timeout(CONNACK_TIMEOUT, async {
        loop {
            if let Some(p) = codec::decode(version, rbuf, MAX_CONNACK)? {
                return Ok::<_, WireError>(p);
            }
            if transport.read_buf(rbuf).await? == 0 {
                return Err(WireError::Closed);
            }
        }
    })
    .await
    .map_err(|_| HandshakeError::ConnAckTimeout {
        addr: addr.to_string(),
        secs: CONNACK_TIMEOUT.as_secs(),
    })??;
    match answer {
        Inbound::ConnAck(info) if info.code == 0 => Ok(info),
        Inbound::ConnAck(info) => Err(HandshakeError::Refused {
            addr: addr.to_string(),
            reason: info.reason,
        }),
        Inbound::Other(name) => Err(WireError::Unexpected(name).into()),
        _ => Err(WireError::Unexpected("non-CONNACK").into()),
    }
}
