//! The byte stream under MQTT in and out: TCP, or TLS over TCP for `mqtts://` and IoT Edge,
//! with the TCP socket at hand for quick ACKs (`mqtt::tcp`, socket2, no `unsafe`). Takes its
//! own small settings ([`Endpoint`]), not the command line.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Where and how to connect.
#[derive(Clone)]
pub struct Endpoint {
    /// `host:port`.
    pub addr: String,
    /// TLS configuration and the name the certificate must carry.
    pub tls: Option<(Arc<rustls::ClientConfig>, String)>,
}

#[derive(Debug, Error)]
pub enum TransportError {
    #[error("cannot connect to {addr}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS handshake with {addr} failed")]
    Tls {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
}

/// A connected stream.
pub enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Transport {
    /// TCP connect (Nagle off: we batch our own writes), then the TLS handshake if asked.
    pub async fn connect(endpoint: &Endpoint) -> Result<Transport, TransportError> {
        let addr = &endpoint.addr;
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|source| TransportError::Connect {
                addr: addr.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        match &endpoint.tls {
            None => Ok(Transport::Plain(tcp)),
            Some((config, name)) => {
                let server_name = ServerName::try_from(name.clone())
                    .map_err(|_| TransportError::ServerName(name.clone()))?;
                let tls = TlsConnector::from(config.clone())
                    .connect(server_name, tcp)
                    .await
                    .map_err(|source| TransportError::Tls {
                        addr: addr.clone(),
                        source,
                    })?;
                Ok(Transport::Tls(Box::new(tls)))
            }
        }
    }

    /// The TCP socket under the stream.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Plain(tcp) => tcp,
            Transport::Tls(tls) => tls.get_ref().0,
        }
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
