//! A proxy in front of moto that loses one answer: it passes every HTTP
//! request and its answer on, except that for the first request of one API
//! action it waits for moto's answer and then closes the client's
//! connection without passing it on, as when an answer is lost after AWS
//! applied the request. The SDK sends the request again.

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The proxy's port and how many requests of the action it saw.
pub struct LossyProxy {
    pub port: u16,
    seen: Arc<AtomicUsize>,
}

impl LossyProxy {
    /// Listens on a free loopback port, forwarding to moto at `upstream`;
    /// the first answer to `action` is lost.
    pub fn start(upstream: u16, action: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&seen);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let counter = Arc::clone(&counter);
                std::thread::spawn(move || serve(client, upstream, action, &counter));
            }
        });
        Self { port, seen }
    }

    /// How many requests of the action reached the proxy.
    pub fn seen(&self) -> usize {
        self.seen.load(Ordering::SeqCst)
    }
}

/// Serves one client connection (HTTP/1.1 keep-alive: many requests).
fn serve(client: TcpStream, upstream: u16, action: &str, seen: &AtomicUsize) {
    let timeout = Some(Duration::from_secs(30));
    client.set_read_timeout(timeout).unwrap();
    let mut writer = client.try_clone().unwrap();
    let mut reader = BufReader::new(client);
    let needle = format!("Action={action}&");
    // Bounded: one client connection carries a few requests in a test.
    for _ in 0..1000 {
        let Some(request) = read_message(&mut reader) else {
            return;
        };
        let moto = TcpStream::connect(("127.0.0.1", upstream)).unwrap();
        moto.set_read_timeout(timeout).unwrap();
        (&moto).write_all(&request).unwrap();
        let Some(answer) = read_message(&mut BufReader::new(&moto)) else {
            return;
        };
        let matches = request
            .windows(needle.len())
            .any(|w| w == needle.as_bytes());
        if matches && seen.fetch_add(1, Ordering::SeqCst) == 0 {
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
        if writer.write_all(&answer).is_err() {
            return;
        }
    }
}

/// One HTTP/1.1 message: the head up to its blank line, then as many bytes
/// of body as its Content-Length says. `None` at the end of the stream.
fn read_message(reader: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut message = Vec::new();
    let mut length = 0;
    // Bounded: a message head has far fewer lines.
    for _ in 0..200 {
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line).ok()? == 0 {
            return None;
        }
        message.extend_from_slice(&line);
        if line == b"\r\n" {
            let start = message.len();
            message.resize(start + length, 0);
            reader.read_exact(&mut message[start..]).ok()?;
            return Some(message);
        }
        let text = String::from_utf8_lossy(&line);
        if let Some((name, value)) = text.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
    None
}
