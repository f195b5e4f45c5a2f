//! A TCP proxy on loopback whose connections a test can sever, as a phone losing its network:
//! the server sees the connection end with no goodbye on the XMPP level (stream management
//! hibernation, push notifications).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// A TCP proxy on loopback whose connections the test can sever, as a phone losing its network.
pub struct FlakyLink {
    pub port: u16,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl FlakyLink {
    pub fn to(upstream: u16) -> FlakyLink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let list = open.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                {
                    let mut l = list.lock().unwrap();
                    l.push(client.try_clone().expect("clone"));
                    l.push(server.try_clone().expect("clone"));
                }
                pump(
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                pump(server, client);
            }
        });
        FlakyLink { port, open }
    }

    /// Cuts every connection at once, both ways, with no goodbye on the XMPP level.
    pub fn sever(&self) {
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}
