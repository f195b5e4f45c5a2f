//! A buffered reader that holds no heap memory while it waits for the peer.
//!
//! tokio's `BufReader` keeps its buffer for the reader's life, and a connection's reader lives
//! as long as its session: with thousands of idle sessions that is a KiB each (1,152 bytes
//! after musl's malloc rounds it) for bytes that are almost never there. This one reads into a
//! stack buffer, copies what arrived into a heap buffer of exactly that size, and frees it as
//! soon as the parser has consumed it. The cost is one allocation per read, which is noise
//! next to the TLS record's decryption that produced the bytes.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncBufRead, AsyncRead, ReadBuf};

/// Most bytes taken from the inner reader at once (on the stack, during a poll only).
pub const READ_CHUNK: usize = 1024;

pub struct IdleFreeBufReader<R> {
    inner: R,
    /// What was read and not yet consumed; empty (no allocation) between reads.
    buf: Vec<u8>,
    pos: usize,
}

impl<R> IdleFreeBufReader<R> {
    pub fn new(inner: R) -> IdleFreeBufReader<R> {
        IdleFreeBufReader {
            inner,
            buf: Vec::new(),
            pos: 0,
        }
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The inner reader; bytes buffered and not consumed are dropped.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Heap bytes held right now (for footprint tests).
    pub fn held(&self) -> usize {
        self.buf.capacity()
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for IdleFreeBufReader<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos >= this.buf.len() {
            return Pin::new(&mut this.inner).poll_read(cx, out);
        }
        let n = out.remaining().min(this.buf.len() - this.pos);
        out.put_slice(&this.buf[this.pos..this.pos + n]);
        Pin::new(this).consume(n);
        Poll::Ready(Ok(()))
    }
}

impl<R: AsyncRead + Unpin> AsyncBufRead for IdleFreeBufReader<R> {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        if this.pos >= this.buf.len() {
            let mut chunk = [0u8; READ_CHUNK];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            this.buf = read.filled().to_vec();
            this.pos = 0;
        }
        Poll::Ready(Ok(&this.buf[this.pos..]))
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        this.pos = (this.pos + amt).min(this.buf.len());
        if this.pos == this.buf.len() {
            this.buf = Vec::new();
            this.pos = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn holds_nothing_once_consumed_and_keeps_unconsumed_bytes() {
        let (mut peer, ours) = tokio::io::duplex(4096);
        let mut r = IdleFreeBufReader::new(ours);
        peer.write_all(b"hello world").await.unwrap();
        let got = r.fill_buf().await.unwrap().to_vec();
        assert_eq!(got, b"hello world");
        r.consume(6);
        assert_eq!(r.held(), 11, "exactly what arrived, not a whole chunk");
        let mut rest = [0u8; 5];
        r.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"world");
        assert_eq!(r.held(), 0, "an empty buffer is given back");
        drop(peer);
        assert!(r.fill_buf().await.unwrap().is_empty(), "end of stream");
    }

    #[tokio::test]
    async fn a_long_input_comes_in_chunks() {
        let (mut peer, ours) = tokio::io::duplex(8192);
        let mut r = IdleFreeBufReader::new(ours);
        let input = vec![b'x'; 3 * READ_CHUNK + 5];
        peer.write_all(&input).await.unwrap();
        drop(peer);
        let mut all = Vec::new();
        loop {
            let got = r.fill_buf().await.unwrap();
            if got.is_empty() {
                break;
            }
            assert!(got.len() <= READ_CHUNK);
            let n = got.len();
            all.extend_from_slice(got);
            r.consume(n);
        }
        assert_eq!(all, input);
        assert_eq!(r.held(), 0);
    }
}
