//! The TCP stream under a direct SSH connection, acknowledging what it
//! receives at once.
//!
//! sshd turns Nagle's algorithm off only for interactive sessions (a pty):
//! for `exec` it sends its small packets (the channel's confirmation, a
//! short reply, the exit status) with Nagle on, so a small packet waits
//! until the previous one is acknowledged. Linux delays an ACK by up to
//! 40 ms when a connection looks like request and response. So every
//! command prov ran waited one or two delayed ACKs: measured on 8 local
//! hosts, 90 ms from opening a session to the host's first answer, the
//! machine idle through most of it.
//!
//! TCP_QUICKACK sends a pending ACK now and leaves delayed-ACK mode; the
//! kernel may go back to it, so it is set again after every read that
//! brought data (one `setsockopt` per read; during a copy prov mostly
//! writes). Elsewhere than on Linux the stream is used as it is.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A [`TcpStream`] that acknowledges received data at once.
#[derive(Debug)]
pub(super) struct QuickAck {
    stream: TcpStream,
}

impl QuickAck {
    /// Wraps `stream` (connected).
    pub(super) fn new(stream: TcpStream) -> Self {
        let wrapped = Self { stream };
        wrapped.ack_now();
        wrapped
    }

    /// Asks the kernel to acknowledge at once (best effort: a failure only
    /// costs latency).
    fn ack_now(&self) {
        #[cfg(target_os = "linux")]
        if let Err(error) = socket2::SockRef::from(&self.stream).set_tcp_quickack(true) {
            tracing::trace!(%error, "TCP_QUICKACK failed");
        }
    }
}

impl AsyncRead for QuickAck {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.ack_now();
        }
        polled
    }
}

impl AsyncWrite for QuickAck {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// After request/response rounds the kernel delays ACKs (it treats the
    /// connection as interactive); a read through [`QuickAck`] leaves it
    /// acknowledging at once again. (Without the wrapper's
    /// `ack_now` after the read, the last assertion fails.)
    #[tokio::test]
    async fn a_read_leaves_the_socket_acknowledging_at_once() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (client, server) = tokio::join!(TcpStream::connect(address), listener.accept());
        let mut client = QuickAck::new(client.unwrap());
        let (mut server, _) = server.unwrap();
        let mut byte = [0u8; 1];
        for _ in 0..8 {
            server.write_all(b"q").await.unwrap();
            client.read_exact(&mut byte).await.unwrap();
            // Answering at once is what makes Linux take the connection for
            // interactive and delay its ACKs.
            client.write_all(b"a").await.unwrap();
            server.read_exact(&mut byte).await.unwrap();
        }
        let quick = |c: &QuickAck| socket2::SockRef::from(&c.stream).tcp_quickack().unwrap();
        // The write just now put it back into delayed-ACK mode.
        assert!(
            !quick(&client),
            "the answers should have made the kernel delay ACKs"
        );
        server.write_all(b"q").await.unwrap();
        client.read_exact(&mut byte).await.unwrap();
        assert!(quick(&client), "after a read, ACKs go at once");
    }
}
