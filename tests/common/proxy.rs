//! A TCP proxy on loopback that a test steers: it can cut every connection,
//! stall them without closing, and flip one bit in what the server sends.
//! Plain threads and blocking sockets; dropping it closes everything.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

struct Shared {
    upstream: Mutex<SocketAddr>,
    /// Both ends of every connection made, for `cut`.
    open: Mutex<Vec<TcpStream>>,
    stalled: AtomicBool,
    /// Flip a bit in the next server-to-client chunk of at least this many bytes (0: no).
    flip_min: AtomicUsize,
    flipped: AtomicUsize,
    accepted: AtomicUsize,
    closing: AtomicBool,
}

impl Proxy {
    /// Listens on 127.0.0.1 (a free port) and forwards to `upstream`.
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            upstream: Mutex::new(upstream),
            open: Mutex::new(Vec::new()),
            stalled: AtomicBool::new(false),
            flip_min: AtomicUsize::new(0),
            flipped: AtomicUsize::new(0),
            accepted: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
        });
        let s = shared.clone();
        let accept = thread::spawn(move || {
            for conn in listener.incoming() {
                if s.closing.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                s.accepted.fetch_add(1, Ordering::SeqCst);
                let up = *s.upstream.lock().unwrap();
                let Ok(server) = TcpStream::connect_timeout(&up, Duration::from_secs(2)) else {
                    // As a dead server would: the client sees the connection close.
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                {
                    let mut open = s.open.lock().unwrap();
                    open.push(client.try_clone().unwrap());
                    open.push(server.try_clone().unwrap());
                }
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let sh = s.clone();
                thread::spawn(move || pump(c2, s2, sh, false));
                let sh = s.clone();
                thread::spawn(move || pump(server, client, sh, true));
            }
        });
        Proxy {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// New connections go to `upstream`; current ones are left alone.
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *self.shared.upstream.lock().unwrap() = upstream;
    }

    /// Closes every current connection, both ways.
    pub fn cut(&self) {
        for c in self.shared.open.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    /// While on, nothing is forwarded either way, and nothing is closed.
    pub fn stall(&self, on: bool) {
        self.shared.stalled.store(on, Ordering::SeqCst);
    }

    /// Flips one bit in the middle of the next chunk of at least `min_len`
    /// bytes that the server sends to a client.
    pub fn flip_next_bit(&self, min_len: usize) {
        self.shared.flip_min.store(min_len.max(1), Ordering::SeqCst);
    }

    /// How many bits were flipped so far.
    pub fn flipped(&self) -> usize {
        self.shared.flipped.load(Ordering::SeqCst)
    }

    /// How many connections clients made.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, s: Arc<Shared>, downstream: bool) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while s.stalled.load(Ordering::SeqCst) && !s.closing.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(10));
        }
        if downstream {
            let min = s.flip_min.load(Ordering::SeqCst);
            if min > 0
                && n >= min
                && s.flip_min
                    .compare_exchange(min, 0, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                buf[n / 2] ^= 0x10;
                s.flipped.fetch_add(1, Ordering::SeqCst);
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        self.shared.stalled.store(false, Ordering::SeqCst);
        self.cut();
        // Wake the accept loop so it sees `closing`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}
