//! A registry played by a test, on 127.0.0.1: it records every request and answers each with a
//! handler's status, headers and body, or hands the connection to the handler to stream (an
//! answer that never ends). What a hostile registry can do to the `af` client.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// How the registry answers a request.
pub enum Answer {
    /// Status, extra headers, body.
    Full(u16, Vec<(String, String)>, Vec<u8>),
    /// The handler writes the whole response itself on the connection, which is then closed.
    Stream(Box<dyn FnOnce(&mut TcpStream) + Send>),
}

pub type Handler = Arc<dyn Fn(&Request) -> Answer + Send + Sync>;

/// A handler giving full answers.
pub fn full(f: impl Fn(&Request) -> (u16, Vec<(String, String)>, Vec<u8>) + Send + Sync + 'static) -> Handler {
    Arc::new(move |r: &Request| {
        let (status, headers, body) = f(r);
        Answer::Full(status, headers, body)
    })
}

pub struct Fake {
    pub addr: String,
    seen: Arc<Mutex<Vec<Request>>>,
}

impl Fake {
    pub fn start(handler: Handler) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen: Arc<Mutex<Vec<Request>>> = Default::default();
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (handler, log) = (handler.clone(), log.clone());
                std::thread::spawn(move || serve(stream, handler, log));
            }
        });
        Fake { addr, seen }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve(stream: TcpStream, handler: Handler, log: Arc<Mutex<Vec<Request>>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("/").to_string());
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                break;
            }
            if let Some((k, v)) = h.trim_end().split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let len: usize = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("content-length")).and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let request = Request { method, path, headers, body };
        log.lock().unwrap().push(request.clone());
        match handler(&request) {
            Answer::Full(status, extra, body) => {
                let mut head = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n", body.len());
                for (k, v) in extra {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                // A HEAD answer has its length but no body: one sent would be read as the start
                // of the next answer on the connection.
                let body = if request.method == "HEAD" { &[][..] } else { &body[..] };
                if stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(body)).is_err() {
                    return;
                }
            }
            Answer::Stream(write) => {
                write(&mut stream);
                return;
            }
        }
    }
}
