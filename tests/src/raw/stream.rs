//! [`FrameStream`]: a TCP stream and the bytes read from it, cut into frames.

use std::{fmt, io};

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{parse_class, AMQPClass};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};

use super::codec::{frame_len, try_encode};

/// Why a frame-level exchange with the broker failed.
#[derive(Debug)]
pub enum RawError {
    /// The socket failed.
    Io(io::Error),
    /// The broker closed the connection.
    Closed,
    /// amq-protocol could not serialize a frame.
    Encode(String),
    /// A method frame the broker sent could not be parsed.
    Decode(String),
    /// The broker answered with something else than the protocol step expected.
    Unexpected {
        /// What the step waited for, e.g. `connection.tune`.
        expected: &'static str,
        /// What came instead.
        got: String,
    },
}

impl fmt::Display for RawError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RawError::Io(e) => write!(f, "socket: {e}"),
            RawError::Closed => f.write_str("connection closed by the broker"),
            RawError::Encode(e) => write!(f, "encode frame: {e}"),
            RawError::Decode(e) => write!(f, "bad method frame: {e}"),
            RawError::Unexpected { expected, got } => write!(f, "expected {expected}, got {got}"),
        }
    }
}

impl std::error::Error for RawError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RawError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for RawError {
    fn from(e: io::Error) -> Self {
        RawError::Io(e)
    }
}

/// A TCP stream to a broker and the bytes read from it that are not consumed yet.
pub struct FrameStream {
    stream: TcpStream,
    buf: BytesMut,
}

impl fmt::Debug for FrameStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FrameStream({} bytes buffered)", self.buf.len())
    }
}

impl FrameStream {
    /// Wraps a connected stream (Nagle off: the tests and the load generator both write small
    /// frames and wait for answers).
    pub fn new(stream: TcpStream) -> Self {
        let _ = stream.set_nodelay(true);
        FrameStream {
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
        }
    }

    /// Connects to a broker; no bytes are sent yet.
    pub async fn connect(addr: impl ToSocketAddrs) -> Result<Self, RawError> {
        Ok(FrameStream::new(TcpStream::connect(addr).await?))
    }

    /// Writes bytes as they are.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), RawError> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    /// Writes bytes and flushes the stream.
    pub async fn write_flush(&mut self, bytes: &[u8]) -> Result<(), RawError> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// Writes one method frame.
    pub async fn send_method(&mut self, channel: u16, method: AMQPClass) -> Result<(), RawError> {
        let bytes = try_encode(&AMQPFrame::Method(channel, method))?;
        self.write(&bytes).await
    }

    /// Reads what the broker sent into the buffer; `Ok(0)` when the broker closed the socket.
    pub async fn read_more(&mut self) -> Result<usize, RawError> {
        if self.buf.capacity() - self.buf.len() < 64 * 1024 {
            self.buf.reserve(256 * 1024);
        }
        Ok(self.stream.read_buf(&mut self.buf).await?)
    }

    /// Like [`FrameStream::read_more`], but the broker closing the socket is an error.
    pub async fn fill(&mut self) -> Result<(), RawError> {
        match self.read_more().await? {
            0 => Err(RawError::Closed),
            _ => Ok(()),
        }
    }

    /// The bytes read and not consumed yet.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// Drops the first `n` buffered bytes (the caller has handled them).
    pub fn consume(&mut self, n: usize) {
        self.buf.advance(n);
    }

    /// Takes every buffered byte.
    pub fn take_all(&mut self) -> BytesMut {
        self.buf.split()
    }

    /// Takes the first whole frame from the buffer (as bytes), if it is all there.
    pub fn take_frame(&mut self) -> Option<BytesMut> {
        frame_len(&self.buf).map(|n| self.buf.split_to(n))
    }

    /// The next method frame's channel and method, skipping every other frame (heartbeats,
    /// content of deliveries).
    pub async fn next_method(&mut self) -> Result<(u16, AMQPClass), RawError> {
        loop {
            while let Some(frame) = self.take_frame() {
                if frame[0] == 1 {
                    let channel = u16::from_be_bytes([frame[1], frame[2]]);
                    return parse_class(&frame[7..frame.len() - 1])
                        .map(|(_, m)| (channel, m))
                        .map_err(|e| RawError::Decode(format!("{e:?}")));
                }
            }
            self.fill().await?;
        }
    }

    /// The stream and the unread bytes, to split reading from writing.
    pub fn into_parts(self) -> (TcpStream, BytesMut) {
        (self.stream, self.buf)
    }
}
