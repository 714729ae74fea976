//! The start of every connection (MQTT in/out, before `Flow` takes over): write CONNECT, wait
//! for the CONNACK (bounded), and turn a refusal into an error naming the broker. Whatever the
//! broker sent after its CONNACK stays in the read buffer for the loop to decode at once.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::connection::ConnectionError;
use super::transport::Transport;
use crate::mqtt::codec::{self, ConnAckInfo, ConnectOptions, Encoder, Inbound, Version};

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
) -> Result<ConnAckInfo, ConnectionError> {
    let mut buf = BytesMut::new();
    Encoder::connect(version, &mut buf, options)?;
    transport.write_all(&buf).await?;
    let answer = tokio::time::timeout(CONNACK_TIMEOUT, async {
        loop {
            if let Some(p) = codec::decode(version, rbuf, MAX_CONNACK)? {
                return Ok(p);
            }
            if transport.read_buf(rbuf).await? == 0 {
                return Err(ConnectionError::Closed);
            }
        }
    })
    .await
    .map_err(|_| ConnectionError::ConnAckTimeout {
        addr: addr.to_string(),
        secs: CONNACK_TIMEOUT.as_secs(),
    })??;
    match answer {
        Inbound::ConnAck(info) if info.code == 0 => Ok(info),
        Inbound::ConnAck(info) => Err(ConnectionError::Refused {
            addr: addr.to_string(),
            reason: info.reason,
        }),
        Inbound::Other(name) => Err(ConnectionError::Unexpected(name)),
        _ => Err(ConnectionError::Unexpected("non-CONNACK")),
    }
}
